"""Serving an exported model with NVIDIA Triton: the model repository `export --triton_repository`
writes (repository.py), the Python-backend models inside it (triton_models.py), and a local
`tritonserver` from the nvidia-pytriton wheel with a client for tests and `make serve-demo`
(server.py)."""

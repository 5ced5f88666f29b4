"""The workloads that run inside the pose images (or as a local subprocess)."""

__version__ = "0.1.0"

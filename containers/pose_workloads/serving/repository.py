"""`pose <network> export ... --triton_repository DIR [--triton_backend onnxruntime|tensorrt|python]`:
a Triton model repository that serves the exported model with its pre- and post-processing.

    DIR/pose/config.pbtxt           ensemble: IMAGE (encoded bytes) [+ BOXES] -> KEYPOINTS, SCORES
    DIR/pose/1/                     (an ensemble has no files; Triton wants the version folder)
    DIR/pose/pose_workloads/        the pipeline code the Python models import (see below)
    DIR/preprocess/config.pbtxt, 1/model.py, 1/pose.json      Python backend
    DIR/model/config.pbtxt, 1/model.onnx                      onnxruntime_onnx (--triton_backend onnxruntime)
                            1/model.plan                      tensorrt_plan (tensorrt: the --engine_file)
                            1/model.py + model.onnx           Python backend + onnxruntime, CPU (python)
    DIR/postprocess/config.pbtxt, 1/model.py, 1/pose.json     Python backend

The network model batches dynamically up to --max_batch_size; the Python steps take one image per
request. Tensors (the table `tensors()`), image px throughout:

    simple-pose: IMAGE UINT8 [-1], BOXES FP32 [-1, 4] (x, y, w, h) -> KEYPOINTS FP32 [-1, K, 3]
                 (x, y, score per box), SCORES FP32 [-1]
    bpnet:       IMAGE UINT8 [-1] -> KEYPOINTS FP32 [-1, K, 3] (per person found), SCORES FP32 [-1]

Where the pipeline code comes from: the repository carries a copy of the pose_workloads package
that wrote it (pure Python, ~0.5 MB), in `pose/pose_workloads/` (Triton ignores non-numeric
folders inside a model folder); each model.py puts `pose/` first on sys.path. So the repository
serves exactly the pre/post-processing of the version that exported the model, on any Triton
(NGC's tritonserver image, nvidia-pytriton's binary) whose Python has numpy, opencv-python-headless
and pydantic (+ onnxruntime for --triton_backend python); no pose install is needed there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple

from pose_workloads.errors import BadInput

TRITON_BACKENDS = ("onnxruntime", "tensorrt", "python")
ENSEMBLE, PREPROCESS, MODEL, POSTPROCESS = "pose", "preprocess", "model", "postprocess"
CODE_DIR = "pose_workloads"  # inside DIR/pose/
# How long the dynamic batcher waits to fill a batch: a millisecond is noise beside a network pass.
MAX_QUEUE_DELAY_US = 1000


class Tensor(NamedTuple):
    name: str
    data_type: str  # Triton's TYPE_*
    dims: tuple[int, ...]  # without the batch dimension for batching models


class Tensors(NamedTuple):
    request: tuple[Tensor, ...]  # the ensemble's inputs = preprocess's inputs
    network_in: tuple[Tensor, ...]  # preprocess -> model (batch first)
    carried: tuple[Tensor, ...]  # preprocess -> postprocess, past the model
    network_out: tuple[Tensor, ...]  # model -> postprocess (batch first)
    response: tuple[Tensor, ...]  # postprocess's outputs = the ensemble's


def tensors(onnx_path: str | Path) -> Tensors:
    """The one table of every tensor in the repository. The network's come from the exported ONNX
    file itself (its names, and its fixed dims; dynamic ones are -1), without the batch."""
    import onnx

    from pose_workloads.export.onnx import read_onnx_info

    info = read_onnx_info(onnx_path)
    graph = onnx.load(str(onnx_path), load_external_data=False).graph

    def network(values) -> tuple[Tensor, ...]:
        return tuple(Tensor(v.name, "TYPE_FP32", tuple(d.dim_value if d.dim_value > 0 else -1
                                                        for d in v.type.tensor_type.shape.dim[1:])) for v in values)

    response = (Tensor("KEYPOINTS", "TYPE_FP32", (-1, info.pose_config.num_joints, 3)),
                Tensor("SCORES", "TYPE_FP32", (-1,)))
    image = Tensor("IMAGE", "TYPE_UINT8", (-1,))
    if info.network == "bpnet":
        return Tensors((image,), network(graph.input), (Tensor("IMAGE_HW", "TYPE_INT32", (2,)),), network(graph.output),
                       response)
    return Tensors(
        (image, Tensor("BOXES", "TYPE_FP32", (-1, 4))),
        network(graph.input),
        (Tensor("CENTERS", "TYPE_FP32", (-1, 2)), Tensor("SCALES", "TYPE_FP32", (-1, 2))),
        network(graph.output),
        response,
    )


# --- config.pbtxt text ---------------------------------------------------------------------------

def _tensor_list(key: str, items: tuple[Tensor, ...]) -> str:
    lines = [f'  {{ name: "{t.name}" data_type: {t.data_type} dims: [ {", ".join(map(str, t.dims))} ] }}'
             for t in items]
    return f"{key} [\n" + ",\n".join(lines) + "\n]\n"


def _unbatched(items: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The batch tensors as a non-batching (max_batch_size 0) Python step sees them: batch first, -1."""
    return tuple(Tensor(t.name, t.data_type, (-1, *t.dims)) for t in items)


def _python_config(name: str, inputs, outputs) -> str:
    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
            + _tensor_list("input", inputs) + _tensor_list("output", outputs)
            + "instance_group [ { kind: KIND_CPU count: 1 } ]\n")


def _model_config(backend: str, t: Tensors, max_batch_size: int) -> str:
    head = {
        "onnxruntime": 'platform: "onnxruntime_onnx"\n',
        "tensorrt": 'platform: "tensorrt_plan"\n',
        "python": 'backend: "python"\n',
    }[backend]
    text = (f'name: "{MODEL}"\n{head}max_batch_size: {max_batch_size}\n'
            + _tensor_list("input", t.network_in) + _tensor_list("output", t.network_out)
            + f"dynamic_batching {{ max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US} }}\n")
    if backend == "python":
        text += "instance_group [ { kind: KIND_CPU count: 1 } ]\n"
    return text


def _step(model: str, inputs: tuple[Tensor, ...], outputs: tuple[Tensor, ...]) -> str:
    maps = [f'      input_map {{ key: "{x.name}" value: "{x.name}" }}' for x in inputs]
    maps += [f'      output_map {{ key: "{x.name}" value: "{x.name}" }}' for x in outputs]
    return f'    {{\n      model_name: "{model}"\n      model_version: -1\n' + "\n".join(maps) + "\n    }"


def _ensemble_config(t: Tensors) -> str:
    steps = [
        _step(PREPROCESS, t.request, t.network_in + t.carried),
        _step(MODEL, t.network_in, t.network_out),
        _step(POSTPROCESS, t.network_out + t.carried, t.response),
    ]
    return (f'name: "{ENSEMBLE}"\nplatform: "ensemble"\nmax_batch_size: 0\n'
            + _tensor_list("input", t.request) + _tensor_list("output", t.response)
            + "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n")


def model_py(class_name: str) -> str:
    """A repository model.py: the repository's pose_workloads first on sys.path, then one class."""
    return (
        '"""Written by `pose ... export --triton_repository`: the pipeline is pose_workloads, shipped in\n'
        f'../../{ENSEMBLE}/{CODE_DIR} with this repository."""\n'
        "import sys\nfrom pathlib import Path\n\n"
        f'sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "{ENSEMBLE}"))\n\n'
        f"from pose_workloads.serving.triton_models import {class_name} as TritonPythonModel  # noqa: E402,F401\n"
    )


# --- writing it ----------------------------------------------------------------------------------

def check_repository_args(repository: str | Path, backend: str, engine_file: str | None) -> None:
    """Flags that cannot work, before any export work."""
    if backend not in TRITON_BACKENDS:
        raise BadInput(f"--triton_backend {backend}: unknown; use one of {', '.join(TRITON_BACKENDS)}")
    if backend == "tensorrt" and not engine_file:
        raise BadInput("--triton_backend tensorrt: needs --engine_file (the engine is what Triton serves); "
                       "or use --triton_backend onnxruntime")
    path = Path(repository)
    foreign = path.is_dir() and any(path.iterdir()) and not (path / ENSEMBLE / "config.pbtxt").is_file()
    if path.exists() and (not path.is_dir() or foreign):
        raise BadInput(f"--triton_repository {path}: exists and is not a pose Triton repository; "
                       "give a new or empty folder (a previous export's repository is replaced)")


def serving_settings(info, inference_spec=None, single_scale: bool = True):
    """What `pose inference` does around the network, for the Python steps: simple-pose's
    defaults without -e (flip test, argmax); bpnet's inference spec (default TAO's) with the
    model's training normalisation (the spec's train_spec wins, as in inference), single-scale."""
    if info.network != "bpnet":
        from pose_workloads.simple_pose.pipeline import EvalSettings

        return EvalSettings(batch_size=8)
    from pose_workloads.bpnet.pipeline import inference_settings
    from pose_workloads.specs import BpnetInferenceSpec, BpnetNormalization, BpnetTrainSpec, load_spec

    spec = inference_spec or BpnetInferenceSpec()
    if single_scale and spec.multi_scale_inference and list(spec.scales) != [1.0]:
        raise BadInput(f"--inference_spec: multi_scale_inference: a Triton repository runs the network once per image; "
                       f"set it to false (scales {spec.scales} would each need their own pass)")
    if spec.train_spec:
        normalization = load_spec(BpnetTrainSpec, spec.train_spec).dataloader.normalization_params
    else:
        normalization = BpnetNormalization.model_validate(info.normalization or {})
    return inference_settings(spec, normalization)[0]


def write_repository(repository: str | Path, onnx_path: str | Path, backend: str, max_batch_size: int,
                     settings, engine_file: str | Path | None = None) -> Path:
    """Write the repository for an exported ONNX file (and engine), replacing a previous one.

    Args:
        settings: what `pose inference` applies: simple_pose.EvalSettings or bpnet.InferenceSettings
            (single-scale: Triton runs the network once per image).
    The folder is built beside `repository` and moved into place when complete.
    """
    import pose_workloads
    from pose_workloads.export.onnx import read_onnx_info
    from pose_workloads.serving.triton_models import PIPELINE_FILE, pipeline_json

    check_repository_args(repository, backend, str(engine_file) if engine_file else None)
    if tuple(getattr(settings, "scales", (1.0,))) != (1.0,):
        raise ValueError(f"a Triton repository runs one scale, not {list(settings.scales)}")
    info = read_onnx_info(onnx_path)
    t = tensors(onnx_path)
    final = Path(repository)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        files = {
            f"{ENSEMBLE}/config.pbtxt": _ensemble_config(t),
            f"{PREPROCESS}/config.pbtxt": _python_config(PREPROCESS, t.request, _unbatched(t.network_in) + t.carried),
            f"{PREPROCESS}/1/model.py": model_py("Preprocess"),
            f"{PREPROCESS}/1/{PIPELINE_FILE}": pipeline_json(info, settings, max_batch_size),
            f"{MODEL}/config.pbtxt": _model_config(backend, t, max_batch_size),
            f"{POSTPROCESS}/config.pbtxt": _python_config(POSTPROCESS, _unbatched(t.network_out) + t.carried,
                                                          t.response),
            f"{POSTPROCESS}/1/model.py": model_py("Postprocess"),
            f"{POSTPROCESS}/1/{PIPELINE_FILE}": pipeline_json(info, settings, max_batch_size),
        }
        if backend == "python":
            files[f"{MODEL}/1/model.py"] = model_py("OnnxModel")
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)
        (tmp / ENSEMBLE / "1").mkdir(exist_ok=True)
        (tmp / MODEL / "1").mkdir(parents=True, exist_ok=True)
        network_file = {"tensorrt": "model.plan"}.get(backend, "model.onnx")
        shutil.copyfile(engine_file if backend == "tensorrt" else onnx_path, tmp / MODEL / "1" / network_file)
        shutil.copytree(Path(pose_workloads.__file__).parent, tmp / ENSEMBLE / CODE_DIR,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def describe(repository: Path) -> str:
    """One line: what the repository serves."""
    config = (repository / MODEL / "config.pbtxt").read_text()
    kind = next((line.split('"')[1] for line in config.splitlines() if line.startswith(("platform", "backend"))), "?")
    return (f"wrote the Triton repository {repository} "
            f"(ensemble '{ENSEMBLE}': {PREPROCESS} -> {MODEL} [{kind}] -> {POSTPROCESS})")


def read_config(path: str | Path):
    """A config.pbtxt parsed with Triton's own ModelConfig protobuf (tritonclient ships it)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())


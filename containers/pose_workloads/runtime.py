"""Run a trained model from any of its files: `.pth` (PyTorch), `.onnx` (onnxruntime), `.engine`
(TensorRT). Evaluate and inference call `load_predictor(path)` and never care which it was.

Every model file carries the same metadata (network, pose config, input size), so a file is all a
user has to pass: in the `.pth` dict (docs/ARCHITECTURE.md), in the ONNX `metadata_props` under
`pose`, and in a `<engine>.json` sidecar beside a TensorRT engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pose_workloads.errors import BadInput
from pose_workloads.specs import PoseConfig

ONNX_METADATA_KEY = "pose"


@dataclass
class ModelInfo:
    """What a model file says about itself."""

    network: str  # "simple-pose" | "bpnet"
    pose_config: PoseConfig
    input_size: tuple[int, int]  # (height, width) it was trained at
    model_config: dict[str, Any] = field(default_factory=dict)
    # bpnet: the train spec's dataloader.normalization_params (image_scale, image_offset) the model
    # was trained with, so that an exported file normalises as training did; None = the defaults.
    # Simple Pose always uses ImageNet mean/std.
    normalization: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps({
            "network": self.network,
            "pose_config": self.pose_config.model_dump(mode="json"),
            "input_size": list(self.input_size),
            "model_config": self.model_config,
            "normalization": self.normalization,
        })

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelInfo":
        return cls(
            network=data["network"],
            pose_config=PoseConfig.model_validate(data["pose_config"]),
            input_size=tuple(data["input_size"]),
            model_config=dict(data.get("model_config") or {}),
            normalization=data.get("normalization"),
        )


@dataclass
class Predictor:
    """`predictor(images)` with images (N,3,H,W) float32, normalised as in training, returns the
    network's outputs as float32 arrays: simple-pose `[heatmaps (N,K,H/4,W/4)]`, bpnet
    `[heatmaps (N,K+1,H/8,W/8), pafs (N,2L,H/8,W/8)]` (the last stage)."""

    info: ModelInfo
    run: Callable[[np.ndarray], list[np.ndarray]]
    backend: str  # "torch" | "onnxruntime" | "tensorrt"
    fixed_input: tuple[int, int] | None = None  # (H, W) when the model cannot change size (engines)

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        return self.run(np.ascontiguousarray(images, dtype=np.float32))


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """The `.pth` dict, checked for the keys every model file has."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: model file not found; pass the .pth written by train (e.g. RESULTS/model_best.pth)")
    # weights_only=False: pruned models are whole pickled modules (TAO's load_graph). Only load
    # model files you trust, as with any PyTorch checkpoint.
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    missing = [k for k in ("network", "pose_config", "input_size") if k not in ckpt]
    if missing or ("state_dict" not in ckpt and "module" not in ckpt):
        raise BadInput(f"{path}: not a pose model file (missing {', '.join(missing) or 'state_dict'}); "
                       "pass a checkpoint written by `pose ... train`")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]):
    """Rebuild the nn.Module: the pickled module of a pruned model, else build + load weights."""
    from pose_workloads.models import build_model

    if ckpt.get("module") is not None:
        model = ckpt["module"]
        if ckpt.get("state_dict"):
            model.load_state_dict(ckpt["state_dict"])
        return model
    pose_config = PoseConfig.model_validate(ckpt["pose_config"])
    # pretrained=False: the backbone's weights file was only needed at the start of training.
    model = build_model(ckpt["network"], ckpt.get("model_config") or {}, pose_config.num_joints, pretrained=False)
    model.load_state_dict(ckpt["state_dict"])
    return model


def info_from_checkpoint(ckpt: dict[str, Any]) -> ModelInfo:
    info = ModelInfo.from_dict(ckpt)
    spec = ckpt.get("spec")
    if info.normalization is None and isinstance(spec, dict):
        info.normalization = (spec.get("dataloader") or {}).get("normalization_params")
    return info


def last_stage_outputs(network: str, outputs: Any) -> list:
    """The prediction of a forward pass: simple-pose returns heatmaps; bpnet returns a list of
    (heatmaps, pafs) per stage, of which the last is the prediction."""
    if network == "bpnet":
        heatmaps, pafs = outputs[-1]
        return [heatmaps, pafs]
    return [outputs]


def _torch_predictor(path: Path, device: str | None) -> Predictor:
    import torch

    ckpt = load_checkpoint(path)
    info = info_from_checkpoint(ckpt)
    model = model_from_checkpoint(ckpt)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev).eval()

    @torch.inference_mode()
    def run(images: np.ndarray) -> list[np.ndarray]:
        outputs = model(torch.from_numpy(images).to(dev))
        return [o.float().cpu().numpy() for o in last_stage_outputs(info.network, outputs)]

    return Predictor(info=info, run=run, backend="torch")


def _onnx_predictor(path: Path, device: str | None) -> Predictor:
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(str(path), providers=providers)
    # onnxruntime hands back the model's metadata_props: no second parse of the file with onnx.
    meta = session.get_modelmeta().custom_metadata_map
    if ONNX_METADATA_KEY not in meta:
        raise BadInput(f"{path}: ONNX file has no '{ONNX_METADATA_KEY}' metadata; export it with `pose ... export`")
    info = ModelInfo.from_dict(json.loads(meta[ONNX_METADATA_KEY]))
    input_name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(o, dtype=np.float32) for o in session.run(None, {input_name: images})]

    return Predictor(info=info, run=run, backend="onnxruntime")


def engine_sidecar(engine_path: str | Path) -> Path:
    return Path(str(engine_path) + ".json")


def _tensorrt_predictor(path: Path, device: str | None) -> Predictor:
    sidecar = engine_sidecar(path)
    if not sidecar.is_file():
        raise BadInput(f"{path}: missing {sidecar.name} beside the engine; build engines with `pose ... export --engine_file`")
    try:
        import tensorrt as trt
        import torch
    except ImportError as err:
        raise BadInput(f"{path}: TensorRT engines need the TensorRT image with a GPU ({err.name} not installed); "
                       "use the .onnx file here instead") from None
    if not torch.cuda.is_available():
        raise BadInput(f"{path}: TensorRT engines need an NVIDIA GPU and none is visible; use the .onnx file instead")
    info = ModelInfo.from_dict(json.loads(sidecar.read_text()))
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise BadInput(f"{path}: TensorRT could not load this engine (built for another GPU or TensorRT version?); rebuild it here")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    # The ONNX axes are dynamic, so the engine's tensor shape says -1 even when its optimization
    # profile allows one size only: the profile is what the engine accepts.
    min_shape, _, max_shape = (tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(inputs[0], 0))
    fixed = (min_shape[2], min_shape[3]) if min_shape[2:] == max_shape[2:] else None
    torch_dtypes = {trt.float32: torch.float32, trt.float16: torch.float16}

    def run_batch(x) -> list:
        if not context.set_input_shape(inputs[0], tuple(x.shape)):
            raise BadInput(
                f"{path}: input {'x'.join(map(str, x.shape))} is outside the engine's optimization profile "
                f"({'x'.join(map(str, min_shape))} to {'x'.join(map(str, max_shape))}); rebuild the engine with "
                "`pose ... export --engine_file` for these sizes (bpnet: --inference_spec of this run) or use the .onnx file"
            )
        context.set_tensor_address(inputs[0], x.data_ptr())
        results = []
        for name in outputs:
            dtype = torch_dtypes[engine.get_tensor_dtype(name)]
            out = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device="cuda")
            context.set_tensor_address(name, out.data_ptr())
            results.append(out)
        # torch's current stream: the input copy above was queued on it, so the engine runs after it.
        stream = torch.cuda.current_stream()
        context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return [r.float().cpu().numpy() for r in results]

    def run(images: np.ndarray) -> list[np.ndarray]:
        # torch owns the device buffers: it is in the image anyway and keeps this code short.
        # Batches beyond the profile's max (evaluate's batch_size) run in chunks.
        x = torch.from_numpy(images).cuda()
        chunks = [run_batch(x[i:i + max_shape[0]].contiguous()) for i in range(0, len(x), max_shape[0])]
        return [np.concatenate(parts) for parts in zip(*chunks)]

    return Predictor(info=info, run=run, backend="tensorrt", fixed_input=fixed)


LOADERS = {".pth": _torch_predictor, ".pt": _torch_predictor, ".onnx": _onnx_predictor, ".engine": _tensorrt_predictor}


def load_predictor(path: str | Path, device: str | None = None) -> Predictor:
    """Open a model file by its suffix (.pth, .onnx, .engine)."""
    path = Path(path)
    loader = LOADERS.get(path.suffix)
    if loader is None:
        raise BadInput(f"{path}: unknown model file type '{path.suffix}'; use one of {', '.join(LOADERS)}")
    if not path.is_file():
        raise BadInput(f"{path}: model file not found; check the path")
    return loader(path, device)

"""Run a trained model from any of its files: `.pth` (PyTorch), `.onnx` (onnxruntime), `.engine`
(TensorRT). Evaluate and inference call `load_predictor(path)` and never care which it was.

Every model file carries the same metadata (`predictor.ModelInfo`: network, pose config, input
size), so a file is all a user has to pass: in the `.pth` dict (model_file.py), in the ONNX
`metadata_props` under `pose`, and in a `<engine>.json` sidecar beside a TensorRT engine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pose_workloads import model_file
from pose_workloads.errors import BadInput
from pose_workloads.predictor import ModelInfo, Predictor

ONNX_METADATA_KEY = "pose"


def _torch_predictor(path: Path, device: str | None) -> Predictor:
    return model_file.open_predictor(path, device=device)


def _onnx_predictor(path: Path, device: str | None) -> Predictor:
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as err:  # onnxruntime's InvalidProtobuf, Fail, ...: a damaged or foreign file
        detail = " ".join(str(err).split())[:160]
        raise BadInput(f"{path}: not a readable ONNX model ({detail}); "
                       "export it again with `pose ... export`") from None
    # onnxruntime hands back the model's metadata_props: no second parse of the file with onnx.
    meta = session.get_modelmeta().custom_metadata_map
    if ONNX_METADATA_KEY not in meta:
        raise BadInput(f"{path}: ONNX file has no '{ONNX_METADATA_KEY}' metadata; export it with `pose ... export`")
    info = read_info(meta[ONNX_METADATA_KEY], f"{path}: metadata '{ONNX_METADATA_KEY}'")
    input_name = session.get_inputs()[0].name
    found = [o.shape[1] if len(o.shape) > 1 else None for o in session.get_outputs()]
    if found != expected_channels(info):
        raise BadInput(f"{path}: outputs {found} channels, but its metadata describes a {info.network} model with "
                       f"{expected_channels(info)}; metadata and weights disagree: export the model again")

    def run(images: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(o, dtype=np.float32) for o in session.run(None, {input_name: images})]

    return Predictor(info=info, run=run, backend="onnxruntime")


def expected_channels(info: ModelInfo) -> list[int | None]:
    """Output channels a model of `info` has: simple-pose [K heatmaps]; bpnet [heatmaps, PAFs]
    as its model_config says (None where it does not say)."""
    if info.network == "bpnet":
        return [info.model_config.get("heat_channels", 19), info.model_config.get("paf_channels", 38)]
    return [info.pose_config.num_joints]


def read_info(text: str, where: str) -> ModelInfo:
    """ModelInfo from the JSON an ONNX file or an engine's sidecar carries; BadInput if damaged."""
    try:
        return ModelInfo.from_dict(json.loads(text))
    except Exception as err:  # JSON, a missing key, a pose config that does not validate
        detail = " ".join(str(err).split())[:160]
        raise BadInput(f"{where}: not pose model metadata ({type(err).__name__}: {detail}); "
                       "export the model again") from None


def engine_sidecar(engine_path: str | Path) -> Path:
    return Path(str(engine_path) + ".json")


def _tensorrt_predictor(path: Path, device: str | None) -> Predictor:
    sidecar = engine_sidecar(path)
    if not sidecar.is_file():
        raise BadInput(
            f"{path}: missing {sidecar.name} beside the engine; build engines with `pose ... export --engine_file`")
    if path.stat().st_size == 0:
        raise BadInput(f"{path}: empty file; build the engine again with `pose ... export --engine_file`")
    info = read_info(sidecar.read_text(errors="replace"), str(sidecar))
    try:
        import tensorrt as trt
        import torch
    except ImportError as err:
        raise BadInput(f"{path}: TensorRT engines need the TensorRT image with a GPU ({err.name} not installed); "
                       "use the .onnx file here instead") from None
    if not torch.cuda.is_available():
        raise BadInput(f"{path}: TensorRT engines need an NVIDIA GPU and none is visible; use the .onnx file instead")
    from pose_workloads.export.tensorrt import tensorrt_unavailable

    reason = tensorrt_unavailable()  # an untested TensorRT major, here
    if reason:
        raise BadInput(f"{path}: {reason}")
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise BadInput(f"{path}: TensorRT could not load this engine (built for another GPU or TensorRT version?); "
                       "rebuild it here")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    # The ONNX axes are dynamic, so the engine's tensor shape says -1 even when its optimization
    # profile allows one size only: the profile is what the engine accepts.
    min_shape, _, max_shape = (tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(inputs[0], 0))
    fixed = (min_shape[2], min_shape[3]) if min_shape[2:] == max_shape[2:] else None
    torch_dtypes = {trt.float32: torch.float32, trt.float16: torch.float16}
    # The engine runs on a stream of its own, not torch's default one, so that it neither waits
    # for nor serialises with other torch work on the device (a training job's, another predictor's).
    stream = torch.cuda.Stream()

    def run_batch(x) -> list:
        if not context.set_input_shape(inputs[0], tuple(x.shape)):
            raise BadInput(
                f"{path}: input {'x'.join(map(str, x.shape))} is outside the engine's optimization profile "
                f"({'x'.join(map(str, min_shape))} to {'x'.join(map(str, max_shape))}); rebuild the engine with "
                "`pose ... export --engine_file` for these sizes (bpnet: --inference_spec of this run) "
                "or use the .onnx file"
            )
        context.set_tensor_address(inputs[0], x.data_ptr())
        # The input copy was queued on torch's current stream: the engine's stream waits for it.
        stream.wait_stream(torch.cuda.current_stream())
        results = []
        with torch.cuda.stream(stream):  # outputs allocated for (and freed after) this stream
            for name in outputs:
                dtype = torch_dtypes[engine.get_tensor_dtype(name)]
                out = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device="cuda")
                context.set_tensor_address(name, out.data_ptr())
                results.append(out)
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

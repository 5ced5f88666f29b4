"""`pose <network> export`: a `.pth` model file -> ONNX (onnxruntime, any TensorRT) and, in the
TensorRT image on a GPU, a TensorRT engine (fp32, fp16 or int8 calibrated from an image folder).

    model.pth --export_onnx--> model.onnx (+ metadata_props['pose']) --build_engine--> model.engine (+ .json)

Only the prediction is exported: simple-pose's heatmaps, bpnet's last stage (heatmaps, pafs);
`runtime.load_predictor` opens all three files alike. The axes that vary at inference are
dynamic: the batch for simple-pose (crops are always the trained size), batch, height and width
for bpnet (multi-scale and keep_aspect_ratio_mode change the input size per image). TAO's
BodyPoseNet engines have a fixed height and width, which is why TAO turns multi-scale off for
them; ours take the range of sizes the inference spec asks for (`engine_profile`).

Exporter: torch 2.13 offers two. Both give a valid model with these dynamic axes that matches
PyTorch to 1e-12 on our networks; we use the TorchScript one (`dynamo=False`) because the
torch.export-based default takes 20-50 s for the tiny models where TorchScript takes under 3 s,
and it has no opset-17 implementations: it writes opset 18 and converts down through onnx's C API
with a silent fallback, so `--opset 17` (the highest TensorRT 8.6 parses) would not be
guaranteed. Its strength, data-dependent control flow, is something these convolution stacks do
not have. If a future torch drops the TorchScript exporter, switch `dynamo=True` and pass
`dynamic_shapes` instead of `dynamic_axes`.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

import numpy as np

from pose_workloads.runtime import (
    ONNX_METADATA_KEY,
    ModelInfo,
    engine_sidecar,
    info_from_checkpoint,
    last_stage_outputs,
    load_checkpoint,
    model_from_checkpoint,
)
from pose_workloads.files import write_atomic
from pose_workloads.errors import BadInput
from pose_workloads.specs import BpnetInferenceSpec, BpnetNormalization, load_spec

INPUT_NAME = "images"


class OnnxLayout(NamedTuple):
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]  # tensor name -> {axis: name}


# The one table of what differs between the networks' ONNX files.
LAYOUTS: dict[str, OnnxLayout] = {
    "simple-pose": OnnxLayout(
        ("heatmaps",),
        {INPUT_NAME: {0: "batch"}, "heatmaps": {0: "batch"}},
    ),
    "bpnet": OnnxLayout(
        ("heatmaps", "pafs"),
        {
            INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
            "heatmaps": {0: "batch", 2: "map_height", 3: "map_width"},
            "pafs": {0: "batch", 2: "map_height", 3: "map_width"},
        },
    ),
}

# ONNX vs PyTorch on the same random input, relative to the largest output: float32 rounding and
# the runtimes' different conv algorithms (Winograd, im2col) stay well below it; a wrong export
# (a frozen axis, a dropped layer) is off by the outputs' own size.
MAX_RELATIVE_DIFF = 1e-3
BPNET_STRIDE = 8
# bpnet engines with adjust_network_input accept images up to this many times wider than tall
# (or taller than wide): 16:9 video is 1.78.
MAX_IMAGE_ASPECT = 2.0
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DATA_TYPES = ("fp32", "fp16", "int8")


class ExportFailed(RuntimeError):
    """The export ran and produced something unusable (exit 1, one line)."""


class ExportCheck(NamedTuple):
    input_shape: tuple[int, int, int, int]  # (N, 3, H, W)
    max_abs_diff: float  # over all outputs
    output_scale: float  # max |PyTorch output|


class EngineProfile(NamedTuple):
    """A TensorRT optimization profile for the input: three (N, 3, H, W) shapes."""

    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------

def check_shapes(network: str, input_size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """The inputs ONNX is compared with PyTorch on: two batch sizes, and for bpnet two heights and
    widths (neither the trained one's aspect), so a wrongly frozen axis shows."""
    height, width = input_size
    if network != "bpnet":
        return [(1, 3, height, width), (3, 3, height, width)]

    def multiple_of_stride(value: float) -> int:
        return max(BPNET_STRIDE, round(value / BPNET_STRIDE) * BPNET_STRIDE)

    # Smaller than trained, so that checking a large model stays cheap.
    return [(1, 3, height, width), (2, 3, multiple_of_stride(height * 0.5), multiple_of_stride(width * 0.75))]


def _last_stage_module(network: str, model):
    import torch

    class LastStage(torch.nn.Module):
        """The prediction alone, as a tuple of tensors (what ONNX outputs are)."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, images):
            return tuple(last_stage_outputs(network, self.model(images)))

    return LastStage().eval()


def export_onnx(model_file: str | Path, onnx_path: str | Path, opset: int = 17) -> list[ExportCheck]:
    """Write `onnx_path` from a `.pth` model file, checked and compared with PyTorch.

    The file holds only the prediction (bpnet: the last stage), dynamic axes per `LAYOUTS`, and
    `metadata_props['pose']` = the ModelInfo JSON that `runtime.load_predictor` reads. It is
    written to a temp file, checked with `onnx.checker`, run through onnxruntime on random
    inputs (`check_shapes`) against the PyTorch model, and only then moved into place.

    Returns:
        One ExportCheck per compared input.
    Raises:
        BadInput: the model file is missing or not a pose model file.
        ExportFailed: onnxruntime disagrees with PyTorch by more than MAX_RELATIVE_DIFF of the outputs.
    """
    import onnx
    import onnxruntime as ort
    import torch

    onnx_path = Path(onnx_path)
    ckpt = load_checkpoint(model_file)
    info = info_from_checkpoint(ckpt)
    layout = LAYOUTS[info.network]
    model = _last_stage_module(info.network, model_from_checkpoint(ckpt).float().eval())
    generator = torch.Generator().manual_seed(0)
    shapes = check_shapes(info.network, tuple(info.input_size))
    example = torch.randn(shapes[0], generator=generator)

    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = onnx_path.with_name(f".{onnx_path.name}.tmp")
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter's deprecation notice; the choice is explained at the top.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                model, (example,), str(tmp), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=list(layout.outputs), dynamic_axes=layout.dynamic_axes, do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        proto.metadata_props.add(key=ONNX_METADATA_KEY, value=info.to_json())
        proto.doc_string = f"pose {info.network} model exported from {Path(model_file).name}"
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))

        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        checks = []
        for shape in shapes:
            images = torch.randn(shape, generator=generator)
            with torch.no_grad():
                expected = [t.numpy() for t in model(images)]
            got = session.run(None, {INPUT_NAME: images.numpy()})
            diff = max(float(np.abs(e - g).max()) for e, g in zip(expected, got))
            scale = max(float(np.abs(e).max()) for e in expected)
            checks.append(ExportCheck(shape, diff, scale))
            if diff > MAX_RELATIVE_DIFF * scale:
                raise ExportFailed(
                    f"{onnx_path}: onnxruntime differs from PyTorch by {diff:.3g} on input {'x'.join(map(str, shape))} "
                    f"(outputs up to {scale:.3g}); nothing was written. Please report it with the model file"
                )
        os.replace(tmp, onnx_path)
    finally:
        tmp.unlink(missing_ok=True)
    return checks


def read_onnx_info(onnx_path: str | Path) -> ModelInfo:
    """The ModelInfo stored in an exported file's metadata_props."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    if ONNX_METADATA_KEY not in meta:
        raise BadInput(f"{onnx_path}: ONNX file has no '{ONNX_METADATA_KEY}' metadata; export it with `pose ... export`")
    return ModelInfo.from_dict(json.loads(meta[ONNX_METADATA_KEY]))


# --------------------------------------------------------------------------------------------
# TensorRT: profile, calibration data, engine
# --------------------------------------------------------------------------------------------

def engine_profile(info: ModelInfo, max_batch_size: int, inference_spec: BpnetInferenceSpec | None = None) -> EngineProfile:
    """The input shapes an engine is built for.

    simple-pose: the trained crop size, batch 1 .. max_batch_size (optimised for full batches:
    evaluate sends crops in batches). bpnet: every network input size `bpnet.plan_input` asks for
    under the inference spec (default TAO's infer_spec: 368x368 adjust_network_input, one scale),
    over its scales and, for adjust_network_input, images up to MAX_IMAGE_ASPECT wide or tall;
    optimised for one image at the spec's own input_shape (inference sends one image at a time).
    """
    if max_batch_size < 1:
        raise BadInput(f"--max_batch_size {max_batch_size}: must be at least 1, e.g. 8")
    if info.network != "bpnet":
        height, width = info.input_size
        return EngineProfile((1, 3, height, width), (max_batch_size, 3, height, width), (max_batch_size, 3, height, width))

    from pose_workloads.bpnet import plan_input

    spec = inference_spec or BpnetInferenceSpec()
    scales = spec.scales if spec.multi_scale_inference else [1.0]
    shape, mode = tuple(spec.input_shape), spec.keep_aspect_ratio_mode
    opt = plan_input(shape, shape, mode).network_hw
    images = [(1000, round(1000 * MAX_IMAGE_ASPECT)), (round(1000 * MAX_IMAGE_ASPECT), 1000), shape]
    sizes = [plan_input(image, shape, mode, scale).network_hw for scale in scales for image in images] + [opt]
    low = (min(h for h, _ in sizes), min(w for _, w in sizes))
    high = (max(h for h, _ in sizes), max(w for _, w in sizes))
    return EngineProfile((1, 3, *low), (1, 3, *opt), (max_batch_size, 3, *high))


def calibration_input(image_rgb: np.ndarray, network: str, input_hw: tuple[int, int],
                      normalization: dict[str, Any] | None = None) -> np.ndarray:
    """One calibration image as the network sees it in evaluation.

    Args:
        image_rgb: (H, W, 3) uint8 RGB.
        network: "simple-pose" (the whole image taken as the person box and cropped as evaluate
            crops a box: padded, aspect kept, ImageNet mean/std) or "bpnet" (letterboxed into
            input_hw as pad_image_input does, divided by image_scale minus image_offset).
        input_hw: (height, width) of the network input.
        normalization: bpnet's training normalization_params (None = TAO's defaults).
    Returns:
        (3, height, width) float32, normalised as in training.
    """
    if network == "simple-pose":
        from pose_workloads.simple_pose import crop_boxes

        height, width = image_rgb.shape[:2]
        crops, _, _ = crop_boxes(image_rgb, np.array([[0.0, 0.0, width, height]], np.float32), input_hw)
        return crops[0]

    from pose_workloads.bpnet import inference_settings, plan_input, prepare_input

    spec = BpnetInferenceSpec(input_shape=input_hw, keep_aspect_ratio_mode="pad_image_input")
    settings, _ = inference_settings(spec, BpnetNormalization.model_validate(normalization or {}))
    plan = plan_input(image_rgb.shape[:2], input_hw, "pad_image_input")
    return prepare_input(image_rgb, plan, settings)[0]


def calibration_images(image_dir: str | Path) -> list[Path]:
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise BadInput(f"--cal_image_dir {image_dir}: not a directory; give a folder of calibration images")
    files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BadInput(f"--cal_image_dir {image_dir}: no images ({', '.join(IMAGE_SUFFIXES)}); "
                       "add a few hundred images like the ones the model will see")
    return files


def calibration_batches(files: list[Path], info: ModelInfo, shape: tuple[int, int, int, int],
                        batches: int) -> Iterator[np.ndarray]:
    """Up to `batches` arrays of `shape` (N, 3, H, W) float32 from `files`, in order. A last
    partial batch is dropped: TensorRT calibrates at exactly the profile's opt shape. Files that
    do not decode are skipped with a note (this runs inside TensorRT's calibration callback,
    where an exception would abort the build with a C++ message)."""
    from pose_workloads.data.coco import BadSample, read_image

    size, input_hw = shape[0], (shape[2], shape[3])
    batch: list[np.ndarray] = []
    done = 0
    for path in files:
        if done == batches:
            return
        try:
            image = read_image(path)
        except BadSample as err:
            print(f"note: calibration skips {err}", file=sys.stderr)
            continue
        batch.append(calibration_input(image, info.network, input_hw, info.normalization))
        if len(batch) == size:
            yield np.stack(batch)
            batch, done = [], done + 1


def tensorrt_unavailable() -> str | None:
    """Why a TensorRT engine cannot be built here, or None when it can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "tensorrt is not installed here"
    import torch

    if not torch.cuda.is_available():
        return "no NVIDIA GPU is visible"
    return None


def _entropy_calibrator(trt, batches: Iterable[np.ndarray], batch_size: int, cache_file: Path | None):
    """TensorRT's IInt8EntropyCalibrator2 over prepared batches; the cache is read when present
    (then no image is read) and written after calibration."""
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 needs the explicit base init
            self.batches = iter(batches)
            self.device_batch = None  # kept alive until TensorRT asks for the next batch

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.device_batch = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).cuda()
            return [int(self.device_batch.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            if cache_file is not None and cache_file.is_file():
                print(f"INT8 calibration: using the cache {cache_file}", flush=True)
                return cache_file.read_bytes()
            return None

        def write_calibration_cache(self, cache) -> None:
            if cache_file is not None:
                write_atomic(cache_file, bytes(cache))

    return EntropyCalibrator()


class Calibration(NamedTuple):
    image_dir: Path | None
    cache_file: Path | None
    batches: int


def build_engine(onnx_path: str | Path, engine_path: str | Path, profile: EngineProfile, data_type: str = "fp32",
                 calibration: Calibration | None = None) -> Path:
    """Build a TensorRT engine from an exported ONNX file (TensorRT 10 Python API; 8.6 works too).

    Args:
        profile: the input shapes (engine_profile). INT8 calibrates at profile.opt.
        data_type: "fp32", "fp16" or "int8" (INT8 with FP16 allowed for layers without INT8
            kernels). INT8 needs `calibration` with an image folder or an existing cache file.
    Writes engine_path and its sidecar `<engine>.json` (the ModelInfo + how it was built), atomically.
    Raises:
        BadInput: TensorRT cannot run here, or missing calibration data.
        ExportFailed: TensorRT cannot parse the ONNX file or build the engine.
    """
    reason = tensorrt_unavailable()
    if reason:
        raise BadInput(f"--engine_file {engine_path}: building a TensorRT engine needs the TensorRT image on a machine "
                       f"with an NVIDIA GPU ({reason}); {onnx_path} is written and runs with onnxruntime, "
                       "run this export again there for the engine")
    import tensorrt as trt

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    info = read_onnx_info(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated and ignored); 8.x needs it.
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportFailed(f"{onnx_path}: TensorRT {trt.__version__} cannot parse it: {errors}")

    config = builder.create_builder_config()
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(network.get_input(0).name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(trt_profile)
    if data_type in ("fp16", "int8"):
        if not builder.platform_has_fast_fp16:
            print(f"note: this GPU has no fast FP16; the {data_type} engine may be no faster than fp32", file=sys.stderr)
        config.set_flag(trt.BuilderFlag.FP16)
    if data_type == "int8":
        cached = calibration is not None and calibration.cache_file is not None and calibration.cache_file.is_file()
        if calibration is None or (calibration.image_dir is None and not cached):
            raise BadInput("--data_type int8: needs --cal_image_dir (or an existing --cal_cache_file) to calibrate")
        from pose_workloads.data.progress import track

        files = calibration_images(calibration.image_dir) if calibration.image_dir else []
        usable = min(calibration.batches, len(files) // profile.opt[0])
        if files and usable == 0:
            raise BadInput(f"--cal_image_dir {calibration.image_dir}: {len(files)} images, fewer than one calibration "
                           f"batch of {profile.opt[0]}; add images or lower --max_batch_size")
        batches = track(calibration_batches(files, info, profile.opt, calibration.batches), usable, "INT8 calibration")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _entropy_calibrator(trt, batches, profile.opt[0], calibration.cache_file)
        # Dynamic shapes: calibration runs at this profile's opt shape, the shape of the batches.
        config.set_calibration_profile(trt_profile)

    print(f"building a {data_type} TensorRT {trt.__version__} engine for inputs {_shape_text(profile.min)} to "
          f"{_shape_text(profile.max)} (optimised for {_shape_text(profile.opt)}); this takes minutes", flush=True)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportFailed(f"{engine_path}: TensorRT could not build the engine; its log above says why")
    write_atomic(engine_path, bytes(serialized))
    sidecar = json.loads(info.to_json())
    sidecar["engine"] = {"data_type": data_type, "tensorrt": trt.__version__, "profile": profile._asdict()}
    write_atomic(engine_sidecar(engine_path), json.dumps(sidecar, indent=2))
    return engine_path


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------

def _shape_text(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def _check_args(args) -> None:
    """Conflicting or impossible flags, before any work."""
    if Path(args.output).suffix != ".onnx":
        raise BadInput(f"-o {args.output}: the output must end in .onnx (model files are opened by suffix); e.g. model.onnx")
    if args.engine_file and Path(args.engine_file).suffix != ".engine":
        raise BadInput(f"--engine_file {args.engine_file}: must end in .engine (model files are opened by suffix); "
                       "e.g. model.engine")
    if args.data_type not in DATA_TYPES:
        raise BadInput(f"--data_type {args.data_type}: unknown; use one of {', '.join(DATA_TYPES)}")
    if args.max_batch_size < 1 or args.batches < 1:
        raise BadInput(f"--max_batch_size {args.max_batch_size} / --batches {args.batches}: must be at least 1")
    if args.engine_file and args.data_type == "int8":
        cache = Path(args.cal_cache_file) if args.cal_cache_file else None
        if args.cal_image_dir:
            calibration_images(args.cal_image_dir)
        elif cache is None or not cache.is_file():
            raise BadInput("--data_type int8: needs --cal_image_dir (a folder of images like the ones the model will see) "
                           "or an existing --cal_cache_file")
    elif args.cal_image_dir or args.cal_cache_file:
        print("note: --cal_image_dir / --cal_cache_file are used only with --engine_file and --data_type int8", file=sys.stderr)


def main(args) -> int:
    """`pose simple-pose|bpnet export -m MODEL.pth -o OUT.onnx [--engine_file E --data_type ...]`."""
    network = args.group
    if args.key:
        print("note: -k/--key is ignored: pose models are plain files, not encrypted", file=sys.stderr)
    _check_args(args)
    inference_spec_path = getattr(args, "inference_spec", None)
    inference_spec = load_spec(BpnetInferenceSpec, inference_spec_path) if inference_spec_path else None

    ckpt = load_checkpoint(args.model)
    if ckpt["network"] != network:
        raise BadInput(f"{args.model}: network: this is a {ckpt['network']} model; use `pose {ckpt['network']} export`")
    info = info_from_checkpoint(ckpt)
    del ckpt

    try:
        checks = export_onnx(args.model, args.output, args.opset)
    except ExportFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for check in checks:
        print(f"onnxruntime vs PyTorch on {_shape_text(check.input_shape)}: max abs difference {check.max_abs_diff:.2e} "
              f"(outputs up to {check.output_scale:.2e})")
    print(f"wrote {args.output} ({info.network}, opset {args.opset}, dynamic "
          f"{', '.join(LAYOUTS[info.network].dynamic_axes[INPUT_NAME].values())})", flush=True)

    if args.engine_file:
        profile = engine_profile(info, args.max_batch_size, inference_spec)
        calibration = Calibration(
            Path(args.cal_image_dir) if args.cal_image_dir else None,
            Path(args.cal_cache_file) if args.cal_cache_file else None,
            args.batches,
        )
        try:
            build_engine(args.output, args.engine_file, profile, args.data_type, calibration)
        except ExportFailed as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"wrote {args.engine_file} and {engine_sidecar(args.engine_file).name}")
    return 0

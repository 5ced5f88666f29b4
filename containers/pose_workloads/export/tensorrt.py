"""`pose <network> export --engine_file`, step two: an exported ONNX file -> a TensorRT engine
(fp32, fp16 or int8 calibrated from an image folder) and its `<engine>.json` sidecar. Runs in the
TensorRT image on a GPU; everything before `build_engine` (profile, calibration data) is plain
NumPy and tested without one."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pose_workloads.errors import BadInput
from pose_workloads.export.onnx import ExportFailed, read_onnx_info
from pose_workloads.files import write_atomic
from pose_workloads.media import IMAGE_SUFFIXES
from pose_workloads.predictor import ModelInfo
from pose_workloads.runtime import engine_sidecar
from pose_workloads.specs import BpnetInferenceSpec, BpnetNormalization

# bpnet engines with adjust_network_input accept images up to this many times wider than tall
# (or taller than wide): 16:9 video is 1.78.
MAX_IMAGE_ASPECT = 2.0
DATA_TYPES = ("fp32", "fp16", "int8")


class EngineProfile(NamedTuple):
    """A TensorRT optimization profile for the input: three (N, 3, H, W) shapes."""

    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]



def engine_profile(info: ModelInfo, max_batch_size: int,
                   inference_spec: BpnetInferenceSpec | None = None) -> EngineProfile:
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
        return EngineProfile((1, 3, height, width), (max_batch_size, 3, height, width),
                             (max_batch_size, 3, height, width))

    from pose_workloads.bpnet.pipeline import plan_input

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
        from pose_workloads.simple_pose.pipeline import crop_boxes

        height, width = image_rgb.shape[:2]
        crops, _, _ = crop_boxes(image_rgb, np.array([[0.0, 0.0, width, height]], np.float32), input_hw)
        return crops[0]

    from pose_workloads.bpnet.pipeline import inference_settings, plan_input, prepare_input

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
    from pose_workloads.media import BadSample, read_image

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


# The TensorRT majors this code is written and tested for; the tensorrt image pins the same range
# (containers/tensorrt.Dockerfile TENSORRT_PACKAGE). 10 still has the weak-typing builder flags
# (BuilderFlag.FP16/INT8 + an INT8 calibrator); 11 removed them: networks are strongly typed and
# lower precision comes in the ONNX file itself (ModelOpt AutoCast for fp16, Q/DQ nodes from
# ModelOpt's calibrated quantizer for int8).
SUPPORTED_MAJORS = (10, 11)


def tensorrt_unavailable() -> str | None:
    """Why a TensorRT engine cannot be built here, or None when it can."""
    try:
        import tensorrt as trt
    except ImportError:
        return "tensorrt is not installed here"
    major = _major(trt.__version__)
    if major not in SUPPORTED_MAJORS:
        return (f"TensorRT {trt.__version__} is not a version pose is tested with; use TensorRT "
                f"{' or '.join(f'{m}.x' for m in SUPPORTED_MAJORS)} (the tensorrt image pins tensorrt>=10,<12)")
    import torch

    if not torch.cuda.is_available():
        return "no NVIDIA GPU is visible"
    return None


def engine_refusal(engine_path: str | Path, onnx_path: str | Path) -> str | None:
    """The one line that refuses `--engine_file` here, or None when an engine can be built."""
    reason = tensorrt_unavailable()
    if reason is None:
        return None
    return (f"--engine_file {engine_path}: building a TensorRT engine needs the TensorRT image on a machine with an "
            f"NVIDIA GPU ({reason}); {onnx_path} is written and runs with onnxruntime, run this export again there "
            "for the engine")


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return -1


def implicit_precision(trt) -> bool:
    """Whether this TensorRT still takes precision as builder flags (10) or only from the network's
    own types (11: strongly typed)."""
    return hasattr(trt.BuilderFlag, "FP16") and hasattr(trt.BuilderFlag, "INT8")


def strongly_typed_flags(trt) -> int:
    """create_network flags for a strongly typed network (10 asks for it; 11 always is one)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def _modelopt(what: str) -> None:
    """One line instead of an ImportError deep in the build when ModelOpt is missing."""
    import importlib.util

    if importlib.util.find_spec("modelopt") is None:
        raise BadInput(f"--data_type {what}: strongly typed TensorRT engines take their precision from the ONNX file, "
                       "which NVIDIA ModelOpt writes; install it in this image: pip install 'nvidia-modelopt[onnx]'")


def autocast_fp16(onnx_path: Path, out_path: Path) -> Path:
    """The ONNX file with fp16 compute and fp32 inputs/outputs (ModelOpt AutoCast), for strongly
    typed networks."""
    _modelopt("fp16")
    import onnx
    from modelopt.onnx.autocast import convert_to_mixed_precision

    onnx.save(convert_to_mixed_precision(onnx_path=str(onnx_path), low_precision_type="fp16", keep_io_types=True),
              str(out_path))
    return out_path


def quantize_int8(onnx_path: Path, calibration: np.ndarray, out_path: Path) -> Path:
    """The ONNX file with INT8 Q/DQ nodes placed and scaled by ModelOpt's entropy calibration on
    `calibration` (N, 3, H, W) float32: TensorRT's explicit quantization."""
    _modelopt("int8")
    from modelopt.onnx.quantization import quantize

    quantize(onnx_path=str(onnx_path), quantize_mode="int8", calibration_data=calibration,
             calibration_method="entropy", output_path=str(out_path))
    return out_path


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
                 calibration: Calibration | None = None, strongly_typed: bool | None = None) -> Path:
    """Build a TensorRT engine from an exported ONNX file, on TensorRT 10 or 11 (SUPPORTED_MAJORS).

    TensorRT 10: fp16/int8 as builder flags, int8 calibrated by an IInt8EntropyCalibrator2 (the
    cache file is TensorRT's calibration cache). TensorRT 11 (or a 10 without those flags): a
    strongly typed network from an ONNX file that carries its precision: ModelOpt AutoCast for
    fp16, ModelOpt's entropy-calibrated Q/DQ quantization for int8 (the cache file is then the
    quantized ONNX file).

    Args:
        profile: the input shapes (engine_profile). INT8 calibrates at profile.opt.
        data_type: "fp32", "fp16" or "int8" (INT8 with FP16 allowed for layers without INT8
            kernels). INT8 needs `calibration` with an image folder or an existing cache file.
        strongly_typed: None = this TensorRT's own path; True = the strongly typed path on 10 too.
    Writes engine_path and its sidecar `<engine>.json` (the ModelInfo + how it was built), atomically.
    Raises:
        BadInput: TensorRT cannot run here, or missing calibration data.
        ExportFailed: TensorRT cannot parse the ONNX file or build the engine.
    """
    refusal = engine_refusal(engine_path, onnx_path)
    if refusal:
        raise BadInput(refusal)
    import tensorrt as trt

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    info = read_onnx_info(onnx_path)
    # strongly_typed: None picks the path this TensorRT has (flags on 10, typed on 11); True takes
    # the typed path on 10 too (make gpu-check compares both).
    implicit = implicit_precision(trt) and not strongly_typed
    if strongly_typed is False and not implicit_precision(trt):
        raise BadInput(f"TensorRT {trt.__version__} has no precision builder flags: only strongly typed engines")
    if data_type == "int8":
        _check_calibration(calibration, profile, explicit=not implicit)
    with tempfile.TemporaryDirectory(prefix="pose-engine-") as work:
        network_onnx = onnx_path
        if not implicit and data_type == "fp16":
            network_onnx = autocast_fp16(onnx_path, Path(work) / "fp16.onnx")
        elif not implicit and data_type == "int8":
            network_onnx = _explicit_int8_onnx(onnx_path, info, profile, calibration, Path(work) / "int8.onnx")
        serialized = _build(trt, network_onnx, profile, data_type if implicit else "fp32", calibration, info)
    if serialized is None:
        raise ExportFailed(f"{engine_path}: TensorRT could not build the engine; its log above says why")
    write_atomic(engine_path, bytes(serialized))
    sidecar = json.loads(info.to_json())
    sidecar["engine"] = {"data_type": data_type, "tensorrt": trt.__version__, "profile": profile._asdict(),
                         "precision": "builder flags" if implicit else "strongly typed"}
    write_atomic(engine_sidecar(engine_path), json.dumps(sidecar, indent=2))
    return engine_path


def _check_calibration(calibration: Calibration | None, profile: EngineProfile, explicit: bool) -> None:
    cached = calibration is not None and calibration.cache_file is not None and calibration.cache_file.is_file()
    if calibration is None or (calibration.image_dir is None and not cached):
        raise BadInput("--data_type int8: needs --cal_image_dir (or an existing --cal_cache_file) to calibrate")
    if calibration.image_dir is not None:
        files = calibration_images(calibration.image_dir)
        if len(files) < profile.opt[0]:
            raise BadInput(f"--cal_image_dir {calibration.image_dir}: {len(files)} images, fewer than one calibration "
                           f"batch of {profile.opt[0]}; add images or lower --max_batch_size")


def _calibration_array(info: ModelInfo, profile: EngineProfile, calibration: Calibration) -> np.ndarray:
    files = calibration_images(calibration.image_dir)
    return np.concatenate(list(calibration_batches(files, info, profile.opt, calibration.batches)))


def _explicit_int8_onnx(onnx_path: Path, info: ModelInfo, profile: EngineProfile, calibration: Calibration,
                        out_path: Path) -> Path:
    """The Q/DQ ONNX file for a strongly typed int8 engine. --cal_cache_file keeps it: an existing
    one is used as is (no image is read), else it is written after calibration."""
    import shutil

    cache = calibration.cache_file
    if cache is not None and cache.is_file():
        print(f"INT8: using the quantized ONNX file {cache} (--cal_cache_file)", flush=True)
        return cache
    quantize_int8(onnx_path, _calibration_array(info, profile, calibration), out_path)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out_path, cache)
    return out_path


def _build(trt, onnx_path: Path, profile: EngineProfile, data_type: str, calibration: Calibration | None,
           info: ModelInfo):
    """Parse and build; `data_type` is "fp32" for strongly typed networks (the file carries the
    types) and the builder flag to set on TensorRT 10's weakly typed ones."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0 if data_type != "fp32" else strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportFailed(f"{onnx_path}: TensorRT {trt.__version__} cannot parse it: {errors}")
    config = builder.create_builder_config()
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(network.get_input(0).name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(trt_profile)
    if data_type in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8: fp16 for the layers without INT8 kernels
    if data_type == "int8":
        from pose_workloads.progress import track

        files = calibration_images(calibration.image_dir) if calibration.image_dir else []
        usable = min(calibration.batches, len(files) // profile.opt[0])
        batches = track(calibration_batches(files, info, profile.opt, calibration.batches), usable, "INT8 calibration")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _entropy_calibrator(trt, batches, profile.opt[0], calibration.cache_file)
        # Dynamic shapes: calibration runs at this profile's opt shape, the shape of the batches.
        config.set_calibration_profile(trt_profile)
    print(f"building a {data_type} TensorRT {trt.__version__} engine for inputs {shape_text(profile.min)} to "
          f"{shape_text(profile.max)} (optimised for {shape_text(profile.opt)}); this takes minutes", flush=True)
    return builder.build_serialized_network(network, config)


def shape_text(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


"""`pose simple-pose|bpnet export -m MODEL.pth -o OUT.onnx [--engine_file E --data_type ...]
[--triton_repository DIR --triton_backend B]`: the flags checked first, then `onnx.export_onnx`,
then (with --engine_file) `tensorrt.build_engine`, then (with --triton_repository)
`serving.repository.write_repository`."""

from __future__ import annotations

import sys
from pathlib import Path

from pose_workloads import model_file
from pose_workloads.errors import BadInput
from pose_workloads.export.gate import compare, gate_inputs
from pose_workloads.export.onnx import INPUT_NAME, LAYOUTS, ExportFailed, export_onnx
from pose_workloads.export.tensorrt import (
    DATA_TYPES,
    Calibration,
    build_engine,
    calibration_images,
    engine_profile,
    shape_text,
)
from pose_workloads.runtime import engine_sidecar
from pose_workloads.serving.repository import check_repository_args, describe, serving_settings, write_repository
from pose_workloads.specs import BpnetDatasetSpec, BpnetInferenceSpec, load_spec


def _check_args(args) -> None:
    """Conflicting or impossible flags, before any work."""
    if Path(args.output).suffix != ".onnx":
        raise BadInput(
            f"-o {args.output}: the output must end in .onnx (model files are opened by suffix); e.g. model.onnx")
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
            raise BadInput("--data_type int8: needs --cal_image_dir (a folder of images like the ones the model "
                           "will see) or an existing --cal_cache_file")
    elif args.cal_cache_file:
        print("note: --cal_cache_file is used only with --engine_file and --data_type int8", file=sys.stderr)
    elif args.cal_image_dir:
        calibration_images(args.cal_image_dir)  # the accuracy gate's images
    if args.triton_repository:
        check_repository_args(args.triton_repository, args.triton_backend, args.engine_file)


def main(args) -> int:
    """`pose simple-pose|bpnet export -m MODEL.pth -o OUT.onnx [--engine_file E --data_type ...]`."""
    network = args.group
    _check_args(args)
    inference_spec_path = getattr(args, "inference_spec", None)
    inference_spec = load_spec(BpnetInferenceSpec, inference_spec_path) if inference_spec_path else None
    val_dataset = load_spec(BpnetDatasetSpec, args.val_dataset) if args.val_dataset else None

    ckpt = model_file.read(args.model)
    model_file.check_network(args.model, ckpt["network"], network, f"use `pose {ckpt['network']} export`")
    info = model_file.model_info(ckpt)
    del ckpt
    serving = serving_settings(info, inference_spec) if args.triton_repository else None

    try:
        checks = export_onnx(args.model, args.output, args.opset)
    except ExportFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for check in checks:
        print(f"onnxruntime vs PyTorch on {shape_text(check.input_shape)}: max abs difference {check.max_abs_diff:.2e} "
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
    failure = _accuracy_gate(args, info, inference_spec, val_dataset)
    if failure:
        written = [Path(args.output)]
        if args.engine_file:
            written += [Path(args.engine_file), engine_sidecar(args.engine_file)]
        for path in written:
            path.unlink(missing_ok=True)
        print(f"error: accuracy gate: {failure}; removed what this export wrote", file=sys.stderr)
        return 1
    if args.triton_repository:
        repository = write_repository(args.triton_repository, args.output, args.triton_backend, args.max_batch_size,
                                      serving, args.engine_file)
        print(describe(repository))
    return 0


def _accuracy_gate(args, info, inference_spec, val_dataset) -> str | None:
    """Compare the written files with PyTorch on real images (export/gate.py); the first failure."""
    if not args.cal_image_dir and val_dataset is None:
        print("note: no --cal_image_dir or --val_dataset: the files are checked on random inputs only", file=sys.stderr)
        return None
    inputs = gate_inputs(info, args.cal_image_dir, val_dataset)
    candidates = [(args.output, "ONNX (onnxruntime)", "fp32")]
    if args.engine_file:
        candidates.append((args.engine_file, f"{args.data_type} TensorRT engine", args.data_type))
    for path, what, precision in candidates:
        comparison = compare(args.model, path, what, precision, inputs, val_dataset, inference_spec)
        print("\n".join(comparison.lines()), flush=True)
        if comparison.failure():
            return comparison.failure()
    return None

"""`make gpu-check`: what only a GPU can show, in one table (about 8 minutes on one modern GPU).

    versions      CUDA, driver, GPU, torch, TensorRT
    amp           one train step of each network in fp16 and bf16 AMP + channels_last against fp32
                  from the same weights and batch: finite loss, relative loss drift < 5e-2
    nccl          `selftest` over NCCL on every visible GPU (torchrun)
    tensorrt      fp32/fp16/int8 engines of both networks (tiny variants, so that twelve builds fit)
                  on each precision path this TensorRT has (builder flags on 10, strongly typed on
                  10 and 11), max abs difference against PyTorch within export's gate
    throughput    train img/s (simple_pose_resnet50_v1b 256x192 batch 32, BodyPoseNet m1 368x368
                  batch 8; fp16 AMP + channels_last) and TensorRT fp16 inference img/s at batch 1
                  and 32 (simple_pose_resnet50_v1b)

The train steps use an MSE against fixed random targets of the outputs' shapes: they check the
numerics of mixed precision, not the losses. `--quick` runs everything small enough for a CPU
(rows that need CUDA or TensorRT then say why they were skipped); the tests run it that way.
Exit 1 when a row failed.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from pose_workloads.models import build_model
from pose_workloads.specs import COCO17

BPNET_M1 = {"backbone_attributes": {"architecture": "vgg"}, "stages": 3, "heat_channels": 18, "paf_channels": 38}
BPNET_TINY = {"backbone_attributes": {"architecture": "tiny"}, "stages": 2, "heat_channels": 18, "paf_channels": 38}
MAX_AMP_DRIFT = 5e-2


class Row(NamedTuple):
    check: str
    result: str
    status: str  # ok | FAIL | skipped


class Skip(Exception):
    pass


QUICK = False  # --quick: the CPU stands in for the GPU (autocast, gloo), so the code paths run


def _device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if QUICK:
        return torch.device("cpu")
    raise Skip("no CUDA device")


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _outputs(network: str, outputs) -> list[torch.Tensor]:
    return list(outputs[-1]) if network == "bpnet" else [outputs]


def versions() -> list[Row]:
    rows = [Row("torch", f"{torch.__version__} (CUDA {torch.version.cuda})", "ok")]
    if torch.cuda.is_available():
        rows.append(Row("GPU", f"{torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}", "ok"))
        try:
            import pynvml

            pynvml.nvmlInit()
            driver = pynvml.nvmlSystemGetDriverVersion()
            rows.append(Row("driver", driver.decode() if isinstance(driver, bytes) else driver, "ok"))
        except Exception as err:  # noqa: BLE001 - a version row, not a check
            rows.append(Row("driver", f"NVML: {err}", "skipped"))
    else:
        rows.append(Row("GPU", "none visible", "skipped"))
    try:
        import tensorrt

        rows.append(Row("TensorRT", tensorrt.__version__, "ok"))
    except ImportError:
        rows.append(Row("TensorRT", "not installed", "skipped"))
    return rows


def amp_step(network: str, config: dict, size: tuple[int, int], dtype: torch.dtype, batch: int) -> Row:
    """One SGD step in AMP `dtype` + channels_last against fp32, same weights and batch."""
    name = f"amp {str(dtype).split('.')[-1]} {network}"
    device = _device()
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise Skip("this GPU has no bfloat16")
    torch.manual_seed(0)
    reference = build_model(network, config, COCO17.num_joints, pretrained=False).to(device)
    mixed = copy.deepcopy(reference).to(memory_format=torch.channels_last)
    images = torch.randn(batch, 3, *size, device=device)
    with torch.no_grad():
        targets = [torch.randn_like(t) for t in _outputs(network, reference(images))]
    losses = []
    for model, amp in ((reference, False), (mixed, True)):
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        scaler = torch.amp.GradScaler(device.type, enabled=amp and dtype == torch.float16)
        x = images.contiguous(memory_format=torch.channels_last) if amp else images
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = sum(torch.nn.functional.mse_loss(o.float(), t) for o, t in zip(_outputs(network, model(x)), targets))
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
    drift = abs(losses[1] - losses[0]) / max(abs(losses[0]), 1e-12)
    ok = all(np.isfinite(losses)) and drift < MAX_AMP_DRIFT
    return Row(name, f"loss {losses[1]:.5g} vs fp32 {losses[0]:.5g}, drift {drift:.1e}", "ok" if ok else "FAIL")


def nccl_selftest() -> Row:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else (2 if QUICK else 0)  # quick: 2 gloo ranks
    if gpus == 0:
        raise Skip("no CUDA device")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                          "-m", "pose_workloads", "selftest"], capture_output=True, text=True, timeout=300)
    ok = run.returncode == 0 and run.stdout.count(" ok") == gpus
    last = (run.stdout.strip().splitlines() or run.stderr.strip().splitlines() or ["no output"])[-1]
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    return Row(f"{backend} selftest x{gpus}", last[:100], "ok" if ok else "FAIL")


def _export(work: Path, network: str, config: dict, size: tuple[int, int]) -> tuple[Path, Path]:
    from pose_workloads import model_file
    from pose_workloads.export.onnx import export_onnx

    torch.manual_seed(0)
    model = build_model(network, config, COCO17.num_joints, pretrained=False).eval()
    pth, onnx_path = work / f"{network}.pth", work / f"{network}.onnx"
    model_file.write(pth, model_file.contents(network, model, config, COCO17, size))
    export_onnx(pth, onnx_path)
    return pth, onnx_path


def tensorrt_parity(work: Path, network: str, config: dict, size: tuple[int, int], data_type: str,
                    strongly_typed: bool, cal_dir: Path) -> Row:
    from pose_workloads.export import gate, tensorrt

    reason = tensorrt.tensorrt_unavailable()
    if reason:
        raise Skip(reason)
    import tensorrt as trt

    if not strongly_typed and not tensorrt.implicit_precision(trt):
        raise Skip(f"TensorRT {trt.__version__} has no builder-flag path")
    pth, onnx_path = _export(work, network, config, size)
    engine = work / f"{network}-{data_type}-{'typed' if strongly_typed else 'flags'}.engine"
    profile = tensorrt.EngineProfile((1, 3, *size), (4, 3, *size), (4, 3, *size))
    start = time.perf_counter()
    tensorrt.build_engine(onnx_path, engine, profile, data_type, tensorrt.Calibration(cal_dir, None, 2), strongly_typed)
    built = time.perf_counter() - start
    info = tensorrt.read_onnx_info(onnx_path)
    comparison = gate.compare(pth, engine, "engine", data_type, gate.gate_inputs(info, cal_dir, None))
    worst = max(comparison.max_abs_diff.values())
    status = "FAIL" if comparison.failure() else "ok"
    path = "strongly typed" if strongly_typed else "builder flags"
    return Row(f"trt {data_type} {network} ({path})",
               f"max abs diff {worst:.2e} of {comparison.output_scale:.2e}, built in {built:.0f} s", status)


def _throughput(step: Callable[[], None], images_per_step: int, seconds: float) -> float:
    step()  # warm-up (cudnn autotune, lazy init)
    _synchronize()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    _synchronize()
    return steps * images_per_step / (time.perf_counter() - start)


def train_throughput(network: str, config: dict, size: tuple[int, int], batch: int, seconds: float) -> Row:
    device = _device()
    torch.backends.cudnn.benchmark = True
    model = build_model(network, config, COCO17.num_joints, pretrained=False).to(device).to(
        memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type)
    images = torch.randn(batch, 3, *size, device=device).contiguous(memory_format=torch.channels_last)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16):
            loss = sum(o.float().square().mean() for o in _outputs(network, model(images)))
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    rate = _throughput(step, batch, seconds)
    name = config.get("name") or f"bpnet {config['backbone_attributes']['architecture']}"
    result = f"{rate:.0f} img/s (fp16 AMP, channels_last, {device.type})"
    return Row(f"train {name} {size[0]}x{size[1]} b{batch}", result, "ok")


def engine_throughput(work: Path, seconds: float) -> list[Row]:
    from pose_workloads.export import tensorrt
    from pose_workloads.runtime import load_predictor

    reason = tensorrt.tensorrt_unavailable()
    if reason:
        raise Skip(reason)
    config, size = {"name": "simple_pose_resnet50_v1b"}, (256, 192)
    _, onnx_path = _export(work, "simple-pose", config, size)
    engine = work / "r50-fp16.engine"
    profile = tensorrt.EngineProfile((1, 3, *size), (32, 3, *size), (32, 3, *size))
    tensorrt.build_engine(onnx_path, engine, profile, "fp16")
    predictor = load_predictor(engine)
    rows = []
    for batch in (1, 32):
        images = np.random.default_rng(0).standard_normal((batch, 3, *size)).astype(np.float32)
        rate = _throughput(lambda: predictor(images), batch, seconds)  # noqa: B023 - used at once
        rows.append(Row(f"trt fp16 r50 256x192 b{batch}", f"{rate:.0f} img/s (host copies included)", "ok"))
    return rows


def run_check(rows: list[Row], name: str, check: Callable[[], Row | list[Row]]) -> None:
    try:
        result = check()
        rows.extend(result if isinstance(result, list) else [result])
    except Skip as why:
        rows.append(Row(name, str(why), "skipped"))
    except Exception as err:  # noqa: BLE001 - one failed check is one FAIL row, the rest still run
        rows.append(Row(name, f"{type(err).__name__}: {str(err).splitlines()[0][:100] if str(err) else ''}", "FAIL"))
    print(f"  {rows[-1].check}: {rows[-1].status}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models and short timings (a CPU smoke run)")
    args = parser.parse_args(argv)
    global QUICK
    QUICK = args.quick
    seconds = 0.5 if args.quick else 10.0
    # (config, train size, train batch) of each network; --quick: tiny models at CPU sizes.
    r50 = ({"name": "simple_pose_resnet50_v1b"}, (256, 192), 32)
    m1 = (BPNET_M1, (368, 368), 8)
    if args.quick:
        r50, m1 = ({"name": "simple_pose_tiny"}, (64, 48), 2), (BPNET_TINY, (64, 64), 1)
    rows = versions()
    with tempfile.TemporaryDirectory(prefix="pose-gpu-check-") as tmp:
        work = Path(tmp)
        cal_dir = work / "cal"
        cal_dir.mkdir()
        import cv2

        for i in range(8):
            cv2.imwrite(str(cal_dir / f"{i}.png"), np.random.default_rng(i).integers(0, 255, (240, 320, 3), np.uint8))
        for dtype in (torch.float16, torch.bfloat16):
            run_check(rows, f"amp {dtype} simple-pose", lambda d=dtype: amp_step("simple-pose", r50[0], r50[1], d, 8))
            run_check(rows, f"amp {dtype} bpnet", lambda d=dtype: amp_step("bpnet", m1[0], m1[1], d, 2))
        run_check(rows, "nccl selftest", nccl_selftest)
        tiny = (("simple-pose", {"name": "simple_pose_tiny"}, (128, 96)), ("bpnet", BPNET_TINY, (96, 96)))
        for network, config, size in tiny:
            for typed in (False, True):
                for data_type in ("fp32", "fp16", "int8"):
                    run_check(rows, f"trt {data_type} {network} ({'typed' if typed else 'flags'})",
                              lambda n=network, c=config, s=size, d=data_type, t=typed:
                              tensorrt_parity(work, n, c, s, d, t, cal_dir))
        run_check(rows, "train simple-pose r50", lambda: train_throughput("simple-pose", *r50, seconds))
        run_check(rows, "train bpnet m1", lambda: train_throughput("bpnet", *m1, seconds))
        run_check(rows, "trt fp16 r50 throughput", lambda: engine_throughput(work, seconds))
    width = max(len(r.check) for r in rows)
    print(f"| {'check'.ljust(width)} | status | result |\n| {'-' * width} | --- | --- |")
    for row in rows:
        print(f"| {row.check.ljust(width)} | {row.status} | {row.result} |")
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    sys.exit(main())

"""onnxruntime against PyTorch eager on the CPU, for the models `pose ... export` writes.

    python bench/bench_runtime.py [--threads 2] [--repeat 5] [--models simple_pose_tiny,bpnet_tiny]

Each model is built with random weights, saved as a model file, exported by `export.export_onnx`
(which checks the ONNX outputs against PyTorch), and then both run the same inputs in this
process with the same number of threads: PyTorch eager under `inference_mode`, onnxruntime's CPU
provider with all graph optimisations. Runs alternate between the two so a noisy, shared machine
slows both alike; the median of `--repeat` runs after one warm-up is reported, and the ratio
ORT / eager (below 1: onnxruntime is faster) comes from the same run. Network time only: no
pre-processing, decoding or grouping.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

# Both runtimes' worker threads otherwise spin-wait after each run and steal the cores the other
# runtime's next run needs (alternating runs on a small machine measured eager 30x too slow).
# Set before torch starts its OpenMP pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pose_workloads.export.onnx import INPUT_NAME, export_onnx  # noqa: E402
from pose_workloads.model_file import stage_outputs  # noqa: E402
from pose_workloads.models import build_model  # noqa: E402
from pose_workloads.specs import COCO17  # noqa: E402


class Case(NamedTuple):
    name: str
    network: str
    model_config: dict
    input_hw: tuple[int, int]
    batches: tuple[int, ...]


CASES = [
    Case("simple_pose_resnet18_v1b", "simple-pose", {"name": "simple_pose_resnet18_v1b"}, (256, 192), (1, 8)),
    Case("simple_pose_tiny", "simple-pose", {"name": "simple_pose_tiny"}, (256, 192), (1, 8)),
    Case("bpnet_tiny", "bpnet", {"backbone_attributes": {"architecture": "tiny"}}, (256, 256), (1,)),
    Case("bpnet_vgg", "bpnet", {"backbone_attributes": {"architecture": "vgg"}}, (256, 256), (1,)),
]


def export_case(case: Case, directory: Path) -> tuple[torch.nn.Module, Path, float]:
    """Random-init model, its model file and ONNX file; returns (model, onnx path, max abs diff)."""
    torch.manual_seed(0)
    model = build_model(case.network, case.model_config, COCO17.num_joints, pretrained=False).eval()
    pth = directory / f"{case.name}.pth"
    torch.save({"network": case.network, "model_config": case.model_config, "pose_config": COCO17.model_dump(),
                "input_size": list(case.input_hw), "state_dict": model.state_dict()}, pth)
    checks = export_onnx(pth, directory / f"{case.name}.onnx")
    return model, directory / f"{case.name}.onnx", max(c.max_abs_diff for c in checks)


def alternate_medians(first: Callable[[], object], second: Callable[[], object], repeat: int,
                      budget_s: float) -> tuple[float, float, int]:
    """Median seconds of each and the number of runs: one warm-up each, then alternate runs,
    `repeat` of each or fewer once `budget_s` is spent (at least one)."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    spent = 0.0
    while len(times[0]) < repeat and (not times[0] or spent < budget_s):
        for fn, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
            spent += out[-1]
    return statistics.median(times[0]), statistics.median(times[1]), len(times[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for both runtimes")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per runtime and input, at most")
    parser.add_argument("--seconds_per_input", type=float, default=4.0,
                        help="fewer runs once this much was timed for one input (keeps the whole run near a minute)")
    parser.add_argument("--models", default=",".join(c.name for c in CASES), help="comma-separated subset")
    args = parser.parse_args()

    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # see OMP_WAIT_POLICY above
    wanted = set(args.models.split(","))
    started = time.perf_counter()
    print(f"PyTorch {torch.__version__} eager vs onnxruntime {ort.__version__} (CPUExecutionProvider), "
          f"{args.threads} threads, median of up to {args.repeat} alternating runs after a warm-up")
    print(f"  {'model':<26} {'input':>9} {'batch':>5} {'eager ms':>10} {'ORT ms':>10} {'ORT/eager':>9} {'runs':>4} "
          f"{'max |diff|':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            if case.name not in wanted:
                continue
            model, onnx_path, diff = export_case(case, Path(tmp))
            session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
            for batch in case.batches:
                images = np.random.default_rng(batch).normal(size=(batch, 3, *case.input_hw)).astype(np.float32)

                @torch.inference_mode()
                def eager(images=images, case=case, model=model):
                    return [t.numpy() for t in stage_outputs(case.network, model(torch.from_numpy(images)))]

                def onnxruntime(images=images, session=session):
                    return session.run(None, {INPUT_NAME: images})

                eager_s, ort_s, runs = alternate_medians(eager, onnxruntime, args.repeat, args.seconds_per_input)
                print(f"  {case.name:<26} {case.input_hw[0]:>4}x{case.input_hw[1]:<4} {batch:>5} "
                      f"{eager_s * 1e3:>10.1f} {ort_s * 1e3:>10.1f} {ort_s / eager_s:>9.2f} {runs:>4} {diff:>10.1e}",
                      flush=True)
    print(f"  total {time.perf_counter() - started:.0f} s (exports included)")


if __name__ == "__main__":
    main()

"""scripts/gpu_check.py (`make gpu-check`) runs on a GPU; here its parts run small on the CPU
(`--quick`), so the script cannot rot unnoticed before a GPU is at hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gpu_check(monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "QUICK", True)
    return module


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_an_amp_train_step_is_compared_with_fp32(gpu_check, dtype):
    row = gpu_check.amp_step("simple-pose", {"name": "simple_pose_tiny"}, (64, 48), dtype, 2)
    assert row.status == "ok" and "drift" in row.result and "vs fp32" in row.result


def test_a_failed_check_is_one_row_and_the_others_still_run(gpu_check):
    rows = []

    def broken():
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore lines")

    def absent():
        raise gpu_check.Skip("no CUDA device")

    gpu_check.run_check(rows, "broken", broken)
    gpu_check.run_check(rows, "absent", absent)
    gpu_check.run_check(rows, "fine", lambda: gpu_check.Row("fine", "1 img/s", "ok"))
    assert [(r.check, r.status) for r in rows] == [("broken", "FAIL"), ("absent", "skipped"), ("fine", "ok")]
    assert rows[0].result == "RuntimeError: CUDA error: an illegal memory access was encountered"


def test_tensorrt_rows_say_why_they_are_skipped_without_tensorrt(gpu_check, tmp_path):
    from pose_workloads.export.tensorrt import tensorrt_unavailable

    reason = tensorrt_unavailable()
    if reason is None:
        pytest.skip("TensorRT and a GPU are here")
    with pytest.raises(gpu_check.Skip, match=reason):
        gpu_check.tensorrt_parity(tmp_path, "bpnet", gpu_check.BPNET_TINY, (96, 96), "fp16", True, tmp_path)

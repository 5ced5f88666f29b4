"""GPU-only defects, checked without a GPU: the calls are recorded on fakes of the CUDA/NCCL
functions (the real ones cannot run here)."""

from __future__ import annotations

import datetime
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from pose_workloads import ranks, selftest
from pose_workloads.training.loop import amp_settings


class Stop(Exception):
    pass


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda says a GPU is there; set_device and init_process_group only record, in order."""
    calls: list[tuple] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))

    def init_process_group(backend, **kwargs):
        calls.append(("init_process_group", backend, kwargs.get("timeout")))
        raise Stop  # nothing further can run without NCCL

    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    return calls


def test_selftest_sets_the_cuda_device_before_nccl(fake_cuda):
    with pytest.raises(Stop):
        selftest.main(SimpleNamespace(fail_rank=None, hold_s=0.0))
    assert [c[0] for c in fake_cuda] == ["set_device", "init_process_group"]
    assert fake_cuda[0] == ("set_device", 1) and fake_cuda[1][1] == "nccl"


def test_the_process_group_outlives_rank_zeros_validation(fake_cuda):
    with pytest.raises(Stop):
        ranks.init_processes()
    (_, backend, timeout) = fake_cuda[1]
    # NCCL's default of 10 minutes is shorter than a COCO val2017 pass of bpnet on one GPU.
    assert backend == "nccl" and timeout >= datetime.timedelta(hours=1)
    assert fake_cuda[0] == ("set_device", 1)


@pytest.mark.parametrize("dtype, device, expected", [
    ("float16", "cuda", (True, torch.float16, True)),
    ("bfloat16", "cuda", (True, torch.bfloat16, False)),  # bfloat16 needs no loss scaling
    ("bfloat16", "cpu", (False, torch.bfloat16, False)),  # AMP is a GPU setting
])
def test_amp_runs_in_the_chosen_precision(dtype, device, expected):
    job = SimpleNamespace(amp=True, amp_dtype=dtype)
    assert tuple(amp_settings(job, torch.device(device))) == expected


def test_a_bad_amp_dtype_is_a_spec_error_naming_the_field():
    from pose_workloads.specs import SimplePoseSpec

    with pytest.raises(ValueError, match="amp_dtype"):
        SimplePoseSpec.model_validate({"data": {}, "train": {"amp_dtype": "float8"}})

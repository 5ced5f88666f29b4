"""Tasks number GPUs as NVML (`--gpu_index`, `pose info`) does: by PCI bus, not CUDA's default
fastest-first order, under every runner."""

from __future__ import annotations

from launcher.runners import TaskCall, local
from launcher.runners.docker import container_kwargs


def test_tasks_see_gpus_in_nvmls_order():
    call = TaskCall(task="selftest", args=("selftest",), gpu_ids=(1,))
    assert local.task_environment(call)["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert local.task_environment(call)["CUDA_VISIBLE_DEVICES"] == "1"
    assert container_kwargs(call, "pose-test")["environment"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"

"""`--gpus N` / `--gpu_index I,J` against what NVML found."""

from __future__ import annotations

import pytest

from pose_workloads.errors import BadInput
from launcher.gpus import Gpu, GpuInventory, choose_gpus, find_gpus, parse_gpu_index

TWO = GpuInventory((Gpu(0, "NVIDIA H100", 81559, "GPU-a"), Gpu(1, "NVIDIA H100", 81559, "GPU-b")), driver="550.54")
NONE = GpuInventory((), reason="NVML: NVML Shared Library Not Found")


def test_default_one_gpu_is_the_first():
    assert choose_gpus(TWO, 1, None) == [0]


def test_gpu_index_picks_exactly_those():
    assert choose_gpus(TWO, 1, parse_gpu_index("1")) == [1]
    assert choose_gpus(TWO, 2, parse_gpu_index("1,0")) == [1, 0]


def test_no_gpu_found_runs_on_cpu_whatever_the_count():
    assert choose_gpus(NONE, 1, None) == []
    assert choose_gpus(NONE, 2, None) == []


def test_more_gpus_than_found_names_what_was_found():
    with pytest.raises(BadInput) as err:
        choose_gpus(TWO, 4, None)
    assert "--gpus 4: only 2 found" in str(err.value) and "0: NVIDIA H100 81559 MiB" in str(err.value)


def test_gpu_index_the_host_lacks_is_refused():
    with pytest.raises(BadInput, match="no GPU 5; found 0: NVIDIA H100"):
        choose_gpus(TWO, 1, [5])
    with pytest.raises(BadInput, match="no NVIDIA GPU found"):
        choose_gpus(NONE, 1, [0])


@pytest.mark.parametrize("text", ["a", "0,0", "-1", "0;1"])
def test_bad_gpu_index_is_refused(text):
    with pytest.raises(BadInput, match="--gpu_index"):
        parse_gpu_index(text)


def test_nvml_without_a_driver_means_no_gpu_not_a_crash():
    # Here (no NVIDIA driver) NVML fails to load; with a GPU host this lists its GPUs.
    inventory = find_gpus()
    assert isinstance(inventory.gpus, tuple)
    assert inventory.gpus or inventory.reason

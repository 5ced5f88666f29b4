"""`--gpus N` / `--gpu_index I,J` against what NVML found."""

from __future__ import annotations

import pytest

from launcher.gpus import Gpu, GpuInventory, choose_gpus, find_gpus, parse_gpu_index
from pose_workloads.errors import BadInput

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


class FakeNvml:
    """nvidia-ml-py's calls `find_gpus` makes, answering for two GPUs as a real driver does
    (older nvidia-ml-py returns bytes for names, newer str: one of each here)."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices: list[tuple[bytes | str, int, str]], driver: bytes | str = b"550.54.15"):
        self.devices, self.driver, self.calls = devices, driver, []

    def nvmlInit(self):
        self.calls.append("init")

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlSystemGetDriverVersion(self):
        return self.driver

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return self.devices[handle][0]

    def nvmlDeviceGetMemoryInfo(self, handle):
        return type("Memory", (), {"total": self.devices[handle][1]})()

    def nvmlDeviceGetUUID(self, handle):
        return self.devices[handle][2]


def test_nvml_success_lists_each_gpu_and_shuts_nvml_down(monkeypatch):
    import sys

    fake = FakeNvml([(b"NVIDIA H100 80GB HBM3", 85520809984, "GPU-1f2e"), ("NVIDIA A10", 24146608128, "GPU-9a8b")])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    inventory = find_gpus()
    assert inventory == GpuInventory(
        (Gpu(0, "NVIDIA H100 80GB HBM3", 81559, "GPU-1f2e"), Gpu(1, "NVIDIA A10", 23028, "GPU-9a8b")),
        driver="550.54.15",
    )
    assert fake.calls == ["init", "shutdown"]
    assert choose_gpus(inventory, 2, None) == [0, 1]


def test_nvml_error_while_listing_is_one_line_and_shuts_nvml_down(monkeypatch):
    import sys

    fake = FakeNvml([(b"NVIDIA H100", 2**30, "GPU-a")])

    def lost(handle):
        raise FakeNvml.NVMLError("GPU is lost")

    fake.nvmlDeviceGetUUID = lost
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with pytest.raises(BadInput, match="NVML found GPUs but could not read them \\(GPU is lost\\); check `nvidia-smi`"):
        find_gpus()
    assert fake.calls == ["init", "shutdown"]

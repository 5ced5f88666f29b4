"""The host's NVIDIA GPUs (NVML) and the choice `--gpus N` / `--gpu_index I,J` makes among them.

TAO passes every GPU to the container (`count=-1`) and leaves the choice to
CUDA_VISIBLE_DEVICES inside; `pose` asks the engine for exactly the chosen GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

from pose_workloads.errors import BadInput


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_mib: int
    uuid: str


@dataclass(frozen=True)
class GpuInventory:
    gpus: tuple[Gpu, ...]
    driver: str | None = None
    # Why NVML found nothing (library missing, no driver); empty when it answered.
    reason: str = ""


def find_gpus() -> GpuInventory:
    """Ask NVML. No driver or no library is not an error: it means no GPU."""
    try:
        import pynvml
    except ImportError:
        return GpuInventory((), reason="nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        return GpuInventory((), reason=f"NVML: {err}")
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(Gpu(
                index=index,
                name=_text(pynvml.nvmlDeviceGetName(handle)),
                memory_mib=pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20,
                uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
            ))
        return GpuInventory(tuple(gpus), driver=_text(driver))
    except pynvml.NVMLError as err:
        # The driver answered, then failed on a device (a GPU fallen off the bus, say): running
        # on CPU instead would hide it.
        raise BadInput(f"NVML found GPUs but could not read them ({err}); check `nvidia-smi`, "
                       "or hide the broken GPU with --gpu_index") from None
    finally:
        pynvml.nvmlShutdown()


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py returns bytes.
    return value.decode() if isinstance(value, bytes) else value


def describe(inventory: GpuInventory) -> str:
    if not inventory.gpus:
        return "none found" + (f" ({inventory.reason})" if inventory.reason else "")
    return ", ".join(f"{g.index}: {g.name} {g.memory_mib} MiB" for g in inventory.gpus)


def parse_gpu_index(text: str | None) -> list[int] | None:
    """`"0,2"` -> [0, 2]. Raises BadInput on anything else."""
    if text is None or text == "":
        return None
    try:
        indices = [int(part) for part in text.split(",")]
    except ValueError:
        raise BadInput(f"--gpu_index {text!r}: expected comma-separated GPU indices such as 0,1") from None
    if len(set(indices)) != len(indices) or min(indices) < 0:
        raise BadInput(f"--gpu_index {text!r}: indices must be distinct and >= 0, such as 0,1")
    return indices


def choose_gpus(inventory: GpuInventory, count: int, indices: list[int] | None) -> list[int]:
    """The host indices of the GPUs a task gets; [] means run on CPU.

    No GPU on the host means CPU, whatever `count` is (so `--gpus 2` still starts two ranks,
    with gloo, here and in CI). Asking for more GPUs than the host has, or for an index it does
    not have, is an error naming what NVML found.
    """
    if count < 1:
        raise BadInput(f"--gpus {count}: must be at least 1")
    if indices is not None:
        if not inventory.gpus:
            raise BadInput(f"--gpu_index {','.join(map(str, indices))}: no NVIDIA GPU found ({describe(inventory)}); "
                           "drop --gpu_index to run on CPU")
        missing = [i for i in indices if i >= len(inventory.gpus)]
        if missing:
            raise BadInput(
                f"--gpu_index {','.join(map(str, indices))}: no GPU {missing[0]}; found {describe(inventory)}")
        return list(indices)
    if not inventory.gpus:
        return []
    if count > len(inventory.gpus):
        raise BadInput(f"--gpus {count}: only {len(inventory.gpus)} found ({describe(inventory)}); "
                       f"ask for at most {len(inventory.gpus)}")
    return list(range(count))

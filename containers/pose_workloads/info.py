"""`python -m pose_workloads info`: what a task sees where it runs (versions, devices, user,
and, in a container, the mounted folders and whether it may write them)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import pose_workloads

# Mount points every container has; not the user's.
_STANDARD_MOUNTS = ("/", "/proc", "/sys", "/dev", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf",
                    "/sbin/docker-init", "/usr/sbin/docker-init", "/usr/bin/docker-init")
_VIRTUAL_FS = ("overlay", "nsfs", "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2")


def container_mounts() -> list[tuple[str, bool]]:
    """(mount point, writable) of the bind mounts of this container; [] outside a container."""
    if not Path("/.dockerenv").exists():
        return []
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point = fields[4].replace("\\040", " ")
        fstype = fields[fields.index("-") + 1]
        if fstype in _VIRTUAL_FS or point in _STANDARD_MOUNTS or point.startswith(("/proc/", "/sys/", "/dev/")):
            continue
        found.append((point, os.access(point, os.W_OK)))
    return sorted(set(found))


def main(args) -> int:
    import torch

    print(f"pose_workloads {pose_workloads.__version__}, python {platform.python_version()} ({sys.executable})")
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}, "
          f"GPUs visible: {torch.cuda.device_count() if torch.cuda.is_available() else 0}")
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(i)
        print(f"gpu {i}: {props.name}, {props.total_memory // 2**20} MiB")
    print(f"user {os.getuid()}:{os.getgid()}, HOME={os.environ.get('HOME', '')}, cwd {os.getcwd()}")
    for point, writable in container_mounts():
        print(f"mount {point} ({'rw' if writable else 'ro'})")
    return 0

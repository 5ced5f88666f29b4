"""Writing results so that no reader, and no rerun after a kill -9, ever sees half a file, and
a full disk is one line naming the folder and the bytes needed, the previous file intact."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pose_workloads.errors import DiskFull

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def atomic_path(path: str | Path, size: int | None = None) -> Iterator[Path]:
    """Yield a temp path beside `path` to write to; it replaces `path` when the block succeeds and
    is removed when it fails. Same folder, so os.replace is atomic. `size` (bytes, when known) is
    checked against the free space first; running out of space while writing raises DiskFull too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if size is not None and shutil.disk_usage(path.parent).free < size:
        raise disk_full(path, size)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in NO_SPACE:
            raise disk_full(path, size) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: bytes | str) -> None:
    data = data.encode() if isinstance(data, str) else data
    with atomic_path(path, len(data)) as tmp, open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        # Written to disk before the rename: a full disk (or quota) shows here, not later.
        os.fsync(out.fileno())


def disk_full(path: Path, size: int | None) -> DiskFull:
    free = shutil.disk_usage(path.parent).free
    needed = f"needs {size:,} bytes, {free:,} free" if size is not None else f"did not fit in the {free:,} bytes free"
    return DiskFull(f"{path.parent}: no space left for {path.name}: it {needed}; free some space "
                    f"(or choose another folder) and rerun; the previous {path.name}, if any, is intact")

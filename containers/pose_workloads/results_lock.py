"""One run per results directory: an exclusive lock, held for the life of the process.

Two runs writing one results directory interleave checkpoints, overwrite each other's metrics
and delete each other's temp files. Every action that owns a folder (`-r` of train, evaluate and
inference; `-o` of dataset synth and dataset_convert) takes `.pose.lock` in it first, with an
`fcntl` POSIX lock (`lockf`: it also works on NFS, where Slurm jobs share folders, and it is not
passed to forked data-loader workers). The kernel drops the lock when its process dies, kill -9
included, so a stale file never blocks; the file keeps the last holder's pid, host and network,
which name a live holder and refuse a folder of the other network.

The folder itself is checked first (a file, a symlink loop, read-only, not writable), so that
a bad `-r` is one line before any model or data is loaded.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from pose_workloads.errors import BadInput

LOCK_FILE = ".pose.lock"
# Checkpoints that say which network a folder holds when it has no lock record yet.
CHECKPOINT_LAST = "checkpoint_last.pth"


class ResultsLock:
    """A held lock; `release()` (or the process ending) lets the next run in. As a context
    manager, a BadInput raised inside also takes back what locking created (the lock file, the
    folders), so that bad input leaves nothing behind."""

    def __init__(self, folder: Path, fd: int, created: list[Path], created_file: bool):
        self.folder, self._fd = folder, fd
        self._created, self._created_file = created, created_file

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the file drops the POSIX lock
            self._fd = -1

    def __enter__(self) -> ResultsLock:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, BadInput):
            if self._created_file:
                (self.folder / LOCK_FILE).unlink(missing_ok=True)
            for folder in reversed(self._created):  # deepest first; a folder with files stays
                try:
                    folder.rmdir()
                except OSError:
                    break
        self.release()


def check_output_folder(folder: Path, flag: str) -> list[Path]:
    """Refuse, in one line, a folder no run could write: a file, a symlink loop, read-only,
    not writable. Creates it (and its parents) when missing; returns the folders it created,
    outermost first."""
    try:
        folder.resolve(strict=False)
    except RuntimeError:  # Python < 3.13 reports a symlink loop this way
        raise BadInput(f"{flag} {folder}: is a symlink loop; point {flag} at a real folder") from None
    missing = [p for p in (folder, *folder.parents) if not os.path.lexists(p)][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BadInput(f"{flag} {folder}: is a file, not a folder; choose a folder for {flag}") from None
    except OSError as err:
        raise BadInput(f"{flag} {folder}: cannot be created ({_reason(err)}); {_fix(err, flag)}") from None
    if not folder.is_dir():
        raise BadInput(f"{flag} {folder}: is a file, not a folder; choose a folder for {flag}")
    return missing


def lock_results_dir(folder: str | Path, network: str, action: str, flag: str = "-r") -> ResultsLock:
    """Check `folder`, take its lock or raise BadInput naming the live holder, refuse it if it
    holds a run of another network, and record this process as the holder."""
    folder = Path(folder)
    created = check_output_folder(folder, flag)
    path = folder / LOCK_FILE
    created_file = not path.exists()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise BadInput(f"{flag} {folder}: cannot be written ({_reason(err)}); {_fix(err, flag)}") from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno not in (errno.EACCES, errno.EAGAIN):
            raise BadInput(
                f"{flag} {folder}: cannot be locked ({_reason(err)}); use a local folder for {flag}") from None
        holder = _read_record(path.read_bytes() if path.is_file() else b"")
        who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
        what = f" ({holder.get('network', '')} {holder.get('action', '')})".replace(" )", ")") if holder else ""
        raise BadInput(
            f"{flag} {folder}: in use by {who}{what}; wait for it to end, or choose another {flag}") from None
    try:
        # Read through the locking descriptor: closing any other descriptor of this file would
        # drop the lock (POSIX lock semantics).
        previous = _read_record(os.pread(fd, 1 << 16, 0)).get("network") or _checkpoint_network(folder)
        if previous and network and previous != network:
            raise BadInput(f"{flag} {folder}: holds a {previous} run, not {network}; choose another {flag}")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "network": network, "action": action,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return ResultsLock(folder, fd, created, created_file)


def _read_record(data: bytes) -> dict:
    try:
        record = json.loads(data.decode("utf-8") or "{}")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _checkpoint_network(folder: Path) -> str:
    """The network of a folder's checkpoint_last.pth written before lock records existed."""
    last = folder / CHECKPOINT_LAST
    if not last.is_file():
        return ""
    from pose_workloads import model_file

    try:
        checkpoint = model_file.load(last, mmap=True)  # only the small "network" entry is read
    except BadInput:
        return ""  # a corrupt checkpoint is reported, with its fix, where it is resumed from
    return str(checkpoint.get("network") or "") if isinstance(checkpoint, dict) else ""


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


def _fix(err: OSError, flag: str) -> str:
    if err.errno == errno.EROFS:
        return f"it is on a read-only filesystem (or mount); choose a writable folder for {flag}"
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"give this user write permission, or choose another {flag}"
    if err.errno == errno.ELOOP:
        return f"it is a symlink loop; point {flag} at a real folder"
    return f"choose another {flag}"

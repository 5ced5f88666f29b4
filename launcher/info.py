"""What `pose info`, `pose images list` and `pose mounts check` print: plain lines and
aligned columns, the same in a terminal and in a CI log."""

from __future__ import annotations

import importlib.metadata
import platform

from pose_workloads.errors import BadInput


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _engine_line() -> tuple[str, object | None]:
    from launcher.runners.docker import connect, engine_address

    try:
        client = connect(timeout=5)
    except BadInput as err:
        return str(err).split("; ")[0], None
    server = client.version()
    return f"Docker {server.get('Version', '?')} at {engine_address()}", client


def print_info() -> None:
    import pose_workloads
    from launcher import gpus
    from launcher.images import KINDS, image_tag, list_images
    from launcher.mounts import load_mounts, mounts_file_path

    print(f"pose {pose_workloads.__version__} (python {platform.python_version()}); "
          f"typer {_version('typer')}, pydantic {_version('pydantic')}, docker SDK {_version('docker')}, "
          f"nvidia-ml-py {_version('nvidia-ml-py')}")
    torch = _version("torch")
    print(f"local runner: {'torch ' + torch if torch != 'not installed' else 'unavailable (pip install .[local])'}")
    engine, client = _engine_line()
    print(f"engine: {engine}")
    if client is not None:
        present = {row.tag for row in list_images(client)}
        for kind in KINDS:
            tag = image_tag(kind)
            print(f"image {tag}: {'present' if tag in present else f'missing (pose images build {kind})'}")
    inventory = gpus.find_gpus()
    driver = f" (driver {inventory.driver})" if inventory.driver else ""
    print(f"gpus: {gpus.describe(inventory)}{driver}")
    try:
        mounts = load_mounts()
    except BadInput as err:
        print(f"mounts: {mounts_file_path()}: invalid: {err} (pose mounts check)")
        return
    if not mounts.found:
        print(f"mounts: {mounts.file} not found (see mounts.example.json)")
    for m in mounts.mounts:
        print(f"mount: {m.source} -> {m.destination} ({'ro' if m.read_only else 'rw'})")


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Columns padded to their widest cell, never wrapped: greppable in a CI log."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    for line in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def print_images() -> int:
    from launcher.images import list_images
    from launcher.runners.docker import connect

    rows = list_images(connect(timeout=10))
    if not rows:
        print("no pose images; build one with `pose images build pytorch`")
        return 0
    print_table(("tag", "id", "size (MB)", "created", "this version"),
                [(r.tag, r.image_id, str(r.size_mb), r.created, "yes" if r.current else "") for r in rows])
    return 0


def print_mounts_check() -> int:
    """Table of mounts with their problems; 2 when anything is wrong."""
    from launcher.mounts_check import check_mounts

    path, rows, other = check_mounts()
    print(f"mounts file: {path}")
    if rows:
        print_table(("source", "destination", "mode", "problem"),
                    [(r.source, r.destination, "ro" if r.read_only else "rw", r.problem or "ok") for r in rows])
    for problem in other:
        print(f"problem: {problem}")
    return 2 if other or any(r.problem for r in rows) else 0

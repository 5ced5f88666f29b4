"""A local `tritonserver` on a pose repository, and a client for it: what the tests and
`make serve-demo` run.

The server is the binary the nvidia-pytriton wheel ships (Triton 2.51, HTTP + Python backend,
CPU; its stubs cover Python 3.8-3.13). It is laid out as PyTriton lays it out: the Python
backend folder with the stub for this interpreter's version, the wheel's libraries and this
interpreter's libpython on LD_LIBRARY_PATH, and this interpreter's bin/ first on PATH, where the
embedded Python looks for its prefix, so the Python models import from this environment.
Only the binary is used (`pip install --no-deps nvidia-pytriton`: its own numpy<2 pin is for
its Python API, which pose does not use).

    python -m pose_workloads.serving.server REPOSITORY IMAGE... [--boxes JSON]
        serve REPOSITORY, send each image, print the people found, stop the server.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

ENSEMBLE = "pose"


class TritonInstall(NamedTuple):
    binary: Path
    python_backend: Path  # libtriton_python.so, triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for this Python
    libs: Path


def find_tritonserver() -> TritonInstall | None:
    """The tritonserver of an installed nvidia-pytriton wheel, or None (found without importing
    pytriton, whose dependencies pose does not install)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    dist = root / "tritonserver"
    install = TritonInstall(
        dist / "bin" / "tritonserver", dist / "backends" / "python",
        dist / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}"
        / "triton_python_backend_stub",
        root.parent / "nvidia_pytriton.libs",
    )
    return install if all(p.exists() for p in install) else None


class Server(NamedTuple):
    url: str  # host:port, as tritonclient.http takes it
    process: subprocess.Popen
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(install: TritonInstall) -> dict[str, str]:
    env = dict(os.environ)
    libs = [str(install.libs), sysconfig.get_config_var("LIBDIR") or ""]
    inherited = [env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []
    env["LD_LIBRARY_PATH"] = ":".join([p for p in libs if p] + inherited)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


@contextlib.contextmanager
def running_server(repository: str | Path, ready_timeout_s: float = 120.0) -> Iterator[Server]:
    """tritonserver on `repository` (HTTP only, a free port), ready; stopped on exit whatever
    happens (SIGTERM, then SIGKILL after 10 s).

    Raises:
        RuntimeError: no nvidia-pytriton here, or the server exited or was not ready in time
            (the message ends with its log's last lines).
    """
    install = find_tritonserver()
    if install is None:
        raise RuntimeError("tritonserver not found: `pip install --no-deps nvidia-pytriton` (make venv installs it)")
    work = Path(tempfile.mkdtemp(prefix="pose-triton-"))
    backends = work / "backends"
    shutil.copytree(install.python_backend, backends / "python", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(install.stub, backends / "python" / "triton_python_backend_stub")
    port = _free_port()
    log = work / "tritonserver.log"
    command = [str(install.binary), f"--model-repository={Path(repository).resolve()}",
               f"--backend-directory={backends}",
               f"--http-port={port}", "--allow-grpc=false", "--allow-metrics=false", "--exit-on-error=true"]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=_environment(install),
                                   start_new_session=True)
    server = Server(f"127.0.0.1:{port}", process, log)
    try:
        _wait_ready(server, ready_timeout_s)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(work, ignore_errors=True)


def _log_tail(server: Server, lines: int = 15) -> str:
    text = server.log.read_text(errors="replace").splitlines() if server.log.exists() else []
    return "\n".join(line for line in text if not line.startswith(("+", "|")))[-3000:] if text else "(no log)"


def _wait_ready(server: Server, timeout_s: float) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"tritonserver exited with {server.process.returncode}:\n{_log_tail(server)}")
        with contextlib.suppress(Exception):
            if client.is_server_ready():
                return
        time.sleep(0.25)
    raise RuntimeError(f"tritonserver not ready after {timeout_s:.0f} s:\n{_log_tail(server)}")


class People(NamedTuple):
    keypoints: np.ndarray  # (P, K, 3) float32 x, y, score, image px
    scores: np.ndarray  # (P,) float32


def infer(url: str, image_bytes: bytes, boxes_xywh: np.ndarray | None = None) -> People:
    """One encoded image (and, for simple-pose, its (N, 4) person boxes) through the ensemble.

    Raises:
        tritonclient.utils.InferenceServerException: the server refused the request.
    """
    import tritonclient.http as httpclient

    data = np.frombuffer(image_bytes, dtype=np.uint8)
    inputs = [httpclient.InferInput("IMAGE", [len(data)], "UINT8")]
    inputs[0].set_data_from_numpy(data)
    if boxes_xywh is not None:
        boxes = np.asarray(boxes_xywh, np.float32).reshape(-1, 4)
        inputs.append(httpclient.InferInput("BOXES", list(boxes.shape), "FP32"))
        inputs[1].set_data_from_numpy(boxes)
    outputs = [httpclient.InferRequestedOutput(name) for name in ("KEYPOINTS", "SCORES")]
    result = httpclient.InferenceServerClient(url).infer(ENSEMBLE, inputs, outputs=outputs)
    return People(result.as_numpy("KEYPOINTS"), result.as_numpy("SCORES"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repository")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--boxes", default=None,
                        help="simple-pose: person boxes, COCO results JSON (default: the whole image)")
    args = parser.parse_args(argv)
    from pose_workloads.detections import read_boxes

    top_down = "BOXES" in (Path(args.repository) / ENSEMBLE / "config.pbtxt").read_text()
    boxes = read_boxes(args.boxes)
    with running_server(args.repository) as server:
        print(f"tritonserver ready at http://{server.url} on {args.repository}", flush=True)
        for image in map(Path, args.images):
            image_boxes = None
            if top_down:
                import cv2

                height, width = cv2.imread(str(image)).shape[:2]
                found = boxes.get(image.name) or (boxes.get(int(image.stem)) if image.stem.isdigit() else None)
                image_boxes = np.array([b for b, _ in found] if found else [[0, 0, width, height]], np.float32)
            people = infer(server.url, image.read_bytes(), image_boxes)
            found_joints = (people.keypoints[..., 2] > 0).sum(axis=1).tolist()
            print(f"{image.name}: {len(people.scores)} people, scores {[round(float(s), 3) for s in people.scores]}, "
                  f"joints found {found_joints}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

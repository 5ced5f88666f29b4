"""Fixtures of the container tests (helpers in pose_in_docker.py).

They skip only when no engine answers, or the image is not built, and POSE_REQUIRE_DOCKER is
unset; with POSE_REQUIRE_DOCKER=1 (.ci/run) both are failures. Build the image: `make images`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pose_in_docker import (
    DATA_IN_CONTAINER,
    IMAGE,
    POSE,
    RESULTS_IN_CONTAINER,
    SPECS_IN_CONTAINER,
    Workspace,
    docker_required,
    pose_user,
    write_mounts,
)


def _unavailable(reason: str) -> None:
    if docker_required():
        pytest.fail(f"{reason}, and POSE_REQUIRE_DOCKER is set", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client():
    """A client of the engine $DOCKER_HOST names, once the engine answers and has the image."""
    import docker

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as err:  # whatever stops us reaching the engine, there is no engine here
        _unavailable(f"no Docker engine answers ({type(err).__name__}: {err})")
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        _unavailable(f"the engine has no {IMAGE}; build it with `make images`")
    if not POSE.is_file():
        pytest.fail(f"{POSE} not found: install the project (make venv)", pytrace=False)
    return client


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """A 6-image synthetic COCO-keypoints set under synth/ (images/, annotations/
    person_keypoints.json), made on the host; the tests read it through a read-only mount."""
    root = tmp_path_factory.mktemp("data")
    subprocess.run(
        [sys.executable, "-m", "pose_workloads", "dataset", "synth", "-o", str(root / "synth"), "--images", "6",
         "--size", "96x96", "--max_people", "2", "--seed", "1"],
        check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=120,
    )
    # Readable by the user the container runs as, whoever made it.
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


@pytest.fixture
def workspace(tmp_path, synth_data) -> Workspace:
    results = tmp_path / "results"
    specs = tmp_path / "specs"
    results.mkdir()
    specs.mkdir()
    if os.geteuid() == 0:
        os.chown(results, *pose_user())
    mounts_file = write_mounts(tmp_path / "mounts.json", [
        {"source": str(specs), "destination": SPECS_IN_CONTAINER, "read_only": True},
        {"source": str(synth_data), "destination": DATA_IN_CONTAINER, "read_only": True},
        {"source": str(results), "destination": RESULTS_IN_CONTAINER},
    ])
    return Workspace(root=tmp_path, specs=specs, data=synth_data, results=results, mounts_file=mounts_file)

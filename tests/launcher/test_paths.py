"""Host <-> container path translation: longest mount wins, symlinks resolved, both directions."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from launcher.mounts import Mount
from launcher.paths import LogPathMapper, local_path, place_path
from pose_workloads.errors import BadInput


def mount(source: Path, destination: str, read_only: bool = False) -> Mount:
    return Mount(source=source, destination=destination, read_only=read_only)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "exp" / "data" / "coco").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    return tmp_path


def test_longest_mount_source_wins(tree):
    mounts = (mount(tree / "exp", "/workspace/exp"), mount(tree / "exp" / "data", "/datasets", read_only=True))
    placed = place_path(str(tree / "exp" / "data" / "coco" / "a.json"), mounts, Path("m.json"), "--input")
    assert placed.container == PurePosixPath("/datasets/coco/a.json")
    assert placed.mount.read_only
    placed = place_path(str(tree / "exp" / "run1"), mounts, Path("m.json"), "-r")
    assert placed.container == PurePosixPath("/workspace/exp/run1")


def test_mount_of_the_path_itself_maps_to_the_destination(tree):
    mounts = (mount(tree / "exp", "/workspace/exp"),)
    assert place_path(str(tree / "exp"), mounts, Path("m.json"), "-r").container == PurePosixPath("/workspace/exp")


def test_sibling_with_common_prefix_is_not_inside_the_mount(tree):
    (tree / "exp2").mkdir()
    mounts = (mount(tree / "exp", "/workspace/exp"),)
    with pytest.raises(BadInput, match="exp2/x is outside every mount"):
        place_path(str(tree / "exp2" / "x"), mounts, Path("m.json"), "-r")


def test_relative_path_is_taken_from_the_working_directory(tree):
    mounts = (mount(tree / "exp", "/workspace/exp"),)
    placed = place_path("data/../results", mounts, Path("m.json"), "-r", cwd=tree / "exp")
    assert placed.container == PurePosixPath("/workspace/exp/results")
    assert placed.host == tree / "exp" / "results"


def test_symlink_into_a_mount_is_resolved_before_matching(tree):
    (tree / "elsewhere" / "link").symlink_to(tree / "exp" / "data")
    mounts = (mount(tree / "exp", "/workspace/exp"),)
    placed = place_path(str(tree / "elsewhere" / "link" / "coco"), mounts, Path("m.json"), "--input")
    assert placed.container == PurePosixPath("/workspace/exp/data/coco")


def test_symlink_out_of_a_mount_is_refused_naming_where_it_resolves(tree):
    # Inside the container the link would dangle: its target is not mounted.
    (tree / "exp" / "outside").symlink_to(tree / "elsewhere")
    mounts = (mount(tree / "exp", "/workspace/exp"),)
    with pytest.raises(BadInput) as err:
        place_path(str(tree / "exp" / "outside" / "f.jpg"), mounts, Path("m.json"), "--input")
    assert f"resolves to {tree / 'elsewhere' / 'f.jpg'}" in str(err.value)


def test_symlinked_mount_source_is_resolved(tree):
    (tree / "exp-link").symlink_to(tree / "exp")
    mounts = (mount(tree / "exp-link", "/workspace/exp"),)
    assert mounts[0].source == tree / "exp"
    placed = place_path(str(tree / "exp" / "data"), mounts, Path("m.json"), "--input")
    assert placed.container == PurePosixPath("/workspace/exp/data")


def test_container_path_written_tao_style_maps_back_to_the_host(tree):
    mounts = (mount(tree / "exp", "/workspace/exp"), mount(tree / "exp" / "data", "/workspace/exp/data"))
    placed = place_path("/workspace/exp/data/coco/x.json", mounts, Path("m.json"), "--dataset_spec")
    assert placed.container == PurePosixPath("/workspace/exp/data/coco/x.json")
    assert placed.host == tree / "exp" / "data" / "coco" / "x.json"


def test_local_runner_maps_container_paths_back_and_keeps_host_paths(tree):
    mounts = (mount(tree / "exp", "/workspace/exp"),)
    assert local_path("/workspace/exp/data/coco", mounts) == tree / "exp" / "data" / "coco"
    assert local_path(str(tree / "elsewhere"), mounts) == tree / "elsewhere"  # no mount needed
    assert local_path("out", mounts, cwd=tree) == tree / "out"
    assert local_path("/opt/not-mounted", mounts) == Path("/opt/not-mounted")


def test_path_outside_mounts_names_the_path_and_the_mounts(tree):
    mounts = (mount(tree / "exp", "/workspace/exp"), mount(tree / "exp" / "data", "/datasets"))
    with pytest.raises(BadInput) as err:
        place_path("/opt/results", mounts, tree / "mounts.json", "-r")
    message = str(err.value)
    assert message.startswith("-r: /opt/results is outside every mount")
    assert f"{tree / 'exp'} -> /workspace/exp" in message and f"{tree / 'exp' / 'data'} -> /datasets" in message
    assert str(tree / "mounts.json") in message and "\n" not in message


def test_log_lines_show_host_paths_longest_prefix_whole_components():
    rewrite = LogPathMapper([("/workspace/exp", "/home/u/exp"), ("/workspace/exp/data", "/mnt/coco"),
                             ("/pose_launch/train.yaml", "/home/u/specs/train.yaml")])
    line = "saved /workspace/exp/run/model.pth; read /workspace/exp/data/a.jpg, /workspace/experiments/x"
    assert rewrite(line) == "saved /home/u/exp/run/model.pth; read /mnt/coco/a.jpg, /workspace/experiments/x"
    assert (rewrite("error: /pose_launch/train.yaml: train.epochs: bad")
            == "error: /home/u/specs/train.yaml: train.epochs: bad")
    assert rewrite("'/workspace/exp'") == "'/home/u/exp'"
    assert rewrite("/other/workspace/exp") == "/other/workspace/exp"

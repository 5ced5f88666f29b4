"""`launch()`: specs validated and translated on the host, bad input refused before anything
starts, and the TAO blog's workflow (container paths everywhere) working unchanged."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from launcher.launch import LaunchOptions, PathPlanner, launch
from launcher.mounts import load_mounts
from launcher.tasks import find_task

REPO = Path(__file__).resolve().parents[2]

SIMPLE_POSE_SPEC = {
    "data": {
        "train_images": "../data/train",  # relative: from the working directory (exp/)
        "train_annotations": "/workspace/data/train.json",  # a container path, TAO style
        "val_images": "{root}/data/val",
        "val_annotations": "{root}/data/val.json",
    },
    "train": {"epochs": 3},
}


def write_spec(path: Path, data: dict, root: Path) -> Path:
    text = yaml.safe_dump(data).replace("{root}", str(root))
    path.write_text(text)
    return path


def plan(project: Path, runner: str, task=("simple-pose", "train"), values=None, overrides=()):
    planner = PathPlanner(load_mounts(), runner, project / "launch")
    args = planner.task_args(find_task(*task), values, tuple(overrides))
    return planner, args


def test_spec_paths_become_container_paths_for_docker(project):
    write_spec(project / "specs" / "sp.yaml", SIMPLE_POSE_SPEC, project)
    planner, args = plan(project, "docker", values={"-e": str(project / "specs" / "sp.yaml"), "-r": "results"})
    assert args == ["simple-pose", "train", "-e", "/pose_launch/sp.yaml", "-r", "/workspace/exp/results"]
    (copy,) = planner.copies
    assert copy.spec.data.train_images == "/workspace/data/train"
    assert copy.spec.data.train_annotations == "/workspace/data/train.json"
    assert copy.spec.data.val_annotations == "/workspace/data/val.json"
    assert copy.source == project / "specs" / "sp.yaml"


def test_container_paths_in_a_spec_map_back_to_the_host_for_the_local_runner(project):
    write_spec(project / "specs" / "sp.yaml", SIMPLE_POSE_SPEC, project)
    planner, args = plan(project, "local", values={"-e": "/workspace/specs/sp.yaml", "-r": "/workspace/exp/r"})
    assert args[3] == str(project / "launch" / "sp.yaml")
    assert args[5] == str(project / "exp" / "r")
    spec = planner.copies[0].spec
    assert spec.data.train_annotations == str(project / "data" / "train.json")
    assert spec.data.train_images == str(project / "data" / "train")


def test_set_overrides_reach_the_translated_spec(project):
    write_spec(project / "specs" / "sp.yaml", SIMPLE_POSE_SPEC, project)
    planner, _ = plan(project, "docker", values={"-e": "../specs/sp.yaml", "-r": "r"},
                      overrides=["train.epochs=7", "train.lr=0.01"])
    assert planner.copies[0].spec.train.epochs == 7
    assert planner.copies[0].spec.train.lr == 0.01


def blog_layout(project: Path) -> Path:
    """The TAO blog's folders and ~/.tao_mounts.json, with this repository's bpnet specs."""
    root = project / "blog"
    exp = root / "tao-experiments"
    for folder in (exp / "bpnet" / "data", root / "specs", root / "data_pose_config", root / "model_pose_config"):
        folder.mkdir(parents=True)
    shutil.copy(REPO / "specs/bpnet/bpnet_train_m1_coco.yaml", root / "specs")
    shutil.copy(REPO / "specs/bpnet/coco_spec.json", root / "data_pose_config")
    shutil.copy(REPO / "specs/bpnet/bpnet_18joints.json", root / "model_pose_config")
    (root / "specs" / "infer_spec.yaml").write_text(yaml.safe_dump({
        "model_path": "/workspace/tao-experiments/bpnet/models/exp_m1_unpruned/bpnet_model.pth",
        "train_spec": "/workspace/examples/bpnet/specs/bpnet_train_m1_coco.yaml",
        "input_shape": [368, 368],
    }))
    tao_mounts = {"Mounts": [
        {"source": str(exp), "destination": "/workspace/tao-experiments"},
        {"source": str(root / "specs"), "destination": "/workspace/examples/bpnet/specs"},
        {"source": str(root / "data_pose_config"), "destination": "/workspace/examples/bpnet/data_pose_config"},
        {"source": str(root / "model_pose_config"), "destination": "/workspace/examples/bpnet/model_pose_config"},
    ]}
    (project / "mounts.json").write_text(json.dumps(tao_mounts))
    return root


def test_tao_blog_train_command_works_verbatim(project, cli):
    blog_layout(project)
    result = cli("bpnet", "train", "-e", "/workspace/examples/bpnet/specs/bpnet_train_m1_coco.yaml",
                 "-r", "/workspace/tao-experiments/bpnet/models/exp_m1_unpruned", "-k", "nvidia_tlt",
                 "--gpus", "1", "--runner", "docker", "--dry-run")
    assert result.exit_code == 0, result.output
    assert ("command: python -m pose_workloads bpnet train -e /pose_launch/bpnet_train_m1_coco.yaml "
            "-r /workspace/tao-experiments/bpnet/models/exp_m1_unpruned --gpus 1") in result.stdout
    assert "-k: pose models are not encrypted; the key is ignored" in result.stderr
    assert "nvidia_tlt" not in result.stdout  # the key never reaches the task


def test_nested_specs_are_validated_and_handed_over_translated(project):
    root = blog_layout(project)
    planner, args = plan(project, "docker", ("bpnet", "evaluate"), {
        "--inference_spec": "/workspace/examples/bpnet/specs/infer_spec.yaml",
        "--dataset_spec": "/workspace/examples/bpnet/data_pose_config/coco_spec.json",
        "--results_dir": "/workspace/tao-experiments/bpnet/results/eval",
    })
    names = {c.name: c for c in planner.copies}
    # infer_spec -> train_spec -> (coco_spec, bpnet_18joints): every spec file checked and copied.
    assert set(names) == {"infer_spec.yaml", "bpnet_train_m1_coco.yaml", "coco_spec.json", "bpnet_18joints.json"}
    assert names["infer_spec.yaml"].spec.train_spec == "/pose_launch/bpnet_train_m1_coco.yaml"
    train = names["bpnet_train_m1_coco.yaml"].spec
    assert train.dataloader.dataset_config.dataset_specs == {"coco": "/pose_launch/coco_spec.json"}
    assert train.dataloader.pose_config.pose_config_path == "/pose_launch/bpnet_18joints.json"
    assert train.dataloader.dataset_config.root_data_path == "/workspace/tao-experiments/bpnet/data"
    assert names["coco_spec.json"].source == root / "data_pose_config" / "coco_spec.json"
    assert "--dataset_spec" in args and "/pose_launch/coco_spec.json" in args

    # Locally the same specs point at host files.
    planner, _ = plan(project, "local", ("bpnet", "evaluate"), {
        "--inference_spec": "/workspace/examples/bpnet/specs/infer_spec.yaml",
        "--dataset_spec": str(root / "data_pose_config" / "coco_spec.json"),
        "--results_dir": "results",
    })
    coco = next(c for c in planner.copies if c.name == "coco_spec.json").spec
    assert coco.root_directory_path == str(root / "tao-experiments" / "bpnet" / "data")


def test_written_specs_are_readable_and_the_launch_dir_is_removed_after(project, monkeypatch):
    write_spec(project / "specs" / "sp.yaml", SIMPLE_POSE_SPEC, project)
    seen = {}

    def fake_run(call, runner):
        launch_dir = Path(call.args[3]).parent
        seen["spec"] = yaml.safe_load(Path(call.args[3]).read_text())
        seen["mode"] = launch_dir.stat().st_mode & 0o777, Path(call.args[3]).stat().st_mode & 0o777
        seen["dir"] = launch_dir
        return 7

    monkeypatch.setattr("launcher.launch.run", fake_run)
    code = launch("simple-pose", "train", {"-e": "../specs/sp.yaml", "-r": "r"},
                  LaunchOptions(runner="local", overrides=("train.epochs=2",)))
    assert code == 7
    assert seen["spec"]["train"]["epochs"] == 2
    assert seen["spec"]["data"]["train_images"] == str(project / "data" / "train")
    assert seen["mode"] == (0o755, 0o644)
    assert not seen["dir"].exists()


def launch_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("pose-launch-*")}


BAD_TASKS = {
    "missing_spec": (["simple-pose", "train", "-e", "nope.yaml", "-r", "r"],
                     ["nope.yaml", "file not found", "check the path"]),
    "spec_wrong_type": (["simple-pose", "train", "-e", "{specs}/wrong.yaml", "-r", "r"],
                        ["wrong.yaml", "train.epochs", "valid integer", "fix its value"]),
    "spec_unknown_field": (["simple-pose", "train", "-e", "{specs}/typo.yaml", "-r", "r"],
                           ["typo.yaml", "train.epoch", "remove it or check its spelling"]),
    "unknown_set_key": (["simple-pose", "train", "-e", "{specs}/good.yaml", "-r", "r", "--set", "train.epoch=2"],
                        ["--set train.epoch", "unknown field 'epoch'", "valid here", "epochs"]),
    "malformed_set": (["simple-pose", "train", "-e", "{specs}/good.yaml", "-r", "r", "--set", "train.epochs"],
                      ["--set", "key.sub=value"]),
    "set_without_spec": (["selftest", "--set", "a=1"], ["--set", "reads no spec", "drop --set"]),
    "output_outside_mounts": (["simple-pose", "train", "-e", "{specs}/good.yaml", "-r", "/opt/results"],
                              ["-r: /opt/results is outside every mount", "/workspace/exp"]),
    "spec_field_outside_mounts": (["simple-pose", "train", "-e", "{specs}/outside.yaml", "-r", "r"],
                                  ["outside.yaml: data.val_images", "/opt/val is outside every mount"]),
    "output_in_read_only_mount": (["simple-pose", "train", "-e", "{specs}/good.yaml", "-r", "../data/out"],
                                  ["-r:", "read-only mount", "writable mount"]),
    "missing_input": (["simple-pose", "evaluate", "-e", "{specs}/good.yaml", "-m", "nope.pth", "-r", "r"],
                      ["-m: nope.pth does not exist", "check the path"]),
    "too_many_gpus_for_one_process": (["simple-pose", "evaluate", "-e", "{specs}/good.yaml", "-m", "{specs}/good.yaml",
                                       "-r", "r", "--gpus", "2"], ["--gpus 2", "one process"]),
    "gpus_disagree_with_index": (["selftest", "--gpus", "2", "--gpu_index", "0"], ["disagree"]),
    "multi_node_without_endpoint": (["selftest", "--num_nodes", "2"], ["--rdzv_endpoint"]),
}


@pytest.mark.parametrize("case", sorted(BAD_TASKS))
def test_bad_task_input_is_one_line_exit_2_and_creates_nothing(case, project, bad_input):
    specs = project / "specs"
    write_spec(specs / "good.yaml", SIMPLE_POSE_SPEC, project)
    write_spec(specs / "wrong.yaml", {**SIMPLE_POSE_SPEC, "train": {"epochs": "many"}}, project)
    write_spec(specs / "typo.yaml", {**SIMPLE_POSE_SPEC, "train": {"epoch": 3}}, project)
    write_spec(specs / "outside.yaml", {"data": {**SIMPLE_POSE_SPEC["data"], "val_images": "/opt/val"}}, project)
    argv, words = BAD_TASKS[case]
    before_dirs, before_files = launch_dirs(), sorted(project.rglob("*"))
    line = bad_input(*[a.replace("{specs}", str(specs)) for a in argv], "--runner", "docker")
    for word in words:
        assert word in line
    assert launch_dirs() == before_dirs
    assert sorted(project.rglob("*")) == before_files


def test_unknown_network_or_action_exits_2(cli):
    assert cli("openpose", "train").exit_code == 2
    assert cli("bpnet", "fly").exit_code == 2
    assert cli("bpnet", "train", "--no-such-flag").exit_code == 2

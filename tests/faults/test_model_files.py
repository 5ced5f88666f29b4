"""Model files are data: a `__reduce__` payload planted in any kind of file pose opens (a model
for evaluate, inference, export and prune; checkpoint_last.pth on resume; pretrained weights;
a backbone) never runs, and every action exits 2 with one line. Damaged .pth/.onnx/.engine
files, a .onnx where a .pth is needed, metadata that contradicts the weights, and a corrupt
checkpoint_last.pth are one line too; pickled-module files are refused with how to convert."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pose_workloads import model_file
from pose_workloads.__main__ import main
from pose_workloads.data.convert import convert_dataset
from pose_workloads.errors import BadInput
from pose_workloads.models import build_model
from pose_workloads.runtime import load_predictor
from pose_workloads.specs import COCO17, BpnetDatasetSpec

TINY = {
    "simple-pose": {"name": "simple_pose_tiny"},
    "bpnet": {"backbone_attributes": {"architecture": "tiny"}, "stages": 2},
}
SIZE = {"simple-pose": (64, 48), "bpnet": (64, 64)}


class Payload:
    """What an attacker plants: unpickling it calls exec, which would create `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('payload ran')",))


def model_dict(network: str) -> dict:
    model = build_model(network, TINY[network], COCO17.num_joints, pretrained=False)
    return model_file.contents(network, model, TINY[network], COCO17, SIZE[network])


@pytest.fixture(scope="module")
def files(tmp_path_factory, coco_mini) -> dict:
    root = tmp_path_factory.mktemp("faults")
    out = {"root": root, "marker": root / "PAYLOAD_RAN"}
    for network in TINY:
        good = root / f"{network}.pth"
        model_file.write(good, model_dict(network))
        out[network] = good
        evil = root / f"evil-{network}.pth"
        torch.save({**model_dict(network), "evil": Payload(out["marker"])}, evil)
        out[f"evil-{network}"] = evil
    torch.save({"conv1.weight": torch.zeros(1), "evil": Payload(out["marker"])}, root / "evil-backbone.pth")
    split = {"images_root_dir_path": "images", "annotation_root_dir_path": coco_mini.keypoints_name}
    dataset = BpnetDatasetSpec(root_directory_path=str(coco_mini.root), train_data=split, test_data=split)
    (root / "coco_spec.json").write_text(json.dumps(dataset.model_dump(mode="json")))
    convert_dataset(dataset, "train", root / "shards", show_progress=False)
    (root / "infer.yaml").write_text(yaml.safe_dump({"input_shape": [64, 64]}))
    return out


def simple_pose_spec(files, coco_mini, **model) -> Path:
    path = files["root"] / f"sp-{len(model)}.yaml"
    data = {
        "train_images": str(coco_mini.images),
        "train_annotations": str(coco_mini.keypoints),
        "val_images": str(coco_mini.images),
        "val_annotations": str(coco_mini.keypoints),
        "workers": 0,
    }
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"name": "simple_pose_tiny", **model},
                "data": data,
                "train": {"input_size": [64, 64], "epochs": 1, "batch_size": 2},
            }
        )
    )
    return path


def bpnet_train_spec(files, **top) -> Path:
    shards = files["root"] / "shards"
    path = files["root"] / f"bp-{len(top)}-{top.get('load_graph')}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "num_epoch": 1,
                "amp": False,
                **top,
                "dataloader": {
                    "batch_size": 2,
                    "workers": 0,
                    "pose_config": {
                        "target_shape": [8, 8],
                        "pose_config_path": str(Path(__file__).parents[2] / "specs/pose_configs/coco17.json"),
                    },
                    "image_config": {"image_dims": {"height": 64, "width": 64}},
                    "dataset_config": {
                        "root_data_path": str(shards.parent),
                        "train_records_folder_path": str(shards.parent),
                        "train_records_path": [shards.name],
                        "dataset_specs": {},
                    },
                },
                "model": {**TINY["bpnet"], "heat_channels": 18},  # COCO-17 + background
            }
        )
    )
    return path


def one_line(capsys, argv: list[str]) -> str:
    code = main(argv)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("note:")]
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


ACTIONS = {
    "simple-pose evaluate": lambda f, c, r: [
        "simple-pose", "evaluate", "-e", str(simple_pose_spec(f, c)), "-m", str(f["evil-simple-pose"]), "-r", str(r)],
    "simple-pose inference": lambda f, c, r: [
        "simple-pose", "inference", "-m", str(f["evil-simple-pose"]), "--input", str(c.images), "-r", str(r)],
    "simple-pose export": lambda f, c, r: [
        "simple-pose", "export", "-m", str(f["evil-simple-pose"]), "-o", str(r / "m.onnx")],
    "bpnet evaluate": lambda f, c, r: [
        "bpnet", "evaluate", "--inference_spec", str(f["root"] / "infer.yaml"),
        "--model_filename", str(f["evil-bpnet"]), "--dataset_spec", str(f["root"] / "coco_spec.json"), "-r", str(r)],
    "bpnet inference": lambda f, c, r: [
        "bpnet", "inference", "--inference_spec", str(f["root"] / "infer.yaml"),
        "--model_filename", str(f["evil-bpnet"]), "--input", str(c.images), "-r", str(r)],
    "bpnet export": lambda f, c, r: ["bpnet", "export", "-m", str(f["evil-bpnet"]), "-o", str(r / "m.onnx")],
    "bpnet prune": lambda f, c, r: ["bpnet", "prune", "-m", str(f["evil-bpnet"]), "-o", str(r / "pruned.pth")],
    "bpnet train pretrained_weights": lambda f, c, r: [
        "bpnet", "train", "-e", str(bpnet_train_spec(f, pretrained_weights=str(f["evil-bpnet"]))), "-r", str(r)],
    "bpnet train load_graph": lambda f, c, r: [
        "bpnet", "train", "-e", str(bpnet_train_spec(f, pretrained_weights=str(f["evil-bpnet"]), load_graph=True)),
        "-r", str(r)],
    "simple-pose train pretrained_backbone": lambda f, c, r: [
        "simple-pose", "train", "-e",
        str(simple_pose_spec(f, c, pretrained_backbone=str(f["root"] / "evil-backbone.pth"))), "-r", str(r)],
}


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_planted_payload_never_runs_and_the_action_exits_2_with_one_line(files, coco_mini, tmp_path, capsys, action):
    line = one_line(capsys, ACTIONS[action](files, coco_mini, tmp_path / "out"))
    assert not files["marker"].exists(), "the payload ran"
    assert "which pose never loads (unpickling it would run code)" in line and "holds the Python object exec" in line, (
        line
    )


@pytest.mark.parametrize("network", sorted(TINY))
def test_payload_in_checkpoint_last_never_runs_on_resume(files, coco_mini, tmp_path, capsys, network):
    results = tmp_path / "results"
    results.mkdir()
    torch.save({**model_dict(network), "epoch": 1, "rng": Payload(files["marker"])}, results / "checkpoint_last.pth")
    spec = simple_pose_spec(files, coco_mini) if network == "simple-pose" else bpnet_train_spec(files)
    line = one_line(capsys, [network, "train", "-e", str(spec), "-r", str(results)])
    assert not files["marker"].exists(), "the payload ran"
    assert f"{results / 'checkpoint_last.pth'}: holds the Python object exec" in line
    assert f"to resume, delete {results / 'checkpoint_last.pth'}: training then starts from scratch" in line


def test_pickled_module_file_is_refused_with_how_to_convert_and_converts(files, tmp_path):
    old = tmp_path / "old_pruned.pth"
    ckpt = model_dict("bpnet")
    module = build_model("bpnet", TINY["bpnet"], 17, pretrained=False)
    module.refinements[0].paf_hidden[0] = torch.nn.Conv2d(64, 24, 1)  # pruned: thinner than its config
    module.refinements[0].paf_out = torch.nn.Conv2d(24, 38, 1)
    del ckpt["layer_channels"]
    torch.save({**ckpt, "module": module, "state_dict": {}}, old)
    with pytest.raises(BadInput) as err:
        model_file.read(old)
    line = str(err.value)
    assert (
        "(a pickled model, as pruned files were once saved), which pose does not load because unpickling runs code"
        in line
    )
    assert (
        f"if you trust this file, convert it: python -m pose_workloads.model_file convert-trusted {old} NEW.pth" in line
    )

    new = tmp_path / "new.pth"
    done = subprocess.run(
        [sys.executable, "-m", "pose_workloads.model_file", "convert-trusted", str(old), str(new)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rebuilt = model_file.build_model(model_file.read(new))
    assert rebuilt.refinements[0].paf_out.in_channels == 24
    for key, tensor in module.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], tensor), key


DAMAGE = {
    "empty": lambda good: b"",
    "truncated": lambda good: good[: len(good) // 2],
    "random": lambda good: os.urandom(4096),
    "text": lambda good: b"this is not a model\n",
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("suffix", [".pth", ".onnx", ".engine"])
def test_damaged_model_file_is_one_line(files, tmp_path, damage, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(DAMAGE[damage](files["simple-pose"].read_bytes()))
    if suffix == ".engine":  # engines carry their metadata beside them
        (tmp_path / "model.engine.json").write_text(json.dumps({"network": "simple-pose"}))
    with pytest.raises(BadInput) as err:
        load_predictor(path, device="cpu")
    line = str(err.value)
    assert "\n" not in line and line.startswith(str(path)), line
    assert any(
        words in line for words in ("empty file", "not a readable", "not a PyTorch file", "not pose model metadata")
    ), line


def test_onnx_where_a_pth_is_needed_is_one_line(files, capsys, tmp_path):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07")
    line = one_line(capsys, ["bpnet", "prune", "-m", str(onnx), "-o", str(tmp_path / "pruned.pth")])
    assert "a .onnx file where a PyTorch .pth model is needed; pass the .pth it was exported from" in line


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda c: c.update(network="mmpose"), "network: 'mmpose' is not one of simple-pose, bpnet"),
        (lambda c: c.update(input_size=[0, -4]), "input_size: [0, -4] is not [height, width]"),
        (lambda c: c.update(pose_config={"keypoints": []}), "pose_config: "),
        (
            lambda c: c["pose_config"].update(
                keypoints=c["pose_config"]["keypoints"][:13], sigmas=None, skeleton=[], flip_pairs=[]
            ),
            "layer_channels: head.6 [40, 17, 1] does not fit model_config's network ([40, 13, 1])",
        ),
        (lambda c: c.update(model_config={"name": "simple_pose_resnet18_v1b"}), "does not fit model_config's network"),
        (
            lambda c: (
                c.pop("layer_channels"),
                c["pose_config"].update(
                    keypoints=c["pose_config"]["keypoints"][:13], sigmas=None, skeleton=[], flip_pairs=[]
                ),
            ),
            "state_dict does not fit the network its metadata describes",
        ),
        (lambda c: c["layer_channels"].update({"head.0": [1, 2, 3]}), "layer_channels: head.0 [1, 2, 3] does not fit"),
    ],
    ids=["network", "input_size", "pose_config", "joints", "model_config", "no-layer_channels", "layer_channels"],
)
def test_metadata_that_contradicts_the_weights_is_one_line(files, tmp_path, change, words):
    ckpt = model_dict("simple-pose")
    change(ckpt)
    path = tmp_path / "contradicting.pth"
    model_file.write(path, ckpt)
    with pytest.raises(BadInput) as err:
        load_predictor(path, device="cpu")
    assert words in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_onnx_metadata_that_contradicts_its_outputs_is_one_line(files, tmp_path):
    from pose_workloads.export.onnx import export_onnx

    onnx = tmp_path / "m.onnx"
    export_onnx(files["simple-pose"], onnx)
    import onnx as onnx_lib

    model = onnx_lib.load(str(onnx))
    meta = next(p for p in model.metadata_props if p.key == "pose")
    info = json.loads(meta.value)
    info["pose_config"] = {
        **info["pose_config"],
        "keypoints": info["pose_config"]["keypoints"][:13],
        "sigmas": None,
        "skeleton": [],
        "flip_pairs": [],
    }
    meta.value = json.dumps(info)
    onnx_lib.save(model, str(onnx))
    with pytest.raises(
        BadInput, match=r"outputs \[17\] channels, but its metadata describes a simple-pose model with \[13\]"
    ):
        load_predictor(onnx, device="cpu")


def test_corrupt_checkpoint_last_names_the_file_and_the_older_checkpoint(files, coco_mini, tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    model_file.write(results / "checkpoint_epoch_002.pth", {**model_dict("simple-pose"), "epoch": 2})
    (results / "checkpoint_last.pth").write_bytes(files["simple-pose"].read_bytes()[:1000])
    line = one_line(capsys, ["simple-pose", "train", "-e", str(simple_pose_spec(files, coco_mini)), "-r", str(results)])
    assert f"{results / 'checkpoint_last.pth'}: not a readable PyTorch file, truncated or damaged" in line
    assert (
        f"to resume, delete {results / 'checkpoint_last.pth'}: training then resumes from checkpoint_epoch_002.pth"
        in line
    )


def test_prune_output_equal_to_its_input_is_refused_and_the_input_survives(files, tmp_path, capsys):
    model = tmp_path / "model.pth"
    model.write_bytes(files["bpnet"].read_bytes())
    line = one_line(capsys, ["bpnet", "prune", "-m", str(model), "-o", str(model)])
    assert f"-o {model}: is the model being pruned (-m); write the pruned model to a new file" in line
    assert model.read_bytes() == files["bpnet"].read_bytes()


def test_launcher_refuses_an_output_that_is_also_an_input_before_starting(files, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from launcher.cli import app

    (tmp_path / "mounts.json").write_text("{}")
    monkeypatch.setenv("POSE_MOUNTS", str(tmp_path / "mounts.json"))
    model = tmp_path / "model.pth"
    model.write_bytes(files["bpnet"].read_bytes())
    result = CliRunner().invoke(app, ["bpnet", "prune", "-m", str(model), "-o", str(model), "--runner", "local"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, lines
    assert f"-o {model}: is also -m; write the output to a new path" in lines[0]

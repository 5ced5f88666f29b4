"""Specs: values that would crash later are refused up front (sizes, strides, non-finite and
out-of-range floats, bools for numbers, negative seeds); `--set section={...}` merges; YAML
alias bombs, absurd nesting, huge and non-UTF-8 files are one line. Checked the way a user meets
them: `pose ... --dry-run` on the host (exit 2, one line naming the file, the field and the fix)."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from launcher.cli import app
from pose_workloads.errors import SpecError
from pose_workloads.specs import BpnetTrainSpec, SimplePoseSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]

SIMPLE_POSE = {
    "model": {"name": "simple_pose_tiny"},
    "data": {"train_images": "images", "train_annotations": "a.json", "val_images": "images",
             "val_annotations": "a.json"},
    "train": {"input_size": [128, 96], "epochs": 10, "lr_steps": [5, 8]},
}


@pytest.fixture
def pose(tmp_path, monkeypatch):
    """`pose(*args)` -> (exit code, stdout, stderr lines), in tmp_path, with an empty mounts file."""
    (tmp_path / "mounts.json").write_text("{}")
    monkeypatch.setenv("POSE_MOUNTS", str(tmp_path / "mounts.json"))
    monkeypatch.chdir(tmp_path)

    def run(*args: str):
        result = CliRunner().invoke(app, list(args))
        return result.exit_code, result.stdout, [line for line in result.stderr.splitlines() if line.strip()]

    return run


def _set(data: dict, dotted: str, value) -> dict:
    data = copy.deepcopy(data)
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


def one_line(pose, spec: Path, *more: str) -> str:
    code, _, lines = pose("simple-pose", "train", "-e", str(spec), "-r", "out", "--runner", "local", "--dry-run", *more)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# (field, bad value, words the line holds besides the file and the field)
BAD_VALUES = [
    ("train.input_size", [0, 0], "positive multiples of 32"),
    ("train.input_size", [-32, 96], "positive multiples of 32"),
    ("train.input_size", [250, 192], "multiples of 32 (the backbone stride)"),
    ("train.epochs", 0, "greater than or equal to 1"),
    ("train.epochs", True, "boolean where a number belongs; write a number"),
    ("train.batch_size", False, "boolean where a number belongs"),
    ("train.input_size", [True, 96], "boolean where a number belongs"),
    ("train.lr", ".nan", "finite number"),
    ("train.lr", ".inf", "finite number"),
    ("train.lr", -0.1, "greater than 0"),
    ("train.lr", 1e6, "less than or equal to 10"),
    ("train.sigma", 0, "greater than 0"),
    ("train.sigma", "-.inf", "finite number"),
    ("train.momentum", 1.5, "less than 1"),
    ("train.warmup_epochs", 50, "warmup_epochs 50 is longer than epochs 10"),
    ("train.lr_steps", [8, 5], "lr_steps [8, 5] must be increasing"),
    ("train.seed", -1, "greater than or equal to 0"),
    ("train.seed", 2**40, "less than or equal to 4294967295"),
    ("augmentation.rotation_prob", ".nan", "finite number"),
]


@pytest.mark.parametrize("field, value, words", BAD_VALUES, ids=[f"{f}={v}" for f, v, _ in BAD_VALUES])
def test_value_that_would_crash_later_is_refused_naming_field_and_fix(pose, tmp_path, field, value, words):
    spec = tmp_path / "spec.yaml"
    text = yaml.safe_dump(_set(SIMPLE_POSE, field, "@@"))
    spec.write_text(text.replace("'@@'", value if isinstance(value, str) else json.dumps(value)))
    line = one_line(pose, spec)
    assert str(spec) in line and f"{field}:" in line and words in line, line


def test_bpnet_image_dims_off_the_stride_are_refused():
    data = yaml.safe_load((ROOT / "specs/bpnet/demo_train.yaml").read_text())
    data["dataloader"]["image_config"]["image_dims"] = {"height": 196, "width": 196}
    with pytest.raises(SpecError, match=r"image_dims.height: Input should be a multiple of 8"):
        _validate(BpnetTrainSpec, data)


def _validate(cls, data):
    from pose_workloads.specs.files import validate

    return validate(cls, data, "train.yaml")


def test_bpnet_min_learning_rate_above_base_is_refused():
    data = yaml.safe_load((ROOT / "specs/bpnet/demo_train.yaml").read_text())
    schedule = data.setdefault("optimizer", {}).setdefault("learning_rate_schedule", {})
    schedule.update(base_learning_rate=1e-4, min_learning_rate=1e-3)
    with pytest.raises(SpecError, match="min_learning_rate 0.001 is above base_learning_rate 0.0001"):
        _validate(BpnetTrainSpec, data)


def test_set_section_mapping_merges_into_the_section(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(_set(SIMPLE_POSE, "train.batch_size", 7)))
    loaded = load_spec(SimplePoseSpec, spec, ["train={lr: 0.01, epochs: 12}"])
    assert (loaded.train.lr, loaded.train.epochs) == (0.01, 12)
    # The section's other fields are kept, not reset to their defaults.
    assert loaded.train.batch_size == 7 and loaded.train.input_size == (128, 96) and loaded.train.lr_steps == [5, 8]
    nested = load_spec(SimplePoseSpec, spec, ["augmentation={flip: false}", "data={workers: 0}"])
    assert nested.augmentation.flip is False and nested.data.workers == 0 and nested.data.train_images == "images"


def test_set_section_mapping_with_an_unknown_key_is_refused(pose, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SIMPLE_POSE))
    line = one_line(pose, spec, "--set", "train={lr: 0.01, epochz: 3}")
    assert "train.epochz: Extra inputs are not permitted" in line


def test_set_value_bool_for_a_number_is_refused(pose, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SIMPLE_POSE))
    assert "train.epochs: True is a boolean where a number belongs" in one_line(pose, spec, "--set", "train.epochs=yes")


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.mark.parametrize("name, content, words", [
    ("bomb.yaml", BILLION_LAUGHS,
     "expands to more than 100,000 values through its aliases (*name); write the values out plainly"),
    ("alias_chain.yaml",
     "a0: &a0 [[[[[[[[1]]]]]]]]\n" + "".join(f"a{i}: &a{i} [[[[[[[[*a{i - 1}]]]]]]]]\n" for i in range(1, 90)),
     "nested more than 32 levels deep"),
    ("cycle.yaml", "a: &a [1, *a]\n", "contains itself through an alias"),
    ("aliases.yaml", "a: &a 1\nb: [" + ", ".join(["*a"] * 150) + "]\n", "more than 100 aliases (*name)"),
    ("deep.yaml", "a: " + "[" * 200 + "]" * 200 + "\n", "nested more than 32 levels deep"),
    ("deep.json", '{"a": ' + "[" * 5000 + "]" * 5000 + "}", "nest"),
    ("huge.yaml", "model: {name: simple_pose_tiny}\n" + "# padding\n" * 200_000, "more than a spec's 1,048,576"),
    ("latin1.yaml", "model: {name: caf\xe9}\n".encode("latin-1"),
     "not UTF-8 text (byte 0xe9 at offset 17); save it as UTF-8"),
    ("broken.yaml", "model: {name: [\n", "not valid YAML (line 2, column 1"),
])
def test_hostile_spec_file_is_one_line_fast(pose, tmp_path, name, content, words):
    spec = tmp_path / name
    spec.write_bytes(content if isinstance(content, bytes) else content.encode())
    started = time.monotonic()
    line = one_line(pose, spec)
    assert str(spec) in line and words in line, line
    assert time.monotonic() - started < 10


def test_alias_bomb_through_set_is_one_line(pose, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SIMPLE_POSE))
    bomb = "{" + ", ".join(line.replace(": ", ": ", 1) for line in BILLION_LAUGHS.splitlines()) + "}"
    line = one_line(pose, spec, "--set", f"model={bomb}")
    assert "--set model: expands to more than 100,000 values" in line


def test_alias_bomb_in_a_yaml_dataset_spec_is_one_line(pose, tmp_path):
    dataset = tmp_path / "coco_spec.yaml"
    dataset.write_text(BILLION_LAUGHS)
    code, _, lines = pose("bpnet", "dataset_convert", "-m", "train", "-o", "out", "--dataset_spec", str(dataset),
                          "--runner", "local", "--dry-run")
    assert code == 2 and len(lines) == 1, lines
    assert str(dataset) in lines[0] and "expands to more than 100,000 values" in lines[0], lines

"""The task table: the flags the launcher passes are the flags the workloads accept."""

from __future__ import annotations

import argparse

import pytest

from launcher.tasks import PYTORCH, TASKS, TENSORRT, find_task, image_kind, nested_spec_class
from pose_workloads import specs
from pose_workloads.__main__ import build_parser


def workload_parser(argv: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in argv:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser


@pytest.mark.parametrize("key", sorted(TASKS), ids=lambda k: " ".join(k).strip())
def test_every_flag_of_the_table_is_accepted_by_the_workload(key):
    task = TASKS[key]
    accepted = {s for action in workload_parser(task.argv)._actions for s in action.option_strings}
    assert {f.name for f in task.flags} <= accepted


@pytest.mark.parametrize("key", sorted(TASKS), ids=lambda k: " ".join(k).strip())
def test_spec_flags_name_real_spec_classes(key):
    for flag in TASKS[key].flags:
        if flag.kind == "spec":
            assert isinstance(getattr(specs, flag.spec), type)


def test_nested_spec_fields_exist_in_their_spec():
    assert nested_spec_class("BpnetInferenceSpec", "train_spec") == "BpnetTrainSpec"
    assert nested_spec_class("BpnetTrainSpec", "dataloader.dataset_config.dataset_specs.coco") == "BpnetDatasetSpec"
    assert nested_spec_class("BpnetTrainSpec", "dataloader.dataset_config.root_data_path") is None
    fields = specs.BpnetTrainSpec.model_fields["dataloader"].annotation.model_fields
    assert "dataset_specs" in fields["dataset_config"].annotation.model_fields


def test_tensorrt_image_only_for_engine_work():
    export = find_task("bpnet", "export")
    assert image_kind(export, {"-m": "m.pth", "-o": "m.onnx"}) == PYTORCH
    assert image_kind(export, {"-m": "m.pth", "-o": "m.onnx", "--engine_file": "m.engine"}) == TENSORRT
    assert image_kind(find_task("bpnet", "inference"), {"--model_filename": "m.engine"}) == TENSORRT
    assert image_kind(find_task("simple-pose", "evaluate"), {"-m": "m.onnx"}) == PYTORCH


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(Exception, match="valid: info, selftest, dataset synth"):
        find_task("bpnet", "fly")

"""The task table: the host commands and the workload's argparse are generated from it, so both
accept every spelling it lists, fill in its defaults and refuse what it refuses."""

from __future__ import annotations

import argparse
import dataclasses
import importlib

import pytest
import typer.main

from launcher.cli import app
from launcher.tasks import (
    LAUNCH_OPTIONS,
    PYTORCH,
    TASKS,
    TENSORRT,
    Flag,
    LaunchOptions,
    Task,
    find_task,
    image_kind,
    nested_spec_class,
)
from pose_workloads import specs
from pose_workloads.__main__ import build_parser, main
from pose_workloads.tasks import KEY

TASK_IDS = {"ids": lambda k: " ".join(k).strip()}


def sample(flag: Flag) -> tuple[list[str], object]:
    """Argv words that give `flag` a value, and the value the parsers should produce."""
    if flag.kind == "switch":
        return [], True
    if flag.choices:
        return [flag.choices[-1]], flag.choices[-1]
    if flag.repeat:
        return ["a.b=1"], ["a.b=1"]
    if flag.type in (int, float):
        return ["7"], flag.type("7")
    return ["some/path"], "some/path"


def required_argv(task: Task, skip: Flag | None = None) -> list[str]:
    """The least a task needs: every required flag, by its first spelling."""
    argv: list[str] = []
    for flag in task.flags:
        if flag.required and flag is not skip:
            argv += [flag.name, *sample(flag)[0]]
    return argv


def workload_args(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def every_spelling(flags_of):
    return [(key, flag, spelling) for key, task in sorted(TASKS.items()) for flag in flags_of(task)
            for spelling in flag.spellings()]


@pytest.mark.parametrize("key, flag, spelling", every_spelling(lambda task: (*task.flags, KEY)),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_the_workload_accepts_every_spelling_of_every_flag_of_the_table(key, flag, spelling):
    task = TASKS[key]
    words, expected = sample(flag)
    args = workload_args([*task.argv, *required_argv(task, skip=flag), spelling, *words])
    assert getattr(args, flag.dest) == expected
    module, function = args.target.split(":")
    assert (module, function) == tuple(task.target.split(":"))


@pytest.mark.parametrize("key", sorted(TASKS), **TASK_IDS)
def test_the_workload_fills_in_the_table_defaults_and_refuses_what_the_table_refuses(key, capsys):
    task = TASKS[key]
    args = workload_args([*task.argv, *required_argv(task)])
    for flag in task.flags:
        if not flag.required:
            expected = list(flag.default or ()) if flag.repeat else (False if flag.kind == "switch" else flag.default)
            assert getattr(args, flag.dest) == expected, flag.name
    for flag in task.flags:
        if flag.required:
            with pytest.raises(SystemExit) as missing:
                workload_args([*task.argv, *required_argv(task, skip=flag)])
            assert missing.value.code == 2
        if flag.choices:
            with pytest.raises(SystemExit) as wrong:
                workload_args([*task.argv, *required_argv(task, skip=flag), flag.name, "not-a-choice"])
            assert wrong.value.code == 2
    assert vars(args).keys() == {"group", "action", "target", KEY.dest, *(f.dest for f in task.flags)} - (
        set() if task.action else {"action"})


@pytest.mark.parametrize("key", sorted(TASKS), **TASK_IDS)
def test_every_target_is_a_function_of_the_workloads(key):
    module, function = TASKS[key].target.split(":")
    assert callable(getattr(importlib.import_module(module), function))


def host_command(task: Task):
    command = typer.main.get_command(app)
    for word in task.argv:
        command = command.commands[word]
    return command


CLI_TASKS = sorted(key for key, task in TASKS.items() if task.cli)


@pytest.mark.parametrize("key", CLI_TASKS, **TASK_IDS)
def test_the_host_command_offers_exactly_the_table_flags_and_launch_options(key):
    task = TASKS[key]
    offered = {p.name: p for p in host_command(task).params if p.name != "help"}
    table = {f.dest: f for f in task.flags if f.cli} | {o.dest: o for o in LAUNCH_OPTIONS}
    assert offered.keys() == table.keys()
    for dest, flag in table.items():
        assert tuple(offered[dest].opts) == flag.spellings(), dest
        assert offered[dest].required == flag.required, dest


@pytest.mark.parametrize("key, flag, spelling",
                         every_spelling(lambda task: [f for f in task.flags if f.cli] if task.cli else []),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_the_host_passes_every_spelling_on_under_the_first_one(key, flag, spelling, cli, monkeypatch):
    task = TASKS[key]
    calls = []
    monkeypatch.setattr("launcher.launch.launch", lambda *call: calls.append(call) or 0)
    words, expected = sample(flag)
    result = cli(*task.argv, *required_argv(task, skip=flag), spelling, *words)
    assert result.exit_code == 0, result.output
    ((network, action, values, options),) = calls
    assert (network, action) == key
    assert values[flag.name] == expected
    assert set(values) == {f.name for f in task.flags if f.cli}
    assert options == LaunchOptions()


def test_launch_options_reach_the_launcher_as_one_launch_options(cli, monkeypatch):
    calls = []
    monkeypatch.setattr("launcher.launch.launch", lambda *call: calls.append(call) or 0)
    result = cli("selftest", "--runner", "local", "--gpu-index", "0,1", "--num_nodes", "2", "--node-rank", "1",
                 "--rdzv_endpoint", "h:1", "--set", "a=1", "--set", "b=2", "--dry_run", "-k", "K")
    assert result.exit_code == 0, result.output
    assert calls[0][3] == LaunchOptions(runner="local", gpu_index="0,1", num_nodes=2, node_rank=1,
                                        rdzv_endpoint="h:1", overrides=("a=1", "b=2"), dry_run=True, key="K")
    assert [f.name for f in dataclasses.fields(LaunchOptions)] == [o.dest for o in LAUNCH_OPTIONS]
    assert cli("selftest", "--runner", "moon").exit_code == 2


def test_the_workload_says_once_that_the_key_is_ignored(capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert main(["info", "-k", "nvidia_tlt"]) == 0
    assert capsys.readouterr().err.count("-k/--key is ignored") == 1
    monkeypatch.setenv("RANK", "1")
    assert main(["info", "--key", "nvidia_tlt"]) == 0
    assert "ignored" not in capsys.readouterr().err


@pytest.mark.parametrize("key", sorted(TASKS), **TASK_IDS)
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

"""`python -m pose_workloads <network> <action> [flags]`: the one contract the launcher speaks.

The flags are TAO's spellings (the launcher passes them through, paths already translated),
generated from the task table in `pose_workloads.tasks`, as the host's commands are.
Each action's module is imported only when that action runs, so `info` and `--help` stay light.
Exit codes: 0 ok, 1 task failed, 2 bad input (one line on stderr), 130/143 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import signal
import sys
from contextlib import nullcontext

from pose_workloads.ranks import is_main
from pose_workloads.tasks import KEY, NETWORKS, TASKS, Flag


def _add_flag(parser: argparse.ArgumentParser, flag: Flag) -> None:
    names = flag.spellings()
    if flag.kind == "switch":
        parser.add_argument(*names, dest=flag.dest, action="store_true", help=flag.help)
    elif flag.repeat:
        parser.add_argument(*names, dest=flag.dest, action="append", default=list(flag.default or ()),
                            metavar=flag.metavar, help=flag.help)
    else:
        parser.add_argument(*names, dest=flag.dest, type=flag.type, choices=flag.choices or None,
                            default=flag.default, required=flag.required, metavar=flag.metavar, help=flag.help)


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per row of the task table (`pose_workloads.tasks`), its flags from there."""
    parser = argparse.ArgumentParser(prog="pose_workloads", description=__doc__.splitlines()[0])
    groups = parser.add_subparsers(dest="group", required=True)
    actions: dict[str, argparse._SubParsersAction] = {}
    for task in TASKS.values():
        if task.action:
            if task.network not in actions:
                help = NETWORKS[task.network]
                group = groups.add_parser(task.network, help=help, description=help)
                actions[task.network] = group.add_subparsers(dest="action", required=True)
            sub, name = actions[task.network], task.action
        else:
            sub, name = groups, task.network
        task_parser = sub.add_parser(name, help=task.help, description=task.help)
        task_parser.set_defaults(target=task.target)
        for flag in (*task.flags, KEY):
            _add_flag(task_parser, flag)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, torchrun tearing down ranks) or SIGHUP (the terminal closed),
    unwound like Ctrl-C; exit 128 + the signal's number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def owned_folder(args: argparse.Namespace) -> tuple[str, str] | None:
    """(folder, flag) of the folder an action writes as a whole, locked for its run: `-r`, or
    the `-o` folder of the dataset tools. Rank 0 alone holds it (the others write nothing)."""
    if not is_main():
        return None
    if getattr(args, "results_dir", None):
        return args.results_dir, "-r"
    if args.group == "dataset" or getattr(args, "action", None) == "dataset_convert":
        return args.output, "-o"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = args.target.split(":")
    # SIGTERM and SIGHUP unwind like Ctrl-C so `finally` blocks remove temp files.
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGHUP, _raise_terminated)
    if args.key is not None and is_main():
        print("note: -k/--key is ignored: pose models are plain files, not encrypted", file=sys.stderr)
    from pose_workloads.errors import BadInput, TaskFailed
    from pose_workloads.results_lock import lock_results_dir

    try:
        folder = owned_folder(args)
        lock = lock_results_dir(folder[0], args.group, getattr(args, "action", ""), folder[1]) if folder else None
        with lock or nullcontext():
            action = getattr(importlib.import_module(module_name), func_name)
            return int(action(args) or 0)
    except (BadInput, TaskFailed) as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # A write outside files.write_atomic (TensorBoard, a video): still one line.
        where = err.filename or "a result"
        print(f"error: {where}: no space left on device; free some space and rerun", file=sys.stderr)
        return 1
    except Terminated as stop:
        print("terminated" if stop.signum == signal.SIGTERM else f"terminated ({stop})", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

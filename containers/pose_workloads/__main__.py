"""`python -m pose_workloads <network> <action> [flags]`: the one contract the launcher speaks.

The flags are TAO's spellings (the launcher passes them through, paths already translated).
Each action's module is imported only when that action runs, so `info` and `--help` stay light.
Exit codes: 0 ok, 1 task failed, 2 bad input (one line on stderr), 130/143 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys


def _add(sub, name: str, target: str, help: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=help)
    parser.set_defaults(target=target)
    return parser


def _export_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", "--model_filename", dest="model", required=True, help=".pth model to export")
    p.add_argument("-o", "--output_file", "--output", dest="output", required=True, help="output .onnx path")
    p.add_argument("--engine_file", default=None, help="also build a TensorRT engine here (TensorRT image)")
    p.add_argument("--data_type", choices=["fp32", "fp16", "int8"], default="fp32")
    p.add_argument("--cal_image_dir", default=None, help="images for INT8 calibration")
    p.add_argument("--cal_cache_file", default=None, help="INT8 calibration cache (read if present, written after)")
    p.add_argument("--batches", type=int, default=8, help="INT8 calibration batches")
    p.add_argument("--max_batch_size", type=int, default=8)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("-k", "--key", default=None, help="accepted for TAO compatibility; models are not encrypted")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pose_workloads", description=__doc__.splitlines()[0])
    groups = parser.add_subparsers(dest="group", required=True)

    _add(groups, "info", "pose_workloads.info:main", "versions, devices and the paths this task can see")
    p = _add(groups, "selftest", "pose_workloads.selftest:main", "distributed smoke test (gloo/NCCL all-reduce)")
    p.add_argument("--fail-rank", "--fail_rank", dest="fail_rank", type=int, default=None)
    p.add_argument("--hold_s", "--hold-s", dest="hold_s", type=float, default=0.0, help="stay alive this long (Ctrl-C tests)")

    # pose dataset ...
    dataset = groups.add_parser("dataset", help="dataset tools").add_subparsers(dest="action", required=True)
    p = _add(dataset, "synth", "pose_workloads.data.synth:main", "write a synthetic COCO-keypoints dataset")
    p.add_argument("-o", "--output_dir", "--output", dest="output", required=True)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max_people", type=int, default=3)
    p.add_argument("--size", default="256x256", help="image size WxH")
    p.add_argument("--pose_config", default=None, help="pose config JSON (joint names must be ones synth can draw)")
    p.add_argument("--easy", action="store_true", help="upright, large people; no crowds, occluders or unlabelled people (the CPU demo's set)")

    # pose simple-pose ...
    sp = groups.add_parser("simple-pose", help="Simple Pose (top-down)").add_subparsers(dest="action", required=True)
    p = _add(sp, "train", "pose_workloads.simple_pose:train", "train a Simple Pose model")
    p.add_argument("-e", "--experiment_spec_file", "--spec", dest="spec", required=True)
    p.add_argument("-r", "--results_dir", dest="results_dir", required=True)
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("-k", "--key", default=None)
    p = _add(sp, "evaluate", "pose_workloads.simple_pose:evaluate", "COCO OKS AP of a model")
    p.add_argument("-e", "--experiment_spec_file", "--spec", dest="spec", required=True)
    p.add_argument("-m", "--model", "--model_filename", dest="model", required=True)
    p.add_argument("-r", "--results_dir", dest="results_dir", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("-k", "--key", default=None)
    p = _add(sp, "inference", "pose_workloads.simple_pose:inference", "draw predicted skeletons")
    p.add_argument("-m", "--model", "--model_filename", dest="model", required=True)
    p.add_argument("--input", "-i", dest="input", required=True, help="image, directory or video")
    p.add_argument("-r", "--results_dir", dest="results_dir", required=True)
    p.add_argument("--boxes", default=None, help="person boxes, COCO results JSON (file_name or image_id keyed)")
    p.add_argument("-e", "--experiment_spec_file", "--spec", dest="spec", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("-k", "--key", default=None)
    p = _add(sp, "export", "pose_workloads.export.action:main", "ONNX (and TensorRT engine) export")
    _export_flags(p)

    # pose bpnet ...
    bp = groups.add_parser("bpnet", help="BodyPoseNet (bottom-up)").add_subparsers(dest="action", required=True)
    p = _add(bp, "dataset_convert", "pose_workloads.data.convert:main", "masks and training shards")
    p.add_argument("-m", "--mode", choices=["train", "test"], required=True)
    p.add_argument("-o", "--output_filename", "--output", dest="output", required=True)
    p.add_argument("-d", "--dataset_spec", dest="dataset_spec", required=True)
    p.add_argument("--generate_masks", action="store_true")
    p = _add(bp, "train", "pose_workloads.bpnet:train", "train a BodyPoseNet model")
    p.add_argument("-e", "--experiment_spec_file", "--spec", dest="spec", required=True)
    p.add_argument("-r", "--results_dir", dest="results_dir", required=True)
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("-k", "--key", default=None)
    for name, help in (("evaluate", "COCO OKS AP of a model"), ("inference", "draw predicted skeletons")):
        p = _add(bp, name, f"pose_workloads.bpnet:{name}", help)
        p.add_argument("--inference_spec", "-i", dest="inference_spec", required=True)
        p.add_argument("--model_filename", "-m", dest="model", default=None)
        p.add_argument("--results_dir", "-r", dest="results_dir", required=True)
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("-k", "--key", default=None)
        if name == "evaluate":
            p.add_argument("--dataset_spec", "-d", dest="dataset_spec", required=True)
        else:
            p.add_argument("--input_type", choices=["image", "dir", "video"], default="dir")
            p.add_argument("--input", dest="input", required=True)
            p.add_argument("--dump_visualizations", action="store_true")
    p = _add(bp, "export", "pose_workloads.export.action:main", "ONNX (and TensorRT engine) export")
    _export_flags(p)
    p.add_argument("--inference_spec", "-i", dest="inference_spec", default=None,
                   help="the engine accepts the input sizes this inference spec asks for (default: 368x368, adjust_network_input)")
    p = _add(bp, "prune", "pose_workloads.prune:main", "L1-norm structured channel pruning")
    p.add_argument("-m", "--model", dest="model", required=True)
    p.add_argument("-o", "--output_file", "--output", dest="output", required=True)
    p.add_argument("-pth", "--pruning_threshold", dest="threshold", type=float, default=0.1)
    p.add_argument("-eq", "--equalization_criterion", dest="criterion",
                   choices=["union", "intersection", "arithmetic_mean", "geometric_mean"], default="union")
    p.add_argument("-pg", "--pruning_granularity", dest="granularity", type=int, default=8)
    p.add_argument("-k", "--key", default=None)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, torchrun tearing down ranks) or SIGHUP (the terminal closed),
    unwound like Ctrl-C; exit 128 + the signal's number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = args.target.split(":")
    # SIGTERM and SIGHUP unwind like Ctrl-C so `finally` blocks remove temp files.
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGHUP, _raise_terminated)
    from pose_workloads.errors import BadInput

    try:
        action = getattr(importlib.import_module(module_name), func_name)
        return int(action(args) or 0)
    except BadInput as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Terminated as stop:
        print("terminated" if stop.signum == signal.SIGTERM else f"terminated ({stop})", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

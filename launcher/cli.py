"""`pose`: the command line. Thin on purpose: each command hands its options to
`launcher.launch.launch()` (or a plain function of images/mounts/info) and maps known errors to
exit codes (2 bad input, 125 engine failure, else the task's own code).

TAO's flag spellings work verbatim (`-e`, `-r`, `-k`, `--gpus`, `--inference_spec`,
`--model_filename`, `--results_dir`, `-pth`, `-eq`, ...), and so do dashed ones
(`--results-dir`). Imports stay lazy: `pose --help` loads no torch, docker SDK or pydantic.
"""

import functools
import inspect
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

app = typer.Typer(
    help="Train, evaluate and deploy 2D human-pose models (Simple Pose, BodyPoseNet) in Docker or locally.",
    no_args_is_help=True, add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False,
)
simple_pose_app = typer.Typer(help="Simple Pose: top-down, one person per box (GluonCV style).",
                              no_args_is_help=True, rich_markup_mode=None)
bpnet_app = typer.Typer(help="BodyPoseNet: bottom-up, heatmaps + part affinity fields (TAO style).",
                        no_args_is_help=True, rich_markup_mode=None)
dataset_app = typer.Typer(help="Dataset tools.", no_args_is_help=True, rich_markup_mode=None)
images_app = typer.Typer(help="The Docker images tasks run in.", no_args_is_help=True, rich_markup_mode=None)
mounts_app = typer.Typer(help="The mounts file (~/.pose_mounts.json or $POSE_MOUNTS).",
                         no_args_is_help=True, rich_markup_mode=None)
app.add_typer(simple_pose_app, name="simple-pose")
app.add_typer(bpnet_app, name="bpnet")
app.add_typer(dataset_app, name="dataset")
app.add_typer(images_app, name="images")
app.add_typer(mounts_app, name="mounts")


def _fail_cleanly(function: Callable[[], int]) -> None:
    """Run `function`; exit with its code, or print a known error as one line and exit with
    that error's code."""
    from launcher.errors import EngineError
    from pose_workloads.errors import BadInput

    try:
        code = function()
    except (BadInput, EngineError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise typer.Exit(err.exit_code) from None
    raise typer.Exit(code)


# ---- The options every task takes -----------------------------------------------------------

class Runner(str, Enum):
    auto = "auto"
    docker = "docker"
    local = "local"


_TASK_OPTIONS = [
    ("runner", Annotated[Runner, typer.Option(
        "--runner", help="docker, local, or auto: Docker when an engine answers and has the image, else local.")],
     Runner.auto),
    ("gpus", Annotated[Optional[int], typer.Option(
        "--gpus", help="GPUs to use (default 1); N > 1 starts N ranks under torchrun. No GPU: N CPU processes.")],
     None),
    ("gpu_index", Annotated[Optional[str], typer.Option(
        "--gpu_index", "--gpu-index", metavar="I,J", help="exactly these host GPUs (NVML indices).")], None),
    ("num_nodes", Annotated[int, typer.Option("--num_nodes", "--num-nodes", help="nodes in a multi-node run.")], 1),
    ("node_rank", Annotated[int, typer.Option("--node_rank", "--node-rank", help="this node's rank (0 .. num_nodes-1).")], 0),
    ("rdzv_endpoint", Annotated[Optional[str], typer.Option(
        "--rdzv_endpoint", "--rdzv-endpoint", metavar="HOST:PORT", help="rendezvous of a multi-node run (node 0).")], None),
    ("overrides", Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="KEY.SUB=VALUE", help="override a field of the task's first spec (-e, --inference_spec or --dataset_spec; repeatable).")], None),
    ("dry_run", Annotated[bool, typer.Option(
        "--dry-run", "--dry_run", help="print the runner, image and command (task paths), start nothing.")], False),
    ("key", Annotated[Optional[str], typer.Option(
        "-k", "--key", help="TAO's model key: accepted for compatibility and ignored (pose models are not encrypted).")],
     None),
]


def task_options(command: Callable) -> Callable:
    """Give a task command the options every task takes (above), passed to it as one
    `options: LaunchOptions` argument. Typer reads the signature built here."""
    own = [p for p in inspect.signature(command).parameters.values() if p.name != "options"]
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
              for name, annotation, default in _TASK_OPTIONS]

    @functools.wraps(command)
    def with_options(**kwargs):
        from launcher.launch import LaunchOptions

        values = {name: kwargs.pop(name) for name, _, _ in _TASK_OPTIONS}
        options = LaunchOptions(
            runner=values["runner"].value, gpus=values["gpus"], gpu_index=values["gpu_index"],
            num_nodes=values["num_nodes"], node_rank=values["node_rank"], rdzv_endpoint=values["rdzv_endpoint"],
            overrides=tuple(values["overrides"] or ()), dry_run=values["dry_run"], key=values["key"],
        )
        return command(**kwargs, options=options)

    with_options.__signature__ = inspect.Signature(own + shared)
    return with_options


def _launch(network: str, action: str, values: dict, options) -> None:
    from launcher.launch import launch

    _fail_cleanly(lambda: launch(network, action, values, options))


# ---- Flags shared by several tasks (TAO spelling first) --------------------------------------

Spec = Annotated[str, typer.Option(
    "-e", "--experiment_spec_file", "--experiment-spec-file", "--experiment_spec", "--experiment-spec",
    metavar="SPEC", help="experiment spec (YAML); host path, or container path TAO-style.")]
ResultsDir = Annotated[str, typer.Option(
    "-r", "--results_dir", "--results-dir", metavar="DIR", help="results folder (checkpoints, logs, outputs).")]
Model = Annotated[str, typer.Option(
    "-m", "--model", "--model_filename", "--model-filename", metavar="MODEL", help="model file: .pth, .onnx or .engine.")]
Output = Annotated[str, typer.Option(
    "-o", "--output_file", "--output-file", "--output", metavar="FILE", help="output file.")]
InferenceSpec = Annotated[str, typer.Option(
    "--inference_spec", "--inference-spec", metavar="SPEC", help="inference spec (YAML, infer_spec.yaml).")]
DatasetSpec = Annotated[str, typer.Option(
    "--dataset_spec", "--dataset-spec", "-d", metavar="JSON", help="dataset spec (coco_spec.json).")]


class DataType(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


class Mode(str, Enum):
    train = "train"
    test = "test"


class InputType(str, Enum):
    dir = "dir"
    image = "image"
    video = "video"


class Criterion(str, Enum):
    union = "union"
    intersection = "intersection"
    arithmetic_mean = "arithmetic_mean"
    geometric_mean = "geometric_mean"


def _value(choice: Optional[Enum]):
    return choice.value if choice is not None else None


def _export(network: str, model: str, output: str, engine_file, data_type, cal_image_dir, cal_cache_file,
            batches, max_batch_size, opset, options, **more) -> None:
    _launch(network, "export", {
        "-m": model, "-o": output, "--engine_file": engine_file, "--data_type": _value(data_type),
        "--cal_image_dir": cal_image_dir, "--cal_cache_file": cal_cache_file, "--batches": batches,
        "--max_batch_size": max_batch_size, "--opset": opset, **more,
    }, options)


EngineFile = Annotated[Optional[str], typer.Option(
    "--engine_file", "--engine-file", metavar="FILE", help="also build a TensorRT engine here (TensorRT image).")]
DataTypeOpt = Annotated[Optional[DataType], typer.Option("--data_type", "--data-type", help="engine precision.")]
CalImageDir = Annotated[Optional[str], typer.Option(
    "--cal_image_dir", "--cal-image-dir", metavar="DIR", help="images for INT8 calibration.")]
CalCacheFile = Annotated[Optional[str], typer.Option(
    "--cal_cache_file", "--cal-cache-file", metavar="FILE", help="INT8 calibration cache (read if present, written after).")]
Batches = Annotated[Optional[int], typer.Option("--batches", help="INT8 calibration batches.")]
MaxBatch = Annotated[Optional[int], typer.Option("--max_batch_size", "--max-batch-size", help="largest engine batch.")]
Opset = Annotated[Optional[int], typer.Option("--opset", help="ONNX opset.")]


# ---- pose simple-pose ... ---------------------------------------------------------------------

@simple_pose_app.command("train")
@task_options
def simple_pose_train(spec: Spec, results_dir: ResultsDir, options) -> None:
    """Train (resumes from the results folder when it holds a checkpoint)."""
    _launch("simple-pose", "train", {"-e": spec, "-r": results_dir}, options)


@simple_pose_app.command("evaluate")
@task_options
def simple_pose_evaluate(spec: Spec, model: Model, results_dir: ResultsDir, options) -> None:
    """COCO OKS AP of a model on the spec's validation set."""
    _launch("simple-pose", "evaluate", {"-e": spec, "-m": model, "-r": results_dir}, options)


@simple_pose_app.command("inference")
@task_options
def simple_pose_inference(
    model: Model,
    input: Annotated[str, typer.Option("--input", "-i", metavar="PATH", help="image, folder of images, or video.")],
    results_dir: ResultsDir,
    boxes: Annotated[Optional[str], typer.Option("--boxes", metavar="JSON", help="person boxes (COCO results JSON).")] = None,
    spec: Annotated[Optional[str], typer.Option(
        "-e", "--experiment_spec_file", "--experiment-spec-file", "--experiment_spec", "--experiment-spec",
        metavar="SPEC", help="experiment spec (optional: the model file carries its config).")] = None,
    options=None,
) -> None:
    """Draw predicted skeletons and write them as JSON."""
    _launch("simple-pose", "inference", {"-m": model, "--input": input, "-r": results_dir, "--boxes": boxes, "-e": spec}, options)


@simple_pose_app.command("export")
@task_options
def simple_pose_export(model: Model, output: Output, engine_file: EngineFile = None, data_type: DataTypeOpt = None,
                       cal_image_dir: CalImageDir = None, cal_cache_file: CalCacheFile = None, batches: Batches = None,
                       max_batch_size: MaxBatch = None, opset: Opset = None, options=None) -> None:
    """Export to ONNX (and a TensorRT engine with --engine_file)."""
    _export("simple-pose", model, output, engine_file, data_type, cal_image_dir, cal_cache_file, batches,
            max_batch_size, opset, options)


# ---- pose bpnet ... ---------------------------------------------------------------------------

@bpnet_app.command("dataset_convert")
@task_options
def bpnet_dataset_convert(
    mode: Annotated[Mode, typer.Option("-m", "--mode", help="which split of the dataset spec.")],
    output: Annotated[str, typer.Option(
        "-o", "--output_filename", "--output-filename", "--output", metavar="PATH", help="output shards prefix.")],
    dataset_spec: DatasetSpec,
    generate_masks: Annotated[bool, typer.Option(
        "--generate_masks", "--generate-masks", help="also write the loss masks (crowds, unlabelled people).")] = False,
    options=None,
) -> None:
    """Masks and training shards from a COCO-format dataset."""
    _launch("bpnet", "dataset_convert", {"-m": mode.value, "-o": output, "--dataset_spec": dataset_spec,
                                         "--generate_masks": generate_masks}, options)


@bpnet_app.command("train")
@task_options
def bpnet_train(spec: Spec, results_dir: ResultsDir, options) -> None:
    """Train (resumes from the results folder when it holds a checkpoint)."""
    _launch("bpnet", "train", {"-e": spec, "-r": results_dir}, options)


ModelFilename = Annotated[Optional[str], typer.Option(
    "--model_filename", "--model-filename", "-m", metavar="MODEL", help="model file (overrides the spec's model_path).")]


@bpnet_app.command("evaluate")
@task_options
def bpnet_evaluate(inference_spec: InferenceSpec, dataset_spec: DatasetSpec, results_dir: ResultsDir,
                   model_filename: ModelFilename = None, options=None) -> None:
    """COCO OKS AP of a model on the dataset spec's test split."""
    _launch("bpnet", "evaluate", {"--inference_spec": inference_spec, "--model_filename": model_filename,
                                  "--dataset_spec": dataset_spec, "--results_dir": results_dir}, options)


@bpnet_app.command("inference")
@task_options
def bpnet_inference(
    inference_spec: InferenceSpec,
    input: Annotated[str, typer.Option("--input", metavar="PATH", help="image, folder of images, or video.")],
    results_dir: ResultsDir,
    model_filename: ModelFilename = None,
    input_type: Annotated[Optional[InputType], typer.Option("--input_type", "--input-type", help="what --input is.")] = None,
    dump_visualizations: Annotated[bool, typer.Option(
        "--dump_visualizations", "--dump-visualizations", help="also write images with skeletons drawn.")] = False,
    options=None,
) -> None:
    """Skeletons of every person in images or a video, as detections.json."""
    _launch("bpnet", "inference", {
        "--inference_spec": inference_spec, "--model_filename": model_filename, "--input_type": _value(input_type),
        "--input": input, "--results_dir": results_dir, "--dump_visualizations": dump_visualizations,
    }, options)


@bpnet_app.command("export")
@task_options
def bpnet_export(model: Model, output: Output, engine_file: EngineFile = None, data_type: DataTypeOpt = None,
                 cal_image_dir: CalImageDir = None, cal_cache_file: CalCacheFile = None, batches: Batches = None,
                 max_batch_size: MaxBatch = None, opset: Opset = None,
                 inference_spec: Annotated[Optional[str], typer.Option(
                     "--inference_spec", "--inference-spec", metavar="SPEC",
                     help="size the engine for this inference spec's inputs.")] = None,
                 options=None) -> None:
    """Export to ONNX (and a TensorRT engine with --engine_file)."""
    _export("bpnet", model, output, engine_file, data_type, cal_image_dir, cal_cache_file, batches,
            max_batch_size, opset, options, **{"--inference_spec": inference_spec})


@bpnet_app.command("prune")
@task_options
def bpnet_prune(
    model: Model,
    output: Output,
    threshold: Annotated[Optional[float], typer.Option(
        "-pth", "--pruning_threshold", "--pruning-threshold", help="L1-norm threshold (TAO: 0.05 .. 3.0).")] = None,
    criterion: Annotated[Optional[Criterion], typer.Option(
        "-eq", "--equalization_criterion", "--equalization-criterion", help="how coupled layers agree.")] = None,
    granularity: Annotated[Optional[int], typer.Option(
        "-pg", "--pruning_granularity", "--pruning-granularity", help="channels removed in multiples of this.")] = None,
    options=None,
) -> None:
    """L1-norm structured channel pruning (retrain after)."""
    _launch("bpnet", "prune", {"-m": model, "-o": output, "-pth": threshold, "-eq": _value(criterion),
                               "-pg": granularity}, options)


# ---- pose dataset ... -------------------------------------------------------------------------

@dataset_app.command("synth")
@task_options
def dataset_synth(
    output: Annotated[str, typer.Option("-o", "--output_dir", "--output-dir", "--output", metavar="DIR", help="dataset folder.")],
    images: Annotated[Optional[int], typer.Option("--images", help="number of images.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="random seed.")] = None,
    max_people: Annotated[Optional[int], typer.Option("--max_people", "--max-people", help="people per image, at most.")] = None,
    size: Annotated[Optional[str], typer.Option("--size", metavar="WxH", help="image size.")] = None,
    pose_config: Annotated[Optional[str], typer.Option("--pose_config", "--pose-config", metavar="JSON", help="joint set.")] = None,
    easy: Annotated[bool, typer.Option("--easy", help="upright, large people; no crowds or occluders (the CPU demo's set).")] = False,
    options=None,
) -> None:
    """Write a small synthetic COCO-keypoints dataset (for demos and tests)."""
    _launch("dataset", "synth", {"-o": output, "--images": images, "--seed": seed, "--max_people": max_people,
                                 "--size": size, "--pose_config": pose_config, "--easy": easy}, options)


# ---- pose selftest / info ---------------------------------------------------------------------

@app.command("selftest")
@task_options
def selftest(
    fail_rank: Annotated[Optional[int], typer.Option("--fail_rank", "--fail-rank", help="this rank exits 3.")] = None,
    hold_s: Annotated[Optional[float], typer.Option("--hold_s", "--hold-s", help="keep the ranks alive this long.")] = None,
    options=None,
) -> None:
    """Check a runner end to end: every rank all-reduces a tensor and prints RANK/WORLD_SIZE."""
    _launch("selftest", "", {"--fail_rank": fail_rank, "--hold_s": hold_s}, options)


@app.command("info")
def info(
    workload: Annotated[bool, typer.Option(
        "--workload", help="also run the workload's `info` task (torch, devices, mounted paths) through the runner.")] = False,
    runner: Annotated[Runner, typer.Option("--runner", help="runner for --workload.")] = Runner.auto,
) -> None:
    """The engine, the images, the GPUs, the mounts and the versions."""
    from launcher.info import print_info

    def show() -> int:
        print_info()
        if not workload:
            return 0
        from launcher.launch import LaunchOptions, launch

        return launch("info", "", {}, LaunchOptions(runner=runner.value))

    _fail_cleanly(show)


# ---- pose images ... / pose mounts ... --------------------------------------------------------

class ImageKind(str, Enum):
    pytorch = "pytorch"
    tensorrt = "tensorrt"


@images_app.command("build")
def images_build(
    kind: Annotated[ImageKind, typer.Argument(help="which image.")] = ImageKind.pytorch,
    base_image: Annotated[Optional[str], typer.Option(
        "--base-image", "--base_image", help="base image (default: the Dockerfile's, NVIDIA's).")] = None,
    wheelhouse: Annotated[Optional[Path], typer.Option(
        "--wheelhouse", help="folder of wheels preferred over PyPI (offline builds).")] = None,
    ca_certs: Annotated[Optional[Path], typer.Option(
        "--ca-certs", "--ca_certs", help="folder of extra CA certificates (*.crt).")] = None,
    tag: Annotated[Optional[str], typer.Option("--tag", help="image tag (default pose-<kind>:<version>).")] = None,
) -> None:
    """Build pose-pytorch or pose-tensorrt from containers/<kind>.Dockerfile, streaming its output."""
    from launcher.images import build_image

    _fail_cleanly(lambda: build_image(kind.value, base_image, wheelhouse, ca_certs, tag))


@images_app.command("list")
def images_list() -> None:
    """The pose images this engine has."""
    from launcher.info import print_images

    _fail_cleanly(print_images)


@mounts_app.command("check")
def mounts_check() -> None:
    """Every mount, expanded, and what is wrong with it (exit 2 if anything is)."""
    from launcher.info import print_mounts_check

    _fail_cleanly(print_mounts_check)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

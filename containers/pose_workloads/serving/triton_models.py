"""The Python-backend models of a pose Triton repository: `preprocess`, `postprocess` and, for
`--triton_backend python`, the network itself through onnxruntime.

Each repository `model.py` is three lines that put the repository's copy of pose_workloads on
sys.path and name one class below (repository.py writes them). The work is the pipeline code
`pose inference` runs, imported, never copied:

    simple-pose  preprocess:  IMAGE bytes, BOXES (N, 4) -> simple_pose.crop_boxes (+ mirror_crops for
                              the flip test) -> images (N or 2N, 3, H, W), CENTERS, SCALES
                 postprocess: heatmaps -> merge_flipped -> people_from_heatmaps -> KEYPOINTS, SCORES
    bpnet        preprocess:  IMAGE bytes -> bpnet.plan_input + prepare_input -> images (1, 3, h, w), IMAGE_HW
                 postprocess: heatmaps, pafs -> outputs_to_map_grid -> people_from_maps -> KEYPOINTS, SCORES

The functions take and return dicts of NumPy arrays keyed by tensor name, so the tests run them
without a server; the classes only move tensors in and out of Triton. A request the pipeline
cannot serve (bytes that are not an image, boxes of the wrong shape) gets a Triton error for that
request alone; the server and the other requests carry on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PIPELINE_FILE = "pose.json"  # beside each Python model's model.py: the ModelInfo and the settings


class BadRequest(ValueError):
    """One request the pipeline cannot serve; its text goes back to the client."""


@dataclass(frozen=True)
class Pipeline:
    """What a served model does to a request, read from PIPELINE_FILE."""

    network: str
    info: Any  # runtime.ModelInfo
    settings: Any  # simple_pose.EvalSettings | bpnet.InferenceSettings
    max_batch_size: int


def pipeline_json(info, settings, max_batch_size: int) -> str:
    """PIPELINE_FILE's text: what `load_pipeline` rebuilds."""
    from dataclasses import asdict

    return json.dumps({"info": json.loads(info.to_json()), "settings": asdict(settings),
                       "max_batch_size": max_batch_size}, indent=2)


def load_pipeline(path: str | Path) -> Pipeline:
    from pose_workloads.predictor import ModelInfo

    data = json.loads(Path(path).read_text())
    info = ModelInfo.from_dict(data["info"])
    if info.network == "bpnet":
        from pose_workloads.bpnet.pipeline import InferenceSettings

        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data["settings"].items()}
        settings = InferenceSettings(**fields)
    else:
        from pose_workloads.simple_pose.pipeline import EvalSettings

        settings = EvalSettings(**data["settings"])
    return Pipeline(info.network, info, settings, int(data["max_batch_size"]))


def _decode(inputs: dict[str, np.ndarray]) -> np.ndarray:
    from pose_workloads.media import BadSample, decode_image

    data = np.ascontiguousarray(inputs["IMAGE"], dtype=np.uint8).reshape(-1)
    try:
        return decode_image(data.tobytes(), "IMAGE")
    except BadSample as err:
        raise BadRequest(f"{err}: send the encoded file's bytes (JPEG, PNG, ...) as UINT8") from None


# --- simple-pose ---------------------------------------------------------------------------------

def simple_pose_preprocess(pipeline: Pipeline, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from pose_workloads.simple_pose.pipeline import crop_boxes, mirror_crops

    image = _decode(inputs)
    boxes = np.asarray(inputs["BOXES"], dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) == 0:
        raise BadRequest(f"BOXES: shape {list(boxes.shape)}; send (N, 4) person boxes [x, y, w, h] in image px, N >= 1 "
                         "(the whole image [0, 0, width, height] for one person filling it)")
    crops, centers, scales = crop_boxes(image, boxes, tuple(pipeline.info.input_size))
    if pipeline.settings.flip_test:
        crops = np.concatenate([crops, mirror_crops(crops)])
    if len(crops) > pipeline.max_batch_size:
        flip = " (twice the boxes: the flip test)" if pipeline.settings.flip_test else ""
        raise BadRequest(f"BOXES: {len(boxes)} boxes make {len(crops)} crops{flip}, more than the model's "
                         f"max_batch_size {pipeline.max_batch_size}; send fewer boxes per request or export with "
                         "a larger --max_batch_size")
    return {"images": crops, "CENTERS": centers, "SCALES": scales}


def simple_pose_postprocess(pipeline: Pipeline, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from pose_workloads.simple_pose.pipeline import merge_flipped, people_from_heatmaps

    heatmaps = inputs["heatmaps"]
    if pipeline.settings.flip_test:
        half = len(heatmaps) // 2
        heatmaps = merge_flipped(heatmaps[:half], heatmaps[half:], pipeline.info.pose_config.flip_pairs)
    people = people_from_heatmaps(heatmaps, inputs["CENTERS"], inputs["SCALES"], pipeline.settings)
    # The person score `pose inference` reports for a box of score 1: the mean confident joint.
    confident = people[..., 2] > pipeline.settings.joint_score_threshold
    totals = np.where(confident, people[..., 2], 0.0).sum(axis=1)
    scores = np.where(confident.any(axis=1), totals / np.maximum(confident.sum(axis=1), 1), 0.0)
    return {"KEYPOINTS": people, "SCORES": scores.astype(np.float32)}


# --- bpnet ---------------------------------------------------------------------------------------

def bpnet_preprocess(pipeline: Pipeline, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from pose_workloads.bpnet.pipeline import plan_input, prepare_input

    image = _decode(inputs)
    settings = pipeline.settings
    plan = plan_input(image.shape[:2], settings.input_shape, settings.mode)
    return {"images": prepare_input(image, plan, settings), "IMAGE_HW": np.asarray(image.shape[:2], np.int32)}


def bpnet_postprocess(pipeline: Pipeline, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from pose_workloads.bpnet.pipeline import Maps, map_grid_hw, outputs_to_map_grid, people_from_maps, plan_input

    settings, pose_config = pipeline.settings, pipeline.info.pose_config
    image_hw = tuple(int(v) for v in np.asarray(inputs["IMAGE_HW"]).reshape(2))
    plan = plan_input(image_hw, settings.input_shape, settings.mode)
    # One scale: predict_maps' average over scales is this grid itself.
    maps = Maps(*outputs_to_map_grid(inputs["heatmaps"], inputs["pafs"], plan, map_grid_hw(image_hw, settings),
                                     pose_config))
    keypoints, scores = people_from_maps(maps, image_hw, pose_config, settings)
    return {"KEYPOINTS": keypoints.astype(np.float32), "SCORES": np.asarray(scores, np.float32)}


# The one table of what each network does around the model.
STEPS: dict[str, dict[str, Callable[[Pipeline, dict[str, np.ndarray]], dict[str, np.ndarray]]]] = {
    "simple-pose": {"preprocess": simple_pose_preprocess, "postprocess": simple_pose_postprocess},
    "bpnet": {"preprocess": bpnet_preprocess, "postprocess": bpnet_postprocess},
}


# --- the Triton side -----------------------------------------------------------------------------
# Tensors cross through DLPack, not `as_numpy()` / `Tensor(name, array)`: the stubs of Triton 2.51
# (nvidia-pytriton 0.7) are built with a pybind11 older than NumPy 2, and read NumPy 2 arrays'
# descriptors at the old offsets (bytes come back as 255s). DLPack does not depend on NumPy's ABI.

def _from_triton(tensor) -> np.ndarray:
    return np.from_dlpack(tensor)


def _to_triton(pb_utils, name: str, array: np.ndarray):
    return pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(array))


def _quiet_used_capsules() -> None:
    """The stub marks a DLPack capsule it took as "used_dlpack" where the protocol says
    "used_dltensor", so NumPy's capsule destructor reports every output tensor as an unraisable
    ValueError (the stub itself frees the tensor). Drop exactly those reports."""
    import sys

    default = sys.unraisablehook

    def hook(unraisable) -> None:
        if not (isinstance(unraisable.exc_value, ValueError) and "PyCapsule_GetPointer" in str(unraisable.exc_value)):
            default(unraisable)

    sys.unraisablehook = hook



class _PipelineStep:
    """A TritonPythonModel running one of STEPS on each request."""

    step = ""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        _quiet_used_capsules()
        config = json.loads(args["model_config"])
        self.input_names = [t["name"] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]
        self.pipeline = load_pipeline(Path(args["model_repository"]) / args["model_version"] / PIPELINE_FILE)
        self.run = STEPS[self.pipeline.network][self.step]

    def execute(self, requests):
        responses = []
        for request in requests:
            inputs = {name: self.pb.get_input_tensor_by_name(request, name) for name in self.input_names}
            try:
                outputs = self.run(self.pipeline, {k: _from_triton(v) for k, v in inputs.items() if v is not None})
            except (BadRequest, KeyError) as err:
                responses.append(self.pb.InferenceResponse(output_tensors=[],
                                                           error=self.pb.TritonError(f"{self.step}: {err}")))
                continue
            tensors = [_to_triton(self.pb, name, outputs[name]) for name in self.output_names]
            responses.append(self.pb.InferenceResponse(output_tensors=tensors))
        return responses


class Preprocess(_PipelineStep):
    step = "preprocess"


class Postprocess(_PipelineStep):
    step = "postprocess"


class OnnxModel:
    """`--triton_backend python`: the exported ONNX file through onnxruntime (runtime.load_predictor,
    as `pose inference` opens it), on the CPU. Requests of one shape that the dynamic batcher
    gathered run as one batch."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        from pose_workloads.export.onnx import INPUT_NAME, LAYOUTS
        from pose_workloads.runtime import load_predictor

        self.pb = pb_utils
        _quiet_used_capsules()
        self.predictor = load_predictor(Path(args["model_repository"]) / args["model_version"] / "model.onnx",
                                        device="cpu")
        self.input_name = INPUT_NAME
        self.output_names = LAYOUTS[self.predictor.info.network].outputs

    def execute(self, requests):
        images = [_from_triton(self.pb.get_input_tensor_by_name(r, self.input_name)) for r in requests]
        outputs: list[list[np.ndarray] | None] = [None] * len(requests)
        for shape in {x.shape[1:] for x in images}:
            members = [i for i, x in enumerate(images) if x.shape[1:] == shape]
            results = self.predictor(np.concatenate([images[i] for i in members]))
            bounds = np.cumsum([0] + [len(images[i]) for i in members])
            for j, i in enumerate(members):
                outputs[i] = [r[bounds[j]:bounds[j + 1]] for r in results]
        return [self.pb.InferenceResponse(output_tensors=[_to_triton(self.pb, name, array)
                                                          for name, array in zip(self.output_names, result)])
                for result in outputs]

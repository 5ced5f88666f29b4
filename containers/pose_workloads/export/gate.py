"""The accuracy gate of `export`: what was written (the ONNX file, and the engine when one was
built) against the PyTorch model it came from, on real images, before export succeeds.

    max abs difference per output (heatmaps; bpnet also pafs) on the calibration images
    (--cal_image_dir) or else the validation images (--val_dataset), prepared as evaluation
    prepares them; and with --val_dataset the COCO OKS AP of both and the drop

Each file is held to the limits of its precision (GATES; the ONNX file is fp32). Beyond them the
export fails (exit 1) and removes everything it wrote. The limits: fp32 must match to float32
rounding (1e-3 of the largest output, 0.1 AP point); fp16 rounds to ~3 significant digits
(1e-2, 0.5 AP point); int8 quantizes each tensor to 256 levels (0.1 of the output range, 2 AP
points) — the figures users of TensorRT's fp16/int8 accept for pose models.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from pose_workloads.predictor import ModelInfo

GATE_IMAGES = 16  # images compared output by output: enough to show a broken layer, quick on a CPU


class Gate(NamedTuple):
    max_relative_diff: float  # max |candidate - PyTorch| / max |PyTorch output|, every output
    max_ap_drop: float  # AP points (0-100 scale) the candidate may lose against PyTorch


GATES = {"fp32": Gate(1e-3, 0.1), "fp16": Gate(1e-2, 0.5), "int8": Gate(1e-1, 2.0)}


class Comparison(NamedTuple):
    what: str  # "ONNX (onnxruntime)" / "fp16 engine"
    precision: str
    max_abs_diff: dict[str, float]  # output name -> max abs difference over the images
    output_scale: float  # max |PyTorch output|
    images: int
    ap: tuple[float, float] | None  # (PyTorch, candidate) AP, 0-1, with --val_dataset

    def failure(self) -> str | None:
        """Why this file fails its precision's gate, or None."""
        gate = GATES[self.precision]
        worst = max(self.max_abs_diff.values())
        if worst > gate.max_relative_diff * self.output_scale:
            return (f"{self.what} differs from PyTorch by {worst:.3g} on {self.images} images (outputs up to "
                    f"{self.output_scale:.3g}; {self.precision} allows {gate.max_relative_diff:g} of that)")
        if self.ap is not None and (self.ap[0] - self.ap[1]) * 100 > gate.max_ap_drop:
            return (f"{self.what} loses {(self.ap[0] - self.ap[1]) * 100:.2f} AP points against PyTorch "
                    f"({self.ap[1]:.4f} vs {self.ap[0]:.4f}; {self.precision} allows {gate.max_ap_drop})")
        return None

    def lines(self) -> list[str]:
        diffs = ", ".join(f"{name} {value:.2e}" for name, value in self.max_abs_diff.items())
        out = [f"{self.what} vs PyTorch on {self.images} images: max abs difference {diffs} "
               f"(outputs up to {self.output_scale:.2e})"]
        if self.ap is not None:
            out.append(f"{self.what}: AP {self.ap[1]:.4f}, PyTorch AP {self.ap[0]:.4f}, "
                       f"delta {(self.ap[1] - self.ap[0]) * 100:+.2f} points")
        return out


def gate_inputs(info: ModelInfo, image_dir: str | Path | None, val_dataset) -> np.ndarray:
    """Up to GATE_IMAGES network inputs (N, 3, H, W) float32 from the calibration folder, else the
    validation split's images, prepared as calibration prepares them (export/tensorrt.py)."""
    from pose_workloads.export.tensorrt import calibration_images, calibration_input
    from pose_workloads.media import BadSample, read_image

    if image_dir is not None:
        files = calibration_images(image_dir)
    else:
        folder = val_dataset.resolve(val_dataset.test_data.images_root_dir_path)
        files = sorted(p for p in Path(folder).iterdir() if p.is_file())
    inputs = []
    for path in files:
        if len(inputs) == GATE_IMAGES:
            break
        try:
            inputs.append(calibration_input(read_image(path), info.network, tuple(info.input_size), info.normalization))
        except BadSample:
            continue
    return np.stack(inputs)


def compare(model_path: str | Path, candidate_path: str | Path, what: str, precision: str, inputs: np.ndarray,
            val_dataset=None, inference_spec=None) -> Comparison:
    """`candidate_path` (.onnx / .engine) against the PyTorch model in `model_path`."""
    from pose_workloads.export.onnx import LAYOUTS
    from pose_workloads.runtime import load_predictor

    reference = load_predictor(model_path, device="cpu")
    candidate = load_predictor(candidate_path)
    names = LAYOUTS[reference.info.network].outputs
    diffs = dict.fromkeys(names, 0.0)
    scale = 0.0
    for image in inputs:  # one at a time: engines built for batch 1 (bpnet) accept it
        expected, got = reference(image[None]), candidate(image[None])
        for name, e, g in zip(names, expected, got):
            diffs[name] = max(diffs[name], float(np.abs(e - g).max()))
            scale = max(scale, float(np.abs(e).max()))
    ap = None
    if val_dataset is not None:
        ap = (_ap(reference, model_path, val_dataset, inference_spec),
              _ap(candidate, candidate_path, val_dataset, inference_spec))
    return Comparison(what, precision, diffs, scale, len(inputs), ap)


def _ap(predictor, path, val_dataset, inference_spec) -> float:
    """COCO OKS AP on the validation split, through each network's evaluation pipeline
    (simple-pose: ground-truth boxes, evaluate's defaults; bpnet: the inference spec)."""
    info = predictor.info
    split = val_dataset.test_data
    annotations = val_dataset.resolve(split.annotation_root_dir_path)
    if info.network == "bpnet":
        from pose_workloads.bpnet.pipeline import evaluate_predictor
        from pose_workloads.serving.repository import serving_settings

        settings = serving_settings(info, inference_spec, single_scale=False)
        return float(evaluate_predictor(predictor, settings, val_dataset, Path(path), label="gate AP").metrics["AP"])
    from pose_workloads.data.coco import load_coco
    from pose_workloads.data.topdown import TopDownDataset
    from pose_workloads.simple_pose.pipeline import EvalSettings, coco_evaluation

    val = load_coco(val_dataset.resolve(split.images_root_dir_path), annotations, info.pose_config)
    dataset = TopDownDataset(val.people, info.pose_config, tuple(info.input_size), sigma=2.0, train=False)
    settings = EvalSettings(batch_size=8)
    _, metrics = coco_evaluation(lambda x: predictor(x)[0], dataset, info.pose_config, annotations, settings)
    return float(metrics["AP"])

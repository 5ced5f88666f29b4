"""`pose <network> export`, step one: a `.pth` model file -> ONNX (onnxruntime, any TensorRT),
checked against PyTorch before it is moved into place. See the package docstring for the choice
of exporter."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pose_workloads import model_file
from pose_workloads.errors import BadInput, TaskFailed
from pose_workloads.predictor import ModelInfo
from pose_workloads.runtime import ONNX_METADATA_KEY
from pose_workloads.specs import BPNET_STRIDE

INPUT_NAME = "images"


class OnnxLayout(NamedTuple):
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]  # tensor name -> {axis: name}


# The one table of what differs between the networks' ONNX files.
LAYOUTS: dict[str, OnnxLayout] = {
    "simple-pose": OnnxLayout(
        ("heatmaps",),
        {INPUT_NAME: {0: "batch"}, "heatmaps": {0: "batch"}},
    ),
    "bpnet": OnnxLayout(
        ("heatmaps", "pafs"),
        {
            INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
            "heatmaps": {0: "batch", 2: "map_height", 3: "map_width"},
            "pafs": {0: "batch", 2: "map_height", 3: "map_width"},
        },
    ),
}

# ONNX vs PyTorch on the same random input, relative to the largest output: float32 rounding and
# the runtimes' different conv algorithms (Winograd, im2col) stay well below it; a wrong export
# (a frozen axis, a dropped layer) is off by the outputs' own size.
MAX_RELATIVE_DIFF = 1e-3
# bpnet engines with adjust_network_input accept images up to this many times wider than tall


class ExportFailed(TaskFailed):
    """The export ran and produced something unusable (exit 1, one line)."""


class ExportCheck(NamedTuple):
    input_shape: tuple[int, int, int, int]  # (N, 3, H, W)
    max_abs_diff: float  # over all outputs
    output_scale: float  # max |PyTorch output|



def check_shapes(network: str, input_size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """The inputs ONNX is compared with PyTorch on: two batch sizes, and for bpnet two heights and
    widths (neither the trained one's aspect), so a wrongly frozen axis shows."""
    height, width = input_size
    if network != "bpnet":
        return [(1, 3, height, width), (3, 3, height, width)]

    def multiple_of_stride(value: float) -> int:
        return max(BPNET_STRIDE, round(value / BPNET_STRIDE) * BPNET_STRIDE)

    # Smaller than trained, so that checking a large model stays cheap.
    return [(1, 3, height, width), (2, 3, multiple_of_stride(height * 0.5), multiple_of_stride(width * 0.75))]


def _last_stage_module(network: str, model):
    import torch

    class LastStage(torch.nn.Module):
        """The prediction alone, as a tuple of tensors (what ONNX outputs are)."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, images):
            return tuple(model_file.stage_outputs(network, self.model(images)))

    return LastStage().eval()


def export_onnx(model_path: str | Path, onnx_path: str | Path, opset: int = 17) -> list[ExportCheck]:
    """Write `onnx_path` from a `.pth` model file, checked and compared with PyTorch.

    The file holds only the prediction (bpnet: the last stage), dynamic axes per `LAYOUTS`, and
    `metadata_props['pose']` = the ModelInfo JSON that `runtime.load_predictor` reads. It is
    written to a temp file, checked with `onnx.checker`, run through onnxruntime on random
    inputs (`check_shapes`) against the PyTorch model, and only then moved into place.

    Returns:
        One ExportCheck per compared input.
    Raises:
        BadInput: the model file is missing or not a pose model file.
        ExportFailed: onnxruntime disagrees with PyTorch by more than MAX_RELATIVE_DIFF of the outputs.
    """
    import onnx
    import onnxruntime as ort
    import torch

    onnx_path = Path(onnx_path)
    ckpt = model_file.read(model_path)
    info = model_file.model_info(ckpt)
    layout = LAYOUTS[info.network]
    model = _last_stage_module(info.network, model_file.build_model(ckpt, model_path).float().eval())
    generator = torch.Generator().manual_seed(0)
    shapes = check_shapes(info.network, tuple(info.input_size))
    example = torch.randn(shapes[0], generator=generator)

    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = onnx_path.with_name(f".{onnx_path.name}.tmp")
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter's deprecation notice; the choice is explained at the top.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                model, (example,), str(tmp), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=list(layout.outputs), dynamic_axes=layout.dynamic_axes, do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        del proto.metadata_props[:]
        proto.metadata_props.add(key=ONNX_METADATA_KEY, value=info.to_json())
        proto.doc_string = f"pose {info.network} model exported from {Path(model_path).name}"
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))

        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        checks = []
        for shape in shapes:
            images = torch.randn(shape, generator=generator)
            with torch.no_grad():
                expected = [t.numpy() for t in model(images)]
            got = session.run(None, {INPUT_NAME: images.numpy()})
            diff = max(float(np.abs(e - g).max()) for e, g in zip(expected, got))
            scale = max(float(np.abs(e).max()) for e in expected)
            checks.append(ExportCheck(shape, diff, scale))
            if diff > MAX_RELATIVE_DIFF * scale:
                raise ExportFailed(
                    f"{onnx_path}: onnxruntime differs from PyTorch by {diff:.3g} on input {'x'.join(map(str, shape))} "
                    f"(outputs up to {scale:.3g}); nothing was written. Please report it with the model file"
                )
        os.replace(tmp, onnx_path)
    finally:
        tmp.unlink(missing_ok=True)
    return checks


def read_onnx_info(onnx_path: str | Path) -> ModelInfo:
    """The ModelInfo stored in an exported file's metadata_props."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    if ONNX_METADATA_KEY not in meta:
        raise BadInput(
            f"{onnx_path}: ONNX file has no '{ONNX_METADATA_KEY}' metadata; export it with `pose ... export`")
    return ModelInfo.from_dict(json.loads(meta[ONNX_METADATA_KEY]))



"""Helpers shared by tests/workloads: model files as `train` writes them (docs/ARCHITECTURE.md), and
coco-mini converted to BodyPoseNet shards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pose_workloads.data.convert import convert_dataset
from pose_workloads.specs import BpnetDatasetSpec

ROOT = Path(__file__).resolve().parents[2]

@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test, restored after: small models run no faster on two, and
    results compared across runtimes stay reproducible. Modules use it with `pytestmark`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY_MODELS: dict[str, dict[str, Any]] = {
    "simple-pose": {"name": "simple_pose_tiny"},
    "bpnet": {"backbone_attributes": {"architecture": "tiny"}, "stages": 2},
}


def write_model_file(path: Path, network: str, input_size: tuple[int, int], model_config: dict[str, Any] | None = None,
                     seed: int = 0, **extra: Any) -> Path:
    """A `.pth` model file with the keys train writes, for a freshly initialised model (COCO-17)."""
    import torch

    from pose_workloads.models import build_model
    from pose_workloads.specs import COCO17

    torch.manual_seed(seed)
    config = model_config if model_config is not None else TINY_MODELS[network]
    model = build_model(network, config, COCO17.num_joints, pretrained=False)
    # A fresh model's outputs are ~1e-8 (output convs start near zero, activations shrink through
    # the untrained trunk); a trained model's are O(1). Redraw the output convs and set the BN
    # statistics from one batch so that comparing two runtimes' outputs in a test means something.
    outputs = model.output_convs() if network == "bpnet" else [model.head[-1]]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for conv in outputs:
            conv.weight.normal_(0.0, 0.3 / conv.weight[0].numel() ** 0.5)  # outputs up to ~1
        for bn in norms:
            bn.momentum = 1.0  # running statistics = this batch's
        model.train()(torch.randn(4, 3, *input_size))
        for bn in norms:
            bn.momentum = 0.1
    model.eval()
    torch.save({
        "network": network,
        "model_config": config,
        "pose_config": COCO17.model_dump(mode="json"),
        "input_size": list(input_size),
        "state_dict": model.state_dict(),
        **extra,
    }, path)
    return path


@pytest.fixture(scope="session")
def write_model():
    """`write_model_file` itself, for fixtures wider than one test (test modules cannot import
    conftest by name: tests/launcher has one too)."""
    return write_model_file


@pytest.fixture
def model_file(tmp_path):
    """`model_file(network, input_size, **kw)` -> path of a fresh tiny model file in tmp_path."""

    def make(network: str, input_size: tuple[int, int], name: str | None = None, **kw: Any) -> Path:
        return write_model_file(tmp_path / (name or f"{network}.pth"), network, input_size, **kw)

    return make


@pytest.fixture(scope="module")
def converted(coco_mini, tmp_path_factory) -> Path:
    """coco-mini as `pose bpnet dataset_convert -m train` writes it (built once per test module)."""
    split = {"images_root_dir_path": "images", "annotation_root_dir_path": coco_mini.keypoints_name}
    spec = BpnetDatasetSpec(root_directory_path=str(coco_mini.root), train_data=split, test_data=split)
    out = tmp_path_factory.mktemp("bpnet_data") / "train"
    convert_dataset(spec, "train", out, show_progress=False)
    return out

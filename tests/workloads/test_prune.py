"""`pose bpnet prune`: TAO's threshold semantics on normalised L1 norms, its equalization criteria
for tied channels, a valid pruned graph with the output channels intact, and a model file that
loads, exports and retrains without the original config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pose_workloads import prune
from pose_workloads.__main__ import build_parser
from pose_workloads.errors import BadInput
from pose_workloads.model_file import build_model as model_from_file
from pose_workloads.model_file import layer_channels
from pose_workloads.model_file import read as read_model_file
from pose_workloads.models import build_model
from pose_workloads.runtime import load_predictor
from pose_workloads.specs import COCO17

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------
# Pure scoring
# ------------------------------------------------------------------------------------------------

def test_channel_scores_are_l1_norms_over_the_layers_largest():
    weight = np.zeros((3, 2, 1, 1))
    weight[0] = -4.0  # L1 8
    weight[1, 0] = 1.0  # L1 1
    weight[2] = 2.0  # L1 4

    np.testing.assert_allclose(prune.channel_scores(weight), [1.0, 0.125, 0.5])
    # A transposed conv keeps its output channels on axis 1.
    np.testing.assert_allclose(prune.channel_scores(weight.transpose(1, 0, 2, 3), transposed=True), [1.0, 0.125, 0.5])
    assert not prune.channel_scores(np.zeros((4, 3, 3, 3))).any()


@pytest.mark.parametrize("criterion, expected", [
    ("union", [0.9, 0.8, 0.5]),
    ("intersection", [0.1, 0.2, 0.5]),
    ("arithmetic_mean", [0.5, 0.5, 0.5]),
    ("geometric_mean", [0.3, 0.4, 0.5]),
])
def test_tied_layers_scores_merge_by_the_criterion(criterion, expected):
    # Two layers score the same three channels; the third channel is held by the first layer only.
    scores = np.array([[0.9, 0.2, 0.5], [0.1, 0.8, np.nan]])

    np.testing.assert_allclose(prune.merge_scores(scores, criterion), expected)


def test_channels_below_the_threshold_go_and_the_count_rounds_up_to_the_granularity():
    scores = np.array([0.9, 0.05, 0.5, 0.3, 0.02, 1.0, 0.25, 0.01])

    np.testing.assert_array_equal(prune.channels_to_keep(scores, 0.3, 1), [0, 2, 3, 5])
    # 4 wanted, rounded up to 6: the next best two (0.25 then 0.05) stay too.
    np.testing.assert_array_equal(prune.channels_to_keep(scores, 0.3, 3), [0, 1, 2, 3, 5, 6])
    assert len(prune.channels_to_keep(scores, 0.3, 16)) == 8  # never more than there are
    assert len(prune.channels_to_keep(scores, 1.5, 8)) == 0  # nothing reaches it: caller refuses


# ------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------

def _uniform_bpnet(weak_interface_channels: int = 24):
    """Tiny bpnet whose conv channels all score 1.0, except the first channels of the interface
    conv, which score 0.1. That conv's outputs (the features) are tied to the depthwise convs
    that read them in the initial stage and in each refinement stage's concat."""
    model = build_model("bpnet", {"backbone_attributes": {"architecture": "tiny"}, "stages": 3}, 17, pretrained=False)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.fill_(1.0)
        model.interface[0].weight[:weak_interface_channels] *= 0.1
    return model


@pytest.mark.parametrize("criterion, threshold, granularity, features", [
    # The interface channel scores 0.1; the three depthwise convs reading it score 1.0.
    ("union", 0.5, 8, 64),  # max 1.0: kept
    ("intersection", 0.5, 8, 40),  # min 0.1: the 24 weak channels go
    ("intersection", 0.5, 16, 48),  # 40 rounded up to 48
    ("arithmetic_mean", 0.7, 8, 64),  # mean 0.775
    ("arithmetic_mean", 0.8, 8, 40),
    ("geometric_mean", 0.5, 8, 64),  # 0.1 ** (1/4) = 0.56
    ("geometric_mean", 0.6, 8, 40),
])
def test_equalization_criterion_decides_tied_channels(criterion, threshold, granularity, features):
    model = _uniform_bpnet()

    result = prune.prune_model(model, (64, 64), threshold, criterion, granularity)

    assert model.interface[0].out_channels == features
    for stage in model.refinements:  # the concat (features, heatmaps, pafs) follows
        assert stage.trunk[0][0].in_channels == features + 19 + 38
    assert result.channels_before - result.channels_after == 64 - features
    outputs = model(torch.randn(2, 3, 48, 72))
    assert [(h.shape[1], p.shape[1]) for h, p in outputs] == [(19, 38)] * 3
    assert outputs[-1][0].shape[2:] == (6, 9)


def test_weak_channels_anywhere_are_removed_and_outputs_keep_their_channels():
    torch.manual_seed(0)
    model = build_model("bpnet", {"backbone_attributes": {"architecture": "tiny"}, "use_self_attention": True}, 17,
                        pretrained=False)
    before = sum(p.numel() for p in model.parameters())

    prune.prune_model(model, (64, 64), 0.85, "union", 8)

    assert sum(p.numel() for p in model.parameters()) < 0.8 * before
    assert all(conv.out_channels in (19, 38) for conv in model.output_convs())
    # Every group keeps a multiple of -pg; depthwise convs follow their input, which for the
    # refinement stages is the concat of the features (a group) with 19 heatmaps and 38 PAFs.
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m not in model.output_convs()]
    assert all(m.out_channels % 8 == 0 for m in convs if m.groups == 1)
    assert all((m.out_channels - 57) % 8 == 0 for stage in model.refinements for m in [stage.trunk[0][0]])
    heatmaps, pafs = model(torch.randn(1, 3, 64, 96))[-1]
    assert heatmaps.shape == (1, 19, 8, 12) and pafs.shape == (1, 38, 8, 12)


def test_a_threshold_that_empties_a_layer_is_refused_naming_pth_and_the_layer():
    model = build_model("bpnet", {"backbone_attributes": {"architecture": "tiny"}}, 17, pretrained=False)

    with pytest.raises(BadInput) as err:
        prune.prune_model(model, (64, 64), 1.5, "union", 8)

    message = str(err.value)
    assert message.startswith("-pth 1.5: removes every channel of ") and "use a threshold below" in message
    assert "\n" not in message


# ------------------------------------------------------------------------------------------------
# The command and what comes after: load, export, retrain
# ------------------------------------------------------------------------------------------------

def _prune_args(model, output, *flags):
    return build_parser().parse_args(["bpnet", "prune", "-m", str(model), "-o", str(output), *flags])


def test_prune_command_writes_channels_and_weights_that_load_and_export(model_file, tmp_path, capsys):
    from pose_workloads.export.onnx import export_onnx

    spec = {"dataloader": {"normalization_params": {"image_scale": [255.0] * 3, "image_offset": [0.5] * 3}}}
    source = model_file("bpnet", (64, 64), spec=spec)
    output = tmp_path / "pruned.pth"

    assert prune.main(_prune_args(source, output, "-pth", "0.9", "-eq", "union", "-pg", "8")) == 0

    out = capsys.readouterr().out
    params_line = next(line for line in out.splitlines() if line.strip().startswith("parameters"))
    flops_line = next(line for line in out.splitlines() if line.strip().startswith("FLOPs"))
    before, after = (int(v.replace(",", "")) for v in params_line.split()[1:3])
    assert after < before
    assert int(flops_line.split()[2].replace(",", "")) < int(flops_line.split()[1].replace(",", ""))

    ckpt = read_model_file(output)
    assert "module" not in ckpt  # data only: layer_channels + state_dict
    joints = len(ckpt["pose_config"]["keypoints"])
    unpruned = layer_channels(build_model("bpnet", ckpt["model_config"], joints, pretrained=False))
    assert sorted(unpruned) == sorted(ckpt["layer_channels"])
    assert any(ckpt["layer_channels"][name] != counts for name, counts in unpruned.items())
    assert ckpt["pruning"]["parameters"] == [before, after]
    assert ckpt["input_size"] == [64, 64] and ckpt["spec"] == spec
    assert sum(p.numel() for p in model_from_file(ckpt).parameters()) == after

    predictor = load_predictor(output, device="cpu")
    assert predictor.info.normalization == spec["dataloader"]["normalization_params"]
    images = np.random.default_rng(0).normal(size=(1, 3, 64, 64)).astype(np.float32)
    heatmaps, pafs = predictor(images)
    assert heatmaps.shape == (1, 19, 8, 8) and pafs.shape == (1, 38, 8, 8)

    checks = export_onnx(output, tmp_path / "pruned.onnx")
    assert all(c.max_abs_diff <= 1e-4 for c in checks)
    np.testing.assert_allclose(load_predictor(tmp_path / "pruned.onnx")(images)[0], heatmaps, atol=1e-4)


def test_prune_refuses_a_simple_pose_model(model_file, tmp_path):
    source = model_file("simple-pose", (64, 48))

    with pytest.raises(BadInput, match="this is a simple-pose model; pruning is for bpnet models"):
        prune.main(_prune_args(source, tmp_path / "out.pth"))
    assert not (tmp_path / "out.pth").exists()


class _Batches(torch.utils.data.Dataset):
    """Random images with zero targets: one training step's worth."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        return {"image": torch.randn(3, 64, 64, generator=g), "heatmaps": torch.zeros(19, 8, 8),
                "pafs": torch.zeros(38, 8, 8), "mask": torch.ones(1, 8, 8)}


def test_pruned_model_retrains_through_load_graph_and_stays_pruned(model_file, tmp_path):
    from pose_workloads.bpnet import train as bpnet_train
    from pose_workloads.specs import BpnetTrainSpec
    from pose_workloads.training.job import Schedule, TrainJob
    from pose_workloads.training.loop import run_training

    pruned = tmp_path / "pruned.pth"
    assert prune.main(_prune_args(model_file("bpnet", (64, 64)), pruned, "-pth", "0.9")) == 0
    pruned_params = read_model_file(pruned)["pruning"]["parameters"][1]
    spec = BpnetTrainSpec.model_validate({
        "pretrained_weights": str(pruned), "load_graph": True, "amp": False,
        "model": {"backbone_attributes": {"architecture": "tiny"}, "stages": 2},
        "dataloader": {
            "pose_config": {"target_shape": [8, 8], "pose_config_path": "coco17.json"},
            "image_config": {"image_dims": {"height": 64, "width": 64}},
            "dataset_config": {"root_data_path": ".", "train_records_folder_path": ".", "dataset_specs": {}},
        },
    })

    model, model_config = bpnet_train.build_train_model(spec, COCO17, "spec.yaml")

    assert sum(p.numel() for p in model.parameters()) == pruned_params
    results = tmp_path / "retrain"
    job = TrainJob(network="bpnet", model=model, model_config=model_config, pose_config=COCO17, input_size=(64, 64),
                   train_dataset=_Batches(), loss_fn=bpnet_train.bpnet_loss, results_dir=results, epochs=1,
                   batch_size=2,
                   lr=1e-3, optimizer="sgd", schedule=Schedule(kind="constant"), amp=False, channels_last=False,
                   spec=spec)
    weights_before = {k: v.clone() for k, v in model.state_dict().items()}
    run_training(job)

    final = read_model_file(results / "model_final.pth")
    assert sum(p.numel() for p in model_from_file(final).parameters()) == pruned_params
    changed = [k for k, v in final["state_dict"].items() if not torch.equal(v, weights_before[k])]
    assert changed, "one SGD step must move the weights"
    heatmaps, pafs = load_predictor(results / "model_final.pth", device="cpu")(np.zeros((1, 3, 64, 64), np.float32))
    assert heatmaps.shape == (1, 19, 8, 8) and pafs.shape == (1, 38, 8, 8)

"""The models: shapes, the torchvision weight layout, weight loading errors, budgets, learning.

Big models are built on the meta device (shapes without memory or compute); only the tiny ones
and a couple of real backbones run for real.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from pose_workloads.errors import BadInput
from pose_workloads.models import (
    ARCHITECTURES,
    VARIANTS,
    bpnet,
    build_model,
    count_flops,
    count_parameters,
    load_backbone_weights,
    mobilenet,
    resnet,
    stagewise_param_groups,
)
from pose_workloads.specs import BPNET_STRIDE

torch.set_num_threads(1)

LAYOUT = json.loads((Path(__file__).parent / "test_models_torchvision_layout.json").read_text())


def bpnet_config(architecture: str = "tiny", **overrides) -> dict:
    config = {
        "backbone_attributes": {"architecture": architecture},
        "stages": 3,
        "heat_channels": 18,  # 17 joints + background
        "paf_channels": 38,  # 19 limbs
        "use_self_attention": False,
        "use_bias": True,
        "data_format": "channels_first",
    }
    config.update(overrides)
    return config


# --------------------------------------------------------------------------------------------
# Simple Pose
# --------------------------------------------------------------------------------------------

# ResNet-101/152 repeat ResNet-50's blocks; their meta forward costs seconds (BN runs as Python
# decompositions on meta), so they are checked by structure and the others run.
DEEP = ("resnet101", "resnet152")


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_gives_one_heatmap_per_joint_at_stride_4(name):
    with torch.device("meta"):
        model = build_model("simple-pose", {"name": name}, num_joints=17)
        if any(deep in name for deep in DEEP):
            first, last = model.head[0], model.head[-1]
            got = (first.in_channels, last.out_channels, model.backbone.stride)
            assert got == (model.backbone.out_channels, 17, 32)
        else:
            assert model(torch.empty(2, 3, 256, 192)).shape == (2, 17, 64, 48)
    assert model.stride == 4


@pytest.mark.parametrize("name", ["simple_pose_tiny", "mobile_pose_mobilenetv3_small", "simple_pose_resnet18_v1d"])
def test_real_forward_gives_finite_heatmaps_for_any_joint_count(name):
    model = build_model("simple-pose", {"name": name}, num_joints=5).eval()
    with torch.no_grad():
        heatmaps = model(torch.randn(1, 3, 128, 96))
    assert heatmaps.shape == (1, 5, 32, 24)
    assert torch.isfinite(heatmaps).all()


def test_unknown_variant_error_lists_the_valid_names():
    with pytest.raises(ValueError) as err:
        build_model("simple-pose", {"name": "simple_pose_resnet19_v1b"}, num_joints=17)
    message = str(err.value)
    assert "simple_pose_resnet19_v1b" in message
    assert all(name in message for name in VARIANTS)
    assert isinstance(err.value, BadInput)  # exit code 2 from `python -m pose_workloads`


def test_unknown_network_error_lists_the_networks():
    with pytest.raises(BadInput, match="simple-pose, bpnet"):
        build_model("openpose", {}, num_joints=17)


def test_simple_pose_tiny_is_within_its_parameter_budget():
    model = build_model("simple-pose", {"name": "simple_pose_tiny"}, num_joints=17)
    assert 150_000 <= count_parameters(model) <= 250_000


def test_deconv_head_starts_from_near_zero_heatmaps():
    # Simple Baselines' init: N(0, 0.001) deconvs and final conv, so training starts from flat maps.
    model = build_model("simple-pose", {"name": "simple_pose_tiny"}, num_joints=17).eval()
    with torch.no_grad():
        heatmaps = model(torch.randn(2, 3, 128, 96))
    assert heatmaps.abs().max() < 0.01
    assert model.head[-1].bias.abs().max() == 0


def test_simple_pose_tiny_sgd_steps_reduce_the_heatmap_loss():
    torch.manual_seed(0)
    images = torch.randn(4, 3, 128, 96)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(24.0), indexing="ij")
    joints = torch.rand(4, 17, 2) * torch.tensor([24.0, 32.0])
    targets = torch.exp(-((xs - joints[..., 0, None, None]) ** 2 + (ys - joints[..., 1, None, None]) ** 2) / 2)
    model = build_model("simple-pose", {"name": "simple_pose_tiny"}, num_joints=17)
    # The mean over mostly-zero maps is a small number: a large lr is the plain-SGD way to move it.
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    losses = []
    for _ in range(12):
        loss = ((model(images) - targets) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_mobile_pose_head_upsamples_by_pixel_shuffle():
    model = build_model("simple-pose", {"name": "mobile_pose_mobilenetv3_small"}, num_joints=17)
    shuffles = [m for m in model.head.modules() if isinstance(m, nn.PixelShuffle)]
    assert len(shuffles) == 3
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())


# --------------------------------------------------------------------------------------------
# Backbones in torchvision's layout
# --------------------------------------------------------------------------------------------

BACKBONE_LAYOUTS = {
    "resnet18 (torchvision)": resnet.resnet18_v1b,
    "resnet34 (torchvision)": resnet.resnet34_v1b,
    "resnet50 (torchvision)": resnet.resnet50_v1b,
    "resnet18d (timm)": resnet.resnet18_v1d,
    "resnet50d (timm)": resnet.resnet50_v1d,
    "vgg19 (torchvision)": lambda: bpnet.VggTrunk(),
    "mobilenet_v2 (torchvision)": mobilenet.mobilenet_v2,
    "mobilenet_v3_large (torchvision)": mobilenet.mobilenet_v3_large,
    "mobilenet_v3_small (torchvision)": mobilenet.mobilenet_v3_small,
}


@pytest.mark.parametrize("reference", list(BACKBONE_LAYOUTS))
def test_backbone_state_dict_matches_the_reference_library_layout(reference):
    # The reference keys and shapes were dumped from torchvision / timm themselves (see the JSON's
    # _about): a file saved by them loads with strict=True into our backbone.
    with torch.device("meta"):
        backbone = BACKBONE_LAYOUTS[reference]()
    ours = {k: list(v.shape) for k, v in backbone.state_dict().items()}
    assert ours == LAYOUT[reference]


def _classifier_file(backbone: nn.Module, path: Path, prefix: str,
                     head: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A full classifier file as torchvision writes one: the trunk plus its classifier."""
    state = {prefix + k: torch.randn_like(v) if v.is_floating_point() else v for k, v in backbone.state_dict().items()}
    state.update({prefix + k: v for k, v in head.items()})
    torch.save(state, path)
    return state


@pytest.mark.parametrize(
    "make_backbone, prefix, head",
    [
        (resnet.resnet18_v1b, "", {"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}),
        (mobilenet.mobilenet_v3_small, "module.", {"classifier.0.weight": torch.zeros(1024, 576)}),
        (mobilenet.mobilenet_v3_small, "backbone.", {}),
    ],
)
def test_backbone_weights_round_trip_through_a_torchvision_file(tmp_path, make_backbone, prefix, head):
    path = tmp_path / "weights.pth"
    saved = _classifier_file(make_backbone(), path, prefix, head)
    backbone = make_backbone()
    load_backbone_weights(backbone, path)
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, saved[prefix + key]), key


def test_backbone_weights_under_a_state_dict_key_load(tmp_path):
    source = mobilenet.mobilenet_v3_small()
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in source.state_dict().items()}},
               tmp_path / "ckpt.pth")
    backbone = mobilenet.mobilenet_v3_small()
    load_backbone_weights(backbone, tmp_path / "ckpt.pth")
    assert torch.equal(backbone.features[-1][0].weight, source.features[-1][0].weight)


def test_missing_and_unexpected_backbone_keys_are_logged_by_name(tmp_path, caplog):
    state = mobilenet.mobilenet_v3_small().state_dict()
    del state["features.12.0.weight"]
    state["features.13.0.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "partial.pth")
    with caplog.at_level(logging.WARNING, logger="pose_workloads.models"):
        load_backbone_weights(mobilenet.mobilenet_v3_small(), tmp_path / "partial.pth")
    assert "features.12.0.weight" in caplog.text
    assert "features.13.0.weight" in caplog.text


def test_wrong_shaped_backbone_tensor_names_the_file_key_and_fix(tmp_path):
    state = mobilenet.mobilenet_v3_small().state_dict()
    state["features.0.0.weight"] = torch.zeros(16, 3, 5, 5)
    path = tmp_path / "other.pth"
    torch.save(state, path)
    with pytest.raises(BadInput) as err:
        load_backbone_weights(mobilenet.mobilenet_v3_small(), path)
    message = str(err.value)
    assert str(path) in message and "features.0.0.weight" in message
    assert "[16, 3, 5, 5]" in message and "[16, 3, 3, 3]" in message
    assert "same architecture" in message and "\n" not in message


def test_weights_of_another_architecture_are_refused(tmp_path):
    torch.save(mobilenet.mobilenet_v3_small().state_dict(), tmp_path / "mnv3.pth")
    with pytest.raises(BadInput, match="none of its .* tensors match the backbone"):
        load_backbone_weights(bpnet.VggTrunk(), tmp_path / "mnv3.pth")


def test_missing_backbone_weights_file_says_nothing_is_downloaded(tmp_path):
    with pytest.raises(BadInput, match="not found.*nothing is downloaded"):
        build_model("simple-pose", {"name": "simple_pose_tiny", "pretrained_backbone": str(tmp_path / "no.pth")}, 17)


def test_build_model_loads_the_pretrained_backbone_unless_told_not_to(tmp_path):
    source = build_model("simple-pose", {"name": "simple_pose_tiny"}, 17)
    torch.save(source.backbone.state_dict(), tmp_path / "tiny.pth")
    config = {"name": "simple_pose_tiny", "pretrained_backbone": str(tmp_path / "tiny.pth")}
    loaded = build_model("simple-pose", config, 17)
    assert torch.equal(loaded.backbone.features[0][0].weight, source.backbone.features[0][0].weight)
    (tmp_path / "tiny.pth").unlink()  # from a checkpoint, the file is no longer needed
    fresh = build_model("simple-pose", config, 17, pretrained=False)
    assert not torch.equal(fresh.backbone.features[0][0].weight, source.backbone.features[0][0].weight)


def test_not_a_weights_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(BadInput, match="not a readable PyTorch file"):
        load_backbone_weights(nn.Conv2d(3, 8, 3), tmp_path / "notes.pth")


# --------------------------------------------------------------------------------------------
# BodyPoseNet
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_bpnet_returns_heatmaps_and_pafs_of_every_stage_at_stride_8(architecture):
    with torch.device("meta"):
        model = build_model("bpnet", bpnet_config(architecture, stages=3), num_joints=17)
        outputs = model(torch.empty(2, 3, 256, 192))
    assert model.stride == BPNET_STRIDE == 256 // 32  # the one stride the specs, labels and pipeline use
    assert len(outputs) == 3
    for heatmaps, pafs in outputs:
        assert heatmaps.shape == (2, 18, 32, 24)
        assert pafs.shape == (2, 38, 32, 24)


@pytest.mark.parametrize("stages, use_self_attention", [(2, False), (4, True)])
def test_bpnet_tiny_runs_at_any_input_size(stages, use_self_attention):
    config = bpnet_config(stages=stages, use_self_attention=use_self_attention)
    model = build_model("bpnet", config, num_joints=17).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 96, 160))
    assert [tuple(h.shape) + tuple(p.shape) for h, p in outputs] == [(1, 18, 12, 20, 1, 38, 12, 20)] * stages
    assert all(torch.isfinite(h).all() and torch.isfinite(p).all() for h, p in outputs)


def test_bpnet_self_attention_adds_gates_to_refinement_stages_only():
    plain = build_model("bpnet", bpnet_config(), 17)
    gated = build_model("bpnet", bpnet_config(use_self_attention=True), 17)
    assert plain.refinements[0].heat_attention is None
    assert isinstance(gated.refinements[0].heat_attention, nn.Module)
    assert not any("attention" in name for name, _ in gated.initial.named_parameters())


def test_bpnet_use_bias_false_leaves_stage_convs_without_bias():
    model = build_model("bpnet", bpnet_config(use_bias=False), 17)
    stage_convs = [m for m in model.refinements.modules() if isinstance(m, nn.Conv2d)]
    assert stage_convs and all(m.bias is None for m in stage_convs)


@pytest.mark.parametrize("use_self_attention", [False, True])
def test_bpnet_tiny_is_within_its_parameter_budget(use_self_attention):
    model = build_model("bpnet", bpnet_config(stages=3, use_self_attention=use_self_attention), 17)
    assert count_parameters(model) <= 300_000


def test_bpnet_vgg_backbone_takes_torchvision_vgg19_weights(tmp_path):
    with torch.device("meta"):
        model = build_model("bpnet", bpnet_config("vgg"), 17)
    assert {k: list(v.shape) for k, v in model.backbone.state_dict().items()} == LAYOUT["vgg19 (torchvision)"]


def test_bpnet_config_ignores_tao_keys_it_does_not_use():
    config = bpnet_config(regularization_type="l1", kernel_regularization_factor=5e-4, stage1_kernel_sizes=[3, 3, 3])
    config["backbone_attributes"].update(nlayers=19, use_batch_norm=False)
    assert len(build_model("bpnet", config, 17).refinements) == 2


@pytest.mark.parametrize(
    "change, field",
    [({"stages": 1}, "stages"), ({"paf_channels": 37}, "paf_channels"),
     ({"backbone_attributes": {"architecture": "resnet"}}, "architecture")],
)
def test_bad_bpnet_config_names_the_field(change, field):
    with pytest.raises(BadInput, match=field):
        build_model("bpnet", bpnet_config(**change), 17)


def test_bpnet_channels_last_hint_gives_the_same_outputs():
    torch.manual_seed(0)
    first = build_model("bpnet", bpnet_config(), 17).eval()
    last = build_model("bpnet", bpnet_config(data_format="channels_last"), 17).eval()
    last.load_state_dict(first.state_dict())
    conv = last.backbone.features[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = first(images)[-1][1]
        got = last(images.contiguous(memory_format=torch.channels_last))[-1][1]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_mobile_pose_runs_in_channels_last_with_the_same_heatmaps():
    # Pixel shuffle and squeeze-excitation are the layers that could trip over NHWC strides.
    model = build_model("simple-pose", {"name": "mobile_pose_mobilenetv3_small"}, 17).eval()
    nn.init.normal_(model.head[-1].weight, std=0.1)
    images = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        expected = model(images)
        model = model.to(memory_format=torch.channels_last)
        got = model(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_stagewise_lr_multipliers_follow_tao():
    model = build_model("bpnet", bpnet_config(), 17)
    groups = stagewise_param_groups(model)
    mult_of = {id(p): g["lr_mult"] for g in groups for p in g["params"]}
    assert len(mult_of) == sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert mult_of[id(model.backbone.features[0][0].weight)] == 1.0
    assert mult_of[id(model.initial.heat[-1].bias)] == 2.0
    assert mult_of[id(model.refinements[0].paf_out.weight)] == 4.0
    assert mult_of[id(model.refinements[1].heat_out.bias)] == 8.0
    assert mult_of[id(model.refinements[0].trunk[0][1].bias)] == 4.0  # a BN shift is not a conv bias


# --------------------------------------------------------------------------------------------
# Counting, export
# --------------------------------------------------------------------------------------------

def test_count_flops_counts_two_per_multiply_add():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    conv_macs = 8 * 3 * 3 * 3 * 16 * 16
    linear_macs = 8 * 16 * 16 * 10
    assert count_flops(model, (1, 3, 16, 16)) == 2 * (conv_macs + linear_macs)
    assert count_parameters(model) == (8 * 27 + 8) + (2048 * 10 + 10)
    assert model.training  # restored


def test_count_flops_scales_with_input_area():
    model = build_model("simple-pose", {"name": "simple_pose_tiny"}, 17)
    assert count_flops(model, (1, 3, 256, 192)) == 4 * count_flops(model, (1, 3, 128, 96))


def _export_and_run(model: nn.Module, example: torch.Tensor, other: torch.Tensor, dynamic_axes: dict, path: Path):
    import onnxruntime

    torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                      dynamic_axes={"input": dynamic_axes})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": other.numpy()})


@pytest.mark.filterwarnings("ignore")
def test_simple_pose_exports_to_onnx_with_a_dynamic_batch(tmp_path):
    model = build_model("simple-pose", {"name": "mobile_pose_mobilenetv3_small"}, 17).eval()
    nn.init.normal_(model.head[-1].weight, std=0.1)  # outputs of size ~1, so the comparison means something
    batch = torch.randn(3, 3, 128, 96)
    (got,) = _export_and_run(model, torch.randn(1, 3, 128, 96), batch, {0: "batch"}, tmp_path / "m.onnx")
    with torch.no_grad():
        expected = model(batch).numpy()
    assert got.shape == (3, 17, 32, 24)
    assert abs(got - expected).max() < 1e-4 * max(1.0, abs(expected).max())


@pytest.mark.filterwarnings("ignore")
def test_bpnet_exports_to_onnx_with_dynamic_batch_height_and_width(tmp_path):
    model = build_model("bpnet", bpnet_config(use_self_attention=True), 17).eval()
    for conv in model.output_convs():
        nn.init.normal_(conv.weight, std=0.1)
    images = torch.randn(2, 3, 96, 160)
    got = _export_and_run(model, torch.randn(1, 3, 64, 64), images, {0: "batch", 2: "height", 3: "width"},
                          tmp_path / "b.onnx")
    with torch.no_grad():
        expected = [t.numpy() for pair in model(images) for t in pair]
    assert [g.shape for g in got] == [e.shape for e in expected]
    assert got[-1].shape == (2, 38, 12, 20)
    for g, e in zip(got, expected):
        assert abs(g - e).max() < 1e-4 * max(1.0, abs(e).max())

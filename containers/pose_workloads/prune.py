"""`pose bpnet prune -m MODEL -o OUT -pth 0.1 [-eq union] [-pg 8]`: L1-norm structured channel
pruning with TAO's threshold semantics, on torch-pruning's dependency graph.

TAO's rule (BodyPoseNet `prune`): every conv's output channels are scored by the L1 norm of their
kernels, divided by the largest norm in that layer (so scores are in [0, 1]); channels scoring
below `-pth` are removed, and the number kept is rounded up to a multiple of `-pg`. Channels tied
together (a residual sum, a concat feeding the refinement stages, a depthwise conv that follows
its input) must go together: `-eq` decides how the tied layers' scores of one channel merge:

    union            max      a channel stays if any tied layer keeps it
    intersection     min      a channel stays only if every tied layer keeps it
    arithmetic_mean  mean
    geometric_mean   exp(mean(log))

torch-pruning (`DependencyGraph`) finds the ties and edits every module of a group at once, so
the graph stays valid. Its own `GroupMagnitudeImportance` reduces the raw norms of a group
('mean', 'max', 'prod'; no 'min') and its pruners remove a ratio of channels, not channels below a
threshold: TAO's per-layer normalisation before merging and its threshold are why the scores are
computed here (`channel_scores`, `merge_scores`, `channels_to_keep`, pure NumPy) and
torch-pruning only does the surgery. The output convs are left alone, so the heatmap and PAF
channel counts stay those of the pose config.

TAO keeps `min_num_filters` (16) channels of a layer that no channel of passes the threshold
(scores are at most 1, so any `-pth` above 1 shrinks every layer to that floor); here such a
threshold is refused, naming the layer and its best score, since a network cut to an arbitrary
floor is rarely what was meant.

Scores come from the weights as loaded, before any channel is removed, so the result does not
depend on the order groups are visited in. The pruned model is saved as data: its per-layer
channel counts (`layer_channels`) and state_dict, from which model_file rebuilds it (never a
pickled module, which would run code when loaded); retrain it with `pretrained_weights:
pruned.pth` and `load_graph: true` (TAO's flow: prune, retrain, export).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pose_workloads import model_file
from pose_workloads.errors import BadInput

NETWORK = "bpnet"


def _geometric_mean(scores: np.ndarray, axis: int) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.exp(np.nanmean(np.log(scores), axis=axis))


# TAO's -eq choices: how the scores several tied layers give one channel become one score.
CRITERIA: dict[str, Callable[..., np.ndarray]] = {
    "union": np.nanmax,
    "intersection": np.nanmin,
    "arithmetic_mean": np.nanmean,
    "geometric_mean": _geometric_mean,
}


# --------------------------------------------------------------------------------------------
# Scores: pure NumPy
# --------------------------------------------------------------------------------------------

def channel_scores(weight: np.ndarray, transposed: bool = False) -> np.ndarray:
    """Normalised L1 norm of each output channel of a conv kernel.

    Args:
        weight: float array, (out, in / groups, *kernel) for a conv, (in, out, *kernel) for a
            transposed conv (`transposed=True`, groups 1).
    Returns:
        (out,) float64 in [0, 1]: each channel's sum of |w| over the largest one (all zeros for
        an all-zero kernel).
    """
    weight = np.abs(np.asarray(weight, np.float64))
    out_axis = 1 if transposed else 0
    norms = weight.sum(axis=tuple(a for a in range(weight.ndim) if a != out_axis))
    top = norms.max(initial=0.0)
    return norms / top if top > 0 else np.zeros_like(norms)


def merge_scores(per_layer: np.ndarray, criterion: str) -> np.ndarray:
    """(L, C) scores of C tied channels from L layers, NaN where a layer does not hold that
    channel -> (C,) float64, merged by the -eq criterion (CRITERIA)."""
    if criterion not in CRITERIA:
        raise BadInput(f"-eq {criterion}: unknown; use one of {', '.join(CRITERIA)}")
    return np.asarray(CRITERIA[criterion](np.asarray(per_layer, np.float64), axis=0))


def channels_to_keep(scores: np.ndarray, threshold: float, granularity: int) -> np.ndarray:
    """Indices (sorted, int64) of the channels that stay.

    Channels scoring at least `threshold` stay; their number is rounded up to a multiple of
    `granularity` (at most all of them) by also keeping the next best. Returns an empty array
    when no channel reaches the threshold: the caller refuses that, as a layer cannot be empty.
    """
    scores = np.asarray(scores, np.float64)
    wanted = int(np.count_nonzero(scores >= threshold))
    if wanted == 0:
        return np.zeros(0, np.int64)
    keep = min(len(scores), math.ceil(wanted / granularity) * granularity)
    best_first = np.argsort(-scores, kind="stable")
    return np.sort(best_first[:keep]).astype(np.int64)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class GroupPlan(NamedTuple):
    layer: str  # the group's root conv, by module name
    channels: int
    keep: np.ndarray  # indices into the root's output channels
    best_score: float


class PruneResult(NamedTuple):
    model: Any  # the pruned nn.Module (the input, edited in place)
    plans: list[GroupPlan]

    @property
    def channels_before(self) -> int:
        return sum(p.channels for p in self.plans)

    @property
    def channels_after(self) -> int:
        return sum(len(p.keep) for p in self.plans)


def _flatten_outputs(outputs) -> list:
    """bpnet returns [(heatmaps, pafs)] per stage; the dependency graph traces tensors."""
    if isinstance(outputs, (list, tuple)):
        return [t for item in outputs for t in _flatten_outputs(item)]
    return [outputs]


def prune_model(model, input_hw: tuple[int, int], threshold: float, criterion: str = "union",
                granularity: int = 8) -> PruneResult:
    """Remove the channels TAO's rule removes (see the module docstring), in place.

    Args:
        model: a BodyPoseNet (its `output_convs()` are never pruned).
        input_hw: (height, width) of the example input the dependency graph is traced with.
    Raises:
        BadInput: a bad -eq / -pg / -pth value, or a threshold that would remove every channel of
            a layer (naming the layer and its best score).
    """
    import torch
    import torch_pruning as tp
    from torch import nn

    if criterion not in CRITERIA:
        raise BadInput(f"-eq {criterion}: unknown; use one of {', '.join(CRITERIA)}")
    if granularity < 1:
        raise BadInput(f"-pg {granularity}: the pruning granularity must be at least 1, e.g. 8")
    if not threshold >= 0:
        raise BadInput(f"-pth {threshold}: the pruning threshold must be >= 0, e.g. 0.1")

    model.eval()
    example = torch.zeros(1, 3, *input_hw)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, output_transform=_flatten_outputs,
                                                  verbose=False)
    names = {module: name for name, module in model.named_modules()}
    output_convs = list(model.output_convs()) if hasattr(model, "output_convs") else []

    plans, surgery = [], []
    for group in graph.get_all_groups(ignored_layers=output_convs, root_module_types=(nn.Conv2d, nn.ConvTranspose2d)):
        root = group[0].dep
        channels = len(group[0].idxs)
        rows = []
        for item in group:
            module, handler = item.dep.target.module, item.dep.handler
            if not (isinstance(module, nn.modules.conv._ConvNd) and graph.is_out_channel_pruning_fn(handler)):
                continue  # BN, activations and the convs that read these channels are not scored
            scores = channel_scores(module.weight.detach().cpu().numpy(), transposed=module.transposed)
            row = np.full(channels, np.nan)
            row[np.asarray(item.root_idxs)] = scores[np.asarray(item.idxs)]
            rows.append(row)
        merged = merge_scores(np.stack(rows), criterion)
        keep = channels_to_keep(merged, threshold, granularity)
        layer = names.get(root.target.module, str(root.target))
        best = float(np.nanmax(merged)) if len(merged) else 0.0
        if len(keep) == 0:
            raise BadInput(
                f"-pth {threshold:g}: removes every channel of {layer} (its best {criterion} score is {best:.3f}); "
                f"use a threshold below {best:.3f}, e.g. -pth 0.1"
            )
        plans.append(GroupPlan(layer, channels, keep, best))
        if len(keep) < channels:
            removed = sorted(set(range(channels)) - set(keep.tolist()))
            surgery.append((root.target.module, root.handler, removed))

    for module, handler, removed in surgery:
        group = graph.get_pruning_group(module, handler, idxs=removed)
        group.prune()
    return PruneResult(model, plans)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------

def main(args) -> int:
    """`pose bpnet prune -m MODEL -o OUT -pth 0.1 [-eq union] [-pg 8]`."""
    from pose_workloads.models import count_flops, count_parameters

    output = Path(args.output)
    if output.resolve() == Path(args.model).resolve():
        raise BadInput(f"-o {args.output}: is the model being pruned (-m); write the pruned model to a new file, "
                       "e.g. model_pruned.pth")
    if output.suffix not in (".pth", ".pt"):
        raise BadInput(f"-o {args.output}: the pruned model file must end in .pth (model files are opened by suffix); "
                       "e.g. model_pruned.pth")
    ckpt = model_file.read(args.model)
    model_file.check_network(args.model, ckpt["network"], NETWORK, "pruning is for bpnet models")
    model = model_file.build_model(ckpt, args.model).float()
    input_hw = tuple(int(v) for v in ckpt["input_size"])
    shape = (1, 3, *input_hw)
    params_before, flops_before = count_parameters(model), count_flops(model, shape)

    result = prune_model(model, input_hw, args.threshold, args.criterion, args.granularity)
    params_after, flops_after = count_parameters(result.model), count_flops(result.model, shape)
    changed = sum(len(p.keep) < p.channels for p in result.plans)
    pruning = {
        "threshold": args.threshold, "criterion": args.criterion, "granularity": args.granularity,
        "source": str(args.model), "parameters": [params_before, params_after], "flops": [flops_before, flops_after],
    }
    # layer_channels records the pruned shapes, which no longer follow model_config. Training
    # state (optimizer, epoch, ...) is dropped: it belongs to the unpruned shapes.
    pruned = result.model.cpu().eval()
    model_file.write(output, model_file.contents(ckpt["network"], pruned, ckpt.get("model_config"), ckpt["pose_config"],
                                                 ckpt["input_size"], spec=ckpt.get("spec"),
                                                 pruning=pruning))

    print(f"pruned {args.model} at -pth {args.threshold:g} -eq {args.criterion} -pg {args.granularity}: "
          f"{changed} of {len(result.plans)} channel groups narrowed, "
          f"{result.channels_before} -> {result.channels_after} channels")
    print(f"  {'':<12} {'before':>14} {'after':>14} {'ratio':>7}")
    print(f"  {'parameters':<12} {params_before:>14,} {params_after:>14,} {params_after / params_before:>7.3f}")
    print(f"  {'FLOPs':<12} {flops_before:>14,} {flops_after:>14,} {flops_after / max(flops_before, 1):>7.3f}"
          f"   (at {input_hw[0]}x{input_hw[1]})")
    print(f"wrote {output}; retrain it with pretrained_weights: {output} and load_graph: true")
    return 0

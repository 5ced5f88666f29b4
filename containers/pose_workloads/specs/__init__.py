"""Experiment specs, dataset specs and pose configs, validated by pydantic.

Torch-free on purpose: the launcher imports this package on the host to check a spec before any
container starts, and the workloads import it inside the container. One source of truth for
defaults, ranges and error text.

    fields        Strict (unknown keys refused), SpecPath (a path field)
    files         YAML/JSON -> mapping -> model, one-line errors, save_spec
    overrides     load_spec: a file + `--set key.sub=value` overrides
    paths         spec_paths / map_spec_paths: every SpecPath field, for the launcher
    pose_config   PoseConfig, COCO17, load_pose_config
    simple_pose   SimplePoseSpec (one YAML per experiment)
    bpnet         BodyPoseNet specs in TAO's layout (train, dataset, inference)

Everything is importable from `pose_workloads.specs` directly.
"""

from pose_workloads.errors import BadInput, SpecError
from pose_workloads.specs.bpnet import (
    BPNET_STRIDE,
    BpnetAugmentation,
    BpnetBackbone,
    BpnetDataloader,
    BpnetDatasetConfig,
    BpnetDatasetSpec,
    BpnetDataSplit,
    BpnetImageConfig,
    BpnetImageDims,
    BpnetInferenceSpec,
    BpnetLabelProcessor,
    BpnetLRSchedule,
    BpnetModel,
    BpnetNormalization,
    BpnetOptimizer,
    BpnetPoseSection,
    BpnetSpatialAug,
    BpnetTrainSpec,
)
from pose_workloads.specs.fields import SpecPath, Strict
from pose_workloads.specs.files import SPEC_SUFFIXES, format_validation_error, read_mapping, save_spec, validate
from pose_workloads.specs.overrides import apply_overrides, load_spec
from pose_workloads.specs.paths import map_spec_paths, spec_paths
from pose_workloads.specs.pose_config import COCO17, PoseConfig, load_pose_config
from pose_workloads.specs.simple_pose import (
    SimplePoseAugmentation,
    SimplePoseData,
    SimplePoseEvaluate,
    SimplePoseModel,
    SimplePoseSpec,
    SimplePoseTrain,
)

__all__ = [
    "BadInput", "SpecError", "SpecPath", "Strict", "SPEC_SUFFIXES", "format_validation_error", "read_mapping",
    "save_spec", "validate", "apply_overrides", "load_spec", "map_spec_paths", "spec_paths", "COCO17",
    "PoseConfig", "load_pose_config",
    "BPNET_STRIDE", "BpnetAugmentation", "BpnetBackbone", "BpnetDataloader", "BpnetDatasetConfig", "BpnetDatasetSpec",
    "BpnetDataSplit", "BpnetImageConfig", "BpnetImageDims", "BpnetInferenceSpec", "BpnetLabelProcessor",
    "BpnetLRSchedule", "BpnetModel", "BpnetNormalization", "BpnetOptimizer", "BpnetPoseSection",
    "BpnetSpatialAug", "BpnetTrainSpec",
    "SimplePoseAugmentation", "SimplePoseData", "SimplePoseEvaluate", "SimplePoseModel", "SimplePoseSpec",
    "SimplePoseTrain",
]

"""Pose configs: which joints, how they connect, how they mirror. COCO-17 is the default."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from pose_workloads.specs.fields import Strict
from pose_workloads.specs.files import read_mapping, validate


class PoseConfig(Strict):
    """A joint set. Indices are 0-based. `limbs` define the PAF channels of bottom-up models
    (defaults to `skeleton`); `sigmas` are the COCO OKS per-joint constants."""

    name: str = "custom"
    keypoints: list[str] = Field(min_length=1)
    skeleton: list[tuple[int, int]] = Field(default_factory=list)
    flip_pairs: list[tuple[int, int]] = Field(default_factory=list)
    sigmas: list[float] | None = None
    limbs: list[tuple[int, int]] | None = None

    @property
    def num_joints(self) -> int:
        return len(self.keypoints)

    @property
    def paf_limbs(self) -> list[tuple[int, int]]:
        return list(self.limbs if self.limbs is not None else self.skeleton)

    @property
    def oks_sigmas(self) -> list[float]:
        # 0.089 is COCO's widest constant (hips/ankles): a conservative default for unknown joints.
        return list(self.sigmas) if self.sigmas is not None else [0.089] * self.num_joints

    @model_validator(mode="after")
    def _check_indices(self) -> PoseConfig:
        k = len(self.keypoints)
        for field in ("skeleton", "flip_pairs", "limbs"):
            for a, b in getattr(self, field) or []:
                if not (0 <= a < k and 0 <= b < k):
                    raise ValueError(
                        f"{field} pair ({a}, {b}) is outside 0..{k - 1}; indices are 0-based into keypoints"
                    )
        if self.sigmas is not None and len(self.sigmas) != k:
            raise ValueError(f"sigmas has {len(self.sigmas)} values for {k} keypoints; give one per keypoint")
        return self


COCO17 = PoseConfig(
    name="coco17",
    keypoints=[
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ],
    # COCO's own skeleton, converted to 0-based.
    skeleton=[
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
        (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ],
    flip_pairs=[(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)],
    sigmas=[
        0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
        0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
    ],
)


def load_pose_config(path: str | Path | None) -> PoseConfig:
    """Read a pose config JSON; None gives COCO-17."""
    if path is None:
        return COCO17
    data = read_mapping(Path(path))
    # TAO's bpnet_18joints.json nests the config under "pose_config".
    if set(data) == {"pose_config"}:
        data = data["pose_config"]
    return validate(PoseConfig, data, Path(path))


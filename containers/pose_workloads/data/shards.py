"""The training-shard format `bpnet dataset_convert` writes and BodyPoseNet training reads.

    OUT/shard-000000.tar ...   WebDataset-style tars, at most SAMPLES_PER_SHARD samples each,
                               members in a fixed order with mtime 0 (same samples, same bytes)
    OUT/manifest.json          FORMAT, VERSION, the shards with their sample counts and sizes

Members of sample KEY: KEY.jpg (or .png) the original image bytes; KEY.mask.png uint8 (H, W),
255 = the loss counts, 0 = ignore, absent when every pixel counts; KEY.json the sample's people
(data/convert.py `sample_meta`).

Writing: `ShardWriter`. Reading: `read_shards` streams samples (split across DataLoader workers
and ranks by sample index), `ShardSamples` gives random access for a map-style dataset.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pose_workloads.errors import BadInput
from pose_workloads.media import decode_image

FORMAT = "pose-bpnet-shards"


VERSION = 1


MANIFEST = "manifest.json"


SAMPLES_PER_SHARD = 1000


class ShardWriter:
    """Writes samples into OUT/shard-NNNNNN.tar, SAMPLES_PER_SHARD each. Members get mtime 0,
    uid/gid 0 and mode 0644, so the same samples give the same bytes."""

    def __init__(self, out: Path, samples_per_shard: int = SAMPLES_PER_SHARD):
        self.out, self.samples_per_shard = out, samples_per_shard
        self.shards: list[dict[str, Any]] = []
        self.tar: tarfile.TarFile | None = None
        self.tmp: Path | None = None
        self.count = 0

    def add(self, members: list[tuple[str, bytes]]) -> None:
        if self.tar is None:
            self.tmp = self.out / f".shard-{len(self.shards):06d}.tar.{os.getpid()}.tmp"
            self.tar = tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT)
            self.count = 0
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self.tar.addfile(info, io.BytesIO(data))
        self.count += 1
        if self.count == self.samples_per_shard:
            self._finish_shard()

    def _finish_shard(self) -> None:
        self.tar.close()
        name = f"shard-{len(self.shards):06d}.tar"
        os.replace(self.tmp, self.out / name)
        self.shards.append({"name": name, "samples": self.count, "bytes": (self.out / name).stat().st_size})
        self.tar, self.tmp = None, None

    def close(self) -> list[dict[str, Any]]:
        if self.tar is not None:
            self._finish_shard()
        # Shards beyond the new count are left from a bigger earlier run.
        keep = {s["name"] for s in self.shards}
        for old in self.out.glob("shard-*.tar"):
            if old.name not in keep:
                old.unlink()
        return self.shards

    def abort(self) -> None:
        """Drop a half-written shard (after an error or Ctrl-C); no-op after close()."""
        if self.tar is not None:
            self.tar.close()
            self.tar = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a converted split; `path` is the OUT folder or its manifest.json."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        raise BadInput(
            f"{path}: not a finished dataset_convert output (no readable {MANIFEST}); "
            "run `pose bpnet dataset_convert` for this folder (again)"
        ) from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise BadInput(f"{path}: format {manifest.get('format')} v{manifest.get('version')}; rerun dataset_convert")
    manifest["_dir"] = str(path.parent)
    return manifest


def manifest_samples(manifest_path: str | Path) -> int:
    """How many samples a converted split holds (without opening its shards)."""
    return int(read_manifest(manifest_path)["samples"])


def read_shards(manifest_path: str | Path, part: int = 0, num_parts: int = 1) -> Iterator[dict[str, Any]]:
    """Stream the samples of a converted split, in order: sample i goes to part i % num_parts.

    For an IterableDataset give each process its own part: `part = rank * num_workers + worker_id`,
    `num_parts = world_size * num_workers` (torch.utils.data.get_worker_info()). Parts differ in
    length by at most one; samples of other parts are skipped without being read.

    Yields dicts: "key" str; "image" (H, W, 3) uint8 RGB; "mask" (H, W) uint8, 255 = the loss
    counts, 0 = ignore, or None when every pixel counts; "meta" the sample JSON with
    "keypoints" (N, K, 3) float32 (x, y, v image px), "bboxes" (N, 4) float32 (COCO xywh px) and
    "main_center" (2,) float32 as arrays. A bad image raises `BadSample`.
    """
    manifest = read_manifest(manifest_path)
    index = 0
    for shard in manifest["shards"]:
        path = Path(manifest["_dir"]) / shard["name"]
        with tarfile.open(path, "r:") as tar:
            for key, members in _group_members(tar):
                mine = index % num_parts == part
                index += 1
                if mine:
                    yield _decode_sample(key, {ext: tar.extractfile(m).read() for ext, m in members.items()},
                                         f"{path}:{key}")


def _group_members(tar: tarfile.TarFile) -> Iterator[tuple[str, dict[str, tarfile.TarInfo]]]:
    key, members = None, {}
    for member in tar:
        stem, _, ext = member.name.partition(".")
        if stem != key and members:
            yield key, members
            members = {}
        key = stem
        members[ext] = member
    if members:
        yield key, members


class ShardSamples:
    """Random access to a converted split, for a map-style dataset (shuffle, DistributedSampler).

    `samples[i]` is the dict `read_shards` yields. The member offsets are indexed on first use in
    each process, and files are opened per process, so it is safe to pass to DataLoader workers.
    """

    def __init__(self, manifest_path: str | Path):
        self.manifest = read_manifest(manifest_path)
        self._index: list[tuple[int, str, dict[str, tuple[int, int]]]] | None = None
        self._files: dict[int, Any] = {}
        self._pid = None

    def __len__(self) -> int:
        return int(self.manifest["samples"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self._pid != os.getpid():  # forked into a worker: build our own handles
            self._files, self._pid = {}, os.getpid()
        if self._index is None:
            self._index = self._build_index()
        shard, key, members = self._index[i]
        if shard not in self._files:
            self._files[shard] = open(Path(self.manifest["_dir"]) / self.manifest["shards"][shard]["name"], "rb")
        f = self._files[shard]
        data = {}
        for ext, (offset, size) in members.items():
            f.seek(offset)
            data[ext] = f.read(size)
        return _decode_sample(key, data, f"{self.manifest['shards'][shard]['name']}:{key}")

    def _build_index(self) -> list[tuple[int, str, dict[str, tuple[int, int]]]]:
        index = []
        for s, shard in enumerate(self.manifest["shards"]):
            with tarfile.open(Path(self.manifest["_dir"]) / shard["name"], "r:") as tar:
                for key, members in _group_members(tar):
                    index.append((s, key, {ext: (m.offset_data, m.size) for ext, m in members.items()}))
        return index

    def __getstate__(self):
        # Open files do not pickle (spawned workers); each process reopens its own.
        return {**self.__dict__, "_files": {}, "_pid": None}


def _decode_sample(key: str, data: dict[str, bytes], where: str) -> dict[str, Any]:
    meta = json.loads(data["json"])
    image_ext = next(ext for ext in data if ext in ("jpg", "png"))
    image = decode_image(data[image_ext], where, expected_hw=(meta["height"], meta["width"]))
    mask = None
    if "mask.png" in data:
        mask = cv2.imdecode(np.frombuffer(data["mask.png"], np.uint8), cv2.IMREAD_GRAYSCALE)
    meta["keypoints"] = np.asarray(meta["keypoints"], dtype=np.float32).reshape(len(meta["ann_ids"]), -1, 3)
    meta["bboxes"] = np.asarray(meta["bboxes"], dtype=np.float32).reshape(-1, 4)
    meta["main_center"] = np.asarray(meta["main_center"], dtype=np.float32)
    return {"key": key, "image": image, "mask": mask, "meta": meta}

"""JPEGs that decode by region: a lossless copy with a restart marker after every MCU and an index
of each MCU's bytes, so a top-down sample decodes only the MCUs under its crop.

    pose dataset index_jpegs -i coco/train2017 -o coco/train2017-indexed

Why: a shuffled top-down sample is mostly one full JPEG decode (README "Top-down samples").
Entropy-coded JPEG data cannot be entered in the middle (Huffman codes; each block's DC is coded
against the previous block's) except at a restart marker, where the decoder starts afresh. With a
marker after every MCU, the MCUs of any rectangle, row by row, with the markers renumbered, are
the scan of a valid JPEG of that rectangle: one small decode, no entropy decoding outside it.

The copy is `jpegtran -optimize -copy none -restart 1B` (libjpeg-turbo-progs: the same DCT
coefficients, so the same pixels, which is checked image by image) plus APP15 segments holding

    b"pose-mcu-index\\0" + the byte length of each MCU's data, big-endian uint16, raster order

(split across segments where one would pass 64 KiB). Any other reader sees a normal JPEG with the
original's pixels. An image that cannot be so indexed (progressive or arithmetic coded, an EXIF
rotation that -copy none would drop, not a JPEG) is copied unchanged and decodes in full.

A sample decodes the MCUs under its crop's footprint onto a full-size canvas and warps that with
the crop's own matrix: the crop is the full decode's crop, bit for bit.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pose_workloads.errors import BadInput
from pose_workloads.files import write_atomic
from pose_workloads.media import BadSample, decode_image
from pose_workloads.progress import track

log = logging.getLogger(__name__)

INDEX_TAG = b"pose-mcu-index\x00"
APP15, SOS, DRI, EOI = 0xEF, 0xDA, 0xDD, b"\xff\xd9"
SEQUENTIAL_HUFFMAN = (0xC0, 0xC1)  # SOF0 baseline, SOF1 extended: what the index supports
RESTART_MARKERS = np.arange(0xD0, 0xD8, dtype=np.uint8)
JPEG_SUFFIXES = (".jpg", ".jpeg")
# Bytes of MCU lengths an APP15 segment holds: a segment's length field counts itself (2 bytes).
INDEX_BYTES_PER_SEGMENT = (0xFFFF - 2 - len(INDEX_TAG)) // 2 * 2
# Image px around a polygon that `RegionJpeg.decode` keeps exact: a bilinear warp reads the px after
# each source coordinate, which OpenCV rounds to 1/32 px.
READ_MARGIN = 2.0


class NotIndexable(Exception):
    """Why an image is copied unchanged instead of indexed."""


def _segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each marker segment from SOI up to and including SOS."""
    if data[:2] != b"\xff\xd8":
        raise NotIndexable("not a JPEG")
    segments, at = [], 2
    while True:
        while at < len(data) and data[at] == 0xFF and at + 1 < len(data) and data[at + 1] == 0xFF:
            at += 1  # fill bytes before a marker
        if at + 4 > len(data) or data[at] != 0xFF:
            raise NotIndexable("truncated or malformed marker segments")
        marker = data[at + 1]
        end = at + 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
        if end > len(data):
            raise NotIndexable("truncated marker segment")
        segments.append((marker, at, end))
        if marker == SOS:
            return segments
        at = end


class Layout(NamedTuple):
    width: int
    height: int
    mcu_w: int
    mcu_h: int
    # MCUs a region needs around it for exact pixels: chroma upsampling reads one neighbouring
    # chroma sample, which a region's own edge would replace; none without subsampling.
    context: int


def _layout(data: bytes, segments) -> Layout:
    """How a one-scan sequential Huffman JPEG lays out its MCUs; NotIndexable for any other."""
    frames = [s for s in segments if 0xC0 <= s[0] <= 0xCF and s[0] not in (0xC4, 0xC8, 0xCC)]
    if len(frames) != 1 or frames[0][0] not in SEQUENTIAL_HUFFMAN:
        raise NotIndexable("not sequential Huffman coded (progressive, lossless or arithmetic)")
    start, end = frames[0][1:]
    height, width, components = struct.unpack(">HHB", data[start + 5:start + 10])
    sampling = list(data[start + 11:end:3])
    if not components or len(sampling) != components or not all(s >> 4 and s & 15 for s in sampling):
        raise NotIndexable("malformed frame header")
    if not width or not height:
        raise NotIndexable("no width or height in the frame header (DNL)")
    sos_start = segments[-1][1]
    if data[sos_start + 4] != components:
        raise NotIndexable("more than one scan")
    if components == 1:  # a one-component scan's MCU is one 8x8 block, whatever its sampling
        return Layout(width, height, 8, 8, 0)
    return Layout(width, height, 8 * max(s >> 4 for s in sampling), 8 * max(s & 15 for s in sampling),
                  int(len(set(sampling)) > 1))


def indexed_copy(data: bytes, jpegtran: str = "jpegtran") -> bytes:
    """The region-decodable copy of one JPEG's bytes (same pixels), or NotIndexable."""
    _layout(data, _segments(data))  # refuse early what jpegtran would turn into something else
    run = subprocess.run([jpegtran, "-optimize", "-copy", "none", "-restart", "1B"], input=data,
                         capture_output=True, check=False)
    if run.returncode != 0 or not run.stdout:
        raise NotIndexable(f"jpegtran failed: {run.stderr.decode(errors='replace').strip()[:200]}")
    out = run.stdout
    segments = _segments(out)
    width, height, mcu_w, mcu_h, _ = _layout(out, segments)
    mcus = -(-width // mcu_w) * -(-height // mcu_h)
    scan = segments[-1][2]
    if out[-2:] != EOI:
        raise NotIndexable("jpegtran's output does not end with EOI")
    body = np.frombuffer(out, np.uint8, count=len(out) - 2 - scan, offset=scan)
    ff = np.flatnonzero(body[:-1] == 0xFF)
    markers = ff[(body[ff + 1] & 0xF8) == 0xD0]
    if len(markers) != mcus - 1 or not np.array_equal(body[markers + 1], RESTART_MARKERS[np.arange(mcus - 1) % 8]):
        raise NotIndexable(f"expected {mcus - 1} restart markers in order, found {len(markers)}")
    ends = np.append(markers, len(body))
    lengths = ends - np.concatenate([[0], markers + 2])
    if lengths.max() > 0xFFFF:
        raise NotIndexable("an MCU longer than 64 KiB")
    index = lengths.astype(">u2").tobytes()
    app = b"".join(b"\xff\xef" + struct.pack(">H", 2 + len(INDEX_TAG) + len(chunk)) + INDEX_TAG + chunk
                   for chunk in (index[i:i + INDEX_BYTES_PER_SEGMENT]
                                 for i in range(0, len(index), INDEX_BYTES_PER_SEGMENT)))
    copy = out[:2] + app + out[2:]
    try:  # decoded as training decodes them
        same = np.array_equal(decode_image(data, "original"), decode_image(copy, "copy"))
    except BadSample as e:
        raise NotIndexable(f"the {e.path} cannot be decoded") from None
    if not same:
        raise NotIndexable("the copy's pixels differ from the original's (e.g. an EXIF rotation)")
    return copy


def is_indexed(head: bytes) -> bool:
    """Whether a file starting with `head` (its first 32 bytes will do) carries an MCU index:
    indexed_copy puts it right after SOI."""
    return head[2:4] == b"\xff\xef" and head[6:6 + len(INDEX_TAG)] == INDEX_TAG


class RegionJpeg:
    """An indexed JPEG's bytes, ready to decode rectangles of it. `open` gives None for any other file."""

    def __init__(self, data: bytes, where: str, segments, layout, starts: np.ndarray, lengths: np.ndarray):
        self.data, self.where, self._segments = data, where, segments
        self.width, self.height, self._mcu_w, self._mcu_h, self._context = layout
        self._cols = -(-self.width // self._mcu_w)
        self._starts, self._lengths = starts, lengths

    @classmethod
    def open(cls, data: bytes, where: str) -> RegionJpeg | None:
        """None when `data` carries no MCU index (decode it whole); BadSample when the index does
        not match the data (a damaged file: rerun `pose dataset index_jpegs`)."""
        if not is_indexed(data):
            return None
        try:
            segments = _segments(data)
            layout = _layout(data, segments)
        except NotIndexable as e:
            raise BadSample(where, f"has an MCU index but {e}") from None
        index = b"".join(data[start + 4 + len(INDEX_TAG):end] for marker, start, end in segments
                         if marker == APP15 and data[start + 4:start + 4 + len(INDEX_TAG)] == INDEX_TAG)
        width, height, mcu_w, mcu_h, _ = layout
        damaged = BadSample(where, "its MCU index does not match its data; rerun pose dataset index_jpegs")
        if len(index) != 2 * -(-width // mcu_w) * -(-height // mcu_h):
            raise damaged
        lengths = np.frombuffer(index, ">u2").astype(np.int64)
        steps = lengths + 2  # each MCU's data and the marker after it
        starts = np.cumsum(steps) - steps + segments[-1][2]
        if starts[-1] + lengths[-1] != len(data) - 2 or data[-2:] != EOI:
            raise damaged
        return cls(data, where, segments, layout, starts, lengths)

    def decode(self, polygon: np.ndarray) -> tuple[np.ndarray, int, int]:
        """(RGB pixels, x, y): the rectangle of MCUs under a polygon ((P, 2) image px, e.g. a crop's
        corners mapped back), clipped to the image, and where its top-left px lies in the image.
        Every px within READ_MARGIN of the polygon's bounding box has the full decode's exact
        value: with chroma subsampling, one more MCU on each side is decoded, as upsampling
        reads one neighbouring chroma sample.
        """
        mcu_w, mcu_h, more = self._mcu_w, self._mcu_h, self._context
        (x0, y0), (x1, y1) = polygon.min(axis=0) - READ_MARGIN, polygon.max(axis=0) + READ_MARGIN
        rows = -(-self.height // mcu_h)
        c0 = min(max(int(x0 // mcu_w) - more, 0), self._cols - 1)
        r0 = min(max(int(y0 // mcu_h) - more, 0), rows - 1)
        c1 = max(min(int(x1 // mcu_w) + 1 + more, self._cols), c0 + 1)
        r1 = max(min(int(y1 // mcu_h) + 1 + more, rows), r0 + 1)
        width, height = min(c1 * mcu_w, self.width) - c0 * mcu_w, min(r1 * mcu_h, self.height) - r0 * mcu_h
        header = self._header(width, height)
        # Each MCU row of the rectangle is one run of the file: its MCUs and their markers.
        first = np.arange(r0, r1) * self._cols + c0
        last = first + (c1 - c0 - 1)
        view = memoryview(self.data)
        runs = [view[a:b] for a, b in zip(self._starts[first].tolist(),
                                           (self._starts[last] + self._lengths[last]).tolist())]
        jpeg = bytearray(header)
        jpeg += b"\xff\xd0".join(runs)
        jpeg += EOI
        # Renumber every restart marker: marker k follows the rectangle's MCU k.
        mcus = (first[:, None] + np.arange(c1 - c0)).ravel()
        ends = len(header) + np.cumsum(self._lengths[mcus] + 2)[:-1] - 1
        np.frombuffer(jpeg, np.uint8)[ends] = RESTART_MARKERS[np.arange(len(ends)) % 8]
        pixels = decode_image(jpeg, self.where)
        if pixels.shape[:2] != (height, width):
            raise BadSample(self.where, "a region decoded to the wrong size; rerun pose dataset index_jpegs")
        return pixels, c0 * mcu_w, r0 * mcu_h

    def decode_onto(self, canvas: np.ndarray, polygon: np.ndarray) -> np.ndarray:
        """The image as a (height, width, 3) view of `canvas` (uint8, at least that big) whose px
        within READ_MARGIN of the polygon's box are the full decode's; the rest keeps what the
        canvas held. A bilinear warp of it whose output maps into the polygon reads the same
        values as from the full decode, at the same coordinates: the same bits out."""
        pixels, x, y = self.decode(polygon)
        image = canvas[:self.height, :self.width]
        image[y:y + pixels.shape[0], x:x + pixels.shape[1]] = pixels
        return image

    def _header(self, width: int, height: int) -> bytes:
        """The file's tables, frame and scan header for a width x height image of one-MCU restart intervals."""
        header = bytearray(b"\xff\xd8")
        for marker, start, end in self._segments:
            if 0xE0 <= marker <= 0xEF or marker == DRI:  # APPn (the index among them), the old interval
                continue
            segment = bytearray(self.data[start:end])
            if marker in SEQUENTIAL_HUFFMAN:
                segment[5:9] = struct.pack(">HH", height, width)
            elif marker == SOS:
                header += b"\xff\xdd\x00\x04\x00\x01"
            header += segment
        return bytes(header)


# ------------------------------------------------------------------------------------------------
# pose dataset index_jpegs
# ------------------------------------------------------------------------------------------------

def _index_one(source: Path, target: Path, jpegtran: str) -> tuple[str, str]:
    """Write target from source: ("indexed", ""), ("copied", why not indexed) or ("unreadable", why)."""
    try:
        data = source.read_bytes()
    except OSError as e:
        return "unreadable", e.strerror or str(e)
    try:
        if source.suffix.lower() not in JPEG_SUFFIXES:
            raise NotIndexable("not a .jpg/.jpeg file")
        write_atomic(target, indexed_copy(data, jpegtran))
        return "indexed", ""
    except NotIndexable as e:
        write_atomic(target, data)
        return "copied", str(e)


def main(args) -> int:
    """`pose dataset index_jpegs -i IMAGES -o OUT [--workers N]`."""
    source, out = Path(args.input), Path(args.output)
    jpegtran = shutil.which("jpegtran")
    if jpegtran is None:
        raise BadInput("jpegtran: not found on PATH; install libjpeg-turbo-progs (apt-get install "
                       "libjpeg-turbo-progs), or rebuild the pose image, which has it")
    if args.workers < 0:
        raise BadInput(f"--workers {args.workers}: give 0 (one per core) or more processes")
    if not source.is_dir():
        raise BadInput(f"{source}: not a directory; --input is the folder of images to index")
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise BadInput(f"{out}: inside --input {source}; choose an --output folder outside it (the "
                       "originals are never rewritten)")
    files = sorted(p for p in source.rglob("*") if p.is_file())
    if not files:
        raise BadInput(f"{source}: no files; check --input")
    # A rerun skips what is there: each file is written to a temp name and renamed when whole.
    todo = [p for p in files if not (out / p.relative_to(source)).exists()]
    if not todo:
        print(f"{out}: nothing to do, all {len(files)} files are there already")
        return 0
    for path in {out / p.relative_to(source).parent for p in todo}:
        path.mkdir(parents=True, exist_ok=True)
    outcomes: Counter = Counter()
    with ProcessPoolExecutor(args.workers or os.cpu_count() or 1) as pool:
        results = pool.map(_index_one, todo, [out / p.relative_to(source) for p in todo],
                           [jpegtran] * len(todo), chunksize=16)
        for path, (outcome, reason) in zip(todo, track(results, len(todo), "index_jpegs")):
            outcomes[outcome, reason] += 1
            if outcome != "indexed":
                log.info("%s: %s: %s", path, outcome, reason)
    there = f" ({len(files) - len(todo)} were there already)" if len(files) > len(todo) else ""
    print(f"{out}: {outcomes['indexed', '']} of {len(todo)} files indexed for region decoding{there}")
    for (outcome, reason), count in outcomes.most_common():
        if outcome == "copied":
            print(f"  {count} copied unchanged (they decode in full): {reason}")
        elif outcome == "unreadable":
            print(f"  {count} not copied, unreadable: {reason}; fix their permissions and rerun")
    return 0

"""One bad-data policy for every action: what training skips, evaluation, validation and
inference skip too, and say so the same way.

A bad annotation (data/coco.py `load_coco`) or an unreadable image (media.py `BadSample`) is
skipped and counted by reason, never replaced by another sample (evaluation must not score one
image twice) and never fatal on its own: one corrupt image in a folder of thousands does not
stop the others. Each action prints one summary line and writes the counts with its results
(`metrics.json` "skipped", `detections.json` metadata "skipped", simple-pose inference's
`inference_summary.json`). Nothing usable left at all is still BadInput.
"""

from __future__ import annotations

import sys
from collections import Counter


class Skips:
    """Counts of skipped inputs by reason, with the first example of each."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.first: dict[str, str] = {}

    def add(self, reason: str, example: str) -> None:
        self.counts[reason] += 1
        self.first.setdefault(reason, example)

    def update(self, counts: Counter | dict[str, int]) -> None:
        """Counts found elsewhere (load_coco's annotation skips, a worker's images)."""
        self.counts.update(counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts.most_common())

    def line(self, what: str, total: int) -> str:
        """'skipped 2 of 40 images: 1 cannot be decoded as an image (first: a.jpg), ...'."""
        parts = [f"{n} {reason}" + (f" (first: {self.first[reason]})" if reason in self.first else "")
                 for reason, n in self.counts.most_common()]
        return f"skipped {self.total} of {total} {what}: " + "; ".join(parts)

    def report(self, what: str, total: int) -> None:
        """Print the summary line (stderr) when anything was skipped."""
        if self.counts:
            print(self.line(what, total), file=sys.stderr, flush=True)

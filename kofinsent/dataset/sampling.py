"""The seed recipe's balanced sample: ``per_label`` posts drawn at random from each label.

Determinism: the input is sorted by (code, posted_at, nid) before any draw and every draw comes from a numpy
``Generator`` seeded with ``[seed, stream]``, so the same db and seed give the same rows on any machine. Sampling and
splitting use different streams: changing the split options never changes which posts are sampled.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from kofinsent.dataset.errors import TooFewPostsError
from kofinsent.labels import LABELS

SAMPLE_STREAM = 0
SPLIT_STREAM = 1


def rng_for(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def sort_posts(frame: pd.DataFrame) -> pd.DataFrame:
    """The canonical row order every random step starts from."""
    return frame.sort_values(["code", "posted_at", "nid"], kind="stable").reset_index(drop=True)


def sample_per_label(frame: pd.DataFrame, per_label: int, seed: int, allow_fewer: bool = False
                     ) -> tuple[pd.DataFrame, dict[str, object]]:
    """Draw ``per_label`` rows of each label without replacement (``per_label == 0`` keeps every row).

    Fewer rows than asked in any label raises :class:`TooFewPostsError` with the available counts, unless
    ``allow_fewer``: then each label gives as many as the smaller label has, so the sample stays balanced.
    ``frame`` must be in :func:`sort_posts` order; the result keeps that order.
    """
    if per_label < 0:
        raise ValueError("per_label must be >= 0")
    label = frame["label"].to_numpy(dtype=object)
    available = {lab: int((label == lab).sum()) for lab in LABELS}
    info: dict[str, object] = {"requested_per_label": per_label, "available": available}
    if per_label == 0:
        info["taken_per_label"] = dict(available)
        return frame, info
    short = min(available.values())
    if short < per_label and not allow_fewer:
        raise TooFewPostsError(per_label, available)
    n = min(per_label, short)
    rng = rng_for(seed, SAMPLE_STREAM)
    chosen = [rng.choice(np.flatnonzero(label == lab), size=n, replace=False) for lab in LABELS]
    rows = np.sort(np.concatenate(chosen))
    info["taken_per_label"] = {lab: n for lab in LABELS}
    return frame.iloc[rows].reset_index(drop=True), info

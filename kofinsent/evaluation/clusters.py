"""Inference when a test item has several predictions (few-shot seeds, sentiment iterations, training seeds).

The unit of the sample is the test item, not the prediction: 15 sentiment iterations on 300 items are 300
observations, and an interval at n = 4,500 is about 2.6 times too narrow. So, with more than one prediction per item:

- intervals are percentile bootstraps over items, each resampled together with all of its predictions
  (:func:`cluster_ci`; ``resamples`` and ``seed`` are recorded next to the numbers);
- tests that need one outcome per item (binomial tests, McNemar) use a majority vote over the item's predictions
  (:func:`vote`); a tie goes to whichever tied label the item's earliest prediction gave (first few-shot seed, first
  iteration), which is unbiased when repeats are exchangeable and keeps the vote deterministic.

With one prediction per item nothing changes: callers keep the exact Wilson / binomial / McNemar numbers.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
TIE_RULE = ("majority vote over the item's predictions; a tie goes to the tied label of the item's earliest "
            "prediction (first few-shot seed / first iteration)")


@dataclass(frozen=True)
class Bootstrap:
    """How cluster intervals are drawn; recorded in metrics.json so that every interval can be redrawn."""

    resamples: int = RESAMPLES
    seed: int = 0

    def __post_init__(self) -> None:
        if self.resamples < 2000:
            raise ValueError(f"bootstrap resamples = {self.resamples}: use at least 2000 for a 95% interval")


@dataclass(frozen=True)
class Clusters:
    """Records grouped by item, in first-appearance order: ``index[j]`` is the item position of record ``j``."""

    index: np.ndarray
    keys: list[Hashable]

    @classmethod
    def of(cls, ids: Sequence[Hashable]) -> Clusters:
        pos: dict[Hashable, int] = {}
        index = np.fromiter((pos.setdefault(i, len(pos)) for i in ids), dtype=np.int64, count=len(ids))
        return cls(index, list(pos))

    @property
    def n_items(self) -> int:
        return len(self.keys)

    @property
    def n_records(self) -> int:
        return len(self.index)

    @property
    def repeated(self) -> bool:
        """More than one record for some item: the case in which records are not independent."""
        return self.n_records > self.n_items

    def sums(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        """Per-item sums of a per-record quantity."""
        return np.bincount(self.index, weights=np.asarray(values, dtype=float), minlength=self.n_items)


def cluster_ci(per_item: Sequence[np.ndarray], statistic: Callable[..., np.ndarray],
               boot: Bootstrap = Bootstrap()) -> list[float] | None:
    """Percentile interval of ``statistic`` over item resamples.

    ``per_item``: arrays of length n_items (per-item sums, e.g. correct and count). ``statistic(*arrays, axis=-1)``
    receives them resampled, shape ``(..., n_items)``, and reduces the last axis. A resample on which the statistic is
    undefined (NaN, e.g. no valid prediction drawn) makes the interval undefined: None, never a silent subset."""
    from scipy.stats import bootstrap

    n = len(per_item[0])
    if n < 2:
        return None
    cols = [np.asarray(a, dtype=float) for a in per_item]

    def on_indices(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return statistic(*(c[idx] for c in cols), axis=axis)

    # Resampling item positions resamples each item with all of its predictions (the per-item sums carry them).
    # A NaN resample makes scipy warn (in BCa's words, even for percentile) and return NaN: reported as None below.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap((np.arange(n),), on_indices, n_resamples=boot.resamples, batch=200, vectorized=True,
                        method="percentile", confidence_level=LEVEL, rng=np.random.default_rng(boot.seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        return None
    return [low, high]


def ratio(num: np.ndarray, den: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pooled rate of the resampled items: sum of numerators / sum of denominators (NaN where no denominator)."""
    d = den.sum(axis=axis)
    return np.where(d > 0, num.sum(axis=axis) / np.where(d > 0, d, 1), np.nan)


def ratio_ci(clusters: Clusters, hits: Sequence[bool] | np.ndarray, counted: Sequence[bool] | np.ndarray | None = None,
             boot: Bootstrap = Bootstrap()) -> list[float] | None:
    """Cluster interval of a pooled rate: sum(hits) / sum(counted) over records (``counted`` defaults to all),
    e.g. accuracy (hits = correct) or accuracy over valid predictions (counted = valid)."""
    hits = np.asarray(hits, dtype=float)
    counted = np.ones_like(hits) if counted is None else np.asarray(counted, dtype=float)
    if counted.sum() == 0:
        return None
    return cluster_ci([clusters.sums(hits * counted), clusters.sums(counted)], ratio, boot)


def vote(clusters: Clusters, labels: Sequence[Any]) -> list[Any]:
    """One label per item (in ``clusters.keys`` order) by :data:`TIE_RULE`."""
    counts: list[dict[Any, int]] = [{} for _ in range(clusters.n_items)]
    for i, y in zip(clusters.index.tolist(), labels):
        counts[i][y] = counts[i].get(y, 0) + 1  # dict order = first appearance: the earliest tied label wins
    return [max(c, key=c.__getitem__) for c in counts]


def first_per_item(clusters: Clusters, values: Sequence[Any]) -> list[Any]:
    """The first record's value for each item (e.g. its gold label, the same on every record of an item)."""
    out: list[Any] = [None] * clusters.n_items
    seen = np.zeros(clusters.n_items, dtype=bool)
    for i, v in zip(clusters.index.tolist(), values):
        if not seen[i]:
            out[i], seen[i] = v, True
    return out


def inference_note(clusters: Clusters, boot: Bootstrap) -> dict[str, Any]:
    """What ``n`` counts and how intervals and tests were made, for metrics.json and the report's methods."""
    if not clusters.repeated:
        return {"n_counts": "test items (one prediction each)", "interval": "wilson", "tests_on": "predictions",
                "bootstrap_resamples": None, "bootstrap_seed": None}
    return {"n_counts": "distinct test items; n_predictions counts every prediction",
            "interval": "cluster_bootstrap_percentile", "tests_on": "item_majority_vote", "tie_rule": TIE_RULE,
            "bootstrap_resamples": boot.resamples, "bootstrap_seed": boot.seed}

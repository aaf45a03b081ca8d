"""Train/test splits: the seed's random split plus chronological, per-stock stratified and day-grouped variants.

* ``random``: a uniformly random ``test_size`` fraction (the seed: 1 %). ``stratify_stock`` allocates the test rows to
  every (stock, label) stratum in proportion (largest remainder, so the total is exact).
* ``chronological``: the latest ``test_size`` fraction by ``posted_at``, or with ``cutoff`` every post on/after that KST
  day. Posts sharing the boundary instant all go to test, so the last train post is strictly older than the first
  test post. ``stratify_stock`` applies the fraction within each stock (no overlap within a stock, but across stocks
  a test post may predate another stock's train post: that variant is not globally time-ordered).
* ``group_by_day``: whole KST calendar days (of ``posted_at``) go to one side; the number of test days is the one
  whose row count is closest to the target.

``stratify_stock`` and ``group_by_day`` cannot be combined: a day holds posts of several stocks, so matching each
stock's share would have to put some days on both sides.
"""
from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from kofinsent.dataset.errors import DatasetConfigError, EmptyDatasetError
from kofinsent.dataset.sampling import SPLIT_STREAM, rng_for

SPLITS = ("random", "chronological")
_DAY_S = 86_400


def check_split_options(split: str, test_size: float, cutoff: date | None, stratify_stock: bool,
                        group_by_day: bool) -> None:
    if split not in SPLITS:
        raise DatasetConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if cutoff is not None and split != "chronological":
        raise DatasetConfigError("--cutoff needs --split chronological")
    if cutoff is not None and stratify_stock:
        raise DatasetConfigError("--stratify-stock has no effect with --cutoff (one date cuts every stock); drop one")
    if stratify_stock and group_by_day:
        raise DatasetConfigError("--stratify-stock and --group-by-day cannot be combined: a day holds posts of several "
                                 "stocks, so matching each stock's share would put some days on both sides")
    if cutoff is None and not 0.0 < test_size < 1.0:
        raise DatasetConfigError(f"--test-size must be between 0 and 1 (exclusive), got {test_size}")


def split_frame(frame: pd.DataFrame, split: str, test_size: float, seed: int, cutoff: date | None = None,
                stratify_stock: bool = False, group_by_day: bool = False) -> tuple[np.ndarray, dict[str, object]]:
    """Boolean mask of test rows, and what was done (for the datasheet).

    ``frame`` needs code, label and posted_at (datetime64[s]) and must be in canonical (code, posted_at, nid)
    order for the random variants to be reproducible.
    """
    check_split_options(split, test_size, cutoff, stratify_stock, group_by_day)
    n = len(frame)
    info: dict[str, object] = {"split": split, "test_size": None if cutoff else test_size,
                               "cutoff": cutoff.isoformat() if cutoff else None,
                               "stratify_stock": stratify_stock, "group_by_day": group_by_day}
    if n < 2:
        raise EmptyDatasetError(f"{n} labelled post(s) after sampling: a train/test split needs at least 2")
    secs = frame["posted_at"].to_numpy().astype("datetime64[s]").view(np.int64)
    days = secs // _DAY_S
    target = min(max(int(round(n * test_size)), 1), n - 1) if cutoff is None else None
    info["test_target"] = target

    if split == "random":
        rng = rng_for(seed, SPLIT_STREAM)
        info["rng"] = [seed, SPLIT_STREAM]
        if group_by_day:
            is_test = _random_days(days, target, rng)
        elif stratify_stock:
            strata = pd.MultiIndex.from_arrays([frame["code"].astype(str), frame["label"].astype(str)])
            is_test = _random_stratified(pd.factorize(strata, sort=True)[0], target, rng)
        else:
            is_test = np.zeros(n, dtype=bool)
            is_test[rng.permutation(n)[:target]] = True
    elif cutoff is not None:
        is_test = days >= (np.datetime64(cutoff, "D") - np.datetime64(0, "D")).astype(np.int64)
    elif group_by_day:
        is_test = _latest_days(days, target)
    elif stratify_stock:
        codes = pd.factorize(frame["code"].astype(str), sort=True)[0]
        is_test = np.zeros(n, dtype=bool)
        alloc = _largest_remainder(np.bincount(codes), target)
        for c, k in enumerate(alloc):
            rows = np.flatnonzero(codes == c)
            if k > 0:
                is_test[rows] = _latest(secs[rows], int(k))
    else:
        is_test = _latest(secs, target)

    n_test = int(is_test.sum())
    if n_test == 0 or n_test == n:
        side = "test" if n_test == 0 else "train"
        why = (f"every post is {'before' if n_test == 0 else 'on/after'} the cutoff {cutoff}" if cutoff
               else "all posts share one instant/day")
        raise EmptyDatasetError(f"the {side} split would be empty ({why}); nothing written")
    if split == "chronological" and not stratify_stock:
        info["train_last_posted_at"] = str(np.datetime64(int(secs[~is_test].max()), "s")) + "+09:00"
        info["test_first_posted_at"] = str(np.datetime64(int(secs[is_test].min()), "s")) + "+09:00"
    return is_test, info


def _latest(secs: np.ndarray, k: int) -> np.ndarray:
    """The k latest rows, plus every row tied with the k-th latest instant."""
    boundary = np.sort(secs)[len(secs) - k]
    return secs >= boundary


def _latest_days(days: np.ndarray, target: int) -> np.ndarray:
    uniq, counts = np.unique(days, return_counts=True)
    if len(uniq) < 2:
        raise EmptyDatasetError("all posts fall on one day: a day-grouped split needs at least 2 days")
    from_end = np.cumsum(counts[::-1])[:-1]  # rows in the latest 1, 2, ... days (at least one day left for train)
    k = int(np.argmin(np.abs(from_end - target))) + 1
    return days >= uniq[len(uniq) - k]


def _random_days(days: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    uniq, inv, counts = np.unique(days, return_inverse=True, return_counts=True)
    if len(uniq) < 2:
        raise EmptyDatasetError("all posts fall on one day: a day-grouped split needs at least 2 days")
    perm = rng.permutation(len(uniq))
    cum = np.cumsum(counts[perm])[:-1]
    k = int(np.argmin(np.abs(cum - target))) + 1
    test_day = np.zeros(len(uniq), dtype=bool)
    test_day[perm[:k]] = True
    return test_day[inv]


def _random_stratified(stratum: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    sizes = np.bincount(stratum)
    alloc = _largest_remainder(sizes, target)
    order = np.lexsort((rng.random(len(stratum)), stratum))
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    rank = np.arange(len(stratum)) - starts[stratum[order]]
    is_test = np.zeros(len(stratum), dtype=bool)
    is_test[order[rank < alloc[stratum[order]]]] = True
    return is_test


def _largest_remainder(sizes: np.ndarray, total: int) -> np.ndarray:
    """Integer shares of ``total`` proportional to ``sizes``, summing exactly to ``total`` (ties: lower index)."""
    sizes = sizes.astype(np.int64)
    scaled = sizes * total  # integer arithmetic: float quotas can floor 3 to 2.999...
    alloc, rem = np.divmod(scaled, int(sizes.sum()))
    left = total - int(alloc.sum())
    if left > 0:
        alloc[np.argsort(-rem, kind="stable")[:left]] += 1
    return np.minimum(alloc, sizes)

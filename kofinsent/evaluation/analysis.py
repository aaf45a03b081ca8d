"""Error analysis of one evaluation run (issue 13, point 5): pure functions, lists in and dicts out, no file I/O.

Inputs are what the run directories hold: ``records`` are predictions.jsonl lines (``id``, ``gold``, ``pred``, and by
method ``loglik``, ``valid``, ``sentiment``), ``items`` the dataset's test records by id (``code``, ``posted_at``,
``move_date``, ``return``) and ``returns`` the dataset's returns.jsonl lines (``code``, ``date``, ``return``).

- :func:`group_accuracy`: accuracy per stock or per year with n and a 95% interval: Wilson when the run has one
  prediction per item, else the cluster bootstrap over items (:mod:`kofinsent.evaluation.clusters`).
- :func:`calibration`: reliability bins and the expected calibration error of log-likelihood runs. Confidence = the
  predicted answer's probability under the two-way softmax of the two continuations' log-likelihoods; equal-width
  bins on [0.5, 1] (:data:`ECE_BINS` of them; a confidence below 0.5, a prediction that is not the argmax, falls in
  the first bin); ECE = sum over bins of (predictions in bin / all) x |accuracy - mean confidence|.
- :func:`most_confident_wrong`: the most confidently wrong items per stock (or year).
- :func:`stock_days`, :func:`day_correlations`, :func:`market_link`: per stock and trading day (the ``move_date``
  session) the share of predictions [상승] and the mean valid sentiment, against that session's return and the
  stock's next session's return; Pearson and Spearman with percentile bootstrap intervals over stock-days.
- :func:`holm`: Holm-adjusted p-values of a family (statsmodels ``multipletests``).
"""
from __future__ import annotations

import math
import warnings
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kofinsent.evaluation.clusters import Bootstrap, Clusters, ratio_ci
from kofinsent.labels import DOWN, UP

ECE_BINS = 10
CONFIDENCE_RANGE = (0.5, 1.0)  # the predicted answer's probability of a two-way choice is at least 0.5
DEFAULT_BOOT = Bootstrap()     # 2000 resamples, seed 0 (frozen: safe as a default)
MIN_DAYS = 3                   # fewer stock-days than this: no correlation
MAX_UNDEFINED = 0.01           # more bootstrap resamples with an undefined correlation than this: no interval
BINNING = (f"{ECE_BINS} equal-width bins of the confidence on [{CONFIDENCE_RANGE[0]}, {CONFIDENCE_RANGE[1]}] "
           "(each [lo, hi), the last [lo, 1])")
X_MEASURES = {"share_up": "share of predictions [상승]", "mean_sentiment": "mean valid sentiment"}
Y_MEASURES = {"ret": "return of the move_date session", "ret_next": "return of the stock's next session"}


def _interval_name(repeated: bool) -> str:
    return "cluster_bootstrap_percentile" if repeated else "wilson"


def group_of(item: Mapping[str, Any] | None, by: str) -> str | None:
    """The group of a test record: its stock code (``by="code"``) or the year of ``posted_at`` (``by="year"``)."""
    if item is None:
        return None
    if by == "code":
        return str(item["code"]) if item.get("code") else None
    if by == "year":
        return str(item["posted_at"])[:4] if item.get("posted_at") else None
    raise ValueError(f"group by {by!r}: expected 'code' or 'year'")


def is_correct(r: Mapping[str, Any]) -> bool:
    """Invalid and abstaining predictions count as wrong, as in metrics.json."""
    return r.get("pred") is not None and r.get("pred") == r.get("gold")


def group_accuracy(records: Sequence[Mapping[str, Any]], items: Mapping[str, Mapping[str, Any]], by: str,
                   boot: Bootstrap = DEFAULT_BOOT) -> dict[str, dict[str, Any]]:
    """Per group (sorted): ``n`` items, ``n_predictions``, ``correct``, ``accuracy`` (correct / predictions) and
    ``ci95``. The interval follows the run: Wilson over the group's predictions when every item of the run has one
    prediction; the cluster bootstrap over the group's items (``boot``) when some item has several. Records whose id is
    not among ``items`` are left out."""
    repeated = Clusters.of([str(r.get("id")) for r in records]).repeated
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        g = group_of(items.get(str(r.get("id"))), by)
        if g is not None:
            groups[g].append(r)
    out: dict[str, dict[str, Any]] = {}
    for g in sorted(groups):
        recs = groups[g]
        ok = [is_correct(r) for r in recs]
        clusters = Clusters.of([str(r.get("id")) for r in recs])
        k, m = sum(ok), len(ok)
        if repeated:
            ci = ratio_ci(clusters, ok, boot=boot)
        else:
            from kofinsent.evaluation.metrics import wilson_ci

            ci = wilson_ci(k, m)
        out[g] = {"n": clusters.n_items, "n_predictions": m, "correct": k, "accuracy": k / m, "ci95": ci,
                  "interval": _interval_name(repeated)}
    return out


# -- calibration ---------------------------------------------------------------------------------------------------
def up_probability(loglik: Sequence[float]) -> float:
    """P([상승]) under the two-way softmax of (loglik([상승]), loglik([하락])), computed without overflow."""
    d = float(loglik[0]) - float(loglik[1])
    if d >= 0:
        return 1.0 / (1.0 + math.exp(-d))
    e = math.exp(d)
    return e / (1.0 + e)


def confidence(r: Mapping[str, Any]) -> float | None:
    """The predicted answer's softmax probability; None without two log-likelihoods or a label prediction."""
    ll = r.get("loglik")
    if not (isinstance(ll, (list, tuple)) and len(ll) == 2 and all(isinstance(x, (int, float)) for x in ll)):
        return None
    p = up_probability(ll)
    return p if r.get("pred") == UP else 1.0 - p if r.get("pred") == DOWN else None


def calibration(records: Sequence[Mapping[str, Any]], bins: int = ECE_BINS) -> dict[str, Any]:
    """Reliability bins and ECE over every prediction with a confidence (see the module docstring). ``n``: distinct
    items, ``n_predictions``: predictions binned; ``mce``: the largest |accuracy - confidence| of a non-empty bin.
    Empty input: the counts are 0 and the rest None."""
    lo, hi = CONFIDENCE_RANGE
    scored = [(c, is_correct(r), str(r.get("id"))) for r in records if (c := confidence(r)) is not None]
    table = [{"lo": lo + (hi - lo) * b / bins, "hi": lo + (hi - lo) * (b + 1) / bins, "n": 0, "correct": 0,
              "confidence_sum": 0.0} for b in range(bins)]
    for c, ok, _ in scored:
        b = min(bins - 1, max(0, int((c - lo) / (hi - lo) * bins)))
        table[b]["n"] += 1
        table[b]["correct"] += ok
        table[b]["confidence_sum"] += c
    n = len(scored)
    out_bins, ece, gaps = [], 0.0, []
    for t in table:
        acc = t["correct"] / t["n"] if t["n"] else None
        conf = t["confidence_sum"] / t["n"] if t["n"] else None
        out_bins.append({"lo": t["lo"], "hi": t["hi"], "n": t["n"], "accuracy": acc, "confidence": conf})
        if t["n"]:
            gap = abs(acc - conf)  # type: ignore[operator]
            gaps.append(gap)
            ece += t["n"] / n * gap
    return {
        "n": len({i for _, _, i in scored}), "n_predictions": n, "bins": out_bins,
        "ece": ece if n else None, "mce": max(gaps) if gaps else None,
        "mean_confidence": math.fsum(c for c, _, _ in scored) / n if n else None,
        "accuracy": sum(ok for _, ok, _ in scored) / n if n else None,
        "binning": BINNING if bins == ECE_BINS else f"{bins} equal-width bins on [{lo}, {hi}]",
    }


# -- examples ------------------------------------------------------------------------------------------------------
def most_confident_wrong(records: Sequence[Mapping[str, Any]], items: Mapping[str, Mapping[str, Any]],
                         scores: Sequence[float | None], n: int, by: str = "code") -> dict[str, list[int]]:
    """Per group (sorted), the positions in ``records`` of the ``n`` most confidently wrong items: wrong predictions
    with a score, highest score first (ties by id), one per item (a k-shot seed or sentiment iteration repeats an
    item: its most confident wrong prediction stands for it)."""
    if len(scores) != len(records):
        raise ValueError(f"scores and records differ in length: {len(scores)} vs {len(records)}")
    wrong: dict[str, list[tuple[float, str, int]]] = defaultdict(list)
    for j, (r, s) in enumerate(zip(records, scores)):
        g = group_of(items.get(str(r.get("id"))), by)
        if g is not None and s is not None and not is_correct(r):
            wrong[g].append((-float(s), str(r.get("id")), j))
    out: dict[str, list[int]] = {}
    for g in sorted(wrong):
        picked, seen = [], set()
        for _, i, j in sorted(wrong[g]):
            if i not in seen:
                seen.add(i)
                picked.append(j)
            if len(picked) == n:
                break
        out[g] = picked
    return out


# -- market link ---------------------------------------------------------------------------------------------------
def _next_after(calendar: dict[str, list[str]], lines: dict[tuple[str, str], Mapping[str, Any]], code: str,
                day: str) -> Mapping[str, Any] | None:
    dates = calendar.get(code) or []
    k = bisect_right(dates, day)
    return lines[(code, dates[k])] if k < len(dates) else None


def stock_days(records: Sequence[Mapping[str, Any]], items: Mapping[str, Mapping[str, Any]],
               returns: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per (stock, move_date) of the scored test items, sorted: ``n_titles`` (items), ``n_predictions``,
    ``share_up`` (predictions [상승] / all predictions of the day; invalid ones count in the denominator),
    ``mean_sentiment`` (mean over the day's valid sentiment replies; None without any), ``ret`` (the move_date
    session's return, from the test records) and, given ``returns``, ``next_date`` / ``ret_next`` (the stock's next
    traded session after move_date in returns.jsonl; None after the last stored day)."""
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        item = items.get(str(r.get("id")))
        if item is None or not item.get("code") or not item.get("move_date"):
            continue
        key = (str(item["code"]), str(item["move_date"]))
        a = acc.setdefault(key, {"ids": set(), "n": 0, "up": 0, "sent": [], "ret": item.get("return")})
        a["ids"].add(str(r.get("id")))
        a["n"] += 1
        a["up"] += r.get("pred") == UP
        if r.get("valid") and isinstance(r.get("sentiment"), (int, float)):
            a["sent"].append(float(r["sentiment"]))
    calendar: dict[str, list[str]] = defaultdict(list)
    lines: dict[tuple[str, str], Mapping[str, Any]] = {}
    for line in returns or []:
        calendar[str(line["code"])].append(str(line["date"]))
        lines[(str(line["code"]), str(line["date"]))] = line
    for dates in calendar.values():
        dates.sort()
    rows = []
    for (code, day), a in sorted(acc.items()):
        row = {"code": code, "date": day, "n_titles": len(a["ids"]), "n_predictions": a["n"],
               "share_up": a["up"] / a["n"], "mean_sentiment": math.fsum(a["sent"]) / len(a["sent"]) if a["sent"]
               else None, "ret": a["ret"] if isinstance(a["ret"], (int, float)) else None}
        if returns is not None:
            nxt = _next_after(calendar, lines, code, day)
            row["next_date"] = None if nxt is None else str(nxt["date"])
            row["ret_next"] = nxt.get("return") if nxt is not None else None
        rows.append(row)
    return rows


def _pearson(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson r along ``axis``; NaN where either side has no spread."""
    xc = x - x.mean(axis=axis, keepdims=True)
    yc = y - y.mean(axis=axis, keepdims=True)
    den = np.sqrt((xc * xc).sum(axis=axis) * (yc * yc).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=axis) / den
    return np.where(den > 0, np.clip(r, -1.0, 1.0), np.nan)


def _resampled_ranks(codes: np.ndarray, n_values: int) -> np.ndarray:
    """Average ranks (1-based, ties averaged, as ``scipy.stats.rankdata``) within each row of ``codes``, the
    positions of the resampled values among the sorted distinct values of the sample: a count per distinct value
    replaces a sort per resample."""
    k = codes.shape[0]
    flat = (codes + n_values * np.arange(k)[:, None]).ravel()
    counts = np.bincount(flat, minlength=k * n_values).reshape(k, n_values)
    below = np.cumsum(counts, axis=1) - counts
    return np.take_along_axis(below + (counts + 1) / 2.0, codes, axis=1)


def correlation(x: Sequence[float | None], y: Sequence[float | None], boot: Bootstrap = DEFAULT_BOOT,
                min_n: int = MIN_DAYS, chunk: int = 250) -> dict[str, Any]:
    """Pearson r and Spearman rho (scipy) over the pairs where both are numbers, with 95% percentile bootstrap
    intervals: ``boot.resamples`` resamples of the pairs with replacement (``numpy.random.default_rng(boot.seed)``,
    drawn ``chunk`` resamples at a time, an index matrix each). A resample without spread on a side has no
    correlation: those are counted (``*_undefined``) and left out; more than :data:`MAX_UNDEFINED` of them, or fewer
    than ``min_n`` pairs, and there is no interval (None)."""
    from scipy.stats import pearsonr, spearmanr

    pairs = [(float(a), float(b)) for a, b in zip(x, y)
             if isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isfinite(a) and math.isfinite(b)]
    n = len(pairs)
    out: dict[str, Any] = {"n": n, "pearson": None, "pearson_ci95": None, "spearman": None, "spearman_ci95": None,
                           "pearson_undefined": None, "spearman_undefined": None,
                           "resamples": boot.resamples, "seed": boot.seed}
    if n < min_n:
        return out
    xs, ys = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    with warnings.catch_warnings():  # a constant side: scipy warns and returns NaN -> None
        warnings.simplefilter("ignore")
        out["pearson"] = _finite(pearsonr(xs, ys).statistic)
        out["spearman"] = _finite(spearmanr(xs, ys).statistic)
    (ux, cx), (uy, cy) = (np.unique(v, return_inverse=True) for v in (xs, ys))
    rng = np.random.default_rng(boot.seed)
    rs, rhos = [], []
    done = 0
    while done < boot.resamples:
        k = min(chunk, boot.resamples - done)
        idx = rng.integers(0, n, size=(k, n))  # row b: the stock-days of resample b
        rs.append(_pearson(xs[idx], ys[idx]))
        rhos.append(_pearson(_resampled_ranks(cx[idx], len(ux)), _resampled_ranks(cy[idx], len(uy))))
        done += k
    for name, values in (("pearson", np.concatenate(rs)), ("spearman", np.concatenate(rhos))):
        defined = values[np.isfinite(values)]
        out[f"{name}_undefined"] = int(len(values) - len(defined))
        if out[name] is not None and len(values) - len(defined) <= MAX_UNDEFINED * len(values):
            low, high = np.percentile(defined, [2.5, 97.5])
            out[f"{name}_ci95"] = [float(low), float(high)]
    return out


def _finite(v: Any) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def day_correlations(days: Sequence[Mapping[str, Any]], x: str = "share_up", boot: Bootstrap = DEFAULT_BOOT
                     ) -> dict[str, Any]:
    """:func:`correlation` of ``x`` (a :data:`X_MEASURES` key) against ``ret`` and, where the rows have it,
    ``ret_next``: ``{"pooled": {y: ...}, "by_stock": {code: {y: ...}}}`` (every stock-day of every stock resampled
    together for the pooled one)."""
    if x not in X_MEASURES:
        raise ValueError(f"x = {x!r}: expected one of {', '.join(X_MEASURES)}")
    ys = [y for y in Y_MEASURES if any(y in d for d in days)]

    def corr(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {y: correlation([d.get(x) for d in rows], [d.get(y) for d in rows], boot) for y in ys}

    by_stock: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for d in days:
        by_stock[str(d["code"])].append(d)
    return {"x": x, "pooled": corr(days), "by_stock": {c: corr(rows) for c, rows in sorted(by_stock.items())}}


def market_link(records: Sequence[Mapping[str, Any]], items: Mapping[str, Mapping[str, Any]],
                returns: Sequence[Mapping[str, Any]] | None = None, x: str = "share_up",
                boot: Bootstrap = DEFAULT_BOOT) -> dict[str, Any]:
    """:func:`day_correlations` of :func:`stock_days`: the market link of one run, from its files' contents."""
    return day_correlations(stock_days(records, items, returns), x, boot)


# -- multiple comparisons ------------------------------------------------------------------------------------------
def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (statsmodels ``multipletests(method="holm")``) over the p-values that are numbers; a
    None (a test that could not be run) stays None and is not part of the family."""
    from statsmodels.stats.multitest import multipletests

    family = [(i, float(p)) for i, p in enumerate(pvalues) if isinstance(p, (int, float))]
    out: list[float | None] = [None] * len(pvalues)
    if family:
        adjusted = multipletests([p for _, p in family], method="holm")[1]
        for (i, _), a in zip(family, adjusted):
            out[i] = float(a)
    return out


__all__ = ["BINNING", "ECE_BINS", "UP", "X_MEASURES", "Y_MEASURES", "calibration", "confidence", "correlation",
           "day_correlations", "group_accuracy", "group_of", "holm", "market_link", "most_confident_wrong",
           "stock_days", "up_probability"]

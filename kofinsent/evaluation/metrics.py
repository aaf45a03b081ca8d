"""Metrics and statistical tests for every evaluation path, at full precision (round only when printing: ``fmt_pct``).

Everything a library does is left to it: Wilson intervals and McNemar (statsmodels), binomial / Levene / Welch /
Wilcoxon / paired t (scipy), F1 / MCC / confusion (scikit-learn), Holm (statsmodels). They are imported inside the
functions so that ``import kofinsent`` stays light. Undefined values (no items, zero spread) are ``None``, never NaN,
so metrics.json stays valid JSON.

Invalid predictions (``None``, or anything not in ``labels``) are wrong answers, never mapped to a class:
- ``accuracy`` = correct / n; ``accuracy_valid`` = correct / valid predictions.
- ``macro_f1``: the invalid predictions become a third label ``"invalid"`` that is left out of the macro average
  (``f1_score(labels=labels)``): each one lowers its gold class's recall and adds a false positive to no class.
- ``mcc``: scikit-learn's multiclass MCC (Gorodkin's R_K) over gold x {labels, invalid}; with no invalid prediction
  it is the ordinary binary MCC; None where undefined (one gold class or one predicted class).

``n`` counts test items. When an item has several predictions (few-shot seeds, sentiment iterations) the rates are
over all predictions (``n_predictions``), intervals are cluster bootstraps over items and tests use one majority vote
per item: see :mod:`kofinsent.evaluation.clusters`. metrics.json's ``inference`` records which was done.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from kofinsent.evaluation.clusters import Bootstrap, Clusters, first_per_item, inference_note, ratio_ci, vote
from kofinsent.labels import LABELS

INVALID = "invalid"   # confusion column / F1 label of a prediction that is no label
ABSTAIN = "abstain"   # sentiment path: a valid reply with sentiment exactly 0


def _num(x: Any) -> float | None:
    """A plain float for JSON; NaN / inf (a statistic that is undefined here) -> None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


def wilson_ci(k: int, n: int) -> list[float] | None:
    """95% Wilson score interval [low, high] for k successes in n trials."""
    if n == 0:
        return None
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    return [float(low), float(high)]


def _binom_p(k: int, n: int, p: float, alternative: str = "two-sided") -> float | None:
    if n == 0:
        return None
    from scipy.stats import binomtest

    return _num(binomtest(k, n, p, alternative=alternative).pvalue)


def _confusion(gold: Sequence[str], tokens: Sequence[str], labels: Sequence[str],
               extra: Sequence[str]) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix

    columns = [*labels, *extra]
    if not gold:
        return {"rows": list(labels), "columns": columns, "matrix": [[0] * len(columns) for _ in labels]}
    matrix = confusion_matrix(gold, tokens, labels=columns)[: len(labels)]  # gold is never an extra column
    return {"rows": list(labels), "columns": columns, "matrix": matrix.tolist()}


def _mcc(gold: Sequence[str], tokens: Sequence[str]) -> float | None:
    """MCC, or None where it is undefined (all gold labels or all predictions in one class: a zero denominator,
    which scikit-learn reports as 0)."""
    if len(set(gold)) < 2 or len(set(tokens)) < 2:
        return None
    from sklearn.metrics import matthews_corrcoef

    return _num(matthews_corrcoef(gold, tokens))


def classification_metrics(gold: Sequence[str], pred: Sequence[str | None], labels: Sequence[str] = LABELS,
                           ids: Sequence[Any] | None = None, boot: Bootstrap | None = None) -> dict[str, Any]:
    """Accuracy (95% interval), macro-F1, MCC, confusion, invalid rate, binomial tests against 50% (two-sided) and
    against the gold majority rate (one-sided, greater). See the module docstring for how invalid predictions count.
    The majority label is the most frequent gold label over items, ties going to the first in ``labels``.

    ``ids``: the test item of each prediction. When some item has several (few-shot seeds, iterations), ``n``
    counts items and ``n_predictions`` predictions; the rates stay means over all predictions, their intervals are
    cluster bootstraps over items (``boot``) and the binomial tests use one majority-vote outcome per item (see
    :mod:`kofinsent.evaluation.clusters`). Otherwise the numbers are the exact Wilson / binomial ones."""
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred differ in length: {len(gold)} vs {len(pred)}")
    if ids is not None and len(ids) != len(gold):
        raise ValueError(f"ids and gold differ in length: {len(ids)} vs {len(gold)}")
    if unknown := set(gold) - set(labels):
        raise ValueError(f"gold labels {sorted(unknown)} are not in {list(labels)}")
    from sklearn.metrics import f1_score

    boot = boot or Bootstrap()
    clusters = Clusters.of(list(range(len(gold))) if ids is None else ids)
    tokens = [p if p in labels else INVALID for p in pred]
    n_pred = len(gold)
    ok = [g == t for g, t in zip(gold, tokens)]
    valid = [t != INVALID for t in tokens]
    correct, n_valid = sum(ok), sum(valid)
    item_gold = first_per_item(clusters, gold)
    n = clusters.n_items
    counts = Counter(item_gold)
    majority = max(labels, key=lambda y: (counts[y], -list(labels).index(y)))
    majority_rate = _rate(counts[majority], n)
    if clusters.repeated:
        accuracy_ci, valid_ci = ratio_ci(clusters, ok, boot=boot), ratio_ci(clusters, ok, valid, boot)
        voted = vote(clusters, tokens)
        tested = sum(g == t for g, t in zip(item_gold, voted))
    else:
        accuracy_ci, valid_ci = wilson_ci(correct, n), wilson_ci(correct, n_valid)
        tested = correct

    with warnings.catch_warnings():  # undefined F1 on degenerate inputs: defined as 0 below, no noise
        warnings.simplefilter("ignore")
        macro_f1 = f1_score(gold, tokens, labels=list(labels), average="macro", zero_division=0.0) if n else None
    return {
        "n": n,
        "n_predictions": n_pred,
        "n_valid": n_valid,
        "accuracy": _rate(correct, n_pred),
        "accuracy_ci95": accuracy_ci,
        "accuracy_valid": _rate(correct, n_valid),
        "accuracy_valid_ci95": valid_ci,
        "macro_f1": _num(macro_f1),
        "mcc": _mcc(gold, tokens),
        "confusion": _confusion(gold, tokens, labels, [INVALID]),
        "invalid_rate": _rate(n_pred - n_valid, n_pred),
        "tested_correct": tested,  # items the binomial tests count as correct (majority vote when repeated)
        "binom_p_vs_chance": _binom_p(tested, n, 0.5),
        "majority_label": majority if n else None,
        "majority_rate": majority_rate,
        "binom_p_vs_majority": _binom_p(tested, n, majority_rate, "greater") if n else None,
        "label_counts": {y: counts[y] for y in labels},
        "pred_counts": dict(Counter(tokens)),
        "inference": inference_note(clusters, boot),
    }


def mcnemar(gold: Sequence[str], pred_a: Sequence[str | None], pred_b: Sequence[str | None]) -> dict[str, Any]:
    """McNemar's test on the correctness of two runs over the same items (invalid = wrong), one prediction per item
    and run (compare_runs passes majority votes when a run has several). Exact (binomial) when the discordant pairs
    b + c < 25, else chi-square with continuity correction; ``mcnemar_midp``: the exact test's mid-p
    (2 * [P(X <= min(b, c)) - P(X = min(b, c)) / 2], X ~ Bin(b + c, 1/2); Fagerland et al. 2013), always given.
    ``mcnemar_b``: A right and B wrong; ``mcnemar_c``: A wrong and B right."""
    if not len(gold) == len(pred_a) == len(pred_b):
        raise ValueError("gold, pred_a and pred_b must have the same length")
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    a_ok = [p == g for p, g in zip(pred_a, gold)]
    b_ok = [p == g for p, g in zip(pred_b, gold)]
    both = sum(x and y for x, y in zip(a_ok, b_ok))
    b = sum(x and not y for x, y in zip(a_ok, b_ok))
    c = sum(y and not x for x, y in zip(a_ok, b_ok))
    neither = len(gold) - both - b - c
    exact = b + c < 25
    res = sm_mcnemar([[both, b], [c, neither]], exact=exact, correction=True)
    from scipy.stats import binom

    midp = min(1.0, 2 * (binom.cdf(min(b, c), b + c, 0.5) - 0.5 * binom.pmf(min(b, c), b + c, 0.5)))
    return {
        "mcnemar_p": _num(res.pvalue),
        "mcnemar_midp": _num(midp),
        "mcnemar_statistic": _num(res.statistic),
        "mcnemar_test": "exact" if exact else "chi2_corrected",
        "mcnemar_b": b,
        "mcnemar_c": c,
        "both_correct": both,
        "both_wrong": neither,
        "mcnemar_n": len(gold),
        "accuracy_a": _rate(sum(a_ok), len(gold)),
        "accuracy_b": _rate(sum(b_ok), len(gold)),
    }


# -- sentiment path (seed 000) ------------------------------------------------------------------------------------
def _direction(sentiment: float, labels: Sequence[str] = LABELS) -> str:
    return labels[0] if sentiment > 0 else labels[1] if sentiment < 0 else ABSTAIN


def _mean(xs: Sequence[float]) -> float | None:
    return math.fsum(xs) / len(xs) if xs else None


def _var(xs: Sequence[float]) -> float | None:
    """Sample variance (ddof=1)."""
    if len(xs) < 2:
        return None
    import numpy as np

    return float(np.var(np.asarray(xs, dtype=float), ddof=1))


def _valid_by_item(records: Iterable[dict[str, Any]]) -> dict[Any, list[float]]:
    out: dict[Any, list[float]] = defaultdict(list)
    for r in records:
        if r["valid"]:
            out[r["id"]].append(float(r["sentiment"]))
    return out


def _lenient_ok(r: dict[str, Any]) -> bool:
    if r["valid"]:  # a strict reply is a lenient one, whatever the record says
        return True
    if "lenient_valid" in r:
        return bool(r["lenient_valid"])
    from kofinsent.prompts.sentiment import parse_lenient

    return parse_lenient(r.get("raw") or "") is not None


def sentiment_metrics(records: Sequence[dict[str, Any]], boot: Bootstrap | None = None) -> dict[str, Any]:
    """Seed 000's measures over per-(item, iteration) records (``id``, ``gold``, ``raw``, ``valid`` — strict —,
    ``sentiment``, ``confidence``, ``seconds``; optional ``server_seconds``, ``iteration``, ``lenient_valid``).

    Only strictly valid replies enter ``mean_sentiment``, ``mean_confidence``, ``sentiment_variance`` and the
    predicted direction. ``accuracy`` = correct / all replies (invalid and abstaining replies are wrong);
    ``accuracy_decided`` = correct / valid replies with sentiment != 0. ``n`` counts items and ``n_predictions``
    replies; with several iterations the intervals are cluster bootstraps over items and the binomial tests use one
    majority-vote outcome per item, as in :func:`classification_metrics`. ``sentiment_variance`` is the mean over
    items of the variance across an item's iterations (run-to-run variance); ``sentiment_variance_pooled`` the
    variance of all valid sentiments at once (mostly the spread between items).
    """
    boot = boot or Bootstrap()
    n = len(records)
    gold = [r["gold"] for r in records]
    ids = [r["id"] for r in records]
    tokens = [_direction(float(r["sentiment"])) if r["valid"] else INVALID for r in records]
    cls = classification_metrics(gold, [t if t in LABELS else None for t in tokens], ids=ids, boot=boot)
    valid = [r for r in records if r["valid"]]
    decided = [t in LABELS for t in tokens]
    ok = [g == t for g, t in zip(gold, tokens)]
    correct_decided, n_decided = sum(ok), sum(decided)  # a correct reply is a decided one
    clusters = Clusters.of(ids)
    decided_ci = (ratio_ci(clusters, ok, decided, boot) if clusters.repeated
                  else wilson_ci(correct_decided, n_decided))

    by_item = _valid_by_item(records)
    item_vars = [v for xs in by_item.values() if (v := _var(xs)) is not None]
    sentiments = [float(r["sentiment"]) for r in valid]
    server = [float(r["server_seconds"]) for r in records if r.get("server_seconds") is not None]
    per_iteration: dict[Any, list[bool]] = defaultdict(list)
    for r, t in zip(records, tokens):
        per_iteration[r.get("iteration", 0)].append(r["gold"] == t)
    replies_per_item = Counter(ids)

    return {
        "n": cls["n"],
        "n_predictions": n,
        "iterations": len(per_iteration) if all("iteration" in r for r in records)
        else max(replies_per_item.values(), default=0),
        "n_valid": len(valid),
        "n_decided": n_decided,
        "valid_json_rate": _rate(len(valid), n),
        "lenient_json_rate": _rate(sum(_lenient_ok(r) for r in records), n),
        "invalid_rate": _rate(n - len(valid), n),
        "abstain_rate": _rate(tokens.count(ABSTAIN), n),
        "accuracy": cls["accuracy"],
        "accuracy_ci95": cls["accuracy_ci95"],
        "accuracy_decided": _rate(correct_decided, n_decided),
        "accuracy_decided_ci95": decided_ci,
        "accuracy_by_iteration": [_rate(sum(ok), len(ok)) for _, ok in sorted(per_iteration.items())],
        "macro_f1": cls["macro_f1"],
        "mcc": cls["mcc"],
        "confusion": _confusion(gold, tokens, LABELS, [ABSTAIN, INVALID]),
        "tested_correct": cls["tested_correct"],
        "binom_p_vs_chance": cls["binom_p_vs_chance"],
        "majority_label": cls["majority_label"],
        "majority_rate": cls["majority_rate"],
        "binom_p_vs_majority": cls["binom_p_vs_majority"],
        "label_counts": cls["label_counts"],
        "mean_sentiment": _mean(sentiments),
        "mean_confidence": _mean([float(r["confidence"]) for r in valid]),
        "sentiment_variance": _mean(item_vars),
        "sentiment_variance_items": len(item_vars),
        # The seed's "variance" was over all scores at once; kept for comparison, never in place of the above.
        "sentiment_variance_pooled": _var(sentiments),
        "seconds_per_sample": _mean([float(r["seconds"]) for r in records]),
        "server_seconds_per_sample": _mean(server),
        "inference": cls["inference"],
    }


def _stat_p(result: Any) -> tuple[float | None, float | None]:
    return _num(result.statistic), _num(result.pvalue)


def compare_sentiment(a_records: Sequence[dict[str, Any]], b_records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Two sentiment runs, as seed 000 compared them: Brown–Forsythe (Levene, median-centred) on the variances and
    Welch's t on the means of the pooled valid sentiments, unadjusted (``levene_p``, ``welch_p``) and Holm-adjusted
    over those two (``*_holm``). Paired per item (items with valid replies in both runs): Wilcoxon signed-rank and
    paired t on the item means, and Wilcoxon on the per-item variances (items with >= 2 valid replies in both)."""
    from scipy.stats import levene, ttest_ind, ttest_rel, wilcoxon
    from statsmodels.stats.multitest import multipletests

    xa = [float(r["sentiment"]) for r in a_records if r["valid"]]
    xb = [float(r["sentiment"]) for r in b_records if r["valid"]]
    ia, ib = _valid_by_item(a_records), _valid_by_item(b_records)
    ids = sorted(set(ia) & set(ib), key=str)
    mean_a = [_mean(ia[i]) for i in ids]
    mean_b = [_mean(ib[i]) for i in ids]
    var_ids = [i for i in ids if len(ia[i]) >= 2 and len(ib[i]) >= 2]

    out: dict[str, Any] = dict.fromkeys(
        ("levene_statistic", "levene_p", "welch_t", "welch_df", "welch_p", "paired_wilcoxon_statistic",
         "paired_wilcoxon_p", "paired_t_statistic", "paired_t_p", "paired_variance_wilcoxon_p"))
    with warnings.catch_warnings():  # zero spread / too few values: the statistic is undefined -> None
        warnings.simplefilter("ignore")
        if len(xa) >= 2 and len(xb) >= 2:
            out["levene_statistic"], out["levene_p"] = _stat_p(levene(xa, xb, center="median"))
            welch = ttest_ind(xa, xb, equal_var=False)
            out["welch_t"], out["welch_p"] = _stat_p(welch)
            out["welch_df"] = _num(welch.df)
        if len(ids) >= 2:
            out["paired_wilcoxon_statistic"], out["paired_wilcoxon_p"] = _stat_p(wilcoxon(mean_a, mean_b))
            out["paired_t_statistic"], out["paired_t_p"] = _stat_p(ttest_rel(mean_a, mean_b))
        if len(var_ids) >= 2:
            out["paired_variance_wilcoxon_p"] = _num(
                wilcoxon([_var(ia[i]) for i in var_ids], [_var(ib[i]) for i in var_ids]).pvalue)

    family = {k: out[k] for k in ("levene_p", "welch_p") if out[k] is not None}
    adjusted = multipletests(list(family.values()), method="holm")[1] if family else []
    holm = dict(zip(family, adjusted))
    out["levene_p_holm"] = _num(holm.get("levene_p"))
    out["welch_p_holm"] = _num(holm.get("welch_p"))
    out.update({
        "n_valid_a": len(xa), "n_valid_b": len(xb),
        "mean_sentiment_a": _mean(xa), "mean_sentiment_b": _mean(xb),
        "variance_a": _var(xa), "variance_b": _var(xb),
        "item_variance_mean_a": _mean([_var(ia[i]) for i in var_ids]),
        "item_variance_mean_b": _mean([_var(ib[i]) for i in var_ids]),
        "paired_items": len(ids), "paired_variance_items": len(var_ids),
        "tests": SENTIMENT_TESTS,
    })
    return out


# What each sentiment test in compare.json measures, for compare.json itself and the report.
SENTIMENT_TESTS = {
    "levene_p": "Brown-Forsythe (median-centred Levene) on the two runs' pooled valid sentiments (items x "
                "iterations, treated as independent): spread between items more than run-to-run variance",
    "welch_p": "Welch's t on the pooled valid sentiments (items x iterations, treated as independent)",
    "paired_wilcoxon_p": "Wilcoxon signed-rank on the per-item mean sentiments, paired by item",
    "paired_t_p": "paired t on the per-item mean sentiments",
    "paired_variance_wilcoxon_p": "Wilcoxon signed-rank on the per-item variances across iterations, paired by "
                                  "item (items with >= 2 valid replies in both runs): the run-to-run variance",
}


def seed_summary(values: Sequence[float]) -> dict[str, Any]:
    """Mean ± sd (ddof=1) of one metric over few-shot seeds (report with >= 3 seeds; sd is None below 2)."""
    vals = [float(v) for v in values]
    return {"mean": _mean(vals), "sd": None if len(vals) < 2 else math.sqrt(_var(vals)), "n": len(vals),
            "values": vals}


def fmt_pct(x: float | None, digits: int = 1) -> str:
    """For printing only: 0.4933 -> '49.3%'; None -> 'n/a'."""
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"

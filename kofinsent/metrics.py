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
  it is the ordinary binary MCC.
"""
from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

LABELS = ("[상승]", "[하락]")
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


def classification_metrics(gold: Sequence[str], pred: Sequence[str | None],
                           labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """Accuracy (Wilson 95%), macro-F1, MCC, confusion, invalid rate, binomial tests against 50% (two-sided) and
    against the gold majority rate (one-sided, greater). See the module docstring for how invalid predictions count.
    The majority label is the most frequent gold label, ties going to the first in ``labels``."""
    if len(gold) != len(pred):
        raise ValueError(f"gold and pred differ in length: {len(gold)} vs {len(pred)}")
    if unknown := set(gold) - set(labels):
        raise ValueError(f"gold labels {sorted(unknown)} are not in {list(labels)}")
    from sklearn.metrics import f1_score, matthews_corrcoef

    n = len(gold)
    tokens = [p if p in labels else INVALID for p in pred]
    n_valid = sum(t != INVALID for t in tokens)
    correct = sum(g == t for g, t in zip(gold, tokens))
    counts = Counter(gold)
    majority = max(labels, key=lambda y: (counts[y], -list(labels).index(y)))
    majority_rate = _rate(counts[majority], n)

    with warnings.catch_warnings():  # undefined F1 / MCC on degenerate inputs: defined as 0 below, no noise
        warnings.simplefilter("ignore")
        macro_f1 = f1_score(gold, tokens, labels=list(labels), average="macro", zero_division=0.0) if n else None
        mcc = matthews_corrcoef(gold, tokens) if n else None
    return {
        "n": n,
        "n_valid": n_valid,
        "accuracy": _rate(correct, n),
        "accuracy_ci95": wilson_ci(correct, n),
        "accuracy_valid": _rate(correct, n_valid),
        "accuracy_valid_ci95": wilson_ci(correct, n_valid),
        "macro_f1": _num(macro_f1),
        "mcc": _num(mcc),
        "confusion": _confusion(gold, tokens, labels, [INVALID]),
        "invalid_rate": _rate(n - n_valid, n),
        "binom_p_vs_chance": _binom_p(correct, n, 0.5),
        "majority_label": majority if n else None,
        "majority_rate": majority_rate,
        "binom_p_vs_majority": _binom_p(correct, n, majority_rate, "greater") if n else None,
        "label_counts": {y: counts[y] for y in labels},
        "pred_counts": dict(Counter(tokens)),
    }


def mcnemar(gold: Sequence[str], pred_a: Sequence[str | None], pred_b: Sequence[str | None]) -> dict[str, Any]:
    """McNemar's test on the correctness of two runs over the same items (invalid = wrong). Exact (binomial) when
    the discordant pairs b + c < 25, else chi-square with continuity correction.
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
    return {
        "mcnemar_p": _num(res.pvalue),
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
    from .prompts.sentiment import parse_lenient

    return parse_lenient(r.get("raw") or "") is not None


def sentiment_metrics(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Seed 000's measures over per-(item, iteration) records (``id``, ``gold``, ``raw``, ``valid`` — strict —,
    ``sentiment``, ``confidence``, ``seconds``; optional ``server_seconds``, ``iteration``, ``lenient_valid``).

    Only strictly valid replies enter ``mean_sentiment``, ``mean_confidence``, ``sentiment_variance`` and the
    predicted direction. ``accuracy`` = correct / all replies (invalid and abstaining replies are wrong);
    ``accuracy_decided`` = correct / valid replies with sentiment != 0. The Wilson intervals and binomial tests treat
    replies as independent, which holds for one iteration; over several, the same item's replies are correlated
    (``accuracy_by_iteration`` gives one accuracy per iteration).
    """
    n = len(records)
    gold = [r["gold"] for r in records]
    tokens = [_direction(float(r["sentiment"])) if r["valid"] else INVALID for r in records]
    cls = classification_metrics(gold, [t if t in LABELS else None for t in tokens])
    valid = [r for r in records if r["valid"]]
    decided = [(g, t) for g, t in zip(gold, tokens) if t in LABELS]
    correct_decided = sum(g == t for g, t in decided)

    by_item = _valid_by_item(records)
    item_vars = [v for xs in by_item.values() if (v := _var(xs)) is not None]
    sentiments = [float(r["sentiment"]) for r in valid]
    server = [float(r["server_seconds"]) for r in records if r.get("server_seconds") is not None]
    per_iteration: dict[Any, list[bool]] = defaultdict(list)
    for r, t in zip(records, tokens):
        per_iteration[r.get("iteration", 0)].append(r["gold"] == t)
    replies_per_item = Counter(r["id"] for r in records)

    return {
        "n": n,
        "n_items": len(replies_per_item),
        "n_replies": n,
        "iterations": len(per_iteration) if all("iteration" in r for r in records)
        else max(replies_per_item.values(), default=0),
        "n_valid": len(valid),
        "n_decided": len(decided),
        "valid_json_rate": _rate(len(valid), n),
        "lenient_json_rate": _rate(sum(_lenient_ok(r) for r in records), n),
        "invalid_rate": _rate(n - len(valid), n),
        "abstain_rate": _rate(tokens.count(ABSTAIN), n),
        "accuracy": cls["accuracy"],
        "accuracy_ci95": cls["accuracy_ci95"],
        "accuracy_decided": _rate(correct_decided, len(decided)),
        "accuracy_decided_ci95": wilson_ci(correct_decided, len(decided)),
        "accuracy_by_iteration": [_rate(sum(ok), len(ok)) for _, ok in sorted(per_iteration.items())],
        "macro_f1": cls["macro_f1"],
        "mcc": cls["mcc"],
        "confusion": _confusion(gold, tokens, LABELS, [ABSTAIN, INVALID]),
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
        "paired_items": len(ids), "paired_variance_items": len(var_ids),
    })
    return out


def seed_summary(values: Sequence[float]) -> dict[str, Any]:
    """Mean ± sd (ddof=1) of one metric over few-shot seeds (report with >= 3 seeds; sd is None below 2)."""
    vals = [float(v) for v in values]
    return {"mean": _mean(vals), "sd": None if len(vals) < 2 else math.sqrt(_var(vals)), "n": len(vals),
            "values": vals}


def fmt_pct(x: float | None, digits: int = 1) -> str:
    """For printing only: 0.4933 -> '49.3%'; None -> 'n/a'."""
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"

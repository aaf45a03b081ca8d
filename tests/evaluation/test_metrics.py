"""Every statistic in kofinsent.evaluation.metrics against a value worked out by hand (formula or exact sum) in the test."""
from __future__ import annotations

import json
import math
import statistics
from statistics import NormalDist

import pytest

from kofinsent.evaluation import metrics as M

U, D = "[상승]", "[하락]"


def binom_pmf(k: int, n: int, p: float) -> float:
    return math.comb(n, k) * p**k * (1 - p) ** (n - k)


def wilson_by_formula(k: int, n: int) -> tuple[float, float]:
    z = NormalDist().inv_cdf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def items(correct: int, wrong: int, invalid: int = 0, gold: str = U) -> tuple[list[str], list[str | None]]:
    other = D if gold == U else U
    return [gold] * (correct + wrong + invalid), [gold] * correct + [other] * wrong + [None] * invalid


# -- classification ------------------------------------------------------------------------------------------------
def test_wilson_interval_148_of_300_matches_formula():
    gold, pred = items(148, 152)
    m = M.classification_metrics(gold, pred)
    assert m["n"] == 300 and m["accuracy"] == 148 / 300
    assert m["accuracy_ci95"] == pytest.approx(wilson_by_formula(148, 300), rel=1e-12, abs=1e-14)
    assert M.wilson_ci(148, 300) == m["accuracy_ci95"]


def test_binomial_p_values_are_exact_sums():
    # 10 items, 7 up / 3 down, 8 correct.
    gold = [U] * 7 + [D] * 3
    pred = [U] * 6 + [D] + [D, D, U]
    m = M.classification_metrics(gold, pred)
    assert m["accuracy"] == 0.8
    # two-sided against 1/2: P(X <= 2) + P(X >= 8)
    assert m["binom_p_vs_chance"] == pytest.approx(2 * (1 + 10 + 45) / 1024, rel=1e-12)
    # one-sided against the majority rate 0.7: P(X >= 8)
    assert m["majority_label"] == U and m["majority_rate"] == 0.7
    assert m["binom_p_vs_majority"] == pytest.approx(sum(binom_pmf(k, 10, 0.7) for k in (8, 9, 10)), rel=1e-12)
    assert m["label_counts"] == {U: 7, D: 3}


def test_invalid_predictions_are_wrong_everywhere():
    gold = [U, U, U, D, D]
    pred = [U, None, D, D, U]
    m = M.classification_metrics(gold, pred)
    assert (m["n"], m["n_valid"]) == (5, 4)
    assert m["accuracy"] == 2 / 5 and m["accuracy_valid"] == 2 / 4
    assert m["accuracy_valid_ci95"] == pytest.approx(wilson_by_formula(2, 4), rel=1e-12)
    assert m["invalid_rate"] == 1 / 5
    # up: P = 1/2, R = 1/3 (the invalid is a missed up) -> F1 0.4; down: P = R = 1/2 -> 0.5
    assert m["macro_f1"] == pytest.approx((0.4 + 0.5) / 2, rel=1e-12)
    assert m["confusion"] == {"rows": [U, D], "columns": [U, D, "invalid"], "matrix": [[1, 1, 1], [1, 1, 0]]}
    assert m["pred_counts"] == {U: 2, D: 2, "invalid": 1}


def test_mcc_binary_and_with_invalid():
    # binary: TP 2, FN 1, FP 1, TN 1 (up positive)
    m = M.classification_metrics([U, U, U, D, D], [U, U, D, D, U])
    assert m["mcc"] == pytest.approx((2 * 1 - 1 * 1) / math.sqrt(3 * 3 * 2 * 2), rel=1e-12)
    # with an invalid: Gorodkin's R_K = (c s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2))
    # c = 4 correct, s = 6, true counts (3, 3, 0), predicted counts (up 3, down 2, invalid 1)
    m = M.classification_metrics([U, U, U, D, D, D], [U, U, None, D, D, U])
    assert m["mcc"] == pytest.approx((4 * 6 - (3 * 3 + 2 * 3)) / math.sqrt((36 - (9 + 4 + 1)) * (36 - 18)),
                                     rel=1e-12)


def test_majority_tie_goes_to_first_label_and_degenerate_inputs():
    m = M.classification_metrics([D, U], [D, D])
    assert m["majority_label"] == U and m["majority_rate"] == 0.5
    empty = M.classification_metrics([], [])
    assert empty["n"] == 0 and empty["accuracy"] is None and empty["accuracy_ci95"] is None
    json.dumps(empty)  # no NaN anywhere
    all_invalid = M.classification_metrics([U, D], [None, None])
    assert all_invalid["accuracy"] == 0 and all_invalid["accuracy_valid"] is None
    assert all_invalid["macro_f1"] == 0 and all_invalid["invalid_rate"] == 1
    with pytest.raises(ValueError):
        M.classification_metrics([U, "up"], [U, U])
    with pytest.raises(ValueError):
        M.classification_metrics([U], [U, D])


# -- McNemar ---------------------------------------------------------------------------------------------------------
def paired(both: int, a_only: int, b_only: int, neither: int) -> tuple[list[str], list[str | None], list[str | None]]:
    gold = [U] * (both + a_only + b_only + neither)
    a = [U] * both + [U] * a_only + [D] * b_only + [None] * neither
    b = [U] * both + [None] * a_only + [U] * b_only + [D] * neither
    return gold, a, b


def test_mcnemar_exact_is_a_binomial_sum():
    m = M.mcnemar(*paired(both=20, a_only=1, b_only=6, neither=3))
    assert (m["mcnemar_b"], m["mcnemar_c"], m["mcnemar_test"]) == (1, 6, "exact")
    assert m["mcnemar_p"] == pytest.approx(2 * (binom_pmf(0, 7, 0.5) + binom_pmf(1, 7, 0.5)), rel=1e-12)
    assert (m["both_correct"], m["both_wrong"], m["mcnemar_n"]) == (20, 3, 30)
    assert m["accuracy_a"] == 21 / 30 and m["accuracy_b"] == 26 / 30


def test_mcnemar_chi2_with_continuity_correction_from_25_discordant():
    m = M.mcnemar(*paired(both=5, a_only=10, b_only=25, neither=5))
    assert m["mcnemar_test"] == "chi2_corrected"
    stat = (abs(10 - 25) - 1) ** 2 / (10 + 25)
    assert m["mcnemar_statistic"] == pytest.approx(stat, rel=1e-12)
    assert m["mcnemar_p"] == pytest.approx(math.erfc(math.sqrt(stat / 2)), rel=1e-10)  # chi2(1) survival


def test_mcnemar_identical_runs():
    m = M.mcnemar(*paired(both=4, a_only=0, b_only=0, neither=2))
    assert m["mcnemar_p"] == 1.0 and m["mcnemar_b"] == m["mcnemar_c"] == 0


# -- sentiment path ------------------------------------------------------------------------------------------------
def reply(sentiment: float, confidence: float = 0.8) -> str:
    return json.dumps({"reasoning": "r", "sentiment": sentiment, "confidence": confidence})


def sentiment_records(spec: dict[str, tuple[str, list]]) -> list[dict]:
    """spec: id -> (gold, per-iteration raw replies); validity and values come from the real strict parser."""
    from kofinsent.prompts.sentiment import parse_strict

    out = []
    for item_id, (gold, raws) in spec.items():
        for it, raw in enumerate(raws):
            r = parse_strict(raw)
            out.append({"id": item_id, "gold": gold, "raw": raw, "iteration": it, "valid": r is not None,
                        "sentiment": r.sentiment if r else None, "confidence": r.confidence if r else None,
                        "seconds": 1.0 + it, "server_seconds": 0.5 if item_id == "A" else None})
    return out


FENCED = "```json\n" + reply(0.3) + "\n```"
SPEC = {
    "A": (U, [reply(0.5, 0.9), reply(0.7, 0.7), reply(0.9, 0.5)]),           # 3 valid, all right
    "B": (D, [reply(0.1), "not json", reply(-0.3)]),                          # 2 valid: one wrong, one right
    "C": (U, [reply(0.4), FENCED, reply(1.5)]),                               # 1 valid (fenced, out of range)
    "D": (D, ["Sure! " + reply(-0.5), FENCED, '{"reasoning": "r"']),          # none valid, 2 lenient
    "E": (U, [reply(0.0), reply(0.0), reply(0.2)]),                           # 2 abstain, 1 right
}


def test_sentiment_metrics_by_hand():
    m = M.sentiment_metrics(sentiment_records(SPEC))
    # n counts items; every rate below is over the 15 replies
    assert (m["n"], m["n_predictions"], m["iterations"]) == (5, 15, 3)
    valid = {"A": [0.5, 0.7, 0.9], "B": [0.1, -0.3], "C": [0.4], "E": [0.0, 0.0, 0.2]}
    assert m["n_valid"] == 9 and m["valid_json_rate"] == 9 / 15 and m["invalid_rate"] == 6 / 15
    assert m["lenient_json_rate"] == (9 + 3) / 15  # + C's fence, D's prose and fence (not B's text / C's 1.5)
    assert m["abstain_rate"] == 2 / 15 and m["n_decided"] == 7
    pooled = [x for xs in valid.values() for x in xs]
    assert m["mean_sentiment"] == pytest.approx(sum(pooled) / 9, rel=1e-12)
    assert m["mean_confidence"] == pytest.approx((0.9 + 0.7 + 0.5 + 0.8 * 6) / 9, rel=1e-12)
    # items with >= 2 valid replies: A, B, E (C has one, D none)
    per_item = [statistics.variance(valid[i]) for i in ("A", "B", "E")]
    assert m["sentiment_variance_items"] == 3
    assert m["sentiment_variance"] == pytest.approx(sum(per_item) / 3, rel=1e-12)
    assert m["sentiment_variance_pooled"] == pytest.approx(statistics.variance(pooled), rel=1e-12)
    # correct: A 3, B 1, C 1, E 1 -> 6 of 15 replies, 6 of 7 decided
    assert m["accuracy"] == 6 / 15 and m["accuracy_decided"] == 6 / 7
    # three replies per item: cluster intervals over the 5 items, tests on one majority vote per item
    assert m["inference"]["interval"] == "cluster_bootstrap_percentile"
    assert m["accuracy_ci95"][0] <= 6 / 15 <= m["accuracy_ci95"][1]
    # votes: A up (right); B up/invalid/down tie -> its first reply, up (wrong); C, D, E invalid (wrong)
    assert m["tested_correct"] == 1
    assert m["binom_p_vs_chance"] == pytest.approx(2 * sum(binom_pmf(k, 5, 0.5) for k in (0, 1)), rel=1e-12)
    assert m["accuracy_by_iteration"] == [2 / 5, 1 / 5, 3 / 5]
    assert m["confusion"]["columns"] == [U, D, "abstain", "invalid"]
    assert m["confusion"]["matrix"] == [[5, 0, 2, 2], [1, 1, 0, 4]]
    assert m["seconds_per_sample"] == 2.0 and m["server_seconds_per_sample"] == 0.5
    json.dumps(m, allow_nan=False)


def test_sentiment_metrics_prefers_recorded_lenient_flag_and_handles_no_valid_reply():
    recs = sentiment_records({"X": (U, ["nope", "nope"])})
    recs[0]["lenient_valid"] = True
    m = M.sentiment_metrics(recs)
    assert m["lenient_json_rate"] == 0.5 and m["valid_json_rate"] == 0
    assert m["mean_sentiment"] is None and m["sentiment_variance"] is None and m["sentiment_variance_items"] == 0
    assert m["accuracy"] == 0 and m["accuracy_decided"] is None and m["server_seconds_per_sample"] is None


# -- comparing two sentiment runs ----------------------------------------------------------------------------------
def one_way_anova_f(groups: list[list[float]]) -> float:
    n = sum(map(len, groups))
    grand = sum(map(sum, groups)) / n
    means = [sum(g) / len(g) for g in groups]
    between = sum(len(g) * (m - grand) ** 2 for g, m in zip(groups, means)) / (len(groups) - 1)
    within = sum((x - m) ** 2 for g, m in zip(groups, means) for x in g) / (n - len(groups))
    return between / within


def runs(a: list[float], b: list[float]) -> tuple[list[dict], list[dict]]:
    mk = lambda xs: [{"id": f"i{k}", "valid": True, "sentiment": x} for k, x in enumerate(xs)]  # noqa: E731
    return mk(a), mk(b)


def test_brown_forsythe_welch_and_holm_by_hand():
    from scipy.stats import f as f_dist
    from scipy.stats import t as t_dist

    a = [0.1, 0.2, 0.3, 0.4, 1.0]
    b = [0.2, 0.2, 0.3, 0.3, 0.3, 0.5]
    ra, rb = runs(a, b)
    ra.append({"id": "bad", "valid": False, "sentiment": None})  # invalid replies stay out of the pooled values
    out = M.compare_sentiment(ra, rb)

    # Brown–Forsythe: one-way ANOVA on absolute deviations from each group's median
    za = [abs(x - statistics.median(a)) for x in a]
    zb = [abs(x - statistics.median(b)) for x in b]
    f_stat = one_way_anova_f([za, zb])
    assert out["levene_statistic"] == pytest.approx(f_stat, rel=1e-10)
    assert out["levene_p"] == pytest.approx(f_dist.sf(f_stat, 1, len(a) + len(b) - 2), rel=1e-10)

    # Welch: unequal variances, Welch–Satterthwaite df
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t_stat = (statistics.mean(a) - statistics.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    assert out["welch_t"] == pytest.approx(t_stat, rel=1e-10)
    assert out["welch_df"] == pytest.approx(df, rel=1e-10)
    assert out["welch_p"] == pytest.approx(2 * t_dist.sf(abs(t_stat), df), rel=1e-10)

    # Holm over the two: the smaller p times 2, the larger max(that, itself), both capped at 1
    lo, hi = sorted([out["levene_p"], out["welch_p"]])
    adj_lo = min(1.0, 2 * lo)
    adj_hi = min(1.0, max(adj_lo, hi))
    expected = {"levene_p": adj_lo, "welch_p": adj_hi} if out["levene_p"] <= out["welch_p"] else \
        {"levene_p": adj_hi, "welch_p": adj_lo}
    assert out["levene_p_holm"] == pytest.approx(expected["levene_p"], rel=1e-12)
    assert out["welch_p_holm"] == pytest.approx(expected["welch_p"], rel=1e-12)
    assert (out["n_valid_a"], out["n_valid_b"]) == (5, 6)
    assert out["variance_a"] == pytest.approx(statistics.variance(a), rel=1e-12)


def test_paired_item_tests_by_hand():
    from scipy.stats import t as t_dist

    # four items, two iterations each; run B's item means exceed A's by distinct positive amounts
    a_means = [0.1, 0.2, -0.3, 0.0]
    a_spread = [0.1, 0.05, 0.02, 0.01]
    shift = [0.05, 0.1, 0.2, 0.4]
    rec = lambda i, x: {"id": f"i{i}", "valid": True, "sentiment": x}  # noqa: E731
    ra = [rec(i, m + s) for i, (m, h) in enumerate(zip(a_means, a_spread)) for s in (-h, h)]
    rb = [rec(i, m + d + s) for i, (m, d) in enumerate(zip(a_means, shift)) for s in (-0.2, 0.2)]
    ra.append({"id": "only_a", "valid": True, "sentiment": 0.9})  # not in B: left out of the paired tests
    out = M.compare_sentiment(ra, rb)
    assert out["paired_items"] == 4
    # exact signed-rank: all four differences of one sign -> two-sided p = 2 / 2^4
    assert out["paired_wilcoxon_p"] == pytest.approx(2 / 16, rel=1e-12)
    d = [-x for x in shift]
    t_stat = statistics.mean(d) / (statistics.stdev(d) / math.sqrt(4))
    assert out["paired_t_statistic"] == pytest.approx(t_stat, rel=1e-9)
    assert out["paired_t_p"] == pytest.approx(2 * t_dist.sf(abs(t_stat), 3), rel=1e-9)
    # per-item variances: A's 2 h^2 (h <= 0.1), B's 0.08 each -> four distinct negative differences -> 2 / 16
    assert out["paired_variance_items"] == 4
    assert out["paired_variance_wilcoxon_p"] == pytest.approx(2 / 16, rel=1e-12)


def test_compare_sentiment_too_few_values_gives_none_not_nan():
    out = M.compare_sentiment(*runs([0.1], [0.2, 0.3]))
    assert out["levene_p"] is None and out["welch_p"] is None
    assert out["levene_p_holm"] is None and out["welch_p_holm"] is None
    assert out["paired_wilcoxon_p"] is None
    json.dumps(out, allow_nan=False)


# -- few-shot seeds and printing ------------------------------------------------------------------------------------
def test_seed_summary_and_fmt_pct():
    s = M.seed_summary([0.48, 0.5, 0.55])
    assert s["n"] == 3 and s["values"] == [0.48, 0.5, 0.55]
    assert s["mean"] == pytest.approx(1.53 / 3, rel=1e-12)
    mean = 1.53 / 3
    assert s["sd"] == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in (0.48, 0.5, 0.55)) / 2), rel=1e-12)
    assert M.seed_summary([0.5])["sd"] is None
    assert M.fmt_pct(148 / 300) == "49.3%" and M.fmt_pct(None) == "n/a" and M.fmt_pct(0.5, 2) == "50.00%"


def test_metrics_import_is_light():
    import subprocess
    import sys

    code = "import sys, kofinsent.evaluation.metrics; print(any(m in sys.modules for m in ('scipy', 'statsmodels', 'sklearn')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"

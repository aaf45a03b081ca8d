"""kofinsent.evaluation.analysis on hand-made runs: every expected number is counted or computed here by hand, or by
scipy / statsmodels called directly."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from kofinsent.evaluation import analysis as A
from kofinsent.evaluation.clusters import Bootstrap

UP, DOWN = "[상승]", "[하락]"


def _items() -> dict[str, dict]:
    """Five test items: three of stock A (2021, 2021, 2022), two of B (2022)."""
    rows = [("a1", "A", "2021-03-02T10:00:00+09:00"), ("a2", "A", "2021-05-03T10:00:00+09:00"),
            ("a3", "A", "2022-01-04T10:00:00+09:00"), ("b1", "B", "2022-02-03T10:00:00+09:00"),
            ("b2", "B", "2022-02-04T10:00:00+09:00")]
    return {i: {"id": i, "code": c, "posted_at": t} for i, c, t in rows}


def _rec(i: str, gold: str, pred: str | None, **kw) -> dict:
    return {"id": i, "gold": gold, "pred": pred, **kw}


def test_group_accuracy_single_prediction_per_item_is_a_hand_count_with_wilson():
    recs = [_rec("a1", UP, UP), _rec("a2", UP, DOWN), _rec("a3", DOWN, DOWN), _rec("b1", DOWN, None),
            _rec("b2", UP, UP)]
    by_stock = A.group_accuracy(recs, _items(), "code")
    # A: a1 right, a2 wrong, a3 right -> 2 / 3; B: b1 invalid (wrong), b2 right -> 1 / 2
    assert {g: (r["n"], r["n_predictions"], r["correct"]) for g, r in by_stock.items()} == {"A": (3, 3, 2),
                                                                                          "B": (2, 2, 1)}
    assert by_stock["A"]["accuracy"] == 2 / 3 and by_stock["B"]["accuracy"] == 0.5
    for g, (k, n) in (("A", (2, 3)), ("B", (1, 2))):
        assert by_stock[g]["ci95"] == pytest.approx(list(proportion_confint(k, n, method="wilson")), abs=1e-12)
        assert by_stock[g]["interval"] == "wilson"
    by_year = A.group_accuracy(recs, _items(), "year")
    # 2021: a1, a2 -> 1 / 2; 2022: a3, b1, b2 -> 2 / 3
    assert {g: (r["n"], r["correct"]) for g, r in by_year.items()} == {"2021": (2, 1), "2022": (3, 2)}


def test_group_accuracy_with_repeats_counts_items_and_uses_the_cluster_bootstrap():
    """Three predictions per item (few-shot seeds): n counts items, accuracy is the mean over predictions, the
    interval is the bootstrap over items; three identical repeats give what one prediction per item gives."""
    items = {f"x{i}": {"id": f"x{i}", "code": "A", "posted_at": "2021-01-04T10:00:00+09:00"} for i in range(40)}
    one = [_rec(f"x{i}", UP, UP if i % 3 else DOWN) for i in range(40)]
    three = [dict(r, fewshot_seed=s) for r in one for s in (1, 2, 3)]
    g1 = A.group_accuracy(one, items, "code")["A"]
    g3 = A.group_accuracy(three, items, "code", Bootstrap(seed=4))["A"]
    correct = sum(i % 3 != 0 for i in range(40))
    assert (g3["n"], g3["n_predictions"], g3["correct"]) == (40, 120, 3 * correct)
    assert g3["accuracy"] == g1["accuracy"] == correct / 40
    assert g3["interval"] == "cluster_bootstrap_percentile" and g1["interval"] == "wilson"
    # identical repeats: a bootstrap over the 40 items, close to the Wilson interval of 40 items (not of 120)
    assert g3["ci95"] == pytest.approx(g1["ci95"], abs=0.05)
    wilson_120 = proportion_confint(3 * correct, 120, method="wilson")
    assert g3["ci95"][1] - g3["ci95"][0] > 1.3 * (wilson_120[1] - wilson_120[0])
    # an independent percentile bootstrap over items
    ok = np.array([i % 3 != 0 for i in range(40)], dtype=float)
    rng = np.random.default_rng(11)
    means = [ok[rng.integers(0, 40, 40)].mean() for _ in range(4000)]
    assert g3["ci95"] == pytest.approx(list(np.percentile(means, [2.5, 97.5])), abs=0.03)


def _ll(p_up: float) -> list[float]:
    """Log-likelihoods whose two-way softmax gives P(up) = p_up."""
    return [math.log(p_up), math.log(1 - p_up)]


def test_ece_by_hand():
    recs = [
        _rec("1", UP, UP, loglik=_ll(0.62)),    # conf 0.62, bin [0.60, 0.65), right
        _rec("2", DOWN, UP, loglik=_ll(0.62)),  # conf 0.62, same bin, wrong
        _rec("3", DOWN, DOWN, loglik=_ll(0.28)),  # P(down) = 0.72: conf 0.72, bin [0.70, 0.75), right
        _rec("4", UP, UP, loglik=_ll(0.83)),    # conf 0.83, bin [0.80, 0.85), right
        _rec("5", UP, UP, loglik=_ll(0.83)),    # same bin, right
        _rec("6", DOWN, UP, loglik=_ll(0.97)),  # conf 0.97, bin [0.95, 1.0], wrong
        _rec("7", UP, None),                    # no log-likelihoods: not calibrated
    ]
    cal = A.calibration(recs)
    assert cal["n_predictions"] == 6 and cal["n"] == 6
    by_bin = {round(b["lo"], 2): b for b in cal["bins"] if b["n"]}
    assert {k: b["n"] for k, b in by_bin.items()} == {0.6: 2, 0.7: 1, 0.8: 2, 0.95: 1}
    assert by_bin[0.6]["accuracy"] == 0.5 and by_bin[0.6]["confidence"] == pytest.approx(0.62)
    ece = 2 / 6 * abs(0.5 - 0.62) + 1 / 6 * abs(1 - 0.72) + 2 / 6 * abs(1 - 0.83) + 1 / 6 * abs(0 - 0.97)
    assert cal["ece"] == pytest.approx(ece, abs=1e-12)
    assert cal["mce"] == pytest.approx(0.97)
    assert cal["mean_confidence"] == pytest.approx((0.62 * 2 + 0.72 + 0.83 * 2 + 0.97) / 6)
    assert cal["accuracy"] == pytest.approx(4 / 6)
    assert len(cal["bins"]) == A.ECE_BINS == 10 and cal["bins"][0]["lo"] == 0.5 and cal["bins"][-1]["hi"] == 1.0
    assert A.calibration([])["ece"] is None


def test_softmax_confidence_is_stable_and_follows_the_prediction():
    assert A.up_probability([-1.0, -1001.0]) == pytest.approx(1.0)
    assert A.up_probability([-1001.0, -1.0]) == pytest.approx(0.0, abs=1e-300)
    assert A.confidence({"loglik": _ll(0.2), "pred": DOWN}) == pytest.approx(0.8)
    assert A.confidence({"loglik": _ll(0.2), "pred": None}) is None


def test_most_confident_wrong_per_stock_one_line_per_item():
    recs = [_rec("a1", UP, DOWN), _rec("a1", UP, DOWN), _rec("a2", UP, DOWN), _rec("a3", DOWN, DOWN),
            _rec("b1", DOWN, UP), _rec("b2", UP, DOWN)]
    scores = [0.9, 0.95, 0.5, 0.99, 0.7, None]
    picked = A.most_confident_wrong(recs, _items(), scores, 2)
    # A: a1's best wrong (0.95, position 1) then a2; a3 is right; B: b1 (b2 has no score)
    assert picked == {"A": [1, 2], "B": [4]}


# -- the market link -----------------------------------------------------------------------------------------------
def _returns() -> list[dict]:
    days = ["2021-03-02", "2021-03-03", "2021-03-04", "2021-03-08"]  # 03-05 not traded by A
    rets = [None, 0.01, -0.02, 0.03]
    return [{"code": "A", "date": d, "return": r} for d, r in zip(days, rets)]


def test_stock_days_by_hand():
    items = {"p1": {"code": "A", "move_date": "2021-03-03", "return": 0.01},
             "p2": {"code": "A", "move_date": "2021-03-03", "return": 0.01},
             "p3": {"code": "A", "move_date": "2021-03-04", "return": -0.02},
             "p4": {"code": "A", "move_date": "2021-03-08", "return": 0.03}}
    recs = [_rec("p1", UP, UP, valid=True, sentiment=0.5), _rec("p1", UP, None, valid=False, sentiment=None),
            _rec("p2", UP, DOWN, valid=True, sentiment=-0.1), _rec("p3", DOWN, UP, valid=True, sentiment=0.2),
            _rec("p4", UP, UP, valid=True, sentiment=0.0)]
    days = A.stock_days(recs, items, _returns())
    assert [(d["date"], d["n_titles"], d["n_predictions"]) for d in days] == [
        ("2021-03-03", 2, 3), ("2021-03-04", 1, 1), ("2021-03-08", 1, 1)]
    assert days[0]["share_up"] == 1 / 3  # one [상승] of three predictions (the invalid one counts)
    assert days[0]["mean_sentiment"] == pytest.approx((0.5 - 0.1) / 2)
    assert [d["ret"] for d in days] == [0.01, -0.02, 0.03]
    # the next session: 03-04 after 03-03, 03-08 after 03-04 (03-05 was not traded), none after the last day
    assert [(d["next_date"], d["ret_next"]) for d in days] == [("2021-03-04", -0.02), ("2021-03-08", 0.03),
                                                               (None, None)]
    assert "ret_next" not in A.stock_days(recs, items)[0]  # no returns file: no next session


DAYS = [  # a hand-made day table: two stocks, ties in the share
    {"code": "A", "share_up": 0.5, "ret": 0.010, "ret_next": -0.004}, {"code": "A", "share_up": 1.0, "ret": 0.020,
                                                                      "ret_next": 0.001},
    {"code": "A", "share_up": 0.0, "ret": -0.015, "ret_next": 0.012}, {"code": "A", "share_up": 0.5, "ret": 0.003,
                                                                       "ret_next": None},
    {"code": "A", "share_up": 0.25, "ret": -0.002, "ret_next": 0.007},
    {"code": "B", "share_up": 0.75, "ret": 0.004, "ret_next": -0.010}, {"code": "B", "share_up": 0.5, "ret": -0.030,
                                                                        "ret_next": 0.020},
    {"code": "B", "share_up": 0.0, "ret": 0.001, "ret_next": 0.002}, {"code": "B", "share_up": 1.0, "ret": 0.025,
                                                                      "ret_next": -0.005},
    {"code": "B", "share_up": 0.5, "ret": 0.011, "ret_next": 0.000}, {"code": "B", "share_up": 0.25, "ret": -0.006,
                                                                      "ret_next": 0.004},
]


def test_pearson_and_spearman_match_scipy_per_stock_and_pooled():
    res = A.day_correlations(DAYS, "share_up")
    for scope, rows in (("pooled", DAYS), ("A", DAYS[:5]), ("B", DAYS[5:])):
        got = res["pooled"] if scope == "pooled" else res["by_stock"][scope]
        for y in ("ret", "ret_next"):
            pairs = [(d["share_up"], d[y]) for d in rows if d[y] is not None]
            x, v = zip(*pairs)
            assert got[y]["n"] == len(pairs)
            assert got[y]["pearson"] == pytest.approx(pearsonr(x, v).statistic, abs=1e-12)
            assert got[y]["spearman"] == pytest.approx(spearmanr(x, v).statistic, abs=1e-12)
    assert A.correlation([1, 2], [3, 4])["pearson"] is None  # fewer than MIN_DAYS days
    assert A.correlation([1, 1, 1, 1], [1, 2, 3, 4])["pearson"] is None  # no spread


def _loop_bootstrap(x: list[float], y: list[float], seed: int, resamples: int = 2000) -> dict[str, list[float]]:
    """The bootstrap over days written the slow, obvious way: one resample at a time, scipy for each statistic."""
    rng = np.random.default_rng(seed)
    xs, ys = np.array(x), np.array(y)
    out: dict[str, list[float]] = {"pearson": [], "spearman": []}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(resamples):
            idx = rng.integers(0, len(xs), len(xs))
            out["pearson"].append(float(pearsonr(xs[idx], ys[idx]).statistic))
            out["spearman"].append(float(spearmanr(xs[idx], ys[idx]).statistic))
    return {k: [float(q) for q in np.percentile([v for v in vals if np.isfinite(v)], [2.5, 97.5])]
            for k, vals in out.items()}


def test_bootstrap_over_days_matches_an_independent_computation():
    rng = np.random.default_rng(3)
    x = list(rng.integers(0, 5, 60) / 4)           # shares with ties
    y = list(0.3 * np.array(x) + rng.normal(0, 0.5, 60))
    got = A.correlation(x, y, Bootstrap(seed=7))
    # the same draws (one resample per row of the same generator): the same interval up to rounding
    same = _loop_bootstrap(x, y, seed=7)
    for stat in ("pearson", "spearman"):
        assert got[f"{stat}_ci95"] == pytest.approx(same[stat], abs=1e-9)
        assert got[f"{stat}_undefined"] == 0
    # other draws: the same interval up to bootstrap noise
    other = _loop_bootstrap(x, y, seed=12345)
    for stat in ("pearson", "spearman"):
        assert got[f"{stat}_ci95"] == pytest.approx(other[stat], abs=0.05)
    assert got["resamples"] == 2000 and got["seed"] == 7


def test_pooled_bootstrap_resamples_stock_days_together():
    res = A.day_correlations(DAYS, "share_up", Bootstrap(seed=1))
    x = [d["share_up"] for d in DAYS]
    y = [d["ret"] for d in DAYS]
    loop = _loop_bootstrap(x, y, seed=1)
    assert res["pooled"]["ret"]["pearson_ci95"] == pytest.approx(loop["pearson"], abs=1e-9)


def test_holm_matches_statsmodels_and_skips_missing_p():
    ps = [0.01, None, 0.04, 0.03, 0.2]
    want = multipletests([0.01, 0.04, 0.03, 0.2], method="holm")[1]
    got = A.holm(ps)
    assert got[1] is None
    assert [got[i] for i in (0, 2, 3, 4)] == pytest.approx(list(want), abs=0)
    assert A.holm([]) == []

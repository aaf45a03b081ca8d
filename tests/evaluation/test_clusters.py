"""Intervals and tests when an item has several predictions: the item is the unit (issue 13)."""
from __future__ import annotations

import numpy as np
import pytest

from kofinsent.evaluation import metrics as M
from kofinsent.evaluation.clusters import Bootstrap, Clusters, ratio_ci, vote

U, D = M.LABELS
NOISE = 0.012  # percentile-bootstrap endpoints (2,000 resamples) against Wilson at n = 120..300


def one_run(n: int, acc: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """n items with balanced gold labels, exactly round(acc * n) of them predicted right."""
    rng = np.random.default_rng(seed)
    gold = [U if i % 2 else D for i in range(n)]
    right = set(rng.choice(n, round(acc * n), replace=False).tolist())
    flip = {U: D, D: U}
    return gold, [g if i in right else flip[g] for i, g in enumerate(gold)]


def test_three_identical_fewshot_seeds_give_the_one_seed_interval():
    gold, pred = one_run(120, 0.55)
    single = M.classification_metrics(gold, pred)
    ids = list(range(120)) * 3  # the runner's order: seed 1's items, then seed 2's, then seed 3's
    tripled = M.classification_metrics(gold * 3, pred * 3, ids=ids, boot=Bootstrap(seed=3))
    assert (tripled["n"], tripled["n_predictions"], single["n"]) == (120, 360, 120)
    assert tripled["accuracy"] == single["accuracy"]
    assert tripled["accuracy_ci95"] == pytest.approx(single["accuracy_ci95"], abs=NOISE)
    # the naive interval at 360 "items" is far narrower: the test is not passing by tolerance alone
    naive = M.wilson_ci(round(0.55 * 360), 360)
    assert naive[1] - naive[0] < 0.6 * (tripled["accuracy_ci95"][1] - tripled["accuracy_ci95"][0])
    # one outcome per item: the binomial tests are exactly the single run's
    assert tripled["tested_correct"] == round(0.55 * 120)
    assert tripled["binom_p_vs_chance"] == single["binom_p_vs_chance"]
    assert tripled["binom_p_vs_majority"] == single["binom_p_vs_majority"]
    assert tripled["inference"]["interval"] == "cluster_bootstrap_percentile"
    assert tripled["inference"]["bootstrap_seed"] == 3 and tripled["inference"]["bootstrap_resamples"] == 2000
    assert single["inference"]["interval"] == "wilson"


def sentiment_records(items: int, iterations: int, correct: set[int]) -> list[dict]:
    out = []
    for it in range(iterations):  # run_sentiment's order: one iteration over all items, then the next
        for i in range(items):
            gold = U if i % 2 else D
            s = (0.6 if gold == U else -0.6) * (1 if i in correct else -1)
            out.append({"id": f"t{i}", "gold": gold, "raw": "", "valid": True, "sentiment": s, "confidence": 0.5,
                        "seconds": 0.1, "iteration": it})
    return out


def test_fifteen_identical_iterations_give_the_one_iteration_interval():
    correct = set(np.random.default_rng(1).choice(300, 160, replace=False).tolist())
    one = M.sentiment_metrics(sentiment_records(300, 1, correct))
    many = M.sentiment_metrics(sentiment_records(300, 15, correct))
    assert (many["n"], many["n_predictions"], many["iterations"]) == (300, 4500, 15)
    assert many["accuracy"] == one["accuracy"] == 160 / 300
    assert many["accuracy_ci95"] == pytest.approx(one["accuracy_ci95"], abs=NOISE)
    assert many["accuracy_decided_ci95"] == pytest.approx(one["accuracy_decided_ci95"], abs=NOISE)
    half = (many["accuracy_ci95"][1] - many["accuracy_ci95"][0]) / 2
    assert 0.05 < half < 0.062  # about +-5.7 points at 300 items, not +-1.5 at 4,500 replies
    assert many["binom_p_vs_chance"] == one["binom_p_vs_chance"]


def disagreeing_repeats(n_items: int = 200, k: int = 5, seed: int = 7) -> tuple[list[int], np.ndarray]:
    """Items of different difficulty, k repeats each that disagree with one another."""
    rng = np.random.default_rng(seed)
    p_item = rng.beta(2, 2, n_items)
    ids = np.repeat(np.arange(n_items), k)
    hits = rng.random(n_items * k) < p_item[ids]
    return ids.tolist(), hits


def test_cluster_interval_matches_independent_references():
    import statsmodels.api as sm

    ids, hits = disagreeing_repeats()
    got = ratio_ci(Clusters.of(ids), hits, boot=Bootstrap(seed=0))
    # (1) a plain resampling loop, written here: draw items with replacement, pool all their predictions
    rng = np.random.default_rng(12345)
    by_item = np.zeros((200, 2))
    np.add.at(by_item, np.asarray(ids), np.c_[hits, np.ones_like(hits)])
    draws = [by_item[rng.integers(0, 200, 200)].sum(0) for _ in range(20_000)]
    ref = np.percentile([c / m for c, m in draws], [2.5, 97.5])
    assert got == pytest.approx(ref.tolist(), abs=0.01)
    # (2) the analytic cluster-robust (sandwich) interval of the mean, from statsmodels
    fit = sm.OLS(hits.astype(float), np.ones((len(hits), 1))).fit(cov_type="cluster",
                                                                  cov_kwds={"groups": np.asarray(ids)})
    assert got == pytest.approx(fit.conf_int(0.05)[0].tolist(), abs=0.01)


def test_repeats_that_disagree_narrow_the_interval_honestly():
    """With k disagreeing repeats per item the mean over repeats is less noisy than one repeat: the cluster interval
    lies between the naive one at n_predictions and the one-repeat interval at n items."""
    ids, hits = disagreeing_repeats()
    got = ratio_ci(Clusters.of(ids), hits)
    first = hits[::5]
    one = M.wilson_ci(int(first.sum()), 200)
    naive = M.wilson_ci(int(hits.sum()), 1000)
    widths = [ci[1] - ci[0] for ci in (naive, got, one)]
    assert widths == sorted(widths) and len(set(widths)) == 3


def test_the_bootstrap_is_seeded_and_refuses_too_few_resamples():
    ids, hits = disagreeing_repeats()
    c = Clusters.of(ids)
    assert ratio_ci(c, hits, boot=Bootstrap(seed=4)) == ratio_ci(c, hits, boot=Bootstrap(seed=4))
    # accuracies are multiples of 1/1000, so two seeds can share endpoints; six cannot all agree by chance
    assert len({tuple(ratio_ci(c, hits, boot=Bootstrap(seed=s))) for s in range(6)}) > 1
    with pytest.raises(ValueError, match="resamples = 500"):
        Bootstrap(resamples=500)


def test_vote_ties_go_to_the_earliest_tied_label():
    c = Clusters.of(["a", "b", "a", "b", "a", "c", "c"])
    assert vote(c, [U, D, D, U, D, None, U]) == [D, D, None]
    # a: U, D, D -> D; b: D, U tie -> b's earliest, D; c: None, U tie -> c's earliest, None (invalid = wrong)


def test_mcc_is_null_where_undefined_not_zero():
    assert M.classification_metrics([U, D, U], [U, U, U])["mcc"] is None  # one predicted class
    assert M.classification_metrics([U, U, U], [U, D, U])["mcc"] is None  # one gold class
    assert M.classification_metrics([U, D, U, D], [U, D, D, D])["mcc"] == pytest.approx(1 / 3 ** 0.5)


def test_a_negative_eval_seed_is_refused_before_any_item():
    """The run's seed also seeds the bootstrap, which takes no negative seed: refused at validation, not after
    every item has been scored."""
    from kofinsent.evaluation.evaluate import EvalConfig, EvalConfigError

    with pytest.raises(EvalConfigError, match="--seed must be an integer >= 0, got -1"):
        EvalConfig(backend="hf", model="m", data="x", out="o", seed=-1).validate(check_files=False)

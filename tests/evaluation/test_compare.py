"""compare_runs pairs items, not (item, seed) rows: McNemar on one majority vote per item, plus mid-p and a paired
bootstrap of the accuracy difference (issue 13)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom

from kofinsent.evaluation import metrics as M
from kofinsent.evaluation.compare import compare_runs

U, D = M.LABELS


def write_run(path: Path, rows: list[tuple[str, str, str | None]], method: str = "loglikelihood") -> Path:
    """rows: (id, gold, pred), in the run's order."""
    path.mkdir(parents=True)
    path.joinpath("predictions.jsonl").write_text(
        "".join(json.dumps({"id": i, "gold": g, "pred": p}) + "\n" for i, g, p in rows), encoding="utf-8")
    path.joinpath("metrics.json").write_text(json.dumps({"method": method}), encoding="utf-8")
    return path


def test_mcnemar_midp_by_formula():
    gold = [U] * 30
    a = [U] * 21 + [D] * 9   # A right on 21
    b = [U] * 20 + [D] + [U] * 6 + [D] * 3  # b = 1 (A right, B wrong), c = 6 (A wrong, B right)
    m = M.mcnemar(gold, a, b)
    assert (m["mcnemar_b"], m["mcnemar_c"]) == (1, 6)
    exact = 2 * binom.cdf(1, 7, 0.5)
    assert m["mcnemar_p"] == pytest.approx(exact, rel=1e-12)
    assert m["mcnemar_midp"] == pytest.approx(exact - binom.pmf(1, 7, 0.5), rel=1e-12)
    assert M.mcnemar([U, D], [U, D], [U, D])["mcnemar_midp"] == 1.0  # no discordant pair


def test_one_prediction_per_item_keeps_todays_numbers(tmp_path):
    rng = np.random.default_rng(0)
    gold = [U if i % 2 else D for i in range(60)]
    pa = [g if rng.random() < 0.7 else None for g in gold]
    pb = [g if rng.random() < 0.5 else (D if g == U else U) for g in gold]
    a = write_run(tmp_path / "a", [(f"i{i}", g, p) for i, (g, p) in enumerate(zip(gold, pa))])
    b = write_run(tmp_path / "b", [(f"i{i}", g, p) for i, (g, p) in enumerate(zip(gold, pb))])
    out = compare_runs(a, b)
    expected = M.mcnemar(gold, pa, pb)
    assert {k: out[k] for k in expected} == expected
    assert out["n_paired"] == 60 and out["mcnemar_on"] == "predictions" and "tie_rule" not in out


def test_repeated_runs_enter_mcnemar_once_per_item(tmp_path):
    """A: 3 few-shot seeds per item; B: one prediction. McNemar sees 4 items, each with A's majority vote."""
    items = [("i0", U), ("i1", D), ("i2", U), ("i3", D)]
    seeds = [[U, D, U, U],   # seed 1
             [U, D, D, U],   # seed 2
             [D, U, D, D]]   # seed 3
    # votes: i0 U,U,D -> U (right); i1 D,D,U -> D (right); i2 U,D,D -> D (wrong); i3 U,U,D -> U (wrong)
    a = write_run(tmp_path / "a", [(i, g, s[k]) for s in seeds for k, (i, g) in enumerate(items)])
    b = write_run(tmp_path / "b", [(i, g, D) for i, g in items])
    out = compare_runs(a, b)
    assert out["n_paired"] == 4 and out["mcnemar_on"] == "item_majority_vote"
    assert (out["mcnemar_b"], out["mcnemar_c"], out["both_correct"], out["both_wrong"]) == (1, 1, 1, 1)
    assert (out["n_predictions_a"], out["n_predictions_b"]) == (12, 4)
    assert out["accuracy_diff"] == pytest.approx(6 / 12 - 2 / 4)


def test_accuracy_difference_interval_is_a_paired_item_bootstrap(tmp_path):
    rng = np.random.default_rng(3)
    n, k = 150, 3
    gold = [U if i % 2 else D for i in range(n)]
    hard = rng.random(n)
    rows_a = [(f"i{i}", gold[i], gold[i] if rng.random() > hard[i] * 0.8 else None) for _ in range(k) for i in range(n)]
    rows_b = [(f"i{i}", gold[i], gold[i] if rng.random() > hard[i] else None) for i in range(n)]
    out = compare_runs(write_run(tmp_path / "a", rows_a), write_run(tmp_path / "b", rows_b))
    # independent reference: resample items, pool each run's predictions of the drawn items
    ca, na, cb = np.zeros(n), np.zeros(n), np.zeros(n)
    for i, g, p in rows_a:
        ca[int(i[1:])] += p == g
        na[int(i[1:])] += 1
    for i, g, p in rows_b:
        cb[int(i[1:])] += p == g
    ref_rng = np.random.default_rng(99)
    diffs = []
    for _ in range(20_000):
        j = ref_rng.integers(0, n, n)
        diffs.append(ca[j].sum() / na[j].sum() - cb[j].sum() / n)
    assert out["accuracy_diff"] == pytest.approx(ca.sum() / na.sum() - cb.sum() / n)
    assert out["accuracy_diff_ci95"] == pytest.approx(np.percentile(diffs, [2.5, 97.5]).tolist(), abs=0.012)
    assert out["accuracy_diff_bootstrap"] == {"resamples": 2000, "seed": 0, "unit": "item"}


def test_runs_on_different_items_are_refused(tmp_path):
    a = write_run(tmp_path / "a", [("x", U, U)])
    b = write_run(tmp_path / "b", [("y", U, U)])
    with pytest.raises(ValueError, match="share no test item ids"):
        compare_runs(a, b)

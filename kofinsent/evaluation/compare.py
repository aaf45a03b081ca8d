"""Paired comparison of two run directories evaluated on the same test items."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from kofinsent.runs import read_json, read_jsonl


def _per_item(records: list[dict[str, Any]], labels: tuple[str, ...]) -> tuple[Any, dict[Any, Any], dict[Any, Any]]:
    """Clusters of a run's records, each item's gold label and its one prediction (majority vote when repeated)."""
    from kofinsent.evaluation.clusters import Clusters, first_per_item, vote

    clusters = Clusters.of([r["id"] for r in records])
    gold = dict(zip(clusters.keys, first_per_item(clusters, [r["gold"] for r in records])))
    preds = [r.get("pred") if r.get("pred") in labels else None for r in records]
    return clusters, gold, dict(zip(clusters.keys, vote(clusters, preds)))


def accuracy_difference(a: list[dict[str, Any]], b: list[dict[str, Any]], ids: list[Any],
                        seed: int = 0) -> dict[str, Any]:
    """Accuracy of A minus accuracy of B on the shared items (each the mean over all of the run's predictions),
    with a paired percentile bootstrap over items (each item resampled with all of its predictions in both runs)."""
    import numpy as np

    from kofinsent.evaluation.clusters import Bootstrap, cluster_ci

    pos = {i: j for j, i in enumerate(ids)}
    sums = np.zeros((4, len(ids)))  # correct_a, count_a, correct_b, count_b per item
    for k, recs in ((0, a), (2, b)):
        for r in recs:
            if (j := pos.get(r["id"])) is not None:
                sums[k, j] += r.get("pred") == r["gold"]
                sums[k + 1, j] += 1

    def diff(ca: Any, na: Any, cb: Any, nb: Any, axis: int = -1) -> Any:
        return ca.sum(axis) / na.sum(axis) - cb.sum(axis) / nb.sum(axis)

    boot = Bootstrap(seed=seed)
    return {"accuracy_diff": float(diff(*sums)), "accuracy_diff_ci95": cluster_ci(list(sums), diff, boot),
            "accuracy_diff_bootstrap": {"resamples": boot.resamples, "seed": boot.seed, "unit": "item"}}


def compare_runs(run_a: str | Path, run_b: str | Path, seed: int = 0) -> dict[str, Any]:
    """``mcnemar_p`` / ``mcnemar_midp`` for classification runs; ``levene_p`` / ``welch_p`` (+ Holm, + per-item paired
    tests) for sentiment runs. Pairs are test items (by id): a run with several predictions per item (few-shot seeds,
    iterations) enters McNemar with one majority-vote prediction per item (:data:`clusters.TIE_RULE`), and the
    accuracy difference gets a paired bootstrap interval over items (``seed``)."""
    from kofinsent.evaluation import metrics as M
    from kofinsent.evaluation.clusters import TIE_RULE

    a_dir, b_dir = Path(run_a), Path(run_b)
    a, b = list(read_jsonl(a_dir / "predictions.jsonl")), list(read_jsonl(b_dir / "predictions.jsonl"))
    ma, mb = read_json(a_dir / "metrics.json"), read_json(b_dir / "metrics.json")
    result: dict[str, Any] = {"run_a": str(a_dir), "run_b": str(b_dir),
                              "method_a": ma.get("method"), "method_b": mb.get("method")}
    if ma.get("method") == "sentiment" and mb.get("method") == "sentiment":
        result.update(M.compare_sentiment(a, b))
    ca, gold_a, vote_a = _per_item(a, M.LABELS)
    cb, gold_b, vote_b = _per_item(b, M.LABELS)
    ids = [i for i in ca.keys if i in gold_b]
    if not ids:
        raise ValueError(f"{a_dir} and {b_dir} share no test item ids: they were not run on the same test set")
    if any(gold_a[i] != gold_b[i] for i in ids):
        raise ValueError("the two runs disagree on gold labels for the same ids: different datasets")
    result.update(M.mcnemar([gold_a[i] for i in ids], [vote_a[i] for i in ids], [vote_b[i] for i in ids]))
    result["n_paired"] = len(ids)
    result["mcnemar_on"] = "item_majority_vote" if ca.repeated or cb.repeated else "predictions"
    if ca.repeated or cb.repeated:
        result["tie_rule"] = TIE_RULE
    result["n_predictions_a"], result["n_predictions_b"] = len(a), len(b)
    result.update(accuracy_difference(a, b, ids, seed))
    return result

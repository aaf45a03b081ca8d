"""Paired comparison of two run directories evaluated on the same test items."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .runs import read_json, read_jsonl


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["id"], r.get("fewshot_seed"), r.get("iteration"))


def compare_runs(run_a: str | Path, run_b: str | Path) -> dict[str, Any]:
    """``mcnemar_p`` for classification runs; ``levene_p`` / ``welch_p`` (+ Holm, + per-item paired tests) for
    sentiment runs. Items are paired by id (and few-shot seed / iteration when both runs have them)."""
    from . import metrics as M

    a_dir, b_dir = Path(run_a), Path(run_b)
    a, b = list(read_jsonl(a_dir / "predictions.jsonl")), list(read_jsonl(b_dir / "predictions.jsonl"))
    ma, mb = read_json(a_dir / "metrics.json"), read_json(b_dir / "metrics.json")
    result: dict[str, Any] = {"run_a": str(a_dir), "run_b": str(b_dir),
                              "method_a": ma.get("method"), "method_b": mb.get("method")}
    sentiment = ma.get("method") == "sentiment" and mb.get("method") == "sentiment"
    if sentiment:
        result.update(M.compare_sentiment(a, b))
    by_key_b = {_key(r): r for r in b}
    keys = [k for k in map(_key, a) if k in by_key_b]
    if not keys:  # different few-shot seeds or iterations: pair on the item alone (first record per id)
        first_b = {}
        for r in b:
            first_b.setdefault(r["id"], r)
        pairs = [(r, first_b[r["id"]]) for r in a if r["id"] in first_b]
    else:
        by_key_a = {_key(r): r for r in a}
        pairs = [(by_key_a[k], by_key_b[k]) for k in keys]
    if not pairs:
        raise ValueError(f"{a_dir} and {b_dir} share no test item ids: they were not run on the same test set")
    gold = [x["gold"] for x, _ in pairs]
    if any(x["gold"] != y["gold"] for x, y in pairs):
        raise ValueError("the two runs disagree on gold labels for the same ids: different datasets")
    result.update(M.mcnemar(gold, [x["pred"] for x, _ in pairs], [y["pred"] for _, y in pairs]))
    result["n_paired"] = len(pairs)
    return result

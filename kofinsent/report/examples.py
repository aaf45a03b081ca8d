"""Example test items per run: the most confidently wrong predictions and a few confidently right ones.

Error analysis is how seed 003 discusses its result (sarcasm, posts unrelated to the stock), so every report quotes
titles. Confidence by method: log-likelihood — the margin |loglik(up) - loglik(down)|; baselines — |P(up) - 0.5|;
sentiment — the model's own confidence. Generation has no score: its wrong answers are listed in file order.
"""
from __future__ import annotations

from typing import Any

from kofinsent.report.cite import Num, Source, Text, text
from kofinsent.report.collect import Step
from kofinsent.report.escape import shorten
from kofinsent.report.tables import Column, Table

TITLE_CHARS = 120  # titles are shortened before escaping (clarifications, issue 6)


def prediction_confidence(step: Step, r: dict[str, Any]) -> float | None:
    """How sure the prediction ``r`` is, by method (module docstring); None when it carries no score."""
    ll, p, c = r.get("loglik"), r.get("prob_up"), r.get("confidence")
    if step.kind == "baseline" and isinstance(p, (int, float)):
        return abs(p - 0.5)
    if isinstance(ll, list) and len(ll) == 2 and all(isinstance(x, (int, float)) for x in ll):
        return abs(ll[0] - ll[1])
    if step.is_sentiment and isinstance(c, (int, float)):
        return float(c)
    return None


def _record_key(r: dict[str, Any]) -> dict[str, Any]:
    """The fields that pick this line out of predictions.jsonl (k-shot: one line per seed; sentiment: per
    iteration)."""
    key = {"id": r["id"]}
    for k in ("fewshot_seed", "iteration"):
        if r.get(k) is not None:
            key[k] = r[k]
    return key


def prediction_score(step: Step, r: dict[str, Any]) -> tuple[str, list[Num | str | None]]:
    """(column header, cell parts) for the score shown next to ``r``, cited from its line of predictions.jsonl."""
    src = Source(step.run.label, step.file("predictions.jsonl"), r)
    rec = _record_key(r)
    if step.kind == "baseline":
        return "P(up)", [src.num(("prob_up",), "f3", record=rec)]
    if "loglik" in r:
        return "loglik(up) - loglik(down)", [src.num(("loglik",), "f2", derive="diff", record=rec)]
    if step.is_sentiment:
        sent = src.num(("sentiment",), "f2", record=rec)
        return "confidence (sentiment)", [src.num(("confidence",), "f2", record=rec),
                                          *((" (", sent, ")") if sent is not None else ())]
    return "score", []


def prediction_label(r: dict[str, Any]) -> str:
    """The prediction as a table shows it; a reply without one is "abstain" (valid, sentiment 0) or "invalid"."""
    if r.get("pred") is not None:
        return str(r["pred"])
    return "abstain" if r.get("valid") and r.get("sentiment") == 0 else "invalid"


def _pick(step: Step, records: list[dict[str, Any]], wrong: bool, n: int) -> list[dict[str, Any]]:
    chosen = [r for r in records if (r.get("pred") != r.get("gold")) == wrong]
    if any(prediction_confidence(step, r) is not None for r in chosen):
        chosen = [r for r in chosen if prediction_confidence(step, r) is not None]
        # Most confident first; ties broken by id so the report is the same on every run.
        chosen.sort(key=lambda r: (-prediction_confidence(step, r), str(r["id"])))  # type: ignore[operator]
    out, seen = [], set()
    for r in chosen:  # one line per item: k-shot seeds and sentiment iterations repeat the title
        if r["id"] not in seen:
            seen.add(r["id"])
            out.append(r)
        if len(out) == n:
            break
    return out


def examples_table(step: Step, n_wrong: int, index: int) -> Table | None:
    """``n_wrong`` most confidently wrong items and ``max(1, n_wrong // 2)`` confidently right ones."""
    records = [r for r in step.predictions or [] if "id" in r and "title" in r]
    if not records or n_wrong < 1:
        return None
    picked = [(r, "wrong") for r in _pick(step, records, True, n_wrong)]
    picked += [(r, "right") for r in _pick(step, records, False, max(1, n_wrong // 2))]
    if not picked:
        return None
    header = prediction_score(step, picked[0][0])[0]
    cols = [Column("Title", width="0.48\\linewidth"), Column("Gold"), Column("Prediction"), Column("Outcome"),
            Column(header, True)]
    table = Table(f"examples-{index}", f"Example test titles for {step.name}: the {n_wrong} most confidently "
                  f"wrong predictions, then confidently right ones. Score: {header}. Source: "
                  f"{step.cite}/predictions.jsonl.", cols, section="examples")
    for r, outcome in picked:
        row: list[Text] = [text(shorten(str(r["title"]), TITLE_CHARS)), text(str(r.get("gold"))),
                           text(prediction_label(r)), text(outcome)]
        parts = prediction_score(step, r)[1]
        row.append(text(*parts) if any(isinstance(p, Num) for p in parts) else text("—"))
        table.rows.append(row)
    return table

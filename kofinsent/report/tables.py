"""The report's tables as format-free data: columns and cells of :class:`~kofinsent.report.cite.Text`.

Every number in a cell is a sourced :class:`~kofinsent.report.cite.Num` read from a run's metrics.json (or a
compare json); a missing value prints "n/a", never a made-up one. Renderers escape the cells for their format.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kofinsent.report.cite import Num, Source, Text, text
from kofinsent.report.collect import Step

SEED003_SHOTS = (0, 5, 10, 50)  # the columns of seed 003's table
NA = "n/a"


@dataclass
class Column:
    name: str
    numeric: bool = False
    width: str | None = None  # LaTeX p{...} width for long text (titles); None: l / r


@dataclass
class Table:
    id: str
    caption: str
    columns: list[Column]
    rows: list[list[Text]] = field(default_factory=list)
    section: str = "results"

    @property
    def label(self) -> str:
        return f"tab:{self.id}"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "caption": self.caption, "label": self.label,
                "columns": [{"name": c.name, "numeric": c.numeric} for c in self.columns],
                "rows": [[cell.to_json() for cell in row] for row in self.rows]}


def or_na(num: Num | None, *rest: str | Num | None) -> Text:
    """``num`` followed by ``rest``; "n/a" alone when ``num`` is missing (the run did not record it)."""
    return text(num, *rest) if num is not None else text(NA)


def accuracy_cell(src: Source, acc_key: str = "accuracy", ci_key: str = "accuracy_ci95") -> Text:
    """"49.3% [45.6, 53.1]": the accuracy and its 95% interval (as metrics.json made it: Wilson, or the cluster
    bootstrap over items when items have several predictions) in percentage points."""
    acc = src.num((acc_key,), "pct")
    if acc is None:
        return text(NA)
    lo, hi = src.num((ci_key, 0), "pp"), src.num((ci_key, 1), "pp")
    return text(acc, " [", lo, ", ", hi, "]") if lo is not None and hi is not None else text(acc)


def _bold_best(rows: list[list[Text]], col: int, values: list[float | None]) -> None:
    """Bold the cell(s) holding the highest value of a column (ties: all of them)."""
    present = [v for v in values if v is not None]
    if not present:
        return
    best = max(present)
    for row, v in zip(rows, values):
        if v is not None and v == best:
            row[col].bold = True


def main_table(steps: list[Step]) -> Table:
    cols = [Column("Model"), Column("Method"), Column("Prompt"), Column("Shots", True), Column("n", True),
            Column("Accuracy [95% CI]", True), Column("Macro-F1", True), Column("MCC", True),
            Column("Invalid", True), Column("p vs majority", True), Column("Source")]
    table = Table("main", "Main results on the test set. n: distinct test items. Accuracy: the mean over all "
                          "predictions (k-shot: items x few-shot seeds; sentiment: items x iterations, an invalid "
                          "or abstaining reply counts as wrong; invalid predictions count as wrong everywhere). 95% "
                          "interval: Wilson when each item has one prediction; otherwise a percentile bootstrap over "
                          "items, each resampled with all of its predictions (see Methods, Statistics). p: one-sided "
                          "binomial test against the majority-class rate of the test items, on one outcome per item "
                          "(majority vote when an item has several predictions). Best accuracy in bold.", cols)
    for s in steps:
        m = s.metrics_src
        shots = m.num(("shots",), "int") if s.is_kshot else None
        table.rows.append([
            text(s.name), text(s.method), text(s.prompt or "—"), text(shots) if shots else text("—"),
            or_na(m.num(("n",), "int")), accuracy_cell(m), or_na(m.num(("macro_f1",), "f3")),
            or_na(m.num(("mcc",), "f3")), or_na(m.num(("invalid_rate",), "pct")),
            or_na(m.num(("binom_p_vs_majority",), "p")), text(s.cite),
        ])
    _bold_best(table.rows, 5, [s.metrics.get("accuracy") for s in steps])
    return table


def _kshot_row_key(s: Step) -> tuple[str, str]:
    return (s.model if not s.config.get("adapter") else f"{s.model} + {s.toml.get('adapter') or s.config['adapter']}",
            s.method)


def kshot_table(steps: list[Step]) -> Table | None:
    """Seed 003's layout: models x {0, 5, 10, 50} shots, accuracy mean ± sd over few-shot seeds, with n."""
    ks = [s for s in steps if s.is_kshot]
    if not ks:
        return None
    shots = sorted(set(SEED003_SHOTS) | {int(s.metrics.get("shots") or 0) for s in ks})
    keys: list[tuple[str, str]] = []
    for s in ks:
        if _kshot_row_key(s) not in keys:
            keys.append(_kshot_row_key(s))
    methods = {k[1] for k in keys}
    cols = [Column("Model")] + [Column(f"{k}-shot", True) for k in shots] + [Column("Source")]
    table = Table("kshot", "k-shot accuracy (%) in seed 003's layout: mean ± sd over few-shot seeds (sd with ddof 1), "
                           "each on the same n test items; best mean per column in bold.", cols)
    means: list[list[float | None]] = []
    for key in keys:
        row: list[Text] = [text(key[0] if len(methods) == 1 else f"{key[0]} ({key[1]})")]
        row_means: list[float | None] = []
        cites: list[str] = []
        for k in shots:
            hit = [s for s in ks if _kshot_row_key(s) == key and int(s.metrics.get("shots") or 0) == k]
            if not hit:
                row.append(text("—"))
                row_means.append(None)
                continue
            s = hit[0]  # one eval per (model, method, shots); a duplicate would be a second row in the main table
            cites.append(s.cite)
            m = s.metrics_src
            if isinstance(s.metrics.get("fewshot_accuracy"), dict):
                mean = m.num(("fewshot_accuracy", "mean"), "pp")
                sd = m.num(("fewshot_accuracy", "sd"), "pp")
                row.append(text(mean, " ± ", sd, " (n=", m.num(("n_items",), "int"), ", ",
                                m.num(("fewshot_accuracy", "n"), "int"), " seeds)") if mean else text(NA))
                row_means.append(s.metrics["fewshot_accuracy"].get("mean"))
            else:  # a single few-shot seed: no spread to show
                acc = m.num(("accuracy",), "pp")
                seeds = s.config_src.num(("fewshot_seeds",), "int", derive="len")
                row.append(text(acc, " (n=", m.num(("n",), "int"), ", ", seeds, " seed)") if acc else text(NA))
                row_means.append(s.metrics.get("accuracy"))
        row.append(text(join_cites(cites)))
        table.rows.append(row)
        means.append(row_means)
    for j in range(len(shots)):
        _bold_best(table.rows, j + 1, [r[j] for r in means])
    return table


def join_cites(cites: list[str]) -> str:
    """"exp/id:eval/a, eval/b" when the cites share a run, else each in full."""
    runs = {c.split(":", 1)[0] for c in cites}
    if len(runs) == 1 and all(":" in c for c in cites):
        run = runs.pop()
        return f"{run}:" + ", ".join(c.split(":", 1)[1] for c in cites)
    return "; ".join(cites)


def sentiment_table(steps: list[Step]) -> Table | None:
    ss = [s for s in steps if s.is_sentiment]
    if not ss:
        return None
    cols = [Column("Model"), Column("Quantization"), Column("n predictions (items x iterations)", True),
            Column("Valid JSON", True), Column("Mean sentiment", True), Column("Variance", True),
            Column("Mean confidence", True), Column("s / sample", True), Column("Accuracy [95% CI]", True),
            Column("Source")]
    table = Table("sentiment", "Seed 000 measures per model over n predictions = replies (strictly valid JSON "
                               "only for the sentiment and confidence columns). Variance: the sample variance of "
                               "each item's valid sentiments across iterations, averaged over items. Accuracy: the "
                               "sign of the sentiment against the price direction, over all replies (invalid and zero "
                               "sentiments count as wrong), with the 95% percentile bootstrap over items (each "
                               "with all of its iterations) when there are several iterations. Best accuracy in "
                               "bold.", cols)
    for s in ss:
        m = s.metrics_src
        n = m.num(("n_predictions",), "int") or m.num(("n_replies",), "int")  # n_replies: metrics before issue 13
        table.rows.append([
            text(s.name), text(s.quantization),
            or_na(n, " (", m.num(("n",), "int"), " x ", m.num(("iterations",), "int"), ")"),
            or_na(m.num(("valid_json_rate",), "pct")), or_na(m.num(("mean_sentiment",), "f3")),
            or_na(m.num(("sentiment_variance",), "f3")), or_na(m.num(("mean_confidence",), "f3")),
            or_na(m.num(("seconds_per_sample",), "f2")), accuracy_cell(m), text(s.cite),
        ])
    _bold_best(table.rows, 8, [s.metrics.get("accuracy") for s in ss])
    return table

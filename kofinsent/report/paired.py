"""The paired comparisons (compare files) with Holm's adjustment across the whole report (issue 13, point 3).

A k-shot or quantization grid holds dozens of pairs, so each p-value is shown next to its Holm-adjusted value over
the family of every paired test the report shows: each compare file's McNemar p and, for sentiment pairs, the
per-item paired tests (Wilcoxon and paired t on the item means, Wilcoxon on the item variances). The adjusted value
is a :class:`~kofinsent.report.cite.Num` whose source lists the whole family (``derive="holm"``), so it can be
recomputed with statsmodels ``multipletests(method="holm")``. The pooled Brown–Forsythe and Welch tests are not
paired: they keep compare.json's own Holm over those two.
"""
from __future__ import annotations

from typing import Any

from kofinsent.evaluation.analysis import holm
from kofinsent.report.cite import Derived, Num, Source, Src, Text, derived, text
from kofinsent.report.collect import Run
from kofinsent.report.tables import NA, Column, Table

MCNEMAR = "mcnemar_p"
SENTIMENT_PAIRED = {"paired_wilcoxon_p": "Wilcoxon, item means", "paired_t_p": "paired t, item means",
                    "paired_variance_wilcoxon_p": "Wilcoxon, item variances"}
ON = {"predictions": "one prediction per item", "item_majority_vote": "majority vote per item"}


def _is_p(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Family:
    """Every paired test p-value in the report's compare files, in table order, and its Holm-adjusted value."""

    def __init__(self, runs: list[Run]) -> None:
        self.members: list[Src] = []
        values: list[float] = []
        for run in runs:
            for f, d in run.compares:
                for key in (MCNEMAR, *SENTIMENT_PAIRED):
                    if _is_p(d.get(key)):
                        self.members.append(Src(run.label, f, (key,)))
                        values.append(float(d[key]))
        self.values = values
        self.adjusted = holm(values)
        self._pos = {(m.run, m.file, m.key[0]): i for i, m in enumerate(self.members)}

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def counts(self) -> dict[str, int]:
        n_mc = sum(m.key[0] == MCNEMAR for m in self.members)
        return {"mcnemar": n_mc, "sentiment": self.size - n_mc}

    def _params(self) -> dict[str, Any]:
        return {"method": "holm", "family": [{"run": m.run, "file": m.file, "key": list(m.key)}
                                             for m in self.members]}

    def adjusted_num(self, run: Run, file: str, key: str) -> Num | None:
        i = self._pos.get((run.label, file, key))
        if i is None:
            return None
        return derived(self.adjusted[i], "p", Derived(run.label, file, (i,), derive="holm", params=self._params()))

    def size_num(self) -> Num | None:
        if not self.members:
            return None
        first = self.members[0]
        return derived(self.size, "int", Derived(first.run, first.file, (), derive="family_size",
                                                 params=self._params()))

    def caption(self) -> str:
        c = self.counts
        return (f"Holm: adjusted over the family of all {self.size} paired tests in this report "
                f"({c['mcnemar']} McNemar p-values, one per compare file, and {c['sentiment']} paired sentiment "
                "tests), statsmodels multipletests(method=\"holm\"); raw and adjusted p side by side.")


def _pair_names(file: str, data: dict[str, Any]) -> tuple[str, str]:
    stem = file.removeprefix("compare/").removesuffix(".json")
    if "__" in stem:
        a, b = stem.split("__", 1)
        return a, b
    return (str(data.get("run_a", "A")).rstrip("/").rsplit("/", 1)[-1],
            str(data.get("run_b", "B")).rstrip("/").rsplit("/", 1)[-1])


def _or_na(*parts: str | Num | None) -> Text:
    return text(*parts) if parts and parts[0] is not None else text(NA)


def _diff_cell(src: Source) -> Text:
    diff = src.num(("accuracy_diff",), "pp")
    if diff is None:
        return text(NA)
    lo, hi = src.num(("accuracy_diff_ci95", 0), "pp"), src.num(("accuracy_diff_ci95", 1), "pp")
    return text(diff, " [", lo, ", ", hi, "]") if lo is not None and hi is not None else text(diff)


def compare_table(runs: list[Run], family: Family | None = None) -> Table | None:
    """Every compare file: paired n, accuracy difference with its paired bootstrap interval, McNemar p with its
    Holm-adjusted value and the mid-p."""
    pairs = [(r, f, d) for r in runs for f, d in r.compares]
    if not pairs:
        return None
    family = family or Family(runs)
    cols = [Column("A"), Column("B"), Column("Paired n", True), Column("Accuracy A - B [95% CI] (pp)", True),
            Column("McNemar p", True), Column("McNemar p (Holm)", True), Column("McNemar mid-p", True),
            Column("McNemar on"), Column("Source")]
    table = Table("compare", "Paired comparisons (kofinsent compare) on the test items both runs scored. Paired n: "
                             "test items. Accuracy A - B: each run's accuracy over all of its predictions, with a "
                             "95% paired percentile bootstrap over items (each item resampled with all of its "
                             "predictions in both runs; resamples and seed in the compare file). McNemar: exact "
                             "binomial below 25 discordant pairs, else chi-square with continuity correction, on one "
                             "outcome per item (majority vote over seeds / iterations when a run has several, ties "
                             "to the earliest prediction); mid-p: the exact test's mid-p, unadjusted. "
                             + family.caption(), cols)
    for run, f, d in pairs:
        src = run.src(f, d)
        a, b = _pair_names(f, d)
        table.rows.append([
            text(a), text(b), _or_na(src.num(("n_paired",), "int")), _diff_cell(src),
            _or_na(src.num((MCNEMAR,), "p")), _or_na(family.adjusted_num(run, f, MCNEMAR)),
            _or_na(src.num(("mcnemar_midp",), "p")),
            text(ON.get(str(d.get("mcnemar_on")), str(d.get("mcnemar_on") or "one prediction per item"))),
            text(f"{run.label}:{f}"),
        ])
    return table


def sentiment_compare_table(runs: list[Run], family: Family | None = None) -> Table | None:
    """Sentiment pairs: the pooled Brown–Forsythe / Welch tests (Holm over the two, as compare.json has it) and the
    per-item paired tests with their report-wide Holm values."""
    pairs = [(r, f, d) for r in runs for f, d in r.compares if any(k in d for k in ("levene_p", *SENTIMENT_PAIRED))]
    if not pairs:
        return None
    family = family or Family(runs)
    cols = [Column("A"), Column("B"), Column("Paired items", True), Column("n valid (A / B)", True),
            Column("Brown–Forsythe p", True), Column("Welch p", True), Column("BF / Welch p (Holm of 2)", True)]
    for name in SENTIMENT_PAIRED.values():
        cols += [Column(f"{name} p", True), Column(f"{name} p (Holm)", True)]
    cols.append(Column("Source"))
    table = Table("compare_sentiment", "Sentiment pairs. Brown–Forsythe (median-centred Levene) and Welch's t on "
                                       "the pooled valid sentiments (items x iterations treated as independent: "
                                       "mostly the spread between items), with compare.json's Holm over those two. "
                                       "Paired by item (items with valid replies in both runs): Wilcoxon signed-rank "
                                       "and paired t on the per-item mean sentiments, and Wilcoxon on the per-item "
                                       "variances across iterations (the run-to-run variance). "
                                       + family.caption(), cols)
    for run, f, d in pairs:
        src = run.src(f, d)
        a, b = _pair_names(f, d)
        na, nb = src.num(("n_valid_a",), "int"), src.num(("n_valid_b",), "int")
        bf, we = src.num(("levene_p_holm",), "p"), src.num(("welch_p_holm",), "p")
        row = [text(a), text(b), _or_na(src.num(("paired_items",), "int")),
               text(na, " / ", nb) if na is not None and nb is not None else text(NA),
               _or_na(src.num(("levene_p",), "p")), _or_na(src.num(("welch_p",), "p")),
               text(bf, " / ", we) if bf is not None and we is not None else text(NA)]
        for key in SENTIMENT_PAIRED:
            row += [_or_na(src.num((key,), "p")), _or_na(family.adjusted_num(run, f, key))]
        row.append(text(f"{run.label}:{f}"))
        table.rows.append(row)
    return table


def paired_tables(runs: list[Run], family: Family | None = None) -> list[Table]:
    family = family or Family(runs)
    return [t for t in (compare_table(runs, family), sentiment_compare_table(runs, family)) if t is not None]


__all__ = ["Family", "compare_table", "paired_tables", "sentiment_compare_table"]

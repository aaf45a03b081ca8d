"""Error-analysis tables (issue 13, point 5): accuracy per stock and per year, calibration, the market link, and the
most confidently wrong titles per stock.

The numbers are computed by :mod:`kofinsent.evaluation.analysis` from the run's files (predictions.jsonl joined by id
with the dataset's test.jsonl, and the dataset's returns.jsonl), so each is a :class:`~kofinsent.report.cite.Num`
whose :class:`~kofinsent.report.cite.Derived` source names the function, the files it read, its other arguments
(bootstrap resamples and seed included) and the key of the value in its result: report.json says how to recompute
every one. Results are computed once per step and shared with the figures (:func:`step_result`).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from kofinsent.evaluation import analysis as A
from kofinsent.evaluation.clusters import Bootstrap
from kofinsent.report.cite import Derived, Num, Text, derived, text
from kofinsent.report.collect import Run, Step
from kofinsent.report.escape import shorten
from kofinsent.report.examples import TITLE_CHARS, prediction_confidence, prediction_label, prediction_score
from kofinsent.report.tables import NA, Column, Table

MARKET_BOOT = Bootstrap(seed=0)  # the market link's bootstrap over stock-days (recorded with every number)
BY = {"code": "stock", "year": "year"}
X_NAMES = {"share_up": "share [상승]", "mean_sentiment": "mean sentiment"}
PREDICTIONS = "predictions.jsonl"


def step_boot(step: Step) -> Bootstrap:
    """The run's own cluster bootstrap (metrics.json ``inference``), else one seeded with the eval's seed (else 0)."""
    inf = step.metrics.get("inference") or {}
    resamples, seed = inf.get("bootstrap_resamples"), inf.get("bootstrap_seed")
    if isinstance(resamples, int) and isinstance(seed, int):
        return Bootstrap(resamples, seed)
    seed = step.config.get("seed")
    return Bootstrap(seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else 0)


def _boot_json(boot: Bootstrap) -> dict[str, int]:
    return {"resamples": boot.resamples, "seed": boot.seed}


def repeated(step: Step) -> bool:
    ids = [str(r.get("id")) for r in step.predictions or []]
    return len(set(ids)) < len(ids)


# -- computing once per step ---------------------------------------------------------------------------------------
def _inputs(step: Step, *, items: bool = True, returns: bool = False) -> tuple[tuple[str, str], ...]:
    out = [("records", step.file(PREDICTIONS))]
    if items and step.run.test_file:
        out.append(("items", step.run.test_file))
    if returns and step.run.returns_file:
        out.append(("returns", step.run.returns_file))
    return tuple(out)


def step_result(step: Step, derive: str, **params: Any) -> tuple[Any, Callable[..., Derived]] | None:
    """(result of ``kofinsent.evaluation.analysis.<derive>`` on this step's files, a maker of sources for its
    values: ``src(*key)``), computed once per step and arguments; None when the step lacks the files it needs."""
    needs_items = derive != "calibration"
    if not step.predictions or (needs_items and not step.run.test_items):
        return None
    cache: dict[str, Any] = step.__dict__.setdefault("_kofinsent_analysis", {})
    ckey = repr((derive, sorted(params.items())))
    if ckey not in cache:
        with_returns = derive == "market_link" and step.run.returns is not None
        inputs = _inputs(step, items=needs_items, returns=with_returns)
        kwargs = {k: Bootstrap(**v) if k == "boot" else v for k, v in params.items()}
        args: dict[str, Any] = {"records": step.predictions}
        if needs_items:
            args["items"] = step.run.test_items
        if with_returns:
            args["returns"] = step.run.returns
        result = getattr(A, derive)(**args, **kwargs)

        def src(*key: str | int) -> Derived:
            return Derived(step.run.label, step.file(PREDICTIONS), tuple(key), derive=derive, inputs=inputs,
                           params=params)

        cache[ckey] = (result, src)
    return cache[ckey]


def groups(step: Step, by: str) -> tuple[dict[str, dict[str, Any]], Callable[..., Derived]] | None:
    """:func:`kofinsent.evaluation.analysis.group_accuracy` of a step, by "code" or "year"."""
    return step_result(step, "group_accuracy", by=by, boot=_boot_json(step_boot(step)))


def calibration(step: Step) -> tuple[dict[str, Any], Callable[..., Derived]] | None:
    if step.kind != "eval" or step.method != "loglikelihood":
        return None
    return step_result(step, "calibration", bins=A.ECE_BINS)


def market(step: Step, x: str) -> tuple[dict[str, Any], Callable[..., Derived]] | None:
    if step.kind != "eval":
        return None
    return step_result(step, "market_link", x=x, boot=_boot_json(MARKET_BOOT))


def x_measures(step: Step) -> list[str]:
    return ["share_up", "mean_sentiment"] if step.is_sentiment else ["share_up"]


# -- tables --------------------------------------------------------------------------------------------------------
def _stock_name(run: Run, code: str) -> str:
    for it in (run.test_items or {}).values():
        if str(it.get("code")) == code and it.get("name"):
            return f"{code} {it['name']}"
    return code


def _interval(res: dict[str, Any], src: Callable[..., Derived], *key: str | int) -> Text:
    """"49.3% [45.6, 53.1]" from a result holding ``accuracy`` and ``ci95``."""
    acc = derived(res["accuracy"], "pct", src(*key, "accuracy"))
    if acc is None:
        return text(NA)
    ci = res.get("ci95")
    if not ci:
        return text(acc)
    return text(acc, " [", derived(ci[0], "pp", src(*key, "ci95", 0)), ", ",
                derived(ci[1], "pp", src(*key, "ci95", 1)), "]")


def group_table(steps: list[Step], by: str) -> Table | None:
    """Accuracy per stock ("code") or per year for every step with predictions and test records."""
    what = BY[by]
    rows: list[list[Text]] = []
    for s in steps:
        got = groups(s, by)
        if got is None:
            continue
        res, src = got
        rep = repeated(s)
        for g, r in res.items():
            label = _stock_name(s.run, g) if by == "code" else g
            rows.append([text(s.name), text(label), text(derived(r["n"], "int", src(g, "n"))),
                         text(derived(r["n_predictions"], "int", src(g, "n_predictions"))) if rep else text("—"),
                         _interval(r, src, g),
                         text("cluster bootstrap" if r["interval"] == "cluster_bootstrap_percentile" else "Wilson"),
                         text(f"{s.cite}/{PREDICTIONS}")])
    if not rows:
        return None
    cols = [Column("Model"), Column(what.capitalize()), Column("n items", True), Column("n predictions", True),
            Column("Accuracy [95% CI]", True), Column("Interval"), Column("Source")]
    caption = (f"Accuracy per {what} for each run: predictions joined by id with the test records "
               f"({'stock code' if by == 'code' else 'year of posted_at'}). n items: distinct test items of the "
               f"{what}; n predictions: shown when the run has several per item (few-shot seeds, sentiment "
               "iterations). Accuracy: correct / predictions (invalid and abstaining answers count as wrong). 95% "
               "interval: Wilson over the predictions when the run has one prediction per item; otherwise a "
               f"percentile bootstrap over the {what}'s items, each resampled with all of its predictions (the "
               "run's resamples and seed from its metrics.json).")
    return Table(f"accuracy_by_{what}", caption, cols, rows)


def calibration_table(steps: list[Step]) -> Table | None:
    rows: list[list[Text]] = []
    for s in steps:
        got = calibration(s)
        if got is None:
            continue
        res, src = got
        if not res["n_predictions"]:
            continue
        rows.append([text(s.name), text(derived(res["n"], "int", src("n"))),
                     text(derived(res["n_predictions"], "int", src("n_predictions"))),
                     _or(derived(res["mean_confidence"], "pct", src("mean_confidence"))),
                     _or(derived(res["accuracy"], "pct", src("accuracy"))),
                     _or(derived(res["ece"], "f3", src("ece"))), _or(derived(res["mce"], "f3", src("mce"))),
                     text(f"{s.cite}/{PREDICTIONS}")])
    if not rows:
        return None
    cols = [Column("Model"), Column("n items", True), Column("n predictions", True), Column("Mean confidence", True),
            Column("Accuracy", True), Column("ECE", True), Column("MCE", True), Column("Source")]
    caption = ("Calibration of the log-likelihood runs. Confidence: the predicted answer's probability under the "
               "two-way softmax of the log-likelihoods of [상승] and [하락]. Binning: " + A.BINNING + ". ECE: sum "
               "over bins of (predictions in the bin / n predictions) x the absolute gap between the bin's accuracy "
               "and mean confidence; MCE: the largest such gap of a non-empty bin. Mean confidence above accuracy = "
               "overconfidence. Every prediction counts (k-shot: every few-shot seed).")
    return Table("calibration", caption, cols, rows)


def _or(num: Num | None) -> Text:
    return text(num) if num is not None else text(NA)


def _corr_cell(c: dict[str, Any], src: Callable[..., Derived], key: tuple[Any, ...], stat: str) -> Text:
    v = derived(c[stat], "f3", src(*key, stat))
    if v is None:
        return text(NA)
    ci = c.get(f"{stat}_ci95")
    if not ci:
        return text(v)
    return text(v, " [", derived(ci[0], "f3", src(*key, f"{stat}_ci95", 0)), ", ",
                derived(ci[1], "f3", src(*key, f"{stat}_ci95", 1)), "]")


def market_table(steps: list[Step]) -> Table | None:
    """Per eval run, predictor and stock (then all stocks pooled): Pearson and Spearman of the day's predictor with
    the move_date session's return and, where the dataset's returns.jsonl is at hand, the next session's."""
    evals = [s for s in steps if market(s, "share_up") is not None]
    if not evals:
        return None
    with_next = any(s.run.returns is not None for s in evals)
    ys = ["ret", "ret_next"] if with_next else ["ret"]
    rows: list[list[Text]] = []
    for s in evals:
        for x in x_measures(s):
            got = market(s, x)
            assert got is not None
            res, src = got
            scopes = [(code, ("by_stock", code)) for code in res["by_stock"]] + [("all stocks", ("pooled",))]
            for name, key in scopes:
                scope = res["pooled"] if key == ("pooled",) else res["by_stock"][key[1]]
                row = [text(s.name), text(X_NAMES[x]), text(_stock_name(s.run, name) if key != ("pooled",)
                                                              else name)]
                for y in ys:
                    c = scope.get(y)
                    if c is None:
                        row += [text(NA)] * 3
                        continue
                    row += [text(derived(c["n"], "int", src(*key, y, "n"))), _corr_cell(c, src, (*key, y), "pearson"),
                            _corr_cell(c, src, (*key, y), "spearman")]
                row.append(text(f"{s.cite}/{PREDICTIONS}"))
                rows.append(row)
    cols = [Column("Model"), Column("Predictor"), Column("Stock"), Column("Days", True),
            Column("Pearson r [95% CI]", True), Column("Spearman rho [95% CI]", True)]
    if with_next:
        cols += [Column("Days (next)", True), Column("Pearson r, next session [95% CI]", True),
                 Column("Spearman rho, next session [95% CI]", True)]
    cols.append(Column("Source"))
    caption = ("The market link (seed 003 cites r = 0.03): per stock and trading day (the move_date session of the "
               "day's test titles), the share of predictions [상승] (invalid ones in the denominator) and, for "
               "sentiment runs, the mean valid sentiment, against that session's return"
               + (" and the stock's next session's return (from the dataset's returns.jsonl)" if with_next else "")
               + f". Days: stock-days with both values. 95% intervals: percentile bootstrap over stock-days "
               f"({MARKET_BOOT.resamples} resamples, seed {MARKET_BOOT.seed}; resamples without spread are left out "
               f"and counted in report.json, no interval when more than {100 * A.MAX_UNDEFINED:g}% are); 'all "
               f"stocks' resamples every stock-day together. n/a: no correlation, with fewer than {A.MIN_DAYS} days or "
               "no spread (a run that gives every title the same answer).")
    if not with_next:
        caption += " " + NO_RETURNS_CAPTION
    elif any(s.run.returns is None for s in evals):
        caption += " n/a in the next-session columns: that run has no returns.jsonl (see Notes)."
    return Table("market_link", caption, cols, rows)


NO_RETURNS_CAPTION = ("The next session's return is not shown: no run here has the dataset's returns.jsonl (see "
                      "Notes).")


def returns_notes(runs: list[Run], steps: list[Step]) -> list[str]:
    """Why the next-session columns are missing for a run (the no-returns-file note)."""
    out = []
    for run in runs:
        if run.returns is None and any(market(s, "share_up") is not None for s in steps if s.run is run):
            where = ("a bare eval run: no dataset folder with a returns.jsonl that datasheet.json vouches for next to "
                     "its test file" if run.kind == "bare" else "its dataset/ has no returns.jsonl (built before "
                     "the dataset step wrote one)")
            out.append(f"{run.label}: the market link shows the same-session return only, without the next "
                       f"session's return: {where}. The next session's return needs the price calendar "
                       "(returns.jsonl) that `kofinsent dataset build` writes next to test.jsonl.")
    return out


# -- the most confidently wrong titles per stock -------------------------------------------------------------------
def stock_examples_table(step: Step, per_stock: int, index: int) -> Table | None:
    """The ``per_stock`` most confidently wrong titles of each stock (one line per item), for a run whose
    predictions carry a score (log-likelihood margin or sentiment confidence; generation has none)."""
    records = [r for r in step.predictions or [] if "id" in r and "title" in r]
    items = step.run.test_items
    if step.kind != "eval" or not records or not items or per_stock < 1:
        return None
    scores = [prediction_confidence(step, r) for r in records]
    if all(v is None for v in scores):
        return None
    picked = A.most_confident_wrong(records, items, scores, per_stock, by="code")
    if not picked:
        return None
    header = prediction_score(step, records[picked[next(iter(picked))][0]])[0]
    cols = [Column("Stock"), Column("Title", width="0.46\\linewidth"), Column("Gold"), Column("Prediction"),
            Column(header, True)]
    table = Table(f"examples-by-stock-{index}", f"The {per_stock} most confidently wrong titles per stock for "
                  f"{step.name} (one line per test item; score: {header}). Source: {step.cite}/{PREDICTIONS}, "
                  f"stocks from {step.run.test_file}.", cols, section="examples")
    for code, positions in picked.items():
        for j in positions:
            r = records[j]
            parts = prediction_score(step, r)[1]
            table.rows.append([text(_stock_name(step.run, code)), text(shorten(str(r["title"]), TITLE_CHARS)),
                               text(str(r.get("gold"))), text(prediction_label(r)),
                               text(*parts) if any(isinstance(p, Num) for p in parts) else text("—")])
    return table


def per_stock_examples(n_examples: int) -> int:
    """Titles per stock: half the report's examples per run, rounded up (at least 1)."""
    return max(1, math.ceil(n_examples / 2))


def analysis_tables(steps: list[Step]) -> list[Table]:
    return [t for t in (group_table(steps, "code"), group_table(steps, "year"), calibration_table(steps),
                        market_table(steps)) if t is not None]


__all__ = ["MARKET_BOOT", "analysis_tables", "calibration", "calibration_table", "group_table", "groups", "market",
           "market_table", "per_stock_examples", "repeated", "returns_notes", "step_boot", "step_result",
           "stock_examples_table"]

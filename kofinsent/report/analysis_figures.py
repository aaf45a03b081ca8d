"""Error-analysis figures: the reliability diagram of the log-likelihood runs and the market-link scatter.

Drawn from the same computations as the tables (:mod:`kofinsent.report.analysis`), so every plotted value is in
report.json with the :class:`~kofinsent.report.cite.Derived` source that recomputes it.
"""
from __future__ import annotations

from pathlib import Path

from kofinsent.evaluation.analysis import BINNING
from kofinsent.report.analysis import X_NAMES, calibration, market, x_measures
from kofinsent.report.collect import Step
from kofinsent.report.figure_canvas import Figure, new_figure, save_figure

Y_TITLES = {"ret": "return of the move_date session (%)", "ret_next": "return of the next session (%)"}


def reliability(steps: list[Step], out: Path, synthetic: bool) -> Figure | None:
    got = [(s, c) for s in steps if (c := calibration(s)) is not None and c[0]["n_predictions"]]
    if not got:
        return None
    fig = new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    ax.plot([0.5, 1.0], [0.5, 1.0], color="grey", lw=0.8, ls="--", label="perfect calibration")
    data = []
    for i, (s, (res, src)) in enumerate(got):
        full = [b for b in res["bins"] if b["n"]]
        xs, ys = [b["confidence"] for b in full], [b["accuracy"] for b in full]
        sizes = [12 + 60 * b["n"] / res["n_predictions"] for b in full]
        ax.plot(xs, ys, color=f"C{i % 10}", lw=1, label=f"{s.name} (ECE {res['ece']:.3f}, n = {res['n_predictions']})")
        ax.scatter(xs, ys, s=sizes, color=f"C{i % 10}")
        data.append({"model": s.name, "calibration": res, "source": src().to_json()})
    ax.set_xlim(0.48, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("confidence (mean per bin)")
    ax.set_ylabel("accuracy per bin")
    ax.set_title("Reliability (marker area ~ predictions in the bin)")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    f = Figure("reliability", "Reliability diagram of the log-likelihood runs: accuracy against mean confidence per "
               f"bin ({BINNING}; confidence = the predicted answer's softmax probability from the two "
               "log-likelihoods); dashed: perfect calibration; ECE and n predictions in the legend.", data=data)
    f.files = save_figure(fig, out, f.name, synthetic)
    return f


def market_scatter(steps: list[Step], out: Path, synthetic: bool) -> Figure | None:
    """One panel per predictor (share [상승]; mean sentiment when a sentiment run is there) and return (the move_date
    session; the next session when returns.jsonl is at hand): one dot per stock-day and run."""
    evals = [s for s in steps if market(s, "share_up") is not None]
    if not evals:
        return None
    xs_used = [x for x in ("share_up", "mean_sentiment") if any(x in x_measures(s) for s in evals)]
    ys = ["ret", "ret_next"] if any(s.run.returns is not None for s in evals) else ["ret"]
    fig = new_figure(3.4 * len(ys) + 2.2, 2.9 * len(xs_used) + 0.4)
    axes = fig.subplots(len(xs_used), len(ys), squeeze=False)
    data = []
    for i, s in enumerate(evals):
        for r, x in enumerate(xs_used):
            if x not in x_measures(s):
                continue
            got = market(s, x)
            assert got is not None
            res, src = got
            rows = _days(s)
            for c, y in enumerate(ys):
                pts = [(d[x], 100 * d[y]) for d in rows if d.get(x) is not None and d.get(y) is not None]
                axes[r][c].scatter([p[0] for p in pts], [p[1] for p in pts], s=9, alpha=0.6, color=f"C{i % 10}",
                                   label=s.name)
            data.append({"model": s.name, "x": x, "days": rows, "correlations": res, "source": src().to_json(),
                         "days_source": {**src().to_json(), "derive": "stock_days", "params": {}}})
    for r, x in enumerate(xs_used):
        for c, y in enumerate(ys):
            ax = axes[r][c]
            ax.axhline(0, color="grey", lw=0.6)
            ax.set_xlabel(f"{X_NAMES[x].replace('[상승]', 'up')} per stock-day")
            ax.set_ylabel(Y_TITLES[y])
        axes[r][-1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    f = Figure("market-link", "The market link: one dot per stock and trading day (the move_date session of the "
               "day's test titles) and run; x = the share of predictions up ([상승]) or the mean valid sentiment, "
               "y = that session's return" + (" (left) and the stock's next session's return (right)"
                                              if len(ys) == 2 else " (no returns.jsonl: no next-session panel)")
               + "; the correlations, per stock and pooled with their intervals, are in the market link table.",
               data=data)
    f.files = save_figure(fig, out, f.name, synthetic)
    return f


def _days(step: Step) -> list[dict]:
    from kofinsent.evaluation.analysis import stock_days

    cache = step.__dict__.setdefault("_kofinsent_analysis", {})
    if "stock_days" not in cache:
        cache["stock_days"] = stock_days(step.predictions or [], step.run.test_items or {}, step.run.returns)
    return cache["stock_days"]


def analysis_figures(steps: list[Step], out: Path, synthetic: bool) -> list[Figure]:
    return [f for f in (reliability(steps, out, synthetic), market_scatter(steps, out, synthetic)) if f is not None]

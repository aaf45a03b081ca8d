"""Figures as PNG and PDF (matplotlib, Agg, no pyplot: no global state, nothing opens a window).

Output is byte-stable for the same inputs on the same machine: PDF CreationDate is dropped, SVG hash salt fixed,
and all ordering is explicit. Each figure's plotted numbers go into report.json with their sources.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from kofinsent.report.analysis import groups as step_groups
from kofinsent.report.analysis_figures import analysis_figures
from kofinsent.report.collect import Run, Step
from kofinsent.report.escape import slug
from kofinsent.report.figure_canvas import Figure, figure_style, new_figure, save_figure

LABEL_NAMES = {"[상승]": "up", "[하락]": "down"}  # ASCII axis labels: the default fonts have no Hangul
QUANT_ORDER = ("q2_k", "q3_k_m", "q4_0", "q4_k_s", "q4_k_m", "q5_0", "q5_k_s", "q5_k_m", "q6_k", "q8_0", "bnb-4bit",
               "bnb-8bit", "bf16", "f16", "fp16", "f32", "fp32", "none")
HEATMAP_METRICS = (("valid_json_rate", "valid JSON rate"), ("sentiment_variance", "sentiment variance"),
                   ("mean_sentiment", "mean sentiment"), ("mean_confidence", "mean confidence"),
                   ("seconds_per_sample", "seconds / sample"), ("accuracy", "accuracy"))


def _src(step: Step, file: str, key: list[Any]) -> dict[str, Any]:
    return {"run": step.run.label, "file": step.file(file), "key": key}


# -- accuracy vs shots ---------------------------------------------------------------------------------------------
def accuracy_vs_shots(steps: list[Step], out: Path, synthetic: bool) -> Figure | None:
    ks = [s for s in steps if s.is_kshot and s.metrics.get("accuracy") is not None]
    if not ks:
        return None
    series: dict[str, list[Step]] = defaultdict(list)
    for s in ks:
        series[s.model + ("" if not s.config.get("adapter") else " + adapter")].append(s)
    fig = new_figure(6, 3.6)
    ax = fig.add_subplot()
    fig_data = []
    for i, (model, group) in enumerate(series.items()):
        group.sort(key=lambda s: int(s.metrics.get("shots") or 0))
        xs, means, sds = [], [], []
        for s in group:
            summ = s.metrics.get("fewshot_accuracy") or {}
            k = int(s.metrics.get("shots") or 0)
            mean = summ.get("mean", s.metrics["accuracy"])
            values = summ.get("values") or [mean]
            xs.append(k)
            means.append(100 * mean)
            sds.append(100 * (summ.get("sd") or 0.0))
            offset = (i - (len(series) - 1) / 2) * 0.15  # spread the seed dots of different models apart
            ax.scatter([k + offset] * len(values), [100 * v for v in values], s=10, alpha=0.5, color=f"C{i}")
            fig_data.append({"model": model, "shots": k, "mean": mean, "sd": summ.get("sd"), "values": values,
                             "n_items": s.metrics.get("n_items"),
                             "source": _src(s, "metrics.json", ["fewshot_accuracy"] if summ else ["accuracy"])})
        ax.errorbar(xs, means, yerr=sds, marker="o", capsize=3, color=f"C{i}", label=model)
    n_items = sorted({d["n_items"] for d in fig_data if d["n_items"]})
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_xscale("symlog", linthresh=1)
    ax.margins(x=0.08)
    shots = sorted({d["shots"] for d in fig_data})
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.set_xlabel("shots (k)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Accuracy vs shots: mean ± sd over few-shot seeds, dots = seeds (n = {', '.join(map(str, n_items))}"
                 " items)")
    ax.legend(fontsize=7, loc="best")
    f = Figure("accuracy-vs-shots", "Accuracy vs number of shots: mean ± sd over few-shot seeds (dots: each seed); "
               "dashed line: 50%.", data=fig_data)
    f.files = save_figure(fig, out, f.name, synthetic)
    return f


# -- confusion matrices --------------------------------------------------------------------------------------------
def confusion(step: Step, name: str, out: Path, synthetic: bool) -> Figure | None:
    conf = step.metrics.get("confusion")
    if not isinstance(conf, dict) or not conf.get("matrix"):
        return None
    rows = [LABEL_NAMES.get(r, r) for r in conf["rows"]]
    cols = [LABEL_NAMES.get(c, c) for c in conf["columns"]]
    matrix = conf["matrix"]
    fig = new_figure(1.2 + 1.0 * len(cols), 2.8)
    ax = fig.add_subplot()
    im = ax.imshow(matrix, cmap="Blues")
    top = max(max(r) for r in matrix) or 1
    for i, r in enumerate(matrix):
        for j, v in enumerate(r):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("prediction")
    ax.set_ylabel("gold")
    ax.set_title(f"{step.name} (n = {step.metrics.get('n')})")
    fig.colorbar(im, ax=ax, shrink=0.8)
    f = Figure(name, f"Confusion matrix of {step.name} ({step.cite}); up = [상승], down = [하락].",
               data=[{"model": step.name, "confusion": conf, "n": step.metrics.get("n"),
                      "source": _src(step, "metrics.json", ["confusion"])}])
    f.files = save_figure(fig, out, name, synthetic)
    return f


# -- accuracy per stock / per year ---------------------------------------------------------------------------------
def group_accuracy(step: Step, items: dict[str, dict[str, Any]], field_: str) -> dict[str, dict[str, Any]]:
    """Accuracy with its 95% interval per group (stock code, or year of posted_at) from predictions joined to the
    test records by id: :func:`kofinsent.report.analysis.groups` (Wilson when the run has one prediction per item,
    else the cluster bootstrap over the group's items), shared with the per-stock / per-year tables."""
    got = step_groups(step, "year" if field_ == "posted_at" else field_) if items is step.run.test_items else None
    return got[0] if got else {}


def accuracy_by(steps: list[Step], field_: str, out: Path, synthetic: bool) -> Figure | None:
    by = "year" if field_ == "posted_at" else field_
    joined = [(s, group_accuracy(s, s.run.test_items or {}, field_)) for s in steps
              if s.kind == "eval" and s.predictions and s.run.test_items]
    joined = [(s, g) for s, g in joined if g]
    if not joined:
        return None
    groups = sorted({g for _, acc in joined for g in acc})
    what = "stock" if field_ == "code" else "year"
    # Items per group in the test set, for the tick labels (each run's own test set when several are given).
    items: dict[str, int] = defaultdict(int)
    for run in {id(s.run): s.run for s, _ in joined}.values():
        for it in (run.test_items or {}).values():
            if it.get(field_):
                items[str(it[field_])[:4] if field_ == "posted_at" else str(it[field_])] += 1
    fig = new_figure(min(16.0, max(5.0, 0.5 * len(groups) * len(joined) ** 0.5 + 3)), 3.6)
    ax = fig.add_subplot()
    width = 0.8 / len(joined)
    data = []
    for i, (s, acc) in enumerate(joined):
        xs = [j + (i - (len(joined) - 1) / 2) * width for j, g in enumerate(groups) if g in acc]
        ys = [100 * acc[g]["accuracy"] for g in groups if g in acc]
        ci = {g: acc[g]["ci95"] or [acc[g]["accuracy"]] * 2 for g in acc}  # no interval: no bar
        lo = [100 * (acc[g]["accuracy"] - ci[g][0]) for g in groups if g in acc]
        hi = [100 * (ci[g][1] - acc[g]["accuracy"]) for g in groups if g in acc]
        ax.bar(xs, ys, width=width, yerr=[lo, hi], capsize=2, label=s.name, color=f"C{i % 10}")
        src = step_groups(s, by)[1]  # type: ignore[index]
        data.append({"model": s.name, "groups": acc, "source": src().to_json()})
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(groups)), [f"{g}\nn={items.get(g, 0)}" for g in groups],
                  rotation=45 if len(groups) > 10 else 0)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Accuracy per {what} with 95% intervals (n = test items per {what})")
    ax.legend(fontsize=7, ncols=min(4, len(joined)), loc="upper center", bbox_to_anchor=(0.5, -0.18))
    f = Figure(f"accuracy-by-{what}", f"Accuracy per {what} with 95% intervals (Wilson; for runs with several "
               "predictions per item, k-shot seeds or sentiment iterations, the bar is the mean over all of them and "
               "the interval a bootstrap over items); n under each "
               f"{what} = test items; the numbers are in the per-{what} table.", data=data)
    f.files = save_figure(fig, out, f.name, synthetic)
    return f


# -- sentiment -----------------------------------------------------------------------------------------------------
def sentiment_distributions(steps: list[Step], out: Path, synthetic: bool) -> Figure | None:
    ss = [s for s in steps if s.is_sentiment and s.predictions is not None]
    if not ss:
        return None
    fig = new_figure(6, 1.2 + 1.3 * len(ss))
    axes = fig.subplots(len(ss), 1, sharex=True, squeeze=False)[:, 0]
    bins = [-1.0 + 0.1 * i for i in range(21)]
    data = []
    for ax, s, i in zip(axes, ss, range(len(ss))):
        vals = [float(r["sentiment"]) for r in s.predictions or [] if r.get("valid") and r.get("sentiment") is not None]
        ax.hist(vals, bins=bins, color=f"C{i % 10}")
        ax.set_title(f"{s.name} (n valid = {len(vals)} of {len(s.predictions or [])} replies)", loc="left")
        ax.set_ylabel("replies")
        data.append({"model": s.name, "n_valid": len(vals), "n_replies": len(s.predictions or []),
                     "source": {"run": s.run.label, "file": s.file("predictions.jsonl"), "key": ["sentiment"],
                                "where": "valid"}})
    axes[-1].set_xlabel("sentiment (strictly valid replies)")
    f = Figure("sentiment-distributions", "Distribution of the strictly valid sentiment scores per model (seed 000 "
               "prompt); n valid of all replies in each panel title.", data=data)
    f.files = save_figure(fig, out, f.name, synthetic)
    return f


def _quant_key(q: str) -> tuple[int, str]:
    return (QUANT_ORDER.index(q) if q in QUANT_ORDER else len(QUANT_ORDER), q)


def sentiment_heatmaps(steps: list[Step], out: Path, synthetic: bool) -> Figure | None:
    ss = [s for s in steps if s.is_sentiment]
    if len(ss) < 2:
        return None
    import numpy as np

    families = list(dict.fromkeys(s.family for s in ss))
    quants = sorted({s.quantization for s in ss}, key=_quant_key)
    short = _short_names(families)
    fig = new_figure(3.2 * 3, 0.6 + (1.0 + 0.45 * len(families)) * 2)
    axes = fig.subplots(2, 3, squeeze=False).ravel()
    data = []
    for ax, (key, title) in zip(axes, HEATMAP_METRICS):
        grid = np.full((len(families), len(quants)), np.nan)
        for s in ss:
            v = s.metrics.get(key)
            if isinstance(v, (int, float)):
                grid[families.index(s.family), quants.index(s.quantization)] = v
                data.append({"metric": key, "family": s.family, "quantization": s.quantization, "value": v,
                             "n": s.metrics.get("n"), "source": _src(s, "metrics.json", [key])})
        ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto")
        lo, hi = (np.nanmin(grid), np.nanmax(grid)) if not np.isnan(grid).all() else (0.0, 0.0)
        for i in range(len(families)):
            for j in range(len(quants)):
                if not np.isnan(grid[i, j]):
                    bright = hi > lo and (grid[i, j] - lo) / (hi - lo) > 0.6  # viridis is light at the top
                    ax.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center", fontsize=8,
                            color="black" if bright else "white")
        ax.set_xticks(range(len(quants)), quants, rotation=30)
        ax.set_yticks(range(len(families)), short)
        ax.set_title(title)
    n = sorted({s.metrics.get("n") for s in ss if s.metrics.get("n") is not None})
    f = Figure("sentiment-heatmaps", "Seed 000 comparisons: model x quantization for each measure "
               f"(n = {', '.join(map(str, n))} replies per cell; empty: not run).", data=data)
    f.files = save_figure(fig, out, f.name, synthetic)
    return f


def _short_names(paths: list[str]) -> list[str]:
    """The shortest path suffixes that still tell the models apart."""
    for depth in range(1, 8):
        names = ["/".join(p.replace("\\", "/").split("/")[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
    return paths


def make_figures(runs: list[Run], steps: list[Step], out: Path) -> list[Figure]:
    """Every figure the runs call for, written to ``out`` (the report's figures/ folder)."""
    out.mkdir(parents=True, exist_ok=True)
    synthetic = any(r.synthetic for r in runs)
    figs: list[Figure | None] = []
    with figure_style():
        figs.append(accuracy_vs_shots(steps, out, synthetic))
        used: set[str] = set()
        for s in steps:
            if s.kind != "eval":
                continue
            name = "confusion-" + slug(s.name)
            base, i = name, 2
            while name in used:  # the same eval name in two runs, or names that slug to the same file
                name, i = f"{base}-{i}", i + 1
            used.add(name)
            figs.append(confusion(s, name, out, synthetic))
        figs.append(accuracy_by(steps, "code", out, synthetic))
        figs.append(accuracy_by(steps, "posted_at", out, synthetic))
        figs.append(sentiment_distributions(steps, out, synthetic))
        figs.append(sentiment_heatmaps(steps, out, synthetic))
        figs.extend(analysis_figures(steps, out, synthetic))
    return [f for f in figs if f is not None]

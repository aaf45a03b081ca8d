"""The error-analysis tables and the report-wide Holm family (issue 13, points 3 and 5), checked against hand counts
and independent computations read straight from the run files."""
from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from kofinsent.report import assemble, build_report
from kofinsent.report.escape import md_escape

UP = "[상승]"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _table(rj: dict, tid: str) -> dict:
    return next(t for t in rj["tables"] + rj["examples"] if t["id"] == tid)


def _values(cell: dict) -> list[float]:
    return [n["value"] for n in cell["numbers"]]


def _rows_of(table: dict, model: str) -> dict[str, dict[str, dict]]:
    """{group cell text: {column name: cell}} for one model's rows."""
    names = [c["name"] for c in table["columns"]]
    return {row[1]["text"]: dict(zip(names, row)) for row in table["rows"] if row[0]["text"] == model}


def _hand_counts(run: Path, step: str, key) -> dict[str, tuple[set, int, int]]:
    """(items, predictions, correct) per group, counted here from predictions.jsonl and dataset/test.jsonl."""
    items = {r["id"]: r for r in _jsonl(run / "dataset/test.jsonl")}
    out: dict[str, list] = defaultdict(lambda: [set(), 0, 0])
    for r in _jsonl(run / "eval" / step / "predictions.jsonl"):
        g = key(items[r["id"]])
        out[g][0].add(r["id"])
        out[g][1] += 1
        out[g][2] += r["pred"] is not None and r["pred"] == r["gold"]
    return {g: (ids, n, k) for g, (ids, n, k) in out.items()}


def test_per_stock_table_is_the_hand_count_with_wilson(demo_report):
    table = _table(demo_report.json, "accuracy_by_stock")
    rows = _rows_of(table, "ll_2shot")
    counts = _hand_counts(demo_report.run, "ll_2shot", lambda it: it["code"])
    assert sorted(r.split()[0] for r in rows) == sorted(counts)
    for label, cells in rows.items():
        ids, n, k = counts[label.split()[0]]
        assert _values(cells["n items"]) == [len(ids)] == [n]  # one prediction per item
        assert cells["n predictions"]["text"] == "—"
        acc, lo, hi = _values(cells["Accuracy [95% CI]"])
        assert acc == k / n
        assert [lo, hi] == pytest.approx(list(proportion_confint(k, n, method="wilson")), abs=1e-12)
        assert cells["Interval"]["text"] == "Wilson"
        assert cells["Accuracy [95% CI]"]["text"].startswith(f"{100 * k / n:.1f}% [")


def test_per_year_table_with_repeats_counts_items_and_predictions(demo_report):
    table = _table(demo_report.json, "accuracy_by_year")
    rows = _rows_of(table, "kshot_5")
    counts = _hand_counts(demo_report.run, "kshot_5", lambda it: it["posted_at"][:4])
    assert sorted(rows) == sorted(counts) == ["2021", "2022"]
    for year, cells in rows.items():
        ids, n, k = counts[year]
        assert _values(cells["n items"]) == [len(ids)] and _values(cells["n predictions"]) == [n] == [3 * len(ids)]
        acc, lo, hi = _values(cells["Accuracy [95% CI]"])
        assert acc == k / n and cells["Interval"]["text"] == "cluster bootstrap"
        # an independent bootstrap over the year's items, each with its three predictions
        per_item: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        items = {r["id"]: r for r in _jsonl(demo_report.run / "dataset/test.jsonl")}
        for r in _jsonl(demo_report.run / "eval/kshot_5/predictions.jsonl"):
            if items[r["id"]]["posted_at"][:4] == year:
                per_item[r["id"]][0] += r["pred"] == r["gold"]
                per_item[r["id"]][1] += 1
        c, m = np.array(list(per_item.values()), dtype=float).T
        rng = np.random.default_rng(99)
        boots = [c[i].sum() / m[i].sum() for i in (rng.integers(0, len(c), len(c)) for _ in range(4000))]
        assert [lo, hi] == pytest.approx(list(np.percentile(boots, [2.5, 97.5])), abs=0.04)


def test_calibration_row_equals_an_independent_computation(demo_report):
    table = _table(demo_report.json, "calibration")
    names = [c["name"] for c in table["columns"]]
    row = dict(zip(names, next(r for r in table["rows"] if r[0]["text"] == "ll_2shot")))
    bins: dict[int, list[float]] = defaultdict(list)
    hits: dict[int, list[bool]] = defaultdict(list)
    preds = _jsonl(demo_report.run / "eval/ll_2shot/predictions.jsonl")
    for r in preds:
        up, down = r["loglik"]
        p_up = math.exp(up) / (math.exp(up) + math.exp(down))
        conf = p_up if r["pred"] == UP else 1 - p_up
        b = min(9, int((conf - 0.5) / 0.05))
        bins[b].append(conf)
        hits[b].append(r["pred"] == r["gold"])
    ece = sum(len(bins[b]) / len(preds) * abs(np.mean(hits[b]) - np.mean(bins[b])) for b in bins)
    assert _values(row["ECE"])[0] == pytest.approx(ece, abs=1e-9)
    assert _values(row["n predictions"]) == [len(preds)]
    assert "10 equal-width bins" in table["caption"]


def test_most_confidently_wrong_per_stock_escapes_a_hostile_title(demo_report, evil):
    table = _table(demo_report.json, "examples-by-stock-1")
    assert "ll_2shot" in table["caption"]
    evil_rows = [r for r in table["rows"] if r[1]["text"] == evil.title]
    assert evil_rows and all(r[2]["text"] == "[하락]" and r[3]["text"] == UP for r in evil_rows)
    # the stocks' blocks: each stock's rows together, most confident first
    stocks = [r[0]["text"] for r in table["rows"]]
    assert stocks == sorted(stocks)
    # escaped in all three formats, inside this very table
    md = demo_report.md.split("The 2 most confidently wrong titles per stock for ll\\_2shot", 1)[1]
    assert md_escape(evil.title) in md.split("**Table", 1)[0]
    tex = demo_report.tex.split("The 2 most confidently wrong titles per stock for ll\\_2shot", 1)[1]
    tex = tex.split("\\end{table}", 1)[0]
    assert evil.tex in tex and evil.title not in tex
    html = demo_report.html.split('<table id="examples-by-stock-1">', 1)[1].split("</table>", 1)[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; 50% &amp; $x_{1}# ~^\\" in html and "<script>" not in html


def test_market_link_table_and_scatter_with_next_session(demo_report):
    table = _table(demo_report.json, "market_link")
    names = [c["name"] for c in table["columns"]]
    assert "Pearson r, next session [95% CI]" in names
    predictors = {(r[0]["text"], r[1]["text"]) for r in table["rows"]}
    assert ("sent_q4", "mean sentiment") in predictors and ("ll_2shot", "share [상승]") in predictors
    pooled = next(r for r in table["rows"] if r[0]["text"] == "ll_2shot" and r[2]["text"] == "all stocks")
    n_days = len({(it["code"], it["move_date"]) for it in _jsonl(demo_report.run / "dataset/test.jsonl")})
    assert _values(pooled[names.index("Days")]) == [n_days]
    fig = next(f for f in demo_report.json["figures"] if f["name"] == "market-link")
    assert fig["files"] == ["figures/market-link.png", "figures/market-link.pdf"]
    assert all("ret_next" in d for entry in fig["data"] for d in entry["days"])
    assert not any("same-session return only" in n for n in demo_report.json["notes"])


def test_a_bare_run_without_returns_shows_the_same_session_only_and_says_why(demo_run, tmp_path):
    data = tmp_path / "data" / "test.jsonl"  # the same test file, without the dataset's returns.jsonl beside it
    data.parent.mkdir()
    shutil.copy(demo_run / "dataset/test.jsonl", data)
    bare = tmp_path / "ll_2shot"
    shutil.copytree(demo_run / "eval/ll_2shot", bare)
    cfg = json.loads((bare / "config.json").read_text(encoding="utf-8"))
    (bare / "config.json").write_text(json.dumps({**cfg, "data": str(data)}), encoding="utf-8")
    report = assemble([bare])
    table = next(t for t in report.tables if t.id == "market_link")
    assert not any("next" in c.name for c in table.columns)
    assert "The next session's return is not shown" in table.caption
    note = next(n for n in report.notes if "same-session return only" in n)
    assert "bare eval run" in note and "returns.jsonl" in note
    # the same eval run pointing at the dataset folder (datasheet.json vouches for returns.jsonl): both columns
    with_returns = assemble([demo_run / "eval/ll_2shot"])
    table = next(t for t in with_returns.tables if t.id == "market_link")
    assert any("next session" in c.name for c in table.columns)
    assert not any("same-session return only" in n for n in with_returns.notes)


@pytest.fixture(scope="module")
def grid_run(demo_run, tmp_path_factory) -> Path:
    """The demo run with three more compare files: a small grid of paired tests."""
    from kofinsent.evaluation.compare import compare_runs
    from kofinsent.runs import write_json

    run = tmp_path_factory.mktemp("grid") / "demo" / demo_run.name
    shutil.copytree(demo_run, run)
    for a, b in (("eval/kshot_0", "eval/kshot_5"), ("eval/ll_2shot", "eval/gen_2shot"),
                 ("eval/ll_2shot", "baselines/tfidf_char")):
        name = f"{a.split('/')[1]}__{b.split('/')[-1]}"
        write_json(run / "compare" / f"{name}.json", compare_runs(run / a, run / b))
    return run


def test_holm_over_every_paired_test_in_the_report_matches_statsmodels(grid_run, tmp_path):
    report = build_report([grid_run], tmp_path / "grid", examples=0)
    rj = json.loads((tmp_path / "grid" / "report.json").read_text(encoding="utf-8"))
    # the family, read here straight from the compare files: every McNemar p and the paired sentiment tests
    family: list[tuple[str, str, float]] = []
    for f in sorted((grid_run / "compare").glob("*.json")):
        d = json.loads(f.read_text(encoding="utf-8"))
        for key in ("mcnemar_p", "paired_wilcoxon_p", "paired_t_p", "paired_variance_wilcoxon_p"):
            if d.get(key) is not None:
                family.append((f"compare/{f.name}", key, d[key]))
    k = len(family)
    assert k == 4 + 3
    adjusted = multipletests([p for _, _, p in family], method="holm")[1]
    want = {(f, key): (p, a) for (f, key, p), a in zip(family, adjusted)}
    seen = 0
    for tid, pairs in (("compare", [("McNemar p", "mcnemar_p")]),
                       ("compare_sentiment", [("Wilcoxon, item means p", "paired_wilcoxon_p"),
                                              ("paired t, item means p", "paired_t_p"),
                                              ("Wilcoxon, item variances p", "paired_variance_wilcoxon_p")])):
        table = _table(rj, tid)
        names = [c["name"] for c in table["columns"]]
        assert f"family of all {k} paired tests" in table["caption"]
        for row in table["rows"]:
            file = row[-1]["text"].split(":", 1)[1]
            for col, key in pairs:
                raw, adj = row[names.index(col)], row[names.index(col + " (Holm)")]
                assert names.index(col + " (Holm)") == names.index(col) + 1  # side by side
                assert _values(raw) == [want[(file, key)][0]]
                assert _values(adj) == pytest.approx([want[(file, key)][1]], abs=1e-15)
                assert adj["numbers"][0]["source"]["derive"] == "holm"
                assert len(adj["numbers"][0]["source"]["params"]["family"]) == k
                seen += 1
    assert seen == k
    stats = next(p for block in rj["methods"] if block["run"] == "Statistics (all runs)" for p in block["paragraphs"]
                 if p["text"].startswith("Paired tests"))
    assert f"the family of all {k} paired tests" in stats["text"]
    mid = _table(rj, "compare")["columns"]
    assert [c["name"] for c in mid].count("McNemar mid-p") == 1
    assert report.tables  # and the report was written

"""Report files: figures as PNG and PDF, a LaTeX document that is complete (and compiles where TeX is installed),
the synthetic-data notice, byte-stable reruns."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from kofinsent.report import build_report

ENGINES = ("pdflatex", "xelatex", "lualatex")


def test_figures_exist_as_png_and_pdf_as_many_as_the_runs_call_for(demo_report):
    figs = demo_report.json["figures"]
    n_evals = len(list((demo_report.run / "eval").iterdir()))
    # accuracy vs shots + one confusion matrix per eval + per stock + per year + sentiment distributions + heatmaps
    # + reliability diagram + market-link scatter
    assert len(figs) == 1 + n_evals + 2 + 1 + 1 + 2 == 13
    names = {f["name"] for f in figs}
    assert {"accuracy-vs-shots", "accuracy-by-stock", "accuracy-by-year", "sentiment-distributions",
            "sentiment-heatmaps", "confusion-ll-2shot", "reliability", "market-link"} <= names
    files = sorted(p.name for p in (demo_report.out / "figures").iterdir())
    assert len(files) == 2 * len(figs)
    for f in figs:
        png, pdf = (demo_report.out / p for p in f["files"])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000
        for text in (demo_report.md, demo_report.html):
            assert f["files"][0] in text
        assert f["files"][1] in demo_report.tex


def test_per_group_figure_data_counts_every_prediction(demo_report):
    by_stock = next(f for f in demo_report.json["figures"] if f["name"] == "accuracy-by-stock")
    metrics = json.loads((demo_report.run / "eval/ll_2shot/metrics.json").read_text(encoding="utf-8"))
    ll = next(d for d in by_stock["data"] if d["model"] == "ll_2shot")
    assert sum(g["n"] for g in ll["groups"].values()) == metrics["n"]
    assert sum(g["correct"] for g in ll["groups"].values()) == round(metrics["accuracy"] * metrics["n"])
    assert all(g["ci95"][0] <= g["accuracy"] <= g["ci95"][1] for g in ll["groups"].values())


def test_latex_is_a_complete_booktabs_document(demo_report):
    tex = demo_report.tex
    assert tex.startswith("\\documentclass") and tex.rstrip().endswith("\\end{document}")
    for pkg in ("booktabs", "graphicx", "kotex"):
        assert pkg in tex
    begins = re.findall(r"\\begin\{(\w+)\}", tex)
    ends = re.findall(r"\\end\{(\w+)\}", tex)
    assert sorted(begins) == sorted(ends)
    n_tables = len(demo_report.json["tables"]) + len(demo_report.json["examples"])
    assert tex.count("\\begin{table}") == n_tables
    for cmd in ("\\toprule", "\\midrule", "\\bottomrule", "\\caption{"):
        assert tex.count(cmd) >= n_tables, cmd
    assert len(set(re.findall(r"\\label\{(tab:[^}]*)\}", tex))) == n_tables
    # Braces balance once escaped braces are taken out.
    bare = re.sub(r"\\[{}]", "", tex)
    assert bare.count("{") == bare.count("}")


def _engine() -> str | None:
    return next((e for e in ENGINES if shutil.which(e)), None)


@pytest.mark.skipif(_engine() is None and shutil.which("latexmk") is None, reason="no TeX engine on PATH")
def test_latex_compiles(demo_report, tmp_path):
    kpse = shutil.which("kpsewhich")
    if kpse and not subprocess.run([kpse, "kotex.sty"], capture_output=True, text=True, check=False).stdout.strip():
        pytest.skip("kotex.sty is not installed: Korean titles cannot typeset")
    work = tmp_path / "tex"
    shutil.copytree(demo_report.out, work)
    engine = _engine()
    cmd = ([engine, "-interaction=nonstopmode", "-halt-on-error", "report.tex"] if engine else
           ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "report.tex"])
    r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=240, check=False)
    assert r.returncode == 0, r.stdout[-3000:]
    assert (work / "report.pdf").stat().st_size > 10_000


def test_synthetic_notice_in_every_format(demo_report):
    assert demo_report.json["synthetic"] is True
    assert "**SYNTHETIC DATA.**" in demo_report.md.split("## Methods")[0]
    assert '<div class="synthetic" role="alert"><strong>SYNTHETIC DATA.</strong>' in demo_report.html
    assert "\\textcolor{red}{SYNTHETIC DATA.}" in demo_report.tex.split("\\section{Methods}")[0]
    assert "(synthetic data)" in demo_report.tex.split("\\begin{document}")[0]


@pytest.fixture(scope="module")
def real_report(real_data_run, tmp_path_factory):
    outs = [tmp_path_factory.mktemp("real-report") / name for name in ("a", "b")]
    for out in outs:
        build_report([real_data_run], out)
    return outs


def test_no_synthetic_notice_when_config_says_real_data(real_report):
    out = real_report[0]
    for name in ("report.md", "report.html", "report.tex"):
        assert "synthetic data" not in (out / name).read_text(encoding="utf-8").lower(), name
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["synthetic"] is False


def test_a_rerun_writes_the_same_bytes(real_report):
    a, b = real_report
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    # reports + the manifest of what it wrote + confusion, per stock, per year, reliability, market link
    assert len(files) == 4 + 1 + 2 * 5
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_a_bare_eval_run_is_one_model_row(demo_run, tmp_path):
    report = build_report([demo_run / "eval/kshot_5", demo_run / "baselines/majority"], tmp_path / "bare",
                          title="Bare runs", examples=1)
    main = report.tables[0]
    assert [row[0].plain for row in main.rows] == ["kshot_5", "majority"]
    assert [row[1].plain for row in main.rows] == ["loglikelihood", "baseline"]
    text = " ".join(p.plain for _, paras in report.methods for p in paras)
    assert "few-shot seeds 1, 2, 3" in text and "sha256" in text
    assert report.tables[1].id == "kshot"
    # The test file the eval read is unchanged, so the per-stock and per-year figures are there.
    assert {f.name for f in report.figures} >= {"accuracy-by-stock", "accuracy-by-year", "confusion-kshot-5"}

"""Bad inputs: a directory that is no run, a metrics.json that is not JSON, and the CLI's one error line."""
from __future__ import annotations

import shutil

import pytest
import typer
from typer.testing import CliRunner

from kofinsent.cli.report import register
from kofinsent.report import ReportError, build_report, load_run


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("noop")  # a second command, so typer keeps "report" as a sub-command name
    def _noop() -> None:
        pass

    return app


def test_a_directory_that_is_not_a_run_is_named(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk/notes.txt").write_text("hello")
    with pytest.raises(ReportError, match="junk: not a run directory"):
        load_run(tmp_path / "junk")
    with pytest.raises(ReportError, match="missing: not a directory"):
        load_run(tmp_path / "missing")


def test_invalid_metrics_json_names_the_file(demo_run, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(demo_run / "eval/ll_2shot", bad)
    (bad / "metrics.json").write_text('{"accuracy": 0.5,', encoding="utf-8")
    with pytest.raises(ReportError, match=r"bad/metrics\.json: not valid JSON"):
        build_report([bad], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written for a failed report


def test_invalid_file_inside_an_experiment_run(demo_run, tmp_path):
    run = tmp_path / "exp"
    shutil.copytree(demo_run, run, ignore=shutil.ignore_patterns("predictions.jsonl"))
    (run / "eval/sent_q4/metrics.json").write_text("not json", encoding="utf-8")
    with pytest.raises(ReportError, match=r"eval/sent_q4/metrics\.json: not valid JSON"):
        load_run(run)


def test_cli_error_is_one_line_and_exit_code_2(tmp_path):
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(_app(), ["report", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "empty: not a run directory" in lines[0]


def test_cli_writes_the_report(demo_run, tmp_path):
    out = tmp_path / "reports/one"
    r = CliRunner().invoke(_app(), ["report", str(demo_run / "eval/ll_2shot"), "--out", str(out), "--title",
                                    "One <run>", "--examples", "2"])
    assert r.exit_code == 0, r.output
    for name in ("report.md", "report.tex", "report.html", "report.json"):
        assert (out / name).is_file()
    assert "One &lt;run&gt;" in (out / "report.html").read_text(encoding="utf-8")
    assert "-> " in r.output

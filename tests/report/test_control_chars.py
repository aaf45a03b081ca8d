"""Control characters in untrusted text (a terminal escape, NUL) never reach any report format."""
from __future__ import annotations

import shutil
from pathlib import Path

from kofinsent.runs import dumps, read_jsonl

from .conftest import EVIL

ODD = "\x1b[31m빨강\x1b[0m\x00 끝\x7f\x85"
CONTROL = ("\x1b", "\x00", "\x7f", "\x85")


def test_no_report_format_shows_control_characters(demo_run: Path, tmp_path: Path):
    from kofinsent.report import build_report

    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    preds = run / "eval/ll_2shot/predictions.jsonl"
    records = [{**r, "title": r["title"] + ODD} if r["title"] == EVIL else r for r in read_jsonl(preds)]
    assert any(r["title"].endswith(ODD) for r in records)
    preds.write_text("".join(dumps(r) + "\n" for r in records), encoding="utf-8")

    out = tmp_path / "report"
    build_report([run], out, title=f"제목{ODD} report")
    for kind in ("html", "md", "tex"):
        text = (out / f"report.{kind}").read_text(encoding="utf-8")
        assert "빨강" in text and " report" in text, kind  # the strings are shown, without their controls
        for ch in CONTROL:
            assert ch not in text, (kind, repr(ch))
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<title>제목 [31m빨강 [0m  끝   report" in html  # each control character became a space
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html  # autoescape still on

"""Titles are untrusted text: escaped for HTML (autoescape), LaTeX (all ten specials) and Markdown (no markup)."""
from __future__ import annotations

import re

import pytest

from kofinsent.report.escape import latex_escape, md_escape, shorten, slug


def test_latex_escape_covers_all_ten_specials():
    assert latex_escape("\\{}$&#^_%~") == (r"\textbackslash{}\{\}\$\&\#\textasciicircum{}\_\%"
                                          r"\textasciitilde{}")
    assert latex_escape("[속보] a\nb") == "{[}속보{]} a b"  # "[" after a row's \\ would be an optional argument


def test_escape_of_the_issue_title(evil):
    assert latex_escape(evil.title) == evil.tex
    assert md_escape(evil.title) == r"&lt;script&gt;alert(1)&lt;/script&gt; 50% &amp; \$x\_{1}# \~^\\"


def test_shorten_before_escape_never_cuts_an_escape():
    title = "가" * 118 + "%_~"
    short = shorten(title, 120)
    assert short == "가" * 118 + "%…"
    assert latex_escape(short).endswith(r"\%…")
    with pytest.raises(ValueError):
        shorten("x", 0)


def test_md_escape_neutralises_markup():
    s = md_escape("a | b *c* [d](e) `f` <b>g</b> &amp;")
    assert "<" not in s and "|" not in s.replace("\\|", "") and "&amp;amp;" in s
    assert slug("Sent Q4_K_M / 삼성") == "sent-q4-k-m"


def test_html_report_escapes_the_title(demo_report, evil):
    html = demo_report.html
    assert "<script>" not in html and "alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; 50% &amp; $x_{1}# ~^\\" in html


def test_latex_report_escapes_the_title_exactly(demo_report, evil):
    tex = demo_report.tex
    assert evil.tex in tex
    # Outside the escaped form the raw title never appears, and no line of data opens math or a comment.
    assert evil.title not in tex
    for line in tex.splitlines():
        if "alert(1)" in line:
            assert not re.search(r"(?<!\\)[$%#&]", line.replace(" & ", " ")), line


def test_markdown_report_has_no_raw_html(demo_report, evil):
    md = demo_report.md
    assert "<script>" not in md and "</script>" not in md
    assert md_escape(evil.title) in md
    # The title with a pipe, emphasis, a link and code stays one cell of plain text.
    assert r"파이프 \| 별표 \*강조\* \[링크\](http://x) \`코드\`" in md


def test_examples_show_the_most_confidently_wrong_item_first(demo_report, evil):
    ex = demo_report.json["examples"][0]
    first = ex["rows"][0]
    assert first[0]["text"] == evil.title and first[3]["text"] == "wrong"
    assert first[1]["text"] == "[하락]" and first[2]["text"] == "[상승]"
    assert first[4]["numbers"][0]["source"]["derive"] == "diff"
    for fmt in (demo_report.md, demo_report.tex, demo_report.html):
        assert "Example titles" in fmt


def test_generation_examples_have_no_score_and_show_invalid_answers(demo_report):
    gen = next(t for t in demo_report.json["examples"] if "gen_2shot" in t["caption"])
    assert {row[4]["text"] for row in gen["rows"]} == {"—"}
    assert "invalid" in {row[2]["text"] for row in gen["rows"]}

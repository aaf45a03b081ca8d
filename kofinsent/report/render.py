"""report.md / report.html / report.tex from jinja2 templates, and report.json.

Escaping is not left to the templates' authors: the Markdown and LaTeX environments pass every ``{{ }}`` /
``\\VAR{}`` value through :func:`md_escape` / :func:`latex_escape` (jinja2's ``finalize``), and the HTML environment
turns control characters into spaces (:func:`one_line`, as the other two do) and autoescapes. Markup the templates
need is written in the templates themselves; the rare computed piece of markup (a LaTeX column spec) is wrapped in
:class:`Raw`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from kofinsent.report.document import Report
from kofinsent.report.escape import latex_escape, md_escape, one_line

TEMPLATES = Path(__file__).parent / "templates"


class Raw(str):
    """Already valid markup for the target format: passed through unescaped."""


def _finalize(escape: Any) -> Any:
    def finalize(value: Any) -> Any:
        if isinstance(value, Raw):
            return value
        return escape("" if value is None else value)
    return finalize


def _html_finalize(value: Any) -> Any:
    """Runs before autoescape. Markup is the templates' own (a macro's table), whose values went through here."""
    from markupsafe import Markup

    return value if isinstance(value, Markup) else one_line(value)


def _env(kind: str) -> Any:
    import jinja2

    common = {"loader": jinja2.FileSystemLoader(TEMPLATES), "undefined": jinja2.StrictUndefined,
              "trim_blocks": True, "lstrip_blocks": True, "keep_trailing_newline": True}
    if kind == "html":
        return jinja2.Environment(autoescape=True, finalize=_html_finalize, **common)
    if kind == "md":
        return jinja2.Environment(autoescape=False, finalize=_finalize(md_escape), **common)
    # LaTeX: delimiters that cannot clash with TeX's braces and percent signs.
    return jinja2.Environment(autoescape=False, finalize=_finalize(latex_escape),
                              block_start_string=r"\BLOCK{", block_end_string="}",
                              variable_start_string=r"\VAR{", variable_end_string="}",
                              comment_start_string=r"\#{", comment_end_string="}",
                              line_statement_prefix=None, line_comment_prefix=None, **common)


def _colspec(table: Any) -> Raw:
    return Raw("".join(f"p{{{c.width}}}" if c.width else ("r" if c.numeric else "l") for c in table.columns))


def render(report: Report, kind: str) -> str:
    """``kind``: "md", "html" or "tex"."""
    env = _env(kind)
    template = env.get_template(f"report.{kind}.j2")
    return template.render(r=report, colspec=_colspec, raw=Raw)

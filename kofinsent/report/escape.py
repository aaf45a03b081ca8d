"""Escaping for the three report formats. Titles and names come from data and are untrusted text.

Every function here takes plain text and returns text safe to paste into its format; the report templates pass
every value through them (HTML through jinja2's autoescape), so no caller escapes by hand.
"""
from __future__ import annotations

import re
import unicodedata

# All ten LaTeX specials (clarifications, issue 6) plus the square brackets: a cell that starts with "[" right after
# a row's "\\" would be read as the optional argument of "\\" (forum titles often start with "[속보]").
_LATEX = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "#": r"\#",
    "^": r"\textasciicircum{}",
    "_": r"\_",
    "%": r"\%",
    "~": r"\textasciitilde{}",
    "[": "{[}",
    "]": "{]}",
}
_LATEX_RE = re.compile("|".join(re.escape(c) for c in _LATEX))

# Markdown: characters that would start emphasis, code, links, table cells, math (GitHub renders $...$) or
# strikethrough get a backslash (CommonMark allows it before any ASCII punctuation); &, <, > become entities so a
# title can neither inject HTML nor be read as an entity.
_MD_BACKSLASH = set("\\`*_[]|$~")
_MD_ENTITY = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def one_line(text: object) -> str:
    """Text for one table cell or line: newlines, tabs and other control characters become spaces."""
    return "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in str(text))


def shorten(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a character boundary with "…". Call before escaping, never after:
    cutting escaped text could split an escape sequence."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def latex_escape(text: object) -> str:
    """Plain text -> LaTeX text: the ten specials and square brackets escaped, control characters as spaces."""
    return _LATEX_RE.sub(lambda m: _LATEX[m.group()], one_line(text))


def md_escape(text: object) -> str:
    """Plain text -> Markdown inline text: no markup, no raw HTML, no table-cell breaks."""
    out = []
    for ch in one_line(text):
        if ch in _MD_ENTITY:
            out.append(_MD_ENTITY[ch])
        elif ch in _MD_BACKSLASH:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def slug(text: str) -> str:
    """A file-name part of [a-z0-9-] only: safe in LaTeX's \\includegraphics, URLs and Markdown without escaping."""
    s = re.sub(r"[^a-z0-9]+", "-", unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower())
    return s.strip("-") or "x"

"""What every report figure shares: the :class:`Figure` record, the matplotlib style, a blank canvas and the saving.

Kept apart from the figures themselves so that :mod:`kofinsent.report.figures` and
:mod:`kofinsent.report.analysis_figures` both build on it without importing each other. Saving is byte-stable for the
same inputs on the same machine: PNG Software and PDF CreationDate / ModDate are dropped and the SVG hash salt fixed.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CJK_FONTS = ("Noto Sans CJK KR", "Noto Sans KR", "NanumGothic", "Malgun Gothic", "AppleGothic", "UnDotum")


@dataclass
class Figure:
    name: str                      # file stem, [a-z0-9-] only
    caption: str
    files: list[str] = field(default_factory=list)   # relative to the report folder
    data: list[dict[str, Any]] = field(default_factory=list)  # plotted values with their sources

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "caption": self.caption, "files": self.files, "data": self.data}


@contextmanager
def figure_style() -> Iterator[None]:
    """The report's matplotlib settings, for the figures drawn inside the ``with``."""
    import matplotlib
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    fonts = [f for f in CJK_FONTS if f in installed] + ["DejaVu Sans"]
    rc = {"svg.hashsalt": "kofinsent-report", "font.family": "sans-serif", "font.sans-serif": fonts,
          "font.size": 9, "axes.titlesize": 9, "figure.dpi": 100, "savefig.dpi": 150}
    with matplotlib.rc_context(rc), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing")  # a Korean run name without a CJK font
        yield


def save_figure(fig: Any, out: Path, name: str, synthetic: bool) -> list[str]:
    """Write ``out/NAME.png`` and ``out/NAME.pdf``; returns their paths relative to the report folder."""
    if synthetic:  # every output of a synthetic run says so, figures included
        fig.text(0.5, 0.995, "SYNTHETIC DATA (replay forum) — not real market data", ha="center", va="top",
                 color="#b00020", fontsize=9, fontweight="bold")
    fig.tight_layout(rect=(0, 0, 1, 0.96) if synthetic else (0, 0, 1, 1))
    files = []
    for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "ModDate": None})):
        path = out / f"{name}.{ext}"
        fig.savefig(path, format=ext, metadata=meta)
        files.append(f"figures/{path.name}")
    return files


def new_figure(width: float, height: float) -> Any:
    """A matplotlib figure of ``width`` x ``height`` inches, not registered with pyplot (no global state)."""
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width, height))


__all__ = ["CJK_FONTS", "Figure", "figure_style", "new_figure", "save_figure"]

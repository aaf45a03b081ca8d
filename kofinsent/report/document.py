"""The :class:`Report`: what a report shows (runs, methods, tables, examples, figures, notes), format-free.

Its own module so that the renderers can read it without importing :mod:`kofinsent.report.build`, which calls them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kofinsent import __version__
from kofinsent.report.cite import Text
from kofinsent.report.collect import Run, Step
from kofinsent.report.examples import TITLE_CHARS
from kofinsent.report.figure_canvas import Figure
from kofinsent.report.tables import Table


@dataclass
class Report:
    title: str
    runs: list[Run]
    methods: list[tuple[str, list[Text]]]
    tables: list[Table]
    examples: list[Table]
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    title_chars: int = TITLE_CHARS

    @property
    def synthetic(self) -> bool:
        return any(r.synthetic for r in self.runs)

    @property
    def synthetic_text(self) -> str:
        labels = ", ".join(r.label for r in self.runs if r.synthetic)
        return (f"Synthetic data: {labels} ran on kofinsent's synthetic replay forum (config.toml: [experiment] "
                "synthetic = true). Its titles and prices are generated, so these numbers say nothing about real "
                "stocks; they show that the pipeline works.")

    @property
    def steps(self) -> list[Step]:
        return [s for r in self.runs for s in r.steps]

    def numbers(self) -> list[dict[str, Any]]:
        """Every number shown, with where it is shown and where it came from."""
        out: list[dict[str, Any]] = []

        def add(where: str, t: Text) -> None:
            out.extend({**n.to_json(), "where": where} for n in t.numbers)

        for label, paras in self.methods:
            for i, p in enumerate(paras):
                add(f"methods/{label}/{i}", p)
        for t in self.tables + self.examples:
            for i, row in enumerate(t.rows):
                for c, cell in zip(t.columns, row):
                    add(f"{t.id}/row {i}/{c.name}", cell)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "generated_by": f"kofinsent {__version__} report",
            "synthetic": self.synthetic,
            "synthetic_notice": self.synthetic_text if self.synthetic else None,
            "runs": [{"label": r.label, "path": str(r.path), "kind": r.kind, "synthetic": r.synthetic,
                      "steps": [s.cite for s in r.steps]} for r in self.runs],
            "methods": [{"run": label, "paragraphs": [p.to_json() for p in paras]} for label, paras in self.methods],
            "tables": [t.to_json() for t in self.tables],
            "examples": [t.to_json() for t in self.examples],
            "figures": [f.to_json() for f in self.figures],
            "numbers": self.numbers(),
            "notes": self.notes,
        }


__all__ = ["Report"]

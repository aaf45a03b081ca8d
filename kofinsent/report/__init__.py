"""Academic reports built only from saved run directories (issue 6): ``kofinsent report RUN_DIR... --out DIR``.

Public API: :func:`build_report` (write everything), :func:`assemble` (the content, no files), :func:`load_run`,
:class:`ReportError`, and the escapers :func:`latex_escape`, :func:`md_escape`, :func:`shorten`.
"""
from __future__ import annotations

from kofinsent.report.build import assemble, build_report
from kofinsent.report.collect import ReportError, Run, Step, load_run, load_runs
from kofinsent.report.document import Report
from kofinsent.report.escape import latex_escape, md_escape, shorten

__all__ = ["Report", "ReportError", "Run", "Step", "assemble", "build_report", "latex_escape", "load_run",
           "load_runs", "md_escape", "shorten"]

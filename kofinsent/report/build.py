"""``build_report``: run directories in, report.md / report.tex / report.html / report.json / figures out.

The report folder may hold the user's own files too (notes, their own plots), so a rerun deletes only what a report
wrote there before: ``DIR/.kofinsent-report.json`` lists those files (``{"generated_by": ..., "files": [...]}``,
paths relative to DIR, sorted, written last, byte-identical on a rerun). On the next run exactly the listed files are
removed (only names a report writes, ``report.*`` and ``figures/NAME.png|pdf``, and only inside DIR), so a figure the
runs no longer call for goes away and nothing else does. A folder without that manifest (a report from before it
existed) loses nothing: the new files simply overwrite the ones of the same name.

DIR may not be, or lie inside, one of the run directories: a run is an input and stays as it was.
"""
from __future__ import annotations

import json
from pathlib import Path

from kofinsent.paths import (
    OutputOverInputError,
    UnsafePathError,
    is_inside,
    is_safe_name,
    remove_file,
)
from kofinsent.report.analysis import analysis_tables, per_stock_examples, returns_notes, stock_examples_table
from kofinsent.report.collect import Run, load_runs
from kofinsent.report.document import Report
from kofinsent.report.examples import examples_table
from kofinsent.report.figures import make_figures
from kofinsent.report.methods import methods, report_statistics
from kofinsent.report.paired import Family, paired_tables
from kofinsent.report.render import render
from kofinsent.report.tables import kshot_table, main_table, sentiment_table
from kofinsent.report.train_seeds import train_seed_table
from kofinsent.runs import dumps, write_json

DEFAULT_EXAMPLES = 5
OUTPUTS = ("report.md", "report.tex", "report.html", "report.json")
MANIFEST = ".kofinsent-report.json"  # what this module wrote in the report folder (see the module docstring)
FIGURE_SUFFIXES = (".png", ".pdf")


def _title(runs: list[Run], title: str | None) -> str:
    if title:
        return title
    for r in runs:
        if r.config.get("report", {}).get("title"):
            return str(r.config["report"]["title"])
    return "kofinsent report: " + ", ".join(r.label for r in runs)


def _examples(runs: list[Run], n: int | None) -> int:
    if n is not None:
        return n
    for r in runs:
        v = r.config.get("report", {}).get("examples")
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return DEFAULT_EXAMPLES


def assemble(run_dirs: list[str | Path], title: str | None = None, examples: int | None = None) -> Report:
    """Read the runs and lay out the report's content (no files written; figures come in :func:`build_report`)."""
    runs = load_runs(list(run_dirs))
    steps = [s for r in runs for s in r.steps]
    tables = [t for t in (main_table(steps), kshot_table(steps), train_seed_table(steps), sentiment_table(steps))
              if t]
    family = Family(runs)  # Holm over every paired test the report shows
    tables += paired_tables(runs, family) + analysis_tables(steps)
    n_examples = _examples(runs, examples)
    ex = [t for i, s in enumerate(steps, 1)
          for t in (examples_table(s, n_examples, i),
                    stock_examples_table(s, per_stock_examples(n_examples), i) if n_examples else None)
          if t is not None]
    stats = report_statistics({t.id for t in tables}, family)
    return Report(_title(runs, title), runs,
                  [(r.label, methods(r)) for r in runs] + ([("Statistics (all runs)", stats)] if stats else []),
                  tables, ex, notes=[n for r in runs for n in r.notes] + returns_notes(runs, steps))


def _is_report_file(rel: object) -> bool:
    """``rel`` has the shape of a file this module writes: ``report.<kind>`` or ``figures/<name>.png|pdf``."""
    if not isinstance(rel, str):
        return False
    parts = rel.split("/")
    if len(parts) == 1:
        return rel in OUTPUTS
    return (len(parts) == 2 and parts[0] == "figures" and is_safe_name(parts[1])
            and Path(parts[1]).suffix in FIGURE_SUFFIXES)


def _clear(out: Path) -> None:
    """Remove what an earlier report listed in its manifest, so a figure the runs no longer call for does not linger.

    A manifest is a file anyone can edit: an entry is removed only when it has the shape of a report file and lies
    inside ``out`` (after resolving symlinks); anything else in it is ignored. No manifest: nothing is removed."""
    try:
        listed = json.loads((out / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    for rel in listed if isinstance(listed, list) else []:
        if _is_report_file(rel):
            try:
                remove_file(out / rel, out, missing_ok=True)
            except UnsafePathError:  # e.g. figures/ is a symlink to somewhere else: not ours to delete from
                continue


def _refuse_out_in_a_run(run_dirs: list[str | Path], out: Path) -> None:
    """The report writes report.* and figures/ into ``out``: never into a run (an input), nor a run into figures/."""
    for run in run_dirs:
        if is_inside(out, run, strict=False):
            raise OutputOverInputError(f"--out {str(out)!r} is, or is inside, the run directory {str(run)!r}: the "
                                       "report would write into the run; choose a folder outside it")
        if is_inside(run, out / "figures", strict=False):
            raise OutputOverInputError(f"--out {str(out)!r}: the run directory {str(run)!r} lies in its figures/ "
                                       "folder, which the report writes; choose another --out")


def build_report(run_dirs: list[str | Path], out: str | Path, title: str | None = None,
                 examples: int | None = None) -> Report:
    """Write report.md, report.tex, report.html, report.json and figures/*.png|pdf to ``out`` from the given run
    directories (experiment runs or bare eval runs). Raises :class:`~kofinsent.report.collect.ReportError` for a
    directory that is not a run or a file that cannot be read, and :class:`~kofinsent.paths.OutputOverInputError` for
    an ``out`` in a run directory; nothing is written then. Deletes only the files its manifest lists (module
    docstring)."""
    if examples is not None and examples < 0:
        raise ValueError(f"--examples must be >= 0, got {examples}")
    report = assemble(run_dirs, title, examples)
    out = Path(out)
    _refuse_out_in_a_run(list(run_dirs), out)
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    report.figures = make_figures(report.runs, report.steps, out / "figures")
    for kind in ("md", "tex", "html"):
        (out / f"report.{kind}").write_text(render(report, kind), encoding="utf-8", newline="\n")
    (out / "report.json").write_text(dumps(report.to_json(), indent=2) + "\n", encoding="utf-8", newline="\n")
    # last: a report cut off halfway leaves the previous manifest, whose files are then removed on the next run
    written = sorted([*OUTPUTS, *(f for fig in report.figures for f in fig.files)])
    write_json(out / MANIFEST, {"generated_by": "kofinsent report", "files": written})
    return report


__all__ = ["assemble", "build_report"]

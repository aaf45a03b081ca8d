"""``kofinsent report RUN_DIR... --out DIR``: a typer wrapper over :func:`kofinsent.report.build_report`."""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated

import typer


def _errors() -> AbstractContextManager[None]:
    """One ``error: ...`` line on stderr and exit status 2 (as every kofinsent command) for what the user can fix."""
    from kofinsent.cli.errors import one_line_errors  # imported here so that `kofinsent --help` stays light
    from kofinsent.report.collect import ReportError

    return one_line_errors(ReportError, OSError)


def report_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Experiment run directories (runs/NAME/ID) or eval run "
                                                        "directories (kofinsent eval --out DIR).")],
    out: Annotated[Path, typer.Option("--out", help="Report folder, e.g. reports/NAME (not in a run directory). A "
                                                    "rerun replaces only the files a report wrote there; your own "
                                                    "files stay.")],
    title: Annotated[str | None, typer.Option("--title", help="Report title (default: config.toml [report] "
                                                                 "title, else the run names).")] = None,
    examples: Annotated[int | None, typer.Option("--examples", help="Confidently wrong example titles per run "
                                                                       "(default: [report] examples, else 5).")] = None,
) -> None:
    """Build report.md, report.tex, report.html, report.json and figures from saved run directories."""
    with _errors():
        from kofinsent.report import build_report

        report = build_report(run_dirs, out, title=title, examples=examples)
        if report.synthetic:
            typer.echo("note: synthetic data (replay forum): the report says so in every output")
        for note in report.notes:
            typer.echo(f"note: {note}", err=True)
        typer.echo(f"{len(report.steps)} runs, {len(report.tables)} tables, {len(report.figures)} figures")
        typer.echo(f"-> {Path(out) / 'report.md'}")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)

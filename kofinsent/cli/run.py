"""``kofinsent run experiments/NAME.toml [key=value ...]``: a whole experiment, resumable, in one run directory."""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated

import typer


def _errors() -> AbstractContextManager[None]:
    from crawler.errors import CrawlerError
    from kofinsent.backends.base import BackendError
    from kofinsent.cli.errors import one_line_errors
    from kofinsent.dataset.errors import DatasetError
    from kofinsent.evaluation.evaluate import EvalConfigError
    from kofinsent.experiment.config import ConfigError
    from kofinsent.experiment.preflight import PreflightError
    from kofinsent.experiment.runner import ExperimentError
    from kofinsent.export.errors import ExportError
    from kofinsent.runs import RunDirError
    from kofinsent.training.errors import TrainError

    return one_line_errors(ConfigError, ExperimentError, CrawlerError, DatasetError, TrainError, EvalConfigError,
                           ExportError, BackendError, RunDirError, PreflightError)


def run_command(
    config: Annotated[Path, typer.Argument(help="Experiment file, e.g. experiments/quickstart.toml.")],
    overrides: Annotated[list[str] | None, typer.Argument(
        help="Dotted KEY=VALUE overrides, e.g. train.lora.max_steps=20 dataset.per_label=500.")] = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where run directories go.")] = Path("runs"),
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Continue this run directory (default: the newest run of the same resolved config).")
    ] = None,
    new: Annotated[bool, typer.Option("--new", help="Start a new run directory even if one of this config exists.")
                   ] = False,
    check: Annotated[bool, typer.Option(
        "--check", help="Validate the config, print it resolved and check that what its steps need is here (exit 2 "
                        "if not); run nothing.")] = False,
    preflight: Annotated[bool, typer.Option(
        "--preflight/--no-preflight",
        help="Before the first step, check that the packages, servers and GPU the steps need are here.")] = True,
) -> None:
    """Run an experiment: crawl (or reuse a db), dataset, train, export, evaluate, baselines, compare, report.

    Writes runs/NAME/<UTC time>-<git sha>/. Started again with the same config and overrides, it continues the
    newest such run and skips the steps already done. Before anything runs, every optional package, server and
    GPU a step still to run needs is checked: what is missing is one error line each (with the pip command), exit 2.
    """
    with _errors():
        from kofinsent.experiment.config import dump_toml, load_config

        cfg = load_config(config, overrides or [])
        if resume is not None and new:
            raise ValueError("choose one of --resume and --new")
        if check:
            typer.echo(dump_toml(cfg), nl=False)
        if preflight:
            from kofinsent.experiment.preflight import check as check_needs
            from kofinsent.experiment.preflight import done_steps

            # steps done in the run this continues are skipped by it, so what they need is not asked for
            check_needs(cfg, done_steps(cfg, runs_dir, resume, new))
        if check:
            return
        from kofinsent.experiment.runner import run_experiment

        run_dir, results = run_experiment(cfg, runs_dir, resume=resume, new=new, log=typer.echo)
        ran = [r.name for r in results if not r.skipped]
        typer.echo(f"{len(ran)} steps run, {len(results) - len(ran)} skipped -> {run_dir}")


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)

"""``kofinsent run experiments/NAME.toml [key=value ...]``: a whole experiment, resumable, in one run directory."""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated

import typer


def _errors() -> AbstractContextManager[None]:
    from crawler.errors import CrawlerError

    from .backends.base import BackendError
    from .cli_errors import one_line_errors
    from .config import ConfigError
    from .dataset.errors import DatasetError
    from .evaluate import EvalConfigError
    from .experiment import ExperimentError
    from .export import ExportError
    from .runs import RunDirError
    from .train import TrainError

    return one_line_errors(ConfigError, ExperimentError, CrawlerError, DatasetError, TrainError, EvalConfigError,
                           ExportError, BackendError, RunDirError)


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
    check: Annotated[bool, typer.Option("--check", help="Validate the config and print it resolved; run nothing.")
                     ] = False,
) -> None:
    """Run an experiment: crawl (or reuse a db), dataset, train, export, evaluate, baselines, compare, report.

    Writes runs/NAME/<UTC time>-<git sha>/. Started again with the same config and overrides, it continues the
    newest such run and skips the steps already done.
    """
    with _errors():
        from .config import dump_toml, load_config

        cfg = load_config(config, overrides or [])
        if check:
            typer.echo(dump_toml(cfg), nl=False)
            return
        if resume is not None and new:
            raise ValueError("choose one of --resume and --new")
        from .experiment import run_experiment

        run_dir, results = run_experiment(cfg, runs_dir, resume=resume, new=new, log=typer.echo)
        ran = [r.name for r in results if not r.skipped]
        typer.echo(f"{len(ran)} steps run, {len(results) - len(ran)} skipped -> {run_dir}")


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)

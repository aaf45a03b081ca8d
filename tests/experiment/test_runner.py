"""Run-directory bookkeeping without running models: ids, which run a re-run continues, refusing another config's
directory, step references, and a failed step that stays undone."""
from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kofinsent.experiment import (
    Experiment,
    ExperimentError,
    find_resumable,
    new_run_id,
    run_experiment,
)
from kofinsent.runs import read_json

from .conftest import small_config


def _cfg(*overrides: str):
    return small_config(*overrides)


def test_run_id_is_utc_time_and_git_sha() -> None:
    rid = new_run_id(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert re.fullmatch(r"20260102T030405Z-([0-9a-f]{7}|nogit)", rid)


def test_failed_step_is_not_marked_and_a_rerun_continues_the_same_directory(tmp_path: Path) -> None:
    cfg = _cfg()
    lines: list[str] = []
    with pytest.raises(ExperimentError, match="dataset.db missing.sqlite does not exist"):
        run_experiment(cfg, tmp_path, log=lines.append, progress=False)
    (run,) = (tmp_path / "t").iterdir()
    assert read_json(run / "run.json")["steps"] == {}
    assert "step dataset: FAILED" in (run / "log.txt").read_text(encoding="utf-8")
    assert find_resumable(tmp_path / "t", cfg.sha256()) == run
    with pytest.raises(ExperimentError):
        run_experiment(cfg, tmp_path, log=lines.append, progress=False)
    assert [p.name for p in (tmp_path / "t").iterdir()] == [run.name]  # continued, not a second directory
    assert any(line.startswith(f"resuming {run}") for line in lines)
    # another resolved config is another run
    assert find_resumable(tmp_path / "t", _cfg("dataset.per_label=10").sha256()) is None


def test_a_directory_of_another_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError):
        run_experiment(_cfg(), tmp_path, progress=False, log=lambda s: None)
    (run,) = (tmp_path / "t").iterdir()
    with pytest.raises(ExperimentError, match="holds a run of another config"):
        run_experiment(_cfg("dataset.per_label=10"), tmp_path, resume=run, progress=False, log=lambda s: None)
    with pytest.raises(ExperimentError, match="not a run directory"):
        run_experiment(_cfg(), tmp_path, resume=tmp_path, progress=False)


def test_run_paths_and_step_order(tmp_path: Path) -> None:
    cfg = _cfg('models.m.arch="llama"', 'train.l.model="@models/m"', 'export.g.train="l"',
               'eval.g.backend="llamacpp"', 'eval.g.model="@export/g/g-f16.gguf"', "baselines.enabled=true",
               'compare.pairs=[["g", "baselines/majority"]]', "report.enabled=true")
    exp = Experiment(cfg, tmp_path / "run")
    assert exp.path("@train/l/adapter") == str(tmp_path / "run" / "train" / "l" / "adapter")
    assert exp.path("EleutherAI/polyglot-ko-1.3b") == "EleutherAI/polyglot-ko-1.3b"
    assert [name for name, _ in exp.steps()] == ["dataset", "models/m", "train/l", "export/g", "eval/base", "eval/g",
                                                 "baselines", "compare/g__majority", "report"]

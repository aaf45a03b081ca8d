"""Run-directory bookkeeping without running models: ids, which run a re-run continues, refusing another config's
directory, step references, and a failed step that stays undone."""
from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kofinsent.experiment.runner import (
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


def _train_split(run: Path, n: int = 40) -> None:
    from kofinsent.tiny import forum_titles

    (run / "dataset").mkdir(parents=True)
    recs = [{"id": f"900010-{i}", "code": "900010", "name": "합성전자" if i % 5 else None, "title": t,
             "label": "[상승]" if i % 2 else "[하락]"} for i, t in enumerate(forum_titles(n, seed=2))]
    (run / "dataset" / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs),
                                                 encoding="utf-8")


def test_teacher_step_with_the_stand_in_is_resumable_synthetic_and_keyless(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """[teacher] standin = true: the step serves the stand-in, writes teacher/ and is marked done only then; cut off
    (teacher.jsonl torn, no datasheet), the same command goes on from its records, and the files end as a whole
    run's. The environment's OpenAI key never reaches the loopback stand-in."""
    from kofinsent.dataset import teacher_standin

    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-the-stand-in")
    served: list[teacher_standin.TeacherStandin] = []
    real = teacher_standin.TeacherStandin.start

    def start(self):
        served.append(self)
        return real(self)

    monkeypatch.setattr(teacher_standin.TeacherStandin, "start", start)
    cfg = _cfg("experiment.synthetic=true", "teacher.standin=true")
    monkeypatch.setattr(Experiment, "steps", lambda self: [("teacher", self.teacher)])
    run = tmp_path / "t" / "20260101T000000Z-abcdef0"
    _train_split(run)
    lines: list[str] = []
    exp = Experiment(cfg, run, log=lines.append, progress=False)
    exp.run()
    state = read_json(run / "run.json")["steps"]["teacher"]
    assert state["status"] == "done" and state["synthetic"] is True and state["records"] == 40
    assert state["accepted"] + state["dropped"] == 40
    t = run / "teacher"
    whole = {p.name: p.read_bytes() for p in sorted(t.iterdir())}
    assert set(whole) == {"teacher_config.json", "teacher.jsonl", "sharegpt.jsonl", "datasheet.json", "datasheet.md"}
    assert json.loads(whole["datasheet.json"])["synthetic"] is True and b"**SYNTHETIC**" in whole["datasheet.md"]
    assert any("SYNTHETIC stand-in" in line for line in lines)
    assert served[0].replies >= 40 and served[0].keyed == 0
    # cut off: the step not marked, half the records and a torn line left; the rerun asks only for the rest
    state = read_json(run / "run.json")
    state["steps"] = {}
    (run / "run.json").write_text(json.dumps(state), encoding="utf-8")
    kept = whole["teacher.jsonl"].decode().splitlines(keepends=True)[:16]
    (t / "teacher.jsonl").write_text("".join(kept) + '{"id": "900010-16", "sta', encoding="utf-8")
    for name in ("datasheet.json", "datasheet.md", "sharegpt.jsonl"):
        (t / name).unlink()
    Experiment(cfg, run, log=lines.append, progress=False).run()
    assert {p.name: p.read_bytes() for p in sorted(t.iterdir())} == whole
    assert read_json(run / "run.json")["steps"]["teacher"]["status"] == "done"
    assert 24 <= served[1].replies < served[0].replies and served[1].keyed == 0
    # a teacher run of other arguments in teacher/ (say, an older prompt) is cleared, not continued
    cfg_json = json.loads(whole["teacher_config.json"])
    (t / "teacher_config.json").write_text(json.dumps({**cfg_json, "prompt_sha256": "old"}), encoding="utf-8")
    state["steps"] = {}
    (run / "run.json").write_text(json.dumps(state), encoding="utf-8")
    Experiment(cfg, run, log=lines.append, progress=False).run()
    assert any("holds a teacher run of other arguments (prompt_sha256: 'old'" in line for line in lines)
    assert (t / "teacher.jsonl").read_bytes() == whole["teacher.jsonl"] and served[2].replies == served[0].replies

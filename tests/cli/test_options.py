"""One declaration per stage: every field of EvalConfig, TrainConfig and TeacherConfig is an option of its command
(``kofinsent eval``, ``kofinsent train``, ``kofinsent dataset teacher``), spelled as the field, and the flags build
the config the Python API would (:mod:`kofinsent.cli.options`)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from kofinsent.cli import app
from kofinsent.cli.dataset import TEACHER_OPTIONS
from kofinsent.cli.eval import EVAL_OPTIONS
from kofinsent.cli.options import StageOptions
from kofinsent.cli.train import TRAIN_OPTIONS
from kofinsent.dataset.teacher import TeacherConfig
from kofinsent.evaluation.options import EvalConfig
from kofinsent.training.options import TrainConfig

STAGES = {
    "eval": (("eval",), EVAL_OPTIONS, EvalConfig),
    "train": (("train",), TRAIN_OPTIONS, TrainConfig),
    "teacher": (("dataset", "teacher"), TEACHER_OPTIONS, TeacherConfig),
}
# the fields that are no command-line option, on purpose (each with its reason in the command's not_options)
NOT_OPTIONS = {"eval": set(), "train": {"extra"}, "teacher": {"synthetic"}}


def command(*path: str) -> Any:
    """The click command ``kofinsent PATH`` runs."""
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    return cmd


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


@pytest.mark.parametrize("stage", STAGES)
def test_every_field_is_an_option_spelled_as_the_field(stage: str) -> None:
    path, options, config_cls = STAGES[stage]
    assert set(options.not_options) == NOT_OPTIONS[stage]
    assert all(reason.strip() for reason in options.not_options.values())
    flags = options.flags(config_cls, command(*path))
    fields = {f.name for f in dataclasses.fields(config_cls)}
    assert set(flags) == fields - NOT_OPTIONS[stage]
    unreachable = sorted(f for f, spelled in flags.items() if flag(f) not in spelled)
    assert not unreachable, f"{config_cls.__name__} fields without their --option in `kofinsent {' '.join(path)}`"


def test_the_options_issue_16_found_missing_are_there() -> None:
    eval_flags = EVAL_OPTIONS.flags(EvalConfig, command("eval"))
    assert eval_flags["temperature"] == ["--temperature"]
    assert eval_flags["balanced_shots"] == ["--balanced-shots", "--no-balanced-shots"]
    assert eval_flags["prefix_cache"] == ["--prefix-cache", "--no-prefix-cache"]  # --no-prefix-cache as before
    train_flags = TRAIN_OPTIONS.flags(TrainConfig, command("train"))
    for field in ("weight_decay", "save_total_limit", "dataloader_workers"):
        assert train_flags[field] == [flag(field)]


class Built(Exception):
    """Raised by the spy once the command has built its config: nothing runs."""


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    configs: list[Any] = []
    real = StageOptions.build

    def spy(self: StageOptions, config_cls: type, params: Any, **given: Any) -> Any:
        configs.append(real(self, config_cls, params, **given))
        raise Built

    monkeypatch.setattr(StageOptions, "build", spy)
    return configs


def run(built: list[Any], *args: object) -> Any:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert isinstance(result.exception, Built), result.output
    assert len(built) == 1
    return built[0]


def test_eval_flags_build_the_config(built: list[Any], tmp_path: Path) -> None:
    data, out, train = tmp_path / "test.jsonl", tmp_path / "run", tmp_path / "train.jsonl"
    cfg = run(built, "eval", "--backend", "hf", "--model", "m", "--data", data, "--out", out, "--prompt", "kshot",
              "--shots", 5, "--train", train, "--fewshot-seeds", "4,5", "--no-balanced-shots", "--temperature", 0.7,
              "--method", "generate", "--batch-size", "auto", "--no-prefix-cache", "--format", "free")
    assert cfg == EvalConfig(backend="hf", model="m", data=str(data), out=str(out), prompt="kshot", shots=5,
                             train=str(train), fewshot_seeds=[4, 5], balanced_shots=False, temperature=0.7,
                             method="generate", batch_size="auto", prefix_cache=False, format="free")


def test_train_flags_build_the_config(built: list[Any], tmp_path: Path) -> None:
    data, out = tmp_path / "train.jsonl", tmp_path / "run"
    cfg = run(built, "train", "--model", "m", "--data", data, "--out", out, "--weight-decay", 0.01,
              "--save-total-limit", 2, "--dataloader-workers", 3, "--seed", 7, "--target-modules", "q_proj, v_proj",
              "--batch-size", "auto", "--loss", "answer-only")
    assert cfg == TrainConfig(model="m", data=str(data), out=str(out), weight_decay=0.01, save_total_limit=2,
                              dataloader_workers=3, seed=7, target_modules=["q_proj", "v_proj"], batch_size="auto",
                              loss="answer-only")


def test_teacher_flags_build_the_config(built: list[Any], tmp_path: Path) -> None:
    data, out = tmp_path / "train.jsonl", tmp_path / "teacher"
    cfg = run(built, "dataset", "teacher", "--backend", "openai", "--model", "m", "--data", data, "--out", out,
              "--format", "free", "--temperature", 0.7, "--concurrency", 8, "--max-attempts", 2)
    assert cfg == TeacherConfig(backend="openai", model="m", data=str(data), out=str(out), format="free",
                                temperature=0.7, concurrency=8, max_attempts=2)


@pytest.mark.parametrize("stage, required", [
    ("eval", {"backend": "hf", "model": "m", "data": "d.jsonl", "out": "o"}),
    ("train", {"model": "m", "data": "d.jsonl", "out": "o"}),
    ("teacher", {"backend": "openai", "model": "m", "data": "d.jsonl", "out": "o"}),
])
def test_option_defaults_are_the_fields_defaults(built: list[Any], stage: str, required: dict[str, str]) -> None:
    path, _, config_cls = STAGES[stage]
    cfg = run(built, *path, *[x for k, v in required.items() for x in (flag(k), v)])
    assert cfg == config_cls(**required)


def test_a_field_without_an_option_fails_the_build() -> None:
    @dataclasses.dataclass
    class Config:
        a: int
        new: int = 0

    with pytest.raises(LookupError, match="Config.new has no command-line option"):
        StageOptions().build(Config, {"a": 1})
    assert StageOptions(not_options={"new": "set by the runner"}).build(Config, {"a": 1}) == Config(a=1)

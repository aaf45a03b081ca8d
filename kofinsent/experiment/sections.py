"""The tables of an experiment config (:mod:`kofinsent.experiment.config`), each a strict pydantic model.

``[train.NAME]``, ``[eval.NAME]`` and ``[teacher]`` are made from their stage's own option dataclass
(:func:`section_from_dataclass`), so a new option of ``kofinsent train`` / ``eval`` / ``dataset teacher`` is a config
key at once, with the same type and default; the checks of the stage (its ``validate()``) run on them at load time.

``[teacher]`` (seed 000's data step, run by the ``teacher`` step) takes the options of
:class:`kofinsent.dataset.teacher.TeacherConfig` (backend, host, model, max_attempts, concurrency, seed, format,
temperature, max_new_tokens, n_gpu_layers, n_ctx), ``data`` (default the train split) and ``standin``. There is no
key for an API key: the openai backend reads ``OPENAI_API_KEY`` from the environment, so a config file (and the run's
config.toml) never holds one. ``standin = true`` serves kofinsent's SYNTHETIC stand-in teacher
(:mod:`kofinsent.dataset.teacher_standin`) on 127.0.0.1 for the step, as ``[replay]`` serves the synthetic forum for
the crawl: it needs ``experiment.synthetic = true``, the openai backend and no ``host``; its model is
:data:`~kofinsent.dataset.teacher_standin.STANDIN_MODEL`.
"""
from __future__ import annotations

import dataclasses
import typing
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from kofinsent.experiment.refs import TRAIN_SPLIT
from kofinsent.paths import NAME_RULE, is_safe_name


class StrictModel(BaseModel):
    """The config's tables: unknown keys are errors."""
    # strict: a TOML string "8" is not an int; TOML dates are dates. int is still accepted where a float is expected.
    model_config = ConfigDict(extra="forbid", strict=True)


class ExperimentSection(StrictModel):
    name: str  # runs/<name>/ and reports/<name>/: a plain name
    description: str = ""
    seed: int = 0
    synthetic: bool = False  # the data come from the replay forum: every output says so

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not is_safe_name(v):
            raise ValueError(f"{NAME_RULE}, got {v!r}")
        return v


class ReplaySection(StrictModel):
    """Serve :class:`crawler.replay.SyntheticForum` on 127.0.0.1 while the crawl step runs."""
    codes: dict[str, str]
    start: date
    end: date
    posts_per_day: float = 30.0
    seed: int = 0
    signal: float = Field(0.0, ge=0.0, le=1.0)
    charset: Literal["euc-kr", "utf-8"] = "euc-kr"
    quirks: bool = True


class CrawlSection(StrictModel):
    codes: list[str]
    names: dict[str, str] = {}   # code -> name, recorded in the db (reports and datasets show names)
    since: date
    until: date
    source: Literal["api", "html"] = "api"
    db: str | None = None        # default: @crawl/forum.sqlite; a path outside the run is shared by later runs
    base_url: str | None = None  # a Naver mirror; with [replay] the crawl goes to the served replay site
    # TOML has nan and inf: a politeness value must be a finite number (the crawler CLI refuses the same).
    delay: float = Field(0.7, ge=0.0, allow_inf_nan=False)
    retries: int = Field(5, ge=0)
    timeout: float = Field(15.0, gt=0.0, allow_inf_nan=False)
    max_wait: float = Field(300.0, ge=0.0, allow_inf_nan=False)  # a longer Retry-After stops the crawl (exit 3)
    max_requests: int | None = Field(None, ge=1)
    prices: bool = True
    price_margin_days: int = Field(20, ge=0)  # bars before since / after until, for the label of edge posts

    @field_validator("codes")
    @classmethod
    def _codes(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if not (len(c) == 6 and c.isdigit())]
        if bad or not v:
            raise ValueError(f"stock codes are six digits, got {bad or v}")
        return v


class DatasetSection(StrictModel):
    db: str | None = None  # an existing crawler db (when there is no [crawl] table)
    rule: Literal["same-day", "next-session"]
    per_label: int = Field(15_000, ge=0)
    split: Literal["random", "chronological"] = "random"
    test_size: float = Field(0.01, gt=0.0, lt=1.0)
    cutoff: date | None = None
    seed: int = 42
    group_by_day: bool = False
    stratify_stock: bool = False
    dedupe: bool = False
    allow_fewer: bool = False
    # also write sharegpt.jsonl (train): the price-label variant (kofinsent.dataset.sharegpt), not seed 000's data
    sharegpt: Literal["label", "json"] | None = None


class TinyModelSection(StrictModel):
    """A tiny random model built in the run (:mod:`kofinsent.tiny`), its tokenizer trained on the run's titles."""
    arch: Literal["gpt-neox", "llama"]
    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    vocab_size: int = Field(800, ge=300)
    init_std: float = 0.2
    seed: int = 0


class ExportSection(StrictModel):
    train: str | None = None  # a [train.NAME] run (its merged/ or adapter/)
    model: str | None = None  # or a Llama HF directory
    quant: list[str] = ["f16"]
    name: str | None = None   # file stem: NAME-<quant>.gguf (default: the export's table name)

    @model_validator(mode="after")
    def _one_source(self) -> ExportSection:
        if (self.train is None) == (self.model is None):
            raise ValueError("give exactly one of train or model")
        return self


class BaselinesSection(StrictModel):
    enabled: bool = True
    seed: int = 0


class CompareSection(StrictModel):
    pairs: list[list[str]] = []

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, v: list[list[str]]) -> list[list[str]]:
        for p in v:
            if len(p) != 2:
                raise ValueError(f"each pair names two runs (eval names or baselines/NAME), got {p}")
        return v


class ReportSection(StrictModel):
    enabled: bool = True
    title: str | None = None
    out: str | None = None  # default: reports/<experiment name>
    examples: int = Field(5, ge=0)


def section_from_dataclass(cls: type, name: str, drop: set[str], extra: dict[str, Any],
                           base: type[BaseModel]) -> type[BaseModel]:
    """A pydantic model on ``base`` (the config's strict model) with the dataclass's fields (types and defaults)
    minus ``drop``, plus ``extra``."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in drop:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = Field(default_factory=f.default_factory)
        else:
            default = ...
        fields[f.name] = (hints[f.name], default)
    fields.update(extra)
    return create_model(name, __base__=base, **fields)


def _train_section() -> type[BaseModel]:
    from kofinsent.training.options import TrainConfig

    # seeds: one adapter per training seed, in train/NAME/seed<k>/ (see ExperimentConfig.train_runs)
    return section_from_dataclass(
        TrainConfig, "TrainSection", {"out", "resume", "overwrite", "extra", "data"},
        {"engine": (Literal["hf", "unsloth"], "hf"), "data": (str, TRAIN_SPLIT), "seeds": (list[int] | None, None)},
        StrictModel)


def _eval_section() -> type[BaseModel]:
    from kofinsent.evaluation.options import EvalConfig

    # model and shots may be lists: the table then stands for every combination (seed 003's k-shot grid)
    return section_from_dataclass(
        EvalConfig, "EvalSection", {"out", "overwrite", "resume", "data", "model", "shots", "train"},
        {"model": (str | list[str], ...), "shots": (int | list[int], 0), "data": (str, "@dataset/test.jsonl"),
         "train": (str | None, None)}, StrictModel)


def _teacher_section() -> type[BaseModel]:
    from kofinsent.dataset.teacher import TeacherConfig

    return section_from_dataclass(
        TeacherConfig, "TeacherSection", {"out", "overwrite", "data", "model", "backend", "synthetic"},
        {"backend": (str, "openai"), "model": (str | None, None), "data": (str, TRAIN_SPLIT),
         "standin": (bool, False)}, StrictModel)


TrainSection = _train_section()
EvalSection = _eval_section()
TeacherSection = _teacher_section()  # [teacher]: see the module docstring


def teacher_config(section: Any, data: str, out: str) -> Any:
    """The :class:`~kofinsent.dataset.teacher.TeacherConfig` a ``[teacher]`` table stands for (a stand-in's model
    and ``synthetic`` filled in; its host is the served stand-in's, set by the step)."""
    from kofinsent.dataset.teacher import TeacherConfig
    from kofinsent.dataset.teacher_standin import STANDIN_MODEL

    spec = section.model_dump()
    standin = spec.pop("standin")
    spec.update(data=data, out=out, synthetic=standin)
    if standin:
        spec["model"] = STANDIN_MODEL
    return TeacherConfig(**spec)


def check_teacher(section: Any, synthetic: bool) -> None:
    """The ``[teacher]`` table's own rules, as a ValueError naming the key (see the module docstring)."""
    from kofinsent.dataset.errors import DatasetConfigError
    from kofinsent.dataset.teacher_standin import STANDIN_MODEL

    if section.standin:
        if section.backend != "openai":
            raise ValueError(f"teacher.backend = {section.backend!r}: the stand-in (teacher.standin = true) is an "
                             "OpenAI-compatible server: use backend = \"openai\"")
        if section.host is not None:
            raise ValueError("teacher.host must be unset with teacher.standin = true (the step serves the stand-in "
                             "on 127.0.0.1)")
        if section.model not in (None, STANDIN_MODEL):
            raise ValueError(f"teacher.model = {section.model!r}: the stand-in serves only {STANDIN_MODEL!r}; leave "
                             "teacher.model out")
        if not synthetic:
            raise ValueError("teacher.standin = true labels titles with SYNTHETIC replies: set experiment.synthetic "
                             "= true")
    elif section.model is None:
        raise ValueError("teacher.model: give the teacher's model (a name on the server, a GGUF path or an HF id), "
                         "or set teacher.standin = true for the offline stand-in")
    try:
        teacher_config(section, "", "").validate(check_files=False)
    except DatasetConfigError as e:
        raise ValueError(f"teacher: {e}") from None


__all__ = ["BaselinesSection", "CompareSection", "CrawlSection", "DatasetSection", "EvalSection", "ExperimentSection",
           "ExportSection", "ReplaySection", "ReportSection", "StrictModel", "TeacherSection", "TinyModelSection",
           "TrainSection", "check_teacher", "section_from_dataclass", "teacher_config"]

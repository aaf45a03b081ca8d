"""Experiment configs: one TOML file per experiment, strict keys and types, dotted ``key=value`` overrides.

Defaults live in code (the ``train``, ``eval`` and ``teacher`` tables are made from
:class:`kofinsent.training.options.TrainConfig`, :class:`kofinsent.evaluation.options.EvalConfig` and
:class:`kofinsent.dataset.teacher.TeacherConfig` themselves, and checked by their ``validate()``, so a new option is
usable from a config at once: :mod:`kofinsent.experiment.sections`); an experiment file holds only what it changes.
Unknown keys and wrong types are errors naming the key.

Paths starting with ``@`` point into the run directory: ``@dataset/train.jsonl``, ``@teacher/sharegpt.jsonl``,
``@models/neox``, ``@train/lora/adapter``, ``@export/llama/tiny-llama-f16.gguf`` (:mod:`kofinsent.experiment.refs`).
Everything else is a path or a hub id, used as given.

Names that become paths are plain names (:data:`kofinsent.paths.NAME_PATTERN`, no ``..``): ``experiment.name``, the
table names of ``[models]``, ``[train]``, ``[export]`` and ``[eval]``, ``export.NAME.name``. The runner clears a step's
directory before the step runs, so a name like ``"../../victim"`` would have it delete outside the run; such a config
is refused at load time. For the same reason a ``@`` path may not climb out of the run (``..``) nor point into the
directory its own step clears.
"""
from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from kofinsent.experiment.expand import EvalRuns, SeedGroups, as_list, expand_evals, pair_runs
from kofinsent.experiment.refs import (
    NAMED_TABLES,
    REF,
    SECTIONS_WITH_OUTPUTS,
    TRAIN_SPLIT,
    check_db,
    check_export_train,
    check_ref,
    check_seed_ref,
)
from kofinsent.experiment.sections import (
    BaselinesSection,
    CompareSection,
    CrawlSection,
    DatasetSection,
    EvalSection,
    ExperimentSection,
    ExportSection,
    ReplaySection,
    ReportSection,
    StrictModel,
    TeacherSection,
    TinyModelSection,
    TrainSection,
    check_teacher,
)
from kofinsent.labels import BASELINES
from kofinsent.paths import check_name, table_key


class ConfigError(ValueError):
    """An experiment config that cannot run; the message names the file and the key."""


class ExperimentConfig(StrictModel):
    experiment: ExperimentSection
    replay: ReplaySection | None = None
    crawl: CrawlSection | None = None
    dataset: DatasetSection
    # left out of model_dump while absent: a config without [teacher] dumps and hashes as before the table existed
    teacher: TeacherSection | None = Field(None, exclude_if=lambda v: v is None)  # type: ignore[valid-type]
    models: dict[str, TinyModelSection] = {}
    train: dict[str, TrainSection] = {}  # type: ignore[valid-type]
    export: dict[str, ExportSection] = {}
    eval: dict[str, EvalSection] = {}  # type: ignore[valid-type]
    baselines: BaselinesSection = BaselinesSection()
    compare: CompareSection = CompareSection()
    report: ReportSection = ReportSection()

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        from kofinsent.backends import REGISTRY
        from kofinsent.evaluation.options import EvalConfig
        from kofinsent.training.options import TrainConfig

        _check_names(self)
        if (self.crawl is None) == (self.dataset.db is None):
            raise ValueError("the data come from exactly one place: a [crawl] table or dataset.db")
        if self.replay is not None:
            if self.crawl is None:
                raise ValueError("[replay] serves a site for the crawl step; there is no [crawl] table")
            if self.crawl.base_url is not None:
                raise ValueError("crawl.base_url must be unset with [replay] (the crawl goes to the replay site)")
            if not self.experiment.synthetic:
                raise ValueError("a [replay] experiment crawls synthetic data: set experiment.synthetic = true")
        if self.crawl is not None and self.crawl.since > self.crawl.until:
            raise ValueError(f"crawl.since ({self.crawl.since}) is after crawl.until ({self.crawl.until})")
        outputs = {section: getattr(self, section) for section in SECTIONS_WITH_OUTPUTS}
        if self.teacher is not None:
            check_teacher(self.teacher, self.experiment.synthetic)
            check_ref("teacher.data", self.teacher.data, outputs, own="teacher")
        seeds = self.all_training_seeds()
        for name, t in self.train.items():
            _check_seeds(name, t)
            for key in ("model", "data"):
                check_ref(f"train.{name}.{key}", getattr(t, key), outputs, own=f"train/{name}")
                check_seed_ref(f"train.{name}.{key}", getattr(t, key), seeds, expands=False)
            _check_options(f"train.{name}", TrainConfig,
                           {k: v for k, v in t.model_dump().items() if k not in ("engine", "seeds")})
        for name, e in self.export.items():
            if e.train is not None:
                check_export_train(name, e.train, seeds)
            if e.model is not None:
                check_ref(f"export.{name}.model", e.model, outputs, own=f"export/{name}")
                check_seed_ref(f"export.{name}.model", e.model, seeds, expands=False)
        for name, e in self.eval.items():
            if e.backend not in REGISTRY:
                raise ValueError(f"eval.{name}.backend = {e.backend!r}: use one of {', '.join(REGISTRY)}")
            _check_options(f"eval.{name}", EvalConfig, {**e.model_dump(), "model": "", "shots": min(as_list(e.shots)),
                                                    "train": e.train or TRAIN_SPLIT})
            for key in ("model", "adapter", "data", "train"):
                for v in as_list(getattr(e, key)):
                    if v is not None:
                        check_ref(f"eval.{name}.{key}", v, outputs)
                        # model and adapter may name a multi-seed train as a whole: the eval expands per seed
                        check_seed_ref(f"eval.{name}.{key}", v, seeds, expands=key in ("model", "adapter"))
        runs, groups = self._expand_evals()
        names = set(runs) | set(groups) | {f"baselines/{b}" for b in BASELINES}
        for a, b in self.compare.pairs:
            for x in (a, b):
                if x not in names:
                    raise ValueError(f"compare.pairs names {x!r}, which is neither an eval run nor a baseline")
        pair_runs(self.compare.pairs, runs, groups)  # a pair of two seed-expanded evals needs the same seeds
        return self

    def training_seeds(self, name: str) -> list[int]:
        """The seeds ``[train.NAME]`` trains with: its ``seeds`` list, else ``[seed]``."""
        t = self.train[name]
        return list(t.seeds) if t.seeds is not None else [t.seed]

    def multi_seed(self, name: str) -> bool:
        """Whether ``[train.NAME]`` trains several adapters (``seeds`` with two or more entries): they go to
        ``train/NAME/seed<k>/``; one seed (``seed = k`` or ``seeds = [k]``) keeps ``train/NAME/``."""
        return name in self.train and len(self.training_seeds(name)) > 1

    def train_runs(self) -> dict[str, tuple[str, int | None]]:
        """Every training run, by its directory under ``train/``: ``NAME`` -> (NAME, None) for a single seed,
        ``NAME/seed<k>`` -> (NAME, k) for each seed of a multi-seed table (one resumable step each)."""
        from kofinsent.training.seeds import seed_dir_name

        out: dict[str, tuple[str, int | None]] = {}
        for name in self.train:
            if self.multi_seed(name):
                out.update({f"{name}/{seed_dir_name(k)}": (name, k) for k in self.training_seeds(name)})
            else:
                out[name] = (name, None)
        return out

    def all_training_seeds(self) -> dict[str, list[int]]:
        """Every ``[train.*]`` table's training seeds, by name."""
        return {name: self.training_seeds(name) for name in self.train}

    def eval_runs(self) -> EvalRuns:
        """Every evaluation to run, by directory name: list-valued ``model`` / ``shots`` expand to their grid
        (``NAME-<model slug>-<k>shot``), and a ``model`` or ``adapter`` that names a multi-seed ``[train.T]`` as a
        whole (``@train/T/adapter``) expands to one run per training seed (``...-seed<k>``, reading
        ``@train/T/seed<k>/adapter``). Two runs that would share a directory are an error naming the table."""
        return self._expand_evals()[0]

    def seed_groups(self) -> SeedGroups:
        """The eval runs that differ only by training seed: the name without ``-seed<k>`` -> {k: run name}."""
        return self._expand_evals()[1]

    def _expand_evals(self) -> tuple[EvalRuns, SeedGroups]:
        return expand_evals(self.eval, self.all_training_seeds())

    def compare_pairs(self) -> list[tuple[str, str]]:
        """``compare.pairs`` with seed-expanded evals paired seed by seed: a pair that names an eval which expands
        per training seed (its name without ``-seed<k>``) stands for one pair per seed (``[lora, base]`` ->
        ``[lora-seed0, base]``, ...); two such evals pair seed k with seed k, and must have the same seeds."""
        return pair_runs(self.compare.pairs, *self._expand_evals())

    def seeds(self) -> dict[str, Any]:
        train_seed = {run: s for group in self.seed_groups().values() for s, run in group.items()}
        return {
            "experiment": self.experiment.seed,
            "replay": self.replay.seed if self.replay else None,
            "dataset": self.dataset.seed,
            "teacher": self.teacher.seed if self.teacher is not None else None,
            "models": {n: m.seed for n, m in self.models.items()},
            "train": {n: self.training_seeds(n) if self.multi_seed(n) else self.training_seeds(n)[0]
                      for n in self.train},
            "eval": {n: {"seed": e["seed"], "fewshot_seeds": e["fewshot_seeds"] if e["prompt"] == "kshot" else None,
                         **({"train_seed": train_seed[n]} if n in train_seed else {})}
                     for n, e in self.eval_runs().items()},
            "baselines": self.baselines.seed,
        }

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as TOML-ready data."""
        return _drop_none(self.model_dump(mode="python"))

    def sha256(self) -> str:
        data = self.model_dump(mode="json")
        for t in data.get("train", {}).values():
            # keys added later hash, at their defaults, as the configs did before they existed
            for key, default in _LATER_TRAIN_KEYS.items():
                if key in t and t[key] == default:
                    t.pop(key)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# [train.NAME] keys newer than the first configs, with the default that leaves them out of ExperimentConfig.sha256
_LATER_TRAIN_KEYS: dict[str, Any] = {"seeds": None, "effective_batch_size": None, "packing": False,
                                     "attn_implementation": "auto"}


def _check_seeds(name: str, t: Any) -> None:
    if t.seeds is None:
        return
    if "seed" in t.model_fields_set:
        raise ValueError(f"train.{name}: give train.{name}.seed or train.{name}.seeds, not both "
                         f"(seed = {t.seed}, seeds = {t.seeds})")
    if not t.seeds:
        raise ValueError(f"train.{name}.seeds: give at least one seed")
    if len(set(t.seeds)) != len(t.seeds):
        raise ValueError(f"train.{name}.seeds = {t.seeds}: a seed is listed twice")
    if any(s < 0 for s in t.seeds):
        raise ValueError(f"train.{name}.seeds = {t.seeds}: seeds are >= 0")


def _check_names(cfg: ExperimentConfig) -> None:
    """Every table name and file stem that becomes a path is a plain name (see the module docstring)."""
    for table in NAMED_TABLES:
        for name in getattr(cfg, table):
            check_name(name, table_key(table, name))
    for name, e in cfg.export.items():
        if e.name is not None:
            check_name(e.name, f"export.{name}.name = {e.name!r}")
    check_db("crawl.db", cfg.crawl.db if cfg.crawl else None)
    check_db("dataset.db", cfg.dataset.db)


def _check_options(key: str, config_cls: type, values: dict[str, Any]) -> None:
    """The stage's own checks (``config_cls.validate``: what ``kofinsent train`` / ``kofinsent eval`` check), at load
    time, as a ValueError naming the table."""
    from kofinsent.evaluation.options import EvalConfigError
    from kofinsent.training.errors import TrainError

    try:
        config_cls(**values, out="").validate(check_files=False)
    except (TrainError, EvalConfigError) as e:
        raise ValueError(f"{key}: {e}") from None


def _drop_none(obj: Any) -> Any:
    """No None (TOML has no null: an absent key means the default) and no empty tables."""
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None and v != {}}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj]
    return obj


# -- loading -----------------------------------------------------------------------------------------------------------
def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lora.max_steps=20"`` -> (["train", "lora", "max_steps"], 20). The value is read as a TOML value
    (``20``, ``2e-4``, ``true``, ``"x"``, ``[0, 5]``, ``2018-01-31``); anything that is not one is a plain string."""
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise ConfigError(f"override {text!r} is not KEY=VALUE with a dotted KEY (e.g. train.lora.max_steps=20)")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(data)  # the caller's dict stays untouched
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {part!r} is a value, not a table")
            node = nxt
        node[path[-1]] = value
    return out


def validate(data: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as e:
        by_key: dict[str, list[str]] = {}
        got: dict[str, str] = {}
        for err in e.errors():
            # pydantic puts union members ("str", "list[int]") in the location; users need the key path alone
            loc = ".".join(str(p) for p in err["loc"] if not _is_type_name(str(p)))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] not in ("missing", "value_error"):
                got[loc] = f" (got {err.get('input')!r})"
            by_key.setdefault(loc, []).append(msg)
        problems = [(f"{k}: " if k else "") + " or ".join(dict.fromkeys(v)) + got.get(k, "") for k, v in by_key.items()]
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def _is_type_name(part: str) -> bool:
    return part in ("str", "int", "float", "bool", "date") or part.startswith(("list[", "dict[", "function-",
                                                                                  "union[", "literal["))


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return validate(apply_overrides(data, overrides or []), str(path))


def dump_toml(cfg: ExperimentConfig) -> str:
    import tomli_w

    return tomli_w.dumps(cfg.to_dict())


__all__ = ["REF", "TRAIN_SPLIT", "ConfigError", "EvalSection", "ExperimentConfig", "TeacherSection", "TrainSection",
           "apply_overrides", "dump_toml", "load_config", "parse_override", "validate"]

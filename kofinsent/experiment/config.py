"""Experiment configs: one TOML file per experiment, strict keys and types, dotted ``key=value`` overrides.

Defaults live in code (the ``train`` and ``eval`` tables are checked against :class:`kofinsent.training.hf_trainer.TrainConfig` and
:class:`kofinsent.evaluation.evaluate.EvalConfig` themselves, so a new training option is usable from a config at once); an
experiment file holds only what it changes. Unknown keys and wrong types are errors naming the key.

Paths starting with ``@`` point into the run directory: ``@dataset/train.jsonl``, ``@teacher/sharegpt.jsonl``,
``@models/neox``, ``@train/lora/adapter``, ``@export/llama/tiny-llama-f16.gguf``. Everything else is a path or a hub id, used as given.

Names that become paths are plain names (:data:`kofinsent.paths.NAME_PATTERN`, no ``..``): ``experiment.name``, the
table names of ``[models]``, ``[train]``, ``[export]`` and ``[eval]``, ``export.NAME.name``. The runner clears a step's
directory before the step runs, so a name like ``"../../victim"`` would have it delete outside the run; such a config
is refused at load time. For the same reason a ``@`` path may not climb out of the run (``..``) nor point into the
directory its own step clears.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kofinsent.experiment.sections import check_teacher, section_from_dataclass, teacher_section
from kofinsent.paths import NAME_RULE, check_name, is_safe_name, table_key

REF = "@"
TRAIN_SPLIT = "@dataset/train.jsonl"  # the default training data, and where kshot prompts draw their examples
SECTIONS_WITH_OUTPUTS = ("dataset", "teacher", "models", "train", "export")
SINGLE_SECTIONS = ("dataset", "teacher")  # @dataset/FILE, @teacher/FILE: one table, no NAME
# the run's sub-directories that the runner clears before a step writes there (a crawl db must not live in one)
CLEARED_DIRS = ("dataset", "teacher", "models", "train", "export", "eval", "baselines")
NAMED_TABLES = ("models", "train", "export", "eval")  # [TABLE.NAME] -> <run>/TABLE/NAME/


class ConfigError(ValueError):
    """An experiment config that cannot run; the message names the file and the key."""


class _Strict(BaseModel):
    # strict: a TOML string "8" is not an int; TOML dates are dates. int is still accepted where a float is expected.
    model_config = ConfigDict(extra="forbid", strict=True)


class ExperimentSection(_Strict):
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


class ReplaySection(_Strict):
    """Serve :class:`crawler.replay.SyntheticForum` on 127.0.0.1 while the crawl step runs."""
    codes: dict[str, str]
    start: date
    end: date
    posts_per_day: float = 30.0
    seed: int = 0
    signal: float = Field(0.0, ge=0.0, le=1.0)
    charset: Literal["euc-kr", "utf-8"] = "euc-kr"
    quirks: bool = True


class CrawlSection(_Strict):
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


class DatasetSection(_Strict):
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


class TinyModelSection(_Strict):
    """A tiny random model built in the run (:mod:`kofinsent.tiny`), its tokenizer trained on the run's titles."""
    arch: Literal["gpt-neox", "llama"]
    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    vocab_size: int = Field(800, ge=300)
    init_std: float = 0.2
    seed: int = 0


class ExportSection(_Strict):
    train: str | None = None  # a [train.NAME] run (its merged/ or adapter/)
    model: str | None = None  # or a Llama HF directory
    quant: list[str] = ["f16"]
    name: str | None = None   # file stem: NAME-<quant>.gguf (default: the export's table name)

    @model_validator(mode="after")
    def _one_source(self) -> ExportSection:
        if (self.train is None) == (self.model is None):
            raise ValueError("give exactly one of train or model")
        return self


class BaselinesSection(_Strict):
    enabled: bool = True
    seed: int = 0


class CompareSection(_Strict):
    pairs: list[list[str]] = []

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, v: list[list[str]]) -> list[list[str]]:
        for p in v:
            if len(p) != 2:
                raise ValueError(f"each pair names two runs (eval names or baselines/NAME), got {p}")
        return v


class ReportSection(_Strict):
    enabled: bool = True
    title: str | None = None
    out: str | None = None  # default: reports/<experiment name>
    examples: int = Field(5, ge=0)


def _train_section() -> type[BaseModel]:
    from kofinsent.training.hf_trainer import TrainConfig

    # seeds: one adapter per training seed, in train/NAME/seed<k>/ (see ExperimentConfig.train_runs)
    return section_from_dataclass(
        TrainConfig, "TrainSection", {"out", "resume", "overwrite", "extra", "data"},
        {"engine": (Literal["hf", "unsloth"], "hf"), "data": (str, TRAIN_SPLIT), "seeds": (list[int] | None, None)},
        _Strict)


def _eval_section() -> type[BaseModel]:
    from kofinsent.evaluation.evaluate import EvalConfig

    # model and shots may be lists: the table then stands for every combination (seed 003's k-shot grid)
    return section_from_dataclass(
        EvalConfig, "EvalSection", {"out", "overwrite", "resume", "data", "model", "shots", "train"},
        {"model": (str | list[str], ...), "shots": (int | list[int], 0), "data": (str, "@dataset/test.jsonl"),
         "train": (str | None, None)}, _Strict)


TrainSection = _train_section()
EvalSection = _eval_section()
TeacherSection = teacher_section(TRAIN_SPLIT, _Strict)  # [teacher]: see kofinsent.experiment.sections


class ExperimentConfig(_Strict):
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
        from kofinsent.evaluation.evaluate import EvalConfig
        from kofinsent.training.hf_trainer import TrainConfig

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
        if self.teacher is not None:
            check_teacher(self.teacher, self.experiment.synthetic)
            _check_ref(self, "teacher.data", self.teacher.data, own="teacher")
        for name, t in self.train.items():
            _check_seeds(name, t)
            for key in ("model", "data"):
                _check_ref(self, f"train.{name}.{key}", getattr(t, key), own=f"train/{name}")
                _check_seed_ref(self, f"train.{name}.{key}", getattr(t, key), expands=False)
            _check_options(f"train.{name}", TrainConfig,
                           {k: v for k, v in t.model_dump().items() if k not in ("engine", "seeds")})
        for name, e in self.export.items():
            if e.train is not None:
                _check_export_train(self, name, e.train)
            if e.model is not None:
                _check_ref(self, f"export.{name}.model", e.model, own=f"export/{name}")
                _check_seed_ref(self, f"export.{name}.model", e.model, expands=False)
        for name, e in self.eval.items():
            if e.backend not in REGISTRY:
                raise ValueError(f"eval.{name}.backend = {e.backend!r}: use one of {', '.join(REGISTRY)}")
            _check_options(f"eval.{name}", EvalConfig, {**e.model_dump(), "model": "", "shots": min(_as_list(e.shots)),
                                                    "train": e.train or TRAIN_SPLIT})
            for key in ("model", "adapter", "data", "train"):
                for v in _as_list(getattr(e, key)):
                    if v is not None:
                        _check_ref(self, f"eval.{name}.{key}", v)
                        # model and adapter may name a multi-seed train as a whole: the eval expands per seed
                        _check_seed_ref(self, f"eval.{name}.{key}", v, expands=key in ("model", "adapter"))
        names = (set(self.eval_runs()) | set(self.seed_groups())
                 | {f"baselines/{b}" for b in ("majority", "tfidf_kiwi", "tfidf_char")})
        for a, b in self.compare.pairs:
            for x in (a, b):
                if x not in names:
                    raise ValueError(f"compare.pairs names {x!r}, which is neither an eval run nor a baseline")
        self.compare_pairs()  # a pair of two seed-expanded evals needs the same training seeds on both sides
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

    def eval_runs(self) -> dict[str, dict[str, Any]]:
        """Every evaluation to run, by directory name: list-valued ``model`` / ``shots`` expand to their grid
        (``NAME-<model slug>-<k>shot``), and a ``model`` or ``adapter`` that names a multi-seed ``[train.T]`` as a
        whole (``@train/T/adapter``) expands to one run per training seed (``...-seed<k>``, reading
        ``@train/T/seed<k>/adapter``). Two runs that would share a directory are an error naming the table."""
        return self._expand_evals()[0]

    def seed_groups(self) -> dict[str, dict[int, str]]:
        """The eval runs that differ only by training seed: the name without ``-seed<k>`` -> {k: run name}."""
        return self._expand_evals()[1]

    def _expand_evals(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[int, str]]]:
        runs: dict[str, dict[str, Any]] = {}
        groups: dict[str, dict[int, str]] = {}
        for name, e in self.eval.items():
            spec = e.model_dump()
            models, shots = _as_list(spec["model"]), _as_list(spec["shots"])
            for m, k in itertools.product(models, shots):
                base = name
                if len(models) > 1:
                    base += "-" + _slug(m)
                if len(shots) > 1:
                    base += f"-{k}shot"
                train = spec["train"]
                if train is None and spec["prompt"] == "kshot":
                    train = TRAIN_SPLIT
                run = {**spec, "model": m, "shots": k, "train": train}
                multi = sorted({t for ref in (m, spec["adapter"]) if (t := self._whole_multi_seed_train(ref))})
                if len(multi) > 1:
                    raise ValueError(f"eval.{name}: model {m!r} and adapter {spec['adapter']!r} name two multi-seed "
                                     f"trains ({', '.join(f'train.{t}' for t in multi)}); name one seed of either, "
                                     "e.g. '@train/NAME/seed0/adapter'")
                seeds = self.training_seeds(multi[0]) if multi else [None]
                for s in seeds:
                    key = base if s is None else f"{base}-{_seed_suffix(s)}"
                    if key in runs:  # a dict would silently keep one of the two
                        raise ValueError(f"eval.{name}: model {m!r} with {k} shots expands to the run name {key!r}, "
                                         "which another eval run already has; rename a table or a model")
                    if s is None:
                        runs[key] = run
                        continue
                    runs[key] = {**run, **{f: _seed_ref(run[f], multi[0], s) for f in ("model", "adapter")}}
                    groups.setdefault(base, {})[s] = key
        return runs, groups

    def _whole_multi_seed_train(self, ref: str | None) -> str | None:
        """T when ``ref`` is ``@train/T[/...]`` for a multi-seed ``[train.T]`` without naming one of its seeds."""
        parts = _train_ref(ref)
        if parts is None or not self.multi_seed(parts[0]):
            return None
        return None if len(parts) > 1 and _SEED_DIR.fullmatch(parts[1]) else parts[0]

    def compare_pairs(self) -> list[tuple[str, str]]:
        """``compare.pairs`` with seed-expanded evals paired seed by seed: a pair that names an eval which expands
        per training seed (its name without ``-seed<k>``) stands for one pair per seed (``[lora, base]`` ->
        ``[lora-seed0, base]``, ...); two such evals pair seed k with seed k, and must have the same seeds."""
        runs, groups = self._expand_evals()
        out: list[tuple[str, str]] = []
        for a, b in self.compare.pairs:
            ga = groups.get(a) if a not in runs else None
            gb = groups.get(b) if b not in runs else None
            if ga is None and gb is None:
                out.append((a, b))
            elif ga is not None and gb is not None:
                if sorted(ga) != sorted(gb):
                    raise ValueError(f"compare.pairs [{a!r}, {b!r}]: {a!r} expands over training seeds {sorted(ga)} "
                                     f"and {b!r} over {sorted(gb)}; a seed-wise pair needs the same seeds (or name "
                                     f"single runs such as {next(iter(ga.values()))!r})")
                out += [(ga[s], gb[s]) for s in sorted(ga)]
            elif ga is not None:
                out += [(ga[s], b) for s in sorted(ga)]
            else:
                assert gb is not None
                out += [(a, gb[s]) for s in sorted(gb)]
        return out

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


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


_SEED_DIR = re.compile(r"seed(\d+)")  # train/NAME/seed<k>/: one training seed of a multi-seed [train.NAME]


def _seed_suffix(seed: int) -> str:
    from kofinsent.training.seeds import seed_dir_name

    return seed_dir_name(seed)


def _train_ref(ref: Any) -> list[str] | None:
    """``@train/T/a/b`` -> [T, a, b]; None for anything else."""
    if not isinstance(ref, str) or not ref.startswith(REF + "train/"):
        return None
    parts = ref[len(REF + "train/"):].split("/")
    return parts if parts[0] else None


def _seed_ref(ref: str | None, train: str, seed: int) -> str | None:
    """``@train/T/adapter`` -> ``@train/T/seed<k>/adapter`` when it names ``train`` as a whole; else unchanged."""
    parts = _train_ref(ref)
    if parts is None or parts[0] != train or (len(parts) > 1 and _SEED_DIR.fullmatch(parts[1])):
        return ref
    return "/".join([f"{REF}train", train, _seed_suffix(seed), *[p for p in parts[1:] if p]])


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


def _check_seed_ref(cfg: ExperimentConfig, key: str, value: str, expands: bool) -> None:
    """An ``@train/T/...`` path and T's seeds: ``seed<k>`` must be one of a multi-seed T's seeds (and only a
    multi-seed T has such directories); T as a whole is allowed only where the key expands per seed."""
    parts = _train_ref(value)
    if parts is None or parts[0] not in cfg.train:
        return
    t = parts[0]
    seed = _SEED_DIR.fullmatch(parts[1]) if len(parts) > 1 else None
    seeds = cfg.training_seeds(t)
    if not cfg.multi_seed(t):
        if seed is not None:
            raise ValueError(f"{key} = {value!r}: [train.{t}] trains one seed, into @train/{t}/ (no seed<k>/ "
                             "directories)")
        return
    if seed is not None:
        if int(seed.group(1)) not in seeds or seed.group(1) != str(int(seed.group(1))):
            raise ValueError(f"{key} = {value!r}: train.{t}.seeds = {seeds} has no {parts[1]}")
        return
    if not expands:
        raise ValueError(f"{key} = {value!r}: [train.{t}] trains one run per seed (train.{t}.seeds = {seeds}); "
                         f"name one of them, e.g. '@train/{t}/{_seed_suffix(seeds[0])}/{'/'.join(parts[1:])}'")


def _check_export_train(cfg: ExperimentConfig, name: str, train: str) -> None:
    """``export.NAME.train``: a [train.*] table, or ``T/seed<k>`` for one seed of a multi-seed table."""
    t, _, sub = train.partition("/")
    if t not in cfg.train:
        raise ValueError(f"export.{name}.train = {train!r} names no [train.*] table")
    seeds = cfg.training_seeds(t)
    if not sub and cfg.multi_seed(t):
        raise ValueError(f"export.{name}.train = {train!r}: [train.{t}] trains one run per seed (train.{t}.seeds = "
                         f"{seeds}); export one of them: export.{name}.train = '{t}/{_seed_suffix(seeds[0])}'")
    if sub:
        m = _SEED_DIR.fullmatch(sub)
        if not (cfg.multi_seed(t) and m and sub == _seed_suffix(int(m.group(1))) and int(m.group(1)) in seeds):
            raise ValueError(f"export.{name}.train = {train!r}: use a [train.*] table name"
                             + (f" or one of its seeds ({', '.join(f'{t}/{_seed_suffix(s)}' for s in seeds)})"
                                if cfg.multi_seed(t) else ""))


def _slug(model: str) -> str:
    """The last part of a hub id or path, made a safe piece of a directory name: any run of other characters becomes
    ``_``, runs of dots one dot (``models/x..y.gguf`` -> ``x.y``, ``org/m 1`` -> ``m_1``)."""
    last = model.rstrip("/").split("/")[-1].removesuffix(".gguf")
    safe = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9_.-]+", "_", last)).strip(".")
    return safe or "model"


def _check_names(cfg: ExperimentConfig) -> None:
    """Every table name and file stem that becomes a path is a plain name (see the module docstring)."""
    for table in NAMED_TABLES:
        for name in getattr(cfg, table):
            check_name(name, table_key(table, name))
    for name, e in cfg.export.items():
        if e.name is not None:
            check_name(e.name, f"export.{name}.name = {e.name!r}")
    for key, value in (("crawl.db", cfg.crawl.db if cfg.crawl else None), ("dataset.db", cfg.dataset.db)):
        if value is not None and value.startswith(REF):
            parts = value[len(REF):].split("/")
            if ".." in parts or parts[0] in CLEARED_DIRS:
                raise ValueError(f"{key} = {value!r}: a db inside the run lives under @crawl/ (the runner clears "
                                 f"{', '.join(f'@{d}/' for d in CLEARED_DIRS)} before their steps run)")


def _check_ref(cfg: ExperimentConfig, key: str, value: str, own: str | None = None) -> None:
    """``value``, when it is an ``@`` path, names an existing table, stays inside the run and does not point into
    ``own``: the directory of the step that reads it, which the runner clears before that step runs."""
    if not value.startswith(REF):
        return
    parts = value[len(REF):].split("/")
    if ".." in parts:
        raise ValueError(f"{key} = {value!r}: a run path stays inside the run: no '..'")
    if own is not None and parts[:len(own.split("/"))] == own.split("/"):
        raise ValueError(f"{key} = {value!r}: the runner clears {own}/ before this step runs, so an input there "
                         "would be deleted first; keep it elsewhere")
    head = parts[0]
    if head not in SECTIONS_WITH_OUTPUTS or (head not in SINGLE_SECTIONS and len(parts) < 2):
        raise ValueError(f"{key} = {value!r}: a run path starts with @dataset/, @teacher/, @models/NAME, "
                         "@train/NAME or @export/NAME")
    if head in SINGLE_SECTIONS:
        if getattr(cfg, head) is None:
            raise ValueError(f"{key} = {value!r}: there is no [{head}] table")
        return
    defined = getattr(cfg, head)
    if parts[1] not in defined:
        raise ValueError(f"{key} = {value!r}: there is no [{head}.{parts[1]}] table")


def _check_options(key: str, config_cls: type, values: dict[str, Any]) -> None:
    """The checks ``kofinsent train`` / ``kofinsent eval`` make on their options (``config_cls.validate``), at load
    time, as a ValueError naming the table."""
    from kofinsent.evaluation.evaluate import EvalConfigError
    from kofinsent.training.hf_trainer import TrainError

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


__all__ = ["ConfigError", "ExperimentConfig", "apply_overrides", "dump_toml", "load_config", "parse_override",
           "validate"]

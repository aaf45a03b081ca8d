"""Experiment configs: every file in experiments/ loads; unknown keys, wrong types and dangling refs are errors that
name the key; overrides are typed; eval grids expand to one run per (model, shots)."""
from __future__ import annotations

import re
import tomllib
from datetime import date
from pathlib import Path

import pytest

from kofinsent.experiment.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    dump_toml,
    load_config,
    parse_override,
)

EXPERIMENTS = sorted((Path(__file__).resolve().parents[2] / "experiments").glob("*.toml"))
MINIMAL = {
    "experiment": {"name": "t"},
    "dataset": {"db": "x.sqlite", "rule": "same-day"},
    "models": {"neox": {"arch": "gpt-neox"}},
    "train": {"lora": {"model": "@models/neox"}},
    "eval": {"base": {"backend": "hf", "model": "@models/neox"}},
}


def test_the_five_issue_experiments_exist() -> None:
    names = {p.stem for p in EXPERIMENTS}
    assert {"quickstart", "seed003_polyglot_2shot_lora", "seed003_kshot_table", "seed000_llama3_gguf",
            "leakage_free"} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_experiment_loads_and_opens_with_its_command(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.experiment.name == path.stem
    head = path.read_text(encoding="utf-8").split("\n[", 1)[0]
    assert all(line.startswith("#") or not line.strip() for line in head.splitlines()), "header is comments only"
    assert f"kofinsent run experiments/{path.name}" in head
    assert cfg.eval_runs(), "an experiment evaluates something"
    # the resolved config round-trips through TOML to the same config
    again = ExperimentConfig.model_validate(tomllib.loads(dump_toml(cfg)))
    assert again.sha256() == cfg.sha256()


def test_seed003_pins_twenty_stocks_and_the_seed_recipe() -> None:
    cfg = load_config(Path(EXPERIMENTS[0]).parent / "seed003_polyglot_2shot_lora.toml")
    assert cfg.crawl is not None and len(set(cfg.crawl.codes)) == 20
    assert set(cfg.crawl.names) == set(cfg.crawl.codes)
    assert (cfg.crawl.since.isoformat(), cfg.crawl.until.isoformat()) == ("2017-06-01", "2022-12-31")
    d = cfg.dataset
    assert (d.rule, d.per_label, d.split, d.test_size) == ("same-day", 15000, "random", 0.01)
    t = cfg.train["polyglot_lora"]
    assert (t.model, t.load_in_8bit, t.loss) == ("EleutherAI/polyglot-ko-1.3b", True, "full")
    assert {e["method"] for e in cfg.eval_runs().values()} == {"loglikelihood", "generate"}


def test_kshot_table_is_the_seed_grid() -> None:
    cfg = load_config(Path(EXPERIMENTS[0]).parent / "seed003_kshot_table.toml")
    runs = cfg.eval_runs()
    assert len(runs) == 7 * 4
    assert {r["shots"] for r in runs.values()} == {0, 5, 10, 50}
    assert all(r["fewshot_seeds"] == [1, 2, 3] and r["train"] == "@dataset/train.jsonl" for r in runs.values())
    assert "kshot-polyglot-ko-12.8b-50shot" in runs


def _err(data: dict, *overrides: str) -> str:
    with pytest.raises(ConfigError) as e:
        from kofinsent.experiment.config import validate

        validate(apply_overrides(data, list(overrides)), "t.toml")
    return str(e.value)


@pytest.mark.parametrize("override, expected", [
    ("train.lora.max_step=3", "train.lora.max_step: unknown key"),
    ("nosuch.key=1", "nosuch: unknown key"),
    ('train.lora.max_steps="3"', "train.lora.max_steps: Input should be a valid integer (got '3')"),
    ("train.lora.lr=fast", "train.lora.lr: Input should be a valid number (got 'fast')"),
    ("dataset.rule=tomorrow", "dataset.rule: Input should be 'same-day' or 'next-session' (got 'tomorrow')"),
    ("eval.base.adapter=@train/nope/adapter", "eval.base.adapter = '@train/nope/adapter': there is no [train.nope]"),
    ("eval.base.backend=gpt4", "eval.base.backend = 'gpt4': use one of hf, llamacpp, ollama"),
    ("eval.base.method=vibes", "eval.base: --method must be one of"),
    ("train.lora.loss=half", "train.lora: --loss must be one of full, answer-only, got 'half'"),
    ("eval.base.shots=[0, -5]", "eval.base: need --shots >= 0"),
    ("eval.base.temperature=-0.5", "eval.base: --temperature must be within [0, 2], got -0.5"),
    ("experiment.name=a/b", "experiment.name: a name that becomes a path must match"),
])
def test_bad_values_name_the_key(override: str, expected: str) -> None:
    msg = _err(MINIMAL, override)
    assert msg.startswith("t.toml: ")
    assert expected in msg


def test_structural_errors() -> None:
    crawl = {"codes": ["900010"], "since": "x", "until": "y"}
    assert "crawl.since: Input should be a valid date" in _err({**MINIMAL, "crawl": crawl})
    assert "exactly one place" in _err({**MINIMAL, "dataset": {"rule": "same-day"}})
    replay = {"codes": {"900010": "합성전자"}, "start": date(2018, 1, 1), "end": date(2018, 1, 31)}
    both = {**MINIMAL, "replay": replay}
    assert "no [crawl] table" in _err(both)
    assert "compare.pairs names 'zzz'" in _err(MINIMAL, 'compare.pairs=[["base", "zzz"]]')
    assert "crawl.codes: stock codes are six digits, got ['5930']" in _err(
        {**MINIMAL, "dataset": {"rule": "same-day"}}, 'crawl.codes=["5930"]', "crawl.since=2018-01-01",
        "crawl.until=2018-01-02")
    # a TOML date is a date; the string "2018-01-01" is not silently taken for one
    assert "replay.start: Input should be a valid date (got '2018-01-01')" in _err(
        {**MINIMAL, "replay": {**replay, "start": "2018-01-01"}})


def test_overrides_are_typed_toml_values() -> None:
    assert parse_override("train.lora.max_steps=20") == (["train", "lora", "max_steps"], 20)
    assert parse_override("train.lora.lr=2e-4") == (["train", "lora", "lr"], 2e-4)
    assert parse_override("eval.k.shots=[0, 5]") == (["eval", "k", "shots"], [0, 5])
    assert parse_override("report.title=plain words") == (["report", "title"], "plain words")
    assert parse_override("dataset.cutoff=2018-02-01")[1].isoformat() == "2018-02-01"
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        parse_override("train.lora.max_steps")
    with pytest.raises(ConfigError, match="'rule' is a value, not a table"):
        apply_overrides(MINIMAL, ["dataset.rule.x=1"])
    assert MINIMAL["dataset"]["rule"] == "same-day"  # the input is not modified


def test_grid_expansion_and_seeds() -> None:
    data = apply_overrides(MINIMAL, ['eval.k.backend="hf"', 'eval.k.model=["a/m1", "b/m2"]', 'eval.k.prompt="kshot"',
                                     "eval.k.shots=[0, 5]"])
    from kofinsent.experiment.config import validate

    cfg = validate(data)
    runs = cfg.eval_runs()
    assert list(runs) == ["base", "k-m1-0shot", "k-m1-5shot", "k-m2-0shot", "k-m2-5shot"]
    assert runs["k-m2-5shot"]["model"] == "b/m2" and runs["k-m2-5shot"]["shots"] == 5
    seeds = cfg.seeds()
    assert seeds["dataset"] == 42 and seeds["train"] == {"lora": 0}
    assert seeds["eval"]["k-m1-0shot"]["fewshot_seeds"] == [1, 2, 3] and seeds["eval"]["base"]["fewshot_seeds"] is None


# keys a table adds to its stage's fields (engine: which trainer; seeds: one run per training seed; standin: the
# synthetic teacher), and the fields that are no key (the runner sets them: the run directory, resume, ...)
TABLE_ONLY_KEYS = {"train": {"engine", "seeds"}, "eval": set(), "teacher": {"standin"}}
NOT_KEYS = {"train": {"out", "resume", "overwrite", "extra"}, "eval": {"out", "overwrite", "resume"},
            "teacher": {"out", "overwrite", "synthetic"}}


@pytest.mark.parametrize("table", ["train", "eval", "teacher"])
def test_stage_tables_follow_the_dataclasses(table: str) -> None:
    """A new TrainConfig / EvalConfig / TeacherConfig option is usable from a config at once: the tables are made
    from them, and every key of a table is one of its stage's fields (bar TABLE_ONLY_KEYS)."""
    import dataclasses

    from kofinsent.dataset.teacher import TeacherConfig
    from kofinsent.evaluation.options import EvalConfig
    from kofinsent.experiment.config import EvalSection, TeacherSection, TrainSection
    from kofinsent.training.options import TrainConfig

    section, config_cls = {"train": (TrainSection, TrainConfig), "eval": (EvalSection, EvalConfig),
                           "teacher": (TeacherSection, TeacherConfig)}[table]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    assert set(section.model_fields) - TABLE_ONLY_KEYS[table] == fields - NOT_KEYS[table]
    assert TABLE_ONLY_KEYS[table].isdisjoint(fields) and NOT_KEYS[table] <= fields


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[experiment\nname = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"{bad}: not valid TOML")):
        load_config(bad)


# -- [teacher]: seed 000's data step ---------------------------------------------------------------------------------
TEACHER = {"backend": "openai", "host": "http://localhost:8000/v1", "model": "llama3-70b"}


def test_a_teacher_table_parses_and_its_refs_resolve() -> None:
    from kofinsent.experiment.config import validate

    data = apply_overrides({**MINIMAL, "teacher": TEACHER}, ['train.lora.data="@teacher/sharegpt.jsonl"'])
    cfg = validate(data)
    t = cfg.teacher
    assert (t.backend, t.model, t.data, t.max_attempts, t.format, t.standin) == (
        "openai", "llama3-70b", "@dataset/train.jsonl", 3, "schema", False)
    assert cfg.seeds()["teacher"] == 0
    again = ExperimentConfig.model_validate(tomllib.loads(dump_toml(cfg)))
    assert again.sha256() == cfg.sha256() and again.teacher == cfg.teacher
    # a config without [teacher] hashes as before the table existed (its runs are still resumed)
    assert "teacher" not in tomllib.loads(dump_toml(validate(MINIMAL)))
    from kofinsent.experiment.runner import Experiment

    exp = Experiment(cfg, Path("/r"))
    assert exp.path("@teacher/sharegpt.jsonl") == "/r/teacher/sharegpt.jsonl"
    assert [name for name, _ in exp.steps()][:2] == ["dataset", "teacher"]
    # the table follows TeacherConfig: test_stage_tables_follow_the_dataclasses


@pytest.mark.parametrize("teacher, overrides, expected", [
    (None, ['train.lora.data="@teacher/sharegpt.jsonl"'],
     "train.lora.data = '@teacher/sharegpt.jsonl': there is no [teacher] table"),
    ({**TEACHER, "api_key": "sk-x"}, [], "teacher.api_key: unknown key"),  # the key comes from the environment only
    ({"backend": "openai"}, [], "teacher.model: give the teacher's model"),
    ({**TEACHER, "data": "@teacher/x.jsonl"}, [], "the runner clears teacher/ before this step runs"),
    ({**TEACHER, "max_attempts": 0}, [], "teacher: --max-attempts must be an integer >= 1"),
    ({**TEACHER, "backend": "gpt"}, [], "teacher: --backend must be one of"),
    ({**TEACHER, "n_ctx": 4096}, [], "teacher: --n-ctx applies to --backend llamacpp, not openai"),
    ({"standin": True}, [], "set experiment.synthetic = true"),
    ({"standin": True, "host": "http://x/v1"}, ["experiment.synthetic=true"], "teacher.host must be unset"),
    ({"standin": True, "backend": "ollama"}, ["experiment.synthetic=true"], 'use backend = "openai"'),
    ({"standin": True, "model": "gpt-4"}, ["experiment.synthetic=true"], "leave teacher.model out"),
])
def test_bad_teacher_tables_name_the_key(teacher, overrides, expected) -> None:
    data = {**MINIMAL, **({"teacher": teacher} if teacher is not None else {})}
    assert expected in _err(data, *overrides)


def test_seed000_is_the_seeds_protocol() -> None:
    cfg = load_config(Path(EXPERIMENTS[0]).parent / "seed000_llama3_gguf.toml")
    text = (Path(EXPERIMENTS[0]).parent / "seed000_llama3_gguf.toml").read_text(encoding="utf-8")
    assert text.splitlines()[0] == "#   kofinsent run experiments/seed000_llama3_gguf.toml"  # opens with its command
    t = cfg.teacher
    assert t is not None and not t.standin and t.backend == "openai" and t.model and t.host
    assert t.data == "@dataset/train.jsonl" and t.format == "schema" and t.max_attempts == 3
    tr = cfg.train["llama3_unsloth"]
    assert (tr.engine, tr.data, tr.epochs, tr.max_steps) == ("unsloth", "@teacher/sharegpt.jsonl", 1.0, None)
    assert cfg.dataset.sharegpt is None  # the price-label export is not seed 000's data
    assert cfg.export["llama3_ft"].quant == ["q4_k_m", "q5_k_m", "q8_0", "f16"]
    runs = cfg.eval_runs()
    assert len(runs) == 16 and all(r["method"] == "sentiment" and r["iterations"] == 15 for r in runs.values())
    assert sorted({r["format"] for r in runs.values()}) == ["free", "schema"]
    pairs = cfg.compare_pairs()
    assert len(pairs) == 8 and all(a.startswith("base") and b.startswith("finetuned") for a, b in pairs)
    assert all(runs[a]["format"] == runs[b]["format"] for a, b in pairs)  # base vs fine-tune, format for format
    assert all(runs[a]["model"].rsplit("-", 1)[1] == runs[b]["model"].rsplit("-", 1)[1] for a, b in pairs)

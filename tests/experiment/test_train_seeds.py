"""Training seeds in experiments (issue 13, point 4): ``train.NAME.seeds = [...]`` trains one run per seed into
train/NAME/seed<k>/, an eval of that table expands to NAME-seed<k>, compare pairs expand seed by seed, exports name one
seed, ``seed`` with ``seeds`` is an error, and a single seed keeps today's layout. The runner test trains two seeds of
the tiny GPT-NeoX for a few steps, resumes per seed, and reads the seed table of the report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kofinsent.experiment.config import ConfigError, apply_overrides, validate

from ..training.conftest import cue_records, write_jsonl

MINIMAL = {
    "experiment": {"name": "t"},
    "dataset": {"db": "x.sqlite", "rule": "same-day"},
    "models": {"neox": {"arch": "gpt-neox"}},
    "train": {"lora": {"model": "@models/neox", "seeds": [0, 1, 2]}},
    "eval": {"base": {"backend": "hf", "model": "@models/neox"},
             "tuned": {"backend": "hf", "model": "@models/neox", "adapter": "@train/lora/adapter"}},
}


def _cfg(*overrides: str, data: dict | None = None):
    return validate(apply_overrides(data or MINIMAL, list(overrides)), "t.toml")


def _err(*overrides: str, data: dict | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        _cfg(*overrides, data=data)
    return str(e.value)


def test_seeds_list_trains_one_run_per_seed_and_evals_expand() -> None:
    cfg = _cfg()
    assert cfg.training_seeds("lora") == [0, 1, 2] and cfg.multi_seed("lora")
    assert cfg.train_runs() == {"lora/seed0": ("lora", 0), "lora/seed1": ("lora", 1), "lora/seed2": ("lora", 2)}
    runs = cfg.eval_runs()
    assert list(runs) == ["base", "tuned-seed0", "tuned-seed1", "tuned-seed2"]
    assert [runs[f"tuned-seed{k}"]["adapter"] for k in range(3)] == [f"@train/lora/seed{k}/adapter" for k in range(3)]
    assert runs["base"]["adapter"] is None
    assert cfg.seed_groups() == {"tuned": {0: "tuned-seed0", 1: "tuned-seed1", 2: "tuned-seed2"}}
    seeds = cfg.seeds()
    assert seeds["train"] == {"lora": [0, 1, 2]}
    assert seeds["eval"]["tuned-seed2"]["train_seed"] == 2 and "train_seed" not in seeds["eval"]["base"]
    # the resolved config keeps the list (config.toml), and a config without seeds hashes as before
    assert cfg.to_dict()["train"]["lora"]["seeds"] == [0, 1, 2]


def test_single_seed_keeps_todays_layout_and_hash() -> None:
    for cfg in (_cfg("train.lora.seeds=[5]"), _cfg(data={**MINIMAL, "train": {"lora": {"model": "@models/neox",
                                                                                          "seed": 5}}})):
        assert cfg.train_runs() == {"lora": ("lora", None)}
        assert list(cfg.eval_runs()) == ["base", "tuned"]
        assert cfg.eval_runs()["tuned"]["adapter"] == "@train/lora/adapter"
        assert cfg.seeds()["train"] == {"lora": 5} and cfg.seed_groups() == {}
    plain = _cfg(data={**MINIMAL, "train": {"lora": {"model": "@models/neox"}}})
    assert "seeds" not in plain.to_dict()["train"]["lora"]
    dumped = plain.model_dump(mode="json")
    for t in dumped["train"].values():
        for key in ("seeds", "effective_batch_size", "packing", "attn_implementation"):  # newer keys, at defaults
            t.pop(key)
    import hashlib

    assert plain.sha256() == hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()


def test_preflight_asks_per_seed_step() -> None:
    from kofinsent.experiment.preflight import Module, requirements

    cfg = _cfg("train.lora.load_in_8bit=true")
    assert list(requirements(cfg)[Module("bitsandbytes")]) == ["train/lora/seed0", "train/lora/seed1",
                                                               "train/lora/seed2"]
    assert Module("bitsandbytes") not in requirements(cfg, {"train/lora/seed0", "train/lora/seed1",
                                                            "train/lora/seed2"})


def test_seed_and_seeds_together_is_an_error_naming_both() -> None:
    msg = _err("train.lora.seed=3")
    assert msg.startswith("t.toml: ") and "train.lora.seed" in msg and "train.lora.seeds" in msg
    assert "train.lora.seeds: give at least one seed" in _err("train.lora.seeds=[]")
    assert "train.lora.seeds = [1, 1]: a seed is listed twice" in _err("train.lora.seeds=[1, 1]")
    assert "seeds are >= 0" in _err("train.lora.seeds=[0, -1]")
    assert "train.lora.seeds: Input should be a valid list" in _err('train.lora.seeds="0,1"')


def test_grid_and_seed_expansion_combine_and_merged_models_expand() -> None:
    cfg = _cfg('eval.k.backend="hf"', 'eval.k.model="@models/neox"', 'eval.k.adapter="@train/lora/adapter"',
               'eval.k.prompt="kshot"', "eval.k.shots=[0, 5]", "train.lora.merge=true",
               'eval.m.backend="hf"', 'eval.m.model=["@train/lora/merged", "x/other"]')
    runs = cfg.eval_runs()
    assert [r for r in runs if r.startswith("k-")] == ["k-0shot-seed0", "k-0shot-seed1", "k-0shot-seed2",
                                                       "k-5shot-seed0", "k-5shot-seed1", "k-5shot-seed2"]
    assert runs["k-5shot-seed1"]["shots"] == 5 and runs["k-5shot-seed1"]["adapter"] == "@train/lora/seed1/adapter"
    # a list of models: only the entry that names the multi-seed train expands
    assert [r for r in runs if r.startswith("m-")] == ["m-merged-seed0", "m-merged-seed1", "m-merged-seed2",
                                                       "m-other"]
    assert runs["m-merged-seed2"]["model"] == "@train/lora/seed2/merged" and runs["m-other"]["model"] == "x/other"
    assert set(cfg.seed_groups()) == {"tuned", "k-0shot", "k-5shot", "m-merged"}


def test_naming_one_seed_is_one_run_and_unknown_seeds_are_refused() -> None:
    cfg = _cfg('eval.one.backend="hf"', 'eval.one.model="@models/neox"', 'eval.one.adapter="@train/lora/seed1/adapter"')
    assert "one" in cfg.eval_runs() and cfg.eval_runs()["one"]["adapter"] == "@train/lora/seed1/adapter"
    assert "train.lora.seeds = [0, 1, 2] has no seed7" in _err('eval.base.adapter="@train/lora/seed7/adapter"')
    single = {**MINIMAL, "train": {"lora": {"model": "@models/neox"}}}
    assert "[train.lora] trains one seed" in _err('eval.base.adapter="@train/lora/seed0/adapter"', data=single)
    # an input that cannot expand (training data, another train's base model) must name one seed
    msg = _err('train.second.model="@train/lora/merged"')
    assert "train.second.model = '@train/lora/merged'" in msg and "'@train/lora/seed0/merged'" in msg
    assert "eval.base.data = '@train/lora/x.jsonl'" in _err('eval.base.data="@train/lora/x.jsonl"')


def test_compare_pairs_expand_seed_wise() -> None:
    cfg = _cfg('eval.gen.backend="hf"', 'eval.gen.model="@models/neox"', 'eval.gen.adapter="@train/lora/adapter"',
               'eval.gen.method="generate"',
               'compare.pairs=[["base", "tuned"], ["tuned", "gen"], ["tuned-seed1", "base"], ["base", "gen"]]')
    assert cfg.compare_pairs() == [
        ("base", "tuned-seed0"), ("base", "tuned-seed1"), ("base", "tuned-seed2"),     # one side expanded
        ("tuned-seed0", "gen-seed0"), ("tuned-seed1", "gen-seed1"), ("tuned-seed2", "gen-seed2"),  # seed k with k
        ("tuned-seed1", "base"),                                                        # one seed named
        ("base", "gen-seed0"), ("base", "gen-seed1"), ("base", "gen-seed2")]
    from kofinsent.experiment.runner import Experiment

    steps = [n for n, _ in Experiment(cfg, Path("/nonexistent/run")).steps()]
    assert steps[:4] == ["dataset", "models/neox", "train/lora/seed0", "train/lora/seed1"]
    assert "compare/tuned-seed0__gen-seed0" in steps and "compare/base__tuned-seed2" in steps


def test_compare_of_two_expansions_over_different_seeds_is_an_error_naming_the_table() -> None:
    msg = _err('train.other.model="@models/neox"', "train.other.seeds=[0, 1]",
               'eval.o.backend="hf"', 'eval.o.model="@models/neox"', 'eval.o.adapter="@train/other/adapter"',
               'compare.pairs=[["tuned", "o"]]')
    assert "compare.pairs ['tuned', 'o']" in msg and "[0, 1, 2]" in msg and "[0, 1]" in msg
    msg = _err('train.other.model="@models/neox"', "train.other.seeds=[0, 1]", 'eval.tuned.model="@train/other/merged"')
    assert "eval.tuned" in msg and "train.lora" in msg and "train.other" in msg  # two multi-seed trains in one eval


def test_export_of_a_multi_seed_train_names_one_seed() -> None:
    msg = _err('export.g.train="lora"')
    assert "export.g.train = 'lora'" in msg and "export.g.train = 'lora/seed0'" in msg
    assert _cfg('export.g.train="lora/seed2"').export["g"].train == "lora/seed2"
    assert "export.g.train = 'lora/seed9'" in _err('export.g.train="lora/seed9"')
    assert "names no [train.*] table" in _err('export.g.train="nope"')
    assert "'@train/lora/seed0/merged'" in _err('export.g.model="@train/lora/merged"')


# -- the runner ---------------------------------------------------------------------------------------------------
def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_runner_trains_each_seed_resumes_per_seed_and_reports_the_spread(tiny_neox_dir: Path, tmp_path: Path) -> None:
    """Two seeds of the tiny GPT-NeoX, 4 optimizer steps each, evaluated on 12 items (a few seconds on a CPU)."""
    from kofinsent.experiment.runner import Experiment
    from kofinsent.report.build import assemble
    from kofinsent.runs import write_json

    data = {
        "experiment": {"name": "seeds"},
        "dataset": {"db": "unused.sqlite", "rule": "same-day"},
        "train": {"lora": {"model": str(tiny_neox_dir), "seeds": [0, 1], "max_steps": 4, "batch_size": 8,
                           "lr": 3e-3, "val_size": 0, "save_steps": 2, "logging_steps": 2}},
        "eval": {"base": {"backend": "hf", "model": str(tiny_neox_dir), "limit": 12},
                 "tuned": {"backend": "hf", "model": str(tiny_neox_dir), "adapter": "@train/lora/adapter",
                           "limit": 12}},
        "baselines": {"enabled": False},
        "compare": {"pairs": [["base", "tuned"]]},
        "report": {"enabled": False},
    }
    cfg = validate(data)
    run = tmp_path / "seeds" / "20260101T000000Z-test"
    lines: list[str] = []
    exp = Experiment(cfg, run, lines.append, progress=False)
    exp._open()
    # the dataset step, done by hand (no crawler db needed): the cue-word task of the training tests
    write_jsonl(run / "dataset" / "train.jsonl", cue_records(40, seed=1, prefix="tr"))
    write_jsonl(run / "dataset" / "test.jsonl", cue_records(12, seed=2, prefix="te"))
    exp._mark("dataset", {}, 0.0)
    exp.run()

    steps = _read(run / "run.json")["steps"]
    assert {"train/lora/seed0", "train/lora/seed1", "eval/tuned-seed0", "eval/tuned-seed1",
            "compare/base__tuned-seed0", "compare/base__tuned-seed1"} <= set(steps)
    assert steps["train/lora/seed1"]["seed"] == 1 and "train/lora" not in steps
    for k in (0, 1):
        d = run / "train" / "lora" / f"seed{k}"
        assert (d / "adapter" / "adapter_model.safetensors").is_file()
        assert _read(d / "config.json")["seed"] == k and _read(d / "metrics.json")["global_step"] == 4
        assert _read(run / "eval" / f"tuned-seed{k}" / "config.json")["adapter"] == str(d / "adapter")
    assert not (run / "train" / "lora" / "adapter").exists()
    from safetensors.torch import load_file

    w0, w1 = (load_file(run / f"train/lora/seed{k}/adapter/adapter_model.safetensors") for k in (0, 1))
    assert any(not (w0[n] == w1[n]).all() for n in w0), "two seeds trained the same adapter"
    env = _read(run / "environment.json")["seeds"]
    assert env["train"] == {"lora": [0, 1]} and env["eval"]["tuned-seed1"]["train_seed"] == 1

    # cut off during seed 1: its step (and what came after) undone, its directory half-written
    state = _read(run / "run.json")
    for step in ("train/lora/seed1", "eval/tuned-seed1", "compare/base__tuned-seed1"):
        del state["steps"][step]
    write_json(run / "run.json", state)
    (run / "train/lora/seed1/metrics.json").unlink()
    seed0_before = (run / "train/lora/seed0/adapter/adapter_model.safetensors").stat().st_mtime_ns
    lines.clear()
    Experiment(cfg, run, lines.append, progress=False).run()
    assert "step train/lora/seed0: done already, skipped" in lines
    assert "step train/lora/seed1: running" in lines and "step eval/tuned-seed0: done already, skipped" in lines
    assert (run / "train/lora/seed0/adapter/adapter_model.safetensors").stat().st_mtime_ns == seed0_before
    assert (run / "train/lora/seed1/metrics.json").is_file()
    assert _read(run / "run.json")["steps"]["compare/base__tuned-seed1"]["status"] == "done"

    # the report: one seed table, each seed's accuracy from its metrics.json, mean ± sd as numpy computes them
    report = assemble([run])
    table = next(t for t in report.tables if t.id == "train-seeds")
    accs = [_read(run / f"eval/tuned-seed{k}/metrics.json")["accuracy"] for k in (0, 1)]
    assert [r[1].plain for r in table.rows] == ["0", "1", "mean ± sd over 2 seeds"]
    assert [r[3].numbers[0].value for r in table.rows[:2]] == accs
    mean, sd = table.rows[2][3].numbers
    assert mean.value == pytest.approx(np.mean(accs)) and sd.value == pytest.approx(np.std(accs, ddof=1))
    # the per-seed training runs appear in the methods, one paragraph each
    assert [t.name for t in report.runs[0].trains] == ["lora/seed0", "lora/seed1"]

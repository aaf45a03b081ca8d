"""Names that become paths, and deletes that stay inside the directory they own.

Every table name of [models] / [train] / [export] / [eval], experiment.name, export file stems and run ids must be a
plain name (``^[A-Za-z0-9][A-Za-z0-9_.-]*$`` without ``..``): ``[models."../../../../victim"]`` used to make the
runner delete that directory. The guarded removals refuse anything outside the directory they are given.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kofinsent.experiment.config import ConfigError
from kofinsent.experiment.runner import (
    Experiment,
    ExperimentError,
    find_resumable,
    run_experiment,
)
from kofinsent.runs import write_json

from .conftest import BASE, small_config

RULE = "a name that becomes a path must match ^[A-Za-z0-9][A-Za-z0-9_.-]*$ without '..'"


def _cfg(data: dict | None = None, *overrides: str):
    return small_config(*overrides, data=data, source="t.toml")


def _err(data: dict | None = None, *overrides: str) -> str:
    with pytest.raises(ConfigError) as e:
        _cfg(data, *overrides)
    return str(e.value)


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work", encoding="utf-8")
    return victim


# -- names in configs ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("table, extra", [
    ("models", {"arch": "llama"}),
    ("train", {"model": "x/y"}),
    ("export", {"model": "x/y"}),
    ("eval", {"backend": "hf", "model": "x/y"}),
])
@pytest.mark.parametrize("name", ["../../../../victim", "a/b", "..", ".hidden", "-rf", "_x", "a..b", "a b", ""])
def test_table_names_that_are_not_plain_names_are_refused(table: str, extra: dict, name: str) -> None:
    msg = _err({**BASE, table: {name: extra}})
    assert msg.startswith("t.toml: ")
    assert f"{table}.{json.dumps(name)}: {RULE}" in msg


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".x", "-x", "_x", "a..b", "x y"])
def test_experiment_name_is_a_plain_name(name: str) -> None:
    msg = _err(BASE, f"experiment.name={json.dumps(name)}")
    assert f"experiment.name: {RULE}, got {name!r}" in msg


def test_plain_names_still_load() -> None:
    cfg = _cfg({**BASE, "experiment": {"name": "seed003_v1.2-b"}, "models": {"Neox.1": {"arch": "gpt-neox"}},
                "export": {"g-1": {"model": "x/y", "name": "tiny.llama_2"}}})
    assert cfg.experiment.name == "seed003_v1.2-b"


@pytest.mark.parametrize("stem", ["../../x", "a/b", ".x", "a..b"])
def test_export_file_stem_is_a_plain_name(stem: str) -> None:
    msg = _err({**BASE, "export": {"g": {"model": "x/y", "name": stem}}})
    assert f"export.g.name = {stem!r}: {RULE}" in msg


def test_run_refs_stay_inside_the_run() -> None:
    assert "stays inside the run" in _err(BASE, 'eval.base.data="@dataset/../../../etc/passwd"')


@pytest.mark.parametrize("override, table", [
    ('train.lora.data="@train/lora/train.jsonl"', "train.lora.data"),
    ('train.lora.model="@train/lora/merged"', "train.lora.model"),
])
def test_a_step_may_not_read_its_own_output_directory(override: str, table: str) -> None:
    """The runner clears train/NAME before training: data or a model kept there would be deleted first."""
    data = {**BASE, "train": {"lora": {"model": "x/y"}}}
    msg = _err(data, override)
    assert f"{table} = " in msg and "train/lora" in msg and "clears" in msg


@pytest.mark.parametrize("db", ["@dataset/forum.sqlite", "@models/x/forum.sqlite"])
def test_dataset_db_may_not_live_where_a_step_clears(db: str) -> None:
    assert "dataset.db" in _err(BASE, f'dataset.db="{db}"')


def test_grid_names_from_odd_model_ids_are_made_safe() -> None:
    cfg = _cfg(BASE, 'eval.k.backend="hf"', 'eval.k.model=["org/m 1", "models/x..y.gguf", "../.."]',
               "eval.k.shots=[0, 5]", 'eval.k.prompt="kshot"')
    runs = cfg.eval_runs()
    assert "k-m_1-0shot" in runs and "k-x.y-5shot" in runs
    from kofinsent.paths import is_safe_name

    assert all(is_safe_name(n) for n in runs), list(runs)


def test_grid_names_that_collide_are_an_error() -> None:
    msg = _err(BASE, 'eval.k.backend="hf"', 'eval.k.model=["a/m1", "b/m1"]')
    assert "eval.k" in msg and "'k-m1'" in msg


def test_run_check_refuses_a_bad_name(tmp_path: Path) -> None:
    from kofinsent.cli import app

    cfg = tmp_path / "bad.toml"
    cfg.write_text('[experiment]\nname = "t"\n[dataset]\ndb = "x.sqlite"\nrule = "same-day"\n'
                   '[models."../../../../victim"]\narch = "llama"\n', encoding="utf-8")
    r = CliRunner().invoke(app, ["run", str(cfg), "--check"])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert f'models."../../../../victim": {RULE}' in lines[0]


# -- deletes in the runner -----------------------------------------------------------------------------------------
def test_the_runner_never_clears_a_directory_outside_the_run(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    run = tmp_path / "runs" / "t" / "20250101T000000Z-abc1234"
    run.mkdir(parents=True)
    exp = Experiment(_cfg(), run, log=lambda s: None)
    with pytest.raises(ValueError, match="outside"):
        exp._fresh("models/../../../../victim")
    assert (victim / "thesis.tex").read_text(encoding="utf-8") == "years of work"


def test_the_runner_does_not_follow_a_symlink_out_of_the_run(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    (victim / "x").mkdir()
    (victim / "x" / "data.bin").write_bytes(b"\x00\x01")
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(victim, run / "models")  # run/models/x is victim/x
    exp = Experiment(_cfg(), run, log=lambda s: None)
    with pytest.raises(ValueError, match="outside"):
        exp._fresh("models/x")
    assert (victim / "x" / "data.bin").read_bytes() == b"\x00\x01"


def test_resume_needs_a_run_id_and_a_kofinsent_run_json(tmp_path: Path) -> None:
    cfg = _cfg()
    odd = tmp_path / ".odd"
    odd.mkdir()
    write_json(odd / "run.json", {"config_sha256": cfg.sha256(), "steps": {}, "id": ".odd"})
    with pytest.raises(ExperimentError, match="not a run id"):
        run_experiment(cfg, tmp_path, resume=odd, progress=False, log=lambda s: None)
    (odd / "run.json").unlink()

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "run.json").write_text('{"distance_km": 10}', encoding="utf-8")  # somebody's running log
    (foreign / "dataset").mkdir()
    (foreign / "dataset" / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(ExperimentError, match="not a kofinsent run"):
        run_experiment(cfg, tmp_path, resume=foreign, progress=False, log=lambda s: None)
    assert (foreign / "dataset" / "holiday.jpg").read_bytes() == b"jpeg"
    assert (foreign / "run.json").read_text(encoding="utf-8") == '{"distance_km": 10}'


def test_find_resumable_ignores_directories_that_are_not_run_ids(tmp_path: Path) -> None:
    cfg = _cfg()
    root = tmp_path / "t"
    for name in (".cache", "a b", "-x"):
        (root / name).mkdir(parents=True)
        write_json(root / name / "run.json", {"config_sha256": cfg.sha256(), "steps": {}, "id": name})
    assert find_resumable(root, cfg.sha256()) is None
    good = root / "20250101T000000Z-abc1234"
    good.mkdir()
    write_json(good / "run.json", {"config_sha256": cfg.sha256(), "steps": {}, "id": good.name})
    assert find_resumable(root, cfg.sha256()) == good


# -- the guarded removals themselves -------------------------------------------------------------------------------
def test_remove_tree_and_remove_file_stay_inside_root(tmp_path: Path) -> None:
    from kofinsent.paths import UnsafePathError, remove_file, remove_tree

    victim = _victim(tmp_path)
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f.txt").write_text("x", encoding="utf-8")
    os.symlink(victim, root / "link")
    for target in (root / ".." / "victim", victim, root, root / "link", root / "link" / "..", tmp_path):
        with pytest.raises(UnsafePathError):
            remove_tree(target, root)
    for target in (root / ".." / "victim" / "thesis.tex", root / "link" / "thesis.tex", root / ".."):
        with pytest.raises(UnsafePathError):
            remove_file(target, root)
    assert (victim / "thesis.tex").is_file()
    # a symlink that lives inside root is itself removable: unlink removes the link, never what it points to
    remove_file(root / "link", root)
    assert not (root / "link").exists() and (victim / "thesis.tex").is_file()
    remove_file(root / "sub" / "f.txt", root)
    remove_file(root / "sub" / "f.txt", root, missing_ok=True)
    with pytest.raises(FileNotFoundError):
        remove_file(root / "sub" / "f.txt", root)
    remove_tree(root / "sub", root)
    assert root.is_dir() and not (root / "sub").exists()


def test_check_name_names_what_is_wrong() -> None:
    from kofinsent.paths import check_name, is_safe_name

    assert check_name("seed003.v1-b_2", "experiment.name") == "seed003.v1-b_2"
    with pytest.raises(ValueError, match=r"^models\.\"\.\./x\": a name that becomes a path"):
        check_name("../x", 'models."../x"')
    assert not any(is_safe_name(n) for n in ("", ".", "..", "a/b", "a\\b", "a..b", "-a", ".a", "_a", "é", "a\n"))


def test_refuse_output_over_input(tmp_path: Path) -> None:
    from kofinsent.paths import OutputOverInputError, refuse_output_over_input

    d = tmp_path / "d"
    d.mkdir()
    data = d / "train.jsonl"
    data.write_text("{}\n", encoding="utf-8")
    os.link(data, tmp_path / "hard.jsonl")
    os.symlink(data, tmp_path / "soft.jsonl")
    for out in (data, d / "." / "train.jsonl", tmp_path / "hard.jsonl", tmp_path / "soft.jsonl"):
        with pytest.raises(OutputOverInputError, match=r"--out .* --data .*train\.jsonl"):
            refuse_output_over_input(out, {"--data": data})
    for out in (d, tmp_path):  # a directory output that is, or holds, the input
        with pytest.raises(OutputOverInputError, match="--data"):
            refuse_output_over_input(out, {"--data": data}, directory=True)
    refuse_output_over_input(d / "sharegpt.jsonl", {"--data": data})       # a new file next to it is fine
    refuse_output_over_input(d / "runs", {"--data": data}, directory=True)  # so is a directory beside it
    refuse_output_over_input(d, {"--model": "org/hub-id", "--adapter": None}, directory=True)  # not on disk

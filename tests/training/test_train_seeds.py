"""`kofinsent train --seed 0 --seed 1 ...` (issue 13, point 4): one run per seed in --out/seed<k>/, resumable per
seed (a rerun skips finished seeds, --resume continues a cut-off one), while one --seed keeps --out/adapter."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kofinsent.cli import app

runner = CliRunner()


def kofinsent(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


@pytest.fixture
def base_args(tiny_neox_dir: Path, cue_data: Path) -> list[object]:
    return ["train", "--model", tiny_neox_dir, "--data", cue_data / "train.jsonl", "--max-steps", 3,
            "--batch-size", 8, "--lr", 3e-3, "--val-size", 8, "--save-steps", 2, "--logging-steps", 1]


def test_repeated_seed_trains_one_run_per_seed_and_a_rerun_skips_finished_seeds(base_args, tmp_path):
    out = tmp_path / "multi"
    r = kofinsent(*base_args, "--out", out, "--seed", 0, "--seed", 1)
    assert r.exit_code == 0, r.output
    for k in (0, 1):
        d = out / f"seed{k}"
        assert (d / "adapter" / "adapter_model.safetensors").is_file()
        assert read(d / "config.json")["seed"] == k and read(d / "metrics.json")["global_step"] == 3
        assert f"seed {k}: steps=3" in r.output and f"-> {d / 'adapter'}" in r.output
    assert not (out / "adapter").exists() and not (out / "config.json").exists()
    assert "val_accuracy over 2 seeds: mean" in r.output
    assert read(out / "seed0/config.json")["n_val"] == 8  # the validation slice is drawn with each run's own seed

    # the same command again: nothing is retrained
    stamps = {k: _mtime(out / f"seed{k}/adapter/adapter_model.safetensors") for k in (0, 1)}
    r = kofinsent(*base_args, "--out", out, "--seed", 0, "--seed", 1)
    assert r.exit_code == 0, r.output
    assert "seed 0:" in r.output and r.output.count("finished run of these options; skipped") == 2
    assert {k: _mtime(out / f"seed{k}/adapter/adapter_model.safetensors") for k in (0, 1)} == stamps

    # seed 1 cut off after its checkpoint-2: a plain rerun refuses it (as for one seed), --resume continues it, and a
    # new seed 2 is started afresh in the same command
    (out / "seed1/metrics.json").unlink()
    shutil.rmtree(out / "seed1/checkpoint-3")  # the Trainer's final checkpoint
    r = kofinsent(*base_args, "--out", out, "--seed", 0, "--seed", 1)
    assert r.exit_code != 0 and "seed1 already holds a run; pass --resume" in r.output
    r = kofinsent(*base_args, "--out", out, "--seed", 0, "--seed", 1, "--seed", 2, "--resume")
    assert r.exit_code == 0, r.output
    assert _mtime(out / "seed0/adapter/adapter_model.safetensors") == stamps[0]
    assert read(out / "seed1/metrics.json")["resumed_from"].endswith("checkpoint-2")
    assert read(out / "seed2/metrics.json")["resumed_from"] is None and read(out / "seed2/config.json")["seed"] == 2
    assert "val_accuracy over 3 seeds" in r.output

    # other options over a finished seed: refused, naming what differs
    r = kofinsent(*base_args, "--out", out, "--seed", 0, "--seed", 1, "--lora-r", 4)
    assert r.exit_code != 0 and "seed0 holds a finished run with other options (lora_r differ)" in r.output


def test_one_seed_keeps_the_plain_layout_and_a_repeated_seed_is_refused(base_args, tmp_path):
    out = tmp_path / "one"
    r = kofinsent(*base_args, "--out", out, "--seed", 3, "--val-size", 0)
    assert r.exit_code == 0, r.output
    assert (out / "adapter").is_dir() and read(out / "config.json")["seed"] == 3 and not (out / "seed3").exists()
    r = kofinsent(*base_args, "--out", tmp_path / "dup", "--seed", 1, "--seed", 1)
    assert r.exit_code != 0 and "--seed 1 is given more than once" in r.output
    assert not (tmp_path / "dup").exists()

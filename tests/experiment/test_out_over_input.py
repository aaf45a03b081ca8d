"""No command writes over its own input: an --out that is, or (for a run directory) holds, an input file is refused
with one ``error:`` line naming both flags, exit status 2, and the input byte for byte as it was.

Each case is set up the way it used to do harm: with --overwrite a run directory's marker files are deleted before
the model loads, so an input kept under one of those names was gone even though the command then failed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kofinsent.cli import app

UP, DOWN = "[상승]", "[하락]"


def _records(n: int, prefix: str) -> list[dict]:
    return [{"id": f"{prefix}{i}", "title": f"{'가즈아' if i % 2 else '손절'} 제목 {i}", "label": (DOWN, UP)[i % 2]}
            for i in range(n)]


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): _sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(args: list[str], *names: str) -> str:
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def test_eval_out_holding_the_data_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    data = _jsonl(out / "predictions.jsonl", _records(6, "te"))  # a marker name: --overwrite deleted it
    before = _sha(data)
    _refused(["eval", "--backend", "hf", "--model", tmp_path / "no-model", "--data", data, "--out", out,
              "--overwrite"], "--out", "--data", str(data))
    assert _sha(data) == before


@pytest.mark.parametrize("flag", ["--train", "--adapter"])
def test_eval_out_that_is_or_holds_train_or_adapter_is_refused(tmp_path: Path, flag: str) -> None:
    data = _jsonl(tmp_path / "data" / "test.jsonl", _records(6, "te"))
    out = tmp_path / "run"
    if flag == "--train":
        value = _jsonl(out / "metrics.json", _records(6, "tr"))
        extra = ["--prompt", "kshot", "--shots", "2", "--train", value]
    else:
        value = out
        (out / "adapter_config.json").parent.mkdir(parents=True)
        (out / "adapter_config.json").write_text("{}", encoding="utf-8")
        (out / "config.json").write_text('{"adapter": true}', encoding="utf-8")
        extra = ["--adapter", value]
    before = _tree(out)
    _refused(["eval", "--backend", "hf", "--model", tmp_path / "no-model", "--data", data, "--out", out,
              "--overwrite", *extra], "--out", flag)
    assert _tree(out) == before


def test_train_out_holding_the_data_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    data = _jsonl(out / "trainer_log.jsonl", _records(20, "tr"))  # a run file: --overwrite deleted it
    before = _sha(data)
    _refused(["train", "--model", tmp_path / "no-model", "--data", data, "--out", out, "--overwrite"],
             "--out", "--data", str(data))
    assert _sha(data) == before


@pytest.mark.parametrize("command", ["eval", "train"])
def test_out_equal_to_a_local_model_directory_is_refused(tmp_path: Path, command: str) -> None:
    """A Hugging Face model directory holds config.json, one of the files --overwrite deletes from --out."""
    model = tmp_path / "merged"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    data = _jsonl(tmp_path / "data.jsonl", _records(20, "x"))
    before = _tree(model)
    _refused([command, *(["--backend", "hf"] if command == "eval" else []), "--model", model, "--data", data,
              "--out", model, "--overwrite"], "--out", "--model")
    assert _tree(model) == before


def test_baseline_out_holding_train_or_test_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "baselines"
    train = _jsonl(tmp_path / "train.jsonl", _records(40, "tr"))
    test = _jsonl(out / "majority" / "predictions.jsonl", _records(10, "te"))  # replaced by the majority run
    before = _sha(test)
    _refused(["baseline", "--train", train, "--test", test, "--out", out, "--overwrite"], "--out", "--test")
    assert _sha(test) == before


def test_export_gguf_out_equal_to_run_or_model_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "train-run"
    (run / "merged").mkdir(parents=True)
    (run / "merged" / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    (run / "config.json").write_text('{"model": "x"}', encoding="utf-8")
    before = _tree(run)
    _refused(["export", "gguf", "--run", run, "--out", run], "--out", "--run")
    _refused(["export", "gguf", "--model", run / "merged", "--out", run], "--out", "--model")
    assert _tree(run) == before


def test_export_gguf_name_is_a_plain_name(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    _refused(["export", "gguf", "--model", model, "--out", tmp_path / "out", "--name", "../../escape"], "--name")


def _compare_run(path: Path, preds: list[str]) -> Path:
    path.mkdir(parents=True)
    _jsonl(path / "predictions.jsonl", [{"id": f"t{i}", "gold": (DOWN, UP)[i % 2], "pred": p}
                                        for i, p in enumerate(preds)])
    (path / "metrics.json").write_text('{"method": "loglikelihood"}', encoding="utf-8")
    return path


@pytest.mark.parametrize("target", ["a/predictions.jsonl", "b/metrics.json"])
def test_compare_out_over_a_run_file_is_refused(tmp_path: Path, target: str) -> None:
    a = _compare_run(tmp_path / "a", [UP, UP, DOWN, DOWN])
    b = _compare_run(tmp_path / "b", [DOWN, UP, DOWN, UP])
    before = {**_tree(a), **{f"b/{k}": v for k, v in _tree(b).items()}}
    _refused(["compare", a, b, "--out", tmp_path / target], "--out", "RUN_")
    assert {**_tree(a), **{f"b/{k}": v for k, v in _tree(b).items()}} == before
    # the default --out (RUN_B/compare.json) is still fine
    r = CliRunner().invoke(app, ["compare", str(a), str(b)])
    assert r.exit_code == 0, r.output
    assert (b / "compare.json").is_file()

"""Predictions are appended batch by batch, and an interrupted eval resumes to exactly the uninterrupted result."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from kofinsent.backends.base import Generation
from kofinsent.cli import app
from kofinsent.evaluation.evaluate import EvalConfig, EvalConfigError, evaluate, progress_total
from kofinsent.runs import RunDirError, read_json, read_jsonl

from ..standins.ollama_standin import VALID_REPLY, OllamaStandin, Scripted

TIMING = ("items_per_s", "scoring_s", "wall_s", "n_resumed")


class Killed(RuntimeError):
    """What the fake backend raises to stand for a crash, Ctrl-C or a lost server."""


def _h(*parts: object) -> float:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:12], 16) / 16 ** 12


class Fake:
    """Deterministic answers from hashes of the inputs; ``fail_after``: raise on that many-plus-first call."""

    name = "fake"
    supports_loglikelihood = True
    supports_chat = True

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after, self.calls, self.units = fail_after, 0, 0

    def _call(self, n_units: int) -> None:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise Killed(f"killed at call {self.calls + 1}")
        self.calls += 1
        self.units += n_units

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[float]:
        self._call(len(requests) // 2)
        return [-4 * _h(ctx, cont) for ctx, cont in requests]

    def generate(self, prompts: list[Any], options: Any) -> list[Generation]:
        self._call(len(prompts))
        out = []
        for p in prompts:
            if isinstance(p, str):
                u = _h(p)
                text = " [상승]" if u < 0.45 else " [하락]" if u < 0.9 else " 모르겠다"
            else:
                u = _h(p[-1]["content"], options.seed)
                text = json.dumps({"reasoning": "r", "sentiment": round(2 * u - 1, 2), "confidence": 0.5})
                if u < 0.2:
                    text = f"```json\n{text}\n```"
            out.append(Generation(text, 0.01, {"total_duration": 2_000_000}))
        return out

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name}


def write_split(path: Path, n: int, seed: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"{seed}-{i}", "title": f"제목 {seed} {i} " + "가즈아" * (i % 3),
                                        "label": "[상승]" if _h(seed, i) < 0.5 else "[하락]"},
                                       ensure_ascii=False) + "\n" for i in range(n)), encoding="utf-8")
    return path


# method -> (EvalConfig fields, units in the whole run, calls the killed run finishes, records those calls write)
SETUPS: dict[str, tuple[dict[str, Any], int, int, int]] = {
    # 3 few-shot prompts x 300 items, scored in chunks of 256 + 44: killed in the middle of the second prompt
    "loglikelihood-kshot": ({"method": "loglikelihood", "prompt": "kshot", "shots": 4, "fewshot_seeds": [1, 2, 3]},
                            900, 3, 300 + 256),
    "generate": ({"method": "generate", "batch_size": 4, "limit": 10}, 10, 2, 8),
    # 3 iterations x 7 items in batches of 3, 3, 1: killed in the second iteration
    "sentiment": ({"method": "sentiment", "prompt": "sentiment-json", "iterations": 3, "batch_size": 3, "limit": 7},
                  21, 4, 7 + 3),
}


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> SimpleNamespace:
    d = tmp_path_factory.mktemp("data")
    return SimpleNamespace(train=write_split(d / "train.jsonl", 40, 1), test=write_split(d / "test.jsonl", 300, 2))


def config(splits: SimpleNamespace, out: Path, method: str, **kw: Any) -> EvalConfig:
    fields = {"data": str(splits.test), "train": str(splits.train), **SETUPS[method][0], **kw}
    return EvalConfig(backend="fake", model="fake-model", out=str(out), **fields)


def kill(splits: SimpleNamespace, out: Path, method: str) -> None:
    with pytest.raises(Killed):
        evaluate(config(splits, out, method), backend=Fake(fail_after=SETUPS[method][2]))  # type: ignore[arg-type]


def preds(out: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_jsonl(out / "predictions.jsonl")]


def without_timing(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k not in TIMING}


@pytest.mark.parametrize("method", SETUPS)
def test_an_interrupted_run_keeps_its_batches_and_resumes_to_the_uninterrupted_result(splits, tmp_path, method):
    _, units, _, kept = SETUPS[method]
    full = evaluate(config(splits, tmp_path / "full", method), backend=Fake())  # type: ignore[arg-type]

    cut = tmp_path / "cut"
    kill(splits, cut, method)
    assert not (cut / "metrics.json").exists()
    assert len(preds(cut)) == kept  # every batch finished before the kill is on disk
    with open(cut / "predictions.jsonl", "ab") as f:  # and a kill in mid-write tears the last line
        f.write('{"id": "2-9", "title": "제목'.encode()[:-1])

    remaining = progress_total(config(splits, cut, method, resume=True))
    assert remaining == units - kept
    ticks: list[int] = []
    fake = Fake()
    resumed = evaluate(config(splits, cut, method, resume=True), backend=fake,  # type: ignore[arg-type]
                       progress=ticks.append)
    assert fake.units == sum(ticks) == remaining  # only what was missing was scored again
    assert without_timing(resumed) == without_timing(full)
    assert without_timing(read_json(cut / "metrics.json")) == without_timing(read_json(tmp_path / "full/metrics.json"))
    assert preds(cut) == preds(tmp_path / "full")  # same records, in the one-shot order
    assert resumed["n_resumed"] == kept and full["n_resumed"] == 0
    assert resumed["items_per_s"] is not None and resumed["n_scored"] == units


def test_resume_refuses_a_run_of_another_config_and_names_the_keys(splits, tmp_path):
    kill(splits, tmp_path / "cut", "sentiment")
    with pytest.raises(EvalConfigError, match=r"seed: 0 -> 5.*limit: 7 -> 6|limit: 7 -> 6.*seed: 0 -> 5"):
        evaluate(config(splits, tmp_path / "cut", "sentiment", resume=True, seed=5, limit=6),  # type: ignore[arg-type]
                 backend=Fake())
    with pytest.raises(EvalConfigError, match="n_items"):
        progress_total(config(splits, tmp_path / "cut", "sentiment", resume=True, limit=6))


def test_a_run_started_before_new_options_existed_still_resumes(splits, tmp_path):
    """config.json of a run begun by an older kofinsent lacks options added since: they count as their defaults.
    The batch size says how fast, not what: a resume may change it."""
    out = tmp_path / "old"
    kill(splits, out, "generate")
    stored = read_json(out / "config.json")
    for key in ("concurrency", "n_ctx", "n_gpu_layers"):
        stored.pop(key, None)
    (out / "config.json").write_text(json.dumps(stored), encoding="utf-8")
    m = evaluate(config(splits, out, "generate", resume=True, batch_size=2), backend=Fake())  # type: ignore[arg-type]
    assert m["n"] == 10 and m["n_resumed"] == 8
    with pytest.raises(EvalConfigError, match="seed: 0 -> 3"):  # an option that changes the results still counts
        evaluate(config(splits, tmp_path / "old", "generate", resume=True, seed=3), backend=Fake())  # type: ignore[arg-type]


def test_resume_of_a_changed_data_file_is_refused(splits, tmp_path):
    data = tmp_path / "test.jsonl"
    data.write_bytes(splits.test.read_bytes())
    cfg = config(splits, tmp_path / "cut", "sentiment", data=str(data))
    with pytest.raises(Killed):
        evaluate(cfg, backend=Fake(fail_after=2))  # type: ignore[arg-type]
    data.write_bytes(splits.test.read_bytes().replace(b"[\xec\x83\x81\xec\x8a\xb9]", b"[\xed\x95\x98\xeb\x9d\xbd]", 1))
    with pytest.raises(EvalConfigError, match="data_sha256"):
        evaluate(config(splits, tmp_path / "cut", "sentiment", data=str(data), resume=True),  # type: ignore[arg-type]
                 backend=Fake())


def test_without_resume_a_partial_run_is_still_refused(splits, tmp_path):
    kill(splits, tmp_path / "cut", "generate")
    with pytest.raises(RunDirError, match="already holds a run"):
        evaluate(config(splits, tmp_path / "cut", "generate"), backend=Fake())  # type: ignore[arg-type]
    with pytest.raises(EvalConfigError, match="--resume.*--overwrite"):
        config(splits, tmp_path / "cut", "generate", resume=True, overwrite=True).validate()


def test_resume_of_a_complete_run_reruns_nothing(splits, tmp_path):
    evaluate(config(splits, tmp_path / "run", "generate"), backend=Fake())  # type: ignore[arg-type]
    written = (tmp_path / "run/metrics.json").read_bytes()
    assert progress_total(config(splits, tmp_path / "run", "generate", resume=True)) == 0
    again = evaluate(config(splits, tmp_path / "run", "generate", resume=True),  # type: ignore[arg-type]
                     backend=Fake(fail_after=0))  # any call to the model would raise
    assert again == json.loads(written) and (tmp_path / "run/metrics.json").read_bytes() == written


def test_resume_with_nothing_there_is_a_fresh_run(splits, tmp_path):
    m = evaluate(config(splits, tmp_path / "new", "generate", resume=True), backend=Fake())  # type: ignore[arg-type]
    assert m["n"] == 10 and m["n_resumed"] == 0


def test_experiment_eval_step_resumes_what_a_cut_off_step_left(splits, tmp_path, monkeypatch):
    from kofinsent.experiment.runner import Experiment

    spec = {"backend": "fake", "model": "fake-model", "data": str(splits.test), **SETUPS["sentiment"][0]}
    backends: list[Fake] = []

    def make_backend(cfg: EvalConfig) -> Fake:
        return backends.pop(0)

    monkeypatch.setattr("kofinsent.evaluation.evaluate.make_backend", make_backend)
    exp = Experiment(SimpleNamespace(), tmp_path / "exp", log=lambda s: None, progress=False)  # type: ignore[arg-type]
    full = Experiment(SimpleNamespace(), tmp_path / "full", log=lambda s: None, progress=False)  # type: ignore[arg-type]
    backends += [Fake(), Fake(fail_after=4), Fake()]
    want = full.evaluate("sent", spec)
    with pytest.raises(Killed):
        exp.evaluate("sent", spec)
    resumed = backends[0]
    got = exp.evaluate("sent", spec)
    assert resumed.units == 21 - 10 and {k: v for k, v in got.items() if k != "items_per_s"} == \
        {k: v for k, v in want.items() if k != "items_per_s"}
    assert preds(tmp_path / "exp/eval/sent") == preds(tmp_path / "full/eval/sent")

    # another config in the step's directory (an edited experiment): the step starts over instead
    backends += [Fake(fail_after=4), Fake()]
    with pytest.raises(Killed):
        exp.evaluate("other", spec)
    again = backends[0]
    exp.evaluate("other", {**spec, "seed": 3})
    assert again.units == 21


def cli_eval(server: OllamaStandin, data: Path, out: Path, *extra: str):
    args = ["eval", "--backend", "ollama", "--model", "llama3:latest", "--host", server.url, "--data", str(data),
            "--out", str(out), "--prompt", "sentiment-json", "--method", "sentiment", "--iterations", "2",
            "--batch-size", "3", *extra]
    return CliRunner().invoke(app, args)


def test_cli_resume_flag(tmp_path):
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps({"id": i, "title": f"t{i}", "label": "[상승]"}) + "\n" for i in "abcd"),
                    encoding="utf-8")
    out = tmp_path / "run"
    with OllamaStandin(replies=[VALID_REPLY] * 3 + [Scripted(status=500, error="out of memory")]) as server:
        r = cli_eval(server, data, out)
        assert r.exit_code != 0 and "out of memory" in r.output
        assert len(list(read_jsonl(out / "predictions.jsonl"))) == 3
        r = cli_eval(server, data, out)
        assert r.exit_code != 0 and "already holds a run" in r.output
        n_before = len(server.bodies())
        r = cli_eval(server, data, out, "--resume")
        assert r.exit_code == 0, r.output
        assert len(server.bodies()) - n_before == 8 - 3  # only the 5 missing replies were asked for
        r = cli_eval(server, data, out, "--resume")
        assert r.exit_code == 0 and "complete" in r.output
    metrics = read_json(out / "metrics.json")
    assert (metrics["n"], metrics["n_predictions"]) == (4, 8)  # 4 items x 2 iterations
    assert metrics["n_resumed"] == 3 and metrics["valid_json_rate"] == 1.0

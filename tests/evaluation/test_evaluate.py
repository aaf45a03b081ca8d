"""`kofinsent eval / baseline / compare` end to end: tiny HF model, the Ollama stand-in, run-directory contents."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kofinsent.cli import app
from kofinsent.prompts import CONTINUATIONS, seed2shot

from ..standins.ollama_standin import OllamaStandin

runner = CliRunner()
WORDS = ["실적", "외인", "매수", "공시", "배당", "반도체", "수급", "세력", "손절", "가즈아", "존버", "물타기"]
REQUIRED = ("n", "accuracy", "accuracy_ci95", "macro_f1", "mcc", "invalid_rate", "items_per_s", "wall_s")


def write_split(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            title = " ".join(rng.sample(WORDS, 3)) + ("!" if i % 3 else " <b>&</b>")
            rec = {"id": f"900010-{seed}{i:04d}", "title": title, "label": "[상승]" if rng.random() < 0.5 else "[하락]"}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def kofinsent(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def read_run(out: Path) -> tuple[dict, list[dict]]:
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    return metrics, preds


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("data")
    return write_split(d / "train.jsonl", 80, 1), write_split(d / "test.jsonl", 24, 2)


def test_loglikelihood_run_directory(tiny_neox_dir, splits, tmp_path):
    _, test = splits
    out = tmp_path / "run"
    r = kofinsent("eval", "--backend", "hf", "--model", tiny_neox_dir, "--data", test, "--out", out,
                  "--method", "loglikelihood", "--batch-size", "8")
    assert r.exit_code == 0, r.output
    metrics, preds = read_run(out)
    assert all(k in metrics for k in REQUIRED)
    assert metrics["n"] == len(preds) == 24
    assert json.loads((out / "config.json").read_text())["backend"] == "hf"
    env = json.loads((out / "environment.json").read_text())
    assert env["packages"]["transformers"] and "seeds" in env
    prompt = seed2shot()
    for p in preds:
        assert p["context"] == prompt.context(p["title"])
        assert p["continuations"] == list(CONTINUATIONS) and len(p["loglik"]) == 2
        assert p["pred"] == ("[상승]" if p["loglik"][0] >= p["loglik"][1] else "[하락]")
    acc = sum(p["pred"] == p["gold"] for p in preds) / len(preds)
    assert metrics["accuracy"] == pytest.approx(acc)
    lo, hi = metrics["accuracy_ci95"]
    assert lo <= acc <= hi and metrics["invalid_rate"] == 0
    assert metrics["backend"]["model"] and metrics["items_per_s"] > 0

    # The plain (uncached) path scores the same numbers.
    plain = tmp_path / "plain"
    r = kofinsent("eval", "--backend", "hf", "--model", tiny_neox_dir, "--data", test, "--out", plain,
                  "--no-prefix-cache")
    assert r.exit_code == 0, r.output
    _, plain_preds = read_run(plain)
    for a, b in zip(preds, plain_preds):
        assert a["loglik"] == pytest.approx(b["loglik"], abs=1e-4)

    # compare: same predictions -> no discordant pairs
    r = kofinsent("compare", out, plain, "--out", tmp_path / "compare.json")
    assert r.exit_code == 0, r.output
    cmp = json.loads((tmp_path / "compare.json").read_text())
    assert cmp["n_paired"] == 24 and cmp["mcnemar_p"] == pytest.approx(1.0)

    # An output directory holding a run is refused unless --overwrite.
    r = kofinsent("eval", "--backend", "hf", "--model", tiny_neox_dir, "--data", test, "--out", out)
    assert r.exit_code != 0 and "already holds a run" in r.output


def test_generate_counts_invalid_outputs(tiny_neox_dir, splits, tmp_path):
    _, test = splits
    out = tmp_path / "gen"
    r = kofinsent("eval", "--backend", "hf", "--model", tiny_neox_dir, "--data", test, "--out", out,
                  "--method", "generate", "--batch-size", "1", "--max-new-tokens", "6", "--limit", "6")
    assert r.exit_code == 0, r.output
    metrics, preds = read_run(out)
    assert len(preds) == 6
    for p in preds:
        assert p["valid"] == (p["pred"] is not None)
        if p["pred"] is None:
            assert "[상승]" not in p["output"] and "[하락]" not in p["output"]
    assert metrics["invalid_rate"] == pytest.approx(sum(not p["valid"] for p in preds) / 6)


def test_kshot_over_seeds(tiny_neox_dir, splits, tmp_path):
    train, test = splits
    out = tmp_path / "k5"
    r = kofinsent("eval", "--backend", "hf", "--model", tiny_neox_dir, "--data", test, "--train", train,
                  "--prompt", "kshot", "--shots", "5", "--fewshot-seeds", "1,2,3", "--out", out)
    assert r.exit_code == 0, r.output
    metrics, preds = read_run(out)
    assert len(preds) == 3 * 24 and {p["fewshot_seed"] for p in preds} == {1, 2, 3}
    summary = metrics["fewshot_accuracy"]
    accs = [m["accuracy"] for m in metrics["per_prompt"].values()]
    assert summary["n"] == 3 and summary["mean"] == pytest.approx(sum(accs) / 3)
    # every item of one seed shares the same five examples
    prefixes = {p["context"].rsplit("[제목]:", 1)[0] for p in preds if p["fewshot_seed"] == 2}
    assert len(prefixes) == 1 and next(iter(prefixes)).count("[정답]:") == 5


SCRIPT = [
    '{"reasoning": "good", "sentiment": 0.5, "confidence": 0.8}',     # valid, up
    'Sure! {"reasoning": "x", "sentiment": -0.4, "confidence": 0.5}',  # prose: invalid (lenient ok)
    '{"reasoning": "bad", "sentiment": -0.3, "confidence": 0.6}',     # valid, down
    '{"reasoning": "??", "sentiment": 1.7, "confidence": 0.9}',       # out of range: invalid
    '```json\n{"reasoning": "f", "sentiment": 0.2, "confidence": 0.4}\n```',  # fenced: invalid (lenient ok)
    '{"reasoning": "flat", "sentiment": 0, "confidence": 0.3}',       # valid, abstain
]


def sentiment_run(server: OllamaStandin, data: Path, out: Path, iterations: int, *extra: str):
    return kofinsent("eval", "--backend", "ollama", "--model", "llama3:latest", "--host", server.url,
                     "--data", data, "--out", out, "--prompt", "sentiment-json", "--method", "sentiment",
                     "--iterations", iterations, "--batch-size", "3", *extra)


def test_sentiment_path_through_the_ollama_standin(tmp_path):
    data = tmp_path / "test.jsonl"
    rows = [("a", "[상승]"), ("b", "[하락]"), ("c", "[상승]")]
    data.write_text("".join(json.dumps({"id": i, "title": f"제목 {i}", "label": y}, ensure_ascii=False) + "\n"
                            for i, y in rows), encoding="utf-8")
    with OllamaStandin(replies=SCRIPT) as server:
        out = tmp_path / "sent"
        r = sentiment_run(server, data, out, 2, "--seed", "7")
        assert r.exit_code == 0, r.output
        bodies = server.bodies()
    metrics, preds = read_run(out)
    assert len(preds) == 6 and [p["iteration"] for p in preds] == [0, 0, 0, 1, 1, 1]
    # What was sent: system + 5 worked examples + the title; the seed 000 options plus a seed per iteration.
    first = bodies[0]
    assert [m["role"] for m in first["messages"]] == ["system"] + ["user", "assistant"] * 5 + ["user"]
    assert "제목 a" in first["messages"][-1]["content"]
    assert first["options"]["temperature"] == 0.2 and first["options"]["num_ctx"] == 8192
    assert first["options"]["num_predict"] == 1024
    assert [b["options"]["seed"] for b in bodies] == [7, 7, 7, 8, 8, 8]
    assert isinstance(first["format"], dict) and "sentiment" in first["format"]["properties"]
    # Hand-computed metrics: valid = replies 1, 3, 6 (sentiments 0.5, -0.3, 0).
    assert (metrics["n"], metrics["n_predictions"]) == (3, 6)  # 3 items x 2 iterations
    assert metrics["valid_json_rate"] == pytest.approx(3 / 6)
    assert metrics["lenient_json_rate"] == pytest.approx(5 / 6)
    assert metrics["mean_sentiment"] == pytest.approx((0.5 - 0.3 + 0) / 3)
    assert metrics["mean_confidence"] == pytest.approx((0.8 + 0.6 + 0.3) / 3)
    # Replies go a0 b0 c0 a1 b1 c1 = valid, prose, valid, out of range, fence, valid, so the valid sentiments are
    # a: [0.5], b: [], c: [-0.3, 0]; only c has two, and its ddof=1 variance is the mean over items.
    assert metrics["sentiment_variance"] == pytest.approx(((-0.3 + 0.15) ** 2 + (0 + 0.15) ** 2) / 1)
    # Correct: a0 (up, gold up); c0 is down against gold up, c1 abstains -> 1 correct of 6 replies.
    assert metrics["accuracy"] == pytest.approx(1 / 6)
    assert metrics["seconds_per_sample"] > 0 and metrics["server_seconds_per_sample"] > 0


def test_sentiment_compare_writes_levene_and_welch(tmp_path):
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "title": f"t{i}", "label": "[상승]"}) + "\n"
                            for i in range(4)), encoding="utf-8")
    a_vals, b_vals = [0.1, 0.2, 0.3, 0.4, 0.1, 0.2, 0.3, 0.5], [-0.5, 0.9, 0.0, 0.6, -0.2, 0.8, 0.1, 0.7]

    def replies(vals):
        return [json.dumps({"reasoning": "r", "sentiment": v, "confidence": 0.5}) for v in vals]

    for name, vals in (("a", a_vals), ("b", b_vals)):
        with OllamaStandin(replies=replies(vals)) as server:
            assert sentiment_run(server, data, tmp_path / name, 2).exit_code == 0
    r = kofinsent("compare", tmp_path / "a", tmp_path / "b")
    assert r.exit_code == 0, r.output
    cmp = json.loads((tmp_path / "b" / "compare.json").read_text())
    from scipy import stats

    assert cmp["levene_p"] == pytest.approx(stats.levene(a_vals, b_vals, center="median").pvalue)
    assert cmp["welch_p"] == pytest.approx(stats.ttest_ind(a_vals, b_vals, equal_var=False).pvalue)
    assert not math.isnan(cmp["mcnemar_p"])


def test_unreachable_ollama_fails_before_any_item(tmp_path, splits):
    _, test = splits
    out = tmp_path / "x"
    r = kofinsent("eval", "--backend", "ollama", "--model", "llama3", "--host", "http://127.0.0.1:9", "--data", test,
                  "--out", out, "--prompt", "sentiment-json", "--method", "sentiment")
    assert r.exit_code != 0 and "error:" in r.output and "127.0.0.1:9" in r.output
    assert not (out / "predictions.jsonl").exists()


def test_bad_settings_are_named(splits, tmp_path):
    _, test = splits
    r = kofinsent("eval", "--backend", "hf", "--model", "x", "--data", test, "--out", tmp_path / "o",
                  "--method", "sentiment")
    assert r.exit_code != 0 and "--method sentiment goes with --prompt sentiment-json" in r.output
    r = kofinsent("eval", "--backend", "nope", "--model", "x", "--data", test, "--out", tmp_path / "o2")
    assert r.exit_code != 0 and "unknown backend 'nope'" in r.output


def test_baselines_command(splits, tmp_path):
    train, test = splits
    out = tmp_path / "base"
    r = kofinsent("baseline", "--train", train, "--test", test, "--out", out)
    assert r.exit_code == 0, r.output
    for name in ("majority", "tfidf_kiwi", "tfidf_char"):
        metrics, preds = read_run(out / name)
        assert metrics["n"] == len(preds) == 24
        assert metrics["accuracy"] == pytest.approx(sum(p["pred"] == p["gold"] for p in preds) / 24)


def test_llamacpp_gguf_run_matches_transformers(tiny_llama_dir, tiny_gguf_f32, splits, tmp_path):
    _, test = splits
    gguf = tiny_gguf_f32
    runs = {}
    for backend, model in (("llamacpp", gguf), ("hf", tiny_llama_dir)):
        out = tmp_path / backend
        r = kofinsent("eval", "--backend", backend, "--model", model, "--data", test, "--out", out, "--limit", "8")
        assert r.exit_code == 0, r.output
        runs[backend] = read_run(out)
    (m_cpp, p_cpp), (_, p_hf) = runs["llamacpp"], runs["hf"]
    assert m_cpp["n"] == 8 and m_cpp["backend"]["sha256"]
    for a, b in zip(p_cpp, p_hf):
        assert a["loglik"] == pytest.approx(b["loglik"], abs=1e-3)
        assert a["pred"] == b["pred"]

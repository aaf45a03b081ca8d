"""The openai backend against the loopback stand-in: exactly what is sent, what comes back, the key, retries, errors,
concurrency, prompt log-probs, and ``kofinsent eval --backend openai`` end to end."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kofinsent.backends import REGISTRY, BackendError, GenOptions, get_backend
from kofinsent.backends.openai import OpenAIBackend, RateLimitedError, continuation_tokens, response_format
from kofinsent.cli import app
from kofinsent.evaluation.evaluate import EvalConfig, EvalConfigError, make_backend
from kofinsent.prompts import CONTINUATIONS, seed2shot
from kofinsent.prompts.sentiment import SYSTEM_PROMPT, json_schema, sentiment_chat

from ..standins.ollama_standin import closed_port_url
from ..standins.openai_standin import VALID_REPLY, OpenAIStandin, Scripted, prompt_logprobs, usage

MODEL = "llama3-8b-instruct"
KEY = "sk-test-Zq8vN3kR7pW2xY5tL9mB4cD6fG1hJ0aS"  # a made-up key: it must appear in no file and no output
SENTIMENT = GenOptions(max_new_tokens=1024, temperature=0.2, seed=0, json_schema=json_schema())
TITLE = "삼성전자 외국인 순매수 가즈아"
runner = CliRunner()


@pytest.fixture()
def server():
    with OpenAIStandin([MODEL, "qwen2.5-7b-instruct"]) as s:
        yield s


@pytest.fixture(autouse=True)
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a developer's own key must not reach the stand-in


def backend(server: OpenAIStandin, **kw) -> OpenAIBackend:
    return get_backend("openai", model=kw.pop("model", MODEL), host=server.url, **kw)  # type: ignore[return-value]


def waits() -> tuple[list[float], object]:
    slept: list[float] = []
    return slept, slept.append


# -- what is sent ------------------------------------------------------------------------------------------------
def test_registered_lazily_and_in_the_preflight_table() -> None:
    from kofinsent.experiment import preflight

    assert REGISTRY["openai"] == "kofinsent.backends.openai:OpenAIBackend"
    assert preflight.BACKENDS["openai"].server == "http://localhost:8000/v1" and not preflight.BACKENDS["openai"].modules


def test_chat_request_is_the_exact_body(server: OpenAIStandin) -> None:
    be = backend(server)
    (g,) = be.generate([sentiment_chat(TITLE)], SENTIMENT)
    (body,) = server.bodies()
    assert [m["role"] for m in body["messages"]] == ["system"] + ["user", "assistant"] * 5 + ["user"]
    assert body["messages"][0]["content"] == SYSTEM_PROMPT
    assert body["messages"][-1]["content"] == f"<article>{TITLE}</article>"
    assert body == {
        "model": MODEL, "messages": sentiment_chat(TITLE), "temperature": 0.2, "max_tokens": 1024, "seed": 0,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "SentimentReply", "schema": json_schema(), "strict": True}},
    }
    assert g.text == VALID_REPLY
    assert response_format(json_schema()) == body["response_format"]


def test_free_format_sends_no_response_format(server: OpenAIStandin) -> None:
    be = backend(server, format="free")
    be.generate([sentiment_chat(TITLE)], SENTIMENT)
    (body,) = server.bodies()
    assert "response_format" not in body and body["seed"] == 0 and body["temperature"] == 0.2


def test_each_call_sends_its_own_integer_seed(server: OpenAIStandin) -> None:
    be = backend(server, seed=7)
    for seed in (7, 8, 9):
        be.generate([sentiment_chat(TITLE)], GenOptions(max_new_tokens=1024, temperature=0.2, seed=seed))
    seeds = [b["seed"] for b in server.bodies()]
    assert seeds == [7, 8, 9] and all(type(s) is int for s in seeds)
    assert be.identity()["seed"] == 7


def test_text_prompt_goes_to_completions_and_option_precedence(server: OpenAIStandin) -> None:
    server.queue(" [상승]")
    be = backend(server, options={"top_p": 0.9, "temperature": 1.5})
    (g,) = be.generate(["[제목]: 카카오 떡상 가자\n[정답]:"],
                       GenOptions(max_new_tokens=8, stop=("\n",), json_schema=json_schema(), extra={"top_p": 0.5}))
    (body,) = server.bodies("/v1/completions")
    assert g.text == " [상승]" and not server.bodies()
    # constructor options < the call's GenOptions < options.extra; no response_format on /completions
    assert body == {"model": MODEL, "prompt": "[제목]: 카카오 떡상 가자\n[정답]:", "top_p": 0.5, "temperature": 0.0,
                    "max_tokens": 8, "seed": 0, "stop": ["\n"]}


def test_tokens_and_server_time_in_meta(server: OpenAIStandin) -> None:
    chat = sentiment_chat(TITLE)
    (g,) = backend(server).generate([chat], SENTIMENT)
    u = usage(sum(len(m["content"]) for m in chat), VALID_REPLY)
    assert (g.meta["prompt_tokens"], g.meta["completion_tokens"]) == (u["prompt_tokens"], u["completion_tokens"])
    assert g.meta["server_time_source"] == "round_trip" and 0 < g.meta["server_seconds"] <= g.seconds
    assert g.meta["finish_reason"] == "stop" and g.meta["system_fingerprint"] == "fp_standin"
    assert g.meta["attempts"] == 1
    server.processing_ms = 1234
    (g,) = backend(server).generate([chat], SENTIMENT)
    assert (g.meta["server_seconds"], g.meta["server_time_source"]) == (1.234, "openai-processing-ms")


# -- the key -----------------------------------------------------------------------------------------------------
def test_key_goes_in_the_header_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with OpenAIStandin([MODEL], api_key=KEY) as s:
        be = backend(s)
        be.generate([sentiment_chat(TITLE)], SENTIMENT)
        assert {r.headers.get("Authorization") for r in s.requests} == {f"Bearer {KEY}"}
        assert all(KEY not in json.dumps(r.body) for r in s.requests)
        ident = json.dumps(be.identity())
        assert KEY not in ident and be.identity()["api_key_set"] is True
        assert KEY not in repr(be)


def test_no_key_no_header(server: OpenAIStandin) -> None:
    backend(server).generate([sentiment_chat(TITLE)], SENTIMENT)
    assert all("Authorization" not in r.headers for r in server.requests)


def test_wrong_key_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with OpenAIStandin([MODEL], api_key="sk-the-right-one") as s:
        url = s.url
        with pytest.raises(BackendError) as err:
            backend(s)
    msg = str(err.value)
    assert "HTTP 401" in msg and "OPENAI_API_KEY" in msg and url in msg and KEY not in msg
    assert "***" in msg and "\n" not in msg  # the stand-in echoed the key back; it was scrubbed


def test_missing_key_says_so() -> None:
    with OpenAIStandin([MODEL], api_key="sk-needed") as s, \
            pytest.raises(BackendError, match="no key was sent: set OPENAI_API_KEY"):
        backend(s)


# -- retries -----------------------------------------------------------------------------------------------------
def test_429_with_retry_after_is_retried_after_that_wait(server: OpenAIStandin) -> None:
    server.queue(Scripted(status=429, error="Rate limit reached", headers={"Retry-After": "7"}), VALID_REPLY)
    slept, sleep = waits()
    (g,) = backend(server, sleep=sleep).generate([sentiment_chat(TITLE)], SENTIMENT)
    assert g.text == VALID_REPLY and g.meta["attempts"] == 2 and slept == [7.0]
    assert len(server.bodies()) == 2 and server.bodies()[0] == server.bodies()[1]


def test_5xx_backs_off_exponentially_then_gives_up_naming_host_and_model(server: OpenAIStandin) -> None:
    server.queue(*[Scripted(status=503, error="overloaded")] * 3, VALID_REPLY)
    slept, sleep = waits()
    (g,) = backend(server, sleep=sleep, backoff=0.5).generate([sentiment_chat(TITLE)], SENTIMENT)
    assert g.text == VALID_REPLY and slept == [0.5, 1.0, 2.0]
    server.queue(*[Scripted(status=500, error="engine died")] * 3)
    with pytest.raises(BackendError) as err:
        backend(server, sleep=sleep, retries=2).generate([sentiment_chat(TITLE)], SENTIMENT)
    msg = str(err.value)
    assert "HTTP 500 on all 3 attempt(s): engine died" in msg and server.url in msg and MODEL in msg


def test_retry_after_past_the_cap_stops_at_once(server: OpenAIStandin) -> None:
    server.queue(Scripted(status=429, error="quota", headers={"Retry-After": "3600"}))
    slept, sleep = waits()
    with pytest.raises(RateLimitedError) as err:
        backend(server, sleep=sleep, max_wait=300).generate([sentiment_chat(TITLE)], SENTIMENT)
    assert err.value.exit_code == 3 and err.value.prefix == "rate-limited" and slept == []
    assert "3600 s" in str(err.value) and len(server.bodies()) == 1


def test_unreadable_retry_after_falls_back_to_backoff(server: OpenAIStandin) -> None:
    server.queue(Scripted(status=429, headers={"Retry-After": "soon"}), VALID_REPLY)
    slept, sleep = waits()
    backend(server, sleep=sleep, backoff=0.25).generate([sentiment_chat(TITLE)], SENTIMENT)
    assert slept == [0.25]


# -- errors ------------------------------------------------------------------------------------------------------
def test_unknown_model_names_the_models_it_has(server: OpenAIStandin) -> None:
    with pytest.raises(BackendError) as err:
        backend(server, model="gpt-4-turbo")
    msg = str(err.value)
    assert "'gpt-4-turbo' not found" in msg and f"it has: {MODEL}, qwen2.5-7b-instruct" in msg
    assert [r.path for r in server.requests] == ["/v1/models"]


def test_unreachable_host_fails_at_construction() -> None:
    url = closed_port_url() + "/v1"
    with pytest.raises(BackendError, match="cannot reach the server at") as err:
        get_backend("openai", model=MODEL, host=url)
    assert url in str(err.value) and "\n" not in str(err.value)


def test_host_without_v1_says_so(server: OpenAIStandin) -> None:
    with pytest.raises(BackendError, match=r"--host must be the API base, ending in /v1"):
        get_backend("openai", model=MODEL, host=server.origin)


def test_a_body_that_is_not_json_is_one_line_naming_host_and_model(server: OpenAIStandin) -> None:
    server.queue(Scripted(raw=b"<html>\n<body>Bad gateway page</body>\n</html>"))
    with pytest.raises(BackendError) as err:
        backend(server).generate([sentiment_chat(TITLE)], SENTIMENT)
    msg = str(err.value)
    assert "not a JSON object" in msg and server.url in msg and MODEL in msg and "\n" not in msg


def test_a_404_during_the_run_and_a_bad_format(server: OpenAIStandin) -> None:
    server.queue(Scripted(status=404, error="The model `x` does not exist."))
    with pytest.raises(BackendError, match="HTTP 404 on /chat/completions"):
        backend(server).generate([sentiment_chat(TITLE)], SENTIMENT)
    with pytest.raises(BackendError, match="format"):
        backend(server, format="json")


# -- concurrency -------------------------------------------------------------------------------------------------
def test_concurrency_keeps_input_order(server: OpenAIStandin) -> None:
    rng = random.Random(0)
    delays = {f"t{i}": rng.uniform(0, 0.08) for i in range(24)}

    def reply(body):
        title = body["messages"][-1]["content"].removeprefix("<article>").removesuffix("</article>")
        return Scripted(json.dumps({"reasoning": title, "sentiment": 0.1, "confidence": 0.5}), delay=delays[title])

    server.reply_fn = reply
    gens = backend(server, concurrency=4).generate([sentiment_chat(t) for t in delays], SENTIMENT)
    assert [json.loads(g.text)["reasoning"] for g in gens] == list(delays)
    assert server.max_in_flight == 4


def test_a_failure_under_concurrency_stops_the_rest(server: OpenAIStandin) -> None:
    def reply(body):
        title = body["messages"][-1]["content"]
        if title == "<article>t3</article>":
            return Scripted(status=429, headers={"Retry-After": "100000"})
        return Scripted(VALID_REPLY, delay=0.05)

    server.reply_fn = reply
    with pytest.raises(RateLimitedError):
        backend(server, concurrency=2).generate([sentiment_chat(f"t{i}") for i in range(40)], SENTIMENT)
    assert len(server.bodies()) < 40


# -- prompt log-probs --------------------------------------------------------------------------------------------
def served_sum(context: str, continuation: str) -> float:
    """The stand-in's log-probs of the tokens that start at or after the context's end (clean boundaries)."""
    _, offsets, lps = prompt_logprobs(context + continuation)
    return sum(lp for off, lp in zip(offsets, lps) if off >= len(context))  # type: ignore[misc]


def test_loglikelihood_equals_what_the_server_serves(server: OpenAIStandin) -> None:
    prompt = seed2shot()
    pairs = [(prompt.context(t), c) for t in ("카카오 떡상 가자", "하한가 간다 ㅠㅠ") for c in CONTINUATIONS]
    be = backend(server, concurrency=3)
    assert be.supports_loglikelihood is True
    scores = be.loglikelihood(pairs)
    assert scores == pytest.approx([served_sum(c, x) for c, x in pairs], abs=1e-12)
    bodies = sorted(server.bodies("/v1/completions"), key=lambda b: b["prompt"])  # 3 in flight: any arrival order
    assert bodies == sorted(({"model": MODEL, "prompt": c + x, "echo": True, "logprobs": 1, "max_tokens": 0}
                             for c, x in pairs), key=lambda b: b["prompt"])


def test_a_token_across_the_boundary_counts_with_the_continuation(server: OpenAIStandin) -> None:
    # the stand-in splits "abcdef" as "abc", "def": the continuation "ef" is inside the second token
    (score,) = backend(server).loglikelihood([("abcd", "ef")])
    tokens, _, lps = prompt_logprobs("abcdef")
    assert tokens == ["abc", "def"] and score == pytest.approx(lps[1])
    assert continuation_tokens([0, 3], 4, 6) == [1]
    assert continuation_tokens([0, 3, 3, 5], 3, 7) == [1, 2, 3]  # zero-width byte tokens go with their character
    assert continuation_tokens([0, 2, 4, 6], 2, 4, 8) == [1]      # a generated token past the prompt is left out


def test_a_server_without_prompt_logprobs_says_so() -> None:
    with OpenAIStandin([MODEL], logprobs=False) as s, \
            pytest.raises(BackendError, match="does not support prompt log-probs"):
        backend(s).loglikelihood([("[제목]: x\n[정답]:", " [상승]")])


# -- the evaluator -----------------------------------------------------------------------------------------------
def write_split(path: Path, n: int) -> Path:
    records = [{"id": f"900010-{i:04d}", "title": f"종목 {i} 실적 발표 가즈아", "label": "[상승]" if i % 2 else "[하락]"}
               for i in range(n)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def files_of(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file()]


def test_eval_cli_sentiment_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    data, out = write_split(tmp_path / "test.jsonl", 5), tmp_path / "run"
    with OpenAIStandin([MODEL], api_key=KEY) as s:
        r = runner.invoke(app, ["eval", "--backend", "openai", "--host", s.url, "--model", MODEL, "--data",
                                str(data), "--prompt", "sentiment-json", "--method", "sentiment", "--iterations", "3",
                                "--concurrency", "2", "--seed", "5", "--out", str(out)])
        assert r.exit_code == 0, r.output
        bodies = s.bodies()
    assert len(bodies) == 15 and s.max_in_flight <= 2
    assert sorted(b["seed"] for b in bodies) == sorted([5, 6, 7] * 5)
    assert all(b["response_format"]["json_schema"]["schema"] == json_schema() for b in bodies)
    assert all((b["temperature"], b["max_tokens"]) == (0.2, 1024) for b in bodies)
    assert {r.headers["Authorization"] for r in s.requests} == {f"Bearer {KEY}"}
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert (config["backend"], config["concurrency"], config["host"]) == ("openai", 2, s.url)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["n"] == 5 and metrics["valid_json_rate"] == 1.0 and metrics["backend"]["backend"] == "openai"
    assert metrics["server_seconds_per_sample"] > 0
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(preds) == 15 and [p["iteration"] for p in preds] == [0] * 5 + [1] * 5 + [2] * 5
    assert [p["seed"] for p in preds] == [5] * 5 + [6] * 5 + [7] * 5
    for p in preds:
        assert p["raw"] == VALID_REPLY and p["pred"] == "[상승]" and p["valid"] is True
        assert p["meta"]["prompt_tokens"] > 0 and p["meta"]["completion_tokens"] == len(VALID_REPLY) // 3
        assert p["server_seconds"] == p["meta"]["server_seconds"] > 0
    # the key: in no file of the run, in no output
    for f in files_of(out):
        assert KEY.encode() not in f.read_bytes(), f
    captured = capfd.readouterr()
    assert KEY not in r.output and KEY not in (r.stderr or "") and KEY not in captured.out + captured.err


def test_eval_cli_free_format_and_a_resumed_run_with_other_concurrency(tmp_path: Path) -> None:
    data, out = write_split(tmp_path / "test.jsonl", 4), tmp_path / "run"
    args = ["eval", "--backend", "openai", "--model", MODEL, "--data", str(data), "--prompt", "sentiment-json",
            "--method", "sentiment", "--format", "free", "--out", str(out)]
    with OpenAIStandin([MODEL]) as s:
        r = runner.invoke(app, [*args, "--host", s.url])
        assert r.exit_code == 0, r.output
        assert len(s.bodies()) == 4 and all("response_format" not in b for b in s.bodies())
        # concurrency is how a run is sent, not what it computes: a complete run is not refused for it
        r = runner.invoke(app, [*args, "--host", s.url, "--resume", "--concurrency", "3"])
        assert r.exit_code == 0, r.output
        assert "nothing was rerun" in r.output and len(s.bodies()) == 4


def test_eval_cli_rate_limit_past_the_cap_is_one_line_exit_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    data, out = write_split(tmp_path / "test.jsonl", 3), tmp_path / "run"
    with OpenAIStandin([MODEL], api_key=KEY,
                       replies=[VALID_REPLY, Scripted(status=429, error=f"slow down {KEY}",
                                                      headers={"Retry-After": "86400"})]) as s:
        r = runner.invoke(app, ["eval", "--backend", "openai", "--host", s.url, "--model", MODEL, "--data", str(data),
                                "--prompt", "sentiment-json", "--method", "sentiment", "--out", str(out)])
    assert r.exit_code == 3, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rate-limited: openai: ") and "86400 s" in lines[0], r.stderr
    assert "--resume" in lines[0] and KEY not in r.output
    for f in files_of(out):
        assert KEY.encode() not in f.read_bytes(), f


def test_eval_cli_unknown_model_fails_before_any_item(tmp_path: Path) -> None:
    data, out = write_split(tmp_path / "test.jsonl", 3), tmp_path / "run"
    with OpenAIStandin([MODEL]) as s:
        r = runner.invoke(app, ["eval", "--backend", "openai", "--host", s.url, "--model", "nope", "--data", str(data),
                                "--prompt", "sentiment-json", "--method", "sentiment", "--out", str(out)])
        assert [q.path for q in s.requests] == ["/v1/models"]
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: openai: model 'nope' not found") and MODEL in lines[0]


def test_eval_cli_loglikelihood_run(tmp_path: Path) -> None:
    data, out = write_split(tmp_path / "test.jsonl", 6), tmp_path / "run"
    with OpenAIStandin([MODEL]) as s:
        r = runner.invoke(app, ["eval", "--backend", "openai", "--host", s.url, "--model", MODEL, "--data", str(data),
                                "--method", "loglikelihood", "--concurrency", "4", "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert len(s.bodies("/v1/completions")) == 12
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert metrics["n"] == 6 and len(preds) == 6
    for p in preds:
        assert p["loglik"] == pytest.approx([served_sum(p["context"], c) for c in CONTINUATIONS])
        assert p["pred"] == ("[상승]" if p["loglik"][0] >= p["loglik"][1] else "[하락]")


def test_concurrency_is_an_eval_option_for_openai_alone(tmp_path: Path) -> None:
    from kofinsent.experiment.config import EvalSection

    assert EvalSection(backend="openai", model="m", concurrency=8).concurrency == 8  # experiment TOML gets it
    data = write_split(tmp_path / "test.jsonl", 1)
    with pytest.raises(EvalConfigError, match="--concurrency must be an integer >= 1"):
        EvalConfig(backend="openai", model=MODEL, data=str(data), out=str(tmp_path / "o"), concurrency=0).validate()
    with pytest.raises(EvalConfigError, match="--concurrency applies to --backend openai"):
        make_backend(EvalConfig(backend="ollama", model="x", data=str(data), out=str(tmp_path / "o"), concurrency=2))

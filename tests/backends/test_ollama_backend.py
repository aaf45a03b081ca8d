"""The ollama backend against the loopback stand-in: exactly what is sent, what comes back, and the errors."""
from __future__ import annotations

import builtins
import hashlib
from importlib.metadata import version

import ollama
import pytest

from kofinsent.backends import BackendError, GenOptions, MissingExtraError, get_backend
from kofinsent.prompts.sentiment import SYSTEM_PROMPT, json_schema, parse_strict, sentiment_chat

from ..standins.ollama_standin import VALID_REPLY, Model, OllamaStandin, Scripted, closed_port_url, timings

# What the evaluator's sentiment mode passes (seed 000's temperature and token budget, the run's seed).
SENTIMENT = GenOptions(max_new_tokens=1024, temperature=0.2, seed=0, json_schema=json_schema())
TITLE = "삼성전자 외국인 순매수 가즈아"


@pytest.fixture()
def server():
    with OllamaStandin(["llama3:latest", Model("llama3:8b-instruct-q4_K_M", digest="sha256:" + "cd" * 32)]) as s:
        yield s


def test_chat_request_is_seed000s_call(server: OllamaStandin) -> None:
    be = get_backend("ollama", model="llama3", host=server.url)
    be.generate([sentiment_chat(TITLE)], SENTIMENT)
    (body,) = server.bodies("/api/chat")
    msgs = body["messages"]
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * 5 + ["user"]
    assert msgs[0]["content"] == SYSTEM_PROMPT and msgs[-1]["content"] == f"<article>{TITLE}</article>"
    assert msgs == sentiment_chat(TITLE)
    assert body["model"] == "llama3" and body["stream"] is False
    assert body["format"] == json_schema()
    assert body["options"] == {"temperature": 0.2, "num_ctx": 8192, "num_predict": 1024, "seed": 0}
    assert isinstance(body["options"]["seed"], int)


def test_free_format_sends_no_format_even_with_a_schema(server: OllamaStandin) -> None:
    be = get_backend("ollama", model="llama3", host=server.url, format="free")
    be.generate([sentiment_chat(TITLE)], SENTIMENT)
    (body,) = server.bodies("/api/chat")
    assert "format" not in body


def test_each_call_sends_its_own_integer_seed(server: OllamaStandin) -> None:
    be = get_backend("ollama", model="llama3", host=server.url, seed=7)
    for seed in (7, 8, 9):  # the evaluator's iterations: base seed + iteration
        be.generate([sentiment_chat(TITLE)], GenOptions(max_new_tokens=1024, temperature=0.2, seed=seed))
    assert [b["options"]["seed"] for b in server.bodies()] == [7, 8, 9]
    assert be.identity()["seed"] == 7


def test_option_precedence(server: OllamaStandin) -> None:
    be = get_backend("ollama", model="llama3", host=server.url,
                     options={"num_ctx": 4096, "top_k": 20, "temperature": 0.9})
    be.generate([sentiment_chat(TITLE)], GenOptions(max_new_tokens=64, temperature=0.0, seed=3, stop=("}",),
                                                    extra={"top_k": 5, "num_gpu": 0}))
    (body,) = server.bodies()
    # constructor options beat seed 000's defaults; the call's GenOptions beat them; options.extra beats all
    assert body["options"] == {"temperature": 0.0, "num_ctx": 4096, "num_predict": 64, "seed": 3, "top_k": 5,
                               "stop": ["}"], "num_gpu": 0}


def test_timings_are_recorded_and_preload_keeps_load_time_out(server: OllamaStandin) -> None:
    be = get_backend("ollama", model="llama3", host=server.url)
    chat = sentiment_chat(TITLE)
    (g,) = be.generate([chat], SENTIMENT)
    preload = server.bodies(include_preload=True)[0]
    assert preload["messages"] == [] and "options" not in preload
    prompt_chars = sum(len(m["content"]) for m in chat)
    assert g.meta == {**timings(prompt_chars, VALID_REPLY, loaded=True), "done_reason": "stop"}
    assert g.meta["load_duration"] == 5_000_000  # the 1.5 s load went to the preload
    assert g.seconds > 0 and g.text == VALID_REPLY


def test_without_preload_the_first_item_pays_the_load(server: OllamaStandin) -> None:
    be = get_backend("ollama", model="llama3", host=server.url, preload=False)
    first, second = be.generate([sentiment_chat(TITLE)] * 2, SENTIMENT)
    assert (first.meta["load_duration"], second.meta["load_duration"]) == (1_500_000_000, 5_000_000)
    assert not any(not b["messages"] for b in server.bodies(include_preload=True))


def test_streaming_reassembles_the_reply_and_keeps_the_final_timings(server: OllamaStandin) -> None:
    reply = '{"reasoning": "외국인 순매수는 호재다.", "sentiment": 0.61, "confidence": 0.72}'
    server.queue(reply)
    server.chunk_chars = 5
    be = get_backend("ollama", model="llama3", host=server.url, stream=True)
    (g,) = be.generate([sentiment_chat(TITLE)], SENTIMENT)
    assert g.text == reply
    assert server.bodies()[0]["stream"] is True
    assert g.meta["eval_count"] == len(reply) // 3 and g.meta["done_reason"] == "stop"


SCRIPTED = [
    VALID_REPLY,
    '{"reasoning": "cut off", "sentiment": 0.3',                                         # invalid JSON
    '{"reasoning": "too sure", "sentiment": 1.7, "confidence": 0.9}',                    # out of range
    '```json\n{"reasoning": "fenced", "sentiment": -0.4, "confidence": 0.6}\n```',       # markdown fence
    'Here is my analysis: {"reasoning": "prose", "sentiment": 0.2, "confidence": 0.5}',  # prose around it
]


@pytest.mark.parametrize("stream", [False, True])
def test_scripted_replies_come_back_exactly_as_sent(server: OllamaStandin, stream: bool) -> None:
    server.queue(*SCRIPTED)
    be = get_backend("ollama", model="llama3", host=server.url, stream=stream)
    gens = be.generate([sentiment_chat(f"title {i}") for i in range(len(SCRIPTED))], SENTIMENT)
    assert [g.text for g in gens] == SCRIPTED
    assert [parse_strict(g.text) is not None for g in gens] == [True, False, False, False, False]
    assert [b["messages"][-1]["content"] for b in server.bodies()] == [
        f"<article>title {i}</article>" for i in range(len(SCRIPTED))]


def test_reply_function_sees_the_request(server: OllamaStandin) -> None:
    server.reply_fn = lambda body: f'{{"n": {len(body["messages"])}, "seed": {body["options"]["seed"]}}}'
    be = get_backend("ollama", model="llama3", host=server.url)
    (g,) = be.generate([sentiment_chat(TITLE)], GenOptions(seed=4))
    assert g.text == '{"n": 12, "seed": 4}'


def test_text_prompt_is_a_raw_completion(server: OllamaStandin) -> None:
    server.queue(" [상승]")
    be = get_backend("ollama", model="llama3", host=server.url)
    (g,) = be.generate(["[제목]: 카카오 떡상 가자\n[정답]:"], GenOptions(max_new_tokens=8))
    (body,) = server.bodies("/api/generate")
    assert g.text == " [상승]"
    assert body["prompt"] == "[제목]: 카카오 떡상 가자\n[정답]:" and body["raw"] is True and "format" not in body
    assert body["options"] == {"temperature": 0.0, "num_ctx": 8192, "num_predict": 8, "seed": 0}


def test_unreachable_server_fails_at_construction() -> None:
    url = closed_port_url()
    with pytest.raises(BackendError, match=r"cannot reach the server at .*ollama serve") as err:
        get_backend("ollama", model="llama3", host=url)
    assert url in str(err.value)


def test_missing_model_fails_before_any_item(server: OllamaStandin) -> None:
    with pytest.raises(BackendError, match=r"'mistral' not found .*ollama pull mistral"):
        get_backend("ollama", model="mistral", host=server.url)
    assert not server.bodies("/api/chat", include_preload=True)


def test_server_error_during_a_run_is_a_backend_error(server: OllamaStandin) -> None:
    server.queue(Scripted(status=500, error="llama runner process has terminated"))
    be = get_backend("ollama", model="llama3", host=server.url)
    with pytest.raises(BackendError, match="500: llama runner process has terminated"):
        be.generate([sentiment_chat(TITLE)], SENTIMENT)


def test_no_loglikelihood(server: OllamaStandin) -> None:
    be = get_backend("ollama", model="llama3", host=server.url)
    assert be.supports_loglikelihood is False and be.supports_chat is True
    with pytest.raises(BackendError, match="log-probabilities"):
        be.loglikelihood([("a", "b")])


def test_identity_has_the_digest_details_and_versions(server: OllamaStandin) -> None:
    be = get_backend("ollama", model="llama3:8b-instruct-q4_K_M", host=server.url, format="free")
    ident = be.identity()
    assert ident["digest"] == "sha256:" + "cd" * 32 and ident["model_tag"] == "llama3:8b-instruct-q4_K_M"
    assert ident["details"]["quantization_level"] == "Q4_K_M" and ident["details"]["family"] == "llama"
    assert ident["host"] == server.url and ident["format"] == "free"
    assert ident["server_version"] == server.version
    assert ident["ollama_client"] == version("ollama")


def test_bad_format_is_refused(server: OllamaStandin) -> None:
    with pytest.raises(BackendError, match="format"):
        get_backend("ollama", model="llama3", host=server.url, format="json")


def test_missing_ollama_client_names_the_extra(monkeypatch: pytest.MonkeyPatch, server: OllamaStandin) -> None:
    real_import = builtins.__import__

    def no_ollama(name, *args, **kwargs):
        if name == "ollama":
            raise ImportError("No module named 'ollama'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ollama)
    with pytest.raises(MissingExtraError, match=r"kofinsent\[ollama\]"):
        get_backend("ollama", model="llama3", host=server.url)


def test_standin_takes_blobs_and_creates_models(server: OllamaStandin, tmp_path) -> None:
    """What issue #5's export uses: ``create_blob`` then ``create(files=...)`` through the official client."""
    blob = tmp_path / "model.gguf"
    blob.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    client = ollama.Client(host=server.url)
    digest = client.create_blob(blob)
    assert digest == "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() and digest in server.blobs
    head = client._client.head(f"/api/blobs/{digest}")
    assert head.status_code == 200
    assert client._client.head("/api/blobs/sha256:" + "0" * 64).status_code == 404
    bad = client._client.post("/api/blobs/sha256:" + "0" * 64, content=b"other bytes")
    assert bad.status_code == 400
    assert client.create("kofinsent-tiny", files={"model.gguf": digest}, template="{{ .Prompt }}",
                         system="You are a sentiment model.").status == "success"
    (create,) = server.bodies("/api/create")
    assert create["files"] == {"model.gguf": digest} and create["system"] == "You are a sentiment model."
    assert "kofinsent-tiny:latest" in [m.model for m in client.list().models]
    with pytest.raises(ollama.ResponseError):
        client.create("broken", files={"model.gguf": "sha256:" + "1" * 64})
    # and the backend can then use the created model
    server.queue(VALID_REPLY)
    be = get_backend("ollama", model="kofinsent-tiny", host=server.url)
    assert be.generate([sentiment_chat(TITLE)], SENTIMENT)[0].text == VALID_REPLY

"""The llamacpp backend on a tiny GGUF: lm-eval log-likelihoods equal to transformers, prefix reuse, generation,
the GGUF's chat template, JSON-schema-constrained output, clear errors."""
from __future__ import annotations

import builtins
import hashlib
import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from kofinsent.backends import BackendError, GenOptions, MissingExtraError, get_backend

pytest.importorskip("llama_cpp")
torch = pytest.importorskip("torch")

PREFIX = ("다음 글이 올라온 다음 날 주가는?\n[제목]: 삼성전자 가즈아!!\n[정답]: [상승]\n"
          "[제목]: 카카오 망했네요ㅠㅠ\n[정답]: [하락]\n")
TITLES = ("NAVER 목표가 상향 떡상 가자", "SK하이닉스 외국인이 블록딜 손절각", "현대차 배당 존버합니다")
PAIRS = [(f"{PREFIX}[제목]: {t}\n[정답]:", c) for t in TITLES for c in (" [상승]", " [하락]")]
EDGE_PAIRS = [
    (f"{PREFIX}[제목]: {TITLES[0]}\n[정답]: ", "[상승]"),  # trailing space moves to the continuation
    ("", "삼성전자 가즈아"),                                 # empty context: scored after BOS
    ("Shares climb after", " the company beats earnings expectations."),
]


class Reply(BaseModel):
    """The sentiment reply's shape, local to this test (reasoning capped so a random model's string ends)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    reasoning: str = Field(max_length=40)
    sentiment: float = Field(ge=-1.0, le=1.0)
    confidence: float = Field(ge=0.0, le=1.0)


class ReplyShape(BaseModel):
    """What a JSON-schema grammar guarantees: keys and types. llama.cpp's schema converters do not bound a
    ``number`` (minimum / maximum is a TODO there), so the range is the model's job."""

    model_config = ConfigDict(extra="forbid", strict=True)
    reasoning: str = Field(max_length=40)
    sentiment: float
    confidence: float


@pytest.fixture(scope="module")
def backend(tiny_gguf_f32: Path):
    be = get_backend("llamacpp", model=str(tiny_gguf_f32), n_ctx=512)
    yield be
    be.close()


@pytest.fixture(scope="session")
def hf(tiny_llama_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(tiny_llama_dir))


def hf_loglikelihood(model, tok, context: str, continuation: str) -> float:
    """lm-eval's HFLM by hand: whitespace moved, whole encoded and split at the context's length, float64 sums."""
    if context == "":
        ctx, cont = [tok.bos_token_id], tok(continuation, add_special_tokens=False)["input_ids"]
    else:
        n = len(context) - len(context.rstrip())
        if n:
            context, continuation = context[:-n], context[-n:] + continuation
        whole = tok(context + continuation)["input_ids"]
        ctx = tok(context)["input_ids"]
        cont = whole[len(ctx):]
    ids = ctx + cont
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids[:-1]])).logits[0].double(), -1)
    return sum(float(logp[i - 1, ids[i]]) for i in range(len(ctx), len(ids)))


def test_loglikelihood_matches_transformers(backend, hf) -> None:
    model, tok = hf
    requests = PAIRS + EDGE_PAIRS
    got = backend.loglikelihood(requests)
    want = [hf_loglikelihood(model, tok, c, x) for c, x in requests]
    assert max(abs(g - w) for g, w in zip(got, want)) <= 1e-3
    for i in range(0, len(PAIRS), 2):  # and therefore the same answer
        assert (got[i] > got[i + 1]) == (want[i] > want[i + 1])


def test_prefix_reuse_equals_scoring_each_request_from_scratch(backend, tiny_gguf_f32: Path) -> None:
    before = backend.tokens_evaluated
    cached = backend.loglikelihood(PAIRS)
    run = backend.tokens_evaluated - before
    plain_backend = get_backend("llamacpp", model=str(tiny_gguf_f32), n_ctx=512, prefix_cache=False)
    try:
        plain = plain_backend.loglikelihood(PAIRS)
        full = plain_backend.tokens_evaluated
    finally:
        plain_backend.close()
    assert cached == pytest.approx(plain, abs=1e-4)  # only llama.cpp's batch sizes differ
    assert full == sum(len(backend.encode(c + x)) - 1 for c, x in PAIRS)
    assert run < full / 2  # the shared few-shot prefix ran once, not six times


def test_results_keep_request_order_and_repeat(backend) -> None:
    reversed_scores = backend.loglikelihood(PAIRS[::-1])
    assert reversed_scores[::-1] == pytest.approx(backend.loglikelihood(PAIRS), abs=1e-9)


def test_too_long_context_is_left_truncated_and_counted(tiny_gguf_f32: Path) -> None:
    be = get_backend("llamacpp", model=str(tiny_gguf_f32), n_ctx=32)
    try:
        (score,) = be.loglikelihood([(PREFIX * 4, " [상승]")])
        assert be.context_exceeded == 1 and score < 0
    finally:
        be.close()


def test_greedy_completion_matches_transformers_and_is_repeatable(backend, hf) -> None:
    import llama_cpp

    model, tok = hf
    prompt = f"{PREFIX}[제목]: {TITLES[0]}\n[정답]:"
    opts = GenOptions(max_new_tokens=10, temperature=0.0, seed=1)
    (first,) = backend.generate([prompt], opts)
    (again,) = backend.generate([prompt], opts)
    ids = tok(prompt)["input_ids"]
    # llama.cpp ends generation at every end-of-generation token it knows (here also <|endoftext|>): so does this
    eog = [i for i in range(len(tok)) if llama_cpp.llama_vocab_is_eog(backend.llm._model.vocab, i)]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False, eos_token_id=eog)
    ref = [t for t in out[0, len(ids):].tolist() if t not in eog]
    # Same tokens as transformers' greedy search. llama-cpp-python drops bytes that form no character and, at
    # max_tokens, may run a token or two further to finish a character cut in half: compare the decodable prefix.
    assert first.text.startswith(backend.llm.detokenize(ref).decode("utf-8", errors="ignore"))
    assert again.text == first.text
    assert first.meta["prompt_tokens"] == len(ids) and first.meta["completion_tokens"] >= len(ref)
    assert first.seconds > 0


def test_stop_strings_end_the_completion(backend) -> None:
    # a random model may end early: use the first prompt whose free completion has a few characters to cut at
    for prompt in (PREFIX, *TITLES):
        (free,) = backend.generate([prompt], GenOptions(max_new_tokens=16))
        if len(free.text) >= 4:
            break
    cut = free.text[2:4]
    (stopped,) = backend.generate([prompt], GenOptions(max_new_tokens=16, stop=(cut,)))
    assert stopped.text == free.text[: free.text.index(cut)]


def test_chat_uses_the_ggufs_own_template(backend, hf) -> None:
    _, tok = hf
    chat = [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": "삼성전자 가즈아"}]
    (g,) = backend.generate([chat], GenOptions(max_new_tokens=4))
    rendered = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert backend.identity()["chat_format"] == "chat_template.default"
    # the template already holds BOS: one BOS, the same tokens as transformers renders
    assert g.meta["prompt_tokens"] == len(tok(rendered, add_special_tokens=False)["input_ids"])


def test_schema_constrained_chat_output_is_json_of_the_schema(backend) -> None:
    # room for the longest document the grammar allows (40 chars of byte tokens, numbers of up to ~50 digits)
    opts = GenOptions(max_new_tokens=400, temperature=0.0, json_schema=Reply.model_json_schema())
    for title in TITLES:
        chat = [{"role": "system", "content": "Reply with JSON."}, {"role": "user", "content": title}]
        (g,) = backend.generate([chat], opts)
        obj = json.loads(g.text)  # one JSON object, nothing around it
        assert set(obj) == {"reasoning", "sentiment", "confidence"}
        ReplyShape.model_validate(obj)
        errors = _range_errors(obj)  # whatever pydantic rejects is the numbers' range, never the shape
        assert all(e["type"] in ("less_than_equal", "greater_than_equal") for e in errors)


def test_schema_constrained_text_prompt_too(backend) -> None:
    opts = GenOptions(max_new_tokens=400, json_schema=Reply.model_json_schema())
    (g,) = backend.generate([PREFIX], opts)
    ReplyShape.model_validate_json(g.text)


def _range_errors(obj: dict) -> list[dict]:
    from pydantic import ValidationError

    try:
        Reply.model_validate(obj)
    except ValidationError as e:
        return e.errors()
    return []


def test_identity_names_the_file_and_its_metadata(backend, tiny_gguf_f32: Path) -> None:
    ident = backend.identity()
    assert ident["sha256"] == hashlib.sha256(tiny_gguf_f32.read_bytes()).hexdigest()
    assert ident["size"] == tiny_gguf_f32.stat().st_size
    assert ident["model"] == str(tiny_gguf_f32.resolve())
    assert (ident["architecture"], ident["file_type"]) == ("llama", 0)
    assert ident["name"] and ident["llama_cpp_python"]
    assert backend.supports_chat and backend.supports_loglikelihood


def test_unknown_generation_option_is_a_backend_error(backend) -> None:
    with pytest.raises(BackendError, match="generation failed"):
        backend.generate(["x"], GenOptions(extra={"no_such_option": 1}))


def test_missing_gguf_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(BackendError, match="nope.gguf"):
        get_backend("llamacpp", model=str(missing))


def test_unloadable_file_is_a_backend_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf")
    with pytest.raises(BackendError, match="could not load"):
        get_backend("llamacpp", model=str(bad))


def test_missing_llama_cpp_names_the_extra(monkeypatch: pytest.MonkeyPatch, tiny_gguf_f32: Path) -> None:
    real_import = builtins.__import__

    def no_llama_cpp(name, *args, **kwargs):
        if name == "llama_cpp" or name.startswith("llama_cpp."):
            raise ImportError("No module named 'llama_cpp'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_llama_cpp)
    with pytest.raises(MissingExtraError, match=r"llama-cpp-python.*kofinsent\[gguf\]"):
        get_backend("llamacpp", model=str(tiny_gguf_f32))


def test_generation_after_scoring_a_shorter_cached_prefix_equals_a_fresh_start(tiny_gguf_f32: Path) -> None:
    # Scoring a request whose tokens are a prefix of the previous one runs nothing; generating from exactly those
    # tokens next must not sample from the longer sequence's last logits. Special tokens as continuations keep the
    # token boundaries fixed: encode(P + "<|eot_id|>") == encode(P) + [eot].
    be = get_backend("llamacpp", model=str(tiny_gguf_f32), n_ctx=256)
    prompt = f"{PREFIX}[제목]: {TITLES[0]}"
    try:
        be.loglikelihood([(prompt, "<|eot_id|><|start_header_id|>")])
        be.loglikelihood([(prompt, "<|eot_id|>")])
        assert be.llm.input_ids[: be.llm.n_tokens].tolist() == be.encode(prompt)  # cached, nothing decoded
        (after,) = be.generate([prompt], GenOptions(max_new_tokens=6))
        be.llm.reset()
        (fresh,) = be.generate([prompt], GenOptions(max_new_tokens=6))
        assert after.text == fresh.text and after.meta == fresh.meta
    finally:
        be.close()

"""The hf backend on tiny real models: lm-eval's numbers, the prefix cache proven equal, adapters, 8-bit, generation."""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import torch

from kofinsent import tiny
from kofinsent.backends import Backend, BackendError, GenOptions, get_backend
from kofinsent.backends.hf import HFBackend, move_whitespace
from kofinsent.labels import LABELS
from kofinsent.prompts.direction import CONTINUATIONS, kshot, seed2shot

EXACT = 1e-5   # cached vs plain vs a hand-written forward pass, float32
LM_EVAL = 1e-4  # vs lm-evaluation-harness (clarifications, issue 4)


def seed_requests(n: int, seed: int = 7, prompt=None) -> list[tuple[str, str]]:
    prompt = prompt or seed2shot()
    return [(prompt.context(t), c) for t in tiny.forum_titles(n, seed) for c in CONTINUATIONS]


def reference_loglik(model: torch.nn.Module, tok, context: str, continuation: str) -> float:
    """lm-eval's recipe written out by hand: one forward pass over context + continuation tokens."""
    context, continuation = move_whitespace(context, continuation)
    ctx = tok.encode(context)
    cont = tok.encode(context + continuation)[len(ctx):]
    with torch.no_grad():
        logp = model(torch.tensor([ctx + cont])).logits[0].float().log_softmax(-1)
    return sum(logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))


def max_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b))


def argmax_pairs(ll: list[float]) -> list[int]:
    return [int(ll[i + 1] > ll[i]) for i in range(0, len(ll), 2)]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine OpenMP's barrier turns a 20 ms
    call into seconds; one thread keeps these tests fast and their timing steady."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module", params=["neox", "llama"])
def model_dir(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(f"tiny_{request.param}_dir")


@pytest.fixture(scope="module")
def backends(model_dir: Path) -> tuple[HFBackend, HFBackend]:
    """(cached, plain) on the same weights, small batches so that several batches and paddings are exercised."""
    return (HFBackend(str(model_dir), batch_size=6, verify_tokens=True),
            HFBackend(str(model_dir), batch_size=5, prefix_cache=False))


# -- log-likelihood: numbers ---------------------------------------------------------------------------------------
def test_loglikelihood_equals_hand_reference(backends: tuple[HFBackend, HFBackend]) -> None:
    cached, plain = backends
    reqs = seed_requests(3) + [("삼성전자 주가가 오늘", " 폭등"), ("[제목]: 카카오 가즈아\n[정답]:", " [하락]")]
    ref = [reference_loglik(plain.model, plain.tokenizer, c, x) for c, x in reqs]
    assert max_diff(cached.loglikelihood(reqs), ref) <= EXACT
    assert max_diff(plain.loglikelihood(reqs), ref) <= EXACT
    assert all(s < 0 for s in ref)


def test_cached_equals_plain_on_seed2shot(backends: tuple[HFBackend, HFBackend]) -> None:
    cached, plain = backends
    reqs = seed_requests(40)
    before = cached.cached_requests
    a, b = cached.loglikelihood(reqs), plain.loglikelihood(reqs)
    assert max_diff(a, b) <= EXACT
    assert argmax_pairs(a) == argmax_pairs(b)
    assert cached.cached_requests - before == len(reqs)  # all on the fast path ...
    assert cached.token_fallbacks == 0                       # ... with lm-eval's tokens, checked one by one
    # the shared prefix really is reused: all of the instruction and examples, minus at most a few tokens
    assert cached.last_prefix_tokens >= len(cached.encode(seed2shot().prefix)) - 3


def test_cached_equals_plain_on_kshot(backends: tuple[HFBackend, HFBackend]) -> None:
    cached, plain = backends
    rng = random.Random(0)
    train = [(t, rng.choice(LABELS)) for t in tiny.forum_titles(30, 99)]
    reqs = seed_requests(12, seed=5, prompt=kshot(train, 5, seed=1))
    assert max_diff(cached.loglikelihood(reqs), plain.loglikelihood(reqs)) <= EXACT


def test_odd_requests_in_one_call(backends: tuple[HFBackend, HFBackend]) -> None:
    """Unrelated contexts, an empty context, an empty continuation, three answers, repeats: same as plain."""
    cached, plain = backends
    ctx = seed2shot().context("현대차 목표가 상향")
    reqs = [(ctx, " [상승]"), ("안녕하세요", " 반갑습니다"), ("", " [하락]"), (ctx, ""), (ctx, " [보합]"),
            (ctx, " [상승]"), (ctx + "  ", "[하락]")]
    a, b = cached.loglikelihood(reqs), plain.loglikelihood(reqs)
    assert max_diff(a, b) <= EXACT
    assert a[3] == 0.0 and a[0] == a[5]


def test_trailing_whitespace_moves_to_the_continuation(backends: tuple[HFBackend, HFBackend]) -> None:
    cached, plain = backends
    ctx = seed2shot().context("LG화학 배당 존버합니다")
    assert move_whitespace(ctx + " ", "[상승]") == (ctx, " [상승]")
    assert plain.lm_eval_tokens(ctx + " ", "[상승]") == plain.lm_eval_tokens(ctx, " [상승]")
    for b in (cached, plain):
        moved, normal = b.loglikelihood([(ctx + " ", "[상승]"), (ctx, " [상승]")])
        assert moved == pytest.approx(normal, abs=EXACT)


def test_context_over_max_length_is_left_truncated_and_counted(model_dir: Path) -> None:
    b = HFBackend(str(model_dir), max_length=40)
    reqs = seed_requests(2)
    scores = b.loglikelihood(reqs)
    assert b.context_exceeded == len(reqs) and b.truncated == len(reqs)
    # lm-eval's rule: the last max_length + 1 tokens of ctx + cont, the last one dropped
    ctx, cont = b.lm_eval_tokens(*reqs[0])
    inp = (ctx + cont)[-41:][:-1]
    with torch.no_grad():
        logp = b.model(torch.tensor([inp])).logits[0].log_softmax(-1)
    ref = sum(logp[len(inp) - len(cont) + j, t].item() for j, t in enumerate(cont))
    assert scores[0] == pytest.approx(ref, abs=EXACT)
    with pytest.raises(BackendError, match="continuation"):
        b.loglikelihood([("가", " 나" * 60)])


def test_equals_lm_eval_harness(backends: tuple[HFBackend, HFBackend]) -> None:
    lm_eval = pytest.importorskip("lm_eval.models.huggingface", reason="lm-eval is not installed")
    from lm_eval.api.instance import Instance

    cached, plain = backends
    hflm = lm_eval.HFLM(pretrained=plain.model, tokenizer=plain.tokenizer, batch_size=16, device="cpu")
    ctx = seed2shot().context("셀트리온 반등")
    reqs = seed_requests(20, seed=3) + [(ctx + " ", "[상승]"), ("안녕", "하세요")]
    insts = [Instance(request_type="loglikelihood", doc={}, arguments=r, idx=i) for i, r in enumerate(reqs)]
    ref = [ll for ll, _ in hflm.loglikelihood(insts, disable_tqdm=True)]
    for b in (cached, plain):
        got = b.loglikelihood(reqs)
        assert max_diff(got, ref) <= LM_EVAL
        assert argmax_pairs(got[:40]) == argmax_pairs(ref[:40])
    # and the tokens themselves, pair by pair
    assert all(plain.lm_eval_tokens(*r) == hflm._encode_pair(*r) for r in reqs)


def _sentencepiece_like(out: Path, legacy: bool) -> Path:
    """A Llama-2-style tokenizer (Metaspace "▁", BOS added; ``legacy``: the old normalizer that prepends "▁" and no
    pre-tokenizer) and a tiny Llama on it: encode(suffix) alone gets a "▁" the in-context suffix does not have."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tok.train_from_iterator(tiny.korean_corpus(600, 0), trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    if legacy:
        tok.pre_tokenizer = None
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, initializer_range=0.2, bos_token_id=1,
                         eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    fast.save_pretrained(out)
    return out


@pytest.mark.parametrize("legacy", [False, True], ids=["metaspace", "legacy-prepend"])
def test_sentencepiece_style_tokenizer_still_reuses_the_prefix(tmp_path: Path, legacy: bool) -> None:
    d = _sentencepiece_like(tmp_path / "sp", legacy)
    reqs = seed_requests(10)
    cached = HFBackend(str(d), verify_tokens=True)
    a = cached.loglikelihood(reqs)
    assert max_diff(a, HFBackend(str(d), prefix_cache=False).loglikelihood(reqs)) <= EXACT
    assert cached.cached_requests == len(reqs) and cached.token_fallbacks == 0
    assert cached.last_prefix_tokens > len(cached.encode(seed2shot().prefix)) // 2


# -- adapters and quantization ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lora_dir(tiny_neox_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_neox_dir)
    # init_lora_weights=False: random A and B, so the adapter changes the scores (the default B = 0 would not)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["query_key_value", "dense_4h_to_h"],
                                           init_lora_weights=False))
    out = tmp_path_factory.mktemp("lora")
    peft.save_pretrained(out)
    return out


def test_peft_adapter_loads_and_changes_scores(tiny_neox_dir: Path, lora_dir: Path) -> None:
    reqs = seed_requests(8)
    base = HFBackend(str(tiny_neox_dir)).loglikelihood(reqs)
    cached = HFBackend(str(tiny_neox_dir), adapter=str(lora_dir))
    adapted = cached.loglikelihood(reqs)
    assert max_diff(base, adapted) > 1e-2
    assert max_diff(adapted, HFBackend(str(tiny_neox_dir), adapter=str(lora_dir),
                                       prefix_cache=False).loglikelihood(reqs)) <= EXACT
    ident = cached.identity()
    assert ident["adapter"] == str(lora_dir) and len(ident["adapter_sha256"]) == 64
    with pytest.raises(BackendError, match="nowhere"):
        HFBackend(str(tiny_neox_dir), adapter=str(lora_dir / "nowhere"))


def test_8bit_loads_on_cpu_and_scores_close_to_float32(tiny_neox_dir: Path) -> None:
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    reqs = seed_requests(10)
    full = HFBackend(str(tiny_neox_dir)).loglikelihood(reqs)
    q = HFBackend(str(tiny_neox_dir), load_in_8bit=True)
    assert q.identity()["quantization"] == "8bit"
    assert "Linear8bitLt" in type(q.model.gpt_neox.layers[0].attention.query_key_value).__name__
    # int8 weights and activations: close, not equal (the seed's 8-bit runs differ from float32 the same way)
    assert max_diff(q.loglikelihood(reqs), full) < 0.5


def test_4bit_loads_on_cpu(tiny_neox_dir: Path) -> None:
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    q = HFBackend(str(tiny_neox_dir), load_in_4bit=True)
    scores = q.loglikelihood(seed_requests(3))
    assert q.identity()["quantization"] == "4bit" and all(-1e4 < s < 0 for s in scores)


def test_without_logits_to_keep_the_full_logits_give_the_same_scores(tiny_neox_dir: Path) -> None:
    """Older transformers have no boolean ``logits_to_keep``: the cached path slices full logits instead."""
    reqs = seed_requests(5)
    b = HFBackend(str(tiny_neox_dir))
    b._keep_masks = b._keep_last = False
    assert max_diff(b.loglikelihood(reqs), HFBackend(str(tiny_neox_dir)).loglikelihood(reqs)) <= EXACT


# -- generation ------------------------------------------------------------------------------------------------------
def test_greedy_generation_is_deterministic_and_matches_model_generate(tiny_neox_dir: Path) -> None:
    b = HFBackend(str(tiny_neox_dir), batch_size=3)
    prompts = [seed2shot().context(t) for t in ("기아 신고가", "삼성전자 외국인이 매도 폭탄 진짜 답답하네", "카카오")]
    opts = GenOptions(max_new_tokens=6)
    first, again = b.generate(prompts, opts), b.generate(prompts, opts)
    assert [g.text for g in first] == [g.text for g in again]
    for p, g in zip(prompts, first):  # batched with left padding == one at a time through model.generate
        ids = torch.tensor([b.tokenizer.encode(p)])
        out = b.model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=b.pad_id)
        assert g.text == b.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        assert g.meta["new_tokens"] == 6 and g.seconds > 0


def test_sampling_is_seeded_and_stop_strings_cut(tiny_neox_dir: Path) -> None:
    b = HFBackend(str(tiny_neox_dir))
    prompt = [seed2shot().context("POSCO 블록딜")]
    runs = [b.generate(prompt * 3, GenOptions(max_new_tokens=8, temperature=1.0, seed=s))[0].text for s in (3, 3, 4)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    long = b.generate(prompt, GenOptions(max_new_tokens=16))[0]
    stop = long.text[len(long.text) // 2:][:2]
    cut = b.generate(prompt, GenOptions(max_new_tokens=16, stop=(stop,)))[0]
    assert cut.text == long.text[:long.text.find(stop)] and cut.meta["new_tokens"] < 16


def test_chat_generation_uses_the_chat_template(tiny_llama_dir: Path, tiny_neox_dir: Path) -> None:
    b = HFBackend(str(tiny_llama_dir))
    chat = [{"role": "system", "content": "Return JSON."}, {"role": "user", "content": "삼성전자 가즈아"}]
    text, special = b.render(chat)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system") and not special
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    (g,) = b.generate([chat], GenOptions(max_new_tokens=5))
    assert isinstance(g.text, str) and 1 <= g.meta["new_tokens"] <= 5
    neox = HFBackend(str(tiny_neox_dir))
    assert not neox.supports_chat
    with pytest.raises(BackendError, match="chat template"):
        neox.generate([chat], GenOptions())
    with pytest.raises(BackendError, match="llamacpp"):
        b.generate(["x"], GenOptions(json_schema={"type": "object"}))


# -- identity, errors, registry --------------------------------------------------------------------------------------
def test_identity_hashes_the_weights(tiny_neox_dir: Path, tiny_tokenizer_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    copy = Path(shutil.copytree(tiny_neox_dir, tmp_path / "copy"))
    other = tiny.make_gpt_neox(tmp_path / "other", AutoTokenizer.from_pretrained(tiny_tokenizer_dir), seed=1)
    a, b, c = (HFBackend(str(d)).identity() for d in (tiny_neox_dir, copy, other))
    assert a["weights_sha256"] == b["weights_sha256"] != c["weights_sha256"]
    assert a["weight_files"] == ["model.safetensors"] and a["dtype"] == "float32" and a["device"] == "cpu"
    assert a["quantization"] is None and a["adapter"] is None and a["versions"]["transformers"]


def test_missing_model_path_is_a_backend_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(BackendError, match=str(missing)):
        HFBackend(str(missing))
    with pytest.raises(BackendError, match="no-such-model"):
        get_backend("hf", model="./no-such-model")


def test_registry_builds_the_hf_backend(tiny_neox_dir: Path) -> None:
    b = get_backend("hf", model=str(tiny_neox_dir), batch_size=4)
    assert isinstance(b, Backend) and isinstance(b, HFBackend)
    assert b.name == "hf" and b.supports_loglikelihood and b.max_length == 2048


def test_eager_attention_takes_the_same_cached_path(tiny_neox_dir: Path) -> None:
    reqs = seed_requests(6)
    eager = HFBackend(str(tiny_neox_dir), attn_implementation="eager")
    assert eager.cache_blocker is None
    a = eager.loglikelihood(reqs)
    assert eager.cached_requests == len(reqs)
    assert max_diff(a, HFBackend(str(tiny_neox_dir), prefix_cache=False).loglikelihood(reqs)) <= EXACT


def test_a_model_the_cached_layout_does_not_fit_falls_back_to_plain(tiny_neox_dir: Path) -> None:
    """The self-check catches a model that ignores position ids (simulated: rotary always sees 0, 1, 2, ... as the
    plain path gives it): plain scores, a warning, no cache."""
    b = HFBackend(str(tiny_neox_dir))
    rotary = b.model.gpt_neox.rotary_emb
    real = rotary.forward
    rotary.forward = lambda x, position_ids: real(x, torch.arange(position_ids.shape[-1])[None].expand_as(position_ids))
    reqs = seed_requests(4)
    with pytest.warns(UserWarning, match="prefix cache disabled"):
        scores = b.loglikelihood(reqs)
    assert b.cache_blocker and b.cached_requests == 0 and not b.prefix_cache
    rotary.forward = real
    assert max_diff(scores, HFBackend(str(tiny_neox_dir), prefix_cache=False).loglikelihood(reqs)) <= EXACT

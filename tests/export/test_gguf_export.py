"""kofinsent.export.gguf_writer: a tiny random Llama written as GGUF loads in llama.cpp and computes what transformers does."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kofinsent.export.gguf_writer import _permute, write_llama_gguf

from .gguf_helpers import tiny_gguf_path

llama_cpp = pytest.importorskip("llama_cpp")
torch = pytest.importorskip("torch")

TEXTS = (
    "[제목]: 삼성전자 외국인이 실적 발표 가즈아!!\n[정답]: [상승]",
    "Shares climb after the company beats earnings expectations.  12,345원 ㅋㅋㅋ",
    "<|start_header_id|>user<|end_header_id|>\n\n카카오 언제 오르나요?<|eot_id|>",
)


@pytest.fixture(scope="session")
def hf(tiny_llama_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_llama_dir)


def _load(path: Path, **kw):
    # f32 KV cache: llama.cpp's default f16 cache alone moves logits by ~1e-2 on this model. One thread: a tiny
    # model gains nothing from more, and a thread barrier on busy cores stalls.
    return llama_cpp.Llama(str(path), n_ctx=256, logits_all=True, verbose=False, seed=0, n_threads=1,
                           n_threads_batch=1, type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, **kw)


def _hf_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def test_permute_turns_half_split_rotary_rows_into_interleaved_pairs() -> None:
    # One head of dim 4 in HF's layout: rows (x0, x1 | y0, y1) rotate as pairs (x0, y0), (x1, y1).
    w = np.array([[10.0], [11.0], [20.0], [21.0]])
    assert _permute(w, n_head=1).ravel().tolist() == [10.0, 20.0, 11.0, 21.0]
    # Heads are permuted independently: two heads of dim 2 are already pairs.
    assert _permute(np.arange(4.0)[:, None], n_head=2).ravel().tolist() == [0.0, 1.0, 2.0, 3.0]


def test_metadata_tokenizer_and_tensor_names(hf, tiny_llama_dir: Path, tiny_gguf_f32: Path) -> None:
    from gguf import GGMLQuantizationType, GGUFReader

    cfg = json.loads((tiny_llama_dir / "config.json").read_text())
    r = GGUFReader(tiny_gguf_f32)

    def val(key: str):
        return r.fields[key].contents()

    assert val("general.architecture") == "llama"
    assert val("general.file_type") == 0
    assert val("llama.context_length") == cfg["max_position_embeddings"]
    assert val("llama.embedding_length") == cfg["hidden_size"]
    assert val("llama.block_count") == cfg["num_hidden_layers"]
    assert val("llama.feed_forward_length") == cfg["intermediate_size"]
    assert val("llama.attention.head_count") == cfg["num_attention_heads"]
    assert val("llama.attention.head_count_kv") == cfg["num_key_value_heads"]
    assert val("llama.rope.dimension_count") == cfg["hidden_size"] // cfg["num_attention_heads"]
    assert val("llama.rope.freq_base") == pytest.approx(cfg["rope_parameters"]["rope_theta"])
    assert val("llama.attention.layer_norm_rms_epsilon") == pytest.approx(cfg["rms_norm_eps"])
    assert val("llama.vocab_size") == cfg["vocab_size"]

    tok = json.loads((tiny_llama_dir / "tokenizer.json").read_text())
    assert val("tokenizer.ggml.model") == "gpt2"
    assert val("tokenizer.ggml.pre") == "gpt-2"
    tokens = val("tokenizer.ggml.tokens")
    assert len(tokens) == cfg["vocab_size"]
    assert all(tokens[i] == t for t, i in tok["model"]["vocab"].items())
    assert len(val("tokenizer.ggml.merges")) == len(tok["model"]["merges"])
    assert val("tokenizer.ggml.bos_token_id") == cfg["bos_token_id"]
    assert val("tokenizer.ggml.eos_token_id") == cfg["eos_token_id"]
    assert val("tokenizer.ggml.padding_token_id") == cfg["pad_token_id"]
    assert val("tokenizer.ggml.add_bos_token") is True
    special = {t["id"] for t in tok["added_tokens"]}
    assert {i for i, t in enumerate(val("tokenizer.ggml.token_type")) if t == 3} == special  # 3 = CONTROL
    assert val("tokenizer.chat_template") == hf[1].chat_template

    names = {t.name: t for t in r.tensors}
    expected = {"token_embd.weight", "output_norm.weight", "output.weight"}
    for b in range(cfg["num_hidden_layers"]):
        expected |= {f"blk.{b}.{n}.weight" for n in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                                     "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}
    assert set(names) == expected
    assert all(t.tensor_type == GGMLQuantizationType.F32 for t in r.tensors)


def test_tokenization_matches_the_hf_tokenizer(hf, tiny_gguf_f32: Path) -> None:
    _, tok = hf
    llm = _load(tiny_gguf_f32, vocab_only=True)
    try:
        for text in (*TEXTS, "  leading and   inner spaces\n\n", "1234567 NAVER POSCO", "ㅋㅋㅋ 😀 é"):
            assert llm.tokenize(text.encode(), add_bos=True, special=True) == tok(text)["input_ids"], text
    finally:
        llm.close()


def test_logits_match_transformers(hf, tiny_gguf_f32: Path) -> None:
    model, tok = hf
    llm = _load(tiny_gguf_f32)
    try:
        worst = 0.0
        for text in TEXTS:
            ids = tok(text)["input_ids"]
            llm.reset()
            llm.eval(ids)
            got = np.asarray(llm.scores[: len(ids)])
            worst = max(worst, float(np.abs(got - _hf_logits(model, ids)).max()))
        assert worst < 1e-3, worst
    finally:
        llm.close()


def test_greedy_tokens_match_transformers(hf, tiny_gguf_f32: Path) -> None:
    model, tok = hf
    llm = _load(tiny_gguf_f32)
    try:
        for text in TEXTS:
            ids = tok(text)["input_ids"]
            with torch.no_grad():
                ref = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                                     eos_token_id=None)[0, len(ids):].tolist()
            got = []
            for t in llm.generate(ids, temp=0.0, reset=True):
                got.append(t)
                if len(got) == len(ref):
                    break
            assert got == ref, text
    finally:
        llm.close()


def test_f16_export_keeps_norms_f32_and_stays_close(hf, tiny_llama_dir: Path, tmp_path_factory) -> None:
    from gguf import GGMLQuantizationType, GGUFReader

    path = tiny_gguf_path(tiny_llama_dir, tmp_path_factory, "f16")
    r = GGUFReader(path)
    assert r.fields["general.file_type"].contents() == 1
    for t in r.tensors:
        assert t.tensor_type == (GGMLQuantizationType.F32 if len(t.shape) == 1 else GGMLQuantizationType.F16)
    model, tok = hf
    ids = tok(TEXTS[0])["input_ids"]
    llm = _load(path)
    try:
        llm.eval(ids)
        diff = np.abs(np.asarray(llm.scores[: len(ids)]) - _hf_logits(model, ids))
    finally:
        llm.close()
    assert float(diff.max()) < 0.1  # f16 weights and activations: the argmax rarely moves, the digits do
    assert (np.asarray(diff).mean()) < 0.02


def test_refuses_what_it_cannot_write(tiny_llama_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="quantized"):
        write_llama_gguf(tiny_llama_dir, tmp_path / "x.gguf", dtype="q4_k_m")
    other = tmp_path / "neox"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"]}))
    with pytest.raises(ValueError, match="LlamaForCausalLM"):
        write_llama_gguf(other, tmp_path / "y.gguf")
    scaled = tmp_path / "scaled"
    scaled.mkdir()
    cfg = json.loads((tiny_llama_dir / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}
    (scaled / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="rope"):
        write_llama_gguf(scaled, tmp_path / "z.gguf")
    with pytest.raises(FileNotFoundError, match="config.json"):
        write_llama_gguf(tmp_path / "nowhere", tmp_path / "w.gguf")


@pytest.mark.parametrize("shape, dtype", [
    ({"tie_word_embeddings": True, "num_key_value_heads": 4}, "float32"),  # tied output, no GQA
    ({"head_dim": 24, "num_key_value_heads": 1}, "float32"),                # head_dim != hidden / heads, MQA
    ({"num_key_value_heads": 2}, "bfloat16"),                               # a bf16 checkpoint
])
def test_other_llama_shapes_match_transformers(hf, tmp_path: Path, shape: dict, dtype: str) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tok = hf
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=96, max_position_embeddings=256, initializer_range=0.2,
                      rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **shape)
    torch.manual_seed(1)
    LlamaForCausalLM(cfg).to(getattr(torch, dtype)).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    # reload in float32: the reference then computes rotary frequencies exactly, as llama.cpp does
    model = LlamaForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32).eval()
    llm = _load(write_llama_gguf(tmp_path / "m", tmp_path / "m.gguf"))
    try:
        ids = tok(TEXTS[0])["input_ids"]
        llm.eval(ids)
        assert float(np.abs(np.asarray(llm.scores[: len(ids)]) - _hf_logits(model, ids)).max()) < 1e-3
    finally:
        llm.close()


def test_llama3_style_pre_tokenizer_is_llama_bpe_and_tokenizes_the_same(hf, tmp_path: Path) -> None:
    from gguf import GGUFReader
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from kofinsent import tiny
    from kofinsent.export.gguf_writer import _LLAMA3_REGEX

    # llama-3's tokenizer.json shape: a Split on its regex, then ByteLevel without GPT-2's regex
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_LLAMA3_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(tiny.korean_corpus(200, seed=1), trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<|begin_of_text|>", "<|eot_id|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=128, bos_token_id=0, eos_token_id=1)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    path = write_llama_gguf(tmp_path / "m", tmp_path / "m.gguf")
    assert GGUFReader(path).fields["tokenizer.ggml.pre"].contents() == "llama-bpe"
    llm = _load(path, vocab_only=True)
    try:
        for text in (*TEXTS, "12345678 won't 3.14159\r\n\n  x"):
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == \
                tok(text, add_special_tokens=False)["input_ids"], text
    finally:
        llm.close()

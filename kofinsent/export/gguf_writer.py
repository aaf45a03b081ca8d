"""Write a Llama-architecture Hugging Face model directory as an f32 / f16 GGUF that llama.cpp and Ollama load.

Pure CPU, no Unsloth, no llama.cpp checkout: the ``gguf`` package's :class:`gguf.GGUFWriter` does the file format and
this module does what llama.cpp's ``convert_hf_to_gguf.py`` (``LlamaModel``) does for a plain Llama:

- architecture metadata (context / embedding / feed-forward length, block count, head counts, rope dims and freq base,
  RMS-norm eps, vocab size, file type);
- tensors under llama.cpp's names (``gguf.get_tensor_name_map``), with ``q_proj`` / ``k_proj`` rows permuted from
  Hugging Face's half-split rotary layout to the interleaved layout llama.cpp's rope expects (``_permute``);
- a byte-level BPE tokenizer (``tokenizer.ggml.model = "gpt2"``): tokens, token types, merges, bos/eos/pad ids,
  add-bos, a pre-tokenizer name llama.cpp accepts ("gpt-2" for a GPT-2-style ByteLevel pre-tokenizer, "llama-bpe"
  for llama-3's), and the chat template (``gguf.SpecialVocab``).

Supported: ``LlamaForCausalLM`` with plain rope (``rope_type`` "default"), GQA, tied or untied output embeddings,
safetensors weights (one file or an index of shards) in f32 / f16 / bf16, written as ``f32`` or ``f16`` (1-D norms
always f32, as llama.cpp's converter does). Not supported, and refused with a clear error: quantized GGUF types
(q4_K_M, q8_0, … — run llama.cpp's ``llama-quantize`` on the f16 file), rope scaling (llama-3.1 ``llama3``, yarn,
linear), SentencePiece tokenizers, other architectures.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# The pre-tokenizer regex of llama-3's tokenizer.json; llama.cpp calls that pre-tokenizer "llama-bpe".
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")
DTYPES = ("f32", "f16")


def write_llama_gguf(hf_dir: str | Path, out: str | Path, dtype: str = "f32", name: str | None = None) -> Path:
    """Convert the Llama model in ``hf_dir`` (config.json, safetensors, tokenizer.json) to the GGUF file ``out``.

    ``dtype`` is ``"f32"`` or ``"f16"``; quantized types are out of scope (quantize the f16 file with llama.cpp).
    ``name`` goes to ``general.name`` (default: the directory's name). Returns ``out``.
    """
    import gguf

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES} (quantized GGUF types are out of scope), got {dtype!r}")
    hf_dir, out = Path(hf_dir), Path(out)
    hp = read_hparams(hf_dir)

    # use_temp_file: tensors spill to a temporary file past 256 MiB instead of all staying in memory until written
    # (an 8B model is 16 GiB in f16, 32 GiB in f32).
    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA], use_temp_file=True)
    writer.add_name(name or hf_dir.resolve().name)
    writer.add_context_length(hp["n_ctx"])
    writer.add_embedding_length(hp["n_embd"])
    writer.add_block_count(hp["n_layer"])
    writer.add_feed_forward_length(hp["n_ff"])
    writer.add_head_count(hp["n_head"])
    writer.add_head_count_kv(hp["n_head_kv"])
    writer.add_rope_dimension_count(hp["head_dim"])
    writer.add_rope_freq_base(hp["rope_theta"])
    writer.add_layer_norm_rms_eps(hp["rms_eps"])
    writer.add_vocab_size(hp["n_vocab"])
    if hp["head_dim"] != hp["n_embd"] // hp["n_head"]:  # llama.cpp assumes n_embd / n_head unless told
        writer.add_key_length(hp["head_dim"])
        writer.add_value_length(hp["head_dim"])
    file_type = gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(file_type)

    _add_tokenizer(writer, hf_dir, hp["n_vocab"])
    _add_tensors(writer, hf_dir, hp, dtype)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def read_hparams(hf_dir: Path) -> dict[str, Any]:
    """The Llama hyperparameters the GGUF needs, from ``hf_dir/config.json``: :class:`FileNotFoundError` without
    one, :class:`ValueError` (or :class:`KeyError`) for a model this writer does not support. Run before a long
    merge or conversion, to refuse early."""
    return _hparams(_read_json(hf_dir / "config.json"))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {path.parent} a Hugging Face model directory?")
    return json.loads(path.read_text(encoding="utf-8"))


def _hparams(config: dict[str, Any]) -> dict[str, Any]:
    archs = config.get("architectures") or []
    if config.get("model_type") != "llama" or (archs and archs != ["LlamaForCausalLM"]):
        raise ValueError(f"only LlamaForCausalLM is supported, got model_type={config.get('model_type')!r} "
                         f"architectures={archs}")
    # transformers 5 writes rope_parameters; 4.x wrote rope_theta and rope_scaling at the top level.
    rope = dict(config.get("rope_parameters") or {})
    rope_type = rope.get("rope_type") or (config.get("rope_scaling") or {}).get("rope_type") or "default"
    if rope_type != "default":
        raise ValueError(f"rope_type {rope_type!r} (rope scaling) is not supported by this exporter")
    n_head = config["num_attention_heads"]
    return {
        "n_ctx": config.get("max_position_embeddings", 2048),
        "n_embd": config["hidden_size"],
        "n_layer": config["num_hidden_layers"],
        "n_ff": config["intermediate_size"],
        "n_head": n_head,
        "n_head_kv": config.get("num_key_value_heads") or n_head,
        "head_dim": config.get("head_dim") or config["hidden_size"] // n_head,
        "rope_theta": float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
        "rms_eps": float(config.get("rms_norm_eps", 1e-6)),
        "n_vocab": config["vocab_size"],
    }


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face stores each head's rotary pairs as (first half, second half); llama.cpp's rope (like Meta's
    original checkpoints) pairs adjacent rows. Same as ``LlamaModel.permute`` in llama.cpp's convert_hf_to_gguf.py,
    with ``n_head`` the KV head count for k_proj."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_tensors(hf_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    from safetensors import safe_open

    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(_read_json(index)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    if not (hf_dir / files[0]).is_file():
        raise FileNotFoundError(f"no safetensors weights in {hf_dir} (pytorch_model.bin is not supported)")
    for fname in files:
        # torch, not numpy: numpy has no bfloat16, and bf16 checkpoints are the common case.
        with safe_open(str(hf_dir / fname), framework="pt") as f:
            for key in f.keys():
                yield key, f.get_tensor(key).float().numpy()


def _add_tensors(writer: Any, hf_dir: Path, hp: dict[str, Any], dtype: str) -> None:
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, hp["n_layer"])
    for key, data in _hf_tensors(hf_dir):
        if key.endswith("rotary_emb.inv_freq"):  # recomputed by llama.cpp from rope_freq_base
            continue
        if key.endswith(("q_proj.weight", "q_proj.bias")):
            data = _permute(data, hp["n_head"])
        elif key.endswith(("k_proj.weight", "k_proj.bias")):
            data = _permute(data, hp["n_head_kv"])
        gguf_name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"tensor {key!r} has no llama.cpp name: not a plain Llama checkpoint?")
        # llama.cpp's converter keeps 1-D tensors (norms) in f32 whatever the output type.
        data = data.astype(np.float16 if dtype == "f16" and data.ndim > 1 else np.float32)
        writer.add_tensor(gguf_name, np.ascontiguousarray(data))


def _pre_tokenizer_name(tok_json: dict[str, Any]) -> str:
    """The llama.cpp pre-tokenizer whose split rules equal the tokenizer.json's (tokenization must match exactly)."""
    pre = tok_json.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel":
        if pre.get("add_prefix_space"):
            raise ValueError("ByteLevel pre-tokenizer with add_prefix_space=True is not supported")
        if pre.get("use_regex", True):
            return "gpt-2"  # GPT-2's split regex, which ByteLevel applies when use_regex is on
    if pre.get("type") == "Sequence":
        steps = pre.get("pretokenizers", [])
        if (len(steps) == 2 and steps[0].get("type") == "Split"
                and steps[0].get("pattern", {}).get("Regex") == _LLAMA3_REGEX
                and steps[1].get("type") == "ByteLevel" and not steps[1].get("use_regex", True)):
            return "llama-bpe"
    raise ValueError(f"unsupported pre-tokenizer {json.dumps(pre)[:200]}: only GPT-2 ByteLevel and llama-3's")


def _add_tokenizer(writer: Any, hf_dir: Path, n_vocab: int) -> None:
    import gguf

    tok_json = _read_json(hf_dir / "tokenizer.json")
    model = tok_json.get("model", {})
    if model.get("type") != "BPE" or (tok_json.get("decoder") or {}).get("type") != "ByteLevel":
        raise ValueError("only byte-level BPE tokenizers (tokenizer.json with a BPE model and ByteLevel decoder) "
                         "are supported")
    added = {t["id"]: t for t in tok_json.get("added_tokens", [])}
    by_id = {i: t for t, i in model["vocab"].items()}
    by_id.update({i: t["content"] for i, t in added.items()})
    if max(by_id) >= n_vocab:
        raise ValueError(f"tokenizer has id {max(by_id)} but config vocab_size is {n_vocab}")

    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        if i not in by_id:  # embedding rows beyond the tokenizer (padded vocab), as convert_hf_to_gguf names them
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer_name(tok_json))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    # tokenizers >= 0.20 writes merges as pairs; byte-level parts never hold a literal space (it is "Ġ"), so joining
    # with one gives the "a b" strings llama.cpp reads, whatever the gguf package version.
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])])
    # bos/eos/pad ids, add_bos (from the post-processor) and the chat template (tokenizer_config.json or
    # chat_template.jinja), read the way llama.cpp's own converter reads them.
    gguf.SpecialVocab(hf_dir, load_merges=False, n_vocab=n_vocab).add_to_gguf(writer, quiet=True)


__all__ = ["DTYPES", "read_hparams", "write_llama_gguf"]

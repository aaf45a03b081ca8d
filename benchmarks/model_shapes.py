"""Random models of the real shapes for the benchmarks (no hub): polyglot-ko-1.3b's config and parameter count, the
tiny benchmark tokenizer, and the small shape every ``--dry-run`` uses instead."""
from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

POLYGLOT_1_3B = dict(hidden=2048, layers=24, heads=16, intermediate=8192, vocab=30080, max_positions=2048)
POLYGLOT_1_3B_PARAMS = 1_331_810_304
DRY_SHAPE = dict(hidden=64, layers=2, heads=4, intermediate=256, max_positions=2048)  # vocab: the tokenizer's


def bench_tokenizer() -> Any:
    """The tiny benchmark tokenizer (vocabulary 1000; ~17 tokens of a title + answer, as polyglot-ko's own)."""
    from kofinsent import tiny

    return tiny.train_tokenizer(tiny.korean_corpus(4000, 0), vocab_size=1000)


def bench_shape(dry: bool, tokenizer: Any) -> dict[str, int]:
    """:func:`neox_config`'s arguments: polyglot-ko-1.3b's shape, or with ``dry`` the small one on the tokenizer."""
    return {**DRY_SHAPE, "vocab": len(tokenizer)} if dry else dict(POLYGLOT_1_3B)


def neox_config(hidden: int, layers: int, heads: int, vocab: int, intermediate: int | None = None,
                max_positions: int = 2048, pad_id: int = 0) -> Any:
    """polyglot-ko's layout (as ``kofinsent.tiny.make_gpt_neox``): RoPE on half of each head, parallel residual,
    untied output embeddings."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate or 4 * hidden, max_position_embeddings=max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        use_parallel_residual=True, tie_word_embeddings=False, initializer_range=0.02,
        bos_token_id=pad_id, eos_token_id=pad_id, pad_token_id=pad_id,
    )


def save_random_neox(out: Path, config: Any, tokenizer: Any = None, seed: int = 0, save_dtype: Any = None) -> Path:
    import torch
    from transformers import GPTNeoXForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPTNeoXForCausalLM(config).eval()
    if save_dtype is not None:
        model = model.to(save_dtype)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    del model
    gc.collect()
    return out


def projected_weight_bytes(config: Any, rest_bytes: int) -> dict[str, int]:
    """Bytes of the weights of ``config``'s model without allocating it (meta device): all in float32, all in 16-bit,
    and bitsandbytes 8-bit (every nn.Linear but the output embedding as int8 weights + one float32 scale per output
    row, everything else at ``rest_bytes`` per element)."""
    import torch
    from transformers import GPTNeoXForCausalLM

    with torch.device("meta"):
        model = GPTNeoXForCausalLM(config)
    n = sum(p.numel() for p in model.parameters())
    int8 = 0
    rest = 0
    quantized = set()
    head = model.get_output_embeddings()  # bitsandbytes leaves the output head unquantized
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear) and mod is not head:
            int8 += mod.weight.numel() + 4 * mod.out_features
            quantized.add(id(mod.weight))
    for p in model.parameters():
        if id(p) not in quantized:
            rest += p.numel() * rest_bytes
    return {"params": n, "fp32": 4 * n, "16bit": 2 * n, "int8": int8 + rest}

"""lm-evaluation-harness 0.4.x ``HFLM`` tokenization for causal models, independent of the tokenizer library.

A backend supplies its own encoders and this module applies lm-eval's rules on top, so that every backend scores
the same tokens lm-eval would (the hf backend today; llamacpp.py carries a copy of :func:`lm_eval_pair` and
:func:`move_whitespace` that can be replaced by these):

- ``_encode_pair``: the context's trailing whitespace moves to the front of the continuation; ``whole =
  encode(context + continuation)``, ``ctx = encode(context)``, ``cont = whole[len(ctx):]``.
- ``tok_encode``: the tokenizer's default special tokens (a tokenizer that adds BOS adds it), except for a string
  that already starts with the BOS text.
- an empty context is the prefix token (BOS, else EOS: ``HFLM.prefix_token_id``).
- ``HFLM.max_length``: the model config's context, else the tokenizer's, else 2048.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

Encoder = Callable[[str], list[int]]

DEFAULT_MAX_LENGTH = 2048
# transformers' model_max_length when the tokenizer does not know its model's context (int(1e30)).
TOKENIZER_INFINITY = 1000000000000000019884624838656


def move_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """lm-eval's ``_encode_pair`` first step: trailing whitespace of the context belongs to the continuation."""
    n = len(context) - len(context.rstrip())
    return (context[:-n], context[-n:] + continuation) if n else (context, continuation)


def adds_special_tokens(text: str, bos_text: str | None) -> bool:
    """lm-eval's ``tok_encode``: no special tokens for a string that already starts with the BOS text."""
    return not (bos_text and text.startswith(bos_text))


def lm_eval_pair(context: str, continuation: str, encode: Encoder, plain: Encoder,
                 prefix_token: int) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) exactly as lm-eval 0.4.x ``HFLM`` makes them for a causal model.

    ``encode``: lm-eval's ``tok_encode`` (special tokens by :func:`adds_special_tokens`); ``plain``: no special
    tokens; ``prefix_token``: BOS, else EOS."""
    if context == "":
        cont = plain(continuation)
        if cont and cont[0] == prefix_token:
            return cont[:1], cont[1:]
        return [prefix_token], cont
    context, continuation = move_whitespace(context, continuation)
    ctx = encode(context)
    if not ctx:  # an all-whitespace context: condition on the prefix token (lm-eval would assert here)
        return [prefix_token], plain(continuation)
    whole = encode(context + continuation)
    return ctx, whole[len(ctx):]


def prefix_token_id(tokenizer: Any) -> int | None:
    """A Hugging Face tokenizer's ``HFLM.prefix_token_id``: BOS, else EOS."""
    bos = tokenizer.bos_token_id
    return bos if bos is not None else tokenizer.eos_token_id


def lm_eval_max_length(config: Any, tokenizer: Any) -> int:
    """``HFLM.max_length`` of a Hugging Face model (a multimodal config's ``text_config`` first)."""
    cfg = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    n = getattr(tokenizer, "model_max_length", None)
    return int(n) if n is not None and n != TOKENIZER_INFINITY else DEFAULT_MAX_LENGTH

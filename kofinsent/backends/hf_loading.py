"""What loading a transformers model needs in both the evaluator's backend (:mod:`kofinsent.backends.hf`) and the
trainer (:mod:`kofinsent.training.loading`): telling a local path from a hub id, and the bitsandbytes setup of 8-bit /
4-bit base weights. One owner, so the two load a quantized model the same way and say the same when they cannot.

Nothing heavy is imported at module level: the trainer imports this before it knows whether it needs transformers.
"""
from __future__ import annotations

import logging
import os
from typing import Any

QUANTIZATIONS = ("8bit", "4bit")
# bitsandbytes logs its cast message here on every 8-bit matmul of a float32 input: once per layer per batch.
CAST_LOGGER = "bitsandbytes.autograd._functions"


def looks_local(name: str) -> bool:
    """A filesystem path rather than a hub id ("org/name"): never try the hub for it."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name


def drop_cast_warning(record: logging.LogRecord) -> bool:
    """A logging filter for bitsandbytes' 8-bit cast message (logged on every matmul of a float32 input)."""
    return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")


def quiet_cast_warning() -> None:
    """Install :func:`drop_cast_warning` on bitsandbytes' logger (once)."""
    log = logging.getLogger(CAST_LOGGER)
    if drop_cast_warning not in log.filters:
        log.addFilter(drop_cast_warning)


def require_bitsandbytes(kind: str, error: type[Exception] = RuntimeError, prefix: str = "") -> None:
    """Raise ``error(prefix + message)`` unless bitsandbytes imports; ``kind`` is ``8bit`` or ``4bit`` (the
    ``--load-in-KIND`` option the message names)."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # a broken CUDA setup raises more than ImportError
        raise error(f"{prefix}--load-in-{kind} needs a working bitsandbytes (pip install bitsandbytes): "
                    f"{type(e).__name__}: {e}") from e


def bnb_config(kind: str, compute_dtype: Any) -> Any:
    """transformers' ``BitsAndBytesConfig`` for ``kind``: int8 weights (the cast message silenced), or NF4 with
    ``compute_dtype`` for the 4-bit matmuls."""
    from transformers import BitsAndBytesConfig

    if kind not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {kind!r}")
    if kind == "8bit":
        quiet_cast_warning()
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_quant_type="nf4")


__all__ = ["CAST_LOGGER", "QUANTIZATIONS", "bnb_config", "drop_cast_warning", "looks_local", "quiet_cast_warning",
           "require_bitsandbytes"]

"""Which attention ``kofinsent train`` runs (``--attn-implementation``, ``train.NAME.attn_implementation``).

``auto`` (the default): FlashAttention 2 when ``flash_attn`` is importable, on CUDA, in bf16 / fp16 (its kernels take
nothing else); else PyTorch's SDPA where the model supports it; else transformers' default for the model (eager). An
explicit ``sdpa`` / ``eager`` / ``flash_attention_2`` is passed through and its failure is an error. The run's
config.json and metrics.json record what the model ended up with (``attn_implementation``).
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from kofinsent.training.errors import TrainError

ATTENTIONS = ("auto", "sdpa", "eager", "flash_attention_2")
FLASH = "flash_attention_2"


def check_attention(value: Any) -> None:
    if value not in ATTENTIONS:
        raise TrainError(f"--attn-implementation must be one of {', '.join(ATTENTIONS)}, got {value!r}")


def flash_attn_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def candidates(requested: str, cuda: bool, half: bool) -> list[str | None]:
    """The implementations to try in order (None: transformers' own choice)."""
    if requested != "auto":
        return [requested]
    first: list[str | None] = [FLASH] if cuda and half and flash_attn_installed() else []
    return [*first, "sdpa", None]


def load_with_attention(load: Callable[..., Any], requested: str, cuda: bool, half: bool, **kwargs: Any) -> Any:
    """``load(**kwargs, attn_implementation=...)`` with the first of :func:`candidates` the model accepts; with an
    explicit choice, or when the last candidate fails, the error propagates."""
    options = candidates(requested, cuda, half)
    for i, attn in enumerate(options):
        try:
            return load(**kwargs, **({"attn_implementation": attn} if attn else {}))
        except (ValueError, ImportError) as e:
            if i == len(options) - 1 or "attn" not in str(e).lower() and "attention" not in str(e).lower():
                raise
    raise AssertionError("unreachable")


def used_attention(model: Any) -> str | None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base.config, "_attn_implementation", None)


__all__ = ["ATTENTIONS", "FLASH", "candidates", "check_attention", "flash_attn_installed", "load_with_attention",
           "used_attention"]

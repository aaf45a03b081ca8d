"""The one protocol every model backend speaks: list in, list out, same order (as lm-evaluation-harness)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Chat = list[dict[str, str]]  # [{"role": "system"|"user"|"assistant", "content": ...}, ...]
Prompt = str | Chat


class BackendError(Exception):
    """A backend could not be loaded or used (missing extra, unreachable server, bad model path)."""


class MissingExtraError(BackendError):
    def __init__(self, backend: str, extra: str, module: str) -> None:
        super().__init__(f"backend {backend!r} needs {module}: pip install 'kofinsent[{extra}]'")


@dataclass(frozen=True)
class GenOptions:
    """Decoding options. ``temperature == 0`` means greedy. ``json_schema``: constrain output to this schema."""

    max_new_tokens: int = 16
    temperature: float = 0.0
    seed: int = 0
    json_schema: dict[str, Any] | None = None
    stop: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific (e.g. Ollama num_ctx)


@dataclass
class Generation:
    text: str
    seconds: float                      # wall clock for this item (a batch's time split evenly)
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. Ollama's eval_duration, prompt_eval_count


@runtime_checkable
class Backend(Protocol):
    name: str
    supports_loglikelihood: bool
    supports_chat: bool

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Sum of log-probs of each continuation's tokens given its context."""
        ...

    def generate(self, prompts: Sequence[Prompt], options: GenOptions) -> list[Generation]:
        ...

    def identity(self) -> dict[str, Any]:
        """What was run: model name/path, adapter, quantization, a hash of the weights or the server's digest."""
        ...

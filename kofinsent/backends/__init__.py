"""Backends, looked up lazily by name so optional dependencies load only when used."""
from __future__ import annotations

from importlib import import_module
from typing import Any

from kofinsent.backends.base import Backend, BackendError, Chat, Generation, GenOptions, MissingExtraError, Prompt

REGISTRY: dict[str, str] = {
    "hf": "kofinsent.backends.hf:HFBackend",
    "llamacpp": "kofinsent.backends.llamacpp:LlamaCppBackend",
    "ollama": "kofinsent.backends.ollama:OllamaBackend",
    "openai": "kofinsent.backends.openai:OpenAIBackend",  # any OpenAI-compatible server (vLLM, llama.cpp, ...)
}


def get_backend(name: str, **kwargs: Any) -> Backend:
    if name not in REGISTRY:
        raise BackendError(f"unknown backend {name!r}; use one of: {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name].split(":")
    return getattr(import_module(module), cls)(**kwargs)


__all__ = ["Backend", "BackendError", "Chat", "GenOptions", "Generation", "MissingExtraError", "Prompt",
           "REGISTRY", "get_backend"]

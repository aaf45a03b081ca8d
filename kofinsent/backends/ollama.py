"""Ollama backend: the official ``ollama`` client against a running server (seed 000's LLaMA-3 GGUF path).

A chat prompt is sent as seed 000 does, through the server's chat API so the model's own template applies:
``Client(host).chat(model, messages=[...], format=<JSON schema> | None, options={...}, stream=...)``. A text prompt
is continued with ``generate(..., raw=True)`` (no template: it is a completion, as for the other backends).

Options sent on every request, later entries winning:
1. seed 000's values: ``temperature 0.2, num_ctx 8192, num_predict 1024``;
2. the constructor's ``options`` (server settings the protocol does not carry: ``num_ctx``, ``top_k``, ``num_gpu``…);
3. the call's :class:`GenOptions`: ``temperature``, ``num_predict`` (= ``max_new_tokens``), ``seed`` (an integer,
   per iteration), ``stop``;
4. the call's ``options.extra``.
The evaluator's sentiment mode passes ``temperature 0.2, max_new_tokens 1024``, so its requests carry exactly seed
000's values plus the seed.

The server is checked at construction (reachable, model present), so an evaluation fails before its first item.
Ollama returns no log-probabilities for given continuations: ``supports_loglikelihood`` is False.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from kofinsent.backends.base import BackendError, Chat, Generation, GenOptions, MissingExtraError, Prompt

DEFAULT_HOST = "http://localhost:11434"  # where `ollama serve` listens unless told otherwise

SEED000_OPTIONS: dict[str, Any] = {"temperature": 0.2, "num_ctx": 8192, "num_predict": 1024}
TIMING_KEYS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
               "eval_duration")
FORMATS = ("schema", "free")


def _import_ollama() -> Any:
    try:
        import ollama
    except ImportError as e:
        raise MissingExtraError("ollama", "ollama", "ollama") from e
    return ollama


class OllamaBackend:
    """Generation through an Ollama server.

    ``format="schema"`` sends ``format=options.json_schema`` (schema-constrained decoding on the server);
    ``format="free"`` never sends ``format=``, even when the caller has a schema (the seed's unconstrained runs).
    ``preload`` sends one empty chat first so that model load time stays out of the per-item timings. ``seed`` is
    the run's base seed (recorded in :meth:`identity`); each request carries its call's ``GenOptions.seed``.
    """

    name = "ollama"
    supports_loglikelihood = False
    supports_chat = True

    def __init__(self, model: str, host: str = DEFAULT_HOST, seed: int = 0,
                 options: dict[str, Any] | None = None, format: str = "schema", stream: bool = False,
                 timeout: float = 600, preload: bool = True) -> None:
        ollama = _import_ollama()
        if format not in FORMATS:
            raise BackendError(f"ollama: format must be one of {FORMATS}, got {format!r}")
        self.model, self.host, self.seed, self.format, self.stream = model, host, int(seed), format, stream
        self.options = dict(options or {})
        self._ollama = ollama
        self.client = ollama.Client(host=host, timeout=timeout)
        self._tag = self._check_server()
        self._details = self._show()
        if preload:
            self._call(lambda: self.client.chat(model=self.model, messages=[]))

    # -- server checks -----------------------------------------------------------------------------------------------
    def _call(self, fn: Any) -> Any:
        """Run one client call, turning connection and HTTP failures into a BackendError naming host and model."""
        import httpx

        try:
            return fn()
        except (ConnectionError, httpx.TransportError) as e:
            raise BackendError(f"ollama: cannot reach the server at {self.host} ({e}); is `ollama serve` running "
                               f"there (or pass --host)?") from e
        except self._ollama.ResponseError as e:
            if e.status_code == 404:
                raise BackendError(f"ollama: model {self.model!r} not found on {self.host}: "
                                   f"`ollama pull {self.model}` (or `ollama create`) first ({e.error})") from e
            raise BackendError(f"ollama: the server at {self.host} answered {e.status_code}: {e.error}") from e

    def _check_server(self) -> Any:
        listing = self._call(self.client.list)
        names = {self.model, self.model if ":" in self.model else f"{self.model}:latest"}
        for m in listing.models:
            if m.model in names:
                return m
        available = ", ".join(sorted(m.model or "?" for m in listing.models)) or "none"
        raise BackendError(f"ollama: model {self.model!r} not found on {self.host} (it has: {available}); "
                           f"`ollama pull {self.model}` (or `ollama create`) first")

    def _show(self) -> dict[str, Any]:
        shown = self._call(lambda: self.client.show(self.model))
        return {
            "details": shown.details.model_dump(exclude_none=True) if shown.details else None,
            "template": shown.template, "parameters": shown.parameters,
            "modified_at": shown.modified_at.isoformat() if shown.modified_at else None,
        }

    def _server_version(self) -> str | None:
        try:  # the official client has no version call; ask its own HTTP session
            return self.client._client.get("/api/version").json().get("version")
        except Exception:  # noqa: BLE001 - the version is informative only
            return None

    # -- generation --------------------------------------------------------------------------------------------------
    def request_options(self, options: GenOptions) -> dict[str, Any]:
        """The ``options`` object sent to the server for a call with ``options`` (see the module docstring)."""
        sent = {**SEED000_OPTIONS, **self.options,
                "temperature": options.temperature, "num_predict": options.max_new_tokens, "seed": int(options.seed)}
        if options.stop:
            sent["stop"] = list(options.stop)
        return {**sent, **options.extra}

    def generate(self, prompts: Sequence[Prompt], options: GenOptions) -> list[Generation]:
        """One request per prompt, in order; ``seconds`` is wall clock, ``meta`` the server's timings (ns)."""
        fmt = options.json_schema if self.format == "schema" else None
        sent = self.request_options(options)
        return [self._one(p, fmt, sent) for p in prompts]

    def _one(self, prompt: Prompt, fmt: dict[str, Any] | None, sent: dict[str, Any]) -> Generation:
        t0 = time.perf_counter()
        text, final = self._call(lambda: self._request(prompt, fmt, sent))
        seconds = time.perf_counter() - t0
        meta = {k: getattr(final, k, None) for k in TIMING_KEYS}
        meta["done_reason"] = getattr(final, "done_reason", None)
        return Generation(text, seconds, meta)

    def _request(self, prompt: Prompt, fmt: dict[str, Any] | None, sent: dict[str, Any]) -> tuple[str, Any]:
        """(reply text, the response holding the final timings), streamed or not."""
        if isinstance(prompt, str):
            resp = self.client.generate(model=self.model, prompt=prompt, raw=True, format=fmt, options=sent,
                                        stream=self.stream)
        else:
            resp = self.client.chat(model=self.model, messages=_messages(prompt), format=fmt, options=sent,
                                    stream=self.stream)
        if not self.stream:
            return _text(resp), resp
        parts, final = [], None
        for chunk in resp:  # the last chunk (done=true) carries the timings
            parts.append(_text(chunk))
            final = chunk
        return "".join(parts), final

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        raise BackendError("ollama: the Ollama API gives no log-probabilities of given continuations; use "
                           "--method generate or sentiment, or the llamacpp backend on the same GGUF")

    def identity(self) -> dict[str, Any]:
        return {
            "backend": self.name, "host": self.host, "model": self.model, "seed": self.seed,
            "model_tag": self._tag.model, "digest": self._tag.digest, "size": int(self._tag.size) if self._tag.size is not None else None,
            **self._details, "format": self.format, "stream": self.stream, "options": self.options,
            "server_version": self._server_version(), "ollama_client": _client_version(),
        }


def _messages(chat: Chat) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in chat]


def _text(resp: Any) -> str:
    message = getattr(resp, "message", None)
    if message is not None:
        return message.content or ""
    return getattr(resp, "response", None) or ""


def _client_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ollama")
    except PackageNotFoundError:
        return None


__all__ = ["FORMATS", "OllamaBackend", "SEED000_OPTIONS", "TIMING_KEYS"]

"""A loopback stand-in for an OpenAI-compatible API: real sockets on 127.0.0.1, scripted replies, every request recorded.

It answers what the ``openai`` backend uses, in the shapes vLLM and OpenAI send, under ``/v1``:

- ``GET /v1/models``: the models given to the constructor (``{"object": "list", "data": [{"id", ...}]}``).
- ``POST /v1/chat/completions``, ``POST /v1/completions``: the next scripted reply (a queue of strings or
  :class:`Scripted`, then ``reply_fn(body)``, then a valid sentiment JSON) with a deterministic ``usage`` (see
  :func:`usage`). A :class:`Scripted` can instead be an HTTP error (429 / 5xx with ``Retry-After`` and other headers)
  or a raw body that is not JSON, and can wait before answering (``delay``).
- ``POST /v1/completions`` with ``echo`` and ``logprobs``: the prompt echoed with deterministic per-token log-probs
  and character ``text_offset``s (see :func:`prompt_logprobs`), as vLLM answers ``max_tokens: 0``; with
  ``logprobs=False`` the server answers as one without prompt log-probs (``"logprobs": null``).
- an unknown model: 404 in vLLM's error shape; with ``api_key`` set, a request without ``Authorization: Bearer
  <api_key>`` gets 401 whose message **echoes the key it was sent** (the worst case for leaking it).

Every request is kept in :attr:`OpenAIStandin.requests` (method, path, headers, parsed JSON body), and
:attr:`OpenAIStandin.max_in_flight` is the most completion requests it was answering at once.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .loopback import VALID_REPLY, ScriptedStandin, StandinHandler

CREATED = 1_763_892_000


@dataclass
class Scripted:
    """One scripted answer: reply text, an HTTP error (``status`` >= 400 with ``error``), or a ``raw`` body."""

    content: str = ""
    status: int = 200
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    finish_reason: str = "stop"
    delay: float = 0.0


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, None without a body


def usage(prompt_chars: int, reply: str) -> dict[str, int]:
    """Deterministic token counts: ~4 characters a prompt token, ~3 a reply token."""
    prompt, completion = max(1, prompt_chars // 4), max(1, len(reply) // 3)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


TOKEN = re.compile(r"\s*\S{1,3}|\s+")  # up to three characters after any whitespace: boundaries fall inside words


def prompt_logprobs(text: str) -> tuple[list[str], list[int], list[float | None]]:
    """(tokens, character offsets, log-probs) the stand-in serves for an echoed prompt: the first token has no
    log-prob (as vLLM), token i's is ``-(0.5 + (sum of its code points % 97) / 50 + i / 1000)``."""
    tokens = TOKEN.findall(text)
    offsets, pos = [], 0
    for t in tokens:
        offsets.append(pos)
        pos += len(t)
    assert "".join(tokens) == text
    lps: list[float | None] = [None] + [-(0.5 + (sum(map(ord, t)) % 97) / 50 + i / 1000)
                                        for i, t in enumerate(tokens) if i > 0]
    return tokens, offsets, lps


class OpenAIStandin(ScriptedStandin[Scripted]):
    """``with OpenAIStandin(["my-model"], replies=[...]) as server: OpenAIBackend("my-model", host=server.url)``"""

    scripted = Scripted
    requests: list[Recorded]

    def __init__(self, models: Iterable[str] = ("llama3-8b-instruct",), replies: Iterable[str | Scripted] = (),
                 reply_fn: Callable[[dict[str, Any]], str | Scripted] | None = None, api_key: str | None = None,
                 logprobs: bool = True, processing_ms: int | None = None) -> None:
        super().__init__(replies, reply_fn)
        self.models = list(models)
        self.api_key = api_key
        self.logprobs = logprobs
        self.processing_ms = processing_ms
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def url(self) -> str:
        """The API base, as ``--host`` takes it."""
        return self.origin + "/v1"

    # -- scripting and inspection -------------------------------------------------------------------------------------
    def bodies(self, path: str = "/v1/chat/completions") -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.path == path]


class _Handler(StandinHandler):
    standin: OpenAIStandin

    def _record(self) -> Any:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.loads(raw) if raw else None
        with self.standin.lock:
            self.standin.requests.append(Recorded(self.command, self.path, dict(self.headers.items()), body))
        return body

    def _send(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None,
              raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html" if raw is not None else "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        kind = {401: "AuthenticationError", 404: "NotFoundError", 429: "RateLimitError"}.get(status, "ServerError")
        self._send({"error": {"message": message, "type": kind, "param": None, "code": status}}, status, headers)

    def _authorized(self) -> bool:
        key = self.standin.api_key
        if key is None:
            return True
        sent = self.headers.get("Authorization", "")
        if sent == f"Bearer {key}":
            return True
        self._error(401, f"Incorrect API key provided: {sent.removeprefix('Bearer ')}. You can find your API key "
                         "at https://platform.example/account/api-keys.")
        return False

    def do_GET(self) -> None:
        self._record()
        if not self._authorized():
            return
        if self.path == "/v1/models":
            return self._send({"object": "list", "data": [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "kofinsent-standin", "root": m,
                 "max_model_len": 8192, "permission": [{"id": "modelperm-0"}]} for m in self.standin.models]})
        self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        body = self._record() or {}
        if not self._authorized():
            return
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            return self._error(404, f"no route {self.path}")
        s = self.standin
        model = body.get("model")
        if model not in s.models:
            return self._error(404, f"The model `{model}` does not exist.")
        with s.lock:
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
        try:
            if self.path == "/v1/completions" and body.get("echo"):
                return self._echo(body)
            self._complete(body, chat=self.path == "/v1/chat/completions")
        finally:
            with s.lock:
                s.in_flight -= 1

    def _complete(self, body: dict[str, Any], chat: bool) -> None:
        s = self.standin
        reply = s.next_reply(body)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.raw is not None:
            return self._send(None, reply.status, reply.headers, raw=reply.raw)
        if reply.status >= 400:
            return self._error(reply.status, reply.error or "scripted failure", reply.headers)
        prompt_chars = (sum(len(m.get("content", "")) for m in body["messages"]) if chat
                        else len(body.get("prompt", "")))
        choice: dict[str, Any] = {"index": 0, "finish_reason": reply.finish_reason, "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": reply.content}
        else:
            choice["text"] = reply.content
        headers = dict(reply.headers)
        if s.processing_ms is not None:
            headers["openai-processing-ms"] = str(s.processing_ms)
        self._send({"id": "cmpl-standin", "object": "chat.completion" if chat else "text_completion",
                    "created": CREATED, "model": body["model"], "system_fingerprint": "fp_standin",
                    "choices": [choice], "usage": usage(prompt_chars, reply.content)}, 200, headers)

    def _echo(self, body: dict[str, Any]) -> None:
        text = body.get("prompt", "")
        tokens, offsets, lps = prompt_logprobs(text)
        logprobs = ({"tokens": tokens, "token_logprobs": lps, "text_offset": offsets,
                     "top_logprobs": [None] + [{t: lp} for t, lp in zip(tokens[1:], lps[1:])]}
                    if self.standin.logprobs else None)
        self._send({"id": "cmpl-echo", "object": "text_completion", "created": CREATED, "model": body["model"],
                    "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": "length"}],
                    "usage": {"prompt_tokens": len(tokens), "completion_tokens": 0, "total_tokens": len(tokens)}})


OpenAIStandin.handler = _Handler


__all__ = ["CREATED", "VALID_REPLY", "OpenAIStandin", "Recorded", "Scripted", "prompt_logprobs", "usage"]

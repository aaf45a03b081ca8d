"""A SYNTHETIC teacher: a deterministic OpenAI-compatible server on 127.0.0.1, so that the teacher step runs offline
(the quickstart). It is not a language model and its replies are no one's judgement of a title.

It answers what the ``openai`` backend uses, under ``/v1``:

- ``GET /v1/models``: one model, :data:`STANDIN_MODEL`, ``owned_by`` :data:`OWNER`;
- ``POST /v1/chat/completions``: a reply computed from the last user message's ``<article>TITLE</article>`` and the
  request's ``seed`` by :func:`standin_reply`, with ``usage`` (~4 characters a prompt token, ~3 a reply token) and
  ``system_fingerprint`` :data:`OWNER`. Anything else is a 404 in OpenAI's error shape.

:func:`standin_reply` is a pure function of (title, seed). The sentiment is +-0.6 when the title holds more of the
stand-in's up words than down words (or the reverse; the synthetic forum's cue words 가즈아 / 손절 are among them),
else a small value from the title's hash; a seed-dependent jitter of at most 0.05 makes repeated asks differ a little,
as a sampled model's would. Every ``reasoning`` starts with ``SYNTHETIC``. So that the teacher's retry and drop paths
run too, a tenth of the titles (by hash) get a Markdown-fenced reply for an even seed (invalid under the strict rule;
the next attempt's odd seed gets a valid one) and about one in 64 gets a reply cut short at every seed (dropped).
The ``response_format`` a request carries is not enforced: these faults are what a constrained server would not send.

``with TeacherStandin() as server: OpenAIBackend(STANDIN_MODEL, host=server.url)``
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from crawler.loopback import LoopbackServer

STANDIN_MODEL = "kofinsent-synthetic-teacher"
OWNER = "kofinsent-synthetic-standin"
CREATED = 1_763_892_000
UP_WORDS = ("가즈아", "상승", "급등", "떡상", "반등", "매수", "신고가", "호재", "목표가 상향")
DOWN_WORDS = ("손절", "하락", "급락", "떡락", "폭락", "매도", "신저가", "악재", "목표가 하향")
_ARTICLE = re.compile(r"<article>(.*)</article>", re.DOTALL)


def _hash(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


def standin_reply(title: str, seed: int) -> str:
    """The stand-in's raw reply for ``title`` asked with ``seed`` (see the module docstring)."""
    h = _hash(title)
    up, down = sum(w in title for w in UP_WORDS), sum(w in title for w in DOWN_WORDS)
    jitter = (_hash(title, seed) % 11 - 5) / 100
    if up != down:
        base, confidence, why = (0.6, 0.8, "up") if up > down else (-0.6, 0.8, "down")
        reasoning = f"SYNTHETIC stand-in reply, not a model's judgement: the title holds more {why} words."
    else:
        base, confidence = (h % 41 - 20) / 100, 0.3
        reasoning = "SYNTHETIC stand-in reply, not a model's judgement: no cue word, a value from the title's hash."
    sentiment = round(min(1.0, max(-1.0, base + jitter)), 2)
    reply = json.dumps({"reasoning": reasoning, "sentiment": sentiment, "confidence": confidence},
                       ensure_ascii=False)
    if h % 64 == 1:  # dropped: a reply cut short, at every seed
        return reply[: len(reply) // 2]
    if h % 10 == 0 and seed % 2 == 0:  # accepted after a retry: fenced first, valid at the next (odd) seed
        return f"```json\n{reply}\n```"
    return reply


def title_of(messages: Any) -> str:
    """The article of the last user message (its whole text when it has no ``<article>`` tags)."""
    users = [m.get("content", "") for m in messages or [] if isinstance(m, dict) and m.get("role") == "user"]
    last = str(users[-1]) if users else ""
    match = _ARTICLE.search(last)
    return match.group(1) if match else last


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kofinsent-synthetic-standin"
    disable_nagle_algorithm = True  # keep-alive replies go out at once (else ~40 ms each: Nagle + delayed ACK)

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _send(self, obj: Any, status: int = 200) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send({"error": {"message": message, "type": "NotFoundError", "param": None, "code": status}}, status)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            return self._send({"object": "list", "data": [{"id": STANDIN_MODEL, "object": "model",
                                                           "created": CREATED, "owned_by": OWNER}]})
        self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return self._error(400, "the request body is not a JSON object")
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._error(404, f"no route {self.path} (the stand-in serves chat completions only)")
        if body.get("model") != STANDIN_MODEL:
            return self._error(404, f"The model `{body.get('model')}` does not exist.")
        seed = body.get("seed") if isinstance(body.get("seed"), int) else 0
        reply = standin_reply(title_of(body.get("messages")), seed)
        prompt_chars = sum(len(str(m.get("content", ""))) for m in body.get("messages") or [] if isinstance(m, dict))
        prompt, completion = max(1, prompt_chars // 4), max(1, len(reply) // 3)
        self.server.owner.count("Authorization" in self.headers)  # type: ignore[attr-defined]
        self._send({"id": "chatcmpl-synthetic", "object": "chat.completion", "created": CREATED,
                    "model": STANDIN_MODEL, "system_fingerprint": OWNER,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                 "finish_reason": "stop", "logprobs": None}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                              "total_tokens": prompt + completion}})


class TeacherStandin(LoopbackServer):
    """Serves the stand-in on ``127.0.0.1`` (port 0: any free port) from a daemon thread; a context manager."""

    handler = _Handler
    thread_name = "teacher-standin"

    def __init__(self, port: int = 0) -> None:
        super().__init__(port=port)
        self._lock = threading.Lock()
        self.replies = 0     # chat completions answered
        self.keyed = 0       # of which carried an Authorization header (the experiment step sends none)

    def count(self, keyed: bool) -> None:
        with self._lock:
            self.replies += 1
            self.keyed += keyed

    @property
    def url(self) -> str:
        """The API base, as ``--host`` takes it."""
        return self.origin + "/v1"


__all__ = ["DOWN_WORDS", "OWNER", "STANDIN_MODEL", "UP_WORDS", "TeacherStandin", "standin_reply", "title_of"]

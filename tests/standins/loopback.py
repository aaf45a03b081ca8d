"""What the API stand-ins share: :class:`crawler.loopback.LoopbackServer`'s lifecycle, a queue of scripted replies
with a fallback, a request log, and a quiet keep-alive handler that reaches its stand-in as ``self.standin``."""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler
from typing import Any, Generic, TypeVar

from crawler.loopback import LoopbackServer

VALID_REPLY = '{"reasoning": "Strong earnings lift the stock.", "sentiment": 0.5, "confidence": 0.8}'

S = TypeVar("S")


class ScriptedStandin(LoopbackServer, Generic[S]):
    """Subclasses set ``handler`` (a :class:`StandinHandler`) and ``scripted``: their reply class, built from a reply
    string. Replies come from the queue, then ``reply_fn(body)``, then :data:`VALID_REPLY`."""

    scripted: type[S]
    # tests start and stop many servers, and shutdown() waits up to one poll interval
    poll_interval = 0.02
    thread_name = "standin"

    def __init__(self, replies: Iterable[str | S] = (), reply_fn: Callable[[dict[str, Any]], str | S] | None = None
                 ) -> None:
        super().__init__()
        self.replies: deque[str | S] = deque(replies)
        self.reply_fn = reply_fn
        self.requests: list[Any] = []
        self.lock = threading.Lock()

    def queue(self, *replies: str | S) -> None:
        self.replies.extend(replies)

    def next_reply(self, body: dict[str, Any]) -> S:
        with self.lock:
            reply = self.replies.popleft() if self.replies else None
        if reply is None:
            reply = self.reply_fn(body) if self.reply_fn else VALID_REPLY
        return reply if isinstance(reply, self.scripted) else self.scripted(reply)  # type: ignore[call-arg]


class StandinHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive (and chunked streaming), as the real servers
    disable_nagle_algorithm = True  # else headers and body in two writes wait ~40 ms for a delayed ACK

    @property
    def standin(self) -> Any:
        return self.server.owner  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        return None


__all__ = ["VALID_REPLY", "ScriptedStandin", "StandinHandler"]

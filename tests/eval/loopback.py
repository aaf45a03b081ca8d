"""The lifecycle the API stand-ins share: a ThreadingHTTPServer on 127.0.0.1, an ephemeral port, a context manager."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class LoopbackServer:
    """Subclasses set ``handler``: a BaseHTTPRequestHandler class; it reaches the subclass instance as ``standin``."""

    handler: type[BaseHTTPRequestHandler]
    _server: ThreadingHTTPServer | None = None
    _port: int | None = None  # kept after stop(), so tests can still name the URL

    def start(self) -> Self:
        handler: Any = type("Handler", (self.handler,), {"standin": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        # a short poll interval: shutdown() waits up to one interval, and tests start and stop many servers
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        assert self._port is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._port}"

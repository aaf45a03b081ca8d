"""The lifecycle every loopback HTTP server here shares (the replay site, kofinsent's synthetic teacher, the tests'
API stand-ins): a ThreadingHTTPServer on 127.0.0.1, port 0 for any free port, served from a daemon thread, a context
manager. It lives in ``crawler``, the lowest package, so that ``kofinsent`` and the tests can build on it while
``crawler`` imports nothing of theirs.
"""
from __future__ import annotations

import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer whose handlers reach the :class:`LoopbackServer` serving them as ``self.server.owner``."""

    daemon_threads = True

    def __init__(self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler], owner: Any) -> None:
        self.owner = owner
        super().__init__(addr, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a reverse DNS lookup that can take seconds in a sandbox.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class LoopbackServer:
    """Serves ``handler`` (set by subclasses) on ``host`` from a daemon thread; ``with`` starts and stops it.

    ``port`` 0 takes any free port; :meth:`start` replaces it with the bound one, and it is kept after :meth:`stop`
    so that a stopped server can still name its URL.
    """

    handler: type[BaseHTTPRequestHandler]
    poll_interval = 0.05  # shutdown() waits up to one interval
    thread_name = "loopback"

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self._httpd: LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def make_server(self) -> LoopbackHTTPServer:
        """The server :meth:`start` runs; subclasses that need more of the server than the handler override it."""
        return LoopbackHTTPServer((self.host, self.port), self.handler, self)

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        self._httpd = self.make_server()
        self.port = self._httpd.server_port
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": self.poll_interval},
                                        name=f"{self.thread_name}-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        """``http://HOST:PORT``, no trailing slash."""
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """What clients are pointed at; subclasses serving under a prefix (an API's ``/v1``) extend it."""
        return self.origin


__all__ = ["LoopbackHTTPServer", "LoopbackServer"]

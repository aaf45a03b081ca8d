"""A loopback stand-in for the Ollama HTTP API: real sockets on 127.0.0.1, scripted replies, every request recorded.

No Ollama server can be installed on the test machines; the official ``ollama`` client talks to this instead. It
answers the endpoints the evaluator and the exporter use, in the real API's shapes:

- ``POST /api/chat``, ``POST /api/generate``: the next scripted reply (a queue of strings or :class:`Scripted`, then
  ``reply_fn(body)``, then a valid sentiment JSON), as one JSON object or as NDJSON chunks when ``stream`` is true
  (HTTP/1.1 chunked, as Ollama sends it), with deterministic timing fields (see :func:`timings`). A chat with no
  messages is a preload: it answers ``done_reason: "load"`` and consumes no scripted reply.
- ``GET /api/tags``, ``POST /api/show``, ``GET /api/version``: the models given to the constructor (404 for others).
- ``POST /api/create`` (registers a model; its ``files`` must be uploaded blobs), ``HEAD``/``POST /api/blobs/:digest``
  (the digest is checked against the body, as the server does) — for ``ollama.Client.create`` / ``create_blob``.

Every request is kept in :attr:`OllamaStandin.requests` (method, path, parsed JSON body) so tests can assert exactly
what was sent.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .loopback import VALID_REPLY, ScriptedStandin, StandinHandler

CREATED_AT = "2026-11-23T10:00:00.000000Z"


@dataclass
class Scripted:
    """One scripted answer: reply text, or an HTTP error (``status`` >= 400 with ``error``)."""

    content: str = ""
    status: int = 200
    error: str | None = None
    done_reason: str = "stop"


@dataclass
class Recorded:
    method: str
    path: str
    body: Any  # parsed JSON, raw bytes for blob uploads, None without a body


@dataclass
class Model:
    name: str
    digest: str = "sha256:" + "ab" * 32
    size: int = 4_920_753_328
    family: str = "llama"
    parameter_size: str = "8.0B"
    quantization_level: str = "Q4_K_M"
    template: str = "{{ .Prompt }}"
    extra: dict[str, Any] = field(default_factory=dict)

    def details(self) -> dict[str, Any]:
        return {"parent_model": "", "format": "gguf", "family": self.family, "families": [self.family],
                "parameter_size": self.parameter_size, "quantization_level": self.quantization_level}


def timings(prompt_chars: int, reply: str, loaded: bool) -> dict[str, int]:
    """Deterministic, realistic server timings (ns): ~4 chars a prompt token at 1 ms each, ~3 chars a reply token
    at 20 ms each, 1.5 s to load a model the first time and 5 ms after."""
    prompt_eval_count = max(1, prompt_chars // 4)
    eval_count = max(1, len(reply) // 3)
    load = 5_000_000 if loaded else 1_500_000_000
    prompt_eval_duration = prompt_eval_count * 1_000_000
    eval_duration = eval_count * 20_000_000
    return {"total_duration": load + prompt_eval_duration + eval_duration, "load_duration": load,
            "prompt_eval_count": prompt_eval_count, "prompt_eval_duration": prompt_eval_duration,
            "eval_count": eval_count, "eval_duration": eval_duration}


class OllamaStandin(ScriptedStandin[Scripted]):
    """``with OllamaStandin(["llama3:latest"], replies=[...]) as server: Client(server.url)...``"""

    scripted = Scripted
    requests: list[Recorded]

    def __init__(self, models: Iterable[str | Model] = ("llama3:latest",), replies: Iterable[str | Scripted] = (),
                 reply_fn: Callable[[dict[str, Any]], str | Scripted] | None = None, chunk_chars: int = 7,
                 version: str = "0.12.6") -> None:
        super().__init__(replies, reply_fn)
        self.models: dict[str, Model] = {}
        for m in models:
            model = m if isinstance(m, Model) else Model(m)
            self.models[model.name] = model
        self.chunk_chars = chunk_chars
        self.version = version
        self.blobs: dict[str, bytes] = {}
        self.loaded: set[str] = set()

    # -- scripting and inspection -------------------------------------------------------------------------------------
    def bodies(self, path: str = "/api/chat", include_preload: bool = False) -> list[dict[str, Any]]:
        """JSON bodies sent to ``path``, in order (chat preloads left out unless asked)."""
        return [r.body for r in self.requests if r.path == path
                and (include_preload or path != "/api/chat" or r.body.get("messages"))]

    def _find(self, name: str) -> Model | None:
        return self.models.get(name) or (self.models.get(f"{name}:latest") if ":" not in name else None)


class _Handler(StandinHandler):
    standin: OllamaStandin

    # -- plumbing ----------------------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _record(self, raw: bytes, as_json: bool = True) -> Any:
        body: Any = (json.loads(raw) if as_json else raw) if raw else None
        self.standin.requests.append(Recorded(self.command, self.path, body))
        return body if body is not None else {}

    def _send_json(self, obj: Any, status: int = 200) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_stream(self, parts: Iterable[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in parts:
            line = json.dumps(part).encode() + b"\n"
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _not_found(self, name: str) -> None:
        self._send_json({"error": f'model "{name}" not found, try pulling it first'}, 404)

    # -- routes ------------------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._record(b"")
        s = self.standin
        if self.path == "/api/tags":
            self._send_json({"models": [
                {"name": m.name, "model": m.name, "modified_at": CREATED_AT, "size": m.size, "digest": m.digest,
                 "details": m.details()} for m in s.models.values()]})
        elif self.path == "/api/version":
            self._send_json({"version": s.version})
        elif self.path == "/":
            body = b"Ollama is running"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self._send_json({"error": "not found"}, 404)

    def do_HEAD(self) -> None:
        self._record(b"", as_json=False)
        if self.path.startswith("/api/blobs/"):
            self._send_empty(200 if self.path.rsplit("/", 1)[1] in self.standin.blobs else 404)
        else:
            self._send_empty(404)

    def do_POST(self) -> None:
        raw = self._read_body()
        if self.path.startswith("/api/blobs/"):
            self._record(raw, as_json=False)
            return self._blob(self.path.rsplit("/", 1)[1], raw)
        body = self._record(raw)
        route = {"/api/chat": self._chat, "/api/generate": self._generate, "/api/show": self._show,
                 "/api/create": self._create}.get(self.path)
        if route is None:
            return self._send_json({"error": "not found"}, 404)
        route(body)

    def _blob(self, digest: str, raw: bytes) -> None:
        if digest != "sha256:" + hashlib.sha256(raw).hexdigest():
            return self._send_json({"error": "digest mismatch"}, 400)
        self.standin.blobs[digest] = raw
        self._send_empty(201)

    def _show(self, body: dict[str, Any]) -> None:
        m = self.standin._find(body.get("model", ""))
        if m is None:
            return self._send_json({"error": f"model '{body.get('model')}' not found"}, 404)
        self._send_json({
            "modelfile": f"FROM {m.name}\nTEMPLATE {json.dumps(m.template)}\n", "parameters": "temperature 0.2",
            "template": m.template, "details": m.details(), "modified_at": CREATED_AT,
            "model_info": {"general.architecture": m.family, "general.parameter_count": 8_030_261_248},
            "capabilities": ["completion"], **m.extra,
        })

    def _create(self, body: dict[str, Any]) -> None:
        s = self.standin
        missing = [d for d in (body.get("files") or {}).values() if d not in s.blobs]
        if missing:
            return self._send_json({"error": f"blob {missing[0]} not found"}, 400)
        source = body.get("from")
        if not body.get("files") and (source is None or s._find(source) is None):
            return self._send_json({"error": f"model '{source}' not found"}, 404 if source else 400)
        name = body["model"] if ":" in body["model"] else body["model"] + ":latest"
        digest = "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        s.models[name] = Model(name, digest=digest, template=body.get("template") or "{{ .Prompt }}")
        statuses = ["parsing GGUF", "using existing layer", "writing manifest", "success"]
        if body.get("stream", True):
            self._send_stream({"status": st} for st in statuses)
        else:
            self._send_json({"status": "success"})

    def _chat(self, body: dict[str, Any]) -> None:
        self._answer(body, chat=True)

    def _generate(self, body: dict[str, Any]) -> None:
        self._answer(body, chat=False)

    def _answer(self, body: dict[str, Any], chat: bool) -> None:
        s = self.standin
        name = body.get("model", "")
        if s._find(name) is None:
            return self._not_found(name)
        head = {"model": name, "created_at": CREATED_AT}
        key = "message" if chat else "response"

        def payload(text: str) -> Any:
            return {"role": "assistant", "content": text} if chat else text

        if (chat and not body.get("messages")) or (not chat and not body.get("prompt")):  # a preload
            s.loaded.add(name)
            return self._send_json({**head, key: payload(""), "done_reason": "load", "done": True})
        reply = s.next_reply(body)
        if reply.status >= 400:
            return self._send_json({"error": reply.error or "scripted failure"}, reply.status)
        prompt_chars = (sum(len(m.get("content", "")) for m in body["messages"]) if chat
                        else len(body.get("prompt", "")))
        final = {**head, key: payload(""), "done": True, "done_reason": reply.done_reason,
                 **timings(prompt_chars, reply.content, loaded=name in s.loaded)}
        s.loaded.add(name)
        if not body.get("stream", True):  # the API streams unless told not to
            return self._send_json({**final, key: payload(reply.content)})
        n = max(1, s.chunk_chars)
        chunks = [reply.content[i:i + n] for i in range(0, len(reply.content), n)]
        self._send_stream([*({**head, key: payload(c), "done": False} for c in chunks), final])


def closed_port_url() -> str:
    """A loopback URL nothing listens on (bound, then released), for the unreachable-server case."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


OllamaStandin.handler = _Handler


__all__ = [
    "CREATED_AT",
    "VALID_REPLY",
    "Model",
    "OllamaStandin",
    "Recorded",
    "Scripted",
    "closed_port_url",
    "timings",
]

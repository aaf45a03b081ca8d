"""OpenAI-compatible backend: any server that speaks the OpenAI HTTP API (OpenAI, vLLM, llama.cpp server, Ollama's
``/v1``, TGI), through :mod:`requests`; no client library is needed.

``host`` is the API base, ``/v1`` included (``http://localhost:8000/v1`` for ``vllm serve``). What is sent:

- a chat prompt: ``POST {host}/chat/completions`` with ``{"model", "messages", "temperature", "max_tokens", "seed"}``
  (``seed`` an integer, the call's :attr:`GenOptions.seed`: the evaluator's sentiment mode sends base seed +
  iteration), ``"stop"`` when the call has stop strings, and in schema mode (``format="schema"``, the default) when
  the call has a JSON schema ``"response_format": {"type": "json_schema", "json_schema": {"name", "schema",
  "strict": true}}``; ``format="free"`` never sends ``response_format``. Later entries win: the constructor's
  ``options`` (extra body fields such as ``top_p``), then the call's GenOptions, then the call's ``options.extra``;
- a text prompt: ``POST {host}/completions`` with ``{"model", "prompt", "temperature", "max_tokens", "seed"}`` (no
  ``response_format``: the completions API has none);
- :meth:`OpenAIBackend.loglikelihood`: ``POST {host}/completions`` with ``{"model", "prompt": context +
  continuation, "echo": true, "logprobs": 1, "max_tokens": 0}``, as lm-evaluation-harness's ``local-completions``
  does on vLLM. The score is the sum of the log-probs of the tokens that cover the continuation, found by the
  returned ``text_offset`` (characters): a token that straddles the boundary counts with the continuation. The
  tokens are the **server's** split of the whole string, not lm-eval's ``_encode_pair`` (context and continuation
  encoded apart), so numbers can differ slightly from the hf backend's on the same weights. A server that answers
  without prompt log-probs (OpenAI's own chat models, Ollama, llama.cpp server) is a :class:`BackendError` saying so.

The key comes from ``OPENAI_API_KEY`` (or ``api_key=``) and goes out only as ``Authorization: Bearer ...``: it is
never in :meth:`identity`, in an error message (a server that echoes it has it replaced by ``***``) or in a log.
Without a key no Authorization header is sent (a local vLLM or llama.cpp server needs none).

The server is checked at construction: ``GET {host}/models`` must answer and list the model, so a run fails before
its first item (unreachable host, bad key, unknown model naming the models it has, a host without ``/v1``).

Each request is retried on 429 and 5xx (and on connection errors during a run) up to ``retries`` times, with
exponential backoff (``backoff`` x 2^k seconds, at most ``backoff_max``) or the server's ``Retry-After`` (parsed by
the crawler's :func:`crawler.http.retry_after_seconds`) when it gives one. A ``Retry-After`` longer than
``max_wait`` stops the run at once with :class:`RateLimitedError` (``rate-limited:``, exit 3, as the crawler); the
evaluator's ``--resume`` continues it later. ``concurrency`` requests are in flight at once (a thread pool, one
:class:`requests.Session` per thread); results come back in input order.

Per reply, :attr:`Generation.meta` holds ``prompt_tokens`` / ``completion_tokens`` (the reply's ``usage``),
``server_seconds`` with ``server_time_source`` (llama.cpp's ``timings``, else OpenAI's ``openai-processing-ms``
header, else the round trip of the request that succeeded), ``finish_reason``, ``system_fingerprint`` and
``attempts``.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

import requests

from kofinsent.backends.base import BackendError, Chat, Generation, GenOptions, Prompt
from kofinsent.backends.options import int_problem

DEFAULT_HOST = "http://localhost:8000/v1"  # where `vllm serve` listens unless told otherwise
KEY_ENV = "OPENAI_API_KEY"
FORMATS = ("schema", "free")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_MODELS_NAMED = 20  # an unknown-model error names at most this many of the server's models

T = TypeVar("T")


class RateLimitedError(BackendError):
    """The server asked (``Retry-After``) for a longer wait than ``max_wait``: the run stops; ``--resume`` later."""

    prefix = "rate-limited"  # one_line_errors prints "rate-limited: ..." and exits 3, as the crawler does
    exit_code = 3

    def __init__(self, host: str, model: str, wait_s: float, max_wait_s: float) -> None:
        self.host, self.model, self.wait_s, self.max_wait_s = host, model, wait_s, max_wait_s
        super().__init__(f"openai: the server at {host} (model {model!r}) asked for a wait of {wait_s:.0f} s "
                         f"(Retry-After), longer than the {max_wait_s:g} s allowed; run the same command later with "
                         "--resume")


class HTTPStatusError(BackendError):
    """The server answered a 4xx (or a 5xx after the retries); ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Stopped(Exception):
    """Another request of the same call failed: this one gives up without a request of its own."""


class OpenAIBackend:
    """Generation and prompt log-probs through an OpenAI-compatible server (see the module docstring).

    ``format="schema"`` sends the call's JSON schema as ``response_format``; ``format="free"`` never does (the
    seed's unconstrained runs). ``seed`` is the run's base seed (recorded in :meth:`identity`); each request carries
    its call's ``GenOptions.seed``. ``sleep`` replaces the waits between attempts (tests).
    """

    name = "openai"
    supports_loglikelihood = True
    supports_chat = True

    def __init__(self, model: str, host: str = DEFAULT_HOST, seed: int = 0, format: str = "schema",
                 concurrency: int = 1, options: dict[str, Any] | None = None, api_key: str | None = None,
                 timeout: float = 600, retries: int = 5, backoff: float = 1.0, backoff_max: float = 60.0,
                 max_wait: float = 300.0, sleep: Callable[[float], None] | None = None) -> None:
        if format not in FORMATS:
            raise BackendError(f"openai: format must be one of {FORMATS}, got {format!r}")
        if problem := int_problem("concurrency", concurrency, 1) or int_problem("retries", retries, 0):
            raise BackendError(f"openai: {problem}")
        host = (host or DEFAULT_HOST).rstrip("/")
        if not re.match(r"https?://[^/]", host):
            raise BackendError(f"openai: --host must be a URL such as {DEFAULT_HOST}, got {host!r}")
        self.model, self.host, self.seed, self.format = model, host, int(seed), format
        self.concurrency, self.options = concurrency, dict(options or {})
        self.timeout, self.retries, self.backoff, self.backoff_max = timeout, retries, backoff, backoff_max
        self.max_wait = max_wait
        key = api_key if api_key is not None else os.environ.get(KEY_ENV)
        self.__key = key or None  # name-mangled, and never part of identity() or a message
        self._sleep = sleep
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._model_info = self._check_server()

    # -- HTTP ------------------------------------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.headers.update({"Content-Type": "application/json", "Accept": "application/json",
                              "User-Agent": "kofinsent"})
            if self.__key:
                s.headers["Authorization"] = f"Bearer {self.__key}"
            self._local.session = s
            with self._lock:
                self._sessions.append(s)
        return s

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for s in sessions:
            s.close()

    def _scrub(self, text: str, limit: int = 200) -> str:
        """One line of at most ``limit`` characters of server text, the key (if the server echoed it) as ***."""
        if self.__key:
            text = text.replace(self.__key, "***")
        text = " ".join(text.split())
        return text if len(text) <= limit else text[:limit] + "..."

    def _where(self) -> str:
        return f"the server at {self.host} (model {self.model!r})"

    def _pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._sleep is not None:
            self._sleep(seconds)
        elif self._stop.wait(seconds):  # another request of the call failed: stop waiting
            raise _Stopped

    def _post(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], requests.Response, int]:
        return self._request("POST", path, body, retry_connection=True)

    def _request(self, method: str, path: str, body: dict[str, Any] | None,
                 retry_connection: bool) -> tuple[dict[str, Any], requests.Response, int]:
        """(parsed JSON body, the response, attempts) for a 2xx answer, after the retries; else BackendError."""
        url = f"{self.host}{path}"
        attempt = 0
        while True:
            if self._stop.is_set():
                raise _Stopped
            attempt += 1
            try:
                resp = self._session().request(method, url, json=body, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as e:
                if not retry_connection or attempt > self.retries:
                    raise BackendError(f"openai: cannot reach the server at {self.host} ({_root_cause(e)}, "
                                       f"{attempt} attempt(s)); is it running there (or pass --host)?") from None
                self._pause(self._backoff(attempt))
                continue
            if resp.status_code in RETRY_STATUSES:
                wait = _retry_after(resp.headers.get("Retry-After"))
                if wait is not None and wait > self.max_wait:
                    raise RateLimitedError(self.host, self.model, wait, self.max_wait)
                if attempt > self.retries:
                    raise HTTPStatusError(f"openai: {self._where()} answered HTTP {resp.status_code} on all {attempt} "
                                          f"attempt(s): {self._error_text(resp)}; run the same command later with "
                                          "--resume", resp.status_code) from None
                self._pause(wait if wait is not None else self._backoff(attempt))
                continue
            if resp.status_code >= 400:
                raise self._http_error(resp, path)
            try:
                data = resp.json()
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise BackendError(f"openai: {self._where()} sent a reply that is not a JSON object "
                                   f"(HTTP {resp.status_code}, {resp.headers.get('Content-Type') or 'no Content-Type'}"
                                   f", starts {self._scrub(resp.text, 80)!r})")
            return data, resp, attempt

    def _backoff(self, attempt: int) -> float:
        return min(self.backoff_max, self.backoff * 2 ** (attempt - 1))

    def _error_text(self, resp: requests.Response) -> str:
        """The server's error message (OpenAI's ``{"error": {"message"}}`` or a plain string), one line."""
        try:
            data = resp.json()
        except ValueError:
            return self._scrub(resp.text or "no body")
        err = data.get("error", data) if isinstance(data, dict) else data  # OpenAI / vLLM: {"error": {...}}
        if isinstance(err, dict):
            err = err.get("message") or err.get("detail") or err  # FastAPI / TGI: {"detail": ...}
        return self._scrub(err if isinstance(err, str) else json.dumps(err, ensure_ascii=False))

    def _http_error(self, resp: requests.Response, path: str) -> HTTPStatusError:
        code, text = resp.status_code, self._error_text(resp)
        if code in (401, 403):
            fix = (f"the key in {KEY_ENV} was refused: set it to a valid key" if self.__key
                   else f"no key was sent: set {KEY_ENV}")
            message = f"openai: {self._where()} answered HTTP {code} ({text}); {fix}"
        elif code == 404 and path == "/models":
            message = (f"openai: the server at {self.host} has no {self.host}/models (HTTP 404): --host must be the "
                       f"API base, ending in /v1 (e.g. {DEFAULT_HOST})")
        elif code == 404:
            message = (f"openai: {self._where()} answered HTTP 404 on {path} ({text}); is the model served there, "
                       "and does the server have this endpoint?")
        else:
            message = f"openai: {self._where()} answered HTTP {code} on {path}: {text}"
        return HTTPStatusError(message, code)

    # -- server check ------------------------------------------------------------------------------------------------
    def _check_server(self) -> dict[str, Any]:
        data, _, _ = self._request("GET", "/models", None, retry_connection=False)
        models = [m for m in data.get("data") or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]
        for m in models:
            if m["id"] == self.model:
                return m
        ids = sorted(m["id"] for m in models)
        named = ", ".join(ids[:MAX_MODELS_NAMED]) + (f" and {len(ids) - MAX_MODELS_NAMED} more"
                                                     if len(ids) > MAX_MODELS_NAMED else "")
        raise BackendError(f"openai: model {self.model!r} not found at {self.host} (it has: {named or 'none'}); "
                           "pass one of those as --model, or serve this model there")

    # -- running requests, concurrency -------------------------------------------------------------------------------
    def _map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``[fn(x) for x in items]`` with ``concurrency`` calls in flight, in input order. At the first failure the
        calls not started are cancelled, those running stop before their next attempt, and the first real error (in
        input order) is raised."""
        if self.concurrency == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        if self._pool is None:  # one pool for the backend's life: its threads keep their sessions (keep-alive)
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai")
        futures: list[Future[T]] = [self._pool.submit(fn, x) for x in items]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = any(f.exception() is not None for f in done)
        except BaseException:  # Ctrl-C while waiting
            failed = True
            raise
        finally:
            if failed:
                self._stop.set()
                for f in futures:
                    f.cancel()
                wait(futures)
                self._stop.clear()
        errors = [e for f in futures if not f.cancelled() and (e := f.exception()) is not None
                  and not isinstance(e, _Stopped)]
        if errors:
            raise errors[0]
        return [f.result() for f in futures]

    # -- generation --------------------------------------------------------------------------------------------------
    def request_body(self, prompt: Prompt, options: GenOptions) -> tuple[str, dict[str, Any]]:
        """(path, JSON body) of the request for ``prompt`` under ``options`` (see the module docstring)."""
        chat = not isinstance(prompt, str)
        body: dict[str, Any] = {"model": self.model}
        body["messages" if chat else "prompt"] = _messages(prompt) if chat else prompt  # type: ignore[arg-type]
        body.update(self.options)
        body.update({"temperature": options.temperature, "max_tokens": options.max_new_tokens,
                     "seed": int(options.seed)})
        if options.stop:
            body["stop"] = list(options.stop)
        if chat and self.format == "schema" and options.json_schema is not None:
            body["response_format"] = response_format(options.json_schema)
        body.update(options.extra)
        return ("/chat/completions" if chat else "/completions"), body

    def generate(self, prompts: Sequence[Prompt], options: GenOptions) -> list[Generation]:
        """One request per prompt, ``concurrency`` at a time, in order; ``seconds`` is each request's wall clock
        (retries included), ``meta`` its tokens and server time."""
        return self._map(lambda p: self._one(p, options), list(prompts))

    def _one(self, prompt: Prompt, options: GenOptions) -> Generation:
        path, body = self.request_body(prompt, options)
        t0 = time.perf_counter()
        data, resp, attempts = self._post(path, body)
        seconds = time.perf_counter() - t0
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise BackendError(f"openai: {self._where()} sent a reply without choices "
                               f"(starts {self._scrub(resp.text, 80)!r})")
        choice = choices[0]
        if path == "/chat/completions":
            message = choice.get("message") or {}
            text = message.get("content") if isinstance(message, dict) else None
        else:
            text = choice.get("text")
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        server, source = _server_time(data, resp)
        meta = {"prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens"),
                "server_seconds": server, "server_time_source": source, "finish_reason": choice.get("finish_reason"),
                "system_fingerprint": data.get("system_fingerprint"), "attempts": attempts}
        return Generation(text if isinstance(text, str) else "", seconds, meta)

    # -- log-likelihood ----------------------------------------------------------------------------------------------
    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Sum of the server's prompt log-probs over the tokens that cover each continuation (module docstring)."""
        return self._map(lambda r: self._loglik(*r), list(requests))

    def _loglik(self, context: str, continuation: str) -> float:
        text = context + continuation
        body = {"model": self.model, "prompt": text, "echo": True, "logprobs": 1, "max_tokens": 0}
        try:
            data, _, _ = self._post("/completions", body)
        except HTTPStatusError as e:
            if 400 <= e.status < 500 and e.status not in (401, 403, 429):
                raise HTTPStatusError(f"{e}; the server may not support prompt log-probs (echo + logprobs on "
                                      "/completions): use --method generate or sentiment, or a server that does "
                                      "(vLLM)", e.status) from None
            raise
        choices = data.get("choices")
        lp = choices[0].get("logprobs") if isinstance(choices, list) and choices and isinstance(choices[0], dict) \
            else None
        offsets = lp.get("text_offset") if isinstance(lp, dict) else None
        values = lp.get("token_logprobs") if isinstance(lp, dict) else None
        if not isinstance(offsets, list) or not isinstance(values, list) or len(offsets) != len(values) or not values:
            raise BackendError(f"openai: {self._where()} does not support prompt log-probs: its /completions reply to "
                               "echo + logprobs has no logprobs.token_logprobs / text_offset; use --method generate "
                               "or sentiment, or a server that does (vLLM)")
        echoed = choices[0].get("text")
        end_of_text = len(echoed) if isinstance(echoed, str) and echoed.startswith(text) else len(text)
        picked = continuation_tokens(offsets, len(context), len(text), end_of_text)
        if not picked and continuation:
            raise BackendError(f"openai: {self._where()} returned no prompt token past the context's "
                               f"{len(context)} characters (text_offset {offsets[-5:]}...)")
        total = 0.0
        for i in picked:
            v = values[i]
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise BackendError(f"openai: {self._where()} gave no log-prob for prompt token {i} (got {v!r}); an "
                                   "empty context has no first-token log-prob")
            total += float(v)
        return total

    def identity(self) -> dict[str, Any]:
        info = self._model_info
        return {
            "backend": self.name, "host": self.host, "model": self.model, "seed": self.seed, "format": self.format,
            "concurrency": self.concurrency, "options": self.options,
            "model_info": {k: v for k, v in info.items() if k != "permission"},
            "api_key_set": self.__key is not None,
            "retries": self.retries, "max_wait": self.max_wait,
            "loglikelihood_tokenization": "the server's (whole context + continuation, split by text_offset)",
            "requests_version": requests.__version__,
        }


def response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """``response_format`` for a JSON schema: strict structured output, named after the schema's title."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "reply"))[:64]
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def continuation_tokens(offsets: Sequence[Any], context_chars: int, prompt_chars: int,
                        text_chars: int | None = None) -> list[int]:
    """Indices of the prompt tokens that cover characters ``[context_chars, prompt_chars)``.

    Token i spans ``[offsets[i], next larger offset)`` (the last one up to ``text_chars``, the echoed text's length);
    tokens at the same offset (a character split into several byte tokens) go with the character they start. A token
    that straddles the boundary is the continuation's; tokens at or past ``prompt_chars`` (generated ones, from a
    server that generates despite ``max_tokens: 0``) are left out."""
    offs = [int(o) for o in offsets]
    end_text = prompt_chars if text_chars is None else text_chars
    picked = []
    for i, start in enumerate(offs):
        if start >= prompt_chars:
            break
        end = next((o for o in offs[i + 1:] if o > start), end_text)
        if end > context_chars:
            picked.append(i)
    return picked


def _messages(chat: Chat) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in chat]


def _retry_after(value: str | None) -> float | None:
    from crawler.http import retry_after_seconds  # the crawler's parsing: delay-seconds or an HTTP-date

    return retry_after_seconds(value)


def _server_time(data: dict[str, Any], resp: requests.Response) -> tuple[float | None, str | None]:
    timings = data.get("timings")  # llama.cpp server
    if isinstance(timings, dict):
        ms = [timings.get(k) for k in ("prompt_ms", "predicted_ms")]
        if all(isinstance(v, (int, float)) for v in ms):
            return (ms[0] + ms[1]) / 1000, "timings"  # type: ignore[operator]
    header = resp.headers.get("openai-processing-ms")
    if header is not None:
        try:
            return float(header) / 1000, "openai-processing-ms"
        except ValueError:
            pass
    return resp.elapsed.total_seconds(), "round_trip"


def _root_cause(e: BaseException) -> str:
    """The innermost reason of a requests error, one short line (the URL is named by the caller)."""
    seen = e
    while True:
        nxt = seen.__cause__ or seen.__context__
        if nxt is None and seen.args and isinstance(seen.args[0], BaseException):
            nxt = seen.args[0]
        if nxt is None or nxt is seen:
            break
        seen = nxt
    reason = getattr(seen, "reason", None)
    text = str(reason if isinstance(reason, BaseException) else seen)
    text = re.sub(r"<[^>]*>: ", "", text)
    text = " ".join(text.split())
    return f"{type(e).__name__}: {text[:160]}"


__all__ = ["DEFAULT_HOST", "FORMATS", "KEY_ENV", "HTTPStatusError", "OpenAIBackend", "RateLimitedError",
           "continuation_tokens", "response_format"]

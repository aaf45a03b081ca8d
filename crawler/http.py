"""Polite HTTP for Naver: browser headers, a delay between requests, retries with backoff, a budget, a cache.

Every attempt at a URL — a 429/5xx answer, a timeout or reset, a body cut short, an answer the caller's parser
rejects — spends one retry of one urllib3 :class:`~urllib3.util.retry.Retry` policy, so a URL costs at most
``1 + retries`` requests in all, and each one counts against ``max_requests``. The adapter itself never retries: the
loop in :meth:`Fetcher.get` does, so that it can look at each answer. ``Retry-After`` is honoured up to
``max_wait`` seconds; a longer one stops the crawl with :class:`~crawler.errors.RateLimited` instead of sleeping for
hours, and one that cannot be read is ignored (plain backoff). Blocks are never retried: they raise
:class:`~crawler.errors.BlockedError` at once. An answer still unreadable when the retries run out raises
:class:`~crawler.errors.UnparseableResponse` naming the URL, status, content type and the body's first characters.
"""
from __future__ import annotations

import email.utils
import hashlib
import json
import math
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import requests
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from crawler.errors import BudgetExceeded, FetchError, ParseError, RateLimited, UnparseableResponse
from crawler.sources.blocks import check_response, interstitial
from crawler.sources.board_html import decode_html

BASE_URL_ENV = "KOFINSENT_NAVER_BASE_URL"
NAVER_HOSTS = frozenset({
    "finance.naver.com", "stock.naver.com", "m.stock.naver.com", "api.stock.naver.com",
    "api.finance.naver.com", "fchart.stock.naver.com",
})
# A desktop Chrome UA: finance.naver.com answers non-browser agents with a block page (since 2021-01-07).
BROWSER_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
RETRY_STATUSES = (429, 500, 502, 503, 504)

T = TypeVar("T")


@dataclass
class HttpConfig:
    """Politeness and retry settings. Defaults are for the live site; tests pass ``delay=0``."""

    delay: float = 0.7          # minimum seconds between the starts of two requests
    jitter: float = 0.05        # extra random wait, as a fraction of ``delay`` (0.05 -> up to +35 ms at 0.7 s)
    timeout: float = 15.0       # seconds, connect and read
    retries: int = 5            # per URL, for every kind of failure together: at most 1 + retries requests
    backoff: float = 2.0        # urllib3 backoff_factor: waits 0, 2·2, 2·4, ... seconds (at least ``delay``)
    backoff_max: float = 120.0
    max_wait: float = 300.0     # longest Retry-After honoured; a longer one stops the crawl (RateLimited)
    max_requests: int | None = None  # request budget for the whole Fetcher, retries included; None = unlimited
    cache_dir: Path | None = None    # on-disk cache of good responses; None = off
    base_url: str | None = None      # send every Naver request to this origin (mirror, replay site, tests)
    user_agent: str = BROWSER_UA

    def __post_init__(self) -> None:
        # Names as the CLI spells them: these values come from its options and from experiment configs.
        _check_number("--delay", self.delay, minimum=0.0)
        _check_number("--jitter", self.jitter, minimum=0.0)
        _check_number("--timeout", self.timeout, minimum=0.0, strict=True)
        _check_number("--backoff", self.backoff, minimum=0.0)
        _check_number("--backoff-max", self.backoff_max, minimum=0.0)
        _check_number("--max-wait", self.max_wait, minimum=0.0)
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"--retries must be an integer >= 0, got {self.retries!r}")
        if self.max_requests is not None and (isinstance(self.max_requests, bool)
                                              or not isinstance(self.max_requests, int) or self.max_requests < 1):
            raise ValueError(f"--max-requests must be an integer >= 1, got {self.max_requests!r}")
        if self.base_url is None:
            self.base_url = os.environ.get(BASE_URL_ENV) or None
        if self.base_url is not None:
            parts = urlsplit(self.base_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"base URL must look like http://host:port, got {self.base_url!r}")


def _check_number(option: str, value: float, minimum: float, strict: bool = False) -> None:
    """A finite number >= ``minimum`` (> with ``strict``). NaN passes every ``<`` test, so it is named here."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        raise ValueError(f"{option} must be a finite number {'>' if strict else '>='} {minimum:g}, got {value!r}")


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for: delay-seconds or an HTTP-date (RFC 9110 §10.2.3; a date in the
    past is 0). Anything else — negative, garbage, a date that does not parse — is None: ignored, never fatal."""
    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class PoliteRetry(Retry):
    """urllib3 Retry whose backoff never drops below the politeness delay (urllib3 retries the first time at once)."""

    def __init__(self, *args: Any, min_backoff: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.min_backoff = min_backoff

    def new(self, **kw: Any) -> "PoliteRetry":
        new = super().new(**kw)
        new.min_backoff = self.min_backoff
        return new

    def get_backoff_time(self) -> float:
        return max(self.min_backoff, super().get_backoff_time())


@dataclass
class Response:
    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    from_cache: bool = False

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type") or self.headers.get("content-type")

    def text(self, encoding: str | None = None) -> str:
        """Decode with the given encoding, else the header's charset, else UTF-8 (HTML pages use decode_html)."""
        ct = self.content_type or ""
        if encoding is None and "charset=" in ct:
            encoding = ct.split("charset=", 1)[1].split(";")[0].strip().strip('"') or None
        return self.body.decode(encoding or "utf-8", errors="replace")


@dataclass
class FetchStats:
    requests: int = 0      # HTTP requests sent, retries included
    cache_hits: int = 0
    retries: int = 0
    waited_s: float = 0.0  # time spent sleeping for politeness
    backoff_s: float = 0.0  # time spent sleeping between attempts (backoff and Retry-After)
    by_status: dict[int, int] = field(default_factory=dict)


class Fetcher:
    """GET with politeness, retries, a budget and an optional cache. Thread-safe enough for one crawl thread."""

    def __init__(self, config: HttpConfig | None = None, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self.config = config or HttpConfig()
        self.stats = FetchStats()
        self._sleep, self._clock = sleep, clock
        self._rng = rng or random.Random()
        self._next_allowed = 0.0
        self._lock = threading.Lock()
        self.session = requests.Session()
        self.session.headers.update({
            "User-Agent": self.config.user_agent,
            "Accept-Language": "ko-KR,ko;q=0.9,en;q=0.5",
        })
        # requests' default adapter does not retry: every attempt goes through get()'s loop and its one budget.

    def _retry(self) -> PoliteRetry:
        """The policy for one URL: ``retries`` attempts beyond the first, whatever went wrong."""
        c = self.config
        return PoliteRetry(
            total=c.retries, backoff_factor=c.backoff, backoff_max=c.backoff_max, status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET"}), respect_retry_after_header=True, raise_on_status=False,
            raise_on_redirect=False, redirect=0, min_backoff=c.delay,
        )

    # -- URL handling ----------------------------------------------------------------------------------------------
    def rewrite(self, url: str) -> str:
        """Send a Naver URL to ``base_url`` when one is set, keeping path and query."""
        base = self.config.base_url
        if not base:
            return url
        parts = urlsplit(url)
        if parts.hostname not in NAVER_HOSTS:
            return url
        b = urlsplit(base)
        prefix = b.path.rstrip("/")
        return urlunsplit((b.scheme, b.netloc, prefix + parts.path, parts.query, ""))

    def check_reachable(self) -> None:
        """Fail fast with a clear error when ``base_url`` is set but nothing listens there."""
        base = self.config.base_url
        if not base:
            return
        b = urlsplit(base)
        port = b.port or (443 if b.scheme == "https" else 80)
        try:
            with socket.create_connection((b.hostname, port), timeout=min(self.config.timeout, 5.0)):
                pass
        except OSError as e:
            raise FetchError(f"cannot reach base URL {base}: {e.strerror or e}") from None

    # -- politeness ------------------------------------------------------------------------------------------------
    def _wait_turn(self) -> None:
        with self._lock:
            now = self._clock()
            wait = self._next_allowed - now
            if wait > 0:
                self._sleep(wait)
                self.stats.waited_s += wait
                now = self._next_allowed
            c = self.config
            self._next_allowed = now + c.delay + (self._rng.uniform(0, c.jitter * c.delay) if c.jitter else 0.0)

    def _spend(self, n: int = 1) -> None:
        budget = self.config.max_requests
        if budget is not None and self.stats.requests + n > budget:
            raise BudgetExceeded(
                f"request budget of {budget} spent ({self.stats.requests} sent); raise --max-requests to go on "
                "(the crawl resumes where it stopped)"
            )

    # -- cache -----------------------------------------------------------------------------------------------------
    def _cache_path(self, url: str) -> Path | None:
        if self.config.cache_dir is None:
            return None
        key = hashlib.sha256(url.encode()).hexdigest()
        return Path(self.config.cache_dir) / key[:2] / f"{key}.json"

    def _cache_get(self, url: str) -> Response | None:
        path = self._cache_path(url)
        if path is None or not path.exists():
            return None
        try:
            d = json.loads(path.read_text())
            return Response(d["url"], d["status"], d["headers"], bytes.fromhex(d["body"]), from_cache=True)
        except (ValueError, KeyError):
            return None  # a torn cache file is just a miss

    def _cache_put(self, url: str, resp: Response) -> None:
        path = self._cache_path(url)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": resp.url, "status": resp.status, "headers": dict(resp.headers),
                                   "body": resp.body.hex()}))
        os.replace(tmp, path)

    # -- the request ---------------------------------------------------------------------------------------------
    def get(self, url: str, params: Mapping[str, Any] | None = None, *, referer: str | None = None,
            accept: str | None = None, parse: Callable[[Response], T] | None = None) -> T | Response:
        """GET ``url`` (a real Naver URL; rewritten to ``base_url``) and return ``parse(response)`` or the response.

        At most ``1 + retries`` requests: 429/5xx answers, timeouts, resets, bodies cut short and ``parse`` raising
        :class:`ParseError` each spend one retry, after a backoff (or the ``Retry-After`` wait, up to ``max_wait``).
        Raises ``BlockedError`` at once on a block, ``RateLimited`` for a longer Retry-After, ``FetchError`` when
        the retries run out on errors, ``UnparseableResponse`` when they run out on answers ``parse`` rejects, and
        ``BudgetExceeded`` before a request past ``max_requests``.
        """
        full = url + ("?" + urlencode(params) if params else "")
        cached = self._cache_get(full)
        if cached is not None:
            self.stats.cache_hits += 1
            return parse(cached) if parse else cached
        headers = {"Referer": referer or "https://finance.naver.com/"}
        if accept:
            headers["Accept"] = accept
        target = self.rewrite(full)
        retry = self._retry()
        attempts = 0
        while True:
            attempts += 1
            try:
                resp, raw = self._send(target, headers)
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                    requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as e:
                if (retry := self._next_attempt(retry, target, error=e)) is None:
                    raise FetchError(f"{full}: gave up after {attempts} attempt(s) "
                                     f"({type(e).__name__}: {_root_cause(e)})") from None
                continue
            # Block pages are small; a real page is never read twice just to look for one.
            sniff = decode_html(resp.body, resp.content_type) if len(resp.body) < 20_000 else ""
            check_response(full, resp.status, sniff, resp.headers.get("Location"))
            if retry.is_retry("GET", resp.status, "Retry-After" in resp.headers):
                wait = self._retry_after(full, resp)
                if (retry := self._next_attempt(retry, target, response=raw, wait=wait)) is None:
                    raise FetchError(f"{full}: HTTP {resp.status} on all {attempts} attempt(s); the server is down "
                                     "or overloaded: run the same command later (it resumes), or raise --retries")
                continue
            if resp.status != 200:
                raise FetchError(f"{full}: HTTP {resp.status} ({resp.content_type or 'no Content-Type'}); "
                                 f"starts {_excerpt(sniff or resp.body)!r}")
            try:
                result = parse(resp) if parse else resp
            except ParseError as e:
                if (retry := self._next_attempt(retry, target, error=e)) is None:
                    raise _unparseable(full, resp, e, attempts) from None
                continue
            self._cache_put(full, resp)
            return result

    def _next_attempt(self, retry: PoliteRetry, target: str, *, error: Exception | None = None,
                      response: Any = None, wait: float | None = None) -> PoliteRetry | None:
        """``retry`` with one more attempt spent, after its backoff (or ``wait``); None when none is left."""
        try:
            retry = retry.increment(method="GET", url=target, error=error, response=response)
        except MaxRetryError:
            return None
        self.stats.retries += 1
        pause = wait if wait is not None else retry.get_backoff_time()
        if pause > 0:
            self._sleep(pause)
            self.stats.backoff_s += pause
        return retry

    def _retry_after(self, url: str, resp: Response) -> float | None:
        wait = retry_after_seconds(resp.headers.get("Retry-After"))
        if wait is not None and wait > self.config.max_wait:
            raise RateLimited(url, wait, self.config.max_wait)
        return wait

    def _send(self, target: str, headers: Mapping[str, str]) -> tuple[Response, Any]:
        """One request (after the politeness wait, counted against the budget): our Response and urllib3's."""
        self._spend()
        self._wait_turn()
        self.stats.requests += 1
        r = self.session.get(target, headers=headers, timeout=self.config.timeout, allow_redirects=False)
        self.stats.by_status[r.status_code] = self.stats.by_status.get(r.status_code, 0) + 1
        body = r.content
        location = r.headers.get("Location")
        if location:
            r.headers["Location"] = urljoin(target, location)
        return Response(r.url, r.status_code, r.headers, body), r.raw


def _excerpt(body: str | bytes, n: int = 160) -> str:
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    return " ".join(text.split())[:n]


def _unparseable(url: str, resp: Response, error: ParseError, attempts: int) -> UnparseableResponse:
    text = decode_html(resp.body[:4096], resp.content_type)
    seen = interstitial(text)
    if seen:
        hint = (f"It looks like {seen}: open the URL in a browser from the same network, wait before crawling "
                "again, lower the rate (--delay), or point --base-url at a mirror; the same command resumes")
    else:
        hint = ("The page layout may have changed: save this answer, compare it with the parser in crawler/sources/ "
                "and report it; committed pages are kept and the same command resumes once it is fixed")
    return UnparseableResponse(url, resp.status, resp.content_type, len(resp.body), _excerpt(text),
                               f"{error.what}: {error.detail}", hint, blocked=seen is not None, attempts=attempts)


def _root_cause(e: BaseException) -> str:
    while e.__context__ is not None and e.__context__ is not e:
        e = e.__context__
    if isinstance(e, MaxRetryError) and e.reason is not None:
        return str(e.reason)
    return str(e)

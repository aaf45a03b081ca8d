"""Polite HTTP for Naver: browser headers, a delay between requests, retries with backoff, a budget, a cache.

Transient failures (429 honouring Retry-After, 5xx, timeouts, connection resets) are retried by urllib3's ``Retry``
inside the adapter. A body cut short (``ChunkedEncodingError``) or one the caller's parser rejects as truncated is
retried here with the same ``Retry`` object, so one backoff policy covers both. Blocks are never retried: they raise
:class:`~crawler.errors.BlockedError` at once.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from .errors import BudgetExceeded, FetchError, ParseError
from .sources.blocks import check_response
from .sources.board_html import decode_html

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
    retries: int = 5            # per request, for every kind of transient failure together
    backoff: float = 2.0        # urllib3 backoff_factor: waits 0, 2·2, 2·4, ... seconds (at least ``delay``)
    backoff_max: float = 120.0
    max_requests: int | None = None  # request budget for the whole Fetcher; None = unlimited
    cache_dir: Path | None = None    # on-disk cache of good responses; None = off
    base_url: str | None = None      # send every Naver request to this origin (mirror, replay site, tests)
    user_agent: str = BROWSER_UA

    def __post_init__(self) -> None:
        if self.delay < 0 or self.jitter < 0:
            raise ValueError(f"delay and jitter must be >= 0, got delay={self.delay}, jitter={self.jitter}")
        if self.base_url is None:
            self.base_url = os.environ.get(BASE_URL_ENV) or None
        if self.base_url is not None:
            parts = urlsplit(self.base_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"base URL must look like http://host:port, got {self.base_url!r}")


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
    attempts: int = 1

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
        adapter = HTTPAdapter(max_retries=self._retry())
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def _retry(self) -> PoliteRetry:
        c = self.config
        return PoliteRetry(
            total=c.retries, connect=c.retries, read=c.retries, status=c.retries, other=c.retries,
            backoff_factor=c.backoff, backoff_max=c.backoff_max, status_forcelist=RETRY_STATUSES,
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

    # -- the request -----------------------------------------------------------------------------------------------
    def get(self, url: str, params: Mapping[str, Any] | None = None, *, referer: str | None = None,
            accept: str | None = None, parse: Callable[[Response], T] | None = None) -> T | Response:
        """GET ``url`` (a real Naver URL; rewritten to ``base_url``) and return ``parse(response)`` or the response.

        ``parse`` raising :class:`ParseError` on a body that came cut short is retried with the same backoff as
        transport errors; when retries run out the last error is raised. Blocks raise ``BlockedError`` at once.
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
        retry: Retry = self._retry()
        while True:
            try:
                resp = self._send(target, headers)
                # Block pages are small; a real page is never read twice just to look for one.
                sniff = decode_html(resp.body, resp.content_type) if len(resp.body) < 20_000 else ""
                check_response(full, resp.status, sniff, resp.headers.get("Location"))
                if resp.status != 200:
                    raise FetchError(f"{full}: HTTP {resp.status} after {resp.attempts} attempt(s)")
                result = parse(resp) if parse else resp
            except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError,
                    ParseError) as e:
                try:
                    retry = retry.increment(method="GET", url=target, error=e)
                except MaxRetryError:
                    if isinstance(e, ParseError):
                        raise
                    raise FetchError(f"{full}: body cut short on every attempt ({e})") from None
                self.stats.retries += 1
                retry.sleep()
                continue
            self._cache_put(full, resp)
            return result

    def _send(self, target: str, headers: Mapping[str, str]) -> Response:
        self._spend()
        self._wait_turn()
        try:
            r = self.session.get(target, headers=headers, timeout=self.config.timeout, allow_redirects=False)
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError):
            self.stats.requests += 1  # a body cut short: the caller's loop retries it
            raise
        except requests.exceptions.RetryError as e:
            raise FetchError(f"{target}: gave up after {self.config.retries} retries ({e})") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
            self.stats.requests += self.config.retries + 1
            raise FetchError(f"{target}: gave up after {self.config.retries} retries "
                             f"({type(e).__name__}: {_root_cause(e)})") from None
        history = len(r.raw.retries.history) if getattr(r.raw, "retries", None) else 0
        self.stats.requests += 1 + history
        self.stats.retries += history
        self.stats.by_status[r.status_code] = self.stats.by_status.get(r.status_code, 0) + 1
        body = r.content
        location = r.headers.get("Location")
        if location:
            r.headers["Location"] = urljoin(target, location)
        return Response(r.url, r.status_code, r.headers, body, attempts=1 + history)


def _root_cause(e: BaseException) -> str:
    while e.__context__ is not None and e.__context__ is not e:
        e = e.__context__
    if isinstance(e, MaxRetryError) and e.reason is not None:
        return str(e.reason)
    return str(e)

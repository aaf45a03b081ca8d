"""Typed errors. Each message says what was seen and what to try, so a CLI can print it as one line.

Every error carries the line prefix and the exit status a command ends with, so the crawler's CLI and ``kofinsent
run`` report one failure the same way: 2 for what the user can fix here (input, the db, the disk), 3 for a stop the
server caused (a block, a rate limit, an answer that cannot be read); after either, the same command resumes.
"""
from __future__ import annotations

import math


class CrawlerError(Exception):
    """Base class: every error the crawler raises on purpose."""

    prefix = "error"
    exit_code = 2


class ServerStop(CrawlerError):
    """The server, not the user, ended the crawl; committed pages are kept and the same command resumes."""

    exit_code = 3


class BlockedError(ServerStop):
    """The site answered with a block page, a 403 or a redirect to the new SPA instead of data.

    Never to be read as "no posts": a crawl that hits it stops and stores nothing from that response.
    """

    prefix = "blocked"

    def __init__(self, url: str, seen: str, hint: str) -> None:
        self.url, self.seen, self.hint = url, seen, hint
        super().__init__(f"{url}: {seen}. {hint}. Nothing from that response was stored; committed pages are kept "
                         "and the same command resumes")


class RateLimited(ServerStop):
    """The server asked (Retry-After) for a longer wait than the crawl may sleep (``max_wait``)."""

    prefix = "rate-limited"

    def __init__(self, url: str, wait_s: float, max_wait_s: float) -> None:
        self.url, self.wait_s, self.max_wait_s = url, wait_s, max_wait_s
        # The exact line the CLI prints; the URL and the limit stay on the exception for callers that want them.
        super().__init__(f"the server asked for a wait of {math.ceil(wait_s)} s (Retry-After); run the same command "
                         "later to resume")


class UnparseableResponse(ServerStop):
    """An answer that still could not be read after every attempt: a captcha or login page with HTTP 200, an error
    body where data was expected, a changed layout. ``blocked`` tells an interstitial from a layout change."""

    def __init__(self, url: str, status: int, content_type: str | None, size: int, excerpt: str, detail: str,
                 hint: str, blocked: bool, attempts: int) -> None:
        self.url, self.status, self.content_type, self.detail = url, status, content_type, detail
        self.prefix = "blocked" if blocked else "error"
        super().__init__(f"{url}: HTTP {status}, {content_type or 'no Content-Type'}, {size:,} bytes, unreadable on "
                         f"all {attempts} attempt(s): {detail}; starts {excerpt!r}. {hint}")


class ParseError(CrawlerError):
    """A page or JSON body did not have the shape the parser knows."""

    def __init__(self, what: str, detail: str, snippet: str = "") -> None:
        self.what, self.detail = what, detail
        snippet = " ".join(snippet.split())[:120]
        super().__init__(f"cannot parse {what}: {detail}" + (f" (starts: {snippet!r})" if snippet else ""))


class FetchError(ServerStop):
    """A request failed after every retry (or the base URL cannot be reached)."""


class BudgetExceeded(CrawlerError):
    """The request budget given with ``max_requests`` ran out."""


class StoreError(CrawlerError):
    """The database cannot be used: not a kofinsent crawler db, from a newer schema, corrupted, not writable, a
    directory, or the disk is full. The message names the path and what to do."""

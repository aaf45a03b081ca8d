"""Typed errors. Each message says what was seen and what to try, so a CLI can print it as one line."""
from __future__ import annotations


class CrawlerError(Exception):
    """Base class: every error the crawler raises on purpose."""


class BlockedError(CrawlerError):
    """The site answered with a block page, a 403 or a redirect to the new SPA instead of data.

    Never to be read as "no posts": a crawl that hits it stops and stores nothing from that response.
    """

    def __init__(self, url: str, seen: str, hint: str) -> None:
        self.url, self.seen, self.hint = url, seen, hint
        super().__init__(f"{url}: {seen}. {hint}")


class ParseError(CrawlerError):
    """A page or JSON body did not have the shape the parser knows."""

    def __init__(self, what: str, detail: str, snippet: str = "") -> None:
        self.what, self.detail = what, detail
        snippet = " ".join(snippet.split())[:120]
        super().__init__(f"cannot parse {what}: {detail}" + (f" (starts: {snippet!r})" if snippet else ""))


class FetchError(CrawlerError):
    """A request failed after every retry (or the base URL cannot be reached)."""


class BudgetExceeded(CrawlerError):
    """The request budget given with ``max_requests`` ran out."""


class StoreError(CrawlerError):
    """The database file is not a kofinsent crawler database, or is from a newer schema."""

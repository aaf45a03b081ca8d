"""Recognise answers that are a block or a dead source rather than data (§0.3 and §1 of naver-sources.md).

A block must never be read as "no posts": :func:`check_response` raises :class:`BlockedError` so the crawl stops and
stores nothing from that response. Transient statuses (429, 5xx) are not blocks; the fetcher retries them.
"""
from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

from crawler.errors import BlockedError

BLOCK_PAGE_MAX_CHARS = 20_000  # real board pages are far larger; the block page is about 2.7 KB
BLOCK_PHRASES = ("페이지를 찾을 수 없습니다", "접근이 차단되었습니다")

HINT_BLOCKED = ("send a browser User-Agent, crawl from a Korean IP, lower the rate (--delay), "
                "or point --base-url at a mirror")
HINT_SPA = "the legacy board is gone; use --source api"

# Interstitials that come with HTTP 200 and fail the parser rather than the block check: a captcha, a login wall,
# an error object where the API's data should be. Matched case-insensitively on the body's first few KB.
_INTERSTITIALS = (
    ("a captcha page", re.compile(r"captcha|자동입력\s*방지|보안\s*문자|자동\s*등록\s*방지", re.I)),
    ("a login page", re.compile(r"LOGIN_REQUIRED|nidlogin|로그인이\s*필요|로그인\s*후|please\s+log\s*in", re.I)),
    ("an error answer from the API", re.compile(r'^\s*\{[^{}]{0,400}"(?:code|detailCode|errorCode|error)"\s*:', re.I)),
)

_SPA_PATH = re.compile(r"/domestic/stock/[^/]+/discussion")
_LEGACY_BOARD = re.compile(r"/item/board\.(?:naver|nhn)")


def check_response(url: str, status: int, body: str, location: str | None) -> None:
    """Raise :class:`BlockedError` if the answer to ``url`` is a block or a redirect to the new SPA; else None.

    ``url``: the Naver URL asked for; ``body``: the decoded body (may be "" when not sniffed); ``location``: the
    Location header of a 3xx, absolute or relative.
    """
    if status == 403:
        raise BlockedError(url, "HTTP 403 (a persistent block)", HINT_BLOCKED)
    if 300 <= status < 400 and location:
        target = urljoin(url, location)
        parts = urlsplit(target)
        to_spa = bool(_SPA_PATH.search(parts.path))
        legacy_to_new_site = bool(_LEGACY_BOARD.search(urlsplit(url).path)) and (
            parts.hostname or "").endswith("stock.naver.com")
        if to_spa or legacy_to_new_site:
            raise BlockedError(url, f"HTTP {status} redirect to the new SPA page {target}", HINT_SPA)
        return None
    if status == 200 and body and len(body) < BLOCK_PAGE_MAX_CHARS:
        phrase = next((p for p in BLOCK_PHRASES if p in body), None)
        if phrase is None or "board_read" in body or body.lstrip("\ufeff \t\r\n").startswith(("{", "[")):
            return None
        raise BlockedError(url, f"HTTP 200 block page saying {phrase!r} ({len(body):,} chars)", HINT_BLOCKED)
    return None


def interstitial(body: str) -> str | None:
    """What an unparseable answer looks like when it looks like a wall rather than a changed layout: "a captcha
    page", "a login page" or "an error answer from the API"; else None."""
    head = body[:8192]
    return next((name for name, pattern in _INTERSTITIALS if pattern.search(head)), None)


__all__ = ["BLOCK_PHRASES", "HINT_BLOCKED", "HINT_SPA", "check_response", "interstitial"]

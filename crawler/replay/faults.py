"""Fault injection for the replay site: which request fails and how (:class:`Fault`, :class:`FaultPlan`), the bodies
that answer in place of a page (status codes with ``Retry-After``, block, captcha, login and changed-layout pages,
the redirect to the new SPA), and posts that a ``short`` page hides from then on.

A crawler meets each of these on the live site; the tests use them to prove it stops, retries or resumes as the README
says. The server consults the plan once per request, before routing.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

from crawler.records import Post
from crawler.replay.render import (
    API_PATH,
    CHANGED_API_BODY,
    CHANGED_BOARD_PAGE,
    LOGIN_REQUIRED_BODY,
    SPA_URL,
    Response,
    html_response,
    render_block_page,
    render_captcha_page,
)

FAULT_KINDS = ("429", "500", "503", "slow", "reset", "truncate", "block", "403", "spa_redirect", "short", "captcha",
               "login", "layout")


@dataclass
class Fault:
    """One rule: among requests whose path contains ``path`` (1-based counter per rule), fire on request numbers in
    ``at`` and/or every ``every``-th one (neither: every request), at most ``times`` times in all.

    Kinds: ``429`` and ``503`` (Retry-After: ``retry_after`` seconds rounded up to an integer, or the header text
    as given when it is a str, e.g. a date or garbage), ``500``, ``403``, ``slow`` (sleep ``delay`` s, then answer
    normally), ``reset`` (RST without a response), ``truncate`` (full Content-Length, half the body, then close),
    ``block`` (HTTP 200 block page), ``spa_redirect`` (302 to the new SPA page of the request's code), ``short``
    (a list page — API or board — that shows only its first ``keep`` posts: the rest are hidden from then on, as
    posts deleted or hidden after indexing, without refilling the page; the API's ``lastOffset`` still points past
    them; :attr:`ReplayServer.hidden` records them), ``captcha`` (HTTP 200 captcha interstitial), ``login``
    (HTTP 200 ``{"code":"LOGIN_REQUIRED"}``) and ``layout`` (HTTP 200 in a changed layout: JSON without ``posts``
    for the API, HTML without the board table elsewhere). A fired fault consumes the request.
    """

    kind: str
    path: str = ""
    at: set[int] | None = None
    every: int | None = None
    times: int | None = None
    retry_after: float | str | None = None
    delay: float = 0.0
    keep: int = 0
    seen: int = field(default=0, init=False, repr=False, compare=False)   # matching requests so far
    fired: int = field(default=0, init=False, repr=False, compare=False)  # times this rule answered

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {', '.join(FAULT_KINDS)}")
        if self.every is not None and self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.at is not None:
            self.at = set(self.at)
        if self.keep < 0:
            raise ValueError(f"keep must be >= 0, got {self.keep}")

    def _fires(self, n: int) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.at is not None and n in self.at:
            return True
        if self.every is not None and n % self.every == 0:
            return True
        return self.at is None and self.every is None


class FaultPlan:
    """Rules applied in order: every rule whose ``path`` matches counts the request; the first that fires wins.
    Counters live in the plan: give each server its own plan (or call :meth:`reset`)."""

    def __init__(self, rules: Iterable[Fault] = ()) -> None:
        self.rules = list(rules)
        self._lock = threading.Lock()

    def match(self, path: str) -> Fault | None:
        with self._lock:
            hit = None
            for rule in self.rules:
                if rule.path not in path:
                    continue
                rule.seen += 1
                if hit is None and rule._fires(rule.seen):
                    rule.fired += 1
                    hit = rule
            return hit

    def reset(self) -> None:
        with self._lock:
            for rule in self.rules:
                rule.seen = rule.fired = 0

    def __repr__(self) -> str:
        return f"FaultPlan({self.rules!r})"



# Kinds that change how the normal answer goes out (late, cut short, with posts missing) rather than replace it.
PASSIVE_KINDS = ("slow", "truncate", "short")
_REASONS = {"429": "Too Many Requests", "500": "Internal Server Error", "503": "Service Unavailable",
            "403": "Forbidden"}


def fault_response(fault: Fault | None, path: str, query: dict[str, str]) -> Response | None:
    """The answer that replaces the page, or None when the page goes out (no fault, or a passive one).
    ``reset`` has no answer at all: the server drops the connection before asking."""
    kind = fault.kind if fault is not None else None
    if fault is None or kind in PASSIVE_KINDS:
        return None
    if kind in _REASONS:
        headers = [("Content-Type", "text/html; charset=UTF-8")]
        if kind in ("429", "503") and fault.retry_after is not None:
            ra = fault.retry_after
            headers.append(("Retry-After", ra if isinstance(ra, str) else str(max(0, math.ceil(ra)))))
        return Response(int(kind), headers, f"<html><body><h1>{kind} {_REASONS[kind]}</h1></body></html>".encode())
    if kind == "block":
        return html_response(200, render_block_page())
    if kind == "spa_redirect":
        return spa_redirect(query)
    if kind == "captcha":
        return html_response(200, render_captcha_page())
    json_type = [("Content-Type", "application/json;charset=UTF-8")]
    if kind == "login":
        return Response(200, json_type, LOGIN_REQUIRED_BODY.encode("utf-8"))
    if kind == "layout":
        if path == API_PATH:
            return Response(200, json_type, CHANGED_API_BODY.encode("utf-8"))
        return html_response(200, CHANGED_BOARD_PAGE)
    raise AssertionError(kind)


def spa_redirect(query: dict[str, str]) -> Response:
    """The 302 the live board has answered since about 2026-09: to the new SPA page of the request's code."""
    code = query.get("code") or query.get("itemCode") or query.get("symbol") or "000000"
    return Response(302, [("Location", SPA_URL.format(code=quote(code))),
                          ("Content-Type", "text/html; charset=UTF-8")], b"")


def shown_posts(page: list[Post], keep: int | None, hidden: set[int]) -> list[Post]:
    """The posts of a list page as shown: hidden ones left out, nothing refilled in their place. ``keep`` (a
    ``short`` fault) hides every post after the first ``keep`` for good, by adding their ids to ``hidden``."""
    if keep is not None:
        hidden.update(p.nid for p in page[keep:] if p.nid not in hidden)
    return [p for p in page if p.nid not in hidden]

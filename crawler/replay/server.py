"""The HTTP side of the replay site: :class:`ReplayServer` serves a :class:`~crawler.replay.forum.SyntheticForum` on
127.0.0.1 over real sockets, routing by path only (the crawler's ``--base-url`` rewrites every Naver host to this
origin and keeps the path and query), and logs every request it answered.
"""
from __future__ import annotations

import math
import random
import socket
import struct
import threading
import time as _time
from bisect import bisect_left
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qsl, urlsplit

from crawler.loopback import LoopbackHTTPServer, LoopbackServer
from crawler.records import Post, PriceBar
from crawler.replay.faults import FaultPlan, fault_response, shown_posts, spa_redirect
from crawler.replay.forum import PHRASES, SyntheticForum
from crawler.replay.render import (
    API_BOOLEANS,
    API_DEFAULT_PAGE_SIZE,
    API_MAX_PAGE_SIZE,
    API_PATH,
    API_REQUIRED,
    BOARD_PAGE_SIZE,
    BOARD_PATHS,
    FCHART_PATH,
    MARKET_SUM_PAGE_SIZE,
    MARKET_SUM_PATHS,
    NEWEST_OFFSET,
    SISE_JSON_PATH,
    Response,
    html_response,
    missing_parameter,
    render_api_error,
    render_api_page,
    render_block_page,
    render_board_page,
    render_fchart,
    render_market_sum,
    render_sise_json,
)


class _RequestTuple(NamedTuple):
    method: str
    path: str
    query: dict[str, str]
    status: int


class LoggedRequest(_RequestTuple):
    """One request as the server saw it: a 4-tuple ``(method, path, query, status)``. ``status`` is what was sent
    (0 for a reset); the extra attribute ``fault`` names the fault kind that answered it, or None."""

    fault: str | None

    def __new__(cls, method: str, path: str, query: dict[str, str], status: int,
                fault: str | None = None) -> Self:
        self = super().__new__(cls, method, path, query, status)
        self.fault = fault
        return self


class _HTTPServer(LoopbackHTTPServer):
    allow_reuse_address = True
    owner: ReplayServer

    def __init__(self, addr: tuple[str, int], replay: ReplayServer) -> None:
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(addr, _Handler, replay)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        with self.sockets_lock:
            self.open_sockets.add(sock)
        return sock, addr

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out or hang up are expected here

    def server_close(self) -> None:
        super().server_close()
        with self.sockets_lock:
            socks = list(self.open_sockets)
        for s in socks:  # idle keep-alive connections: end them so their threads exit
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def do_GET(self) -> None:
        self.server.owner._handle(self, "GET")

    def do_HEAD(self) -> None:
        self.server.owner._handle(self, "HEAD")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ReplayServer(LoopbackServer):
    """Serves a :class:`SyntheticForum` on ``127.0.0.1`` (port 0 = any free port) from a daemon thread.

    ``charset``: the board pages' encoding, ``"euc-kr"`` (cp949 bytes; the charset only in ``<meta>``, the header
    says ``text/html``) or ``"utf-8"`` (charset in the header too). ``board_redirects_to_spa``: the board answers 302
    to the new SPA as the live site has since about 2026-09. ``live_posts_per_request``: before every board or API
    request for a stock, that many newer posts arrive (pages shift mid-crawl); :meth:`add_posts` does it by hand.
    ``block_non_browser_ua``: answer the block page to requests whose User-Agent lacks "Mozilla".

    New posts live in the server (copy-on-write), never in the shared forum object.
    """

    thread_name = "replay"

    def __init__(self, forum: SyntheticForum, *, charset: str = "euc-kr", faults: FaultPlan | None = None,
                 board_redirects_to_spa: bool = False, live_posts_per_request: int = 0,
                 block_non_browser_ua: bool = False, port: int = 0, host: str = "127.0.0.1") -> None:
        cs = charset.lower().replace("_", "-")
        if cs in ("euc-kr", "euckr", "cp949"):
            cs = "euc-kr"
        elif cs in ("utf-8", "utf8"):
            cs = "utf-8"
        else:
            raise ValueError(f"charset must be 'euc-kr' or 'utf-8', got {charset!r}")
        super().__init__(port=port, host=host)
        self.forum = forum
        self.charset = cs
        self.faults = faults
        self.board_redirects_to_spa = board_redirects_to_spa
        self.live_posts_per_request = live_posts_per_request
        self.block_non_browser_ua = block_non_browser_ua
        self.requests: list[LoggedRequest] = []
        self.hidden: set[int] = set()  # post ids a ``short`` fault hid: the board no longer shows them
        self._log_lock = threading.Lock()
        self._posts_lock = threading.Lock()
        self._posts: dict[str, list[Post]] = dict(forum.posts)
        self._nids: dict[str, list[int]] = dict(forum.nids)
        self._normal: dict[str, list[Post]] = {}
        self._live_rng = random.Random(f"{forum.seed}:live")
        self._last_nid = forum.last_nid
        self._now = forum.now

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def make_server(self) -> _HTTPServer:
        return _HTTPServer((self.host, self.port), self)

    @property
    def url(self) -> str:
        if not self.running:
            raise RuntimeError("the replay server is not running; call start()")
        return self.origin

    # -- request log ----------------------------------------------------------------------------------------------
    def count(self, path_substring: str = "") -> int:
        """Requests so far (faulted ones included) whose path contains ``path_substring``."""
        with self._log_lock:
            return sum(1 for r in self.requests if path_substring in r.path)

    def clear_log(self) -> None:
        with self._log_lock:
            self.requests.clear()

    def _log(self, method: str, path: str, query: dict[str, str], status: int, fault: str | None = None) -> None:
        with self._log_lock:
            self.requests.append(LoggedRequest(method, path, query, status, fault))

    # -- live posts -----------------------------------------------------------------------------------------------
    def add_posts(self, code: str, n: int) -> list[Post]:
        """Append ``n`` new normal posts to ``code`` with ids above every existing id and times after the newest."""
        if code not in self.forum.codes:
            raise KeyError(f"unknown code {code!r}")
        r = self._live_rng
        with self._posts_lock:
            new = []
            for _ in range(n):
                self._last_nid += 1 + r.randrange(0, 20)
                self._now += timedelta(seconds=r.randrange(5, 120))
                author = "".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(4)) + "****"
                new.append(Post(code, self._last_nid, self._now, r.choice(PHRASES), author,
                                r.randrange(1, 200), r.randrange(0, 5), r.randrange(0, 3), 0, False))
            self._posts[code] = self._posts.get(code, []) + new
            self._nids[code] = self._nids.get(code, []) + [p.nid for p in new]
            self._normal[code] = self._normal_list(code) + new
            return new

    def _normal_list(self, code: str) -> list[Post]:
        got = self._normal.get(code)
        if got is None:
            got = self.forum.normal_posts(code)
        return got

    def posts(self, code: str) -> list[Post]:
        """Every post of ``code`` as this server serves it (the forum's plus any added), ascending nid."""
        return self._posts.get(code, [])

    def now(self) -> datetime:
        return self._now

    # -- dispatch -------------------------------------------------------------------------------------------------
    def _handle(self, h: _Handler, method: str) -> None:
        split = urlsplit(h.path)
        path = split.path
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        fault = self.faults.match(path) if self.faults is not None else None
        kind = fault.kind if fault else None
        try:
            if kind == "reset":
                self._log(method, path, query, 0, kind)
                h.close_connection = True
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                h.connection.close()
                return
            resp = fault_response(fault, path, query)
            if resp is None:
                if self.block_non_browser_ua and "Mozilla" not in (h.headers.get("User-Agent") or ""):
                    resp = html_response(200, render_block_page())
                else:
                    resp = self._route(path, query, keep=fault.keep if kind == "short" else None)
            self._log(method, path, query, resp.status, kind)
            if kind == "slow":
                _time.sleep(fault.delay)  # type: ignore[union-attr]
            h.send_response(resp.status)
            for k, v in resp.headers:
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(resp.body)))
            if kind == "truncate":
                h.send_header("Connection", "close")
            h.end_headers()
            if method == "HEAD":
                return
            if kind == "truncate":
                h.wfile.write(resp.body[: len(resp.body) // 2])
                h.wfile.flush()
                h.close_connection = True
                return
            h.wfile.write(resp.body)
        except OSError:
            h.close_connection = True  # the client hung up (e.g. a timeout during a slow answer)

    def _route(self, path: str, query: dict[str, str], keep: int | None = None) -> Response:
        """``keep``: show only the first ``keep`` posts of a list page and hide the rest (a ``short`` fault)."""
        if path == API_PATH:
            return self._api(query, keep)
        if path in BOARD_PATHS:
            return self._board(query, keep)
        if path == SISE_JSON_PATH:
            return self._sise_json(query)
        if path == FCHART_PATH:
            return self._fchart(query)
        if path in MARKET_SUM_PATHS:
            return self._market_sum(query)
        return Response(404, [("Content-Type", "text/plain; charset=UTF-8")], b"404 Not Found\n")

    # -- routes ---------------------------------------------------------------------------------------------------
    def _live(self, code: str) -> None:
        if self.live_posts_per_request > 0 and code in self.forum.codes:
            self.add_posts(code, self.live_posts_per_request)

    def _hide(self, page: list[Post], keep: int | None) -> list[Post]:
        with self._posts_lock:
            return shown_posts(page, keep, self.hidden)

    def _api(self, q: dict[str, str], keep: int | None = None) -> Response:
        errors: dict[str, str] = {}
        for name in API_REQUIRED:
            if not q.get(name):
                errors[name] = missing_parameter(name, "Boolean" if name in API_BOOLEANS else "String")
        dtype = q.get("discussionType")
        if dtype and dtype not in ("domesticStock", "DOMESTIC_STOCK"):
            errors["discussionType"] = f"invalid value '{dtype}'"
        for name in API_BOOLEANS:
            v = q.get(name)
            if v and v not in ("true", "false"):
                errors[name] = f"invalid boolean '{v}'"
        page_size = API_DEFAULT_PAGE_SIZE
        if "pageSize" in q:
            try:
                page_size = int(q["pageSize"])
                if not 1 <= page_size <= API_MAX_PAGE_SIZE:
                    errors["pageSize"] = f"must be between 1 and {API_MAX_PAGE_SIZE}"
            except ValueError:
                errors["pageSize"] = f"invalid number '{q['pageSize']}'"
        offset = q.get("offset") or NEWEST_OFFSET
        below: int | None = None
        if offset != NEWEST_OFFSET:
            try:
                below = abs(int(offset))
            except ValueError:
                errors["offset"] = f"invalid number '{offset}'"
        if errors:
            body = render_api_error(errors).encode("utf-8")
            return Response(400, [("Content-Type", "application/json")], body)

        code = q["itemCode"]
        self._live(code)
        with self._posts_lock:
            posts, nids = self._posts.get(code, []), self._nids.get(code, [])
        i = len(nids) if below is None else bisect_left(nids, below)
        cleanbot_only = q.get("isCleanbotPassedOnly") == "true"
        no_news = q.get("excludesItemNews") == "true"
        news_only = q.get("isItemNewsOnly") == "true"
        holder_only = q.get("isHolderOnly") == "true"
        news = self.forum.news
        page: list[Post] = []
        while i > 0 and len(page) < page_size:
            i -= 1
            p = posts[i]
            is_news = p.nid in news
            if ((cleanbot_only and p.is_blind) or (no_news and is_news) or (news_only and not is_news)
                    or (holder_only and p.nid % 7)):
                continue
            page.append(p)
        last_nid = page[-1].nid if page else None
        page = self._hide(page, keep)
        types = ["itemNews" if p.nid in news else "normal" for p in page]
        text = render_api_page(page, self.forum.codes, types, offset, page_size, self.forum.quirks,
                               last_nid=last_nid)
        return Response(200, [("Content-Type", "application/json;charset=UTF-8")], text.encode("utf-8"))

    def _board(self, q: dict[str, str], keep: int | None = None) -> Response:
        code = q.get("code", "")
        if self.board_redirects_to_spa:
            return spa_redirect(q)
        try:
            page = max(1, int(q.get("page") or 1))
        except ValueError:
            page = 1
        self._live(code)
        with self._posts_lock:
            normal = self._normal_list(code) if code in self.forum.codes else []
        n = len(normal)
        last_page = max(1, math.ceil(n / BOARD_PAGE_SIZE)) if n else 0
        hi = n - (page - 1) * BOARD_PAGE_SIZE
        rows = self._hide(normal[max(0, hi - BOARD_PAGE_SIZE):max(0, hi)][::-1], keep)
        name = self.forum.codes.get(code, code)
        text = render_board_page(code, name, rows, page, last_page, self._now, self.charset)
        if self.charset == "utf-8":
            return Response(200, [("Content-Type", "text/html;charset=UTF-8")], text.encode("utf-8"))
        return Response(200, [("Content-Type", "text/html")], text.encode("cp949", errors="xmlcharrefreplace"))

    def _sise_json(self, q: dict[str, str]) -> Response:
        code = q.get("symbol", "")
        since, until = _ymd(q.get("startTime")), _ymd(q.get("endTime"))
        bars = self.forum.prices.get(code, [])
        foreign = self.forum.foreign.get(code, [])
        keep = [(b, f) for b, f in zip(bars, foreign)
                if (since is None or b.date >= since) and (until is None or b.date <= until)]
        text = render_sise_json([b for b, _ in keep], [f for _, f in keep])
        return Response(200, [("Content-Type", "text/plain;charset=UTF-8")], text.encode("utf-8"))

    def _fchart(self, q: dict[str, str]) -> Response:
        code = q.get("symbol", "")
        try:
            count = max(0, int(q.get("count") or 500))
        except ValueError:
            count = 500
        timeframe = q.get("timeframe") or "day"
        all_bars = self.forum.prices.get(code, [])
        today = self.forum.end
        upto = [b for b in all_bars if b.date <= today]
        if timeframe in ("week", "month"):
            upto = _aggregate(upto, timeframe)
        bars = upto[-count:] if count else []
        empty_day = None
        if timeframe == "day" and upto:
            later = [b.date for b in all_bars if b.date > upto[-1].date]
            empty_day = later[0] if later else upto[-1].date + timedelta(days=1)
        text = render_fchart(code, self.forum.codes.get(code, ""), bars, count, timeframe,
                             empty_day if code in self.forum.codes else None,
                             all_bars[0].date if all_bars else None)
        return Response(200, [("Content-Type", "text/xml;charset=EUC-KR")],
                         text.encode("cp949", errors="xmlcharrefreplace"))

    def _market_sum(self, q: dict[str, str]) -> Response:
        try:
            page = max(1, int(q.get("page") or 1))
        except ValueError:
            page = 1
        sosok = 1 if q.get("sosok") == "1" else 0
        ranking = self.forum.ranking if sosok == 0 else []
        last_page = max(1, math.ceil(len(ranking) / MARKET_SUM_PAGE_SIZE))
        rows = ranking[(page - 1) * MARKET_SUM_PAGE_SIZE: page * MARKET_SUM_PAGE_SIZE]
        closes = {}
        for code, bars in self.forum.prices.items():
            traded = [b for b in bars if b.date <= self.forum.end and b.volume > 0]
            if len(traded) >= 2:
                closes[code] = (int(traded[-1].close), int(traded[-2].close), traded[-1].volume)
        text = render_market_sum(rows, page, last_page, sosok, self.forum.seed, closes)
        return Response(200, [("Content-Type", "text/html;charset=EUC-KR")],
                         text.encode("cp949", errors="xmlcharrefreplace"))


def _aggregate(bars: Sequence[PriceBar], timeframe: str) -> list[PriceBar]:
    """Week or month bars from traded day bars (dated by the period's first session)."""
    groups: dict[Any, list[PriceBar]] = {}
    for b in bars:
        if b.volume <= 0:
            continue
        key = b.date.isocalendar()[:2] if timeframe == "week" else (b.date.year, b.date.month)
        groups.setdefault(key, []).append(b)
    out = []
    for g in groups.values():
        out.append(PriceBar(g[0].code, g[0].date, g[0].open, max(b.high for b in g), min(b.low for b in g),
                            g[-1].close, sum(b.volume for b in g)))
    return out


def _ymd(s: str | None) -> date | None:
    if not s or len(s) < 8 or not s[:8].isdigit():
        return None
    try:
        return date(int(s[:4]), int(s[4:6]), int(s[6:8]))
    except ValueError:
        return None

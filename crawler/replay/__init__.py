"""A deterministic synthetic Naver stock forum and price site, served on 127.0.0.1 over real sockets.

Used by the crawler's tests, the benchmark and the offline quickstart::

    python -m crawler.replay --port 8765 --start 2018-01-01 --end 2018-03-31

Everything it serves is made up (stock codes 9xxxxx with names such as 합성전자), but in the page and body shapes
recorded in ``shared/reference/naver-sources.md``:

* ``/api/community/discussion/posts/by-item`` — the stock.naver.com community JSON API (§2.2), with its 400 error body
  for a missing required parameter and, with ``quirks``, the invalid JSON the real API sends (raw ``\\d``-style
  backslashes and a raw control character inside strings).
* ``/item/board.naver`` (and ``.nhn``) — the legacy board list HTML (§1), EUC-KR (charset only in ``<meta>``) or UTF-8.
* ``/siseJson.naver`` (§3.3) and ``/sise.nhn`` (fchart XML, §3.2) — adjusted daily bars, with one halt day per stock.
* ``/sise/sise_market_sum.naver`` — the market-cap ranking (§4), with filler rows that are not common stocks.

The server routes by path only: the crawler's ``--base-url`` rewrites every Naver host to this origin and keeps the
path and query. :class:`FaultPlan` injects 429/5xx, slow answers, connection resets, truncated bodies, block pages,
403s and the redirect to the new SPA, by request number.

Modules, each importing only ones listed before it: :mod:`.krx` (session calendar, tick sizes), :mod:`.forum` (the
synthetic data model), :mod:`.render` (paths and page bodies), :mod:`.faults` (fault injection), :mod:`.server`
(the HTTP server). ``python -m crawler.replay`` runs ``kofinsent crawl replay`` (:mod:`crawler.cli`); its ``main``
is not re-exported here, because crawler.cli imports this package and the import graph stays one-way.
"""
from __future__ import annotations

from crawler.replay.faults import FAULT_KINDS, Fault, FaultPlan
from crawler.replay.forum import CUE_DOWN, CUE_UP, DEFAULT_CODES, EPOCH, NID_CALIBRATION, SyntheticForum, nid_at
from crawler.replay.krx import KRX_HOLIDAYS, SESSION_CLOSE, is_market_day
from crawler.replay.render import (
    API_BOOLEANS,
    API_DEFAULT_PAGE_SIZE,
    API_MAX_PAGE_SIZE,
    API_PATH,
    API_REQUIRED,
    BLOCK_PHRASE,
    BOARD_PAGE_SIZE,
    BOARD_PATHS,
    CHANGED_API_BODY,
    CHANGED_BOARD_PAGE,
    CLEANBOT_TEXT,
    FCHART_PATH,
    LOGIN_REQUIRED_BODY,
    MARKET_SUM_PAGE_SIZE,
    MARKET_SUM_PATHS,
    NAVI_BLOCK,
    NEW_GIF,
    NEWEST_OFFSET,
    SISE_JSON_PATH,
    SPA_URL,
    post_content,
    render_api_error,
    render_api_page,
    render_api_post,
    render_block_page,
    render_board_page,
    render_captcha_page,
    render_fchart,
    render_market_sum,
    render_navi,
    render_sise_json,
)
from crawler.replay.server import LoggedRequest, ReplayServer

__all__ = [
    "API_BOOLEANS", "API_DEFAULT_PAGE_SIZE", "API_MAX_PAGE_SIZE", "API_PATH", "API_REQUIRED", "BLOCK_PHRASE",
    "BOARD_PAGE_SIZE", "BOARD_PATHS", "CHANGED_API_BODY", "CHANGED_BOARD_PAGE", "CLEANBOT_TEXT", "CUE_DOWN", "CUE_UP",
    "DEFAULT_CODES", "EPOCH", "FAULT_KINDS", "FCHART_PATH", "KRX_HOLIDAYS", "LOGIN_REQUIRED_BODY",
    "MARKET_SUM_PAGE_SIZE", "MARKET_SUM_PATHS", "NAVI_BLOCK", "NEWEST_OFFSET", "NEW_GIF", "NID_CALIBRATION",
    "SESSION_CLOSE", "SISE_JSON_PATH", "SPA_URL", "Fault", "FaultPlan", "LoggedRequest", "ReplayServer",
    "SyntheticForum", "is_market_day", "nid_at", "post_content", "render_api_error", "render_api_page",
    "render_api_post", "render_block_page", "render_board_page", "render_captcha_page", "render_fchart",
    "render_market_sum", "render_navi", "render_sise_json",
]

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

Synthetic data model (:meth:`SyntheticForum.generate`)
------------------------------------------------------
* **Post ids** come from one counter shared by every stock that rises with time, as on the real site (§2.4). The first
  id is interpolated from the real calibration points at ``start`` (so ids look like real ones of that era); between
  two of our posts the rest of the site uses on average ``other_traffic`` ids (exponential gaps), and about 1 % of our
  posts are deleted (their ids are consumed and listed in ``forum.deleted``). Ids are strictly increasing with
  ``posted_at`` (ties in the same second keep increasing ids); the real site has rare inversions, this one has none.
* **Times**: ``posts_per_day`` is the mean per calendar day per stock. Weekdays get more than weekends and holidays;
  on trading days about 60 % of posts fall in 09:00–15:30 KST, the rest before the open, in the evening and at night.
* **Signal**: with probability ``signal`` a normal post's title gets a cue word for the move of the post's *next
  session* — the rule ``next-session`` of ``kofinsent.dataset.labels``: a post before 15:30 on a day the stock traded
  gets that day's move (close versus the previous traded close), any other post gets the move of the next traded day.
  The cue is ``가즈아`` for up and ``손절`` for down; flat sessions get none. The cue words appear nowhere else, so
  ``signal=0`` gives titles with no information and ``signal=1`` a task a bag-of-words model solves.
* **Blind and news posts**: ``blind_rate`` of normal posts are cleanbot-hidden (``is_blind``; the forum keeps the
  title, the API sends ``isCleanbotPassed: false`` with an empty title and content, the board shows
  ``span.cleanbot_list_blind``); ``news_rate`` of posts are ``postType: "itemNews"`` (``forum.news``), which the API
  lists and the legacy board does not.
* **Prices**: a seeded random walk with integer KRW prices on KRX tick sizes, on Mon–Fri minus :data:`KRX_HOLIDAYS`
  (an *approximate* list of KRX closures 2017–2026: new year, 설날, 추석, Christmas, the fixed national holidays,
  Labour Day, the year-end closing day and the substitute/temporary/election holidays known to the author), from
  ``start - 30 days`` to ``end + 10 days``. About 3 % of sessions close exactly flat. Each stock has ONE halt day in
  ``[start, end]`` rendered as volume 0 with O=H=L=C=previous close (§3.2); :meth:`SyntheticForum.trading_days`
  excludes it, :meth:`SyntheticForum.market_days` does not.
* **Ranking**: our stocks plus filler rows (a preferred share ``…우`` with a code ending in 5, ``KODEX 200``, an ETN,
  a ``…스팩1호`` and a ``…리츠``), 62 rows, so two pages of 50.

Nothing here touches global ``random`` state: every stream is a ``random.Random`` seeded from ``seed``.
"""
from __future__ import annotations

import argparse
import hashlib
import html
import json
import math
import random
import socket
import socketserver
import struct
import sys
import threading
import time as _time
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote, urlsplit

from .records import Post, PriceBar, RankedStock

# ---------------------------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------------------------
DEFAULT_CODES: dict[str, str] = {"900010": "합성전자", "900020": "가상하이닉스", "900030": "모의바이오"}

NEWEST_OFFSET = "-9223372036854775807"
API_PATH = "/api/community/discussion/posts/by-item"
BOARD_PATHS = ("/item/board.naver", "/item/board.nhn")
SISE_JSON_PATH = "/siseJson.naver"
FCHART_PATH = "/sise.nhn"
MARKET_SUM_PATHS = ("/sise/sise_market_sum.naver", "/sise/sise_market_sum.nhn")
SPA_URL = "https://stock.naver.com/domestic/stock/{code}/discussion"

API_REQUIRED = ("discussionType", "itemCode", "isHolderOnly", "excludesItemNews", "isItemNewsOnly")
API_BOOLEANS = ("isHolderOnly", "excludesItemNews", "isItemNewsOnly", "isCleanbotPassedOnly")
API_MAX_PAGE_SIZE = 100
API_DEFAULT_PAGE_SIZE = 20
BOARD_PAGE_SIZE = 20
MARKET_SUM_PAGE_SIZE = 50
NAVI_BLOCK = 10

CUE_UP, CUE_DOWN = "가즈아", "손절"
CLEANBOT_TEXT = "클린봇이 이용자 보호를 위해 숨긴 게시글입니다."
BLOCK_PHRASE = "페이지를 찾을 수 없습니다"
NEW_GIF = "https://ssl.pstatic.net/imgstock/images5/new.gif"
SESSION_CLOSE = time(15, 30)

# Real nid ↔ KST calibration points (naver-sources.md §2.4): where the synthetic id counter starts.
NID_CALIBRATION: tuple[tuple[datetime, int], ...] = (
    (datetime(2017, 6, 7, 9, 50), 64_111_167),
    (datetime(2018, 5, 1, 18, 13), 82_780_049),
    (datetime(2018, 10, 1, 22, 28), 91_355_084),
    (datetime(2021, 2, 17, 22, 58), 164_120_791),
    (datetime(2021, 2, 22, 22, 52), 164_813_554),
    (datetime(2026, 9, 24, 1, 50), 429_804_991),
)


def _holidays() -> frozenset[date]:
    """Approximate KRX closures 2017–2026 (weekday ones matter; weekend dates are harmless)."""
    days: set[date] = set()
    for y in range(2017, 2027):
        for m, d in ((1, 1), (3, 1), (5, 1), (5, 5), (6, 6), (8, 15), (10, 3), (10, 9), (12, 25)):
            days.add(date(y, m, d))
        last = date(y, 12, 31)  # year-end closing day: the last weekday of the year
        while last.weekday() >= 5:
            last -= timedelta(days=1)
        days.add(last)
    lunar_and_other = """
        2017-01-27 2017-01-30 2017-05-03 2017-05-09 2017-10-02 2017-10-04 2017-10-05 2017-10-06
        2018-02-15 2018-02-16 2018-05-07 2018-05-22 2018-06-13 2018-09-24 2018-09-25 2018-09-26
        2019-02-04 2019-02-05 2019-02-06 2019-05-06 2019-09-12 2019-09-13
        2020-01-24 2020-01-27 2020-04-15 2020-04-30 2020-08-17 2020-09-30 2020-10-01 2020-10-02
        2021-02-11 2021-02-12 2021-05-19 2021-08-16 2021-09-20 2021-09-21 2021-09-22 2021-10-04 2021-10-11
        2022-01-31 2022-02-01 2022-02-02 2022-03-09 2022-06-01 2022-09-09 2022-09-12 2022-10-10
        2023-01-23 2023-01-24 2023-05-29 2023-09-28 2023-09-29 2023-10-02
        2024-02-09 2024-02-12 2024-04-10 2024-05-06 2024-05-15 2024-09-16 2024-09-17 2024-09-18 2024-10-01
        2025-01-27 2025-01-28 2025-01-29 2025-01-30 2025-03-03 2025-05-06 2025-06-03 2025-10-06 2025-10-07
        2025-10-08
        2026-02-16 2026-02-17 2026-02-18 2026-03-02 2026-05-25 2026-06-03 2026-08-17 2026-09-24 2026-09-25
        2026-10-05
    """
    days.update(date.fromisoformat(s) for s in lunar_and_other.split())
    return frozenset(days)


KRX_HOLIDAYS: frozenset[date] = _holidays()


def is_market_day(d: date) -> bool:
    """Mon–Fri and not in :data:`KRX_HOLIDAYS` (approximate: see the module docstring)."""
    return d.weekday() < 5 and d not in KRX_HOLIDAYS


def nid_at(t: datetime) -> int:
    """A real-looking post id for KST time ``t``: linear between the calibration points, extrapolated outside."""
    pts = NID_CALIBRATION
    i = 1
    while i < len(pts) - 1 and t > pts[i][0]:
        i += 1
    (t0, n0), (t1, n1) = pts[i - 1], pts[i]
    rate = (n1 - n0) / (t1 - t0).total_seconds()
    return max(1, int(n0 + rate * (t - t0).total_seconds()))


# Title vocabulary. CUE_UP / CUE_DOWN must not appear in any of these (the signal relies on it).
_PHRASES = (
    "오늘 장 분위기 어떤가요", "세력 들어왔나요", "물타기 해야 하나요", "존버합니다", "내일 시초가 예상해봅니다",
    "실적 발표 언제죠", "외국인 매수세 좋네요", "기관이 계속 던지네요", "개미 털기 중인가", "반등 나올까요",
    "이 가격이면 줍줍", "배당 얼마나 나올까요", "공매도 너무 심하네", "차트 보니 바닥인듯", "거래량 터졌네요",
    "뉴스 보셨나요", "목표가 상향 소식 있네요", "여기서 더 빠질까요", "장 마감 후 시간외 보세요", "평단 공유합니다",
    "오늘은 관망합니다", "신규 진입했습니다", "다들 얼마에 사셨어요", "이번 주가 고비", "유상증자 루머 도네요",
    "지지선 깨지면 위험", "재료 소멸인가요", "눌림목 매수 타이밍", "장기투자 갑니다", "오후장 기대해봅니다",
    "호가창 보니 이상하네", "프로그램 매도 폭탄", "분할 매수 중입니다", "수급이 좋아 보입니다", "그냥 쉬어갑니다",
)
_SUFFIXES = ("ㅋㅋ", "ㅋㅋㅋ", "!!", "??", "...", "ㅠㅠ", "ㄷㄷ", "요")
# Characters that need escaping in HTML and JSON (& < > " %), in every mode.
_SPECIAL_TITLES = (
    "{name}&하이닉스 비교해봅니다", "<속보> 공시 떴네요", '"세력" 정체가 뭔가요', "수익률 +30% 달성했습니다",
    "A&B 합병설 <루머> 정리", '목표가 "10만원" 가능?', "100% 확신합니다 & 추매",
)
# A backslash before a letter that is not a JSON escape (quirks only): raw in the API body it is invalid JSON.
_BACKSLASH_TITLES = (
    "C:\\data 폴더에 차트 저장함", "엑셀 경로 D:\\stock\\kospi 공유", "만세 \\o/ 만세", "\\s 이게 뭐죠",
)
_NEWS_TITLES = (
    "[특징주] {name}, 신제품 기대감에 강세", "[공시] {name} 단일판매 공급계약 체결", "{name}, 분기 영업이익 증가",
    "[마감시황] 코스피 혼조 속 {name} 주목", "{name} 목표주가 상향 리포트",
)
_NEWS_WRITERS = ("합성뉴스", "가상경제", "모의일보")
_CUES_UP = ("가즈아", "가즈아!!", "내일 가즈아")
_CUES_DOWN = ("손절", "손절각", "손절합니다")
_FILLERS = (
    "다들 성투하세요", "개인적인 의견입니다", "투자는 본인 책임", "차트 첨부합니다", "참고만 하세요",
    "좋은 하루 되세요", "의견 부탁드립니다",
)

_FILLER_PREFIXES = ("샘플", "예시", "테스트", "더미", "가짜", "연습", "시험", "모형")
_FILLER_SUFFIXES = ("화학", "금융지주", "건설", "중공업", "통신", "제약", "전기", "물산", "증권", "해운",
                    "식품", "반도체")

EPOCH = datetime(1970, 1, 1)


# ---------------------------------------------------------------------------------------------------------------
# The synthetic forum
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class SyntheticForum:
    """Posts, prices and a ranking for a few made-up stocks. Build with :meth:`generate`.

    ``posts[code]`` and ``nids[code]`` are sorted by nid (ascending, which is also time order). ``news`` holds the
    nids whose ``postType`` is ``itemNews`` (every other post is ``normal``). A blind post (``is_blind``) keeps its
    title here; the site hides it. ``foreign[code]`` is the 외국인소진율 aligned with ``prices[code]``.
    """

    codes: dict[str, str]
    start: date
    end: date
    seed: int
    posts: dict[str, list[Post]]
    nids: dict[str, list[int]]
    news: frozenset[int]
    deleted: list[int]
    prices: dict[str, list[PriceBar]]
    foreign: dict[str, list[float]]
    halts: dict[str, date]
    ranking: list[RankedStock]
    signal: float = 0.0
    quirks: bool = True
    _normal: dict[str, list[Post]] = field(default_factory=dict, repr=False, compare=False)

    # -- construction -------------------------------------------------------------------------------------------
    @classmethod
    def generate(cls, codes: dict[str, str] | None = None, start: date = date(2018, 1, 1),
                 end: date = date(2018, 3, 31), posts_per_day: float | dict[str, float] = 30.0, seed: int = 0,
                 other_traffic: int = 50, blind_rate: float = 0.03, news_rate: float = 0.02, signal: float = 0.0,
                 quirks: bool = True) -> SyntheticForum:
        """A forum over ``[start, end]`` (KST days, inclusive). Same arguments → the same forum, byte for byte.

        ``posts_per_day``: mean posts per calendar day per stock (one number, or one per code; a missing code gets
        none). ``other_traffic``: mean ids the rest of the site consumes between two of our posts. ``signal`` in
        [0, 1]: the probability that a normal post's title carries the cue word of its next session's move.
        ``quirks``: backslash titles and raw control characters that make API bodies invalid JSON.
        """
        codes = dict(DEFAULT_CODES if codes is None else codes)
        if not codes:
            raise ValueError("codes must not be empty")
        if end < start:
            raise ValueError(f"end ({end}) is before start ({start})")
        if not 0.0 <= signal <= 1.0:
            raise ValueError(f"signal must be in [0, 1], got {signal}")
        if other_traffic < 0:
            raise ValueError(f"other_traffic must be >= 0, got {other_traffic}")
        rates = ({c: float(posts_per_day.get(c, 0.0)) for c in codes} if isinstance(posts_per_day, dict)
                 else {c: float(posts_per_day) for c in codes})
        if any(r < 0 for r in rates.values()):
            raise ValueError(f"posts_per_day must be >= 0, got {posts_per_day}")

        market_days = [d for d in _days(start - timedelta(days=30), end + timedelta(days=10)) if is_market_day(d)]
        prices: dict[str, list[PriceBar]] = {}
        foreign: dict[str, list[float]] = {}
        halts: dict[str, date] = {}
        for code in codes:
            prices[code], foreign[code], halts[code] = _gen_prices(code, market_days, start, end, seed)

        posts, news, deleted = _gen_posts(codes, rates, start, end, seed, other_traffic, blind_rate, news_rate,
                                          signal, quirks, prices)
        return cls(codes=codes, start=start, end=end, seed=seed, posts=posts,
                   nids={c: [p.nid for p in ps] for c, ps in posts.items()}, news=news, deleted=deleted,
                   prices=prices, foreign=foreign, halts=halts, ranking=_gen_ranking(codes, prices, end, seed),
                   signal=signal, quirks=quirks)

    # -- posts --------------------------------------------------------------------------------------------------
    @property
    def now(self) -> datetime:
        """The site's "now": the last second of ``end`` (posts newer than a day before it get ``new.gif``)."""
        return datetime.combine(self.end, time(23, 59, 59))

    def name(self, code: str) -> str:
        return self.codes[code]

    def post_type(self, post: Post | int) -> str:
        nid = post if isinstance(post, int) else post.nid
        return "itemNews" if nid in self.news else "normal"

    def all_posts(self) -> list[Post]:
        """Every post of every stock, by nid (= time order)."""
        return sorted((p for ps in self.posts.values() for p in ps), key=lambda p: p.nid)

    def normal_posts(self, code: str) -> list[Post]:
        """The stock's ``normal`` posts (what the legacy board lists), ascending nid. Cached."""
        got = self._normal.get(code)
        if got is None:
            got = [p for p in self.posts.get(code, ()) if p.nid not in self.news]
            self._normal[code] = got
        return got

    def posts_between(self, code: str, since: datetime, until: datetime) -> list[Post]:
        """Posts of ``code`` with ``since <= posted_at <= until`` (all types), ascending nid."""
        return [p for p in self.posts.get(code, ()) if since <= p.posted_at <= until]

    @property
    def first_nid(self) -> int:
        return min((ns[0] for ns in self.nids.values() if ns), default=0)

    @property
    def last_nid(self) -> int:
        return max((ns[-1] for ns in self.nids.values() if ns), default=0)

    # -- prices -------------------------------------------------------------------------------------------------
    def market_days(self) -> list[date]:
        """KRX-like session days covered by the prices (a halt day included)."""
        first = next(iter(self.prices.values()))
        return [b.date for b in first]

    def trading_days(self, code: str) -> list[date]:
        """Days ``code`` traded (volume > 0): the market days minus its halt day."""
        return [b.date for b in self.prices[code] if b.volume > 0]

    def halt_day(self, code: str) -> date:
        return self.halts[code]

    def bars(self, code: str, since: date | None = None, until: date | None = None) -> list[PriceBar]:
        """Bars of ``code`` (halt bar included) with ``since <= date <= until``."""
        return [b for b in self.prices.get(code, ()) if (since is None or b.date >= since)
                and (until is None or b.date <= until)]

    def session_day(self, code: str, t: datetime) -> date | None:
        """The post's next session (labels.py ``next-session``): ``t``'s day if the stock traded then and ``t`` is
        before 15:30, else the next traded day. None past the last bar."""
        days = self.trading_days(code)
        d = t.date()
        i = bisect_left(days, d)
        if i < len(days) and days[i] == d and t.time() < SESSION_CLOSE:
            return d
        j = bisect_right(days, d)
        return days[j] if j < len(days) else None

    def session_move(self, code: str, t: datetime) -> int | None:
        """+1 / -1 / 0 for the close of :meth:`session_day` versus the previous traded close; None if unknown."""
        d = self.session_day(code, t)
        if d is None:
            return None
        traded = [b for b in self.prices[code] if b.volume > 0]
        i = bisect_left([b.date for b in traded], d)
        if i == 0:
            return None
        diff = traded[i].close - traded[i - 1].close
        return (diff > 0) - (diff < 0)


def _days(a: date, b: date) -> Iterable[date]:
    for i in range((b - a).days + 1):
        yield a + timedelta(days=i)


def _tick(p: float) -> int:
    """KRX tick size (the 2023 schedule) for a price level."""
    for limit, tick in ((2_000, 1), (5_000, 5), (20_000, 10), (50_000, 50), (200_000, 100), (500_000, 500)):
        if p < limit:
            return tick
    return 1000


def _on_tick(x: float) -> int:
    t = _tick(x)
    return max(t, int(round(x / t)) * t)


def _gen_prices(code: str, days: list[date], start: date, end: date,
                seed: int) -> tuple[list[PriceBar], list[float], date]:
    r = random.Random(f"{seed}:prices:{code}")
    prev = _on_tick(math.exp(r.uniform(math.log(6_000), math.log(250_000))))
    base_vol = r.uniform(math.log(80_000), math.log(8_000_000))
    fr = round(r.uniform(5.0, 55.0), 2)
    in_range = [i for i, d in enumerate(days) if start <= d <= end and i > 0] or list(range(1, len(days)))
    halt_i = r.choice(in_range)
    bars: list[PriceBar] = []
    foreign: list[float] = []
    for i, d in enumerate(days):
        fr = round(min(95.0, max(0.5, fr + r.gauss(0.0, 0.12))), 2)
        foreign.append(fr)
        if i == halt_i:
            bars.append(PriceBar(code, d, float(prev), float(prev), float(prev), float(prev), 0))
            continue
        if r.random() < 0.03:
            close = prev
        else:
            close = _on_tick(prev * (1.0 + min(0.29, max(-0.29, r.gauss(0.0003, 0.022)))))
        open_ = _on_tick(prev * (1.0 + r.gauss(0.0, 0.006)))
        high = max(_on_tick(max(open_, close) * (1.0 + abs(r.gauss(0.0, 0.008)))), open_, close)
        low = min(_on_tick(min(open_, close) * (1.0 - abs(r.gauss(0.0, 0.008)))), open_, close)
        volume = int(r.lognormvariate(base_vol, 0.5)) + 1
        bars.append(PriceBar(code, d, float(open_), float(high), float(low), float(close), volume))
        prev = close
    return bars, foreign, days[halt_i]


def _moves(bars: list[PriceBar]) -> dict[date, int]:
    """date -> sign of close minus the previous traded close, for traded days (the first one has none)."""
    out: dict[date, int] = {}
    prev = None
    for b in bars:
        if b.volume <= 0:
            continue
        if prev is not None:
            out[b.date] = (b.close > prev) - (b.close < prev)
        prev = b.close
    return out


def _gen_posts(codes: dict[str, str], rates: dict[str, float], start: date, end: date, seed: int,
               other_traffic: int, blind_rate: float, news_rate: float, signal: float, quirks: bool,
               prices: dict[str, list[PriceBar]]) -> tuple[dict[str, list[Post]], frozenset[int], list[int]]:
    r = random.Random(f"{seed}:posts")
    code_list = list(codes)
    days = list(_days(start, end))
    # Day weights: weekdays busier than weekends/holidays, with day-to-day noise; normalised to mean 1.
    weights = [(1.0 if is_market_day(d) else 0.4) * r.lognormvariate(0.0, 0.35) for d in days]
    scale = len(days) / sum(weights)
    weights = [w * scale for w in weights]

    events: list[tuple[int, float, int]] = []  # (seconds since epoch, tiebreak, code index)
    rnd = r.random
    for ci, code in enumerate(code_list):
        rate = rates[code]
        if rate <= 0:
            continue
        for d, w in zip(days, weights):
            lam = rate * w
            n = int(lam) + (rnd() < lam - int(lam))
            base = (d - EPOCH.date()).days * 86_400
            market = is_market_day(d)
            for _ in range(n):
                u = rnd()
                if market:
                    if u < 0.60:
                        s = r.randrange(9 * 3600, 15 * 3600 + 1800)
                    elif u < 0.70:
                        s = r.randrange(7 * 3600, 9 * 3600)
                    elif u < 0.92:
                        s = r.randrange(15 * 3600 + 1800, 86_400)
                    else:
                        s = r.randrange(0, 7 * 3600)
                else:
                    s = r.randrange(8 * 3600, 86_400) if u < 0.8 else r.randrange(0, 8 * 3600)
                events.append((base + s, rnd(), ci))
    events.sort()

    # Per stock: move of the post's next session, by (day ordinal, before close?).
    traded: dict[str, list[date]] = {}
    moves: dict[str, dict[date, int]] = {}
    for code in code_list:
        moves[code] = _moves(prices[code])
        traded[code] = [b.date for b in prices[code] if b.volume > 0]

    def next_move(code: str, secs: int) -> int:
        t = EPOCH + timedelta(seconds=secs)
        d = t.date()
        tdays = traded[code]
        i = bisect_left(tdays, d)
        if not (i < len(tdays) and tdays[i] == d and t.time() < SESSION_CLOSE):
            i = bisect_right(tdays, d)
        return moves[code].get(tdays[i], 0) if i < len(tdays) else 0

    authors = ["".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.choice((3, 4, 4, 5)))) + "****"
               for _ in range(400)]
    n_auth = len(authors)
    posts: dict[str, list[Post]] = {c: [] for c in code_list}
    news: list[int] = []
    deleted: list[int] = []
    nid = nid_at(datetime.combine(start, time.min))
    expo = r.expovariate
    lam_gap = 1.0 / other_traffic if other_traffic > 0 else 0.0
    names = [codes[c] for c in code_list]
    for secs, _, ci in events:
        nid += 1 + (int(expo(lam_gap)) if lam_gap else 0)
        if rnd() < 0.01:
            deleted.append(nid)
            continue
        code, name = code_list[ci], names[ci]
        is_news = rnd() < news_rate
        if is_news:
            title = r.choice(_NEWS_TITLES).format(name=name)
            author = r.choice(_NEWS_WRITERS)
            news.append(nid)
            blind = False
        else:
            u = rnd()
            if u < 0.015:
                title = r.choice(_SPECIAL_TITLES).format(name=name)
            elif quirks and u < 0.02:
                title = r.choice(_BACKSLASH_TITLES)
            else:
                title = r.choice(_PHRASES)
                v = rnd()
                if v < 0.2:
                    title = f"{name} {title}"
                if v > 0.7:
                    title += r.choice(_SUFFIXES)
            if signal > 0 and rnd() < signal:
                m = next_move(code, secs)
                if m > 0:
                    title = f"{title} {r.choice(_CUES_UP)}"
                elif m < 0:
                    title = f"{title} {r.choice(_CUES_DOWN)}"
            # Frequent posters: a skewed draw over the author pool.
            author = authors[int(n_auth * rnd() ** 2)]
            blind = rnd() < blind_rate
        views = int(r.lognormvariate(4.0, 1.0)) + 1
        likes = int(expo(1 / 1.5)) if rnd() < 0.6 else 0
        dislikes = int(expo(1 / 0.8)) if rnd() < 0.3 else 0
        comments = int(expo(1 / 3.0)) + 1 if rnd() < 0.35 else 0
        posts[code].append(Post(code, nid, EPOCH + timedelta(seconds=secs), title, author, views, likes,
                                dislikes, comments, blind))
    return posts, frozenset(news), deleted


def _gen_ranking(codes: dict[str, str], prices: dict[str, list[PriceBar]], end: date,
                 seed: int) -> list[RankedStock]:
    r = random.Random(f"{seed}:ranking")
    first = next(iter(codes))
    specials = {
        3: (first[:-1] + "5", codes[first] + "우"),  # a preferred share
        8: ("990500", "KODEX 200"),                   # an ETF
        30: ("990540", "모의리츠"),                    # a REIT
        45: ("590020", "모의 인버스 2X ETN"),           # an ETN
        58: ("990530", "가상스팩1호"),                  # a SPAC
    }
    ours = list(codes)
    fillers = [f"{p}{s}" for p in _FILLER_PREFIXES for s in _FILLER_SUFFIXES]
    r.shuffle(fillers)
    total = max(62, len(ours) * 2 + len(specials) + 2)
    rows: list[RankedStock] = []
    cap = 3_500_000 + r.randrange(100_000)
    filler_i = 0
    for rank in range(1, total + 1):
        if rank in specials:
            code, name = specials[rank]
        elif ours and rank % 2 == 0:
            code = ours.pop(0)
            name = codes[code]
        else:
            code = f"{910000 + 10 * filler_i:06d}"
            name = fillers[filler_i % len(fillers)] + ("" if filler_i < len(fillers) else str(filler_i))
            filler_i += 1
        rows.append(RankedStock(rank, code, name, cap))
        cap = max(100, int(cap * r.uniform(0.80, 0.95)))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Renderers (pure functions of their arguments)
# ---------------------------------------------------------------------------------------------------------------
def _profile_id(author: str) -> str:
    return hashlib.md5(author.encode("utf-8")).hexdigest()[:24]


def _jstr(s: str, raw: bool) -> str:
    """A JSON string literal. ``raw``: leave backslashes and tabs/\\x01 unescaped (the real API's invalid JSON)."""
    if not raw:
        return json.dumps(s, ensure_ascii=False)
    out = s.replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{out}"'


def post_content(post: Post, quirks: bool) -> tuple[str, str, int]:
    """(contentSwReplaced, contentSwReplacedButImg, imageCount) for a post: HTML with ``<br>``. With ``quirks``
    every fourth post (by nid) carries a raw tab inside ``contentSwReplaced``."""
    filler = _FILLERS[post.nid % len(_FILLERS)]
    text = html.escape(post.title, quote=False)
    sep = "\t" if quirks and post.nid % 4 == 0 else " "
    images = 1 if post.nid % 11 == 0 else 0
    img = '<img src="https://stock.pstatic.net/synthetic/chart.png">' if images else ""
    body = f"<p>{text}<br>{filler}{sep}감사합니다</p>"
    return body + img, body, images


def render_api_post(post: Post, name: str, post_type: str, quirks: bool) -> str:
    """One post object of the community API, in the documented field order."""
    blind = post.is_blind
    title = "" if blind else post.title
    content, content_no_img, images = ("", "", 0) if blind else post_content(post, quirks)
    author = post.author or ""
    holder = post.nid % 7 == 0
    return (
        "{"
        f'"id":"{post.nid}","itemCode":{_jstr(post.code, False)},"itemName":{_jstr(name, False)},'
        f'"postType":"{post_type}",'
        f'"writer":{{"profileId":"{_profile_id(author)}","profileType":"normal","nickname":{_jstr(author, False)},'
        f'"isHolderVerified":{"true" if holder else "false"}}},'
        f'"writtenAt":"{post.posted_at:%Y-%m-%dT%H:%M:%S}",'
        f'"title":{_jstr(title, quirks)},'
        f'"contentSwReplacedButImg":{_jstr(content_no_img, quirks)},'
        f'"contentSwReplaced":{_jstr(content, quirks)},'
        f'"commentCount":{post.comments or 0},"recommendCount":{post.likes or 0},'
        f'"notRecommendCount":{post.dislikes or 0},"viewCount":{post.views or 0},'
        f'"isCleanbotPassed":{"false" if blind else "true"},"replyDepth":0,"parentId":null,'
        f'"imageCount":{images}'
        "}"
    )


def render_api_page(posts: Sequence[Post], names: dict[str, str], types: Sequence[str], offset: str,
                    page_size: int, quirks: bool, last_nid: int | None = None) -> str:
    """The by-item body: ``{"offset", "pageSize", "posts", "lastOffset"}``; ``posts`` newest first as given.
    ``lastOffset`` is ``"-<last_nid>"``, by default the id of the last post (null on an empty page): a server that
    hid posts after indexing points it past them."""
    items = ",".join(render_api_post(p, names.get(p.code, ""), t, quirks) for p, t in zip(posts, types))
    if last_nid is None and posts:
        last_nid = posts[-1].nid
    last = f'"-{last_nid}"' if last_nid is not None else "null"
    return f'{{"offset":{_jstr(offset, False)},"pageSize":{page_size},"posts":[{items}],"lastOffset":{last}}}'


def render_api_error(fields: dict[str, str]) -> str:
    """The error body of the community API for bad or missing parameters (about 207 bytes for one missing
    parameter): ``{"detailCode":"invalid_type,<fields>","message":...,"fieldErrors":{field: reason}}``."""
    return json.dumps({
        "detailCode": "invalid_type," + ",".join(fields),
        "message": "잘못된 요청입니다.",
        "fieldErrors": fields,
    }, ensure_ascii=False, separators=(",", ":"))


def _missing(name: str, kind: str) -> str:
    return f"Required request parameter '{name}' for method parameter type {kind} is not present"


def _html_head(title: str, charset: str) -> str:
    meta_charset = "euc-kr" if charset != "utf-8" else "utf-8"
    return (
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" '
        '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
        '<html lang="ko">\n<head>\n'
        f'<meta http-equiv="Content-Type" content="text/html; charset={meta_charset}">\n'
        f"<title>{html.escape(title)}</title>\n"
        '<link rel="stylesheet" type="text/css" href="https://ssl.pstatic.net/imgstock/static.pc/css/finance.css">\n'
        '<script type="text/javascript">function mouseOver(o){o.className="hover";}'
        'function mouseOut(o){o.className="";}</script>\n'
        "</head>\n"
    )


def render_navi(base: str, page: int, last_page: int) -> str:
    """``table.Nnavi``: pgLL/pgL for earlier blocks, ``td.on`` for ``page``, numbered links for the block,
    ``td.pgR`` when a later block exists and ``td.pgRR`` (맨뒤, the last page) whenever ``page < last_page``.
    Past the last page: the last block's links with no ``td.on`` (the highest link is the last page)."""
    last_page = max(last_page, 1)
    past_end = page > last_page
    anchor = last_page if past_end else max(page, 1)
    block_start = (anchor - 1) // NAVI_BLOCK * NAVI_BLOCK + 1
    cells = []
    if block_start > 1:
        cells.append(f'<td class="pgLL"><a href="{base}&amp;page=1">맨앞</a></td>')
        cells.append(f'<td class="pgL"><a href="{base}&amp;page={block_start - 1}">이전</a></td>')
    for p in range(block_start, min(block_start + NAVI_BLOCK - 1, last_page) + 1):
        cls = ' class="on"' if p == page else ""
        cells.append(f'<td{cls}><a href="{base}&amp;page={p}">{p}</a></td>')
    if not past_end and block_start + NAVI_BLOCK <= last_page:
        cells.append(f'<td class="pgR"><a href="{base}&amp;page={block_start + NAVI_BLOCK}">다음'
                     '<img src="https://ssl.pstatic.net/static/n/cmn/bu_pgarR.gif" width="3" height="5" alt="" '
                     'border="0"></a></td>')
    if page < last_page:
        cells.append(f'<td class="pgRR"><a href="{base}&amp;page={last_page}">맨뒤'
                     '<img src="https://ssl.pstatic.net/static/n/cmn/bu_pgarRR.gif" width="8" height="5" alt="" '
                     'border="0"></a></td>')
    return ('<table summary="페이지 네비게이션 리스트" class="Nnavi" align="center">\n<tr>\n'
            + "\n".join(cells) + "\n</tr>\n</table>\n")


def _board_row(post: Post, page: int, now: datetime) -> str:
    href = f"/item/board_read.naver?code={post.code}&amp;nid={post.nid}&amp;st=&amp;sw=&amp;page={page}"
    if post.is_blind:
        title_cell = (f'<td class="title">\n<a href="{href}"><span class="cleanbot_list_blind">{CLEANBOT_TEXT}'
                      "</span></a>\n</td>")
    else:
        text = post.title if len(post.title) <= 30 else post.title[:28] + ".."
        extra = ""
        if post.posted_at > now - timedelta(days=1):
            extra += f' <img src="{NEW_GIF}" width="10" height="9" alt="new">'
        if post.comments:
            extra += f" [{post.comments}]" if post.nid % 2 else f" [ {post.comments} ]"
        title_cell = (f'<td class="title">\n<a href="{href}" title="{html.escape(post.title, quote=True)}">'
                      f"{html.escape(text, quote=False)}{extra}</a>\n</td>")
    likes = post.likes or 0
    dislikes = post.dislikes or 0
    like_cls = "red01" if likes else "gray03"
    dislike_cls = "blue01" if dislikes else "gray03 "
    return (
        '<tr onmouseover="mouseOver(this)" onmouseout="mouseOut(this)">\n'
        f'<td><span class="tah p10 gray03">{post.posted_at:%Y.%m.%d %H:%M}</span></td>\n'
        f"{title_cell}\n"
        f'<td class="p11">{html.escape(post.author or "")}</td>\n'
        f'<td><span class="tah p10 gray03">{post.views or 0:,}</span></td>\n'
        f'<td><strong class="tah p10 {like_cls}">{likes}</strong></td>\n'
        f'<td><strong class="tah p10 {dislike_cls}">{dislikes}</strong></td>\n'
        "</tr>\n"
    )


def render_board_page(code: str, name: str, posts: Sequence[Post], page: int, last_page: int, now: datetime,
                      charset: str = "euc-kr") -> str:
    """The legacy list page: header row, then up to 20 rows in blocks of 5 with spacer rows (rows 1, 2, 8, 14 and
    20 of the tbody are header or blank), then ``table.Nnavi``. ``posts`` newest first. An empty ``posts`` gives
    the table with no post rows (past the board's end)."""
    spacer = '<tr><td colspan="6" class="blank_07"></td></tr>\n'
    divider = '<tr><td colspan="6" class="division_line"></td></tr>\n'
    rows = [
        '<tr>\n<th scope="col">날짜</th>\n<th scope="col">제목</th>\n<th scope="col">글쓴이</th>\n'
        '<th scope="col">조회</th>\n<th scope="col">공감</th>\n<th scope="col">비공감</th>\n</tr>\n',
        spacer,
    ]
    for i, p in enumerate(posts):
        if i and i % 5 == 0:
            rows.append(divider)
        rows.append(_board_row(p, page, now))
    if posts:
        rows.append(spacer)
    navi = render_navi(f"/item/board.naver?code={code}", page, last_page) if last_page >= 1 else ""
    return (
        _html_head(f"{name} : 네이버페이 증권 종목토론실", charset)
        + '<body>\n<div id="wrap">\n<div id="header"><h1><a href="https://finance.naver.com/">네이버페이 증권</a>'
        "</h1></div>\n"
        f'<div id="middle" class="new_totalinfo"><div class="h_company"><h2>{html.escape(name)}</h2>'
        f'<span class="code">{code}</span></div></div>\n'
        '<div id="content">\n<div class="section inner_sub">\n<h3 class="h_sub sub_tit7"><span>종목토론실</span></h3>\n'
        '<table class="type2" cellspacing="0" summary="게시판 리스트">\n<caption>게시판 리스트</caption>\n'
        '<colgroup><col width="110"><col><col width="90"><col width="50"><col width="40"><col width="50">'
        "</colgroup>\n<tbody>\n"
        + "".join(rows)
        + "</tbody>\n</table>\n"
        + navi
        + "</div>\n</div>\n"
        '<div id="footer"><p>이 페이지는 합성 데이터로 만든 재현용 사이트입니다.</p></div>\n</div>\n</body>\n</html>\n'
    )


def render_sise_json(bars: Sequence[PriceBar], foreign: Sequence[float]) -> str:
    """siseJson's JS-style array: a single-quoted header row, then one ``["YYYYMMDD", o, h, l, c, v, f]`` row per
    bar, separated by ``,`` and blank-ish lines as on the real site."""
    header = "['날짜', '시가', '고가', '저가', '종가', '거래량', '외국인소진율']"
    rows = [header] + [
        f'["{b.date:%Y%m%d}", {int(b.open)}, {int(b.high)}, {int(b.low)}, {int(b.close)}, {b.volume}, {f!r}]'
        for b, f in zip(bars, foreign)
    ]
    return "\n [" + ",\n\t\t\n".join(rows) + "\n\t\t\n]\n"


def render_fchart(code: str, name: str, bars: Sequence[PriceBar], count: int, timeframe: str = "day",
                  empty_day: date | None = None, origin: date | None = None) -> str:
    """fchart XML (text; encode it as EUC-KR): ``<item data="YYYYMMDD|o|h|l|c|v" />`` oldest first, then an empty
    bar ``YYYYMMDD|||||`` for ``empty_day`` (pre-open today) when given."""
    items = [f'\t\t<item data="{b.date:%Y%m%d}|{int(b.open)}|{int(b.high)}|{int(b.low)}|{int(b.close)}|{b.volume}" />'
             for b in bars]
    if empty_day is not None:
        items.append(f'\t\t<item data="{empty_day:%Y%m%d}|||||" />')
    origin_s = f"{origin:%Y%m%d}" if origin else ""
    return (
        '<?xml version="1.0" encoding="EUC-KR" ?>\n<protocol>\n'
        f'\t<chartdata symbol="{html.escape(code)}" name="{html.escape(name)}" count="{count}" '
        f'timeframe="{html.escape(timeframe)}" precision="0" origintime="{origin_s}">\n'
        + "".join(i + "\n" for i in items)
        + "\t</chartdata>\n</protocol>\n"
    )


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


def _change_cells(price: int, prev: int) -> tuple[str, str]:
    diff = price - prev
    pct = 0.0 if prev == 0 else diff / prev * 100
    if diff > 0:
        change = (f'<em class="bu_p bu_pup"><span class="blind">상승</span></em>'
                  f'<span class="tah p11 red02">{diff:,}</span>')
        rate = f'<span class="tah p11 red01">+{pct:.2f}%</span>'
    elif diff < 0:
        change = (f'<em class="bu_p bu_pdn"><span class="blind">하락</span></em>'
                  f'<span class="tah p11 nv01">{-diff:,}</span>')
        rate = f'<span class="tah p11 nv01">{pct:.2f}%</span>'
    else:
        change = '<span class="tah p11">0</span>'
        rate = '<span class="tah p11">0.00%</span>'
    return change, rate


def render_market_sum(rows: Sequence[RankedStock], page: int, last_page: int, sosok: int, seed: int,
                      closes: dict[str, tuple[int, int, int]] | None = None) -> str:
    """One ranking page: ``table.type_2`` with a th header row, rows ``tr[onmouseover="mouseOver(this)"]`` with
    ``td.no``, ``a.tltle`` and the 10 default ``td.number`` cells (현재가, 전일비, 등락률, 액면가, 시가총액,
    상장주식수, 외국인비율, 거래량, PER, ROE), a spacer row after every 5, and ``table.Nnavi`` with ``td.pgRR``.
    ``closes``: code -> (close, previous close, volume) for rows with real bars; other rows get seeded values."""
    closes = closes or {}
    labels = ("N", "종목명", "현재가", "전일비", "등락률", "액면가", "시가총액", "상장주식수", "외국인비율", "거래량",
              "PER", "ROE", "토론실")
    head = "<tr>" + "".join(f'<th scope="col">{h}</th>' for h in labels) + "</tr>\n"
    spacer = '<tr><td class="division_line" colspan="13"></td></tr>\n'
    body = [spacer]
    for i, row in enumerate(rows):
        if i and i % 5 == 0:
            body.append(spacer)
        r = random.Random(f"{seed}:marketsum:{row.code}")
        if row.code in closes:
            price, prev, volume = closes[row.code]
        else:
            price = _on_tick(math.exp(r.uniform(math.log(3_000), math.log(400_000))))
            prev = _on_tick(price * (1 + r.gauss(0, 0.02)))
            volume = int(r.lognormvariate(12, 1))
        change, rate = _change_cells(price, prev)
        cap = row.market_cap or 0
        shares = max(1, cap * 100_000 // max(price, 1))  # 천주
        per = f"{r.uniform(3, 60):.2f}" if r.random() < 0.85 else "N/A"
        roe = f"{r.uniform(-10, 30):.2f}" if r.random() < 0.85 else "N/A"
        body.append(
            '<tr onmouseover="mouseOver(this)" onmouseout="mouseOut(this)">\n'
            f'<td class="no">{row.rank}</td>\n'
            f'<td><a href="/item/main.naver?code={row.code}" class="tltle">{html.escape(row.name)}</a></td>\n'
            f'<td class="number">{price:,}</td>\n'
            f'<td class="number">{change}</td>\n'
            f'<td class="number">{rate}</td>\n'
            f'<td class="number">{r.choice((100, 500, 1000, 5000)):,}</td>\n'
            f'<td class="number">{cap:,}</td>\n'
            f'<td class="number">{shares:,}</td>\n'
            f'<td class="number">{r.uniform(0, 60):.2f}</td>\n'
            f'<td class="number">{volume:,}</td>\n'
            f'<td class="number">{per}</td>\n'
            f'<td class="number">{roe}</td>\n'
            f'<td class="center"><a href="/item/board.naver?code={row.code}">'
            '<img src="https://ssl.pstatic.net/imgstock/images/ico_debate.gif" alt="토론실"></a></td>\n'
            "</tr>\n"
        )
    body.append(spacer)
    market = "코스피" if sosok == 0 else "코스닥"
    navi = render_navi(f"/sise/sise_market_sum.naver?sosok={sosok}", page, last_page)
    return (
        _html_head(f"{market} 시가총액 : 네이버페이 증권", "euc-kr")
        + '<body>\n<div id="wrap">\n<div id="contentarea">\n<div class="box_type_l">\n'
        f'<table class="type_2" cellspacing="0" summary="{market} 시가총액 리스트">\n<caption>{market}</caption>\n'
        "<thead>\n" + head + "</thead>\n<tbody>\n" + "".join(body) + "</tbody>\n</table>\n</div>\n"
        + navi + "</div>\n</div>\n</body>\n</html>\n"
    )


def render_block_page() -> str:
    """The ~2.7 KB "페이지를 찾을 수 없습니다" page Naver answers (HTTP 200) to non-browser agents or foreign IPs."""
    page = (
        '<!DOCTYPE html>\n<html lang="ko">\n<head>\n<meta charset="utf-8">\n'
        "<title>네이버페이 증권</title>\n<style>\n"
        "body,p,h1,h2,h3,div{margin:0;padding:0}body{font-family:'Nanum Gothic','나눔고딕',sans-serif;"
        "font-size:12px;color:#333;background:#fff}a{color:#333;text-decoration:none}"
        "#wrap{width:100%;min-width:700px}#header{height:60px;border-bottom:1px solid #e5e5e5}"
        "#header h1{padding:17px 0 0 20px}#header h1 a{display:inline-block;width:120px;height:24px;"
        "background:url(https://ssl.pstatic.net/static/common/error/logo_naver.png) no-repeat}"
        ".error_content{width:500px;margin:0 auto;padding:140px 0 120px;text-align:center}"
        ".error_title{font-size:22px;line-height:30px;color:#111;letter-spacing:-1px}"
        ".error_desc{margin-top:18px;font-size:13px;line-height:21px;color:#666}"
        ".btn_area{margin-top:30px}.btn_area a{display:inline-block;min-width:90px;height:36px;"
        "margin:0 2px;border:1px solid #ccc;line-height:36px;font-size:13px}"
        ".btn_area a.btn_home{border-color:#03c75a;background:#03c75a;color:#fff}"
        "#footer{padding:20px 0;border-top:1px solid #e5e5e5;text-align:center;color:#999;font-size:11px}\n"
        "</style>\n</head>\n<body>\n<div id=\"wrap\">\n<div id=\"header\"><h1><a href=\"https://www.naver.com\">"
        "<span class=\"blind\">NAVER</span></a></h1></div>\n<div class=\"error_content\">\n"
        f'<h2 class="error_title">{BLOCK_PHRASE}.</h2>\n'
        '<p class="error_desc">방문하시려는 페이지의 주소가 잘못 입력되었거나,<br>'
        "페이지의 주소가 변경 혹은 삭제되어 요청하신 페이지를 찾을 수 없습니다.<br>"
        "입력하신 주소가 정확한지 다시 한번 확인해 주시기 바랍니다.</p>\n"
        '<p class="error_desc">관련 문의사항은 고객센터에 알려주시면 친절하게 안내해 드리겠습니다.<br>감사합니다.</p>\n'
        '<div class="btn_area"><a href="javascript:history.back();">이전 페이지</a>'
        '<a href="https://finance.naver.com/" class="btn_home">증권 홈</a></div>\n'
        "</div>\n"
        '<div id="footer"><address>&copy; NAVER Corp.</address></div>\n</div>\n'
    )
    pad = 2700 - len((page + "</body>\n</html>\n").encode("utf-8")) - len("<!--  -->\n")
    if pad > 0:
        page += "<!-- " + "=" * pad + " -->\n"
    return page + "</body>\n</html>\n"


def render_captcha_page() -> str:
    """An HTTP 200 interstitial that is not the known block page: a captcha form (about 30 KB, so it is past the
    size the block check sniffs, as real interstitials with their scripts are)."""
    return ('<!DOCTYPE html>\n<html lang="ko"><head><meta charset="utf-8"><title>네이버 : 보안 확인</title></head>\n'
            '<body><div id="wrap"><h2>자동입력 방지를 위해 아래 이미지의 문자를 입력해 주세요.</h2>\n'
            '<form action="/captcha/verify" method="post"><img src="/captcha/image?key=x" alt="captcha">'
            '<input name="captcha" type="text"><button>확인</button></form></div>\n'
            "<script>" + "var _=0;" * 3600 + "</script></body></html>\n")


LOGIN_REQUIRED_BODY = '{"code":"LOGIN_REQUIRED","message":"로그인이 필요합니다."}'
CHANGED_API_BODY = '{"result":{"items":[],"cursor":null},"status":"OK"}'
CHANGED_BOARD_PAGE = ('<!DOCTYPE html><html lang="ko"><head><meta charset="utf-8"><title>종목토론실</title></head>'
                      '<body><div id="app"><ul class="discussion_list"></ul></div></body></html>')


# ---------------------------------------------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------------------------
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
                fault: str | None = None) -> LoggedRequest:
        self = super().__new__(cls, method, path, query, status)
        self.fault = fault
        return self


class _Response(NamedTuple):
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], replay: ReplayServer) -> None:
        self.replay = replay
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a reverse DNS lookup that can take seconds in a sandbox.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def do_GET(self) -> None:  # noqa: N802
        self.server.replay._handle(self, "GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self.server.replay._handle(self, "HEAD")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def _html_response(status: int, text: str) -> _Response:
    return _Response(status, [("Content-Type", "text/html; charset=UTF-8")], text.encode("utf-8"))


class ReplayServer:
    """Serves a :class:`SyntheticForum` on ``127.0.0.1`` (port 0 = any free port) from a daemon thread.

    ``charset``: the board pages' encoding, ``"euc-kr"`` (cp949 bytes; the charset only in ``<meta>``, the header
    says ``text/html``) or ``"utf-8"`` (charset in the header too). ``board_redirects_to_spa``: the board answers 302
    to the new SPA as the live site has since about 2026-09. ``live_posts_per_request``: before every board or API
    request for a stock, that many newer posts arrive (pages shift mid-crawl); :meth:`add_posts` does it by hand.
    ``block_non_browser_ua``: answer the block page to requests whose User-Agent lacks "Mozilla".

    New posts live in the server (copy-on-write), never in the shared forum object.
    """

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
        self.forum = forum
        self.charset = cs
        self.faults = faults
        self.board_redirects_to_spa = board_redirects_to_spa
        self.live_posts_per_request = live_posts_per_request
        self.block_non_browser_ua = block_non_browser_ua
        self.host, self.port = host, port
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
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> ReplayServer:
        if self._httpd is not None:
            return self
        self._httpd = _HTTPServer((self.host, self.port), self)
        self.port = self._httpd.server_port
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"replay-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with httpd.sockets_lock:
            socks = list(httpd.open_sockets)
        for s in socks:  # idle keep-alive connections: end them so their threads exit
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the replay server is not running; call start()")
        return f"http://{self.host}:{self.port}"

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
                new.append(Post(code, self._last_nid, self._now, r.choice(_PHRASES), author,
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
            passive = (None, "slow", "truncate", "short")  # kinds that change how a normal answer goes out
            resp = self._fault_response(fault, path, query) if kind not in passive else None
            if resp is None:
                if self.block_non_browser_ua and "Mozilla" not in (h.headers.get("User-Agent") or ""):
                    resp = _html_response(200, render_block_page())
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

    def _fault_response(self, fault: Fault, path: str, query: dict[str, str]) -> _Response:
        kind = fault.kind
        if kind in ("429", "500", "503", "403"):
            reason = {"429": "Too Many Requests", "500": "Internal Server Error", "503": "Service Unavailable",
                      "403": "Forbidden"}[kind]
            headers = [("Content-Type", "text/html; charset=UTF-8")]
            if kind in ("429", "503") and fault.retry_after is not None:
                ra = fault.retry_after
                headers.append(("Retry-After", ra if isinstance(ra, str) else str(max(0, math.ceil(ra)))))
            return _Response(int(kind), headers, f"<html><body><h1>{kind} {reason}</h1></body></html>".encode())
        if kind == "block":
            return _html_response(200, render_block_page())
        if kind == "spa_redirect":
            return self._spa_redirect(query)
        if kind == "captcha":
            return _html_response(200, render_captcha_page())
        json_type = [("Content-Type", "application/json;charset=UTF-8")]
        if kind == "login":
            return _Response(200, json_type, LOGIN_REQUIRED_BODY.encode("utf-8"))
        if kind == "layout":
            if path == API_PATH:
                return _Response(200, json_type, CHANGED_API_BODY.encode("utf-8"))
            return _html_response(200, CHANGED_BOARD_PAGE)
        raise AssertionError(kind)

    def _spa_redirect(self, query: dict[str, str]) -> _Response:
        code = query.get("code") or query.get("itemCode") or query.get("symbol") or "000000"
        return _Response(302, [("Location", SPA_URL.format(code=quote(code))),
                               ("Content-Type", "text/html; charset=UTF-8")], b"")

    def _route(self, path: str, query: dict[str, str], keep: int | None = None) -> _Response:
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
        return _Response(404, [("Content-Type", "text/plain; charset=UTF-8")], b"404 Not Found\n")

    # -- routes ---------------------------------------------------------------------------------------------------
    def _live(self, code: str) -> None:
        if self.live_posts_per_request > 0 and code in self.forum.codes:
            self.add_posts(code, self.live_posts_per_request)

    def _hide(self, page: list[Post], keep: int | None) -> list[Post]:
        """The posts of a list page as shown: hidden ones left out, nothing refilled in their place."""
        if keep is not None:
            with self._posts_lock:
                self.hidden.update(p.nid for p in page[keep:] if p.nid not in self.hidden)
        return [p for p in page if p.nid not in self.hidden]

    def _api(self, q: dict[str, str], keep: int | None = None) -> _Response:
        errors: dict[str, str] = {}
        for name in API_REQUIRED:
            if not q.get(name):
                errors[name] = _missing(name, "Boolean" if name in API_BOOLEANS else "String")
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
            return _Response(400, [("Content-Type", "application/json")], body)

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
        return _Response(200, [("Content-Type", "application/json;charset=UTF-8")], text.encode("utf-8"))

    def _board(self, q: dict[str, str], keep: int | None = None) -> _Response:
        code = q.get("code", "")
        if self.board_redirects_to_spa:
            return self._spa_redirect(q)
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
            return _Response(200, [("Content-Type", "text/html;charset=UTF-8")], text.encode("utf-8"))
        return _Response(200, [("Content-Type", "text/html")], text.encode("cp949", errors="xmlcharrefreplace"))

    def _sise_json(self, q: dict[str, str]) -> _Response:
        code = q.get("symbol", "")
        since, until = _ymd(q.get("startTime")), _ymd(q.get("endTime"))
        bars = self.forum.prices.get(code, [])
        foreign = self.forum.foreign.get(code, [])
        keep = [(b, f) for b, f in zip(bars, foreign)
                if (since is None or b.date >= since) and (until is None or b.date <= until)]
        text = render_sise_json([b for b, _ in keep], [f for _, f in keep])
        return _Response(200, [("Content-Type", "text/plain;charset=UTF-8")], text.encode("utf-8"))

    def _fchart(self, q: dict[str, str]) -> _Response:
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
        return _Response(200, [("Content-Type", "text/xml;charset=EUC-KR")],
                         text.encode("cp949", errors="xmlcharrefreplace"))

    def _market_sum(self, q: dict[str, str]) -> _Response:
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
        return _Response(200, [("Content-Type", "text/html;charset=EUC-KR")],
                         text.encode("cp949", errors="xmlcharrefreplace"))


def _ymd(s: str | None) -> date | None:
    if not s or len(s) < 8 or not s[:8].isdigit():
        return None
    try:
        return date(int(s[:4]), int(s[4:6]), int(s[6:8]))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------
def _parse_codes(text: str) -> dict[str, str]:
    out = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        code, _, name = item.partition(":")
        out[code.strip()] = name.strip() or f"합성종목{code.strip()}"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m crawler.replay",
                                description="Serve a deterministic synthetic Naver forum + price site on 127.0.0.1.")
    p.add_argument("--port", type=int, default=8765, help="port to bind (0 = any free port)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--start", type=date.fromisoformat, default=date(2018, 1, 1), help="first day (YYYY-MM-DD)")
    p.add_argument("--end", type=date.fromisoformat, default=date(2018, 3, 31), help="last day (YYYY-MM-DD)")
    p.add_argument("--codes", type=_parse_codes, default=None,
                   help="code:name pairs, comma-separated (default: 900010:합성전자,900020:가상하이닉스,900030:모의바이오)")
    p.add_argument("--posts-per-day", type=float, default=30.0, help="mean posts per day per stock")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--signal", type=float, default=0.0, help="probability a title carries its next-session cue")
    p.add_argument("--charset", default="euc-kr", choices=("euc-kr", "utf-8"), help="board page encoding")
    p.add_argument("--no-quirks", action="store_true", help="valid JSON only (no raw backslashes/control chars)")
    p.add_argument("--board-redirects-to-spa", action="store_true", help="board answers 302 to the new SPA")
    args = p.parse_args(argv)

    t0 = _time.monotonic()
    forum = SyntheticForum.generate(args.codes, args.start, args.end, args.posts_per_day, seed=args.seed,
                                    signal=args.signal, quirks=not args.no_quirks)
    n = sum(len(v) for v in forum.posts.values())
    server = ReplayServer(forum, charset=args.charset, board_redirects_to_spa=args.board_redirects_to_spa,
                          port=args.port, host=args.host)
    server.start()
    codes = ", ".join(f"{c} {nm}" for c, nm in forum.codes.items())
    print(f"replay site: {server.url}  ({n:,} posts, {codes}; {args.start}..{args.end}; "
          f"built in {_time.monotonic() - t0:.1f}s)", flush=True)
    print(f"  e.g. kofinsent crawl posts --codes {next(iter(forum.codes))} --since {args.start} "
          f"--until {args.end} --base-url {server.url} --delay 0", flush=True)
    try:
        while True:
            _time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        server.stop()
    return 0


__all__ = [
    "API_PATH", "BOARD_PATHS", "DEFAULT_CODES", "FAULT_KINDS", "FCHART_PATH", "KRX_HOLIDAYS", "MARKET_SUM_PATHS",
    "NEWEST_OFFSET", "SISE_JSON_PATH", "Fault", "FaultPlan", "LoggedRequest", "ReplayServer", "SyntheticForum",
    "is_market_day", "main", "nid_at", "render_api_error", "render_api_page", "render_api_post", "render_block_page",
    "render_board_page", "render_fchart", "render_market_sum", "render_navi", "render_sise_json",
]

if __name__ == "__main__":
    raise SystemExit(main())

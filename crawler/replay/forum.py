"""The synthetic forum model: made-up stocks, their posts, daily prices, the market-cap ranking and the cue-word signal.

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
* **Prices**: a seeded random walk with integer KRW prices on KRX tick sizes, on Mon–Fri minus
  :data:`~crawler.replay.krx.KRX_HOLIDAYS` (an *approximate* list of KRX closures 2017–2026: new year, 설날, 추석,
  Christmas, the fixed national holidays, Labour Day, the year-end closing day and the substitute/temporary/election
  holidays known to the author), from ``start - 30 days`` to ``end + 10 days``. About 3 % of sessions close exactly
  flat. Each stock has ONE halt day in ``[start, end]`` rendered as volume 0 with O=H=L=C=previous close (§3.2);
  :meth:`SyntheticForum.trading_days` excludes it, :meth:`SyntheticForum.market_days` does not.
* **Ranking**: our stocks plus filler rows (a preferred share ``…우`` with a code ending in 5, ``KODEX 200``, an ETN,
  a ``…스팩1호`` and a ``…리츠``), 62 rows, so two pages of 50.

Nothing here touches global ``random`` state: every stream is a ``random.Random`` seeded from ``seed``. The order in
which each stream is drawn from is part of the output: reordering draws changes every page the site serves (the
byte-pinning test in ``tests/crawler/test_replay_bytes.py`` catches it).
"""
from __future__ import annotations

import math
import random
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from crawler.records import Post, PriceBar, RankedStock
from crawler.replay.krx import SESSION_CLOSE, calendar_days, is_market_day, on_tick

DEFAULT_CODES: dict[str, str] = {"900010": "합성전자", "900020": "가상하이닉스", "900030": "모의바이오"}

CUE_UP, CUE_DOWN = "가즈아", "손절"

# Real nid ↔ KST calibration points (naver-sources.md §2.4): where the synthetic id counter starts.
NID_CALIBRATION: tuple[tuple[datetime, int], ...] = (
    (datetime(2017, 6, 7, 9, 50), 64_111_167),
    (datetime(2018, 5, 1, 18, 13), 82_780_049),
    (datetime(2018, 10, 1, 22, 28), 91_355_084),
    (datetime(2021, 2, 17, 22, 58), 164_120_791),
    (datetime(2021, 2, 22, 22, 52), 164_813_554),
    (datetime(2026, 9, 24, 1, 50), 429_804_991),
)


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
PHRASES = (
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

_FILLER_PREFIXES = ("샘플", "예시", "테스트", "더미", "가짜", "연습", "시험", "모형")
_FILLER_SUFFIXES = ("화학", "금융지주", "건설", "중공업", "통신", "제약", "전기", "물산", "증권", "해운",
                    "식품", "반도체")

# Post times are drawn as whole seconds from this naive origin, so ties and ordering are exact integers.
EPOCH = datetime(1970, 1, 1)


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

        span = calendar_days(start - timedelta(days=30), end + timedelta(days=10))
        market_days = [d for d in span if is_market_day(d)]
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


def _gen_prices(code: str, days: list[date], start: date, end: date,
                seed: int) -> tuple[list[PriceBar], list[float], date]:
    r = random.Random(f"{seed}:prices:{code}")
    prev = on_tick(math.exp(r.uniform(math.log(6_000), math.log(250_000))))
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
            close = on_tick(prev * (1.0 + min(0.29, max(-0.29, r.gauss(0.0003, 0.022)))))
        open_ = on_tick(prev * (1.0 + r.gauss(0.0, 0.006)))
        high = max(on_tick(max(open_, close) * (1.0 + abs(r.gauss(0.0, 0.008)))), open_, close)
        low = min(on_tick(min(open_, close) * (1.0 - abs(r.gauss(0.0, 0.008)))), open_, close)
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
    days = list(calendar_days(start, end))
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
                title = r.choice(PHRASES)
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

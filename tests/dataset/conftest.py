"""Crawler dbs for the dataset tests, written through ``crawler.store.Store`` like a real crawl would.

``hand_db``: two stocks around Chuseok 2021 (markets shut Mon 20 - Wed 22 Sep) with a flat day, a halt stored as a
zero-volume bar (005930, 28 Sep) and a halt the crawler dropped (000660, no bar on 27 Sep). Every expected label in
``HAND_CASES`` was worked out by hand from ``HAND_BARS``.

``synth_db``: three stocks over 2021 with a few thousand posts (random times, blind/empty/duplicate titles) for the
sampling, split, determinism, export and CLI tests.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from crawler.records import Post, PriceBar
from crawler.store import Store

A, B = "005930", "000660"
NAMES = {A: "삼성전자", B: "SK하이닉스"}

# (code, day, close, volume)
HAND_BARS = [
    (A, "2021-09-13", 100, 10), (A, "2021-09-14", 101, 10), (A, "2021-09-15", 101, 10), (A, "2021-09-16", 99, 10),
    (A, "2021-09-17", 102, 10), (A, "2021-09-23", 104, 10), (A, "2021-09-24", 103, 10), (A, "2021-09-27", 105, 10),
    (A, "2021-09-28", 105, 0),  # trading halt stored with volume 0: must count as a non-trading day
    (A, "2021-09-29", 107, 10), (A, "2021-09-30", 106, 10), (A, "2021-10-01", 108, 10),
    (B, "2021-09-13", 50, 5), (B, "2021-09-14", 51, 5), (B, "2021-09-15", 52, 5), (B, "2021-09-16", 53, 5),
    (B, "2021-09-17", 52, 5), (B, "2021-09-23", 54, 5), (B, "2021-09-24", 54, 5),  # flat vs 23rd
    # no 000660 bar on 2021-09-27: a halt the crawler dropped
    (B, "2021-09-28", 55, 5), (B, "2021-09-29", 56, 5), (B, "2021-09-30", 57, 5), (B, "2021-10-01", 58, 5),
]

# (case, code, posted_at, same-day expectation, next-session expectation); an expectation is a removal reason or
# (label, move_date, close_prev, close).
UPv, DOWNv = "[상승]", "[하락]"
HAND_CASES = [
    ("15:29:59 on a trading day", A, "2021-09-14T15:29:59",
     (UPv, "2021-09-14", 100, 101), (UPv, "2021-09-14", 100, 101)),
    ("15:30:00 exactly -> next session (flat)", A, "2021-09-14T15:30:00",
     (UPv, "2021-09-14", 100, 101), "flat"),
    ("15:31 -> next session (flat)", A, "2021-09-14T15:31:00", (UPv, "2021-09-14", 100, 101), "flat"),
    ("flat day", A, "2021-09-15T10:00:00", "flat", "flat"),
    ("15:29 down day", A, "2021-09-16T15:29:00", (DOWNv, "2021-09-16", 101, 99), (DOWNv, "2021-09-16", 101, 99)),
    ("Friday 15:29 before the holiday", A, "2021-09-17T15:29:00",
     (UPv, "2021-09-17", 99, 102), (UPv, "2021-09-17", 99, 102)),
    ("Friday 15:31 before the holiday -> Thursday after it", A, "2021-09-17T15:31:00",
     (UPv, "2021-09-17", 99, 102), (UPv, "2021-09-23", 102, 104)),
    ("Saturday", A, "2021-09-18T11:00:00", "non_trading_day", (UPv, "2021-09-23", 102, 104)),
    ("public holiday (Chuseok)", A, "2021-09-21T10:00:00", "non_trading_day", (UPv, "2021-09-23", 102, 104)),
    ("first day after the holiday: previous close is the Friday's", A, "2021-09-23T09:00:00",
     (UPv, "2021-09-23", 102, 104), (UPv, "2021-09-23", 102, 104)),
    ("Friday 15:31 -> Monday", A, "2021-09-24T15:31:00",
     (DOWNv, "2021-09-24", 104, 103), (UPv, "2021-09-27", 103, 105)),
    ("Sunday 23:59:59 -> Monday", A, "2021-09-26T23:59:59", "non_trading_day", (UPv, "2021-09-27", 103, 105)),
    ("Monday 16:00, Tuesday halted -> Wednesday", A, "2021-09-27T16:00:00",
     (UPv, "2021-09-27", 103, 105), (UPv, "2021-09-29", 105, 107)),
    ("halt day (zero-volume bar)", A, "2021-09-28T10:00:00", "non_trading_day", (UPv, "2021-09-29", 105, 107)),
    ("first price date", A, "2021-09-13T10:00:00", "no_previous_close", "no_previous_close"),
    ("first price date after the close", A, "2021-09-13T16:00:00",
     "no_previous_close", (UPv, "2021-09-14", 100, 101)),
    ("last-but-one day 15:31", A, "2021-09-30T15:31:00",
     (DOWNv, "2021-09-30", 107, 106), (UPv, "2021-10-01", 106, 108)),
    ("halt day the crawler dropped", B, "2021-09-27T11:00:00", "non_trading_day", (UPv, "2021-09-28", 54, 55)),
    ("flat day, other stock", B, "2021-09-24T14:00:00", "flat", "flat"),
    ("day after a dropped halt: previous close skips it", B, "2021-09-28T10:00:00",
     (UPv, "2021-09-28", 54, 55), (UPv, "2021-09-28", 54, 55)),
]


def write_db(path: Path, posts: list[Post], bars: list[tuple[str, str, float, int]],
             names: dict[str, str] | None = None) -> Path:
    with Store(path) as store:
        if posts:
            store.write_page(posts, names=names)
        for code, name in (names or {}).items():
            store.upsert_stock(code, name)
        store.write_prices([PriceBar(c, date.fromisoformat(d), cl, cl, cl, cl, v) for c, d, cl, v in bars],
                           source="siseJson")
    return path


def hand_posts() -> list[Post]:
    return [Post(code, 1000 + i, datetime.fromisoformat(ts), f"글 {i} {case}")
            for i, (case, code, ts, _, _) in enumerate(HAND_CASES)]


@pytest.fixture
def hand_db(tmp_path: Path) -> Path:
    return write_db(tmp_path / "hand.db", hand_posts(), HAND_BARS, NAMES)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Test modules take the hand cases through this parameter instead of importing conftest (a module name that
    # sibling test folders may also use).
    if "hand_case" in metafunc.fixturenames:
        metafunc.parametrize("hand_case", HAND_CASES, ids=[c[0] for c in HAND_CASES])


@pytest.fixture(scope="session")
def hand() -> SimpleNamespace:
    return SimpleNamespace(A=A, B=B, names=NAMES, bars=HAND_BARS, cases=HAND_CASES, posts=hand_posts,
                           write_db=write_db)


# -- synthetic year -------------------------------------------------------------------------------------------------
SYNTH_CODES = {"005930": "삼성전자", "000660": "SK하이닉스", "035420": "NAVER"}
WORDS = ["가즈아", "손절", "물타기", "떡상", "떡락", "실적", "배당", "외국인", "기관", "매수", "매도", "반등", "폭락",
         "신고가", "공매도", "존버", "익절", "호재", "악재", "내일"]
HOLIDAYS_2021 = {"2021-01-01", "2021-02-11", "2021-02-12", "2021-03-01", "2021-05-05", "2021-05-19", "2021-08-16",
                 "2021-09-20", "2021-09-21", "2021-09-22", "2021-10-04", "2021-10-11", "2021-12-31"}


def synth_bars(seed: int = 7) -> list[tuple[str, str, float, int]]:
    rng = np.random.default_rng(seed)
    days, d = [], date(2020, 12, 28)
    while d <= date(2022, 1, 7):
        if d.weekday() < 5 and d.isoformat() not in HOLIDAYS_2021:
            days.append(d.isoformat())
        d += timedelta(days=1)
    bars = []
    for code in SYNTH_CODES:
        close = 1000.0
        for day in days:
            close = max(100.0, close + float(rng.integers(-3, 4)) * 10)  # small ticks: some flat days
            bars.append((code, day, close, 100))
    return bars


def synth_posts(n: int = 3000, seed: int = 11) -> list[Post]:
    rng = np.random.default_rng(seed)
    start = datetime(2021, 1, 4)
    span = int((datetime(2021, 12, 30) - start).total_seconds())
    codes = list(SYNTH_CODES)
    posts = []
    for i in range(n):
        ts = start + timedelta(seconds=int(rng.integers(0, span)))
        words = rng.choice(WORDS, size=int(rng.integers(1, 4)))
        title = " ".join(words)
        if i % 97 == 0:
            title = "  \u3000 "  # empty after normalisation
        elif i % 89 == 0:
            title = "삼성전자 가즈아"  # repeated title
        elif i % 53 == 0:
            title = "대통령 " + title  # matched by a politics rule
        posts.append(Post(codes[i % 3], 10_000 + i, ts, title, is_blind=(i % 101 == 0)))
    return posts


@pytest.fixture(scope="session")
def synth_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synth") / "synth.db"
    return write_db(path, synth_posts(), synth_bars(), SYNTH_CODES)


@pytest.fixture(scope="session")
def synth() -> SimpleNamespace:
    return SimpleNamespace(codes=SYNTH_CODES, posts=synth_posts, bars=synth_bars, write_db=write_db)

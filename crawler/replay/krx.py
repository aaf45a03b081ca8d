"""The exchange's rules the synthetic site follows: the KRX session calendar and tick sizes.

Both the forum (which days trade, where prices land) and the ranking page (seeded prices for filler rows) need them,
so they sit below both.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import date, time, timedelta

# A post at or after the close belongs to the next session (labels.py ``next-session``).
SESSION_CLOSE = time(15, 30)


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
    """Mon–Fri and not in :data:`KRX_HOLIDAYS` (approximate: see :mod:`crawler.replay.forum`)."""
    return d.weekday() < 5 and d not in KRX_HOLIDAYS


def calendar_days(a: date, b: date) -> Iterable[date]:
    """Every calendar day from ``a`` to ``b``, both included."""
    for i in range((b - a).days + 1):
        yield a + timedelta(days=i)


def _tick(p: float) -> int:
    """KRX tick size (the 2023 schedule) for a price level."""
    for limit, tick in ((2_000, 1), (5_000, 5), (20_000, 10), (50_000, 50), (200_000, 100), (500_000, 500)):
        if p < limit:
            return tick
    return 1000


def on_tick(x: float) -> int:
    """``x`` rounded to its tick, never below one tick."""
    t = _tick(x)
    return max(t, round(x / t) * t)


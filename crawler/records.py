"""The records every source is normalised to."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

KST = timezone(timedelta(hours=9), "KST")


@dataclass(frozen=True, slots=True)
class Post:
    """One forum post. ``posted_at`` is naive KST (the site gives KST wall time with no offset)."""

    code: str
    nid: int
    posted_at: datetime
    title: str
    author: str | None = None
    views: int | None = None
    likes: int | None = None
    dislikes: int | None = None
    comments: int | None = None
    is_blind: bool = False
    source: str = "api"  # "api" (stock.naver.com community JSON) or "html" (legacy board.naver list)


@dataclass(frozen=True, slots=True)
class PriceBar:
    """One daily bar. Prices from siseJson and fchart are adjusted (수정주가)."""

    code: str
    date: date
    open: float
    high: float
    low: float
    close: float
    volume: int


@dataclass(frozen=True, slots=True)
class RankedStock:
    """One row of the market-cap ranking page."""

    rank: int
    code: str
    name: str
    market_cap: int | None = None  # 억원, as the page shows it

"""The stock universe: today's market-cap ranking filtered to common stocks, or a pinned list.

Today's ranking applied to a past period adds survivorship and look-ahead bias; a study of 2017–2022 should pin its
list (``--codes``) and keep the ranking for choosing new studies.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import date

from crawler.http import Fetcher
from crawler.prices import listing_date
from crawler.sources import universe as universe_source
from crawler.sources.board_html import decode_html

MARKET_SUM_URL = "https://finance.naver.com/sise/sise_market_sum.naver"
MARKETS = {"KOSPI": 0, "KOSDAQ": 1}


@dataclass(frozen=True)
class UniverseStock:
    rank: int
    code: str
    name: str
    market: str
    market_cap: int | None
    listed_on: date | None  # first date siseJson returns; None when not looked up

    def to_json(self) -> dict:
        d = asdict(self)
        d["listed_on"] = self.listed_on.isoformat() if self.listed_on else None
        return d


def ranking(fetcher: Fetcher, market: str) -> Iterator[universe_source.RankedStock]:
    """Every row of the market-cap ranking, page by page, in rank order."""
    if market not in MARKETS:
        raise ValueError(f"unknown market {market!r}; use one of: {', '.join(MARKETS)}")
    page_no, last = 1, 1
    while page_no <= last:
        page = fetcher.get(MARKET_SUM_URL, {"sosok": MARKETS[market], "page": page_no},
                           referer="https://finance.naver.com/sise/",
                           parse=lambda r: universe_source.parse_market_sum(decode_html(r.body, r.content_type)))
        if not page.rows:
            return
        yield from page.rows
        last = max(last, page.last_page or page_no)
        page_no += 1


def top_stocks(fetcher: Fetcher, market: str = "KOSPI", top: int = 20,
               listed_before: date | None = None) -> list[UniverseStock]:
    """The ``top`` largest common stocks (no preferred shares, ETF/ETN, SPAC, REIT), optionally listed before a date."""
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    chosen: list[UniverseStock] = []
    for row in ranking(fetcher, market):
        if not universe_source.is_common_stock(row.code, row.name):
            continue
        listed = None
        if listed_before is not None:
            listed = listing_date(fetcher, row.code, listed_before)
            if listed is None:
                continue
        chosen.append(UniverseStock(row.rank, row.code, row.name, market, row.market_cap, listed))
        if len(chosen) == top:
            break
    return chosen

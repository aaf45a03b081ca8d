"""The crawl loop, written once: per stock, the forum backfill (with a progress bar), then its daily prices.

``kofinsent crawl posts`` and ``kofinsent crawl prices`` (:mod:`crawler.cli`) and the crawl step of ``kofinsent run``
(:mod:`kofinsent.experiment.runner`) all call :func:`crawl`; they differ only in the :class:`CrawlPlan` they pass
and in the line they print per stock.

Every page is committed with its cursor as it is walked, so a crawl stopped anywhere (a block, a rate limit, the
request budget, Ctrl-C, SIGKILL) keeps what it stored, and the same call resumes; a stock already complete costs no
list request. Errors are the crawler's typed ones (:mod:`crawler.errors`) and go up unchanged after the db is closed.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from crawler.backfill import BACKFILLS, BackfillResult, DateRange, backfill, progress_bar
from crawler.http import Fetcher, HttpConfig
from crawler.prices import fetch_prices
from crawler.records import PriceBar
from crawler.store import Store


@dataclass(frozen=True)
class CrawlPlan:
    """What to crawl: the stocks, the KST date range (inclusive) and which of posts and prices.

    Checked when made, before anything touches the network or the db: ``since`` after ``until`` and an unknown
    ``source`` raise ValueError. Prices are fetched for the range widened by ``price_margin_days`` on each side (the
    labels of posts at the range's edges need the sessions around them).
    """

    codes: Sequence[str]
    since: date
    until: date
    posts: bool = True
    source: str = "api"
    prices: bool = True
    price_margin_days: int = 0
    names: Mapping[str, str] = field(default_factory=dict)  # code -> name, recorded in the db before its posts

    def __post_init__(self) -> None:
        DateRange(self.since, self.until)  # raises for since > until, in the words the CLI has always printed
        if self.source not in BACKFILLS:
            raise ValueError(f"--source must be {' or '.join(BACKFILLS)}, got {self.source!r}")

    @property
    def days(self) -> DateRange:
        return DateRange(self.since, self.until)

    @property
    def price_days(self) -> tuple[date, date]:
        margin = timedelta(days=self.price_margin_days)
        return self.since - margin, self.until + margin


@dataclass
class StockCrawl:
    """What one stock's crawl did. ``posts`` is None when the plan skips posts; ``bars`` is empty when it skips
    prices (a crawl that asks for prices and gets none stops with a FetchError instead)."""

    code: str
    posts: BackfillResult | None = None
    posts_in_db: int = 0                 # all of the stock's posts in the db afterwards, from earlier crawls too
    bars: list[PriceBar] = field(default_factory=list)
    price_source: str | None = None      # "siseJson" or "fchart"


@dataclass
class CrawlResult:
    stocks: list[StockCrawl]
    requests: int  # HTTP requests sent, retries included
    retries: int


def crawl(db: str | Path, plan: CrawlPlan, http: HttpConfig, *, progress: bool = True,
          report: Callable[[StockCrawl], None] | None = None) -> CrawlResult:
    """Crawl ``plan`` into the SQLite file ``db`` (created if missing), stock after stock.

    ``report`` gets each stock's :class:`StockCrawl` as soon as the stock is done, so that a caller can print a
    line per stock while the crawl goes on. ``progress`` shows a bar of days covered on a terminal (stderr).
    The base URL is checked to be reachable before the db is opened, so an unreachable one leaves no file behind.
    """
    fetcher = Fetcher(http)
    fetcher.check_reachable()
    store = Store(db)
    stocks: list[StockCrawl] = []
    try:
        for code in plan.codes:
            stock = StockCrawl(code)
            if code in plan.names:
                store.upsert_stock(code, plan.names[code])
            if plan.posts:
                update, close = progress_bar(plan.days.days, f"{code} posts", progress)
                try:
                    stock.posts = backfill(plan.source, fetcher, store, code, plan.days, progress=update)
                finally:
                    close()
                stock.posts_in_db = store.count_posts(code)
            if plan.prices:
                stock.bars, stock.price_source = fetch_prices(fetcher, code, *plan.price_days)
                store.write_prices(stock.bars, stock.price_source)
            stocks.append(stock)
            if report is not None:
                report(stock)
    finally:
        store.close()
    return CrawlResult(stocks, fetcher.stats.requests, fetcher.stats.retries)


__all__ = ["BackfillResult", "CrawlPlan", "CrawlResult", "HttpConfig", "StockCrawl", "crawl"]

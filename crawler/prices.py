"""Daily adjusted prices: siseJson for a date range, fchart XML when siseJson fails or returns nothing."""
from __future__ import annotations

from datetime import date, timedelta

from crawler.errors import BlockedError, BudgetExceeded, CrawlerError, FetchError, RateLimited
from crawler.http import Fetcher
from crawler.records import PriceBar
from crawler.sources import prices as price_source

SISE_JSON_URL = "https://api.finance.naver.com/siseJson.naver"
FCHART_URL = "https://fchart.stock.naver.com/sise.nhn"
FCHART_MAX_COUNT = 6000  # what FinanceDataReader asks for; about 24 years of bars


def _ymd(d: date) -> str:
    return d.strftime("%Y%m%d")


def fetch_sise_json(fetcher: Fetcher, code: str, since: date, until: date) -> list[PriceBar]:
    params = {"symbol": code, "requestType": 1, "startTime": _ymd(since), "endTime": _ymd(until), "timeframe": "day"}
    bars = fetcher.get(SISE_JSON_URL, params, referer=f"https://finance.naver.com/item/sise.naver?code={code}",
                       parse=lambda r: price_source.parse_sise_json(r.text(), code))
    return [b for b in bars if since <= b.date <= until]


def fetch_fchart(fetcher: Fetcher, code: str, since: date, until: date, today: date | None = None) -> list[PriceBar]:
    # fchart counts bars back from today, so ask for enough weekdays to reach `since`.
    today = today or date.today()
    weekdays = sum(1 for i in range((today - since).days + 1) if (since + timedelta(i)).weekday() < 5)
    count = min(FCHART_MAX_COUNT, weekdays + 10)
    params = {"symbol": code, "timeframe": "day", "count": count, "requestType": 0}
    bars = fetcher.get(FCHART_URL, params, referer=f"https://finance.naver.com/item/main.naver?code={code}",
                       parse=lambda r: price_source.parse_fchart_xml(price_source.decode_xml(r.body), code))
    return [b for b in bars if since <= b.date <= until]


def fetch_prices(fetcher: Fetcher, code: str, since: date, until: date) -> tuple[list[PriceBar], str]:
    """Adjusted daily bars in [since, until] (halt and empty bars already dropped) and the source that gave them."""
    try:
        bars = fetch_sise_json(fetcher, code, since, until)
        if bars:
            return bars, "siseJson"
        reason = "siseJson returned no bars"
    except (BlockedError, RateLimited, BudgetExceeded):
        raise  # stops, not a siseJson problem: fchart would hit the same wall
    except CrawlerError as e:
        reason = f"siseJson failed ({e})"
    bars = fetch_fchart(fetcher, code, since, until)
    if not bars:
        raise FetchError(f"no prices for {code} in {since}..{until}: {reason}, and fchart returned none either")
    return bars, "fchart"


def listing_date(fetcher: Fetcher, code: str, before: date) -> date | None:
    """First trading date siseJson knows for ``code`` if it is before ``before``, else None (listed later)."""
    bars = fetch_sise_json(fetcher, code, date(1980, 1, 1), before - timedelta(days=1))
    return bars[0].date if bars else None

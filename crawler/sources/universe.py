"""The market-cap ranking ``finance.naver.com/sise/sise_market_sum.naver?sosok=&page=`` (§4 of naver-sources.md).

It is *today's* ranking: using it to pick stocks for a past period adds survivorship and look-ahead bias.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from bs4 import BeautifulSoup, Tag

from crawler.errors import ParseError
from crawler.records import RankedStock
from crawler.sources.board_html import navi_pages

WHAT = "market-sum page"

# With the default field set a row is: rank | name | 현재가 | 전일비 | 등락률 | 액면가 | 시가총액 | ... ; the field set is
# chosen by a cookie, so the header decides when there is one.
DEFAULT_MARKET_CAP_TD = 6
MARKET_CAP_HEADER = "시가총액"

_CODE = re.compile(r"[?&;]code=([0-9A-Za-z]+)")
# 우 / 우B / 우C at the end, but not "…대우" (e.g. 미래에셋대우 006800, a common stock until its 2021 rename); its
# preferred share "미래에셋대우우" still matches, and preferred codes never end in 0 anyway.
_PREFERRED_NAME = re.compile(r"(?<!대)우[BC]?$|우\(전환\)")
ETF_BRANDS = ("KODEX", "TIGER", "KBSTAR", "RISE", "ACE", "ARIRANG", "HANARO", "KOSEF", "SOL", "PLUS", "KIWOOM",
              "TIMEFOLIO", "1Q")
# A brand followed by a letter is a different word (SOLUM is not SOL).
_ETF_NAME = re.compile(r"^(?:" + "|".join(ETF_BRANDS) + r")(?![A-Za-z])")
# "리츠" inside 메리츠 (메리츠금융지주, 메리츠화재 …: common stocks) is not a REIT.
_REIT_NAME = re.compile(r"(?<!메)리츠|REIT", re.I)


@dataclass(frozen=True)
class MarketSumPage:
    """One ranking page: ``rows`` in page order, ``last_page`` from 맨뒤 (or the navigation), None when absent."""

    rows: list[RankedStock]
    last_page: int | None


def parse_market_sum(html: str) -> MarketSumPage:
    """Rows of one ranking page. No ``table.type_2`` raises :class:`ParseError`; the table with no rows is a valid
    empty page (past the last page). ``market_cap`` (억원) comes from the 시가총액 column found by header name, or
    the default position when the table has no header; None when a header exists without that column."""
    soup = BeautifulSoup(html, "lxml")
    table = soup.select_one("table.type_2")
    if table is None:
        raise ParseError(WHAT, "no table.type_2 (not a market-sum page)", soup.get_text(" ", strip=True))
    cap_td = _market_cap_column(table)

    rows: list[RankedStock] = []
    for tr in table.find_all("tr"):
        link = tr.select_one("a.tltle")
        if link is None:
            continue  # header or spacer
        tds = tr.find_all("td", recursive=False)
        rank_td = tr.select_one("td.no")
        rank_text = rank_td.get_text(strip=True) if rank_td is not None else ""
        href = str(link.get("href", ""))
        m = _CODE.search(href)
        if not rank_text.isdigit() or m is None:
            raise ParseError(WHAT, f"row {link.get_text(strip=True)!r}: rank {rank_text!r}, href {href!r}")
        name = link.get_text(strip=True)
        market_cap = None
        if cap_td is not None and cap_td < len(tds):
            market_cap = _cap(tds[cap_td], name)
        rows.append(RankedStock(int(rank_text), m.group(1), name, market_cap))
    return MarketSumPage(rows, navi_pages(soup)[0])


def _market_cap_column(table: Tag) -> int | None:
    """td index of 시가총액: from the header row (colspans counted) if any, else the default position."""
    header = next((tr for tr in table.find_all("tr") if tr.find("th", recursive=False)), None)
    if header is None:
        return DEFAULT_MARKET_CAP_TD
    i = 0
    for th in header.find_all(["th", "td"], recursive=False):
        if MARKET_CAP_HEADER in th.get_text(strip=True):
            return i
        i += int(th.get("colspan", 1) or 1)
    return None


def _cap(td: Tag, name: str) -> int | None:
    text = td.get_text(strip=True).replace(",", "")
    if text in ("", "-", "N/A"):
        return None
    if not text.isdigit():
        raise ParseError(WHAT, f"row {name!r}: 시가총액 {text!r} is not an integer")
    return int(text)


def is_common_stock(code: str, name: str) -> bool:
    """False for preferred shares, ETF/ETN, SPACs and REITs (by code and name; the page has no type column)."""
    code, name = code.strip(), name.strip()
    if not code.endswith("0") or _PREFERRED_NAME.search(name):
        return False
    if _ETF_NAME.match(name) or "ETN" in name or "ETF" in name:
        return False
    if "스팩" in name or _REIT_NAME.search(name):
        return False
    return True


def top_common(rows: Iterable[RankedStock], n: int) -> list[RankedStock]:
    """The ``n`` best-ranked common stocks among ``rows`` (sorted by rank first)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    common = [r for r in sorted(rows, key=lambda r: r.rank) if is_common_stock(r.code, r.name)]
    return common[:n]


__all__ = ["ETF_BRANDS", "MarketSumPage", "RankedStock", "is_common_stock", "parse_market_sum", "top_common"]

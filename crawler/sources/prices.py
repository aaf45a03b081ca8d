"""Daily adjusted prices: siseJson (JS-style array) and fchart (EUC-KR XML). Shapes: naver-sources.md §3.2–3.3.

Both parsers return bars oldest first with unique dates, and drop what is not a trading session: empty bars (fchart
sends ``20260907|||||`` for today before the open) and zero-volume halt bars (O=H=L=C=previous close), which would
otherwise read as "flat" days.
"""
from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from crawler.errors import ParseError
from crawler.records import PriceBar
from crawler.sources.board_html import decode_bytes

SISE_WHAT = "siseJson body"
FCHART_WHAT = "fchart XML"

# siseJson header names -> PriceBar fields. Columns are found by name; the documented order is only a fallback hint.
SISE_COLUMNS = {"날짜": "date", "시가": "open", "고가": "high", "저가": "low", "종가": "close", "거래량": "volume"}

_SINGLE_QUOTED = re.compile(r"'([^'\"\\]*)'")
_TRAILING_COMMA = re.compile(r",(\s*[\]}])")
_YMD = re.compile(r"\d{8}")
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")
_XML_DECL_ENCODING = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([\w.:-]+)[\"']")


def parse_sise_json(text: str, code: str) -> list[PriceBar]:
    """Bars from a siseJson body: ``[['날짜', '시가', ...], ["20230922", 68300, ...], ...]``.

    A header-only body is a valid empty answer (no sessions in the range); an empty body, ``[]`` or a body without the
    header raises :class:`ParseError`, as does any row that is not a bar (the message names it).
    """
    body = text.lstrip("\ufeff").strip()
    if not body:
        raise ParseError(SISE_WHAT, "empty body (no header row)")
    # JS, not JSON: single-quoted header strings and, sometimes, trailing commas.
    js = _TRAILING_COMMA.sub(r"\1", _SINGLE_QUOTED.sub(r'"\1"', body))
    try:
        data = json.loads(js, strict=False)
    except json.JSONDecodeError as e:
        raise ParseError(SISE_WHAT, f"not a JS array ({e.msg} at char {e.pos} of {len(js)}; cut short?)",
                         body) from None
    if not isinstance(data, list):
        raise ParseError(SISE_WHAT, f"expected an array, got a {type(data).__name__}", body)
    if not data:
        raise ParseError(SISE_WHAT, "'[]' without the header row", body)
    header = data[0]
    if not isinstance(header, list) or not all(isinstance(h, str) for h in header):
        raise ParseError(SISE_WHAT, f"first row {header!r} is not the header", body)
    names = [h.strip() for h in header]
    missing = [h for h in SISE_COLUMNS if h not in names]
    if missing:
        raise ParseError(SISE_WHAT, f"header {names} lacks {missing}", body)
    col = {SISE_COLUMNS[h]: names.index(h) for h in SISE_COLUMNS}

    bars = []
    for i, row in enumerate(data[1:], start=1):
        where = f"row {i} {row!r}"
        if not isinstance(row, list) or len(row) <= max(col.values()):
            raise ParseError(SISE_WHAT, f"{where} is not a {len(names)}-column row")
        bar = _bar(code, *(row[col[f]] for f in ("date", "open", "high", "low", "close", "volume")),
                   where=where, what=SISE_WHAT)
        if bar is not None:
            bars.append(bar)
    return _ordered(bars, SISE_WHAT)


def decode_xml(body: bytes) -> str:
    """XML bytes -> text, honouring the ``<?xml ... encoding=...?>`` declaration (EUC-KR -> cp949), else cp949, else
    utf-8; the declaration stays in the text (:func:`parse_fchart_xml` ignores it)."""
    m = _XML_DECL_ENCODING.match(body.lstrip(b"\xef\xbb\xbf")[:200])
    return decode_bytes(body, [m.group(1).decode("ascii") if m else None])


def parse_fchart_xml(text: str, code: str) -> list[PriceBar]:
    """Bars from fchart ``<item data="YYYYMMDD|open|high|low|close|volume"/>`` items.

    Takes decoded text (see :func:`decode_xml`). Invalid or truncated XML, no ``chartdata``, a ``chartdata`` for another
    symbol, or a malformed item raises :class:`ParseError`. No items is a valid empty answer.
    """
    # ElementTree refuses str input that still declares a byte encoding; the text is already decoded.
    xml = _XML_DECL.sub("", text.lstrip("\ufeff"), count=1)
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        raise ParseError(FCHART_WHAT, "unexpected DTD in a chart response", xml)
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise ParseError(FCHART_WHAT, f"invalid XML ({e}; cut short?)", xml) from None
    chart = root if root.tag == "chartdata" else root.find(".//chartdata")
    if chart is None:
        raise ParseError(FCHART_WHAT, f"no <chartdata> under <{root.tag}>", xml)
    symbol = chart.get("symbol")
    if symbol is not None and symbol.strip() != code:
        raise ParseError(FCHART_WHAT, f"chartdata is for symbol {symbol!r}, not the requested {code!r}")

    bars = []
    for i, item in enumerate(chart.iter("item")):
        data = item.get("data")
        where = f"item {i} data={data!r}"
        fields = data.split("|") if data is not None else []
        if len(fields) != 6:
            raise ParseError(FCHART_WHAT, f"{where} is not 'YYYYMMDD|open|high|low|close|volume'")
        bar = _bar(code, *fields, where=where, what=FCHART_WHAT)
        if bar is not None:
            bars.append(bar)
    return _ordered(bars, FCHART_WHAT)


def drop_non_trading(bars: Iterable[PriceBar]) -> list[PriceBar]:
    """Bars with a positive volume (halt days repeat the previous close with volume 0)."""
    return [b for b in bars if b.volume > 0]


def _bar(code: str, day: Any, o: Any, h: Any, lo: Any, c: Any, v: Any, *, where: str, what: str) -> PriceBar | None:
    """One bar, or None for an empty or zero-volume (halt) bar."""
    values = (o, h, lo, c, v)
    if all(_empty(x) for x in values):
        return None
    d = _date(day, where, what)
    volume = 0 if _empty(v) else _volume(v, where, what)
    if volume == 0:
        return None
    prices = [_price(x, name, where, what) for x, name in zip((o, h, lo, c), ("open", "high", "low", "close"))]
    return PriceBar(code, d, *prices, volume)


def _empty(x: Any) -> bool:
    return x is None or (isinstance(x, str) and not x.strip())


def _date(x: Any, where: str, what: str) -> date:
    s = str(x).strip() if isinstance(x, (str, int)) and not isinstance(x, bool) else ""
    if not _YMD.fullmatch(s):
        raise ParseError(what, f"{where}: date {x!r} is not YYYYMMDD")
    try:
        return date(int(s[:4]), int(s[4:6]), int(s[6:]))
    except ValueError as e:
        raise ParseError(what, f"{where}: date {x!r}: {e}") from None


def _number(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        f = float(x)
    elif isinstance(x, str):
        try:
            f = float(x.strip().replace(",", ""))
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def _price(x: Any, name: str, where: str, what: str) -> float:
    f = None if _empty(x) else _number(x)
    if f is None or f < 0:
        raise ParseError(what, f"{where}: {name} {x!r} is not a price")
    return f


def _volume(x: Any, where: str, what: str) -> int:
    f = _number(x)
    if f is None or f < 0 or not f.is_integer():
        raise ParseError(what, f"{where}: volume {x!r} is not a non-negative integer")
    return int(f)


def _ordered(bars: Sequence[PriceBar], what: str) -> list[PriceBar]:
    """Oldest first, one bar per date; the same date twice with different values is a broken body."""
    by_date: dict[date, PriceBar] = {}
    for b in bars:
        seen = by_date.setdefault(b.date, b)
        if seen != b:
            raise ParseError(what, f"two different bars for {b.date}: {seen} and {b}")
    return [by_date[d] for d in sorted(by_date)]


__all__ = ["SISE_COLUMNS", "decode_xml", "drop_non_trading", "parse_fchart_xml", "parse_sise_json"]

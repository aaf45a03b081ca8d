"""Price labels for forum posts: ``[상승]`` / ``[하락]`` from stored adjusted closes.

Rules (``posted_at`` is naive KST, days are KST calendar days):

* ``same-day`` (seed 003's rule): the close of the post's calendar day versus the stock's previous trading day's close.
  A post on a day the stock did not trade (weekend, holiday, halt) has no same-day label.
* ``next-session`` (leakage-free): the first session whose outcome the post could not have seen. A post before 15:30
  on a trading day gets that day's move; a post at 15:30:00 or later, or on a non-trading day, gets the next trading
  day's move.

A "trading day" is per stock: a day with a stored bar whose volume is > 0. The crawler already drops zero-volume
(halt) bars; any that slip into the db are treated as non-trading here too, so a halt day never lends its close to a
label and the close before the halt is the previous close of the day after it.

Posts that get no label are counted under one reason each (see :data:`REASONS`); none is silently lost.

Implementation: the outcome of every (stock, query day) pair is evaluated once on a dense table spanning the price
calendar (20 stocks x 6 years is ~44k cells), then each post is labelled by one integer division and one table
lookup. No per-row Python.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kofinsent.dataset.errors import CoverageGap
from kofinsent.labels import DOWN, UP

RULES = ("same-day", "next-session")

# KRX's regular session has closed at 15:30 KST since 2016-08-01 (15:00 before). Days with a late open/close (the
# first session of a year, the college entrance exam day) keep this cutoff: on them a 15:30-16:30 post is labelled
# with the next session, which is conservative (it can only lose, never leak, information).
SESSION_CLOSE_S = 15 * 3600 + 30 * 60
DAY_S = 86_400

OK = 0
MISSING_PRICES = 1     # the day the label needs is outside the stock's stored bars (or it has none)
NON_TRADING_DAY = 2    # same-day only: the post's day has no traded bar for the stock
NO_PREVIOUS_CLOSE = 3  # the move day is the stock's first stored bar: there is no earlier close to compare with
FLAT = 4               # close == previous close: neither up nor down
REASONS = {
    MISSING_PRICES: "missing_prices",
    NON_TRADING_DAY: "non_trading_day",
    NO_PREVIOUS_CLOSE: "no_previous_close",
    FLAT: "flat",
}


# 32 bytes a bar: gathering one record per labelled post is the labeller's largest memory traffic.
BAR_DTYPE = np.dtype([("day", "datetime64[D]"), ("close_prev", "f8"), ("close", "f8"), ("ret", "f8")])


@dataclass(frozen=True)
class PriceCalendar:
    """Traded bars of every stock, concatenated and sorted by (stock, day).

    ``codes`` holds every stock the calendar knows (stocks without bars included, so posts of a stock with no prices
    get "missing prices" instead of an error); stock ``i`` owns bars ``start[i]:stop[i]``. ``bars`` carries what a
    label records per bar (previous close, return, direction), so labelling a post is one gather of a record.
    """

    codes: np.ndarray            # object array of str, sorted
    start: np.ndarray            # int64 per stock
    stop: np.ndarray             # int64 per stock
    day: np.ndarray              # int64 days since 1970-01-01, per bar
    close: np.ndarray            # float64 per bar
    bars: np.ndarray             # BAR_DTYPE per bar (close_prev and ret are NaN on a stock's first bar)
    up: np.ndarray               # bool per bar: close > close_prev
    zero_volume: dict[str, int] = field(default_factory=dict)  # stored bars dropped as non-trading, per stock

    @classmethod
    def from_frame(cls, prices: pd.DataFrame, extra_codes: "np.ndarray | list[str] | pd.Index | None" = None
                   ) -> "PriceCalendar":
        """``prices`` needs columns code, date ('YYYY-MM-DD' or datetime64), close and volume."""
        pcode, puniq = pd.factorize(prices["code"].astype(str), sort=True)
        names = set(np.asarray(puniq, dtype=object).tolist())
        if extra_codes is not None:
            names.update(str(c) for c in extra_codes)
        codes = np.array(sorted(names), dtype=object)
        ci = np.searchsorted(codes, np.asarray(puniq, dtype=object)).astype(np.int64)[pcode]
        day = _to_days(prices["date"])
        close = prices["close"].to_numpy(dtype=np.float64)
        traded = prices["volume"].to_numpy() > 0
        zero = {}
        if not traded.all():
            zn = np.bincount(ci[~traded], minlength=len(codes))
            zero = {str(codes[i]): int(zn[i]) for i in np.flatnonzero(zn)}
            ci, day, close = ci[traded], day[traded], close[traded]
        key = (ci << 32) | day
        if len(key) > 1 and not (key[1:] > key[:-1]).all():  # the db returns them sorted; sort only if not
            order = np.argsort(key, kind="stable")
            ci, day, close, key = ci[order], day[order], close[order], key[order]
            dup = np.flatnonzero(key[1:] == key[:-1])
            if len(dup):
                raise ValueError(f"two price bars for {codes[ci[dup[0]]]} on {_day_str(day[dup[0]])}")
        start = np.searchsorted(ci, np.arange(len(codes)), side="left").astype(np.int64)
        stop = np.searchsorted(ci, np.arange(len(codes)), side="right").astype(np.int64)
        bars = np.empty(len(day), dtype=BAR_DTYPE)
        bars["day"] = day.astype("datetime64[D]")
        bars["close"] = close
        prev = np.empty_like(close)
        prev[1:] = close[:-1]
        prev[start[stop > start]] = np.nan  # a stock's first bar has no previous close
        bars["close_prev"] = prev
        bars["ret"] = close / prev - 1.0  # NaN on first bars, which never carry a label
        return cls(codes, start, stop, day, close, bars, close > prev, zero)

    def code_index(self, codes: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """(calendar row of each distinct stock, index into it per post). Categorical input is free to split."""
        if isinstance(codes.dtype, pd.CategoricalDtype):
            inv, uniq = codes.cat.codes.to_numpy(), np.asarray(codes.cat.categories.astype(str), dtype=object)
        else:
            inv, uniq = pd.factorize(codes.astype(str), sort=False)
            uniq = np.asarray(uniq, dtype=object)
        if len(inv) and inv.min() < 0:
            raise ValueError("posts with a missing stock code")
        pos = pd.Index(self.codes).get_indexer(uniq).astype(np.int64)
        if (pos < 0).any():
            raise KeyError(f"stocks not in the calendar: {sorted(uniq[pos < 0].tolist())[:5]}")
        return pos, inv

    def price_range(self, i: int) -> tuple[str, str] | None:
        if self.stop[i] == self.start[i]:
            return None
        return _day_str(self.day[self.start[i]]), _day_str(self.day[self.stop[i] - 1])

    def summary(self) -> dict[str, dict[str, object]]:
        """Per stock: first/last traded day, traded bars, zero-volume bars dropped."""
        out: dict[str, dict[str, object]] = {}
        for i, c in enumerate(self.codes):
            rng = self.price_range(i)
            out[str(c)] = {
                "first_price_day": rng[0] if rng else None,
                "last_price_day": rng[1] if rng else None,
                "traded_bars": int(self.stop[i] - self.start[i]),
                "zero_volume_bars": int(self.zero_volume.get(str(c), 0)),
            }
        return out


@dataclass
class LabelResult:
    """Outcome per input row (``entry``) and what each labelled row records, in input order."""

    rule: str
    entry: np.ndarray        # int32 per input row: bar index (>= 0, labelled) or -reason
    labelled: np.ndarray     # bool per input row
    bars: np.ndarray         # BAR_DTYPE per kept row: move day, close_prev, close, return
    up: np.ndarray           # bool per kept row: True = [상승] (close > close_prev)
    counts: dict[str, int]   # "labelled" plus one entry per reason in REASONS

    @property
    def kept(self) -> np.ndarray:
        """Positions of the labelled rows in the input."""
        return np.flatnonzero(self.labelled)

    @property
    def move_day(self) -> np.ndarray:
        return self.bars["day"]

    @property
    def close_prev(self) -> np.ndarray:
        return self.bars["close_prev"]

    @property
    def close(self) -> np.ndarray:
        return self.bars["close"]

    @property
    def ret(self) -> np.ndarray:
        """close / close_prev - 1."""
        return self.bars["ret"]

    def reason(self) -> np.ndarray:
        """Reason code per input row (0 = labelled)."""
        return np.where(self.entry < 0, -self.entry, 0).astype(np.int8)

    def labels(self) -> np.ndarray:
        return np.where(self.up, UP, DOWN).astype(object)


def label_posts(posts: pd.DataFrame, calendar: PriceCalendar, rule: str) -> LabelResult:
    """Label every row of ``posts`` (columns ``code`` and ``posted_at``, naive KST datetime64) under ``rule``."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {', '.join(RULES)}")
    n = len(posts)
    secs = _to_seconds(posts["posted_at"])
    pos, inv = calendar.code_index(posts["code"])
    # same-day asks about the post's own day; next-session shifts the clock so 15:30 becomes midnight, which makes
    # floor((t - 15:30) / day) + 1 the post's first unseen session day (before any holiday skipping).
    shift = 0 if rule == "same-day" else SESSION_CLOSE_S - DAY_S
    if n == 0 or len(calendar.day) == 0:
        return _finish(rule, np.full(n, -MISSING_PRICES, dtype=np.int32), calendar)

    gmin, gmax = int(calendar.day.min()), int(calendar.day.max())
    smin, smax = int(secs.min()), int(secs.max())
    qmin, qmax = (smin - shift) // DAY_S, (smax - shift) // DAY_S
    # The table spans the days queries can hit. When the posts reach far outside the prices, days beyond are clipped
    # onto the table's ends, which lie outside every stock's bars and so share the "missing" outcome; when they reach
    # only a little outside, widening the table is cheaper than clipping every post.
    lo = min(max(qmin, gmin), gmax + 1) - 1
    hi = max(min(qmax, gmax), gmin - 1) + 1
    span = hi - lo + 1
    wide_lo, wide_hi = min(lo, qmin), max(hi, qmax)
    clip = wide_lo < lo or wide_hi > hi
    if clip and wide_hi - wide_lo + 1 <= span + 2 * max(31, span // 4):
        lo, hi, clip = wide_lo, wide_hi, False
        span = hi - lo + 1
    table = _outcome_table(calendar, rule, lo, span)

    k = shift + lo * DAY_S
    # int32 halves the memory traffic of the per-post passes; it holds whenever the posts' offsets from the table
    # start fit (about 68 years either way) and the table has < 2**31 cells.
    small = -(2**31) < smin - k and smax - k < 2**31 and len(table) < 2**31
    dt = np.int32 if small else np.int64
    idx = np.empty(n, dtype=dt)
    np.subtract(secs, k, out=idx, casting="unsafe")
    idx //= DAY_S
    if clip:
        np.clip(idx, 0, span - 1, out=idx)
    _add_stock_offsets(idx, (pos * span).astype(dt), inv)
    return _finish(rule, np.take(table, idx), calendar)


def _add_stock_offsets(idx: np.ndarray, offset: np.ndarray, inv: np.ndarray) -> None:
    """idx += offset[inv]. Posts come grouped by stock (the db orders them by code), so usually a few slice adds."""
    if len(inv) > 1 and (np.diff(inv) >= 0).all():
        # searchsorted with keys of inv's own dtype (categorical codes are int8 for < 128 stocks): no 1M-row cast
        cuts = np.searchsorted(inv, np.arange(1, len(offset), dtype=np.int64).astype(inv.dtype))
        bounds = np.concatenate(([0], cuts, [len(inv)]))
        for c in range(len(offset)):
            if bounds[c + 1] > bounds[c]:
                idx[bounds[c]:bounds[c + 1]] += offset[c]
    else:
        idx += np.take(offset, inv)


def coverage_gaps(posts: pd.DataFrame, result: LabelResult, calendar: PriceCalendar,
                  names: dict[str, str] | None = None) -> list[CoverageGap]:
    """Stocks with posts labelled ``missing_prices``, with the posts' day range and the stock's price range."""
    miss = np.flatnonzero(result.entry == -MISSING_PRICES)
    if len(miss) == 0:
        return []
    sub = pd.DataFrame({
        "code": posts["code"].astype(str).to_numpy(dtype=object)[miss],
        "day": _to_seconds(posts["posted_at"])[miss] // DAY_S,
    })
    g = sub.groupby("code", sort=True)["day"].agg(["min", "max", "size"])
    pos = pd.Index(calendar.codes).get_indexer(g.index)
    gaps = []
    for (code, row), i in zip(g.iterrows(), pos):
        rng = calendar.price_range(int(i)) if i >= 0 else None
        gaps.append(CoverageGap(
            code=str(code), name=(names or {}).get(str(code)), posts=int(row["size"]),
            first_post_day=_day_str(row["min"]), last_post_day=_day_str(row["max"]),
            first_price_day=rng[0] if rng else None, last_price_day=rng[1] if rng else None,
        ))
    return gaps


# -- internals ------------------------------------------------------------------------------------------------------
_TABLE_BLOCK_CELLS = 1 << 21  # bounds the temporaries (~a dozen int64 arrays of this size) for large universes


def _outcome_table(cal: PriceCalendar, rule: str, lo: int, span: int) -> np.ndarray:
    """int32 [stock * span + (q - lo)]: bar index of the label for query day q, or -reason."""
    nc = len(cal.codes)
    per_block = max(1, _TABLE_BLOCK_CELLS // span)
    if per_block >= nc:
        return _outcome_block(cal, rule, lo, span, 0, nc)
    return np.concatenate([_outcome_block(cal, rule, lo, span, s0, min(nc, s0 + per_block))
                           for s0 in range(0, nc, per_block)])


def _outcome_block(cal: PriceCalendar, rule: str, lo: int, span: int, s0: int, s1: int) -> np.ndarray:
    q = lo + np.arange(span, dtype=np.int64)
    stock = np.repeat(np.arange(s0, s1, dtype=np.int64), span)
    qq = np.tile(q, s1 - s0)
    # Bars are sorted by (stock, day), so stock * 2**32 + day is sorted too (days are far below 2**31).
    bar_stock = np.repeat(np.arange(len(cal.codes), dtype=np.int64), cal.stop - cal.start)
    j = np.searchsorted(bar_stock * (1 << 32) + cal.day, stock * (1 << 32) + qq, side="left")
    st, en = cal.start[stock], cal.stop[stock]
    has = en > st
    first = np.where(has, cal.day[np.minimum(st, len(cal.day) - 1)], 0)
    last = np.where(has, cal.day[np.maximum(en - 1, 0)], -1)
    in_range = has & (qq >= first) & (qq <= last)
    jj = np.minimum(j, len(cal.day) - 1)
    jp = np.maximum(jj - 1, 0)

    out = jj.astype(np.int32)
    out[cal.close[jj] == cal.close[jp]] = -FLAT
    out[jj == st] = -NO_PREVIOUS_CLOSE  # after flat: a first bar's "previous" belongs to another stock
    if rule == "same-day":
        out[cal.day[jj] != qq] = -NON_TRADING_DAY
    out[~in_range] = -MISSING_PRICES
    return out


def _finish(rule: str, entry: np.ndarray, cal: PriceCalendar) -> LabelResult:
    labelled = entry >= 0
    bar = entry[labelled]
    if len(cal.bars):
        bars, up = np.take(cal.bars, bar), np.take(cal.up, bar)
    else:
        bars, up = np.empty(0, dtype=BAR_DTYPE), np.empty(0, dtype=bool)
    counts = {"labelled": int(len(bar))}
    counts.update({name: int(np.count_nonzero(entry == -code)) for code, name in REASONS.items()})
    return LabelResult(rule=rule, entry=entry, labelled=labelled, bars=bars, up=up, counts=counts)


def _to_days(s: pd.Series) -> np.ndarray:
    """int64 days since 1970-01-01. Strings are parsed once per distinct date (bars share few dates)."""
    if s.dtype.kind == "M":
        return s.to_numpy().astype("datetime64[D]").astype(np.int64)
    inv, uniq = pd.factorize(s.astype(str))
    days = np.asarray(np.asarray(uniq, dtype=object), dtype="datetime64[D]").astype(np.int64)
    return np.take(days, inv)


def _to_seconds(s: pd.Series) -> np.ndarray:
    """int64 seconds since 1970-01-01 of naive KST wall time (may be a view: do not modify it in place)."""
    if s.dtype.kind != "M":
        s = pd.Series(np.asarray(s.to_numpy(dtype=object), dtype="datetime64[s]"))
    a = s.to_numpy()
    if a.dtype != np.dtype("datetime64[s]"):
        a = a.astype("datetime64[s]")
    return a.view(np.int64)


def _day_str(d: int | np.integer) -> str:
    return str(np.datetime64(int(d), "D"))

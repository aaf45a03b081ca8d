"""Labelling speed: the vectorised labeller vs a plain per-row Python loop, on 100k and 1M synthetic posts.

    python benchmarks/label_bench.py [--sizes 100000 1000000] [--repeats 21] [--loop-repeats 3] [--rule next-session]

Data: 20 stocks x 6 years (2017-2022) of daily bars (weekdays minus ~15 shared holidays a year, per-stock halts,
some stored zero-volume bars, tick-sized moves so flat days occur) and posts at uniform random instants from
2017-01-01 to 2023-01-03, so every removal reason the rule has shows up. Posts are in the db's order (code, posted_at).

Both labellers get the same data in their natural in-memory form and must give identical output (checked):
* vectorised: a DataFrame (code categorical, posted_at datetime64[s]) and the prices DataFrame ->
  ``PriceCalendar.from_frame`` + ``label_posts`` (the calendar build is timed too);
* loop: lists of code strings and ``datetime`` objects, and the price rows as tuples -> per-stock sorted day lists
  (built inside the timing), then ``bisect`` per post.
Both produce a reason per post, which posts are labelled (a boolean mask / a list of positions) and move day,
previous close, close, return and direction per labelled post.
Each timing is the median of ``--repeats`` runs (default 21) for the vectorised path and of ``--loop-repeats`` runs
(default 3) for the loop; ratios are of medians (the best runs are printed too).
A second table starts from the db's strings ('YYYY-MM-DDTHH:MM:SS'), so parsing is inside both timings.
"""
from __future__ import annotations

import argparse
import sys
import time
from bisect import bisect_left
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kofinsent.dataset import labels as L  # noqa: E402


def make_prices(n_stocks: int = 20, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    days = pd.bdate_range("2017-01-02", "2022-12-30")
    holidays = rng.choice(len(days), size=15 * 6, replace=False)
    days = np.delete(days.to_numpy().astype("datetime64[D]"), holidays)
    frames = []
    for k in range(n_stocks):
        keep = rng.random(len(days)) > 3 / 250  # ~3 halt days a year the crawler dropped
        d = days[keep]
        close = 50_000 + np.cumsum(rng.integers(-3, 4, len(d)) * 100.0)
        volume = np.where(rng.random(len(d)) < 1 / 500, 0, 1000)  # a few zero-volume bars left in the db
        frames.append(pd.DataFrame({"code": f"{k:06d}", "date": np.datetime_as_string(d), "close": close,
                                    "volume": volume}))
    return pd.concat(frames, ignore_index=True)


def make_posts(n: int, n_stocks: int = 20, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lo = np.datetime64("2017-01-01T00:00:00", "s").astype(np.int64)
    hi = np.datetime64("2023-01-03T00:00:00", "s").astype(np.int64)
    code = rng.integers(0, n_stocks, n)
    secs = rng.integers(lo, hi, n)
    order = np.lexsort((secs, code))
    codes = np.array([f"{k:06d}" for k in range(n_stocks)], dtype=object)[code[order]]
    return pd.DataFrame({"code": pd.Categorical(codes), "posted_at": secs[order].astype("datetime64[s]")})


def vectorised(posts: pd.DataFrame, prices: pd.DataFrame, rule: str) -> tuple[L.LabelResult, np.ndarray]:
    cal = L.PriceCalendar.from_frame(prices, extra_codes=posts["code"].cat.categories)
    res = L.label_posts(posts, cal, rule)
    return res, res.up


def vectorised_from_strings(codes: list[str], stamps: list[str], prices: pd.DataFrame, rule: str
                            ) -> tuple[L.LabelResult, np.ndarray]:
    posts = pd.DataFrame({"code": pd.Categorical(codes), "posted_at": np.asarray(stamps, dtype="datetime64[s]")})
    return vectorised(posts, prices, rule)


def python_loop(codes: list[str], times: list, price_rows: list[tuple], rule: str, parse: bool = False) -> dict:
    """The plain way: per-stock sorted day lists, then one bisect per post."""
    cal: dict[str, tuple[list[date], list[float]]] = {}
    for code, day, close, volume in price_rows:
        if volume > 0:
            days, closes = cal.setdefault(code, ([], []))
            days.append(date.fromisoformat(day))
            closes.append(close)
    cutoff, one_day, next_session = dtime(15, 30), timedelta(days=1), rule == "next-session"
    reason, kept, move, prev_c, close_c, ret, up = [], [], [], [], [], [], []
    for i, (code, ts) in enumerate(zip(codes, times)):
        if parse:
            ts = datetime.fromisoformat(ts)
        c = cal.get(code)
        if c is None:
            reason.append(L.MISSING_PRICES)
            continue
        days, closes = c
        d = ts.date()
        if next_session and ts.time() >= cutoff:
            d += one_day
        if d < days[0] or d > days[-1]:
            reason.append(L.MISSING_PRICES)
            continue
        j = bisect_left(days, d)
        if not next_session and days[j] != d:
            reason.append(L.NON_TRADING_DAY)
            continue
        if j == 0:
            reason.append(L.NO_PREVIOUS_CLOSE)
            continue
        p, cl = closes[j - 1], closes[j]
        if p == cl:
            reason.append(L.FLAT)
            continue
        reason.append(L.OK)
        kept.append(i)
        move.append(days[j])
        prev_c.append(p)
        close_c.append(cl)
        ret.append(cl / p - 1.0)
        up.append(cl > p)
    return {"reason": reason, "kept": kept, "move": move, "prev": prev_c, "close": close_c, "ret": ret, "up": up}


def check_same(vu: tuple[L.LabelResult, np.ndarray], p: dict) -> None:
    v, up = vu
    assert np.array_equal(v.reason(), np.asarray(p["reason"], dtype=np.int8)), "reasons differ"
    assert np.array_equal(v.kept, np.asarray(p["kept"], dtype=np.int64)), "labelled rows differ"
    assert np.array_equal(v.move_day, np.asarray(p["move"], dtype="datetime64[D]")), "move days differ"
    assert np.array_equal(v.close_prev, np.asarray(p["prev"])) and np.array_equal(v.close, np.asarray(p["close"]))
    assert np.array_equal(v.ret, np.asarray(p["ret"])) and np.array_equal(up, np.asarray(p["up"]))


def timed(fn, repeats: int) -> tuple[tuple[float, float], object]:
    """((median, best) seconds, last output)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return (float(np.median(times)), min(times)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--loop-repeats", type=int, default=3)
    ap.add_argument("--rule", choices=L.RULES, default="next-session")
    args = ap.parse_args()

    prices = make_prices()
    price_rows = list(prices.itertuples(index=False, name=None))
    print(f"prices: {prices['code'].nunique()} stocks, {len(prices):,} bars "
          f"({prices['date'].min()} .. {prices['date'].max()}); rule {args.rule}; medians of {args.repeats} "
          f"vectorised / {args.loop_repeats} loop runs; "
          f"numpy {np.__version__}, pandas {pd.__version__}, python {sys.version.split()[0]}")
    rows = []
    for n in args.sizes:
        posts = make_posts(n)
        codes = posts["code"].astype(str).tolist()
        times = posts["posted_at"].to_numpy().astype(object).tolist()  # datetime.datetime objects
        stamps = np.datetime_as_string(posts["posted_at"].to_numpy(), unit="s").tolist()

        t_vec, res = timed(lambda: vectorised(posts, prices, args.rule), args.repeats)
        t_loop, ref = timed(lambda: python_loop(codes, times, price_rows, args.rule), args.loop_repeats)
        check_same(res, ref)
        t_vec_s, res_s = timed(lambda: vectorised_from_strings(codes, stamps, prices, args.rule), args.repeats)
        t_loop_s, ref_s = timed(lambda: python_loop(codes, stamps, price_rows, args.rule, parse=True),
                                args.loop_repeats)
        check_same(res_s, ref_s)
        rows.append((n, t_vec, t_loop, t_vec_s, t_loop_s, res[0].counts))

    def table(title: str, iv: int, il: int) -> None:
        print(f"\n{title}")
        print(f"{'posts':>10} {'vectorised':>11} {'(best)':>9} {'rows/s':>13} {'python loop':>12} {'(best)':>9} "
              f"{'rows/s':>11} {'ratio':>7} {'(best)':>7}")
        for r in rows:
            n, (tv, bv), (tl, bl) = r[0], r[iv], r[il]
            print(f"{n:>10,} {tv * 1e3:>9.1f}ms {bv * 1e3:>7.1f}ms {n / tv:>13,.0f} {tl * 1e3:>10.0f}ms "
                  f"{bl * 1e3:>7.0f}ms {n / tl:>11,.0f} {tl / tv:>6.1f}x {bl / bv:>6.1f}x")
        if len(rows) >= 2:
            n0, n1 = rows[0][0], rows[-1][0]
            tv0, tv1, tl0, tl1 = rows[0][iv][0], rows[-1][iv][0], rows[0][il][0], rows[-1][il][0]
            print(f"scaling {n0:,} -> {n1:,} posts ({n1 / n0:.0f}x the rows): vectorised time x{tv1 / tv0:.1f}, "
                  f"per-row x{(tv1 / n1) / (tv0 / n0):.2f}; loop time x{tl1 / tl0:.1f} (linear: x{n1 / n0:.0f})")

    table("in-memory data (code categorical, posted_at datetime64 / datetime objects):", 1, 2)
    table("from the db's strings (parsing inside both timings):", 3, 4)
    print("\noutcomes at the largest size:", rows[-1][5])
    print("outputs identical between the two labellers at every size: yes")


if __name__ == "__main__":
    main()

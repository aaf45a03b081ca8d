"""Hand-computed labels for both rules, and the labeller's edge paths (missing prices, unsorted input, far dates).

The cases and bars live in conftest.py (``hand`` fixture, ``hand_case`` parameter).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kofinsent.dataset.labels import MISSING_PRICES, REASONS, PriceCalendar, coverage_gaps, label_posts
from kofinsent.labels import DOWN, UP

RULES = ["same-day", "next-session"]
EXPECTED_AT = {"same-day": 3, "next-session": 4}
A, C = "005930", "035720"


def prices_frame(bars) -> pd.DataFrame:
    return pd.DataFrame(bars, columns=["code", "date", "close", "volume"])


def posts_frame(rows: list[tuple[str, str]], categorical: bool = True) -> pd.DataFrame:
    codes = [c for c, _ in rows]
    return pd.DataFrame({
        "code": pd.Categorical(codes) if categorical else pd.Series(codes, dtype=str),
        "posted_at": np.array([t for _, t in rows], dtype="datetime64[s]"),
    })


def outcomes(posts: pd.DataFrame, rule: str, bars) -> list[object]:
    """Per post: a reason name, or (label, move_date, close_prev, close, return)."""
    cal = PriceCalendar.from_frame(prices_frame(bars), extra_codes=posts["code"].astype(str).unique())
    res = label_posts(posts, cal, rule)
    out: list[object] = [REASONS.get(int(r)) for r in res.reason()]
    for j, i in enumerate(res.kept):
        out[i] = (UP if res.up[j] else DOWN, str(res.move_day[j]), float(res.close_prev[j]), float(res.close[j]),
                  float(res.ret[j]))
    return out


def expected(want):
    if isinstance(want, str):
        return want
    label, move, prev, close = want
    return (label, move, float(prev), float(close), close / prev - 1)


@pytest.mark.parametrize("rule", RULES)
def test_hand_computed_label(hand, hand_case, rule):
    _, code, posted_at = hand_case[:3]
    assert outcomes(posts_frame([(code, posted_at)]), rule, hand.bars) == [expected(hand_case[EXPECTED_AT[rule]])]


@pytest.mark.parametrize("rule", RULES)
def test_all_cases_together_in_any_order(hand, rule):
    rows = [(c[1], c[2]) for c in hand.cases]
    want = [expected(c[EXPECTED_AT[rule]]) for c in hand.cases]
    assert outcomes(posts_frame(rows), rule, hand.bars) == want
    perm = np.random.default_rng(0).permutation(len(rows))  # not grouped by stock: the gather path
    shuffled = [rows[i] for i in perm]
    assert outcomes(posts_frame(shuffled), rule, hand.bars) == [want[i] for i in perm]
    assert outcomes(posts_frame(shuffled, categorical=False), rule, hand.bars) == [want[i] for i in perm]


def test_zero_volume_bar_is_not_a_trading_day(hand):
    # the 28 Sep halt bar given volume turns that day into an ordinary flat day (105 -> 105)
    traded = [(c, d, cl, 10 if (c, d) == (A, "2021-09-28") else v) for c, d, cl, v in hand.bars]
    post = posts_frame([(A, "2021-09-28T10:00:00")])
    assert outcomes(post, "same-day", hand.bars) == ["non_trading_day"]
    assert outcomes(post, "same-day", traded) == ["flat"]
    summary = PriceCalendar.from_frame(prices_frame(hand.bars)).summary()
    assert summary[A]["zero_volume_bars"] == 1 and summary[hand.B]["zero_volume_bars"] == 0
    assert summary[A]["traded_bars"] == 11


MISSING_ROWS = [
    (A, "2021-10-01T15:31:00"),  # last price day after the close: next-session needs 4 Oct
    (A, "2021-10-02T12:00:00"),  # after the last price: unknown whether a trading day
    (A, "2021-09-12T10:00:00"),  # before the first price
    (A, "2021-09-12T16:00:00"),  # evening before the first price: next-session lands on the first bar
    (C, "2021-09-14T10:00:00"),  # a stock with no prices at all
    (A, "2000-01-01T00:00:00"),  # far outside the prices: the clipped-table path
    (A, "2040-01-01T00:00:00"),
]


def test_missing_prices_reasons(hand):
    missing = "missing_prices"
    assert outcomes(posts_frame(MISSING_ROWS), "same-day", hand.bars) == [
        expected((UP, "2021-10-01", 106, 108))] + [missing] * 6
    assert outcomes(posts_frame(MISSING_ROWS), "next-session", hand.bars) == [
        missing, missing, missing, "no_previous_close", missing, missing, missing]


def test_coverage_gaps_name_stock_and_dates(hand):
    posts = posts_frame(MISSING_ROWS)
    cal = PriceCalendar.from_frame(prices_frame(hand.bars), extra_codes=posts["code"].astype(str).unique())
    res = label_posts(posts, cal, "next-session")
    gaps = {g.code: g for g in coverage_gaps(posts, res, cal, {A: "삼성전자"})}
    assert set(gaps) == {A, C}
    a = gaps[A]
    assert (a.posts, a.first_post_day, a.last_post_day) == (5, "2000-01-01", "2040-01-01")
    assert (a.first_price_day, a.last_price_day) == ("2021-09-13", "2021-10-01")
    assert "005930 (삼성전자)" in a.describe() and "2021-09-13..2021-10-01" in a.describe()
    assert gaps[C].first_price_day is None and "no traded price bars" in gaps[C].describe()
    assert res.counts["missing_prices"] == int((res.entry == -MISSING_PRICES).sum()) == 6


@pytest.mark.parametrize("rule", RULES)
def test_counts_add_up(hand, rule):
    posts = posts_frame([(c[1], c[2]) for c in hand.cases])
    res = label_posts(posts, PriceCalendar.from_frame(prices_frame(hand.bars)), rule)
    assert sum(res.counts.values()) == len(posts)
    assert res.counts["labelled"] == len(res.kept) == len(res.bars) == len(res.up)


def test_duplicate_price_bars_are_refused(hand):
    bars = [(A, "2021-09-14", 999, 1)] + list(hand.bars)  # unsorted too: the sort path
    with pytest.raises(ValueError, match="two price bars for 005930 on 2021-09-14"):
        PriceCalendar.from_frame(prices_frame(bars))


def test_empty_inputs(hand):
    cal = PriceCalendar.from_frame(prices_frame(hand.bars))
    res = label_posts(posts_frame([]), cal, "same-day")
    assert res.counts["labelled"] == 0 and len(res.entry) == 0
    no_prices = PriceCalendar.from_frame(prices_frame([]), extra_codes=[A])
    res = label_posts(posts_frame([(A, "2021-09-14T10:00:00")]), no_prices, "next-session")
    assert res.counts == {"labelled": 0, "missing_prices": 1, "non_trading_day": 0, "no_previous_close": 0,
                          "flat": 0}


@pytest.mark.parametrize("rule", RULES)
def test_widened_and_clipped_tables_agree(hand, rule):
    near = MISSING_ROWS[:5]  # a few days outside the prices: the table is widened instead of clipping
    far = MISSING_ROWS  # decades outside: clipped
    assert outcomes(posts_frame(near), rule, hand.bars) == outcomes(posts_frame(far), rule, hand.bars)[:5]


@pytest.mark.parametrize("rule", RULES)
def test_table_built_in_blocks_gives_the_same_labels(hand, monkeypatch, rule):
    import kofinsent.dataset.labels as labels_module

    rows = [(c[1], c[2]) for c in hand.cases] + MISSING_ROWS
    want = outcomes(posts_frame(rows), rule, hand.bars)
    monkeypatch.setattr(labels_module, "_TABLE_BLOCK_CELLS", 1)  # one stock per block
    assert outcomes(posts_frame(rows), rule, hand.bars) == want

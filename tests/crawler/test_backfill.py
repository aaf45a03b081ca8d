"""Backfill correctness against the replay site: exact rows at both range boundaries, few requests, faults, resume."""
from __future__ import annotations

import math
from datetime import date

import pytest

from crawler.backfill import ApiBackfill, DateRange, HtmlBackfill, backfill
from crawler.errors import BudgetExceeded
from crawler.replay import Fault, FaultPlan
from crawler.store import Store

from .conftest import fast_fetcher

CODE = "900010"


def expected(forum, code: str, rng: DateRange) -> dict[int, str]:
    """nid -> title for the normal posts in range, blind ones with the empty title the site shows."""
    return {p.nid: ("" if p.is_blind else p.title)
            for p in forum.posts_between(code, rng.start, rng.end) if forum.post_type(p) == "normal"}


def stored(store: Store, code: str = CODE) -> dict[int, str]:
    return {r["nid"]: r["title"] for r in store.iter_posts([code])}


def minimum_requests(n: int, page_size: int) -> int:
    return max(1, math.ceil(n / page_size))


@pytest.mark.parametrize("since, until", [
    (date(2018, 3, 5), date(2018, 3, 11)),    # a week in the middle of a year of posts
    (date(2018, 1, 1), date(2018, 1, 2)),     # the board's first days: the search runs into its start
    (date(2018, 12, 30), date(2018, 12, 31)),  # the newest days: the first page already reaches the range
    (date(2018, 7, 14), date(2018, 7, 14)),   # one day (a Saturday)
])
def test_api_backfill_is_exact_with_few_requests(forum, serve, tmp_path, since, until):
    server = serve()
    rng = DateRange(since, until)
    with Store(tmp_path / "db.sqlite") as store:
        result = backfill("api", fast_fetcher(server), store, CODE, rng)
        got = stored(store)
    want = expected(forum, CODE, rng)
    assert want and got == want
    # Boundaries: the first and last post of the range are in, their neighbours outside are not.
    ordered = [p for p in forum.normal_posts(CODE)]
    first = min(want)
    i = [p.nid for p in ordered].index(first)
    if i > 0:
        assert ordered[i - 1].posted_at < rng.start and ordered[i - 1].nid not in got
    requests = server.count("/by-item")
    assert requests == result.requests
    assert requests <= 1.2 * minimum_requests(len(want), 100) + 40
    newer = sum(1 for p in forum.normal_posts(CODE) if p.posted_at > rng.end)
    if newer > 20 * len(want):
        # Far more newer posts than posts in range, and the crawl did not page through them.
        assert requests < newer / 100 / 4


def test_api_backfill_of_a_long_range_stays_near_the_minimum(forum, serve, tmp_path):
    server = serve()
    rng = DateRange(date(2018, 2, 1), date(2018, 5, 31))
    with Store(tmp_path / "db.sqlite") as store:
        result = backfill("api", fast_fetcher(server), store, CODE, rng)
        assert stored(store) == expected(forum, CODE, rng)
    n = len(expected(forum, CODE, rng))
    assert server.count("/by-item") <= 1.2 * minimum_requests(n, 100) + 40
    assert result.probes <= 25


def test_api_backfill_outside_the_board_stores_nothing(forum, serve, tmp_path):
    server = serve()
    with Store(tmp_path / "db.sqlite") as store:
        before = backfill("api", fast_fetcher(server), store, CODE, DateRange(date(2017, 1, 1), date(2017, 6, 30)))
        after = backfill("api", fast_fetcher(server), store, CODE, DateRange(date(2019, 3, 1), date(2019, 3, 9)))
        assert store.count_posts() == 0
        assert before.stored == after.stored == 0
        assert store.progress("posts:api:900010:2017-01-01:2017-06-30")[1] is True


@pytest.mark.parametrize("charset", ["euc-kr", "utf-8"])
def test_html_backfill_is_exact(forum, serve, tmp_path, charset):
    server = serve(charset=charset)
    rng = DateRange(date(2018, 6, 4), date(2018, 6, 6))
    with Store(tmp_path / "db.sqlite") as store:
        result = backfill("html", fast_fetcher(server), store, CODE, rng)
        got = stored(store)
    assert got == expected(forum, CODE, rng)
    pages = server.count("/board.naver")
    walked = minimum_requests(len(got), 20)
    assert pages <= walked + 2 + 2 * math.ceil(math.log2(len(forum.normal_posts(CODE)) / 20))
    assert result.pages >= walked


def test_html_backfill_survives_pages_shifting_mid_crawl(forum, serve, tmp_path):
    # Before every board request 7 newer posts arrive, pushing every row down by 7: overlap, never loss.
    server = serve(live_posts_per_request=7, charset="utf-8")
    rng = DateRange(date(2018, 9, 10), date(2018, 9, 12))
    with Store(tmp_path / "db.sqlite") as store:
        backfill("html", fast_fetcher(server), store, CODE, rng)
        assert stored(store) == expected(forum, CODE, rng)


FAULT_MIX = [
    Fault("500", every=5), Fault("503", every=7), Fault("reset", every=9), Fault("truncate", every=11),
    Fault("429", every=13, retry_after=0), Fault("slow", every=17, delay=0.8),
]


@pytest.mark.parametrize("source", ["api", "html"])
def test_no_post_lost_or_duplicated_under_faults(forum, serve, tmp_path, source):
    server = serve(FaultPlan([Fault(f.kind, every=f.every, retry_after=f.retry_after, delay=f.delay)
                              for f in FAULT_MIX]))
    rng = DateRange(date(2018, 4, 2), date(2018, 4, 20)) if source == "api" else DateRange(date(2018, 4, 2),
                                                                                           date(2018, 4, 4))
    with Store(tmp_path / "db.sqlite") as store:
        backfill(source, fast_fetcher(server, timeout=0.4, retries=6), store, CODE, rng)
        got = stored(store)
        rows = store.conn.execute("SELECT count(*) FROM posts").fetchone()[0]
    assert got == expected(forum, CODE, rng)
    assert rows == len(got)
    faults = [r for r in server.requests if r.fault]
    assert {r.fault for r in faults} >= {"500", "503", "reset", "truncate", "429"}


@pytest.mark.parametrize("cls", [ApiBackfill, HtmlBackfill])
def test_resume_after_budget_runs_out(forum, serve, tmp_path, cls):
    server = serve()
    rng = DateRange(date(2018, 5, 1), date(2018, 5, 20)) if cls is ApiBackfill else DateRange(date(2018, 5, 1),
                                                                                             date(2018, 5, 3))
    with Store(tmp_path / "whole.sqlite") as store:
        whole = cls(fast_fetcher(server), store, CODE, rng).run()
    budget = whole.requests - 3  # stops during the walk, three pages short
    server.clear_log()
    with Store(tmp_path / "db.sqlite") as store:
        with pytest.raises(BudgetExceeded):
            cls(fast_fetcher(server, max_requests=budget), store, CODE, rng).run()
        assert 0 < store.count_posts() < len(expected(forum, CODE, rng))
        result = cls(fast_fetcher(server), store, CODE, rng).run()
        assert result.resumed and result.probes == 0
        assert stored(store) == expected(forum, CODE, rng)
        # Resumed from the cursor, not from scratch: the second run made only the missing requests (+1 re-read).
        assert result.requests <= 3 + 1
        assert cls(fast_fetcher(server), store, CODE, rng).run().already_done


def test_date_range_validation():
    with pytest.raises(ValueError, match="after until"):
        DateRange(date(2020, 1, 2), date(2020, 1, 1))
    rng = DateRange(date(2018, 10, 1), date(2018, 10, 1))
    assert rng.end.hour == 23 and rng.end.minute == 59 and rng.end.second == 59

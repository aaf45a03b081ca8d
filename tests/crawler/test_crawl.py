"""`crawler.crawl.crawl`, the one crawl loop behind `kofinsent crawl posts|prices` and the experiment's crawl step,
against the replay site: the same rows as the CLI, a resume after a stop, names, the price margin, checked input."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest

from crawler.crawl import CrawlPlan, HttpConfig, StockCrawl, crawl
from crawler.errors import BudgetExceeded

CODES = ("900010", "900020")
SINCE, UNTIL = date(2018, 2, 1), date(2018, 2, 10)


def fast(server, **kw) -> HttpConfig:
    """No politeness delay and tiny backoff: tests check behaviour, not the live site's pacing."""
    return HttpConfig(**{"delay": 0.0, "jitter": 0.0, "backoff": 0.01, "timeout": 2.0, "base_url": server.url, **kw})


def rows(db: Path, table: str) -> list[tuple]:
    """A table's rows without the fetch time, which differs between two crawls of the same pages."""
    with sqlite3.connect(db) as c:
        cur = c.execute(f"SELECT * FROM {table} ORDER BY 1, 2")
        names = [d[0] for d in cur.description]
        return [tuple(v for n, v in zip(names, r) if n != "fetched_at") for r in cur.fetchall()]


def expected_posts(forum, code: str) -> int:
    start, end = datetime.combine(SINCE, time.min), datetime.combine(UNTIL, time.max)
    return sum(1 for p in forum.posts_between(code, start, end) if forum.post_type(p) == "normal")


def test_crawl_stores_what_the_cli_stores(forum, serve, tmp_path):
    server = serve()
    cli_db, lib_db = tmp_path / "cli.sqlite", tmp_path / "lib.sqlite"
    common = ["--codes", ",".join(CODES), "--since", SINCE.isoformat(), "--until", UNTIL.isoformat(),
              "--db", str(cli_db), "--base-url", server.url, "--delay", "0"]
    env = {**os.environ, "KOFINSENT_NAVER_BASE_URL": "", "TQDM_DISABLE": "1"}
    for command in ("posts", "prices"):
        r = subprocess.run([sys.executable, "-m", "kofinsent.cli", "crawl", command, *common], capture_output=True,
                           text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr
    server.clear_log()
    seen: list[StockCrawl] = []
    result = crawl(lib_db, CrawlPlan(CODES, SINCE, UNTIL), fast(server), progress=False, report=seen.append)
    assert [s.code for s in seen] == list(CODES) and result.stocks == seen
    for table in ("posts", "prices"):
        assert rows(lib_db, table) == rows(cli_db, table) and rows(lib_db, table)
    for s in seen:
        assert s.posts.stored == s.posts_in_db == expected_posts(forum, s.code)
        assert s.price_source == "siseJson" and SINCE <= s.bars[0].date <= s.bars[-1].date <= UNTIL
    assert result.requests == server.count() and result.retries == 0


def test_a_stopped_crawl_resumes_where_it_stopped(forum, serve, tmp_path):
    server = serve()
    db = tmp_path / "k.sqlite"
    plan = CrawlPlan(CODES[:1], date(2018, 2, 1), date(2018, 4, 30), prices=False)
    with pytest.raises(BudgetExceeded):
        crawl(db, plan, fast(server, max_requests=40), progress=False)
    partial = rows(db, "posts")
    assert partial, "pages walked before the budget ran out are committed"
    again = crawl(db, plan, fast(server), progress=False)
    res = again.stocks[0].posts
    assert res.resumed and not res.already_done and res.probes == 0  # from the cursor: no search again
    stored = rows(db, "posts")
    assert set(partial) < set(stored) and len(stored) == again.stocks[0].posts_in_db
    server.clear_log()
    third = crawl(db, plan, fast(server), progress=False)
    assert third.stocks[0].posts.already_done and server.count("/by-item") == 0
    assert rows(db, "posts") == stored


def test_names_are_recorded_and_prices_get_the_margin(serve, tmp_path):
    server = serve()
    db = tmp_path / "k.sqlite"
    plan = CrawlPlan(CODES[:1], date(2018, 6, 4), date(2018, 6, 8), names={CODES[0]: "합성전자"},
                     price_margin_days=14)
    (stock,) = crawl(db, plan, fast(server), progress=False).stocks
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT name FROM stocks WHERE code=?", (CODES[0],)).fetchone() == ("합성전자",)
    assert stock.bars[0].date < plan.since - timedelta(days=7) and stock.bars[-1].date > plan.until + timedelta(7)


def test_prices_only_and_posts_only(serve, tmp_path):
    server = serve()
    db = tmp_path / "k.sqlite"
    (only_prices,) = crawl(db, CrawlPlan(CODES[:1], SINCE, UNTIL, posts=False), fast(server), progress=False).stocks
    assert only_prices.posts is None and only_prices.bars and rows(db, "posts") == []
    (only_posts,) = crawl(db, CrawlPlan(CODES[1:], SINCE, UNTIL, prices=False), fast(server), progress=False).stocks
    assert only_posts.bars == [] and only_posts.price_source is None and only_posts.posts_in_db > 0


@pytest.mark.parametrize("kw, message", [
    ({"since": date(2018, 3, 1), "until": date(2018, 2, 1)}, "since (2018-03-01) is after until (2018-02-01)"),
    ({"source": "rss"}, "--source must be api or html, got 'rss'"),
])
def test_a_bad_plan_is_refused_before_any_request(kw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CrawlPlan(**{"codes": CODES, "since": SINCE, "until": UNTIL, **kw})


def test_an_unreachable_site_leaves_no_db(tmp_path):
    from crawler.errors import FetchError

    db = tmp_path / "k.sqlite"
    with pytest.raises(FetchError, match="cannot reach base URL"):
        crawl(db, CrawlPlan(CODES, SINCE, UNTIL), HttpConfig(base_url="http://127.0.0.1:9"), progress=False)
    assert not db.exists()

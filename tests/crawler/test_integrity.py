"""A crawl never ends early, never sleeps for hours, never dies with a traceback, and never harms the db or the
user's files — each case reproduced against the replay site (issue: integrity under hostile servers)."""
from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crawler.backfill import API_URL, ApiBackfill, DateRange, HtmlBackfill, api_referer, backfill
from crawler.errors import BudgetExceeded, FetchError, RateLimited, StoreError, UnparseableResponse
from crawler.http import Fetcher, HttpConfig, retry_after_seconds
from crawler.replay import Fault, FaultPlan
from crawler.sources import api as api_source
from crawler.store import Store

from .conftest import fast_fetcher

CODE = "900010"
MONTH = DateRange(date(2018, 3, 1), date(2018, 3, 31))
DAYS = DateRange(date(2018, 6, 4), date(2018, 6, 8))


def kofinsent(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kofinsent.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "KOFINSENT_NAVER_BASE_URL": ""})


def expected(forum, rng: DateRange, hidden: set[int] = frozenset()) -> dict[int, str]:
    return {p.nid: ("" if p.is_blind else p.title) for p in forum.posts_between(CODE, rng.start, rng.end)
            if forum.post_type(p) == "normal" and p.nid not in hidden}


def stored(db: Path) -> dict[int, str]:
    with sqlite3.connect(db) as c:
        return dict(c.execute("SELECT nid, title FROM posts WHERE code=?", (CODE,)).fetchall())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def walk_requests(serve, source: str, rng: DateRange, tmp_path: Path) -> int:
    """How many list requests a clean crawl of ``rng`` makes (so a fault can be aimed at its walk)."""
    server = serve()
    with Store(tmp_path / "clean.sqlite") as store:
        return backfill(source, fast_fetcher(server), store, CODE, rng).requests


# -- a short or empty page is not the end of the board -------------------------------------------------------------
@pytest.mark.parametrize("keep", [0, 30])
def test_api_short_or_empty_page_mid_walk_does_not_end_the_crawl(forum, serve, tmp_path, keep):
    n = walk_requests(serve, "api", MONTH, tmp_path)
    server = serve(FaultPlan([Fault("short", path="/by-item", at={n - 4}, keep=keep)]))
    db = tmp_path / "k.sqlite"
    r = kofinsent("crawl", "posts", "--codes", CODE, "--since", MONTH.since, "--until", MONTH.until, "--db", db,
                  "--base-url", server.url, "--delay", "0")
    assert r.returncode == 0, r.stderr
    assert len(server.hidden) == 100 - keep
    got, want = stored(db), expected(forum, MONTH, server.hidden)
    # Posts older than the hole were walked to, not dropped with a "done" mark.
    assert min(got) < min(server.hidden)
    assert got == want
    r = kofinsent("crawl", "posts", "--codes", CODE, "--since", MONTH.since, "--until", MONTH.until, "--db", db,
                  "--base-url", server.url, "--delay", "0")
    assert "already complete" in r.stdout and stored(db) == want


def test_api_empty_newest_page_is_not_an_empty_board(forum, serve, tmp_path):
    server = serve(FaultPlan([Fault("short", path="/by-item", at={1}, keep=0)]))
    rng = DateRange(date(2018, 12, 24), date(2018, 12, 31))
    with Store(tmp_path / "k.sqlite") as store:
        result = backfill("api", fast_fetcher(server), store, CODE, rng)
    assert result.stored > 0
    assert stored(tmp_path / "k.sqlite") == expected(forum, rng, server.hidden)


def test_api_end_of_board_is_confirmed_by_one_more_request(forum, serve, tmp_path):
    server = serve()
    rng = DateRange(date(2018, 1, 1), date(2018, 1, 2))  # the board's first days: the walk runs into its start
    with Store(tmp_path / "k.sqlite") as store:
        backfill("api", fast_fetcher(server), store, CODE, rng)
    assert stored(tmp_path / "k.sqlite") == expected(forum, rng)
    last, confirm = server.requests[-2:]
    assert last.query == confirm.query  # the empty page whose cursor did not move, asked once more
    assert sum(1 for r in server.requests if r.query == last.query) == 2


@pytest.mark.parametrize("keep", [0, 7])
def test_html_short_page_before_the_last_page_does_not_end_the_crawl(forum, serve, tmp_path, keep):
    n = walk_requests(serve, "html", DAYS, tmp_path)
    server = serve(FaultPlan([Fault("short", path="/board.naver", at={n - 3}, keep=keep)]), charset="utf-8")
    with Store(tmp_path / "k.sqlite") as store:
        result = HtmlBackfill(fast_fetcher(server), store, CODE, DAYS).run()
        assert store.progress(f"posts:html:{CODE}:{DAYS.since}:{DAYS.until}")[1] is True
    assert len(server.hidden) == 20 - keep
    got = stored(tmp_path / "k.sqlite")
    assert min(got) < min(server.hidden)
    assert got == expected(forum, DAYS, server.hidden)
    assert result.stored == len(got)


def test_a_walk_whose_cursor_does_not_move_stops_with_an_error(serve, tmp_path):
    # A broken API that answers the same full page to every cursor must not loop forever, nor end "done".
    page = api_source.ApiPage([], last_offset="-500", page_size=100, raw_count=3, oldest_id=500)
    with pytest.raises(FetchError, match="does not move"):
        ApiBackfill._next_cursor(page, "-400")


# -- Retry-After is capped ---------------------------------------------------------------------------------------
def test_long_retry_after_stops_at_once_with_exit_3(serve, tmp_path):
    server = serve(FaultPlan([Fault("429", path="/by-item", at={3}, retry_after=100_000)]))
    db = tmp_path / "k.sqlite"
    t0 = time.monotonic()
    r = kofinsent("crawl", "posts", "--codes", CODE, "--since", MONTH.since, "--until", MONTH.until, "--db", db,
                  "--base-url", server.url, "--delay", "0")
    assert time.monotonic() - t0 < 30
    assert r.returncode == 3
    assert one_line(r.stderr) == ("rate-limited: the server asked for a wait of 100000 s (Retry-After); run the "
                                  "same command later to resume")
    assert server.count("/by-item") == 3
    r = kofinsent("crawl", "posts", "--codes", CODE, "--since", MONTH.since, "--until", MONTH.until, "--db", db,
                  "--base-url", server.url, "--delay", "0")
    assert r.returncode == 0 and stored(db)


def test_retry_after_up_to_max_wait_is_honoured(serve):
    server = serve(FaultPlan([Fault("503", path="/by-item", at={1}, retry_after=42)]))
    slept: list[float] = []
    f = Fetcher(HttpConfig(delay=0, jitter=0, base_url=server.url, max_wait=60), sleep=slept.append)
    assert get_page(f).posts
    assert slept == [42.0]
    f = Fetcher(HttpConfig(delay=0, jitter=0, base_url=server.url, max_wait=41))
    server.faults.reset()
    with pytest.raises(RateLimited) as e:
        get_page(f)
    assert e.value.wait_s == 42 and "/by-item" in e.value.url


@pytest.mark.parametrize("header", ["soon", "-5", "1e9", "Fri, 99 Foo 2026 00:00:00 GMT", "", "99999999999999999999x"])
def test_unparseable_retry_after_is_ignored(serve, header):
    server = serve(FaultPlan([Fault("429", path="/by-item", at={1}, retry_after=header)]))
    slept: list[float] = []
    f = Fetcher(HttpConfig(delay=0, jitter=0, backoff=0.5, base_url=server.url), sleep=slept.append)
    assert get_page(f).posts
    assert slept == [0.0] or all(s < 5 for s in slept)  # the plain backoff, never the header's "wait"


def test_retry_after_values():
    assert retry_after_seconds("120") == 120
    assert retry_after_seconds(" 7 ") == 7
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # a date in the past
    assert retry_after_seconds("Sun, 06 Nov 1994 08:49:37 GMT", now=784111777 - 60) == 60
    assert retry_after_seconds("tomorrow") is None and retry_after_seconds("-1") is None
    assert retry_after_seconds(None) is None


# -- answers that stay unreadable: one line, exit 3, at most 1 + --retries attempts ------------------------------------
@pytest.mark.parametrize("kind, prefix, words", [
    ("captcha", "blocked: ", ["captcha page", "text/html", "자동입력 방지"]),
    ("login", "blocked: ", ["login page", "application/json", "LOGIN_REQUIRED"]),
    ("layout", "error: ", ["layout may have changed", "no 'posts' list", "application/json"]),
])
def test_interstitials_and_layout_changes_are_one_line_not_a_traceback(serve, tmp_path, kind, prefix, words):
    server = serve(FaultPlan([Fault(kind, path="/by-item", at=set(range(3, 1000)))]))
    db = tmp_path / "k.sqlite"
    r = kofinsent("crawl", "posts", "--codes", CODE, "--since", MONTH.since, "--until", MONTH.until, "--db", db,
                  "--base-url", server.url, "--delay", "0", "--retries", "2")
    assert r.returncode == 3
    line = one_line(r.stderr)
    assert line.startswith(prefix) and "HTTP 200" in line and "/api/community/discussion/posts/by-item" in line
    assert all(w in line for w in words), line
    assert server.count("/by-item") == 2 + 3  # two good pages, then 1 + --retries attempts at the third URL
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT count(*) FROM crawl_progress WHERE done=1").fetchone()[0] == 0


def test_attempts_per_url_are_one_budget_across_kinds_of_failure(serve):
    # 503s and unreadable pages in turn: the old layering retried each kind on its own, (retries + 1)^2 times.
    server = serve(FaultPlan([Fault("503", path="/by-item", every=2), Fault("layout", path="/by-item")]))
    with pytest.raises((UnparseableResponse, FetchError)):
        get_page(fast_fetcher(server, retries=3))
    assert server.count("/by-item") == 4


def test_max_requests_is_a_hard_budget_that_counts_retries(serve):
    server = serve(FaultPlan([Fault("503", path="/by-item", at={1, 2})]))
    f = fast_fetcher(server, max_requests=2)
    with pytest.raises(BudgetExceeded):
        get_page(f)
    assert server.count("/by-item") == 2 and f.stats.requests == 2


runner = CliRunner()


@pytest.mark.parametrize("option, value", [("--delay", "nan"), ("--delay", "inf"), ("--delay", "-1"),
                                           ("--retries", "-1"), ("--timeout", "0"), ("--timeout", "-2"),
                                           ("--timeout", "nan"), ("--max-wait", "-1"), ("--max-requests", "0")])
def test_bad_politeness_options_are_refused_naming_the_option(tmp_path, option, value):
    from kofinsent.cli import app

    db = tmp_path / "k.sqlite"
    r = runner.invoke(app, ["crawl", "posts", "--codes", CODE, "--since", "2018-01-01", "--until", "2018-01-02",
                            "--db", str(db), "--base-url", "http://127.0.0.1:9", option, value])
    assert r.exit_code == 2
    line = one_line(r.stderr)
    assert line.startswith(f"error: {option} must be") and value.lstrip("-") in line
    assert not db.exists()  # refused before anything was created


# -- the db and the user's files ---------------------------------------------------------------------------------------
@pytest.fixture
def crawled_db(forum, serve, tmp_path) -> Path:
    db = tmp_path / "data" / "k.sqlite"
    with Store(db) as store:
        backfill("api", fast_fetcher(serve()), store, CODE, DAYS)
    return db


@pytest.fixture
def read_only():
    """Make files or folders read-only even for root (chattr +i), and writable again at teardown."""
    made: list[Path] = []

    def freeze(*paths: Path) -> None:
        for p in paths:
            if os.geteuid() != 0:
                p.chmod(0o555 if p.is_dir() else 0o444)
            elif subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode != 0:
                pytest.skip("running as root on a filesystem without chattr +i: cannot make a path read-only")
            made.append(p)

    yield freeze
    for p in reversed(made):
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(p)], capture_output=True)
        else:
            p.chmod(0o755 if p.is_dir() else 0o644)


@pytest.mark.parametrize("spelling", ["same", "relative", "symlink"])
def test_export_refuses_to_write_over_its_db(crawled_db, tmp_path, spelling):
    out = {"same": crawled_db, "relative": crawled_db.parent / ".." / "data" / crawled_db.name,
           "symlink": tmp_path / "link.jsonl"}[spelling]
    if spelling == "symlink":
        out.symlink_to(crawled_db)
    before = sha(crawled_db)
    r = kofinsent("crawl", "export", "--db", crawled_db, "--out", out)
    assert r.returncode == 2
    assert one_line(r.stderr).startswith("error: --out") and "--db" in r.stderr
    assert sha(crawled_db) == before


@pytest.mark.parametrize("what", ["file", "folder"])
def test_export_and_dataset_build_read_a_read_only_db(crawled_db, tmp_path, read_only, what):
    before, n = sha(crawled_db), len(stored(crawled_db))
    read_only(crawled_db) if what == "file" else read_only(crawled_db, crawled_db.parent)
    out = tmp_path / "posts.jsonl"
    r = kofinsent("crawl", "export", "--db", crawled_db, "--out", out)
    assert r.returncode == 0, r.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == n > 0
    from kofinsent.dataset.source import read_db

    assert len(read_db(crawled_db, progress=False).posts) == n
    assert sha(crawled_db) == before


@pytest.mark.parametrize("content, message", [(b"", "empty (0 bytes)"), (b"name,title\n1,x\n", "not a SQLite file")])
def test_readers_never_turn_a_file_into_a_crawler_db(tmp_path, content, message):
    db = tmp_path / "notes.sqlite"
    db.write_bytes(content)
    r = kofinsent("crawl", "export", "--db", db, "--out", tmp_path / "p.jsonl")
    assert r.returncode == 2 and message in one_line(r.stderr)
    assert db.read_bytes() == content and not (tmp_path / "p.jsonl").exists()
    from kofinsent.dataset.source import read_db

    with pytest.raises(StoreError, match=message.split(" (")[0]):
        read_db(db, progress=False)
    assert db.read_bytes() == content


def test_a_corrupted_db_is_one_error_line(crawled_db, serve, tmp_path):
    data = bytearray(crawled_db.read_bytes())
    data[200:4096] = b"\xff" * (4096 - 200)  # keep the header, trash the schema page
    crawled_db.write_bytes(bytes(data))
    for args in (["crawl", "export", "--db", crawled_db, "--out", tmp_path / "p.jsonl"],
                 ["crawl", "posts", "--codes", CODE, "--since", "2018-01-01", "--until", "2018-01-02", "--db",
                  crawled_db, "--base-url", serve().url, "--delay", "0"],
                 ["dataset", "build", "--db", crawled_db, "--rule", "same-day", "--out", tmp_path / "ds"]):
        r = kofinsent(*args)
        assert r.returncode == 2, (args, r.stderr)
        line = one_line(r.stderr)
        assert line.startswith("error: ") and str(crawled_db) in line and "corrupted" in line, line


def test_a_folder_as_db_is_one_error_line(serve, tmp_path):
    r = kofinsent("crawl", "posts", "--codes", CODE, "--since", "2018-01-01", "--until", "2018-01-02", "--db",
                  tmp_path, "--base-url", serve().url, "--delay", "0")
    assert r.returncode == 2 and "is a folder, not a db file" in one_line(r.stderr)


def test_a_read_only_db_for_a_crawl_is_one_error_line_and_stays_intact(crawled_db, serve, read_only):
    before = sha(crawled_db)
    read_only(crawled_db)
    r = kofinsent("crawl", "posts", "--codes", CODE, "--since", "2018-01-01", "--until", "2018-01-02", "--db",
                  crawled_db, "--base-url", serve().url, "--delay", "0")
    assert r.returncode == 2
    assert "cannot be written" in one_line(r.stderr) and str(crawled_db) in r.stderr
    assert sha(crawled_db) == before


def test_export_into_a_read_only_folder_is_one_error_line(crawled_db, tmp_path, read_only):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    read_only(out_dir)
    r = kofinsent("crawl", "export", "--db", crawled_db, "--out", out_dir / "p.jsonl")
    assert r.returncode == 2 and one_line(r.stderr).startswith(f"error: {out_dir}")


def test_a_full_disk_mid_crawl_keeps_what_was_committed_and_resumes(forum, serve, tmp_path):
    server = serve()
    db = tmp_path / "k.sqlite"
    with Store(db) as store:
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count = {pages + 12}")  # SQLite's own SQLITE_FULL, a few pages on
        with pytest.raises(StoreError, match="is full"):
            backfill("api", fast_fetcher(server), store, CODE, MONTH)
        partial = store.count_posts()
    assert 0 < partial < len(expected(forum, MONTH))
    with Store(db) as store:
        result = backfill("api", fast_fetcher(server), store, CODE, MONTH)
        assert result.resumed
    assert stored(db) == expected(forum, MONTH)


def get_page(fetcher: Fetcher) -> api_source.ApiPage:
    return fetcher.get(API_URL, api_source.list_params(CODE, None, 100), referer=api_referer(CODE),
                       parse=lambda r: api_source.parse_posts_page(r.text(), CODE))


def test_kofinsent_run_reports_a_crawler_stop_the_way_crawl_does(capsys):
    # `kofinsent run` shares the one-line error helper: a rate limit in its crawl step is the same line and exit 3.
    import typer

    from crawler.errors import CrawlerError
    from kofinsent.cli.errors import one_line_errors

    with pytest.raises(typer.Exit) as e, one_line_errors(CrawlerError):
        raise RateLimited("https://stock.naver.com/api/x", 100_000, 300)
    assert e.value.exit_code == 3
    assert capsys.readouterr().err == ("rate-limited: the server asked for a wait of 100000 s (Retry-After); run the "
                                       "same command later to resume\n")

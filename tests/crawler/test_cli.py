"""`kofinsent crawl ...` as a user runs it: subprocesses against the replay site, SIGKILL mid-crawl, bad input."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from crawler.replay import Fault, FaultPlan

CODE = "900010"


def kofinsent(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kofinsent.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "KOFINSENT_NAVER_BASE_URL": ""})


def db_posts(db: Path) -> dict[int, str]:
    with sqlite3.connect(db) as c:
        return dict(c.execute("SELECT nid, title FROM posts WHERE code=?", (CODE,)).fetchall())


def expected(forum, since: date, until: date) -> dict[int, str]:
    from crawler.backfill import DateRange

    rng = DateRange(since, until)
    return {p.nid: ("" if p.is_blind else p.title) for p in forum.posts_between(CODE, rng.start, rng.end)
            if forum.post_type(p) == "normal"}


def test_crawl_posts_prices_export(forum, serve, tmp_path):
    server = serve()
    db, out = tmp_path / "k.sqlite", tmp_path / "posts.jsonl"
    r = kofinsent("crawl", "posts", "--codes", CODE, "--since", "2018-02-01", "--until", "2018-02-10",
                  "--db", str(db), "--base-url", server.url, "--delay", "0")
    assert r.returncode == 0, r.stderr
    assert db_posts(db) == expected(forum, date(2018, 2, 1), date(2018, 2, 10))
    r = kofinsent("crawl", "prices", "--codes", f"{CODE},900020", "--since", "2018-01-01", "--until", "2018-12-31",
                  "--db", str(db), "--base-url", server.url, "--delay", "0")
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(db) as c:
        days = {d for (d,) in c.execute("SELECT date FROM prices WHERE code=?", (CODE,))}
        zero = c.execute("SELECT count(*) FROM prices WHERE volume=0").fetchone()[0]
    assert days == {d.isoformat() for d in forum.trading_days(CODE) if date(2018, 1, 1) <= d <= date(2018, 12, 31)}
    assert forum.halt_day(CODE).isoformat() not in days and zero == 0
    r = kofinsent("crawl", "export", "--db", str(db), "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(db_posts(db))
    first = rows[0]
    assert set(first) == {"code", "nid", "posted_at", "title", "author", "views", "likes", "dislikes", "is_blind",
                          "source"}
    assert isinstance(first["nid"], str) and first["posted_at"].endswith("+09:00")
    assert [r["posted_at"] for r in rows] == sorted(r["posted_at"] for r in rows)


def test_prices_fall_back_to_fchart(forum, serve, tmp_path):
    server = serve(FaultPlan([Fault("500", path="/siseJson")]))
    db = tmp_path / "k.sqlite"
    r = kofinsent("crawl", "prices", "--codes", CODE, "--since", "2018-03-01", "--until", "2018-03-31",
                  "--db", str(db), "--base-url", server.url, "--delay", "0", "--retries", "1")
    assert r.returncode == 0, r.stderr
    assert "from fchart" in r.stdout
    with sqlite3.connect(db) as c:
        n, src = c.execute("SELECT count(*), min(source) FROM prices").fetchone()
    assert src == "fchart"
    assert n == len([d for d in forum.trading_days(CODE) if date(2018, 3, 1) <= d <= date(2018, 3, 31)])


def test_universe_keeps_common_stocks(serve, tmp_path):
    server = serve()
    out = tmp_path / "u.json"
    r = kofinsent("crawl", "universe", "--top", "4", "--base-url", server.url, "--delay", "0", "--out", str(out))
    assert r.returncode == 0, r.stderr
    names = [s["name"] for s in json.loads(out.read_text(encoding="utf-8"))]
    assert len(names) == 4
    assert not any(n.endswith("우") or "KODEX" in n or "스팩" in n or "리츠" in n for n in names)


def test_sigkill_mid_crawl_then_resume(forum, serve, tmp_path):
    server = serve()
    db = tmp_path / "k.sqlite"
    args = ["crawl", "posts", "--codes", CODE, "--since", "2018-02-01", "--until", "2018-05-31", "--db", str(db),
            "--base-url", server.url]
    proc = subprocess.Popen([sys.executable, "-m", "kofinsent.cli", *args, "--delay", "0.05"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    partial = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as c:
                    partial = c.execute("SELECT count(*) FROM posts").fetchone()[0]
            except sqlite3.OperationalError:
                partial = 0
            if partial >= 1000:
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    want = expected(forum, date(2018, 2, 1), date(2018, 5, 31))
    assert 0 < partial < len(want), "the crawl should be killed half-way"
    first_run = server.count("/by-item")
    server.clear_log()
    r = kofinsent(*args, "--delay", "0")
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stdout
    assert db_posts(db) == want  # every post exactly once (the primary key forbids a second copy)
    # It continued from the cursor: together the two runs made about the requests of one uninterrupted crawl.
    pages = -(-len(want) // 100)
    assert server.count("/by-item") <= pages - first_run + 30 + 2


@pytest.mark.parametrize("args, message", [
    (["--codes", "samsung"], "not a KRX stock code: SAMSUNG"),
    (["--codes", "12345"], "not a KRX stock code: 12345"),
    (["--since", "2018-03-01", "--until", "2018-02-01"], "after until"),
    (["--since", "2018/03/01"], "--since must be a date YYYY-MM-DD"),
    (["--source", "rss"], "--source must be api or html"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    base = {"--codes": CODE, "--since": "2018-01-01", "--until": "2018-01-02", "--db": str(tmp_path / "k.sqlite"),
            "--base-url": "http://127.0.0.1:9"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    r = kofinsent("crawl", "posts", *[x for kv in base.items() for x in kv])
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr


def test_unreachable_base_url(tmp_path):
    r = kofinsent("crawl", "posts", "--codes", CODE, "--since", "2018-01-01", "--until", "2018-01-02",
                  "--db", str(tmp_path / "k.sqlite"), "--base-url", "http://127.0.0.1:9")
    assert r.returncode != 0
    assert r.stderr.startswith("error: cannot reach base URL http://127.0.0.1:9")


def test_a_db_that_is_not_ours_is_refused_and_left_alone(serve, tmp_path):
    server = serve()
    db = tmp_path / "other.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE customers (id INTEGER)")
        c.execute("INSERT INTO customers VALUES (1)")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    r = kofinsent("crawl", "posts", "--codes", CODE, "--since", "2018-01-01", "--until", "2018-01-02",
                  "--db", str(db), "--base-url", server.url, "--delay", "0")
    assert r.returncode != 0 and "not a kofinsent crawler db" in r.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert server.count() == 0


@pytest.mark.parametrize("fault, source, why", [("spa_redirect", "html", "redirect to the new SPA"),
                                                ("block", "api", "block page")])
def test_blocked_stops_with_nothing_stored_from_it(serve, tmp_path, fault, source, why):
    # The first pages answer, then the site starts blocking: committed pages stay, nothing from the block is kept.
    path = "/board.naver" if source == "html" else "/by-item"
    server = serve(FaultPlan([Fault(fault, path=path, at=set(range(4, 100)))]))
    db = tmp_path / "k.sqlite"
    r = kofinsent("crawl", "posts", "--codes", CODE, "--since", "2018-01-01", "--until", "2018-03-31",
                  "--db", str(db), "--base-url", server.url, "--delay", "0", "--source", source)
    assert r.returncode != 0
    assert r.stderr.startswith("blocked: ") and why in r.stderr
    assert server.count(path) == 4  # stopped at once, no retries of a block
    with sqlite3.connect(db) as c:
        done = c.execute("SELECT count(*) FROM crawl_progress WHERE done=1").fetchone()[0]
    assert done == 0  # never mistaken for the end of the board

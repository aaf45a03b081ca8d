"""Backfill cost against the local replay site: requests versus the minimum, parse time per page, politeness overhead.

    python benchmarks/crawl_bench.py [--years 5.5] [--posts-per-day 30]

Targets (issue #2): requests <= 1.2 x minimum + 40; wall time with the default delay <= 1.1 x (requests x delay).
Every number is measured in this run.
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from crawler.backfill import API_URL, BOARD_URL, DateRange, backfill
from crawler.http import Fetcher, HttpConfig
from crawler.replay import ReplayServer, SyntheticForum
from crawler.sources import api as api_source
from crawler.sources import board_html
from crawler.store import Store

CODE = "900010"


def expected(forum: SyntheticForum, rng: DateRange) -> int:
    return sum(1 for p in forum.posts_between(CODE, rng.start, rng.end) if forum.post_type(p) == "normal")


def run_backfill(server: ReplayServer, rng: DateRange, source: str, delay: float, db: Path) -> tuple[int, float]:
    server.clear_log()
    fetcher = Fetcher(HttpConfig(delay=delay, base_url=server.url))
    t0 = time.perf_counter()
    with Store(db) as store:
        backfill(source, fetcher, store, CODE, rng)
    return server.count("/by-item" if source == "api" else "/board.naver"), time.perf_counter() - t0


def parse_times(server: ReplayServer) -> tuple[float, float]:
    fetcher = Fetcher(HttpConfig(delay=0, base_url=server.url))
    body = fetcher.get(API_URL, api_source.list_params(CODE, None, 100)).text()
    n = 200
    t0 = time.perf_counter()
    for _ in range(n):
        api_source.parse_posts_page(body, CODE)
    api_ms = (time.perf_counter() - t0) / n * 1e3
    board = fetcher.get(BOARD_URL, {"code": CODE, "page": 3})
    raw, content_type = board.body, board.content_type
    t0 = time.perf_counter()
    for _ in range(n):
        board_html.parse_board_page(board_html.decode_html(raw, content_type), CODE)
    html_ms = (time.perf_counter() - t0) / n * 1e3
    return api_ms, html_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--years", type=float, default=5.5, help="board length before the newest post")
    ap.add_argument("--posts-per-day", type=float, default=30)
    ap.add_argument("--polite-days", type=int, default=8, help="range crawled with the default 0.7 s delay")
    args = ap.parse_args()

    end = date(2022, 12, 31)
    start = end - timedelta(days=int(args.years * 365))
    t0 = time.perf_counter()
    forum = SyntheticForum.generate(codes={CODE: "합성전자"}, start=start, end=end,
                                    posts_per_day=args.posts_per_day, seed=1)
    print(f"synthetic board: {len(forum.posts[CODE]):,} posts {start}..{end} "
          f"(built in {time.perf_counter() - t0:.1f}s)")

    with ReplayServer(forum, charset="euc-kr") as server, tempfile.TemporaryDirectory() as tmp:
        print("\nbackfill, delay 0")
        print(f"{'source':6} {'range':23} {'posts':>7} {'newer':>7} {'requests':>8} {'minimum':>7} "
              f"{'ratio':>6} {'target':>7} ok")
        mid = start + timedelta(days=int(args.years * 365 * 0.3))
        cases = [("api", DateRange(mid, mid + timedelta(days=182))),
                 ("api", DateRange(start + timedelta(days=30), start + timedelta(days=40))),
                 ("html", DateRange(mid, mid + timedelta(days=14)))]
        for i, (source, rng) in enumerate(cases):
            n = expected(forum, rng)
            newer = sum(1 for p in forum.normal_posts(CODE) if p.posted_at > rng.end)
            page = 100 if source == "api" else 20
            minimum = max(1, math.ceil(n / page))
            requests, _ = run_backfill(server, rng, source, 0.0, Path(tmp) / f"b{i}.sqlite")
            target = 1.2 * minimum + 40
            print(f"{source:6} {str(rng.since) + '..' + str(rng.until):23} {n:7,} {newer:7,} {requests:8} "
                  f"{minimum:7} {requests / minimum:6.2f} {target:7.0f} {'yes' if requests <= target else 'NO'}")

        api_ms, html_ms = parse_times(server)
        print(f"\nparse time per page: API (100 posts) {api_ms:.2f} ms, legacy HTML (20 posts) {html_ms:.2f} ms")

        delay = HttpConfig().delay
        rng = DateRange(mid, mid + timedelta(days=args.polite_days - 1))
        requests, wall = run_backfill(server, rng, "api", delay, Path(tmp) / "polite.sqlite")
        floor = requests * delay
        print(f"\ndefault delay {delay} s: {requests} requests in {wall:.2f} s; floor (requests x delay) "
              f"{floor:.2f} s; wall / floor = {wall / floor:.3f} (target <= 1.1: "
              f"{'yes' if wall <= 1.1 * floor else 'NO'})")


if __name__ == "__main__":
    main()

"""Crawler fixtures: one synthetic forum per session, served on 127.0.0.1 by the replay site."""
from __future__ import annotations

from datetime import date

import pytest

from crawler.http import Fetcher, HttpConfig
from crawler.replay import FaultPlan, ReplayServer, SyntheticForum

CODES = {"900010": "합성전자", "900020": "가상하이닉스"}


@pytest.fixture(scope="session")
def forum() -> SyntheticForum:
    # A year of posts, so any week-long range has far more newer posts than posts in range.
    return SyntheticForum.generate(codes=CODES, start=date(2018, 1, 1), end=date(2018, 12, 31),
                                   posts_per_day=40, seed=7)


@pytest.fixture
def serve(forum):
    """Start a replay server with the given options; stopped at teardown."""
    servers: list[ReplayServer] = []

    def start(faults: FaultPlan | None = None, **kw) -> ReplayServer:
        server = ReplayServer(kw.pop("forum", forum), faults=faults, **kw)
        server.start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


def fast_fetcher(server: ReplayServer, **kw) -> Fetcher:
    """No politeness delay and tiny backoff: tests check behaviour, not the live site's pacing."""
    cfg = dict(delay=0.0, jitter=0.0, backoff=0.01, timeout=2.0, base_url=server.url)
    cfg.update(kw)
    return Fetcher(HttpConfig(**cfg))

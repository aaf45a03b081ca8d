"""The fetch layer against a real loopback server: retries, Retry-After, blocks, budget, cache, base-URL rewriting."""
from __future__ import annotations

import time

import pytest

from crawler.backfill import API_URL, api_referer
from crawler.errors import BlockedError, BudgetExceeded, FetchError, ParseError
from crawler.http import Fetcher, HttpConfig
from crawler.replay import Fault, FaultPlan
from crawler.sources import api as api_source

from .conftest import fast_fetcher

CODE = "900010"


def get_page(fetcher: Fetcher, offset: str | None = None) -> api_source.ApiPage:
    return fetcher.get(API_URL, api_source.list_params(CODE, offset, 100), referer=api_referer(CODE),
                       parse=lambda r: api_source.parse_posts_page(r.text(), CODE))


def test_rewrite_sends_every_naver_host_to_base_url():
    f = Fetcher(HttpConfig(base_url="http://127.0.0.1:9/mirror"))
    for url in ("https://finance.naver.com/item/board.naver?code=005930&page=3",
                "https://stock.naver.com/api/community/discussion/posts/by-item?itemCode=005930",
                "https://api.finance.naver.com/siseJson.naver?symbol=005930",
                "https://fchart.stock.naver.com/sise.nhn?symbol=005930&count=10"):
        path_query = url.split(".com", 1)[1]
        assert f.rewrite(url) == "http://127.0.0.1:9/mirror" + path_query
    assert f.rewrite("https://example.org/x?y=1") == "https://example.org/x?y=1"


def test_base_url_from_environment(monkeypatch):
    monkeypatch.setenv("KOFINSENT_NAVER_BASE_URL", "http://127.0.0.1:1234")
    assert Fetcher(HttpConfig()).rewrite("https://finance.naver.com/a?b=1") == "http://127.0.0.1:1234/a?b=1"


def test_bad_base_url_is_a_clear_error():
    with pytest.raises(ValueError, match="base URL"):
        HttpConfig(base_url="127.0.0.1:8000")


def test_unreachable_base_url_fails_fast():
    f = Fetcher(HttpConfig(base_url="http://127.0.0.1:9"))  # discard port: nothing listens
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="cannot reach base URL"):
        f.check_reachable()
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("kind", ["500", "503", "reset", "truncate"])
def test_transient_faults_are_retried(serve, kind):
    server = serve(FaultPlan([Fault(kind, path="/by-item", at={1, 2})]))
    f = fast_fetcher(server)
    page = get_page(f)
    assert len(page.posts) > 50
    assert server.count("/by-item") == 3  # two faults, then the answer
    assert f.stats.requests == 3


def test_slow_response_past_timeout_is_retried(serve):
    server = serve(FaultPlan([Fault("slow", path="/by-item", at={1}, delay=1.5)]))
    f = fast_fetcher(server, timeout=0.5)
    assert get_page(f).posts
    assert server.count("/by-item") == 2


def test_429_honours_retry_after(serve):
    server = serve(FaultPlan([Fault("429", path="/by-item", at={1}, retry_after=1)]))
    f = fast_fetcher(server)
    t0 = time.monotonic()
    assert get_page(f).posts
    assert time.monotonic() - t0 >= 0.95
    assert server.count("/by-item") == 2


def test_retries_run_out_with_a_clear_error(serve):
    server = serve(FaultPlan([Fault("503", path="/by-item")]))  # every request
    f = fast_fetcher(server, retries=2)
    with pytest.raises(FetchError, match="HTTP 503"):
        get_page(f)
    assert server.count("/by-item") == 3


def test_truncated_body_every_time_ends_in_parse_error(serve):
    server = serve(FaultPlan([Fault("truncate", path="/by-item")]))
    f = fast_fetcher(server, retries=1)
    with pytest.raises((ParseError, FetchError)):
        get_page(f)
    assert server.count("/by-item") == 2


@pytest.mark.parametrize("kind, seen", [("block", "페이지를 찾을 수 없습니다"), ("403", "403"),
                                        ("spa_redirect", "discussion")])
def test_blocks_raise_at_once(serve, kind, seen):
    server = serve(FaultPlan([Fault(kind, path="/board.naver")]))
    f = fast_fetcher(server)
    with pytest.raises(BlockedError) as e:
        f.get("https://finance.naver.com/item/board.naver", {"code": CODE, "page": 1})
    assert seen in str(e.value)
    assert server.count("/board.naver") == 1  # a block is never retried


def test_request_budget(serve):
    server = serve()
    f = fast_fetcher(server, max_requests=2)
    get_page(f)
    get_page(f, "-999999999")
    with pytest.raises(BudgetExceeded, match="budget of 2"):
        get_page(f)
    assert server.count("/by-item") == 2


def test_disk_cache_serves_repeat_requests(serve, tmp_path):
    server = serve()
    f = fast_fetcher(server, cache_dir=tmp_path)
    a = get_page(f)
    b = get_page(fast_fetcher(server, cache_dir=tmp_path))
    assert a == b
    assert server.count("/by-item") == 1


def test_politeness_delay_between_requests(serve):
    server = serve()
    slept: list[float] = []
    clock = [0.0]

    def sleep(s: float) -> None:
        slept.append(s)
        clock[0] += s

    f = Fetcher(HttpConfig(delay=0.7, jitter=0.1, base_url=server.url), sleep=sleep, clock=lambda: clock[0])
    for _ in range(4):
        get_page(f)
    assert len(slept) == 3
    assert all(0.7 <= s <= 0.7 * 1.1 + 1e-9 for s in slept)

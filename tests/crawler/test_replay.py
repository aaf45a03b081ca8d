"""The synthetic replay site: deterministic data, the real response shapes, and every fault kind, over real sockets.

Only ``requests``/``urllib``/stdlib on the client side: these tests pin the site, not the crawler's parsers.
"""
from __future__ import annotations

import html
import json
import re
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta

import pytest
import requests

from crawler.replay import (
    API_PATH,
    API_REQUIRED,
    NEWEST_OFFSET,
    Fault,
    FaultPlan,
    ReplayServer,
    SyntheticForum,
    is_market_day,
    nid_at,
)

CODES = {"900010": "합성전자", "900020": "가상하이닉스"}
CODE = "900010"
START, END = date(2018, 1, 1), date(2018, 3, 31)

_ESCAPE = re.compile(r'\\(["\\/bfnrt]|u[0-9a-fA-F]{4})?')
_ROW = re.compile(r'<tr onmouseover="mouseOver\(this\)"[^>]*>(.*?)</tr>', re.S)
_ROW_NID = re.compile(r"board_read\.naver\?code=(\d+)&amp;nid=(\d+)")


def recover(text: str):
    """The documented recovery (naver-sources.md §2.2): strict=False, then double invalid backslashes."""
    try:
        return json.loads(text, strict=False)
    except json.JSONDecodeError:
        return json.loads(_ESCAPE.sub(lambda m: m.group(0) if m.group(1) else "\\\\", text), strict=False)


def api_params(code: str = CODE, **extra) -> dict[str, str]:
    params = {"discussionType": "domesticStock", "itemCode": code, "isHolderOnly": "false",
              "excludesItemNews": "false", "isItemNewsOnly": "false"}
    params.update({k: str(v) for k, v in extra.items()})
    return params


@pytest.fixture(scope="module")
def small_forum() -> SyntheticForum:
    return SyntheticForum.generate(CODES, START, END, posts_per_day=30, seed=3)


@pytest.fixture(scope="module")
def site(small_forum):
    with ReplayServer(small_forum) as server:
        yield server


@pytest.fixture
def start_server(small_forum):
    servers: list[ReplayServer] = []

    def start(forum: SyntheticForum | None = None, **kw) -> ReplayServer:
        server = ReplayServer(forum or small_forum, **kw).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


def get_api(server: ReplayServer, **extra):
    r = requests.get(server.url + API_PATH, params=api_params(**extra), timeout=5)
    assert r.status_code == 200, r.text[:300]
    return recover(r.text)


def newest_first(forum: SyntheticForum, code: str = CODE, below: int | None = None) -> list[int]:
    nids = forum.nids[code]
    return [n for n in reversed(nids) if below is None or n < below]


# ---------------------------------------------------------------------------------------------------------------
# The data
# ---------------------------------------------------------------------------------------------------------------
def test_same_seed_same_forum_and_a_new_seed_differs():
    kw = dict(codes=CODES, start=date(2018, 1, 1), end=date(2018, 1, 31), posts_per_day=20)
    a, b = SyntheticForum.generate(seed=5, **kw), SyntheticForum.generate(seed=5, **kw)
    assert a.posts == b.posts and a.prices == b.prices and a.ranking == b.ranking
    assert a.news == b.news and a.deleted == b.deleted and a.halts == b.halts
    c = SyntheticForum.generate(seed=6, **kw)
    assert c.posts != a.posts and c.prices != a.prices


def test_ids_are_one_global_counter_rising_with_time(small_forum):
    posts = small_forum.all_posts()
    assert {p.code for p in posts[:200]} == set(CODES)  # the stocks interleave in one id sequence
    for prev, cur in zip(posts, posts[1:]):
        assert cur.nid > prev.nid and cur.posted_at >= prev.posted_at
    gaps = sorted(b.nid - a.nid for a, b in zip(posts, posts[1:]))
    assert gaps[len(gaps) // 2] > 10  # the rest of the site uses ids in between
    assert small_forum.deleted and not set(small_forum.deleted) & {p.nid for p in posts}
    # Real-looking ids: the counter starts at the calibration line's value for the start date.
    assert abs(posts[0].nid - nid_at(datetime(2018, 1, 1))) < 10_000
    assert all(START <= p.posted_at.date() <= END and p.posted_at.microsecond == 0 for p in posts)


def test_post_fields_and_vocabulary(small_forum):
    posts = small_forum.posts[CODE]
    assert all(re.fullmatch(r"[a-z]{3,5}\*{4}", p.author) for p in posts if p.nid not in small_forum.news)
    blind = sum(p.is_blind for p in posts) / len(posts)
    news = sum(p.nid in small_forum.news for p in posts) / len(posts)
    assert 0.01 < blind < 0.06 and 0.005 < news < 0.04
    titles = {p.title for p in posts}
    assert any("&" in t for t in titles) and any("<" in t for t in titles) and any('"' in t for t in titles)
    assert any("%" in t for t in titles) and any(re.search(r"\\[a-z]", t) for t in titles)
    assert not any("가즈아" in t or "손절" in t for t in titles)  # signal=0: no cue words at all
    # More posts during the session than in the same span at night.
    weekday = [p.posted_at for p in posts if is_market_day(p.posted_at.date())]
    session = sum(1 for t in weekday if (9, 0) <= (t.hour, t.minute) < (15, 30))
    night = sum(1 for t in weekday if t.hour < 6 or t.hour >= 22)
    assert session > 0.5 * len(weekday) and 0 < night < session / 3


def test_signal_puts_the_next_session_cue_in_titles():
    f = SyntheticForum.generate(CODES, date(2018, 1, 1), date(2018, 1, 31), posts_per_day=15, seed=1, signal=1.0)
    checked = 0
    for code, posts in f.posts.items():
        for p in posts:
            if p.nid in f.news:
                continue
            move = f.session_move(code, p.posted_at)
            assert ("가즈아" in p.title) == (move == 1), (p, move)
            assert ("손절" in p.title) == (move == -1), (p, move)
            checked += 1
    assert checked > 500


def test_krx_like_calendar_and_halt_day(small_forum):
    days = small_forum.market_days()
    assert days[0] >= START - timedelta(days=30) and days[-1] <= END + timedelta(days=10)
    for d in (date(2018, 1, 1), date(2018, 2, 15), date(2018, 2, 16), date(2018, 3, 1), date(2017, 12, 29)):
        assert d not in days
    assert date(2018, 2, 14) in days and date(2018, 2, 19) in days
    assert all(d.weekday() < 5 for d in days)
    assert is_market_day(date(2018, 10, 24)) and not is_market_day(date(2018, 9, 24))
    for code in CODES:
        bars = small_forum.prices[code]
        halt = small_forum.halt_day(code)
        assert START <= halt <= END and halt not in small_forum.trading_days(code)
        i = next(i for i, b in enumerate(bars) if b.date == halt)
        h, prev = bars[i], bars[i - 1]
        assert h.volume == 0 and h.open == h.high == h.low == h.close == prev.close
        assert [b.date for b in bars if b.volume == 0] == [halt]
        traded = [b for b in bars if b.volume > 0]
        assert all(b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high for b in traded)
        assert all(float(x).is_integer() for b in bars for x in (b.open, b.high, b.low, b.close))
        flat = sum(1 for a, b in zip(traded, traded[1:]) if b.close == a.close)
        assert flat >= 1  # exactly-flat sessions exist


def test_generation_is_fast():
    t0 = time.perf_counter()
    f = SyntheticForum.generate(None, date(2018, 1, 1), date(2018, 6, 30), posts_per_day=60, seed=2)
    n = sum(len(v) for v in f.posts.values())
    assert n > 25_000
    assert time.perf_counter() - t0 < 5.0


# ---------------------------------------------------------------------------------------------------------------
# Community API
# ---------------------------------------------------------------------------------------------------------------
def test_api_pages_by_offset_newest_first(site, small_forum):
    first = get_api(site, pageSize=50)
    ids = [int(p["id"]) for p in first["posts"]]
    assert ids == newest_first(small_forum)[:50]
    assert first["lastOffset"] == f"-{ids[-1]}" and first["pageSize"] == 50
    assert first["offset"] == NEWEST_OFFSET
    second = get_api(site, pageSize=50, offset=first["lastOffset"])
    assert [int(p["id"]) for p in second["posts"]] == newest_first(small_forum)[50:100]
    # Jump anywhere with offset=-X: the stock's posts with id < X, newest first.
    mid = small_forum.nids[CODE][len(small_forum.nids[CODE]) // 2]
    page = get_api(site, pageSize=100, offset=f"-{mid}")
    assert [int(p["id"]) for p in page["posts"]] == newest_first(small_forum, below=mid)[:100]
    # Defaults: no offset = the sentinel; no pageSize = 20.
    assert get_api(site, offset=NEWEST_OFFSET)["posts"] == get_api(site)["posts"]
    assert len(get_api(site)["posts"]) == 20
    # The end of the board: a short last page, then an empty one.
    oldest = small_forum.nids[CODE][:3]
    tail = get_api(site, pageSize=100, offset=f"-{oldest[-1]}")
    assert [int(p["id"]) for p in tail["posts"]] == oldest[:2][::-1]
    empty = get_api(site, offset=f"-{oldest[0]}")
    assert empty["posts"] == [] and empty["lastOffset"] is None


def test_api_post_fields(site, small_forum):
    body = get_api(site, pageSize=100, offset=f"-{small_forum.nids[CODE][-200]}")
    keys = {"id", "itemCode", "itemName", "postType", "writer", "writtenAt", "title", "contentSwReplacedButImg",
            "contentSwReplaced", "commentCount", "recommendCount", "notRecommendCount", "viewCount",
            "isCleanbotPassed", "replyDepth", "imageCount"}
    by_nid = {p.nid: p for p in small_forum.posts[CODE]}
    for item in body["posts"]:
        assert keys <= set(item)
        assert isinstance(item["id"], str) and item["itemCode"] == CODE and item["itemName"] == "합성전자"
        assert {"profileId", "profileType", "nickname"} <= set(item["writer"])
        post = by_nid[int(item["id"])]
        assert item["writtenAt"] == post.posted_at.strftime("%Y-%m-%dT%H:%M:%S")
        assert item["postType"] == ("itemNews" if post.nid in small_forum.news else "normal")
        assert item["isCleanbotPassed"] is (not post.is_blind)
        assert item["title"] == ("" if post.is_blind else post.title)
        assert (item["viewCount"], item["recommendCount"], item["commentCount"]) == (
            post.views, post.likes, post.comments)


def test_api_filters(site):
    assert {p["postType"] for p in get_api(site, pageSize=100, isItemNewsOnly="true")["posts"]} == {"itemNews"}
    assert {p["postType"] for p in get_api(site, pageSize=100, excludesItemNews="true")["posts"]} == {"normal"}
    assert all(p["isCleanbotPassed"] for p in get_api(site, pageSize=100, isCleanbotPassedOnly="true")["posts"])


@pytest.mark.parametrize("missing", API_REQUIRED)
def test_api_missing_required_param_is_400(site, missing):
    params = api_params()
    del params[missing]
    r = requests.get(site.url + API_PATH, params=params, timeout=5)
    assert r.status_code == 400
    body = r.json()
    assert body["detailCode"].startswith("invalid_type,") and missing in body["fieldErrors"]
    assert 150 <= len(r.content) <= 260


@pytest.mark.parametrize("size", ["101", "0", "x"])
def test_api_bad_page_size_is_400(site, size):
    r = requests.get(site.url + API_PATH, params=api_params(pageSize=size), timeout=5)
    assert r.status_code == 400 and "pageSize" in r.json()["fieldErrors"]


def test_quirky_json_needs_the_documented_recovery(site, small_forum):
    post = next(p for p in reversed(small_forum.posts[CODE])
                if "\\" in p.title and not p.is_blind and p.nid not in small_forum.news)
    text = requests.get(site.url + API_PATH, params=api_params(pageSize=1, offset=f"-{post.nid + 1}"),
                        timeout=5).text
    assert re.search(r"\\[a-z]", text)  # the raw, invalid escape
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        json.loads(text, strict=False)  # strict=False alone does not fix \d-style escapes
    assert recover(text)["posts"][0]["title"] == post.title

    tabbed = next(p for p in reversed(small_forum.posts[CODE])
                  if p.nid % 4 == 0 and not p.is_blind and "\\" not in p.title)
    text = requests.get(site.url + API_PATH, params=api_params(pageSize=1, offset=f"-{tabbed.nid + 1}"),
                        timeout=5).text
    with pytest.raises(json.JSONDecodeError, match="control character"):
        json.loads(text)
    assert "\t" in json.loads(text, strict=False)["posts"][0]["contentSwReplaced"]


def test_without_quirks_the_json_is_valid(start_server):
    f = SyntheticForum.generate(CODES, date(2018, 1, 1), date(2018, 1, 31), posts_per_day=40, seed=3, quirks=False)
    server = start_server(f)
    r = requests.get(server.url + API_PATH, params=api_params(pageSize=100), timeout=5)
    assert len(json.loads(r.text)["posts"]) == 100


# ---------------------------------------------------------------------------------------------------------------
# Legacy board
# ---------------------------------------------------------------------------------------------------------------
def test_board_page_in_euc_kr(site, small_forum):
    r = requests.get(site.url + "/item/board.naver", params={"code": CODE, "page": 2}, timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/html"  # charset only in <meta>
    assert b'<meta http-equiv="Content-Type" content="text/html; charset=euc-kr">' in r.content
    with pytest.raises(UnicodeDecodeError):
        r.content.decode("utf-8")
    page = r.content.decode("cp949")
    rows = _ROW.findall(page)
    assert len(rows) == 20
    normal = [p for p in reversed(small_forum.posts[CODE]) if p.nid not in small_forum.news]
    expected = normal[20:40]
    assert [int(_ROW_NID.search(row).group(2)) for row in rows] == [p.nid for p in expected]
    for row, post in zip(rows, expected):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        assert len(cells) == 6
        assert f'<span class="tah p10 gray03">{post.posted_at:%Y.%m.%d %H:%M}</span>' == cells[0]
        if post.is_blind:
            assert '<span class="cleanbot_list_blind">클린봇이 이용자 보호를 위해 숨긴 게시글입니다.</span>' in row
        else:
            assert html.unescape(re.search(r' title="([^"]*)"', row).group(1)) == post.title
        assert f'<td class="p11">{post.author}</td>' in row
        assert f"{post.views:,}</span>" in cells[3]
    # Header, spacer/divider rows: 20 posts in 4 blocks of 5 (tbody rows 3-7, 9-13, 15-19, 21-25).
    tbody = re.search(r"<tbody>(.*?)</tbody>", page, re.S).group(1)
    trs = re.findall(r"<tr[^>]*>.*?</tr>", tbody, re.S)
    post_rows = [i + 1 for i, tr in enumerate(trs) if "mouseOver" in tr]
    assert post_rows == [*range(3, 8), *range(9, 14), *range(15, 20), *range(21, 26)]
    assert re.findall(r"<th[^>]*>(.*?)</th>", trs[0]) == ["날짜", "제목", "글쓴이", "조회", "공감", "비공감"]
    # Navigation: td.on is this page, 맨뒤 points at the last page.
    last = -(-len(normal) // 20)
    assert re.search(r'<td class="on"><a href="[^"]*page=2">2</a></td>', page)
    assert re.search(rf'<td class="pgRR"><a href="/item/board\.naver\?code={CODE}&amp;page={last}">', page)
    assert '<td class="pgR">' in page


def test_board_first_page_new_gif_and_comment_counts(site):
    page = requests.get(site.url + "/item/board.nhn", params={"code": CODE, "page": 1}, timeout=5).content
    text = page.decode("cp949")
    assert "new.gif" in text and re.search(r"\[ ?\d+ ?\]</a>", text)


def test_board_utf8_past_the_end_and_spa_redirect(start_server, small_forum):
    utf = start_server(charset="utf-8")
    r = requests.get(utf.url + "/item/board.naver", params={"code": CODE, "page": 1}, timeout=5)
    assert "charset=utf-8" in r.headers["Content-Type"].lower() and len(_ROW.findall(r.content.decode())) == 20
    r = requests.get(utf.url + "/item/board.naver", params={"code": CODE, "page": 100_000}, timeout=5)
    assert r.status_code == 200 and "table" in r.text and _ROW.findall(r.text) == []
    spa = start_server(board_redirects_to_spa=True)
    r = requests.get(spa.url + "/item/board.naver", params={"code": CODE, "page": 1}, allow_redirects=False,
                     timeout=5)
    assert r.status_code == 302 and r.content == b""
    assert r.headers["Location"] == f"https://stock.naver.com/domestic/stock/{CODE}/discussion"


def test_added_posts_shift_pages_without_touching_the_forum(start_server, small_forum):
    server = start_server()
    before = len(small_forum.posts[CODE])
    new = server.add_posts(CODE, 3)
    assert min(p.nid for p in new) > small_forum.last_nid and len(small_forum.posts[CODE]) == before
    assert [int(p["id"]) for p in get_api(server, pageSize=5)["posts"][:3]] == [p.nid for p in reversed(new)]
    rows = _ROW.findall(requests.get(server.url + "/item/board.naver", params={"code": CODE, "page": 1},
                                     timeout=5).content.decode("cp949"))
    assert [int(_ROW_NID.search(r).group(2)) for r in rows[:3]] == [p.nid for p in reversed(new)]

    live = start_server(live_posts_per_request=2)
    firsts = [int(get_api(live, pageSize=1)["posts"][0]["id"]) for _ in range(2)]
    assert firsts[1] > firsts[0] > small_forum.last_nid


# ---------------------------------------------------------------------------------------------------------------
# Prices and ranking
# ---------------------------------------------------------------------------------------------------------------
def test_sise_json_shape_and_range(site, small_forum):
    r = requests.get(site.url + "/siseJson.naver", timeout=5, params={
        "symbol": CODE, "requestType": 1, "startTime": "20180201", "endTime": "20180228", "timeframe": "day"})
    text = r.text
    assert "[['날짜', '시가', '고가', '저가', '종가', '거래량', '외국인소진율']," in text
    rows = json.loads(text.replace("'", '"'))
    assert rows[0][0] == "날짜"
    expected = small_forum.bars(CODE, date(2018, 2, 1), date(2018, 2, 28))
    assert [r[0] for r in rows[1:]] == [b.date.strftime("%Y%m%d") for b in expected]
    assert all(isinstance(x, int) for row in rows[1:] for x in row[1:6]) and isinstance(rows[1][6], float)
    assert re.search(r'\],\n\s*\n\["2018', text)  # rows separated by whitespace lines, as on the real site


def test_fchart_xml(site, small_forum):
    def items(count: int) -> list[str]:
        r = requests.get(site.url + "/sise.nhn", timeout=5,
                         params={"symbol": CODE, "timeframe": "day", "count": count, "requestType": 0})
        assert r.content.startswith(b'<?xml version="1.0" encoding="EUC-KR" ?>')
        text = r.content.decode("cp949")
        assert 'name="합성전자"' in text
        return re.findall(r'<item data="([^"]*)" />', text)

    bars = [b for b in small_forum.prices[CODE] if b.date <= END]  # the last bars up to "today" (the end date)
    last30 = items(30)
    assert len(last30) == 31 and last30[-1].endswith("|||||")  # + the empty pre-open bar of the next session
    assert [i.split("|")[0] for i in last30[:-1]] == [b.date.strftime("%Y%m%d") for b in bars[-30:]]
    assert last30[-1][:8] > last30[-2][:8]
    every = items(6000)
    assert len(every) == len(bars) + 1
    halt = small_forum.halt_day(CODE).strftime("%Y%m%d")
    halt_item = next(i for i in every if i.startswith(halt)).split("|")
    assert halt_item[5] == "0" and len(set(halt_item[1:5])) == 1


def test_market_sum_pages(site):
    pages = [requests.get(site.url + "/sise/sise_market_sum.naver", params={"sosok": 0, "page": n},
                          timeout=5) for n in (1, 2, 3)]
    texts = [p.content.decode("cp949") for p in pages]
    rows = [re.findall(r'<tr onmouseover="mouseOver\(this\)"[^>]*>(.*?)</tr>', t, re.S) for t in texts]
    assert [len(r) for r in rows] == [50, 12, 0]
    assert re.search(r'<td class="pgRR"><a href="[^"]*page=2">', texts[0])
    names = re.findall(r'<a href="/item/main\.naver\?code=(\d{6})" class="tltle">([^<]*)</a>', texts[0] + texts[1])
    assert len(names) == 62 and (CODE, "합성전자") in names
    assert any(c.endswith("5") and n.endswith("우") for c, n in names)
    for pattern in ("KODEX 200", "ETN", "스팩1호", "리츠"):
        assert any(pattern in n for _, n in names), pattern
    assert all(len(re.findall(r'<td class="number">', r)) == 10 for r in rows[0])
    assert '<td class="no">1</td>' in rows[0][0] and '<th scope="col">시가총액</th>' in texts[0]


# ---------------------------------------------------------------------------------------------------------------
# Faults, routing, log
# ---------------------------------------------------------------------------------------------------------------
def test_unknown_path_is_404_and_requests_are_logged(start_server):
    server = start_server(faults=FaultPlan([Fault("500", path="/by-item", at={1})]))
    assert requests.get(server.url + "/nope", timeout=5).status_code == 404
    requests.get(server.url + API_PATH, params=api_params(), timeout=5)
    assert server.requests[0] == ("GET", "/nope", {}, 404)
    method, path, query, status = server.requests[1]
    assert (method, path, query["itemCode"], status, server.requests[1].fault) == ("GET", API_PATH, CODE, 500, "500")
    assert server.count("/by-item") == 1 and server.count("") == 2


def test_fault_429_sends_retry_after(start_server):
    server = start_server(faults=FaultPlan([Fault("429", path="/by-item", at={1}, retry_after=2)]))
    r = requests.get(server.url + API_PATH, params=api_params(), timeout=5)
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert requests.get(server.url + API_PATH, params=api_params(), timeout=5).status_code == 200


@pytest.mark.parametrize("kind", ["500", "503", "403"])
def test_fault_statuses(start_server, kind):
    server = start_server(faults=FaultPlan([Fault(kind, path="/board")]))
    assert requests.get(server.url + "/item/board.naver?code=900010", timeout=5).status_code == int(kind)


def test_fault_block_page(start_server):
    server = start_server(faults=FaultPlan([Fault("block")]))
    r = requests.get(server.url + "/item/board.naver?code=900010&page=1", timeout=5)
    assert r.status_code == 200 and "페이지를 찾을 수 없습니다" in r.text and "board_read" not in r.text
    assert 2500 <= len(r.content) <= 2900


def test_fault_spa_redirect(start_server):
    server = start_server(faults=FaultPlan([Fault("spa_redirect", path="/by-item")]))
    r = requests.get(server.url + API_PATH, params=api_params(), allow_redirects=False, timeout=5)
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/domestic/stock/{CODE}/discussion")


def test_fault_reset_is_a_connection_error(start_server):
    server = start_server(faults=FaultPlan([Fault("reset", path="/by-item", at={1})]))
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(server.url + API_PATH, params=api_params(), timeout=5)
    assert requests.get(server.url + API_PATH, params=api_params(), timeout=5).status_code == 200
    assert [r.status for r in server.requests] == [0, 200] and server.requests[0].fault == "reset"


def test_fault_truncate_cuts_the_body(start_server):
    server = start_server(faults=FaultPlan([Fault("truncate", path="/by-item", at={1})]))
    url = server.url + API_PATH
    try:
        r = requests.get(url, params=api_params(pageSize=100), timeout=5)
        short = len(r.content) < int(r.headers["Content-Length"])
    except requests.exceptions.ChunkedEncodingError:
        short = True
    assert short
    full = requests.get(url, params=api_params(pageSize=100), timeout=5)
    assert len(full.content) == int(full.headers["Content-Length"])


def test_fault_slow_passes_a_short_timeout(start_server):
    server = start_server(faults=FaultPlan([Fault("slow", path="/by-item", at={1}, delay=0.6)]))
    t0 = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(server.url + API_PATH, params=api_params(), timeout=0.2)
    assert time.monotonic() - t0 < 0.6
    assert requests.get(server.url + API_PATH, params=api_params(), timeout=5).status_code == 200
    assert server.count("/by-item") == 2


def test_fault_rules_count_per_rule_and_path(start_server):
    plan = FaultPlan([Fault("500", path="/by-item", every=2), Fault("503", path="/board", times=1)])
    server = start_server(faults=plan)

    def api() -> int:
        return requests.get(server.url + API_PATH, params=api_params(), timeout=5).status_code

    def board() -> int:
        return requests.get(server.url + "/item/board.naver?code=900010", timeout=5).status_code

    assert [api(), board(), api(), board(), api(), api()] == [200, 503, 500, 200, 200, 500]
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("418")


def test_main_serves_until_interrupted():
    proc = subprocess.Popen([sys.executable, "-m", "crawler.replay", "--port", "0", "--start", "2018-01-01",
                             "--end", "2018-01-10", "--posts-per-day", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line).group(0)
        r = requests.get(url + "/item/board.naver", params={"code": "900010", "page": 1}, timeout=5)
        assert r.status_code == 200 and "합성전자" in r.content.decode("cp949")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize("args", [["--charset", "latin1"], ["--start", "2018-13-01"], ["--signal", "2"],
                                  ["--port", "x"]])
def test_main_refuses_bad_options_before_serving(args):
    # Each of these must fail before a socket is bound, so the default port being busy cannot hide the answer.
    from typer.testing import CliRunner

    from crawler.cli import app
    from crawler.replay.__main__ import main

    assert main(args) == 2
    assert CliRunner().invoke(app, ["replay", *args]).exit_code == 2

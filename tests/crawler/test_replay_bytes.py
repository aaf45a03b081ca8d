"""The replay site serves the same bytes for the same seed.

The digests were computed from the single-file ``crawler/replay.py`` before it was split into a package, so this
test proves the split (and any later tidy-up) changed nothing a crawler, a benchmark or the quickstart can see. If a
change to the synthetic forum is intended, recompute them with ``served_digests()`` and say so in the commit.
"""
from __future__ import annotations

import hashlib
from datetime import date

import requests

from crawler.replay import API_PATH, Fault, FaultPlan, ReplayServer, SyntheticForum

CODES = {"900010": "합성전자", "900020": "가상하이닉스"}
API = {"discussionType": "domesticStock", "itemCode": "900010", "isHolderOnly": "false",
       "excludesItemNews": "false", "isItemNewsOnly": "false"}
# Headers a client acts on; Date and Server change with the clock and the Python version.
HEADERS = ("Content-Type", "Content-Length", "Retry-After", "Location", "Connection")

EXPECTED = {
    "forum": "c57325b4a042cd4b1e0d0bd522fb89485e1bdb28753a4be85e9f3d2faafdaa75",
    "api_newest": "bd8e50c0acf5a9e099460c96c8fef3ba6b317cdfa5fc9a05ca7248a74c90e6b6",
    "api_offset": "1a97c7263935785962078c1cbaa6537b8f2f014229d85a3cca55b3e1c1135cae",
    "api_news_only": "1d8a162d41459087c3d191ae74edf8b1dd9defc3550f184b7f62771df9885d08",
    "api_error": "af11d6a9e84bc7f828e000be0723625e66b0276e14a27552119e24059e63eca7",
    "board_p1": "baa22be351bc3108d5664a0eff1545cfd403661e3ff52604515c2f2025a5455b",
    "board_p3": "8be47b120db84db366a4e253386568570ffb5886c6174b9a61ae4589d89c47a5",
    "board_utf8_p2": "9d80ea84a76d82bce6653a0f560e86f7597133b8539087fc2fa4481f10244cb8",
    "sise_json": "9415bd4155a47bb05e159fabcf8f67aba9ab0dc4ad4f4a88794656abb561ca37",
    "fchart_day": "b6508966589942d5509ef0eccd8a49b7ef3807a82ed0d308869cf43cda2a4b82",
    "fchart_week": "e3ba990128cbcb76aa2e68ba3696bc4dce6e7d171f047b69fecd7ef4ed56f4b2",
    "market_sum_p1": "93eebcfd2edeb4f49dd5fef5d2c3ea5b5e880bb9f64978b4f5f97ecb8171e9d1",
    "market_sum_p2": "295d27fe7673dc5dae0814df3d2d4e70a71e4e511293074f3a8a9e2226be5355",
    "not_found": "5803dad9f6e206ae911c9906ec1f8778db9edfd67512c38ab5ad4e6cc1f39838",
    "fault_429": "184af4d12345749996571c17325137ddd2890d70b1327f499ca627f8fab1b376",
    "fault_503_text": "34bff0f649cbbcc7c854f1e72f5c0ba4ecbe37ad81ba88c957cccf3edc1692b6",
    "fault_block": "6bee5921062c2d7464b29a187525deb3fe4489de7f2bb238abdf65a88d5c7314",
    "fault_captcha": "44b1e067606a8b18e7a6f4b6fd4e784c1010590cbf21f89ad4c08c799ca513bf",
    "fault_login": "e2e476764d492ec81facbe9f74236a0048ad7735a63efd44049b53a6f1fc728e",
    "fault_layout_api": "0eca9ecca830f72990c406e56c32c9eb3b1d2ce65f4fb0fdd33e5fe02bfbd361",
    "fault_layout_board": "2ef22d6c4764ad375ec39b1219a64b732fb9b96845bfe7d8e7d6cb47a2b25866",
    "fault_spa_redirect": "6fdde42dd43525808dfaf44aafb49c8bf04fb459dd10938c049fdf293e7df6d0",
    "fault_short_api": "fc5c9abcc049a09a05ec845745ea15d8855ee25ae6415e525f0cd42825f311dc",
    "after_short_api": "fc5c9abcc049a09a05ec845745ea15d8855ee25ae6415e525f0cd42825f311dc",
    "after_short_board": "98813351d907cbef30eeefd2bcd06878cb138d9a7e7968535f78fcbe8e36e9f2",
    "live_board_1": "00de6792a73d97bb9102f968b88c065ca9415ff44431c5dfc6bbff301e758932",
    "live_board_2": "6ecbee17276949ca15fc73e3551860a11bcabcb7ee579b0f2160cec516079635",
}


def _digest(r: requests.Response) -> str:
    h = hashlib.sha256(str(r.status_code).encode())
    for k in HEADERS:
        h.update(f"\n{k}: {r.headers.get(k)}".encode())
    h.update(b"\n\n" + r.content)
    return h.hexdigest()


def served_digests() -> dict[str, str]:
    forum = SyntheticForum.generate(CODES, date(2018, 1, 1), date(2018, 2, 28), posts_per_day=20, seed=11,
                                    signal=0.5)
    state = repr((forum.all_posts(), sorted(forum.news), forum.deleted, forum.prices, forum.foreign, forum.halts,
                  forum.ranking))
    out = {"forum": hashlib.sha256(state.encode()).hexdigest()}

    def get(server: ReplayServer, path: str, **params: str) -> str:
        return _digest(requests.get(server.url + path, params=params, timeout=10, allow_redirects=False))

    with ReplayServer(forum) as s:
        out["api_newest"] = get(s, API_PATH, **API, pageSize="100")
        out["api_offset"] = get(s, API_PATH, **API, pageSize="50", offset=f"-{forum.nids['900010'][-120]}")
        out["api_news_only"] = get(s, API_PATH, **{**API, "isItemNewsOnly": "true"})
        out["api_error"] = get(s, API_PATH, itemCode="900010", pageSize="500")
        out["board_p1"] = get(s, "/item/board.naver", code="900010", page="1")
        out["board_p3"] = get(s, "/item/board.nhn", code="900020", page="3")
        out["sise_json"] = get(s, "/siseJson.naver", symbol="900010", requestType="1", startTime="20180110",
                               endTime="20180220", timeframe="day")
        out["fchart_day"] = get(s, "/sise.nhn", symbol="900020", timeframe="day", count="30", requestType="0")
        out["fchart_week"] = get(s, "/sise.nhn", symbol="900010", timeframe="week", count="8", requestType="0")
        out["market_sum_p1"] = get(s, "/sise/sise_market_sum.naver", sosok="0", page="1")
        out["market_sum_p2"] = get(s, "/sise/sise_market_sum.naver", sosok="0", page="2")
        out["not_found"] = get(s, "/nowhere")
    with ReplayServer(forum, charset="utf-8") as s:
        out["board_utf8_p2"] = get(s, "/item/board.naver", code="900010", page="2")

    plan = FaultPlan([
        Fault("429", path="/a429", retry_after=2.5), Fault("503", path="/a503", retry_after="soon"),
        Fault("block", path="/ablock"), Fault("captcha", path="/acaptcha"), Fault("login", path="/alogin"),
        Fault("layout", path=API_PATH, times=1), Fault("layout", path="/item/board.naver", times=1),
        Fault("spa_redirect", path="/item/board.nhn", times=1), Fault("short", path="/by-item", keep=3, times=1),
    ])
    with ReplayServer(forum, faults=plan) as s:
        for name in ("429", "503", "block", "captcha", "login"):
            key = "fault_503_text" if name == "503" else f"fault_{name}"
            out[key] = get(s, f"/a{name}")
        out["fault_layout_api"] = get(s, API_PATH, **API)
        out["fault_layout_board"] = get(s, "/item/board.naver", code="900010")
        out["fault_spa_redirect"] = get(s, "/item/board.nhn", code="900020")
        out["fault_short_api"] = get(s, API_PATH, **API, pageSize="10")
        out["after_short_api"] = get(s, API_PATH, **API, pageSize="10")
        out["after_short_board"] = get(s, "/item/board.naver", code="900010", page="1")
    with ReplayServer(forum, live_posts_per_request=3) as s:
        out["live_board_1"] = get(s, "/item/board.naver", code="900010", page="1")
        out["live_board_2"] = get(s, "/item/board.naver", code="900010", page="1")
    return out


def test_same_seed_serves_the_same_bytes():
    got = served_digests()
    assert {k: v for k, v in got.items() if EXPECTED.get(k) != v} == {}
    assert set(got) == set(EXPECTED)

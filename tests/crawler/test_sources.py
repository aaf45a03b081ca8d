"""Offline tests of the pure parsers in crawler.sources, against hand-written fixtures in the documented shapes."""
from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pytest

from crawler.errors import BlockedError, ParseError
from crawler.records import Post, PriceBar, RankedStock
from crawler.sources import api, blocks, board_html, prices, universe

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "naver"


def fixture_bytes(name: str) -> bytes:
    return (FIX / name).read_bytes()


def fixture_text(name: str) -> str:
    return fixture_bytes(name).decode("utf-8")


# =================================================================================================================
# Community API
# =================================================================================================================
BASE_PARAMS = {
    "discussionType": "domesticStock", "itemCode": "005930", "isHolderOnly": "false", "excludesItemNews": "false",
    "isItemNewsOnly": "false", "isCleanbotPassedOnly": "false", "pageSize": "100",
}


def test_list_params_first_page_sends_no_offset():
    assert api.list_params("005930", None) == BASE_PARAMS


def test_list_params_with_offset_and_page_size():
    assert api.list_params("005930", "-429804153", 50) == {**BASE_PARAMS, "pageSize": "50", "offset": "-429804153"}


def test_required_params_are_all_sent():
    params = api.list_params("000660", None, 1)
    assert api.REQUIRED_PARAMS.items() <= params.items()


@pytest.mark.parametrize("size", [0, 101, -5, 1000])
def test_list_params_rejects_page_size_outside_1_to_100(size):
    with pytest.raises(ValueError, match=rf"page_size.*{size}"):
        api.list_params("005930", None, size)


@pytest.mark.parametrize("offset", ["", "abc", "-12x"])
def test_list_params_rejects_offset_that_is_not_an_integer(offset):
    with pytest.raises(ValueError, match="offset"):
        api.list_params("005930", offset)


def test_loads_tolerant_passes_valid_json_through():
    assert api.loads_tolerant('{"a": "x\\ny", "b": [1, 2]}') == {"a": "x\ny", "b": [1, 2]}


def test_loads_tolerant_doubles_only_invalid_escapes():
    text = r'{"t": "\d+ \s \\d \" \/ \u0041 \n end\q"}'
    assert api.loads_tolerant(text) == {"t": '\\d+ \\s \\d " / A \n end\\q'}


def test_loads_tolerant_accepts_raw_control_characters():
    assert api.loads_tolerant('{"t": "a\tb\x01c\nd"}') == {"t": "a\tb\x01c\nd"}


@pytest.mark.parametrize("cut", [1, 100, 1000, -30, -1])
def test_loads_tolerant_raises_on_a_body_cut_short(cut):
    text = fixture_text("api_posts_005930.json")
    with pytest.raises(ParseError, match="cannot parse community API response: invalid JSON"):
        api.loads_tolerant(text[:cut])


def test_parse_posts_page_cut_short_never_returns_partial_posts():
    text = fixture_text("api_posts_005930.json")
    with pytest.raises(ParseError, match="ends early"):
        api.parse_posts_page(text[: text.index('"id":"429804400"')], "005930")


def test_loads_tolerant_empty_body():
    with pytest.raises(ParseError, match="empty body"):
        api.loads_tolerant("")


def test_parse_posts_page_fixture_counts_and_cursor():
    page = api.parse_posts_page(fixture_text("api_posts_005930.json"), "005930")
    assert (page.raw_count, page.skipped, len(page.posts)) == (5, 1, 4)
    assert page.last_offset == "-429804153"
    assert page.page_size == 5
    assert page.names == {"005930": "삼성전자"}
    assert [p.nid for p in page.posts] == [429804991, 429804702, 429804400, 429804153]  # order as sent


def test_parse_posts_page_fixture_exact_posts():
    posts = api.parse_posts_page(fixture_text("api_posts_005930.json"), "005930").posts
    assert posts[0] == Post(
        code="005930", nid=429804991, posted_at=datetime(2026, 9, 24, 1, 50, 56),
        title="HBM4 양산 소식 보고 왔습니다", author="반도체개미", views=345, likes=12, dislikes=1, comments=4,
        is_blind=False, source="api")
    # Invalid \d kept as a backslash; valid escapes decoded; fractional seconds dropped; no notRecommendCount.
    assert posts[1] == Post(
        code="005930", nid=429804702, posted_at=datetime(2026, 9, 24, 1, 41, 7),
        title='수익률 \\d 계산법\n(꿀팁) "필독" C:\\data', author="존버는승리한다", views=57, likes=3, dislikes=None,
        comments=0, is_blind=False, source="api")
    # Cleanbot-hidden: kept, flagged, title blanked.
    assert posts[2] == Post(
        code="005930", nid=429804400, posted_at=datetime(2026, 9, 24, 1, 30, 12), title="", author="욕쟁이",
        views=40, likes=0, dislikes=9, comments=2, is_blind=True, source="api")
    # A raw tab inside the title and a double space are kept as sent.
    assert posts[3].title == "잠이 안 와서\tㅋㅋ  주식 창만 봄"
    assert posts[3].is_blind is False


def _api_post(**over):
    post = {"id": "429804991", "itemCode": "005930", "itemName": "삼성전자", "postType": "normal",
            "writer": {"nickname": "개미"}, "writtenAt": "2026-09-24T01:50:56", "title": "제목",
            "commentCount": 1, "recommendCount": 2, "notRecommendCount": 3, "viewCount": 4,
            "isCleanbotPassed": True, "replyDepth": 0}
    post.update(over)
    return post


def _body(*posts, **top):
    return json.dumps({"offset": "-9223372036854775807", "pageSize": 100, "posts": list(posts),
                       "lastOffset": "-1", **top}, ensure_ascii=False)


def test_parse_posts_page_old_mstock_wrapper():
    body = json.dumps({"isSuccess": True, "detailCode": "", "message": "",
                       "result": {"posts": [_api_post()], "lastOffset": -429804990}}, ensure_ascii=False)
    page = api.parse_posts_page(body, "005930")
    assert page.last_offset == "-429804990"
    assert page.page_size is None
    assert page.raw_count == 1
    assert page.posts == [Post("005930", 429804991, datetime(2026, 9, 24, 1, 50, 56), "제목", "개미", 4, 2, 3, 1,
                               False, "api")]


def test_parse_posts_page_accepts_int_ids_and_null_title_and_missing_writer():
    body = _body(_api_post(id=123, title=None, writer=None))
    (post,) = api.parse_posts_page(body, "005930").posts
    assert (post.nid, post.title, post.author) == (123, "", None)


def test_parse_posts_page_empty_list_is_a_valid_last_page():
    page = api.parse_posts_page(_body(lastOffset=None), "005930")
    assert (page.posts, page.raw_count, page.last_offset, page.skipped) == ([], 0, None, 0)


def test_parse_posts_page_error_body_names_the_detail_code():
    with pytest.raises(ParseError, match=r"detailCode='invalid_type,isHolderOnly'.*fieldErrors"):
        api.parse_posts_page(fixture_text("api_error_invalid_type.json"), "005930")


def test_parse_posts_page_failed_wrapper():
    body = '{"isSuccess": false, "detailCode": "NOT_FOUND", "message": "no item", "result": null}'
    with pytest.raises(ParseError, match="NOT_FOUND.*no item"):
        api.parse_posts_page(body, "005930")


@pytest.mark.parametrize("body, needle", [
    ('{"offset": "-1", "items": []}', r"no 'posts' list; top-level keys: \['items', 'offset'\]"),
    ('{"posts": {"a": 1}}', "'posts' is a dict, not a list"),
    ('[{"id": "1"}]', "expected a JSON object, got a list"),
    ('{"posts": [1]}', r"posts\[0\] is a int"),
])
def test_parse_posts_page_without_a_posts_list(body, needle):
    with pytest.raises(ParseError, match=needle):
        api.parse_posts_page(body, "005930")


def test_parse_posts_page_wrong_stock_is_an_error():
    body = _body(_api_post(), _api_post(id="429804990", itemCode="000660", itemName="SK하이닉스"))
    with pytest.raises(ParseError, match=r"posts\[1\].*'000660'.*'005930'"):
        api.parse_posts_page(body, "005930")


@pytest.mark.parametrize("written", ["2026-09-24T01:50:56+09:00", "2026-09-24T01:50:56Z", "2026-09-24 01:50:56",
                                     "2026.09.24 01:50", "2026-13-01T00:00:00", None, 1727142656])
def test_parse_posts_page_rejects_offset_aware_or_malformed_written_at(written):
    with pytest.raises(ParseError, match="writtenAt"):
        api.parse_posts_page(_body(_api_post(writtenAt=written)), "005930")


@pytest.mark.parametrize("over, needle", [({"id": None}, "id None"), ({"id": "12a"}, "id '12a'"),
                                          ({"viewCount": "many"}, "viewCount 'many'"), ({"title": 5}, "title")])
def test_parse_posts_page_malformed_post_fields(over, needle):
    with pytest.raises(ParseError, match=needle):
        api.parse_posts_page(_body(_api_post(**over)), "005930")


def test_parse_posts_page_counts_non_normal_posts_as_skipped():
    body = _body(_api_post(postType="itemNews"), _api_post(id="2", postType="notice"), _api_post(id="1"))
    page = api.parse_posts_page(body, "005930")
    assert (page.raw_count, page.skipped, [p.nid for p in page.posts]) == (3, 2, [1])


# =================================================================================================================
# Legacy HTML board
# =================================================================================================================
EUCKR_PAGE = "board_005930_p1_euckr.html"
UTF8_PAGE = "board_000660_p3_utf8.html"


@pytest.mark.parametrize("name, expected", [("EUC-KR", "cp949"), ("ks_c_5601-1987", "cp949"), ("euckr", "cp949"),
                                            ("UTF-8", "utf-8"), ('"utf8"', "utf-8"), ("no-such-charset", None)])
def test_normalise_charset(name, expected):
    assert board_html.normalise_charset(name) == expected


@pytest.mark.parametrize("content_type", [None, "text/html", "text/html;charset=EUC-KR"])
def test_decode_html_euckr_page_with_charset_in_meta(content_type):
    text = board_html.decode_html(fixture_bytes(EUCKR_PAGE), content_type)
    assert "삼성전자 : 네이버 증권 종목토론실" in text
    assert "똠양꿍" in text  # outside EUC-KR proper: only cp949 decodes it


def test_decode_html_euckr_page_survives_a_wrong_header():
    text = board_html.decode_html(fixture_bytes(EUCKR_PAGE), "text/html; charset=utf-8")
    assert "똠양꿍 먹으면서 존버 중" in text


@pytest.mark.parametrize("content_type", ["text/html; charset=UTF-8", 'text/html; charset="utf-8"', None,
                                          "text/html; charset=euc-kr"])  # the last: a header that lies
def test_decode_html_utf8_page(content_type):
    text = board_html.decode_html(fixture_bytes(UTF8_PAGE), content_type)
    assert "SK하이닉스 : 네이버 증권 종목토론실" in text


def test_decode_html_one_bad_byte_does_not_ruin_a_cp949_page():
    body = "<p>삼성전자 종목토론실</p>".encode("cp949") + b"\xff\xff"
    text = board_html.decode_html(body, None)
    assert text.startswith("<p>삼성전자 종목토론실</p>")


def test_decode_html_utf8_bom():
    assert board_html.decode_html("\ufeff<p>삼성</p>".encode("utf-8"), "text/html; charset=euc-kr") == "<p>삼성</p>"


def euckr_page() -> board_html.BoardPage:
    return board_html.parse_board_page(board_html.decode_html(fixture_bytes(EUCKR_PAGE), None), "005930")


def utf8_page() -> board_html.BoardPage:
    return board_html.parse_board_page(
        board_html.decode_html(fixture_bytes(UTF8_PAGE), "text/html; charset=UTF-8"), "000660")


def test_board_euckr_page_rows_and_pagination():
    page = euckr_page()
    assert len(page.posts) == 20
    assert (page.last_page, page.current_page, page.skipped_blind_without_id) == (680, 1, 0)
    assert all(p.source == "html" and p.code == "005930" for p in page.posts)
    nids = [p.nid for p in page.posts]
    assert nids == sorted(nids, reverse=True) and len(set(nids)) == 20
    assert page.posts[-1] == Post("005930", 272615866, datetime(2022, 12, 30, 14, 2), "다들 새해 복 많이 받으세요",
                                  "newy****", 58, 3, 0, None, False, "html")


def test_board_euckr_page_exact_posts():
    p = euckr_page().posts
    # Title from the title attribute; "[12]" in the link text (with new.gif) is the comment count.
    assert p[0] == Post("005930", 272617128, datetime(2022, 12, 30, 15, 42), "삼성전자 내년엔 간다", "abc****",
                        1234, 5, 0, 12, False, "html")
    # Entities decoded.
    assert p[1] == Post("005930", 272617050, datetime(2022, 12, 30, 15, 40), "<속보> 삼성 & SK 감산 없다",
                        "stoc****", 87, 2, 1, None, False, "html")
    # No title attribute: link text, markup whitespace stripped, inner double space kept; "[ 2 ]" after the link.
    assert p[2] == Post("005930", 272616990, datetime(2022, 12, 30, 15, 38), "외인 매도  멈춰라", "zxcv****",
                        12345, 0, 3, 2, False, "html")
    # Cleanbot row with a link: kept, flagged, no title.
    assert p[3] == Post("005930", 272616900, datetime(2022, 12, 30, 15, 35), "", "qwer****", 15, 0, 0, None, True,
                        "html")
    assert p[4].title == "똠양꿍 먹으면서 존버 중"
    assert p[5].title == "종가 55,300 마감"


def test_board_utf8_page_rows_and_pagination():
    page = utf8_page()
    assert len(page.posts) == 19  # 20 rows, one cleanbot row without a link (no nid)
    assert (page.last_page, page.current_page, page.skipped_blind_without_id) == (680, 3, 1)
    assert not any(p.is_blind for p in page.posts)


def test_board_utf8_page_exact_posts():
    p = utf8_page().posts
    # 2026 layout: author in td.p11.align_right.
    assert p[0] == Post("000660", 272590412, datetime(2022, 12, 29, 16, 5), '하이닉스 "바닥" 맞냐', "하닉러버",
                        2017, 3, 1, None, False, "html")
    # The count is stripped from the title attribute too.
    assert p[1] == Post("000660", 272590355, datetime(2022, 12, 29, 16, 1), "감산 발표 언제", "semi****", 95, 1, 0,
                        12, False, "html")
    assert p[2] == Post("000660", 272590240, datetime(2022, 12, 29, 15, 55), "적자 전환 & 재고 <증가>", "hynx****",
                        1001, 0, 2, 2, False, "html")
    assert p[3].nid == 272590188


def _board(rows: str, navi: str = "") -> str:
    return f"""<html><body><div id="content"><div class="section inner_sub"><table class="type2"><tbody>
    <tr><th>날짜</th><th>제목</th><th>글쓴이</th><th>조회</th><th>공감</th><th>비공감</th></tr>
    <tr><td colspan="6"></td></tr>{rows}</tbody></table>{navi}</div></div></body></html>"""


def _board_row(date_text="2022.12.30 15:42", href="/item/board_read.naver?code=005930&amp;nid=11&amp;page=1",
               title_attr="제목", text="제목", views="1"):
    return (f'<tr onMouseOver="mouseOver(this)"><td><span class="tah p10 gray03">{date_text}</span></td>'
            f'<td class="title"><a href="{href}" title="{title_attr}">{text}</a></td><td class="p11">a****</td>'
            f'<td><span class="tah p10 gray03">{views}</span></td><td><strong class="tah p10 gray03">0</strong></td>'
            f'<td><strong class="tah p10 gray03 ">0</strong></td></tr>')


def test_board_page_of_the_right_layout_with_no_rows_is_empty():
    page = board_html.parse_board_page(_board(""), "005930")
    assert (page.posts, page.last_page, page.current_page) == ([], None, None)


def test_board_last_page_without_pgrr_is_the_highest_navi_page():
    navi = ('<table class="Nnavi"><tr><td><a href="/item/board.naver?code=005930&amp;page=1">1</a></td>'
            '<td><a href="/item/board.naver?code=005930&amp;page=2">2</a></td>'
            '<td class="on"><a href="/item/board.naver?code=005930&amp;page=3">3</a></td></tr></table>')
    page = board_html.parse_board_page(_board(_board_row(), navi), "005930")
    assert (page.last_page, page.current_page, len(page.posts)) == (3, 3, 1)


def test_board_empty_title_attribute_falls_back_to_link_text():
    row = _board_row(title_attr="", text=' 링크 텍스트 <img src="new.gif" alt="new"> [7]')
    (post,) = board_html.parse_board_page(_board(row), "005930").posts
    assert (post.title, post.comments) == ("링크 텍스트", 7)


@pytest.mark.parametrize("name", ["block_page_not_found.html"])
def test_board_block_page_is_not_an_empty_page(name):
    with pytest.raises(ParseError, match=r"no table\.type2.*페이지를 찾을 수 없습니다"):
        board_html.parse_board_page(board_html.decode_html(fixture_bytes(name), None), "005930")


def test_board_other_table_type2_is_rejected():
    html = '<table class="type2"><tr><th>날짜</th><th>종가</th><th>전일비</th></tr></table>'
    with pytest.raises(ParseError, match="not the board"):
        board_html.parse_board_page(html, "005930")


@pytest.mark.parametrize("row, needle", [
    (_board_row(date_text="2022-12-30 15:42"), r"row nid=11 date '2022-12-30 15:42'"),
    (_board_row(href="/item/board_read.naver?code=000660&amp;nid=11"), r"item '000660', not the requested '005930'"),
    (_board_row(href="/item/board_read.naver?code=005930"), "without nid"),
    (_board_row(views="1.2만"), r"views '1\.2만'"),
])
def test_board_malformed_rows(row, needle):
    with pytest.raises(ParseError, match=needle):
        board_html.parse_board_page(_board(row), "005930")


# =================================================================================================================
# Prices
# =================================================================================================================
def bar(d: str, o, h, lo, c, v, code="005930") -> PriceBar:
    return PriceBar(code, date.fromisoformat(d), float(o), float(h), float(lo), float(c), v)


SISE_EXPECTED = [
    bar("2018-04-24", 50240, 50620, 49520, 49600, 11542050),
    bar("2018-04-25", 49220, 50500, 49220, 50400, 10329450),
    bar("2018-04-26", 50420, 52160, 50400, 52140, 17928450),
    bar("2018-04-27", 53380, 53640, 52440, 53000, 25862150),
    # 04-30, 05-02, 05-03: the 50:1 split halt (volume 0) is dropped
    bar("2018-05-04", 53000, 53900, 51800, 51900, 39565391),
    bar("2018-05-08", 52600, 53200, 51900, 52600, 23104720),
    bar("2018-05-09", 52600, 52800, 50900, 50900, 16128305),
]


def test_parse_sise_json_fixture():
    bars = prices.parse_sise_json(fixture_text("sise_005930.txt"), "005930")
    assert bars == SISE_EXPECTED
    assert all(isinstance(b.volume, int) and isinstance(b.close, float) for b in bars)


SISE_HEADER = "[['날짜', '시가', '고가', '저가', '종가', '거래량', '외국인소진율']"


def test_parse_sise_json_header_only_is_empty():
    assert prices.parse_sise_json(f"\n{SISE_HEADER}\n\t\t\n]\n", "005930") == []
    assert prices.parse_sise_json(f"{SISE_HEADER},\n]", "005930") == []


@pytest.mark.parametrize("body, needle", [
    ("", "empty body"), ("  \n\t", "empty body"), ("[]", "without the header"), ("[\n]\n", "without the header"),
    ('[["20180424", 1, 2, 3, 4, 5, 6.0]]', "is not the header"),
    ("[['날짜', '시가', '고가', '저가', '거래량']]", r"lacks \['종가'\]"),
    ('{"error": 1}', "expected an array"),
    (f'{SISE_HEADER},\n["20180424", 50240, 50620', "not a JS array"),
])
def test_parse_sise_json_without_header_or_broken(body, needle):
    with pytest.raises(ParseError, match=needle):
        prices.parse_sise_json(body, "005930")


def test_parse_sise_json_finds_columns_by_name_sorts_and_dedupes():
    body = ("[['거래량', '날짜', '종가', '저가', '고가', '시가'],\n"
            '["200", "20180425", 12, 10, 13, 11],\n["100", "20180424", 2, 1, 3, 1.5],\n'
            '["200", "20180425", 12, 10, 13, 11],\n[null, "20180426", null, null, null, null],\n]')
    assert prices.parse_sise_json(body, "000660") == [bar("2018-04-24", 1.5, 3, 1, 2, 100, "000660"),
                                                       bar("2018-04-25", 11, 13, 10, 12, 200, "000660")]


@pytest.mark.parametrize("row, needle", [
    ('["2018-04-24", 1, 2, 1, 2, 10, 1.0]', r"row 1 .*date '2018-04-24' is not YYYYMMDD"),
    ('["20180431", 1, 2, 1, 2, 10, 1.0]', r"date '20180431'"),
    ('["20180424", "x", 2, 1, 2, 10, 1.0]', r"row 1 .*open 'x' is not a price"),
    ('["20180424", 1, 2, null, 2, 10, 1.0]', "low None is not a price"),
    ('["20180424", 1, 2, 1, 2, 10.5, 1.0]', "volume 10.5"),
    ('["20180424", 1, 2]', r"row 1 .* is not a 7-column row"),
])
def test_parse_sise_json_malformed_row_is_named(row, needle):
    with pytest.raises(ParseError, match=needle):
        prices.parse_sise_json(f"{SISE_HEADER},\n{row}]", "005930")


def test_parse_sise_json_conflicting_duplicate_date():
    body = f'{SISE_HEADER},\n["20180424", 1, 2, 1, 2, 10, 1.0],\n["20180424", 1, 2, 1, 3, 10, 1.0]]'
    with pytest.raises(ParseError, match="two different bars for 2018-04-24"):
        prices.parse_sise_json(body, "005930")


FCHART_EXPECTED = [
    bar("2026-08-27", 268000, 271500, 266500, 270000, 14231567),
    bar("2026-08-28", 270500, 273000, 268500, 272500, 12874401),
    bar("2026-08-31", 271000, 271000, 265000, 266000, 18002331),
    bar("2026-09-01", 266500, 269000, 264000, 268500, 13560087),
    # 2026-09-02: halt bar (volume 0) dropped
    bar("2026-09-03", 269000, 275000, 268000, 274500, 21904112),
    bar("2026-09-04", 274000, 276500, 271500, 272000, 15336742),
    # 2026-09-07: empty pre-open bar dropped
]


def test_decode_xml_honours_the_euckr_declaration():
    text = prices.decode_xml(fixture_bytes("fchart_005930.xml"))
    assert 'name="삼성전자"' in text


def test_parse_fchart_xml_fixture():
    text = prices.decode_xml(fixture_bytes("fchart_005930.xml"))
    assert prices.parse_fchart_xml(text, "005930") == FCHART_EXPECTED


def test_decode_xml_utf8_declaration_and_cp949_fallback():
    utf8 = '<?xml version="1.0" encoding="UTF-8"?><protocol><chartdata symbol="005930" name="삼성전자"/></protocol>'
    assert prices.decode_xml(utf8.encode("utf-8")) == utf8
    undeclared = '<protocol><chartdata symbol="005930" name="삼성전자"/></protocol>'
    assert prices.decode_xml(undeclared.encode("cp949")) == undeclared


def _fchart(*items: str, symbol: str = "005930") -> str:
    body = "".join(f'<item data="{d}" />' for d in items)
    return (f'<?xml version="1.0" encoding="EUC-KR" ?><protocol><chartdata symbol="{symbol}" name="x" '
            f'count="{len(items)}" timeframe="day">{body}</chartdata></protocol>')


def test_parse_fchart_xml_sorts_and_accepts_no_items():
    assert prices.parse_fchart_xml(_fchart(), "005930") == []
    text = _fchart("20260903|2|3|1|2|10", "20260902|1|2|1|1|5")
    assert [b.date for b in prices.parse_fchart_xml(text, "005930")] == [date(2026, 9, 2), date(2026, 9, 3)]


@pytest.mark.parametrize("text, needle", [
    (_fchart("20260903|2|3|1|2|10")[:-40], "invalid XML"),
    ("", "invalid XML"),
    (_fchart("20260903|2|3|1|2|10", symbol="000660"), "symbol '000660', not the requested '005930'"),
    ("<protocol><other/></protocol>", "no <chartdata>"),
    (_fchart("20260903|2|3|1|2"), r"item 0 data='20260903\|2\|3\|1\|2' is not"),
    (_fchart("20260902|1|2|1|1|5", "20260903|2|x|1|2|10"), r"item 1 .*high 'x' is not a price"),
    (_fchart("2026093|2|3|1|2|10"), "is not YYYYMMDD"),
    ('<!DOCTYPE p [<!ENTITY a "b">]><protocol/>', "DTD"),
])
def test_parse_fchart_xml_errors(text, needle):
    with pytest.raises(ParseError, match=needle):
        prices.parse_fchart_xml(text, "005930")


def test_drop_non_trading():
    bars = [bar("2018-04-27", 1, 1, 1, 1, 10), bar("2018-04-30", 1, 1, 1, 1, 0)]
    assert prices.drop_non_trading(bars) == bars[:1]


# =================================================================================================================
# Universe
# =================================================================================================================
def market_page() -> universe.MarketSumPage:
    return universe.parse_market_sum(board_html.decode_html(fixture_bytes("market_sum_kospi_p1.html"), None))


def test_parse_market_sum_fixture():
    page = market_page()
    assert page.last_page == 48
    assert [r.rank for r in page.rows] == list(range(1, 51))
    assert page.rows[0] == RankedStock(1, "005930", "삼성전자", 4238502)
    assert page.rows[4] == RankedStock(5, "005935", "삼성전자우", 432118)
    assert page.rows[33] == RankedStock(34, "033780", "KT&G", 101212)
    assert page.rows[39] == RankedStock(40, "360750", "TIGER 미국S&P500", 86120)
    assert page.rows[49] == RankedStock(50, "442310", "미래에셋비전스팩3호", 1018)


def test_market_sum_filters_and_top_common():
    rows = market_page().rows
    excluded = [r.name for r in rows if not universe.is_common_stock(r.code, r.name)]
    assert excluded == ["삼성전자우", "KODEX 200", "현대차2우B", "TIGER 미국S&P500", "SK리츠", "미래에셋비전스팩3호"]
    top = universe.top_common(list(reversed(rows)), 5)
    assert [r.code for r in top] == ["005930", "000660", "373220", "207940", "005380"]
    assert len(universe.top_common(rows, 100)) == 44
    assert universe.top_common(rows, 0) == []
    with pytest.raises(ValueError, match="-1"):
        universe.top_common(rows, -1)


@pytest.mark.parametrize("code, name, common", [
    ("005930", "삼성전자", True), ("005935", "삼성전자우", False), ("005387", "현대차2우B", False),
    ("00088K", "한화3우B", False), ("000000", "가나우C", False), ("123450", "어떤회사우(전환)", False),
    ("006800", "미래에셋대우", True), ("006805", "미래에셋대우우", False), ("069500", "KODEX 200", False),
    ("102110", "TIGER 200", False), ("114800", "KODEX 인버스", False), ("000000", "SOL 미국배당다우존스", False),
    ("000000", "1Q 미국나스닥100", False), ("000000", "PLUS 고배당주", False), ("000000", "RISE 200", False),
    ("000000", "ACE 미국S&P500", False), ("000000", "SOLUM", True), ("000000", "ACEBED", True),
    ("500010", "신한 인버스 WTI원유 선물 ETN", False), ("000000", "어떤 ETF", False),
    ("442310", "미래에셋비전스팩3호", False), ("395400", "SK리츠", False), ("000000", "이리츠코크렙", False),
    ("000000", "Global REIT", False), ("138040", "메리츠금융지주", True), ("000060", "메리츠화재", True),
])
def test_is_common_stock(code, name, common):
    assert universe.is_common_stock(code, name) is common


def _msum(header: str, cells: str) -> str:
    return (f'<table class="type_2">{header}<tr><td class="no">7</td>'
            f'<td><a href="/item/main.naver?code=000270" class="tltle">기아</a></td>{cells}</tr></table>')


def test_market_sum_without_header_uses_the_default_position():
    cells = "".join(f'<td class="number">{v}</td>' for v in ["90,000", "1,000", "+1.1%", "5,000", "364,812", "1"])
    assert universe.parse_market_sum(_msum("", cells)).rows == [RankedStock(7, "000270", "기아", 364812)]


def test_market_sum_header_decides_the_column():
    header = "<tr><th>N</th><th>종목명</th><th>현재가</th><th>시가총액</th><th>PER</th></tr>"
    cells = '<td class="number">90,000</td><td class="number">364,812</td><td class="number">5.1</td>'
    assert universe.parse_market_sum(_msum(header, cells)).rows[0].market_cap == 364812
    header = "<tr><th>N</th><th>종목명</th><th>현재가</th><th>거래량</th></tr>"
    assert universe.parse_market_sum(_msum(header, cells)).rows[0].market_cap is None


def test_market_sum_errors():
    with pytest.raises(ParseError, match=r"no table\.type_2"):
        universe.parse_market_sum(board_html.decode_html(fixture_bytes("block_page_not_found.html"), None))
    with pytest.raises(ParseError, match="시가총액 'abc'"):
        universe.parse_market_sum(_msum("", '<td>1</td><td>1</td><td>1</td><td>1</td><td>abc</td>'))
    assert universe.parse_market_sum('<table class="type_2"><tr><th>N</th></tr></table>') == \
        universe.MarketSumPage([], None)


# =================================================================================================================
# Blocks
# =================================================================================================================
BOARD_URL = "https://finance.naver.com/item/board.naver?code=005930&page=1"
API_URL = "https://stock.naver.com/api/community/discussion/posts/by-item?itemCode=005930"


def test_403_is_a_persistent_block():
    with pytest.raises(BlockedError) as e:
        blocks.check_response(BOARD_URL, 403, "", None)
    assert e.value.seen.startswith("HTTP 403")
    assert "User-Agent" in e.value.hint and "--delay" in e.value.hint and "--base-url" in e.value.hint
    assert str(e.value).startswith(BOARD_URL + ": HTTP 403")


@pytest.mark.parametrize("url, location", [
    (BOARD_URL, "https://stock.naver.com/domestic/stock/005930/discussion"),
    ("https://finance.naver.com/item/board.nhn?code=005930", "/domestic/stock/005930/discussion"),
    (BOARD_URL, "https://stock.naver.com/"),
    (BOARD_URL, "https://m.stock.naver.com/domestic/stock/005930/total"),
    ("http://127.0.0.1:8080/item/board.naver?code=005930", "http://127.0.0.1:8080/domestic/stock/005930/discussion"),
])
def test_redirect_to_the_new_spa_means_the_board_is_gone(url, location):
    with pytest.raises(BlockedError, match="redirect to the new SPA") as e:
        blocks.check_response(url, 302, "", location)
    assert e.value.hint == "the legacy board is gone; use --source api"


@pytest.mark.parametrize("url, status, location", [
    (BOARD_URL, 301, "https://finance.naver.com/item/board.naver?code=005930&page=1"),
    (API_URL, 302, "https://stock.naver.com/api/community/discussion/posts/by-item?itemCode=005930&x=1"),
    (BOARD_URL, 302, None),
])
def test_other_redirects_are_not_blocks(url, status, location):
    assert blocks.check_response(url, status, "", location) is None


@pytest.mark.parametrize("content_type", [None, "text/html; charset=utf-8"])
def test_200_block_page_is_a_block(content_type):
    body = board_html.decode_html(fixture_bytes("block_page_not_found.html"), content_type)
    with pytest.raises(BlockedError, match="HTTP 200 block page saying '페이지를 찾을 수 없습니다'") as e:
        blocks.check_response(BOARD_URL, 200, body, None)
    assert "Korean IP" in e.value.hint


def test_200_access_denied_page_is_a_block():
    with pytest.raises(BlockedError, match="접근이 차단되었습니다"):
        blocks.check_response(BOARD_URL, 200, "<html><body>접근이 차단되었습니다.</body></html>", None)


@pytest.mark.parametrize("status, body", [
    (200, "<html>페이지를 찾을 수 없습니다 <a href='/item/board_read.naver?code=005930&nid=1'>x</a></html>"),
    (200, '{"posts": [{"title": "페이지를 찾을 수 없습니다"}]}'),
    (200, "<html>" + "가" * 20_000 + "페이지를 찾을 수 없습니다</html>"),
    (200, ""),
    (429, "페이지를 찾을 수 없습니다"),
    (500, ""),
    (503, "<html>접근이 차단되었습니다</html>"),
])
def test_not_blocks(status, body):
    assert blocks.check_response(BOARD_URL, status, body, None) is None


def test_real_pages_are_not_blocks():
    for name in (EUCKR_PAGE, UTF8_PAGE):
        assert blocks.check_response(BOARD_URL, 200, board_html.decode_html(fixture_bytes(name), None), None) is None
    assert blocks.check_response(API_URL, 200, fixture_text("api_posts_005930.json"), None) is None

"""What goes on the wire: the site's paths and page sizes, and the page / JSON bodies in the shapes recorded in
``shared/reference/naver-sources.md`` (section numbers below refer to it).

The renderers are pure functions of their arguments, so a test can compare one page with the recorded shape without a
server; :class:`Response` pairs a rendered body with its status and headers.
"""
from __future__ import annotations

import hashlib
import html
import json
import math
import random
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import NamedTuple

from crawler.records import Post, PriceBar, RankedStock
from crawler.replay.krx import on_tick

# The offset the site itself sends for the first page (-Long.MAX_VALUE): "start at the newest post".
NEWEST_OFFSET = "-9223372036854775807"
API_PATH = "/api/community/discussion/posts/by-item"
BOARD_PATHS = ("/item/board.naver", "/item/board.nhn")
SISE_JSON_PATH = "/siseJson.naver"
FCHART_PATH = "/sise.nhn"
MARKET_SUM_PATHS = ("/sise/sise_market_sum.naver", "/sise/sise_market_sum.nhn")
SPA_URL = "https://stock.naver.com/domestic/stock/{code}/discussion"

API_REQUIRED = ("discussionType", "itemCode", "isHolderOnly", "excludesItemNews", "isItemNewsOnly")
API_BOOLEANS = ("isHolderOnly", "excludesItemNews", "isItemNewsOnly", "isCleanbotPassedOnly")
API_MAX_PAGE_SIZE = 100
API_DEFAULT_PAGE_SIZE = 20
BOARD_PAGE_SIZE = 20
MARKET_SUM_PAGE_SIZE = 50
NAVI_BLOCK = 10

CLEANBOT_TEXT = "클린봇이 이용자 보호를 위해 숨긴 게시글입니다."
BLOCK_PHRASE = "페이지를 찾을 수 없습니다"
NEW_GIF = "https://ssl.pstatic.net/imgstock/images5/new.gif"

# The second line of a post body, picked by nid (not drawn) so a body never depends on generation order.
_FILLERS = (
    "다들 성투하세요", "개인적인 의견입니다", "투자는 본인 책임", "차트 첨부합니다", "참고만 하세요",
    "좋은 하루 되세요", "의견 부탁드립니다",
)


class Response(NamedTuple):
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def html_response(status: int, text: str) -> Response:
    return Response(status, [("Content-Type", "text/html; charset=UTF-8")], text.encode("utf-8"))


def _profile_id(author: str) -> str:
    return hashlib.md5(author.encode("utf-8")).hexdigest()[:24]


def _jstr(s: str, raw: bool) -> str:
    """A JSON string literal. ``raw``: leave backslashes and tabs/\\x01 unescaped (the real API's invalid JSON)."""
    if not raw:
        return json.dumps(s, ensure_ascii=False)
    out = s.replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{out}"'


def post_content(post: Post, quirks: bool) -> tuple[str, str, int]:
    """(contentSwReplaced, contentSwReplacedButImg, imageCount) for a post: HTML with ``<br>``. With ``quirks``
    every fourth post (by nid) carries a raw tab inside ``contentSwReplaced``."""
    filler = _FILLERS[post.nid % len(_FILLERS)]
    text = html.escape(post.title, quote=False)
    sep = "\t" if quirks and post.nid % 4 == 0 else " "
    images = 1 if post.nid % 11 == 0 else 0
    img = '<img src="https://stock.pstatic.net/synthetic/chart.png">' if images else ""
    body = f"<p>{text}<br>{filler}{sep}감사합니다</p>"
    return body + img, body, images


def render_api_post(post: Post, name: str, post_type: str, quirks: bool) -> str:
    """One post object of the community API, in the documented field order."""
    blind = post.is_blind
    title = "" if blind else post.title
    content, content_no_img, images = ("", "", 0) if blind else post_content(post, quirks)
    author = post.author or ""
    holder = post.nid % 7 == 0
    return (
        "{"
        f'"id":"{post.nid}","itemCode":{_jstr(post.code, False)},"itemName":{_jstr(name, False)},'
        f'"postType":"{post_type}",'
        f'"writer":{{"profileId":"{_profile_id(author)}","profileType":"normal","nickname":{_jstr(author, False)},'
        f'"isHolderVerified":{"true" if holder else "false"}}},'
        f'"writtenAt":"{post.posted_at:%Y-%m-%dT%H:%M:%S}",'
        f'"title":{_jstr(title, quirks)},'
        f'"contentSwReplacedButImg":{_jstr(content_no_img, quirks)},'
        f'"contentSwReplaced":{_jstr(content, quirks)},'
        f'"commentCount":{post.comments or 0},"recommendCount":{post.likes or 0},'
        f'"notRecommendCount":{post.dislikes or 0},"viewCount":{post.views or 0},'
        f'"isCleanbotPassed":{"false" if blind else "true"},"replyDepth":0,"parentId":null,'
        f'"imageCount":{images}'
        "}"
    )


def render_api_page(posts: Sequence[Post], names: dict[str, str], types: Sequence[str], offset: str,
                    page_size: int, quirks: bool, last_nid: int | None = None) -> str:
    """The by-item body: ``{"offset", "pageSize", "posts", "lastOffset"}``; ``posts`` newest first as given.
    ``lastOffset`` is ``"-<last_nid>"``, by default the id of the last post (null on an empty page): a server that
    hid posts after indexing points it past them."""
    items = ",".join(render_api_post(p, names.get(p.code, ""), t, quirks) for p, t in zip(posts, types))
    if last_nid is None and posts:
        last_nid = posts[-1].nid
    last = f'"-{last_nid}"' if last_nid is not None else "null"
    return f'{{"offset":{_jstr(offset, False)},"pageSize":{page_size},"posts":[{items}],"lastOffset":{last}}}'


def render_api_error(fields: dict[str, str]) -> str:
    """The error body of the community API for bad or missing parameters (about 207 bytes for one missing
    parameter): ``{"detailCode":"invalid_type,<fields>","message":...,"fieldErrors":{field: reason}}``."""
    return json.dumps({
        "detailCode": "invalid_type," + ",".join(fields),
        "message": "잘못된 요청입니다.",
        "fieldErrors": fields,
    }, ensure_ascii=False, separators=(",", ":"))


def missing_parameter(name: str, kind: str) -> str:
    """The API's reason for a required parameter that is absent (``kind``: its Java type, String or Boolean)."""
    return f"Required request parameter '{name}' for method parameter type {kind} is not present"


def _html_head(title: str, charset: str) -> str:
    meta_charset = "euc-kr" if charset != "utf-8" else "utf-8"
    return (
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" '
        '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
        '<html lang="ko">\n<head>\n'
        f'<meta http-equiv="Content-Type" content="text/html; charset={meta_charset}">\n'
        f"<title>{html.escape(title)}</title>\n"
        '<link rel="stylesheet" type="text/css" href="https://ssl.pstatic.net/imgstock/static.pc/css/finance.css">\n'
        '<script type="text/javascript">function mouseOver(o){o.className="hover";}'
        'function mouseOut(o){o.className="";}</script>\n'
        "</head>\n"
    )


def render_navi(base: str, page: int, last_page: int) -> str:
    """``table.Nnavi``: pgLL/pgL for earlier blocks, ``td.on`` for ``page``, numbered links for the block,
    ``td.pgR`` when a later block exists and ``td.pgRR`` (맨뒤, the last page) whenever ``page < last_page``.
    Past the last page: the last block's links with no ``td.on`` (the highest link is the last page)."""
    last_page = max(last_page, 1)
    past_end = page > last_page
    anchor = last_page if past_end else max(page, 1)
    block_start = (anchor - 1) // NAVI_BLOCK * NAVI_BLOCK + 1
    cells = []
    if block_start > 1:
        cells.append(f'<td class="pgLL"><a href="{base}&amp;page=1">맨앞</a></td>')
        cells.append(f'<td class="pgL"><a href="{base}&amp;page={block_start - 1}">이전</a></td>')
    for p in range(block_start, min(block_start + NAVI_BLOCK - 1, last_page) + 1):
        cls = ' class="on"' if p == page else ""
        cells.append(f'<td{cls}><a href="{base}&amp;page={p}">{p}</a></td>')
    if not past_end and block_start + NAVI_BLOCK <= last_page:
        cells.append(f'<td class="pgR"><a href="{base}&amp;page={block_start + NAVI_BLOCK}">다음'
                     '<img src="https://ssl.pstatic.net/static/n/cmn/bu_pgarR.gif" width="3" height="5" alt="" '
                     'border="0"></a></td>')
    if page < last_page:
        cells.append(f'<td class="pgRR"><a href="{base}&amp;page={last_page}">맨뒤'
                     '<img src="https://ssl.pstatic.net/static/n/cmn/bu_pgarRR.gif" width="8" height="5" alt="" '
                     'border="0"></a></td>')
    return ('<table summary="페이지 네비게이션 리스트" class="Nnavi" align="center">\n<tr>\n'
            + "\n".join(cells) + "\n</tr>\n</table>\n")


def _board_row(post: Post, page: int, now: datetime) -> str:
    href = f"/item/board_read.naver?code={post.code}&amp;nid={post.nid}&amp;st=&amp;sw=&amp;page={page}"
    if post.is_blind:
        title_cell = (f'<td class="title">\n<a href="{href}"><span class="cleanbot_list_blind">{CLEANBOT_TEXT}'
                      "</span></a>\n</td>")
    else:
        text = post.title if len(post.title) <= 30 else post.title[:28] + ".."
        extra = ""
        if post.posted_at > now - timedelta(days=1):
            extra += f' <img src="{NEW_GIF}" width="10" height="9" alt="new">'
        if post.comments:
            extra += f" [{post.comments}]" if post.nid % 2 else f" [ {post.comments} ]"
        title_cell = (f'<td class="title">\n<a href="{href}" title="{html.escape(post.title, quote=True)}">'
                      f"{html.escape(text, quote=False)}{extra}</a>\n</td>")
    likes = post.likes or 0
    dislikes = post.dislikes or 0
    like_cls = "red01" if likes else "gray03"
    dislike_cls = "blue01" if dislikes else "gray03 "
    return (
        '<tr onmouseover="mouseOver(this)" onmouseout="mouseOut(this)">\n'
        f'<td><span class="tah p10 gray03">{post.posted_at:%Y.%m.%d %H:%M}</span></td>\n'
        f"{title_cell}\n"
        f'<td class="p11">{html.escape(post.author or "")}</td>\n'
        f'<td><span class="tah p10 gray03">{post.views or 0:,}</span></td>\n'
        f'<td><strong class="tah p10 {like_cls}">{likes}</strong></td>\n'
        f'<td><strong class="tah p10 {dislike_cls}">{dislikes}</strong></td>\n'
        "</tr>\n"
    )


def render_board_page(code: str, name: str, posts: Sequence[Post], page: int, last_page: int, now: datetime,
                      charset: str = "euc-kr") -> str:
    """The legacy list page: header row, then up to 20 rows in blocks of 5 with spacer rows (rows 1, 2, 8, 14 and
    20 of the tbody are header or blank), then ``table.Nnavi``. ``posts`` newest first. An empty ``posts`` gives
    the table with no post rows (past the board's end)."""
    spacer = '<tr><td colspan="6" class="blank_07"></td></tr>\n'
    divider = '<tr><td colspan="6" class="division_line"></td></tr>\n'
    rows = [
        ('<tr>\n<th scope="col">날짜</th>\n<th scope="col">제목</th>\n<th scope="col">글쓴이</th>\n'
         '<th scope="col">조회</th>\n<th scope="col">공감</th>\n<th scope="col">비공감</th>\n</tr>\n'),
        spacer,
    ]
    for i, p in enumerate(posts):
        if i and i % 5 == 0:
            rows.append(divider)
        rows.append(_board_row(p, page, now))
    if posts:
        rows.append(spacer)
    navi = render_navi(f"/item/board.naver?code={code}", page, last_page) if last_page >= 1 else ""
    return (
        _html_head(f"{name} : 네이버페이 증권 종목토론실", charset)
        + '<body>\n<div id="wrap">\n<div id="header"><h1><a href="https://finance.naver.com/">네이버페이 증권</a>'
        "</h1></div>\n"
        f'<div id="middle" class="new_totalinfo"><div class="h_company"><h2>{html.escape(name)}</h2>'
        f'<span class="code">{code}</span></div></div>\n'
        '<div id="content">\n<div class="section inner_sub">\n<h3 class="h_sub sub_tit7"><span>종목토론실</span></h3>\n'
        '<table class="type2" cellspacing="0" summary="게시판 리스트">\n<caption>게시판 리스트</caption>\n'
        '<colgroup><col width="110"><col><col width="90"><col width="50"><col width="40"><col width="50">'
        "</colgroup>\n<tbody>\n"
        + "".join(rows)
        + "</tbody>\n</table>\n"
        + navi
        + "</div>\n</div>\n"
        '<div id="footer"><p>이 페이지는 합성 데이터로 만든 재현용 사이트입니다.</p></div>\n</div>\n</body>\n</html>\n'
    )


def render_sise_json(bars: Sequence[PriceBar], foreign: Sequence[float]) -> str:
    """siseJson's JS-style array: a single-quoted header row, then one ``["YYYYMMDD", o, h, l, c, v, f]`` row per
    bar, separated by ``,`` and blank-ish lines as on the real site."""
    header = "['날짜', '시가', '고가', '저가', '종가', '거래량', '외국인소진율']"
    rows = [header] + [
        f'["{b.date:%Y%m%d}", {int(b.open)}, {int(b.high)}, {int(b.low)}, {int(b.close)}, {b.volume}, {f!r}]'
        for b, f in zip(bars, foreign)
    ]
    return "\n [" + ",\n\t\t\n".join(rows) + "\n\t\t\n]\n"


def render_fchart(code: str, name: str, bars: Sequence[PriceBar], count: int, timeframe: str = "day",
                  empty_day: date | None = None, origin: date | None = None) -> str:
    """fchart XML (text; encode it as EUC-KR): ``<item data="YYYYMMDD|o|h|l|c|v" />`` oldest first, then an empty
    bar ``YYYYMMDD|||||`` for ``empty_day`` (pre-open today) when given."""
    items = [f'\t\t<item data="{b.date:%Y%m%d}|{int(b.open)}|{int(b.high)}|{int(b.low)}|{int(b.close)}|{b.volume}" />'
             for b in bars]
    if empty_day is not None:
        items.append(f'\t\t<item data="{empty_day:%Y%m%d}|||||" />')
    origin_s = f"{origin:%Y%m%d}" if origin else ""
    return (
        '<?xml version="1.0" encoding="EUC-KR" ?>\n<protocol>\n'
        f'\t<chartdata symbol="{html.escape(code)}" name="{html.escape(name)}" count="{count}" '
        f'timeframe="{html.escape(timeframe)}" precision="0" origintime="{origin_s}">\n'
        + "".join(i + "\n" for i in items)
        + "\t</chartdata>\n</protocol>\n"
    )


def _change_cells(price: int, prev: int) -> tuple[str, str]:
    diff = price - prev
    pct = 0.0 if prev == 0 else diff / prev * 100
    if diff > 0:
        change = (f'<em class="bu_p bu_pup"><span class="blind">상승</span></em>'
                  f'<span class="tah p11 red02">{diff:,}</span>')
        rate = f'<span class="tah p11 red01">+{pct:.2f}%</span>'
    elif diff < 0:
        change = (f'<em class="bu_p bu_pdn"><span class="blind">하락</span></em>'
                  f'<span class="tah p11 nv01">{-diff:,}</span>')
        rate = f'<span class="tah p11 nv01">{pct:.2f}%</span>'
    else:
        change = '<span class="tah p11">0</span>'
        rate = '<span class="tah p11">0.00%</span>'
    return change, rate


def render_market_sum(rows: Sequence[RankedStock], page: int, last_page: int, sosok: int, seed: int,
                      closes: dict[str, tuple[int, int, int]] | None = None) -> str:
    """One ranking page: ``table.type_2`` with a th header row, rows ``tr[onmouseover="mouseOver(this)"]`` with
    ``td.no``, ``a.tltle`` and the 10 default ``td.number`` cells (현재가, 전일비, 등락률, 액면가, 시가총액,
    상장주식수, 외국인비율, 거래량, PER, ROE), a spacer row after every 5, and ``table.Nnavi`` with ``td.pgRR``.
    ``closes``: code -> (close, previous close, volume) for rows with real bars; other rows get seeded values."""
    closes = closes or {}
    labels = ("N", "종목명", "현재가", "전일비", "등락률", "액면가", "시가총액", "상장주식수", "외국인비율", "거래량",
              "PER", "ROE", "토론실")
    head = "<tr>" + "".join(f'<th scope="col">{h}</th>' for h in labels) + "</tr>\n"
    spacer = '<tr><td class="division_line" colspan="13"></td></tr>\n'
    body = [spacer]
    for i, row in enumerate(rows):
        if i and i % 5 == 0:
            body.append(spacer)
        r = random.Random(f"{seed}:marketsum:{row.code}")
        if row.code in closes:
            price, prev, volume = closes[row.code]
        else:
            price = on_tick(math.exp(r.uniform(math.log(3_000), math.log(400_000))))
            prev = on_tick(price * (1 + r.gauss(0, 0.02)))
            volume = int(r.lognormvariate(12, 1))
        change, rate = _change_cells(price, prev)
        cap = row.market_cap or 0
        shares = max(1, cap * 100_000 // max(price, 1))  # 천주
        per = f"{r.uniform(3, 60):.2f}" if r.random() < 0.85 else "N/A"
        roe = f"{r.uniform(-10, 30):.2f}" if r.random() < 0.85 else "N/A"
        body.append(
            '<tr onmouseover="mouseOver(this)" onmouseout="mouseOut(this)">\n'
            f'<td class="no">{row.rank}</td>\n'
            f'<td><a href="/item/main.naver?code={row.code}" class="tltle">{html.escape(row.name)}</a></td>\n'
            f'<td class="number">{price:,}</td>\n'
            f'<td class="number">{change}</td>\n'
            f'<td class="number">{rate}</td>\n'
            f'<td class="number">{r.choice((100, 500, 1000, 5000)):,}</td>\n'
            f'<td class="number">{cap:,}</td>\n'
            f'<td class="number">{shares:,}</td>\n'
            f'<td class="number">{r.uniform(0, 60):.2f}</td>\n'
            f'<td class="number">{volume:,}</td>\n'
            f'<td class="number">{per}</td>\n'
            f'<td class="number">{roe}</td>\n'
            f'<td class="center"><a href="/item/board.naver?code={row.code}">'
            '<img src="https://ssl.pstatic.net/imgstock/images/ico_debate.gif" alt="토론실"></a></td>\n'
            "</tr>\n"
        )
    body.append(spacer)
    market = "코스피" if sosok == 0 else "코스닥"
    navi = render_navi(f"/sise/sise_market_sum.naver?sosok={sosok}", page, last_page)
    return (
        _html_head(f"{market} 시가총액 : 네이버페이 증권", "euc-kr")
        + '<body>\n<div id="wrap">\n<div id="contentarea">\n<div class="box_type_l">\n'
        f'<table class="type_2" cellspacing="0" summary="{market} 시가총액 리스트">\n<caption>{market}</caption>\n'
        "<thead>\n" + head + "</thead>\n<tbody>\n" + "".join(body) + "</tbody>\n</table>\n</div>\n"
        + navi + "</div>\n</div>\n</body>\n</html>\n"
    )


def render_block_page() -> str:
    """The ~2.7 KB "페이지를 찾을 수 없습니다" page Naver answers (HTTP 200) to non-browser agents or foreign IPs."""
    page = (
        '<!DOCTYPE html>\n<html lang="ko">\n<head>\n<meta charset="utf-8">\n'
        "<title>네이버페이 증권</title>\n<style>\n"
        "body,p,h1,h2,h3,div{margin:0;padding:0}body{font-family:'Nanum Gothic','나눔고딕',sans-serif;"
        "font-size:12px;color:#333;background:#fff}a{color:#333;text-decoration:none}"
        "#wrap{width:100%;min-width:700px}#header{height:60px;border-bottom:1px solid #e5e5e5}"
        "#header h1{padding:17px 0 0 20px}#header h1 a{display:inline-block;width:120px;height:24px;"
        "background:url(https://ssl.pstatic.net/static/common/error/logo_naver.png) no-repeat}"
        ".error_content{width:500px;margin:0 auto;padding:140px 0 120px;text-align:center}"
        ".error_title{font-size:22px;line-height:30px;color:#111;letter-spacing:-1px}"
        ".error_desc{margin-top:18px;font-size:13px;line-height:21px;color:#666}"
        ".btn_area{margin-top:30px}.btn_area a{display:inline-block;min-width:90px;height:36px;"
        "margin:0 2px;border:1px solid #ccc;line-height:36px;font-size:13px}"
        ".btn_area a.btn_home{border-color:#03c75a;background:#03c75a;color:#fff}"
        "#footer{padding:20px 0;border-top:1px solid #e5e5e5;text-align:center;color:#999;font-size:11px}\n"
        "</style>\n</head>\n<body>\n<div id=\"wrap\">\n<div id=\"header\"><h1><a href=\"https://www.naver.com\">"
        "<span class=\"blind\">NAVER</span></a></h1></div>\n<div class=\"error_content\">\n"
        f'<h2 class="error_title">{BLOCK_PHRASE}.</h2>\n'
        '<p class="error_desc">방문하시려는 페이지의 주소가 잘못 입력되었거나,<br>'
        "페이지의 주소가 변경 혹은 삭제되어 요청하신 페이지를 찾을 수 없습니다.<br>"
        "입력하신 주소가 정확한지 다시 한번 확인해 주시기 바랍니다.</p>\n"
        '<p class="error_desc">관련 문의사항은 고객센터에 알려주시면 친절하게 안내해 드리겠습니다.<br>감사합니다.</p>\n'
        '<div class="btn_area"><a href="javascript:history.back();">이전 페이지</a>'
        '<a href="https://finance.naver.com/" class="btn_home">증권 홈</a></div>\n'
        "</div>\n"
        '<div id="footer"><address>&copy; NAVER Corp.</address></div>\n</div>\n'
    )
    pad = 2700 - len((page + "</body>\n</html>\n").encode("utf-8")) - len("<!--  -->\n")
    if pad > 0:
        page += "<!-- " + "=" * pad + " -->\n"
    return page + "</body>\n</html>\n"


def render_captcha_page() -> str:
    """An HTTP 200 interstitial that is not the known block page: a captcha form (about 30 KB, so it is past the
    size the block check sniffs, as real interstitials with their scripts are)."""
    return ('<!DOCTYPE html>\n<html lang="ko"><head><meta charset="utf-8"><title>네이버 : 보안 확인</title></head>\n'
            '<body><div id="wrap"><h2>자동입력 방지를 위해 아래 이미지의 문자를 입력해 주세요.</h2>\n'
            '<form action="/captcha/verify" method="post"><img src="/captcha/image?key=x" alt="captcha">'
            '<input name="captcha" type="text"><button>확인</button></form></div>\n'
            "<script>" + "var _=0;" * 3600 + "</script></body></html>\n")


LOGIN_REQUIRED_BODY = '{"code":"LOGIN_REQUIRED","message":"로그인이 필요합니다."}'
CHANGED_API_BODY = '{"result":{"items":[],"cursor":null},"status":"OK"}'
CHANGED_BOARD_PAGE = ('<!DOCTYPE html><html lang="ko"><head><meta charset="utf-8"><title>종목토론실</title></head>'
                      '<body><div id="app"><ul class="discussion_list"></ul></div></body></html>')

"""The legacy board list ``finance.naver.com/item/board.naver?code=&page=`` (HTML; gone live since about 2026-09).

Pure functions of the page; the layout is in ``shared/reference/naver-sources.md`` §1.
"""
from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from datetime import datetime

from bs4 import BeautifulSoup, Tag

from crawler.errors import ParseError
from crawler.records import Post

WHAT = "board list page"

# EUC-KR pages carry characters outside KS X 1001 that only its superset cp949 decodes.
_CHARSET_ALIASES = {
    "euc-kr": "cp949", "euckr": "cp949", "euc_kr": "cp949", "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949",
    "ksc5601": "cp949", "ksc_5601": "cp949", "x-windows-949": "cp949", "windows-949": "cp949", "ms949": "cp949",
    "uhc": "cp949",
}
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?\s*([\w.:-]+)", re.I)
_META_CHARSET = re.compile(rb"<meta\b[^>]*?charset\s*=\s*[\"']?\s*([\w.:-]+)", re.I)
_SNIFF_BYTES = 2048

_BOARD_READ = re.compile("board_read")
_COMMENT_COUNT = re.compile(r"\s*\[\s*(\d+)\s*\]\s*$")
_NID = re.compile(r"[?&;]nid=(\d+)")
_HREF_CODE = re.compile(r"[?&;]code=([0-9A-Za-z]+)")
_PAGE = re.compile(r"[?&;]page=(\d+)")
_DATE = re.compile(r"(\d{4})\.(\d{2})\.(\d{2})\s+(\d{2}):(\d{2})")


@dataclass(frozen=True)
class BoardPage:
    """One list page. ``posts`` in page order (newest first); ``last_page``/``current_page`` from the page navigation
    (None when the page has none). ``skipped_blind_without_id``: cleanbot rows with no link, so no nid to key them by.
    """

    posts: list[Post]
    last_page: int | None
    current_page: int | None
    skipped_blind_without_id: int = 0


def normalise_charset(name: str | None) -> str | None:
    """A Python codec name for a declared charset (EUC-KR family -> cp949), or None when unknown."""
    if not name:
        return None
    name = name.strip().strip("\"'").lower()
    name = _CHARSET_ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode_bytes(body: bytes, declared: list[str | None]) -> str:
    """Decode with the first of ``declared`` (then cp949, then utf-8) that decodes strictly; if none does, use the
    candidate that needs the fewest replacement characters, so one bad byte does not turn a cp949 page to mojibake."""
    if body.startswith(codecs.BOM_UTF8):
        return body[len(codecs.BOM_UTF8):].decode("utf-8", errors="replace")
    candidates: list[str] = []
    for name in [*declared, "cp949", "utf-8"]:
        codec = normalise_charset(name)
        if codec and codec not in candidates:
            candidates.append(codec)
    for codec in candidates:
        try:
            return body.decode(codec)
        except UnicodeDecodeError:
            continue
    # Ties keep the earlier (declared) candidate: min() returns the first minimum.
    decoded = [body.decode(c, errors="replace") for c in candidates]
    return min(decoded, key=lambda s: s.count("\ufffd"))


def decode_html(body: bytes, content_type: str | None) -> str:
    """Page bytes -> text: the Content-Type charset, else a ``<meta>`` charset in the first 2 KB, else cp949, then
    utf-8 (each strictly), else the least-damaged replacement decode. EUC-KR names map to cp949."""
    declared: list[str | None] = []
    if content_type:
        m = _HEADER_CHARSET.search(content_type)
        declared.append(m.group(1) if m else None)
    m = _META_CHARSET.search(body[:_SNIFF_BYTES])
    declared.append(m.group(1).decode("ascii", "replace") if m else None)
    return decode_bytes(body, declared)


def parse_board_page(html: str, code: str) -> BoardPage:
    """Posts of one legacy list page for ``code``.

    A page without ``table.type2`` (a block page, the SPA shell, an error page) raises :class:`ParseError`; the
    right layout with no post rows is a valid empty page (past the board's end). Rows are read by cell position.
    """
    soup = BeautifulSoup(html, "lxml")
    table = soup.select_one("table.type2")
    if table is None:
        raise ParseError(WHAT, "no table.type2 (not a board list page)", _page_text(soup))
    headers = [th.get_text(strip=True) for th in table.find_all("th")]
    if headers and "제목" not in headers:
        raise ParseError(WHAT, f"table.type2 has headers {headers}, not the board's 날짜|제목|글쓴이|…", "")

    posts: list[Post] = []
    blind_without_id = 0
    for tr in table.find_all("tr"):
        tds = tr.find_all("td", recursive=False)
        if len(tds) != 6:
            continue
        title_td = tds[1]
        link = title_td.find("a", href=_BOARD_READ) or tr.find("a", href=_BOARD_READ)
        blind = tr.select_one("span.cleanbot_list_blind") is not None
        if link is None:
            if blind:
                blind_without_id += 1
            continue  # separator, spacer or header row
        posts.append(_row(tds, link, blind, code))

    return BoardPage(posts, *navi_pages(soup), skipped_blind_without_id=blind_without_id)


def _row(tds: list[Tag], link: Tag, blind: bool, code: str) -> Post:
    href = str(link.get("href", ""))
    m = _NID.search(href)
    if m is None:
        raise ParseError(WHAT, f"board_read link without nid: {href!r}")
    nid = int(m.group(1))
    where = f"row nid={nid}"
    m = _HREF_CODE.search(href)
    if m and m.group(1) != code:
        raise ParseError(WHAT, f"{where} links to item {m.group(1)!r}, not the requested {code!r}")

    date_text = tds[0].get_text(" ", strip=True)
    m = _DATE.fullmatch(date_text)
    if m is None:
        raise ParseError(WHAT, f"{where} date {date_text!r} is not 'YYYY.MM.DD HH:MM'")
    try:
        posted_at = datetime(*(int(g) for g in m.groups()))  # type: ignore[misc]
    except ValueError as e:
        raise ParseError(WHAT, f"{where} date {date_text!r}: {e}") from None

    title, comments = "", None
    if not blind:
        title, comments = _title(tds[1], link)
    author = tds[2].get_text(strip=True) or None
    return Post(
        code=code, nid=nid, posted_at=posted_at, title=title, author=author,
        views=_int_cell(tds[3], "views", where), likes=_int_cell(tds[4], "likes", where),
        dislikes=_int_cell(tds[5], "dislikes", where), comments=comments, is_blind=blind, source="html",
    )


def _title(cell: Tag, link: Tag) -> tuple[str, int | None]:
    """Title and comment count. The ``title`` attribute holds the full title (the link text can be truncated and
    carry a ``new.gif`` image); the count ``[n]`` may trail either the title or the cell."""
    attr = link.get("title")
    raw = attr if isinstance(attr, str) and attr.strip() else link.get_text()
    raw = raw.strip()
    m = _COMMENT_COUNT.search(raw)
    comments = int(m.group(1)) if m else None
    title = raw[:m.start()] if m else raw
    if comments is None:
        m = _COMMENT_COUNT.search(cell.get_text())
        comments = int(m.group(1)) if m else None
    return title.strip(), comments


def _int_cell(td: Tag, name: str, where: str) -> int | None:
    text = td.get_text(strip=True).replace(",", "")
    if not text:
        return None
    if not text.lstrip("-").isdigit():
        raise ParseError(WHAT, f"{where} {name} {text!r} is not an integer")
    return int(text)


def navi_pages(soup: BeautifulSoup) -> tuple[int | None, int | None]:
    """(last page, current page) of a Naver ``table.Nnavi`` (board and market-sum pages): ``td.pgRR`` (맨뒤) when
    present, else the highest page the navigation shows (without 맨뒤 there is one block, so that is the last)."""
    navi = soup.select_one("table.Nnavi")
    if navi is None:
        return None, None
    current = None
    on = navi.select_one("td.on")
    if on is not None:
        text = on.get_text(strip=True)
        a = on.find("a", href=True)
        m = _PAGE.search(str(a["href"])) if a is not None else None
        current = int(text) if text.isdigit() else (int(m.group(1)) if m else None)
    rr = navi.select_one("td.pgRR a[href]")
    if rr is not None:
        m = _PAGE.search(str(rr["href"]))
        if m:
            return int(m.group(1)), current
    pages = [int(m.group(1)) for a in navi.find_all("a", href=True) if (m := _PAGE.search(str(a["href"])))]
    if current is not None:
        pages.append(current)
    return (max(pages) if pages else None), current


def _page_text(soup: BeautifulSoup) -> str:
    title = soup.title.get_text(strip=True) if soup.title else ""
    body = soup.get_text(" ", strip=True)
    return f"{title} | {body}" if title else body


__all__ = ["BoardPage", "decode_bytes", "decode_html", "navi_pages", "normalise_charset", "parse_board_page"]

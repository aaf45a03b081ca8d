"""The stock.naver.com community API: ``GET /api/community/discussion/posts/by-item``.

Pure functions of the response text; fetching lives in :mod:`crawler.http`. Shapes are in
``shared/reference/naver-sources.md`` §2.1–2.2.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from crawler.errors import ParseError
from crawler.records import Post

WHAT = "community API response"

# Fixed query values. The first four are required (leaving one out gives a 207-byte ``invalid_type`` error body);
# isCleanbotPassedOnly=false is optional but sent so that blind posts come back and can be counted.
REQUIRED_PARAMS: dict[str, str] = {
    "discussionType": "domesticStock",
    "isHolderOnly": "false",
    "excludesItemNews": "false",
    "isItemNewsOnly": "false",
    "isCleanbotPassedOnly": "false",
}
MAX_PAGE_SIZE = 100

_OFFSET = re.compile(r"-?\d+")
# A valid JSON escape (kept as is) or a lone backslash (group 1 empty: doubled). Scanning left to right with the
# valid forms first keeps ``\\d`` (an escaped backslash, then d) intact.
_ESCAPE = re.compile(r'\\(["\\/bfnrt]|u[0-9a-fA-F]{4})?')
_WRITTEN_AT = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?")


@dataclass(frozen=True)
class ApiPage:
    """One page of the by-item list.

    ``posts``: the ``normal`` posts in the order sent (newest first). ``skipped``: other post types (news, notices).
    ``raw_count``: every post in the body before filtering. A page shorter than the page size is NOT the end of the
    board: the server leaves out posts hidden after indexing without refilling the page.
    ``last_offset``: the cursor for the next (older) page, or None when the body has none.
    ``oldest_id``: the smallest post id in the body, any post type (the fallback cursor is ``-oldest_id``).
    ``names``: itemCode -> itemName as the posts carry them.
    """

    posts: list[Post]
    last_offset: str | None
    page_size: int | None
    raw_count: int
    skipped: int = 0
    names: dict[str, str] = field(default_factory=dict)
    oldest_id: int | None = None


def list_params(code: str, offset: str | None, page_size: int = MAX_PAGE_SIZE) -> dict[str, str]:
    """Query for one by-item page. ``offset=None`` asks for the newest page (no offset parameter is sent).

    Raises ValueError for an empty code, a page size outside 1..100 or an offset that is not an integer string.
    """
    if not code or not code.strip():
        raise ValueError(f"item code must not be empty, got {code!r}")
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise ValueError(f"page_size must be an integer in 1..{MAX_PAGE_SIZE}, got {page_size!r}")
    params = {**REQUIRED_PARAMS, "itemCode": code.strip(), "pageSize": str(page_size)}
    if offset is not None:
        if not _OFFSET.fullmatch(str(offset)):
            raise ValueError(f"offset must be an integer string such as '-429804153', got {offset!r}")
        params["offset"] = str(offset)
    return params


def loads_tolerant(text: str) -> Any:
    """``json.loads(text, strict=False)``; on failure, double every backslash that starts no valid escape and retry.

    The API has been seen sending raw control characters and ``\\d``-style escapes inside strings. Anything still
    invalid after the repair — a body cut short in particular — raises :class:`ParseError`, never partial data.
    """
    text = text.lstrip("\ufeff")
    try:
        return json.loads(text, strict=False)
    except json.JSONDecodeError:
        pass
    repaired = _ESCAPE.sub(lambda m: m.group(0) if m.group(1) else "\\\\", text)
    try:
        return json.loads(repaired, strict=False)
    except json.JSONDecodeError as e:
        ended_early = e.pos >= len(repaired.rstrip()) - 1
        detail = f"invalid JSON ({e.msg} at char {e.pos} of {len(text)})"
        if not text.strip():
            detail = "empty body"
        elif ended_early:
            detail += "; the body ends early (cut short?)"
        raise ParseError(WHAT, detail, text) from None


def parse_posts_page(text: str, code: str) -> ApiPage:
    """Parse one by-item page (top-level ``{offset, pageSize, posts, lastOffset}`` or the older m.stock
    ``{isSuccess, result: {posts, lastOffset}}``) into normalised posts for ``code``.

    Raises :class:`ParseError` for invalid JSON, an error body (the message names its detailCode), a body without a
    ``posts`` list, a malformed post, or a post of another stock (a broken request, not data).
    """
    data = loads_tolerant(text)
    container = _container(data, text)
    raw = container["posts"]

    posts: list[Post] = []
    names: dict[str, str] = {}
    skipped = 0
    ids: list[int] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ParseError(WHAT, f"posts[{i}] is a {type(item).__name__}, not an object", text)
        ids.append(_nid(item.get("id"), f"posts[{i}]", text))
        item_code, item_name = item.get("itemCode"), item.get("itemName")
        if isinstance(item_code, str) and isinstance(item_name, str) and item_name.strip():
            names[item_code] = item_name.strip()
        # A missing postType is read as normal: the field has always been there, and if the API dropped it,
        # skipping everything would look like an empty board instead of data.
        post_type = item.get("postType")
        if post_type is not None and post_type != "normal":
            skipped += 1
            continue
        if item_code is not None and str(item_code).strip() != code:
            raise ParseError(WHAT, f"posts[{i}] (id {item.get('id')!r}) is for item {item_code!r}, "
                                   f"not the requested {code!r}: the request went wrong", text)
        posts.append(_post(item, i, code, text))

    return ApiPage(
        posts=posts,
        last_offset=_last_offset(container.get("lastOffset"), text),
        page_size=_page_size(container.get("pageSize", data.get("pageSize")), text),
        raw_count=len(raw),
        skipped=skipped,
        names=names,
        oldest_id=min(ids, default=None),
    )


def _container(data: Any, text: str) -> dict[str, Any]:
    """The object that holds ``posts``: the body itself, or its ``result`` (m.stock wrapper)."""
    if not isinstance(data, dict):
        raise ParseError(WHAT, f"expected a JSON object, got a {type(data).__name__}", text)
    if isinstance(data.get("posts"), list):
        return data
    result = data.get("result")
    if data.get("isSuccess") is not False and isinstance(result, dict) and isinstance(result.get("posts"), list):
        return result
    if "detailCode" in data or "fieldErrors" in data or data.get("isSuccess") is False:
        parts = [f"detailCode={data.get('detailCode')!r}"]
        if data.get("message"):
            parts.append(f"message={data['message']!r}")
        if data.get("fieldErrors"):
            parts.append(f"fieldErrors={json.dumps(data['fieldErrors'], ensure_ascii=False)}")
        raise ParseError(WHAT, "the API answered with an error: " + ", ".join(parts), text)
    if "posts" in data:
        raise ParseError(WHAT, f"'posts' is a {type(data['posts']).__name__}, not a list", text)
    raise ParseError(WHAT, f"no 'posts' list; top-level keys: {sorted(data)}", text)


def _post(item: dict[str, Any], i: int, code: str, text: str) -> Post:
    where = f"posts[{i}]"
    nid = _nid(item.get("id"), where, text)
    where = f"posts[{i}] (id {nid})"
    is_blind = item.get("isCleanbotPassed") is False
    title = item.get("title")
    if title is not None and not isinstance(title, str):
        raise ParseError(WHAT, f"{where} title is a {type(title).__name__}", text)
    writer = item.get("writer")
    author = writer.get("nickname") if isinstance(writer, dict) else None
    return Post(
        code=code,
        nid=nid,
        posted_at=parse_written_at(item.get("writtenAt"), where),
        title="" if is_blind or title is None else title,
        author=author if isinstance(author, str) else None,
        views=_count(item, "viewCount", where, text),
        likes=_count(item, "recommendCount", where, text),
        dislikes=_count(item, "notRecommendCount", where, text),
        comments=_count(item, "commentCount", where, text),
        is_blind=is_blind,
        source="api",
    )


def parse_written_at(value: Any, where: str = "writtenAt") -> datetime:
    """``YYYY-MM-DDTHH:MM:SS`` (naive KST) -> naive datetime. Fractional seconds are accepted and dropped (the
    store keeps whole seconds); an offset, a ``Z`` or any other form raises :class:`ParseError` — the API has never
    sent one, so one would mean the meaning of the field changed."""
    m = _WRITTEN_AT.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ParseError(WHAT, f"{where} writtenAt {value!r} is not naive 'YYYY-MM-DDTHH:MM:SS' KST")
    try:
        return datetime(*(int(g) for g in m.groups()))  # type: ignore[misc]
    except ValueError as e:
        raise ParseError(WHAT, f"{where} writtenAt {value!r}: {e}") from None


def _nid(value: Any, where: str, text: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        nid = value
    elif isinstance(value, str) and value.strip().isdigit():
        nid = int(value.strip())
    else:
        raise ParseError(WHAT, f"{where} id {value!r} is not an integer", text)
    if nid <= 0:
        raise ParseError(WHAT, f"{where} id {value!r} is not positive", text)
    return nid


def _count(item: dict[str, Any], key: str, where: str, text: str) -> int | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ParseError(WHAT, f"{where} {key} {value!r} is not an integer", text)


def _last_offset(value: Any, text: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not _OFFSET.fullmatch(str(value).strip()):
        raise ParseError(WHAT, f"lastOffset {value!r} is not an integer cursor", text)
    return str(value).strip()


def _page_size(value: Any, text: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise ParseError(WHAT, f"pageSize {value!r} is not an integer", text)


__all__ = ["REQUIRED_PARAMS", "MAX_PAGE_SIZE", "ApiPage", "list_params", "loads_tolerant", "parse_posts_page",
           "parse_written_at"]

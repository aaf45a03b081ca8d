"""Date range -> the pages to fetch, and the walk that stores them.

Community API: post ids come from one site-wide counter that rises with time, and ``offset=-<id>`` lists a stock's
posts older than ``id``. So the crawl *searches* for the end of the range by id (interpolation on the ``writtenAt`` of
probe pages, with a bisection safeguard) and then walks backwards page by page until posts are older than the start.
A 2017–2022 backfill never pages through the years of newer posts: requests ≈ posts in range / page size + O(log).

Legacy HTML board: pages are numbered newest first, so the crawl bisects on page numbers by date, then walks.
Rows shift down while crawling as new posts arrive; overlap is harmless because posts are keyed by (code, nid).

Each page is stored with the cursor in one transaction; a killed crawl resumes from the last committed page.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Protocol

from crawler.errors import FetchError
from crawler.http import Fetcher
from crawler.records import Post
from crawler.sources import api as api_source
from crawler.sources import board_html
from crawler.store import Store

API_URL = "https://stock.naver.com/api/community/discussion/posts/by-item"
BOARD_URL = "https://finance.naver.com/item/board.naver"
PAGE_SIZE = 100  # the largest the API takes
NEWEST = "-9223372036854775807"


def api_referer(code: str) -> str:
    return f"https://stock.naver.com/domestic/stock/{code}/discussion"


def board_referer(code: str) -> str:
    return f"https://finance.naver.com/item/board.naver?code={code}"


@dataclass(frozen=True)
class DateRange:
    """Inclusive KST dates: ``until`` keeps posts up to 23:59:59 of that day."""

    since: date
    until: date

    def __post_init__(self) -> None:
        if self.since > self.until:
            raise ValueError(f"since ({self.since}) is after until ({self.until})")

    @property
    def start(self) -> datetime:
        return datetime.combine(self.since, time.min)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.until, time(23, 59, 59, 999999))

    def __contains__(self, t: datetime) -> bool:
        return self.start <= t <= self.end

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1


@dataclass
class BackfillResult:
    code: str
    source: str
    stored: int = 0        # new rows written
    pages: int = 0         # pages walked (stored)
    probes: int = 0        # requests spent searching for the range (the page found is also walked)
    requests: int = 0      # list requests made (retries not counted)
    resumed: bool = False
    already_done: bool = False


class Progress(Protocol):
    def __call__(self, days_done: int, stored: int) -> None: ...


def _noop(days_done: int, stored: int) -> None:
    return None


def progress_bar(total_days: int, desc: str, enabled: bool = True) -> tuple[Progress, Callable[[], None]]:
    """A tqdm bar on stderr for :func:`backfill`'s ``progress`` (days covered, posts stored) and its ``close``.
    Shown only on a terminal, and never when ``enabled`` is false."""
    import sys

    from tqdm import tqdm

    bar = tqdm(total=total_days, desc=desc, unit="day", dynamic_ncols=True, file=sys.stderr,
               disable=None if enabled else True)

    def update(days_done: int, stored: int) -> None:
        bar.n = days_done
        bar.set_postfix(stored=stored, refresh=False)
        bar.refresh()

    return update, bar.close


def job_key(source: str, code: str, rng: DateRange) -> str:
    return f"posts:{source}:{code}:{rng.since.isoformat()}:{rng.until.isoformat()}"


class _Walker:
    """Shared bookkeeping: store one page's in-range posts with the cursor, report progress in days covered."""

    def __init__(self, store: Store, code: str, source: str, rng: DateRange, progress: Progress) -> None:
        self.store, self.code, self.rng, self.progress = store, code, rng, progress
        self.job = job_key(source, code, rng)
        self.result = BackfillResult(code, source)

    def saved_cursor(self, key: str) -> tuple[bool, object | None]:
        """(already done, the cursor a killed crawl left under ``key``); marks the result accordingly."""
        saved = self.store.progress(self.job)
        if saved is None:
            return False, None
        state, done = saved
        self.result.already_done = done
        self.result.resumed = not done and state.get(key) is not None
        return done, state.get(key) if self.result.resumed else None

    def commit(self, posts: list[Post], state: dict, done: bool, names: dict[str, str] | None = None) -> None:
        keep = [p for p in posts if p.posted_at in self.rng]
        self.result.stored += self.store.write_page(keep, self.job, state, done=done, names=names)
        self.result.pages += 1
        if posts:
            oldest = min(p.posted_at for p in posts)
            covered = (self.rng.end - max(oldest, self.rng.start)).days + 1
            self.progress(min(covered, self.rng.days), self.result.stored)
        if done:
            self.progress(self.rng.days, self.result.stored)


class _Resumable:
    """``run``: nothing for a job already done, the walk from the cursor a killed crawl left, else a fresh start.
    Subclasses name their cursor (``cursor_key``) and say how to start and how to resume."""

    cursor_key: str
    walker: _Walker

    def run(self) -> BackfillResult:
        done, cursor = self.walker.saved_cursor(self.cursor_key)
        if done:
            return self.walker.result
        return self._start() if cursor is None else self._resume(cursor)

    def _start(self) -> BackfillResult:
        raise NotImplementedError

    def _resume(self, cursor: object) -> BackfillResult:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------------------
# Community API
# ---------------------------------------------------------------------------------------------------------------
class ApiBackfill(_Resumable):
    """Backfill one stock's posts in a date range from the community JSON API."""

    cursor_key = "cursor"

    def __init__(self, fetcher: Fetcher, store: Store, code: str, rng: DateRange, *,
                 page_size: int = PAGE_SIZE, progress: Progress = _noop) -> None:
        self.fetcher, self.code, self.rng, self.page_size = fetcher, code, rng, page_size
        self.walker = _Walker(store, code, "api", rng, progress)

    def fetch(self, offset: str | None) -> api_source.ApiPage:
        params = api_source.list_params(self.code, offset, self.page_size)
        self.walker.result.requests += 1
        return self.fetcher.get(API_URL, params, referer=api_referer(self.code), accept="application/json",
                                parse=lambda r: api_source.parse_posts_page(r.text(), self.code))

    def _resume(self, cursor: object) -> BackfillResult:
        return self._walk(self.fetch(str(cursor)), str(cursor))

    def _start(self) -> BackfillResult:
        start = self._search()
        if start is None:
            self.walker.commit([], {"cursor": None}, done=True)
            return self.walker.result
        return self._walk(*start)

    # The walk: store each page with the cursor of the next one. It ends only where it is proven to: a page wholly
    # older than the range, or an empty page whose cursor no longer moves, twice. A short or empty page in between
    # is a page the server left holes in (posts hidden after indexing), not the end of the board.
    def _walk(self, page: api_source.ApiPage, offset: str | None) -> BackfillResult:
        w = self.walker
        while True:
            if page.posts and max(p.posted_at for p in page.posts) < self.rng.start:
                w.commit(page.posts, {"cursor": page.last_offset}, done=True, names=page.names)
                return w.result
            nxt = self._next_cursor(page, offset)
            if nxt is None:
                w.commit(page.posts, {"cursor": offset}, done=False, names=page.names)
                again = self._recheck(offset)
                if again is None:
                    w.commit([], {"cursor": offset}, done=True)  # the board's end, confirmed
                    return w.result
                page = again
                continue
            w.commit(page.posts, {"cursor": nxt}, done=False, names=page.names)
            offset, page = nxt, self.fetch(nxt)

    def _recheck(self, offset: str | None) -> api_source.ApiPage | None:
        """Ask for ``offset`` once more after an empty page whose cursor did not move: None when the answer agrees
        (the board ends there), else the page it gave this time."""
        page = self.fetch(offset)
        return None if self._next_cursor(page, offset) is None else page

    @staticmethod
    def _next_cursor(page: api_source.ApiPage, offset: str | None) -> str | None:
        """The cursor of the next older page, or None when an empty page's cursor stays put (the end, if a second
        request agrees). ``lastOffset`` first, else ``-<oldest id>`` (the API's documented alternative)."""
        here = _cursor_id(offset)
        for cand in (page.last_offset, f"-{page.oldest_id}" if page.oldest_id is not None else None):
            if cand is not None and (here is None or _cursor_id(cand) < here):
                return cand
        if page.raw_count:
            raise FetchError(f"{API_URL} offset={offset}: the page's cursor (lastOffset {page.last_offset}, oldest "
                             f"id {page.oldest_id}) does not move past the one sent; the API changed its paging")
        return None

    def _probe(self, x: int | None) -> tuple[api_source.ApiPage, str | None]:
        self.walker.result.probes += 1
        offset = None if x is None else f"-{x}"
        return self.fetch(offset), offset

    def _search(self) -> tuple[api_source.ApiPage, str | None] | None:
        """Find a page that holds the end of the range (posts on both sides of ``end``, or all of them older), with
        the offset that asked for it.

        ``lo``: an offset id whose page's newest post is at or before ``end`` (or shows no normal post); ``hi``: the
        id of a post after ``end``. The walk starts below ``hi``, so any bracket is safe; probes land where the
        site-wide id↔time line puts ``end``. Returns None when the stock has no normal post at all.
        """
        end = self.rng.end
        page, offset = self._probe(None)
        while not page.posts:  # newest pages without a normal post (news only, or hidden): walk on to one
            nxt = self._next_cursor(page, offset)
            if nxt is None:
                if (again := self._recheck(offset)) is None:
                    return None
                page = again
                continue
            page, offset = self._probe(_cursor_id(nxt))
        if page.posts[-1].posted_at <= end:
            return page, offset  # this page already reaches the range
        hi, t_hi = page.posts[-1].nid, page.posts[-1].posted_at
        rate, span = _id_rate(page.posts), _id_span(page.posts)  # site-wide ids per second; ids one page covers
        lo, t_lo = 0, None
        bisect_next = False
        while hi - lo > 1:
            if bisect_next or (rate is None and t_lo is None):
                x = (lo + hi) // 2
            else:
                if t_lo is None:
                    x = hi - int(rate * (t_hi - end).total_seconds())
                else:
                    frac = (end - t_lo).total_seconds() / max((t_hi - t_lo).total_seconds(), 1.0)
                    x = lo + int((hi - lo) * frac)
                # Aim half a page above the estimated boundary so the probe page straddles it.
                x += span // 2
            x = min(max(x, lo + 1), hi - 1)
            before = hi - lo
            q, q_offset = self._probe(x)
            if not q.posts:
                lo = x  # no normal post below x on this page (the end, holes, or news): bisect on
            elif q.posts[0].posted_at <= end:
                lo, t_lo = x, q.posts[0].posted_at
            elif q.posts[-1].posted_at <= end:
                return q, q_offset  # straddles the end of the range
            else:
                hi, t_hi = q.posts[-1].nid, q.posts[-1].posted_at
                rate, span = _id_rate(q.posts) or rate, _id_span(q.posts) or span
            bisect_next = (hi - lo) > before / 2  # interpolation did not halve the bracket: bisect next
        return self._probe(hi)


def _cursor_id(offset: str | None) -> int | None:
    """``"-429804153"`` -> 429804153 (posts older than this id); None for the newest page."""
    return None if offset is None else abs(int(offset))


def _id_span(posts: list[Post]) -> int:
    return posts[0].nid - posts[-1].nid if posts else 0


def _id_rate(posts: list[Post]) -> float | None:
    if len(posts) < 2:
        return None
    dt = (posts[0].posted_at - posts[-1].posted_at).total_seconds()
    return (posts[0].nid - posts[-1].nid) / dt if dt > 0 else None


# ---------------------------------------------------------------------------------------------------------------
# Legacy HTML board
# ---------------------------------------------------------------------------------------------------------------
class HtmlBackfill(_Resumable):
    """Backfill one stock's posts in a date range from the legacy board list pages (page 1 = newest)."""

    cursor_key = "page"

    def __init__(self, fetcher: Fetcher, store: Store, code: str, rng: DateRange, *,
                 progress: Progress = _noop) -> None:
        self.fetcher, self.code, self.rng = fetcher, code, rng
        self.walker = _Walker(store, code, "html", rng, progress)
        self._pages: dict[int, board_html.BoardPage] = {}

    def fetch(self, page: int) -> board_html.BoardPage:
        if page not in self._pages:
            self.walker.result.requests += 1
            self._pages[page] = self.fetcher.get(
                BOARD_URL, {"code": self.code, "page": page}, referer=board_referer(self.code),
                parse=lambda r: board_html.parse_board_page(board_html.decode_html(r.body, r.content_type),
                                                            self.code),
            )
        return self._pages[page]

    def _resume(self, cursor: object) -> BackfillResult:
        return self._walk(int(cursor))

    def _start(self) -> BackfillResult:
        first = self.fetch(1)
        if not first.posts:
            self.walker.commit([], {"page": None}, done=True)
            return self.walker.result
        p = self._search(first)
        # Rows moved down while we searched: drop stale pages and step back until the page's newest post is after
        # the range, so the range's newest posts are not left on an earlier page. An empty page says nothing (its
        # rows may be hidden): step over it. (Moving down later only repeats rows, which the store ignores.)
        self._pages.clear()
        while p > 1:
            page = self.fetch(p)
            if page.posts and max(x.posted_at for x in page.posts) > self.rng.end:
                break
            p -= 1
        return self._walk(p)

    def _search(self, first: board_html.BoardPage) -> int:
        """Smallest page whose oldest post is at or before ``end`` (pages get older as numbers grow)."""
        end = self.rng.end

        def reaches(p: int) -> bool:
            page = self.fetch(p)
            self.walker.result.probes += p != 1
            return not page.posts or min(x.posted_at for x in page.posts) <= end

        if reaches(1):
            return 1
        lo, hi = 1, max(first.last_page or 1, 1)
        if not reaches(hi):
            return hi + 1  # every listed post is after the range; the walk finds the board's end
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if reaches(mid) else (mid, hi)
        return hi

    # Ends only where proven: a page wholly older than the range, or the last page the navigation names, or (with
    # no navigation at all) an empty page twice. A short or empty page before the last page number has holes.
    def _walk(self, p: int) -> BackfillResult:
        w = self.walker
        while True:
            page = self.fetch(p)
            passed = bool(page.posts) and max(x.posted_at for x in page.posts) < self.rng.start
            at_last = page.last_page is not None and p >= page.last_page
            if not (passed or at_last) and page.last_page is None and not page.posts:
                self._pages.pop(p, None)
                page = self.fetch(p)  # no navigation and no rows: past the end, if a second request agrees
                at_last = page.last_page is None and not page.posts
            finished = passed or at_last
            w.commit(page.posts, {"page": p + 1}, done=finished)
            if finished:
                return w.result
            self._pages.pop(p, None)
            p += 1


BACKFILLS: dict[str, Callable[..., ApiBackfill | HtmlBackfill]] = {"api": ApiBackfill, "html": HtmlBackfill}


def backfill(source: str, fetcher: Fetcher, store: Store, code: str, rng: DateRange,
             progress: Progress = _noop) -> BackfillResult:
    if source not in BACKFILLS:
        raise ValueError(f"unknown source {source!r}; use one of: {', '.join(BACKFILLS)}")
    return BACKFILLS[source](fetcher, store, code, rng, progress=progress).run()


__all__ = ["API_URL", "BOARD_URL", "ApiBackfill", "HtmlBackfill", "DateRange", "BackfillResult", "backfill",
           "progress_bar"]

"""``kofinsent crawl ...``: posts, prices, the universe, export, and the offline replay site to crawl.

Every expected failure prints one line on stderr and no traceback; what was already stored stays stored, and the
same command resumes. Exit 2 with ``error:`` for what the user can fix here (a bad option, a db that is not ours or
is corrupted, a full disk); exit 3 with ``blocked:``, ``rate-limited:`` or ``error:`` when the server stopped the crawl.
"""
from __future__ import annotations

import functools
import inspect
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from crawler.errors import CrawlerError

if TYPE_CHECKING:
    from crawler.crawl import HttpConfig

app = typer.Typer(help="Crawl forum posts, daily prices and the stock universe from Naver.", no_args_is_help=True,
                  pretty_exceptions_enable=False)

DEFAULT_DB = Path("data/kofinsent.sqlite")
KRX_CODE = re.compile(r"^[0-9][0-9A-Z]{4}[0-9]$")

Db = Annotated[Path, typer.Option("--db", help="SQLite file the crawl writes to (created if missing).")]
BaseUrl = Annotated[str | None, typer.Option(
    "--base-url", help="Send every Naver request to this origin, keeping path and query (a mirror, the replay "
                       "site, tests). Also read from $KOFINSENT_NAVER_BASE_URL.")]
Delay = Annotated[float, typer.Option("--delay", help="Minimum seconds between requests (jitter adds up to 5%).")]
Retries = Annotated[int, typer.Option("--retries", help="Retries per URL, for every kind of failure together "
                                                      "(429/5xx, timeouts, resets, unreadable answers).")]
MaxRequests = Annotated[int | None, typer.Option("--max-requests", help="Stop after this many requests, retries "
                                                                           "included (the crawl resumes).")]
MaxWait = Annotated[float, typer.Option("--max-wait", help="Longest Retry-After wait honoured, in seconds; a longer "
                                                           "one stops the crawl (exit 3) so you can resume later.")]
CacheDir = Annotated[Path | None, typer.Option("--cache-dir", help="Cache good responses on disk here.")]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds before a request times out.")]
Codes = Annotated[str, typer.Option("--codes", help="Comma-separated 6-character KRX codes, e.g. 005930,000660.")]
Since = Annotated[str, typer.Option("--since", help="First KST date, inclusive (YYYY-MM-DD).")]
Until = Annotated[str, typer.Option("--until", help="Last KST date, inclusive (YYYY-MM-DD).")]


class UsageError(CrawlerError):
    """Bad command-line input."""


def _fail(prefix: str, message: str, code: int) -> None:
    typer.echo(f"{prefix}: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn expected failures into one stderr line and a non-zero exit; Ctrl-C keeps what was committed."""
    try:
        yield
    except CrawlerError as e:
        _fail(e.prefix, str(e), e.exit_code)
    except ValueError as e:
        _fail("error", str(e), 2)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        _fail("error", f"{where}{e.strerror or e}; check the path, its permissions and the free disk space", 2)
    except KeyboardInterrupt:
        _fail("interrupted", "stopped; committed pages are kept and the same command resumes", 130)


def parse_codes(text: str) -> list[str]:
    codes = [c.strip().upper() for c in text.split(",") if c.strip()]
    if not codes:
        raise UsageError("--codes is empty; give KRX codes such as 005930,000660")
    bad = [c for c in codes if not KRX_CODE.match(c)]
    if bad:
        raise UsageError(f"not a KRX stock code: {', '.join(bad)} (expected 6 characters such as 005930)")
    return list(dict.fromkeys(codes))


def parse_day(text: str, flag: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{flag} must be a date YYYY-MM-DD, got {text!r}") from None


def _fetcher(base_url: str | None, delay: float, retries: int, timeout: float, max_requests: int | None,
             cache_dir: Path | None, max_wait: float):
    """Options are checked (a ValueError naming the option) before anything touches the network or the db."""
    from crawler.http import Fetcher, HttpConfig

    return Fetcher(HttpConfig(delay=delay, retries=retries, timeout=timeout, max_requests=max_requests,
                              cache_dir=cache_dir, base_url=base_url, max_wait=max_wait))


def _store(db: Path, readonly: bool = False):
    from crawler.store import Store

    return Store(db, readonly=readonly)


@dataclass(frozen=True)
class SiteOptions:
    """The options ``posts`` and ``prices`` share: the db they write to, and how they ask the site."""

    db: Path
    base_url: str | None
    delay: float
    retries: int
    timeout: float
    max_requests: int | None
    cache_dir: Path | None
    max_wait: float

    def http(self) -> HttpConfig:
        """Raises ValueError naming the bad option; called after the command's own input is checked."""
        from crawler.crawl import HttpConfig

        return HttpConfig(delay=self.delay, retries=self.retries, timeout=self.timeout,
                          max_requests=self.max_requests, cache_dir=self.cache_dir, base_url=self.base_url,
                          max_wait=self.max_wait)


def site_options(
    db: Db = DEFAULT_DB,
    base_url: BaseUrl = None,
    delay: Delay = 0.7,
    retries: Retries = 5,
    timeout: Timeout = 15.0,
    max_requests: MaxRequests = None,
    cache_dir: CacheDir = None,
    max_wait: MaxWait = 300.0,
) -> SiteOptions:
    return SiteOptions(db, base_url, delay, retries, timeout, max_requests, cache_dir, max_wait)


def with_site_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` the options of :func:`site_options` after its own, passed to it as one ``site``.

    Typer reads a command's options from its signature, so the shared ones are declared once (above) and appended
    to the signature here rather than written out again in each command."""
    own = inspect.signature(command, eval_str=True)
    shared = inspect.signature(site_options, eval_str=True).parameters

    @functools.wraps(command)
    def run(**kwargs: object) -> None:
        command(**{k: v for k, v in kwargs.items() if k not in shared},
                site=site_options(**{k: v for k, v in kwargs.items() if k in shared}))

    params = [p for p in own.parameters.values() if p.name != "site"] + list(shared.values())
    run.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
    return run


@app.command()
@with_site_options
def posts(
    codes: Codes,
    since: Since,
    until: Until,
    source: Annotated[str, typer.Option("--source", help="api (stock.naver.com JSON) or html (legacy board).")] = "api",
    *,
    site: SiteOptions,
) -> None:
    """Backfill forum posts of each stock in [since, until] (KST, inclusive). Resumes an interrupted crawl."""
    with _errors():
        from crawler.crawl import CrawlPlan, StockCrawl, crawl

        plan = CrawlPlan(parse_codes(codes), parse_day(since, "--since"), parse_day(until, "--until"), source=source,
                         prices=False)

        def report(s: StockCrawl) -> None:
            res = s.posts
            state = "already complete" if res.already_done else ("resumed, " if res.resumed else "") + "done"
            typer.echo(f"{s.code}: {res.stored} new posts from {res.pages} pages (+{res.probes} search "
                       f"requests), {s.posts_in_db} stored in all; {state}")

        done = crawl(site.db, plan, site.http(), report=report)
        typer.echo(f"{done.requests} requests ({done.retries} retries) -> {site.db}")


@app.command()
@with_site_options
def prices(codes: Codes, since: Since, until: Until, *, site: SiteOptions) -> None:
    """Store adjusted daily bars (siseJson, fchart as fallback); halt days and empty bars are dropped."""
    with _errors():
        from crawler.crawl import CrawlPlan, StockCrawl, crawl

        code_list = parse_codes(codes)
        d0, d1 = parse_day(since, "--since"), parse_day(until, "--until")
        if d0 > d1:
            raise UsageError(f"--since ({d0}) is after --until ({d1})")
        plan = CrawlPlan(code_list, d0, d1, posts=False)

        def report(s: StockCrawl) -> None:
            typer.echo(f"{s.code}: {len(s.bars)} bars {s.bars[0].date}..{s.bars[-1].date} from {s.price_source}")

        crawl(site.db, plan, site.http(), report=report)


@app.command()
def universe(
    market: Annotated[str, typer.Option("--market", help="KOSPI or KOSDAQ.")] = "KOSPI",
    top: Annotated[int, typer.Option("--top", help="How many common stocks to keep.")] = 20,
    listed_before: Annotated[str | None, typer.Option(
        "--listed-before", help="Keep stocks whose first siseJson date is before this date (YYYY-MM-DD).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the list as JSON here.")] = None,
    db: Annotated[Path | None, typer.Option("--db", help="Also record names and listing dates here.")] = None,
    base_url: BaseUrl = None,
    delay: Delay = 0.7,
    retries: Retries = 5,
    timeout: Timeout = 15.0,
    max_wait: MaxWait = 300.0,
) -> None:
    """Today's top-N common stocks by market cap (no preferred, ETF/ETN, SPAC, REIT). Prints the codes.

    Today's ranking is biased for a past period: pin the printed list in the experiment config.
    """
    with _errors():
        from crawler.universe import top_stocks

        before = parse_day(listed_before, "--listed-before") if listed_before else None
        fetcher = _fetcher(base_url, delay, retries, timeout, None, None, max_wait)
        fetcher.check_reachable()
        store = _store(db) if db else None
        stocks = top_stocks(fetcher, market.upper(), top, before)
        if len(stocks) < top:
            typer.echo(f"warning: only {len(stocks)} stocks qualify (asked for {top})", err=True)
        for s in stocks:
            listed = f"  listed {s.listed_on}" if s.listed_on else ""
            typer.echo(f"{s.rank:>4}  {s.code}  {s.name}{listed}")
            if store:
                store.upsert_stock(s.code, s.name, market.upper(), s.listed_on)
        typer.echo(",".join(s.code for s in stocks))
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps([s.to_json() for s in stocks], ensure_ascii=False, indent=1) + "\n")
        if store:
            store.close()


@app.command()
def export(
    db: Annotated[Path, typer.Option("--db", help="Crawler SQLite file.")],
    out: Annotated[Path, typer.Option("--out", help="JSON Lines file to write.")],
    codes: Annotated[str | None, typer.Option("--codes", help="Only these codes.")] = None,
) -> None:
    """One JSON object per post: code, nid (string), posted_at (ISO 8601, +09:00), title, author, views, ...

    Reads the db read-only (a read-only file or folder is fine) and never writes over it."""
    with _errors():
        from crawler.posts_jsonl import export_posts

        if out.exists() and db.exists() and os.path.samefile(out, db):
            raise UsageError(f"--out {out} is the --db file itself; write the JSON Lines to another path "
                             "(the db was left untouched)")
        store = _store(db, readonly=True)
        try:
            n = export_posts(store, out, parse_codes(codes) if codes else None)
        finally:
            store.close()
        typer.echo(f"{n} posts -> {out}")


class Charset(str, Enum):
    euc_kr = "euc-kr"
    utf_8 = "utf-8"


def parse_replay_codes(text: str) -> dict[str, str]:
    """``code:name`` pairs, comma-separated; a code without a name gets a made-up one."""
    out = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        code, _, name = item.partition(":")
        out[code.strip()] = name.strip() or f"합성종목{code.strip()}"
    return out


@app.command()
def replay(
    port: Annotated[int, typer.Option("--port", help="port to bind (0 = any free port)")] = 8765,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    start: Annotated[str, typer.Option("--start", help="first day (YYYY-MM-DD)")] = "2018-01-01",
    end: Annotated[str, typer.Option("--end", help="last day (YYYY-MM-DD)")] = "2018-03-31",
    codes: Annotated[str | None, typer.Option(
        "--codes", help="code:name pairs, comma-separated (default: 900010:합성전자,900020:가상하이닉스,900030:모의바이오)",
    )] = None,
    posts_per_day: Annotated[float, typer.Option("--posts-per-day", help="mean posts per day per stock")] = 30.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    signal: Annotated[float, typer.Option("--signal", help="probability a title carries its next-session cue")] = 0.0,
    charset: Annotated[Charset, typer.Option("--charset", help="board page encoding")] = Charset.euc_kr,
    no_quirks: Annotated[bool, typer.Option("--no-quirks",
                                            help="valid JSON only (no raw backslashes/control chars)")] = False,
    board_redirects_to_spa: Annotated[bool, typer.Option("--board-redirects-to-spa",
                                                         help="board answers 302 to the new SPA")] = False,
) -> None:
    """Serve a deterministic synthetic Naver forum + price site on 127.0.0.1 until Ctrl-C (also: python -m
    crawler.replay). Point any crawl command at it with --base-url."""
    from crawler.replay.forum import SyntheticForum
    from crawler.replay.server import ReplayServer

    t0 = time.monotonic()
    with _errors():
        first, last = parse_day(start, "--start"), parse_day(end, "--end")
        forum = SyntheticForum.generate(parse_replay_codes(codes) if codes is not None else None, first, last,
                                        posts_per_day, seed=seed, signal=signal, quirks=not no_quirks)
        server = ReplayServer(forum, charset=charset.value, board_redirects_to_spa=board_redirects_to_spa,
                              port=port, host=host)
        server.start()
    n = sum(len(v) for v in forum.posts.values())
    names = ", ".join(f"{c} {nm}" for c, nm in forum.codes.items())
    typer.echo(f"replay site: {server.url}  ({n:,} posts, {names}; {first}..{last}; "
               f"built in {time.monotonic() - t0:.1f}s)")
    typer.echo(f"  e.g. kofinsent crawl posts --codes {next(iter(forum.codes))} --since {first} "
               f"--until {last} --base-url {server.url} --delay 0")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        server.stop()

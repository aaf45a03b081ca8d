"""One SQLite file holds posts, prices, stock names and crawl progress.

Every page of posts is written together with the crawl cursor in one transaction, so a crawl killed at any instant
(SIGKILL included) restarts from the last committed page and ends with every post exactly once.

Readers (``crawl export``, ``dataset build``) open the file read-only (``Store(path, readonly=True)``): they work on a
read-only file or folder and never create, initialise or change a db — a 0-byte or foreign file stays what it was.
Every SQLite or OS failure (a corrupted file, a folder passed as the db, a full disk, no permission) becomes a
:class:`~crawler.errors.StoreError` naming the path and what to do; what was committed before it stays intact.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from crawler.errors import StoreError
from crawler.records import Post, PriceBar

APP_ID = "kofinsent-crawler"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS posts (
    code TEXT NOT NULL,
    nid INTEGER NOT NULL,
    posted_at TEXT NOT NULL,          -- naive KST, 'YYYY-MM-DDTHH:MM:SS'
    title TEXT NOT NULL,
    author TEXT,
    views INTEGER,
    likes INTEGER,
    dislikes INTEGER,
    comments INTEGER,
    is_blind INTEGER NOT NULL,
    source TEXT NOT NULL,             -- 'api' | 'html'
    fetched_at TEXT NOT NULL,         -- UTC, ISO 8601
    PRIMARY KEY (code, nid)
);
CREATE INDEX IF NOT EXISTS posts_code_time ON posts (code, posted_at);
CREATE TABLE IF NOT EXISTS prices (
    code TEXT NOT NULL,
    date TEXT NOT NULL,               -- 'YYYY-MM-DD', KRX trading day
    open REAL NOT NULL,
    high REAL NOT NULL,
    low REAL NOT NULL,
    close REAL NOT NULL,              -- adjusted close
    volume INTEGER NOT NULL,
    source TEXT NOT NULL,             -- 'siseJson' | 'fchart'
    PRIMARY KEY (code, date)
);
CREATE TABLE IF NOT EXISTS stocks (
    code TEXT PRIMARY KEY,
    name TEXT,
    market TEXT,
    listed_on TEXT                    -- first date siseJson returns, when known
);
CREATE TABLE IF NOT EXISTS crawl_progress (
    job TEXT PRIMARY KEY,             -- e.g. 'posts:api:005930:2017-06-01:2022-12-31'
    state TEXT NOT NULL,              -- JSON: cursor and counters
    done INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
);
"""

_POST_COLUMNS = (
    "code, nid, posted_at, title, author, views, likes, dislikes, comments, is_blind, source, fetched_at"
)


def _utcnow() -> str:
    return datetime.utcnow().replace(microsecond=0).isoformat() + "Z"


def _uri(path: Path, **params: str) -> str:
    """A ``file:`` URI for sqlite3 with query ``params``; the path is percent-encoded, so a name with ``?`` or ``#``
    still names the file."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{quote(str(path.resolve()))}" + (f"?{query}" if query else "")


def _explain(path: Path, e: BaseException) -> str:
    """What went wrong with the db at ``path`` and what to do about it, in one line."""
    text = str(e)
    low = text.lower()
    if isinstance(e, sqlite3.DatabaseError) and ("malformed" in low or "not a database" in low):
        return (f"{path} is corrupted (sqlite: {text}); restore it from a backup or crawl into a new --db "
                f"(`sqlite3 {path} .recover` may save its rows)")
    if "full" in low or getattr(e, "errno", None) == 28:
        return (f"the disk holding {path} is full ({text}); free some space and run the same command again "
                "(pages committed so far are kept)")
    if "readonly" in low or "read-only" in low or isinstance(e, PermissionError):
        return (f"{path} cannot be written ({text}); check the permissions of the file and its folder, or pass "
                "another --db")
    if "unable to open" in low:
        return f"cannot open {path} ({text}); check that its folder exists and that you may read and write there"
    if "locked" in low:
        return f"{path} is locked by another process ({text}); wait for it to finish and run the same command again"
    return f"{path}: {type(e).__name__}: {text}"


@contextmanager
def _guard(path: Path) -> Iterator[None]:
    try:
        yield
    except (sqlite3.Error, OSError) as e:
        raise StoreError(_explain(path, e)) from None


class Store:
    """A crawler database. Opening a file that is not one raises :class:`StoreError` and leaves it untouched.

    ``readonly``: open an existing db for reading only (``mode=ro``): no file is created, no schema written, and a
    db in a read-only folder still opens.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        with _guard(self.path):
            self._check_file()
            if readonly:
                self.conn = self._connect_readonly()
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, isolation_level=None)  # explicit BEGIN/COMMIT below
            try:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self._init_schema()
            except BaseException:
                self.conn.close()
                raise

    def _connect_readonly(self) -> sqlite3.Connection:
        conn = sqlite3.connect(_uri(self.path, mode="ro"), uri=True, isolation_level=None)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError:
            conn.close()
            # A WAL db in a folder we cannot write to: SQLite cannot create its -shm file. With no -wal file there is
            # nothing uncommitted to miss, so reading the main file as immutable gives exactly the committed rows.
            if Path(f"{self.path}-wal").exists():
                raise
            conn = sqlite3.connect(_uri(self.path, mode="ro", immutable="1"), uri=True, isolation_level=None)
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn

    def _check_file(self) -> None:
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder, not a db file; pass a file path such as "
                             f"{self.path / 'kofinsent.sqlite'}")
        if self.readonly and not self.path.is_file():
            raise StoreError(f"{self.path}: no such db file; pass the --db a `kofinsent crawl` run wrote")
        if not self.path.exists() or self.path.stat().st_size == 0:
            if self.readonly:
                raise StoreError(f"{self.path} is empty (0 bytes), not a kofinsent crawler db; crawl into it first")
            return
        with open(self.path, "rb") as f:
            magic = f.read(16)
        if magic != b"SQLite format 3\x00":
            raise StoreError(f"{self.path} is not a SQLite file; pass a new path or a kofinsent crawler db")
        conn = self._connect_readonly()
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                if self.readonly:
                    raise StoreError(f"{self.path} is an empty SQLite db, not a kofinsent crawler db")
                return
            app = None
            if "meta" in tables:
                row = conn.execute("SELECT value FROM meta WHERE key='app'").fetchone()
                app = row[0] if row else None
            if app != APP_ID:
                raise StoreError(
                    f"{self.path} is a SQLite db but not a kofinsent crawler db (tables: {', '.join(sorted(tables))}); "
                    "pass a new path"
                )
            version = int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.path} has schema {version}, newer than this kofinsent ({SCHEMA_VERSION})")
        finally:
            conn.close()

    def _init_schema(self) -> None:
        with self.transaction() as c:
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            c.execute("INSERT OR IGNORE INTO meta VALUES ('app', ?)", (APP_ID,))
            c.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; a failure rolls it back, so the db keeps exactly what was committed before."""
        with _guard(self.path):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def errors(self) -> AbstractContextManager[None]:
        """For callers that query ``conn`` themselves (pandas): SQLite and OS errors become :class:`StoreError`."""
        return _guard(self.path)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes --------------------------------------------------------------------------------------------------
    def write_page(self, posts: Iterable[Post], job: str | None = None, state: dict[str, Any] | None = None,
                   done: bool = False, names: dict[str, str] | None = None) -> int:
        """Insert a page of posts and move the crawl cursor in one transaction; returns how many rows were new.

        A post already stored (same code and nid, e.g. from an overlapping page) keeps its first-fetched values.
        """
        fetched = _utcnow()
        rows = [
            (p.code, p.nid, p.posted_at.isoformat(timespec="seconds"), p.title, p.author, p.views, p.likes,
             p.dislikes, p.comments, int(p.is_blind), p.source, fetched)
            for p in posts
        ]
        with self.transaction() as c:
            before = c.total_changes
            c.executemany(f"INSERT OR IGNORE INTO posts ({_POST_COLUMNS}) VALUES ({','.join('?' * 12)})", rows)
            added = c.total_changes - before
            for code, name in (names or {}).items():
                c.execute("INSERT INTO stocks (code, name) VALUES (?, ?) "
                          "ON CONFLICT(code) DO UPDATE SET name=excluded.name", (code, name))
            if job is not None:
                self._set_progress(c, job, state or {}, done)
        return added

    def write_prices(self, bars: Iterable[PriceBar], source: str) -> int:
        rows = [(b.code, b.date.isoformat(), b.open, b.high, b.low, b.close, b.volume, source) for b in bars]
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO prices VALUES (?,?,?,?,?,?,?,?)", rows)
        return len(rows)

    def upsert_stock(self, code: str, name: str | None = None, market: str | None = None,
                     listed_on: date | None = None) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO stocks (code, name, market, listed_on) VALUES (?,?,?,?) ON CONFLICT(code) DO UPDATE SET "
                "name=coalesce(excluded.name, name), market=coalesce(excluded.market, market), "
                "listed_on=coalesce(excluded.listed_on, listed_on)",
                (code, name, market, listed_on.isoformat() if listed_on else None),
            )

    def set_progress(self, job: str, state: dict[str, Any], done: bool = False) -> None:
        with self.transaction() as c:
            self._set_progress(c, job, state, done)

    @staticmethod
    def _set_progress(c: sqlite3.Connection, job: str, state: dict[str, Any], done: bool) -> None:
        c.execute(
            "INSERT INTO crawl_progress VALUES (?,?,?,?) ON CONFLICT(job) DO UPDATE SET "
            "state=excluded.state, done=excluded.done, updated_at=excluded.updated_at",
            (job, json.dumps(state, sort_keys=True), int(done), _utcnow()),
        )

    # -- reads ---------------------------------------------------------------------------------------------------
    def progress(self, job: str) -> tuple[dict[str, Any], bool] | None:
        with _guard(self.path):
            row = self.conn.execute("SELECT state, done FROM crawl_progress WHERE job=?", (job,)).fetchone()
        return (json.loads(row[0]), bool(row[1])) if row else None

    def iter_posts(self, codes: Iterable[str] | None = None) -> Iterator[sqlite3.Row]:
        """Posts ordered by (code, posted_at, nid), as sqlite3.Row with the table's columns."""
        sql, args = "SELECT * FROM posts ORDER BY code, posted_at, nid", []
        if codes is not None:
            args = list(codes)
            sql = f"SELECT * FROM posts WHERE code IN ({','.join('?' * len(args))}) ORDER BY code, posted_at, nid"
        self.conn.row_factory = sqlite3.Row
        try:
            with _guard(self.path):
                yield from self.conn.execute(sql, args)
        finally:
            self.conn.row_factory = None

    def count_posts(self, code: str | None = None) -> int:
        with _guard(self.path):
            if code is None:
                return self.conn.execute("SELECT count(*) FROM posts").fetchone()[0]
            return self.conn.execute("SELECT count(*) FROM posts WHERE code=?", (code,)).fetchone()[0]

    def prices(self, code: str) -> list[PriceBar]:
        with _guard(self.path):
            rows = self.conn.execute(
                "SELECT code, date, open, high, low, close, volume FROM prices WHERE code=? ORDER BY date", (code,)
            ).fetchall()
        return [PriceBar(r[0], date.fromisoformat(r[1]), r[2], r[3], r[4], r[5], r[6]) for r in rows]

    def stock_names(self) -> dict[str, str]:
        with _guard(self.path):
            return {c: n for c, n in self.conn.execute("SELECT code, name FROM stocks WHERE name IS NOT NULL")}

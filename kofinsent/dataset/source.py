"""Read posts, prices and stock names out of a crawler db (opened through :class:`crawler.store.Store`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kofinsent.dataset.errors import DatasetConfigError
from kofinsent.runs import sha256_file

_CHUNK = 200_000


@dataclass
class Source:
    """What the builder reads. ``posts`` is sorted by (code, posted_at, nid), the db's own order."""

    posts: pd.DataFrame    # code (category), nid (int64), posted_at (datetime64[s], naive KST), title (str), is_blind
    prices: pd.DataFrame   # code, date ('YYYY-MM-DD'), close, volume
    names: dict[str, str]
    db_file: str           # the file's name only: the hash, not the path, identifies the data
    db_bytes: int
    db_sha256: str
    wal_pending: bool      # a non-empty -wal file outlived our connection: another process may be writing


def read_db(path: str | Path, progress: bool = True) -> Source:
    """Read a crawler db, read-only: a read-only file or folder is fine, and nothing is ever written to it."""
    from crawler.store import Store  # raises StoreError (a CrawlerError) for files that are not ours

    path = Path(path)
    if not path.is_file():
        raise DatasetConfigError(f"{path}: no such db file; pass the --db a `kofinsent crawl` run wrote")
    with Store(path, readonly=True) as store, store.errors():
        conn = store.conn
        total = conn.execute("SELECT count(*) FROM posts").fetchone()[0]
        chunks = []
        with tqdm(total=total, desc="read posts", unit="post", disable=not progress or None, leave=False) as bar:
            for chunk in pd.read_sql_query(
                "SELECT code, nid, posted_at, title, is_blind FROM posts ORDER BY code, posted_at, nid",
                conn, chunksize=_CHUNK,
            ):
                chunks.append(chunk)
                bar.update(len(chunk))
        prices = pd.read_sql_query("SELECT code, date, close, volume FROM prices ORDER BY code, date", conn)
        names = store.stock_names()
    # Hash after closing: the last connection's close checkpoints the WAL into the main file, so the hash covers
    # exactly the rows we read (unless another process still holds the db open, which we record).
    wal = path.with_name(path.name + "-wal")
    return Source(
        posts=_posts_frame(chunks), prices=prices, names=names, db_file=path.name,
        db_bytes=path.stat().st_size, db_sha256=sha256_file(path),
        wal_pending=wal.exists() and wal.stat().st_size > 0,
    )


def _posts_frame(chunks: list[pd.DataFrame]) -> pd.DataFrame:
    if chunks:
        raw = pd.concat(chunks, ignore_index=True)
    else:
        raw = pd.DataFrame({"code": [], "nid": [], "posted_at": [], "title": [], "is_blind": []})
    when = raw["posted_at"].astype(str).to_numpy(dtype=object)
    try:
        posted = np.asarray(when, dtype="datetime64[s]")
    except ValueError:
        bad = next(v for v in when if not _parses(v))
        raise DatasetConfigError(f"posts.posted_at {bad!r} is not 'YYYY-MM-DDTHH:MM:SS' (naive KST)") from None
    return pd.DataFrame({
        "code": pd.Categorical(raw["code"].astype(str)),
        "nid": raw["nid"].astype(np.int64).to_numpy(),
        "posted_at": posted,
        "title": raw["title"].astype(str),
        "is_blind": raw["is_blind"].astype(bool).to_numpy(),
    })


def _parses(v: str) -> bool:
    try:
        np.datetime64(v, "s")
        return True
    except ValueError:
        return False

"""Dataset files: one record per post as JSON Lines and Parquet, written all-or-nothing.

Record keys, in this order: id ("<code>-<nid>"), code, name (null when the db has none), nid (string), posted_at
(ISO 8601 with +09:00), title (normalised), label ("[상승]"/"[하락]"), rule, move_date ('YYYY-MM-DD', the session
whose close made the label), close_prev, close (adjusted closes), return (close / close_prev - 1).
Parquet holds the same columns with the same values (dates stay ISO strings). returns.jsonl holds the price
calendar the labels were made from: one line per stock and traded day (:func:`write_returns`).

Reading them back: ``datasets.load_dataset("parquet", ...)`` returns the records exactly. ``load_dataset("json", ...)``
also loads, but pyarrow's JSON type inference parses the ISO strings of ``posted_at`` and ``move_date`` into naive
UTC timestamps (09:00 earlier than the KST wall time; passing ``features=`` does not stop it, the cast comes after).
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kofinsent.paths import remove_file, remove_tree

if TYPE_CHECKING:
    from kofinsent.dataset.labels import PriceCalendar

COLUMNS = ("id", "code", "name", "nid", "posted_at", "title", "label", "rule", "move_date", "close_prev", "close",
           "return")
KST_OFFSET = "+09:00"


def records_frame(frame: pd.DataFrame, names: dict[str, str], rule: str) -> pd.DataFrame:
    """The exported columns, built column-wise from the builder's frame (code, nid, posted_at, title, label,
    move_day, close_prev, close, ret)."""
    code = frame["code"].astype(str).to_numpy(dtype=object)
    nid = frame["nid"].astype(np.int64).astype(str).to_numpy(dtype=object)
    posted = np.datetime_as_string(frame["posted_at"].to_numpy().astype("datetime64[s]"), unit="s")
    return pd.DataFrame({
        "id": code + "-" + nid,
        "code": code,
        "name": pd.Series(code).map(names).to_numpy(dtype=object),
        "nid": nid,
        "posted_at": np.char.add(posted.astype(str), KST_OFFSET).astype(object),
        "title": frame["title"].to_numpy(dtype=object),
        "label": frame["label"].to_numpy(dtype=object),
        "rule": np.full(len(frame), rule, dtype=object),
        "move_date": np.datetime_as_string(frame["move_day"].to_numpy().astype("datetime64[D]")).astype(object),
        "close_prev": frame["close_prev"].to_numpy(dtype=np.float64),
        "close": frame["close"].to_numpy(dtype=np.float64),
        "return": frame["ret"].to_numpy(dtype=np.float64),
    }, columns=list(COLUMNS))


def write_jsonl(records: pd.DataFrame, path: Path, progress: bool = True) -> None:
    """One JSON object per line, UTF-8, Korean kept as is (ensure_ascii=False), keys in :data:`COLUMNS` order."""
    cols = [records[c].tolist() for c in COLUMNS]
    name_idx = COLUMNS.index("name")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in tqdm(zip(*cols), total=len(records), desc=f"write {path.name}", unit="rec",
                        disable=not progress or None, leave=False):
            rec = dict(zip(COLUMNS, row))
            if not isinstance(row[name_idx], str):  # pandas turns missing names into NaN; JSON wants null
                rec["name"] = None
            f.write(json.dumps(rec, ensure_ascii=False))
            f.write("\n")


RETURN_COLUMNS = ("code", "date", "close_prev", "close", "return")


def write_returns(calendar: PriceCalendar, path: Path) -> int:
    """returns.jsonl: one line per stock and traded day of the stored prices, sorted by (code, date), keys in
    :data:`RETURN_COLUMNS` order: the same adjusted closes and ``return`` (close / close_prev - 1) the labels use, so
    a test record's ``return`` equals the line of its (code, move_date). A stock's first stored bar has no previous
    close: ``close_prev`` and ``return`` are null there. Returns the number of lines."""
    bars = calendar.bars
    days = np.datetime_as_string(bars["day"], unit="D")
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i, code in enumerate(calendar.codes):
            for j in range(int(calendar.start[i]), int(calendar.stop[i])):
                prev, ret = float(bars["close_prev"][j]), float(bars["ret"][j])
                rec = {"code": str(code), "date": str(days[j]), "close_prev": None if np.isnan(prev) else prev,
                       "close": float(bars["close"][j]), "return": None if np.isnan(ret) else ret}
                f.write(json.dumps(rec, ensure_ascii=False))
                f.write("\n")
                n += 1
    return n


def write_parquet(records: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, pa.float64() if c in ("close_prev", "close", "return") else pa.string())
                        for c in COLUMNS])
    arrays = []
    for c in COLUMNS:
        values = records[c].tolist()
        if c == "name":
            values = [v if isinstance(v, str) else None for v in values]
        arrays.append(pa.array(values, type=schema.field(c).type))
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path, compression="zstd")


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield an empty staging folder next to ``out``; on success move its files into ``out`` (created if needed).

    A failure anywhere inside leaves ``out`` exactly as it was: no half-written dataset.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        yield stage
        out.mkdir(exist_ok=True)
        for item in sorted(stage.iterdir()):
            os.replace(item, out / item.name)
    finally:
        remove_tree(stage, out.parent, ignore_errors=True)  # the staging folder made above, never out itself


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        remove_file(tmp, path.parent, missing_ok=True)
        raise

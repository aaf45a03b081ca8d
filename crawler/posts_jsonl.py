"""Export stored posts as JSON Lines with explicit KST offsets."""
from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from crawler.records import KST
from crawler.store import Store

EXPORT_FIELDS = ("code", "nid", "posted_at", "title", "author", "views", "likes", "dislikes", "is_blind", "source")


def export_posts(store: Store, out: Path, codes: list[str] | None = None) -> int:
    """Write one JSON object per post (ordered by code, time, nid); returns the count. Written atomically: on any
    failure ``out`` keeps what it held before."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in store.iter_posts(codes):
                record = {k: row[k] for k in EXPORT_FIELDS}
                record["nid"] = str(row["nid"])
                record["posted_at"] = datetime.fromisoformat(row["posted_at"]).replace(tzinfo=KST).isoformat()
                record["is_blind"] = bool(row["is_blind"])
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk or a kill leaves the old file as it was, and no half file
        raise
    return n

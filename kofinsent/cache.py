"""Small JSON caches of facts measured on a machine (token budgets, micro-batch sizes), kept between runs.

``$KOFINSENT_CACHE_DIR``, else ``$XDG_CACHE_HOME/kofinsent/`` (default ``~/.cache/kofinsent/``). Deleting a file makes
the next run measure again. Reads and writes are best effort: a missing, corrupt or read-only cache only costs the
measurement, never a run.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)


def cache_file(name: str) -> Path:
    root = os.environ.get("KOFINSENT_CACHE_DIR")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "kofinsent")
    return Path(root) / name


def read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_cache(path: Path, key: str, entry: dict[str, Any]) -> None:
    """Read, update one key, write a temporary file and rename it over the old one (readers never see half a file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**read_cache(path), key: entry}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        LOG.info("cannot write the cache %s: %s", path, e)

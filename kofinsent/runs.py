"""Run directories: the resolved config, the environment, per-item predictions and metrics, written as they happen.

A run directory is what reports read; every number in a report traces back to one of these files.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, is_dataclass
from datetime import UTC, date, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("kofinsent", "torch", "transformers", "peft", "accelerate", "bitsandbytes", "tokenizers", "trl", "unsloth",
            "unsloth_zoo", "llama_cpp_python", "gguf", "ollama", "numpy", "pandas", "scipy", "statsmodels",
            "scikit-learn", "kiwipiepy", "requests")
RUN_MARKERS = ("config.json", "metrics.json", "predictions.jsonl")


class RunDirError(Exception):
    """The output directory holds another run (and neither resume nor overwrite was asked for)."""


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file's bytes: the one file digest of the package (data, models, dbs, outputs)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(cwd: str | Path | None = None) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    sha = git("rev-parse", "HEAD")
    return {"sha": sha, "short": sha[:7] if sha else None,
            "dirty": bool(git("status", "--porcelain")) if sha else None}


def environment(seeds: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a result depends on besides its config: code version, packages, hardware, seeds, command line."""
    env: dict[str, Any] = {
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": sys.argv,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "git": git_state(Path(__file__).resolve().parent),
        "packages": package_versions(),
        "seeds": seeds or {},
    }
    if "torch" in sys.modules:  # only describe the accelerator when the run already paid for importing torch
        torch = sys.modules["torch"]
        env["cuda"] = {"available": torch.cuda.is_available(), "version": torch.version.cuda,
                       "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
    return env


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, (set, frozenset, tuple)):
        return _clean(list(obj))
    if isinstance(obj, (bytes, bytearray)):  # bytes that are not UTF-8 survive as lone surrogates (see dumps)
        return bytes(obj).decode("utf-8", "surrogateescape")
    if isinstance(obj, date):
        return obj.isoformat()
    if hasattr(obj, "tolist"):  # numpy arrays and scalars; may hold NaN
        return _clean(obj.tolist())
    if hasattr(obj, "item"):
        return _clean(obj.item())
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _jsonable_or_repr(obj: Any) -> Any:
    try:
        return _jsonable(obj)
    except TypeError:
        return repr(obj)


_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps(obj: Any, indent: int | None = None, *, lenient: bool = False) -> str:
    """JSON with non-finite floats as null / "inf" / "-inf" (strict JSON has none), numpy values and bytes unwrapped,
    and lone surrogates escaped. ``lenient``: any other object is written as its repr instead of raising TypeError
    (for what models and servers hand back, e.g. a backend's ``meta``)."""
    text = json.dumps(_clean(obj), ensure_ascii=False, allow_nan=False, indent=indent,
                      default=_jsonable_or_repr if lenient else _jsonable)
    # A lone surrogate (a model's broken output) cannot be encoded as UTF-8, so writing it would raise; as a JSON
    # escape it is valid UTF-8 and reads back as the same str. Every surrogate sits inside a JSON string here.
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _key(k: Any) -> Any:
    """A key json.dumps accepts (it raises on any other, whatever ``default`` says; a NaN key included)."""
    if k is None or isinstance(k, (str, int, bool)) or (isinstance(k, float) and math.isfinite(k)):
        return k
    return str(k)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return _jsonable(obj)
    if isinstance(obj, dict):
        return {_key(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: not a JSON object ({e.msg})") from None


def read_appended_jsonl(path: str | Path, truncate: bool = False) -> list[dict[str, Any]]:
    """The complete records of a JSONL file that was being appended to when its writer was killed: a last line
    without its newline was cut off mid-write and is dropped (``truncate``: also cut from the file, so that the next
    append starts on a fresh line). Any other line that is not a JSON object is an error naming the line."""
    path = Path(path)
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    records = []
    for i, line in enumerate(data[:end].split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except ValueError as e:  # UnicodeDecodeError, JSONDecodeError
            raise ValueError(f"{path}:{i}: not a JSON record ({e})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{i}: not a JSON object but {type(rec).__name__}")  # noqa: TRY004 - bad data
        records.append(rec)
    if truncate and end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    return records


class RunDir:
    """An output directory for one run. Refuses a directory that already holds a run unless ``overwrite``."""

    def __init__(self, path: str | Path, *, overwrite: bool = False, resume: bool = False) -> None:
        self.path = Path(path)
        # resume: the caller checks that the run there is its own (kofinsent.evaluation.evaluate compares config.json)
        if self.path.exists() and any((self.path / m).exists() for m in RUN_MARKERS) and not (overwrite or resume):
            raise RunDirError(f"{self.path} already holds a run; pass --overwrite or choose another --out")
        self.path.mkdir(parents=True, exist_ok=True)
        if overwrite:
            from kofinsent.paths import remove_file

            # only the run's own files, and only inside this directory (checked after resolving symlinks)
            for m in RUN_MARKERS + ("environment.json",):
                remove_file(self.path / m, self.path, missing_ok=True)

    def write_config(self, config: dict[str, Any], seeds: dict[str, Any] | None = None) -> None:
        write_json(self.path / "config.json", config)
        write_json(self.path / "environment.json", environment(seeds))

    def write_predictions(self, records: Iterable[dict[str, Any]], name: str = "predictions.jsonl") -> int:
        """All records at once, replacing the file atomically."""
        path = self.path / name
        tmp = path.with_name(path.name + ".tmp")
        n = 0
        with open(tmp, "w", encoding="utf-8") as f:
            for r in records:
                f.write(dumps(r, lenient=True) + "\n")
                n += 1
        os.replace(tmp, path)
        return n

    def append_predictions(self, records: Sequence[dict[str, Any]], name: str = "predictions.jsonl") -> int:
        """Append one batch as it arrives, flushed on return: a run killed later keeps it. A kill during the write
        leaves whole lines and at most one torn last line (see :func:`read_appended_jsonl`)."""
        text = "".join(dumps(r, lenient=True) + "\n" for r in records)
        with open(self.path / name, "a", encoding="utf-8") as f:
            f.write(text)
        return len(records)

    def write_metrics(self, metrics: dict[str, Any], name: str = "metrics.json") -> None:
        write_json(self.path / name, metrics)

"""Run directories: the resolved config, the environment, per-item predictions and metrics, written as they happen.

A run directory is what reports read; every number in a report traces back to one of these files.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("kofinsent", "torch", "transformers", "peft", "accelerate", "bitsandbytes", "tokenizers", "trl", "unsloth",
            "unsloth_zoo", "llama_cpp_python", "gguf", "ollama", "numpy", "pandas", "scipy", "statsmodels",
            "scikit-learn", "kiwipiepy", "requests")
RUN_MARKERS = ("config.json", "metrics.json", "predictions.jsonl")


class RunDirError(Exception):
    """The output directory holds another run (and neither resume nor overwrite was asked for)."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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
        return list(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any, indent: int | None = None) -> str:
    """JSON with non-finite floats as null / "inf" / "-inf" (strict JSON has none) and numpy scalars unwrapped."""
    return json.dumps(_clean(obj), ensure_ascii=False, indent=indent, default=_jsonable)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return _jsonable(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
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


class RunDir:
    """An output directory for one run. Refuses a directory that already holds a run unless ``overwrite``."""

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and any((self.path / m).exists() for m in RUN_MARKERS) and not overwrite:
            raise RunDirError(f"{self.path} already holds a run; pass --overwrite or choose another --out")
        self.path.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for m in RUN_MARKERS + ("environment.json",):
                (self.path / m).unlink(missing_ok=True)

    def write_config(self, config: dict[str, Any], seeds: dict[str, Any] | None = None) -> None:
        write_json(self.path / "config.json", config)
        write_json(self.path / "environment.json", environment(seeds))

    def write_predictions(self, records: Iterable[dict[str, Any]], name: str = "predictions.jsonl") -> int:
        n = 0
        with open(self.path / name, "w", encoding="utf-8") as f:
            for r in records:
                f.write(dumps(r) + "\n")
                n += 1
        return n

    def write_metrics(self, metrics: dict[str, Any], name: str = "metrics.json") -> None:
        write_json(self.path / name, metrics)

"""One adapter per training seed: ``kofinsent train --seed 0 --seed 1 ...`` and ``train.NAME.seeds = [...]``."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import MISSING, asdict, fields, replace
from pathlib import Path
from typing import Any

from kofinsent.runs import read_json, sha256_file
from kofinsent.training.engines import train_with
from kofinsent.training.errors import TrainError
from kofinsent.training.options import TrainConfig, check_engine
from kofinsent.training.run_dir import checkpoints


def seed_dir_name(seed: int) -> str:
    """``seed<k>``: the directory of one training seed when a command or an experiment trains several."""
    return f"seed{seed}"


# Where and how a run is written, not what it trains: a finished seed is reused whatever these say.
_NOT_RUN_KEYS = ("out", "resume", "overwrite", "data")


def _finished_run(cfg: TrainConfig, engine: str) -> dict[str, Any] | None:
    """The metrics of the finished run in ``cfg.out`` (metrics.json is written last) when it was trained with
    ``cfg``'s options on the same data; None when there is none. A finished run of other options is a TrainError
    naming the keys that differ (``--overwrite`` replaces it)."""
    out = Path(cfg.out)
    if not ((out / "metrics.json").is_file() and (out / "config.json").is_file()):
        return None
    old = read_json(out / "config.json")
    want = {**{k: v for k, v in asdict(cfg).items() if k not in _NOT_RUN_KEYS and v is not None},
            "engine": engine, "data_sha256": sha256_file(cfg.data)}
    # an option newer than the finished run (absent from its config.json) ran with its default then
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
    differ = sorted(k for k, v in want.items() if old.get(k, defaults.get(k)) != v)
    if differ:
        raise TrainError(f"{out} holds a finished run with other options ({', '.join(differ)} differ); pass "
                         "--overwrite to replace it, or choose another --out")
    return read_json(out / "metrics.json")


def train_seeds(engine: str, cfg: TrainConfig, seeds: Sequence[int],
                log: Any = None) -> dict[int, dict[str, Any]]:
    """Train ``cfg`` once per seed, each into ``cfg.out/seed<k>/`` (:func:`seed_dir_name`); returns the metrics
    by seed. Resumable per seed: a seed whose directory holds a finished run of the same options and data is
    skipped (``log`` says so); with ``cfg.resume`` a seed cut off after a checkpoint continues from it and one not
    yet started (or cut off before its first checkpoint) starts afresh; without it a cut-off seed is refused as a
    single run is (pass ``--resume``). ``cfg.overwrite`` retrains every seed."""
    seeds = list(seeds)
    if not seeds:
        raise TrainError("give at least one --seed")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise TrainError(f"--seed {', '.join(map(str, twice))} is given more than once")
    if any(s < 0 for s in seeds):
        raise TrainError(f"--seed must be >= 0 to name a seed<k> directory, got {min(seeds)}")
    check_engine(engine)
    cfg.validate()
    results: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        out = Path(cfg.out) / seed_dir_name(seed)
        one = replace(cfg, seed=seed, out=str(out))
        done = None if cfg.overwrite else _finished_run(one, engine)
        if done is not None:
            if log:
                log(f"seed {seed}: {out} holds a finished run of these options; skipped")
            results[seed] = done
            continue
        if cfg.resume and not (out.is_dir() and checkpoints(out)):
            one = replace(one, resume=False, overwrite=True)  # nothing to resume from: start this seed afresh
        if log:
            log(f"seed {seed}: training into {out}")
        results[seed] = train_with(engine, one)
    return results


__all__ = ["seed_dir_name", "train_seeds"]

"""What an experiment's ``[eval.*]`` tables and ``compare.pairs`` stand for, run by run.

A table with list-valued ``model`` / ``shots`` stands for their grid (``NAME-<model slug>-<k>shot``); a ``model`` or
``adapter`` naming a multi-seed ``[train.T]`` as a whole (``@train/T/adapter``) for one run per training seed
(``...-seed<k>``, reading ``@train/T/seed<k>/adapter``). ``train_seeds``: every ``[train.*]`` table's seeds by name.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from kofinsent.experiment.refs import TRAIN_SPLIT, seed_ref, seed_suffix, whole_multi_seed_train

EvalRuns = dict[str, dict[str, Any]]  # run directory name -> the run's EvalConfig fields
SeedGroups = dict[str, dict[int, str]]  # a run name without -seed<k> -> {k: run name}


def as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def slug(model: str) -> str:
    """The last part of a hub id or path, made a safe piece of a directory name: any run of other characters becomes
    ``_``, runs of dots one dot (``models/x..y.gguf`` -> ``x.y``, ``org/m 1`` -> ``m_1``)."""
    last = model.rstrip("/").split("/")[-1].removesuffix(".gguf")
    safe = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9_.-]+", "_", last)).strip(".")
    return safe or "model"


def expand_evals(evals: Mapping[str, BaseModel], train_seeds: Mapping[str, list[int]]) -> tuple[EvalRuns, SeedGroups]:
    """Every evaluation to run, by directory name, and the runs that differ only by training seed. Two runs that would
    share a directory are an error naming the table."""
    runs: EvalRuns = {}
    groups: SeedGroups = {}
    for name, e in evals.items():
        spec = e.model_dump()
        models, shots = as_list(spec["model"]), as_list(spec["shots"])
        for m, k in itertools.product(models, shots):
            base = name
            if len(models) > 1:
                base += "-" + slug(m)
            if len(shots) > 1:
                base += f"-{k}shot"
            train = spec["train"]
            if train is None and spec["prompt"] == "kshot":
                train = TRAIN_SPLIT
            run = {**spec, "model": m, "shots": k, "train": train}
            multi = sorted({t for ref in (m, spec["adapter"]) if (t := whole_multi_seed_train(ref, train_seeds))})
            if len(multi) > 1:
                raise ValueError(f"eval.{name}: model {m!r} and adapter {spec['adapter']!r} name two multi-seed "
                                 f"trains ({', '.join(f'train.{t}' for t in multi)}); name one seed of either, "
                                 "e.g. '@train/NAME/seed0/adapter'")
            seeds: list[int | None] = list(train_seeds[multi[0]]) if multi else [None]
            for s in seeds:
                key = base if s is None else f"{base}-{seed_suffix(s)}"
                if key in runs:  # a dict would silently keep one of the two
                    raise ValueError(f"eval.{name}: model {m!r} with {k} shots expands to the run name {key!r}, "
                                     "which another eval run already has; rename a table or a model")
                if s is None:
                    runs[key] = run
                    continue
                runs[key] = {**run, **{f: seed_ref(run[f], multi[0], s) for f in ("model", "adapter")}}
                groups.setdefault(base, {})[s] = key
    return runs, groups


def pair_runs(pairs: list[list[str]], runs: EvalRuns, groups: SeedGroups) -> list[tuple[str, str]]:
    """``compare.pairs`` with seed-expanded evals paired seed by seed: a pair that names an eval which expands per
    training seed (its name without ``-seed<k>``) stands for one pair per seed (``[lora, base]`` ->
    ``[lora-seed0, base]``, ...); two such evals pair seed k with seed k, and must have the same seeds."""
    out: list[tuple[str, str]] = []
    for a, b in pairs:
        ga = groups.get(a) if a not in runs else None
        gb = groups.get(b) if b not in runs else None
        if ga is None and gb is None:
            out.append((a, b))
        elif ga is not None and gb is not None:
            if sorted(ga) != sorted(gb):
                raise ValueError(f"compare.pairs [{a!r}, {b!r}]: {a!r} expands over training seeds {sorted(ga)} "
                                 f"and {b!r} over {sorted(gb)}; a seed-wise pair needs the same seeds (or name "
                                 f"single runs such as {next(iter(ga.values()))!r})")
            out += [(ga[s], gb[s]) for s in sorted(ga)]
        elif ga is not None:
            out += [(ga[s], b) for s in sorted(ga)]
        else:
            assert gb is not None
            out += [(a, gb[s]) for s in sorted(gb)]
    return out


__all__ = ["EvalRuns", "SeedGroups", "as_list", "expand_evals", "pair_runs", "slug"]

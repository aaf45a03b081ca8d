"""``@`` paths into the run directory and the rules they follow (see :mod:`kofinsent.experiment.config`).

``@dataset/FILE`` and ``@teacher/FILE`` name a one-table step's output, ``@models/NAME``, ``@train/NAME``,
``@export/NAME`` a named table's; ``@train/T/seed<k>/...`` one seed of a multi-seed ``[train.T]``. The checks raise a
ValueError naming the key; the config wraps it with the file name.

``train_seeds`` below is every ``[train.*]`` table's training seeds by name (:meth:`ExperimentConfig.training_seeds`):
a table with two or more trains one run per seed, into ``train/NAME/seed<k>/``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REF = "@"
TRAIN_SPLIT = "@dataset/train.jsonl"  # the default training data, and where kshot prompts draw their examples
SECTIONS_WITH_OUTPUTS = ("dataset", "teacher", "models", "train", "export")
SINGLE_SECTIONS = ("dataset", "teacher")  # @dataset/FILE, @teacher/FILE: one table, no NAME
# the run's sub-directories that the runner clears before a step writes there (a crawl db must not live in one)
CLEARED_DIRS = ("dataset", "teacher", "models", "train", "export", "eval", "baselines")
NAMED_TABLES = ("models", "train", "export", "eval")  # [TABLE.NAME] -> <run>/TABLE/NAME/
SEED_DIR = re.compile(r"seed(\d+)")  # train/NAME/seed<k>/: one training seed of a multi-seed [train.NAME]


def seed_suffix(seed: int) -> str:
    from kofinsent.training.seeds import seed_dir_name

    return seed_dir_name(seed)


def train_ref(ref: Any) -> list[str] | None:
    """``@train/T/a/b`` -> [T, a, b]; None for anything else."""
    if not isinstance(ref, str) or not ref.startswith(REF + "train/"):
        return None
    parts = ref[len(REF + "train/"):].split("/")
    return parts if parts[0] else None


def seed_ref(ref: str | None, train: str, seed: int) -> str | None:
    """``@train/T/adapter`` -> ``@train/T/seed<k>/adapter`` when it names ``train`` as a whole; else unchanged."""
    parts = train_ref(ref)
    if parts is None or parts[0] != train or (len(parts) > 1 and SEED_DIR.fullmatch(parts[1])):
        return ref
    return "/".join([f"{REF}train", train, seed_suffix(seed), *[p for p in parts[1:] if p]])


def whole_multi_seed_train(ref: str | None, train_seeds: Mapping[str, list[int]]) -> str | None:
    """T when ``ref`` is ``@train/T[/...]`` for a multi-seed ``[train.T]`` without naming one of its seeds."""
    parts = train_ref(ref)
    if parts is None or len(train_seeds.get(parts[0], ())) < 2:
        return None
    return None if len(parts) > 1 and SEED_DIR.fullmatch(parts[1]) else parts[0]


def check_ref(key: str, value: str, outputs: Mapping[str, Any], own: str | None = None) -> None:
    """``value``, when it is an ``@`` path, names an existing table, stays inside the run and does not point into
    ``own``: the directory of the step that reads it, which the runner clears before that step runs. ``outputs``: the
    config's tables by section (``dataset`` / ``teacher``: the table or None; the others: name -> table)."""
    if not value.startswith(REF):
        return
    parts = value[len(REF):].split("/")
    if ".." in parts:
        raise ValueError(f"{key} = {value!r}: a run path stays inside the run: no '..'")
    if own is not None and parts[:len(own.split("/"))] == own.split("/"):
        raise ValueError(f"{key} = {value!r}: the runner clears {own}/ before this step runs, so an input there "
                         "would be deleted first; keep it elsewhere")
    head = parts[0]
    if head not in SECTIONS_WITH_OUTPUTS or (head not in SINGLE_SECTIONS and len(parts) < 2):
        raise ValueError(f"{key} = {value!r}: a run path starts with @dataset/, @teacher/, @models/NAME, "
                         "@train/NAME or @export/NAME")
    if head in SINGLE_SECTIONS:
        if outputs[head] is None:
            raise ValueError(f"{key} = {value!r}: there is no [{head}] table")
        return
    if parts[1] not in outputs[head]:
        raise ValueError(f"{key} = {value!r}: there is no [{head}.{parts[1]}] table")


def check_db(key: str, value: str | None) -> None:
    """A crawler db inside the run lives under ``@crawl/``: the runner clears the other step directories."""
    if value is not None and value.startswith(REF):
        parts = value[len(REF):].split("/")
        if ".." in parts or parts[0] in CLEARED_DIRS:
            raise ValueError(f"{key} = {value!r}: a db inside the run lives under @crawl/ (the runner clears "
                             f"{', '.join(f'@{d}/' for d in CLEARED_DIRS)} before their steps run)")


def check_seed_ref(key: str, value: str, train_seeds: Mapping[str, list[int]], expands: bool) -> None:
    """An ``@train/T/...`` path and T's seeds: ``seed<k>`` must be one of a multi-seed T's seeds (and only a
    multi-seed T has such directories); T as a whole is allowed only where the key expands per seed."""
    parts = train_ref(value)
    if parts is None or parts[0] not in train_seeds:
        return
    t = parts[0]
    seed = SEED_DIR.fullmatch(parts[1]) if len(parts) > 1 else None
    seeds = train_seeds[t]
    if len(seeds) < 2:
        if seed is not None:
            raise ValueError(f"{key} = {value!r}: [train.{t}] trains one seed, into @train/{t}/ (no seed<k>/ "
                             "directories)")
        return
    if seed is not None:
        if int(seed.group(1)) not in seeds or seed.group(1) != str(int(seed.group(1))):
            raise ValueError(f"{key} = {value!r}: train.{t}.seeds = {seeds} has no {parts[1]}")
        return
    if not expands:
        raise ValueError(f"{key} = {value!r}: [train.{t}] trains one run per seed (train.{t}.seeds = {seeds}); "
                         f"name one of them, e.g. '@train/{t}/{seed_suffix(seeds[0])}/{'/'.join(parts[1:])}'")


def check_export_train(name: str, train: str, train_seeds: Mapping[str, list[int]]) -> None:
    """``export.NAME.train``: a [train.*] table, or ``T/seed<k>`` for one seed of a multi-seed table."""
    t, _, sub = train.partition("/")
    if t not in train_seeds:
        raise ValueError(f"export.{name}.train = {train!r} names no [train.*] table")
    seeds = train_seeds[t]
    multi = len(seeds) > 1
    if not sub and multi:
        raise ValueError(f"export.{name}.train = {train!r}: [train.{t}] trains one run per seed (train.{t}.seeds = "
                         f"{seeds}); export one of them: export.{name}.train = '{t}/{seed_suffix(seeds[0])}'")
    if sub:
        m = SEED_DIR.fullmatch(sub)
        if not (multi and m and sub == seed_suffix(int(m.group(1))) and int(m.group(1)) in seeds):
            raise ValueError(f"export.{name}.train = {train!r}: use a [train.*] table name"
                             + (f" or one of its seeds ({', '.join(f'{t}/{seed_suffix(s)}' for s in seeds)})"
                                if multi else ""))


__all__ = ["CLEARED_DIRS", "NAMED_TABLES", "REF", "SECTIONS_WITH_OUTPUTS", "SEED_DIR", "SINGLE_SECTIONS",
           "TRAIN_SPLIT", "check_db", "check_export_train", "check_ref", "check_seed_ref", "seed_ref", "seed_suffix",
           "train_ref", "whole_multi_seed_train"]

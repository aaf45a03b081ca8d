"""The training-seed table: eval runs that differ only by the training seed of their adapter (or merged model).

``train.NAME.seeds = [0, 1, 2]`` in an experiment, or ``kofinsent train --seed 0 --seed 1 --seed 2``, trains one run
per seed into ``.../seed<k>/``, and each is evaluated on its own (``eval/NAME-seed<k>/``). A step's training seed is
the ``seed<k>`` directory its adapter (or model) path runs through: the adapter's own parent (``.../seed1/adapter``)
or the model itself (``.../seed1``) or its parent (``.../seed1/merged``). Steps whose eval config.json is the same
once that directory is written ``seed*`` (and where/how the run was written, ``out`` / ``resume`` / ``overwrite``,
is left out) differ only by training seed: within one experiment run, or across bare eval runs given together.

For each such group of two or more seeds the table shows every seed's n and accuracy with its 95% interval, cited from
that run's metrics.json exactly as the main table cites them, and a last row with the mean ± sd over training seeds
(:func:`kofinsent.evaluation.metrics.seed_summary`, sd with ddof 1). Those two numbers come from several files, so
their source (:class:`SeedsSrc`) names the statistic (``derive``: ``"mean"`` or ``"sd"``) and lists every input it
was computed from (``inputs``: run, file and key of each seed's accuracy); ``run`` / ``file`` / ``key`` are the first
input's.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from kofinsent.evaluation.metrics import seed_summary
from kofinsent.report.cite import Num, Src, text
from kofinsent.report.collect import Step
from kofinsent.report.tables import Column, Table, accuracy_cell, join_cites, or_na

SEED_DIR = re.compile(r"seed(\d+)")
SEED_SUFFIX = re.compile(r"-seed\d+$")  # the runner's name for one seed of an expanded eval
NOT_RUN_KEYS = ("out", "overwrite", "resume")  # where and how a run was written, not what it computed
STATS = ("mean", "sd")


@dataclass(frozen=True)
class SeedsSrc(Src):
    """A number computed from several sourced numbers: ``derive`` is the statistic over ``inputs`` (``"mean"``;
    ``"sd"``: sample standard deviation, ddof 1)."""

    inputs: tuple[Src, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "inputs": [i.to_json() for i in self.inputs]}


def _seed_part(path: str) -> tuple[int, int] | None:
    """(index of the ``seed<k>`` part, k) when ``path`` is a seed directory or lies directly in one."""
    parts = PurePath(path).parts
    for i in (len(parts) - 1, len(parts) - 2):
        if i >= 0 and (m := SEED_DIR.fullmatch(parts[i])):
            return i, int(m.group(1))
    return None


def training_seed(step: Step) -> tuple[int, dict[str, Any]] | None:
    """(training seed, the eval config with that seed written ``seed*``) for a step whose adapter (else model) lies
    in a ``seed<k>`` training directory; None otherwise."""
    if step.kind != "eval":
        return None
    for key in ("adapter", "model"):
        value = step.config.get(key)
        if not isinstance(value, str) or (hit := _seed_part(value)) is None:
            continue
        i, seed = hit
        parts = list(PurePath(value).parts)
        parts[i] = "seed*"
        config = {k: v for k, v in step.config.items() if k not in NOT_RUN_KEYS}
        config[key] = PurePath(*parts).as_posix()
        return seed, config
    return None


def seed_groups(steps: list[Step]) -> list[tuple[str, dict[int, Step]]]:
    """(name, {training seed: step}) for every set of two or more steps that differ only by training seed, in step
    order. A second step with the same seed and config (two names for one run) is left out of its group."""
    groups: dict[str, tuple[str, dict[int, Step]]] = {}
    for s in steps:
        found = training_seed(s)
        if found is None:
            continue
        seed, config = found
        scope = s.run.label if s.run.kind == "experiment" else ""
        key = json.dumps([scope, config], sort_keys=True, default=str)
        groups.setdefault(key, (SEED_SUFFIX.sub("", s.name), {}))[1].setdefault(seed, s)
    return [(name, by_seed) for name, by_seed in groups.values() if len(by_seed) > 1]


def seed_stat(nums: list[Num], stat: str, fmt: str) -> Num | None:
    """``stat`` ("mean" or "sd", ddof 1) over ``nums`` through :func:`kofinsent.evaluation.metrics.seed_summary`, as a
    Num whose source lists every input."""
    value = seed_summary([n.value for n in nums])[stat]
    if value is None or not nums:
        return None
    first = nums[0].src
    return Num(value, fmt, SeedsSrc(first.run, first.file, first.key, derive=stat,
                                    inputs=tuple(n.src for n in nums)))


def train_seed_table(steps: list[Step]) -> Table | None:
    """Per training seed: n and accuracy [95% CI]; per group: mean ± sd over training seeds."""
    groups = seed_groups(steps)
    if not groups:
        return None
    cols = [Column("Eval"), Column("Training seed"), Column("n", True), Column("Accuracy [95% CI]", True),
            Column("Source")]
    table = Table("train-seeds", "Accuracy per training seed: eval runs that differ only by the training seed of "
                                 "their adapter (or merged model). Each seed's accuracy and 95% interval as in the "
                                 "main table; the last row of each group: mean ± sd over the training seeds (sd with "
                                 "ddof 1, in percentage points) of the accuracies above (report.json lists the "
                                 "inputs of each).", cols)
    for name, by_seed in groups:
        accs: list[Num] = []
        for seed in sorted(by_seed):
            s = by_seed[seed]
            m = s.metrics_src
            if (acc := m.num(("accuracy",), "pct")) is not None:
                accs.append(acc)
            table.rows.append([text(name), text(str(seed)), or_na(m.num(("n",), "int")), accuracy_cell(m),
                               text(s.cite)])
        mean, sd = seed_stat(accs, "mean", "pct"), seed_stat(accs, "sd", "pp")
        summary = (text(mean, " ± ", sd, " pp") if mean is not None and sd is not None and len(accs) == len(by_seed)
                   else text("n/a"))
        table.rows.append([text(name), text(f"mean ± sd over {len(by_seed)} seeds"), text("—"), summary,
                           text(join_cites([by_seed[k].cite for k in sorted(by_seed)]))])
    return table


__all__ = ["SeedsSrc", "seed_groups", "seed_stat", "train_seed_table", "training_seed"]

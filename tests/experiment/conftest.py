"""Experiment-config helpers shared by the runner, preflight and path-safety tests."""
from __future__ import annotations

from typing import Any

from kofinsent.experiment.config import ExperimentConfig, apply_overrides, validate

# The smallest valid experiment: one eval table, data from a db that does not exist (nothing here runs a model).
BASE: dict[str, Any] = {
    "experiment": {"name": "t"},
    "dataset": {"db": "missing.sqlite", "rule": "same-day"},
    "eval": {"base": {"backend": "hf", "model": "x/y"}},
    "baselines": {"enabled": False},
    "report": {"enabled": False},
}


def small_config(*overrides: str, data: dict[str, Any] | None = None, source: str = "<config>") -> ExperimentConfig:
    """``data`` (default :data:`BASE`) with dotted ``key=value`` overrides, validated as ``kofinsent run`` does."""
    return validate(apply_overrides(data or BASE, list(overrides)), source)

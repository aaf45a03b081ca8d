"""Building blocks of the experiment config (:mod:`kofinsent.experiment.config`): tables made from a stage's own option
dataclass, and the ``[teacher]`` table (seed 000's data step, run by the ``teacher`` step).

``[teacher]`` takes the options of :class:`kofinsent.dataset.teacher.TeacherConfig` (backend, host, model,
max_attempts, concurrency, seed, format, temperature, max_new_tokens, n_gpu_layers, n_ctx), ``data`` (default the
train split) and ``standin``. There is no key for an API key: the openai backend reads ``OPENAI_API_KEY`` from the
environment, so a config file (and the run's config.toml) never holds one. ``standin = true`` serves kofinsent's
SYNTHETIC stand-in teacher (:mod:`kofinsent.dataset.teacher_standin`) on 127.0.0.1 for the step, as ``[replay]``
serves the synthetic forum for the crawl: it needs ``experiment.synthetic = true``, the openai backend and no
``host``; its model is :data:`~kofinsent.dataset.teacher_standin.STANDIN_MODEL`.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

from pydantic import BaseModel, Field, create_model


def section_from_dataclass(cls: type, name: str, drop: set[str], extra: dict[str, Any],
                           base: type[BaseModel]) -> type[BaseModel]:
    """A pydantic model on ``base`` (the config's strict model) with the dataclass's fields (types and defaults)
    minus ``drop``, plus ``extra``."""
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in drop:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = Field(default_factory=f.default_factory)
        else:
            default = ...
        fields[f.name] = (hints[f.name], default)
    fields.update(extra)
    return create_model(name, __base__=base, **fields)


def teacher_section(train_split: str, base: type[BaseModel]) -> type[BaseModel]:
    from kofinsent.dataset.teacher import TeacherConfig

    return section_from_dataclass(
        TeacherConfig, "TeacherSection", {"out", "overwrite", "data", "model", "backend", "synthetic"},
        {"backend": (str, "openai"), "model": (str | None, None), "data": (str, train_split),
         "standin": (bool, False)}, base)


def teacher_config(section: Any, data: str, out: str) -> Any:
    """The :class:`~kofinsent.dataset.teacher.TeacherConfig` a ``[teacher]`` table stands for (a stand-in's model
    and ``synthetic`` filled in; its host is the served stand-in's, set by the step)."""
    from kofinsent.dataset.teacher import TeacherConfig
    from kofinsent.dataset.teacher_standin import STANDIN_MODEL

    spec = section.model_dump()
    standin = spec.pop("standin")
    spec.update(data=data, out=out, synthetic=standin)
    if standin:
        spec["model"] = STANDIN_MODEL
    return TeacherConfig(**spec)


def check_teacher(section: Any, synthetic: bool) -> None:
    """The ``[teacher]`` table's own rules, as a ValueError naming the key (see the module docstring)."""
    from kofinsent.dataset.errors import DatasetConfigError
    from kofinsent.dataset.teacher_standin import STANDIN_MODEL

    if section.standin:
        if section.backend != "openai":
            raise ValueError(f"teacher.backend = {section.backend!r}: the stand-in (teacher.standin = true) is an "
                             "OpenAI-compatible server: use backend = \"openai\"")
        if section.host is not None:
            raise ValueError("teacher.host must be unset with teacher.standin = true (the step serves the stand-in "
                             "on 127.0.0.1)")
        if section.model not in (None, STANDIN_MODEL):
            raise ValueError(f"teacher.model = {section.model!r}: the stand-in serves only {STANDIN_MODEL!r}; leave "
                             "teacher.model out")
        if not synthetic:
            raise ValueError("teacher.standin = true labels titles with SYNTHETIC replies: set experiment.synthetic "
                             "= true")
    elif section.model is None:
        raise ValueError("teacher.model: give the teacher's model (a name on the server, a GGUF path or an HF id), "
                         "or set teacher.standin = true for the offline stand-in")
    try:
        teacher_config(section, "", "").validate(check_files=False)
    except DatasetConfigError as e:
        raise ValueError(f"teacher: {e}") from None


__all__ = ["check_teacher", "section_from_dataclass", "teacher_config", "teacher_section"]

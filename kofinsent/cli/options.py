"""From a command's options to its stage's option dataclass (``EvalConfig``, ``TrainConfig``, ``TeacherConfig``).

The dataclass is the one declaration of a stage's options; a command declares each as a Typer option of the same name
and builds the config with :meth:`StageOptions.build` from its own arguments. Only the options whose name or shape
differ from the field (``--format`` in ``fmt``, comma-separated ``--fewshot-seeds``, ...) are listed, and the few
fields that are no command-line option say why. A field with neither an option nor a reason fails the build (and
``tests/cli/test_options.py``) instead of being left at its default without a word.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


def same(value: Any) -> Any:
    return value


def text(value: Any) -> str | None:
    """A path option as the config's string (None stays None)."""
    return None if value is None else str(value)


def choice(value: Any) -> Any:
    """An Enum choice as its value."""
    return getattr(value, "value", value)


@dataclass(frozen=True)
class FromParam:
    """A field set from the command parameter ``param``, passed through ``convert``."""
    param: str
    convert: Callable[[Any], Any] = same


@dataclass(frozen=True)
class StageOptions:
    """How one command's parameters become its stage's config.

    ``renamed``: the fields whose parameter has another name or shape (every other field reads the parameter of its
    own name as it is); ``not_options``: the fields no command-line option sets, each with the reason.
    """
    renamed: Mapping[str, FromParam] = field(default_factory=dict)
    not_options: Mapping[str, str] = field(default_factory=dict)

    def source(self, name: str) -> FromParam | None:
        """Where field ``name`` comes from; None for a field that is no command-line option."""
        if name in self.not_options:
            return None
        return self.renamed.get(name, FromParam(name))

    def build(self, config_cls: type, params: Mapping[str, Any], **given: Any) -> Any:
        """``config_cls`` from the command's ``params`` (its arguments by name); ``given`` sets fields the command
        computes itself (a value from a repeated option, ...)."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(config_cls):
            src = self.source(f.name)
            if f.name in given or src is None:
                continue
            if src.param not in params:
                raise LookupError(f"{config_cls.__name__}.{f.name} has no command-line option: declare one (or list "
                                  "it in the command's not_options, with the reason)")
            values[f.name] = src.convert(params[src.param])
        return config_cls(**values, **given)

    def flags(self, config_cls: type, command: Any) -> dict[str, list[str]]:
        """Each field's command-line flags in ``command`` (a click command: ``typer.main.get_command``), ``[]`` where
        it has no such option; the fields in ``not_options`` left out."""
        # by duck type: typer may bring its own copy of click, whose Option is not click.Option
        by_name = {p.name: [*p.opts, *p.secondary_opts] for p in command.params if p.param_type_name == "option"}
        out: dict[str, list[str]] = {}
        for f in dataclasses.fields(config_cls):
            src = self.source(f.name)
            if src is not None:
                out[f.name] = by_name.get(src.param, [])
        return out


__all__ = ["FromParam", "StageOptions", "choice", "same", "text"]

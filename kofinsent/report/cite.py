"""Numbers that know where they came from.

Every number a report shows is a :class:`Num`: a value, the name of the formatter that prints it and a :class:`Src`
pointer (run, file inside the run directory, key path, and for JSON Lines files the record). report.json lists them
all, so any printed number can be checked against the file it came from by hand or by a test.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


def _p(x: float) -> str:
    # p-values: three decimals, or one significant digit in e-notation below 0.001 (never a bare "0.000").
    return f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


FORMATS: dict[str, Callable[[Any], str]] = {
    "pct": lambda x: f"{100 * x:.1f}%",   # accuracy, rates
    "pp": lambda x: f"{100 * x:.1f}",     # percentage points (interval bounds, mean ± sd)
    "f3": lambda x: f"{x:.3f}",           # macro-F1, MCC, sentiment, losses
    "f2": lambda x: f"{x:.2f}",           # seconds, confidences, log-likelihood margins
    "p": _p,
    "int": lambda x: str(int(x)),
    "g": lambda x: f"{x:g}",              # config values as the user wrote them (2e-4 -> 0.0002)
}


@dataclass(frozen=True)
class Src:
    """Where a number lives: ``file`` is relative to the run directory that report.json's ``runs`` maps ``run`` to.
    ``key`` is a path of dict keys / list indexes (a list, because keys may contain dots). ``record`` selects the
    line of a JSON Lines file whose fields equal it. ``derive``: ``"diff"`` = value[0] - value[1];
    ``"len"`` = len(value) (a list or an object)."""

    run: str
    file: str
    key: tuple[str | int, ...]
    record: tuple[tuple[str, Any], ...] | None = None
    derive: str | None = None

    def cite(self) -> str:
        return f"{self.run}:{self.file}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"run": self.run, "file": self.file, "key": list(self.key)}
        if self.record is not None:
            out["record"] = dict(self.record)
        if self.derive is not None:
            out["derive"] = self.derive
        return out


@dataclass(frozen=True)
class Derived(Src):
    """A number computed from whole files by a function of :mod:`kofinsent.evaluation.analysis` (``derive`` names
    it): ``inputs`` maps the function's file arguments (``records``: a predictions.jsonl; ``items``: the test records
    it was joined with, by id; ``returns``: a returns.jsonl) to files relative to the run (or absolute), ``params``
    holds its other arguments (``boot``: ``{"resamples", "seed"}`` of a bootstrap), and ``key`` is the path into the
    function's result. ``derive="holm"``: ``params["family"]`` lists the sources of the p-values adjusted together
    (statsmodels ``multipletests(method="holm")``) and ``key`` is ``[position in the family]``; ``"family_size"``:
    the number of p-values in that family."""

    inputs: tuple[tuple[str, str], ...] = ()
    params: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "inputs": dict(self.inputs), "params": self.params}


def derived(value: Any, fmt: str, src: Derived) -> Num | None:
    """A Num for a computed value, or None when it is undefined (printed "n/a")."""
    return Num(value, fmt, src) if _is_number(value) else None


@dataclass(frozen=True)
class Num:
    value: float | int
    fmt: str
    src: Src

    @property
    def text(self) -> str:
        return FORMATS[self.fmt](self.value)

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "value": self.value, "format": self.fmt, "source": self.src.to_json()}


Part = str | Num


@dataclass
class Text:
    """A run of plain text and sourced numbers; renderers escape ``plain`` for their format."""

    parts: list[Part] = field(default_factory=list)
    bold: bool = False

    @property
    def plain(self) -> str:
        return "".join(p.text if isinstance(p, Num) else p for p in self.parts)

    @property
    def numbers(self) -> list[Num]:
        return [p for p in self.parts if isinstance(p, Num)]

    def __str__(self) -> str:
        return self.plain

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.plain, "numbers": [n.to_json() for n in self.numbers]}
        if self.bold:
            out["bold"] = True
        return out


def text(*parts: Part | None, bold: bool = False) -> Text:
    """``Text`` from parts; ``None`` parts are skipped so optional pieces can be written inline."""
    return Text([p for p in parts if p is not None], bold)


def lookup(obj: Any, key: Sequence[str | int]) -> Any:
    """``obj[k0][k1]...``; None when any step is missing (a metric a run did not record)."""
    for k in key:
        in_dict = isinstance(obj, dict) and k in obj
        in_list = isinstance(obj, list) and isinstance(k, int) and -len(obj) <= k < len(obj)
        if not (in_dict or in_list):
            return None
        obj = obj[k]
    return obj


class Source:
    """One file of one run, to take numbers from: ``src.num(("accuracy",), "pct")`` -> Num, or None when the value
    is missing or not a number (so tables print "n/a" instead of inventing one)."""

    def __init__(self, run: str, file: str, data: Any) -> None:
        self.run, self.file, self.data = run, file, data

    def num(self, key: Sequence[str | int], fmt: str, derive: str | None = None,
            record: dict[str, Any] | None = None) -> Num | None:
        value = lookup(self.data, key)
        if derive == "diff":
            ok = isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)
            value = value[0] - value[1] if ok else None
        elif derive == "len":
            value = len(value) if isinstance(value, (list, dict)) else None
        if not _is_number(value):
            return None
        rec = tuple(record.items()) if record is not None else None
        return Num(value, fmt, Src(self.run, self.file, tuple(key), rec, derive))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)

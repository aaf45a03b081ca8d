"""Read run directories into plain objects. Nothing is recomputed from models: a report is built from these files.

Two kinds of RUN_DIR are accepted:
- an experiment run ``runs/<experiment>/<id>/`` (config.toml and/or run.json at its root) with ``dataset/``,
  ``train/<name>/``, ``eval/<name>/``, ``baselines/<name>/`` and ``compare/<a>__<b>.json`` inside;
- a bare eval run (config.json + metrics.json + predictions.jsonl at its root, as ``kofinsent eval --out DIR`` or
  one ``kofinsent baseline`` sub-directory writes), which becomes one model row.
"""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kofinsent.labels import BASELINES
from kofinsent.report.cite import Source
from kofinsent.runs import RUN_MARKERS, read_jsonl, sha256_file

RETURNS = "returns.jsonl"  # the dataset's price calendar (kofinsent.dataset.files.write_returns)
TEACHER_SHEET = "teacher/datasheet.json"  # the teacher step's counts (kofinsent.dataset.teacher.datasheet)
# Prediction fields the report uses; the rest (prompts, chats, raw replies) is dropped on reading to save memory.
KEEP = ("id", "title", "gold", "pred", "valid", "loglik", "prob_up", "sentiment", "confidence", "fewshot_seed",
        "iteration", "output")


# GGUF / Ollama quantization names at the end of a model file or tag ("llama3-ft-q4_k_m.gguf", "llama3:q8_0").
QUANT_RE = re.compile(r"(?i)[-_.:/](q[2-8]_k_[sml]|q[2-8]_k|q[2-8]_[01]|iq[1-4]_[a-z]+|bf16|f16|fp16|f32|fp32)"
                      r"(?:\.gguf)?$")


class ReportError(Exception):
    """A RUN_DIR or one of its files cannot be used (the message names the path)."""


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not valid JSON ({e})") from None


def read_toml_file(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not valid TOML ({e})") from None


def read_records(path: Path) -> list[dict[str, Any]]:
    try:
        return [{k: r[k] for k in KEEP if k in r} for r in read_jsonl(path)]
    except ValueError as e:  # read_jsonl names the file and line
        raise ReportError(str(e)) from None


@dataclass
class Step:
    """One eval or baseline directory: a row of the main table."""

    run: Run
    kind: str            # "eval" | "baseline"
    name: str            # the eval / baseline name
    rel: str             # directory relative to the run root ("" for a bare run)
    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]] | None
    toml: dict[str, Any] = field(default_factory=dict)  # the experiment's [eval.<name>] table, if any

    def file(self, name: str) -> str:
        return f"{self.rel}/{name}" if self.rel else name

    @property
    def cite(self) -> str:
        """``<experiment>/<id>:eval/<name>`` (a bare run: its label)."""
        return f"{self.run.label}:{self.rel}" if self.rel else self.run.label

    @property
    def metrics_src(self) -> Source:
        return Source(self.run.label, self.file("metrics.json"), self.metrics)

    @property
    def config_src(self) -> Source:
        return Source(self.run.label, self.file("config.json"), self.config)

    @property
    def method(self) -> str:
        return "baseline" if self.kind == "baseline" else str(self.metrics.get("method") or
                                                             self.config.get("method") or "?")

    @property
    def prompt(self) -> str | None:
        return self.metrics.get("prompt") or self.config.get("prompt")

    @property
    def is_kshot(self) -> bool:
        return self.kind == "eval" and self.prompt == "kshot"

    @property
    def is_sentiment(self) -> bool:
        return self.method == "sentiment"

    @property
    def model(self) -> str:
        """The model as the experiment wrote it ("@models/neox"), else as the eval ran it."""
        if self.kind == "baseline":
            return self.name
        toml_model = self.toml.get("model")
        if isinstance(toml_model, str):
            return toml_model
        resolved = str(self.config.get("model") or "")
        # A list: the runner expanded [eval.<name>] over it; show the entry this step ran ("@export/x/y-f16.gguf"
        # resolves to ".../export/x/y-f16.gguf").
        for m in toml_model if isinstance(toml_model, list) else []:
            if isinstance(m, str) and resolved and (resolved == m or resolved.endswith("/" + m.lstrip("@"))):
                return m
        if resolved and Path(resolved).is_absolute() and Path(resolved).is_relative_to(self.run.path):
            return Path(resolved).relative_to(self.run.path).as_posix()  # built inside the run: "models/neox"
        return resolved or self.name

    @property
    def quantization(self) -> str:
        """From the model file / tag name (GGUF, Ollama), else the HF loading flags; "none" when unquantized."""
        m = QUANT_RE.search(str(self.config.get("model") or self.toml.get("model") or ""))
        if m:
            return m.group(1).lower()
        if self.config.get("load_in_4bit") or self.toml.get("load_in_4bit"):
            return "bnb-4bit"
        if self.config.get("load_in_8bit") or self.toml.get("load_in_8bit"):
            return "bnb-8bit"
        return "none"

    @property
    def family(self) -> str:
        """The model without its quantization suffix: a heatmap row (the same weights at several quantizations)."""
        model = str(self.config.get("model") or self.toml.get("model") or self.name)
        base = QUANT_RE.sub("", model)
        adapter = self.config.get("adapter")
        return f"{base} + {adapter}" if adapter else base


@dataclass
class Train:
    name: str
    rel: str
    config: dict[str, Any]
    metrics: dict[str, Any]


@dataclass
class Run:
    path: Path
    label: str                        # "<experiment>/<id>", or the directory as given for a bare run
    kind: str                         # "experiment" | "bare"
    config: dict[str, Any]            # config.toml ({} for a bare run)
    environment: dict[str, Any]
    run_json: dict[str, Any]
    datasheet: dict[str, Any] | None
    test_items: dict[str, dict[str, Any]] | None   # dataset test records by id (for per-stock / per-year)
    test_file: str | None                          # where test_items came from, relative to the run (or absolute)
    trains: list[Train] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    compares: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (file relative to run, data)
    notes: list[str] = field(default_factory=list)
    returns: list[dict[str, Any]] | None = None    # the dataset's returns.jsonl (price calendar), when there is one
    returns_file: str | None = None                # where returns came from, relative to the run (or absolute)
    teacher: dict[str, Any] | None = None          # teacher/datasheet.json of the teacher step, when it ran

    @property
    def synthetic(self) -> bool:
        """[experiment] synthetic = true; a [replay] section (the synthetic forum) counts too, so that a config that
        forgot the flag is still labelled: over-labelling is the safe mistake."""
        return bool(self.config.get("experiment", {}).get("synthetic", False)) or "replay" in self.config

    def src(self, file: str, data: Any) -> Source:
        return Source(self.label, file, data)


def _natural(name: str) -> list[Any]:
    """"kshot-5shot" before "kshot-10shot"."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _ordered(names: list[str], preferred: list[str]) -> list[str]:
    """Config order first (the experiment author's order; an expanded step sorts under the key it came from), then
    anything else, in natural order."""
    def rank(name: str) -> tuple[int, list[Any]]:
        hits = [i for i, k in enumerate(preferred)
                if name == k or any(name.startswith(k + sep) for sep in "-_/.")]
        return (max(hits, key=lambda i: len(preferred[i])) if hits else len(preferred), _natural(name))
    return sorted(names, key=rank)


def _read_step(run: Run, kind: str, name: str, rel: str, path: Path, toml: dict[str, Any]) -> Step | None:
    if not (path / "metrics.json").is_file():
        run.notes.append(f"{run.label}:{rel} has no metrics.json (step not finished); left out")
        return None
    metrics = read_json_file(path / "metrics.json")
    if not isinstance(metrics, dict):
        raise ReportError(f"{path / 'metrics.json'}: expected a JSON object")
    config = read_json_file(path / "config.json") if (path / "config.json").is_file() else {}
    predictions = read_records(path / "predictions.jsonl") if (path / "predictions.jsonl").is_file() else None
    if predictions is None:
        run.notes.append(f"{run.label}:{rel} has no predictions.jsonl: no examples or per-group figures for it")
    return Step(run, kind, name, rel, path, config, metrics, predictions, toml)


def _eval_dirs(root: Path) -> list[str]:
    """Eval step names: each directory under eval/ that is a run (holds config.json or metrics.json), at any depth,
    so that an [eval.<name>] the runner expanded over several models or shot counts is found however it nests;
    a direct child without either file is still listed (and reported as unfinished)."""
    found = {p.parent.relative_to(root).as_posix() for m in ("config.json", "metrics.json") for p in root.rglob(m)}
    found |= {d.name for d in root.iterdir() if d.is_dir() and not any(f.startswith(d.name + "/") for f in found)}
    return sorted(found)


def _for_seed(config: dict[str, Any], name: str, table: dict[str, Any]) -> dict[str, Any]:
    """[eval.X] as it ran for the step ``X-seed<k>``: a ``model`` / ``adapter`` that names a multi-seed [train.T] as a
    whole (``@train/T/adapter``) names its ``seed<k>`` run (``@train/T/seed<k>/adapter``), as the runner resolved it."""
    m = re.search(r"-(seed\d+)$", name)
    if m is None or not table:
        return table
    trains = config.get("train", {})

    def one(v: Any) -> Any:
        parts = v[len("@train/"):].split("/") if isinstance(v, str) and v.startswith("@train/") else None
        t = trains.get(parts[0]) if parts else None
        if not (isinstance(t, dict) and isinstance(t.get("seeds"), list) and len(t["seeds"]) > 1) or (
                len(parts) > 1 and re.fullmatch(r"seed\d+", parts[1])):
            return v
        return "/".join(["@train", parts[0], m.group(1), *[p for p in parts[1:] if p]])

    return {**table, **{k: [one(x) for x in v] if isinstance(v, list) else one(v)
                        for k, v in table.items() if k in ("model", "adapter")}}


def _eval_table(evals: dict[str, Any], name: str) -> dict[str, Any]:
    """The [eval.<key>] table a step came from: its own name, or the longest key it was expanded from
    ("finetuned-llama3_ft-q4_k_m" from [eval.finetuned], "kshot/5" from [eval.kshot])."""
    if isinstance(evals.get(name), dict):
        return evals[name]
    keys = [k for k in evals if isinstance(evals[k], dict) and any(name.startswith(k + sep) for sep in "-_/.")]
    return evals[max(keys, key=len)] if keys else {}


def _test_items(path: Path) -> dict[str, dict[str, Any]]:
    try:
        return {str(r["id"]): r for r in read_jsonl(path) if "id" in r}
    except ValueError as e:
        raise ReportError(str(e)) from None


def _returns(path: Path) -> list[dict[str, Any]]:
    try:
        return [r for r in read_jsonl(path) if isinstance(r, dict)]
    except ValueError as e:
        raise ReportError(str(e)) from None


def _sibling_returns(data: Path, data_sha256: str) -> str | None:
    """A bare run's returns.jsonl: the one next to its test file, only when that folder's datasheet.json lists both
    files with the hashes they have now (the same dataset build); else None."""
    ret, sheet = data.parent / RETURNS, data.parent / "datasheet.json"
    if not (ret.is_file() and sheet.is_file()):
        return None
    try:
        files = json.loads(sheet.read_text(encoding="utf-8")).get("files") or {}
        ok = (files[data.name]["sha256"] == data_sha256 and files[RETURNS]["sha256"] == sha256_file(ret))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return str(ret) if ok else None


def _experiment(path: Path, given: str) -> Run:
    config = read_toml_file(path / "config.toml") if (path / "config.toml").is_file() else {}
    run_json = read_json_file(path / "run.json") if (path / "run.json").is_file() else {}
    env = read_json_file(path / "environment.json") if (path / "environment.json").is_file() else {}
    name = run_json.get("experiment") or config.get("experiment", {}).get("name") or path.parent.name
    label = f"{name}/{run_json.get('id') or path.name}"
    ds = path / "dataset"
    datasheet = read_json_file(ds / "datasheet.json") if (ds / "datasheet.json").is_file() else None
    has_test = (ds / "test.jsonl").is_file()
    run = Run(path, label, "experiment", config, env, run_json, datasheet,
              _test_items(ds / "test.jsonl") if has_test else None, "dataset/test.jsonl" if has_test else None)
    if (ds / RETURNS).is_file():
        run.returns, run.returns_file = _returns(ds / RETURNS), f"dataset/{RETURNS}"
    if (path / TEACHER_SHEET).is_file():
        run.teacher = read_json_file(path / TEACHER_SHEET)

    if (path / "train").is_dir():
        for n in _ordered([d.name for d in (path / "train").iterdir() if d.is_dir()], list(config.get("train", {}))):
            seeds = [] if (path / "train" / n / "config.json").is_file() else sorted(
                (s.name for s in (path / "train" / n).iterdir() if s.is_dir() and re.fullmatch(r"seed\d+", s.name)),
                key=_natural)
            for t in [f"{n}/{s}" for s in seeds] or [n]:  # a multi-seed [train.n]: one run per train/n/seed<k>/
                d = path / "train" / t
                cfg = read_json_file(d / "config.json") if (d / "config.json").is_file() else {}
                met = read_json_file(d / "metrics.json") if (d / "metrics.json").is_file() else {}
                run.trains.append(Train(t, f"train/{t}", cfg, met))
    evals = config.get("eval", {})
    if (path / "eval").is_dir():
        for n in _ordered(_eval_dirs(path / "eval"), list(evals)):
            step = _read_step(run, "eval", n, f"eval/{n}", path / "eval" / n,
                              _for_seed(config, n, _eval_table(evals, n)))
            if step:
                run.steps.append(step)
    if (path / "baselines").is_dir():
        for n in _ordered([d.name for d in (path / "baselines").iterdir() if d.is_dir()], list(BASELINES)):
            step = _read_step(run, "baseline", n, f"baselines/{n}", path / "baselines" / n, {})
            if step:
                run.steps.append(step)
    if (path / "compare").is_dir():
        for f in sorted((path / "compare").rglob("*.json")):  # rglob: a pair name may hold a "/"
            data = read_json_file(f)
            if isinstance(data, dict):
                run.compares.append((f.relative_to(path).as_posix(), data))
    if not run.steps:
        run.notes.append(f"{label} ({given}) holds no finished eval or baseline step")
    return run


def _bare(path: Path, given: str) -> Run:
    env = read_json_file(path / "environment.json") if (path / "environment.json").is_file() else {}
    run = Run(path, given.rstrip("/") or path.name, "bare", {}, env, {}, None, None, None)
    step = _read_step(run, "eval", path.name, "", path, {})
    assert step is not None  # metrics.json exists: checked by the caller
    if "baseline" in step.config:  # a `kofinsent baseline` sub-directory
        step.kind, step.name = "baseline", str(step.config["baseline"])
    run.steps.append(step)
    if (path / "compare.json").is_file():  # `kofinsent compare A B` writes B/compare.json by default
        data = read_json_file(path / "compare.json")
        if isinstance(data, dict):
            run.compares.append(("compare.json", data))
    # The test file the eval read, for per-stock / per-year figures: only when it is still the same file.
    data = step.config.get("data") or step.config.get("test")
    want = step.config.get("data_sha256") or step.config.get("test_sha256")
    if data and want and Path(data).is_file() and sha256_file(data) == want:
        run.test_items, run.test_file = _test_items(Path(data)), str(data)
        run.returns_file = _sibling_returns(Path(data), str(want))
        run.returns = _returns(Path(run.returns_file)) if run.returns_file else None
    elif data:
        run.notes.append(f"{run.label}: test file {data} is missing or changed since the run; "
                         "no per-stock / per-year figures for it")
    return run


def load_run(path: str | Path) -> Run:
    """One RUN_DIR; :class:`ReportError` naming the path when it is neither kind of run."""
    given = str(path)
    p = Path(path)
    if not p.is_dir():
        raise ReportError(f"{given}: not a directory")
    if (p / "config.toml").is_file() or (p / "run.json").is_file():
        return _experiment(p, given)
    if all((p / m).is_file() for m in RUN_MARKERS):
        return _bare(p, given)
    raise ReportError(f"{given}: not a run directory (expected config.toml or run.json of an experiment run, or "
                      "config.json + metrics.json + predictions.jsonl of an eval run)")


def load_runs(paths: list[str | Path]) -> list[Run]:
    if not paths:
        raise ReportError("no run directories given")
    runs = [load_run(p) for p in paths]
    seen: dict[str, int] = {}
    for r in runs:  # two RUN_DIRs with the same label would make citations ambiguous
        seen[r.label] = seen.get(r.label, 0) + 1
        if seen[r.label] > 1:
            r.label = f"{r.label}#{seen[r.label]}"
    return runs

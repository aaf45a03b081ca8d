"""Before the first step: is everything the steps of an experiment need here?

``kofinsent run`` (and ``--check``) call :func:`check` right after loading the config, so that a missing optional
package, a server that does not answer or a missing GPU stops the run before hours of crawling and training, with
one line per problem naming the steps that need it and the pip command that fixes it, instead of a traceback from
the step itself. Packages are looked up with :func:`importlib.util.find_spec` (nothing heavy is imported), servers
get one TCP connection. A package that is installed but broken still fails in its step.

What needs what is three small tables: :data:`PACKAGES` (import name -> how to install it, as in pyproject.toml),
:data:`BACKENDS` (eval backend -> packages and server) and :data:`ENGINES` (train engine -> packages).
"""
from __future__ import annotations

import socket
from collections.abc import Collection
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from kofinsent.backends.ollama import DEFAULT_HOST as OLLAMA_HOST
from kofinsent.backends.openai import DEFAULT_HOST as OPENAI_HOST
from kofinsent.experiment.config import ExperimentConfig
from kofinsent.export.quantize import FLOAT_TYPES


class Package(NamedTuple):
    dist: str          # what pip installs
    extra: str | None  # the extra of pyproject.toml that holds it; None: a core dependency
    note: str = ""


# import name -> how to get it (tests/experiment/test_preflight.py checks this against pyproject.toml)
PACKAGES: dict[str, Package] = {
    "gguf": Package("gguf", "gguf"),
    "llama_cpp": Package("llama-cpp-python", "gguf"),
    "ollama": Package("ollama", "ollama"),
    "unsloth": Package("unsloth", "gpu", " (on a CUDA machine)"),
    "bitsandbytes": Package("bitsandbytes", None),
    "kiwipiepy": Package("kiwipiepy", None),
}


@dataclass(frozen=True)
class BackendNeeds:
    modules: tuple[str, ...] = ()
    server: str | None = None  # the default URL of the server it talks to (eval.NAME.host replaces it)


# eval backend -> what it needs; every backend of kofinsent.backends.REGISTRY has a line (a test says so)
BACKENDS: dict[str, BackendNeeds] = {
    "hf": BackendNeeds(),
    "llamacpp": BackendNeeds(("llama_cpp",)),
    "ollama": BackendNeeds(("ollama",), OLLAMA_HOST),
    "openai": BackendNeeds(server=OPENAI_HOST),  # requests is a core dependency
}
# train engine -> packages (unsloth also needs CUDA, see requirements())
ENGINES: dict[str, tuple[str, ...]] = {"hf": (), "unsloth": ("unsloth",)}
SERVER_TIMEOUT = 2.0  # seconds to wait for a TCP connection


@dataclass(frozen=True)
class Module:
    name: str  # top-level import name


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    url: str = field(default="", compare=False)  # as configured, for the message


@dataclass(frozen=True)
class Cuda:
    pass


Requirement = Module | Server | Cuda


class PreflightError(Exception):
    """What the steps of an experiment need and this machine lacks: one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def pip_command(module: str) -> str:
    pkg = PACKAGES[module]
    return (f'pip install -e ".[{pkg.extra}]"' if pkg.extra else f"pip install {pkg.dist}") + pkg.note


def server_address(host: str | None, default: str) -> Server:
    """Where a backend connects, read as Ollama's client reads ``host``: without a scheme, the default's scheme and
    port apply (``gpu-box`` -> gpu-box:11434); with one, a missing port is 80 or 443."""
    url = host or default
    if "://" in url:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    else:
        d = urlsplit(default)
        parts = urlsplit(f"{d.scheme}://{url}")
        port = parts.port or d.port or 80
    return Server(parts.hostname or "localhost", port, url)


def requirements(cfg: ExperimentConfig, done: Collection[str] = ()) -> dict[Requirement, dict[str, str]]:
    """What the steps of ``cfg`` need beyond the core install: requirement -> {step: the table that asks for it}, in
    step order. Steps in ``done`` (done in the run being continued) need nothing."""
    needs: dict[Requirement, dict[str, str]] = {}

    def add(req: Requirement, step: str, table: str) -> None:
        if step not in done:
            needs.setdefault(req, {})[step] = table

    t = cfg.teacher
    if t is not None and not t.standin:  # a stand-in is served by the step itself
        for module in BACKENDS[t.backend].modules:
            add(Module(module), "teacher", "teacher")
        if BACKENDS[t.backend].server:
            add(server_address(t.host, BACKENDS[t.backend].server), "teacher", "teacher")
    for run, (name, _) in cfg.train_runs().items():  # a multi-seed table: one step per seed
        tr, step, table = cfg.train[name], f"train/{run}", f"train.{name}"
        if tr.load_in_8bit or tr.load_in_4bit:
            add(Module("bitsandbytes"), step, table)
        for module in ENGINES[tr.engine]:
            add(Module(module), step, table)
        if tr.engine == "unsloth":
            add(Cuda(), step, table)
    for name, e in cfg.export.items():
        step, table = f"export/{name}", f"export.{name}"
        # f16 / f32 are written with gguf; every other quant is made from one of them by llama-cpp-python
        add(Module("gguf"), step, table)
        if any(q.strip().lower() not in FLOAT_TYPES for q in e.quant if q.strip()):
            add(Module("llama_cpp"), step, table)
    for name, e in cfg.eval.items():
        backend, table = BACKENDS[e.backend], f"eval.{name}"
        # the table's own steps: a list-valued model or shots (or a multi-seed train) expands to one step each
        for run in cfg.model_copy(update={"eval": {name: e}}).eval_runs():
            step = f"eval/{run}"
            if e.load_in_8bit or e.load_in_4bit:
                add(Module("bitsandbytes"), step, table)
            for module in backend.modules:
                add(Module(module), step, table)
            if backend.server:
                add(server_address(e.host, backend.server), step, table)
    if cfg.baselines.enabled:
        add(Module("kiwipiepy"), "baselines", "baselines")  # a core dependency, but tfidf_kiwi fails late without it
    return needs


def installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ImportError:
        return False
    except ValueError:  # in sys.modules without a __spec__: imported already
        return True


def unreachable(server: Server, timeout: float = SERVER_TIMEOUT) -> str | None:
    """None when something accepts a TCP connection at the server's address, else why not."""
    try:
        with socket.create_connection((server.host, server.port), timeout=timeout):
            return None
    except OSError as e:
        return f"{server.host}:{server.port}: {e.strerror or e}"


def cuda_available() -> bool:
    import torch  # only asked when a step needs CUDA; the run imports torch anyway

    return torch.cuda.is_available()


def problems(cfg: ExperimentConfig, done: Collection[str] = ()) -> list[str]:
    """One line per missing requirement of the steps of ``cfg`` not in ``done``: which steps, what, and the fix."""
    out = []
    for req, uses in requirements(cfg, done).items():
        who = _steps(list(uses))
        verb = "needs" if len(uses) == 1 else "need"
        tables = list(dict.fromkeys(uses.values()))
        if isinstance(req, Module) and not installed(req.name):
            dist = PACKAGES[req.name].dist
            what = dist if dist == req.name else f"{dist} (import {req.name})"
            out.append(f"{who} {verb} {what}, which is not installed: {pip_command(req.name)}")
        elif isinstance(req, Server) and (why := unreachable(req)):
            out.append(f"{who} {verb} the server at {req.url} ({why}): start the server or set "
                       + " / ".join(f"{t}.host" for t in tables))
        elif isinstance(req, Cuda) and not cuda_available():
            out.append(f'{who} {verb} a CUDA GPU (engine = "unsloth") and torch sees none: run it on a machine with '
                       f'one, or set {" / ".join(f"{t}.engine" for t in tables)} = "hf"')
    return out


def check(cfg: ExperimentConfig, done: Collection[str] = ()) -> None:
    """Raise :class:`PreflightError` listing every problem :func:`problems` finds."""
    if found := problems(cfg, done):
        raise PreflightError(found)


def done_steps(cfg: ExperimentConfig, runs_root: str | Path, resume: str | Path | None = None,
               new: bool = False) -> set[str]:
    """The steps ``run_experiment(cfg, runs_root, resume, new)`` would skip: those done in the run of this config it
    continues (none for a new run, or for a directory of another config, which the run refuses anyway)."""
    from kofinsent.experiment.runner import ExperimentError, continued_run
    from kofinsent.runs import read_json

    try:
        run_dir = continued_run(cfg, runs_root, resume, new)
        state = read_json(run_dir / "run.json") if run_dir is not None else {}
    except (ExperimentError, OSError, ValueError):  # run_experiment itself reports a bad --resume
        return set()
    if state.get("config_sha256") != cfg.sha256():
        return set()
    return {step for step, s in state.get("steps", {}).items() if s.get("status") == "done"}


def _steps(steps: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``; long lists (a k-shot grid) as the first three and a count."""
    if len(steps) > 4:
        return f"{', '.join(steps[:3])} and {len(steps) - 3} more steps"
    return steps[0] if len(steps) == 1 else f"{', '.join(steps[:-1])} and {steps[-1]}"


__all__ = ["BACKENDS", "ENGINES", "PACKAGES", "Cuda", "Module", "PreflightError", "Server", "check", "done_steps",
           "pip_command", "problems", "requirements"]

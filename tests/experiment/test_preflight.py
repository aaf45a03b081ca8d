"""Preflight: `kofinsent run` (and `--check`) stop before the first step when something a step needs is missing.

A missing package is simulated as the import system sees one that is not installed: ``sys.modules[name] = None``
makes ``import name`` raise ModuleNotFoundError and ``importlib.util.find_spec(name)`` return None. Packages a test
needs present but this machine lacks get a stub module (only then), so the tests pass with or without the extras.
No model runs: the CLI tests replace the experiment's steps with none.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import socket
import sys
import tomllib
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kofinsent.backends import REGISTRY
from kofinsent.cli import app
from kofinsent.experiment import preflight
from kofinsent.experiment.config import load_config
from kofinsent.experiment.preflight import Cuda, Module, PreflightError, Server, requirements
from kofinsent.experiment.runner import Experiment
from kofinsent.runs import write_json

from .conftest import small_config

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "experiments" / "quickstart.toml"
SEED000 = ROOT / "experiments" / "seed000_llama3_gguf.toml"
GGUF_PIP = 'pip install -e ".[gguf]"'



def _cfg(*overrides: str):
    return small_config(*overrides)


def _steps(cfg, done=()) -> dict:
    return {req: list(uses) for req, uses in requirements(cfg, done).items()}


@pytest.fixture
def hide(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Make packages unimportable, as if they were not installed."""
    def _hide(*names: str) -> None:
        for name in names:
            monkeypatch.setitem(sys.modules, name, None)
            assert importlib.util.find_spec(name) is None
            with pytest.raises(ModuleNotFoundError):
                __import__(name)
    return _hide


@pytest.fixture
def have(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Make packages importable: a stub for each one this machine lacks, the real one otherwise."""
    def _have(*names: str) -> None:
        for name in names:
            if importlib.util.find_spec(name) is None:
                stub = types.ModuleType(name)
                stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
                monkeypatch.setitem(sys.modules, name, stub)
    return _have


@pytest.fixture
def no_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that gets past the preflight runs no step (nothing slow, even without the preflight)."""
    monkeypatch.setattr(Experiment, "steps", lambda self: [])


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: a connection is refused


@pytest.fixture
def open_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


# -- (a) what each step needs ----------------------------------------------------------------------------------------
def test_quickstart_needs() -> None:
    evals_8bit = ["eval/neox_lora", "eval/neox_lora_generate"]
    assert _steps(load_config(QUICKSTART)) == {
        Module("bitsandbytes"): ["train/neox_lora", *evals_8bit],
        Module("gguf"): ["export/llama"],
        Module("llama_cpp"): ["export/llama", "eval/llama_gguf_f16", "eval/llama_gguf_q8_0"],  # q8_0 is quantized
        Module("kiwipiepy"): ["baselines"],
    }


def test_seed000_needs_unsloth_cuda_and_every_expanded_eval_step() -> None:
    cfg = load_config(SEED000)
    needs = _steps(cfg)
    assert needs[Module("unsloth")] == needs[Cuda()] == ["train/llama3_unsloth"]
    assert needs[Module("bitsandbytes")] == ["train/llama3_unsloth"]  # load_in_4bit
    assert needs[Module("llama_cpp")] == ["export/llama3_ft"] + [f"eval/{r}" for r in cfg.eval_runs()]


def test_float_only_export_needs_gguf_alone_and_baselines_need_kiwipiepy() -> None:
    cfg = _cfg('models.m.arch="llama"', 'train.l.model="@models/m"', 'export.g.train="l"',
               'export.g.quant=["F16", "f32"]')
    assert _steps(cfg) == {Module("gguf"): ["export/g"]}
    assert _steps(_cfg("baselines.enabled=true")) == {Module("kiwipiepy"): ["baselines"]}


def test_ollama_needs_its_package_and_the_server_default_or_configured() -> None:
    cfg = _cfg('eval.chat.backend="ollama"', 'eval.chat.model="llama3"')
    assert _steps(cfg) == {Module("ollama"): ["eval/chat"], Server("localhost", 11434): ["eval/chat"]}
    cfg = _cfg('eval.chat.backend="ollama"', 'eval.chat.model="llama3"', 'eval.chat.host="gpu-box"')
    assert Server("gpu-box", 11434) in _steps(cfg)  # no port: Ollama's
    cfg = _cfg('eval.chat.backend="ollama"', 'eval.chat.model="llama3"', 'eval.chat.host="https://ollama.example"')
    assert Server("ollama.example", 443) in _steps(cfg)


def test_steps_done_in_the_continued_run_are_not_checked() -> None:
    assert _steps(load_config(QUICKSTART), done={"export/llama", "baselines"}) == {
        Module("bitsandbytes"): ["train/neox_lora", "eval/neox_lora", "eval/neox_lora_generate"],
        Module("llama_cpp"): ["eval/llama_gguf_f16", "eval/llama_gguf_q8_0"],
    }


def test_every_backend_has_a_line_in_the_table_and_every_package_a_pip_command() -> None:
    assert set(preflight.BACKENDS) == set(REGISTRY)
    named = {m for b in preflight.BACKENDS.values() for m in b.modules}
    named |= {m for ms in preflight.ENGINES.values() for m in ms}
    assert named <= set(preflight.PACKAGES)


def test_install_table_agrees_with_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    def names(reqs: list[str]) -> set[str]:
        return {r.split(">")[0].split("=")[0].split("[")[0].strip().lower() for r in reqs}

    for module, pkg in preflight.PACKAGES.items():
        where = project["optional-dependencies"][pkg.extra] if pkg.extra else project["dependencies"]
        assert pkg.dist in names(where), (module, pkg)
        assert preflight.pip_command(module).startswith(
            f'pip install -e ".[{pkg.extra}]"' if pkg.extra else f"pip install {pkg.dist}")


# -- (b) missing packages -------------------------------------------------------------------------------------------
def test_missing_packages_are_named_with_steps_and_pip_command(hide, have) -> None:
    have("bitsandbytes", "kiwipiepy")
    hide("gguf", "llama_cpp")
    with pytest.raises(PreflightError) as e:
        preflight.check(load_config(QUICKSTART))
    assert e.value.problems == [
        f"export/llama needs gguf, which is not installed: {GGUF_PIP}",
        "export/llama, eval/llama_gguf_f16 and eval/llama_gguf_q8_0 need llama-cpp-python (import llama_cpp), "
        f"which is not installed: {GGUF_PIP}",
    ]
    assert str(e.value) == "\n".join(e.value.problems)


def test_bitsandbytes_kiwipiepy_and_ollama(hide, have, open_port: int) -> None:
    have("gguf", "llama_cpp")
    hide("bitsandbytes", "kiwipiepy")
    lines = preflight.problems(load_config(QUICKSTART))
    assert lines == [
        "train/neox_lora, eval/neox_lora and eval/neox_lora_generate need bitsandbytes, which is not installed: "
        "pip install bitsandbytes",
        "baselines needs kiwipiepy, which is not installed: pip install kiwipiepy",
    ]
    hide("ollama")
    cfg = _cfg('eval.chat.backend="ollama"', 'eval.chat.model="llama3"', f'eval.chat.host="127.0.0.1:{open_port}"')
    assert preflight.problems(cfg) == [
        'eval/chat needs ollama, which is not installed: pip install -e ".[ollama]"']


def test_unsloth_without_the_gpu_extra_or_cuda(hide, have, monkeypatch: pytest.MonkeyPatch) -> None:
    have("bitsandbytes", "gguf", "llama_cpp", "kiwipiepy")
    hide("unsloth")
    monkeypatch.setattr(preflight, "cuda_available", lambda: False)
    monkeypatch.setattr(preflight, "unreachable", lambda server, timeout=0: None)  # the teacher's server is up
    assert preflight.problems(load_config(SEED000)) == [
        'train/llama3_unsloth needs unsloth, which is not installed: pip install -e ".[gpu]" (on a CUDA machine)',
        'train/llama3_unsloth needs a CUDA GPU (engine = "unsloth") and torch sees none: run it on a machine with '
        'one, or set train.llama3_unsloth.engine = "hf"',
    ]
    have("unsloth")
    monkeypatch.setattr(preflight, "cuda_available", lambda: True)
    assert preflight.problems(load_config(SEED000)) == []


def test_seed000_teacher_needs_its_server_and_a_stand_in_needs_nothing(have, closed_port: int,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(SEED000)
    assert _steps(cfg)[Server("localhost", 8000)] == ["teacher"]
    assert all("teacher" not in steps for steps in _steps(cfg, done={"teacher"}).values())
    url = f"http://127.0.0.1:{closed_port}/v1"
    have("bitsandbytes", "gguf", "llama_cpp", "kiwipiepy", "unsloth")
    monkeypatch.setattr(preflight, "cuda_available", lambda: True)
    (line,) = preflight.problems(load_config(SEED000, [f'teacher.host="{url}"']))
    assert line.startswith(f"teacher needs the server at {url} (127.0.0.1:{closed_port}: ")
    assert line.endswith("): start the server or set teacher.host")
    # the quickstart's stand-in is served by the step itself: nothing to check
    assert load_config(QUICKSTART).teacher.standin
    assert all("teacher" not in steps for steps in _steps(load_config(QUICKSTART)).values())


# -- (c) the command line --------------------------------------------------------------------------------------------
runner = CliRunner()


def _run(*args: object):
    return runner.invoke(app, ["run", str(QUICKSTART), *(str(a) for a in args)])


def _error_lines(r) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("check", [False, True], ids=["run", "check"])
def test_cli_stops_before_the_first_step(hide, have, no_steps, tmp_path: Path, check: bool) -> None:
    have("bitsandbytes", "llama_cpp", "kiwipiepy")
    hide("gguf")
    r = _run("--runs-dir", tmp_path, *(["--check"] if check else []))
    assert r.exit_code == 2, r.output
    assert _error_lines(r) == [f"error: export/llama needs gguf, which is not installed: {GGUF_PIP}"]
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)
    assert list(tmp_path.iterdir()) == []  # no run directory
    if check:
        assert 'name = "quickstart"' in r.stdout  # the resolved config is printed first
    else:
        assert "new run" not in r.stdout


def test_cli_one_error_line_per_problem_and_skipping_the_preflight(hide, have, no_steps, tmp_path: Path) -> None:
    have("bitsandbytes", "kiwipiepy")
    hide("gguf", "llama_cpp")
    r = _run("--runs-dir", tmp_path)
    lines = _error_lines(r)
    assert r.exit_code == 2 and len(lines) == 2 and all(line.startswith("error: ") for line in lines), r.output
    assert "gguf" in lines[0] and "llama-cpp-python" in lines[1]
    r = _run("--runs-dir", tmp_path, "--no-preflight")
    assert r.exit_code == 0, r.output  # the (stubbed) run goes ahead
    assert len(list((tmp_path / "quickstart").iterdir())) == 1


def test_cli_resumed_run_skips_checks_of_done_steps(hide, have, no_steps, tmp_path: Path) -> None:
    have("bitsandbytes", "llama_cpp", "kiwipiepy")
    hide("gguf")
    run = tmp_path / "quickstart" / "20260101T000000Z-abcdef0"
    run.mkdir(parents=True)
    write_json(run / "run.json", {"experiment": "quickstart", "config_sha256": load_config(QUICKSTART).sha256(),
                                  "steps": {"export/llama": {"status": "done"}}})
    r = _run("--runs-dir", tmp_path, "--check")
    assert r.exit_code == 0, r.output
    r = _run("--runs-dir", tmp_path)
    assert r.exit_code == 0 and f"resuming {run}" in r.stdout, r.output
    # a fresh run would export again
    r = _run("--runs-dir", tmp_path, "--new")
    assert r.exit_code == 2 and "export/llama needs gguf" in r.stderr, r.output
    assert [p.name for p in (tmp_path / "quickstart").iterdir()] == [run.name]


def test_seed000_check_passes_where_everything_is_there(have, no_steps, open_port: int, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`kofinsent run experiments/seed000_llama3_gguf.toml --check` on a machine with the gpu and gguf extras, CUDA
    and the teacher's server (here a listening port): the resolved config, [teacher] included, and exit 0."""
    have("bitsandbytes", "gguf", "llama_cpp", "kiwipiepy", "unsloth")
    monkeypatch.setattr(preflight, "cuda_available", lambda: True)
    r = runner.invoke(app, ["run", str(SEED000), "--runs-dir", str(tmp_path), "--check",
                            f'teacher.host="http://127.0.0.1:{open_port}/v1"'])
    assert r.exit_code == 0, r.output
    resolved = tomllib.loads(r.stdout)
    assert resolved["teacher"]["model"] == "meta-llama/Meta-Llama-3-70B-Instruct" and "api_key" not in r.stdout
    assert resolved["train"]["llama3_unsloth"]["data"] == "@teacher/sharegpt.jsonl"
    assert list(tmp_path.iterdir()) == []  # --check runs nothing


# -- (d) servers ----------------------------------------------------------------------------------------------------
def test_ollama_server_that_does_not_answer(have, closed_port: int) -> None:
    have("ollama")
    url = f"http://127.0.0.1:{closed_port}"
    cfg = _cfg('eval.chat.backend="ollama"', 'eval.chat.model="llama3"', f'eval.chat.host="{url}"',
               'eval.chat.method="generate"', 'eval.chat.shots=[0, 5]', 'eval.chat.prompt="kshot"')
    (line,) = preflight.problems(cfg)
    assert line.startswith(f"eval/chat-0shot and eval/chat-5shot need the server at {url} "
                           f"(127.0.0.1:{closed_port}: ")
    assert line.endswith("): start the server or set eval.chat.host")


def test_ollama_server_that_listens(have, open_port: int) -> None:
    have("ollama")
    cfg = _cfg('eval.chat.backend="ollama"', 'eval.chat.model="llama3"', f'eval.chat.host="127.0.0.1:{open_port}"')
    assert preflight.problems(cfg) == []

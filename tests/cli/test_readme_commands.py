"""Every command in the README still names a real command and real options (issue 16: "every command in the README
keeps working" through the re-layout). ``kofinsent`` lines are checked against the Typer app's command tree,
``kofinsent run`` lines also load their experiment with the overrides they give, and script lines name files that
exist. Running them needs data and models, which the quickstart and the rest of the suite cover."""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from kofinsent.cli import app
from kofinsent.experiment.config import load_config

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"```(?:bash|sh|shell|console)?\n(.*?)```", re.S)


def readme_commands() -> list[str]:
    """The shell lines of the README's code blocks (continuations joined, comments and ``[optional]`` parts cut)."""
    lines: list[str] = []
    for block in FENCE.findall((ROOT / "README.md").read_text(encoding="utf-8")):
        for raw in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s#.*$", "", raw).strip().removeprefix("$ ").rstrip("&").strip()
            line = re.sub(r"\[[^\]]*\]", "", line).strip()
            if re.match(r"(kofinsent |python -m |python benchmarks/|bash benchmarks/)", line):
                lines.append(line)
    return lines


COMMANDS = readme_commands()
KOFINSENT = [c for c in COMMANDS if c.startswith("kofinsent ")]


def resolve(args: list[str]) -> tuple[Any, list[str]]:
    """The command the arguments reach, and the arguments left for it (Typer's own click: groups have ``commands``)."""
    cmd: Any = typer.main.get_command(app)
    while hasattr(cmd, "commands") and args and args[0] in cmd.commands:
        cmd, args = cmd.commands[args[0]], args[1:]
    return cmd, args


def test_the_readme_has_commands_to_check() -> None:
    assert len(KOFINSENT) >= 30, COMMANDS
    assert {c.split()[1] for c in KOFINSENT} >= {"crawl", "dataset", "eval", "train", "export", "run", "report",
                                                  "baseline", "compare"}


@pytest.mark.parametrize("line", KOFINSENT)
def test_readme_kofinsent_command_names_a_command_and_its_options(line: str) -> None:
    cmd, rest = resolve(shlex.split(line)[1:])
    group = cmd.name or "kofinsent"
    assert not hasattr(cmd, "commands"), f"{line!r} reaches no command (it stops at the group {group!r})"
    known = {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
    used = [a.split("=", 1)[0] for a in rest if a.startswith("--")]
    unknown = [o for o in used if o not in known]
    assert not unknown, f"{line!r}: {unknown} are not options of {cmd.name!r}"


@pytest.mark.parametrize("line", [c for c in KOFINSENT if c.startswith("kofinsent run ")])
def test_readme_run_command_loads_its_experiment(line: str) -> None:
    path, *overrides = [a for a in shlex.split(line)[2:] if not a.startswith("--")]
    load_config(ROOT / path, overrides)


@pytest.mark.parametrize("line", [c for c in COMMANDS if not c.startswith("kofinsent ")])
def test_readme_script_command_names_a_file_that_exists(line: str) -> None:
    words = shlex.split(line)
    if words[:2] == ["python", "-m"]:
        module = words[2]
        assert (ROOT / module.replace(".", "/")).with_suffix(".py").exists() or \
            (ROOT / module.replace(".", "/") / "__main__.py").exists() or module == "pytest", line
    else:
        assert (ROOT / words[1]).is_file(), line

"""Names that become paths, deletes that stay where they belong, and outputs that never land on inputs.

Every kofinsent command that deletes or overwrites goes through here, because each of these used to go wrong:

* A config table name becomes a directory (``[models.NAME]`` -> ``<run>/models/NAME``), and the runner clears that
  directory before a step runs. ``[models."../../../../victim"]`` therefore deleted a directory outside the run.
  :func:`check_name` admits only plain names: ``^[A-Za-z0-9][A-Za-z0-9_.-]*$`` without ``..`` (no separators, no
  parent references, nothing hidden or option-like).
* :func:`remove_tree` / :func:`remove_file` resolve the target (symlinks followed) and refuse anything that is not
  strictly inside the directory the caller owns, so neither a bad name nor a symlinked sub-directory can point a
  delete elsewhere.
* ``--out X --data X`` replaced the input with the output. :func:`refuse_output_over_input` refuses an output file
  that is an input (by any spelling: ``..``, a symlink, a hard link) and an output directory that is, or holds, an
  input.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
NAME_RULE = f"a name that becomes a path must match {NAME_PATTERN} without '..'"
# fullmatch, not the pattern's $: in Python's re, $ also matches before a trailing newline
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*", re.ASCII)

StrPath = str | os.PathLike[str]


class UnsafePathError(ValueError):
    """A delete (or a directory to clear) that would reach outside the directory the caller owns."""


class OutputOverInputError(ValueError):
    """An output path that would overwrite, or clear, one of the command's own inputs."""


# -- names ---------------------------------------------------------------------------------------------------------
def is_safe_name(name: object) -> bool:
    """True for a plain file or directory name: letters, digits, ``_ . -``, a letter or digit first, no ``..``."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None and ".." not in name


def check_name(name: str, what: str) -> str:
    """``name`` when it is a plain name (:func:`is_safe_name`); else a ValueError that starts with ``what`` (the key,
    e.g. ``models."../x"``), so that the user sees which table or option to change."""
    if not is_safe_name(name):
        raise ValueError(f"{what}: {NAME_RULE}")
    return name


def table_key(table: str, name: str) -> str:
    """How a config table is written in TOML, quoted so that an odd name shows exactly: ``models."../x"``."""
    return f"{table}.{json.dumps(name, ensure_ascii=False)}"


# -- where a path really is ----------------------------------------------------------------------------------------
def _real(path: StrPath) -> Path:
    # resolve() follows every symlink on the way and removes '..' after that, as the OS does when it opens the path
    return Path(path).expanduser().resolve()


def is_inside(path: StrPath, root: StrPath, *, strict: bool = True) -> bool:
    """Whether ``path`` resolves to a place inside ``root`` (resolved too); with ``strict`` root itself is not."""
    p, r = _real(path), _real(root)
    return (p != r and p.is_relative_to(r)) if strict else p.is_relative_to(r)


def require_inside(path: StrPath, root: StrPath, what: str = "path") -> Path:
    """``path`` when it resolves strictly inside ``root``; else :class:`UnsafePathError` naming both."""
    if not is_inside(path, root):
        raise UnsafePathError(f"refusing {what} {str(path)!r}: it resolves to {str(_real(path))!r}, outside "
                              f"{str(_real(root))!r}")
    return Path(path)


# -- guarded removal -----------------------------------------------------------------------------------------------
def remove_tree(target: StrPath, root: StrPath, *, missing_ok: bool = True, ignore_errors: bool = False) -> None:
    """``shutil.rmtree(target)``, only when ``target`` resolves strictly inside ``root``.

    A symlink is refused even when it points inside: rmtree would refuse it anyway, and the caller meant to clear a
    directory of its own, not whatever a link leads to. ``ignore_errors`` is passed on to rmtree (for temporary
    directories); the check itself always raises.
    """
    target = Path(target)
    require_inside(target, root, "to remove the directory")
    if target.is_symlink():
        raise UnsafePathError(f"refusing to remove the directory {str(target)!r}: it is a symbolic link to "
                              f"{os.readlink(target)!r}")
    if not target.exists() and missing_ok:
        return
    shutil.rmtree(target, ignore_errors=ignore_errors)


def remove_file(target: StrPath, root: StrPath, *, missing_ok: bool = False) -> None:
    """``os.unlink(target)``, only when the directory entry lies strictly inside ``root``.

    The parent directories are resolved (a symlinked directory on the way is followed), the last part is not: unlink
    removes a symlink itself, never the file it points to, so a link that lives inside ``root`` is ``root``'s to
    remove.
    """
    target = Path(target)
    if target.name in ("", ".", ".."):
        raise UnsafePathError(f"refusing to remove {str(target)!r}: not a file name")
    entry = _real(target.parent) / target.name
    if not (entry != _real(root) and entry.is_relative_to(_real(root))):
        raise UnsafePathError(f"refusing to remove the file {str(target)!r}: it is {str(entry)!r}, outside "
                              f"{str(_real(root))!r}")
    try:
        os.unlink(entry)
    except FileNotFoundError:
        if not missing_ok:
            raise


# -- outputs over inputs -------------------------------------------------------------------------------------------
def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # also a hard link, which no path comparison sees
    except OSError:  # one of them does not exist (yet)
        return _real(a) == _real(b)


def refuse_output_over_input(out: StrPath, inputs: Mapping[str, StrPath | None], *, out_flag: str = "--out",
                             directory: bool = False) -> None:
    """Raise :class:`OutputOverInputError` naming ``out_flag`` and the input's flag when writing ``out`` would
    overwrite an input.

    ``inputs`` maps a flag (``"--data"``) to its path; None and paths that do not exist (a hub id, an optional flag
    left out) are skipped: what is not on disk cannot be overwritten. For a file output (``directory=False``) the
    output may not be an input file by any spelling. For a directory the command writes into (and may clear files
    of), the directory may not be an input, nor hold one anywhere below it. ``out`` need not exist yet.
    """
    out = Path(out)
    for flag, value in inputs.items():
        if value is None or not Path(value).exists():
            continue
        src = Path(value)
        if _same_file(out, src):
            raise OutputOverInputError(f"{out_flag} {str(out)!r} is {flag} {str(src)!r}: the output would overwrite "
                                       f"the input; choose another {out_flag}")
        if directory and is_inside(src, out):
            raise OutputOverInputError(f"{out_flag} {str(out)!r} holds {flag} {str(src)!r}: writing the output "
                                       f"there could overwrite the input; choose another {out_flag}")


__all__ = ["NAME_PATTERN", "NAME_RULE", "OutputOverInputError", "UnsafePathError", "check_name", "is_inside",
           "is_safe_name", "refuse_output_over_input", "remove_file", "remove_tree", "require_inside", "table_key"]

"""One way for every ``kofinsent`` sub-command to report a failure the user can fix."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer


@contextmanager
def one_line_errors(*expected: type[BaseException]) -> Iterator[None]:
    """Turn ``expected`` errors (and bad paths / values) into one ``error: ...`` line on stderr and exit 2; a message
    of several lines (several problems found at once) is one ``error:`` line each. An error that names its own
    ``prefix`` and ``exit_code`` (the crawler's: ``blocked:`` / ``rate-limited:``, exit 3) keeps them.

    Anything else is a bug and keeps its traceback.
    """
    try:
        yield
    except (*expected, FileNotFoundError, ValueError) as e:
        prefix = getattr(e, "prefix", "error")
        for line in str(e).splitlines() or [""]:
            typer.echo(f"{prefix}: {line}", err=True)
        raise typer.Exit(getattr(e, "exit_code", 2)) from None

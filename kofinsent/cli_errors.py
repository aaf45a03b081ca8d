"""One way for every ``kofinsent`` sub-command to report a failure the user can fix."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer


@contextmanager
def one_line_errors(*expected: type[BaseException]) -> Iterator[None]:
    """Turn ``expected`` errors (and bad paths / values) into one ``error: ...`` line on stderr and exit 2.

    Anything else is a bug and keeps its traceback.
    """
    try:
        yield
    except (*expected, FileNotFoundError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None

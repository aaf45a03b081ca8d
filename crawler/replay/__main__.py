"""``python -m crawler.replay [options]``: the same command as ``kofinsent crawl replay``, with the same options.

The options are declared once, on the Typer command in :mod:`crawler.cli`; this wrapper only runs that one command
without the ``crawl replay`` prefix, so the scripts and docs that start the site this way keep working.
"""
from __future__ import annotations

import typer

from crawler.cli import replay

PROG = "python -m crawler.replay"


def main(argv: list[str] | None = None) -> int:
    """Run the replay command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status (2: bad usage)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(replay)
    try:
        typer.main.get_command(app).main(args=argv, prog_name=PROG)
    except SystemExit as e:  # click ends every run, a clean one included, with SystemExit
        return e.code if isinstance(e.code, int) else 1 if e.code else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

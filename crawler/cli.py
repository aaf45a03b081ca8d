"""``kofinsent crawl ...`` commands (placeholder app object; commands are added below)."""
from __future__ import annotations

import typer

app = typer.Typer(help="Crawl forum posts, daily prices and the stock universe from Naver.", no_args_is_help=True)

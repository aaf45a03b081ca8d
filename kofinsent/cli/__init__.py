"""The ``kofinsent`` command. Each stage is a sub-app defined next to the code it drives."""
from __future__ import annotations

import typer

from crawler.cli import app as crawl_app
from kofinsent.cli.dataset import app as dataset_app
from kofinsent.cli.eval import register as register_eval
from kofinsent.cli.export import app as export_app
from kofinsent.cli.report import register as register_report
from kofinsent.cli.run import register as register_run
from kofinsent.cli.train import register as register_train

app = typer.Typer(
    help="kofinsent: crawl Naver stock-forum titles, build labelled datasets, fine-tune and evaluate models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(crawl_app, name="crawl")
app.add_typer(dataset_app, name="dataset")
register_eval(app)
register_train(app)
app.add_typer(export_app, name="export")
register_run(app)
register_report(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

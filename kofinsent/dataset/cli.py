"""``kofinsent dataset ...`` commands. Heavy imports (pandas, numpy, pyarrow) happen inside the commands."""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    help="Build labelled [상승]/[하락] datasets from a crawler db, and export them for fine-tuning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class Rule(str, Enum):
    same_day = "same-day"
    next_session = "next-session"


class Split(str, Enum):
    random = "random"
    chronological = "chronological"


class Reply(str, Enum):
    label = "label"
    json = "json"


def _fail(e: Exception) -> None:
    """One ``error:`` line and exit 2, as every kofinsent command; what was there before stays untouched."""
    typer.echo(f"error: {' '.join(str(e).split())}", err=True)
    raise typer.Exit(2)


@app.command()
def build(
    db: Annotated[Path, typer.Option(help="crawler SQLite db (`kofinsent crawl ... --db`)")],
    rule: Annotated[Rule, typer.Option(help="same-day: the seed's label (close of the post's day vs the previous "
                                            "close); next-session: the first session the post could not have seen "
                                            "(15:30 KST cutoff)")],
    out: Annotated[Path, typer.Option(help="output folder: train/test .jsonl and .parquet, datasheet.json/.md")],
    per_label: Annotated[int, typer.Option(help="posts drawn per label; 0 keeps every labelled post "
                                                "(unbalanced)")] = 15_000,
    split: Annotated[Split, typer.Option(help="random (the seed's) or chronological (latest posts in test)")]
        = Split.random,
    test_size: Annotated[float, typer.Option(help="test fraction (ignored with --cutoff)")] = 0.01,
    cutoff: Annotated[Optional[str], typer.Option(help="chronological only: test = posts on/after this KST date "
                                                       "(YYYY-MM-DD)")] = None,
    seed: Annotated[int, typer.Option(help="seed for sampling and the random split")] = 42,
    dedupe: Annotated[bool, typer.Option("--dedupe", help="drop repeated titles within a stock (keeps the "
                                                          "earliest labelled post)")] = False,
    relevance_filter: Annotated[Optional[Path], typer.Option(
        help="TOML/JSON rules that drop off-topic titles (politics, ads, ...), each rule's removals counted; "
             "example: kofinsent/dataset/relevance_example.toml")] = None,
    group_by_day: Annotated[bool, typer.Option("--group-by-day", help="keep each KST day's posts on one side of "
                                                                      "the split")] = False,
    stratify_stock: Annotated[bool, typer.Option("--stratify-stock", help="split each stock (and label) in "
                                                                          "proportion")] = False,
    allow_fewer: Annotated[bool, typer.Option("--allow-fewer", help="when a label has fewer posts than "
                                                                    "--per-label, take as many as the smaller label "
                                                                    "has instead of failing")] = False,
    allow_missing_prices: Annotated[bool, typer.Option("--allow-missing-prices", help="drop (and count) posts "
                                                       "whose stock has no prices for the day their label needs, "
                                                       "instead of failing")] = False,
    progress: Annotated[bool, typer.Option(help="progress bars on stderr")] = True,
) -> None:
    """Label posts with price moves, sample per label, split, and write the dataset and its datasheet."""
    from crawler.errors import CrawlerError

    from .build import build_dataset
    from .errors import DatasetError

    try:
        sheet = build_dataset(
            db, out, rule.value, per_label=per_label, split=split.value, test_size=test_size, cutoff=cutoff,
            seed=seed, dedupe=dedupe, relevance_filter=relevance_filter, group_by_day=group_by_day,
            stratify_stock=stratify_stock, allow_fewer=allow_fewer, allow_missing_prices=allow_missing_prices,
            progress=progress,
        )
    except (DatasetError, CrawlerError, OSError) as e:
        _fail(e)
    c = sheet["counts"]
    labels = ", ".join(f"{k} {v}" for k, v in c["by_label"].items())
    typer.echo(f"wrote {out}: train {c['by_split']['train']}, test {c['by_split']['test']} ({labels}); "
               f"see {Path(out) / 'datasheet.md'}")


@app.command()
def sharegpt(
    data: Annotated[Path, typer.Option(help="a dataset JSONL, e.g. DIR/train.jsonl")],
    out: Annotated[Path, typer.Option(help="output JSONL: one {\"conversations\": [system, human, gpt]} per line")],
    reply: Annotated[Reply, typer.Option(help="gpt turn: the label, or seed 000's JSON reply (reasoning is a "
                                              "fixed sentence saying the answer comes from the price label)")]
        = Reply.label,
    confidence: Annotated[float, typer.Option(help="--reply json: the constant confidence value")] = 1.0,
) -> None:
    """Write a ShareGPT JSONL for Unsloth (load it with datasets' json loader, then standardize_sharegpt)."""
    from ..paths import OutputOverInputError
    from .errors import DatasetError
    from .sharegpt import export_sharegpt

    try:
        n = export_sharegpt(data, out, reply.value, confidence)
    except (DatasetError, OutputOverInputError, OSError) as e:
        _fail(e)
    typer.echo(f"wrote {out}: {n} conversations")


def main() -> None:  # pragma: no cover - `python -m kofinsent.dataset.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

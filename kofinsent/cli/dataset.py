"""``kofinsent dataset ...`` commands. Heavy imports (pandas, numpy, pyarrow) happen inside the commands."""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from kofinsent.cli.options import FromParam, StageOptions, choice, text

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
    cutoff: Annotated[str | None, typer.Option(help="chronological only: test = posts on/after this KST date "
                                                       "(YYYY-MM-DD)")] = None,
    seed: Annotated[int, typer.Option(help="seed for sampling and the random split")] = 42,
    dedupe: Annotated[bool, typer.Option("--dedupe", help="drop repeated titles within a stock (keeps the "
                                                          "earliest labelled post)")] = False,
    relevance_filter: Annotated[Path | None, typer.Option(
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
    from kofinsent.dataset.build import build_dataset
    from kofinsent.dataset.errors import DatasetError

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
    reply: Annotated[Reply, typer.Option(help="gpt turn: the label, or the label in seed 000's JSON reply shape "
                                              "(constant sentiment +-1, a fixed reasoning sentence saying the "
                                              "answer comes from the price label)")]
        = Reply.label,
    confidence: Annotated[float, typer.Option(help="--reply json: the constant confidence value")] = 1.0,
) -> None:
    """Write the PRICE-LABEL ShareGPT JSONL for Unsloth: constant targets from the price label, a Korean system
    prompt and [제목] turns. Not seed 000's data (its replies come from a teacher and its chat is the evaluator's:
    `kofinsent dataset teacher` writes that sharegpt.jsonl)."""
    from kofinsent.dataset.errors import DatasetError
    from kofinsent.dataset.sharegpt import export_sharegpt
    from kofinsent.paths import OutputOverInputError

    try:
        n = export_sharegpt(data, out, reply.value, confidence)
    except (DatasetError, OutputOverInputError, OSError) as e:
        _fail(e)
    typer.echo(f"wrote {out}: {n} conversations (price-label targets, not seed 000's teacher data: see "
               "`kofinsent dataset teacher`)")


class TeacherFormat(str, Enum):
    schema = "schema"
    free = "free"


# kofinsent dataset teacher's options are TeacherConfig's fields (kofinsent.cli.options); these differ in name or shape
TEACHER_OPTIONS = StageOptions(
    renamed={"data": FromParam("data", text), "out": FromParam("out", text), "format": FromParam("fmt", choice)},
    not_options={"synthetic": "set by the experiment runner for its stand-in teacher ([teacher] standin = true)"})


@app.command()
def teacher(
    backend: Annotated[str, typer.Option(help="the teacher's backend: openai (any OpenAI-compatible server; key from "
                                              "OPENAI_API_KEY), ollama, llamacpp or hf (a model with a chat "
                                              "template)")],
    model: Annotated[str, typer.Option(help="model name on the server; GGUF path; HF path or hub id")],
    data: Annotated[Path, typer.Option(help="a dataset JSONL, e.g. DIR/train.jsonl (id, title, name)")],
    out: Annotated[Path, typer.Option(help="output folder: teacher.jsonl, sharegpt.jsonl, datasheet.json/.md, "
                                           "teacher_config.json")],
    host: Annotated[str | None, typer.Option(help="openai: the API base, e.g. http://localhost:8000/v1; ollama: "
                                                  "the server URL")] = None,
    max_attempts: Annotated[int, typer.Option(help="replies asked per record; an invalid one is asked again with "
                                                   "the next seed")] = 3,
    concurrency: Annotated[int | None, typer.Option(help="openai: requests in flight (default 4)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the first attempt; attempt k sends seed + k - 1")] = 0,
    fmt: Annotated[TeacherFormat, typer.Option("--format", help="schema: the reply's JSON schema constrains "
                                                                "decoding; free: it does not")] = TeacherFormat.schema,
    temperature: Annotated[float, typer.Option(help="sampling temperature (seed 000: 0.2)")] = 0.2,
    max_new_tokens: Annotated[int, typer.Option(help="reply length limit in tokens (seed 000: 1024)")] = 1024,
    n_gpu_layers: Annotated[int | None, typer.Option(help="llamacpp: layers on the GPU (-1 all; default: all when "
                                                          "built with GPU offload, else 0)")] = None,
    n_ctx: Annotated[int | None, typer.Option(help="llamacpp: context window in tokens (default 8192)")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="start over: delete this command's own files in "
                                                                "--out first")] = False,
    progress: Annotated[bool, typer.Option(help="progress bar on stderr")] = True,
) -> None:
    """Ask a teacher model for seed 000's JSON reply about each title (naming the stock); keep the strictly valid
    ones. Resumable: the same command again goes on where it stopped."""
    params = dict(locals())  # the options by name, before any other local exists
    from kofinsent.backends.base import BackendError
    from kofinsent.cli.errors import one_line_errors
    from kofinsent.dataset.errors import DatasetError
    from kofinsent.dataset.teacher import TEACHER_FILE, TeacherConfig, run_teacher
    from kofinsent.paths import OutputOverInputError

    cfg = TEACHER_OPTIONS.build(TeacherConfig, params)
    with one_line_errors(DatasetError, OutputOverInputError, OSError):
        try:
            sheet, new = run_teacher(cfg, progress=progress)
        except BackendError as e:  # one line (``rate-limited:`` exit 3 keeps its own), then what is kept
            prefix = getattr(e, "prefix", "error")
            for line in str(e).splitlines() or [""]:
                typer.echo(f"{prefix}: {line}", err=True)
            path = out / TEACHER_FILE
            done = sum(1 for _ in path.open(encoding="utf-8", errors="replace")) if path.is_file() else 0
            if done:
                typer.echo(f"{done} records are labelled in {path}; the same command (no --resume needed) goes on "
                           "from there", err=True)
            raise typer.Exit(getattr(e, "exit_code", 2)) from None
    c, t = sheet["counts"], sheet["tokens"]
    if new == 0:
        typer.echo(f"{out}: all {c['records']} records were labelled already; nothing was requested")
    typer.echo(f"wrote {out}: {c['accepted']} accepted ({c['accepted_after_retry']} after a retry), {c['dropped']} "
               f"dropped; {t['prompt']} prompt + {t['completion']} completion tokens; see "
               f"{Path(out) / 'datasheet.md'}")


def main() -> None:  # pragma: no cover - `python -m kofinsent.cli.dataset`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``kofinsent eval`` / ``baseline`` / ``compare``: thin typer wrappers over :mod:`kofinsent.evaluation.evaluate`.

Each refuses an ``--out`` that would write over its own inputs (:func:`kofinsent.paths.refuse_output_over_input`)
before anything is read or written: with ``--overwrite`` a run directory's files are deleted first, so an input kept
there would be gone even if the command then failed.
"""
from __future__ import annotations

import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated

import typer

from kofinsent.cli.options import FromParam, StageOptions, text

STARTED = time.perf_counter()


def _errors() -> AbstractContextManager[None]:
    from kofinsent.backends.base import BackendError  # imported here: `kofinsent --help` stays light
    from kofinsent.cli.errors import one_line_errors
    from kofinsent.evaluation.options import EvalConfigError
    from kofinsent.runs import RunDirError

    return one_line_errors(BackendError, EvalConfigError, RunDirError)


def _progress(total: int, desc: str):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="item", file=sys.stderr, disable=None, dynamic_ncols=True)
    return bar


def _print_metrics(m: dict) -> None:
    if m.get("context_exceeded"):
        typer.echo(f"warning: {m['context_exceeded']} requests did not fit the model's context and were "
                   "left-truncated (counted as context_exceeded in metrics.json)", err=True)
    acc = m.get("accuracy")
    if acc is None:
        return
    lo, hi = m.get("accuracy_ci95") or (float("nan"), float("nan"))
    n = f"n={m.get('n')}"
    if m.get("n_predictions", m.get("n")) != m.get("n"):  # several predictions per item: the interval is over items
        n += f" items ({m['n_predictions']} predictions)"
    line = f"{n} accuracy={acc:.3f} (95% CI {lo:.3f}-{hi:.3f})"
    for key in ("macro_f1", "mcc", "invalid_rate", "valid_json_rate", "mean_sentiment", "sentiment_variance",
                "items_per_s"):
        if m.get(key) is not None:
            line += f" {key}={m[key]:.3g}"
    typer.echo(line)


def _parse_batch_size(value: str | None) -> int | str | None:
    if value is None or value.strip().lower() == "auto":
        return None if value is None else "auto"
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"--batch-size must be a positive integer or auto, got {value!r}") from None


def _parse_seeds(value: str) -> list[int]:
    try:
        return [int(s) for s in value.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--fewshot-seeds must be comma-separated integers, got {value!r}") from None


# kofinsent eval's options are EvalConfig's fields (kofinsent.cli.options); these differ in name or shape
EVAL_OPTIONS = StageOptions(renamed={
    "data": FromParam("data", text), "out": FromParam("out", text), "train": FromParam("train", text),
    "fewshot_seeds": FromParam("fewshot_seeds", _parse_seeds), "batch_size": FromParam("batch_size", _parse_batch_size),
    "format": FromParam("fmt"),
})


def eval_command(
    backend: Annotated[str, typer.Option("--backend", help="hf, llamacpp, ollama or openai (an OpenAI-compatible "
                                                          "server; key from OPENAI_API_KEY).")],
    model: Annotated[str, typer.Option("--model", help="HF path or hub id; GGUF path; Ollama or OpenAI-server "
                                                      "model name.")],
    data: Annotated[Path, typer.Option("--data", help="Test split, DIR/test.jsonl.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to write.")],
    method: Annotated[str, typer.Option("--method", help="loglikelihood, generate or sentiment.")] = "loglikelihood",
    prompt: Annotated[str, typer.Option("--prompt", help="seed2shot, kshot or sentiment-json.")] = "seed2shot",
    adapter: Annotated[str | None, typer.Option("--adapter", help="PEFT adapter dir (hf).")] = None,
    load_in_8bit: Annotated[bool, typer.Option("--load-in-8bit", help="8-bit base weights (bitsandbytes).")] = False,
    load_in_4bit: Annotated[bool, typer.Option("--load-in-4bit", help="4-bit base weights (bitsandbytes).")] = False,
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, float16, bfloat16 (hf).")] = "auto",
    train: Annotated[Path | None, typer.Option("--train", help="Train split for kshot examples.")] = None,
    shots: Annotated[int, typer.Option("--shots", help="K for --prompt kshot (0, 5, 10, 50).")] = 0,
    fewshot_seeds: Annotated[str, typer.Option("--fewshot-seeds", help="Comma-separated seeds.")] = "1,2,3",
    balanced_shots: Annotated[bool, typer.Option(
        "--balanced-shots/--no-balanced-shots", help="kshot: K/2 examples of each label (the default), or K drawn "
                                                     "from the whole train split.")] = True,
    iterations: Annotated[int, typer.Option("--iterations", help="Repeats per item (sentiment).")] = 1,
    batch_size: Annotated[str | None, typer.Option(
        "--batch-size", help="Rows per forward pass, or auto: batches by a token budget, longest first, the largest "
                             "that fits (hf; found once by halving on CUDA out-of-memory and cached per model and "
                             "device; llamacpp/ollama/openai: 16). Default: auto on CUDA, 16 on CPU.")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Ollama server URL; openai: the API base, "
                                                               "e.g. http://localhost:8000/v1.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="Sentiment: schema (constrained) or free.")] = "schema",
    concurrency: Annotated[int, typer.Option("--concurrency", help="openai: requests in flight at once.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed (sent with every request).")] = 0,
    prefix_cache: Annotated[bool, typer.Option(
        "--prefix-cache/--no-prefix-cache", help="hf, llamacpp: run the shared prompt once (the default), or the "
                                                 "plain lm-eval-style path.")] = True,
    n_gpu_layers: Annotated[int | None, typer.Option(
        "--n-gpu-layers", help="llamacpp: layers offloaded to the GPU (-1 all, 0 none). Default: all when "
                               "llama-cpp-python was built with GPU offload, else 0.")] = None,
    n_ctx: Annotated[int | None, typer.Option("--n-ctx", help="llamacpp: context window in tokens. "
                                                                  "Default: 8192 (seed 000's num_ctx).")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(
        "--max-new-tokens", help="Reply length limit in tokens. Default: 8 (generate), 1024 (sentiment).")] = None,
    temperature: Annotated[float | None, typer.Option(
        "--temperature", help="Sampling temperature, 0 to 2. Default: 0, greedy (generate); 0.2 (sentiment, "
                              "seed 000's).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N test items.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run already in --out.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --out (same options); "
                                                          "a complete one is left as it is.")] = False,
) -> None:
    """Evaluate one model on the test split; writes config.json, predictions.jsonl and metrics.json to --out."""
    params = dict(locals())  # the options by name, before any other local exists
    with _errors():
        from kofinsent.evaluation.evaluate import evaluate, progress_total
        from kofinsent.evaluation.options import EvalConfig
        from kofinsent.paths import refuse_output_over_input

        # a local --model / --adapter directory holds config.json, which --overwrite deletes in --out
        refuse_output_over_input(out, {"--data": data, "--train": train, "--adapter": adapter, "--model": model},
                                 directory=True)
        cfg = EVAL_OPTIONS.build(EvalConfig, params)
        cfg.validate()
        complete = resume and (out / "metrics.json").is_file()  # evaluate() then returns its metrics as they are
        bar = _progress(progress_total(cfg), f"eval {backend}:{Path(model).name}")
        try:
            metrics = evaluate(cfg, progress=bar.update, started=STARTED)
        finally:
            bar.close()
        if complete:
            typer.echo(f"{out} holds a complete run; nothing was rerun")
        _print_metrics(metrics)
        typer.echo(f"-> {out}")


def baseline_command(
    train: Annotated[Path, typer.Option("--train", help="DIR/train.jsonl")],
    test: Annotated[Path, typer.Option("--test", help="DIR/test.jsonl")],
    out: Annotated[Path, typer.Option("--out", help="Run directory; one subdirectory per baseline.")],
    seed: Annotated[int, typer.Option("--seed")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
) -> None:
    """Majority class and TF-IDF + logistic regression (Kiwi morphemes, character n-grams)."""
    with _errors():
        from kofinsent.evaluation.baselines import baselines_to_dirs
        from kofinsent.paths import refuse_output_over_input

        refuse_output_over_input(out, {"--train": train, "--test": test}, directory=True)
        for name, metrics in baselines_to_dirs(train, test, out, seed, overwrite).items():
            typer.echo(f"{name}: ", nl=False)
            _print_metrics(metrics)
        typer.echo(f"-> {out}")


def compare_command(
    run_a: Annotated[Path, typer.Argument(help="First run directory.")],
    run_b: Annotated[Path, typer.Argument(help="Second run directory (same test items).")],
    out: Annotated[Path | None, typer.Option("--out", help="Where to write compare.json "
                                                               "(default: RUN_B/compare.json).")] = None,
) -> None:
    """Paired tests between two runs on the same items: McNemar; for sentiment runs Brown–Forsythe and Welch."""
    with _errors():
        from kofinsent.evaluation.compare import compare_runs
        from kofinsent.paths import refuse_output_over_input
        from kofinsent.runs import write_json

        path = out or Path(run_b) / "compare.json"
        # the files compare_runs reads; RUN_B/compare.json itself (the default) is an output, not one of them
        refuse_output_over_input(path, {f"{flag}'s {name}": Path(run) / name for flag, run in (("RUN_A", run_a),
                                                                                              ("RUN_B", run_b))
                                        for name in ("predictions.jsonl", "metrics.json")})
        result = compare_runs(run_a, run_b)
        write_json(path, result)
        for key in ("n_paired", "mcnemar_p", "mcnemar_midp", "accuracy_diff", "levene_p", "welch_p", "levene_p_holm",
                    "welch_p_holm", "paired_wilcoxon_p", "paired_variance_wilcoxon_p"):
            if result.get(key) is not None:
                typer.echo(f"{key} = {result[key]:.4g}")
        if result.get("accuracy_diff_ci95"):
            typer.echo("accuracy_diff 95% CI (paired bootstrap over items) = "
                       "{:.4g} to {:.4g}".format(*result["accuracy_diff_ci95"]))
        typer.echo(f"-> {path}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("baseline")(baseline_command)
    app.command("compare")(compare_command)

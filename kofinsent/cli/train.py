"""``kofinsent train``: a thin typer wrapper over :func:`kofinsent.training.engines.train_with`, which runs
:func:`kofinsent.training.hf_trainer.train` (``--engine hf``) or :func:`kofinsent.training.unsloth.train_unsloth`
(``--engine unsloth``)."""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated

import typer

from kofinsent.cli.options import FromParam, StageOptions, text


def _targets(value: str | None) -> list[str] | None:
    return [t.strip() for t in value.split(",") if t.strip()] if value else None


def _batch_size(value: str) -> int | str:
    from kofinsent.training.batching import parse_batch_size

    return parse_batch_size(value)


# kofinsent train's options are TrainConfig's fields (kofinsent.cli.options); these differ in name or shape. --seed
# may repeat: the command trains one run per seed and sets the field itself.
TRAIN_OPTIONS = StageOptions(
    renamed={"data": FromParam("data", text), "out": FromParam("out", text),
             "target_modules": FromParam("target_modules", _targets),
             "batch_size": FromParam("batch_size", _batch_size)},
    not_options={"extra": "free-form settings for Python callers; no command line or config key sets them"})


def _errors() -> AbstractContextManager[None]:
    # imported here: `kofinsent --help` stays light
    from kofinsent.backends.base import BackendError
    from kofinsent.cli.errors import one_line_errors
    from kofinsent.runs import RunDirError
    from kofinsent.training.errors import TrainError

    return one_line_errors(TrainError, BackendError, RunDirError)


def _check_engine(engine: str, cuda: bool = True) -> None:
    """``--engine``'s value and, for unsloth with ``cuda``, a CUDA device (before unsloth is ever imported)."""
    from kofinsent.training.options import check_engine

    check_engine(engine)
    if engine == "unsloth" and cuda:
        from kofinsent.training.unsloth import require_cuda

        require_cuda()


def train_command(
    model: Annotated[str, typer.Option("--model", help="HF path or hub id of the base causal LM.")],
    data: Annotated[Path, typer.Option(
        "--data", help="hf: a training split, DIR/train.jsonl (title, label); unsloth: a ShareGPT file "
                       "(kofinsent dataset sharegpt).")],
    out: Annotated[Path, typer.Option(
        "--out", help="Run directory (adapter/, checkpoints, metrics.json); with several --seed, one DIR/seed<k>/ "
                      "per seed.")],
    engine: Annotated[str, typer.Option(
        "--engine", help="hf (transformers + peft) or unsloth (Llama-3 chat recipe, 4-bit by default; CUDA only).")
    ] = "hf",
    load_in_8bit: Annotated[bool, typer.Option("--load-in-8bit", help="8-bit base weights (bitsandbytes).")] = False,
    load_in_4bit: Annotated[bool, typer.Option("--load-in-4bit", help="4-bit NF4 base weights (bitsandbytes).")] = False,
    lora_r: Annotated[int, typer.Option("--lora-r")] = 8,
    lora_alpha: Annotated[int, typer.Option("--lora-alpha")] = 16,
    lora_dropout: Annotated[float, typer.Option("--lora-dropout")] = 0.05,
    target_modules: Annotated[str | None, typer.Option(
        "--target-modules", help="Comma-separated (default: query_key_value for GPT-NeoX, q/k/v/o_proj for Llama; "
                                 "unsloth: q/k/v/o/gate/up/down_proj).")
    ] = None,
    lr: Annotated[float, typer.Option("--lr")] = 2e-4,
    epochs: Annotated[float, typer.Option("--epochs")] = 1.0,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Optimizer steps; overrides --epochs.")
                         ] = None,
    batch_size: Annotated[str, typer.Option(
        "--batch-size", help="Micro-batch per device, or auto: the largest that fits (searched on CUDA and cached; at "
                             "most 16 on a CPU), accumulating gradients to keep the effective batch.")] = "8",
    grad_accum: Annotated[int, typer.Option("--grad-accum")] = 1,
    effective_batch_size: Annotated[int | None, typer.Option(
        "--effective-batch-size", help="Examples per optimizer step, all devices together; sets the accumulation "
                                       "(default: batch size x --grad-accum x devices, auto counting as 8).")
    ] = None,
    warmup_ratio: Annotated[float, typer.Option("--warmup-ratio")] = 0.03,
    scheduler: Annotated[str, typer.Option("--scheduler", help="linear, cosine, constant, ...")] = "linear",
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.")] = 0.0,
    loss: Annotated[str | None, typer.Option(
        "--loss", help="full (every token, as the seed; the hf default) or answer-only (the only unsloth loss).")
    ] = None,
    seed: Annotated[list[int] | None, typer.Option(
        "--seed", help="Training seed (default 0). Repeat it to train one adapter per seed into --out/seed<k>/; a "
                       "rerun skips the seeds already finished.")] = None,
    save_steps: Annotated[int, typer.Option("--save-steps", help="Checkpoint every N optimizer steps.")] = 100,
    save_total_limit: Annotated[int | None, typer.Option(
        "--save-total-limit", help="Keep only the newest N checkpoints (default: all).")] = None,
    logging_steps: Annotated[int, typer.Option("--logging-steps")] = 10,
    val_size: Annotated[int | None, typer.Option("--val-size", help="Held-out records (default 5%; 0: none).")
                        ] = None,
    eval_steps: Annotated[int | None, typer.Option("--eval-steps", help="Validation loss every N steps.")] = None,
    max_length: Annotated[int | None, typer.Option(
        "--max-length", help="Truncate longer examples (unsloth: max_seq_length, default 2048).")] = None,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing")] = False,
    packing: Annotated[bool, typer.Option(
        "--packing", help="Padding-free micro-batches: examples end to end, position ids restarting per example "
                          "(same loss as padded).")] = False,
    attn_implementation: Annotated[str, typer.Option(
        "--attn-implementation", help="auto (flash_attention_2 where installed, on CUDA in bf16/fp16; else sdpa), "
                                      "sdpa, eager or flash_attention_2.")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="auto, fp32, fp16, bf16 (fp16/bf16: CUDA only).")
                         ] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in --out.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run already in --out.")] = False,
    merge: Annotated[bool, typer.Option("--merge", help="Also save base + adapter merged to --out/merged.")] = False,
    dataloader_workers: Annotated[int, typer.Option(
        "--dataloader-workers", help="Worker processes loading batches (0: in the main process).")] = 0,
) -> None:
    """Fine-tune a causal LM with LoRA (hf: the seed 2-shot prompt; unsloth: a ShareGPT file with the llama-3 chat
    template); writes the PEFT adapter to --out/adapter (several --seed: --out/seed<k>/adapter, one per seed)."""
    params = dict(locals())  # the options by name, before any other local exists
    with _errors():
        _check_engine(engine, cuda=False)  # train_unsloth checks CUDA itself, after the options
        from kofinsent.paths import refuse_output_over_input
        from kofinsent.training.engines import train_with
        from kofinsent.training.options import TrainConfig
        from kofinsent.training.seeds import seed_dir_name, train_seeds

        # --overwrite deletes the run's files in --out (config.json, ...) before the model loads: neither the data
        # nor a local base model may be there
        refuse_output_over_input(out, {"--data": data, "--model": model}, directory=True)
        seeds = list(seed or [0])
        cfg = TRAIN_OPTIONS.build(TrainConfig, params, seed=seeds[0])
        if len(seeds) == 1:  # one seed: today's layout, adapter/ right in --out
            _echo_run(train_with(engine, cfg), Path(out))
            return
        results = train_seeds(engine, cfg, seeds, log=typer.echo if _is_main() else None)
        if not _is_main():
            return
        for k, m in results.items():
            _echo_run(m, Path(out) / seed_dir_name(k), f"seed {k}: ")
        accs = [m["val_accuracy"] for m in results.values() if m.get("val_accuracy") is not None]
        if len(accs) == len(results):
            from kofinsent.evaluation.metrics import seed_summary

            s = seed_summary(accs)
            typer.echo(f"val_accuracy over {s['n']} seeds: mean {s['mean']:.3f} ± sd {s['sd']:.3f} (ddof 1)")


def _echo_run(m: dict, out: Path, prefix: str = "") -> None:
    if not _is_main():  # under accelerate launch every rank returns; one report is enough
        return
    line = f"{prefix}steps={m.get('global_step')} train_loss={m.get('train_loss'):.4g}"
    if m.get("val_loss") is not None:
        line += f" val_loss={m['val_loss']:.4g}"
    if m.get("val_accuracy") is not None:
        line += f" val_accuracy={m['val_accuracy']:.3f} (n={m['val_n']})"
    if m.get("micro_batch_size"):
        line += (f" micro_batch={m['micro_batch_size']} x accumulation {m['grad_accum_steps']} "
                 f"(effective {m['effective_batch_size']})")
    typer.echo(line)
    typer.echo(f"-> {out / 'adapter'}")
    if m.get("merged"):
        typer.echo(f"-> {m['merged']}")


def _is_main() -> bool:
    from kofinsent.training.distributed import is_main

    return is_main()


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)

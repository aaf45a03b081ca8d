"""``kofinsent train``: a thin typer wrapper over :func:`kofinsent.train.train` (``--engine hf``) and
:func:`kofinsent.train_unsloth.train_unsloth` (``--engine unsloth``)."""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated

import typer


def _errors() -> AbstractContextManager[None]:
    # imported here: `kofinsent --help` stays light
    from .backends.base import BackendError
    from .cli_errors import one_line_errors
    from .runs import RunDirError
    from .train import TrainError

    return one_line_errors(TrainError, BackendError, RunDirError)


def _check_engine(engine: str, cuda: bool = True) -> None:
    """``--engine``'s value and, for unsloth with ``cuda``, a CUDA device (before unsloth is ever imported)."""
    from .train import check_engine

    check_engine(engine)
    if engine == "unsloth" and cuda:
        from .train_unsloth import require_cuda

        require_cuda()


def train_command(
    model: Annotated[str, typer.Option("--model", help="HF path or hub id of the base causal LM.")],
    data: Annotated[Path, typer.Option(
        "--data", help="hf: a training split, DIR/train.jsonl (title, label); unsloth: a ShareGPT file "
                       "(kofinsent dataset sharegpt).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory (adapter/, checkpoints, metrics.json).")],
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
    batch_size: Annotated[int, typer.Option("--batch-size", help="Per device.")] = 8,
    grad_accum: Annotated[int, typer.Option("--grad-accum")] = 1,
    warmup_ratio: Annotated[float, typer.Option("--warmup-ratio")] = 0.03,
    scheduler: Annotated[str, typer.Option("--scheduler", help="linear, cosine, constant, ...")] = "linear",
    loss: Annotated[str | None, typer.Option(
        "--loss", help="full (every token, as the seed; the hf default) or answer-only (the only unsloth loss).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    save_steps: Annotated[int, typer.Option("--save-steps", help="Checkpoint every N optimizer steps.")] = 100,
    logging_steps: Annotated[int, typer.Option("--logging-steps")] = 10,
    val_size: Annotated[int | None, typer.Option("--val-size", help="Held-out records (default 5%; 0: none).")
                        ] = None,
    eval_steps: Annotated[int | None, typer.Option("--eval-steps", help="Validation loss every N steps.")] = None,
    max_length: Annotated[int | None, typer.Option(
        "--max-length", help="Truncate longer examples (unsloth: max_seq_length, default 2048).")] = None,
    gradient_checkpointing: Annotated[bool, typer.Option("--gradient-checkpointing")] = False,
    precision: Annotated[str, typer.Option("--precision", help="auto, fp32, fp16, bf16 (fp16/bf16: CUDA only).")
                         ] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in --out.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run already in --out.")] = False,
    merge: Annotated[bool, typer.Option("--merge", help="Also save base + adapter merged to --out/merged.")] = False,
) -> None:
    """Fine-tune a causal LM with LoRA (hf: the seed 2-shot prompt; unsloth: a ShareGPT file with the llama-3 chat
    template); writes the PEFT adapter to --out/adapter."""
    with _errors():
        _check_engine(engine, cuda=False)  # train_unsloth checks CUDA itself, after the options
        from .paths import refuse_output_over_input
        from .train import TrainConfig, _is_main, train_with

        # --overwrite deletes the run's files in --out (config.json, ...) before the model loads: neither the data
        # nor a local base model may be there
        refuse_output_over_input(out, {"--data": data, "--model": model}, directory=True)
        targets = [t.strip() for t in target_modules.split(",") if t.strip()] if target_modules else None
        cfg = TrainConfig(model=model, data=str(data), out=str(out), load_in_8bit=load_in_8bit,
                          load_in_4bit=load_in_4bit, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                          target_modules=targets, lr=lr, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                          grad_accum=grad_accum, warmup_ratio=warmup_ratio, scheduler=scheduler, loss=loss, seed=seed,
                          save_steps=save_steps, logging_steps=logging_steps, val_size=val_size,
                          eval_steps=eval_steps, max_length=max_length, gradient_checkpointing=gradient_checkpointing,
                          precision=precision, resume=resume, overwrite=overwrite, merge=merge)
        m = train_with(engine, cfg)
        if not _is_main():  # under accelerate launch every rank returns; one report is enough
            return
        line = f"steps={m.get('global_step')} train_loss={m.get('train_loss'):.4g}"
        if m.get("val_loss") is not None:
            line += f" val_loss={m['val_loss']:.4g}"
        if m.get("val_accuracy") is not None:
            line += f" val_accuracy={m['val_accuracy']:.3f} (n={m['val_n']})"
        typer.echo(line)
        typer.echo(f"-> {Path(out) / 'adapter'}")
        if m.get("merged"):
            typer.echo(f"-> {m['merged']}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)

"""``kofinsent train``'s options: :class:`TrainConfig` (one field per CLI option and ``[train.NAME]`` key) and the
checks that need no model, shared by both engines (:mod:`kofinsent.training.hf_trainer`,
:mod:`kofinsent.training.unsloth`) and by experiment configs, which check a table when it is loaded."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kofinsent.training.attention import check_attention
from kofinsent.training.batching import check_batch_options
from kofinsent.training.distributed import fsdp_active
from kofinsent.training.errors import TrainError

LOSSES = ("full", "answer-only")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
ENGINES = ("hf", "unsloth")


@dataclass
class TrainConfig:
    model: str
    data: str
    out: str
    load_in_8bit: bool = False
    load_in_4bit: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] | None = None  # None: DEFAULT_TARGETS by model_type
    lr: float = 2e-4
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int | Literal["auto"] = 8  # micro-batch per process; "auto": the largest that fits (training/batching)
    grad_accum: int = 1
    effective_batch_size: int | None = None  # examples per optimizer step, all processes; sets the accumulation
    warmup_ratio: float = 0.03
    scheduler: str = "linear"
    weight_decay: float = 0.0
    loss: str | None = None  # None: the engine's own (hf: "full", as the seed; unsloth: "answer-only")
    seed: int = 0
    save_steps: int = 100
    save_total_limit: int | None = None
    logging_steps: int = 10
    val_size: int | None = None  # None: 5% of train (at least 1, at most 500); 0: no validation slice
    eval_steps: int | None = None  # also report the validation loss every N steps (accuracy is scored at the end)
    max_length: int | None = None  # truncate longer examples (from the left of the prompt); None: no limit
    gradient_checkpointing: bool = False
    packing: bool = False  # padding-free micro-batches (training/collators.py)
    attn_implementation: str = "auto"  # auto: flash_attention_2 where installed (CUDA, bf16/fp16), else sdpa
    precision: str = "auto"  # auto: bf16 (or fp16) on CUDA without quantization, fp32 otherwise
    resume: bool = False
    overwrite: bool = False
    merge: bool = False
    dataloader_workers: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self, check_files: bool = True) -> None:
        """Raise on an option that cannot work; ``check_files=False`` checks the options alone (config loading)."""
        if self.loss is not None and self.loss not in LOSSES:
            raise TrainError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.precision not in PRECISIONS:
            raise TrainError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.load_in_8bit and self.load_in_4bit:
            raise TrainError("choose one of --load-in-8bit and --load-in-4bit")
        if self.resume and self.overwrite:
            raise TrainError("choose one of --resume and --overwrite")
        if self.load_in_8bit and fsdp_active():
            # bitsandbytes' int8 weights (Linear8bitLt) cannot be sharded by FSDP; only its 4-bit type can, and only
            # with a float quant_storage.
            raise TrainError("--load-in-8bit does not work under FSDP (ACCELERATE_USE_FSDP is set: accelerate launch "
                             "with an FSDP config): bitsandbytes' 8-bit weights cannot be sharded; use "
                             "accelerate/ddp.yaml for 8-bit base weights on several GPUs, or drop --load-in-8bit")
        for name in ("lora_r", "lora_alpha", "grad_accum", "save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise TrainError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        check_batch_options(self.batch_size, self.grad_accum, self.effective_batch_size)
        check_attention(self.attn_implementation)
        if self.max_steps is not None and self.max_steps < 1:
            raise TrainError(f"--max-steps must be >= 1, got {self.max_steps}")
        if self.max_steps is None and not self.epochs > 0:
            raise TrainError(f"--epochs must be > 0, got {self.epochs}")
        if not 0 <= self.lora_dropout < 1:
            raise TrainError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if not 0 <= self.warmup_ratio < 1:
            raise TrainError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.val_size is not None and self.val_size < 0:
            raise TrainError(f"--val-size must be >= 0, got {self.val_size}")
        if check_files and not Path(self.data).is_file():
            raise TrainError(f"training data {self.data} does not exist")


def check_engine(engine: str) -> None:
    """``--engine``'s value (a :class:`TrainError` naming :data:`ENGINES` otherwise)."""
    if engine not in ENGINES:
        raise TrainError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")


__all__ = ["ENGINES", "LOSSES", "PRECISIONS", "TrainConfig", "check_engine"]

"""Fine-tuning: HF causal LMs on the seed's 2-shot prompt with LoRA (peft), optionally on 8-bit / 4-bit base weights.

Each training example is ``seed2shot().training_text(title, label)`` (the evaluator's prompt, not a copy) + EOS,
tokenized as ``encode(context)`` + ``encode(" " + label)`` + ``[eos]`` so that the prompt / answer boundary is a token
boundary by construction. ``loss="full"`` trains on every real token (as the seed does); ``loss="answer-only"`` masks
the prompt and keeps the label tokens and the EOS. Padding is masked by position (the collator knows which positions it
added), never by token id: polyglot-ko's pad token *is* its EOS, and the real EOS must stay in the labels.

Training runs on the HF ``Trainer`` with per-batch dynamic padding (or packed rows: :mod:`.training.collators`),
length-grouped sampling and the micro-batch / accumulation of :mod:`.training.batching` (``batch_size="auto"``), so
``accelerate launch`` runs it unchanged on several GPUs (``accelerate/ddp.yaml``, ``accelerate/fsdp.yaml``; under
FSDP quantized base weights are refused and the adapter is gathered before it is saved, see ``docs/multi_gpu.md``). A
run directory holds ``config.json`` (the resolved config, the sha256 of the training data, the ``batching`` used),
``environment.json``, ``checkpoint-*/`` (every ``save_steps``; ``resume`` continues from the latest), ``adapter/``
(PEFT format), ``metrics.json`` (losses and the validation slice's accuracy, scored as ``kofinsent eval`` scores:
:mod:`.training.validation`) and, with ``merge``, ``merged/`` (the full model with the adapter folded in).
``--engine unsloth`` (:mod:`kofinsent.training.unsloth`) writes the same layout.
"""
from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

from kofinsent.prompts.direction import LABELS, seed2shot
from kofinsent.runs import environment, read_json, read_jsonl, sha256_file, write_json
from kofinsent.training.collators import PadCollator

LOSSES = ("full", "answer-only")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# LoRA targets per model_type; other architectures fall back to peft's own defaults (or --target-modules).
DEFAULT_TARGETS: dict[str, list[str]] = {
    "gpt_neox": ["query_key_value"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
}
RUN_FILES = ("config.json", "environment.json", "metrics.json", "trainer_log.jsonl")
RUN_DIRS = ("adapter", "merged")


ENGINES = ("hf", "unsloth")


class TrainError(Exception):
    """A training run cannot start: bad data, bad options, an occupied output directory, a missing dependency."""


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
        from kofinsent.training.attention import check_attention
        from kofinsent.training.batching import check_batch_options

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


# -- data ------------------------------------------------------------------------------------------------------------
def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Training records (title, label) from a dataset JSONL; a record without them is an error naming its line."""
    out = []
    try:
        for i, r in enumerate(read_jsonl(path), 1):
            if not isinstance(r, dict):
                raise TrainError(f"{path}:{i}: not a JSON object")
            missing = [k for k in ("title", "label") if not r.get(k)]
            if missing:
                raise TrainError(f"{path}:{i}: record lacks {' and '.join(missing)}")
            if r["label"] not in LABELS:
                raise TrainError(f"{path}:{i}: label {r['label']!r} is not one of {LABELS}")
            out.append(r)
    except ValueError as e:  # read_jsonl: a line that is not JSON
        raise TrainError(str(e)) from None
    if not out:
        raise TrainError(f"{path} holds no training records")
    return out


def split_validation(records: Sequence[dict[str, Any]], val_size: int | None, seed: int
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, validation): a seeded random slice of ``val_size`` records (default 5%, 1..500) held out."""
    n = len(records)
    k = min(500, max(1, round(0.05 * n))) if val_size is None else val_size
    if n < 2:
        k = 0
    if k >= n:
        raise TrainError(f"--val-size {k} leaves no training records (the data has {n})")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:k])
    return [r for i, r in enumerate(records) if i not in held], [records[i] for i in sorted(held)]


def encode_example(tokenizer: Any, title: str, label: str, loss: str = "full",
                   max_length: int | None = None) -> dict[str, list[int]]:
    """``input_ids`` = tokens of the seed2shot context + tokens of " " + label + EOS; ``labels`` = the same ids
    (``full``) or -100 over the context (``answer-only``). Padding is the collator's business."""
    prompt = seed2shot()
    text = prompt.training_text(title, label)  # validates the label
    context = prompt.context(title)
    answer = text[len(context):]
    ctx = tokenizer(context, add_special_tokens=True)["input_ids"]
    ans = tokenizer(answer, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is None:
        raise TrainError("the tokenizer has no EOS token; training examples end with EOS")
    tail = ans + [eos]
    if max_length is not None and len(ctx) + len(tail) > max_length:
        ctx = ctx[len(ctx) + len(tail) - max_length:]
    ids = ctx + tail
    labels = list(ids) if loss == "full" else [-100] * len(ctx) + tail
    return {"input_ids": ids, "labels": labels}


# -- model -----------------------------------------------------------------------------------------------------------
def _linear_paths(model: Any) -> list[str]:
    import torch

    return [name for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) or type(mod).__name__ in ("Linear8bitLt", "Linear4bit")]


def linear_module_names(model: Any) -> list[str]:
    """Leaf names of the model's Linear layers (bitsandbytes' 8-bit / 4-bit Linear included): what LoRA can target."""
    return sorted({p.rsplit(".", 1)[-1] for p in _linear_paths(model)})


def resolve_targets(model: Any, requested: Sequence[str] | None) -> list[str]:
    """The LoRA target modules: ``requested`` or the model type's default; each must match a Linear module (peft's
    suffix rule), else a :class:`TrainError` listing the model's Linear module names."""
    linear = linear_module_names(model)
    paths = _linear_paths(model)
    model_type = getattr(model.config, "model_type", None)
    targets = list(requested) if requested else DEFAULT_TARGETS.get(model_type)
    if targets is None:
        raise TrainError(f"no default LoRA target modules for model_type {model_type!r}; pass --target-modules "
                         f"(the model's Linear modules: {', '.join(linear)})")
    missing = [t for t in targets if not any(p == t or p.endswith("." + t) for p in paths)]
    if missing:
        raise TrainError(f"target modules {', '.join(missing)} match no Linear module of this {model_type} model; "
                         f"its Linear modules are: {', '.join(linear)}")
    return targets


def _check_bitsandbytes(kind: str) -> None:
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # a broken CUDA setup raises more than ImportError
        raise TrainError(f"--load-in-{kind} needs a working bitsandbytes (pip install bitsandbytes): "
                         f"{type(e).__name__}: {e}") from e


def load_model(cfg: TrainConfig) -> tuple[Any, Any, dict[str, Any]]:
    """(peft model, tokenizer, resolved facts) for ``cfg``."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from kofinsent.backends.hf import _looks_local

    model_name = str(cfg.model)
    if (_looks_local(model_name) or Path(model_name).exists()) and not Path(model_name).expanduser().is_dir():
        raise TrainError(f"model path {model_name} does not exist or is not a directory")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model_name)
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot load the tokenizer of {model_name}: {e}") from e
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token

    from kofinsent.training.attention import load_with_attention, used_attention

    cuda = torch.cuda.is_available()
    precision = _precision(cfg, cuda)
    kwargs: dict[str, Any] = {}
    quant = "8bit" if cfg.load_in_8bit else "4bit" if cfg.load_in_4bit else None
    if quant:
        _check_bitsandbytes(quant)
        # bitsandbytes on CPU is only practical with float32 compute (see the environment notes).
        compute = torch.float32 if not cuda else (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        if quant == "8bit":
            import logging

            from kofinsent.backends.hf import _drop_cast_warning

            bnb_log = logging.getLogger("bitsandbytes.autograd._functions")  # one line per 8-bit matmul otherwise
            if _drop_cast_warning not in bnb_log.filters:
                bnb_log.addFilter(_drop_cast_warning)
            qcfg = transformers.BitsAndBytesConfig(load_in_8bit=True)
        else:
            qcfg = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute,
                                                   bnb_4bit_quant_type="nf4")
        kwargs.update(quantization_config=qcfg, dtype=torch.float32 if not cuda else compute,
                      device_map={"": _local_rank() if cuda else "cpu"})
    else:
        # bf16: frozen weights stored in bf16 (what autocast casts them to at every step; LoRA stays float32), else
        # float32 (fp16 autocast; FSDP wants one dtype per unit)
        kwargs["dtype"] = torch.bfloat16 if precision["bf16"] and not fsdp_active() else torch.float32
    try:
        model = load_with_attention(partial(transformers.AutoModelForCausalLM.from_pretrained, model_name),
                                    cfg.attn_implementation, cuda, precision["bf16"] or precision["fp16"], **kwargs)
    except (OSError, ValueError, ImportError) as e:
        raise TrainError(f"cannot load the model {model_name}: {e}") from e
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = False  # never read in training; with a cache, packed examples would attend to each other

    targets = resolve_targets(model, cfg.target_modules)
    if quant:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    trainable, total = model.get_nb_trainable_parameters()
    facts = {"quantization": quant, "target_modules": targets, "model_type": model.config.model_type,
             "attn_implementation_used": used_attention(model), "base_dtype": str(kwargs["dtype"]).removeprefix("torch."),
             "trainable_params": trainable, "total_params": total, "cuda": cuda,
             "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    return model, tokenizer, facts


def _local_rank() -> int:
    import os

    return int(os.environ.get("LOCAL_RANK", "0"))


def fsdp_active() -> bool:
    """Whether this process runs under FSDP: ``accelerate launch`` with an FSDP config exports
    ``ACCELERATE_USE_FSDP=true`` to every process, and that is what makes accelerate (and the Trainer) build FSDP."""
    import os

    # the values accelerate's own str_to_bool reads as true
    return os.environ.get("ACCELERATE_USE_FSDP", "false").strip().lower() in ("1", "true", "t", "yes", "y", "on")


def _precision(cfg: TrainConfig, cuda: bool) -> dict[str, bool]:
    if cfg.precision in ("fp16", "bf16") and not cuda:
        raise TrainError(f"--precision {cfg.precision} needs CUDA; on CPU training runs in float32")
    if cfg.precision == "auto":
        if not cuda:
            return {"fp16": False, "bf16": False}
        import torch

        bf16 = torch.cuda.is_bf16_supported()
        return {"fp16": not bf16, "bf16": bf16}
    return {"fp16": cfg.precision == "fp16", "bf16": cfg.precision == "bf16"}


# -- run directory ---------------------------------------------------------------------------------------------------
def checkpoints(out: Path) -> list[Path]:
    found = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def prepare_out(cfg: TrainConfig, data_sha: str) -> Path | None:
    """Claim ``cfg.out``; returns the checkpoint to resume from (None for a fresh run)."""
    out = Path(cfg.out)
    if not _is_main():  # under accelerate launch / torchrun only rank 0 judges and claims the directory
        ckpts = checkpoints(out) if cfg.resume and out.exists() else []
        return ckpts[-1] if ckpts else None
    occupied = out.exists() and (any((out / f).exists() for f in RUN_FILES + RUN_DIRS) or bool(checkpoints(out)))
    if cfg.resume:
        ckpts = checkpoints(out) if out.exists() else []
        if not ckpts:
            raise TrainError(f"--resume: {out} holds no checkpoint-* directory to resume from")
        if (out / "config.json").exists():
            old = read_json(out / "config.json")
            if old.get("data_sha256") not in (None, data_sha):
                raise TrainError(f"--resume: the training data changed since {out} was started "
                                 f"(sha256 {old.get('data_sha256')} then, {data_sha} now)")
        return ckpts[-1]
    if occupied:
        if not cfg.overwrite:
            raise TrainError(f"{out} already holds a run; pass --resume to continue it, --overwrite to replace it, "
                             "or choose another --out")
        from kofinsent.paths import remove_file, remove_tree

        # only the run's own files and folders, each checked to lie inside --out (a symlinked checkpoint-N that
        # leads elsewhere is refused, not followed)
        for f in RUN_FILES:
            remove_file(out / f, out, missing_ok=True)
        for d in [*(out / d for d in RUN_DIRS), *checkpoints(out)]:
            remove_tree(d, out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return None


# -- training --------------------------------------------------------------------------------------------------------
def train(cfg: TrainConfig) -> dict[str, Any]:
    """Fine-tune ``cfg.model`` on ``cfg.data``; writes the run directory and returns its metrics."""
    cfg.validate()
    cfg = replace(cfg, loss=cfg.loss or "full")
    if cfg.load_in_4bit and fsdp_active():
        # FSDP flattens each wrapped block into one tensor of one dtype; QLoRA-FSDP needs a float
        # bnb_4bit_quant_storage and loading without a device map, which this engine does not do.
        raise TrainError("--load-in-4bit is not supported under FSDP by --engine hf (ACCELERATE_USE_FSDP is set: "
                         "accelerate launch with an FSDP config); use accelerate/ddp.yaml for 4-bit base weights on "
                         "several GPUs, or drop --load-in-4bit")
    t0 = time.perf_counter()
    records = load_records(cfg.data)
    data_sha = sha256_file(cfg.data)
    resume_from = prepare_out(cfg, data_sha)
    out = Path(cfg.out)

    from transformers import Trainer, TrainingArguments, set_seed

    set_seed(cfg.seed)
    train_recs, val_recs = split_validation(records, cfg.val_size, cfg.seed)
    model, tokenizer, facts = load_model(cfg)
    train_ds = [encode_example(tokenizer, r["title"], r["label"], cfg.loss, cfg.max_length) for r in train_recs]
    val_ds = [encode_example(tokenizer, r["title"], r["label"], cfg.loss, cfg.max_length) for r in val_recs]
    precision = _precision(cfg, facts["cuda"])
    from kofinsent.training.batching import plan_for_run
    from kofinsent.training.collators import make_collator

    collator = make_collator(cfg.packing, tokenizer.pad_token_id, facts["attn_implementation_used"], model)
    old = read_json(out / "config.json") if resume_from and (out / "config.json").is_file() else {}
    plan = plan_for_run(cfg, model, train_ds, collator, facts, precision, old.get("batching"))  # resumed: its split

    resolved = {**asdict(cfg), "engine": "hf", "data_sha256": data_sha, "n_records": len(records),
                "n_train": len(train_ds), "n_val": len(val_ds), "prompt": "seed2shot", **facts, **precision,
                "train_sampling_strategy": "group_by_length", "batching": plan.record(),
                "padding": collator.description}
    if _is_main():
        write_json(out / "config.json", resolved)
        write_json(out / "environment.json", environment({"seed": cfg.seed}))

    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=plan.micro_batch_size,
        per_device_eval_batch_size=plan.micro_batch_size, gradient_accumulation_steps=plan.grad_accum_steps,
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.scheduler, warmup_steps=float(cfg.warmup_ratio),  # transformers 5: a float < 1 is a ratio
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps is not None else -1, seed=cfg.seed, data_seed=cfg.seed,
        logging_steps=cfg.logging_steps, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if cfg.eval_steps and val_ds else "no", eval_steps=cfg.eval_steps,
        train_sampling_strategy="group_by_length", remove_unused_columns=False, report_to="none",
        dataloader_num_workers=cfg.dataloader_workers, disable_tqdm=True, use_cpu=not facts["cuda"],
        **precision,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds or None,
                      data_collator=collator, processing_class=tokenizer,
                      callbacks=[log_callback(out / "trainer_log.jsonl")])
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    metrics = {**run_metrics(trainer, result, resume_from), **plan.summary(),
               "attn_implementation_used": facts["attn_implementation_used"]}
    if val_ds:
        metrics["val_loss"] = trainer.evaluate()["eval_loss"]
    adapter_dir = out / "adapter"
    if trainer.is_fsdp_enabled:  # sharded weights must be gathered (a collective) to save a PEFT-format adapter
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(adapter_dir))  # every rank calls it; the main process writes adapter + tokenizer
    trainer.accelerator.wait_for_everyone()
    del trainer, model
    if _is_main():
        from kofinsent.training.validation import score_validation

        metrics.update(score_validation(cfg.model, adapter_dir, val_recs, cfg))
        if cfg.merge:
            metrics["merged"] = str(merge_adapter(cfg.model, adapter_dir, out / "merged"))
        metrics["train_s"] = time.perf_counter() - t0
        write_json(out / "metrics.json", metrics)
    return metrics


def log_callback(path: Path) -> Any:
    """A ``TrainerCallback`` appending every log (losses, learning rate, eval) with its step to ``path`` as JSON
    Lines, from the main process only."""
    from transformers import TrainerCallback

    from kofinsent.runs import dumps

    class _Log(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
            if logs and state.is_world_process_zero:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(dumps({"step": state.global_step, **logs}) + "\n")

    return _Log()


def run_metrics(trainer: Any, result: Any, resume_from: Path | None) -> dict[str, Any]:
    """The metrics every engine reports after ``trainer.train()``."""
    train_losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"global_step": trainer.state.global_step, "epochs": trainer.state.epoch,
            "train_loss": result.training_loss, "last_logged_loss": train_losses[-1] if train_losses else None,
            "resumed_from": str(resume_from) if resume_from else None}


def check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise TrainError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")


def train_with(engine: str, cfg: TrainConfig) -> dict[str, Any]:
    """Run ``cfg`` on an engine: ``"hf"`` (:func:`train`) or ``"unsloth"`` (imported only when asked for; it checks
    for CUDA itself before importing unsloth)."""
    check_engine(engine)
    if engine == "unsloth":
        from kofinsent.training.unsloth import train_unsloth

        return train_unsloth(cfg)
    return train(cfg)


def _is_main() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


def merge_adapter(base: str, adapter: Path, out: Path) -> Path:
    """The base model in float32 (never quantized: merging into 8-bit weights loses the update) + the adapter folded
    in, saved with the tokenizer to ``out``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


__all__ = ["DEFAULT_TARGETS", "ENGINES", "PadCollator", "TrainConfig", "TrainError", "check_engine", "encode_example",
           "fsdp_active", "linear_module_names", "load_records", "log_callback", "merge_adapter", "prepare_out",
           "resolve_targets", "run_metrics", "split_validation", "train", "train_with"]

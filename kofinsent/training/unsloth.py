"""``kofinsent train --engine unsloth``: seed 000's Llama-3 recipe (Unsloth, 4-bit LoRA, responses-only loss) on the
ShareGPT file that ``kofinsent dataset sharegpt`` writes.

The steps are Unsloth's documented Llama-3 conversational recipe:

1. ``FastLanguageModel.from_pretrained(model, max_seq_length, dtype=None, load_in_4bit=True)`` (``--load-in-8bit``
   swaps 4-bit for 8-bit), then ``FastLanguageModel.get_peft_model`` on q/k/v/o/gate/up/down_proj with Unsloth's
   gradient checkpointing and ``random_state=seed``;
2. ``get_chat_template(tokenizer, chat_template="llama-3")``; ``standardize_sharegpt`` turns ``from``/``value`` turns
   into ``role``/``content`` messages and ``tokenizer.apply_chat_template`` renders each conversation as the
   ``text`` column. The template ends every turn with ``<|eot_id|>``, so that is the EOS the tokenizer is given and
   the one generation stops at (the base Llama-3 tokenizer's own EOS is ``<|end_of_text|>``);
3. TRL's ``SFTTrainer`` with a ``DataCollatorForSeq2Seq`` (dynamic padding, no packing), wrapped by
   ``train_on_responses_only(trainer, instruction_part=<user header>, response_part=<assistant header>)``, then
   :func:`final_reply_only`: only the last assistant reply and its ``<|eot_id|>`` carry loss, which is checked on the
   first example before training. The teacher's conversations (``kofinsent dataset teacher``) are the evaluator's
   whole chat, the five worked examples included, so the examples' replies are the same in every record: prompt,
   read but not learned, as in the chat the model is evaluated on.

The run directory has the HF engine's layout (:mod:`kofinsent.training.run_dir`): ``config.json`` (resolved config,
engine ``"unsloth"``, data sha256), ``environment.json``, ``trainer_log.jsonl``, ``checkpoint-*/`` (``--resume``),
``adapter/`` (PEFT format + tokenizer), ``metrics.json`` and, with ``--merge``, ``merged/`` written by Unsloth's
``save_pretrained_merged(..., save_method="merged_16bit")``, which ``kofinsent export gguf --run`` converts.

Unsloth is imported only after ``torch.cuda.is_available()``: without an accelerator its import fails, and
installing it replaces a CPU torch with a CUDA build, so it lives in the ``gpu`` extra. Everything before that import
(option checks, reading and validating the ShareGPT file, the SFT arguments, the resolved config) is plain Python and
tested on CPU.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kofinsent.runs import environment, sha256_file, write_json
from kofinsent.training.distributed import is_main
from kofinsent.training.errors import TrainError
from kofinsent.training.loading import precision_flags, resolve_targets
from kofinsent.training.options import TrainConfig
from kofinsent.training.records import split_validation
from kofinsent.training.run_dir import log_callback, prepare_out, run_metrics

CHAT_TEMPLATE = "llama-3"
INSTRUCTION_PART = "<|start_header_id|>user<|end_header_id|>\n\n"
RESPONSE_PART = "<|start_header_id|>assistant<|end_header_id|>\n\n"
EOT = "<|eot_id|>"
LLAMA3_TOKENS = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", EOT)
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEFAULT_MAX_SEQ_LENGTH = 2048
OPTIMIZER = "adamw_8bit"  # the recipe's optimizer (bitsandbytes' 8-bit AdamW)
# The role names standardize_sharegpt maps (its aliases); it raises on any other.
ROLES = {"system": "system", "human": "user", "user": "user", "input": "user",
         "gpt": "assistant", "assistant": "assistant", "output": "assistant"}
GPU_EXTRA = "pip install 'kofinsent[gpu]'"


# -- options -----------------------------------------------------------------------------------------------------------
def unsupported_options(cfg: TrainConfig) -> list[str]:
    """The options ``cfg`` sets that the unsloth engine cannot honour, each with the reason."""
    out = []
    if cfg.loss == "full":  # None (the default) means the engine's own loss
        out.append("--loss full (the unsloth engine trains on the assistant responses only, through Unsloth's "
                   "train_on_responses_only; leave --loss out or pass --loss answer-only)")
    if cfg.precision == "fp32":
        out.append("--precision fp32 (Unsloth trains in fp16 or bf16; use auto, fp16 or bf16)")
    if not isinstance(cfg.batch_size, int):
        out.append("--batch-size auto (the micro-batch search is --engine hf's; give an integer)")
    if cfg.effective_batch_size is not None:
        out.append("--effective-batch-size (use --batch-size and --grad-accum)")
    if cfg.packing:
        out.append("--packing (the unsloth engine pads each batch; TRL's packing is not wired in)")
    if cfg.attn_implementation != "auto":
        out.append("--attn-implementation (Unsloth picks its own attention kernels)")
    return out


def check_options(cfg: TrainConfig) -> None:
    """``cfg.validate()`` plus :func:`unsupported_options`, as one :class:`TrainError` listing them all."""
    cfg.validate()
    bad = unsupported_options(cfg)
    if bad:
        raise TrainError("not available with --engine unsloth: " + "; ".join(bad))


def require_cuda() -> None:
    """A :class:`TrainError` unless a CUDA device is visible; torch is imported, unsloth is not."""
    import torch

    if not torch.cuda.is_available():  # never import unsloth without CUDA: its import fails and swaps torch
        raise TrainError(f"the unsloth engine needs a CUDA GPU and the gpu extra ({GPU_EXTRA}); no CUDA device is "
                         "available here, use --engine hf")


def import_unsloth() -> Any:
    """``import unsloth`` (before transformers / trl / peft, which it patches), as a :class:`TrainError` if broken."""
    try:
        import unsloth
    except Exception as e:  # a CUDA / triton mismatch raises more than ImportError
        raise TrainError(f"the unsloth engine needs the gpu extra ({GPU_EXTRA}): {type(e).__name__}: {e}") from e
    return unsloth


# -- data --------------------------------------------------------------------------------------------------------------
def _conversation(rec: Any, where: str) -> dict[str, list[dict[str, str]]]:
    if not isinstance(rec, dict):
        raise TrainError(f"{where}: not a JSON object")
    turns = rec.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise TrainError(f"{where}: record lacks conversations (a non-empty list of {{from, value}} turns)")
    out = []
    for k, turn in enumerate(turns, 1):
        if not isinstance(turn, dict):
            raise TrainError(f"{where}: turn {k} is not a JSON object")
        missing = [key for key in ("from", "value") if not isinstance(turn.get(key), str)]
        if missing:
            raise TrainError(f"{where}: turn {k} lacks {' and '.join(missing)} (a string)")
        extra = sorted(set(turn) - {"from", "value"})
        if extra:  # standardize_sharegpt asserts that turns hold exactly two keys
            raise TrainError(f"{where}: turn {k} has keys other than from and value: {', '.join(extra)}")
        if turn["from"] not in ROLES:
            raise TrainError(f"{where}: turn {k} is from {turn['from']!r}; expected one of {', '.join(ROLES)}")
        # value before from: standardize_sharegpt takes the key with fewer distinct values in the first rows as the
        # role key and, on a tie (a one-conversation file: 3 roles, 3 texts), the second key.
        out.append({"value": turn["value"], "from": turn["from"]})
    if not any(ROLES[t["from"]] == "assistant" for t in out):
        raise TrainError(f"{where}: conversation has no gpt turn (nothing to train on)")
    return {"conversations": out}


def load_sharegpt(path: str | Path) -> list[dict[str, list[dict[str, str]]]]:
    """The conversations of a ShareGPT file: JSON Lines, one ``{"conversations": [{"from", "value"}, ...]}`` per line
    (``kofinsent dataset sharegpt``), or one JSON array of such objects. A record that is not JSON, lacks
    ``conversations``, has a turn without ``from`` and ``value`` or has no gpt turn is a :class:`TrainError` naming
    its line (or, in an array, its record number)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TrainError(f"cannot read the ShareGPT file {path}: {e}") from e
    out = []
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise TrainError(f"{path}: not a JSON array of conversations ({e.msg}, line {e.lineno})") from None
        out = [_conversation(r, f"{path}: record {i}") for i, r in enumerate(records, 1)]
    else:
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise TrainError(f"{path}:{i}: not JSON ({e.msg})") from None
            out.append(_conversation(rec, f"{path}:{i}"))
    if not out:
        raise TrainError(f"{path} holds no conversations")
    return out


def check_llama3_tokenizer(tokenizer: Any, model: str) -> None:
    """The llama-3 chat template and the responses-only mask need Llama-3's header and turn tokens as single
    tokens; a :class:`TrainError` names the ones this tokenizer splits."""
    missing = [t for t in LLAMA3_TOKENS if len(tokenizer(t, add_special_tokens=False)["input_ids"]) != 1]
    if missing:
        raise TrainError(f"the tokenizer of {model} has no single token for {', '.join(missing)}: the unsloth engine "
                         "uses the llama-3 chat template and needs a Llama-3 model")


def final_reply_only(labels: Sequence[int], ignore: int = -100) -> list[int]:
    """``labels`` with every kept span but the last set to ``ignore``: after ``train_on_responses_only`` each
    assistant turn is one run of kept labels between masked user turns, so the last run is the final reply."""
    out = list(labels)
    end = len(out)
    while end and out[end - 1] == ignore:
        end -= 1
    start = end
    while start and out[start - 1] != ignore:
        start -= 1
    return [ignore] * start + out[start:]


def _final_reply_only(batch: dict[str, list]) -> dict[str, list]:
    return {"labels": [final_reply_only(x) for x in batch["labels"]]}


class FinalReplyCollator:
    """Wraps a data collator so that each batch's labels keep the final reply only: covers unsloth versions whose
    ``train_on_responses_only`` masks in the collator instead of mapping the dataset (a second pass changes nothing)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, features: Any) -> Any:
        batch = self.inner(features)
        labels = batch.get("labels") if hasattr(batch, "get") else None
        if labels is not None and hasattr(labels, "tolist"):
            import torch

            batch["labels"] = torch.tensor([final_reply_only(row) for row in labels.tolist()], dtype=labels.dtype,
                                           device=labels.device)
        return batch


def check_response_labels(labels: Sequence[int], eot_id: int) -> None:
    """The first training example after ``train_on_responses_only``: some labels kept, the last kept one the
    ``<|eot_id|>`` that ends the reply (else the model never learns to stop)."""
    kept = [x for x in labels if x != -100]
    if not kept:
        raise TrainError("train_on_responses_only masked the whole first example: the assistant header was not "
                         "found (is --max-length shorter than the prompt?)")
    if kept[-1] != eot_id:
        raise TrainError(f"the responses-only labels end with token {kept[-1]}, not {EOT} ({eot_id}): the model "
                         "would not learn to stop")


# -- configuration -----------------------------------------------------------------------------------------------------
def max_seq_length(cfg: TrainConfig) -> int:
    return cfg.max_length or DEFAULT_MAX_SEQ_LENGTH


def sft_config_kwargs(cfg: TrainConfig, fields: set[str], precision: dict[str, bool], has_val: bool
                      ) -> dict[str, Any]:
    """Keyword arguments for TRL's ``SFTConfig``. ``fields`` are its field names: TRL renamed ``max_seq_length``
    to ``max_length`` and transformers 5 folded ``warmup_ratio`` into a fractional ``warmup_steps``, and unsloth
    accepts TRL and transformers versions on both sides of each change."""
    kw: dict[str, Any] = {
        "output_dir": cfg.out, "dataset_text_field": "text", "packing": False,
        "per_device_train_batch_size": cfg.batch_size, "per_device_eval_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum, "learning_rate": cfg.lr, "weight_decay": cfg.weight_decay,
        "lr_scheduler_type": cfg.scheduler, "optim": OPTIMIZER, "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps if cfg.max_steps is not None else -1, "seed": cfg.seed, "data_seed": cfg.seed,
        "logging_steps": cfg.logging_steps, "save_strategy": "steps", "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "eval_strategy": "steps" if cfg.eval_steps and has_val else "no", "eval_steps": cfg.eval_steps,
        "report_to": "none", "disable_tqdm": True, **precision,
    }
    kw["max_length" if "max_length" in fields else "max_seq_length"] = max_seq_length(cfg)
    if "warmup_ratio" in fields:
        kw["warmup_ratio"] = cfg.warmup_ratio
    else:
        kw["warmup_steps"] = float(cfg.warmup_ratio)  # a float < 1 is a ratio there
    return kw


def resolved_config(cfg: TrainConfig, data_sha: str, n_records: int, n_train: int, n_val: int,
                    facts: dict[str, Any]) -> dict[str, Any]:
    """What ``config.json`` records for an unsloth run: the options, the data's hash and split, the recipe's fixed
    choices and what loading the model found (``facts``)."""
    return {**dataclasses.asdict(cfg), "engine": "unsloth", "data_format": "sharegpt", "data_sha256": data_sha,
            "n_records": n_records, "n_train": n_train, "n_val": n_val, "chat_template": CHAT_TEMPLATE,
            "loss_masking": "unsloth train_on_responses_only, then the final assistant reply only",
            "instruction_part": INSTRUCTION_PART,
            "response_part": RESPONSE_PART, "eos_token": EOT, "max_seq_length": max_seq_length(cfg),
            "optimizer": OPTIMIZER, "gradient_checkpointing": "unsloth", "padding": "dynamic (per batch)", **facts}


# -- GPU part ----------------------------------------------------------------------------------------------------------
def load_model(cfg: TrainConfig) -> tuple[Any, Any, dict[str, Any]]:
    """(Unsloth LoRA model, llama-3 chat tokenizer with ``<|eot_id|>`` as EOS, facts); unsloth already imported."""
    import torch
    from unsloth import FastLanguageModel
    from unsloth.chat_templates import get_chat_template

    quant = "8bit" if cfg.load_in_8bit else "4bit"
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.precision)  # None: Unsloth picks
    try:
        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=cfg.model, max_seq_length=max_seq_length(cfg), dtype=dtype,
            load_in_4bit=quant == "4bit", load_in_8bit=quant == "8bit")
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot load the model {cfg.model}: {e}") from e
    targets = resolve_targets(model, cfg.target_modules or TARGET_MODULES)
    model = FastLanguageModel.get_peft_model(
        model, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
        bias="none", use_gradient_checkpointing="unsloth", random_state=cfg.seed)
    tokenizer = get_chat_template(tokenizer, chat_template=CHAT_TEMPLATE)
    base_eos = tokenizer.eos_token
    tokenizer.eos_token = EOT  # saved with the adapter / merged model: HF generate and the GGUF stop at the turn end
    eot_id = tokenizer.convert_tokens_to_ids(EOT)
    stop_ids = sorted({eot_id, tokenizer.convert_tokens_to_ids(base_eos)} if base_eos else {eot_id})
    model.generation_config.eos_token_id = stop_ids
    trainable, total = model.get_nb_trainable_parameters()
    facts = {"quantization": quant, "target_modules": targets, "model_type": model.config.model_type,
             "trainable_params": trainable, "total_params": total, "cuda": True, "base_eos_token": base_eos,
             "eos_token_id": eot_id, "generation_eos_token_ids": stop_ids, "pad_token": tokenizer.pad_token,
             "dtype": str(getattr(model, "dtype", None))}
    return model, tokenizer, facts


def chat_dataset(conversations: Sequence[dict[str, Any]], tokenizer: Any) -> Any:
    """A ``datasets.Dataset`` with the ``text`` column: standardize_sharegpt, then the llama-3 chat template."""
    from datasets import Dataset
    from unsloth.chat_templates import standardize_sharegpt

    ds = standardize_sharegpt(Dataset.from_list(list(conversations)))

    def render(batch: dict[str, list]) -> dict[str, list[str]]:
        return {"text": [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=False)
                         for c in batch["conversations"]]}

    return ds.map(render, batched=True)


def train_unsloth(cfg: TrainConfig) -> dict[str, Any]:
    """Fine-tune ``cfg.model`` with Unsloth on the ShareGPT file ``cfg.data``; writes the run directory and returns
    its metrics. Stops with a :class:`TrainError` before anything heavy when options, CUDA or the data are wrong."""
    check_options(cfg)
    cfg = dataclasses.replace(cfg, loss="answer-only")  # what train_on_responses_only trains on
    require_cuda()
    conversations = load_sharegpt(cfg.data)
    train_convs, val_convs = split_validation(conversations, cfg.val_size, cfg.seed)
    t0 = time.perf_counter()
    import_unsloth()
    import torch
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq
    from trl import SFTConfig, SFTTrainer
    from unsloth.chat_templates import train_on_responses_only

    try:
        check_llama3_tokenizer(AutoTokenizer.from_pretrained(cfg.model), cfg.model)  # before loading the weights
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot load the tokenizer of {cfg.model}: {e}") from e
    data_sha = sha256_file(cfg.data)
    resume_from = prepare_out(cfg, data_sha)
    out = Path(cfg.out)
    model, tokenizer, facts = load_model(cfg)
    precision = precision_flags(cfg, cuda=True)
    if is_main():
        write_json(out / "config.json", resolved_config(cfg, data_sha, len(conversations), len(train_convs),
                                                        len(val_convs), {**facts, **precision}))
        write_json(out / "environment.json", environment({"seed": cfg.seed}))

    fields = {f.name for f in dataclasses.fields(SFTConfig)}
    args = SFTConfig(**sft_config_kwargs(cfg, fields, precision, has_val=bool(val_convs)))
    trainer = SFTTrainer(model=model, processing_class=tokenizer, args=args,
                         train_dataset=chat_dataset(train_convs, tokenizer),
                         eval_dataset=chat_dataset(val_convs, tokenizer) if val_convs else None,
                         data_collator=DataCollatorForSeq2Seq(tokenizer=tokenizer),
                         callbacks=[log_callback(out / "trainer_log.jsonl")])
    trainer = train_on_responses_only(trainer, instruction_part=INSTRUCTION_PART, response_part=RESPONSE_PART)
    for split in ("train_dataset", "eval_dataset"):  # as unsloth's own mapping of the labels
        ds = getattr(trainer, split, None)
        if ds is not None and "labels" in ds.column_names:
            setattr(trainer, split, ds.map(_final_reply_only, batched=True))
    trainer.data_collator = FinalReplyCollator(trainer.data_collator)
    check_response_labels(trainer.train_dataset[0]["labels"], facts["eos_token_id"])
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    metrics = run_metrics(trainer, result, resume_from)
    if val_convs:
        metrics["val_loss"] = trainer.evaluate()["eval_loss"]
    metrics["peak_gpu_memory_gib"] = torch.cuda.max_memory_reserved() / 2**30
    if trainer.is_world_process_zero():
        model.save_pretrained(out / "adapter")  # LoRA weights only, PEFT format (adapter_config.json + safetensors)
        tokenizer.save_pretrained(out / "adapter")
        if cfg.merge:  # 16-bit weights with the adapter folded in: what llama.cpp / kofinsent export gguf convert
            model.save_pretrained_merged(str(out / "merged"), tokenizer, save_method="merged_16bit")
            metrics["merged"] = str(out / "merged")
        metrics["train_s"] = time.perf_counter() - t0
        write_json(out / "metrics.json", metrics)
    trainer.accelerator.wait_for_everyone()
    return metrics


__all__ = ["CHAT_TEMPLATE", "EOT", "INSTRUCTION_PART", "RESPONSE_PART", "TARGET_MODULES", "check_llama3_tokenizer",
           "check_options", "check_response_labels", "final_reply_only", "load_sharegpt", "resolved_config",
           "sft_config_kwargs", "train_unsloth", "unsupported_options"]

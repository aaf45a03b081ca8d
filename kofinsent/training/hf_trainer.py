"""The hf engine (``kofinsent train --engine hf``): HF causal LMs fine-tuned with LoRA (peft) on the seed's 2-shot
prompt, optionally on 8-bit / 4-bit base weights.

The examples are :func:`kofinsent.training.records.encode_example`'s; the model, its LoRA targets and precision come
from :mod:`kofinsent.training.loading`. Padding is masked by position (the collator knows which positions it added),
never by token id: polyglot-ko's pad token *is* its EOS, and the real EOS must stay in the labels.

Training runs on the HF ``Trainer`` with per-batch dynamic padding (or packed rows:
:mod:`kofinsent.training.collators`), length-grouped sampling and the micro-batch / accumulation of
:mod:`kofinsent.training.batching` (``batch_size="auto"``), so ``accelerate launch`` runs it unchanged on several GPUs
(``accelerate/ddp.yaml``, ``accelerate/fsdp.yaml``; under FSDP quantized base weights are refused and the adapter is
gathered before it is saved, see ``docs/multi_gpu.md``). The run directory (:mod:`kofinsent.training.run_dir`) holds
``config.json`` (the resolved config, the sha256 of the training data, the ``batching`` used), ``environment.json``,
``checkpoint-*/`` (every ``save_steps``; ``resume`` continues from the latest), ``adapter/`` (PEFT format),
``metrics.json`` (losses and the validation slice's accuracy, scored as ``kofinsent eval`` scores:
:mod:`kofinsent.training.validation`) and, with ``merge``, ``merged/`` (the full model with the adapter folded in).
``--engine unsloth`` (:mod:`kofinsent.training.unsloth`) writes the same layout;
:func:`kofinsent.training.engines.train_with` picks one.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from kofinsent.runs import environment, read_json, sha256_file, write_json
from kofinsent.training.batching import plan_for_run
from kofinsent.training.collators import make_collator
from kofinsent.training.distributed import fsdp_active, is_main
from kofinsent.training.errors import TrainError
from kofinsent.training.loading import load_model, merge_adapter, precision_flags
from kofinsent.training.options import TrainConfig
from kofinsent.training.records import encode_example, load_records, split_validation
from kofinsent.training.run_dir import log_callback, prepare_out, run_metrics


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
    precision = precision_flags(cfg, facts["cuda"])
    collator = make_collator(cfg.packing, tokenizer.pad_token_id, facts["attn_implementation_used"], model)
    old = read_json(out / "config.json") if resume_from and (out / "config.json").is_file() else {}
    plan = plan_for_run(cfg, model, train_ds, collator, facts, precision, old.get("batching"))  # resumed: its split

    resolved = {**asdict(cfg), "engine": "hf", "data_sha256": data_sha, "n_records": len(records),
                "n_train": len(train_ds), "n_val": len(val_ds), "prompt": "seed2shot", **facts, **precision,
                "train_sampling_strategy": "group_by_length", "batching": plan.record(),
                "padding": collator.description}
    if is_main():
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
    if is_main():
        from kofinsent.training.validation import score_validation

        metrics.update(score_validation(cfg.model, adapter_dir, val_recs, cfg))
        if cfg.merge:
            metrics["merged"] = str(merge_adapter(cfg.model, adapter_dir, out / "merged"))
        metrics["train_s"] = time.perf_counter() - t0
        write_json(out / "metrics.json", metrics)
    return metrics


__all__ = ["train"]

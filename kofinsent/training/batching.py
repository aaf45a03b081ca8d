"""Micro-batches and gradient accumulation for ``kofinsent train``: ``--batch-size auto`` and
``--effective-batch-size``.

What the options mean (existing configs keep their meaning exactly):

- ``batch_size`` (an int, default 8) is the **micro-batch**: examples per forward pass on each process, as before.
  ``grad_accum`` (default 1) micro-batches make one optimizer step, so the effective batch (examples per optimizer
  step, all processes together) is ``batch_size x grad_accum x processes``.
- ``effective_batch_size`` (default None) fixes the effective batch directly; the accumulation follows from it
  (``effective / (micro-batch x processes)``, which must divide evenly; ``grad_accum`` must then stay 1).
- ``batch_size = "auto"`` picks the micro-batch and never the training math: the effective batch is
  ``effective_batch_size``, else what the default micro-batch would give (``8 x grad_accum x processes``), and the
  micro-batch is the largest divisor of the per-process effective batch that fits. On CUDA that is searched: a few
  real forward + backward passes (:data:`PROBE_STEPS`) on the longest training examples, starting at the whole
  per-process batch and halving on out-of-memory (a micro-batch larger than the effective batch buys nothing, so
  there is nothing to double towards), keeping :data:`HEADROOM` of the card free for the optimizer and the
  allocator's fragmentation. What fits and what did not is cached per model shape, weights' dtype, autocast
  precision, attention, packing, gradient checkpointing, LoRA rank and targets, the longest example (in steps of
  :data:`LENGTH_STEP` tokens) and GPU in ``train_batches.json`` next to the evaluator's ``token_budgets.json``
  (:func:`kofinsent.backends.hf.budget_cache_file`: ``$KOFINSENT_CACHE_DIR`` or ``~/.cache/kofinsent``); delete it to
  search again. On a CPU nothing is searched (no out-of-memory error to search with): the micro-batch is the largest
  divisor of the per-process effective batch up to :data:`CPU_MICRO_BATCH` (so 8 at the default effective batch).

The probe passes change no weight (gradients are dropped, no optimizer step) and run under a forked RNG, so a run
with ``auto`` trains exactly as one with the chosen micro-batch given as an int. The Trainer's length-grouped sampler
groups by the effective batch (micro-batch x accumulation), so any split of one effective batch sees the same
examples per optimizer step, and transformers (>= 5) normalises the accumulated loss by the target tokens of the whole
step: the updates equal those of one big batch up to float rounding (the tests check it).

The chosen plan (:meth:`BatchPlan.record`) goes into the run's config.json (``batching``) and metrics.json.
"""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kofinsent.backends.options import int_problem
from kofinsent.training.distributed import local_rank
from kofinsent.training.errors import TrainError

AUTO = "auto"
DEFAULT_MICRO_BATCH = 8   # TrainConfig.batch_size's default: "auto" without effective_batch_size keeps its batch
CPU_MICRO_BATCH = 16      # "auto" on a CPU, at most: the tiny GPT-NeoX trains fastest at 16-32 with 2 threads
                          # (micro 8: 0.82x of the best, 16: 0.96x; 1 thread: all of 8..32 within 5 %)
PROBE_STEPS = 2           # forward + backward passes per probed micro-batch (the second meets a warm allocator)
HEADROOM = 0.9            # a probe whose peak passes this share of the card's memory counts as not fitting
LENGTH_STEP = 32          # the longest example is rounded up to this many tokens in the cache key

log = logging.getLogger(__name__)


def check_batch_options(batch_size: Any, grad_accum: int, effective_batch_size: Any) -> None:
    """``TrainConfig.validate``'s checks of the batch options (a TrainError naming the option)."""
    if batch_size != AUTO and (problem := int_problem("--batch-size", batch_size, 1, " or auto")):
        raise TrainError(problem)
    if effective_batch_size is None:
        return
    if problem := int_problem("--effective-batch-size", effective_batch_size, 1):
        raise TrainError(problem)
    if grad_accum != 1:
        raise TrainError("--effective-batch-size sets the gradient accumulation itself; leave --grad-accum at 1")
    if isinstance(batch_size, int) and effective_batch_size % batch_size:
        raise TrainError(f"--effective-batch-size {effective_batch_size} is not a multiple of "
                         f"--batch-size {batch_size}")


def parse_batch_size(text: str) -> int | str:
    """``--batch-size``'s value: ``auto`` or an integer >= 1 (a TrainError otherwise)."""
    text = str(text).strip()
    if text.lower() == AUTO:
        return AUTO
    try:
        value = int(text)
    except ValueError:
        raise TrainError(f"--batch-size must be an integer >= 1 or auto, got {text!r}") from None
    check_batch_options(value, 1, None)
    return value


def world_size() -> int:
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def per_process_batch(batch_size: int | str, grad_accum: int, effective_batch_size: int | None, world: int) -> int:
    """Examples per optimizer step on one process."""
    if effective_batch_size is None:
        return (batch_size if isinstance(batch_size, int) else DEFAULT_MICRO_BATCH) * grad_accum
    if effective_batch_size % world:
        raise TrainError(f"--effective-batch-size {effective_batch_size} does not split over {world} processes")
    return effective_batch_size // world


def largest_divisor(n: int, at_most: int) -> int:
    """The largest divisor of ``n`` that is <= ``at_most`` (at least 1)."""
    for d in range(min(n, max(1, at_most)), 0, -1):
        if n % d == 0:
            return d
    return 1


@dataclass
class BatchPlan:
    micro_batch_size: int
    grad_accum_steps: int
    effective_batch_size: int  # examples per optimizer step, all processes together
    world_size: int
    source: str                # fixed | cpu default | probed | cache FILE | resumed run
    oom_halvings: int = 0
    probes: list[dict[str, Any]] = field(default_factory=list)  # {micro_batch_size, fits, peak_mib, why}

    def summary(self) -> dict[str, Any]:
        """metrics.json's top-level keys, and the whole record under ``batching``."""
        return {"micro_batch_size": self.micro_batch_size, "grad_accum_steps": self.grad_accum_steps,
                "effective_batch_size": self.effective_batch_size, "batching": self.record()}

    def record(self) -> dict[str, Any]:
        return {"micro_batch_size": self.micro_batch_size, "grad_accum_steps": self.grad_accum_steps,
                "effective_batch_size": self.effective_batch_size, "world_size": self.world_size,
                "source": self.source, "oom_halvings": self.oom_halvings, "probes": self.probes}


# -- the cache ---------------------------------------------------------------------------------------------------------
def cache_file() -> Path:
    """``train_batches.json`` beside the evaluator's token-budget cache (:mod:`kofinsent.cache`)."""
    from kofinsent.cache import cache_file as named

    return named("train_batches.json")


def _read_cache() -> dict[str, Any]:
    from kofinsent.cache import read_cache

    return read_cache(cache_file())


def _write_cache(key: str, entry: dict[str, Any]) -> None:
    from kofinsent.cache import update_cache

    update_cache(cache_file(), key, entry)


def cache_key(model: Any, device: Any, facts: dict[str, Any], longest: int) -> str:
    """What the memory of a training step depends on, not the weights' values."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    shape = {a: getattr(cfg, a, None) for a in (
        "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "intermediate_size", "vocab_size")}
    shape["parameters"] = sum(p.numel() for p in model.parameters())
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    mem = torch.cuda.get_device_properties(device).total_memory >> 30 if device.type == "cuda" else 0
    weights = facts.get("quantization") or str(facts.get("base_dtype", "")).removeprefix("torch.")
    length = -(-longest // LENGTH_STEP) * LENGTH_STEP
    lora = f"r{facts.get('lora_r')}:{','.join(facts.get('target_modules') or [])}"
    return (f"{shape['model_type']}-{digest}|{weights}|{facts.get('autocast', 'fp32')}|"
            f"attn={facts.get('attn_implementation')}|packing={bool(facts.get('packing'))}|"
            f"gc={bool(facts.get('gradient_checkpointing'))}|{lora}|len<={length}|{name} {mem}GiB")


# -- probing -----------------------------------------------------------------------------------------------------------
def is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and "out of memory" in str(e).lower())


def searchable(device: Any) -> bool:
    """Whether the micro-batch is searched on ``device`` (CUDA only; the tests force it on a CPU)."""
    return device.type == "cuda"


def _clear(model: Any, device: Any) -> None:
    for p in model.parameters():
        p.grad = None
    gc.collect()
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()


def _steps(model: Any, feats: list[dict[str, list[int]]], collator: Callable, device: Any,
           autocast: Callable[[], AbstractContextManager[Any]]) -> None:
    """The probe's passes, in a frame of their own: when one runs out of memory, the batch, the loss and its graph
    die with this frame once the error is handled, so the cache can give their memory back."""
    import torch

    batch = {k: v.to(device) for k, v in collator(feats).items()}
    for _ in range(PROBE_STEPS):
        with autocast():
            loss = model(**batch).loss
        loss.backward()
        del loss
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def probe(model: Any, examples: Sequence[dict[str, list[int]]], collator: Callable, micro: int, device: Any,
          autocast: Callable[[], AbstractContextManager[Any]]) -> tuple[bool, float | None, str]:
    """(fits, peak MiB on CUDA, why not): :data:`PROBE_STEPS` forward + backward passes of ``micro`` of the longest
    examples (repeated when there are fewer), gradients dropped afterwards, the RNG state restored."""
    import torch

    longest = sorted(examples, key=lambda f: -len(f["input_ids"]))
    feats = [longest[i % len(longest)] for i in range(micro)]
    cuda = device.type == "cuda"
    oom = None
    was_training = model.training
    model.train()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with torch.random.fork_rng(devices=[device] if cuda else []):
        try:
            _steps(model, feats, collator, device, autocast)
        except Exception as e:  # only out-of-memory is an answer; anything else is a real error
            if not is_oom(e):
                raise
            oom = type(e).__name__
    _clear(model, device)
    model.train(was_training)
    if oom:
        return False, None, oom
    if not cuda:
        return True, None, ""
    peak = torch.cuda.max_memory_allocated(device)
    total = torch.cuda.get_device_properties(device).total_memory
    if peak > HEADROOM * total:
        return False, peak / 2**20, f"peak {peak / 2**30:.1f} GiB over {HEADROOM:.0%} of {total / 2**30:.0f} GiB"
    return True, peak / 2**20, ""


def search(model: Any, examples: Sequence[dict[str, list[int]]], collator: Callable, per_process: int, device: Any,
           autocast: Callable[[], AbstractContextManager[Any]], key: str, model_name: str) -> tuple[int, str, int,
                                                                                                  list[dict[str, Any]]]:
    """(micro-batch, source, out-of-memory halvings, probes): the largest divisor of ``per_process`` that fits,
    starting below the smallest size known not to fit and taking a size known to fit without a probe."""
    entry = _read_cache().get(key)
    entry = entry if isinstance(entry, dict) else {}
    fits = entry.get("fits") if isinstance(entry.get("fits"), int) else 0
    oom = entry.get("oom") if isinstance(entry.get("oom"), int) else None
    m = largest_divisor(per_process, per_process if oom is None else oom - 1)
    probes: list[dict[str, Any]] = []
    halvings = 0
    while True:
        if m <= fits:
            return m, (f"cache {cache_file()}" if not probes else "probed"), halvings, probes
        t0 = time.perf_counter()
        ok, peak, why = probe(model, examples, collator, m, device, autocast)
        probes.append({"micro_batch_size": m, "fits": ok, "peak_mib": None if peak is None else round(peak),
                       "seconds": round(time.perf_counter() - t0, 2), **({"why": why} if why else {})})
        if ok:
            fits, oom = m, (oom if oom is not None and oom > m else None)
        else:
            oom, fits = m, (fits if fits < m else 0)
            halvings += 1
            log.info("train: micro-batch %d does not fit (%s); halving", m, why)
        _write_cache(key, {"fits": fits or None, "oom": oom, "model": model_name,
                           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        if ok:
            return m, "probed", halvings, probes
        if m == 1:
            raise TrainError("--batch-size auto: even a micro-batch of 1 runs out of memory on this device (try "
                         "--gradient-checkpointing, --load-in-8bit or a smaller --max-length)")
        m = largest_divisor(per_process, max(m // 2, fits))  # half, or the largest size known to fit


def _agree(micro: int, device: Any) -> int:
    """The smallest micro-batch any process found (every process must accumulate the same number of steps)."""
    import torch

    from accelerate import PartialState

    PartialState()  # the process group the Trainer will use
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return micro
    t = torch.tensor([micro], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    return int(t.item())


def plan_batches(cfg: Any, model: Any, examples: Sequence[dict[str, list[int]]], collator: Callable, device: Any,
                 facts: dict[str, Any], autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
                 previous: dict[str, Any] | None = None) -> BatchPlan:
    """The micro-batch and accumulation of ``cfg`` (a :class:`~kofinsent.training.options.TrainConfig`) for ``model`` on
    ``device``. ``previous``: the ``batching`` record of the run being resumed (its split is kept, so the resumed
    steps see the same batches)."""
    check_batch_options(cfg.batch_size, cfg.grad_accum, cfg.effective_batch_size)
    world = world_size()
    per = per_process_batch(cfg.batch_size, cfg.grad_accum, cfg.effective_batch_size, world)
    if isinstance(cfg.batch_size, int):
        return BatchPlan(cfg.batch_size, per // cfg.batch_size, per * world, world, "fixed")
    if previous and previous.get("effective_batch_size") == per * world and previous.get("world_size") == world:
        m = previous.get("micro_batch_size")
        if isinstance(m, int) and m >= 1 and per % m == 0:
            return BatchPlan(m, per // m, per * world, world, "resumed run")
    if not searchable(device):
        m = largest_divisor(per, CPU_MICRO_BATCH)
        return BatchPlan(m, per // m, per * world, world, "cpu default")
    if not examples:
        raise TrainError("--batch-size auto needs training examples to probe with")
    longest = max(len(f["input_ids"]) for f in examples)
    key = cache_key(model, device, facts, longest)
    m, source, halvings, probes = search(model, examples, collator, per, device, autocast, key, str(cfg.model))
    if world > 1:
        agreed = _agree(m, device)
        if agreed != m:
            m, source = agreed, f"{source}; smallest over {world} processes"
    return BatchPlan(m, per // m, per * world, world, source, halvings, probes)


def plan_for_run(cfg: Any, model: Any, examples: Sequence[dict[str, list[int]]], collator: Callable,
                 facts: dict[str, Any], precision: dict[str, bool], previous: dict[str, Any] | None) -> BatchPlan:
    """:func:`plan_batches` for :func:`kofinsent.training.hf_trainer.train`: the device the Trainer will use (the
    model moved there first when it is searched on and not quantized: the Trainer would move it anyway), its
    autocast, and the facts the cache key needs."""
    import torch

    device = torch.device("cuda", local_rank()) if facts.get("cuda") else torch.device("cpu")
    half = torch.bfloat16 if precision.get("bf16") else torch.float16 if precision.get("fp16") else None
    if not isinstance(cfg.batch_size, int) and searchable(device) and not facts.get("quantization"):
        model.to(device)

    def autocast() -> AbstractContextManager[Any]:
        return torch.autocast(device.type, dtype=half) if half is not None else nullcontext()

    key_facts = {**facts, "autocast": str(half).removeprefix("torch.") if half is not None else "fp32",
                 "packing": cfg.packing, "gradient_checkpointing": cfg.gradient_checkpointing, "lora_r": cfg.lora_r,
                 "attn_implementation": facts.get("attn_implementation_used")}
    return plan_batches(cfg, model, examples, collator, device, key_facts, autocast, previous)


__all__ = ["AUTO", "CPU_MICRO_BATCH", "BatchPlan", "cache_file", "cache_key", "check_batch_options",
           "largest_divisor", "parse_batch_size", "per_process_batch", "plan_batches", "plan_for_run", "probe",
           "search", "searchable", "world_size"]

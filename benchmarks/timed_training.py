"""The benchmarks' timed training loop (train_bench.py, pack_bench.py): seed2shot examples of synthetic titles, the
length-grouped and random orders, collated batches, and timed passes of forward + backward + optimizer step."""
from __future__ import annotations

import argparse
import time
from typing import Any, NamedTuple


def build_examples(tokenizer: Any, n: int, seed: int) -> list[dict[str, list[int]]]:
    import random

    from kofinsent import tiny
    from kofinsent.labels import LABELS
    from kofinsent.training.records import encode_example

    rng = random.Random(seed)
    titles = tiny.forum_titles(n, seed=seed)
    return [encode_example(tokenizer, t, rng.choice(LABELS), "full") for t in titles]


def make_batches(feats: list[dict[str, list[int]]], order: list[int], batch_size: int, collator: Any) -> list[dict]:
    return [collator([feats[i] for i in order[k:k + batch_size]]) for k in range(0, len(order), batch_size)]


def policy_orders(feats: list[dict[str, list[int]]], batch_size: int, seed: int) -> dict[str, list[int]]:
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    g = torch.Generator().manual_seed(seed)
    grouped = list(LengthGroupedSampler(batch_size, dataset=feats, model_input_name="input_ids", generator=g))
    shuffled = torch.randperm(len(feats), generator=torch.Generator().manual_seed(seed)).tolist()
    return {"grouped": grouped, "random": shuffled}


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


class Pass(NamedTuple):
    seconds: float  # of fwd + bwd + optimizer step + zero_grad, summed over the steps
    steps: list[float]  # each step's seconds
    losses: list[float]  # each step's loss


def train_pass(model: Any, batches: list[dict], device: str, lr: float, autocast: Any) -> Pass:
    """One timed pass of fwd+bwd+step over ``batches`` with a fresh AdamW."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    steps, losses = [], []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        sync(device)
        t0 = time.perf_counter()
        with autocast():
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        steps.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))  # after the clock: reading the loss waits for the GPU
    return Pass(sum(steps), steps, losses)


def best_passes(model: Any, prepared: dict[str, list[dict]], device: str, autocast: Any, repeats: int,
                lr: float = 2e-4) -> dict[str, Pass]:
    """Each policy's fastest of ``repeats`` passes over its batches, every pass from the same LoRA weights with a fresh
    AdamW, after two untimed warm-up steps per policy."""
    import torch

    init = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}

    def reset() -> None:
        with torch.no_grad():
            for k, v in model.named_parameters():
                if k in init:
                    v.copy_(init[k])

    for batches in prepared.values():
        reset()
        train_pass(model, batches[:2], device, lr, autocast)  # warm-up: allocator, kernels for these shapes
    best: dict[str, Pass] = {}
    for _ in range(repeats):  # interleaved, so drift on a shared machine hits every policy alike
        for name, batches in prepared.items():
            reset()
            run = train_pass(model, batches, device, lr, autocast)
            if name not in best or run.seconds < best[name].seconds:
                best[name] = run
    return best


def add_int_options(ap: argparse.ArgumentParser, options: dict[str, int | tuple[int, str]]) -> None:
    """``--flag`` int options in the order given; a value is the default, or (default, help)."""
    for flag, value in options.items():
        default, text = value if isinstance(value, tuple) else (value, None)
        ap.add_argument(flag, type=int, default=default, help=text)


def autocast_for(device: str) -> Any:
    import contextlib

    import torch

    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return lambda: torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext

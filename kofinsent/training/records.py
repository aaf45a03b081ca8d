"""Training data: the records of a dataset split (title, label), the seeded validation slice held out of them, and
the hf engine's tokenized examples.

Each example is ``seed2shot().training_text(title, label)`` (the evaluator's prompt, not a copy) + EOS, tokenized as
``encode(context)`` + ``encode(" " + label)`` + ``[eos]`` so that the prompt / answer boundary is a token boundary by
construction. ``loss="full"`` trains on every real token (as the seed does); ``loss="answer-only"`` masks the prompt
and keeps the label tokens and the EOS.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from kofinsent.labels import LABELS
from kofinsent.prompts.direction import seed2shot
from kofinsent.runs import read_jsonl
from kofinsent.training.errors import TrainError

Record = TypeVar("Record")


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


def split_validation(records: Sequence[Record], val_size: int | None, seed: int) -> tuple[list[Record], list[Record]]:
    """(train, validation): a seeded random slice of ``val_size`` records (default 5%, 1..500) held out. Both engines
    split this way (the unsloth engine's records are conversations)."""
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


__all__ = ["encode_example", "load_records", "split_validation"]

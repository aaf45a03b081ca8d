"""Training batches: :class:`PadCollator` (each micro-batch padded to its longest example, the default) and
:class:`PackCollator`, padding-free (``kofinsent train --packing``, ``train.NAME.packing = true``).

:class:`PackCollator` lays the examples of a micro-batch end to end in a few rows instead of padding each to the
longest: ``position_ids`` restart at 0 with every example and there is no ``attention_mask``, so transformers (>= 4.56;
``masking_utils.find_packed_sequence_indices``) reads the example boundaries from the positions and lets each token
attend only to earlier tokens of its own example: a block-diagonal causal mask under SDPA and eager attention, and
the variable-length kernels (no mask at all) under FlashAttention 2, where every micro-batch is one row. The first
label of every example is -100: in a padded row that position is never a target either (a causal LM predicts token
t + 1 from tokens <= t), and here it would otherwise be predicted from the previous example's last token. So the
targets, and the loss, are those of the padded batch (the tests check it per example on a tiny GPT-NeoX and Llama, for
the full and the answer-only loss).

Under SDPA / eager the rows are capped at ``row_tokens`` (default :data:`ROW_TOKENS`, at least the longest example):
attention on one row costs its length squared, and one row of a whole micro-batch of several hundred examples would
cost far more in attention than padding ever did. Rows are filled to about the same length (longest example first,
into the emptiest row); the short tail of each row is a dummy segment (its own positions from 0, label -100) that no
real token attends to. Measured on the tiny model on a CPU (benchmarks/RESULTS.md): length-grouped padding wastes ~5 %
of the tokens of these titles, and under SDPA packed rows train at 0.83x the padded ones (the mask); packing pays with
FlashAttention 2.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kofinsent.training.errors import TrainError

ROW_TOKENS = 512  # the cap on a packed row under SDPA / eager attention (FlashAttention 2: one row, no cap)


class PadCollator:
    """Pads each batch to its own longest example (right padding). Padded positions get attention 0 and label -100;
    real tokens keep their labels whatever their id, so an EOS equal to the pad token is still trained on."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_id = pad_id
        self.multiple = pad_to_multiple_of
        self.description = "dynamic (per batch, right)" if not pad_to_multiple_of else f"to {pad_to_multiple_of}"

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        if self.multiple:
            width = -(-width // self.multiple) * self.multiple
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            attn[i, :n] = 1
            labels[i, :n] = torch.tensor(f["labels"])
        return {"input_ids": ids, "attention_mask": attn, "labels": labels}


class PackCollator:
    """Packs a micro-batch into rows of at most ``row_tokens`` tokens (``None``: one row, for FlashAttention 2's
    variable-length path). Returns ``input_ids``, ``position_ids`` and ``labels`` (no ``attention_mask``)."""

    def __init__(self, pad_id: int, row_tokens: int | None = ROW_TOKENS) -> None:
        self.pad_id = pad_id
        self.row_tokens = row_tokens
        self.description = (f"packed, rows of up to {row_tokens} tokens" if row_tokens else "packed, one row") + \
            " (position ids restart per example, no padding mask)"

    def rows(self, lengths: Sequence[int]) -> list[list[int]]:
        """Which examples (indices into ``lengths``) go into each row: as many rows as the cap needs, filled longest
        example first into the emptiest row (so the rows come out about equally long and the filler is short), a
        new row for an example that fits nowhere."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        if self.row_tokens is None:
            return [order]
        cap = max(self.row_tokens, max(lengths, default=0))
        rows: list[list[int]] = [[] for _ in range(max(1, -(-sum(lengths) // cap)))]
        load = [0] * len(rows)
        for i in order:
            r = min(range(len(rows)), key=load.__getitem__)
            if load[r] + lengths[i] > cap:
                rows.append([])
                load.append(0)
                r = len(rows) - 1
            rows[r].append(i)
            load[r] += lengths[i]
        return [row for row in rows if row]

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        lengths = [len(f["input_ids"]) for f in features]
        rows = self.rows(lengths)
        width = max(sum(lengths[i] for i in row) for row in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        pos = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                n = lengths[i]
                ids[r, at:at + n] = torch.tensor(features[i]["input_ids"])
                pos[r, at:at + n] = torch.arange(n)
                labels[r, at + 1:at + n] = torch.tensor(features[i]["labels"][1:])
                at += n
            pos[r, at:] = torch.arange(width - at)  # the filler: a segment of its own, never a target
        return {"input_ids": ids, "position_ids": pos, "labels": labels}


def check_packing(model: Any) -> None:
    """A :class:`~kofinsent.training.errors.TrainError` unless ``model`` takes ``position_ids`` (packing needs them:
    models that derive positions from the attention mask, such as ALiBi ones, cannot see example boundaries)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if "position_ids" not in inspect.signature(base.forward).parameters:
        raise TrainError(f"--packing needs a model that takes position_ids; {type(base).__name__} does not "
                         "(train without --packing)")


def make_collator(packing: bool, pad_id: int, attn_implementation: str | None,
                  model: Any = None) -> PadCollator | PackCollator:
    """:class:`PadCollator`, or with ``packing`` a :class:`PackCollator` (``model``, when given, checked with
    :func:`check_packing`): one row per micro-batch under FlashAttention 2 (variable-length kernels), rows of
    :data:`ROW_TOKENS` otherwise."""
    if not packing:
        return PadCollator(pad_id)
    if model is not None:
        check_packing(model)
    return PackCollator(pad_id, None if attn_implementation and "flash" in attn_implementation else ROW_TOKENS)


__all__ = ["ROW_TOKENS", "PackCollator", "PadCollator", "check_packing", "make_collator"]

"""The validation slice's accuracy after training, scored by the evaluator itself.

:func:`score_validation` loads base + adapter into :class:`~kofinsent.backends.hf.HFBackend` with ``kofinsent eval``'s
defaults (dtype auto, prefix-cached log-likelihood, ``batch_size`` None: the token-budget "auto" batching on CUDA, 16
on a CPU) and scores with :func:`kofinsent.evaluation.evaluate.score_loglikelihood`, the function ``kofinsent eval``
runs: the numbers are those ``kofinsent eval --adapter`` gives on the same records. (It reloads the weights from the
saved adapter: HFBackend takes a model path, not a model object; reloading also scores what was saved, not the
training-mode model with its kbit preparation.)
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kofinsent.training.options import TrainConfig


def validation_items(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluator's item shape (id, title, label); a record without an id gets its position."""
    return [{"id": r.get("id", str(i)), "title": r["title"], "label": r["label"]} for i, r in enumerate(records)]


def score_validation(base: str, adapter: Path, records: Sequence[dict[str, Any]], cfg: TrainConfig
                     ) -> dict[str, Any]:
    """``val_n``, ``val_accuracy`` (argmax of the summed log-likelihoods, ``accuracy`` of ``kofinsent eval``'s
    metrics.json, computed by the same function), ``val_items_per_s`` and ``val_batching`` (the backend's
    :meth:`batching`)."""
    if not records:
        return {"val_n": 0, "val_accuracy": None}
    from kofinsent.backends.hf import HFBackend
    from kofinsent.evaluation.evaluate import score_loglikelihood
    from kofinsent.evaluation.metrics import classification_metrics
    from kofinsent.prompts.direction import seed2shot

    backend = HFBackend(base, adapter=str(adapter), load_in_8bit=cfg.load_in_8bit, load_in_4bit=cfg.load_in_4bit)
    items = validation_items(records)
    scored, seconds = score_loglikelihood(backend, seed2shot(), items,
                                          chunk=backend.items_per_call("loglikelihood"))
    accuracy = classification_metrics([r["gold"] for r in scored], [r["pred"] for r in scored])["accuracy"]
    out = {"val_n": len(items), "val_accuracy": accuracy,
           "val_items_per_s": len(items) / seconds if seconds > 0 else None, "val_batching": backend.batching()}
    del backend
    return out


__all__ = ["score_validation", "validation_items"]

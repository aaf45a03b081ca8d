"""``--engine``: which trainer runs a :class:`~kofinsent.training.options.TrainConfig`. Above both engines, so
neither imports the other."""
from __future__ import annotations

from typing import Any

from kofinsent.training.options import TrainConfig, check_engine


def train_with(engine: str, cfg: TrainConfig) -> dict[str, Any]:
    """Run ``cfg`` on an engine: ``"hf"`` (:func:`kofinsent.training.hf_trainer.train`) or ``"unsloth"`` (imported
    only when asked for; it checks for CUDA itself before importing unsloth)."""
    check_engine(engine)
    if engine == "unsloth":
        from kofinsent.training.unsloth import train_unsloth

        return train_unsloth(cfg)
    from kofinsent.training.hf_trainer import train

    return train(cfg)


__all__ = ["train_with"]

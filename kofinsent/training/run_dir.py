"""The run directory both engines write (``config.json``, ``environment.json``, ``trainer_log.jsonl``,
``checkpoint-*/``, ``adapter/``, ``metrics.json``, ``merged/``): claiming it, finding its checkpoints, logging into it
and the metrics every engine reports."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from kofinsent.runs import dumps, read_json
from kofinsent.training.distributed import is_main
from kofinsent.training.errors import TrainError
from kofinsent.training.options import TrainConfig

RUN_FILES = ("config.json", "environment.json", "metrics.json", "trainer_log.jsonl")
RUN_DIRS = ("adapter", "merged")


def checkpoints(out: Path) -> list[Path]:
    """The run's ``checkpoint-N`` directories, oldest first."""
    found = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def prepare_out(cfg: TrainConfig, data_sha: str) -> Path | None:
    """Claim ``cfg.out``; returns the checkpoint to resume from (None for a fresh run)."""
    out = Path(cfg.out)
    if not is_main():  # under accelerate launch / torchrun only rank 0 judges and claims the directory
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


def log_callback(path: Path) -> Any:
    """A ``TrainerCallback`` appending every log (losses, learning rate, eval) with its step to ``path`` as JSON
    Lines, from the main process only."""
    from transformers import TrainerCallback

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


__all__ = ["RUN_DIRS", "RUN_FILES", "checkpoints", "log_callback", "prepare_out", "run_metrics"]

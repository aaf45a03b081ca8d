"""Which process this is under ``accelerate launch`` / ``torchrun``, read from the environment the launcher exports:
it is known before any process group exists (the options are checked and the run directory claimed before the
Trainer builds one)."""
from __future__ import annotations

import os


def is_main() -> bool:
    """Rank 0 (also a plain single-process run): the one that writes the run directory's files."""
    return int(os.environ.get("RANK", "0")) == 0


def local_rank() -> int:
    """This process's GPU on its machine."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def fsdp_active() -> bool:
    """Whether this process runs under FSDP: ``accelerate launch`` with an FSDP config exports
    ``ACCELERATE_USE_FSDP=true`` to every process, and that is what makes accelerate (and the Trainer) build FSDP."""
    # the values accelerate's own str_to_bool reads as true
    return os.environ.get("ACCELERATE_USE_FSDP", "false").strip().lower() in ("1", "true", "t", "yes", "y", "on")


__all__ = ["fsdp_active", "is_main", "local_rank"]

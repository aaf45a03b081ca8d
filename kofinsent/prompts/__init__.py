"""Prompts shared by training and evaluation."""
from .direction import CONTINUATIONS, INSTRUCTION, LABELS, SEED_EXAMPLES, DirectionPrompt, kshot, seed2shot

__all__ = ["CONTINUATIONS", "INSTRUCTION", "LABELS", "SEED_EXAMPLES", "DirectionPrompt", "kshot", "seed2shot"]

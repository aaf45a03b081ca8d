"""Prompts shared by training and evaluation."""
from kofinsent.prompts.direction import (
    CONTINUATIONS,
    INSTRUCTION,
    LABELS,
    SEED_EXAMPLES,
    DirectionPrompt,
    kshot,
    seed2shot,
)

# The sentiment prompt needs pydantic (~0.2 s to import): loaded on first use so that importing the direction
# prompts (every training and log-likelihood run) stays light.
# ``sentiment.direction`` is exported as ``sentiment_direction``: the package attribute ``direction`` is the
# ``direction`` submodule and must stay so.
_SENTIMENT = ("SYSTEM_PROMPT", "EXAMPLES", "SentimentReply", "sentiment_chat", "training_chat", "user_message",
              "record_name", "prompt_sha256", "prompt_record", "json_schema",
              "parse_strict", "check_strict", "parse_lenient", "sentiment_direction")


def __getattr__(name: str):
    if name in _SENTIMENT:
        from kofinsent.prompts import sentiment

        return getattr(sentiment, "direction" if name == "sentiment_direction" else name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CONTINUATIONS", "INSTRUCTION", "LABELS", "SEED_EXAMPLES", "DirectionPrompt", "kshot", "seed2shot",
           *_SENTIMENT]

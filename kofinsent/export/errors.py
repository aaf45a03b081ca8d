"""The one error of the export steps, in a module of its own so that the CLI can catch it without loading them."""
from __future__ import annotations


class ExportError(Exception):
    """A model that cannot be exported, an unknown quant type, a failed quantization or an unreachable server."""


__all__ = ["ExportError"]

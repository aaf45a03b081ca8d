"""Evaluator test fixtures beyond the tiny models of ``tests/conftest.py``."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_gguf_f32(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_llama_dir`` written as an f32 GGUF with ``kofinsent.export.gguf_writer`` (once per session)."""
    from .gguf_helpers import tiny_gguf_path

    return tiny_gguf_path(tiny_llama_dir, tmp_path_factory, "f32")

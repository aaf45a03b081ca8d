"""The tiny GGUFs the llama.cpp tests share: the conftest's ``tiny_llama_dir`` written once per session and dtype.

A session fixture defined in two test modules would run twice; this cache makes the second one a lookup.
"""
from __future__ import annotations

import functools
from pathlib import Path

import pytest


@functools.cache
def _write(hf_dir: str, out: str, dtype: str) -> Path:
    from kofinsent.export.gguf_writer import write_llama_gguf

    return write_llama_gguf(Path(hf_dir), Path(out), dtype=dtype)


def tiny_gguf_path(hf_dir: Path, tmp_path_factory: pytest.TempPathFactory, dtype: str = "f32") -> Path:
    return _write(str(hf_dir), str(tmp_path_factory.getbasetemp() / f"tiny-llama-{dtype}.gguf"), dtype)

"""The wide tiny Llama for the export tests, built once per session from ``kofinsent.tiny`` (seconds, offline).

``tiny_llama_dir`` (tests/conftest.py) has hidden 64: rows too short for K-quants, so llama.cpp falls back to legacy
types. ``tiny_llama256``: hidden 256, one layer, so q4_k_m / q5_k_m use real K-quant blocks.
"""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_llama256(tiny_tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kofinsent import tiny

    return tiny.make_llama(tmp_path_factory.mktemp("export-llama256"), tiny_tokenizer, seed=0, hidden=256,
                           layers=1, init_std=0.05)

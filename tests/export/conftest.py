"""Tiny Llamas for the export tests, built once per session from ``kofinsent.tiny`` (seconds, offline).

``tiny_llama64``: hidden 64 (rows too short for K-quants: llama.cpp falls back to legacy types). ``tiny_llama256``:
hidden 256, one layer, so q4_k_m / q5_k_m use real K-quant blocks.
"""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def _export_tokenizer():  # noqa: ANN202 - PreTrainedTokenizerFast, imported lazily
    from kofinsent import tiny

    return tiny.train_tokenizer(tiny.korean_corpus(2000, seed=0), vocab_size=800)


@pytest.fixture(scope="session")
def tiny_llama64(_export_tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kofinsent import tiny

    return tiny.make_llama(tmp_path_factory.mktemp("export-llama64"), _export_tokenizer, seed=0)


@pytest.fixture(scope="session")
def tiny_llama256(_export_tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kofinsent import tiny

    return tiny.make_llama(tmp_path_factory.mktemp("export-llama256"), _export_tokenizer, seed=0, hidden=256,
                           layers=1, init_std=0.05)

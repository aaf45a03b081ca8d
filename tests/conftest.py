"""Tiny real models shared by the evaluator, training and export tests, built once per session (seconds, offline).

``tiny_tokenizer`` / ``tiny_tokenizer_dir``: a byte-level BPE tokenizer trained on Korean forum lines (``<|endoftext|>`` = bos/eos/pad, no
BOS added on encode, like polyglot-ko). ``tiny_neox_dir``: a polyglot-ko-shaped GPT-NeoX (rotary_pct 0.5, parallel
residual, untied embeddings) with that tokenizer. ``tiny_llama_dir``: a llama-3-shaped Llama whose copy of the
tokenizer prepends ``<|begin_of_text|>`` and has a llama-3-style chat template. Each is a Path to a saved directory
that includes the tokenizer.
"""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_tokenizer():  # noqa: ANN201 - PreTrainedTokenizerFast, imported lazily
    from kofinsent import tiny

    return tiny.train_tokenizer(tiny.korean_corpus(2000, seed=0), vocab_size=800)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tiny_tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-tokenizer")
    tiny_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_neox_dir(tiny_tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kofinsent import tiny

    return tiny.make_gpt_neox(tmp_path_factory.mktemp("tiny-neox"), tiny_tokenizer, seed=0)


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kofinsent import tiny

    return tiny.make_llama(tmp_path_factory.mktemp("tiny-llama"), tiny_tokenizer, seed=0)


@pytest.fixture(scope="session")
def tiny_gguf_f32(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_llama_dir`` written as an f32 GGUF with ``kofinsent.export.gguf_writer`` (once per session)."""
    from tests.export.gguf_helpers import tiny_gguf_path

    return tiny_gguf_path(tiny_llama_dir, tmp_path_factory, "f32")

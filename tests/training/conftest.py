"""Fixtures for the training tests: the tiny polyglot-ko-shaped GPT-NeoX of ``kofinsent.tiny`` and its cue-word task
(``kofinsent.tiny.cue_records``: "가즈아" -> [상승], "손절" -> [하락] among random filler words), written as
train.jsonl / test.jsonl in the dataset's record shape {id, title, label}."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kofinsent.tiny import cue_records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def cue_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIR with train.jsonl (240 records) and test.jsonl (60 records) of the cue-word task."""
    d = tmp_path_factory.mktemp("cue-data")
    write_jsonl(d / "train.jsonl", cue_records(240, seed=1, prefix="tr"))
    write_jsonl(d / "test.jsonl", cue_records(60, seed=2, prefix="te"))
    return d

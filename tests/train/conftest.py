"""Fixtures for the training tests: the tiny polyglot-ko-shaped GPT-NeoX of ``kofinsent.tiny`` and a synthetic
learnable task where a cue word in the title decides the label ("가즈아" -> [상승], "손절" -> [하락]) among random
filler words, written as train.jsonl / test.jsonl in the dataset's record shape {id, title, label}."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

CUES = {"[상승]": "가즈아", "[하락]": "손절"}
FILLER = ("삼성전자", "카카오", "외국인", "기관", "개미", "실적", "배당", "공시", "오늘", "내일", "주가", "반도체",
          "금리", "환율", "시장", "장마감", "뉴스", "진짜", "ㅋㅋ", "매수", "매도", "차트", "거래량", "급등")


def cue_records(n: int, seed: int, prefix: str) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = ("[상승]", "[하락]")[i % 2]
        words = rng.sample(FILLER, rng.randint(1, 4))
        words.insert(rng.randint(0, len(words)), CUES[label])
        out.append({"id": f"{prefix}{i}", "title": " ".join(words), "label": label})
    rng.shuffle(out)
    return out


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

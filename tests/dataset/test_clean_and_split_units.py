"""Unit checks of the cleaning rules and split helpers that the end-to-end tests only touch indirectly."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kofinsent.dataset.clean import load_relevance_rules, normalize_titles, relevance_filter
from kofinsent.dataset.errors import DatasetConfigError
from kofinsent.dataset.splits import _largest_remainder


def test_normalize_titles():
    nfd = "\u1109\u1161\u11b7\u1109\u1165\u11bc"  # 삼성, decomposed into jamo
    raw = pd.Series([nfd + "  가즈아", "a\u200bb\ufeff", " x\n\ty\u3000\u00a0z ", "👨\u200d👩"])
    assert normalize_titles(raw).tolist() == ["삼성 가즈아", "ab", "x y z", "👨\u200d👩"]


def test_relevance_rules_first_match_wins_and_codes_restrict(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": [
        {"name": "politics", "keywords": ["대통령"]},
        {"name": "ads", "patterns": [r"01[0-9]-\d{4}-\d{4}", "(?i)VIP"], "codes": ["000660"]},
    ]}, ensure_ascii=False), encoding="utf-8")
    rules = load_relevance_rules(path)
    frame = pd.DataFrame({
        "code": ["005930", "005930", "000660", "000660", "000660"],
        "title": ["대통령 vip 방", "vip 리딩", "vip 리딩", "010-1234-5678 대통령", "실적 좋다"],
    })
    keep, report = relevance_filter(frame, rules)
    assert keep.tolist() == [False, True, False, False, True]
    assert report == {"politics": {"removed": 2, "matched": 2}, "ads": {"removed": 1, "matched": 2}}


@pytest.mark.parametrize("text, match", [
    ('rules = []', "non-empty `rules`"),
    ('other = 1\n[[rules]]\nname = "a"\nkeywords = ["x"]', "only a non-empty `rules`"),
    ('[[rules]]\nname = "a"', "give `keywords` or `patterns`"),
    ('[[rules]]\nname = "a"\nkeywords = ["x"]\n[[rules]]\nname = "a"\nkeywords = ["y"]', "unique"),
    ('[[rules]]\nname = "a"\nkeywords = "x"', "list of non-empty strings"),
    ('[[rules]\n', "cannot parse"),
])
def test_relevance_file_mistakes(tmp_path, text, match):
    path = tmp_path / "r.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetConfigError, match=match):
        load_relevance_rules(path)


def test_largest_remainder_is_exact():
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(0, 50, rng.integers(1, 30))
        if sizes.sum() == 0:
            continue
        total = int(rng.integers(1, sizes.sum() + 1))
        alloc = _largest_remainder(sizes, total)
        assert alloc.sum() == total and (alloc <= sizes).all() and (alloc >= 0).all()
        assert (np.abs(alloc - sizes * total / sizes.sum()) < 1 + 1e-9).all()

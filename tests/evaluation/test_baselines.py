"""Majority class and TF-IDF + logistic regression baselines on a tiny synthetic set where one cue word decides."""
from __future__ import annotations

import importlib.util
import random

import pytest

from kofinsent.evaluation import baselines as B

U, D = "[상승]", "[하락]"
FILLER = ["오늘", "삼성", "주가", "외국인이", "기관은", "매수", "실적", "반도체", "장마감", "뉴스", "개미들", "차트"]


def records(start: int, n: int, rng: random.Random, up_share: float = 0.6) -> list[dict]:
    out = []
    for i in range(start, start + n):
        up = rng.random() < up_share
        words = rng.sample(FILLER, 3) + ["대박" if up else "폭망"]
        rng.shuffle(words)
        out.append({"id": f"t{i}", "title": " ".join(words), "label": U if up else D, "stock_code": "005930"})
    return out


@pytest.fixture(scope="module")
def data() -> tuple[list[dict], list[dict]]:
    rng = random.Random(7)
    return records(0, 200, rng), records(200, 80, rng)


@pytest.fixture(scope="module")
def results(data):
    train, test = data
    return B.run_baselines(train, test, seed=0)


def test_kiwi_tokenizes_offline_with_its_bundled_model():
    assert importlib.util.find_spec("kiwipiepy_model") is not None  # the model ships as a package, no download
    docs = B.morpheme_docs(["주가가 안 오르네요", "NVDA 실적 대박"])
    assert docs[0].split() == ["주가/NNG", "가/JKS", "안/MAG", "오르/VV", "네요/EF"]
    assert docs[1].startswith("nvda/SL ")
    assert B.kiwi() is B.kiwi()  # one instance per process
    assert B.morpheme_docs([]) == []


def test_tfidf_learns_the_cue_word(data):
    train, test = data
    gold = [r["label"] for r in test]
    for analyzer in ("kiwi", "char"):
        preds, probs = B.tfidf_lr([r["title"] for r in train], [r["label"] for r in train],
                                  [r["title"] for r in test], analyzer=analyzer, seed=0)
        assert sum(p == g for p, g in zip(preds, gold)) / len(gold) >= 0.95, analyzer
        assert all(0 <= p <= 1 for p in probs)
        assert all((p == U) == (q > 0.5) for p, q in zip(preds, probs))


def test_majority_is_the_train_majority_and_scores_the_test_majority_rate(data, results):
    train, test = data
    preds, probs = B.majority_baseline([r["label"] for r in train], len(test))
    train_up = sum(r["label"] == U for r in train) / len(train)
    assert train_up > 0.5 and preds == [U] * len(test) and probs == [train_up] * len(test)
    m = results["majority"]["metrics"]
    assert m["accuracy"] == m["majority_rate"] == sum(r["label"] == U for r in test) / len(test)
    assert B.majority_baseline([D, U], 2)[0] == [U, U]  # a tie goes to the first label


def test_run_baselines_shapes(data, results):
    _, test = data
    assert list(results) == ["majority", "tfidf_kiwi", "tfidf_char"]
    for name, res in results.items():
        m = res["metrics"]
        for key in ("n", "accuracy", "accuracy_ci95", "macro_f1", "mcc", "invalid_rate", "items_per_s", "wall_s",
                    "confusion", "binom_p_vs_chance", "binom_p_vs_majority"):
            assert key in m, (name, key)
        assert m["baseline"] == name and m["n"] == len(test) and m["invalid_rate"] == 0
        preds = res["predictions"]
        assert [p["id"] for p in preds] == [r["id"] for r in test]
        assert set(preds[0]) == {"id", "title", "gold", "pred", "prob_up"}
    assert results["tfidf_kiwi"]["metrics"]["accuracy"] >= 0.95
    assert results["tfidf_char"]["metrics"]["accuracy"] >= 0.95


def test_seeded_and_deterministic(data, results):
    train, test = data
    again = B.run_baselines(train, test, seed=0)
    for name in results:
        assert [p["prob_up"] for p in again[name]["predictions"]] == [p["prob_up"] for p in results[name]["predictions"]]


def test_bad_train_labels_are_refused(data):
    train, test = data
    with pytest.raises(ValueError, match="both labels"):
        B.tfidf_lr(["a", "b"], [U, U], ["c"], analyzer="char")
    with pytest.raises(ValueError, match="not in"):
        B.tfidf_lr(["a", "b"], [U, "up"], ["c"], analyzer="char")
    with pytest.raises(ValueError, match="analyzer"):
        B.tfidf_lr(["a", "b"], [U, D], ["c"], analyzer="word")  # type: ignore[arg-type]

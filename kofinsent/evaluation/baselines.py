"""Baselines every model must beat: the majority class and TF-IDF + logistic regression (scikit-learn) on Kiwi
morphemes or on character n-grams. Fitted on the train split only; deterministic for a given seed.

Kiwi features: each title becomes ``form/TAG`` morpheme tokens (``kiwipiepy.Kiwi().tokenize``; Latin forms
lower-cased), and TF-IDF takes morpheme unigrams and bigrams. The tag is kept because it separates homographs
(가/VV "go" vs 가/JKS the subject particle) that the forms alone would merge; bigrams keep negations and
verb-ending pairs (안/MAG 오르/VV) that a bag of single morphemes loses.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from kofinsent.evaluation.metrics import classification_metrics
from kofinsent.labels import BASELINES, LABELS

Analyzer = Literal["kiwi", "char"]


@lru_cache(maxsize=1)
def kiwi() -> Any:
    """One Kiwi per process: loading its bundled model (kiwipiepy_model, offline) takes seconds."""
    from kiwipiepy import Kiwi

    return Kiwi()


def morpheme_docs(titles: Sequence[str]) -> list[str]:
    """Each title as space-separated ``form/TAG`` tokens (whitespace inside a form becomes ``_``)."""
    titles = list(titles)
    if not titles:
        return []
    return [" ".join("_".join(t.form.lower().split()) + "/" + t.tag for t in tokens)
            for tokens in kiwi().tokenize(titles)]  # a list in, one token list per title out (batched)


def majority_baseline(train_labels: Sequence[str], test_n: int) -> tuple[list[str], list[float]]:
    """The most frequent train label for every test item (ties: ``LABELS`` order), and P(up) = the train rate."""
    counts = Counter(train_labels)
    if not counts:
        raise ValueError("majority_baseline needs at least one train label")
    label = max(LABELS, key=lambda y: (counts[y], -LABELS.index(y)))
    p_up = counts[LABELS[0]] / sum(counts.values())
    return [label] * test_n, [p_up] * test_n


def tfidf_pipeline(analyzer: Analyzer = "kiwi", seed: int = 0) -> Any:
    """Unfitted scikit-learn pipeline: (Kiwi morphemes ->) TF-IDF -> logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    lr = LogisticRegression(max_iter=1000, random_state=seed)
    if analyzer == "char":
        return Pipeline([("tfidf", TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3))), ("lr", lr)])
    if analyzer == "kiwi":
        tfidf = TfidfVectorizer(analyzer="word", tokenizer=str.split, token_pattern=None, lowercase=False,
                                ngram_range=(1, 2))
        return Pipeline([("morphemes", FunctionTransformer(morpheme_docs)), ("tfidf", tfidf), ("lr", lr)])
    raise ValueError(f"analyzer must be 'kiwi' or 'char', got {analyzer!r}")


def _check_train(train_labels: Sequence[str]) -> None:
    if unknown := set(train_labels) - set(LABELS):
        raise ValueError(f"train labels {sorted(unknown)} are not in {list(LABELS)}")
    if len(set(train_labels)) < 2:
        raise ValueError("TF-IDF + logistic regression needs train examples of both labels")


def _predict(pipe: Any, titles: Sequence[str]) -> tuple[list[str], list[float]]:
    up = list(pipe.classes_).index(LABELS[0])
    return [str(y) for y in pipe.predict(list(titles))], [float(p[up]) for p in pipe.predict_proba(list(titles))]


def tfidf_lr(train_titles: Sequence[str], train_labels: Sequence[str], test_titles: Sequence[str],
             analyzer: Analyzer = "kiwi", seed: int = 0) -> tuple[list[str], list[float]]:
    """Fit on the train titles, return (predicted labels, P("[상승]")) for the test titles."""
    _check_train(train_labels)
    pipe = tfidf_pipeline(analyzer, seed).fit(list(train_titles), list(train_labels))
    return _predict(pipe, test_titles)


def run_baselines(train_records: Sequence[dict[str, Any]], test_records: Sequence[dict[str, Any]],
                  seed: int = 0) -> dict[str, dict[str, Any]]:
    """``{"majority" | "tfidf_kiwi" | "tfidf_char": {"predictions": [...], "metrics": {...}}}`` from dataset records
    (``id``, ``title``, ``label``). Predictions: id, title, gold, pred, prob_up. ``items_per_s`` counts prediction
    only (fitting is ``fit_s``); ``wall_s`` is fit + predict."""
    train_titles = [r["title"] for r in train_records]
    train_labels = [r["label"] for r in train_records]
    test_titles = [r["title"] for r in test_records]
    gold = [r["label"] for r in test_records]
    _check_train(train_labels)

    results: dict[str, dict[str, Any]] = {}
    for name in BASELINES:
        t0 = time.perf_counter()
        if name == "majority":
            fitted = None
        else:
            fitted = tfidf_pipeline("kiwi" if name == "tfidf_kiwi" else "char", seed).fit(train_titles, train_labels)
        t1 = time.perf_counter()
        preds, probs = (majority_baseline(train_labels, len(test_titles)) if fitted is None
                        else _predict(fitted, test_titles))
        t2 = time.perf_counter()
        metrics = classification_metrics(gold, preds)
        metrics.update({"method": "baseline", "baseline": name, "n_train": len(train_records), "seed": seed,
                        "fit_s": t1 - t0, "predict_s": t2 - t1, "wall_s": t2 - t0,
                        "items_per_s": len(test_titles) / (t2 - t1) if t2 > t1 else None})
        predictions = [{"id": r["id"], "title": r["title"], "gold": r["label"], "pred": p, "prob_up": q}
                       for r, p, q in zip(test_records, preds, probs)]
        results[name] = {"predictions": predictions, "metrics": metrics}
    return results


def baselines_to_dirs(train: str | Path, test: str | Path, out: str | Path, seed: int = 0,
                      overwrite: bool = False) -> dict[str, dict[str, Any]]:
    """Run every baseline on dataset files and write one run directory per baseline under ``out`` (config.json,
    environment.json, predictions.jsonl, metrics.json, as ``kofinsent eval`` does). Returns the metrics by name."""
    from kofinsent.evaluation.evaluate import load_items
    from kofinsent.runs import RunDir, sha256_file

    results = run_baselines(load_items(train), load_items(test), seed)
    for name, res in results.items():
        run = RunDir(Path(out) / name, overwrite=overwrite)
        run.write_config({"baseline": name, "train": str(train), "test": str(test), "seed": seed,
                          "train_sha256": sha256_file(train), "test_sha256": sha256_file(test)}, {"seed": seed})
        run.write_predictions(res["predictions"])
        run.write_metrics(res["metrics"])
    return {name: res["metrics"] for name, res in results.items()}

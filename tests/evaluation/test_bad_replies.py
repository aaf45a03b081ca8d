"""One bad model reply is one invalid item, never a crashed run: the parsers, the evaluator and the JSONL writer."""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kofinsent.backends.base import Generation
from kofinsent.evaluation.evaluate import EvalConfig, evaluate
from kofinsent.prompts import sentiment as S
from kofinsent.runs import RunDir, dumps, read_jsonl

GOOD = '{"reasoning": "실적 호조", "sentiment": 0.5, "confidence": 0.8}'
BIG = "1" * (sys.get_int_max_str_digits() + 1)


def reply(reasoning: str = '"x"', sentiment: str = "0.5", confidence: str = "0.8", extra: str = "") -> str:
    return f'{{"reasoning": {reasoning}, "sentiment": {sentiment}, "confidence": {confidence}{extra}}}'


BAD: dict[str, str | bytes] = {
    # json raises ValueError (not JSONDecodeError) for an int longer than Python's digit limit
    "int over the digit limit": reply(sentiment=BIG),
    "int over the digit limit, extra key": reply(extra=f', "n": {BIG}'),
    "int over the digit limit, in prose": f"Here: {reply(sentiment=BIG)}",
    "NaN": reply(sentiment="NaN"),
    "-Infinity": reply(sentiment="-Infinity"),
    # last-one-wins would make these valid; which value the model meant is ambiguous
    "duplicate key": reply(extra=', "sentiment": 0.1'),
    "duplicate key, fenced": "```json\n" + reply(extra=', "confidence": 0.1') + "\n```",
    "duplicate key, in prose": "Sure! " + reply(extra=', "reasoning": "y"'),
    # the first object is the answer even when it is the ambiguous one: a valid object inside it is not taken
    "duplicate key around a valid object": f'{{"a": 1, "a": {GOOD}}}',
    "NaN around a valid object": f'{{"note": NaN, "answer": {GOOD}}}',
    "lone surrogate escape": reply(reasoning='"\\ud800 rising"'),
    "lone low surrogate escape": reply(reasoning='"a\\udcff"'),
    "raw lone surrogate": reply(reasoning='"\ud800"'),
    "surrogateescape'd byte": reply(reasoning='"\udcff"'),
    "U+FFFD from undecodable bytes": reply(reasoning='"\ufffd\ufffd 급등"'),
    "deep list": "[" * 200_000,
    "deep object": '{"a":' * 200_000,
    "deep object closed": '{"a":' * 5_000 + "1" + "}" * 5_000,
    "non-UTF-8 bytes": reply(reasoning='"\xff"').encode("latin-1"),
    "UTF-16 bytes": GOOD.encode("utf-16"),  # json.loads would sniff and accept it; JSON text is UTF-8
}


@pytest.mark.parametrize("raw", BAD.values(), ids=BAD.keys())
def test_a_bad_reply_is_invalid_strictly_and_leniently_never_an_exception(raw):
    assert S.parse_strict(raw) is None
    assert S.parse_lenient(raw) is None


@pytest.mark.parametrize("text", [
    '{"a": {"b": 1, "b": 2}}',            # duplicate keys at depth 2
    '[{"a": 1}, {"c": {"a": 1, "a": 1}}]',  # even with equal values
    '{"a": [1, NaN]}',
    '{"a": {"b": Infinity}}',
    f'{{"a": [{BIG}]}}',
    "[" * 200_000,
])
def test_load_json_rejects_at_any_depth(text):
    with pytest.raises(S.InvalidJSON):
        S.load_json(text)


@pytest.mark.parametrize("raw", [
    GOOD,
    GOOD.encode("utf-8"),                                   # bytes that are UTF-8: the same reply
    reply(reasoning='"\\ud83d\\ude80 to the moon"'),       # an escaped surrogate *pair* is one character
    reply(reasoning='"\\ufffd"'),                           # U+FFFD written as an escape is the model's own text
    reply(reasoning='"' + "가" * 5000 + '"', sentiment="-1", confidence="1"),
])
def test_valid_replies_stay_valid(raw):
    assert S.parse_strict(raw) is not None
    assert S.parse_lenient(raw) == S.parse_strict(raw)


def test_lenient_forgives_only_the_wrapping_bad_bytes_in_the_prose_do_not_matter():
    raw = "\ufffd\ud800 Sure! " + GOOD + " \udcff"
    assert S.parse_strict(raw) is None
    assert S.parse_lenient(raw) == S.parse_strict(GOOD)


def test_lenient_search_is_bounded_on_deep_unclosed_nesting():
    raw = '{"a":' * 200_000
    t0 = time.perf_counter()
    assert S.parse_lenient(raw) is None
    assert time.perf_counter() - t0 < 2.0  # each "{" used to start a parse ~1000 levels deep: quadratic


# -- through the evaluator ---------------------------------------------------------------------------------------
class Scripted:
    """A backend answering the scripted texts (and metas) in order, for either generation path."""

    name = "scripted"
    supports_loglikelihood = False
    supports_chat = True

    def __init__(self, texts: list[Any], metas: list[dict[str, Any]] | None = None) -> None:
        self.texts, self.metas = list(texts), list(metas or [{}] * len(texts))

    def generate(self, prompts: list[Any], options: Any) -> list[Generation]:
        return [Generation(self.texts.pop(0), 0.01, self.metas.pop(0)) for _ in prompts]

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name}


def write_items(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"i{k}", "title": f"제목 {k}", "label": "[상승]"}) + "\n"
                            for k in range(n)), encoding="utf-8")
    return path


def strict_line(line: str) -> dict[str, Any]:
    """A JSONL line as strict JSON: no NaN / Infinity, no duplicate keys."""
    return S.load_json(line)


def test_sentiment_run_counts_each_bad_reply_as_one_invalid_item(tmp_path):
    replies = [GOOD, *BAD.values()]
    data = write_items(tmp_path / "test.jsonl", len(replies))
    cfg = EvalConfig(backend="scripted", model="m", data=str(data), out=str(tmp_path / "run"), method="sentiment",
                     prompt="sentiment-json", batch_size=4)
    metrics = evaluate(cfg, backend=Scripted(replies))  # type: ignore[arg-type]
    assert metrics["n"] == len(replies) and metrics["n_valid"] == 1 and metrics["lenient_json_rate"] == 1 / len(replies)
    raw_lines = (tmp_path / "run/predictions.jsonl").read_bytes().decode("utf-8").splitlines()  # valid UTF-8
    preds = list(read_jsonl(tmp_path / "run/predictions.jsonl"))
    assert [strict_line(line) for line in raw_lines] == preds
    assert [p["valid"] for p in preds] == [True] + [False] * len(BAD)
    for p, sent in zip(preds, replies):
        # the reply exactly as received: bytes that are not UTF-8 keep their bad bytes as \udcXX escapes
        expected = sent.decode("utf-8", "surrogateescape") if isinstance(sent, bytes) else sent
        assert p["raw"] == expected


ODD_META = {"nan32": np.float32("nan"), "inf": float("inf"), "arr": np.array([1.5, np.nan]), "bytes": b"\xff\x00",
            (1, 2): "tuple key", "set": {3}, "when": datetime(2024, 1, 2, 3, 4, 5), "obj": object(),
            "surrogate": "\udcff"}


def test_generate_run_survives_odd_text_and_odd_meta(tmp_path):
    texts = ["[상승]\ud800", " [하락] \udcff".encode("utf-8", "surrogateescape"), None, "\x00\x1b[31m", " [하락]"]
    data = write_items(tmp_path / "test.jsonl", len(texts))
    cfg = EvalConfig(backend="scripted", model="m", data=str(data), out=str(tmp_path / "run"), method="generate",
                     batch_size=2)
    metrics = evaluate(cfg, backend=Scripted(texts, [ODD_META] * len(texts)))  # type: ignore[arg-type]
    lines = (tmp_path / "run/predictions.jsonl").read_bytes().decode("utf-8").splitlines()
    preds = [strict_line(line) for line in lines]
    assert [p["pred"] for p in preds] == ["[상승]", "[하락]", None, None, "[하락]"]
    assert [p["output"] for p in preds] == ["[상승]\ud800", " [하락] \udcff", "", "\x00\x1b[31m", " [하락]"]
    meta = preds[0]["meta"]
    assert meta["nan32"] is None and meta["inf"] == "inf" and meta["arr"] == [1.5, None]
    assert meta["bytes"] == "\udcff\x00" and meta["(1, 2)"] == "tuple key" and meta["set"] == [3]
    assert meta["when"] == "2024-01-02T03:04:05" and meta["obj"].startswith("<object object")
    assert meta["surrogate"] == "\udcff"
    assert metrics["n"] == 5 and metrics["invalid_rate"] == pytest.approx(2 / 5)


def test_jsonl_lines_round_trip_lone_surrogates(tmp_path):
    records = [{"raw": "a\ud800b", "reasoning": "\udcff\udc80", "output": "ok \U0001f680", "n": 1}]
    run = RunDir(tmp_path / "r")
    run.write_predictions(records)
    text = (tmp_path / "r/predictions.jsonl").read_bytes().decode("utf-8")  # strict UTF-8: no raw surrogate
    assert "\\ud800" in text and "\U0001f680" in text  # escaped only where UTF-8 cannot carry it
    assert list(read_jsonl(tmp_path / "r/predictions.jsonl")) == records
    assert json.loads(dumps(records[0])) == records[0]

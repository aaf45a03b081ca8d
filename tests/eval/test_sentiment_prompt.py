"""The seed 000 sentiment chat and its strict / lenient reply parsing."""
from __future__ import annotations

import json

import pytest

from kofinsent.prompts import sentiment as S

GOOD = {"reasoning": "실적 호조로 매수세가 몰릴 가능성이 큽니다.", "sentiment": 0.42, "confidence": 0.8}
GOOD_RAW = json.dumps(GOOD, ensure_ascii=False)


def test_chat_has_system_five_example_pairs_and_the_title():
    chat = S.sentiment_chat("삼성전자 내일 가즈아")
    assert len(chat) == 12
    assert [m["role"] for m in chat] == ["system"] + ["user", "assistant"] * 5 + ["user"]
    assert chat[0]["content"] == S.SYSTEM_PROMPT
    assert chat[-1]["content"] == "<article>삼성전자 내일 가즈아</article>"
    assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in chat)


def test_examples_are_the_seeds_and_every_assistant_turn_parses_strictly():
    chat = S.sentiment_chat("x")
    replies = [S.parse_strict(m["content"]) for m in chat if m["role"] == "assistant"]
    assert all(r is not None for r in replies)
    assert [r.sentiment for r in replies] == [0.75, -0.25, -0.5, 0.85, -0.65]
    assert [r.confidence for r in replies] == [0.9, 0.8, 0.6, 0.9, 0.7]
    users = [m["content"] for m in chat if m["role"] == "user"][:5]
    assert all("<article>" in u and "</article>" in u for u in users)
    for (user, reply), u, a in zip(S.EXAMPLES, users, [m for m in chat if m["role"] == "assistant"]):
        assert u == user and a["content"] == S.reply_json(reply)


def test_system_prompt_states_schema_and_rules():
    p = S.SYSTEM_PROMPT
    for needle in ('"reasoning"', '"sentiment"', '"confidence"', "-1.0", "1.0", "0.0", "two decimal", "Markdown",
                   "nothing else"):
        assert needle in p


def test_json_schema_is_the_pydantic_model():
    schema = S.json_schema()
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["reasoning", "sentiment", "confidence"]
    props = schema["properties"]
    assert props["reasoning"]["type"] == "string"
    assert (props["sentiment"]["minimum"], props["sentiment"]["maximum"]) == (-1.0, 1.0)
    assert (props["confidence"]["minimum"], props["confidence"]["maximum"]) == (0.0, 1.0)
    json.dumps(schema)


@pytest.mark.parametrize("raw", [
    GOOD_RAW,
    "\n  " + json.dumps(GOOD, indent=2) + "\n",                     # whitespace around is still one JSON object
    '{"reasoning": "", "sentiment": -1, "confidence": 1}',           # integers are JSON numbers; bounds inclusive
])
def test_strict_accepts_exact_json_objects(raw):
    r = S.parse_strict(raw)
    assert isinstance(r, S.SentimentReply)
    assert S.parse_lenient(raw) == r


@pytest.mark.parametrize("raw, lenient_ok", [
    ("```json\n" + GOOD_RAW + "\n```", True),                       # markdown fence
    ("```\n" + GOOD_RAW + "\n```", True),
    ("Here is my analysis:\n" + GOOD_RAW + "\nHope this helps.", True),  # prose around the object
    (GOOD_RAW + GOOD_RAW, True),                                    # two objects: not one JSON value
    ('{"reasoning": "x", "sentiment": 1.2, "confidence": 0.5}', False),   # out of range
    ('{"reasoning": "x", "sentiment": 0.2, "confidence": -0.1}', False),
    ('{"reasoning": "x", "sentiment": 0.2, "confidence": 1.01}', False),
    ('{"reasoning": "x", "sentiment": 0.2, "confidence": 0.5, "label": "up"}', False),  # extra key
    ('{"reasoning": "x", "sentiment": 0.2}', False),                # missing key
    ('{"reasoning": "x", "sentiment": "0.2", "confidence": 0.5}', False),  # a string is not a number
    ('{"reasoning": "x", "sentiment": true, "confidence": 0.5}', False),
    ('{"reasoning": "x", "sentiment": NaN, "confidence": 0.5}', False),
    ('{"reasoning": 3, "sentiment": 0.2, "confidence": 0.5}', False),
    ('{"reasoning": "x", "sentiment": 0.2, "confidence": 0.5', False),    # truncated
    ("[" + GOOD_RAW + "]", True),                                   # an array; the object inside is found leniently
    ("", False),
    ("I cannot determine the sentiment.", False),
    ("```json\n{\"reasoning\": \"x\", \"sentiment\": 3, \"confidence\": 0.5}\n```", False),  # fenced AND out of range
])
def test_strict_rejects_everything_else_lenient_forgives_only_the_wrapping(raw, lenient_ok):
    assert S.parse_strict(raw) is None
    lenient = S.parse_lenient(raw)
    assert (lenient is not None) == lenient_ok
    if lenient_ok:
        assert lenient.sentiment == GOOD["sentiment"] and lenient.reasoning == GOOD["reasoning"]


def test_lenient_skips_braces_that_are_not_json():
    raw = "The {article} is positive. " + GOOD_RAW
    assert S.parse_strict(raw) is None
    assert S.parse_lenient(raw).confidence == 0.8


def test_direction_thresholds():
    mk = lambda s: S.SentimentReply(reasoning="", sentiment=s, confidence=0.5)  # noqa: E731
    assert S.direction(mk(0.01)) == "[상승]"
    assert S.direction(mk(-0.01)) == "[하락]"
    assert S.direction(mk(0.0)) is None
    assert S.direction(None) is None


def test_package_exports_without_shadowing_the_direction_module():
    import kofinsent.prompts as P
    from kofinsent.prompts import direction as direction_module

    assert direction_module.LABELS == ("[상승]", "[하락]")
    assert P.sentiment_direction is S.direction
    assert P.sentiment_chat is S.sentiment_chat and P.parse_strict is S.parse_strict
    assert P.SentimentReply is S.SentimentReply and P.json_schema is S.json_schema
    for name in P.__all__:
        getattr(P, name)

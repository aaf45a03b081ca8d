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


# -- one prompt for training and evaluation (issue 14, point 3) --------------------------------------------------------
def _records(path, n: int = 12) -> list[dict]:
    from kofinsent.tiny import forum_titles

    names = ("합성전자", "가상하이닉스", None)  # the third stock's records carry no name (an old db)
    recs = [{"id": f"r{i}", "code": f"90001{i % 3}", "name": names[i % 3], "title": t,
             "label": "[상승]" if i % 2 else "[하락]"} for i, t in enumerate(forum_titles(n, seed=7))]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    return recs


def test_the_fine_tune_trains_on_exactly_the_chat_the_evaluator_sends(tmp_path, tiny_tokenizer):
    """The same records go to `dataset teacher` (-> sharegpt.jsonl, what the fine-tune reads) and to the evaluator
    (-> predictions.jsonl's context, what it sent): each training conversation minus its assistant turn equals the
    evaluator's chat message for message, and, rendered with the llama-3 chat template as the Unsloth engine (whole
    conversation) and the HF backend (chat + generation prompt) render them, token for token."""
    from kofinsent.dataset.teacher import TeacherConfig, run_teacher
    from kofinsent.dataset.teacher_standin import STANDIN_MODEL, TeacherStandin
    from kofinsent.evaluation.evaluate import EvalConfig, evaluate
    from kofinsent.tiny import llama3_tokenizer
    from kofinsent.training.unsloth import RESPONSE_PART, ROLES

    data = tmp_path / "records.jsonl"
    recs = _records(data)
    with TeacherStandin() as server:
        sheet, _ = run_teacher(TeacherConfig(backend="openai", model=STANDIN_MODEL, host=server.url, data=str(data),
                                             out=str(tmp_path / "teacher")), progress=False)
        metrics = evaluate(EvalConfig(backend="openai", model=STANDIN_MODEL, host=server.url, data=str(data),
                                      out=str(tmp_path / "eval"), method="sentiment", prompt="sentiment-json"))
    teacher = [json.loads(x) for x in (tmp_path / "teacher" / "teacher.jsonl").read_text("utf-8").splitlines()]
    convs = [json.loads(x)["conversations"]
             for x in (tmp_path / "teacher" / "sharegpt.jsonl").read_text("utf-8").splitlines()]
    sent = {p["id"]: p["context"] for p in map(json.loads, (tmp_path / "eval" / "predictions.jsonl").open(encoding="utf-8"))}
    accepted = [t["id"] for t in teacher if t["status"] == "accepted"]
    assert len(convs) == len(accepted) >= 10
    tok = llama3_tokenizer(tiny_tokenizer)
    for rid, conv in zip(accepted, convs):
        # what standardize_sharegpt hands the chat template: from/value -> role/content
        messages = [{"role": ROLES[t["from"]], "content": t["value"]} for t in conv]
        assert messages[-1]["role"] == "assistant"
        assert messages[:-1] == sent[rid]  # message for message
        train_text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        eval_text = tok.apply_chat_template(sent[rid], tokenize=False, add_generation_prompt=True)
        prompt_part = train_text[:train_text.rindex(RESPONSE_PART) + len(RESPONSE_PART)]
        assert prompt_part == eval_text
        train_ids = tok(train_text, add_special_tokens=False)["input_ids"]
        eval_ids = tok(eval_text, add_special_tokens=False)["input_ids"]
        assert train_ids[:len(eval_ids)] == eval_ids  # token for token
    # the stock is named where the record has a name, and both runs record the same prompt
    items = {r["id"]: r for r in recs}
    for rid, chat in sent.items():
        name = items[rid]["name"]
        assert chat[-1]["content"] == S.user_message(items[rid]["title"], name)
        assert ("potential short-term stock value of " + name in chat[-1]["content"]) if name else \
            chat[-1]["content"].startswith("<article>")
    config = json.loads((tmp_path / "eval" / "config.json").read_text("utf-8"))
    assert config["items_named"] == metrics["items_named"] == 8
    assert config["prompt_sha256"] == metrics["prompt_sha256"] == sheet["config"]["prompt_sha256"] == S.prompt_sha256()


def test_a_sentiment_run_from_before_the_named_item_message_is_not_resumed_as_one(tmp_path):
    """Old runs sent the bare <article> for every item and recorded no prompt_sha256: --resume refuses to mix them
    with named messages, naming the key."""
    from kofinsent.dataset.teacher_standin import STANDIN_MODEL, TeacherStandin
    from kofinsent.evaluation.evaluate import EvalConfig, EvalConfigError, evaluate

    data = tmp_path / "records.jsonl"
    _records(data, 6)
    out = tmp_path / "eval"
    with TeacherStandin() as server:
        cfg = EvalConfig(backend="openai", model=STANDIN_MODEL, host=server.url, data=str(data), out=str(out),
                         method="sentiment", prompt="sentiment-json", iterations=2)
        evaluate(cfg)
        old = json.loads((out / "config.json").read_text("utf-8"))
        for key in ("prompt_sha256", "items_named"):
            old.pop(key)
        (out / "config.json").write_text(json.dumps(old), encoding="utf-8")
        (out / "metrics.json").unlink()
        with pytest.raises(EvalConfigError, match="items_named: None -> 4; prompt_sha256: None -> "):
            evaluate(EvalConfig(**{**cfg.__dict__, "resume": True}))

"""The seed 000 JSON sentiment prompt (LLaMA-3 via Ollama), reworded, with its five examples as real chat turns.

Seed 000 sent its worked examples once and threw the reply away, so they never reached the model; here every request
is ``[system, (user, assistant) x 5, user(title)]``. Validity is strict (see ``parse_strict``): the reply exactly as
sent must be one JSON object with ``reasoning``, ``sentiment`` in [-1, 1] and ``confidence`` in [0, 1], nothing else.
``parse_lenient`` (fences / prose stripped) exists to be reported under its own key, never in place of the strict one.

One prompt for the teacher, the fine-tune and the evaluator. :func:`sentiment_chat` is what the evaluator sends and
what the teacher is asked; :func:`training_chat` is that same chat with the teacher's reply as the last turn, which is
what the fine-tune is trained on (``dataset teacher`` writes it as ShareGPT). The worked examples stay in the training
chat: seed 000 trained on system prompt + item but measured base and fine-tune with the five-shot chat, so keeping the
seed's measurement (the base model with its examples) and training on exactly what is measured means training with
them. They cost ~3,400 characters (~1,000 Llama-3 tokens) per example instead of ~1,800 for system prompt + item; the
loss covers the final reply only (:func:`kofinsent.training.unsloth.final_reply_only`), so the examples' replies are
read, never learned. The item message names the stock when the record has a ``name`` (:func:`record_name`,
:func:`user_message`), as the seed asked about "the potential short-term stock value of {company_name}".
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kofinsent.backends.base import Chat
from kofinsent.labels import LABELS

SYSTEM_PROMPT = """\
You are an expert AI assistant for sentiment analysis of financial text: news articles, headlines and posts from \
investor forums. Classify every article you are given and answer with your analysis in the JSON format below:
{
    "reasoning": {
      "type": "string",
      "description": "A brief explanation of the reasoning that led to the numeric sentiment value",
      "required": true
    },
    "sentiment": {
      "type": "number",
      "description": "The article's sentiment as a floating-point number rounded to two decimal places, from -1.0 \
(negative) to 1.0 (positive), where 0.0 is neutral",
      "required": true
    },
    "confidence": {
      "type": "number",
      "description": "How confident you are in your analysis, as a floating-point number rounded to two decimal \
places, from 0.0 (not confident at all) to 1.0 (fully confident)",
      "required": true
    }
}

Each article arrives wrapped in XML tags: <article>ARTICLE</article>

Read the article closely and judge what it implies for the share price of the company it concerns.
1. In "reasoning", first explain your judgement: name the points of the article that drive the sentiment and how \
you expect them to move the stock price.
2. In "sentiment", give a score from -1.0 (most negative) through 0.0 (neutral) to 1.0 (most positive) that reflects \
how positive or negative the sentiment is. If no conclusion can be drawn, give 0.0.
3. In "confidence", say how sure you are of that sentiment score: 1.0 when you are very sure, 0.0 when you are in \
doubt.

Always answer with one valid JSON object that follows this format and nothing else: no other text or messages, no \
Markdown, no code fences. Do not change the format in any way; this matters to our company."""

# Seed 000's five worked examples, reworded; sentiments and confidences as in the seed.
EXAMPLES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("<article>NVDA shares climb 5% after the company beats earnings expectations.</article>",
     {"reasoning": "The article reports earnings above expectations, which tends to lift investor confidence and "
                   "so is likely to push NVDA's share price higher.",
      "sentiment": 0.75, "confidence": 0.9}),
    (("<article>Falling oil prices could weigh on NVDA: analysts expect the stock to drop 5% because of the "
     "company's exposure to the energy sector.</article>"),
     {"reasoning": "The article points to a possible negative effect of lower oil prices on NVDA's stock, which "
                   "could erode investor confidence.",
      "sentiment": -0.25, "confidence": 0.8}),
    ("<article>Apple's much-hyped AR glasses missed their expected sales targets after launch.</article>",
     {"reasoning": "Despite the innovative product, missing the sales targets may draw a negative market reaction "
                   "and could lower the value of Apple's shares.",
      "sentiment": -0.5, "confidence": 0.6}),
    (("<article>Boeing wins a $5 billion order for new aircraft from Emirates, pointing to strong future "
     "revenue.</article>"),
     {"reasoning": "A contract this large signals solid future revenue for Boeing and is likely to improve investor "
                   "sentiment and the value of its stock.",
      "sentiment": 0.85, "confidence": 0.9}),
    (("Judge the sentiment toward Tesla's stock value in the article below:\n"
     "<article>Tesla recalls 100,000 vehicles over safety concerns.</article>"),
     {"reasoning": "A large safety recall may hurt Tesla's brand and is expected to weigh on investor confidence, so "
                   "the stock is likely to lose value.",
      "sentiment": -0.65, "confidence": 0.7}),
)


def reply_json(reply: dict[str, Any]) -> str:
    """The exact assistant text of an example: indented like the seed's examples, Korean kept as is."""
    return json.dumps(reply, ensure_ascii=False, indent=2)


# Seed 000 asked about "the potential short-term stock value of {company_name}"; worded as the fifth worked example.
NAMED_QUESTION = "Judge the sentiment toward the potential short-term stock value of {name} in the article below:\n"


def user_message(title: str, name: str | None = None) -> str:
    """The item's user turn, written here only (the teacher, the evaluator and the fine-tuning data use it).

    Without a stock name (``None`` or blank): ``<article>TITLE</article>``. With one, seed 000's question naming the
    stock comes first, in the shape of the fifth worked example: :data:`NAMED_QUESTION` then the article."""
    article = f"<article>{title}</article>"
    if name is None or not str(name).strip():
        return article
    return NAMED_QUESTION.format(name=str(name).strip()) + article


def record_name(record: Mapping[str, Any]) -> str | None:
    """The stock name the item message gives for a dataset record: its ``name`` when that is a non-blank string."""
    name = record.get("name")
    return name if isinstance(name, str) and name.strip() else None


def sentiment_chat(title: str, name: str | None = None) -> Chat:
    """``[system, (user, assistant) x 5, user(title)]`` — 12 messages; the last names the stock when ``name`` is
    given (:func:`user_message`)."""
    chat: Chat = [{"role": "system", "content": SYSTEM_PROMPT}]
    for user, reply in EXAMPLES:
        chat.append({"role": "user", "content": user})
        chat.append({"role": "assistant", "content": reply_json(reply)})
    chat.append({"role": "user", "content": user_message(title, name)})
    return chat


def training_chat(title: str, name: str | None, reply: str) -> Chat:
    """A fine-tuning example: :func:`sentiment_chat` message for message, then ``reply`` (the teacher's raw reply)
    as the assistant turn. Everything before that turn is exactly what the evaluator sends for the same record."""
    return [*sentiment_chat(title, name), {"role": "assistant", "content": reply}]


def prompt_sha256() -> str:
    """A digest of the chat's shape (system prompt, worked examples, item message with and without a stock name)
    and of the reply schema: the teacher's config and the evaluator's sentiment runs record it, so runs made with
    another prompt (e.g. before the item message named the stock) are told apart and never resumed as one."""
    probe = sentiment_chat("{title}", "{name}") + sentiment_chat("{title}")
    return hashlib.sha256(json.dumps([probe, json_schema()], ensure_ascii=False).encode()).hexdigest()


def prompt_record(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What a sentiment run records about its prompt (config.json and metrics.json): :func:`prompt_sha256` and
    ``items_named``, how many item messages name the stock. Runs from before the item message could name the stock
    have neither key, so they are told apart (and an old run is never resumed as a new one)."""
    return {"prompt_sha256": prompt_sha256(), "items_named": sum(record_name(it) is not None for it in items)}


class SentimentReply(BaseModel):
    """One reply. Strict: no coercion ("0.5" or true is not a number), no extra keys, no NaN / infinity.

    The prompt asks for two decimals; that is not enforced, since JSON numbers carry no rounding contract and the
    seed's pydantic check did not enforce it either.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    reasoning: str = Field(description="Brief explanation of the reasoning behind the sentiment value")
    sentiment: float = Field(ge=-1.0, le=1.0, allow_inf_nan=False,
                             description="Sentiment from -1.0 (negative) to 1.0 (positive), 0.0 neutral")
    confidence: float = Field(ge=0.0, le=1.0, allow_inf_nan=False,
                              description="Confidence from 0.0 (none) to 1.0 (full)")


def json_schema() -> dict[str, Any]:
    """What constrained decoding gets (Ollama ``format=``, llama.cpp's JSON schema)."""
    return SentimentReply.model_json_schema()


class InvalidJSON(ValueError):
    """Text that is not one unambiguous JSON value (see :func:`load_json`)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:  # last-one-wins would silently pick one of the model's answers
            raise InvalidJSON(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise InvalidJSON(f"{name} is not a JSON value")


# Python's json accepts NaN / Infinity and keeps the last of duplicate keys; neither is JSON one can rely on.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)
# A lone surrogate cannot come from UTF-8, and the backends turn bytes that are not UTF-8 into U+FFFD (transformers'
# decode, Ollama's server) or into lone surrogates (``reply_text``'s surrogateescape): either means the reply was
# not valid UTF-8, so it was not JSON text (RFC 8259, 8.1). An *escaped* "\ufffd" is the model's own character.
_NOT_UTF8 = re.compile("[\ud800-\udfff\ufffd]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# The lenient search tries a parse at each "{": on deeply nested unclosed text each try runs to the recursion limit.
_MAX_STARTS = 1000


def load_json(text: str) -> Any:
    """``json.loads`` that raises :class:`InvalidJSON` for whatever makes a reply ambiguous or not JSON: duplicate
    keys or NaN / Infinity at any depth, an integer longer than ``sys.get_int_max_str_digits()``, nesting past the
    recursion limit, anything but one value."""
    try:
        return _DECODER.decode(text)
    except InvalidJSON:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError; int digit limit (a bare ValueError)
        raise InvalidJSON(str(e)[:200]) from None


def _as_text(raw: str | bytes) -> str | None:
    """A reply as str; bytes that are not UTF-8 keep their bad bytes as lone surrogates, so the span check finds
    them where they are (the lenient reading forgives bad bytes in the prose around an object, not inside it)."""
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw).decode("utf-8", "surrogateescape")
    return raw if isinstance(raw, str) else None


def _check_object(obj: Any) -> tuple[SentimentReply | None, str | None]:
    if not isinstance(obj, dict):
        return None, f"not_object: a JSON {type(obj).__name__}, not an object"
    try:
        reply = SentimentReply.model_validate(obj)
    except ValidationError as e:
        errors = e.errors()
        shown = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'object'}: {err['msg']}" for err in errors[:3])
        return None, f"schema: {shown}" + (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")
    # the only string that survives the model; a lone surrogate in it came from a "\udXXX" escape
    if _SURROGATE.search(reply.reasoning):
        return None, "not_utf8: reasoning holds an escaped lone surrogate"
    return reply, None


def _validate(obj: Any) -> SentimentReply | None:
    return _check_object(obj)[0]


def check_strict(raw: str | bytes) -> tuple[SentimentReply | None, str | None]:
    """:func:`parse_strict` with the reason: ``(reply, None)``, or ``(None, reason)`` where the reason is one line
    that starts with its kind — ``empty``, ``not_utf8``, ``not_json``, ``not_object`` or ``schema`` — then ``: ``
    and the detail. Never raises."""
    text = _as_text(raw)
    if text is None:
        return None, f"not_json: a {type(raw).__name__}, not text"
    if _NOT_UTF8.search(text):
        return None, "not_utf8: the reply was not valid UTF-8"
    if not text.strip():
        return None, "empty: no text"
    try:
        obj = load_json(text)
    except InvalidJSON as e:
        return None, "not_json: " + " ".join(str(e).split())
    return _check_object(obj)


def parse_strict(raw: str | bytes) -> SentimentReply | None:
    """The reply exactly as sent must be one JSON object pydantic accepts (surrounding whitespace is fine: it is
    valid JSON). Fences, prose, out-of-range values, missing or extra keys, duplicate keys, NaN, text that was not
    UTF-8 -> None. Never raises."""
    return check_strict(raw)[0]


_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)


def parse_lenient(raw: str | bytes) -> SentimentReply | None:
    """Strict, else the content of the first Markdown code fence, else the first ``{...}`` in the text that parses
    as a JSON object. Only the wrapping is forgiven: the object itself must still pass the same rules and model."""
    if (reply := parse_strict(raw)) is not None:
        return reply
    text = _as_text(raw)
    if text is None:
        return None
    for fenced in _FENCE.findall(text):
        if (reply := parse_strict(fenced)) is not None:
            return reply
    for n, match in enumerate(re.finditer(r"\{", text)):
        if n == _MAX_STARTS:  # a reply with this many braces before its object is not a wrapped answer
            break
        try:
            obj, end = _DECODER.raw_decode(text, match.start())
        except (json.JSONDecodeError, RecursionError):  # no JSON value starts here: look further
            continue
        except ValueError:  # one does, but ambiguous (InvalidJSON) or past the int digit limit: the answer is invalid
            return None
        if isinstance(obj, dict):  # the first object is the answer; a later one is not searched for
            return None if _NOT_UTF8.search(text, match.start(), end) else _validate(obj)
    return None


def direction(reply: SentimentReply | None) -> str | None:
    """sentiment > 0 -> "[상승]", < 0 -> "[하락]", exactly 0 (the prompt's "no conclusion") or no reply -> None."""
    if reply is None or reply.sentiment == 0:
        return None
    return LABELS[0] if reply.sentiment > 0 else LABELS[1]

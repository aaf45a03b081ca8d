"""ShareGPT files for the Unsloth fine-tuning path, and the *price-label* export (seed 000's workflow on seed 003's
task: targets from the price label, **not seed 000's data**).

Seed 000's data are the teacher's replies to the evaluator's sentiment chat: ``kofinsent dataset teacher`` writes them
through :func:`chat_line` (the whole chat of :func:`kofinsent.prompts.sentiment.training_chat`, worked examples
included, then the teacher's raw reply). What ``kofinsent dataset sharegpt`` (:func:`export_sharegpt`) writes is kept
as the price-label variant: a Korean system prompt and ``[제목]:`` turns that the sentiment evaluator never sends, and
constant targets (the label, or with ``reply="json"`` a fixed JSON per label). A model trained on it learns the
format and the label, nothing a teacher said, and is not evaluated on the chat it was trained on; use it for seed
003's task on the Unsloth engine, not to reproduce seed 000.

Shape: JSON Lines, one ``{"conversations": [turn, ...]}`` object per post, each turn ``{"value", "from"}``.
That is what ``unsloth.chat_templates.standardize_sharegpt`` (= ``unsloth_zoo.dataset_utils.standardize_data_formats``)
reads from ``datasets.load_dataset("json", data_files=FILE, split="train")``: a ``conversations`` column of lists of
two-key string dicts, roles among system/human/gpt. It tells the role key from the content key by which has fewer
distinct values in the first 10 rows and, on a tie, takes the *second* key as the role; writing ``value`` before
``from`` keeps a tie (a file of one post: 3 roles vs 3 texts) resolving correctly.

Turns of the price-label variant:
* system: seed 003's instruction ("Model Training" section), character for character. With ``reply="json"`` its
  second line (answer with [상승]/[하락]) is replaced by a line asking for seed 000's JSON object instead.
* human: ``[제목]: <title>``, the seed prompt's title line.
* gpt: the label (``[상승]``/``[하락]``), or with ``reply="json"`` seed 000's reply shape
  ``{"reasoning": str, "sentiment": 1.0 | -1.0, "confidence": float}``. Nobody wrote reasons for these posts:
  ``reasoning`` is a fixed sentence per label saying the answer comes from the price label, not from reading the
  title; ``sentiment`` is +1.0 for [상승] and -1.0 for [하락]; ``confidence`` is one constant for every post
  (default 1.0: the label is an observed price move, not a judgement). A model trained on this learns the format
  and the label, nothing about why.
"""
from __future__ import annotations

import json
from pathlib import Path

from kofinsent.dataset.errors import DatasetConfigError, EmptyDatasetError
from kofinsent.dataset.files import atomic_write_text
from kofinsent.labels import DOWN, UP
from kofinsent.paths import refuse_output_over_input
from kofinsent.prompts.direction import INSTRUCTION

# The seed 003 instruction, from the one place training and evaluation read it.
SEED_INSTRUCTION = INSTRUCTION
SEED_QUESTION = INSTRUCTION.split("\n")[0]
JSON_ANSWER_LINE = (
    '{"reasoning": 문자열, "sentiment": -1.0(하락)부터 1.0(상승)까지의 수, "confidence": 0.0부터 1.0까지의 수} '
    "형식의 JSON 객체 하나로만 답하여라."
)
TITLE_PREFIX = "[제목]: "
REASONING = {
    UP: "이 답은 제목을 분석한 근거가 아니라 주가 라벨에서 만든 학습용 정답입니다: 기준 거래일 종가가 직전 거래일 종가보다 높았습니다.",
    DOWN: "이 답은 제목을 분석한 근거가 아니라 주가 라벨에서 만든 학습용 정답입니다: 기준 거래일 종가가 직전 거래일 종가보다 낮았습니다.",
}
SENTIMENT = {UP: 1.0, DOWN: -1.0}
REPLIES = ("label", "json")


def system_prompt(reply: str = "label") -> str:
    return SEED_INSTRUCTION if reply == "label" else SEED_QUESTION + "\n" + JSON_ANSWER_LINE


def gpt_reply(label: str, reply: str = "label", confidence: float = 1.0) -> str:
    if reply == "label":
        return label
    return json.dumps({"reasoning": REASONING[label], "sentiment": SENTIMENT[label], "confidence": confidence},
                      ensure_ascii=False)


def sharegpt_record(system: str, human: str, gpt: str) -> dict[str, object]:
    """One ShareGPT line (see the module docstring for the shape); the turns' texts go in exactly as given."""
    return {"conversations": [
        {"value": system, "from": "system"},
        {"value": human, "from": "human"},
        {"value": gpt, "from": "gpt"},
    ]}


# chat roles -> ShareGPT's (the names standardize_sharegpt maps back: system/human/gpt)
SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt"}


def chat_record(chat: list[dict[str, str]]) -> dict[str, object]:
    """A chat (``{"role", "content"}`` messages) as one ShareGPT line, message for message, texts as given."""
    return {"conversations": [{"value": m["content"], "from": SHAREGPT_FROM[m["role"]]} for m in chat]}


def chat_line(chat: list[dict[str, str]]) -> str:
    """:func:`chat_record` as one JSON line, without its newline (UTF-8 text kept as is)."""
    return json.dumps(chat_record(chat), ensure_ascii=False)


def sharegpt_line(system: str, human: str, gpt: str) -> str:
    """:func:`sharegpt_record` as one JSON line, without its newline (UTF-8 text kept as is)."""
    return json.dumps(sharegpt_record(system, human, gpt), ensure_ascii=False)


def conversation(title: str, label: str, reply: str = "label", confidence: float = 1.0) -> dict[str, object]:
    return sharegpt_record(system_prompt(reply), TITLE_PREFIX + title, gpt_reply(label, reply, confidence))


def export_sharegpt(data: str | Path, out: str | Path, reply: str = "label", confidence: float = 1.0) -> int:
    """Convert a dataset JSONL (``train.jsonl``/``test.jsonl``) to the price-label ShareGPT JSONL at ``out`` (see the
    module docstring: not seed 000's data); returns the count.

    ``out`` that is ``data`` (by any spelling: ``..``, a symlink, a hard link) raises
    :class:`kofinsent.paths.OutputOverInputError` before anything is read: the atomic write would replace the dataset.
    """
    if reply not in REPLIES:
        raise DatasetConfigError(f"unknown --reply {reply!r}; expected one of {', '.join(REPLIES)}")
    if not 0.0 <= confidence <= 1.0:
        raise DatasetConfigError(f"--confidence must be within [0, 1], got {confidence}")
    data = Path(data)
    if not data.is_file():
        raise DatasetConfigError(f"{data}: no such file; pass a train.jsonl written by `kofinsent dataset build`")
    refuse_output_over_input(out, {"--data": data})
    lines = []
    with open(data, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                title, label = rec["title"], rec["label"]
            except (ValueError, KeyError, TypeError):
                raise DatasetConfigError(f"{data}:{i}: not a dataset record (needs `title` and `label`)") from None
            if label not in SENTIMENT:
                raise DatasetConfigError(f"{data}:{i}: label {label!r} is neither {UP} nor {DOWN}")
            lines.append(json.dumps(conversation(title, label, reply, confidence), ensure_ascii=False))
    if not lines:
        raise EmptyDatasetError(f"{data} holds no records; nothing written")
    atomic_write_text(Path(out), "\n".join(lines) + "\n")
    return len(lines)

"""Direction prompts: the seed's fixed 2-shot prompt and a k-shot variant drawn from the train split.

One source for training and evaluation. A prompt is ``prefix + item``: the prefix (instruction and examples) is
shared by every test item, so backends can run it once and reuse its KV cache; the item ends with the colon of
``[정답]:`` and the answers are scored with their leading space (" [상승]"), exactly as training appends them.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from kofinsent.labels import LABELS

CONTINUATIONS = tuple(" " + label for label in LABELS)  # what is scored / generated after "[정답]:"

# seed 003, "Model Training": the instruction, then two hand-written examples, each block separated by a blank line.
INSTRUCTION = "주식 종목 토론방에 [제목]의 글이 올라온 다음 날, 주가는 어떻게 되었을까?\n[상승] 혹은 [하락] 중 하나로 답하여라."
SEED_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("장마감 이후 올라온 공시 자료를 보니, 분기 실적이 예상치를 크게 밑도네요ㅠ", "[하락]"),
    ("간밤에 미국 연준의 깜짝 금리 인하 결정에 힘입어 미국 증시 폭등 중이네요. 내일 한국 증시도 기대해 봅니다!", "[상승]"),
)


def example_block(title: str, label: str) -> str:
    return f"[제목]: {title}\n[정답]: {label}"


def item_block(title: str) -> str:
    return f"[제목]: {title}\n[정답]:"


def build_prefix(examples: Sequence[tuple[str, str]]) -> str:
    """Instruction and examples, ending with the blank line before the item (so the split is a token boundary)."""
    return "\n\n".join([INSTRUCTION, *(example_block(t, y) for t, y in examples)]) + "\n\n"


@dataclass(frozen=True)
class DirectionPrompt:
    """``prefix`` is shared by every item of a run; ``context(title)`` is the full string sent to the model."""

    name: str
    prefix: str
    examples: tuple[tuple[str, str], ...]
    seed: int | None = None

    def context(self, title: str) -> str:
        return self.prefix + item_block(title)

    def training_text(self, title: str, label: str) -> str:
        """The training example: context, the label with its leading space (EOS is the tokenizer's to add)."""
        if label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {label!r}")
        return self.context(title) + " " + label


def seed2shot() -> DirectionPrompt:
    return DirectionPrompt("seed2shot", build_prefix(SEED_EXAMPLES), SEED_EXAMPLES)


def kshot(train: Sequence[tuple[str, str]], k: int, seed: int, balanced: bool = True) -> DirectionPrompt:
    """The seed's instruction with ``k`` examples drawn from ``train`` (title, label) with ``seed``.

    ``balanced``: k/2 of each label (k odd: the extra one drawn at random), shuffled. Same inputs -> same prompt.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    rng = random.Random(seed)
    pool = sorted(set(train))  # independent of the train file's order
    if balanced and k:
        by_label = {y: [ex for ex in pool if ex[1] == y] for y in LABELS}
        counts = {LABELS[0]: k // 2, LABELS[1]: k // 2}
        if k % 2:
            counts[rng.choice(LABELS)] += 1
        for y, n in counts.items():
            if len(by_label[y]) < n:
                raise ValueError(f"kshot needs {n} train examples labelled {y}, the train split has {len(by_label[y])}")
        chosen = [ex for y in LABELS for ex in rng.sample(by_label[y], counts[y])]
        rng.shuffle(chosen)
    else:
        if len(pool) < k:
            raise ValueError(f"kshot needs {k} train examples, the train split has {len(pool)}")
        chosen = rng.sample(pool, k)
    return DirectionPrompt(f"kshot{k}", build_prefix(chosen), tuple(chosen), seed)

"""Tiny real models, built offline in seconds: the test fixtures, the benchmarks and the offline quickstart use them.

A byte-level BPE tokenizer trained on synthetic Korean forum lines, a polyglot-ko-shaped GPT-NeoX (rotary on half of
each head, parallel residual, untied output embeddings) and a llama-3-shaped Llama with a chat template. Weights are
random (seeded): the models exercise every code path of the evaluator, they do not predict anything.
"""
from __future__ import annotations

import copy
import random
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from kofinsent.labels import LABELS
from kofinsent.prompts.direction import CONTINUATIONS, INSTRUCTION, SEED_EXAMPLES, seed2shot

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

EOT = "<|endoftext|>"  # polyglot-ko's single special token: eos, bos and pad at once
LLAMA3_SPECIAL = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")

# llama-3's template, minus the date/tool preamble: what a chat prompt looks like to a llama-3 GGUF or HF model.
LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

_STOCKS = ("삼성전자", "SK하이닉스", "LG화학", "삼성SDI", "현대차", "NAVER", "카카오", "기아", "셀트리온", "POSCO",
           "KB금융", "신한지주", "삼성물산", "현대모비스", "LG전자", "SK이노베이션", "한국전력", "삼성바이오로직스")
_SUBJECTS = ("외국인", "기관", "개미", "세력", "공매도", "연기금", "대주주", "형님들", "주주님들", "단타족")
_EVENTS = ("실적 발표", "배당", "유상증자", "자사주 매입", "목표가 상향", "목표가 하향", "신고가", "52주 신저가",
           "금리 인하", "환율 급등", "반도체 업황", "수주 공시", "분기 실적", "블록딜", "액면분할")
_MOODS = ("가즈아!!", "망했네요ㅠㅠ", "언제 오르나요?", "존버합니다", "손절각", "물타기 할까요", "매수 타이밍인가요",
          "오늘 장 미쳤다", "내일은 반등하겠죠", "떡상 가자", "이제 바닥인듯", "탈출은 지능순", "ㅋㅋㅋㅋ", "진짜 답답하네")
_ENDINGS = ("", "", "...", "!", "?", " ㅎㅎ", " ㄷㄷ", " 10%", " 3일째", " 2023년")


def forum_titles(n: int, seed: int) -> list[str]:
    """``n`` synthetic 종목토론방 titles (deterministic for a seed), some long, some short, some with numbers."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = [rng.choice(_STOCKS)]
        if rng.random() < 0.6:
            parts.append(rng.choice(_SUBJECTS) + rng.choice(("이", "가", "는", "")))
        if rng.random() < 0.7:
            parts.append(rng.choice(_EVENTS))
        parts.append(rng.choice(_MOODS))
        if rng.random() < 0.3:
            parts.append(f"{rng.randint(1, 99_000):,}원")
        out.append(" ".join(parts) + rng.choice(_ENDINGS))
    return out


CUES = {"[상승]": "가즈아", "[하락]": "손절"}
_CUE_FILLER = ("삼성전자", "카카오", "외국인", "기관", "개미", "실적", "배당", "공시", "오늘", "내일", "주가", "반도체",
               "금리", "환율", "시장", "장마감", "뉴스", "진짜", "ㅋㅋ", "매수", "매도", "차트", "거래량", "급등")


def cue_records(n: int, seed: int, prefix: str) -> list[dict[str, str]]:
    """``n`` records {id, title, label} of a task a tiny model can learn in seconds: the cue word of :data:`CUES`
    placed among 1-4 random filler words decides the label; labels alternate, then the records are shuffled.

    The same ``seed`` gives the same records: the training tests' expected numbers depend on them.
    """
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = LABELS[i % 2]
        words = rng.sample(_CUE_FILLER, rng.randint(1, 4))
        words.insert(rng.randint(0, len(words)), CUES[label])
        out.append({"id": f"{prefix}{i}", "title": " ".join(words), "label": label})
    rng.shuffle(out)
    return out


def korean_corpus(n: int, seed: int) -> list[str]:
    """Forum-style Korean lines plus the seed prompt, its labels and some prompts built from the lines.

    The prompt text is in the corpus so that the tokenizer has merges for ``[제목]``, ``[정답]``, ``[상승]``, ``[하락]``
    as a real Korean tokenizer would for common words.
    """
    titles = forum_titles(n, seed)
    prompt = seed2shot()
    rng = random.Random(seed + 1)
    lines = [INSTRUCTION, *(t for t, _ in SEED_EXAMPLES), *LABELS, *CONTINUATIONS]
    lines += [prompt.training_text(t, rng.choice(LABELS)) for t in titles[: max(1, n // 10)]]
    return lines + titles


def train_tokenizer(texts: Iterable[str], vocab_size: int = 800) -> PreTrainedTokenizerFast:
    """Byte-level BPE (as GPT-NeoX / llama-3) trained on ``texts``; ``<|endoftext|>`` is bos, eos and pad.

    No bos token is added on encode (like polyglot-ko); the llama-3 special tokens are in the vocabulary so that
    :func:`make_llama` can turn a copy into a llama-3-style tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT, *LLAMA3_SPECIAL],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=EOT,
                                   model_max_length=2048)


def llama3_tokenizer(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """A copy that prepends ``<|begin_of_text|>`` on encode, ends turns with ``<|eot_id|>`` and has a chat template."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    backend = copy.deepcopy(tokenizer.backend_tokenizer)
    bos = "<|begin_of_text|>"
    backend.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                      special_tokens=[(bos, backend.token_to_id(bos))]),
    ])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token="<|eot_id|>", pad_token=EOT,
                                  model_max_length=tokenizer.model_max_length)
    tok.chat_template = LLAMA3_CHAT_TEMPLATE
    return tok


def make_gpt_neox(out_dir: str | Path, tokenizer: PreTrainedTokenizerFast, seed: int = 0, hidden: int = 64,
                  layers: int = 2, heads: int = 4, intermediate: int | None = None, max_positions: int = 2048,
                  init_std: float = 0.2) -> Path:
    """polyglot-ko's shape scaled down, random weights from ``seed``; saves model + tokenizer to ``out_dir``.

    ``init_std`` is larger than a real model's 0.02 so that the random model's next-token distributions are peaked
    and its scores for different answers differ clearly (ties would make argmax comparisons meaningless).
    """
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    eot = tokenizer.convert_tokens_to_ids(EOT)
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate or 4 * hidden, max_position_embeddings=max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        use_parallel_residual=True, tie_word_embeddings=False, initializer_range=init_std,
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
    )
    return _save(GPTNeoXForCausalLM, config, seed, out_dir, tokenizer)


def make_llama(out_dir: str | Path, tokenizer: PreTrainedTokenizerFast, seed: int = 0, hidden: int = 64,
               layers: int = 2, heads: int = 4, kv_heads: int = 2, intermediate: int | None = None,
               max_positions: int = 2048, init_std: float = 0.2) -> Path:
    """A llama-3-shaped model (GQA, RMSNorm, SwiGLU) with :func:`llama3_tokenizer` of ``tokenizer`` and its chat
    template; saves both to ``out_dir``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = llama3_tokenizer(tokenizer)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, intermediate_size=intermediate or 3 * hidden,
        max_position_embeddings=max_positions, rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        tie_word_embeddings=False, initializer_range=init_std,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    return _save(LlamaForCausalLM, config, seed, out_dir, tok)


def _save(cls: type, config: object, seed: int, out_dir: str | Path, tokenizer: PreTrainedTokenizerFast) -> Path:
    import torch

    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's global RNG
        torch.manual_seed(seed)
        model = cls(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


__all__ = ["CUES", "EOT", "LLAMA3_CHAT_TEMPLATE", "cue_records", "forum_titles", "korean_corpus", "llama3_tokenizer",
           "make_gpt_neox", "make_llama", "train_tokenizer"]

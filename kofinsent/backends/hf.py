"""Hugging Face transformers backend: local path or hub id, optional PEFT adapter, optional 8-bit / 4-bit.

Log-likelihood follows lm-evaluation-harness 0.4.x ``HFLM`` for causal models token for token:

- ``_encode_pair``: trailing whitespace of the context moves to the front of the continuation; ``whole =
  encode(context + continuation)``, ``ctx = encode(context)``, ``cont = whole[len(ctx):]``; the model reads
  ``ctx + cont`` (left-truncated to ``max_length + 1`` tokens, last one dropped) and the score is the sum of the
  log-softmax (float32 here) at the continuation tokens. ``encode`` is the tokenizer's default (a tokenizer that adds
  BOS adds it), except that a string already starting with the BOS text is encoded without special tokens; an empty
  context is the BOS (else EOS) token, as ``HFLM.prefix_token_id``.
- Requests longer than ``max_length + 1`` tokens are left-truncated like lm-eval and counted in
  :attr:`HFBackend.context_exceeded` (the evaluator reports it).

The prefix-cached path (default) returns the same numbers faster; see :meth:`HFBackend._score_cached`.
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import StoppingCriteria

from .base import BackendError, GenOptions, Generation, Prompt

DTYPES: dict[str, Any] = {"auto": "auto", "float32": torch.float32, "float16": torch.float16,
                          "bfloat16": torch.bfloat16}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
GENERATE_EXTRA_KEYS = ("top_p", "top_k", "min_p", "repetition_penalty", "no_repeat_ngram_size")
_LM_EVAL_DEFAULT_MAX_LENGTH = 2048
_TOKENIZER_INFINITY = 1000000000000000019884624838656


def _looks_local(name: str) -> bool:
    """A filesystem path rather than a hub id ("org/name"): never try the hub for it."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name


def _sha256_files(files: Sequence[Path], root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _batches(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def move_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """lm-eval's ``_encode_pair`` first step: trailing whitespace of the context belongs to the continuation."""
    n = len(context) - len(context.rstrip())
    return (context[:-n], context[-n:] + continuation) if n else (context, continuation)


@dataclass(frozen=True)
class _Cut:
    """Where the shared prefix ends: ``head`` = lm-eval's tokens of ``text[:k]``; a suffix is encoded as ``anchor +
    text[k:]`` and the anchor's tokens (``anchor_ids``) dropped."""

    k: int
    head: list[int]
    anchor: str
    anchor_ids: list[int]


@dataclass
class _Group:
    """One distinct context of a cached call: its suffix tokens and the requests (index, continuation tokens)."""

    suffix: list[int] | None
    requests: list[tuple[int, list[int]]] = field(default_factory=list)


class HFBackend:
    """transformers ``AutoModelForCausalLM`` + ``AutoTokenizer`` behind the :class:`~kofinsent.backends.Backend`
    protocol.

    ``model``: a local directory or a hub id (a path that does not exist is a :class:`BackendError` naming it).
    ``adapter``: a PEFT adapter directory loaded on top (``PeftModel.from_pretrained``), as FinGPT v3 is used.
    ``load_in_8bit`` / ``load_in_4bit``: bitsandbytes quantization (on CPU the compute dtype defaults to float32).
    ``dtype``: auto | float32 | float16 | bfloat16. ``device`` / ``device_map``: where the model goes (default: cuda
    if available, else cpu). ``batch_size``: rows per forward pass: a request on the plain path (as lm-eval), a
    distinct context with all of its continuations on the cached path. ``max_length``: the model's context
    (``n_positions`` / ``max_position_embeddings`` / ``n_ctx``, else the tokenizer's, else 2048, as lm-eval).
    ``prefix_cache``: score through the shared-prefix KV cache (equal to the plain path; see ``_score_cached``).
    ``verify_tokens``: on the cached path, also tokenize every request whole, lm-eval's way, and send any request
    whose tokens differ to the plain path (slower; by default each call checks a sample, which is exact for the
    tokenizers ``_find_cut`` describes). ``attn_implementation``: passed to ``from_pretrained``; the cached path
    runs with sdpa and eager attention.

    Counters (cumulative): ``context_exceeded`` (alias ``truncated``: requests left-truncated to fit
    ``max_length``, as lm-eval does), ``cached_requests``, ``plain_requests``, ``token_fallbacks`` (requests the
    cached path gave to the plain path because the prefix cut did not reproduce lm-eval's tokens).
    ``cache_blocker``: why the cached path is off for this model (None when it is on); it is also switched off
    when its one-time self-check against the plain path fails.
    """

    name = "hf"
    supports_loglikelihood = True
    supports_chat = True  # per instance: False when the tokenizer has no chat template

    def __init__(self, model: str, adapter: str | None = None, load_in_8bit: bool = False,
                 load_in_4bit: bool = False, dtype: str = "auto", device: str | None = None,
                 device_map: str | None = None, batch_size: int = 16, trust_remote_code: bool = False,
                 prefix_cache: bool = True, max_length: int | None = None, revision: str | None = None,
                 verify_tokens: bool = False, attn_implementation: str | None = None) -> None:
        import transformers

        if dtype not in DTYPES:
            raise BackendError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if load_in_8bit and load_in_4bit:
            raise BackendError("choose one of load_in_8bit and load_in_4bit")
        if batch_size < 1:
            raise BackendError(f"batch_size must be >= 1, got {batch_size}")
        model = str(model)
        if _looks_local(model) or Path(model).exists():
            path = Path(model).expanduser()
            if not path.is_dir():
                raise BackendError(f"hf: model path {model} does not exist or is not a directory")
            model = str(path)
        self.model_name = model
        self.adapter = str(Path(adapter).expanduser()) if adapter else None
        self.revision = revision
        self.batch_size = batch_size
        self.prefix_cache = prefix_cache
        self.verify_tokens = verify_tokens
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.device_map = device_map
        self.quantization = "8bit" if load_in_8bit else "4bit" if load_in_4bit else None

        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if revision:
            kwargs["revision"] = revision
        tok_kwargs = dict(kwargs)
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(model, **tok_kwargs)
        except (OSError, ValueError) as e:
            raise BackendError(f"hf: cannot load the tokenizer of {model}: {e}") from e

        torch_dtype = DTYPES[dtype]
        if self.quantization:
            torch_dtype = self._check_bitsandbytes(torch_dtype)
            kwargs["quantization_config"] = self._bnb_config(torch_dtype)
            kwargs["device_map"] = device_map or {"": (self.device.index or 0) if self.device.type == "cuda" else "cpu"}
        elif device_map:
            kwargs["device_map"] = device_map
        try:
            lm = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, **kwargs)
        except (OSError, ValueError) as e:
            raise BackendError(f"hf: cannot load the model {model}: {e}") from e
        if "device_map" not in kwargs:
            lm.to(self.device)
        if self.adapter:
            lm = self._load_adapter(lm, self.adapter)
        lm.eval()
        self.model = lm
        self.device = next(lm.parameters()).device  # where device_map put the embeddings

        # lm-eval's configure_pad_token: pad = pad, else unk, else eos.
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = self.tokenizer.unk_token_id or self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # lm-eval's HFLM.prefix_token_id and the BOS text its tok_encode checks for.
        bos = self.tokenizer.bos_token_id
        self.prefix_token_id = bos if bos is not None else self.tokenizer.eos_token_id
        self._bos_text = self.tokenizer.decode([self.prefix_token_id]) if self.prefix_token_id is not None else None
        self.max_length = max_length or self._resolve_max_length()
        self.supports_chat = bool(getattr(self.tokenizer, "chat_template", None))
        # logits_to_keep as a boolean mask (transformers >= 5) computes the LM head only where a continuation token
        # is scored; older versions get the full logits and index them.
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        params = inspect.signature(base.forward).parameters
        self._keep_last = "logits_to_keep" in params
        self._keep_masks = self._keep_last and hasattr(transformers.modeling_utils, "slice_logits_to_keep")
        # Why the cached path cannot run on this model, if it cannot: it lays continuations side by side, so it needs
        # explicit position ids (ALiBi models such as BLOOM derive positions from the mask) and a custom 4D mask.
        attn = getattr(base.config, "_attn_implementation", None) or "eager"
        self.cache_blocker: str | None = (
            None if "position_ids" in params and attn in ("sdpa", "eager")
            else f"{type(base).__name__} with {attn} attention takes no position ids or custom 4D masks")
        self._dtype = base.dtype
        self._mask_dtype = torch.bool if attn == "sdpa" else base.dtype
        self._self_checked = False
        self.context_exceeded = 0
        self.cached_requests = 0
        self.plain_requests = 0
        self.token_fallbacks = 0
        self.last_prefix_tokens = 0  # tokens of the shared prefix found by the last cached call (diagnostics)
        self._identity: dict[str, Any] | None = None

    # -- loading ---------------------------------------------------------------------------------------------------
    def _check_bitsandbytes(self, torch_dtype: Any) -> Any:
        try:
            import bitsandbytes  # noqa: F401
        except Exception as e:  # a broken CUDA setup raises more than ImportError
            raise BackendError(f"hf: --load-in-{self.quantization} needs a working bitsandbytes "
                               f"(pip install bitsandbytes): {type(e).__name__}: {e}") from e
        # bitsandbytes on CPU is only usable with float32 compute (environment notes: a 1.3B LoRA step did not
        # finish in 9.5 min with the half-precision default, ~11 s with float32).
        if torch_dtype == "auto":
            return torch.float32 if self.device.type == "cpu" else torch.float16
        return torch_dtype

    def _bnb_config(self, torch_dtype: Any) -> Any:
        from transformers import BitsAndBytesConfig

        if self.quantization == "8bit":
            # bitsandbytes logs this on every 8-bit matmul of a float32 input: once per layer per batch.
            bnb_log = logging.getLogger("bitsandbytes.autograd._functions")
            if _drop_cast_warning not in bnb_log.filters:
                bnb_log.addFilter(_drop_cast_warning)
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch_dtype, bnb_4bit_quant_type="nf4")

    def _load_adapter(self, lm: Any, adapter: str) -> Any:
        if not Path(adapter).is_dir():
            raise BackendError(f"hf: adapter path {adapter} does not exist or is not a directory")
        try:
            from peft import PeftModel
        except ImportError as e:
            raise BackendError(f"hf: --adapter needs peft (pip install peft): {e}") from e
        try:
            return PeftModel.from_pretrained(lm, adapter, is_trainable=False)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise BackendError(f"hf: cannot load the adapter {adapter} on {self.model_name}: {e}") from e

    def _resolve_max_length(self) -> int:
        cfg = self.model.config
        cfg = getattr(cfg, "text_config", None) or cfg
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(cfg, attr, None)
            if value is not None:
                return int(value)
        n = getattr(self.tokenizer, "model_max_length", None)
        return int(n) if n is not None and n != _TOKENIZER_INFINITY else _LM_EVAL_DEFAULT_MAX_LENGTH

    # -- tokenization (lm-eval's) ------------------------------------------------------------------------------------
    def _special(self, text: str) -> bool:
        """lm-eval's ``tok_encode``: no special tokens for a string that already starts with the BOS text."""
        return not (self._bos_text and text.startswith(self._bos_text))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=self._special(text))

    def _encode_plain(self, texts: list[str]) -> list[list[int]]:
        """Without special tokens, in one batched call (the Rust tokenizer parallelises it)."""
        if not texts:
            return []
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def lm_eval_tokens(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context tokens, continuation tokens) exactly as lm-eval 0.4.x ``HFLM`` makes them for a causal model."""
        if context == "":
            cont = self.tokenizer.encode(continuation, add_special_tokens=False)
            if cont and cont[0] == self.prefix_token_id:
                return cont[:1], cont[1:]
            return [self.prefix_token_id], cont
        context, continuation = move_whitespace(context, continuation)
        ctx = self.encode(context)
        if not ctx:  # an all-whitespace context: condition on the prefix token (lm-eval would assert here)
            ctx = [self.prefix_token_id]
            return ctx, self.tokenizer.encode(continuation, add_special_tokens=False)
        whole = self.encode(context + continuation)
        return ctx, whole[len(ctx):]

    # -- log-likelihood ----------------------------------------------------------------------------------------------
    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Sum of the continuation's token log-probs given the context, lm-eval's tokenization; same order."""
        unique = list(dict.fromkeys(requests))  # a repeated request gets the very same number
        scores: dict[int, float] = {}
        if self.prefix_cache and unique:
            scores = self._score_cached(unique)
            if scores and not self._self_checked:
                scores = self._self_check(unique, scores)
        rest = [i for i in range(len(unique)) if i not in scores]
        if rest:
            pairs = [self.lm_eval_tokens(*unique[i]) for i in rest]
            for i, s in zip(rest, self._score_tokens(pairs)):
                scores[i] = s
            self.plain_requests += len(rest)
        by_request = {r: scores[i] for i, r in enumerate(unique)}
        return [by_request[r] for r in requests]

    def _self_check(self, requests: Sequence[tuple[str, str]], scores: dict[int, float]) -> dict[int, float]:
        """Once per backend: the cached score of the last request (a second continuation, so the side-by-side layout
        is exercised) against the plain path. A model that handles positions or masks its own way shows up here:
        the cached path is then switched off (with a warning), never trusted."""
        self._self_checked = True
        i = max(scores)
        ref = self._score_tokens([self.lm_eval_tokens(*requests[i])])[0]
        exact = self._dtype == torch.float32 and not self.quantization
        tol = 1e-3 if exact else 0.1 + 0.01 * abs(ref)  # float32 agrees to ~1e-5; half precision / int8 less
        if abs(scores[i] - ref) <= tol:
            return scores
        self.cache_blocker = (f"self-check failed: cached {scores[i]:.6g} vs plain {ref:.6g} on one request; "
                              "scoring everything on the plain path")
        warnings.warn(f"hf: prefix cache disabled for {self.model_name}: {self.cache_blocker}", stacklevel=3)
        self.prefix_cache = False
        self.cached_requests -= len(scores)
        return {}

    def _check_length(self, n_ctx: int, n_cont: int) -> bool:
        """True when the request must be left-truncated (counted); a continuation alone too long is an error."""
        if n_cont > self.max_length:
            raise BackendError(f"hf: a continuation of {n_cont} tokens exceeds the model's context of "
                               f"{self.max_length} tokens")
        return n_ctx + n_cont > self.max_length + 1

    def _forward(self, keep: torch.Tensor | int | None = None, **inputs: Any) -> tuple[torch.Tensor, Any]:
        """Logits at ``keep`` (int: the last n positions; 2D bool: the True positions, flattened) and the KV cache.
        The model's own ``logits_to_keep`` applies the LM head there only; without it, full logits are sliced."""
        if keep is not None and (self._keep_masks or (isinstance(keep, int) and self._keep_last)):
            out = self.model(**inputs, logits_to_keep=keep)
            return out.logits, out.past_key_values
        out = self.model(**inputs)
        logits = out.logits
        if isinstance(keep, int):
            logits = logits[:, -keep:]
        elif keep is not None:
            logits = logits[keep]
        return logits, out.past_key_values

    def _score_tokens(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """The plain path: lm-eval's batching (longest first, right-padded, one row per request, full logits)."""
        out = [0.0] * len(pairs)
        order = sorted((i for i, (_, cont) in enumerate(pairs) if cont), key=lambda i: -sum(map(len, pairs[i])))
        with torch.inference_mode():
            for batch in _batches(order, self.batch_size):
                inps = []
                for i in batch:
                    ctx, cont = pairs[i]
                    self.context_exceeded += self._check_length(len(ctx), len(cont))
                    inps.append((ctx + cont)[-(self.max_length + 1):][:-1])
                width = max(map(len, inps))
                ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
                for r, inp in enumerate(inps):
                    ids[r, :len(inp)] = torch.tensor(inp)
                # No attention mask, as lm-eval: right padding is invisible to a causal model's real tokens.
                logits, _ = self._forward(input_ids=ids.to(self.device), use_cache=False)
                for r, i in enumerate(batch):
                    cont = pairs[i][1]
                    n = len(inps[r])
                    lp = torch.log_softmax(logits[r, n - len(cont):n].float(), dim=-1)
                    idx = torch.tensor(cont, device=lp.device)[:, None]
                    out[i] = float(lp.gather(1, idx).sum())
        return out

    # -- the prefix-cached path --------------------------------------------------------------------------------------
    def _find_cut(self, contexts: Sequence[str], samples: Sequence[str]) -> _Cut | None:
        """A cut ``k`` inside the contexts' common prefix with ``encode(x) == encode(x[:k]) + tail(x)`` for every
        sample string ``x``, where ``tail`` encodes ``anchor + x[k:]`` and drops the anchor's tokens.

        Candidates are token starts of the first context where the previous token ends at ``k`` (no character split
        between tokens) and the two tokens after ``k`` lie inside the common prefix: the pre-tokenizer's decision at
        ``k`` (regex lookahead, greedy runs) then sees the same characters in every context, so a cut that
        reproduces the samples reproduces every request of a byte-level BPE tokenizer. Tried: the latest four, then
        the latest four before a space, then 0; each with no anchor, then with the previous token's text as the
        anchor (a SentencePiece tokenizer prepends "▁" to whatever it encodes first: the anchor absorbs it).
        """
        lcp = len(os.path.commonprefix(list(contexts)))
        rep = contexts[0]
        starts = sorted(self._token_starts(rep, lcp), reverse=True)
        spaced = [c for c in starts if rep[c[0]].isspace()]
        full = [self.encode(x) for x in samples]
        for k, prev in dict.fromkeys([*starts[:4], *spaced[:4], (0, 0)]):
            head = self.encode(rep[:k])
            for anchor in dict.fromkeys(("", rep[prev:k])):
                cut = _Cut(k, head, anchor, self._encode_plain([anchor])[0] if anchor else [])
                tails = self._tails(cut, samples)
                if all(t is not None and f == head + t for f, t in zip(full, tails)):
                    return cut
        return None

    def _token_starts(self, text: str, limit: int) -> list[tuple[int, int]]:
        """(start of a token, start of the token before it) for the candidate cuts of ``_find_cut``."""
        if not self.tokenizer.is_fast:  # no offsets: cut after a newline or before a space and let samples decide
            return [(k, k - 1) for k in range(1, limit - 1) if text[k - 1] == "\n" or text[k] == " "]
        enc = self.tokenizer(text, add_special_tokens=self._special(text), return_offsets_mapping=True)
        spans = [(s, e) for s, e in enc["offset_mapping"] if e > s]  # special tokens have empty spans
        return [(spans[j][0], spans[j - 1][0]) for j in range(1, len(spans) - 1)
                if spans[j - 1][1] <= spans[j][0] and spans[j + 1][1] <= limit]

    def _tails(self, cut: _Cut, texts: Sequence[str]) -> list[list[int] | None]:
        """The tokens of each ``text[cut.k:]`` as they appear after the prefix; None where the anchor's own tokens
        came out differently (that text cannot be cut there)."""
        encs = self._encode_plain([cut.anchor + t[cut.k:] for t in texts])
        n = len(cut.anchor_ids)
        return [e[n:] if e[:n] == cut.anchor_ids else None for e in encs]

    def _score_cached(self, requests: Sequence[tuple[str, str]]) -> dict[int, float]:
        """Scores of the requests this path can take, by index; the rest go to the plain path.

        Tokens: the contexts' common prefix is cut at a verified boundary ``k`` (``_find_cut``); the prefix is
        encoded once (``head``) and only the per-item suffixes are tokenized: ``ctx = head + tail(context)``,
        ``whole = head + tail(context + continuation)`` and ``cont = whole[len(ctx):]`` — lm-eval's formula on the
        same tokens (``tail`` encodes the text after ``k``, see ``_tails``).

        Model: ``head[:-1]`` runs once and its KV cache is shared by every batch. A batch row is one distinct context:
        ``head[-1:] + suffix`` followed by each of its continuations' input tokens (``cont[:-1]``), side by side,
        with a tree-shaped attention mask (a continuation sees the prefix, its context's suffix and its own earlier
        tokens, not the other continuations) and position ids that restart after the suffix for every
        continuation. So the title runs once for both answers, and the LM head is applied only at the last suffix
        position (it predicts every continuation's first token) and at the continuation positions. ``batch_size``
        counts rows (contexts). Requests that would be truncated, have an empty context or continuation, or (with
        ``verify_tokens``) whose tokens differ from lm-eval's go to the plain path.
        """
        from transformers import DynamicCache

        if self.cache_blocker:
            return {}
        moved = [move_whitespace(c, x) if c else (c, x) for c, x in requests]
        eligible = [i for i, (c, x) in enumerate(moved) if c.strip() and x]
        if not eligible:
            return {}
        ctx_ids: dict[str, int] = {}
        for i in eligible:
            ctx_ids.setdefault(moved[i][0], len(ctx_ids))
        contexts = list(ctx_ids)
        cut = self._find_cut(contexts, self._samples(contexts, [moved[i] for i in eligible]))
        if cut is None:
            self.token_fallbacks += len(eligible)
            return {}
        head = cut.head
        self.last_prefix_tokens = len(head)
        groups = [_Group(s) for s in self._tails(cut, contexts)]
        wholes = self._tails(cut, [moved[i][0] + moved[i][1] for i in eligible])
        for i, w in zip(eligible, wholes):
            g = groups[ctx_ids[moved[i][0]]]
            if g.suffix is None or w is None:
                self.token_fallbacks += 1
                continue
            cont = w[len(g.suffix):]
            if not cont or self._check_length(len(head) + len(g.suffix), len(cont)) or self._too_wide(
                    len(head) + len(g.suffix) + sum(len(c) - 1 for _, c in g.requests) + len(cont)):
                continue  # the plain path truncates (and counts) it, or scores an empty continuation
            if self.verify_tokens and (head + g.suffix, cont) != self.lm_eval_tokens(*requests[i]):
                self.token_fallbacks += 1
                continue
            g.requests.append((i, cont))
        # Longest first (as lm-eval): similar lengths share a batch, so little padding.
        groups = sorted((g for g in groups if g.requests), key=lambda g: -self._row_len(g))  # type: ignore[arg-type]
        scores: dict[int, float] = {}
        past, lead = head[:-1], head[-1:]
        with torch.inference_mode():
            prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
            if past and groups:
                _, cache = self._forward(keep=1, input_ids=torch.tensor([past], device=self.device), use_cache=True)
                prefix_kv = [(layer[0], layer[1]) for layer in cache]
            for batch in _batches(groups, self.batch_size):
                cache = DynamicCache([(k_.expand(len(batch), -1, -1, -1), v_.expand(len(batch), -1, -1, -1))
                                      for k_, v_ in prefix_kv], config=self.model.config) if prefix_kv else None
                self._score_batch(batch, lead, len(past), cache, scores)
        self.cached_requests += len(scores)
        return scores

    def _too_wide(self, n: int) -> bool:
        """A row longer than a sliding attention window would need the window applied inside our custom mask."""
        window = getattr(self.model.config, "sliding_window", None)
        return bool(window) and n > window

    @staticmethod
    def _row_len(g: _Group) -> int:
        return 1 + len(g.suffix) + sum(len(c) - 1 for _, c in g.requests)

    @staticmethod
    def _samples(contexts: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[str]:
        """Strings whose full tokenization checks a cut: the first, last, shortest and longest contexts, and each of
        them followed by (up to four of) the call's distinct continuations."""
        picks = sorted({contexts[0], contexts[-1], min(contexts, key=len), max(contexts, key=len)})
        conts = sorted({x for _, x in pairs})[:4]
        return [*picks, *(c + x for c in picks for x in conts)]

    def _score_batch(self, batch: Sequence[_Group], lead: list[int], n_past: int, cache: Any,
                     scores: dict[int, float]) -> None:
        """One forward pass: a row per context (``lead + suffix`` then each continuation's inputs), right-padded."""
        rows: list[tuple[list[int], list[int], list[int], list[int]]] = []  # tokens, segments, positions, kept
        picks: list[tuple[int, int, int]] = []  # (request, index among the batch's kept positions, target token)
        n_kept = 0
        for g in batch:
            toks = lead + g.suffix  # type: ignore[operator]
            n = len(toks)
            seg, pos, keep = [0] * n, list(range(n)), [n - 1]
            for j, (i, cont) in enumerate(g.requests, 1):
                picks.append((i, n_kept, cont[0]))  # the last suffix position predicts every first token
                for t, target in enumerate(cont[1:]):
                    keep.append(len(toks) + t)
                    picks.append((i, n_kept + len(keep) - 1, target))
                toks = toks + cont[:-1]
                pos += range(n, n + len(cont) - 1)  # each continuation starts right after the suffix
                seg += [j] * (len(cont) - 1)
            rows.append((toks, seg, pos, keep))
            n_kept += len(keep)
        width = max(len(r[0]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        seg_t = torch.full((len(rows), width), -1, dtype=torch.long)
        pos_t = torch.zeros((len(rows), width), dtype=torch.long)
        keep_t = torch.zeros((len(rows), width), dtype=torch.bool)
        for r, (toks, seg, pos, keep) in enumerate(rows):
            ids[r, :len(toks)] = torch.tensor(toks)
            seg_t[r, :len(toks)] = torch.tensor(seg)
            pos_t[r, :len(toks)] = torch.tensor(pos)
            keep_t[r, keep] = True
        dev = self.device
        logits, _ = self._forward(keep=keep_t.to(dev), input_ids=ids.to(dev), position_ids=(pos_t + n_past).to(dev),
                                  attention_mask=self._tree_mask(seg_t.to(dev), n_past), past_key_values=cache,
                                  use_cache=True)
        lp = torch.log_softmax(logits.float(), dim=-1)  # [kept positions of all rows, vocab]
        at = torch.tensor([p for _, p, _ in picks], device=lp.device)
        targets = torch.tensor([t for _, _, t in picks], device=lp.device)
        for (i, _, _), v in zip(picks, lp[at, targets].tolist()):
            scores[i] = scores.get(i, 0.0) + v

    def _tree_mask(self, seg: torch.Tensor, n_past: int) -> torch.Tensor:
        """[batch, 1, query, past + query]: every query sees the prefix; a key in the row is visible when it is not
        later (causal), not padding, and in the suffix (segment 0) or in the query's own continuation. The diagonal
        is always visible so that no padding query is fully masked (NaN)."""
        b, t = seg.shape
        idx = torch.arange(t, device=seg.device)
        causal = idx[None, :, None] >= idx[None, None, :]
        key_seg, query_seg = seg[:, None, :], seg[:, :, None]
        local = causal & (key_seg >= 0) & ((key_seg == 0) | (key_seg == query_seg))
        local |= torch.eye(t, dtype=torch.bool, device=seg.device)
        mask = torch.cat([torch.ones(b, t, n_past, dtype=torch.bool, device=seg.device), local], dim=-1)[:, None]
        if self._mask_dtype == torch.bool:  # sdpa: True = attend
            return mask
        dtype = self._mask_dtype if self._mask_dtype.is_floating_point else torch.float32
        return torch.zeros(mask.shape, dtype=dtype, device=seg.device).masked_fill_(~mask, torch.finfo(dtype).min)

    # -- generation --------------------------------------------------------------------------------------------------
    def render(self, prompt: Prompt) -> tuple[str, bool]:
        """The text sent to the model and whether to add special tokens when encoding it."""
        if isinstance(prompt, str):
            return prompt, self._special(prompt)
        if not self.supports_chat:
            raise BackendError(f"hf: {self.model_name} has no chat template, so chat prompts (sentiment-json) cannot "
                               "be rendered; use a chat/instruct model or a string prompt")
        text = self.tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
        return text, False  # the template writes its own BOS

    def generate(self, prompts: Sequence[Prompt], options: GenOptions) -> list[Generation]:
        """Greedy (``temperature == 0``) or sampled (seeded) generation, ``batch_size`` prompts at a time, left-padded;
        the text is cut at the first stop string. ``meta["new_tokens"]``: tokens generated up to and with EOS."""
        if options.json_schema is not None:
            raise BackendError("hf: JSON-schema-constrained decoding is not supported by the hf backend; use "
                               "--backend llamacpp or --backend ollama (or --format free)")
        unknown = sorted(set(options.extra) - set(GENERATE_EXTRA_KEYS))
        if unknown:
            raise BackendError(f"hf: unknown generation options {unknown}; the hf backend takes "
                               f"{', '.join(GENERATE_EXTRA_KEYS)}")
        encoded = []
        for p in prompts:
            text, special = self.render(p)
            encoded.append(self.tokenizer.encode(text, add_special_tokens=special))
        gen_kwargs: dict[str, Any] = {"max_new_tokens": options.max_new_tokens, "pad_token_id": self.pad_id,
                                      **options.extra}
        if options.temperature > 0:
            gen_kwargs.update(do_sample=True, temperature=options.temperature)
        else:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        eos_ids.add(self.tokenizer.eos_token_id)

        out: list[Generation] = []
        for batch in _batches(encoded, self.batch_size):
            width = max(map(len, batch))
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for r, toks in enumerate(batch):
                ids[r, width - len(toks):] = torch.tensor(toks)
                mask[r, width - len(toks):] = 1
            stop = _StopOnText(self.tokenizer, options.stop, width, len(batch))
            t0 = time.perf_counter()
            with torch.inference_mode(), torch.random.fork_rng(devices=self._rng_devices()):
                torch.manual_seed(options.seed)  # sampling is reproducible and leaves the caller's RNG alone
                seqs = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                           stopping_criteria=[stop] if options.stop else None, **gen_kwargs)
            dt = (time.perf_counter() - t0) / len(batch)
            for row, stopped_at in zip(seqs[:, width:].tolist(), stop.done_at):
                n_new = next((j + 1 for j, t in enumerate(row) if t in eos_ids), len(row))
                n_new = min(n_new, stopped_at or n_new)
                text = self.tokenizer.decode(row[:n_new], skip_special_tokens=True)
                out.append(Generation(_cut_at_stop(text, options.stop), dt, {"new_tokens": n_new}))
        return out

    def _rng_devices(self) -> list[int]:
        return [self.device.index or 0] if self.device.type == "cuda" else []

    # -- identity --------------------------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """Model and adapter with sha256 over their weight files, dtype, quantization, device, library versions."""
        if self._identity is None:
            self._identity = self._compute_identity()
        return dict(self._identity)

    def _compute_identity(self) -> dict[str, Any]:
        import transformers

        model_dir = self._local_dir(self.model_name, self.revision)
        weights = sorted(f for f in model_dir.rglob("*") if f.suffix in WEIGHT_SUFFIXES) if model_dir else []
        adapter_files: list[Path] = []
        if self.adapter:
            adapter_files = sorted(f for f in Path(self.adapter).rglob("*")
                                   if f.suffix in WEIGHT_SUFFIXES or f.name == "adapter_config.json")
        versions = {"torch": torch.__version__, "transformers": transformers.__version__}
        for mod in ("peft", "bitsandbytes", "accelerate", "tokenizers"):
            try:
                versions[mod] = __import__(mod).__version__
            except Exception:
                versions[mod] = None
        return {
            "backend": self.name,
            "model": self.model_name,
            "model_dir": str(model_dir) if model_dir else None,
            "revision": self.revision,
            "commit": getattr(self.model.config, "_commit_hash", None),
            "weights_sha256": _sha256_files(weights, model_dir) if weights and model_dir else None,
            "weight_files": [str(f.relative_to(model_dir)) for f in weights] if model_dir else [],
            "adapter": self.adapter,
            "adapter_sha256": _sha256_files(adapter_files, Path(self.adapter)) if adapter_files and self.adapter
            else None,
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "quantization": self.quantization,
            "device": str(self.device),
            "device_map": self.device_map,
            "max_length": self.max_length,
            "batch_size": self.batch_size,
            "prefix_cache": self.prefix_cache,
            "versions": versions,
        }

    @staticmethod
    def _local_dir(name: str, revision: str | None) -> Path | None:
        if Path(name).is_dir():
            return Path(name)
        try:  # a hub id already in the local cache; never downloads
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(name, revision=revision, local_files_only=True))
        except Exception:
            return None

    @property
    def truncated(self) -> int:
        """Alias of ``context_exceeded``."""
        return self.context_exceeded


class _StopOnText(StoppingCriteria):
    """Stops a row once its decoded new text holds a stop string. transformers' own ``stop_strings`` match token
    strings, which misses a string whose characters are split across byte-level tokens (most Korean text)."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], start: int, rows: int) -> None:
        self.tokenizer, self.stops, self.start = tokenizer, [s for s in stops if s], start
        self.window = 4 * max(map(len, self.stops), default=0) + 8  # tokens that can hold a stop string (bytes)
        self.done_at: list[int | None] = [None] * rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        n = input_ids.shape[1] - self.start
        tails = self.tokenizer.batch_decode(input_ids[:, max(self.start, input_ids.shape[1] - self.window):],
                                            skip_special_tokens=True)
        for r, text in enumerate(tails):
            if self.done_at[r] is None and any(s in text for s in self.stops):
                self.done_at[r] = n
        return torch.tensor([d is not None for d in self.done_at], device=input_ids.device)


def _drop_cast_warning(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[:min(cuts)] if cuts else text

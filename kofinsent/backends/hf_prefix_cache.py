"""The hf backend's prefix-cached log-likelihood: lm-eval's numbers, with the prompt shared by a call run once.

A call's contexts (a few-shot prompt, then a title) share a long prefix. It is tokenized once at a cut that
reproduces lm-eval's tokens (:meth:`PrefixCachedScoring._find_cut`), run through the model once, and its keys and
values are read by every batch through one attention function (:func:`shared_prefix_attention`: expand, not
repeat). Each batch row is one distinct context with all of its continuations side by side under a tree-shaped mask.
:meth:`PrefixCachedScoring._score_cached` gives the details; requests it cannot take go to the plain path.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch

from kofinsent.backends.lmeval_tokens import move_whitespace

SHARED_PREFIX_ATTENTION = "kofinsent_shared_prefix"


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


class _PrefixKV:
    """Keys and values of the shared prefix per layer index, each ``[1, kv heads, P, head dim]``; with ``record``
    the prefix's own forward pass stores them here."""

    def __init__(self) -> None:
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.record = True


PREFIX_KV: ContextVar[_PrefixKV | None] = ContextVar("kofinsent_prefix_kv", default=None)


def shared_prefix_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, scaling: float | None = None,
                             dropout: float = 0.0, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """An attention function (transformers' ``AttentionInterface``) for a batch that shares one prefix.

    ``query`` / ``key`` / ``value``: the batch's own tokens, ``[B, heads, T, D]`` (keys and values with the model's kv
    heads). ``attention_mask``: ``[B, 1, T, T]`` bool over those tokens only (True = attend); every query also sees
    the whole prefix. The prefix's keys and values (``[1, kv heads, P, D]``, from :data:`PREFIX_KV`) are never copied
    per row: the batch's queries are laid out as ``[kv heads, B x group x T, D]`` and multiplied with them once, and
    one softmax runs over the prefix and local scores together (float32, as transformers' eager attention), so the
    numbers are those of attention over ``prefix + tokens``. With ``record`` set, this is the prefix's own pass: plain
    causal attention whose keys and values are kept.
    """
    state = PREFIX_KV.get()
    if state is None:  # used outside HFBackend's cached path: transformers' sdpa
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    b, h, t, d = query.shape
    hkv = key.shape[1]
    g = h // hkv
    scale = d ** -0.5 if scaling is None else scaling
    q = query.reshape(b, hkv, g, t, d)
    local = torch.matmul(q, key.unsqueeze(2).transpose(-1, -2)) * scale  # [B, kv heads, group, T, T]
    if attention_mask is not None:
        local = local.masked_fill(~attention_mask[:, :, None], torch.finfo(local.dtype).min)
    prefix = None if state.record else state.kv.get(module.layer_idx)
    if state.record:
        state.kv[module.layer_idx] = (key.contiguous(), value.contiguous())
    if prefix is None:
        probs = torch.softmax(local, dim=-1, dtype=torch.float32).to(query.dtype)
        out = torch.matmul(probs, value.unsqueeze(2))
    else:
        kp, vp = prefix[0][0], prefix[1][0]  # [kv heads, P, D]
        n = kp.shape[1]
        flat = q.permute(1, 0, 2, 3, 4).reshape(hkv, b * g * t, d)
        pre = (torch.bmm(flat, kp.transpose(1, 2)) * scale).view(hkv, b, g, t, n).permute(1, 0, 2, 3, 4)
        probs = torch.softmax(torch.cat([pre, local], dim=-1), dim=-1, dtype=torch.float32).to(query.dtype)
        p_pre, p_loc = probs.split([n, t], dim=-1)
        out = torch.matmul(p_loc, value.unsqueeze(2))
        out = out + torch.bmm(p_pre.permute(1, 0, 2, 3, 4).reshape(hkv, b * g * t, n), vp).view(
            hkv, b, g, t, d).permute(1, 0, 2, 3, 4)
    return out.reshape(b, h, t, d).transpose(1, 2).contiguous(), None


def _register_shared_prefix_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(SHARED_PREFIX_ATTENTION, shared_prefix_attention)


class PrefixCachedScoring:
    """The prefix-cached half of :class:`~kofinsent.backends.hf.HFBackend` (a mixin: it shares the backend's state).

    The backend provides the model and tokenizer, its lm-eval tokenization (``encode``, ``_encode_plain``,
    ``_special``, ``lm_eval_tokens``), the plain path (``_score_tokens``, ``_check_length``, ``_forward``), the
    batching (``_run_batches``), and calls :meth:`_init_prefix_cache` once the model is loaded.
    """

    model: Any
    model_name: str
    tokenizer: Any
    device: torch.device
    pad_id: int
    quantization: str | None
    prefix_cache: bool
    verify_tokens: bool
    _dtype: torch.dtype
    _base_config: Any

    def _init_prefix_cache(self, base: Any, params: Any) -> None:
        """``base``: the model under any adapter; ``params``: its ``forward`` parameters."""
        # Why the cached path cannot run on this model, if it cannot: it lays continuations side by side, so it needs
        # explicit position ids (ALiBi models such as BLOOM derive positions from the mask), a custom 4D mask, and
        # attention modules that take transformers' attention functions (it swaps in shared_prefix_attention).
        attn = getattr(base.config, "_attn_implementation", None) or "eager"
        layered = any(hasattr(m, "layer_idx") for m in base.modules())
        self.cache_blocker: str | None = (
            None if "position_ids" in params and attn in ("sdpa", "eager") and layered
            else f"{type(base).__name__} with {attn} attention takes no position ids, custom 4D masks or "
                 "attention functions")
        if not self.cache_blocker:
            _register_shared_prefix_attention()
        self._self_checked = False
        self.cached_requests = 0
        self.token_fallbacks = 0
        self.last_prefix_tokens = 0  # tokens of the shared prefix found by the last cached call (diagnostics)

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

    @contextmanager
    def _shared_attention(self, state: _PrefixKV) -> Iterator[None]:
        """The model's attention runs :func:`shared_prefix_attention` with ``state`` inside this block."""
        token = PREFIX_KV.set(state)
        cfg = self._base_config
        before = cfg._attn_implementation
        cfg._attn_implementation = SHARED_PREFIX_ATTENTION
        try:
            yield
        finally:
            cfg._attn_implementation = before
            PREFIX_KV.reset(token)

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

        Model: ``head[:-1]`` runs once and its keys and values are shared by every batch, one copy for all rows
        (:func:`shared_prefix_attention` multiplies the batch's queries with it; no per-row cache, no repeat, no
        concatenation into a batch-sized cache). A batch row is one distinct context:
        ``head[-1:] + suffix`` followed by each of its continuations' input tokens (``cont[:-1]``), side by side,
        with a tree-shaped attention mask (a continuation sees the prefix, its context's suffix and its own earlier
        tokens, not the other continuations) and position ids that restart after the suffix for every
        continuation. So the title runs once for both answers, and the LM head is applied only at the last suffix
        position (it predicts every continuation's first token) and at the continuation positions. ``batch_size``
        counts rows (contexts); "auto" counts their tokens. Requests that would be truncated, have an empty context
        or continuation, or (with ``verify_tokens``) whose tokens differ from lm-eval's go to the plain path.
        """
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
        state = _PrefixKV()
        with torch.inference_mode():
            if past and groups:  # the prefix runs once; its keys and values are read by every batch, never copied
                n = len(past)
                causal = torch.ones(n, n, dtype=torch.bool, device=self.device).tril()[None, None]
                with self._shared_attention(state):
                    self._forward(keep=1, input_ids=torch.tensor([past], device=self.device), attention_mask=causal,
                                  position_ids=torch.arange(n, device=self.device)[None], use_cache=False)
            state.record = False
            self._run_batches("loglik-cached", groups, [self._row_len(g) for g in groups],
                              lambda batch: self._score_batch(batch, lead, len(past), state, scores))
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

    def _score_batch(self, batch: Sequence[_Group], lead: list[int], n_past: int, state: _PrefixKV,
                     scores: dict[int, float]) -> None:
        """One forward pass: a row per context (``lead + suffix`` then each continuation's inputs), left-padded so that
        every position whose logits are scored lies in the last ``keep`` of its row (the LM head runs there only)."""
        rows: list[tuple[list[int], list[int], list[int]]] = []  # tokens, segments, positions
        picks: list[tuple[int, int, int, int]] = []  # (request, row, position in the row, target token)
        keep = 1
        for r, g in enumerate(batch):
            toks = lead + g.suffix  # type: ignore[operator]
            n = len(toks)
            seg, pos = [0] * n, list(range(n))
            for j, (i, cont) in enumerate(g.requests, 1):
                picks.append((i, r, n - 1, cont[0]))  # the last suffix position predicts every first token
                picks += [(i, r, len(toks) + t, target) for t, target in enumerate(cont[1:])]
                toks = toks + cont[:-1]
                pos += range(n, n + len(cont) - 1)  # each continuation starts right after the suffix
                seg += [j] * (len(cont) - 1)
            rows.append((toks, seg, pos))
            keep = max(keep, len(toks) - n + 1)
        width = max(len(t) for t, _, _ in rows)
        dev = self.device
        ids = torch.tensor([[self.pad_id] * (width - len(t)) + t for t, _, _ in rows], dtype=torch.long)
        seg_t = torch.tensor([[-1] * (width - len(t)) + sg for t, sg, _ in rows], dtype=torch.long)
        pos_t = torch.tensor([[0] * (width - len(t)) + ps for t, _, ps in rows], dtype=torch.long)
        with self._shared_attention(state):
            logits = self._forward(keep=keep, input_ids=ids.to(dev), position_ids=(pos_t + n_past).to(dev),
                                      attention_mask=self._tree_mask(seg_t.to(dev)), use_cache=False)
        # logits: [rows, keep, vocab]; row r's position p sits at keep - (len(row) - p)
        at_row = torch.tensor([r for _, r, _, _ in picks], device=logits.device)
        at_pos = torch.tensor([keep - len(rows[r][0]) + p for _, r, p, _ in picks], device=logits.device)
        targets = torch.tensor([t for _, _, _, t in picks], device=logits.device)
        sel = logits[at_row, at_pos].float()  # log-softmax at the targets only: x[target] - logsumexp(x)
        values = (sel.gather(1, targets[:, None])[:, 0] - torch.logsumexp(sel, dim=-1)).tolist()
        for (i, _, _, _), v in zip(picks, values):
            scores[i] = scores.get(i, 0.0) + v

    @staticmethod
    def _tree_mask(seg: torch.Tensor) -> torch.Tensor:
        """[batch, 1, query, key] over the batch's own tokens (every query also sees the whole prefix): a key is
        visible when it is not later (causal), not padding, and in the suffix (segment 0) or in the query's own
        continuation. The diagonal is always visible."""
        t = seg.shape[1]
        idx = torch.arange(t, device=seg.device)
        causal = idx[None, :, None] >= idx[None, None, :]
        key_seg, query_seg = seg[:, None, :], seg[:, :, None]
        local = causal & (key_seg >= 0) & ((key_seg == 0) | (key_seg == query_seg))
        local |= torch.eye(t, dtype=torch.bool, device=seg.device)
        return local[:, None]


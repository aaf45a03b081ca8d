"""llama.cpp (llama-cpp-python) backend for GGUF models: log-likelihood scoring, completion, chat, JSON schemas.

Scoring follows lm-evaluation-harness's ``HFLM`` exactly as the ``hf`` backend does (``_encode_pair``: the context's
trailing whitespace moves to the continuation; context + continuation is encoded whole and split at the context's
token length; BOS first when the GGUF's tokenizer adds one; an empty context is scored after BOS; requests longer
than ``n_ctx + 1`` tokens are left-truncated and counted in ``context_exceeded``). Requests are scored in token order
so that consecutive ones share their longest common token prefix: llama.cpp keeps the KV cache (and, with
``logits_all``, the logits) of the tokens already evaluated, so only the part after the shared prefix is run
(``_eval_with_prefix_reuse``).

Generation uses llama.cpp's own conventions (the GGUF's add-bos flag, its chat template for chat prompts) so that a
GGUF run here behaves as it would under llama.cpp or Ollama; ``options.json_schema`` constrains decoding with a
grammar built from the schema (:func:`json_grammar`), for text prompts and chats alike.

Where it runs: ``n_gpu_layers`` layers are offloaded to the GPU; by default all of them (-1) when llama-cpp-python was
built with GPU offload (CUDA, Metal, ...: ``llama_cpp.llama_supports_gpu_offload()``), else none (0).
:meth:`LlamaCppBackend.identity` records the value, whether it was chosen or the default, and what the build
supports. ``n_ctx`` defaults to 8192 tokens, seed 000's ``num_ctx``: the sentiment prompt with its five worked
examples is ~3,400 characters (~1,000 Llama-3 tokens, estimated) plus up to 1,024 reply tokens, too close to
llama.cpp's usual 2048.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kofinsent.backends.base import BackendError, Chat, Generation, GenOptions, MissingExtraError, Prompt
from kofinsent.backends.lmeval_tokens import lm_eval_pair
from kofinsent.runs import sha256_file


def _import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as e:
        raise MissingExtraError("llamacpp", "gguf", "llama-cpp-python") from e
    return llama_cpp


DEFAULT_N_CTX = 8192  # seed 000's num_ctx


class LlamaCppBackend:
    """A GGUF model run in-process by llama.cpp.

    ``kv_f32`` keeps the KV cache in float32 (llama.cpp's default is f16): with it a f32 GGUF's scores match
    transformers to ~1e-5 instead of ~1e-2 on a small random model, at twice the cache memory (0.5 GiB for an 8B
    model at n_ctx 2048, 2 GiB at 8192). ``prefix_cache=False`` scores every request from an empty cache (the plain
    path the cached one is checked against). ``n_threads`` (default: half the cores, llama-cpp-python's default) is
    used for generation and for batch evaluation alike. ``n_gpu_layers`` (None: -1 = all when the build offloads to a
    GPU, else 0) and ``n_ctx`` (default 8192): see the module docstring. ``logits_all=False`` keeps only the last
    position's logits: generation works as before, :meth:`loglikelihood` is refused (the evaluator passes it for
    generation-only runs; it saves n_ctx x n_vocab floats and their copy off the GPU for every prompt token).
    """

    name = "llamacpp"
    supports_loglikelihood = True
    supports_chat = True

    def __init__(self, model: str, n_ctx: int = DEFAULT_N_CTX, n_threads: int | None = None, n_batch: int = 512,
                 seed: int = 0, chat_format: str | None = None, verbose: bool = False, *, kv_f32: bool = True,
                 prefix_cache: bool = True, n_gpu_layers: int | None = None, logits_all: bool = True) -> None:
        from kofinsent.backends.options import BackendOptionError, check_llamacpp_options

        llama_cpp = _import_llama_cpp()
        try:
            check_llamacpp_options(n_gpu_layers, n_ctx)
        except BackendOptionError as e:
            raise BackendError(f"llamacpp: {e}") from None
        self.path = Path(model)
        if not self.path.is_file():
            raise BackendError(f"llamacpp: GGUF file {str(self.path)!r} not found")
        self.gpu_offload = bool(llama_cpp.llama_supports_gpu_offload())
        self.n_gpu_layers_source = "set" if n_gpu_layers is not None else (
            "default: the build offloads to a GPU" if self.gpu_offload else "default: a CPU-only build")
        self.n_gpu_layers = n_gpu_layers if n_gpu_layers is not None else (-1 if self.gpu_offload else 0)
        kv = {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32} if kv_f32 else {}
        threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
        try:
            self.llm = llama_cpp.Llama(
                # The same threads for batches (scoring is all batches): llama-cpp-python would use every core
                # there, and its thread barrier over cores that other work keeps busy stalls each decode (10-30x
                # slower scoring measured on 2 busy cores).
                model_path=str(self.path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                n_batch=n_batch, seed=seed, n_gpu_layers=self.n_gpu_layers,
                chat_format=chat_format, logits_all=logits_all, verbose=verbose, **kv)
        except (ValueError, RuntimeError) as e:  # llama-cpp-python's way of saying "could not load"
            raise BackendError(f"llamacpp: could not load {self.path}: {e}") from e
        # llama.cpp may round its context up (to 256); llama-cpp-python's token and logit buffers keep n_ctx rows.
        self.n_ctx = min(self.llm.n_ctx(), len(self.llm.input_ids))
        self.seed = seed
        self.kv_f32 = kv_f32
        self.prefix_cache = prefix_cache
        self.logits_all = self.supports_loglikelihood = logits_all
        # The hf backend's rule: a tokenizer that adds BOS adds it (lm-eval's HFLM with the tokenizer's default).
        lm = self.llm._model  # llama-cpp-python exposes the vocabulary's add-bos flag only here
        self._bos = self.llm.token_bos() if self.llm.token_bos() >= 0 else self.llm.token_eos()
        self._add_bos = bool(lm.add_bos_token()) and self.llm.token_bos() >= 0
        self._bos_text = lm.token_get_text(self._bos)
        self.context_exceeded = 0  # scored requests left-truncated to fit n_ctx (lm-eval does the same)
        self.tokens_evaluated = 0  # tokens run through the model by loglikelihood; prefix reuse keeps it low
        self._version = llama_cpp.__version__

    # -- scoring ---------------------------------------------------------------------------------------------------
    def _plain(self, text: str) -> list[int]:
        # special=True: a Hugging Face tokenizer also matches added tokens inside text, and lm-eval scores that way.
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def encode(self, text: str) -> list[int]:
        """lm-eval's ``tok_encode``: BOS when the GGUF's tokenizer adds one, unless the text already starts with it."""
        return [self._bos] + self._plain(text) if self._add_bos and not text.startswith(self._bos_text) \
            else self._plain(text)

    def lm_eval_tokens(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context tokens, continuation tokens) as lm-eval 0.4.x ``HFLM`` makes them (and the hf backend)."""
        return lm_eval_pair(context, continuation, self.encode, self._plain, self._bos)

    def _request_tokens(self, context: str, continuation: str) -> tuple[list[int], int]:
        """(context + continuation tokens, number of continuation tokens scored)."""
        ctx, cont = self.lm_eval_tokens(context, continuation)
        if not cont:
            raise BackendError(f"llamacpp: continuation {continuation!r} encodes to no tokens")
        if len(cont) > self.n_ctx:
            raise BackendError(f"llamacpp: a continuation of {len(cont)} tokens exceeds n_ctx={self.n_ctx}")
        whole = ctx + cont
        if len(whole) - 1 > self.n_ctx:  # keep the end, as lm-eval's left truncation does
            self.context_exceeded += 1
            whole = whole[-(self.n_ctx + 1):]
        return whole, len(cont)

    def _eval_with_prefix_reuse(self, tokens: list[int]) -> None:
        """Make ``llm.scores[:len(tokens)]`` the logits after each of ``tokens``, running only the tokens after the
        prefix shared with what was evaluated last. ``Llama.eval`` drops the KV cache beyond ``n_tokens`` and
        appends; rows of ``scores`` before ``n_tokens`` were computed on the same prefix, so they stay valid."""
        llm = self.llm
        n = min(llm.n_tokens, len(tokens))
        differ = np.flatnonzero(llm.input_ids[:n] != np.asarray(tokens[:n], dtype=llm.input_ids.dtype))
        common = int(differ[0]) if differ.size else n
        if common < len(tokens):
            llm.n_tokens = common
            llm.eval(tokens[common:])
            self.tokens_evaluated += len(tokens) - common
        elif common < llm.n_tokens:
            llm.n_tokens = common
            # The context's current logits belong to a later position: make the next generate() decode again
            # instead of sampling from them (llama-cpp-python's own flag for this).
            llm._requires_eval = True

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """Sum of the continuation tokens' log-probs given the context, for each (context, continuation)."""
        if not self.logits_all:
            raise BackendError("llamacpp: this backend was loaded for generation only (logits_all=False), so it "
                               "keeps no per-position logits to score; load it with logits_all=True")
        encoded = [self._request_tokens(c, x) for c, x in requests]
        # Token order puts requests sharing a context (the few-shot prefix, the same title) next to each other.
        order = sorted(range(len(encoded)), key=lambda i: encoded[i][0])
        out = [0.0] * len(encoded)
        for i in order:
            whole, n_cont = encoded[i]
            inp = whole[:-1]  # the last token is only ever a target
            if not self.prefix_cache:
                self.llm.reset()
            self._eval_with_prefix_reuse(inp)
            logits = np.asarray(self.llm.scores[len(inp) - n_cont: len(inp)], dtype=np.float64)
            m = logits.max(axis=1, keepdims=True)
            logprobs = logits - (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))
            out[i] = float(logprobs[np.arange(n_cont), whole[-n_cont:]].sum())
        return out

    # -- generation ------------------------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], options: GenOptions) -> list[Generation]:
        """A text prompt is continued (``create_completion``); a chat goes through the GGUF's chat template
        (``create_chat_completion``). ``temperature == 0`` is greedy. ``options.extra`` goes to llama-cpp-python."""
        common: dict[str, Any] = {
            "max_tokens": options.max_new_tokens, "temperature": options.temperature, "seed": options.seed,
            "stop": list(options.stop) or None, **options.extra,
        }
        grammar = json_grammar(options.json_schema) if options.json_schema else None
        out = []
        for prompt in prompts:
            t0 = time.perf_counter()
            try:
                if isinstance(prompt, str):
                    resp = self.llm.create_completion(prompt, grammar=grammar, **common)
                    text = resp["choices"][0]["text"]
                else:
                    resp = self.llm.create_chat_completion(messages=_messages(prompt), grammar=grammar, **common)
                    text = resp["choices"][0]["message"]["content"] or ""
            except (TypeError, ValueError) as e:  # an unknown key in options.extra; a prompt longer than n_ctx
                raise BackendError(f"llamacpp: generation failed: {e}") from e
            usage = resp.get("usage", {})
            out.append(Generation(_cut_at_stop(text, options.stop), time.perf_counter() - t0, {
                "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens"),
                "finish_reason": resp["choices"][0].get("finish_reason"),
            }))
        return out

    # -- what was run ----------------------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        meta = self.llm.metadata
        return {
            "backend": self.name, "model": str(self.path.resolve()), "sha256": sha256_file(self.path),
            "size": self.path.stat().st_size, "architecture": meta.get("general.architecture"),
            "name": meta.get("general.name"), "file_type": _int_or_none(meta.get("general.file_type")),
            "chat_format": self.llm.chat_format, "n_ctx": self.n_ctx, "n_threads": self.llm.n_threads,
            "kv_cache": "f32" if self.kv_f32 else "f16",
            "n_gpu_layers": self.n_gpu_layers, "n_gpu_layers_source": self.n_gpu_layers_source,
            "gpu_offload_supported": self.gpu_offload, "logits_all": self.logits_all,
            "llama_cpp_python": self._version,
        }

    def close(self) -> None:
        """Free the model now (llama-cpp-python otherwise frees it at garbage collection, noisily at exit)."""
        self.llm.close()


# llama-cpp-python's schema converter lets raw control characters into JSON strings, which JSON forbids and strict
# parsers (json.loads) reject; llama.cpp's own converter (llama-server's, Ollama's) excludes them. Use its rule.
_LOOSE_CHAR = r'char ::= [^"\\] |'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def json_grammar(schema: dict[str, Any]) -> Any:
    """A llama.cpp grammar for JSON documents of ``schema``: keys, types, string lengths, enums. Not the minimum /
    maximum of a ``number`` (llama.cpp's converters leave that as a TODO; only integers get bounds), so a value
    out of range still parses and the strict pydantic check is what rejects it."""
    llama_cpp = _import_llama_cpp()
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(schema))
    return llama_cpp.LlamaGrammar.from_string(gbnf.replace(_LOOSE_CHAR, _JSON_CHAR), verbose=False)


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """llama-cpp-python skips its stop check while the text ends in what looks like a cut UTF-8 character, so a
    stop string can slip through on byte-salad output; cut at the first one here too."""
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[: min(cuts)] if cuts else text


def _messages(chat: Chat) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in chat]


def _int_or_none(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


__all__ = ["DEFAULT_N_CTX", "LlamaCppBackend", "json_grammar"]

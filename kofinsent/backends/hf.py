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

The prefix-cached path (default) returns the same numbers faster; see :mod:`.hf_prefix_cache`. Batching (fixed,
or by a token budget) is in :mod:`.hf_batching`, lm-eval's tokenization rules in :mod:`.lmeval_tokens`.
"""
from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import StoppingCriteria

from kofinsent.backends.base import BackendError, Generation, GenOptions, Prompt
from kofinsent.backends.hf_batching import (
    AUTO,
    AUTO_ITEMS_PER_CALL,
    CPU_DEFAULT_BATCH,
    CPU_TOKEN_BUDGETS,
    MAX_TOKEN_BUDGET,
    PROCESS_BUDGETS,
    TokenBudgetBatching,
    budget_cache_file,
)
from kofinsent.backends.hf_loading import bnb_config, drop_cast_warning, looks_local, require_bitsandbytes
from kofinsent.backends.hf_prefix_cache import (
    PREFIX_KV,
    SHARED_PREFIX_ATTENTION,
    PrefixCachedScoring,
    shared_prefix_attention,
)
from kofinsent.backends.lmeval_tokens import (
    adds_special_tokens,
    lm_eval_max_length,
    lm_eval_pair,
    move_whitespace,
    prefix_token_id,
)

DTYPES: dict[str, Any] = {"auto": "auto", "float32": torch.float32, "float16": torch.float16,
                          "bfloat16": torch.bfloat16}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
GENERATE_EXTRA_KEYS = ("top_p", "top_k", "min_p", "repetition_penalty", "no_repeat_ngram_size")

# Names that callers import or patch here: tests patch CPU_TOKEN_BUDGETS and _BUDGETS on this module (HFBackend reads
# both through _budget_tables), and read _PREFIX and _shared_prefix_attention.
_BUDGETS = PROCESS_BUDGETS
_PREFIX = PREFIX_KV
_shared_prefix_attention = shared_prefix_attention


def _sha256_files(files: Sequence[Path], root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with open(f, "rb") as fh:
            hashlib.file_digest(fh, lambda: h)  # one running digest over names and bytes of every file
    return h.hexdigest()


class HFBackend(TokenBudgetBatching, PrefixCachedScoring):
    """transformers ``AutoModelForCausalLM`` + ``AutoTokenizer`` behind the :class:`~kofinsent.backends.Backend`
    protocol.

    ``model``: a local directory or a hub id (a path that does not exist is a :class:`BackendError` naming it).
    ``adapter``: a PEFT adapter directory loaded on top (``PeftModel.from_pretrained``), as FinGPT v3 is used.
    ``load_in_8bit`` / ``load_in_4bit``: bitsandbytes quantization (on CPU the compute dtype defaults to float32).
    ``dtype``: auto | float32 | float16 | bfloat16. ``device`` / ``device_map``: where the model goes (default: cuda
    if available, else cpu). ``batch_size``: rows per forward pass: a request on the plain path (as lm-eval), a
    distinct context with all of its continuations on the cached path, a prompt in generation; or ``"auto"``: rows
    sorted longest first and batched by a token budget (rows x the widest row's tokens), on a GPU the largest that
    fits, found by halving on CUDA out-of-memory (starting at :data:`MAX_TOKEN_BUDGET`) and kept per model shape,
    device and dtype in :func:`budget_cache_file` and in the process; on a CPU the fixed
    :data:`CPU_TOKEN_BUDGETS`. Default (None): "auto" on CUDA, 16 elsewhere. :meth:`batching` says what ran.
    ``max_length``: the model's context
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
                 device_map: str | None = None, batch_size: int | str | None = None,
                 trust_remote_code: bool = False,
                 prefix_cache: bool = True, max_length: int | None = None, revision: str | None = None,
                 verify_tokens: bool = False, attn_implementation: str | None = None) -> None:
        import transformers

        if dtype not in DTYPES:
            raise BackendError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if load_in_8bit and load_in_4bit:
            raise BackendError("choose one of load_in_8bit and load_in_4bit")
        if batch_size is not None and batch_size != AUTO and (
                not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
            raise BackendError(f"batch_size must be an integer >= 1 or \"auto\", got {batch_size!r}")
        model = str(model)
        if looks_local(model) or Path(model).exists():
            path = Path(model).expanduser()
            if not path.is_dir():
                raise BackendError(f"hf: model path {model} does not exist or is not a directory")
            model = str(path)
        self.model_name = model
        self.adapter = str(Path(adapter).expanduser()) if adapter else None
        self.revision = revision
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
        self._init_batching(batch_size)

        # lm-eval's configure_pad_token: pad = pad, else unk, else eos.
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = self.tokenizer.unk_token_id or self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        # lm-eval's HFLM.prefix_token_id and the BOS text its tok_encode checks for.
        self.prefix_token_id = prefix_token_id(self.tokenizer)
        self._bos_text = self.tokenizer.decode([self.prefix_token_id]) if self.prefix_token_id is not None else None
        self.max_length = max_length or lm_eval_max_length(self.model.config, self.tokenizer)
        self.supports_chat = bool(getattr(self.tokenizer, "chat_template", None))
        # logits_to_keep as a boolean mask (transformers >= 5) computes the LM head only where a continuation token
        # is scored; older versions get the full logits and index them.
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        params = inspect.signature(base.forward).parameters
        self._keep_last = "logits_to_keep" in params
        self._keep_masks = self._keep_last and hasattr(transformers.modeling_utils, "slice_logits_to_keep")
        self._base_config = base.config
        self._dtype = base.dtype
        self._init_prefix_cache(base, params)
        self.context_exceeded = 0
        self.plain_requests = 0
        self._identity: dict[str, Any] | None = None

    # -- loading ---------------------------------------------------------------------------------------------------
    def _check_bitsandbytes(self, torch_dtype: Any) -> Any:
        require_bitsandbytes(self.quantization, BackendError, prefix="hf: ")
        # bitsandbytes on CPU is only usable with float32 compute (environment notes: a 1.3B LoRA step did not
        # finish in 9.5 min with the half-precision default, ~11 s with float32).
        if torch_dtype == "auto":
            return torch.float32 if self.device.type == "cpu" else torch.float16
        return torch_dtype

    def _bnb_config(self, torch_dtype: Any) -> Any:
        return bnb_config(self.quantization, torch_dtype)

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

    # -- tokenization (lm-eval's) ------------------------------------------------------------------------------------
    def _special(self, text: str) -> bool:
        return adds_special_tokens(text, self._bos_text)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=self._special(text))

    def _encode_plain(self, texts: list[str]) -> list[list[int]]:
        """Without special tokens, in one batched call (the Rust tokenizer parallelises it)."""
        if not texts:
            return []
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def lm_eval_tokens(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context tokens, continuation tokens) exactly as lm-eval 0.4.x ``HFLM`` makes them for a causal model."""
        return lm_eval_pair(context, continuation, self.encode,
                            lambda text: self.tokenizer.encode(text, add_special_tokens=False), self.prefix_token_id)

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

    def _budget_tables(self) -> tuple[dict[str, int], dict[str, int]]:
        # This module's names, looked up at each use, so that patching hf.CPU_TOKEN_BUDGETS or hf._BUDGETS (the tests
        # do) reaches the backend as it did before batching moved to hf_batching.
        return CPU_TOKEN_BUDGETS, _BUDGETS

    def _check_length(self, n_ctx: int, n_cont: int) -> bool:
        """True when the request must be left-truncated (counted); a continuation alone too long is an error."""
        if n_cont > self.max_length:
            raise BackendError(f"hf: a continuation of {n_cont} tokens exceeds the model's context of "
                               f"{self.max_length} tokens")
        return n_ctx + n_cont > self.max_length + 1

    def _forward(self, keep: torch.Tensor | int | None = None, **inputs: Any) -> torch.Tensor:
        """Logits at ``keep`` (int: the last n positions; 2D bool: the True positions, flattened). The model's own
        ``logits_to_keep`` applies the LM head there only; without it, full logits are sliced."""
        if keep is not None and (self._keep_masks or (isinstance(keep, int) and self._keep_last)):
            return self.model(**inputs, logits_to_keep=keep).logits
        logits = self.model(**inputs).logits
        if isinstance(keep, int):
            logits = logits[:, -keep:]
        elif keep is not None:
            logits = logits[keep]
        return logits

    def _score_tokens(self, pairs: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """The plain path: lm-eval's batching (longest first, right-padded, one row per request, full logits)."""
        out = [0.0] * len(pairs)
        order = sorted((i for i, (_, cont) in enumerate(pairs) if cont), key=lambda i: -sum(map(len, pairs[i])))
        inps: dict[int, list[int]] = {}
        for i in order:
            ctx, cont = pairs[i]
            self.context_exceeded += self._check_length(len(ctx), len(cont))
            inps[i] = (ctx + cont)[-(self.max_length + 1):][:-1]

        def run(batch: Sequence[int]) -> None:
            width = max(len(inps[i]) for i in batch)
            ids = torch.tensor([inps[i] + [self.pad_id] * (width - len(inps[i])) for i in batch], dtype=torch.long)
            # No attention mask, as lm-eval: right padding is invisible to a causal model's real tokens.
            logits = self._forward(input_ids=ids.to(self.device), use_cache=False)
            sums = []
            for r, i in enumerate(batch):
                cont = pairs[i][1]
                n = len(inps[i])
                lp = torch.log_softmax(logits[r, n - len(cont):n].float(), dim=-1)
                sums.append(lp.gather(1, torch.tensor(cont, device=lp.device)[:, None]).sum())
            for i, v in zip(batch, torch.stack(sums).tolist()):
                out[i] = v

        with torch.inference_mode():
            self._run_batches("loglik-plain", order, [len(inps[i]) for i in order], run)
        return out

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
        """Greedy (``temperature == 0``) or sampled (seeded) generation, ``batch_size`` prompts at a time in the order
        given (with "auto": longest first, by the token budget over prompt + ``max_new_tokens``), left-padded; the
        text is cut at the first stop string. ``meta["new_tokens"]``: tokens generated up to and with EOS."""
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

        out: list[Generation | None] = [None] * len(encoded)
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i])) if self.auto else list(range(len(encoded)))

        def run(which: Sequence[int]) -> None:
            batch = [encoded[i] for i in which]
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
            for i, row, stopped_at in zip(which, seqs[:, width:].tolist(), stop.done_at):
                n_new = next((j + 1 for j, t in enumerate(row) if t in eos_ids), len(row))
                n_new = min(n_new, stopped_at or n_new)
                text = self.tokenizer.decode(row[:n_new], skip_special_tokens=True)
                out[i] = Generation(_cut_at_stop(text, options.stop), dt, {"new_tokens": n_new})

        self._run_batches("generate", order, [len(encoded[i]) + options.max_new_tokens for i in order], run)
        return out  # type: ignore[return-value]

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
            except Exception:  # noqa: BLE001 - a broken optional install only loses its version here
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
        except Exception:  # noqa: BLE001 - no hub library, no cache entry: the identity has no weight hashes
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


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[:min(cuts)] if cuts else text


__all__ = ["AUTO", "AUTO_ITEMS_PER_CALL", "CPU_DEFAULT_BATCH", "CPU_TOKEN_BUDGETS", "DTYPES", "GENERATE_EXTRA_KEYS",
           "MAX_TOKEN_BUDGET", "SHARED_PREFIX_ATTENTION", "WEIGHT_SUFFIXES", "HFBackend", "budget_cache_file",
           "drop_cast_warning", "looks_local", "move_whitespace"]

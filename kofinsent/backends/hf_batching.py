"""Batching for the hf backend: a fixed number of rows, or ``batch_size="auto"``: rows by a token budget.

With "auto" a batch holds as many rows as ``rows x the widest row's tokens`` (padding included) allows. On a GPU the
budget is searched: it starts at :data:`MAX_TOKEN_BUDGET`, is halved on every CUDA out-of-memory error, and is kept
per model shape, device and dtype in this process and in :func:`budget_cache_file`. On a CPU, where there is no
out-of-memory error to search with, it is the fixed :data:`CPU_TOKEN_BUDGETS`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from kofinsent.cache import cache_file, read_cache, update_cache

AUTO = "auto"
CPU_DEFAULT_BATCH = 16          # the default on a CPU (no "auto" unless asked for)
MAX_TOKEN_BUDGET = 1 << 20      # the first budget tried on a GPU, halved on every out-of-memory error
# On a CPU there is no out-of-memory error to search with, and past a few hundred tokens a bigger batch only costs
# memory: fixed budgets per kind of pass, measured with benchmarks/eval_bench.py --auto-check on the tiny model.
CPU_TOKEN_BUDGETS = {"loglik-cached": 1024, "loglik-plain": 2048, "generate": 4096}
# How many items the evaluator hands over per call with "auto" (it writes predictions after each call): a GPU fills
# its budget only when a call brings enough rows.
AUTO_ITEMS_PER_CALL = {"cuda": {"loglikelihood": 8192, "generate": 1024},
                       "cpu": {"loglikelihood": 256, "generate": 64}}
PROCESS_BUDGETS: dict[str, int] = {}   # this process's budgets, by TokenBudgetBatching._budget_key

# The backend's messages keep the logger name they had when this code lived in hf.py.
LOG = logging.getLogger("kofinsent.backends.hf")


def budget_cache_file() -> Path:
    """Where token budgets found on GPUs are kept between runs (:mod:`kofinsent.cache`). Delete it to search again."""
    return cache_file("token_budgets.json")


def read_budgets() -> dict[str, Any]:
    return read_cache(budget_cache_file())


def write_budget(key: str, entry: dict[str, Any]) -> None:
    update_cache(budget_cache_file(), key, entry)


class TokenBudgetBatching:
    """The batching half of :class:`~kofinsent.backends.hf.HFBackend` (a mixin: it shares the backend's state).

    The backend provides ``model``, ``model_name``, ``device``, ``quantization``, ``adapter``, ``_dtype`` and
    ``_base_config``, and calls :meth:`_init_batching` once the model is on its device.
    """

    model: Any
    model_name: str
    device: torch.device
    quantization: str | None
    adapter: str | None
    _dtype: torch.dtype
    _base_config: Any

    def _init_batching(self, batch_size: int | str | None) -> None:
        self.batch_size: int | str = batch_size if batch_size is not None else (
            AUTO if self.device.type == "cuda" else CPU_DEFAULT_BATCH)
        self.auto = self.batch_size == AUTO
        self._search_budget = self.device.type == "cuda"  # search (halve on OOM) and cache; else CPU_TOKEN_BUDGETS
        self._budgets: dict[str, tuple[int, str]] = {}  # kind of pass -> (token budget, where it came from)
        self._batch_stats: dict[str, dict[str, int]] = {}  # kind of pass -> batches, rows, padded tokens
        self.oom_halvings = 0  # CUDA out-of-memory errors that halved a budget (cumulative)

    def _budget_tables(self) -> tuple[dict[str, int], dict[str, int]]:
        """(the CPU budgets by kind of pass, this process's budgets by key), looked up at every use."""
        return CPU_TOKEN_BUDGETS, PROCESS_BUDGETS

    def _run_batches(self, kind: str, items: Sequence[Any], widths: Sequence[int],
                     run: Callable[[Sequence[Any]], None]) -> None:
        """``run`` on consecutive slices of ``items`` (in the order given; longest first for "auto"): ``batch_size``
        at a time, or with "auto" as many as the kind's token budget holds (rows x the widest row's tokens, padding
        included). On a CUDA out-of-memory error "auto" halves the budget, remembers it, and runs the slice again."""
        i = 0
        while i < len(items):
            if not self.auto:
                n = int(self.batch_size)
                widest = max(widths[i:i + n])
            else:
                budget = self._budget(kind)
                n, widest = 1, widths[i]
                while i + n < len(items) and (n + 1) * max(widest, widths[i + n]) <= budget:
                    widest = max(widest, widths[i + n])
                    n += 1
            batch = items[i:i + n]
            try:
                run(batch)
                oom = False
            except torch.cuda.OutOfMemoryError:
                if not self.auto or len(batch) == 1:
                    raise
                oom = True  # retried below, once this frame's references to the failed batch's tensors are gone
            if oom:
                self._halve(kind, len(batch) * widest)
                continue
            st = self._batch_stats.setdefault(kind, {"batches": 0, "rows": 0, "tokens": 0})
            st["batches"] += 1
            st["rows"] += len(batch)
            st["tokens"] += len(batch) * widest
            i += len(batch)

    def _budget_key(self, kind: str) -> str:
        """Model shape (not its weights: memory depends on the shape), quantization, dtype, adapter, device, kind."""
        cfg = self._base_config
        shape = {a: getattr(cfg, a, None) for a in (
            "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "intermediate_size", "vocab_size")}
        shape["parameters"] = sum(p.numel() for p in self.model.parameters())
        digest = hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]
        dev = self.device
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
        mem = torch.cuda.get_device_properties(dev).total_memory >> 30 if dev.type == "cuda" else 0
        dtype = str(self._dtype).removeprefix("torch.")
        return (f"{shape['model_type']}-{digest}|{self.quantization or dtype}|adapter={bool(self.adapter)}|"
                f"{name} {mem}GiB|{kind}")

    def _budget(self, kind: str) -> int:
        """The kind's token budget: this backend's, else this process's, else the cache file's, else the start
        (:data:`MAX_TOKEN_BUDGET` on a GPU; :data:`CPU_TOKEN_BUDGETS` on a CPU, where nothing is searched)."""
        if kind not in self._budgets:
            cpu_budgets, process = self._budget_tables()
            if not self._search_budget:
                self._budgets[kind] = (cpu_budgets[kind], "cpu default")
            else:
                key = self._budget_key(kind)
                if key in process:
                    self._budgets[kind] = (process[key], "found in this process")
                else:
                    entry = read_budgets().get(key)
                    tokens = entry.get("tokens") if isinstance(entry, dict) else None
                    if isinstance(tokens, int) and tokens >= 1:
                        self._budgets[kind] = (tokens, f"cache {budget_cache_file()}")
                    else:
                        self._budgets[kind] = (MAX_TOKEN_BUDGET, "start of the search")
                    process[key] = self._budgets[kind][0]
        return self._budgets[kind][0]

    def _halve(self, kind: str, tried: int) -> None:
        """After an out-of-memory error on ``tried`` tokens: half of that (and of the budget), kept in the process and
        in the cache file."""
        tokens = max(1, min(self._budget(kind), tried) // 2)
        self._budgets[kind] = (tokens, "halved on out-of-memory")
        self.oom_halvings += 1
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self._search_budget:
            key = self._budget_key(kind)
            self._budget_tables()[1][key] = tokens
            write_budget(key, {"tokens": tokens, "model": self.model_name, "kind": kind,
                               "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        LOG.info("hf: out of memory at %d tokens; %s token budget now %d", tried, kind, tokens)

    def items_per_call(self, method: str) -> int:
        """How many items the evaluator should pass per call (it writes predictions after each): with a fixed batch,
        256 titles for log-likelihood and one batch for generation (as before "auto"); with "auto", enough to fill
        the budget (:data:`AUTO_ITEMS_PER_CALL`)."""
        if not self.auto:
            return 256 if method == "loglikelihood" else int(self.batch_size)
        table = AUTO_ITEMS_PER_CALL["cuda" if self.device.type == "cuda" else "cpu"]
        return table["loglikelihood" if method == "loglikelihood" else "generate"]

    def batching(self) -> dict[str, Any]:
        """For metrics.json: ``batch_size`` (an int or "auto"); ``token_budget`` and ``rows_per_batch`` (mean) of the
        kind of pass that ran the most rows (the budget with "auto" only); ``rows`` and ``batches`` over all passes;
        and per kind of pass (loglik-cached, loglik-plain, generate) its batches, rows, padded tokens and, with "auto",
        its budget and where that came from."""
        kinds = {k: {**st, "rows_per_batch": st["rows"] / st["batches"],
                     **({"token_budget": self._budgets[k][0], "budget_source": self._budgets[k][1]}
                        if k in self._budgets else {})}
                 for k, st in self._batch_stats.items() if st["batches"]}
        batches = sum(k["batches"] for k in kinds.values())
        rows = sum(k["rows"] for k in kinds.values())
        main = max(kinds, key=lambda k: kinds[k]["rows"]) if kinds else None
        return {"batch_size": self.batch_size,
                "token_budget": kinds[main].get("token_budget") if main and self.auto else None,
                "rows_per_batch": kinds[main]["rows_per_batch"] if main else None,
                "rows": rows, "batches": batches, "oom_halvings": self.oom_halvings, "batching": kinds}

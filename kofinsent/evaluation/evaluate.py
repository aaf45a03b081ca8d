"""The shared evaluator: every model runs on the same test items and is measured the same way.

Modes:
- ``loglikelihood``: the answer is the argmax of the summed log-probs of " [상승]" / " [하락]" after the prompt
  (also length-normalised, by the continuation's UTF-8 bytes as lm-evaluation-harness's acc_norm).
- ``generate``: the seed's way — greedy generation; the first ``[상승]``/``[하락]`` in the output is the answer,
  anything else is *invalid* and counted, never mapped to a class.
- ``sentiment``: the seed 000 JSON sentiment chat, ``iterations`` times per item; strict JSON validity; sentiment > 0
  -> ``[상승]``, < 0 -> ``[하락]``, 0 -> abstain. The item message names the stock when the record has a ``name``
  (as the teacher's training chat); config.json and metrics.json record ``prompt_sha256`` and ``items_named``.

Records are appended to predictions.jsonl batch by batch; metrics.json is written once all are in. ``resume``
continues a run cut off halfway: the units (item x prompt, or item x iteration) already on disk are skipped, and the
metrics are computed over all records in the order a one-shot run writes them, so they come out the same.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import MISSING, asdict, fields
from pathlib import Path
from typing import Any

from kofinsent.backends import Backend, GenOptions, get_backend
from kofinsent.evaluation.options import EvalConfig, EvalConfigError
from kofinsent.labels import LABELS
from kofinsent.prompts.direction import CONTINUATIONS, DirectionPrompt, kshot, seed2shot
from kofinsent.runs import RUN_MARKERS, RunDir, read_appended_jsonl, read_json, read_jsonl, sha256_file


def load_items(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Test records (id, title, label) from a dataset JSONL; a record without them is an error with its line."""
    items = []
    for i, r in enumerate(read_jsonl(path), 1):
        missing = [k for k in ("id", "title", "label") if k not in r]
        if missing:
            raise EvalConfigError(f"{path}:{i}: record lacks {', '.join(missing)}")
        if r["label"] not in LABELS:
            raise EvalConfigError(f"{path}:{i}: label {r['label']!r} is not one of {LABELS}")
        items.append(r)
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise EvalConfigError(f"{path} holds no test items")
    return items


def progress_total(cfg: EvalConfig) -> int:
    """How many progress units :func:`evaluate` reports: items x few-shot seeds, or items x iterations (sentiment);
    with ``resume``, only those not done yet (0 for a complete run)."""
    items = load_items(cfg.data, cfg.limit)
    n = len(items) * (cfg.iterations if cfg.method == "sentiment" else
                      len(cfg.fewshot_seeds) if cfg.prompt == "kshot" else 1)
    if not cfg.resume:
        return n
    previous = _previous_run(cfg, items, truncate=False)
    return 0 if previous is None else n - len(previous)


def make_backend(cfg: EvalConfig) -> Backend:
    """The backend ``cfg`` names, built by :func:`kofinsent.backends.options.backend_kwargs`."""
    return get_backend(cfg.backend, **cfg.backend_kwargs())


def items_per_call(cfg: EvalConfig, backend: Backend | None, method: str) -> int:
    """Items the evaluator passes per backend call (predictions are written after each): 256 titles for
    log-likelihood and ``--batch-size`` prompts for generation; with ``--batch-size auto`` or no ``--batch-size``,
    what the backend asks for (hf: :meth:`~kofinsent.backends.hf.HFBackend.items_per_call`, enough to fill a GPU's
    token budget, and 16 prompts on a CPU by default), else 16: llamacpp, ollama and openai take one prompt at a time,
    so "auto" there is 16."""
    if isinstance(cfg.batch_size, int):
        return 256 if method == "loglikelihood" else cfg.batch_size
    hint = getattr(backend, "items_per_call", None)
    return int(hint(method)) if callable(hint) else 256 if method == "loglikelihood" else 16


def _batch_size(cfg: EvalConfig, backend: Backend | None = None) -> int:
    """Prompts per generate call: :func:`items_per_call`, but never fewer than ``--concurrency`` requests in flight."""
    return max(items_per_call(cfg, backend, "generate"), cfg.concurrency)


def batching(cfg: EvalConfig, backend: Backend) -> dict[str, Any]:
    """metrics.json's batching keys: ``batch_size`` (as run: an int or "auto"), ``token_budget`` (hf with "auto"),
    ``rows_per_batch`` (mean rows per forward pass) and, for hf, ``batches`` and ``batching`` (per kind of pass)."""
    report = getattr(backend, "batching", None)
    if callable(report):
        return dict(report())
    return {"batch_size": cfg.batch_size if isinstance(cfg.batch_size, int) else 16, "token_budget": None,
            "rows_per_batch": None}


def _server_seconds(meta: object) -> float | None:
    """A reply's server time: the backend's ``server_seconds`` (openai), else Ollama's ``total_duration`` (ns)."""
    if not isinstance(meta, dict):
        return None
    seconds, ns = meta.get("server_seconds"), meta.get("total_duration")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        return float(seconds)
    return ns / 1e9 if isinstance(ns, (int, float)) and not isinstance(ns, bool) and ns else None


def _batches(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _generations(backend: Backend, items: Sequence[dict[str, Any]], batch_size: int, prompt: Callable[[Any], Any],
                 options: GenOptions) -> Iterator[tuple[Sequence[Any], list[Any], list[Any], float]]:
    """(items, their prompts, the backend's generations, seconds inside ``generate``) a batch at a time: the
    seconds exclude building prompts and records, so s/sample is the model's time."""
    for part in _batches(items, batch_size):
        prompts = [prompt(it) for it in part]
        t0 = time.perf_counter()
        gens = backend.generate(prompts, options)
        yield part, prompts, gens, time.perf_counter() - t0


def reply_text(text: object) -> str:
    """A backend's reply as str, whatever came: bytes that are not UTF-8 keep each bad byte as a lone surrogate
    (surrogateescape), which the record shows as a "\\udcXX" escape and the strict JSON check rejects."""
    if isinstance(text, str):
        return text
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode("utf-8", "surrogateescape")
    return "" if text is None else str(text)


def first_label(text: str) -> str | None:
    """The first ``[상승]``/``[하락]`` in a generation, or None (invalid)."""
    hits = [(text.find(label), label) for label in LABELS if label in text]
    return min(hits)[1] if hits else None


Progress = Callable[[int], None]
Emit = Callable[[list[dict[str, Any]]], None]  # gets each batch's records as soon as they are scored


def _noop(n: int) -> None:
    return None


def _drop(records: list[dict[str, Any]]) -> None:
    return None


# -- the three modes ---------------------------------------------------------------------------------------------
def score_loglikelihood(backend: Backend, prompt: DirectionPrompt, items: Sequence[dict[str, Any]],
                        progress: Progress = _noop, chunk: int = 256,
                        emit: Emit = _drop) -> tuple[list[dict[str, Any]], float]:
    """Per-item records and the scoring seconds (first tokenization to last score)."""
    if not backend.supports_loglikelihood:
        raise EvalConfigError(f"backend {backend.name!r} cannot score log-likelihoods; use --method generate")
    records: list[dict[str, Any]] = []
    seconds = 0.0
    norms = [len(c.encode("utf-8")) for c in CONTINUATIONS]
    for part in _batches(items, chunk):
        contexts = [prompt.context(it["title"]) for it in part]
        requests = [(ctx, c) for ctx in contexts for c in CONTINUATIONS]
        t0 = time.perf_counter()
        scores = backend.loglikelihood(requests)
        dt = time.perf_counter() - t0
        seconds += dt
        k = len(CONTINUATIONS)
        batch = []
        for j, (it, ctx) in enumerate(zip(part, contexts)):
            ll = scores[j * k:(j + 1) * k]
            ll_norm = [s / b for s, b in zip(ll, norms)]
            batch.append({
                "id": it["id"], "title": it["title"], "gold": it["label"],
                "pred": LABELS[max(range(k), key=lambda i: ll[i])],
                "pred_norm": LABELS[max(range(k), key=lambda i: ll_norm[i])],
                "context": ctx, "continuations": list(CONTINUATIONS), "loglik": ll, "loglik_norm": ll_norm,
                "valid": True, "seconds": dt / len(part),
            })
        emit(batch)
        records += batch
        progress(len(part))
    return records, seconds


def run_generate(backend: Backend, prompt: DirectionPrompt, items: Sequence[dict[str, Any]], options: GenOptions,
                 batch_size: int, progress: Progress = _noop,
                 emit: Emit = _drop) -> tuple[list[dict[str, Any]], float]:
    records: list[dict[str, Any]] = []
    seconds = 0.0
    for part, contexts, gens, spent in _generations(backend, items, batch_size, lambda it: prompt.context(it["title"]),
                                                    options):
        seconds += spent
        batch = []
        for it, ctx, g in zip(part, contexts, gens):
            text = reply_text(g.text)
            pred = first_label(text)
            batch.append({"id": it["id"], "title": it["title"], "gold": it["label"], "pred": pred,
                          "context": ctx, "output": text, "valid": pred is not None, "seconds": g.seconds,
                          "meta": g.meta})
        emit(batch)
        records += batch
        progress(len(part))
    return records, seconds


def run_sentiment(backend: Backend, items: Sequence[dict[str, Any]], options: GenOptions, iterations: int,
                  batch_size: int, progress: Progress = _noop, emit: Emit = _drop,
                  done: Collection[tuple[int, Any]] = ()) -> tuple[list[dict[str, Any]], float]:
    """``done``: (iteration, item id) pairs an earlier invocation scored; they are skipped."""
    from kofinsent.prompts.sentiment import direction, parse_lenient, parse_strict, record_name, sentiment_chat

    records: list[dict[str, Any]] = []
    seconds = 0.0
    for it_no in range(iterations):
        # A different, recorded seed per iteration: the seed 000 study measured variation across repeated runs.
        opts = GenOptions(**{**asdict(options), "seed": options.seed + it_no})
        todo = [it for it in items if (it_no, it["id"]) not in done]
        for part, chats, gens, spent in _generations(
                backend, todo, batch_size, lambda it: sentiment_chat(it["title"], record_name(it)), opts):
            seconds += spent
            batch = []
            for it, chat, g in zip(part, chats, gens):
                text = reply_text(g.text)
                strict, lenient = parse_strict(text), parse_lenient(text)
                server = _server_seconds(g.meta)
                batch.append({
                    "id": it["id"], "title": it["title"], "gold": it["label"], "iteration": it_no,
                    "seed": opts.seed, "context": chat, "raw": text, "valid": strict is not None,
                    "lenient_valid": lenient is not None,
                    "sentiment": strict.sentiment if strict else None,
                    "confidence": strict.confidence if strict else None,
                    "reasoning": strict.reasoning if strict else None,
                    "pred": direction(strict) if strict else None,
                    "seconds": g.seconds,
                    "server_seconds": server,
                    "meta": g.meta,
                })
            emit(batch)
            records += batch
            progress(len(part))
    return records, seconds


# -- the whole evaluation ----------------------------------------------------------------------------------------
def prompts_for(cfg: EvalConfig) -> list[DirectionPrompt]:
    if cfg.prompt == "seed2shot":
        return [seed2shot()]
    train = [(r["title"], r["label"]) for r in load_items(cfg.train)]  # type: ignore[arg-type]
    return [kshot(train, cfg.shots, s, balanced=cfg.balanced_shots) for s in cfg.fewshot_seeds]


# Where and how fast a run is written, not what it computes: a resumed run may differ from its start in these alone.
_NOT_RUN_KEYS = ("out", "overwrite", "resume", "concurrency", "batch_size")
_DEFAULTS = {f.name: f.default for f in fields(EvalConfig) if f.default is not MISSING}


def _run_config(cfg: EvalConfig, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """config.json: the options plus what defines the items and prompts (file hashes, item count)."""
    config = {**asdict(cfg), "n_items": len(items), "data_sha256": sha256_file(cfg.data)}
    if cfg.prompt == "kshot" and cfg.train:
        config["train_sha256"] = sha256_file(cfg.train)
    if cfg.method == "sentiment":
        from kofinsent.prompts.sentiment import prompt_record

        config.update(prompt_record(items))
    return config


def _unit(cfg: EvalConfig, record: dict[str, Any]) -> tuple[Any, ...]:
    """What one record answers: (iteration, item id), or (prompt, few-shot seed, item id)."""
    if cfg.method == "sentiment":
        return (record["iteration"], record["id"])
    return (record["prompt"], record["fewshot_seed"], record["id"])


def _order(cfg: EvalConfig, items: Sequence[dict[str, Any]], prompts: Sequence[DirectionPrompt]) -> dict[Any, int]:
    """Each unit's position in the order a one-shot run writes them."""
    groups = ([(i,) for i in range(cfg.iterations)] if cfg.method == "sentiment"
              else [(p.name, p.seed) for p in prompts])
    return {(*g, it["id"]): n for n, (g, it) in enumerate((g, it) for g in groups for it in items)}


def _previous_run(cfg: EvalConfig, items: Sequence[dict[str, Any]],
                  truncate: bool) -> list[dict[str, Any]] | None:
    """The records an earlier invocation left in ``cfg.out`` ([] when it holds no run), or None when that run is
    complete. Raises EvalConfigError when the run there is not this config's. ``truncate``: cut a torn last line."""
    out = Path(cfg.out)
    there = [m for m in RUN_MARKERS if (out / m).is_file()]
    if not there:
        return []
    if "config.json" not in there:
        raise EvalConfigError(f"--resume: {out} holds {', '.join(there)} but no config.json, so which run it was "
                              "is unknown; pass --overwrite to start over")
    stored, current = read_json(out / "config.json"), _run_config(cfg, items)
    # an option added since that run was started stands there at its default
    stored = {**{k: v for k, v in _DEFAULTS.items() if k in current}, **stored}
    diff = [f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in sorted(set(stored) | set(current))
            if k not in _NOT_RUN_KEYS and stored.get(k) != current.get(k)]
    if diff:
        raise EvalConfigError(f"--resume: {out} holds a run of another config ({'; '.join(diff)}); pass --overwrite "
                              "to replace it or choose another --out")
    if "metrics.json" in there:
        return None
    if "predictions.jsonl" not in there:
        return []
    path = out / "predictions.jsonl"
    try:
        records = read_appended_jsonl(path, truncate=truncate)
    except ValueError as e:
        raise EvalConfigError(f"--resume: {e}") from None
    if not records:
        return []
    ids = [it["id"] for it in items]
    if len(set(ids)) < len(ids):
        dup = next(i for n, i in enumerate(ids) if i in ids[:n])
        raise EvalConfigError(f"--resume: item id {dup!r} appears twice in {cfg.data}; resuming needs unique ids")
    order = _order(cfg, items, prompts_for(cfg) if cfg.method != "sentiment" else [])
    seen: set[Any] = set()
    for n, r in enumerate(records, 1):
        try:
            unit = _unit(cfg, r)
        except KeyError as e:
            raise EvalConfigError(f"--resume: {path}: record {n} lacks {e}") from None
        if unit not in order or unit in seen:
            raise EvalConfigError(f"--resume: {path}: record {n} {unit} is "
                                  f"{'a repeat' if unit in seen else 'not one of this run'}")
        seen.add(unit)
    return records


def evaluate(cfg: EvalConfig, backend: Backend | None = None, progress: Progress = _noop,
             started: float | None = None) -> dict[str, Any]:
    """Run the evaluation described by ``cfg`` and write ``cfg.out``: config.json, environment.json,
    predictions.jsonl (appended batch by batch) and metrics.json. Returns the metrics. ``started``: the
    ``perf_counter`` time the command began, so that ``wall_s`` covers the whole command (imports and model load
    included).

    ``cfg.resume``: go on from the records in ``cfg.out`` if its config.json matches (else EvalConfigError naming
    the keys); an empty or absent ``cfg.out`` is a fresh run; a complete one (metrics.json there) returns its
    metrics and reruns nothing. The first invocation's config.json and environment.json are kept."""
    from kofinsent.evaluation import metrics as M
    from kofinsent.evaluation.clusters import Bootstrap

    t_start = time.perf_counter() if started is None else started
    cfg.validate()
    items = load_items(cfg.data, cfg.limit)
    prompts = prompts_for(cfg) if cfg.method != "sentiment" else []
    # refuses another run's directory before the model loads
    run = RunDir(cfg.out, overwrite=cfg.overwrite, resume=cfg.resume)
    previous = _previous_run(cfg, items, truncate=True) if cfg.resume else []
    if previous is None:
        return read_json(run.path / "metrics.json")
    done = {_unit(cfg, r) for r in previous}
    backend = backend or make_backend(cfg)  # an unreachable server or a bad path fails here, before any item
    seeds = {"seed": cfg.seed, "fewshot_seeds": cfg.fewshot_seeds if cfg.prompt == "kshot" else None}
    if not (run.path / "config.json").is_file():
        run.write_config(_run_config(cfg, items), seeds)

    new: list[dict[str, Any]] = []
    scoring_s = 0.0
    for prompt in prompts:
        todo = [it for it in items if (prompt.name, prompt.seed, it["id"]) not in done]
        if not todo:
            continue

        def emit(batch: list[dict[str, Any]], prompt: DirectionPrompt = prompt) -> None:
            for r in batch:
                r["prompt"], r["fewshot_seed"] = prompt.name, prompt.seed
            run.append_predictions(batch)

        if cfg.method == "loglikelihood":
            recs, secs = score_loglikelihood(backend, prompt, todo, progress,
                                             chunk=items_per_call(cfg, backend, "loglikelihood"), emit=emit)
        else:
            opts = GenOptions(max_new_tokens=cfg.max_new_tokens or 8, temperature=cfg.temperature or 0.0,
                              seed=cfg.seed)
            recs, secs = run_generate(backend, prompt, todo, opts, _batch_size(cfg, backend), progress, emit=emit)
        new += recs
        scoring_s += secs
    if cfg.method == "sentiment":
        from kofinsent.prompts.sentiment import json_schema

        temperature = 0.2 if cfg.temperature is None else cfg.temperature
        opts = GenOptions(max_new_tokens=cfg.max_new_tokens or 1024, temperature=temperature, seed=cfg.seed,
                          json_schema=json_schema() if cfg.format == "schema" else None)
        new, scoring_s = run_sentiment(backend, items, opts, cfg.iterations, _batch_size(cfg, backend), progress,
                                       emit=run.append_predictions, done=done)

    records = previous + new
    if previous:  # metrics over the one-shot order, and the file in it too (it already is unless units were skipped)
        order = _order(cfg, items, prompts)
        positions = [order[_unit(cfg, r)] for r in records]
        if positions != sorted(positions):
            records.sort(key=lambda r: order[_unit(cfg, r)])
            run.write_predictions(records)
    boot = Bootstrap(seed=cfg.seed)  # cluster intervals when an item has several predictions
    if cfg.method == "sentiment":
        from kofinsent.prompts.sentiment import prompt_record

        result = {**M.sentiment_metrics(records, boot), **prompt_record(items)}
    else:
        gold, ids = [r["gold"] for r in records], [r["id"] for r in records]
        result = M.classification_metrics(gold, [r["pred"] for r in records], ids=ids, boot=boot)
        if cfg.method == "loglikelihood":
            norm = M.classification_metrics(gold, [r["pred_norm"] for r in records], ids=ids, boot=boot)
            result.update({"accuracy_norm": norm["accuracy"], "accuracy_norm_ci95": norm["accuracy_ci95"],
                           "macro_f1_norm": norm["macro_f1"], "mcc_norm": norm["mcc"]})
        if len(prompts) > 1:
            per_prompt = {}
            for p in prompts:
                recs = [r for r in records if (r["prompt"], r["fewshot_seed"]) == (p.name, p.seed)]
                per_prompt[p.name + (f"/seed{p.seed}" if p.seed is not None else "")] = \
                    M.classification_metrics([r["gold"] for r in recs], [r["pred"] for r in recs])
            result["per_prompt"] = per_prompt
            result["fewshot_accuracy"] = M.seed_summary([m["accuracy"] for m in per_prompt.values()])
    result.update({
        "method": cfg.method, "prompt": cfg.prompt, "shots": cfg.shots if cfg.prompt == "kshot" else None,
        "n_items": len(items), "n_scored": len(records),
        "n_resumed": len(previous),  # records an earlier, interrupted invocation wrote
        # The speed figures cover this invocation's scoring only: an earlier invocation's seconds are not kept.
        "items_per_s": len(new) / scoring_s if scoring_s > 0 else None,
        "scoring_s": scoring_s, "wall_s": time.perf_counter() - t_start,
        "context_exceeded": getattr(backend, "context_exceeded", None),
        "backend": backend.identity(), "seeds": seeds,
    })
    result.update(batching(cfg, backend))
    run.write_metrics(result)
    return result

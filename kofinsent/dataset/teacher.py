"""Teacher labelling, seed 000's data step: a large model writes the ``{reasoning, sentiment, confidence}`` replies
that a small model is then fine-tuned on.

For each record of ``--data`` (a dataset JSONL: ``id``, ``title``, and ``name``, the stock, when known) the teacher
gets the evaluator's sentiment chat (:func:`kofinsent.prompts.sentiment.sentiment_chat`: system prompt, the five
worked examples, and the item message naming the stock) with seed 000's decoding (temperature 0.2, up to 1024 new
tokens) and, with ``--format schema`` (the default), the reply's JSON schema. Each raw reply is checked with the
evaluator's strict rules (:func:`~kofinsent.prompts.sentiment.check_strict`: the reply exactly as sent must be one
JSON object of the schema). An invalid reply is asked again with the next seed (attempt k sends ``--seed`` + k - 1)
up to ``--max-attempts`` times; then the record is dropped, with the last reason. An HTTP 429 / 5xx is retried by
the backend (openai: honouring ``Retry-After``) and is not an attempt.

Files in ``--out`` (the command owns these names there and touches no other file):

- ``teacher_config.json``: the arguments that define the labels (written once, at the start);
- ``teacher.jsonl``: one line per input record, in input order: ``id``, ``status`` (``accepted`` / ``dropped``),
  ``attempts``; accepted: ``reasoning``, ``sentiment``, ``confidence``, ``raw`` (the reply exactly as sent) and
  ``seed``; dropped: ``reason`` (its kind first: ``empty``, ``not_utf8``, ``not_json``, ``not_object``,
  ``schema``); both: ``rejected`` (each invalid attempt's seed, reason and raw reply) and the token counts;
- ``sharegpt.jsonl``: one ``{"conversations": [...]}`` per accepted record (the ShareGPT shape of
  :mod:`kofinsent.dataset.sharegpt`): :func:`~kofinsent.prompts.sentiment.training_chat`, i.e. exactly the chat the
  teacher was asked and the evaluator sends (system prompt, the five worked examples, the item message naming the
  stock), then the raw reply as the last gpt turn;
- ``datasheet.json`` (integer counts: accepted, accepted after a retry, dropped by reason, tokens, direction vs the
  price label; the config; the files' sha256) and a short ``datasheet.md``.

Resumable: ``teacher.jsonl`` (then ``sharegpt.jsonl``) is appended batch by batch. The same command again skips the
records already there, without a request for them (none at all, the server check included, when all are done); the
files then come out byte-identical to a run that was never interrupted. A run of other arguments in the same
``--out`` is refused naming the keys (``--overwrite`` starts over, deleting only the files above);
``--concurrency``, ``--host`` (where the model is served, not which model: an experiment's loopback stand-in gets a
new port each time) and the spelling of ``--data`` (its sha256 counts) may change between invocations.

``synthetic``: the teacher is kofinsent's stand-in (:mod:`kofinsent.dataset.teacher_standin`, also recognised by its
model name): the datasheet says SYNTHETIC, and so does every report that cites it.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from kofinsent.backends import REGISTRY, Backend, GenOptions, get_backend
from kofinsent.backends.options import BackendOptionError, backend_kwargs, int_problem, temperature_problem
from kofinsent.dataset.errors import DatasetConfigError, EmptyDatasetError
from kofinsent.dataset.files import atomic_write_text
from kofinsent.dataset.sharegpt import chat_line
from kofinsent.dataset.teacher_standin import STANDIN_MODEL
from kofinsent.paths import refuse_output_over_input, remove_file
from kofinsent.prompts.sentiment import (
    check_strict,
    direction,
    json_schema,
    prompt_sha256,
    record_name,
    sentiment_chat,
    training_chat,
)
from kofinsent.runs import dumps, read_appended_jsonl, read_json, read_jsonl, sha256_file

CONFIG_FILE = "teacher_config.json"
TEACHER_FILE = "teacher.jsonl"
SHAREGPT_FILE = "sharegpt.jsonl"
DATASHEET_JSON = "datasheet.json"
DATASHEET_MD = "datasheet.md"
OWN_FILES = (CONFIG_FILE, TEACHER_FILE, SHAREGPT_FILE, DATASHEET_JSON, DATASHEET_MD)
KIND = "kofinsent dataset teacher"
# How the labels are fetched, not what they are: these may differ between the invocations of one run.
NOT_RUN_KEYS = ("data", "concurrency", "host")
FORMATS = ("schema", "free")
REASON_KINDS = ("empty", "not_utf8", "not_json", "not_object", "schema")
OPENAI_CONCURRENCY = 4  # requests in flight by default on an OpenAI-compatible server
MIN_PER_CALL = 16       # records per backend call (and per append), at least the requests in flight


class TeacherError(DatasetConfigError):
    """An argument, an input or an output directory the teacher cannot use (the message says which)."""


@dataclass
class TeacherConfig:
    backend: str
    model: str
    data: str
    out: str
    host: str | None = None
    max_attempts: int = 3
    concurrency: int | None = None  # openai: requests in flight (default 4); the other backends take one at a time
    seed: int = 0                   # attempt k sends seed + k - 1
    format: str = "schema"          # schema: the reply's JSON schema constrains decoding; free: nothing does
    temperature: float = 0.2        # seed 000's
    max_new_tokens: int = 1024      # seed 000's num_predict
    n_gpu_layers: int | None = None  # llamacpp only (see kofinsent.backends.llamacpp)
    n_ctx: int | None = None         # llamacpp only
    overwrite: bool = False
    synthetic: bool = False          # kofinsent's stand-in teacher (set by the experiment runner): not a model's labels

    @property
    def is_synthetic(self) -> bool:
        return self.synthetic or self.model == STANDIN_MODEL

    @property
    def in_flight(self) -> int:
        if self.concurrency is not None:
            return self.concurrency
        return OPENAI_CONCURRENCY if self.backend == "openai" else 1

    def backend_kwargs(self) -> dict[str, Any]:
        try:
            return backend_kwargs(self.backend, self.model, host=self.host, seed=self.seed, format=self.format,
                                  concurrency=self.in_flight, n_gpu_layers=self.n_gpu_layers, n_ctx=self.n_ctx,
                                  scoring=False)
        except BackendOptionError as e:
            raise TeacherError(str(e)) from None

    def validate(self, check_files: bool = True) -> None:
        """Raise on an option that cannot work; ``check_files=False`` checks the options alone (config loading)."""
        if self.backend not in REGISTRY:
            raise TeacherError(f"--backend must be one of {', '.join(REGISTRY)}, got {self.backend!r}")
        if self.format not in FORMATS:
            raise TeacherError(f"--format must be schema or free, got {self.format!r}")
        if self.backend == "hf" and self.format == "schema":
            raise TeacherError("--backend hf cannot constrain decoding to the reply's JSON schema: pass --format free")
        if problem := (int_problem("--max-attempts", self.max_attempts, 1)
                       or int_problem("--max-new-tokens", self.max_new_tokens, 1)
                       or (self.concurrency is not None and int_problem("--concurrency", self.concurrency, 1))
                       or temperature_problem(self.temperature)):
            raise TeacherError(problem)
        self.backend_kwargs()
        if check_files and not Path(self.data).is_file():
            raise TeacherError(f"--data {self.data}: no such file; pass a train.jsonl written by `kofinsent dataset "
                               "build`")


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """The dataset's records (``id`` and ``title`` required, ``name`` and ``label`` used when there); ids unique."""
    items: list[dict[str, Any]] = []
    seen: set[Any] = set()
    try:
        for i, r in enumerate(read_jsonl(path), 1):
            if not isinstance(r, dict) or not isinstance(r.get("title"), str) or r.get("id") is None:
                raise TeacherError(f"{path}:{i}: not a dataset record (needs `id` and a string `title`)")
            if r["id"] in seen:
                raise TeacherError(f"{path}:{i}: id {r['id']!r} appears twice; the teacher needs unique ids")
            seen.add(r["id"])
            items.append(r)
    except ValueError as e:
        raise TeacherError(str(e)) from None
    if not items:
        raise EmptyDatasetError(f"{path} holds no records; nothing to label")
    return items


def run_config(cfg: TeacherConfig, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """teacher_config.json: what defines the labels (options, input digest, prompt digest)."""
    options = {k: v for k, v in asdict(cfg).items() if k not in ("out", "overwrite")}
    return {"kind": KIND, **options, "synthetic": cfg.is_synthetic, "data_sha256": sha256_file(cfg.data),
            "n_records": len(items), "prompt_sha256": prompt_sha256()}


# options added since the first teacher runs: a stored config without them ran at these values
_DEFAULTS = {f.name: f.default for f in fields(TeacherConfig) if f.default is not MISSING}


def config_diff(stored: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for each key that defines the labels and differs between two teacher_config.json."""
    stored = {**{k: v for k, v in _DEFAULTS.items() if k in config}, **stored}
    return [f"{k}: {stored.get(k)!r} -> {config.get(k)!r}" for k in sorted(set(stored) | set(config))
            if k not in NOT_RUN_KEYS and stored.get(k) != config.get(k)]


def previous_run_differs(cfg: TeacherConfig) -> list[str]:
    """What :func:`run_teacher` would refuse ``cfg.out`` for (the differing keys of the teacher run there); [] when
    it holds this run or none. The experiment runner clears such a directory instead of failing."""
    path = Path(cfg.out) / CONFIG_FILE
    if not path.is_file() or not Path(cfg.data).is_file():
        return []
    try:
        stored = read_json(path)
        config = run_config(cfg, load_records(cfg.data))
    except (OSError, ValueError):
        return ["teacher_config.json: unreadable"]
    return config_diff(stored, config) if isinstance(stored, dict) else ["teacher_config.json: not an object"]


def _inspect(cfg: TeacherConfig, config: dict[str, Any],
             items: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]] | None, list[str]]:
    """What ``--out`` holds, writing nothing there (but a torn last line): ``(records, [])`` when it holds this run
    (the records an earlier invocation wrote, in input order), ``(None, files)`` when it holds nothing of this command
    or, with ``--overwrite``, these files of its own to delete. Raises on anything else."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise TeacherError(f"--out {out} is a file; pass a directory")
    present = [f for f in OWN_FILES if (out / f).exists() or (out / f).is_symlink()]
    if present and CONFIG_FILE not in present:
        raise TeacherError(f"--out {out} holds {', '.join(present)} but no {CONFIG_FILE}: files this command did not "
                           "write; choose another --out")
    if CONFIG_FILE in present:
        try:
            stored = read_json(out / CONFIG_FILE)
        except (OSError, ValueError):
            stored = None
        if not isinstance(stored, dict) or stored.get("kind") != KIND:
            raise TeacherError(f"--out {out}: {CONFIG_FILE} there was not written by this command; choose another "
                               "--out")
        if cfg.overwrite:
            return None, present
        diff = config_diff(stored, config)
        if diff:
            raise TeacherError(f"--out {out} holds a teacher run of other arguments ({'; '.join(diff)}); pass "
                               "--overwrite to start over or choose another --out")
        return _done(out, items), []
    return None, []


_RECORD_KEYS = frozenset({"attempts", "rejected", "prompt_tokens", "completion_tokens", "replies_without_token_counts"})


def _done(out: Path, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    path = out / TEACHER_FILE
    if not path.is_file():
        return []
    try:
        records = read_appended_jsonl(path, truncate=True)  # a torn last line: the kill came mid-write
    except ValueError as e:
        raise TeacherError(f"{e}; pass --overwrite to start over") from None
    if len(records) > len(items):
        raise TeacherError(f"{path} holds {len(records)} records, --data only {len(items)}")
    for n, (r, it) in enumerate(zip(records, items), 1):
        if r.get("id") != it["id"] or r.get("status") not in ("accepted", "dropped") or not _RECORD_KEYS <= set(r) or (
                check_strict(r.get("raw", ""))[0] is None if r["status"] == "accepted" else "reason" not in r):
            raise TeacherError(f"{path}:{n}: not the teacher record of --data's record {n} (id {it['id']!r}); pass "
                               "--overwrite to start over")
    return records


def _tokens(meta: dict[str, Any]) -> tuple[int | None, int | None]:
    """(prompt, completion) tokens of one reply, whatever the backend calls them (openai / llamacpp, Ollama, hf)."""
    def first(*keys: str) -> int | None:
        for k in keys:
            v = meta.get(k)
            if isinstance(v, int) and not isinstance(v, bool):
                return v
        return None

    return first("prompt_tokens", "prompt_eval_count"), first("completion_tokens", "eval_count", "new_tokens")


def _text(raw: object) -> str:
    """A reply as str; bytes that are not UTF-8 keep their bad bytes as lone surrogates (the strict check's
    ``not_utf8``), which :func:`kofinsent.runs.dumps` writes as escapes."""
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw).decode("utf-8", "surrogateescape")
    return raw if isinstance(raw, str) else ""


def label_batch(backend: Backend, cfg: TeacherConfig, items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One teacher record per item (input order): attempt 1 for all, then the invalid ones again with the next seed,
    up to ``cfg.max_attempts``."""
    chats = [sentiment_chat(it["title"], record_name(it)) for it in items]
    state = [{"id": it["id"], "status": "dropped", "attempts": 0, "rejected": [], "prompt_tokens": 0,
              "completion_tokens": 0, "replies_without_token_counts": 0} for it in items]
    pending = list(range(len(items)))
    for attempt in range(1, cfg.max_attempts + 1):
        if not pending:
            break
        seed = cfg.seed + attempt - 1
        opts = GenOptions(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=seed,
                          json_schema=json_schema() if cfg.format == "schema" else None)
        gens = backend.generate([chats[i] for i in pending], opts)
        still = []
        for i, g in zip(pending, gens):
            rec, text = state[i], _text(g.text)
            rec["attempts"] = attempt
            prompt, completion = _tokens(g.meta or {})
            rec["prompt_tokens"] += prompt or 0
            rec["completion_tokens"] += completion or 0
            rec["replies_without_token_counts"] += prompt is None or completion is None
            reply, reason = check_strict(text)
            if reply is None:
                rec["rejected"].append({"attempt": attempt, "seed": seed, "reason": reason, "raw": text,
                                        "finish_reason": (g.meta or {}).get("finish_reason")})
                rec["reason"] = reason
                still.append(i)
            else:
                rec.pop("reason", None)
                rec.update(status="accepted", reasoning=reply.reasoning, sentiment=reply.sentiment,
                           confidence=reply.confidence, raw=text, seed=seed)
        pending = still
    order = ("id", "status", "attempts", "reasoning", "sentiment", "confidence", "raw", "seed", "reason", "rejected",
             "prompt_tokens", "completion_tokens", "replies_without_token_counts")
    return [{k: rec[k] for k in order if k in rec} for rec in state]


def sharegpt_text(records: Sequence[dict[str, Any]], items_by_id: dict[Any, dict[str, Any]]) -> str:
    """sharegpt.jsonl's lines for ``records``: the evaluator's chat for the record, message for message, then the
    accepted raw reply as it came (:func:`~kofinsent.prompts.sentiment.training_chat`)."""
    lines = []
    for r in records:
        if r["status"] == "accepted":
            it = items_by_id[r["id"]]
            lines.append(chat_line(training_chat(it["title"], record_name(it), r["raw"])) + "\n")
    return "".join(lines)


def _write_if_changed(path: Path, text: str) -> None:
    """Leave a file that already holds ``text`` alone (a complete rerun changes nothing, not even a time stamp)."""
    try:
        if path.is_file() and path.read_bytes() == text.encode("utf-8"):
            return
    except OSError:
        pass
    atomic_write_text(path, text)


def _append(path: Path, text: str) -> None:
    if text:
        with open(path, "a", encoding="utf-8", newline="\n") as f:
            f.write(text)


def datasheet(config: dict[str, Any], items: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]],
              out: Path) -> dict[str, Any]:
    """Integer counts over ``records``, the run's config and the files' digests."""
    accepted = [r for r in records if r["status"] == "accepted"]
    dropped = [r for r in records if r["status"] == "dropped"]
    by_attempt = Counter(r["attempts"] for r in accepted)
    labels = {it["id"]: it.get("label") for it in items}
    agreement: Counter[str] = Counter({"agree": 0, "disagree": 0, "neutral": 0, "no_label": 0})
    for r in accepted:
        pred, gold = direction(check_strict(r["raw"])[0]), labels.get(r["id"])
        agreement["no_label" if gold is None else "neutral" if pred is None else
                  "agree" if pred == gold else "disagree"] += 1
    prompt = sum(r["prompt_tokens"] for r in records)
    completion = sum(r["completion_tokens"] for r in records)
    return {
        "kind": KIND,
        "synthetic": bool(config.get("synthetic")),
        "counts": {
            "records": len(items), "labelled": len(records), "accepted": len(accepted),
            "accepted_first_attempt": by_attempt.get(1, 0),
            "accepted_after_retry": len(accepted) - by_attempt.get(1, 0), "dropped": len(dropped),
            "accepted_by_attempt": {str(k): by_attempt.get(k, 0) for k in range(1, config["max_attempts"] + 1)},
            "dropped_by_reason": _kinds(r["reason"] for r in dropped),
            "invalid_replies_by_reason": _kinds(x["reason"] for r in records for x in r["rejected"]),
            "replies": sum(r["attempts"] for r in records),
            "direction_vs_label": dict(agreement),
        },
        "tokens": {"prompt": prompt, "completion": completion, "total": prompt + completion,
                   "replies_without_token_counts": sum(r["replies_without_token_counts"] for r in records)},
        "config": config,
        "files": {name: sha256_file(out / name) for name in (TEACHER_FILE, SHAREGPT_FILE) if (out / name).is_file()},
    }


def _kinds(reasons: Any) -> dict[str, int]:
    counts = Counter(str(r).split(":", 1)[0] for r in reasons)
    return {k: counts.get(k, 0) for k in REASON_KINDS} | {k: v for k, v in sorted(counts.items())
                                                           if k not in REASON_KINDS}


def datasheet_md(sheet: dict[str, Any]) -> str:
    c, t, cfg = sheet["counts"], sheet["tokens"], sheet["config"]
    rows = [("records in --data", c["records"]), ("labelled", c["labelled"]), ("accepted", c["accepted"]),
            ("accepted at the first attempt", c["accepted_first_attempt"]),
            ("accepted after a retry", c["accepted_after_retry"]), ("dropped", c["dropped"]),
            ("replies (attempts)", c["replies"]), ("prompt tokens", t["prompt"]),
            ("completion tokens", t["completion"])]
    lines = ["# Teacher labels", ""]
    if sheet.get("synthetic"):
        lines += [("**SYNTHETIC**: these replies come from kofinsent's deterministic stand-in server, not from a "
                   "language model. They show that the pipeline runs; they are no one's judgement of a title."), ""]
    lines += [f"Teacher `{cfg['model']}` through the `{cfg['backend']}` backend"
              + (f" at {cfg['host']}" if cfg.get("host") else "")
              + f"; format {cfg['format']}, temperature {cfg['temperature']}, up to {cfg['max_attempts']} attempts "
                f"(seeds {cfg['seed']}..{cfg['seed'] + cfg['max_attempts'] - 1}). Replies are valid only when the "
                "raw text is one JSON object of the schema (the evaluator's strict rule).", "",
              "| | count |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "Dropped by reason: " + (", ".join(f"{k} {v}" for k, v in c["dropped_by_reason"].items() if v)
                                          or "none") + ".",
              "Accepted direction vs the price label: " + ", ".join(f"{k} {v}" for k, v in
                                                                   c["direction_vs_label"].items()) + ".",
              "", f"Data sha256 `{cfg['data_sha256']}`; files: "
              + ", ".join(f"{k} `{v[:12]}`" for k, v in sheet["files"].items()) + ".", ""]
    return "\n".join(lines)


def make_backend(cfg: TeacherConfig) -> Backend:
    backend = get_backend(cfg.backend, **cfg.backend_kwargs())
    if not getattr(backend, "supports_chat", False):
        _close(backend)
        raise TeacherError(f"--backend {cfg.backend} --model {cfg.model}: the model has no chat template, so the "
                           "teacher's chat (system prompt, worked examples, item) cannot be rendered; use a chat / "
                           "instruct model")
    return backend


def _close(backend: object) -> None:
    close = getattr(backend, "close", None)
    if callable(close):
        close()


def run_teacher(cfg: TeacherConfig, backend: Backend | None = None, progress: bool = True,
                on_batch: Callable[[int], None] | None = None) -> tuple[dict[str, Any], int]:
    """Label ``cfg.data`` into ``cfg.out`` (see the module docstring); returns the datasheet and how many records
    this invocation labelled. ``backend``: use this one (tests) instead of building it from ``cfg``."""
    cfg.validate()
    out = Path(cfg.out)
    refuse_output_over_input(out, {"--data": cfg.data}, directory=True)
    items = load_records(cfg.data)
    config = run_config(cfg, items)
    done, stale = _inspect(cfg, config, items)
    todo = items[len(done or []):]
    own = bool(todo) and backend is None
    if own:  # loaded (an unreachable server, a bad path refused) before anything is written to --out
        backend = make_backend(cfg)
    try:
        if done is None:  # a fresh run: --overwrite deletes this command's own files, and only inside --out
            for f in stale:
                remove_file(out / f, out)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / CONFIG_FILE, dumps(config, indent=2) + "\n")
        config = read_json(out / CONFIG_FILE)  # the first invocation's, as stored
        by_id = {it["id"]: it for it in items}
        _write_if_changed(out / SHAREGPT_FILE, sharegpt_text(done or [], by_id))  # catch up after a kill
        records = list(done or [])
        if todo:
            from tqdm.auto import tqdm

            per_call = max(MIN_PER_CALL, cfg.in_flight)
            with tqdm(total=len(todo), desc=f"teacher {cfg.backend}:{Path(cfg.model).name}", unit="record",
                      disable=not progress or None, dynamic_ncols=True) as bar:  # None: off when not a tty
                for start in range(0, len(todo), per_call):
                    batch = label_batch(backend, cfg, todo[start:start + per_call])  # type: ignore[arg-type]
                    _append(out / TEACHER_FILE, "".join(dumps(r, lenient=True) + "\n" for r in batch))
                    _append(out / SHAREGPT_FILE, sharegpt_text(batch, by_id))
                    records += batch
                    bar.update(len(batch))
                    if on_batch is not None:
                        on_batch(len(batch))
    finally:
        if own:
            _close(backend)
    sheet = datasheet(config, items, records, out)
    _write_if_changed(out / DATASHEET_JSON, dumps(sheet, indent=2) + "\n")
    _write_if_changed(out / DATASHEET_MD, datasheet_md(sheet))
    return sheet, len(records) - len(done or [])


__all__ = ["OWN_FILES", "TeacherConfig", "TeacherError", "datasheet", "label_batch", "load_records", "run_teacher"]

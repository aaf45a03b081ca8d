"""``kofinsent run``: one experiment config -> one run directory, step by step, resumable.

``runs/<experiment>/<UTC timestamp>-<git short sha>/`` holds config.toml (resolved, overrides applied),
environment.json, run.json (which steps are done, with what), log.txt, and each step's outputs::

    crawl/summary.json (+ forum.sqlite unless crawl.db points elsewhere)   dataset/   teacher/   models/NAME/
    train/NAME/   export/NAME/   eval/NAME/   baselines/NAME/   compare/A__B.json

The teacher step (:mod:`kofinsent.experiment.teacher`) resumes from its own records instead of being cleared.

``train.NAME.seeds = [0, 1, 2]`` trains one run per seed into train/NAME/seed<k>/ (one step each, so a rerun skips
the finished seeds); evals of such a table run once per seed (eval/NAME-seed<k>/), see
:meth:`kofinsent.experiment.config.ExperimentConfig.eval_runs`.

A step is marked done in run.json only after its outputs are written, so a run killed anywhere and started again
with the same command (same config and overrides) continues in the same directory: done steps are skipped, the
step that was cut off is redone from scratch (the crawl resumes from its own cursor). Another config, or ``--new``,
starts a new directory.

A step's directory is cleared before the step runs, through :func:`kofinsent.paths.remove_tree` with the run
directory as root: nothing outside the run is ever deleted, whatever a name or a symlink says. Only directories named
like a run id, holding a run.json written by this module, are resumed.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kofinsent.experiment.config import REF, ExperimentConfig, dump_toml
from kofinsent.paths import is_safe_name, remove_tree, require_inside
from kofinsent.runs import environment, git_state, read_json, sha256_file, write_json

Log = Callable[[str], None]


class ExperimentError(Exception):
    """A step cannot run (missing input, a run directory that is not ours, a failed step); names what and why."""


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    sha = git_state(Path(__file__).resolve().parent).get("short") or "nogit"
    return f"{now:%Y%m%dT%H%M%SZ}-{sha}"


def find_resumable(root: Path, config_sha: str) -> Path | None:
    """The newest run under ``root`` made from the same resolved config. Directories not named like a run id are
    not runs (``.cache``, ``a b``, ``-x``): the runner would clear step directories inside them."""
    for d in sorted((p for p in root.glob("*/run.json") if is_safe_name(p.parent.name)), reverse=True):
        try:
            if read_json(d).get("config_sha256") == config_sha:
                return d.parent
        except (OSError, ValueError, AttributeError):  # AttributeError: run.json is JSON but not an object
            continue
    return None


def _check_resumable(run_dir: Path) -> None:
    """``--resume DIR``: DIR is named like a run id and holds a run.json this module wrote (its id is DIR's name),
    so that the runner never clears step directories in somebody else's folder."""
    if not (run_dir / "run.json").is_file():
        raise ExperimentError(f"--resume {run_dir}: not a run directory (no run.json)")
    name = run_dir.resolve().name
    if not is_safe_name(name):
        raise ExperimentError(f"--resume {run_dir}: {name!r} is not a run id (a run id matches "
                              "^[A-Za-z0-9][A-Za-z0-9_.-]*$ without '..')")
    try:
        state = read_json(run_dir / "run.json")
    except (OSError, ValueError):
        state = None
    if not (isinstance(state, dict) and isinstance(state.get("config_sha256"), str)
            and isinstance(state.get("steps"), dict) and state.get("id") == name):
        raise ExperimentError(f"--resume {run_dir}: {run_dir / 'run.json'} is not a kofinsent run's (it needs "
                              f"config_sha256, steps and id = {name!r}); nothing was changed")


@dataclass
class StepResult:
    name: str
    skipped: bool
    seconds: float
    info: dict[str, Any]


class Experiment:
    """Runs the steps of ``cfg`` in ``run_dir``. ``log`` gets one line per event (also appended to log.txt)."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path, log: Log | None = None,
                 progress: bool = True) -> None:
        self.cfg = cfg
        self.dir = Path(run_dir)
        self.progress = progress
        self._echo = log or (lambda s: print(s, flush=True))
        self.state_path = self.dir / "run.json"

    # -- bookkeeping --------------------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        self._echo(msg)
        with open(self.dir / "log.txt", "a", encoding="utf-8") as f:
            f.write(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} {msg}\n")

    def _state(self) -> dict[str, Any]:
        return read_json(self.state_path)

    def _open(self) -> bool:
        """Create the run directory, or check that it is this config's. Returns True when resuming."""
        sha = self.cfg.sha256()
        if self.state_path.is_file():
            state = self._state()
            if state.get("config_sha256") != sha:
                raise ExperimentError(f"{self.dir} holds a run of another config (sha256 {state.get('config_sha256')}"
                                      f" vs {sha}); start a new run instead")
            return True
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.cfg.experiment.synthetic:
            (self.dir / "SYNTHETIC_DATA.txt").write_text(
                "Every post, price and result in this run comes from kofinsent's synthetic replay forum, not from "
                "Naver. The numbers show that the pipeline runs; they say nothing about real stocks.\n",
                encoding="utf-8")
        (self.dir / "config.toml").write_text(dump_toml(self.cfg), encoding="utf-8")
        write_json(self.state_path, {"experiment": self.cfg.experiment.name, "id": self.dir.name,
                                     "config_sha256": sha, "synthetic": self.cfg.experiment.synthetic,
                                     "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                                     "steps": {}})
        return False

    def _mark(self, step: str, info: dict[str, Any], seconds: float) -> None:
        state = self._state()
        state["steps"][step] = {"status": "done", "seconds": round(seconds, 3),
                                "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"), **info}
        write_json(self.state_path, state)

    def done(self, step: str) -> bool:
        return self._state()["steps"].get(step, {}).get("status") == "done"

    def path(self, ref: str) -> str:
        """``@x/y`` -> ``<run>/x/y``; anything else unchanged (a path or a hub id)."""
        return str(self.dir / ref[len(REF):]) if ref.startswith(REF) else ref

    # -- the steps ----------------------------------------------------------------------------------------------
    def steps(self) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
        c = self.cfg
        out: list[tuple[str, Callable[[], dict[str, Any]]]] = []
        if c.crawl is not None:
            out.append(("crawl", self.crawl))
        out.append(("dataset", self.dataset))
        if c.teacher is not None:
            out.append(("teacher", self.teacher))
        out += [(f"models/{n}", lambda n=n: self.tiny_model(n)) for n in c.models]
        out += [(f"train/{d}", lambda n=n, k=k: self.train(n, k)) for d, (n, k) in c.train_runs().items()]
        out += [(f"export/{n}", lambda n=n: self.export(n)) for n in c.export]
        out += [(f"eval/{n}", lambda n=n, s=s: self.evaluate(n, s)) for n, s in c.eval_runs().items()]
        if c.baselines.enabled:
            out.append(("baselines", self.baselines))
        out += [(f"compare/{_pair_name(a, b)}", lambda a=a, b=b: self.compare(a, b)) for a, b in c.compare_pairs()]
        if c.report.enabled:
            out.append(("report", self.report))
        return out

    def run(self) -> list[StepResult]:
        resumed = self._open()
        import torch  # noqa: F401 - so that environment.json describes the accelerator

        write_json(self.dir / "environment.json", environment(self.cfg.seeds()))
        synthetic = " [SYNTHETIC DATA: replay forum, not Naver]" if self.cfg.experiment.synthetic else ""
        self.log(f"{'resuming' if resumed else 'new run'} {self.dir}{synthetic}")
        results = []
        for name, fn in self.steps():
            if self.done(name):
                self.log(f"step {name}: done already, skipped")
                results.append(StepResult(name, True, 0.0, self._state()["steps"][name]))
                continue
            self.log(f"step {name}: running")
            t0 = time.perf_counter()
            try:
                info = fn()
            except Exception as e:
                self.log(f"step {name}: FAILED: {type(e).__name__}: {e}")
                raise
            dt = time.perf_counter() - t0
            self._mark(name, info, dt)
            self.log(f"step {name}: done in {dt:.1f} s" + (f" ({_summary(info)})" if info else ""))
            results.append(StepResult(name, False, dt, info))
        self.log(f"complete: {self.dir}")
        return results

    def _fresh(self, sub: str) -> Path:
        """An empty directory for a step's outputs: a step cut off halfway left partial files there. Only ever a
        directory strictly inside the run (checked after resolving symlinks), also when it is created."""
        d = require_inside(self.dir / sub, self.dir, "the step directory")
        if d.exists() or d.is_symlink():
            remove_tree(d, self.dir)
        d.mkdir(parents=True)
        return d

    @contextmanager
    def _site(self) -> Iterator[str | None]:
        """The base URL to crawl: the replay site served for the step, a configured mirror, or Naver itself."""
        if self.cfg.replay is None:
            yield self.cfg.crawl.base_url if self.cfg.crawl else None
            return
        from crawler.replay import ReplayServer, SyntheticForum

        r = self.cfg.replay
        forum = SyntheticForum.generate(r.codes, r.start, r.end, r.posts_per_day, seed=r.seed, signal=r.signal,
                                        quirks=r.quirks)
        with ReplayServer(forum, charset=r.charset) as server:
            self.log(f"  replay site (synthetic forum, seed {r.seed}) on {server.url}")
            yield server.url

    def crawl(self) -> dict[str, Any]:
        from crawler.crawl import CrawlPlan, HttpConfig, StockCrawl, crawl

        c = self.cfg.crawl
        assert c is not None
        db = Path(self.path(c.db or "@crawl/forum.sqlite"))
        db.parent.mkdir(parents=True, exist_ok=True)
        names = dict(c.names)
        if self.cfg.replay is not None:
            names = {**self.cfg.replay.codes, **names}
        plan = CrawlPlan(c.codes, c.since, c.until, source=c.source, prices=c.prices,
                         price_margin_days=c.price_margin_days, names=names)

        def report(s: StockCrawl) -> None:
            self.log(f"  {s.code}: {s.posts.stored} new posts from {s.posts.pages} pages, {s.posts_in_db} stored"
                     + ("; already complete" if s.posts.already_done else ""))

        with self._site() as base_url:
            done = crawl(db, plan, HttpConfig(delay=c.delay, retries=c.retries, timeout=c.timeout,
                                              max_wait=c.max_wait, max_requests=c.max_requests, base_url=base_url),
                         progress=self.progress, report=report)
        posts = {s.code: s.posts_in_db for s in done.stocks}
        bars = {s.code: len(s.bars) for s in done.stocks} if c.prices else {}
        requests = done.requests
        info = {"db": str(db), "db_sha256": sha256_file(db), "posts": posts, "price_bars": bars,
                "requests": requests, "base_url": base_url, "synthetic": self.cfg.experiment.synthetic}
        d = self.dir / "crawl"
        d.mkdir(exist_ok=True)
        write_json(d / "summary.json", info)
        return {"db_sha256": info["db_sha256"], "posts": sum(posts.values()), "requests": requests}

    def dataset(self) -> dict[str, Any]:
        from kofinsent.dataset.build import build_dataset

        d = self.cfg.dataset
        db = self.path(d.db) if d.db else read_json(self.dir / "crawl" / "summary.json")["db"]
        if not Path(db).is_file():
            raise ExperimentError(f"dataset.db {db} does not exist")
        out = self._fresh("dataset")
        sheet = build_dataset(db, out, d.rule, d.per_label, d.split, d.test_size, d.cutoff, d.seed, dedupe=d.dedupe,
                              group_by_day=d.group_by_day, stratify_stock=d.stratify_stock,
                              allow_fewer=d.allow_fewer, progress=self.progress)
        counts = {f"n_{s}": n for s, n in sheet["counts"]["by_split"].items()}
        if d.sharegpt:
            from kofinsent.dataset.sharegpt import export_sharegpt

            counts["n_sharegpt"] = export_sharegpt(out / "train.jsonl", out / "sharegpt.jsonl", d.sharegpt)
        return {"db_sha256": sha256_file(db), "train_sha256": sha256_file(out / "train.jsonl"),
                "test_sha256": sha256_file(out / "test.jsonl"), **counts}

    def teacher(self) -> dict[str, Any]:
        from kofinsent.experiment.teacher import run_teacher_step

        return run_teacher_step(self.cfg, self.dir, self.path, self._fresh, self.log, self.progress)

    def tiny_model(self, name: str) -> dict[str, Any]:
        """A tiny random model whose tokenizer is trained on the run's own training titles (plus forum-style lines
        and the seed prompt), so that it tokenizes this data the way a real Korean tokenizer would."""
        from kofinsent import tiny
        from kofinsent.runs import read_jsonl

        m = self.cfg.models[name]
        titles = [r["title"] for r in read_jsonl(self.dir / "dataset" / "train.jsonl")]
        tok = tiny.train_tokenizer(tiny.korean_corpus(2000, seed=m.seed) + titles, vocab_size=m.vocab_size)
        out = self._fresh(f"models/{name}")
        make = tiny.make_gpt_neox if m.arch == "gpt-neox" else tiny.make_llama
        make(out, tok, seed=m.seed, hidden=m.hidden, layers=m.layers, heads=m.heads, init_std=m.init_std)
        return {"arch": m.arch, "tokenizer_titles": len(titles), "vocab": len(tok)}

    def train(self, name: str, seed: int | None = None) -> dict[str, Any]:
        """``[train.NAME]`` into train/NAME/, or one seed of a multi-seed table into train/NAME/seed<k>/."""
        from kofinsent.training.engines import train_with
        from kofinsent.training.options import TrainConfig
        from kofinsent.training.seeds import seed_dir_name

        spec = self.cfg.train[name].model_dump()
        engine = spec.pop("engine")
        spec.pop("seeds")
        spec.update(model=self.path(spec["model"]), data=self.path(spec["data"]))
        sub = f"train/{name}"
        if seed is not None:
            spec["seed"], sub = seed, f"{sub}/{seed_dir_name(seed)}"
        out = self._fresh(sub)
        metrics = train_with(engine, TrainConfig(**spec, out=str(out)))
        keep = ("global_step", "train_loss", "val_loss", "val_accuracy", "val_n")
        return {**({"seed": seed} if seed is not None else {}), **{k: metrics[k] for k in keep if k in metrics}}

    def export(self, name: str) -> dict[str, Any]:
        from kofinsent.export.quantize import export_gguf

        e = self.cfg.export[name]
        out = self._fresh(f"export/{name}")
        manifest = export_gguf(out, e.quant, run=self.dir / "train" / e.train if e.train else None,
                               model=self.path(e.model) if e.model else None, name=e.name or name)
        return {"files": [f["file"] for f in manifest["files"]], "failed": manifest.get("failed") or {}}

    def evaluate(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        from tqdm import tqdm

        from kofinsent.evaluation.evaluate import EvalConfig, EvalConfigError, evaluate, progress_total

        spec = dict(spec)
        for key in ("model", "adapter", "data", "train"):
            if spec.get(key):
                spec[key] = self.path(spec[key])
        # A step cut off halfway left its predictions: go on from them (hours of scoring) unless they belong to
        # another config, whose directory is cleared like any other step's.
        cfg = EvalConfig(**{**spec, "out": str(self.dir / "eval" / name), "resume": True})
        try:
            total = progress_total(cfg)  # reads what is there; refuses another config's run
        except EvalConfigError:
            self._fresh(f"eval/{name}")
            total = progress_total(cfg)
        with tqdm(total=total, desc=f"eval {name}", unit="item", file=sys.stderr,
                  disable=not self.progress or None, leave=False) as bar:
            m = evaluate(cfg, progress=bar.update)
        return _headline(m)

    def baselines(self) -> dict[str, Any]:
        from kofinsent.evaluation.baselines import baselines_to_dirs

        out = self._fresh("baselines")
        metrics = baselines_to_dirs(self.dir / "dataset" / "train.jsonl", self.dir / "dataset" / "test.jsonl", out,
                                    self.cfg.baselines.seed, overwrite=True)
        return {name: _headline(m) for name, m in metrics.items()}

    def compare(self, a: str, b: str) -> dict[str, Any]:
        from kofinsent.evaluation.compare import compare_runs

        def where(x: str) -> Path:
            return self.dir / (x if x.startswith("baselines/") else f"eval/{x}")

        res = compare_runs(where(a), where(b))
        d = self.dir / "compare"
        d.mkdir(exist_ok=True)
        write_json(d / f"{_pair_name(a, b)}.json", {"a": a, "b": b, **res})
        return {k: res[k] for k in ("n_paired", "mcnemar_p", "mcnemar_midp", "levene_p", "welch_p")
                if res.get(k) is not None}

    def report(self) -> dict[str, Any]:
        from kofinsent.report import build_report

        r = self.cfg.report
        out = Path(r.out or f"reports/{self.cfg.experiment.name}")
        rep = build_report([self.dir], out, title=r.title, examples=r.examples)
        return {"out": str(out), "tables": len(rep.tables), "figures": len(rep.figures)}


def _pair_name(a: str, b: str) -> str:
    """``compare/<a>__<b>``: baselines by their own names, so the pair is one file name."""
    return f"{a}__{b}".replace("baselines/", "")


def _headline(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("n", "accuracy", "accuracy_ci95", "macro_f1", "valid_json_rate", "mean_sentiment", "items_per_s")
    return {k: m[k] for k in keys if m.get(k) is not None}


def _summary(info: dict[str, Any]) -> str:
    parts = []
    for k, v in info.items():
        if isinstance(v, float):
            parts.append(f"{k}={v:.3g}")
        elif isinstance(v, (int, str)) and len(str(v)) < 40:
            parts.append(f"{k}={v}")
    return ", ".join(parts[:6])


def run_experiment(cfg: ExperimentConfig, runs_root: str | Path = "runs", resume: str | Path | None = None,
                   new: bool = False, log: Log | None = None, progress: bool = True) -> tuple[Path, list[StepResult]]:
    """Run ``cfg`` in ``resume`` (a run directory), else in the newest run of the same config under
    ``runs_root/<name>/`` (unless ``new``), else in a new ``runs_root/<name>/<id>/``. Returns the directory."""
    run_dir = continued_run(cfg, runs_root, resume, new)
    if run_dir is None:
        root = Path(runs_root) / cfg.experiment.name
        run_dir = root / new_run_id()
        while run_dir.exists():  # two runs started in the same second
            time.sleep(1)
            run_dir = root / new_run_id()
    exp = Experiment(cfg, run_dir, log, progress)
    return run_dir, exp.run()


def continued_run(cfg: ExperimentConfig, runs_root: str | Path = "runs", resume: str | Path | None = None,
                  new: bool = False) -> Path | None:
    """The run directory :func:`run_experiment` continues: ``resume`` (checked to be a kofinsent run), else the
    newest run of the same config under ``runs_root/<name>/`` unless ``new``; None for a new run."""
    if resume is not None:
        _check_resumable(Path(resume))
        return Path(resume)
    return None if new else find_resumable(Path(runs_root) / cfg.experiment.name, cfg.sha256())


__all__ = ["Experiment", "ExperimentError", "StepResult", "continued_run", "find_resumable", "new_run_id",
           "run_experiment"]

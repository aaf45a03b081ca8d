"""An experiment run directory built by the real producing code, for the report tests.

dataset/ comes from ``build_dataset`` over a small crawler db (two stocks, 2021-2022) written through
``crawler.store.Store``; eval/ from ``kofinsent.evaluation.evaluate.evaluate`` with a deterministic stand-in backend (no model
to load); baselines/ from the ``kofinsent baseline`` command; compare/ from ``compare_runs``. Only the train step,
whose numbers need a real fine-tune, is written by hand in train.py's shape. One test title carries every HTML and
LaTeX special character and is made the most confidently wrong answer of the log-likelihood run.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from datetime import date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

EVIL = "<script>alert(1)</script> 50% & $x_{1}# ~^\\"
EVIL_TEX = (r"<script>alert(1)</script> 50\% \& \$x\_\{1\}\# \textasciitilde{}\textasciicircum{}"
            r"\textbackslash{}")
EXPERIMENT, RUN_ID = "demo", "20250102T030405Z-abc1234"
CODES = {"005930": "삼성전자", "000660": "SK하이닉스"}
WORDS = ["가즈아", "손절", "물타기", "떡상", "떡락", "실적", "배당", "외국인", "기관", "매수", "매도", "반등", "폭락",
         "신고가", "공매도", "존버", "익절", "호재", "악재", "내일"]
UP, DOWN = "[상승]", "[하락]"


def _h(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts (Python's hash() is salted per process)."""
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:12], 16) / 16 ** 12


class StandIn:
    """A backend that scores and answers from hashes of its inputs: the real evaluator runs around it.

    ``EVIL`` always gets a large margin for [상승] and a confident positive sentiment, so wherever its gold label is
    [하락] it is the most confidently wrong item."""

    name = "stand-in"
    supports_loglikelihood = True
    supports_chat = True

    def __init__(self, variant: str = "") -> None:
        self.variant = variant

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[float]:
        out = []
        for ctx, cont in requests:
            title = ctx[ctx.rindex("[제목]: ") + len("[제목]: "): -len("\n[정답]:")]
            up = cont.strip() == UP
            if title == EVIL:
                out.append(-1.0 if up else -41.0)
            else:
                out.append(-1.0 - 4 * _h(ctx, cont))
        return out

    def generate(self, prompts: list[Any], options: Any) -> list[Any]:
        from kofinsent.backends.base import Generation

        gens = []
        for chat in prompts:
            if isinstance(chat, str):  # the direction prompt, generated the seed's way: some answers are invalid
                u = _h("gen", chat)
                gens.append(Generation(" [상승]" if u < 0.45 else " [하락]" if u < 0.9 else " 모르겠다", 0.01, {}))
                continue
            title = chat[-1]["content"].removeprefix("<article>").removesuffix("</article>")
            u = _h(self.variant, title, options.seed)
            sentiment = 0.9 if title == EVIL else round(2 * u - 1, 2)
            confidence = 0.99 if title == EVIL else round(0.3 + 0.6 * _h("c", self.variant, title, options.seed), 2)
            reply = json.dumps({"reasoning": "stand-in", "sentiment": sentiment, "confidence": confidence})
            if self.variant == "q4" and _h("fence", title, options.seed) < 0.2 and title != EVIL:
                reply = f"```json\n{reply}\n```"  # invalid under the strict rule
            gens.append(Generation(reply, 0.01 if self.variant == "q4" else 0.02, {}))
        return gens

    def identity(self) -> dict[str, Any]:
        return {"backend": "stand-in", "variant": self.variant}


def _crawler_db(path: Path) -> Path:
    from crawler.records import Post, PriceBar
    from crawler.store import Store

    rng = np.random.default_rng(5)
    days, d = [], date(2021, 1, 4)
    while d <= date(2022, 12, 30):
        if d.weekday() < 5:
            days.append(d)
        d += timedelta(days=1)
    bars = []
    for code in CODES:
        close = 50_000.0
        for day in days:
            close += float(rng.choice([-3, -2, -1, 1, 2, 3])) * 100  # never flat: every post gets a label
            bars.append(PriceBar(code, day, close, close, close, close, 1000))
    posts = []
    for i in range(200):
        code = list(CODES)[i % 2]
        day = days[1 + int(rng.integers(0, len(days) - 1))]  # not the first day: it has no previous close
        ts = datetime(day.year, day.month, day.day, 10) + timedelta(minutes=int(rng.integers(0, 300)))
        if i % 16 == 3:
            title = EVIL
        elif i % 23 == 0:
            title = "파이프 | 별표 *강조* [링크](http://x) `코드`"
        else:
            title = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 5))))
        posts.append(Post(code, 1000 + i, ts, title))
    with Store(path) as store:
        store.write_page(posts, names=CODES)
        store.write_prices(bars, source="siseJson")
    return path


CONFIG = {
    "experiment": {"name": EXPERIMENT, "description": "Report test fixture: two stocks, stand-in models.",
                   "seed": 0, "synthetic": True},
    "replay": {"codes": CODES, "start": "2021-01-04", "end": "2022-12-30", "posts_per_day": 2, "seed": 3,
               "signal": 0.2},
    "dataset": {"rule": "same-day", "per_label": 0, "split": "random", "test_size": 0.3, "group_by_day": False,
                "seed": 1},
    "models": {"neox": {"kind": "gpt-neox", "hidden_size": 32, "layers": 2}},
    "train": {"lora": {"model": "@models/neox", "engine": "hf", "load_in_8bit": True, "load_in_4bit": False,
                       "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "lr": 2e-4, "epochs": 1.0,
                       "max_steps": 20, "batch_size": 8, "loss": "answer", "seed": 0}},
    "eval": {
        "ll_2shot": {"backend": "hf", "model": "@models/neox", "adapter": "@train/lora/adapter",
                     "method": "loglikelihood", "prompt": "seed2shot"},
        "gen_2shot": {"backend": "hf", "model": "@models/neox", "method": "generate", "prompt": "seed2shot"},
        "kshot_0": {"backend": "hf", "model": "@models/neox", "method": "loglikelihood", "prompt": "kshot",
                    "shots": 0, "fewshot_seeds": [1, 2, 3]},
        "kshot_5": {"backend": "hf", "model": "@models/neox", "method": "loglikelihood", "prompt": "kshot",
                    "shots": 5, "fewshot_seeds": [1, 2, 3]},
        "sent_q4": {"backend": "llamacpp", "model": "@export/llama3-ft-q4_k_m.gguf", "method": "sentiment",
                    "prompt": "sentiment-json", "iterations": 3},
        "sent_f16": {"backend": "llamacpp", "model": "@export/llama3-ft-f16.gguf", "method": "sentiment",
                     "prompt": "sentiment-json", "iterations": 3},
    },
    "baselines": {"enabled": True, "seed": 0},
    "report": {"title": "Demo report", "examples": 3},
}


def _evaluate(run: Path, name: str, stand_in: StandIn, **kw: Any) -> None:
    from kofinsent.evaluation.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(data=str(run / "dataset/test.jsonl"), out=str(run / "eval" / name), **kw)
    evaluate(cfg, backend=stand_in)  # type: ignore[arg-type]  # the stand-in speaks the Backend protocol


def _baselines(run: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from kofinsent.cli.eval import register

    app = typer.Typer()
    register(app)
    ds = run / "dataset"
    r = CliRunner().invoke(app, ["baseline", "--train", str(ds / "train.jsonl"), "--test", str(ds / "test.jsonl"),
                                 "--out", str(run / "baselines"), "--seed", "0"])
    assert r.exit_code == 0, r.output


def _train(run: Path) -> None:
    from kofinsent.runs import environment, write_json
    from kofinsent.training.options import TrainConfig

    out = run / "train/lora"
    out.mkdir(parents=True)
    t = CONFIG["train"]["lora"]
    cfg = TrainConfig(model=str(run / "models/neox"), data=str(run / "dataset/train.jsonl"), out=str(out),
                      **{k: t[k] for k in ("load_in_8bit", "lora_r", "lora_alpha", "lora_dropout", "lr", "epochs",
                                           "max_steps", "batch_size", "loss", "seed")})
    write_json(out / "config.json", {**asdict(cfg), "n_records": 140, "n_train": 133, "n_val": 7,
                                     "prompt": "seed2shot"})
    write_json(out / "environment.json", environment({"seed": 0}))
    # train.py's metrics.json keys; the values would need a real fine-tune.
    write_json(out / "metrics.json", {"global_step": 20, "epochs": 1.2, "train_loss": 2.3456, "last_logged_loss": 2.1,
                                      "resumed_from": None, "val_loss": 2.2222, "val_n": 7, "val_accuracy": 4 / 7,
                                      "train_s": 3.5})


def build_demo_run(root: Path) -> Path:
    import tomli_w

    from kofinsent.dataset.build import build_dataset
    from kofinsent.evaluation.compare import compare_runs
    from kofinsent.runs import environment, read_jsonl, write_json

    run = root / "runs" / EXPERIMENT / RUN_ID
    run.mkdir(parents=True)
    (run / "config.toml").write_text(tomli_w.dumps(CONFIG), encoding="utf-8")
    write_json(run / "environment.json", environment({"seed": 0}))
    db = _crawler_db(root / "forum.db")
    d = CONFIG["dataset"]
    build_dataset(db, run / "dataset", d["rule"], per_label=d["per_label"], split=d["split"],
                  test_size=d["test_size"], seed=d["seed"], progress=False)
    test = list(read_jsonl(run / "dataset/test.jsonl"))
    assert any(r["title"] == EVIL and r["label"] == DOWN for r in test), "fixture: EVIL must be a wrong test item"
    assert len({r["posted_at"][:4] for r in test}) == 2 and len({r["code"] for r in test}) == 2
    _train(run)
    common = {"backend": "hf", "model": str(run / "models/neox")}
    _evaluate(run, "ll_2shot", StandIn(), adapter=str(run / "train/lora/adapter"), method="loglikelihood",
              prompt="seed2shot", **common)
    _evaluate(run, "gen_2shot", StandIn(), method="generate", prompt="seed2shot", **common)
    for k in (0, 5):
        _evaluate(run, f"kshot_{k}", StandIn(), method="loglikelihood", prompt="kshot", shots=k,
                  fewshot_seeds=[1, 2, 3], train=str(run / "dataset/train.jsonl"), **common)
    for name, variant, quant in (("sent_q4", "q4", "q4_k_m"), ("sent_f16", "f16", "f16")):
        _evaluate(run, name, StandIn(variant), backend="llamacpp", model=str(run / f"export/llama3-ft-{quant}.gguf"),
                  method="sentiment", prompt="sentiment-json", iterations=3)
    _baselines(run)
    (run / "compare").mkdir()
    write_json(run / "compare/sent_q4__sent_f16.json", compare_runs(run / "eval/sent_q4", run / "eval/sent_f16"))
    write_json(run / "run.json", {"experiment": EXPERIMENT, "id": RUN_ID, "steps": {
        s: {"status": "done"} for s in ("dataset", "train/lora", *(f"eval/{e}" for e in CONFIG["eval"]),
                                        "baselines", "compare")}})
    return run


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_run(tmp_path_factory.mktemp("report-runs"))


@pytest.fixture(scope="session")
def demo_report(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from kofinsent.report import build_report

    out = tmp_path_factory.mktemp("reports") / "demo"
    report = build_report([demo_run], out)
    return SimpleNamespace(out=out, report=report, run=demo_run,
                           md=(out / "report.md").read_text(encoding="utf-8"),
                           tex=(out / "report.tex").read_text(encoding="utf-8"),
                           html=(out / "report.html").read_text(encoding="utf-8"),
                           json=json.loads((out / "report.json").read_text(encoding="utf-8")))


@pytest.fixture(scope="session")
def real_data_run(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slim copy of the demo run whose config.toml says synthetic = false (one eval, no baselines)."""
    import tomli_w

    run = tmp_path_factory.mktemp("real") / EXPERIMENT / RUN_ID
    run.mkdir(parents=True)
    for f in ("run.json", "environment.json"):
        shutil.copy(demo_run / f, run / f)
    shutil.copytree(demo_run / "dataset", run / "dataset")
    shutil.copytree(demo_run / "eval/ll_2shot", run / "eval/ll_2shot")
    cfg = {k: v for k, v in CONFIG.items() if k != "replay"}  # a real crawl: no replay forum
    cfg["experiment"] = {**CONFIG["experiment"], "synthetic": False}
    cfg["crawl"] = {"codes": list(CODES), "since": "2021-01-01", "until": "2022-12-31", "source": "api"}
    (run / "config.toml").write_text(tomli_w.dumps(cfg), encoding="utf-8")
    return run


@pytest.fixture(scope="session")
def evil() -> SimpleNamespace:
    return SimpleNamespace(title=EVIL, tex=EVIL_TEX)

"""The offline quickstart end to end, as a user runs it: `kofinsent run experiments/quickstart.toml`.

One run is SIGKILLed after its first training step finished and started again with the same command: it must
continue in the same directory, skip what was done, and end complete. A third start skips everything. The checks
then read only the run directory and the report, as a researcher would.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "experiments" / "quickstart.toml"
pytestmark = pytest.mark.timeout(900)


def _cmd(tmp: Path) -> list[str]:
    return [sys.executable, "-m", "kofinsent.cli", "run", str(CONFIG), "--runs-dir", str(tmp / "runs"),
            f"report.out={tmp / 'reports' / 'quickstart'}"]


def _env() -> dict[str, str]:
    return {**os.environ, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}


def _steps(tmp: Path) -> dict:
    for state in (tmp / "runs" / "quickstart").glob("*/run.json"):
        try:
            return json.loads(state.read_text(encoding="utf-8"))["steps"]
        except (OSError, ValueError):  # caught mid-replace
            return {}
    return {}


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("quickstart")
    # 1: killed (SIGKILL, no clean-up) once the first training step is done
    t0 = time.monotonic()
    proc = subprocess.Popen(_cmd(tmp), cwd=tmp, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    while "train/neox_lora" not in _steps(tmp):
        if proc.poll() is not None:
            pytest.fail(f"quickstart ended before it could be killed:\n{proc.stdout.read()[-4000:]}")
        if time.monotonic() - t0 > 600:
            proc.kill()
            pytest.fail("quickstart did not finish its first training step in 10 minutes")
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_after = time.monotonic() - t0
    # 2: the same command again
    t1 = time.monotonic()
    second = subprocess.run(_cmd(tmp), check=False, cwd=tmp, env=_env(), capture_output=True, text=True)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    second_s = time.monotonic() - t1
    # 3: and once more, with everything done
    third = subprocess.run(_cmd(tmp), check=False, cwd=tmp, env=_env(), capture_output=True, text=True)
    assert third.returncode == 0, third.stderr[-3000:]
    runs = list((tmp / "runs" / "quickstart").iterdir())
    assert len(runs) == 1, runs
    return {"tmp": tmp, "run": runs[0], "second": second.stdout, "third": third.stdout,
            "killed_after_s": killed_after, "second_s": second_s}


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_killed_run_resumes_in_the_same_directory(quickstart: dict) -> None:
    out = quickstart["second"]
    assert f"resuming {quickstart['run']}" in out
    for step in ("crawl", "dataset", "teacher", "models/neox", "models/llama", "train/neox_lora"):
        assert f"step {step}: done already, skipped" in out
    assert "step train/llama_lora: running" in out
    assert re.search(r"complete: .*quickstart", out)


def test_a_finished_run_skips_every_step(quickstart: dict) -> None:
    out = quickstart["third"]
    assert "0 steps run" in out
    assert "running" not in out


def test_run_directory_records_config_environment_and_steps(quickstart: dict) -> None:
    run = quickstart["run"]
    assert re.fullmatch(r"\d{8}T\d{6}Z-([0-9a-f]{7}|nogit)", run.name)
    state = _json(run / "run.json")
    assert state["synthetic"] is True and (run / "SYNTHETIC_DATA.txt").is_file()
    assert all(s["status"] == "done" for s in state["steps"].values())
    assert {"crawl", "dataset", "teacher", "train/neox_lora", "export/llama", "eval/neox_lora", "baselines",
            "report"} <= set(
        state["steps"])
    from kofinsent.experiment.config import ExperimentConfig, load_config

    resolved = ExperimentConfig.model_validate(tomllib.loads((run / "config.toml").read_text(encoding="utf-8")))
    expected = load_config(CONFIG, [f"report.out={quickstart['tmp'] / 'reports' / 'quickstart'}"])
    assert resolved.sha256() == expected.sha256() == state["config_sha256"]
    env = _json(run / "environment.json")
    assert env["packages"]["torch"] and env["git"]["sha"] and "cuda" in env
    assert env["seeds"]["dataset"] == 42 and env["seeds"]["train"] == {"neox_lora": 0, "llama_lora": 0}


def test_crawl_went_through_the_replay_site(quickstart: dict) -> None:
    summary = _json(quickstart["run"] / "crawl" / "summary.json")
    assert summary["base_url"].startswith("http://127.0.0.1:") and summary["synthetic"] is True
    assert set(summary["posts"]) == {"900010", "900020", "900030"} and min(summary["posts"].values()) > 1000
    assert min(summary["price_bars"].values()) > 50


def test_dataset_and_training_outputs(quickstart: dict) -> None:
    run = quickstart["run"]
    sheet = _json(run / "dataset" / "datasheet.json")
    assert sheet["counts"]["by_split"] == {"train": 640, "test": 160}
    assert _json(run / "run.json")["steps"]["dataset"]["n_test"] == 160
    for name in ("neox_lora", "llama_lora"):
        assert (run / "train" / name / "adapter" / "adapter_model.safetensors").is_file()
    assert (run / "train" / "llama_lora" / "merged" / "config.json").is_file()
    manifest = _json(run / "export" / "llama" / "manifest.json")
    assert [f["file"] for f in manifest["files"]] == ["llama-f16.gguf", "llama-q8_0.gguf"]


def test_teacher_step_labelled_the_train_split_with_the_synthetic_stand_in(quickstart: dict) -> None:
    """Seed 000's data step offline: every train title asked through the openai backend of the stand-in served on
    127.0.0.1, its retry and drop paths taken, sharegpt.jsonl the evaluator's chat + the reply, SYNTHETIC in the
    datasheet and in the report's methods, the numbers cited from teacher/datasheet.json."""
    run = quickstart["run"]
    sheet = _json(run / "teacher" / "datasheet.json")
    c = sheet["counts"]
    assert sheet["synthetic"] is True and sheet["config"]["model"] == "kofinsent-synthetic-teacher"
    assert sheet["config"]["host"].startswith("http://127.0.0.1:") and sheet["config"]["backend"] == "openai"
    assert c["records"] == c["labelled"] == 640 and c["accepted"] + c["dropped"] == 640
    assert c["accepted_after_retry"] > 0 and c["dropped"] > 0
    assert "**SYNTHETIC**" in (run / "teacher" / "datasheet.md").read_text(encoding="utf-8")
    step = _json(run / "run.json")["steps"]["teacher"]
    assert step["synthetic"] is True and step["accepted"] == c["accepted"] and step["dropped"] == c["dropped"]
    from kofinsent.prompts.sentiment import sentiment_chat

    train = [json.loads(line) for line in (run / "dataset" / "train.jsonl").open(encoding="utf-8")]
    labels = [json.loads(line) for line in (run / "teacher" / "teacher.jsonl").open(encoding="utf-8")]
    convs = [json.loads(line)["conversations"] for line in (run / "teacher" / "sharegpt.jsonl").open(encoding="utf-8")]
    accepted = [(rec, t) for rec, t in zip(train, labels) if t["status"] == "accepted"]
    assert [t["id"] for t in labels] == [r["id"] for r in train] and len(convs) == len(accepted) == c["accepted"]
    for conv, (rec, t) in zip(convs[:50], accepted):
        assert [x["value"] for x in conv[:-1]] == [m["content"] for m in sentiment_chat(rec["title"], rec["name"])]
        assert rec["name"] in conv[-2]["value"] and conv[-1] == {"value": t["raw"], "from": "gpt"}
    md = (quickstart["tmp"] / "reports" / "quickstart" / "report.md").read_text(encoding="utf-8")
    line = next(x for x in md.splitlines() if x.startswith("Teacher labels"))
    assert "SYNTHETIC" in line and f"{c['accepted']} accepted ({c['accepted_after_retry']} after a retry)" in line
    rj = json.dumps(_json(quickstart["tmp"] / "reports" / "quickstart" / "report.json"))
    assert '"file": "teacher/datasheet.json", "key": ["counts", "accepted"]' in rj


def test_the_adapter_learns_the_cue_and_the_numbers_are_honest(quickstart: dict) -> None:
    """Half of the synthetic titles carry a cue word of the next session's move, so ~0.75 is reachable; the random
    base model cannot see it. Every accuracy comes with n and a Wilson interval."""
    run = quickstart["run"]
    ev = {d.name: _json(d / "metrics.json") for d in (run / "eval").iterdir()}
    assert set(ev) == {"neox_base", "neox_lora", "neox_lora_generate", "neox_kshot-0shot", "neox_kshot-5shot",
                       "llama_gguf_f16", "llama_gguf_q8_0"}
    base, lora = ev["neox_base"], ev["neox_lora"]
    assert base["n"] == lora["n"] == 160
    assert lora["accuracy"] >= 0.65 and lora["accuracy"] - base["accuracy"] >= 0.1, (base["accuracy"],
                                                                                     lora["accuracy"])
    lo, hi = lora["accuracy_ci95"]
    assert lo < lora["accuracy"] < hi
    assert ev["neox_kshot-5shot"]["fewshot_accuracy"]["n"] == 3
    assert ev["llama_gguf_f16"]["backend"]["backend"] == "llamacpp"
    bl = _json(run / "baselines" / "tfidf_char" / "metrics.json")
    assert bl["n"] == 160 and bl["accuracy"] >= 0.65
    cmp = _json(run / "compare" / "neox_base__neox_lora.json")
    assert cmp["n_paired"] == 160 and cmp["mcnemar_p"] < 0.05
    preds = [json.loads(line) for line in (run / "eval" / "neox_lora" / "predictions.jsonl").open(encoding="utf-8")]
    assert len(preds) == 160 and all(len(p["loglik"]) == 2 for p in preds)


def test_report_from_the_run(quickstart: dict) -> None:
    rep = quickstart["tmp"] / "reports" / "quickstart"
    for name in ("report.md", "report.tex", "report.html", "report.json"):
        text = (rep / name).read_text(encoding="utf-8")
        assert "synthetic" in text.lower(), name
    figures = sorted(p.name for p in (rep / "figures").iterdir())
    assert {"accuracy-vs-shots.png", "accuracy-vs-shots.pdf", "accuracy-by-stock.png", "confusion-neox-lora.pdf"} <= set(
        figures)
    assert all((rep / "figures" / f).stat().st_size > 1000 for f in figures)
    # each main-table row shows the accuracy, interval and n of its eval's metrics.json, and cites the run
    md = (rep / "report.md").read_text(encoding="utf-8")
    run = quickstart["run"]
    for d in sorted((run / "eval").iterdir()):
        m = _json(d / "metrics.json")
        row = next(line for line in md.splitlines() if line.startswith(f"| {d.name.replace('_', chr(92) + '_')} |"))
        lo, hi = m["accuracy_ci95"]
        assert f"| {m['n']} | " in row
        assert f"{100 * m['accuracy']:.1f}% \\[{100 * lo:.1f}, {100 * hi:.1f}\\]" in row, row
        assert f"quickstart/{run.name}:eval/" in row



def test_report_error_analysis_tables_and_figures(quickstart: dict) -> None:
    """Issue 13: per-stock / per-year tables with n and intervals, calibration, the market link (with the next
    session, since the dataset step wrote returns.jsonl) and its scatter, per-stock confidently wrong titles, and
    the compare table with Holm-adjusted and mid-p columns."""
    rep = quickstart["tmp"] / "reports" / "quickstart"
    run = quickstart["run"]
    rj = _json(rep / "report.json")
    tables = {t["id"]: t for t in rj["tables"]}
    assert {"accuracy_by_stock", "accuracy_by_year", "calibration", "market_link", "compare"} <= set(tables)
    assert {"reliability", "market-link"} <= {f["name"] for f in rj["figures"]}
    for name in ("reliability.png", "reliability.pdf", "market-link.png", "market-link.pdf"):
        assert (rep / "figures" / name).stat().st_size > 1000
    assert (run / "dataset" / "returns.jsonl").is_file()
    assert "Pearson r, next session [95% CI]" in [c["name"] for c in tables["market_link"]["columns"]]
    compare_cols = [c["name"] for c in tables["compare"]["columns"]]
    assert {"McNemar p (Holm)", "McNemar mid-p", "Accuracy A - B [95% CI] (pp)"} <= set(compare_cols)
    # per stock, neox_lora: n items and accuracy are the hand count over predictions.jsonl x dataset/test.jsonl
    items = {r["id"]: r for r in map(json.loads, (run / "dataset" / "test.jsonl").open(encoding="utf-8"))}
    counts: dict[str, list[int]] = {}
    for p in map(json.loads, (run / "eval" / "neox_lora" / "predictions.jsonl").open(encoding="utf-8")):
        c = counts.setdefault(items[p["id"]]["code"], [0, 0])
        c[0] += 1
        c[1] += p["pred"] == p["gold"]
    rows = [r for r in tables["accuracy_by_stock"]["rows"] if r[0]["text"] == "neox_lora"]
    assert {r[1]["text"].split()[0]: [r[2]["numbers"][0]["value"], r[4]["numbers"][0]["value"]] for r in rows} == {
        code: [n, k / n] for code, (n, k) in counts.items()}
    md = (rep / "report.md").read_text(encoding="utf-8")
    for caption in ("Accuracy per stock for each run", "Accuracy per year for each run", "Calibration of the",
                    "The market link", "most confidently wrong titles per stock"):
        assert caption in md, caption
    assert any(e["id"].startswith("examples-by-stock-") for e in rj["examples"])

"""The training-seed table (issue 13, point 4): eval runs that differ only by the training seed of their adapter show
each seed's n and accuracy [95% CI] (cited from its metrics.json) and the mean ± sd over seeds (sd with ddof 1), whose
report.json source lists every input; checked against numpy on the per-seed accuracies, in all three formats."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from .conftest import StandIn, _h
from .test_numbers import NUMBER, check_number, md_tables

SEEDS = (0, 1, 2)
RUN_ID = "20250102T030405Z-abc1234"


class SeedStandIn(StandIn):
    """Log-likelihoods that depend on the training seed: each seed's adapter answers differently."""

    def __init__(self, seed: int) -> None:
        super().__init__(f"seed{seed}")
        self.seed = seed

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[float]:
        return [-1.0 - 4 * _h("train-seed", self.seed, ctx, cont) for ctx, cont in requests]


def _evaluate(out: Path, data: Path, seed: int, adapter: Path, **kw) -> None:
    from kofinsent.evaluation.evaluate import EvalConfig, evaluate

    evaluate(EvalConfig(backend="hf", model="models/neox", adapter=str(adapter), data=str(data), out=str(out), **kw),
             backend=SeedStandIn(seed))  # type: ignore[arg-type]


def _seed_run(root: Path, demo_run: Path) -> Path:
    """An experiment run with train.lora.seeds = [0, 1, 2]: eval/tuned-seed<k> for each seed, one eval of seed 0
    with another method (not part of the group) and an untuned base."""
    import tomli_w

    from kofinsent.runs import write_json

    run = root / "seeds" / RUN_ID
    shutil.copytree(demo_run / "dataset", run / "dataset")
    config = {"experiment": {"name": "seeds", "synthetic": True},
              "dataset": {"db": "forum.db", "rule": "same-day"},
              "train": {"lora": {"model": "models/neox", "seeds": list(SEEDS), "max_steps": 20}},
              "eval": {"tuned": {"backend": "hf", "model": "models/neox", "adapter": "@train/lora/adapter"},
                       "gen0": {"backend": "hf", "model": "models/neox", "adapter": "@train/lora/seed0/adapter",
                                "method": "generate"}}}
    (run / "config.toml").write_text(tomli_w.dumps(config), encoding="utf-8")
    test = run / "dataset/test.jsonl"
    for k in SEEDS:
        d = run / "train/lora" / f"seed{k}"
        d.mkdir(parents=True)
        write_json(d / "config.json", {"model": "models/neox", "seed": k, "max_steps": 20, "lora_r": 8})
        write_json(d / "metrics.json", {"global_step": 20, "train_loss": 2.0 + k / 10})
        _evaluate(run / "eval" / f"tuned-seed{k}", test, k, d / "adapter")
    _evaluate(run / "eval/gen0", test, 0, run / "train/lora/seed0/adapter", method="generate")
    write_json(run / "run.json", {"experiment": "seeds", "id": RUN_ID, "steps": {}})
    return run


@pytest.fixture(scope="module")
def seed_report(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from kofinsent.report import build_report

    run = _seed_run(tmp_path_factory.mktemp("seed-runs"), demo_run)
    out = tmp_path_factory.mktemp("seed-report")
    build_report([run], out)
    return SimpleNamespace(run=run, out=out, md=(out / "report.md").read_text(encoding="utf-8"),
                           tex=(out / "report.tex").read_text(encoding="utf-8"),
                           html=(out / "report.html").read_text(encoding="utf-8"),
                           json=json.loads((out / "report.json").read_text(encoding="utf-8")))


def _accuracies(run: Path) -> list[float]:
    return [json.loads((run / f"eval/tuned-seed{k}/metrics.json").read_text(encoding="utf-8"))["accuracy"]
            for k in SEEDS]


def test_seed_table_shows_each_seed_and_mean_sd_matching_numpy(seed_report):
    table = next(t for t in seed_report.json["tables"] if t["id"] == "train-seeds")
    accs = _accuracies(seed_report.run)
    assert len(set(accs)) > 1, "fixture: the seeds should differ"
    rows = table["rows"]
    assert [r[0]["text"] for r in rows] == ["tuned"] * 4  # gen0 (another method) and nothing else joins the group
    assert [r[1]["text"] for r in rows] == ["0", "1", "2", "mean ± sd over 3 seeds"]
    for k, row in zip(SEEDS, rows):
        m = json.loads((seed_report.run / f"eval/tuned-seed{k}/metrics.json").read_text(encoding="utf-8"))
        lo, hi = m["accuracy_ci95"]
        assert row[3]["text"] == f"{100 * m['accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
        assert row[2]["text"] == str(m["n"]) and row[4]["text"] == f"seeds/{RUN_ID}:eval/tuned-seed{k}"
    mean, sd = rows[3][3]["numbers"]
    assert mean["value"] == pytest.approx(np.mean(accs), rel=1e-12)
    assert sd["value"] == pytest.approx(np.std(accs, ddof=1), rel=1e-12)
    assert rows[3][3]["text"] == f"{100 * np.mean(accs):.1f}% ± {100 * np.std(accs, ddof=1):.1f} pp"


def test_mean_and_sd_are_traceable_to_each_seeds_metrics_json(seed_report):
    runs = {r["label"]: Path(r["path"]) for r in seed_report.json["runs"]}
    table = next(t for t in seed_report.json["tables"] if t["id"] == "train-seeds")
    for num, stat in zip(table["rows"][3][3]["numbers"], ("mean", "sd")):
        src = num["source"]
        assert src["derive"] == stat
        assert [(i["file"], i["key"]) for i in src["inputs"]] == [
            (f"eval/tuned-seed{k}/metrics.json", ["accuracy"]) for k in SEEDS]
        values = [json.loads((runs[i["run"]] / i["file"]).read_text(encoding="utf-8"))["accuracy"]
                  for i in src["inputs"]]
        expected = np.mean(values) if stat == "mean" else np.std(values, ddof=1)
        assert num["value"] == pytest.approx(expected, rel=1e-12)
    for row in table["rows"][:3]:  # the per-seed numbers resolve as every other table's do
        for cell in row:
            for n in cell["numbers"]:
                check_number(n, runs)


def test_seed_table_is_rendered_in_markdown_latex_and_html(seed_report):
    _, rows = next(t for t in md_tables(seed_report.md) if t[0][:2] == ["Eval", "Training seed"])
    table = next(t for t in seed_report.json["tables"] if t["id"] == "train-seeds")
    assert len(rows) == 4 and rows[3][1] == "mean ± sd over 3 seeds"
    for md_row, js_row in zip(rows, table["rows"]):  # every number printed is a sourced one, and nothing else
        for col, md_cell, js_cell in zip(table["columns"], md_row, js_row):
            sourced = [t for n in js_cell["numbers"] for t in NUMBER.findall(n["text"])]
            assert NUMBER.findall(md_cell) == sourced if col["numeric"] else js_cell["numbers"] == []
    assert rows[3][3] == table["rows"][3][3]["text"]
    assert "Accuracy per training seed" in seed_report.tex and r"\label{tab:train-seeds}" in seed_report.tex
    assert "mean ± sd over 3 seeds" in seed_report.tex and "mean ± sd over 3 seeds" in seed_report.html


def test_bare_runs_that_differ_only_by_training_seed_form_a_group(demo_run, tmp_path):
    """`kofinsent eval --adapter DIR/seed<k>/adapter` per seed, given to the report together."""
    from kofinsent.report.build import assemble

    test = demo_run / "dataset/test.jsonl"
    for k in (0, 1):
        _evaluate(tmp_path / f"r{k}", test, k, tmp_path / "train" / f"seed{k}" / "adapter")
    _evaluate(tmp_path / "other", test, 1, tmp_path / "train" / "seed1" / "adapter", batch_size=3)
    report = assemble([tmp_path / "r0", tmp_path / "r1"])
    table = next(t for t in report.tables if t.id == "train-seeds")
    assert [r[1].plain for r in table.rows] == ["0", "1", "mean ± sd over 2 seeds"]
    assert not [t for t in assemble([tmp_path / "r0", tmp_path / "other"]).tables if t.id == "train-seeds"]
    assert not [t for t in assemble([tmp_path / "r0"]).tables if t.id == "train-seeds"]


def test_expanded_steps_name_their_own_seed_and_each_seed_has_a_training_paragraph(seed_report):
    from kofinsent.report.collect import load_run

    run = load_run(seed_report.run)
    steps = {s.name: s for s in run.steps}
    assert [steps[f"tuned-seed{k}"].toml["adapter"] for k in SEEDS] == [f"@train/lora/seed{k}/adapter" for k in SEEDS]
    assert steps["gen0"].toml["adapter"] == "@train/lora/seed0/adapter"  # named one seed: as written
    assert [t.name for t in run.trains] == [f"lora/seed{k}" for k in SEEDS]
    methods = " ".join(p["text"] for b in seed_report.json["methods"] for p in b["paragraphs"])
    assert "Evaluation tuned-seed2: hf backend, model models/neox with adapter @train/lora/seed2/adapter" in methods
    assert all(f"Fine-tuning (lora/seed{k})" in methods and f"seed {k}" in methods for k in SEEDS)

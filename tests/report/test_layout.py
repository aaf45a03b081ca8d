"""Run layouts the experiment runner may write: [eval.<name>] tables expanded over models or shot counts (flat or
nested directories), compare files whose pair names hold a "/", steps that have not finished."""
from __future__ import annotations

import shutil
import tomllib

import tomli_w

from kofinsent.report import assemble


def test_expanded_and_nested_eval_steps(demo_run, tmp_path):
    run = tmp_path / "demo" / demo_run.name
    shutil.copytree(demo_run, run, ignore=shutil.ignore_patterns("predictions.jsonl"))
    cfg = tomllib.loads((run / "config.toml").read_text(encoding="utf-8"))
    k0 = cfg["eval"].pop("kshot_0")
    cfg["eval"].pop("kshot_5")
    cfg["eval"]["neox_kshot"] = {**k0, "shots": [0, 5], "model": ["@models/neox"]}
    cfg["eval"]["sent"] = {**cfg["eval"].pop("sent_q4"), "model": ["a-q4_k_m.gguf", "a-f16.gguf"]}
    cfg["eval"].pop("sent_f16")
    (run / "config.toml").write_text(tomli_w.dumps(cfg), encoding="utf-8")
    (run / "eval/neox_kshot").mkdir()
    (run / "eval/kshot_5").rename(run / "eval/neox_kshot/5")  # nested, and 5 before 0 on purpose
    (run / "eval/kshot_0").rename(run / "eval/neox_kshot/0")
    (run / "eval/sent_q4").rename(run / "eval/sent-llama3-ft-q4_k_m")
    (run / "eval/sent_f16").rename(run / "eval/sent-llama3-ft-f16")
    (run / "eval/unfinished").mkdir()
    pair = run / "compare/neox_kshot/0__baselines/tfidf_char.json"  # the pair ("neox_kshot/0", "baselines/tfidf_char")
    pair.parent.mkdir(parents=True)
    (run / "compare/sent_q4__sent_f16.json").rename(pair)

    report = assemble([run])
    names = [row[0].plain for row in report.tables[0].rows]
    assert names[:5] == ["ll_2shot", "gen_2shot", "neox_kshot/0", "neox_kshot/5", "sent-llama3-ft-f16"]
    kshot = next(t for t in report.tables if t.id == "kshot")
    assert len(kshot.rows) == 1 and kshot.rows[0][0].plain == "@models/neox"  # the toml's list is not printed
    assert kshot.rows[0][1].plain.endswith("(n=60, 3 seeds)") and kshot.rows[0][2].plain.endswith("3 seeds)")
    sent = next(t for t in report.tables if t.id == "sentiment")
    assert sorted(row[1].plain for row in sent.rows) == ["f16", "q4_k_m"]
    cmp = next(t for t in report.tables if t.id == "compare")
    assert [cmp.rows[0][0].plain, cmp.rows[0][1].plain] == ["neox_kshot/0", "baselines/tfidf_char"]
    assert any("eval/unfinished has no metrics.json" in n for n in report.notes)
    assert report.examples == []  # no predictions.jsonl copied: no examples, and a note says so
    assert any("no predictions.jsonl" in n for n in report.notes)

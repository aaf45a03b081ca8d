"""``kofinsent dataset build`` / ``sharegpt`` through typer's CliRunner, and the ShareGPT file's shape."""
from __future__ import annotations

import json
from collections import Counter
from datetime import datetime

import pytest
from typer.testing import CliRunner

from crawler.records import Post
from kofinsent.cli import app
from kofinsent.dataset.sharegpt import SEED_INSTRUCTION, conversation
from kofinsent.runs import read_jsonl

runner = CliRunner()
SEED_003_TEXT = "주식 종목 토론방에 [제목]의 글이 올라온 다음 날, 주가는 어떻게 되었을까?\n[상승] 혹은 [하락] 중 하나로 답하여라."


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_build_and_sharegpt_commands(synth_db, tmp_path):
    out = tmp_path / "ds"
    r = invoke("dataset", "build", "--db", synth_db, "--rule", "same-day", "--per-label", "300", "--test-size",
               "0.1", "--seed", "3", "--no-progress", "--out", out)
    assert r.exit_code == 0, r.output
    assert f"wrote {out}: train 540, test 60" in r.stdout
    sheet = json.loads((out / "datasheet.json").read_text("utf-8"))
    assert sheet["parameters"]["rule"] == "same-day" and sheet["parameters"]["seed"] == 3

    sg = tmp_path / "sharegpt.jsonl"
    r = invoke("dataset", "sharegpt", "--data", out / "train.jsonl", "--out", sg)
    assert r.exit_code == 0, r.output
    lines = list(read_jsonl(sg))
    train = list(read_jsonl(out / "train.jsonl"))
    assert len(lines) == len(train) == 540
    first = lines[0]["conversations"]
    assert [t["from"] for t in first] == ["system", "human", "gpt"]
    assert first[0]["value"] == SEED_003_TEXT == SEED_INSTRUCTION
    assert first[1]["value"] == "[제목]: " + train[0]["title"] and first[2]["value"] == train[0]["label"]
    assert Counter(c["conversations"][2]["value"] for c in lines) == Counter(t["label"] for t in train)


def test_json_reply_is_seed_000_shape(synth_db, tmp_path):
    out = tmp_path / "ds"
    assert invoke("dataset", "build", "--db", synth_db, "--rule", "next-session", "--per-label", "50",
                  "--no-progress", "--out", out).exit_code == 0
    sg = tmp_path / "sg.jsonl"
    r = invoke("dataset", "sharegpt", "--data", out / "train.jsonl", "--out", sg, "--reply", "json",
               "--confidence", "0.5")
    assert r.exit_code == 0, r.output
    for conv, rec in zip(list(read_jsonl(sg)), list(read_jsonl(out / "train.jsonl"))):
        system, human, gpt = conv["conversations"]
        assert system["value"].startswith(SEED_003_TEXT.split("\n")[0]) and "JSON" in system["value"]
        reply = json.loads(gpt["value"])  # strict: the raw reply is one JSON object, nothing around it
        assert list(reply) == ["reasoning", "sentiment", "confidence"]
        assert isinstance(reply["reasoning"], str) and "주가 라벨" in reply["reasoning"]
        assert reply["sentiment"] == (1.0 if rec["label"] == "[상승]" else -1.0) and reply["confidence"] == 0.5


def test_sharegpt_loads_the_way_unsloth_reads_it(tmp_path):
    datasets = pytest.importorskip("datasets")
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"title": "가즈아", "label": "[상승]"}, ensure_ascii=False) + "\n", encoding="utf-8")
    sg = tmp_path / "sg.jsonl"
    assert invoke("dataset", "sharegpt", "--data", data, "--out", sg).exit_code == 0
    ds = datasets.load_dataset("json", data_files=str(sg), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.column_names == ["conversations"]
    turns = ds[0]["conversations"]
    assert all(set(t) == {"value", "from"} and all(isinstance(v, str) for v in t.values()) for t in turns)
    # unsloth_zoo's standardize_data_formats picks the role key as the key with fewer distinct values in the first
    # rows and, on a tie, the second key: a one-post file ties 3 to 3, so `from` must come second.
    keys = list(turns[0])
    uniq = {k: len({t[k] for t in turns}) for k in keys}
    role_key = keys[0] if uniq[keys[0]] < uniq[keys[1]] else keys[1]
    assert role_key == "from"
    assert conversation("x", "[하락]")["conversations"][2] == {"value": "[하락]", "from": "gpt"}


def test_errors_are_one_line_on_stderr(hand, tmp_path):
    posts = hand.posts() + [Post(hand.A, 1, datetime(2021, 10, 2, 12), "토요일")]
    db = hand.write_db(tmp_path / "m.db", posts, hand.bars, hand.names)
    r = invoke("dataset", "build", "--db", db, "--rule", "same-day", "--no-progress", "--out", tmp_path / "o")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: missing prices: 005930 (삼성전자): 1 posts dated 2021-10-02")
    assert r.stderr.count("\n") == 1 and not (tmp_path / "o").exists()

    r = invoke("dataset", "build", "--db", db, "--rule", "same-day", "--per-label", "100",
               "--allow-missing-prices", "--no-progress", "--out", tmp_path / "o")
    assert r.exit_code == 2 and r.stderr.startswith("error: too few labelled posts: asked for 100 per label, "
                                                    "available [상승] 8, [하락] 3")

    not_ours = tmp_path / "x.db"
    not_ours.write_bytes(b"hello")
    r = invoke("dataset", "build", "--db", not_ours, "--rule", "same-day", "--out", tmp_path / "o")
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and "not a SQLite file" in r.stderr

    r = invoke("dataset", "sharegpt", "--data", tmp_path / "missing.jsonl", "--out", tmp_path / "s.jsonl")
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and "no such file" in r.stderr

    r = invoke("dataset", "build", "--db", db, "--rule", "tomorrow", "--out", tmp_path / "o")
    assert r.exit_code == 2  # typer rejects the choice before our code runs

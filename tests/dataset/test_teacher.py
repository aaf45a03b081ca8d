"""``kofinsent dataset teacher`` against the loopback OpenAI and Ollama stand-ins: what is asked, strict validation
and retries with new seeds, drops with their reason, 429s that are not attempts, resuming without a request, refusals,
the datasheet's counts and the ShareGPT file's raw replies."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kofinsent.backends import get_backend
from kofinsent.cli import app
from kofinsent.dataset.teacher import OWN_FILES, TeacherConfig, TeacherError, run_teacher
from kofinsent.prompts.sentiment import SYSTEM_PROMPT, check_strict, json_schema, sentiment_chat, user_message

from ..standins.ollama_standin import OllamaStandin
from ..standins.openai_standin import OpenAIStandin, Scripted, usage

MODEL = "llama3-70b-instruct"
NAMES = {"005930": "삼성전자", "000660": "SK하이닉스"}
# the reply of every record unless a test says otherwise; odd spacing, Korean and an escape kept as sent
GOOD = '{\n  "reasoning": "외국인 순매수 \\u2192 상승 기대",\n  "sentiment": 0.50,\n  "confidence": 0.8\n}\n'
FENCED = '```json\n{"reasoning": "x", "sentiment": 0.5, "confidence": 0.8}\n```'
OUT_OF_RANGE = '{"reasoning": "x", "sentiment": 1.5, "confidence": 0.8}'
runner = CliRunner()


@pytest.fixture(autouse=True)
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def write_data(path: Path, n: int = 6) -> list[dict]:
    """n records alternating two stocks; record 5 has no name (an old db), so its message has none either."""
    recs = []
    for i in range(n):
        code = "005930" if i % 2 == 0 else "000660"
        recs.append({"id": f"{code}-{100 + i}", "code": code, "name": NAMES[code] if i != 5 else None,
                     "title": f"{NAMES[code]} 내일 가즈아 {i}", "label": "[상승]" if i % 3 else "[하락]"})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    return recs


def title_of(body: dict) -> str:
    return body["messages"][-1]["content"].split("<article>")[1].removesuffix("</article>")


def script(bad: dict[str, list[str]]):
    """A reply_fn: for a title in ``bad``, the k-th request gets ``bad[title][k]`` (GOOD once they run out)."""
    asked: dict[str, int] = {}

    def reply(body: dict) -> str | Scripted:
        title = title_of(body)
        k = asked.get(title, 0)
        asked[title] = k + 1
        replies = bad.get(title, [])
        return replies[k] if k < len(replies) else GOOD

    return reply


def teacher(server_url: str, data: Path, out: Path, *extra: str, backend: str = "openai", model: str = MODEL):
    return runner.invoke(app, ["dataset", "teacher", "--backend", backend, "--host", server_url, "--model", model,
                               "--data", str(data), "--out", str(out), "--no-progress", *extra])


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    write_data(tmp_path / "train.jsonl")
    return tmp_path / "train.jsonl"


# -- what is asked ---------------------------------------------------------------------------------------------------
def test_each_record_is_the_evaluators_chat_naming_the_stock(data: Path, tmp_path: Path) -> None:
    recs = [json.loads(line) for line in data.read_text("utf-8").splitlines()]
    with OpenAIStandin([MODEL]) as server:
        r = teacher(server.url, data, tmp_path / "out")
        assert r.exit_code == 0, r.output
        bodies = sorted(server.bodies(), key=lambda b: title_of(b))
    assert len(bodies) == len(recs)
    for body, rec in zip(bodies, sorted(recs, key=lambda x: x["title"])):
        item = body["messages"][-1]["content"]
        if rec["name"]:
            assert item == ("Judge the sentiment toward the potential short-term stock value of "
                            f"{rec['name']} in the article below:\n<article>{rec['title']}</article>")
        else:  # no name: exactly what the evaluator sends today
            assert item == f"<article>{rec['title']}</article>"
        assert body == {
            "model": MODEL, "messages": sentiment_chat(rec["title"], rec["name"]), "temperature": 0.2,
            "max_tokens": 1024, "seed": 0,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "SentimentReply", "schema": json_schema(), "strict": True}},
        }
    # the user message is written in one place, and without a name it is the evaluator's unchanged
    assert sentiment_chat("t")[-1]["content"] == user_message("t") == user_message("t", " ") == "<article>t</article>"


def test_free_format_sends_no_schema(data: Path, tmp_path: Path) -> None:
    with OpenAIStandin([MODEL]) as server:
        assert teacher(server.url, data, tmp_path / "out", "--format", "free", "--seed", "7").exit_code == 0
        assert all("response_format" not in b and b["seed"] == 7 for b in server.bodies())


# -- validation, retries, drops ----------------------------------------------------------------------------------------
def test_invalid_reply_is_asked_again_with_a_new_seed_then_dropped_with_its_reason(data: Path, tmp_path: Path) -> None:
    recs = [json.loads(line) for line in data.read_text("utf-8").splitlines()]
    retried, dropped = recs[1]["title"], recs[2]["title"]
    bad = {retried: [FENCED], dropped: [OUT_OF_RANGE, FENCED, "  "]}
    out = tmp_path / "out"
    with OpenAIStandin([MODEL], reply_fn=script(bad)) as server:
        r = teacher(server.url, data, out, "--max-attempts", "3")
        assert r.exit_code == 0, r.output
        seeds = {t: [b["seed"] for b in server.bodies() if title_of(b) == t] for t in (retried, dropped)}
    assert seeds == {retried: [0, 1], dropped: [0, 1, 2]}  # attempt k: seed + k - 1
    lines = read_lines(out / "teacher.jsonl")
    assert [x["id"] for x in lines] == [rec["id"] for rec in recs]  # one line per input record, in input order
    ok = lines[1]
    assert ok["status"] == "accepted" and ok["attempts"] == 2 and ok["seed"] == 1 and ok["raw"] == GOOD
    assert (ok["reasoning"], ok["sentiment"], ok["confidence"]) == ("외국인 순매수 → 상승 기대", 0.5, 0.8)
    assert [x["reason"].split(":")[0] for x in ok["rejected"]] == ["not_json"] and ok["rejected"][0]["raw"] == FENCED
    gone = lines[2]
    assert gone["status"] == "dropped" and gone["attempts"] == 3 and "raw" not in gone
    assert gone["reason"] == "empty: no text"  # the last attempt's reason
    assert [x["reason"].split(":")[0] for x in gone["rejected"]] == ["schema", "not_json", "empty"]
    assert "sentiment" in gone["rejected"][0]["reason"]
    assert all(x["status"] == "accepted" and x["attempts"] == 1 for i, x in enumerate(lines) if i not in (1, 2))
    assert "1 after a retry" in r.stdout and "1 dropped" in r.stdout


def test_max_attempts_one_drops_at_the_first_invalid_reply(data: Path, tmp_path: Path) -> None:
    title = read_lines(data)[0]["title"]
    with OpenAIStandin([MODEL], reply_fn=script({title: [FENCED]})) as server:
        assert teacher(server.url, data, tmp_path / "out", "--max-attempts", "1").exit_code == 0
        assert len(server.bodies()) == 6
    first = read_lines(tmp_path / "out" / "teacher.jsonl")[0]
    assert first["status"] == "dropped" and first["attempts"] == 1 and first["reason"].startswith("not_json:")


def test_a_429_is_waited_out_and_is_not_an_attempt(data: Path, tmp_path: Path) -> None:
    title = read_lines(data)[3]["title"]
    limited = Scripted(status=429, error="Rate limit reached", headers={"Retry-After": "7"})
    slept: list[float] = []
    with OpenAIStandin([MODEL], reply_fn=script({title: [limited, limited]})) as server:
        be = get_backend("openai", model=MODEL, host=server.url, concurrency=4, sleep=slept.append)
        cfg = TeacherConfig(backend="openai", model=MODEL, host=server.url, data=str(data), out=str(tmp_path / "o"),
                            max_attempts=2)
        sheet, new = run_teacher(cfg, backend=be, progress=False)
        sent = [b for b in server.bodies() if title_of(b) == title]
    assert slept == [7.0, 7.0] and new == 6
    assert [b["seed"] for b in sent] == [0, 0, 0]  # the same attempt, sent again
    rec = read_lines(tmp_path / "o" / "teacher.jsonl")[3]
    assert rec["status"] == "accepted" and rec["attempts"] == 1 and rec["rejected"] == []
    assert sheet["counts"]["replies"] == 6 and sheet["counts"]["accepted_first_attempt"] == 6


# -- files -------------------------------------------------------------------------------------------------------------
def test_datasheet_counts_and_tokens(data: Path, tmp_path: Path) -> None:
    recs = read_lines(data)
    bad = {recs[0]["title"]: [FENCED, FENCED], recs[4]["title"]: [OUT_OF_RANGE] * 2, recs[5]["title"]: ["[1]"]}
    out = tmp_path / "out"
    with OpenAIStandin([MODEL], reply_fn=script(bad)) as server:
        assert teacher(server.url, data, out, "--max-attempts", "2").exit_code == 0
        bodies = server.bodies()
    sheet = json.loads((out / "datasheet.json").read_text("utf-8"))
    c = sheet["counts"]
    assert c == {
        "records": 6, "labelled": 6, "accepted": 4, "accepted_first_attempt": 3, "accepted_after_retry": 1,
        "dropped": 2, "accepted_by_attempt": {"1": 3, "2": 1},
        "dropped_by_reason": {"empty": 0, "not_utf8": 0, "not_json": 1, "not_object": 0, "schema": 1},
        "invalid_replies_by_reason": {"empty": 0, "not_utf8": 0, "not_json": 2, "not_object": 1, "schema": 2},
        "replies": 9, "direction_vs_label": c["direction_vs_label"],
    }
    assert len(bodies) == 9
    # GOOD's sentiment is positive: it agrees with [상승] records
    gold = {r["id"]: r["label"] for r in recs}
    accepted = [x for x in read_lines(out / "teacher.jsonl") if x["status"] == "accepted"]
    agree = sum(gold[x["id"]] == "[상승]" for x in accepted)
    assert c["direction_vs_label"] == {"agree": agree, "disagree": 4 - agree, "neutral": 0, "no_label": 0}
    # tokens: the sums of what the server reported for every reply, invalid ones included
    prompt = completion = 0
    replies = {t: list(v) for t, v in bad.items()}
    for b in bodies:
        title = title_of(b)
        text = replies[title].pop(0) if replies.get(title) else GOOD
        u = usage(sum(len(m["content"]) for m in b["messages"]), text)
        prompt, completion = prompt + u["prompt_tokens"], completion + u["completion_tokens"]
    assert sheet["tokens"] == {"prompt": prompt, "completion": completion, "total": prompt + completion,
                               "replies_without_token_counts": 0}
    assert all(isinstance(v, int) for v in c.values() if not isinstance(v, dict))
    md = (out / "datasheet.md").read_text("utf-8")
    assert "| accepted after a retry | 1 |" in md and "| dropped | 2 |" in md


def test_sharegpt_assistant_turn_is_the_raw_reply_byte_for_byte(data: Path, tmp_path: Path) -> None:
    recs = read_lines(data)
    out = tmp_path / "out"
    with OpenAIStandin([MODEL], reply_fn=script({recs[2]["title"]: [FENCED] * 3})) as server:
        assert teacher(server.url, data, out).exit_code == 0
    teacher_lines = read_lines(out / "teacher.jsonl")
    convs = read_lines(out / "sharegpt.jsonl")
    accepted = [(rec, t) for rec, t in zip(recs, teacher_lines) if t["status"] == "accepted"]
    assert len(convs) == len(accepted) == 5
    for conv, (rec, t) in zip(convs, accepted):
        # the evaluator's whole chat (system prompt, five worked examples, the item naming the stock), then the reply
        turns = conv["conversations"]
        assert [x["from"] for x in turns] == ["system"] + ["human", "gpt"] * 6
        assert turns[0]["value"] == SYSTEM_PROMPT and turns[-2]["value"] == user_message(rec["title"], rec["name"])
        assert [x["value"] for x in turns[:-1]] == [m["content"] for m in sentiment_chat(rec["title"], rec["name"])]
        gpt = turns[-1]
        assert gpt["value"].encode("utf-8") == GOOD.encode("utf-8") == t["raw"].encode("utf-8")
        assert check_strict(gpt["value"])[0] is not None


def test_rerun_makes_no_request_and_changes_no_file(data: Path, tmp_path: Path) -> None:
    recs = read_lines(data)
    out = tmp_path / "out"
    with OpenAIStandin([MODEL], reply_fn=script({recs[1]["title"]: [FENCED]})) as server:
        assert teacher(server.url, data, out, "--concurrency", "2").exit_code == 0
        before, n = snapshot(out), len(server.requests)
        mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
        r = teacher(server.url, data, out)  # --concurrency is how, not what: it may change
        assert r.exit_code == 0, r.output
        assert "nothing was requested" in r.stdout
        assert len(server.requests) == n  # not even the server check
    assert snapshot(out) == before and set(before) == set(OWN_FILES)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_other_arguments_are_refused_naming_the_keys(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OpenAIStandin([MODEL, "other"]) as server:
        assert teacher(server.url, data, out).exit_code == 0
        before, n = snapshot(out), len(server.requests)
        r = teacher(server.url, data, out, "--max-attempts", "5", "--seed", "3")
        assert r.exit_code == 2
        assert "max_attempts: 3 -> 5" in r.stderr and "seed: 0 -> 3" in r.stderr and "--overwrite" in r.stderr
        r = teacher(server.url, data, out, model="other")
        assert r.exit_code == 2 and "model: 'llama3-70b-instruct' -> 'other'" in r.stderr
        assert len(server.requests) == n and snapshot(out) == before
        # --overwrite starts over (its own files only)
        (out / "notes.txt").write_text("mine", encoding="utf-8")
        r = teacher(server.url, data, out, "--seed", "3", "--overwrite")
        assert r.exit_code == 0, r.output
        assert {b["seed"] for b in server.bodies()[6:]} == {3}
    assert (out / "notes.txt").read_text("utf-8") == "mine"


def test_a_changed_dataset_is_refused(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OpenAIStandin([MODEL]) as server:
        assert teacher(server.url, data, out).exit_code == 0
        write_data(data, n=7)
        r = teacher(server.url, data, out)
    assert r.exit_code == 2 and "data_sha256" in r.stderr and "n_records: 6 -> 7" in r.stderr


def test_an_interrupted_run_resumes_and_ends_as_a_one_shot_run(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    recs = write_data(data, n=40)
    bad = {recs[3]["title"]: [FENCED], recs[20]["title"]: [OUT_OF_RANGE] * 3, recs[33]["title"]: [FENCED]}
    with OpenAIStandin([MODEL], reply_fn=script(bad)) as server:
        assert teacher(server.url, data, tmp_path / "whole").exit_code == 0
    with OpenAIStandin([MODEL], reply_fn=script(bad)) as server:
        cfg = TeacherConfig(backend="openai", model=MODEL, host=server.url, data=str(data), out=str(tmp_path / "cut"))

        def stop(n: int) -> None:
            raise KeyboardInterrupt  # killed after the first batch was written

        with pytest.raises(KeyboardInterrupt):
            run_teacher(cfg, progress=False, on_batch=stop)
        first = len(server.bodies())
        cut = tmp_path / "cut"
        assert len(read_lines(cut / "teacher.jsonl")) == 16 and not (cut / "datasheet.json").exists()
        with open(cut / "teacher.jsonl", "a", encoding="utf-8") as f:
            f.write('{"id": "000660-117", "sta')  # a line torn by the kill
        r = teacher(server.url, data, cut)
        assert r.exit_code == 0, r.output
        later = {title_of(b) for b in server.bodies()[first:]}
    assert later == {rec["title"] for rec in recs[16:]}  # nothing asked twice
    for name in ("teacher.jsonl", "sharegpt.jsonl", "datasheet.json", "datasheet.md"):
        if name.startswith("datasheet"):  # the host (the stand-in's port) is part of the config
            continue
        assert (cut / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    a, b = (json.loads((d / "datasheet.json").read_text("utf-8")) for d in (cut, tmp_path / "whole"))
    assert a["counts"] == b["counts"] and a["tokens"] == b["tokens"] and a["files"] == b["files"]


def test_sharegpt_catches_up_after_a_kill_between_the_two_appends(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OpenAIStandin([MODEL]) as server:
        assert teacher(server.url, data, out).exit_code == 0
        whole = snapshot(out)
        (out / "sharegpt.jsonl").write_text("", encoding="utf-8")
        n = len(server.requests)
        assert teacher(server.url, data, out).exit_code == 0
        assert len(server.requests) == n
    assert snapshot(out) == whole


# -- refusals ----------------------------------------------------------------------------------------------------------
def test_files_it_did_not_write_are_never_touched(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "datasheet.json").write_text('{"mine": true}', encoding="utf-8")  # e.g. a dataset folder's datasheet
    with OpenAIStandin([MODEL]) as server:
        for extra in ((), ("--overwrite",)):
            r = teacher(server.url, data, out, *extra)
            assert r.exit_code == 2 and "did not write" in r.stderr
        r = teacher(server.url, data, data.parent)  # --out holding --data
        assert r.exit_code == 2 and "--data" in r.stderr
        assert not server.bodies()
    assert (out / "datasheet.json").read_text("utf-8") == '{"mine": true}'
    assert sorted(p.name for p in out.iterdir()) == ["datasheet.json"]


@pytest.mark.parametrize(("extra", "message"), [
    (("--n-ctx", "4096"), "--n-ctx applies to --backend llamacpp, not openai"),
    (("--max-attempts", "0"), "--max-attempts must be an integer >= 1"),
    (("--backend", "gpt4"), "--backend must be one of"),
])
def test_bad_arguments_are_one_line_errors(data: Path, tmp_path: Path, extra: tuple[str, ...], message: str) -> None:
    with OpenAIStandin([MODEL]) as server:
        r = teacher(server.url, data, tmp_path / "out", *extra)
        assert not server.bodies()
    assert r.exit_code == 2 and message in r.stderr and not (tmp_path / "out").exists()


def test_hf_teacher_needs_free_format_and_a_chat_template(data: Path, tmp_path: Path, tiny_neox_dir: Path) -> None:
    r = teacher("", data, tmp_path / "a", backend="hf", model=str(tiny_neox_dir))
    assert r.exit_code == 2 and "--format free" in r.stderr
    with pytest.raises(TeacherError, match="no chat template"):
        run_teacher(TeacherConfig(backend="hf", model=str(tiny_neox_dir), data=str(data), out=str(tmp_path / "b"),
                                  format="free"), progress=False)
    assert not (tmp_path / "b").exists()  # the model is loaded before anything is written


def test_an_unreachable_teacher_leaves_no_file(data: Path, tmp_path: Path) -> None:
    from ..standins.ollama_standin import closed_port_url

    r = teacher(closed_port_url() + "/v1", data, tmp_path / "out")
    assert r.exit_code == 2 and r.stderr.startswith("error: openai: cannot reach the server")
    assert not (tmp_path / "out").exists()


def test_a_server_that_stops_the_run_keeps_what_was_labelled(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    recs = write_data(data, n=20)
    stop = {recs[18]["title"]: [Scripted(status=429, error="quota", headers={"Retry-After": "86400"})]}
    out = tmp_path / "out"
    with OpenAIStandin([MODEL], reply_fn=script(stop)) as server:
        r = teacher(server.url, data, out)
        assert r.exit_code == 3 and r.stderr.startswith("rate-limited: openai:")
        assert "16 records are labelled" in r.stderr and len(read_lines(out / "teacher.jsonl")) == 16
        n = len(server.bodies())
        r = teacher(server.url, data, out)  # later, the quota back
        assert r.exit_code == 0, r.output
        assert len(server.bodies()) - n == 4
    assert [x["id"] for x in read_lines(out / "teacher.jsonl")] == [rec["id"] for rec in recs]


# -- any backend that generates ----------------------------------------------------------------------------------------
def test_ollama_can_be_the_teacher(data: Path, tmp_path: Path) -> None:
    recs = read_lines(data)
    out = tmp_path / "out"
    title = recs[0]["title"]

    def reply(body: dict) -> str:
        item = body["messages"][-1]["content"]
        return FENCED if title in item and body["options"]["seed"] == 0 else GOOD

    with OllamaStandin(["llama3:latest"], reply_fn=reply) as server:
        r = teacher(server.url, data, out, backend="ollama", model="llama3")
        assert r.exit_code == 0, r.output
        chats = server.bodies()
    assert len(chats) == 7
    first = [b for b in chats if title in b["messages"][-1]["content"]]
    assert [b["options"]["seed"] for b in first] == [0, 1]
    assert first[0]["messages"] == sentiment_chat(title, recs[0]["name"]) and first[0]["format"] == json_schema()
    lines = read_lines(out / "teacher.jsonl")
    assert lines[0]["attempts"] == 2 and all(x["status"] == "accepted" for x in lines)
    sheet = json.loads((out / "datasheet.json").read_text("utf-8"))
    assert sheet["tokens"]["prompt"] > 0 and sheet["tokens"]["replies_without_token_counts"] == 0
    assert [c["conversations"][-1]["value"] for c in read_lines(out / "sharegpt.jsonl")] == [GOOD] * 6


def test_a_teacher_file_that_is_not_this_runs_is_refused(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with OpenAIStandin([MODEL]) as server:
        assert teacher(server.url, data, out).exit_code == 0
        lines = (out / "teacher.jsonl").read_text("utf-8").splitlines(keepends=True)
        (out / "teacher.jsonl").write_text(lines[1] + lines[0] + "".join(lines[2:]), encoding="utf-8")
        r = teacher(server.url, data, out)
    assert r.exit_code == 2 and "teacher.jsonl:1: not the teacher record of --data's record 1" in r.stderr


@pytest.mark.parametrize(("raw", "kind"), [
    (GOOD, None), ("", "empty"), ("  \n", "empty"), (FENCED, "not_json"), ('{"a": 1, "a": 2}', "not_json"),
    ("[1, 2]", "not_object"), (OUT_OF_RANGE, "schema"), ('{"reasoning": "x", "sentiment": 0.1}', "schema"),
    ('{"reasoning": "x", "sentiment": "0.1", "confidence": 1}', "schema"), ("{\"reasoning\": \"\ufffd\"}", "not_utf8"),
    (b'{"reasoning": "\xff", "sentiment": 0.1, "confidence": 1}', "not_utf8"),
])
def test_check_strict_gives_the_strict_verdict_and_its_reason(raw: str | bytes, kind: str | None) -> None:
    from kofinsent.prompts.sentiment import parse_strict

    reply, reason = check_strict(raw)
    assert (reply is None) == (parse_strict(raw) is None) == (kind is not None)
    assert (reason is None) if kind is None else reason.startswith(kind + ": ") and "\n" not in reason

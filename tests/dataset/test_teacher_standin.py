"""The package's stand-in teacher (kofinsent.dataset.teacher_standin): deterministic, OpenAI-compatible, and marked
SYNTHETIC everywhere it leaves a trace (its model listing, every reasoning, the teacher's datasheet)."""
from __future__ import annotations

import json
from pathlib import Path

import requests

from kofinsent.backends import get_backend
from kofinsent.backends.base import GenOptions
from kofinsent.dataset.teacher import TeacherConfig, run_teacher
from kofinsent.dataset.teacher_standin import OWNER, STANDIN_MODEL, TeacherStandin, standin_reply
from kofinsent.prompts.sentiment import check_strict, json_schema, sentiment_chat
from kofinsent.tiny import forum_titles


def test_replies_are_a_function_of_title_and_seed_and_say_synthetic() -> None:
    titles = forum_titles(400, seed=3)
    assert [standin_reply(t, 0) for t in titles] == [standin_reply(t, 0) for t in titles]
    first = [check_strict(standin_reply(t, 0))[0] for t in titles]
    retried = [t for t, r in zip(titles, first) if r is None and check_strict(standin_reply(t, 1))[0] is not None]
    dropped = [t for t in titles if all(check_strict(standin_reply(t, s))[0] is None for s in range(3))]
    assert retried and dropped and len(dropped) < len(retried) < len(titles) // 5  # both paths run, most pass at once
    for t, r in zip(titles, first):
        if r is not None:
            assert r.reasoning.startswith("SYNTHETIC stand-in reply, not a model's judgement")
    up = check_strict(standin_reply("삼성전자 내일 가즈아", 1))[0]
    down = check_strict(standin_reply("삼성전자 손절합니다", 1))[0]
    assert up.sentiment > 0.5 and down.sentiment < -0.5 and up.confidence == down.confidence == 0.8


def test_it_speaks_the_openai_api_the_backend_uses(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-matter")
    with TeacherStandin() as server:
        models = requests.get(server.url + "/models", timeout=5).json()["data"]
        assert [(m["id"], m["owned_by"]) for m in models] == [(STANDIN_MODEL, OWNER)]
        backend = get_backend("openai", model=STANDIN_MODEL, host=server.url, concurrency=2)
        title = "가상하이닉스 급등 가즈아"
        (g,) = backend.generate([sentiment_chat(title, "가상하이닉스")],
                                GenOptions(max_new_tokens=1024, temperature=0.2, seed=1, json_schema=json_schema()))
        backend.close()
        assert g.text == standin_reply(title, 1) and g.meta["prompt_tokens"] > 500
        assert g.meta["system_fingerprint"] == OWNER
        r = requests.post(server.url + "/chat/completions", json={"model": "gpt-4", "messages": []}, timeout=5)
        assert r.status_code == 404 and "gpt-4" in r.json()["error"]["message"]
        assert server.replies == 1 and server.keyed == 1  # a backend built by hand sends the environment's key


def _data(path: Path, n: int = 40) -> Path:
    recs = [{"id": i, "code": "900010", "name": "합성전자", "title": t, "label": "[상승]" if i % 2 else "[하락]"}
            for i, t in enumerate(forum_titles(n, seed=5))]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    return path


def test_a_teacher_run_against_it_is_marked_synthetic(tmp_path: Path) -> None:
    data = _data(tmp_path / "train.jsonl")
    with TeacherStandin() as server:
        cfg = TeacherConfig(backend="openai", model=STANDIN_MODEL, host=server.url, data=str(data),
                            out=str(tmp_path / "t"))
        sheet, new = run_teacher(cfg, progress=False)
    assert new == 40 and sheet["synthetic"] is True and sheet["config"]["synthetic"] is True  # by its model name
    assert sheet["counts"]["accepted"] + sheet["counts"]["dropped"] == 40
    md = (tmp_path / "t" / "datasheet.md").read_text(encoding="utf-8")
    assert "**SYNTHETIC**" in md.splitlines()[2]
    # a real teacher's datasheet says nothing of the kind
    assert TeacherConfig(backend="openai", model="llama3-70b", data="x", out="y").is_synthetic is False

"""``kofinsent dataset sharegpt --out`` that resolves to ``--data`` is refused (exit 2, one ``error:`` line naming both
flags); the dataset file is left byte for byte as it was. It used to be replaced by the ShareGPT lines, exit 0."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kofinsent.cli import app


def _train(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    recs = [{"id": f"005930-{i}", "title": f"제목 {i}", "label": ("[상승]", "[하락]")[i % 2]} for i in range(4)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "hardlink"])
def test_sharegpt_out_over_its_data_is_refused(tmp_path: Path, spelling: str) -> None:
    data = _train(tmp_path / "ds" / "train.jsonl")
    out = {"same": data, "dotdot": tmp_path / "ds" / ".." / "ds" / "train.jsonl",
           "symlink": tmp_path / "link.jsonl", "hardlink": tmp_path / "hard.jsonl"}[spelling]
    if spelling == "symlink":
        os.symlink(data, out)
    elif spelling == "hardlink":
        os.link(data, out)
    before = _sha(data)
    r = CliRunner().invoke(app, ["dataset", "sharegpt", "--data", str(data), "--out", str(out)])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "--out" in lines[0] and "--data" in lines[0] and str(data) in lines[0]
    assert _sha(data) == before
    assert not r.stdout.strip()


def test_sharegpt_next_to_its_data_still_works(tmp_path: Path) -> None:
    data = _train(tmp_path / "ds" / "train.jsonl")
    r = CliRunner().invoke(app, ["dataset", "sharegpt", "--data", str(data), "--out", str(data.with_name("sg.jsonl"))])
    assert r.exit_code == 0, r.output
    assert len(data.with_name("sg.jsonl").read_text(encoding="utf-8").splitlines()) == 4

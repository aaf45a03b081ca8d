"""``kofinsent report --out DIR`` deletes only what it wrote itself (listed in DIR/.kofinsent-report.json): a user's
own notes or plots in DIR survive a rerun, a rerun stays byte-identical, and DIR may not be (or sit in) a run."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kofinsent.cli import app
from kofinsent.report import build_report

MANIFEST = ".kofinsent-report.json"


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _user_files(out: Path) -> dict[str, bytes]:
    files = {"notes.md": b"# my notes\n", "figures/my-plot.png": b"\x89PNG my own plot",
             "figures/my-plot.pdf": b"%PDF- my own plot", "figures/keep.txt": b"x", "report.bib": b"@article{}"}
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    return files


def test_a_rerun_keeps_the_users_files_and_the_same_bytes(real_data_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    build_report([real_data_run], out)
    first = _tree(out)
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert sorted(manifest["files"]) == sorted(k for k in first if k != MANIFEST)
    mine = _user_files(out)
    build_report([real_data_run], out)
    for name, data in mine.items():
        assert (out / name).read_bytes() == data, name
    assert {k: v for k, v in _tree(out).items() if k not in mine} == first


def test_a_figure_no_longer_called_for_is_removed(demo_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    build_report([demo_run / "eval/ll_2shot", demo_run / "eval/gen_2shot"], out)
    two = set(_tree(out))
    mine = _user_files(out)
    build_report([demo_run / "eval/ll_2shot"], out)
    one = set(_tree(out)) - set(mine)
    gone = two - one
    assert gone and all(g.startswith("figures/confusion-") for g in gone), gone
    assert sorted(json.loads((out / MANIFEST).read_text(encoding="utf-8"))["files"]) == sorted(one - {MANIFEST})
    assert all((out / name).read_bytes() == data for name, data in mine.items())


def test_without_a_manifest_nothing_but_the_reports_own_files_is_replaced(real_data_run: Path,
                                                                         tmp_path: Path) -> None:
    """An old report (before manifests): its files are overwritten by name, nothing else is deleted."""
    out = tmp_path / "old"
    build_report([real_data_run], out)
    (out / MANIFEST).unlink(missing_ok=True)  # (reports before manifests had none)
    (out / "figures" / "confusion-from-an-older-run.png").write_bytes(b"old")  # maybe ours, maybe not: kept
    mine = _user_files(out)
    build_report([real_data_run], out)
    assert (out / "figures" / "confusion-from-an-older-run.png").read_bytes() == b"old"
    assert all((out / name).read_bytes() == data for name, data in mine.items())
    assert (out / MANIFEST).is_file()


def test_a_manifest_cannot_make_the_report_delete_anything_else(real_data_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "r"
    build_report([real_data_run], out)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep", encoding="utf-8")
    mine = _user_files(out)
    (out / MANIFEST).write_text(json.dumps({"files": ["../../victim.txt", str(victim), "notes.md",
                                                      "figures/../notes.md", "figures/keep.txt", "report.bib"]}),
                                encoding="utf-8")
    build_report([real_data_run], out)
    assert victim.read_text(encoding="utf-8") == "keep"
    assert all((out / name).read_bytes() == data for name, data in mine.items())


@pytest.mark.parametrize("where", ["the run", "inside the run"])
def test_report_out_in_a_run_directory_is_refused(real_data_run: Path, tmp_path: Path, where: str) -> None:
    run = tmp_path / "runs" / real_data_run.name
    shutil.copytree(real_data_run, run)
    before = _tree(run)
    out = run if where == "the run" else run / "eval" / "report"
    r = CliRunner().invoke(app, ["report", str(run), "--out", str(out)])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--out" in lines[0] and str(run) in lines[0]
    assert _tree(run) == before
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in real_data_run.iterdir())

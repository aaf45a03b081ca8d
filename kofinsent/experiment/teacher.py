"""The ``teacher`` step of ``kofinsent run``: ``[teacher]`` -> ``<run>/teacher/`` (seed 000's data step).

It runs :func:`kofinsent.dataset.teacher.run_teacher` on the table's data (default the train split) into
``<run>/teacher/``: teacher.jsonl, sharegpt.jsonl (the evaluator's chat + the teacher's reply, what ``[train.*]``
reads as ``@teacher/sharegpt.jsonl``), datasheet.json / .md and teacher_config.json. The runner marks the step done
only after this returns, i.e. after the datasheet is written. Unlike the other steps, a step cut off halfway is not
cleared: the teacher appends its records batch by batch and the same call goes on from them (hours of API calls are
not thrown away); only a teacher run of other arguments there (e.g. a changed prompt) is cleared first.

``standin = true``: kofinsent's SYNTHETIC stand-in (:class:`~kofinsent.dataset.teacher_standin.TeacherStandin`) is
served on 127.0.0.1 for the step, as the replay forum is for the crawl; the datasheet and the report say SYNTHETIC.
No API key is sent to it, whatever the environment holds.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kofinsent.experiment.config import ExperimentConfig
from kofinsent.experiment.sections import teacher_config

TEACHER_DIR = "teacher"


@contextmanager
def _served(standin: bool, log: Callable[[str], None]) -> Iterator[str | None]:
    if not standin:
        yield None
        return
    from kofinsent.dataset.teacher_standin import TeacherStandin

    with TeacherStandin() as server:
        log(f"  teacher: SYNTHETIC stand-in (not a model) on {server.url}")
        yield server.url


def run_teacher_step(cfg: ExperimentConfig, run_dir: Path, resolve: Callable[[str], str],
                     fresh: Callable[[str], Path], log: Callable[[str], None], progress: bool) -> dict[str, Any]:
    """Label ``[teacher].data`` into ``run_dir/teacher/``; returns run.json's headline counts. ``resolve`` maps an
    ``@`` path into the run, ``fresh`` clears a step directory inside it."""
    from kofinsent.backends import get_backend
    from kofinsent.dataset.teacher import previous_run_differs, run_teacher

    section = cfg.teacher
    assert section is not None
    tc = teacher_config(section, resolve(section.data), str(run_dir / TEACHER_DIR))
    with _served(section.standin, log) as url:
        if url is not None:
            tc.host = url
        if differs := previous_run_differs(tc):
            log(f"  teacher/ holds a teacher run of other arguments ({'; '.join(differs)}): starting over")
            fresh(TEACHER_DIR)
        backend = None
        if url is not None:  # the loopback stand-in never gets the OPENAI_API_KEY of the environment
            backend = get_backend("openai", **{**tc.backend_kwargs(), "api_key": ""})
        try:
            sheet, new = run_teacher(tc, backend=backend, progress=progress)
        finally:
            if backend is not None:
                backend.close()  # type: ignore[attr-defined]
    c = sheet["counts"]
    log(f"  teacher {tc.model}: {c['accepted']} accepted ({c['accepted_after_retry']} after a retry), "
        f"{c['dropped']} dropped of {c['records']} ({new} labelled now)"
        + (" [SYNTHETIC stand-in]" if sheet.get("synthetic") else ""))
    return {"model": tc.model, "synthetic": bool(sheet.get("synthetic")), "records": c["records"],
            "accepted": c["accepted"], "accepted_after_retry": c["accepted_after_retry"], "dropped": c["dropped"]}


__all__ = ["TEACHER_DIR", "run_teacher_step"]

"""``--batch-size auto``: token-budget batches give the same scores, out-of-memory halves the budget (simulated, with
its cache), the shared prefix is read once per batch and never copied per row, and metrics.json records it all."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kofinsent import tiny
from kofinsent.backends import BackendError, GenOptions
from kofinsent.backends import hf as H
from kofinsent.backends.hf import HFBackend
from kofinsent.cli import app
from kofinsent.prompts.direction import CONTINUATIONS, seed2shot

EQUAL = 1e-4  # float32, the bound (the paths agree to ~1e-6)


def requests(n: int, seed: int = 11) -> list[tuple[str, str]]:
    return [(seed2shot().context(t), c) for t in tiny.forum_titles(n, seed) for c in CONTINUATIONS]


def max_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b))


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One torch thread (tiny models), the budget cache in a temporary folder, no budgets from other tests."""
    monkeypatch.setenv("KOFINSENT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(H, "_BUDGETS", {})
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(params=["neox", "llama"])
def model_dir(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue(f"tiny_{request.param}_dir")


def test_defaults_and_bad_values(tiny_neox_dir: Path) -> None:
    b = HFBackend(str(tiny_neox_dir))
    assert b.batch_size == 16 and not b.auto  # CPU: today's default
    assert HFBackend(str(tiny_neox_dir), batch_size="auto").auto
    for bad in (0, -1, "big", 2.5, True):
        with pytest.raises(BackendError, match="batch_size"):
            HFBackend(str(tiny_neox_dir), batch_size=bad)


def test_auto_batches_score_as_the_plain_path(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small budgets so that several batches of different sizes run, longest first."""
    monkeypatch.setattr(H, "CPU_TOKEN_BUDGETS", {"loglik-cached": 90, "loglik-plain": 300, "generate": 200})
    reqs = requests(30)
    ref = HFBackend(str(model_dir), batch_size=1, prefix_cache=False).loglikelihood(reqs)
    cached = HFBackend(str(model_dir), batch_size="auto", verify_tokens=True)
    plain = HFBackend(str(model_dir), batch_size="auto", prefix_cache=False)
    assert max_diff(cached.loglikelihood(reqs), ref) <= EQUAL
    assert max_diff(plain.loglikelihood(reqs), ref) <= EQUAL
    assert cached.cached_requests == len(reqs) and cached.token_fallbacks == 0
    rep = cached.batching()
    assert rep["batch_size"] == "auto" and rep["token_budget"] == 90
    run = rep["batching"]["loglik-cached"]
    assert run["batches"] > 2 and 1 < run["rows_per_batch"] < 30
    assert run["tokens"] <= 90 * run["batches"] and run["budget_source"] == "cpu default"
    plain_run = plain.batching()["batching"]["loglik-plain"]
    assert plain_run["rows"] == len(reqs) and plain_run["batches"] > 2


def test_auto_generation_keeps_the_order_and_the_texts(tiny_neox_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(H, "CPU_TOKEN_BUDGETS", {**H.CPU_TOKEN_BUDGETS, "generate": 400})
    prompts = [seed2shot().context(t) for t in tiny.forum_titles(9, 4)]
    opts = GenOptions(max_new_tokens=5)
    one = HFBackend(str(tiny_neox_dir), batch_size=1).generate(prompts, opts)
    auto = HFBackend(str(tiny_neox_dir), batch_size="auto")
    got = auto.generate(prompts, opts)
    assert [g.text for g in got] == [g.text for g in one]  # greedy, float32: left padding changes nothing
    st = auto.batching()["batching"]["generate"]
    assert st["rows"] == 9 and st["batches"] >= 2


class FakeOOM:
    """Raises CUDA's out-of-memory error for any forward pass over more than ``limit`` tokens."""

    def __init__(self, backend: HFBackend, limit: int) -> None:
        self.limit, self.real, self.failures = limit, backend._forward, 0
        backend._forward = self  # type: ignore[method-assign]

    def __call__(self, keep=None, **inputs):
        if inputs["input_ids"].numel() > self.limit:
            self.failures += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.real(keep=keep, **inputs)


def test_out_of_memory_halves_the_budget_and_caches_it(tiny_neox_dir: Path) -> None:
    """The GPU search on a CPU: start at MAX_TOKEN_BUDGET, halve on each (simulated) OOM, same scores, the budget
    kept in the process and in the cache file, and read back from either by the next backend."""
    reqs = requests(40)
    ref = HFBackend(str(tiny_neox_dir), prefix_cache=False).loglikelihood(reqs)
    b = HFBackend(str(tiny_neox_dir), batch_size="auto")
    b._search_budget = True  # what a CUDA device sets
    oom = FakeOOM(b, limit=300)
    assert max_diff(b.loglikelihood(reqs), ref) <= EQUAL
    budget, source = b._budgets["loglik-cached"]
    assert oom.failures >= 3 and 150 <= budget <= 300 and source == "halved on out-of-memory"
    assert b.batching()["token_budget"] == budget and b.batching()["oom_halvings"] == oom.failures
    cache = json.loads(H.budget_cache_file().read_text(encoding="utf-8"))
    (key, entry), = cache.items()
    assert entry["tokens"] == budget and key.endswith("|loglik-cached") and "float32" in key

    again = HFBackend(str(tiny_neox_dir), batch_size="auto")
    again._search_budget = True
    assert again._budget("loglik-cached") == budget and again._budgets["loglik-cached"][1] == "found in this process"
    H._BUDGETS.clear()
    fresh = HFBackend(str(tiny_neox_dir), batch_size="auto")
    fresh._search_budget = True
    oom2 = FakeOOM(fresh, limit=300)
    assert max_diff(fresh.loglikelihood(reqs), ref) <= EQUAL
    assert oom2.failures == 0 and fresh._budgets["loglik-cached"][1].startswith("cache ")


def test_out_of_memory_on_one_row_or_a_fixed_batch_is_raised(tiny_neox_dir: Path) -> None:
    fixed = HFBackend(str(tiny_neox_dir), batch_size=8)
    FakeOOM(fixed, limit=10)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        fixed.loglikelihood(requests(4))
    auto = HFBackend(str(tiny_neox_dir), batch_size="auto", prefix_cache=False)
    FakeOOM(auto, limit=10)  # not even one row fits
    with pytest.raises(torch.cuda.OutOfMemoryError):
        auto.loglikelihood(requests(2))


def test_the_prefix_is_read_once_per_batch_never_copied_per_row(model_dir: Path) -> None:
    """Expand, not repeat: every batch's attention gets the one [1, kv heads, P, D] prefix tensor per layer (the same
    storage in every batch), while the batch itself has many rows; the scores are the plain path's."""
    from transformers import AttentionInterface

    seen: list[tuple[int, int, int, int]] = []  # (rows, prefix batch dim, prefix length, storage)

    def spy(module, query, key, value, attention_mask, **kw):
        state = H._PREFIX.get()
        if state is not None and not state.record and module.layer_idx == 0:
            kp, _ = state.kv[0]
            seen.append((query.shape[0], kp.shape[0], kp.shape[2], kp.data_ptr()))
            assert key.shape[0] == query.shape[0] and key.shape[2] == query.shape[2]  # the batch's own tokens only
        return H._shared_prefix_attention(module, query, key, value, attention_mask, **kw)

    reqs = requests(24)
    b = HFBackend(str(model_dir), batch_size=8)
    AttentionInterface.register(H.SHARED_PREFIX_ATTENTION, spy)
    try:
        got = b.loglikelihood(reqs)
    finally:
        AttentionInterface.register(H.SHARED_PREFIX_ATTENTION, H._shared_prefix_attention)
    assert max_diff(got, HFBackend(str(model_dir), prefix_cache=False).loglikelihood(reqs)) <= EQUAL
    assert [s[0] for s in seen] == [8, 8, 8]
    assert {s[1] for s in seen} == {1} and len({s[3] for s in seen}) == 1
    assert seen[0][2] == b.last_prefix_tokens - 1
    assert b._base_config._attn_implementation != H.SHARED_PREFIX_ATTENTION  # restored after each pass


def test_bfloat16_auto_keeps_the_argmax(tiny_neox_dir: Path) -> None:
    reqs = requests(20)
    ref = HFBackend(str(tiny_neox_dir), dtype="bfloat16", prefix_cache=False).loglikelihood(reqs)
    got = HFBackend(str(tiny_neox_dir), dtype="bfloat16", batch_size="auto").loglikelihood(reqs)
    pairs = lambda ll: [ll[i] >= ll[i + 1] for i in range(0, len(ll), 2)]
    close = [abs(ref[i] - ref[i + 1]) > 0.05 for i in range(0, len(ref), 2)]  # ties within bf16 noise aside
    assert [a for a, c in zip(pairs(got), close) if c] == [a for a, c in zip(pairs(ref), close) if c]
    assert max_diff(got, ref) < 0.5


# -- through `kofinsent eval` ----------------------------------------------------------------------------------------
def write_split(path: Path, n: int) -> Path:
    titles = tiny.forum_titles(n, 3)
    path.write_text("".join(json.dumps({"id": str(i), "title": t, "label": "[상승]" if i % 2 else "[하락]"},
                                       ensure_ascii=False) + "\n" for i, t in enumerate(titles)), encoding="utf-8")
    return path


@pytest.mark.parametrize("method", ["loglikelihood", "generate"])
def test_eval_batch_size_auto_is_recorded(tiny_neox_dir: Path, tmp_path: Path, method: str) -> None:
    data = write_split(tmp_path / "test.jsonl", 20)
    runs = {}
    for name, extra in (("auto", ["--batch-size", "auto"]), ("default", []), ("fixed", ["--batch-size", "4"])):
        out = tmp_path / name
        r = CliRunner().invoke(app, ["eval", "--backend", "hf", "--model", str(tiny_neox_dir), "--data", str(data),
                                     "--out", str(out), "--method", method, "--max-new-tokens", "3", *extra])
        assert r.exit_code == 0, r.output
        runs[name] = (json.loads((out / "metrics.json").read_text(encoding="utf-8")),
                      [json.loads(x) for x in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()])
    auto, default, fixed = (runs[k][0] for k in ("auto", "default", "fixed"))
    assert auto["batch_size"] == "auto" and auto["token_budget"] >= 1 and auto["rows_per_batch"] > 1
    assert default["batch_size"] == 16 and default["token_budget"] is None  # CPU default, as before
    assert fixed["batch_size"] == 4 and fixed["token_budget"] is None and fixed["rows_per_batch"] <= 4
    key = "loglik" if method == "loglikelihood" else "output"
    for other in ("default", "fixed"):
        for a, b in zip(runs["auto"][1], runs[other][1]):
            assert a["id"] == b["id"]
            if key == "loglik":
                assert max(abs(x - y) for x, y in zip(a[key], b[key])) <= EQUAL
            else:
                assert a[key] == b[key]
    assert json.loads((tmp_path / "auto" / "config.json").read_text(encoding="utf-8"))["batch_size"] == "auto"


@pytest.mark.parametrize("bad", ["0", "big", "-3"])
def test_eval_refuses_a_bad_batch_size(tiny_neox_dir: Path, tmp_path: Path, bad: str) -> None:
    data = write_split(tmp_path / "test.jsonl", 4)
    r = CliRunner().invoke(app, ["eval", "--backend", "hf", "--model", str(tiny_neox_dir), "--data", str(data),
                                 "--out", str(tmp_path / "out"), "--batch-size", bad])
    assert r.exit_code != 0 and "--batch-size" in r.output and "Traceback" not in r.output

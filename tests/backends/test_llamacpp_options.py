"""llama.cpp on the GPU: ``n_gpu_layers`` (all layers by default when the build offloads, else 0, recorded) and
``n_ctx`` (default 8192) from the backend, the eval CLI and experiments; refused for the other backends; the 5-shot
sentiment chat (~3,500 tokens) now fits by default."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kofinsent.backends import BackendError, GenOptions, get_backend
from kofinsent.backends.options import backend_kwargs
from kofinsent.cli import app
from kofinsent.evaluation.evaluate import EvalConfig, EvalConfigError, make_backend

llama_cpp = pytest.importorskip("llama_cpp")
runner = CliRunner()


@pytest.fixture(scope="module")
def test_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "test.jsonl"
    recs = [{"id": f"005930-{i}", "name": "삼성전자", "title": t, "label": lab}
            for i, (t, lab) in enumerate([("삼성전자 외국인 순매수 가즈아", "[상승]"), ("반도체 업황 꺾였다 손절", "[하락]")])]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    return path


def test_defaults_follow_the_build_and_are_recorded(tiny_gguf_f32: Path) -> None:
    be = get_backend("llamacpp", model=str(tiny_gguf_f32))
    try:
        ident = be.identity()
        offload = bool(llama_cpp.llama_supports_gpu_offload())
        assert ident["n_ctx"] == 8192
        assert ident["gpu_offload_supported"] is offload
        assert ident["n_gpu_layers"] == (-1 if offload else 0)
        assert ident["n_gpu_layers_source"] == ("default: the build offloads to a GPU" if offload
                                                else "default: a CPU-only build")
    finally:
        be.close()


def test_a_gpu_build_offloads_every_layer_by_default(tiny_gguf_f32: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}
    real = llama_cpp.Llama

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **{**kwargs, "n_gpu_layers": 0})  # this machine may have no GPU: load on the CPU

    monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: True)
    monkeypatch.setattr(llama_cpp, "Llama", spy)
    be = get_backend("llamacpp", model=str(tiny_gguf_f32), n_ctx=256)
    try:
        assert seen["n_gpu_layers"] == -1 and seen["n_ctx"] == 256
        assert be.identity()["n_gpu_layers"] == -1
        assert be.identity()["n_gpu_layers_source"] == "default: the build offloads to a GPU"
    finally:
        be.close()
    be = get_backend("llamacpp", model=str(tiny_gguf_f32), n_ctx=256, n_gpu_layers=0)
    try:
        assert seen["n_gpu_layers"] == 0 and be.identity()["n_gpu_layers_source"] == "set"
    finally:
        be.close()


@pytest.mark.parametrize(("kw", "message"), [({"n_ctx": 0}, "--n-ctx must be an integer >= 1"),
                                             ({"n_gpu_layers": -2}, "--n-gpu-layers must be an integer >= -1")])
def test_bad_values_are_backend_errors(tiny_gguf_f32: Path, kw: dict, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        get_backend("llamacpp", model=str(tiny_gguf_f32), **kw)


def test_generation_only_backend_keeps_no_logits_and_refuses_scoring(tiny_gguf_f32: Path) -> None:
    be = get_backend("llamacpp", model=str(tiny_gguf_f32), n_ctx=2048, n_batch=64, logits_all=False)
    try:
        assert not be.supports_loglikelihood and be.identity()["logits_all"] is False
        assert be.llm.scores.shape[0] == 64  # n_batch rows, not n_ctx
        with pytest.raises(BackendError, match="generation only"):
            be.loglikelihood([("a", " b")])
        (g,) = be.generate(["삼성전자"], GenOptions(max_new_tokens=3))
        assert g.meta["completion_tokens"] >= 1
    finally:
        be.close()


# -- the evaluator ----------------------------------------------------------------------------------------------------
def test_make_backend_passes_them_to_llamacpp_only(tmp_path: Path, test_split: Path) -> None:
    kw = backend_kwargs("llamacpp", "m.gguf", n_gpu_layers=20, n_ctx=4096, scoring=False)
    assert (kw["n_gpu_layers"], kw["n_ctx"], kw["logits_all"]) == (20, 4096, False)
    assert "n_gpu_layers" not in backend_kwargs("llamacpp", "m.gguf")  # None: the backend's default
    for backend, extra in (("ollama", "Ollama server sets its own"), ("openai", "the server decides"), ("hf", "")):
        for opts, flags in (({"n_ctx": 4096}, "--n-ctx applies"), ({"n_gpu_layers": -1}, "--n-gpu-layers applies"),
                            ({"n_ctx": 1, "n_gpu_layers": 1}, "--n-gpu-layers / --n-ctx apply")):
            cfg = EvalConfig(backend=backend, model="x", data=str(test_split), out=str(tmp_path / "o"), **opts)
            with pytest.raises(EvalConfigError, match=f"{flags} to --backend llamacpp, not {backend}.*{extra}"):
                make_backend(cfg)
            with pytest.raises(EvalConfigError, match=flags):
                cfg.validate()
    with pytest.raises(EvalConfigError, match="--n-ctx must be an integer >= 1"):
        EvalConfig(backend="llamacpp", model="x", data=str(test_split), out="o", n_ctx=0).validate()


def test_cli_options_reach_the_backend(tiny_gguf_f32: Path, test_split: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = runner.invoke(app, ["eval", "--backend", "llamacpp", "--model", str(tiny_gguf_f32), "--data", str(test_split),
                            "--out", str(out), "--n-ctx", "1024", "--n-gpu-layers", "0"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "metrics.json").read_text("utf-8"))
    config = json.loads((out / "config.json").read_text("utf-8"))
    assert (config["n_ctx"], config["n_gpu_layers"]) == (1024, 0)
    ident = metrics["backend"]
    assert (ident["n_ctx"], ident["n_gpu_layers"], ident["n_gpu_layers_source"]) == (1024, 0, "set")
    assert ident["logits_all"] is True  # log-likelihood scoring keeps every position's logits
    r = runner.invoke(app, ["eval", "--backend", "ollama", "--model", "llama3", "--data", str(test_split),
                            "--out", str(tmp_path / "o2"), "--n-ctx", "4096"])
    assert r.exit_code == 2 and "--n-ctx applies to --backend llamacpp, not ollama" in r.stderr


def test_sentiment_run_fits_the_default_context(tiny_gguf_f32: Path, test_split: Path, tmp_path: Path) -> None:
    """The five worked examples make a ~3,500-token prompt: 2048 (the old fixed n_ctx) fails, the default works."""
    args = ["eval", "--backend", "llamacpp", "--model", str(tiny_gguf_f32), "--data", str(test_split),
            "--prompt", "sentiment-json", "--method", "sentiment", "--max-new-tokens", "4"]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "small"), "--n-ctx", "2048"])
    assert r.exit_code == 2 and "exceed context window of 2048" in r.stderr
    out = tmp_path / "run"
    r = runner.invoke(app, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "metrics.json").read_text("utf-8"))
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text("utf-8").splitlines()]
    assert metrics["n"] == 2 and len(preds) == 2
    assert metrics["backend"]["n_ctx"] == 8192 and metrics["backend"]["logits_all"] is False
    assert all(2048 < p["meta"]["prompt_tokens"] < 8192 and p["meta"]["completion_tokens"] >= 1 for p in preds)


def test_experiments_take_them_from_the_eval_table() -> None:
    from kofinsent.experiment.config import ConfigError, load_config

    toml = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.toml"
    cfg = load_config(toml, ["eval.llama_gguf_f16.n_ctx=4096", "eval.llama_gguf_f16.n_gpu_layers=-1"])
    spec = cfg.eval_runs()["llama_gguf_f16"]
    assert (spec["n_ctx"], spec["n_gpu_layers"]) == (4096, -1)
    assert cfg.eval_runs()["llama_gguf_q8_0"]["n_ctx"] is None
    with pytest.raises(ConfigError, match="eval.neox_base.*--n-ctx applies to --backend llamacpp, not hf"):
        load_config(toml, ["eval.neox_base.n_ctx=4096"])

"""``kofinsent export gguf`` / ``export ollama`` on tiny Llamas: llama.cpp loads what is written and agrees with
transformers; quantized files say what they are; the Modelfile; registration with the Ollama stand-in."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kofinsent.cli import app

from ..standins.ollama_standin import OllamaStandin, closed_port_url

TEXTS = ("삼성전자 실적 발표 후 주가 상승 기대", "<|start_header_id|>user<|end_header_id|>\n\n카카오 언제 오르나요?<|eot_id|>")
runner = CliRunner()


def _cli(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def exported(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export64")
    res = _cli("export", "gguf", "--model", str(tiny_llama_dir), "--quant", "q8_0,f32,f16,q4_k_m", "--out", str(out),
               "--name", "tiny")
    assert res.exit_code == 0, res.output
    return out


def _hf(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


def _load(path: Path):
    return llama_cpp.Llama(str(path), n_ctx=256, logits_all=True, verbose=False, seed=0, n_threads=1,
                           n_threads_batch=1, type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)


def _greedy(llm, ids: list[int], n: int) -> list[int]:
    got = []
    for t in llm.generate(ids, temp=0.0, reset=True):
        got.append(t)
        if len(got) == n:
            break
    return got


def _top1_agreement(llm, model, ids: list[int]) -> float:
    llm.reset()
    llm.eval(ids)
    ours = np.asarray(llm.scores[: len(ids)]).argmax(-1)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy().argmax(-1)
    return float((ours == ref).mean())


def test_manifest_lists_every_file_with_its_sha256(exported: Path) -> None:
    m = json.loads((exported / "manifest.json").read_text())
    assert [f["quant"] for f in m["files"]] == ["q8_0", "f32", "f16", "q4_k_m"] and m["failed"] == {}
    for f in m["files"]:
        path = exported / f["file"]
        assert f["file"] == f"tiny-{f['quant']}.gguf"
        assert f["size"] == path.stat().st_size
        assert f["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    by = {f["quant"]: f for f in m["files"]}
    assert by["q8_0"]["file_type_name"] == "MOSTLY_Q8_0" and not by["q8_0"]["fallback"]
    assert by["f16"]["file_type_name"] == "MOSTLY_F16" and by["f32"]["file_type_name"] == "ALL_F32"
    # hidden 64: no row is a multiple of 256, so llama.cpp writes legacy types and the manifest says so
    assert by["q4_k_m"]["file_type_name"] == "MOSTLY_Q4_K_M" and by["q4_k_m"]["fallback"]
    assert "Q4_K" not in by["q4_k_m"]["tensor_types"]
    assert not list(exported.glob("kofinsent-gguf-*"))  # the temporary directory is gone


@pytest.mark.parametrize("quant", ["f32", "f16"])
def test_float_exports_give_transformers_greedy_tokens(exported: Path, tiny_llama_dir: Path, quant: str) -> None:
    model, tok = _hf(tiny_llama_dir)
    llm = _load(exported / f"tiny-{quant}.gguf")
    try:
        for text in TEXTS:
            ids = tok(text)["input_ids"]
            with torch.no_grad():
                ref = model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False,
                                     eos_token_id=None)[0, len(ids):].tolist()
            assert _greedy(llm, ids, len(ref)) == ref, text
    finally:
        llm.close()


def test_q8_0_loads_and_mostly_agrees_with_transformers(exported: Path, tiny_llama_dir: Path) -> None:
    from kofinsent.backends.llamacpp import LlamaCppBackend
    from kofinsent.export.quantize import gguf_info

    path = exported / "tiny-q8_0.gguf"
    info = gguf_info(path)
    assert info["file_type_name"] == "MOSTLY_Q8_0" and "Q8_0" in info["tensor_types"]
    model, tok = _hf(tiny_llama_dir)
    backend = LlamaCppBackend(str(path), n_ctx=256, n_threads=1)  # the evaluator's backend loads it
    try:
        agree = [_top1_agreement(backend.llm, model, tok(t)["input_ids"]) for t in TEXTS]
    finally:
        backend.llm.close()
    assert min(agree) >= 0.8, agree


@pytest.mark.parametrize("quant,main", [("q4_k_m", "Q4_K"), ("q5_k_m", "Q5_K")])
def test_k_quants_on_a_256_wide_model(tiny_llama256: Path, tmp_path: Path, quant: str, main: str) -> None:
    res = _cli("export", "gguf", "--model", str(tiny_llama256), "--quant", quant, "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    f = json.loads((tmp_path / "manifest.json").read_text())["files"][0]
    assert f["file_type_name"] == f"MOSTLY_{quant.upper()}" and main in f["tensor_types"] and not f["fallback"]
    model, tok = _hf(tiny_llama256)
    llm = _load(tmp_path / f["file"])
    try:
        agree = [_top1_agreement(llm, model, tok(t)["input_ids"]) for t in TEXTS]
    finally:
        llm.close()
    assert min(agree) >= 0.5, agree


def test_modelfile(exported: Path) -> None:
    from kofinsent.export.ollama import parse_modelfile
    from kofinsent.prompts.sentiment import SYSTEM_PROMPT

    text = (exported / "Modelfile").read_text()
    assert text.startswith("FROM ./tiny-q8_0.gguf\n")  # the first quant asked for
    for stop in ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"):
        assert f'PARAMETER stop "{stop}"' in text
    for line in ("PARAMETER temperature 0.2", "PARAMETER num_ctx 8192", "PARAMETER num_predict 1024"):
        assert line in text.splitlines()
    spec = parse_modelfile(text)
    assert spec["from"] == "./tiny-q8_0.gguf" and spec["system"] == SYSTEM_PROMPT
    assert spec["template"].startswith("{{ if .System }}<|start_header_id|>system<|end_header_id|>")
    assert "{{ .Prompt }}<|eot_id|>" in spec["template"] and spec["template"].endswith("{{ .Response }}<|eot_id|>")
    assert spec["parameters"] == {"stop": ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"],
                                  "temperature": 0.2, "num_ctx": 8192, "num_predict": 1024}


def test_run_dir_adapter_is_merged_before_export(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    base, tok = _hf(tiny_llama_dir)
    torch.manual_seed(0)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                                 init_lora_weights=False))  # random B: the adapter changes outputs
    run = tmp_path / "run"
    peft_model.save_pretrained(run / "adapter")
    (run / "config.json").write_text(json.dumps({"model": str(tiny_llama_dir)}))
    merged = peft_model.merge_and_unload().eval()
    res = _cli("export", "gguf", "--run", str(run), "--quant", "f32", "--out", str(tmp_path / "out"))
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["name"] == "run" and "merged" in manifest["hf_model"]
    ids = tok(TEXTS[0])["input_ids"]
    llm = _load(tmp_path / "out" / "run-f32.gguf")
    try:
        llm.eval(ids)
        ours = np.asarray(llm.scores[: len(ids)])
    finally:
        llm.close()
    with torch.no_grad():
        ref = merged(torch.tensor([ids])).logits[0].numpy()
        plain, _ = _hf(tiny_llama_dir)
        base_logits = plain(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(ours - ref).max() < 1e-3
    assert np.abs(ours - base_logits).max() > 1e-2  # the adapter is in the export


def test_errors(tiny_llama_dir: Path, tmp_path: Path) -> None:
    res = _cli("export", "gguf", "--model", str(tiny_llama_dir), "--quant", "f16,q3_k", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2
    assert "unknown quant type 'q3_k'; supported: f32, f16, q8_0, q4_k_m, q5_k_m" in res.output
    neox = tmp_path / "neox"
    neox.mkdir()
    (neox / "config.json").write_text(json.dumps({"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"]}))
    res = _cli("export", "gguf", "--model", str(neox), "--quant", "f16", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "only LlamaForCausalLM is supported" in res.output
    res = _cli("export", "gguf", "--run", str(tmp_path / "o"), "--model", str(neox), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "exactly one of --run" in res.output
    (tmp_path / "emptyrun").mkdir()
    res = _cli("export", "gguf", "--run", str(tmp_path / "emptyrun"), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "neither merged/ nor adapter/" in res.output


def test_export_ollama_uploads_the_blob_and_creates_the_model(exported: Path) -> None:
    from kofinsent.prompts.sentiment import SYSTEM_PROMPT

    gguf = exported / "tiny-q8_0.gguf"
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    with OllamaStandin([]) as server:
        res = _cli("export", "ollama", "--gguf", str(gguf), "--name", "kofinsent-tiny:q8_0", "--host", server.url)
        assert res.exit_code == 0, res.output
        assert server.blobs[digest] == gguf.read_bytes()
        assert [r.path for r in server.requests if r.method == "POST"] == [f"/api/blobs/{digest}", "/api/create"]
        create = server.bodies("/api/create")[0]
        assert "kofinsent-tiny:q8_0" in server.models
    assert create["model"] == "kofinsent-tiny:q8_0" and create["files"] == {"tiny-q8_0.gguf": digest}
    assert create["system"] == SYSTEM_PROMPT and create["template"].endswith("{{ .Response }}<|eot_id|>")
    assert create["parameters"] == {"stop": ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"],
                                    "temperature": 0.2, "num_ctx": 8192, "num_predict": 1024}
    assert f"created kofinsent-tiny:q8_0 from tiny-q8_0.gguf ({digest})" in res.output


def test_export_ollama_with_another_modelfile(exported: Path, tmp_path: Path) -> None:
    mf = tmp_path / "Modelfile"
    mf.write_text('FROM ./x.gguf\nSYSTEM "Be brief."\nPARAMETER temperature 0\nPARAMETER stop "<|eot_id|>"\n')
    with OllamaStandin([]) as server:
        res = _cli("export", "ollama", "--gguf", str(exported / "tiny-f16.gguf"), "--name", "t", "--host",
                   server.url, "--modelfile", str(mf))
        assert res.exit_code == 0, res.output
        create = server.bodies("/api/create")[0]
    assert create["system"] == "Be brief." and "template" not in create
    assert create["parameters"] == {"temperature": 0, "stop": ["<|eot_id|>"]}


def test_export_ollama_errors(exported: Path, tmp_path: Path) -> None:
    url = closed_port_url()
    res = _cli("export", "ollama", "--gguf", str(exported / "tiny-q8_0.gguf"), "--name", "t", "--host", url)
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot reach the Ollama server at {url}")
    res = _cli("export", "ollama", "--gguf", str(tmp_path / "missing.gguf"), "--name", "t", "--host", url)
    assert res.exit_code == 2 and "not found" in res.output

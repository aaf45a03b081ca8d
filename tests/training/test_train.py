"""`kofinsent train` on the tiny GPT-NeoX: label masks, 8-bit + LoRA learning a cue-word task (checked with
`kofinsent eval --adapter`), exact resume, the PEFT adapter format, merge, and the error paths of issue #5 item 3."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kofinsent.cli import app
from kofinsent.prompts import seed2shot
from kofinsent.training.collators import PadCollator
from kofinsent.training.errors import TrainError
from kofinsent.training.hf_trainer import train
from kofinsent.training.options import TrainConfig
from kofinsent.training.records import encode_example

from .conftest import cue_records, write_jsonl

runner = CliRunner()


def kofinsent(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# -- label masks ----------------------------------------------------------------------------------------------------
def _batch(tok, loss: str):
    titles = [("삼성전자 가즈아", "[상승]"), ("카카오 외국인 기관 실적 공시 손절 진짜 ㅋㅋ", "[하락]")]
    feats = [encode_example(tok, t, y, loss) for t, y in titles]
    return titles, feats, PadCollator(tok.pad_token_id)(feats)


def test_answer_only_mask_is_label_tokens_plus_eos_when_pad_is_eos(tiny_tokenizer):
    tok = tiny_tokenizer
    assert tok.pad_token_id == tok.eos_token_id  # polyglot-ko's situation
    titles, feats, batch = _batch(tok, "answer-only")
    short = 0 if len(feats[0]["input_ids"]) < len(feats[1]["input_ids"]) else 1
    assert batch["attention_mask"][short].sum() < batch["input_ids"].shape[1]  # the short row is padded ...
    assert (batch["input_ids"][short][batch["attention_mask"][short] == 0] == tok.eos_token_id).all()  # ... with EOS
    for i, (title, label) in enumerate(titles):
        n_ctx = len(tok(seed2shot().context(title))["input_ids"])
        expected = tok(" " + label, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        kept = batch["labels"][i][batch["labels"][i] != -100].tolist()
        assert kept == expected
        n = int(batch["attention_mask"][i].sum())
        assert batch["labels"][i][n_ctx:n].tolist() == expected  # exactly the positions after the prompt
        assert tok.decode(kept[:-1]).strip() == label


def test_full_loss_masks_only_padding(tiny_tokenizer):
    _, feats, batch = _batch(tiny_tokenizer, "full")
    for i, f in enumerate(feats):
        n = len(f["input_ids"])
        assert batch["labels"][i][:n].tolist() == f["input_ids"]  # every real token, the final EOS included
        assert f["input_ids"][-1] == tiny_tokenizer.eos_token_id
        assert (batch["labels"][i][n:] == -100).all()
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)


# -- learning ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_8bit(tiny_neox_dir, cue_data, tmp_path_factory) -> Path:
    """8-bit base + LoRA r16 on the cue task through the CLI (~5 s of training on 2 CPU cores)."""
    out = tmp_path_factory.mktemp("runs") / "cue8"
    r = kofinsent("train", "--model", tiny_neox_dir, "--data", cue_data / "train.jsonl", "--out", out,
                  "--load-in-8bit", "--lora-r", 16, "--lora-alpha", 32, "--lr", 3e-3, "--max-steps", 150,
                  "--batch-size", 8, "--loss", "answer-only", "--save-steps", 75, "--val-size", 20,
                  "--logging-steps", 25, "--seed", 0)
    assert r.exit_code == 0, r.output
    assert "val_accuracy=" in r.output
    return out


def test_8bit_lora_learns_cue_task_through_eval(run_8bit, tiny_neox_dir, cue_data, tmp_path):
    test = cue_data / "test.jsonl"
    base = kofinsent("eval", "--backend", "hf", "--model", tiny_neox_dir, "--data", test, "--out", tmp_path / "b")
    assert base.exit_code == 0, base.output
    tuned = kofinsent("eval", "--backend", "hf", "--model", tiny_neox_dir, "--adapter", run_8bit / "adapter",
                      "--load-in-8bit", "--data", test, "--out", tmp_path / "a")
    assert tuned.exit_code == 0, tuned.output
    base_acc = read(tmp_path / "b" / "metrics.json")["accuracy"]
    tuned_acc = read(tmp_path / "a" / "metrics.json")["accuracy"]
    print(f"cue task: base accuracy {base_acc:.3f}, 8-bit LoRA adapter accuracy {tuned_acc:.3f}")
    assert base_acc <= 0.65  # near chance (the balanced test split)
    assert tuned_acc >= 0.9

    metrics = read(run_8bit / "metrics.json")
    assert metrics["val_n"] == 20 and metrics["val_accuracy"] >= 0.9 and metrics["global_step"] == 150
    cfg = read(run_8bit / "config.json")
    from kofinsent.runs import sha256_file

    assert cfg["data_sha256"] == sha256_file(cue_data / "train.jsonl")
    assert cfg["quantization"] == "8bit" and cfg["target_modules"] == ["query_key_value"] and cfg["lora_r"] == 16
    assert cfg["n_train"] == 220 and cfg["n_val"] == 20
    assert read(run_8bit / "environment.json")["packages"]["peft"]
    assert sorted(p.name for p in run_8bit.glob("checkpoint-*")) == ["checkpoint-150", "checkpoint-75"]


def test_adapter_is_peft_format_and_loads(run_8bit, tiny_neox_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = run_8bit / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert read(adapter / "adapter_config.json")["r"] == 16
    base = AutoModelForCausalLM.from_pretrained(tiny_neox_dir, dtype=torch.float32)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = base(ids).logits
        model = PeftModel.from_pretrained(base, adapter)
        after = model(ids).logits
    assert not torch.allclose(before, after)


def test_resume_from_checkpoint_matches_uninterrupted(tiny_neox_dir, cue_data, tmp_path):
    kw = {"model": str(tiny_neox_dir), "data": str(cue_data / "train.jsonl"), "lora_r": 8, "lora_alpha": 16,
          "lr": 2e-3, "max_steps": 30, "batch_size": 8, "save_steps": 15, "logging_steps": 1, "val_size": 20,
          "loss": "full", "seed": 3}
    full = train(TrainConfig(out=str(tmp_path / "a"), **kw))
    # an interrupted run: only its mid-run checkpoint survived
    shutil.copytree(tmp_path / "a" / "checkpoint-15", tmp_path / "b" / "checkpoint-15")
    resumed = train(TrainConfig(out=str(tmp_path / "b"), resume=True, **kw))
    print(f"resume: uninterrupted loss@30 {full['last_logged_loss']:.6f} val {full['val_loss']:.6f}; "
          f"resumed loss@30 {resumed['last_logged_loss']:.6f} val {resumed['val_loss']:.6f}")
    assert resumed["resumed_from"].endswith("checkpoint-15") and resumed["global_step"] == 30
    assert resumed["last_logged_loss"] == pytest.approx(full["last_logged_loss"], abs=1e-5)
    assert resumed["val_loss"] == pytest.approx(full["val_loss"], abs=1e-5)
    from safetensors.torch import load_file

    wa = load_file(tmp_path / "a" / "adapter" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "b" / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_merge_writes_full_model_equal_to_base_plus_adapter(tiny_neox_dir, cue_data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    r = kofinsent("train", "--model", tiny_neox_dir, "--data", cue_data / "train.jsonl", "--out", out,
                  "--max-steps", 5, "--lr", 1e-2, "--val-size", 0, "--merge")
    assert r.exit_code == 0, r.output
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    merged = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_neox_dir, dtype=torch.float32),
                                     out / "adapter")
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, peft(ids).logits, atol=1e-4)
    assert (out / "merged" / "tokenizer.json").is_file()
    assert read(out / "config.json")["loss"] == "full"  # --loss left out: the hf engine's default, as the seed


# -- errors -----------------------------------------------------------------------------------------------------------
def test_bad_target_modules_lists_linear_names(tiny_neox_dir, cue_data, tmp_path):
    r = kofinsent("train", "--model", tiny_neox_dir, "--data", cue_data / "train.jsonl", "--out", tmp_path / "r",
                  "--target-modules", "q_proj,v_proj", "--max-steps", 1)
    assert r.exit_code != 0
    assert "error:" in r.output and "q_proj" in r.output
    for name in ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"):
        assert name in r.output


def test_record_without_title_names_its_line(tiny_neox_dir, tmp_path):
    recs = cue_records(6, seed=5, prefix="x")
    del recs[3]["title"]
    data = write_jsonl(tmp_path / "train.jsonl", recs)
    r = kofinsent("train", "--model", tiny_neox_dir, "--data", data, "--out", tmp_path / "r", "--max-steps", 1)
    assert r.exit_code != 0
    assert f"error: {data}:4: record lacks title" in r.output
    recs = cue_records(6, seed=5, prefix="x")
    del recs[1]["label"]
    write_jsonl(data, recs)
    r = kofinsent("train", "--model", tiny_neox_dir, "--data", data, "--out", tmp_path / "r", "--max-steps", 1)
    assert r.exit_code != 0 and ":2: record lacks label" in r.output


def test_existing_run_dir_refused_unless_resume_or_overwrite(run_8bit, tiny_neox_dir, cue_data, tmp_path):
    args = ["train", "--model", tiny_neox_dir, "--data", cue_data / "train.jsonl", "--max-steps", 1]
    r = kofinsent(*args, "--out", run_8bit)
    assert r.exit_code != 0 and "already holds a run" in r.output and "--overwrite" in r.output
    assert read(run_8bit / "metrics.json")["global_step"] == 150  # untouched
    empty = tmp_path / "fresh"
    r = kofinsent(*args, "--out", empty, "--resume")
    assert r.exit_code != 0 and "no checkpoint" in r.output
    other = tmp_path / "other"
    shutil.copytree(run_8bit, other)
    r = kofinsent(*args, "--out", other, "--overwrite", "--val-size", 0, "--save-steps", 1)
    assert r.exit_code == 0, r.output
    assert read(other / "metrics.json")["global_step"] == 1
    assert sorted(p.name for p in other.glob("checkpoint-*")) == ["checkpoint-1"]


def test_8bit_without_bitsandbytes_is_a_clear_error(tiny_neox_dir, cue_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes -> ImportError
    with pytest.raises(TrainError, match="--load-in-8bit needs a working bitsandbytes"):
        train(TrainConfig(model=str(tiny_neox_dir), data=str(cue_data / "train.jsonl"), out=str(tmp_path / "r"),
                          load_in_8bit=True, max_steps=1))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_unsloth_engine_needs_cuda(tiny_neox_dir, cue_data, tmp_path):
    r = kofinsent("train", "--engine", "unsloth", "--model", tiny_neox_dir, "--data", cue_data / "train.jsonl",
                  "--out", tmp_path / "r")
    assert r.exit_code != 0 and "error:" in r.output and "CUDA" in r.output and "kofinsent[gpu]" in r.output
    assert "unsloth" not in sys.modules and not (tmp_path / "r").exists()


def test_fp16_on_cpu_is_refused(tiny_neox_dir, cue_data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("fp16 is allowed on CUDA")
    r = kofinsent("train", "--model", tiny_neox_dir, "--data", cue_data / "train.jsonl", "--out", tmp_path / "r",
                  "--precision", "fp16", "--max-steps", 1)
    assert r.exit_code != 0 and "needs CUDA" in r.output

"""`kofinsent train --engine unsloth`: the CPU-testable parts (ShareGPT validation, options, SFT arguments, resolved
config, tokenizer and label checks) and one real run on a tiny Llama that needs CUDA and unsloth (skipped without)."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kofinsent.cli import app
from kofinsent.dataset.sharegpt import conversation, export_sharegpt
from kofinsent.training.errors import TrainError
from kofinsent.training.options import TrainConfig
from kofinsent.training.unsloth import (
    EOT,
    INSTRUCTION_PART,
    RESPONSE_PART,
    TARGET_MODULES,
    FinalReplyCollator,
    check_llama3_tokenizer,
    check_response_labels,
    final_reply_only,
    load_sharegpt,
    resolved_config,
    sft_config_kwargs,
    unsupported_options,
)

from .conftest import cue_records, write_jsonl

runner = CliRunner()


def kofinsent(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def sharegpt(cue_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cue task's train split as `kofinsent dataset sharegpt` writes it (240 conversations)."""
    out = tmp_path_factory.mktemp("sharegpt") / "train.sharegpt.jsonl"
    export_sharegpt(cue_data / "train.jsonl", out)
    return out


# -- ShareGPT file -----------------------------------------------------------------------------------------------------
def test_reads_what_dataset_sharegpt_writes_jsonl_or_array(sharegpt, cue_data, tmp_path):
    convs = load_sharegpt(sharegpt)
    records = [json.loads(line) for line in (cue_data / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(convs) == len(records) == 240
    assert convs[0] == conversation(records[0]["title"], records[0]["label"])
    assert all(list(t) == ["value", "from"] for c in convs for t in c["conversations"])  # standardize_sharegpt's tie
    array = tmp_path / "train.json"
    array.write_text(json.dumps(convs[:5], ensure_ascii=False, indent=1), encoding="utf-8")
    assert load_sharegpt(array) == convs[:5]
    # `from` written first is read back with `value` first
    swapped = tmp_path / "swapped.jsonl"
    swapped.write_text(json.dumps({"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]})
                       + "\n", encoding="utf-8")
    assert load_sharegpt(swapped)[0]["conversations"][1] == {"value": "y", "from": "gpt"}


GOOD = json.dumps(conversation("삼성전자 가즈아", "[상승]"), ensure_ascii=False)


@pytest.mark.parametrize(("bad", "message"), [
    ('{"conversations": [', ":3: not JSON"),
    ('{"title": "x", "label": "[상승]"}', ":3: record lacks conversations"),
    ('{"conversations": []}', ":3: record lacks conversations"),
    ('{"conversations": [{"from": "human"}, {"from": "gpt", "value": "y"}]}', ":3: turn 1 lacks value"),
    ('{"conversations": [{"value": "x"}]}', ":3: turn 1 lacks from"),
    ('{"conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y", "w": 1}]}',
     ":3: turn 2 has keys other than from and value: w"),
    ('{"conversations": [{"from": "human", "value": "x"}, {"from": "bot", "value": "y"}]}',
     ":3: turn 2 is from 'bot'"),
    ('{"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "x"}]}',
     ":3: conversation has no gpt turn"),
    ("[1, 2]", ":3: not a JSON object"),
])
def test_bad_record_is_an_error_naming_its_line(tmp_path, bad, message):
    path = tmp_path / "sg.jsonl"
    path.write_text(f"{GOOD}\n\n{bad}\n{GOOD}\n", encoding="utf-8")
    with pytest.raises(TrainError) as e:
        load_sharegpt(path)
    assert str(e.value).startswith(f"{path}{message}")


def test_array_file_names_the_record_and_empty_file_is_refused(tmp_path):
    path = tmp_path / "sg.json"
    path.write_text("[" + GOOD + ', {"conversations": [{"from": "human", "value": "x"}]}]', encoding="utf-8")
    with pytest.raises(TrainError, match=r"sg\.json: record 2: conversation has no gpt turn"):
        load_sharegpt(path)
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(TrainError, match="holds no conversations"):
        load_sharegpt(path)


# -- options and configuration -----------------------------------------------------------------------------------------
def _cfg(data: Path, **kw) -> TrainConfig:
    return TrainConfig(**{"model": "m", "data": str(data), "out": "o", "loss": "answer-only", **kw})


def test_options_the_unsloth_engine_refuses(sharegpt, tmp_path):
    assert unsupported_options(_cfg(sharegpt)) == []
    bad = unsupported_options(_cfg(sharegpt, loss="full", precision="fp32"))
    assert [b.split(" (")[0] for b in bad] == ["--loss full", "--precision fp32"]
    # through the CLI: refused before CUDA is looked for, unsloth never imported, nothing written
    for opts, word in ((["--loss", "full"], "--loss full"), (["--precision", "fp32"], "--precision fp32")):
        r = kofinsent("train", "--engine", "unsloth", "--model", "m", "--data", sharegpt, "--out", tmp_path / "r",
                      *opts)
        assert r.exit_code == 2 and r.output.startswith("error: not available with --engine unsloth: ")
        assert word in r.output and "unsloth" not in sys.modules and not (tmp_path / "r").exists()
    r = kofinsent("train", "--engine", "gpu", "--model", "m", "--data", sharegpt, "--out", tmp_path / "r")
    assert r.exit_code == 2 and "--engine must be one of hf, unsloth, got 'gpu'" in r.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_engine_check_without_cuda_names_the_gpu_extra():
    from kofinsent.cli.train import _check_engine

    _check_engine("hf")
    _check_engine("unsloth", cuda=False)  # the name alone
    with pytest.raises(TrainError, match=r"needs a CUDA GPU and the gpu extra \(pip install 'kofinsent\[gpu\]'\)"):
        _check_engine("unsloth")
    assert "unsloth" not in sys.modules


@pytest.mark.parametrize("modern", [True, False])
def test_sft_arguments_are_valid_training_arguments(sharegpt, tmp_path, modern):
    """SFTConfig subclasses TrainingArguments: every argument but TRL's own must be a TrainingArguments field of the
    installed transformers, and the version-dependent names follow the fields offered."""
    from transformers import TrainingArguments

    ta_fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    trl_own = {"dataset_text_field", "packing", "max_length", "max_seq_length"}
    fields = ta_fields | ({"max_length"} if modern else {"max_seq_length", "warmup_ratio"})
    cfg = _cfg(sharegpt, max_steps=7, eval_steps=3, warmup_ratio=0.1, max_length=512)
    kw = sft_config_kwargs(cfg, fields, {"fp16": False, "bf16": False}, has_val=True)
    assert kw["dataset_text_field"] == "text" and kw["packing"] is False and kw["optim"] == "adamw_8bit"
    assert kw["max_steps"] == 7 and kw["eval_strategy"] == "steps" and kw["seed"] == 0
    if modern:
        assert kw["max_length"] == 512 and "max_seq_length" not in kw
    else:
        assert kw["max_seq_length"] == 512 and kw["warmup_ratio"] == 0.1 and "warmup_steps" not in kw
    kw = {k: v for k, v in kw.items() if k not in trl_own and k != "warmup_ratio"}
    args = TrainingArguments(**{**kw, "output_dir": str(tmp_path), "use_cpu": True})
    assert args.max_steps == 7 and args.optim.value == "adamw_8bit"
    no_val = sft_config_kwargs(_cfg(sharegpt), fields, {"fp16": False, "bf16": True}, has_val=False)
    assert no_val["eval_strategy"] == "no" and no_val["max_steps"] == -1 and no_val["bf16"] is True
    assert no_val.get("max_length", no_val.get("max_seq_length")) == 2048


def test_resolved_config_records_the_recipe(sharegpt):
    cfg = _cfg(sharegpt, lora_r=16)
    facts = {"quantization": "4bit", "target_modules": TARGET_MODULES, "eos_token_id": 7}
    got = resolved_config(cfg, "abc", 240, 228, 12, facts)
    assert got["engine"] == "unsloth" and got["data_format"] == "sharegpt" and got["data_sha256"] == "abc"
    assert (got["n_records"], got["n_train"], got["n_val"]) == (240, 228, 12)
    assert got["chat_template"] == "llama-3" and got["eos_token"] == EOT == "<|eot_id|>"
    assert got["instruction_part"] == INSTRUCTION_PART and got["response_part"] == RESPONSE_PART
    assert got["lora_r"] == 16 and got["model"] == "m" and got["quantization"] == "4bit"
    assert got["max_seq_length"] == 2048 and got["loss"] == "answer-only"
    json.dumps(got)  # config.json material


def test_tokenizer_check_wants_llama3_turn_tokens(tiny_llama_dir, tiny_tokenizer):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    check_llama3_tokenizer(AutoTokenizer.from_pretrained(tiny_llama_dir), "tiny-llama")
    plain = Tokenizer(models.BPE())
    plain.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    plain.train_from_iterator(["삼성전자 가즈아", "카카오 손절"] * 20,
                              trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                  show_progress=False))
    with pytest.raises(TrainError, match=r"polyglot has no single token for <\|begin_of_text\|>, .*<\|eot_id\|>"):
        check_llama3_tokenizer(PreTrainedTokenizerFast(tokenizer_object=plain), "polyglot")


def test_response_labels_must_end_with_eot():
    check_response_labels([-100, -100, 11, 12, 4], eot_id=4)
    with pytest.raises(TrainError, match="masked the whole first example"):
        check_response_labels([-100, -100], eot_id=4)
    with pytest.raises(TrainError, match=r"end with token 12, not <\|eot_id\|> \(4\)"):
        check_response_labels([-100, 11, 12], eot_id=4)


def test_only_the_final_reply_carries_loss():
    M = -100
    assert final_reply_only([M, 1, 2, M, M, 3, 4, M, 5, 6, M, M]) == [M] * 8 + [5, 6, M, M]
    assert final_reply_only([M, M, 7, 8]) == [M, M, 7, 8] and final_reply_only([M, M]) == [M, M]
    batch = FinalReplyCollator(lambda feats: {"labels": torch.tensor(feats), "input_ids": torch.tensor(feats)})(
        [[M, 1, M, 2], [3, M, 4, M]])
    assert batch["labels"].tolist() == [[M, M, M, 2], [M, M, 4, M]] and batch["input_ids"].tolist()[0][1] == 1


def _responses_only(ids: list[int], tok) -> list[int]:
    """What unsloth's train_on_responses_only keeps: the tokens after each assistant header up to the next user
    header (here on the llama-3 chat template's headers, single tokens on the tiny llama-3 tokenizer)."""
    resp = tok(RESPONSE_PART, add_special_tokens=False)["input_ids"]
    inst = tok(INSTRUCTION_PART, add_special_tokens=False)["input_ids"]
    labels, keep, i = [-100] * len(ids), False, 0
    while i < len(ids):
        if ids[i:i + len(resp)] == resp:
            keep, i = True, i + len(resp)
            continue
        if ids[i:i + len(inst)] == inst:
            keep = False
        if keep:
            labels[i] = ids[i]
        i += 1
    return labels


def test_on_a_teacher_conversation_the_loss_is_the_teachers_reply_and_its_eot(tiny_tokenizer):
    """A teacher record is the evaluator's five-shot chat + the reply: after train_on_responses_only the worked
    examples' replies would carry loss too; final_reply_only leaves exactly the teacher's reply and <|eot_id|>."""
    from kofinsent import tiny
    from kofinsent.prompts.sentiment import training_chat

    tok = tiny.llama3_tokenizer(tiny_tokenizer)
    reply = '{"reasoning": "외국인 순매수", "sentiment": 0.5, "confidence": 0.8}'
    text = tok.apply_chat_template(training_chat("삼성전자 가즈아", "삼성전자", reply), tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    every = _responses_only(ids, tok)
    assert sum(x != -100 for x in every) > 5 * len(tok(reply, add_special_tokens=False)["input_ids"])
    final = final_reply_only(every)
    kept = [x for x in final if x != -100]
    assert tok.decode(kept) == reply + EOT
    check_response_labels(final, tok.convert_tokens_to_ids(EOT))


# -- a real run: CUDA + unsloth ----------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the unsloth engine needs a CUDA GPU")
def test_unsloth_trains_resumes_merges_and_exports(tiny_tokenizer, cue_data, tmp_path):
    pytest.importorskip("unsloth")  # only imported once CUDA is known to be there: its import fails without it
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from kofinsent import tiny

    # head_dim 32 and dimensions that are multiples of 64 keep bitsandbytes' 4-bit blocks and Unsloth's kernels happy
    base = tiny.make_llama(tmp_path / "llama", tiny_tokenizer, hidden=128, heads=4, kv_heads=2, intermediate=256)
    data = tmp_path / "sg.jsonl"
    export_sharegpt(write_jsonl(tmp_path / "train.jsonl", cue_records(96, seed=4, prefix="u")), data)
    run = tmp_path / "run"
    common = ["train", "--engine", "unsloth", "--model", base, "--data", data, "--max-steps", 20, "--batch-size", 8,
              "--lr", 2e-3, "--save-steps", 10, "--logging-steps", 5, "--val-size", 8, "--max-length", 512]
    r = kofinsent(*common, "--out", run, "--merge")
    assert r.exit_code == 0, r.output

    cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert cfg["engine"] == "unsloth" and cfg["quantization"] == "4bit" and cfg["target_modules"] == TARGET_MODULES
    assert cfg["n_train"] == 88 and cfg["n_val"] == 8 and cfg["eos_token"] == EOT
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["global_step"] == 20 and math.isfinite(metrics["val_loss"])
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-20"]
    assert (run / "trainer_log.jsonl").read_text(encoding="utf-8").count("\n") >= 4
    assert json.loads((run / "environment.json").read_text(encoding="utf-8"))["packages"]["unsloth"]

    adapter = run / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    ids = torch.tensor([[5, 6, 7, 8]])
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    with torch.no_grad():
        before = model(ids).logits
        after = PeftModel.from_pretrained(model, adapter)(ids).logits
    assert not torch.allclose(before, after)
    assert AutoModelForCausalLM.from_pretrained(run / "merged").config.model_type == "llama"

    resumed = tmp_path / "resumed"
    shutil.copytree(run / "checkpoint-10", resumed / "checkpoint-10")
    r = kofinsent(*common, "--out", resumed, "--resume")
    assert r.exit_code == 0, r.output
    m2 = json.loads((resumed / "metrics.json").read_text(encoding="utf-8"))
    assert m2["global_step"] == 20 and m2["resumed_from"].endswith("checkpoint-10")
    r = kofinsent(*common, "--out", run)
    assert r.exit_code == 2 and "already holds a run" in r.output

    if importlib.util.find_spec("gguf"):  # the gguf extra: export the merged model as `kofinsent export` would
        r = kofinsent("export", "gguf", "--run", run, "--quant", "f16", "--out", tmp_path / "gguf")
        assert r.exit_code == 0, r.output
        assert (tmp_path / "gguf" / "run-f16.gguf").is_file()

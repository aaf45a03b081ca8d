"""Issue 15 point 2 on the CPU: ``--batch-size auto`` (the CPU default; the CUDA search with out-of-memory errors
simulated, its cache, and gradient accumulation keeping the effective batch), ``--packing`` (per-example losses equal
to padded batches on a tiny GPT-NeoX and Llama, for both loss modes, and the same training), the attention recorded,
the option parsing, and the validation scorer giving ``kofinsent eval``'s numbers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kofinsent import tiny
from kofinsent.cli import app
from kofinsent.training import batching
from kofinsent.training.collators import PackCollator, PadCollator
from kofinsent.training.errors import TrainError
from kofinsent.training.hf_trainer import train
from kofinsent.training.loading import load_model
from kofinsent.training.options import TrainConfig
from kofinsent.training.records import encode_example, split_validation

from .conftest import write_jsonl

runner = CliRunner()


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def adapter_weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "adapter" / "adapter_model.safetensors")


def assert_same_weights(a: Path, b: Path, atol: float = 1e-5) -> None:
    wa, wb = adapter_weights(a), adapter_weights(b)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst <= atol, worst


def base_kw(model_dir: Path, data: Path, **kw: object) -> dict:
    # no dropout: runs split differently into micro-batches must draw nothing at random
    return {"model": str(model_dir), "data": str(data), "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
            "lr": 2e-3, "save_steps": 1000, "logging_steps": 1, "val_size": 0, "loss": "full", "seed": 5, **kw}


# -- packing: the loss of each example equals the padded batch's --------------------------------------------------------
def per_example_losses(logits: torch.Tensor, labels: torch.Tensor, spans: list[tuple[int, int, int]]) -> list[float]:
    """Mean next-token NLL of each example, ``spans`` = (row, start, length) per example."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    out = []
    for row, start, n in spans:
        tgt = labels[row, start + 1:start + n]
        lp = logp[row, start:start + n - 1]
        keep = tgt != -100
        out.append(float(-lp[keep].gather(-1, tgt[keep].unsqueeze(-1)).mean()))
    return out


@pytest.mark.parametrize("arch", ["neox", "llama"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("loss", ["full", "answer-only"])
def test_packed_loss_equals_padded_per_example(arch, attn, loss, tiny_neox_dir, tiny_llama_dir):
    model_dir = tiny_neox_dir if arch == "neox" else tiny_llama_dir
    model, tok, facts = load_model(TrainConfig(model=str(model_dir), data="-", out="-", lora_dropout=0.0, packing=True,
                                               attn_implementation=attn))
    assert facts["attn_implementation_used"] == attn
    model.train()  # the training forward (no KV cache: load_model turns it off, packing needs that)
    titles = tiny.forum_titles(9, seed=3)
    feats = [encode_example(tok, t, ("[상승]", "[하락]")[i % 2], loss) for i, t in enumerate(titles)]
    lengths = [len(f["input_ids"]) for f in feats]
    padded = PadCollator(tok.pad_token_id)(feats)
    with torch.no_grad():
        out = model(**padded)
    ref = per_example_losses(out.logits, padded["labels"], [(i, 0, n) for i, n in enumerate(lengths)])
    for row_tokens in (None, 2 * max(lengths) + 5):  # one row (FlashAttention 2's layout) and capped rows
        pack = PackCollator(tok.pad_token_id, row_tokens)
        batch = pack(feats)
        assert "attention_mask" not in batch
        if row_tokens is None:
            assert batch["input_ids"].numel() == sum(lengths)  # not one pad
        spans: dict[int, tuple[int, int, int]] = {}
        for r, row in enumerate(pack.rows(lengths)):
            at = 0
            for i in row:
                spans[i] = (r, at, lengths[i])
                at += lengths[i]
        with torch.no_grad():
            packed = model(**batch)
        got = per_example_losses(packed.logits, batch["labels"], [spans[i] for i in range(len(feats))])
        assert got == pytest.approx(ref, abs=1e-5)
        assert float(packed.loss) == pytest.approx(float(out.loss), abs=1e-5)  # same targets, same mean


def test_pack_collator_layout(tiny_tokenizer):
    feats = [{"input_ids": [1] * n, "labels": [7] * n} for n in (5, 3, 4)]
    pack = PackCollator(0, row_tokens=8)
    assert pack.rows([5, 3, 4]) == [[0], [2, 1]]  # two rows for 12 tokens; longest first, into the emptiest row
    b = pack(feats)
    assert b["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1], [0, 1, 2, 3, 0, 1, 2]]
    assert b["labels"].tolist() == [[-100, 7, 7, 7, 7, -100, -100], [-100, 7, 7, 7, -100, 7, 7]]
    assert pack.rows([5, 5, 5]) == [[0], [1], [2]]  # 10 > 8: a row of its own each
    one = PackCollator(0, row_tokens=None)(feats)
    assert one["input_ids"].shape == (1, 12)


def test_packed_training_matches_padded(tiny_neox_dir, cue_data, tmp_path):
    kw = base_kw(tiny_neox_dir, cue_data / "train.jsonl", max_steps=4, batch_size=8, val_size=8)
    padded = train(TrainConfig(out=str(tmp_path / "pad"), **kw))
    packed = train(TrainConfig(out=str(tmp_path / "pack"), packing=True, **kw))
    cfg = read(tmp_path / "pack" / "config.json")
    assert cfg["packing"] is True and cfg["padding"].startswith("packed")
    assert packed["train_loss"] == pytest.approx(padded["train_loss"], abs=1e-5)
    assert packed["val_loss"] == pytest.approx(padded["val_loss"], abs=1e-5)
    assert_same_weights(tmp_path / "pad", tmp_path / "pack")


# -- --batch-size auto --------------------------------------------------------------------------------------------------
def test_auto_on_cpu_is_the_fixed_default_and_recorded(tiny_neox_dir, cue_data, tmp_path):
    kw = base_kw(tiny_neox_dir, cue_data / "train.jsonl", max_steps=2)
    m = train(TrainConfig(out=str(tmp_path / "a"), batch_size="auto", **kw))
    assert (m["micro_batch_size"], m["grad_accum_steps"], m["effective_batch_size"]) == (8, 1, 8)
    assert m["batching"]["source"] == "cpu default" and m["attn_implementation_used"] == "sdpa"
    cfg = read(tmp_path / "a" / "config.json")
    assert cfg["batch_size"] == "auto" and cfg["batching"]["micro_batch_size"] == 8
    assert cfg["attn_implementation"] == "auto" and cfg["attn_implementation_used"] == "sdpa"
    big = train(TrainConfig(out=str(tmp_path / "b"), batch_size="auto", effective_batch_size=32, **kw))
    assert (big["micro_batch_size"], big["grad_accum_steps"], big["effective_batch_size"]) == (16, 2, 32)
    fixed = train(TrainConfig(out=str(tmp_path / "c"), batch_size=4, effective_batch_size=32, **kw))
    assert (fixed["micro_batch_size"], fixed["grad_accum_steps"], fixed["batching"]["source"]) == (4, 8, "fixed")


def test_resumed_auto_run_keeps_its_split(tiny_neox_dir, cue_data, tmp_path):
    import shutil

    kw = base_kw(tiny_neox_dir, cue_data / "train.jsonl", max_steps=4, save_steps=2, batch_size="auto",
                 effective_batch_size=16)
    full = train(TrainConfig(out=str(tmp_path / "a"), **kw))
    shutil.copytree(tmp_path / "a" / "checkpoint-2", tmp_path / "b" / "checkpoint-2")
    shutil.copy(tmp_path / "a" / "config.json", tmp_path / "b" / "config.json")
    resumed = train(TrainConfig(out=str(tmp_path / "b"), resume=True, **kw))
    assert resumed["batching"]["source"] == "resumed run" and resumed["micro_batch_size"] == full["micro_batch_size"]
    assert resumed["last_logged_loss"] == pytest.approx(full["last_logged_loss"], abs=1e-5)


class OOMAbove:
    """Wraps a model class's forward: a CUDA out-of-memory error for batches of more than ``rows`` rows."""

    def __init__(self, cls: type, rows: int) -> None:
        self.original, self.rows, self.calls = cls.forward, rows, []

    def __call__(self, model, *args, **kw):
        n = kw["input_ids"].shape[0]
        self.calls.append(n)
        if n > self.rows:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (simulated, {n} rows)")
        return self.original(model, *args, **kw)


def test_simulated_oom_halves_and_accumulation_keeps_the_effective_batch(tiny_neox_dir, cue_data, tmp_path,
                                                                          monkeypatch):
    from transformers import GPTNeoXForCausalLM

    kw = base_kw(tiny_neox_dir, cue_data / "train.jsonl", max_steps=3)
    one_batch = train(TrainConfig(out=str(tmp_path / "fixed8"), batch_size=8, **kw))

    monkeypatch.setenv("KOFINSENT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(batching, "searchable", lambda device: True)  # search as on CUDA
    oom = OOMAbove(GPTNeoXForCausalLM, rows=2)
    monkeypatch.setattr(GPTNeoXForCausalLM, "forward", lambda self, *a, **k: oom(self, *a, **k))
    m = train(TrainConfig(out=str(tmp_path / "auto"), batch_size="auto", effective_batch_size=8, **kw))
    assert (m["micro_batch_size"], m["grad_accum_steps"], m["effective_batch_size"]) == (2, 4, 8)
    b = m["batching"]
    assert b["source"] == "probed" and b["oom_halvings"] == 2
    assert [(p["micro_batch_size"], p["fits"]) for p in b["probes"]] == [(8, False), (4, False), (2, True)]
    probe_calls = sum(batching.PROBE_STEPS if p["fits"] else 1 for p in b["probes"])
    assert max(oom.calls[probe_calls:]) <= 2  # training itself never asks for more than fits
    assert m["global_step"] == one_batch["global_step"] == 3
    # 3 optimizer steps of 4 accumulated micro-batches of 2 == 3 steps of one batch of 8 (dropout 0)
    assert m["train_loss"] == pytest.approx(one_batch["train_loss"], abs=1e-5)
    assert_same_weights(tmp_path / "fixed8", tmp_path / "auto")

    cache = read(batching.cache_file())
    (entry,) = cache.values()
    assert entry["fits"] == 2 and entry["oom"] == 4
    oom.calls.clear()  # the next run of this shape takes the cached size without probing
    again = train(TrainConfig(out=str(tmp_path / "again"), batch_size="auto", effective_batch_size=8, **kw))
    assert again["micro_batch_size"] == 2 and again["batching"]["source"].startswith("cache ")
    assert again["batching"]["probes"] == []
    assert_same_weights(tmp_path / "auto", tmp_path / "again", atol=0)


def test_search_starts_below_known_oom_and_reuses_known_fits(monkeypatch, tmp_path):
    monkeypatch.setenv("KOFINSENT_CACHE_DIR", str(tmp_path))
    tried: list[int] = []

    def fake_probe(model, examples, collator, micro, device, autocast):
        tried.append(micro)
        return micro <= 12, None, "" if micro <= 12 else "OutOfMemoryError"

    monkeypatch.setattr(batching, "probe", fake_probe)
    m, source, halvings, _ = batching.search(None, [], None, 48, torch.device("cpu"), None, "k", "m")
    assert (m, source, halvings) == (12, "probed", 2) and tried == [48, 24, 12]
    tried.clear()
    m, source, _, _ = batching.search(None, [], None, 24, torch.device("cpu"), None, "k", "m")
    assert m == 12 and tried == [] and source.startswith("cache")  # 24 is known not to fit, 12 known to fit
    m, _, _, _ = batching.search(None, [], None, 6, torch.device("cpu"), None, "k", "m")
    assert m == 6 and tried == []
    m, source, halvings, _ = batching.search(None, [], None, 96, torch.device("cpu"), None, "k", "m")
    assert (m, source, halvings) == (12, "probed", 1) and tried == [16]  # 16 unknown: probed; then the known 12


def test_batch_arithmetic():
    assert batching.largest_divisor(48, 20) == 16 and batching.largest_divisor(7, 4) == 1
    assert batching.per_process_batch("auto", 2, None, 1) == 16  # auto counts as the default micro-batch of 8
    assert batching.per_process_batch(4, 3, None, 2) == 12
    assert batching.per_process_batch("auto", 1, 64, 4) == 16
    with pytest.raises(TrainError, match="does not split over 3"):
        batching.per_process_batch("auto", 1, 64, 3)


@pytest.mark.parametrize("kw, msg", [
    ({"batch_size": 0}, "--batch-size must be an integer >= 1 or auto, got 0"),
    ({"batch_size": "big"}, "--batch-size must be an integer >= 1 or auto, got 'big'"),
    ({"effective_batch_size": 0}, "--effective-batch-size must be an integer >= 1"),
    ({"effective_batch_size": 32, "grad_accum": 2}, "leave --grad-accum at 1"),
    ({"effective_batch_size": 20, "batch_size": 8}, "not a multiple of --batch-size 8"),
    ({"attn_implementation": "fast"}, "--attn-implementation must be one of auto, sdpa, eager"),
])
def test_bad_batch_options(kw, msg):
    with pytest.raises(TrainError, match=msg.replace("(", r"\(")):
        TrainConfig(model="m", data="d", out="o", **kw).validate(check_files=False)


def test_cli_batch_size_auto_and_errors(tiny_neox_dir, cue_data, tmp_path):
    r = runner.invoke(app, ["train", "--model", str(tiny_neox_dir), "--data", str(cue_data / "train.jsonl"), "--out",
                            str(tmp_path / "r"), "--batch-size", "auto", "--effective-batch-size", "16", "--packing",
                            "--max-steps", "1", "--val-size", "0", "--save-steps", "100"])
    assert r.exit_code == 0, r.output
    assert "micro_batch=16 x accumulation 1 (effective 16)" in r.output
    cfg = read(tmp_path / "r" / "config.json")
    assert cfg["batch_size"] == "auto" and cfg["effective_batch_size"] == 16 and cfg["packing"] is True
    for bad, msg in (("0", "got 0"), ("many", "got 'many'")):
        r = runner.invoke(app, ["train", "--model", str(tiny_neox_dir), "--data", str(cue_data / "train.jsonl"),
                                "--out", str(tmp_path / "x"), "--batch-size", bad])
        assert r.exit_code != 0 and "--batch-size must be an integer >= 1 or auto" in r.output and msg in r.output


def test_experiment_tables_take_auto_and_keep_old_hashes():
    from kofinsent.experiment.config import ConfigError, validate

    base = {"experiment": {"name": "t"}, "dataset": {"db": "x.sqlite", "rule": "same-day"},
            "models": {"neox": {"arch": "gpt-neox"}}, "train": {"lora": {"model": "@models/neox"}},
            "eval": {"base": {"backend": "hf", "model": "@models/neox"}}}
    plain = validate(base)
    auto = validate({**base, "train": {"lora": {"model": "@models/neox", "batch_size": "auto",
                                                "effective_batch_size": 64, "packing": True}}})
    assert auto.train["lora"].batch_size == "auto" and auto.train["lora"].packing is True
    # a config that leaves the new keys at their defaults hashes as it did before they existed
    import hashlib

    data = plain.model_dump(mode="json")
    for key in ("seeds", "effective_batch_size", "packing", "attn_implementation"):
        data["train"]["lora"].pop(key)
    assert plain.sha256() == hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    assert auto.sha256() != plain.sha256()
    with pytest.raises(ConfigError, match="train.lora.batch_size"):
        validate({**base, "train": {"lora": {"model": "@models/neox", "batch_size": "huge"}}})


def test_unsloth_refuses_the_hf_only_options():
    from kofinsent.training.unsloth import unsupported_options

    bad = unsupported_options(TrainConfig(model="m", data="d", out="o", batch_size="auto", packing=True,
                                          effective_batch_size=16, attn_implementation="eager"))
    assert len(bad) == 4 and any("--batch-size auto" in b for b in bad)


# -- the validation slice is scored by the evaluator --------------------------------------------------------------------
def test_validation_accuracy_is_kofinsent_eval_accuracy(tiny_neox_dir, cue_data, tmp_path):
    kw = base_kw(tiny_neox_dir, cue_data / "train.jsonl", max_steps=20, batch_size=8, val_size=24, lr=3e-3)
    m = train(TrainConfig(out=str(tmp_path / "run"), **kw))
    assert m["val_n"] == 24 and m["val_batching"]["rows"] > 0
    from kofinsent.training.records import load_records

    _, val = split_validation(load_records(cue_data / "train.jsonl"), 24, kw["seed"])
    write_jsonl(tmp_path / "val.jsonl", val)
    r = runner.invoke(app, ["eval", "--backend", "hf", "--model", str(tiny_neox_dir), "--adapter",
                            str(tmp_path / "run" / "adapter"), "--data", str(tmp_path / "val.jsonl"), "--out",
                            str(tmp_path / "eval")])
    assert r.exit_code == 0, r.output
    ev = read(tmp_path / "eval" / "metrics.json")
    assert ev["n"] == m["val_n"] and ev["accuracy"] == m["val_accuracy"]

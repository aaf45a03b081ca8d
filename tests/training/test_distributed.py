"""`kofinsent train` under `accelerate launch`: the shipped accelerate configs, DDP with two CPU processes, and the
refusal of bitsandbytes-quantized base weights under FSDP.

FSDP itself cannot run on CPU with accelerate 1.15 (see docs/multi_gpu.md): with ``fsdp_sync_module_states`` its
plugin asks for an accelerator device, and without it a CPU launch silently becomes DDP (accelerate only switches to
FSDP for GPU-like distributed types). The FSDP path is therefore checked up to the point accelerate hands it to the
processes: its config and the ``ACCELERATE_USE_FSDP`` flag every process receives.

Two CPU processes come from a config with ``use_cpu: true`` (torchrun + gloo); ``accelerate launch --cpu
--num_processes 2`` would start one process only (``--cpu`` always takes accelerate's single-process launcher).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kofinsent.cli import app
from kofinsent.training.distributed import fsdp_active

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE = Path(sys.executable).with_name("accelerate")
runner = CliRunner()


def launch(config: Path, *train_args: object, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [str(ACCELERATE), "launch", "--config_file", str(config), "-m", "kofinsent.cli", "train",
           *(str(a) for a in train_args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def cpu_variant(name: str, tmp_path: Path, **changes: object) -> Path:
    """accelerate/NAME.yaml with ``changes`` (e.g. use_cpu), written to tmp_path."""
    cfg = yaml.safe_load((ROOT / "accelerate" / name).read_text(encoding="utf-8"))
    for key, value in changes.items():
        if key.startswith("fsdp_"):
            cfg["fsdp_config"][key] = value
        else:
            cfg[key] = value
    out = tmp_path / name
    out.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return out


def test_shipped_configs_parse_as_accelerate_reads_them():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    fsdp = load_config_from_file(str(ROOT / "accelerate" / "fsdp.yaml"))
    assert fsdp.distributed_type == DistributedType.FSDP and fsdp.num_processes >= 2
    assert fsdp.fsdp_config["fsdp_use_orig_params"] is True  # LoRA: frozen and trainable params in one FSDP unit
    assert fsdp.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    ddp = load_config_from_file(str(ROOT / "accelerate" / "ddp.yaml"))
    assert ddp.distributed_type == DistributedType.MULTI_GPU and ddp.num_processes >= 2


def test_quantized_base_weights_refused_under_fsdp(tiny_neox_dir, cue_data, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    args = ["train", "--model", tiny_neox_dir, "--data", cue_data / "train.jsonl", "--max-steps", 1]
    r = runner.invoke(app, [str(a) for a in [*args, "--out", tmp_path / "a", "--load-in-8bit"]])
    assert r.exit_code == 2 and r.output.startswith("error: --load-in-8bit does not work under FSDP")
    assert "accelerate/ddp.yaml" in r.output and not (tmp_path / "a").exists()
    r = runner.invoke(app, [str(a) for a in [*args, "--out", tmp_path / "b", "--load-in-4bit"]])
    assert r.exit_code == 2 and r.output.startswith("error: --load-in-4bit is not supported under FSDP")
    r = runner.invoke(app, [str(a) for a in [*args, "--engine", "unsloth", "--out", tmp_path / "c", "--load-in-8bit"]])
    assert r.exit_code == 2 and "--load-in-8bit does not work under FSDP" in r.output
    for value, active in (("false", False), ("0", False), ("", False), ("1", True), ("True", True)):
        monkeypatch.setenv("ACCELERATE_USE_FSDP", value)
        assert fsdp_active() is active


@pytest.mark.slow
def test_fsdp_launch_hands_the_flag_to_the_processes(tiny_neox_dir, cue_data, tmp_path):
    """accelerate launch with accelerate/fsdp.yaml (on CPU: one process, no device-bound module sync) exports
    ACCELERATE_USE_FSDP, and kofinsent train refuses --load-in-8bit before touching the output directory."""
    cfg = cpu_variant("fsdp.yaml", tmp_path, use_cpu=True, num_processes=1, fsdp_sync_module_states=False,
                      fsdp_cpu_ram_efficient_loading=False)
    p = launch(cfg, "--model", tiny_neox_dir, "--data", cue_data / "train.jsonl", "--out", tmp_path / "r",
               "--load-in-8bit", "--max-steps", 1)
    assert p.returncode != 0
    assert "error: --load-in-8bit does not work under FSDP" in p.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_one_adapter(tiny_neox_dir, cue_data, tmp_path):
    """accelerate launch on two CPU processes (DDP, gloo): both ranks train, rank 0 alone writes the run, the
    adapter loads with PeftModel."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = cpu_variant("ddp.yaml", tmp_path, use_cpu=True, num_processes=2)
    out = tmp_path / "run"
    p = launch(cfg, "--model", tiny_neox_dir, "--data", cue_data / "train.jsonl", "--out", out, "--max-steps", 4,
               "--save-steps", 4, "--batch-size", 4, "--val-size", 8, "--logging-steps", 1)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("steps=4 ") == 1  # one report, from rank 0
    ckpt = out / "checkpoint-4"
    assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()  # two ranks trained
    base = AutoModelForCausalLM.from_pretrained(tiny_neox_dir, dtype=torch.float32)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = base(ids).logits
        after = PeftModel.from_pretrained(base, out / "adapter")(ids).logits
    assert not torch.allclose(before, after)

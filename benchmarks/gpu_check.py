"""One GPU check for issue 15 ("Fast at GPU scale"), through the package's own code, in one table, time-boxed.

    bash benchmarks/gpu_check.sh [--budget-s 450] [--peak-tflops 790] [--out DIR] [--keep]
    bash benchmarks/gpu_check.sh --dry-run      # the same code on the CPU with a tiny shape (well under a minute)

Only local files: every model is random, built here from a config (no hub), the tokenizer is the tiny benchmark
tokenizer (:mod:`kofinsent.tiny`; ~17 tokens of a title + answer per request after the 2-shot prefix, as with
polyglot-ko's own tokenizer), the data are synthetic forum titles. Set ``HF_HUB_OFFLINE=1`` (gpu_check.sh does).

Stages, each in its own process with a hard time limit (a slow stage is killed and reported, the rest still run;
inside a stage every timed loop also stops at its share of the time and reports what it measured):

build    a random model of polyglot-ko-1.3b's exact shape (GPT-NeoX, 24 layers, d_model 2048, d_ff 8192, 16 heads,
         RoPE on 64 dims, vocab 30080: 1,331,810,304 parameters; benchmarks/model_shapes.py),
         initialised on the GPU and saved as bf16 safetensors; the train / test titles.
eval     ``kofinsent.backends.hf.HFBackend`` (bf16, prefix-cached log-likelihood) through the evaluator's own loop
         (``kofinsent.evaluation.evaluate.score_loglikelihood`` with the items per call ``kofinsent eval`` uses) at batch 16, 64
         and auto, items/s against the compute floor: ``peak FLOP/s / (2 x parameters x tokens per item)``, the tokens
         per item measured (the tokens of both requests after the shared prefix, ~17 x 2). Also the plain path at
         batch 64 (its argmax agreement with the cached path), a bf16 GEMM's measured TFLOP/s, and seed-style greedy
         generation (8 new tokens) one item at a time.
train    ``kofinsent.training.hf_trainer.train`` (the ``kofinsent train`` engine: HF Trainer, LoRA r 8 on query_key_value) for
         8-bit + LoRA and bf16 + LoRA (frozen weights stored in bf16, bf16 autocast), at the seed's batch 8 (3
         warm-up + 20 timed optimizer steps) and at ``--batch-size auto --effective-batch-size 256`` (the largest
         micro-batch that fits, searched on the card from a fresh cache, accumulation making up the rest; 2 + 10
         steps), plus bf16 + ``--packing`` at auto; samples/s = timed optimizer steps x effective batch / seconds (a
         ``TrainerCallback`` timestamps each step; the run stops at its time share). The note gives the micro-batch,
         the accumulation, the search's probes and the attention used.
learn    the tiny 8-bit learning check: a tiny polyglot-ko-shaped GPT-NeoX, 8-bit + LoRA r 16 on the cue-word task
         (as tests/training/test_train.py), base vs adapter log-likelihood accuracy on held-out titles.
unsloth  only where ``unsloth`` is importable: ``kofinsent train --engine unsloth`` (20 steps, --merge) on a random
         Llama-3-8B-shaped model with 2 layers, then ``kofinsent export gguf --quant f16``; else a printed reason.

Peak GPU memory per row is ``torch.cuda.max_memory_allocated`` over that row's work (the model's weights included;
training rows: from the end of the first optimizer step, after the micro-batch search).
``--dry-run`` runs every stage with a tiny shape on the CPU (float32 for bf16, which a CPU runs slowly; fewer items
and steps); its numbers mean nothing, it proves the script runs. ``--out DIR`` writes gpu_check.json and
gpu_check.txt (the table) there.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gpu_stages  # benchmarks/gpu_stages.py
from gpu_stages import PYTHON, ROOT, say, unsloth_reason

# (import name, distribution, what for)
NEEDS = [("torch", "torch", "everything (CUDA build)"), ("transformers", "transformers", "models, Trainer (>= 5.17)"),
         ("peft", "peft", "LoRA"), ("accelerate", "accelerate", "Trainer"),
         ("bitsandbytes", "bitsandbytes", "8-bit weights"), ("tokenizers", "tokenizers", "tokenizer"),
         ("safetensors", "safetensors", "weights"), ("numpy", "numpy", ""),
         ("pydantic", "pydantic", "kofinsent config / prompts"), ("typer", "typer", "kofinsent CLI"),
         ("scipy", "scipy", "metrics"), ("statsmodels", "statsmodels", "metrics"),
         ("sklearn", "scikit-learn", "metrics"), ("pandas", "pandas", "datasets / reports"),
         ("tqdm", "tqdm", ""), ("jinja2", "jinja2", ""), ("tomli_w", "tomli-w", "configs"),
         ("gguf", "gguf", "export gguf (unsloth stage only)"),
         ("unsloth", "unsloth", "optional: the unsloth stage")]
# seconds per stage on a GPU (the sum stays under --budget-s; time a stage leaves unused goes to the next ones)
SHARES = {"build": 50, "eval": 130, "train": 170, "learn": 45, "unsloth": 55}
DRY_SHARES = {"build": 15, "eval": 25, "train": 25, "learn": 20, "unsloth": 5}
STAGES = tuple(gpu_stages.STAGES)


# -- the driver ---------------------------------------------------------------------------------------------------------------
def packages() -> list[tuple[str, str, str, str]]:
    out = []
    for mod, dist, why in NEEDS:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "installed" if importlib.util.find_spec(mod) else "MISSING"
        out.append((dist, version, why, mod))
    return out


def device_facts() -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                             "python": sys.version.split()[0]}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        facts.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(p.total_memory / 2**30, 1),
                     gpus=torch.cuda.device_count())
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20, check=False)
            facts["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout else None
    return facts


def run_stage(name: str, args: argparse.Namespace, work: Path, seconds: float, rows: list[dict[str, Any]]) -> None:
    cmd = [*PYTHON, str(Path(__file__).resolve()), "--stage", name, "--work", str(work),
           "--stage-seconds", f"{seconds:.0f}", "--peak-tflops", str(args.peak_tflops)]
    if args.dry_run:
        cmd.append("--dry-run")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
                            start_new_session=True)
    timer_done = False

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the stage's own process group (it started it)

    import threading

    timer = threading.Timer(seconds, kill)
    timer.start()
    got = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("RESULT "):
                rows.append(json.loads(line[7:]))
                got += 1
            elif line.strip():
                say(f"  [{name}] {line}")
        proc.wait()
    finally:
        timer.cancel()
        timer_done = time.monotonic() - t0 >= seconds - 0.5
    dt = time.monotonic() - t0
    if proc.returncode != 0:
        why = f"killed at its {seconds:.0f} s limit" if timer_done else f"exit code {proc.returncode}"
        say(f"stage {name}: {why} after {dt:.0f} s ({got} results)")
        rows.append({"stage": name, "what": f"stage {name}", "value": None, "unit": "",
                     "note": f"{why}; {got} results before"})
    else:
        say(f"stage {name}: {dt:.0f} s")


def fmt(v: Any, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "parameters":
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def table(rows: list[dict[str, Any]]) -> str:
    head = ("what", "measured", "vs floor", "peak GPU MiB", "note")
    body = [(r["what"], f"{fmt(r.get('value'), r.get('unit', ''))} {r.get('unit', '')}".strip(),
             (f"{100 * r['ratio']:.1f}%" if r["ratio"] >= 0.001 else f"{100 * r['ratio']:.1e}%")
             if r.get("ratio") is not None else "",
             f"{r['peak_mib']:,.0f}" if r.get("peak_mib") is not None else "", r.get("note", ""))
            for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head[:4])]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head[:4], widths)) + " | note |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|---|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(b[:4], widths)) + f" | {b[4]} |" for b in body]
    return "\n".join(lines)


def driver(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    mode = "dry-run (CPU, tiny shape)" if args.dry_run else "GPU"
    say(f"gpu_check {time.strftime('%Y-%m-%d %H:%M:%S')} — {mode}; budget {args.budget_s:.0f} s")
    say("packages needed (distribution, version here, what for):")
    pk = packages()
    for dist, version, why, _ in pk:
        say(f"  {dist:<14} {version:<22} {why}")
    missing = [d for d, v, _, m in pk if v == "MISSING" and m not in ("unsloth", "gguf")]
    if missing:
        say(f"missing: {', '.join(missing)} (benchmarks/offline_wheels.sh downloads the wheels a GPU machine lacks)")
        return 2
    facts = device_facts()
    say("device: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    if not args.dry_run and "gpu" not in facts:
        say("no CUDA device: run with --dry-run on a CPU")
        return 2
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("KOFINSENT_CACHE_DIR", str(work / "cache"))  # a fresh token-budget search, kept here
    rows: list[dict[str, Any]] = []
    shares = DRY_SHARES if args.dry_run else SHARES
    unsloth_why = unsloth_reason(not args.dry_run and "gpu" in facts)
    stages = [s for s in STAGES if s in args.stages.split(",")]
    for i, name in enumerate(stages):
        if name == "unsloth" and unsloth_why:
            say(f"stage unsloth: skipped: {unsloth_why}")
            rows.append({"stage": "unsloth", "what": "train --engine unsloth + export gguf", "value": None,
                         "unit": "", "note": f"skipped: {unsloth_why}"})
            continue
        left = args.budget_s - (time.monotonic() - t_start)
        later = sum(shares[s] for s in stages[i + 1:] if not (s == "unsloth" and unsloth_why))
        seconds = max(min(left, left - later), 5.0)  # its share and what earlier stages left; later shares kept
        say(f"stage {name}: up to {seconds:.0f} s")
        run_stage(name, args, work, seconds, rows)
        if name == "build" and not (work / "build.json").is_file():
            say("the build stage failed: nothing else can run")
            break
    total = time.monotonic() - t_start
    text = table(rows)
    say("")
    ver = {d: v for d, v, _, _ in pk}
    say(f"issue 15 GPU check — {facts.get('gpu', 'CPU (dry-run)')}, driver {facts.get('driver', '-')}, torch "
        f"{facts['torch']} (CUDA {facts['cuda']}), transformers {ver['transformers']}, peft {ver['peft']}, "
        f"bitsandbytes {ver['bitsandbytes']}, python {facts['python']}; {total:.0f} s in all")
    say(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(json.dumps({"facts": facts, "packages": pk, "rows": rows,
                                                        "seconds": total, "dry_run": args.dry_run}, indent=1))
        (out / "gpu_check.txt").write_text(text + "\n")
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shape, fewer items and steps")
    ap.add_argument("--budget-s", type=float, default=None, help="all stages together (default 450; dry-run 100)")
    ap.add_argument("--peak-tflops", type=float, default=790.0, help="bf16 dense peak for the compute floor (H200)")
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES))
    ap.add_argument("--out", default=None, help="write gpu_check.json and gpu_check.txt here")
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    ap.add_argument("--stage-seconds", type=float, default=60.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.budget_s is None:
        args.budget_s = 100.0 if args.dry_run else 450.0
    if args.stage:
        if args.dry_run:
            import torch

            torch.set_num_threads(1)  # tiny models on a shared CPU (see eval_bench.py)
        gpu_stages.STAGES[args.stage](gpu_stages.Ctx(args))
        return
    sys.exit(driver(args))


if __name__ == "__main__":
    main()

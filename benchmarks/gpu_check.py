"""One GPU check for issue 15 ("Fast at GPU scale"), through the package's own code, in one table, time-boxed.

    bash benchmarks/gpu_check.sh [--budget-s 450] [--peak-tflops 790] [--out DIR] [--keep]
    bash benchmarks/gpu_check.sh --dry-run      # the same code on the CPU with a tiny shape (well under a minute)

Only local files: every model is random, built here from a config (no hub), the tokenizer is the tiny benchmark
tokenizer (:mod:`kofinsent.tiny`; ~17 tokens of a title + answer per request after the 2-shot prefix, as with
polyglot-ko's own tokenizer), the data are synthetic forum titles. Set ``HF_HUB_OFFLINE=1`` (gpu_check.sh does).

Stages, each in its own process with a hard time limit (a slow stage is killed and reported, the rest still run;
inside a stage every timed loop also stops at its share of the time and reports what it measured):

build    a random model of polyglot-ko-1.3b's exact shape (GPT-NeoX, 24 layers, d_model 2048, d_ff 8192, 16 heads,
         RoPE on 64 dims, vocab 30080: 1,331,810,304 parameters; benchmarks/train_bench.py's ``neox_config``),
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
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
STAGES = ("build", "eval", "train", "learn", "unsloth")
PYTHON = [sys.executable, *(["-S"] if sys.flags.no_site else [])]  # stages run as this interpreter was started
# seconds per stage on a GPU (the sum stays under --budget-s; time a stage leaves unused goes to the next ones)
SHARES = {"build": 50, "eval": 130, "train": 170, "learn": 45, "unsloth": 55}
DRY_SHARES = {"build": 15, "eval": 25, "train": 25, "learn": 20, "unsloth": 5}
TRAIN_EFFECTIVE = 256      # the effective batch of the training rows with batch_size="auto"
DRY_TRAIN_EFFECTIVE = 16
LLAMA3_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
             "vocab_size": 128256, "max_position_embeddings": 8192}


# -- small helpers ------------------------------------------------------------------------------------------------------
def say(*parts: Any) -> None:
    print(*parts, flush=True)


def result(**row: Any) -> None:
    """One row of the final table, sent to the driver (and shown as it comes)."""
    print("RESULT " + json.dumps(row, ensure_ascii=False), flush=True)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Ctx:
    """What a stage knows: the work folder, the mode, its deadline and the device."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.args = args
        self.dry = args.dry_run
        self.work = Path(args.work)
        self.deadline = time.monotonic() + args.stage_seconds - (2 if self.dry else 8)  # finish before the kill
        self.cuda = torch.cuda.is_available() and not self.dry
        self.device = "cuda" if self.cuda else "cpu"
        self.info = json.loads((self.work / "build.json").read_text()) if (self.work / "build.json").is_file() else {}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def share(self, fraction: float) -> float:
        """A deadline ``fraction`` of the time left from now."""
        return time.monotonic() + max(0.0, self.left()) * fraction

    def reset_peak(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_mib(self) -> float | None:
        if not self.cuda:
            return None
        import torch

        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20


def quiet() -> None:
    import logging
    import warnings

    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


# -- stage: build ---------------------------------------------------------------------------------------------------------
def stage_build(ctx: Ctx) -> None:
    import torch
    from transformers import GPTNeoXForCausalLM

    sys.path.insert(0, str(HERE))
    import train_bench as tb  # benchmarks/train_bench.py: polyglot-ko's config and parameter count

    from kofinsent import tiny

    t0 = time.perf_counter()
    tok = tiny.train_tokenizer(tiny.korean_corpus(4000, 0), vocab_size=1000)
    pad = tok.convert_tokens_to_ids(tiny.EOT)
    keys = ("hidden", "layers", "heads", "vocab", "intermediate", "max_positions")
    shape = dict(zip(keys, (64, 2, 4, len(tok), 256, 2048))) if ctx.dry else {k: tb.POLYGLOT_1_3B[k] for k in keys}
    config = tb.neox_config(pad_id=pad, **shape)
    dtype = torch.float32 if ctx.dry else torch.bfloat16
    with torch.device(ctx.device), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPTNeoXForCausalLM(config).to(dtype).eval()
    n_params = sum(p.numel() for p in model.parameters())
    model.generation_config.pad_token_id = pad
    model_dir = ctx.work / "neox"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    del model
    if ctx.cuda:
        torch.cuda.empty_cache()
    exact = "" if ctx.dry else (" = polyglot-ko-1.3b's count" if n_params == tb.POLYGLOT_1_3B_PARAMS
                                else f" (polyglot-ko-1.3b has {tb.POLYGLOT_1_3B_PARAMS:,}: shape differs)")
    say(f"model: GPT-NeoX {shape}, {n_params:,} parameters{exact}, {str(dtype)[6:]}, built on {ctx.device} and "
        f"saved in {time.perf_counter() - t0:.1f} s")
    n_train, n_test = (64, 64) if ctx.dry else (4096, 8192)
    titles = tiny.forum_titles(n_train + n_test, seed=123)
    recs = [{"id": str(i), "title": t, "label": ("[상승]", "[하락]")[i % 2]} for i, t in enumerate(titles)]
    write_jsonl(ctx.work / "train.jsonl", recs[:n_train])
    write_jsonl(ctx.work / "test.jsonl", recs[n_train:])
    write_jsonl(ctx.work / "cue_train.jsonl", tiny.cue_records(240, 1, "tr"))  # the training tests' cue task
    write_jsonl(ctx.work / "cue_test.jsonl", tiny.cue_records(60, 2, "te"))
    tiny.make_gpt_neox(ctx.work / "tiny_neox", tok, seed=0)
    (ctx.work / "build.json").write_text(json.dumps({
        "model": str(model_dir), "params": n_params, "shape": shape, "dtype": str(dtype)[6:],
        "polyglot_shape": not ctx.dry and n_params == tb.POLYGLOT_1_3B_PARAMS}))
    result(stage="build", what="random model" + (" (polyglot-ko-1.3b shape)" if not ctx.dry else " (dry-run shape)"),
           value=n_params, unit="parameters", note=f"{str(dtype)[6:]}, built in {time.perf_counter() - t0:.0f} s")


# -- stage: eval ------------------------------------------------------------------------------------------------------------
def stage_eval(ctx: Ctx) -> None:
    import torch

    from kofinsent.backends import GenOptions
    from kofinsent.backends.hf import HFBackend
    from kofinsent.evaluation.evaluate import EvalConfig, items_per_call, score_loglikelihood
    from kofinsent.prompts.direction import CONTINUATIONS, seed2shot

    quiet()
    model_dir, n_params = ctx.info["model"], ctx.info["params"]
    dtype = "float32" if ctx.dry else "bfloat16"
    prompt = seed2shot()
    items = read_jsonl(ctx.work / "test.jsonl")
    peak = ctx.args.peak_tflops * 1e12
    label = "dry-run CPU" if ctx.dry else "bf16"

    if ctx.cuda:  # what this card's bf16 matmul reaches, next to the nominal peak
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            a @ a
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()
        gemm = 20 * 2 * 8192 ** 3 / (time.perf_counter() - t0)
        del a
        say(f"bf16 GEMM 8192^3: {gemm / 1e12:.0f} TFLOP/s measured (the floor below uses {peak / 1e12:.0f})")
        result(stage="eval", what="bf16 GEMM 8192^3", value=gemm / 1e12, unit="TFLOP/s",
               note=f"nominal peak used for the floor: {peak / 1e12:.0f}")
    else:
        gemm = None

    floor: dict[str, float] = {}
    cached_scores: dict[str, list[float]] = {}
    order = [16, 64, "auto"]
    for k, bs in enumerate(order):
        stop = ctx.share(0.55 / (len(order) - k))
        ctx.reset_peak()
        b = HFBackend(model_dir, dtype=dtype, batch_size=bs, device=ctx.device)
        cfg = EvalConfig(backend="hf", model=model_dir, data="", out="", batch_size=bs)
        per_call = items_per_call(cfg, b, "loglikelihood")
        score_loglikelihood(b, prompt, items[:per_call], chunk=per_call)  # warm-up (and auto's budget search)
        done, secs, recs = 0, 0.0, []
        for i in range(0, len(items), per_call):
            part = items[i:i + per_call]
            r, s = score_loglikelihood(b, prompt, part, chunk=per_call)
            recs += r
            done, secs = done + len(part), secs + s
            if time.monotonic() > stop:
                break
        rate = done / secs
        if not floor:  # tokens per item that differ from the shared prefix, both answers
            sample = items[:64]
            per_item = sum(sum(len(c) + len(x) for c, x in (b.lm_eval_tokens(prompt.context(it["title"]), a)
                                                            for a in CONTINUATIONS)) - 2 * b.last_prefix_tokens
                           for it in sample) / len(sample)
            floor = {"tokens": per_item, "items_s": peak / (2 * n_params * per_item)}
            if gemm:
                floor["gemm_items_s"] = gemm / (2 * n_params * per_item)
            say(f"compute floor: {per_item:.1f} tokens per item after the {b.last_prefix_tokens}-token prefix "
                f"(both answers), 2 x {n_params:,} FLOP per token at {peak / 1e12:.0f} TFLOP/s = "
                f"{floor['items_s']:,.0f} items/s")
        cached_scores[str(bs)] = [x for r in recs for x in r["loglik"]]
        info = b.batching()
        runs = info["batching"].get("loglik-cached", {})
        ran = runs.get("tokens", 0) / max(1, runs.get("rows", 1))
        note = (f"{done} items, {info['rows_per_batch']:.0f} rows/batch, {ran:.0f} padded tokens/row"
                + (f", budget {info['token_budget']:,} tokens ({runs.get('budget_source')}, "
                   f"{info['oom_halvings']} OOM halvings)" if bs == "auto" else ""))
        say(f"eval {label}, prefix-cached, batch {bs}: {rate:,.0f} items/s ({note})")
        result(stage="eval", what=f"eval {label} prefix-cached log-likelihood, batch {bs}", value=rate,
               unit="items/s", ratio=rate / floor["items_s"], peak_mib=ctx.peak_mib(), note=note)
        del b
        ctx.reset_peak()

    # the plain path (lm-eval's layout) once, for the cache's gain and bf16 argmax agreement
    stop = ctx.share(0.35)
    b = HFBackend(model_dir, dtype=dtype, batch_size=64, device=ctx.device, prefix_cache=False)
    n_plain = min(len(items), 256 if ctx.dry else 1024)
    score_loglikelihood(b, prompt, items[:64], chunk=64)
    done, secs, plain = 0, 0.0, []
    for i in range(0, n_plain, 256):
        r, s = score_loglikelihood(b, prompt, items[i:i + 256], chunk=256)
        plain += [x for rec in r for x in rec["loglik"]]
        done, secs = done + len(r), secs + s
        if time.monotonic() > stop:
            break
    cached = cached_scores["auto"][:len(plain)]
    n_cmp = min(len(cached), len(plain)) // 2
    agree = sum((cached[2 * i] >= cached[2 * i + 1]) == (plain[2 * i] >= plain[2 * i + 1]) for i in range(n_cmp))
    diff = max((abs(x - y) for x, y in zip(cached, plain)), default=float("nan"))
    note = f"{done} items; same argmax as auto cached on {agree}/{n_cmp}, max |diff| {diff:.3g}"
    say(f"eval {label}, plain path, batch 64: {done / secs:,.0f} items/s ({note})")
    result(stage="eval", what=f"eval {label} plain log-likelihood, batch 64", value=done / secs, unit="items/s",
           ratio=done / secs / floor["items_s"], peak_mib=ctx.peak_mib(), note=note)
    del b
    ctx.reset_peak()

    # seed-style generation: greedy, one item per call
    stop = ctx.share(0.9)
    b = HFBackend(model_dir, dtype=dtype, batch_size=1, device=ctx.device)
    opts = GenOptions(max_new_tokens=8, temperature=0.0)
    contexts = [prompt.context(it["title"]) for it in items[:4 if ctx.dry else 64]]
    b.generate(contexts[:2], opts)
    t0, n = time.perf_counter(), 0
    for c in contexts:
        b.generate([c], opts)
        n += 1
        if time.monotonic() > stop:
            break
    rate = n / (time.perf_counter() - t0)
    say(f"eval {label}, greedy generation (8 new tokens), batch 1: {rate:.1f} items/s ({n} items)")
    result(stage="eval", what=f"eval {label} seed-style greedy generation, batch 1", value=rate, unit="items/s",
           peak_mib=ctx.peak_mib(), note=f"{n} items, 8 new tokens")
    result(stage="eval", what=f"compute floor ({floor['tokens']:.1f} tokens/item, {peak / 1e12:.0f} TFLOP/s)",
           value=floor["items_s"], unit="items/s",
           note=(f"at the measured GEMM rate: {floor['gemm_items_s']:,.0f} items/s" if "gemm_items_s" in floor
                 else "nominal peak; no GPU"))


# -- stage: train -------------------------------------------------------------------------------------------------------------
def timed_train(ctx: Ctx, name: str, stop_at: float, **kw: Any) -> tuple[dict[str, Any], list[float]]:
    """``kofinsent.training.hf_trainer.train`` with a callback that timestamps every optimizer step's end and stops at ``stop_at``;
    the peak-memory counter restarts after the first step (so a row's peak is training's, not the micro-batch
    search's probes, which may have run out of memory on purpose)."""
    import torch

    import kofinsent.training.hf_trainer as KT

    marks: list[float] = []
    original = KT.log_callback

    def log_callback(path: Path) -> Any:
        base = original(path)

        class Timed(type(base)):  # type: ignore[misc]
            def on_step_end(self, args: Any, state: Any, control: Any, **k: Any) -> Any:
                if ctx.cuda:
                    torch.cuda.synchronize()
                marks.append(time.perf_counter())
                if ctx.cuda and len(marks) == 1:
                    torch.cuda.reset_peak_memory_stats()
                if time.monotonic() > stop_at:
                    control.should_training_stop = True
                return control

        return Timed()

    KT.log_callback = log_callback
    try:
        cfg = KT.TrainConfig(out=str(ctx.work / "runs" / name), overwrite=True, save_steps=10**6,
                             logging_steps=10**6, val_size=0, seed=0, **kw)
        metrics = KT.train(cfg)
    finally:
        KT.log_callback = original
    return metrics, marks


def stage_train(ctx: Ctx) -> None:
    """The seed's batch 8, then ``batch_size="auto"`` at an effective batch of :data:`TRAIN_EFFECTIVE` (the
    micro-batch searched on the card, gradient accumulation making up the rest), for 8-bit and bf16 base weights, and
    bf16 with packing. samples/s = optimizer steps x effective batch / seconds, over the steps after the warm-up."""
    import kofinsent.training.hf_trainer as KT

    quiet()
    effective = DRY_TRAIN_EFFECTIVE if ctx.dry else TRAIN_EFFECTIVE
    bf16 = "auto" if ctx.dry else "bf16"  # a CPU trains in float32 ("--precision bf16 needs CUDA")
    half = "bf16 + LoRA" if not ctx.dry else "fp32 + LoRA (dry-run)"
    # (what, 8-bit, precision, batch_size, packing, (warm-up, timed) optimizer steps)
    seed_steps, auto_steps = ((1, 2), (1, 2)) if ctx.dry else ((3, 20), (2, 10))
    plan = [("8-bit + LoRA", True, "auto", 8, False, seed_steps),
            ("8-bit + LoRA", True, "auto", "auto", False, auto_steps),
            (half, False, bf16, 8, False, seed_steps),
            (half, False, bf16, "auto", False, auto_steps),
            (half + ", packed", False, bf16, "auto", True, auto_steps)]
    data = str(ctx.work / "train.jsonl")
    for k, (what, q8, precision, bs, packing, (warm, steps)) in enumerate(plan):
        label = f"train {what}, batch {bs}" + (f" (effective {effective})" if bs == "auto" else "")
        stop = ctx.share(1.0 / (len(plan) - k))
        if ctx.left() < 5:
            result(stage="train", what=label, value=None, unit="samples/s", note="skipped: the stage's time ran out")
            continue
        ctx.reset_peak()
        t0 = time.perf_counter()
        extra = {"effective_batch_size": effective} if bs == "auto" else {}
        try:
            metrics, marks = timed_train(ctx, f"t{k}", stop, model=ctx.info["model"], data=data, load_in_8bit=q8,
                                         precision=precision, batch_size=bs, max_steps=warm + steps, lora_r=8,
                                         lora_alpha=16, packing=packing, **extra)
        except (KT.TrainError, RuntimeError) as e:
            say(f"{label}: failed: {type(e).__name__}: {str(e)[:300]}")
            result(stage="train", what=label, value=None, unit="samples/s", peak_mib=ctx.peak_mib(),
                   note=f"failed: {type(e).__name__}: {str(e)[:120]}")
            continue
        per_step = metrics.get("effective_batch_size") or (bs if isinstance(bs, int) else 0)
        timed = len(marks) - 1 - warm
        secs = marks[-1] - marks[warm] if timed > 0 else None
        rate = timed * per_step / secs if secs else None
        b = metrics.get("batching") or {}
        probes = ", ".join(f"{p['micro_batch_size']}{'' if p['fits'] else ' no'}" for p in b.get("probes", []))
        note = ((f"{timed} timed steps after {warm} warm-up, {timed / secs:.2f} steps/s" if secs else
                 f"{len(marks)} steps: too few to time")
                + f"; micro-batch {metrics.get('micro_batch_size')} x {metrics.get('grad_accum_steps')} accumulated"
                + (f" ({b.get('source')}{'; probed ' + probes if probes else ''})" if bs == "auto" else "")
                + f"; {metrics.get('attn_implementation_used')} attention")
        say(f"{label}: {rate if rate is None else f'{rate:,.1f}'} samples/s ({note}; whole call "
            f"{time.perf_counter() - t0:.0f} s)")
        result(stage="train", what=label, value=rate, unit="samples/s", peak_mib=ctx.peak_mib(), note=note)


# -- stage: learn -------------------------------------------------------------------------------------------------------------
def stage_learn(ctx: Ctx) -> None:
    from kofinsent.backends.hf import HFBackend
    from kofinsent.labels import LABELS
    from kofinsent.prompts.direction import seed2shot

    quiet()
    base = str(ctx.work / "tiny_neox")
    test = read_jsonl(ctx.work / "cue_test.jsonl")
    steps = 150  # as tests/training/test_train.py (~5 s on 2 CPU cores)
    ctx.reset_peak()
    metrics, _ = timed_train(ctx, "learn", ctx.share(0.8), model=base, data=str(ctx.work / "cue_train.jsonl"),
                             load_in_8bit=True, lora_r=16, lora_alpha=32, lr=3e-3, max_steps=steps, batch_size=8,
                             loss="answer-only")
    prompt = seed2shot()
    reqs = [(prompt.context(r["title"]), " " + y) for r in test for y in LABELS]

    def accuracy(b: HFBackend) -> float:
        s = b.loglikelihood(reqs)
        return sum(LABELS[int(s[2 * i + 1] > s[2 * i])] == r["label"] for i, r in enumerate(test)) / len(test)

    base_acc = accuracy(HFBackend(base, device=ctx.device))
    tuned = accuracy(HFBackend(base, adapter=str(ctx.work / "runs" / "learn" / "adapter"), load_in_8bit=True,
                               device=ctx.device))
    ok = "learns" if tuned >= 0.9 and base_acc <= 0.65 else "DOES NOT LEARN"
    say(f"tiny 8-bit + LoRA, cue task, {metrics.get('global_step')} steps: base {base_acc:.2f} -> adapter "
        f"{tuned:.2f} ({ok})")
    result(stage="learn", what="tiny 8-bit + LoRA learns the cue task (base -> adapter accuracy)", value=tuned,
           unit="accuracy", peak_mib=ctx.peak_mib(), note=f"base {base_acc:.2f} -> adapter {tuned:.2f}: {ok}")


# -- stage: unsloth -----------------------------------------------------------------------------------------------------------
def unsloth_reason(cuda: bool) -> str | None:
    if not cuda:
        return "no CUDA device"
    if importlib.util.find_spec("unsloth") is None:
        return "unsloth is not installed (pip install 'kofinsent[gpu]' on a machine with internet)"
    if importlib.util.find_spec("gguf") is None:
        return "gguf is not installed (export gguf needs it)"
    return None


def kofinsent_cli(*args: str, timeout: float) -> subprocess.CompletedProcess:
    code = "import sys; from kofinsent.cli import main; sys.argv[0] = 'kofinsent'; main()"
    return subprocess.run([*PYTHON, "-c", code, *map(str, args)], capture_output=True, text=True, check=False,
                          timeout=max(1.0, timeout), cwd=ROOT)


def stage_unsloth(ctx: Ctx) -> None:
    reason = unsloth_reason(ctx.cuda)
    if reason:
        say(f"unsloth: skipped: {reason}")
        result(stage="unsloth", what="train --engine unsloth + export gguf", value=None, unit="", note=f"skipped: "
               f"{reason}")
        return
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from kofinsent import tiny
    from kofinsent.dataset.sharegpt import export_sharegpt

    tok = tiny.llama3_tokenizer(tiny.train_tokenizer(tiny.korean_corpus(4000, 0), vocab_size=1000))
    config = LlamaConfig(num_hidden_layers=2, rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                         tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, **LLAMA3_8B)
    t0 = time.perf_counter()
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    base = ctx.work / "llama3_8b_2layers"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    n = sum(p.numel() for p in model.parameters())
    del model
    torch.cuda.empty_cache()
    say(f"unsloth: random Llama-3-8B shape with 2 layers ({n:,} parameters) saved in {time.perf_counter() - t0:.0f} s")
    data = ctx.work / "sharegpt.jsonl"
    export_sharegpt(ctx.work / "cue_train.jsonl", data)
    run, out = ctx.work / "runs" / "unsloth", ctx.work / "gguf"
    t0 = time.perf_counter()
    r = kofinsent_cli("train", "--engine", "unsloth", "--model", base, "--data", data, "--out", run, "--max-steps",
                      20, "--batch-size", 8, "--save-steps", 1000, "--val-size", 0, "--max-length", 512, "--merge",
                      "--overwrite", timeout=ctx.left() * 0.7)
    train_s = time.perf_counter() - t0
    if r.returncode != 0:
        tail = (r.stdout + r.stderr).strip().splitlines()[-3:]
        say(f"unsloth: train failed (exit {r.returncode}): {' | '.join(tail)}")
        result(stage="unsloth", what="train --engine unsloth (2-layer Llama-3-8B shape)", value=None, unit="",
               note=f"failed: {' | '.join(tail)[:150]}")
        return
    t0 = time.perf_counter()
    e = kofinsent_cli("export", "gguf", "--run", run, "--out", out, "--quant", "f16", timeout=ctx.left())
    files = sorted(out.glob("*.gguf"))
    note = (f"train 20 steps {train_s:.0f} s; export gguf f16 {time.perf_counter() - t0:.0f} s: "
            + (f"{files[0].name} {files[0].stat().st_size / 2**30:.2f} GiB" if e.returncode == 0 and files
               else f"export failed: {(e.stdout + e.stderr).strip().splitlines()[-1:]}"))
    say(f"unsloth: {note}")
    result(stage="unsloth", what="train --engine unsloth + export gguf (2-layer Llama-3-8B shape)",
           value=train_s, unit="s", note=note)


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
        ctx = Ctx(args)
        {"build": stage_build, "eval": stage_eval, "train": stage_train, "learn": stage_learn,
         "unsloth": stage_unsloth}[args.stage](ctx)
        return
    sys.exit(driver(args))


if __name__ == "__main__":
    main()

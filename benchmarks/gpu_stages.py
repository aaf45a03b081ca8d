"""The stages of benchmarks/gpu_check.py, each run by the driver in its own process (``gpu_check.py --stage NAME``):
build, eval, train, learn and unsloth. What each row measures is in gpu_check.py's docstring; a stage prints its rows
as ``RESULT {json}`` lines for the driver's table."""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from model_shapes import POLYGLOT_1_3B_PARAMS, bench_shape, bench_tokenizer, neox_config  # benchmarks/model_shapes.py

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = [sys.executable, *(["-S"] if sys.flags.no_site else [])]  # stages run as this interpreter was started
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

    from kofinsent import tiny

    t0 = time.perf_counter()
    tok = bench_tokenizer()
    pad = tok.convert_tokens_to_ids(tiny.EOT)
    shape = bench_shape(ctx.dry, tok)
    config = neox_config(pad_id=pad, **shape)
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
    exact = "" if ctx.dry else (" = polyglot-ko-1.3b's count" if n_params == POLYGLOT_1_3B_PARAMS
                                else f" (polyglot-ko-1.3b has {POLYGLOT_1_3B_PARAMS:,}: shape differs)")
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
        "polyglot_shape": not ctx.dry and n_params == POLYGLOT_1_3B_PARAMS}))
    result(stage="build", what="random model" + (" (polyglot-ko-1.3b shape)" if not ctx.dry else " (dry-run shape)"),
           value=n_params, unit="parameters", note=f"{str(dtype)[6:]}, built in {time.perf_counter() - t0:.0f} s")


# -- stage: eval ------------------------------------------------------------------------------------------------------------
def stage_eval(ctx: Ctx) -> None:
    import torch

    from kofinsent.backends import GenOptions
    from kofinsent.backends.hf import HFBackend
    from kofinsent.evaluation.evaluate import EvalConfig, items_per_call, score_loglikelihood
    from kofinsent.prompts.direction import CONTINUATIONS, seed2shot
    from kofinsent.runs import read_jsonl

    quiet()
    model_dir, n_params = ctx.info["model"], ctx.info["params"]
    dtype = "float32" if ctx.dry else "bfloat16"
    prompt = seed2shot()
    items = list(read_jsonl(ctx.work / "test.jsonl"))
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
    from kofinsent.runs import read_jsonl

    quiet()
    base = str(ctx.work / "tiny_neox")
    test = list(read_jsonl(ctx.work / "cue_test.jsonl"))
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

    tok = tiny.llama3_tokenizer(bench_tokenizer())
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


STAGES = {"build": stage_build, "eval": stage_eval, "train": stage_train, "learn": stage_learn,
          "unsloth": stage_unsloth}

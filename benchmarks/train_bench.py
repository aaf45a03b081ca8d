"""Training speed and memory: length-grouped dynamic padding vs the seed's fixed padding; 8-bit vs float32 base weights.

    python benchmarks/train_bench.py [--device cpu|cuda] [--examples 64] [--batch-size 8] [--max-length 512]
                                     [--hidden 256] [--layers 4] [--threads 1] [--repeats 3]
                                     [--mem-hidden 1024] [--mem-layers 6] [--mem-vocab 30080]
                                     [--polyglot-1.3b-shape [--steps 20]] [--skip-throughput] [--skip-memory]

(1) Throughput. One LoRA model, built exactly as ``kofinsent train`` builds it (``kofinsent.training.loading.load_model``: the
    GPT-NeoX default target ``query_key_value``, r 8), trains on the same ``--examples`` seed2shot examples
    (``kofinsent.training.records.encode_example``: context + " " + label + EOS, full loss) made from synthetic 종목토론방 titles
    (``kofinsent.tiny.forum_titles``), at the same batch size, one pass over all examples per padding policy:
      (a) what ``kofinsent train`` does: ``transformers.trainer_pt_utils.LengthGroupedSampler`` (the sampler the HF
          Trainer builds for ``train_sampling_strategy="group_by_length"``, with the same batch-size argument) and
          ``kofinsent.training.collators.PadCollator`` (each batch padded to its own longest example) — imported, not copied;
      (c) dynamic padding in random order (no length grouping), to show what the grouping adds;
      (b) the seed's fixed padding, random order (its loop uses a shuffled DataLoader): every example padded to
          (b1) the longest example of the data set and (b2) a fixed ``--max-length`` (default 512: the only
          max_length the seeds state, in the FinGPT snippet of seed 003; the seed's own training max length is not
          given). Both use ``PadCollator(pad_to_multiple_of=width)``, which pads every batch to exactly ``width``.
    tokens/s = real (non-pad) tokens / seconds of forward + backward + optimizer step + zero_grad, summed over the
    steps; collation is done before the clock starts. Every policy processes the same examples, so the same number of
    real tokens, and starts from the same LoRA weights and a fresh AdamW (lr 2e-4). Two untimed warm-up steps per
    policy. With ``--repeats`` > 1 each policy's best pass counts.
(2) Memory of the base model, loaded (as ``kofinsent train`` loads it) in float32 and in 8-bit (bitsandbytes
    ``load_in_8bit``; on CPU with ``dtype=float32`` for the rest, as the environment notes require), each in its own
    fresh subprocess from the same saved random GPT-NeoX (polyglot-ko's layout and vocabulary size 30080, hidden
    ``--mem-hidden``, ``--mem-layers`` layers). On CPU the headline ratio is of the bytes of parameters + buffers
    (what the loaded weights occupy); as a cross-check it prints the process's RSS growth after the load (every weight
    page touched) and its peak RSS growth during the load (``ru_maxrss``). The subprocesses load with
    ``disable_mmap=True`` so that RSS counts the weights: through safetensors' default mmap the float32 weights stay
    file-backed page cache and the 8-bit load leaves the whole float32 file mapped after quantizing it, which makes
    RSS meaningless for this comparison. On CPU the 8-bit load still reads every float32 weight first, so its *peak*
    is no lower than float32's; the saving is in what stays resident. On CUDA the ratio is of
    ``torch.cuda.max_memory_allocated`` growth (bfloat16 is loaded too). It also prints the weights' bytes projected for
    polyglot-ko-1.3b's exact shape (meta-device model, no allocation): a projection, not a measurement.
(3) ``--polyglot-1.3b-shape`` (meant for ``--device cuda``): a random model with polyglot-ko-1.3b's config (24 layers,
    d_model 2048, 16 heads x 128 with RoPE on 64 dims, d_ff 8192, vocab 30080, 2048 positions, parallel residual,
    untied embeddings: 1,331,810,304 parameters) is saved, its memory measured as in (2), then loaded 8-bit + LoRA
    through ``load_model`` and trained ``--steps`` steps (after 3 warm-up steps; bf16 autocast on CUDA, as the Trainer's
    ``bf16=True``) on the benchmark's examples with length-grouped dynamic padding: step time and peak GPU memory.
    The titles go through the tiny benchmark tokenizer (vocabulary 1000, ids valid in 30080), which splits Korean into
    more tokens than polyglot-ko's own tokenizer, so sequences are longer than the real model's would be.

One torch CPU thread by default (as eval_bench.py): on a shared 2-core machine a second OpenMP thread that loses its
core stalls every op at the barrier and the ratios become noise. ``--threads 0`` keeps torch's default.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from model_shapes import (
    POLYGLOT_1_3B,
    POLYGLOT_1_3B_PARAMS,
    bench_tokenizer,
    neox_config,
    projected_weight_bytes,
    save_random_neox,
)
from timed_training import (
    add_int_options,
    autocast_for,
    best_passes,
    build_examples,
    make_batches,
    policy_orders,
    train_pass,
)


# -- (1) throughput --------------------------------------------------------------------------------------------------
def throughput(args: argparse.Namespace, tok: Any, tmp: Path) -> None:
    import torch

    from kofinsent import tiny
    from kofinsent.training.collators import PadCollator
    from kofinsent.training.loading import load_model
    from kofinsent.training.options import TrainConfig

    model_dir = tiny.make_gpt_neox(tmp / "neox_small", tok, seed=0, hidden=args.hidden, layers=args.layers,
                                   heads=args.heads, init_std=0.02)
    cfg = TrainConfig(model=str(model_dir), data="-", out="-", lora_r=args.lora_r, lora_alpha=2 * args.lora_r)
    model, tokenizer, facts = load_model(cfg)
    model.to(args.device).train()
    feats = build_examples(tokenizer, args.examples, args.seed)
    lengths = [len(f["input_ids"]) for f in feats]
    longest = max(lengths)
    if args.max_length < longest:
        raise SystemExit(f"--max-length {args.max_length} is shorter than the longest example ({longest} tokens)")
    real = sum(lengths)
    pad = tokenizer.pad_token_id
    orders = policy_orders(feats, args.batch_size, args.seed)
    policies = {
        "(a) length-grouped dynamic (kofinsent train)": (orders["grouped"], PadCollator(pad)),
        "(c) dynamic, random order": (orders["random"], PadCollator(pad)),
        f"(b1) fixed: longest in data ({longest})": (orders["random"], PadCollator(pad, pad_to_multiple_of=longest)),
        f"(b2) fixed: max_length {args.max_length}": (orders["random"],
                                                      PadCollator(pad, pad_to_multiple_of=args.max_length)),
    }
    n_params = facts["total_params"]
    print(f"[1] throughput: GPT-NeoX {n_params:,} parameters (hidden {args.hidden}, {args.layers} layers, vocab "
          f"{len(tokenizer)}), LoRA r {args.lora_r} on {facts['target_modules']} ({facts['trainable_params']:,} "
          f"trainable), device {args.device}, torch threads {torch.get_num_threads()}")
    print(f"    data: {len(feats)} seed2shot examples, tokens per example min {min(lengths)} / mean "
          f"{statistics.mean(lengths):.1f} / max {longest} (shared 2-shot prefix "
          f"{len(tokenizer(tiny.seed2shot().prefix)['input_ids'])}), {real:,} real tokens; batch size "
          f"{args.batch_size}, {-(-len(feats) // args.batch_size)} steps per pass, {args.repeats} pass(es) each")

    prepared = {name: make_batches(feats, order, args.batch_size, collator)
                for name, (order, collator) in policies.items()}
    for batches in prepared.values():
        assert sum(int(b["attention_mask"].sum()) for b in batches) == real
    best = best_passes(model, prepared, args.device, autocast_for(args.device), args.repeats)
    results = {name: {"s": run.seconds, "padded": sum(b["input_ids"].numel() for b in prepared[name])}
               for name, run in best.items()}
    print(f"    {'policy':<46} {'padded tok':>10} {'pad %':>6} {'seconds':>8} {'real tok/s':>11} {'vs (a)':>7}")
    base = real / results[next(iter(results))]["s"]
    for name, r in results.items():
        tps = real / r["s"]
        print(f"    {name:<46} {r['padded']:>10,} {100 * (1 - real / r['padded']):>6.1f} {r['s']:>8.2f} "
              f"{tps:>11,.0f} {tps / base:>7.2f}")
    names = list(results)
    a = real / results[names[0]]["s"]
    print(f"    ratio (a)/(b1) grouped dynamic vs fixed to the longest example: "
          f"{a / (real / results[names[2]]['s']):.2f}x")
    print(f"    ratio (a)/(b2) grouped dynamic vs fixed max_length {args.max_length}: "
          f"{a / (real / results[names[3]]['s']):.2f}x   (target >= 1.5x)")
    print(f"    ratio (a)/(c) length grouping's own share: {a / (real / results[names[1]]['s']):.2f}x")
    del model
    gc.collect()


# -- (2) memory ------------------------------------------------------------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rss_parts() -> dict[str, int]:
    """RssAnon (private allocations) and RssFile (mapped file pages: safetensors' mmap) in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) * 1024
    return out


def mem_child(model_dir: str, mode: str, device: str) -> None:
    """Runs in a fresh process: loads ``model_dir`` as ``mode`` (fp32 | bf16 | int8) on ``device``, prints JSON."""
    import logging

    import bitsandbytes  # noqa: F401  (imported in every mode, so the baselines match)
    import torch
    import transformers

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    cuda = device == "cuda"
    kwargs: dict[str, Any] = {}
    if mode == "int8":
        compute = torch.float32 if not cuda else (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        kwargs.update(quantization_config=transformers.BitsAndBytesConfig(load_in_8bit=True), dtype=compute,
                      device_map={"": 0 if cuda else "cpu"})
    else:
        kwargs.update(dtype=torch.float32 if mode == "fp32" else torch.bfloat16,
                      device_map={"": 0 if cuda else "cpu"})
    gc.collect()
    if cuda:
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
        cuda0 = torch.cuda.memory_allocated()
    rss0 = _rss_bytes()
    parts0 = _rss_parts()
    t0 = time.perf_counter()
    # disable_mmap: weights read into private memory, so RSS counts them (through safetensors' mmap the float32
    # weights stay file-backed page cache, and the mapping stays open after 8-bit quantization has read it all)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, disable_mmap=True, **kwargs)
    load_s = time.perf_counter() - t0
    gc.collect()
    with torch.no_grad():  # touch every page: weights still backed by the mmap'd file would not count in RSS
        for t in [*model.parameters(), *model.buffers()]:
            t.detach().reshape(-1)[::256].sum()
    out = {
        "mode": mode, "load_s": load_s,
        "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters())
        + sum(b.numel() * b.element_size() for b in model.buffers()),
        "footprint": model.get_memory_footprint(),
        "rss_peak_growth": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0,
        "rss_growth": _rss_bytes() - rss0,
        **{f"{k}_growth": v - parts0[k] for k, v in _rss_parts().items()},
        "int8_linears": sum(type(m).__name__ == "Linear8bitLt" for m in model.modules()),
        "linears": sum(isinstance(m, torch.nn.Linear) for m in model.modules()),
    }
    if cuda:
        out["cuda_peak_growth"] = torch.cuda.max_memory_allocated() - cuda0
        out["cuda_growth"] = torch.cuda.memory_allocated() - cuda0
    print("MEMJSON " + json.dumps(out))


def measure_load(model_dir: Path, mode: str, device: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--_mem-child", str(model_dir), mode, "--device", device],
                          capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    for line in proc.stdout.splitlines():
        if line.startswith("MEMJSON "):
            return json.loads(line[len("MEMJSON "):])
    raise RuntimeError(f"memory subprocess ({mode}) failed:\n{proc.stderr[-3000:]}")


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def memory_report(title: str, model_dir: Path, device: str) -> None:
    modes = ["fp32", "int8"] + (["bf16"] if device == "cuda" else [])
    res = {m: measure_load(model_dir, m, device) for m in modes}
    print(title)
    cols = ["weight_bytes", "rss_peak_growth", "rss_growth"] + (["cuda_peak_growth"] if device == "cuda" else [])
    heads = {"weight_bytes": "params+buffers", "rss_peak_growth": "peak RSS growth", "rss_growth": "RSS after load",
             "cuda_peak_growth": "max_memory_allocated"}
    print(f"    {'load':<6}" + "".join(f"{heads[c]:>22}" for c in cols) + f"{'load s':>8}{'int8 Linear':>13}")
    for m, r in res.items():
        print(f"    {m:<6}" + "".join(f"{mib(r[c]):>22}" for c in cols) + f"{r['load_s']:>8.1f}"
              f"{r['int8_linears']:>6}/{r['linears']:<6}")
    f, q = res["fp32"], res["int8"]
    key = "cuda_peak_growth" if device == "cuda" else "weight_bytes"
    label = "torch.cuda.max_memory_allocated growth" if device == "cuda" else "parameter + buffer bytes"
    print(f"    ratio float32 / 8-bit ({label}): {f[key] / q[key]:.2f}x;  peak RSS growth: "
          f"{f['rss_peak_growth'] / max(q['rss_peak_growth'], 1):.2f}x;  RSS after load: "
          f"{f['rss_growth'] / max(q['rss_growth'], 1):.2f}x")
    if device == "cuda":
        print(f"    ratio bfloat16 / 8-bit (max_memory_allocated growth): "
              f"{res['bf16'][key] / q[key]:.2f}x")


def memory(args: argparse.Namespace, tmp: Path) -> None:
    config = neox_config(args.mem_hidden, args.mem_layers, args.mem_heads, args.mem_vocab)
    d = save_random_neox(tmp / "neox_mem", config)
    proj = projected_weight_bytes(config, rest_bytes=4)
    memory_report(f"[2] base-model memory, {args.device}: GPT-NeoX {proj['params']:,} parameters (hidden "
                  f"{args.mem_hidden}, {args.mem_layers} layers, {args.mem_heads} heads, vocab {args.mem_vocab}), "
                  f"random weights, each load in a fresh process", d, args.device)
    print(f"    (projected for this shape: float32 {mib(proj['fp32'])}, 8-bit {mib(proj['int8'])} -> "
          f"{proj['fp32'] / proj['int8']:.2f}x)")
    p13 = neox_config(**POLYGLOT_1_3B)
    cpu = projected_weight_bytes(p13, rest_bytes=4)
    gpu = projected_weight_bytes(p13, rest_bytes=2)
    assert cpu["params"] == POLYGLOT_1_3B_PARAMS, cpu["params"]
    print(f"    projected, polyglot-ko-1.3b shape ({cpu['params']:,} parameters; not measured): float32 "
          f"{mib(cpu['fp32'])}, 8-bit with float32 rest (CPU) {mib(cpu['int8'])} -> {cpu['fp32'] / cpu['int8']:.2f}x; "
          f"bf16 {mib(gpu['16bit'])}, 8-bit with bf16 rest (CUDA) {mib(gpu['int8'])} -> "
          f"{gpu['16bit'] / gpu['int8']:.2f}x")


# -- (3) polyglot-ko-1.3b shape --------------------------------------------------------------------------------------
def polyglot_steps(args: argparse.Namespace, tok: Any, tmp: Path) -> None:
    import torch

    from kofinsent.training.collators import PadCollator
    from kofinsent.training.loading import load_model
    from kofinsent.training.options import TrainConfig

    if args.device != "cuda":
        print("[3] note: --polyglot-1.3b-shape on CPU is slow (environment notes: ~11 s per 1x128-token 8-bit step)")
    config = neox_config(pad_id=tok.convert_tokens_to_ids("<|endoftext|>"),
                         **POLYGLOT_1_3B)
    t0 = time.perf_counter()
    d = save_random_neox(tmp / "polyglot13b_shape", config, tokenizer=tok, save_dtype=torch.bfloat16)
    print(f"[3] polyglot-ko-1.3b-shaped random model saved (bf16 safetensors) in {time.perf_counter() - t0:.0f} s")
    if not args.skip_memory:
        memory_report(f"[3a] polyglot-ko-1.3b shape, base-model memory on {args.device}", d, args.device)
    cfg = TrainConfig(model=str(d), data="-", out="-", load_in_8bit=True, lora_r=args.lora_r,
                      lora_alpha=2 * args.lora_r)
    if args.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        mem0 = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    model, tokenizer, facts = load_model(cfg)
    load_s = time.perf_counter() - t0
    model.train()
    if args.device == "cuda":
        load_peak = torch.cuda.max_memory_allocated() - mem0
        loaded = torch.cuda.memory_allocated() - mem0
        torch.cuda.reset_peak_memory_stats()
    feats = build_examples(tokenizer, max(args.examples, (args.steps + 3) * args.big_batch_size), args.seed + 1)
    order = policy_orders(feats, args.big_batch_size, args.seed)["grouped"]
    batches = make_batches(feats, order, args.big_batch_size, PadCollator(tokenizer.pad_token_id))
    batches = batches[:args.steps + 3]
    autocast = autocast_for(args.device)
    train_pass(model, batches[:3], args.device, 2e-4, autocast)
    secs, steps, _ = train_pass(model, batches[3:], args.device, 2e-4, autocast)
    real = sum(int(b["attention_mask"].sum()) for b in batches[3:])
    padded = sum(b["input_ids"].numel() for b in batches[3:])
    print(f"[3b] polyglot-ko-1.3b shape, 8-bit + LoRA r {args.lora_r} on {facts['target_modules']} "
          f"({facts['trainable_params']:,} trainable of {facts['total_params']:,}), device {args.device}, "
          f"load {load_s:.1f} s")
    print(f"    {len(steps)} steps after 3 warm-up, batch size {args.big_batch_size}, length-grouped dynamic padding "
          f"({real:,} real / {padded:,} padded tokens): step time mean {statistics.mean(steps):.3f} s, median "
          f"{statistics.median(steps):.3f} s, min {min(steps):.3f} s; {real / secs:,.0f} real tokens/s")
    if args.device == "cuda":
        print(f"    GPU memory: after load {mib(loaded)} (peak during load {mib(load_peak)}); peak during training "
              f"(torch.cuda.max_memory_allocated) {mib(torch.cuda.max_memory_allocated() - mem0)}; "
              f"{torch.cuda.get_device_name(0)}")


# -- main ------------------------------------------------------------------------------------------------------------
def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_mem-child":
        mem_child(sys.argv[2], sys.argv[3], sys.argv[5] if len(sys.argv) > 5 else "cpu")
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    add_int_options(ap, {
        "--examples": 64, "--batch-size": 8, "--max-length": (512, "the fixed padding width of baseline (b2)"),
        "--hidden": 256, "--layers": 4, "--heads": 4, "--lora-r": 8,
        "--repeats": (3, "passes per padding policy (the best one counts)"), "--seed": 0,
        "--threads": (1, "torch CPU threads (0: torch's default)"),
        "--mem-hidden": 1024, "--mem-layers": 6, "--mem-heads": 8, "--mem-vocab": 30080})
    ap.add_argument("--polyglot-1.3b-shape", dest="polyglot", action="store_true",
                    help="also train a random polyglot-ko-1.3b-shaped model in 8-bit + LoRA (for --device cuda)")
    add_int_options(ap, {"--steps": (20, "timed steps of --polyglot-1.3b-shape"),
                         "--big-batch-size": (8, "batch size of --polyglot-1.3b-shape")})
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()

    import logging

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' own deprecations inside peft
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False)")
    if args.threads:
        torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    print(f"train_bench {time.strftime('%Y-%m-%d %H:%M')}: torch {torch.__version__}, transformers "
          f"{transformers.__version__}, {os.cpu_count()} CPUs"
          + (f", {torch.cuda.get_device_name(0)}" if args.device == "cuda" else ""))
    with tempfile.TemporaryDirectory(prefix="train_bench_") as tmpd:
        tmp = Path(tmpd)
        tok = bench_tokenizer()
        if not args.skip_throughput:
            throughput(args, tok, tmp)
        if not args.skip_memory:
            memory(args, tmp)
        if args.polyglot:
            polyglot_steps(args, tok, tmp)
    print(f"total {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()

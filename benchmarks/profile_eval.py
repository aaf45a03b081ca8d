"""Where the prefix-cached log-likelihood path spends its time at GPU scale (issue 15: "say what bounds them").

    python benchmarks/profile_eval.py --out DIR          # on a CUDA machine: polyglot-ko-1.3b's shape, bf16
    python benchmarks/profile_eval.py --dry-run          # tiny shape on the CPU: proves the script runs

One call of ``HFBackend.loglikelihood`` on N items (the evaluator's ``--batch-size auto`` call size), after a warm-up
call, measured three ways: wall clock; cProfile (the Python side: tokenization, batching, bookkeeping); and
torch.profiler (the kernels). The GPU-busy share is the summed kernel time over the wall time: far below 1 means the
host side (Python, tokenization, launches) bounds the path, near 1 that the kernels do, and then the kernel table
says which (GEMMs, attention, the LM head, elementwise work).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def build(work: Path, dry: bool, device: str) -> tuple[str, int]:
    import torch
    from model_shapes import bench_shape, bench_tokenizer, neox_config
    from transformers import GPTNeoXForCausalLM

    from kofinsent import tiny

    tok = bench_tokenizer()
    pad = tok.convert_tokens_to_ids(tiny.EOT)
    with torch.device(device):
        torch.manual_seed(0)
        model = GPTNeoXForCausalLM(neox_config(pad_id=pad, **bench_shape(dry, tok)))
    model = model.to(torch.float32 if dry else torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(work / "neox")
    tok.save_pretrained(work / "neox")
    return str(work / "neox"), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--items", type=int, default=8192)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    import torch

    from kofinsent import tiny
    from kofinsent.backends.hf import HFBackend
    from kofinsent.prompts.direction import CONTINUATIONS, seed2shot

    cuda = torch.cuda.is_available() and not args.dry_run
    device, n_items = ("cuda", args.items) if cuda else ("cpu", min(args.items, 256))
    lines: list[str] = []

    def say(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir, n_params = build(Path(tmp), not cuda, device)
        backend = HFBackend(model_dir, dtype="bfloat16" if cuda else "float32", batch_size="auto", device=device)
        prompt = seed2shot()
        titles = tiny.forum_titles(2 * n_items, seed=7)
        requests = [(prompt.context(t), c) for t in titles[n_items:] for c in CONTINUATIONS]
        backend.loglikelihood([(prompt.context(t), c) for t in titles[:n_items] for c in CONTINUATIONS])  # warm-up

        def call() -> float:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            backend.loglikelihood(requests)
            if cuda:
                torch.cuda.synchronize()
            return time.perf_counter() - t0

        wall = call()
        say(f"{n_params:,} parameters on {device}; one call of {n_items} items ({len(requests)} requests): "
            f"{wall:.3f} s = {n_items / wall:,.0f} items/s; batching {backend.batching()}")

        prof = cProfile.Profile()
        prof.enable()
        call()
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(18)
        say("cProfile, by own time (the host side):\n" + "\n".join(s.getvalue().splitlines()[:45]))

        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts) as tp:
            wall_p = call()
        key = "cuda_time_total" if cuda else "cpu_time_total"
        say(f"torch.profiler, by {key} (wall {wall_p:.3f} s under the profiler):\n"
            + tp.key_averages().table(sort_by=key, row_limit=22, max_name_column_width=60))
        if cuda:
            kernels = sum(e.self_device_time_total for e in tp.key_averages()) / 1e6
            say(f"summed kernel time {kernels:.3f} s over wall {wall_p:.3f} s: GPU busy {kernels / wall_p:.0%}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "profile_eval.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""Evaluator speed on a tiny polyglot-ko-shaped GPT-NeoX (~1M parameters, CPU, float32), seed2shot, in one run.

    python benchmarks/eval_bench.py [--items 1000] [--batch-size 16] [--gen-items N] [--threads 1]
    python benchmarks/eval_bench.py --auto-check [--items 1000] [--repeats 3]

Prints items/s (an item = one title = two log-likelihood requests, " [상승]" and " [하락]") of
(a) the hf backend's prefix-cached log-likelihood, (b) its plain (lm-eval-style) path, (c) lm-evaluation-harness's
``HFLM.loglikelihood`` on the same pairs and the same model object (skipped when lm-eval is not installed) — all at
the same batch size — and (d) seed-style generation: one item at a time, greedy, 6 new tokens (enough for a label);
then the ratios cached / lm-eval (target >= 3) and cached / generate (target >= 10). Scores of (a), (b), (c) are
compared too. Timings count scoring only: tokenization to the last score, not imports or model load.

``--auto-check`` measures ``--batch-size auto`` instead: items/s through the evaluator's own loops
(:func:`kofinsent.evaluation.evaluate.score_loglikelihood` / ``run_generate``, with the items per call ``kofinsent eval`` uses)
at batch sizes 1, 16, 64 and auto, for the prefix-cached and the plain log-likelihood paths and for greedy generation
(8 new tokens, as ``--method generate``), and prints auto / the best of the fixed ones (target >= 0.9: on a CPU auto
must never be more than 10% slower than the best fixed batch size). Each setting is timed ``--repeats`` times,
interleaved, and its best time kept (a shared machine's noise only ever slows a run down).

One torch thread by default: a 1M-parameter model gains nothing from more, and on a shared 2-core machine a second
OpenMP thread that loses its core to another process stalls every op at the barrier (measured: the same run 5-20x
slower and the ratios noise). ``--threads 0`` keeps torch's default.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--gen-items", type=int, default=None, help="items for (d) (default: all; it is a rate)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--auto-check", action="store_true", help="auto vs batch 1, 16, 64 (see above)")
    ap.add_argument("--repeats", type=int, default=3, help="--auto-check: timings per setting (best kept)")
    args = ap.parse_args()

    import torch
    from model_shapes import bench_tokenizer  # benchmarks/model_shapes.py

    from kofinsent import tiny
    from kofinsent.backends import GenOptions
    from kofinsent.backends.hf import HFBackend
    from kofinsent.prompts.direction import CONTINUATIONS, seed2shot

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="eval_bench_"))
    tok = bench_tokenizer()
    model_dir = tiny.make_gpt_neox(tmp / "neox", tok, seed=0, hidden=128, layers=4, heads=4)
    titles = tiny.forum_titles(args.items, seed=123)
    prompt = seed2shot()
    if args.auto_check:
        auto_check(model_dir, titles, args)
        return
    requests = [(prompt.context(t), c) for t in titles for c in CONTINUATIONS]

    cached = HFBackend(str(model_dir), batch_size=args.batch_size, dtype="float32", device="cpu")
    plain = HFBackend(str(model_dir), batch_size=args.batch_size, dtype="float32", device="cpu", prefix_cache=False)
    n_params = sum(p.numel() for p in cached.model.parameters())
    n_prefix = len(cached.encode(prompt.prefix))
    print(f"model: GPT-NeoX {n_params:,} parameters, vocab {len(tok)}, torch threads {torch.get_num_threads()}; "
          f"{args.items} seed2shot items ({len(requests)} requests), prefix {n_prefix} tokens, "
          f"batch size {args.batch_size}")

    def timed(fn, arg):
        fn(arg[:32])  # warm-up: first calls allocate and dispatch slowly
        t0 = time.perf_counter()
        out = fn(arg)
        return out, time.perf_counter() - t0

    rows: list[tuple[str, float]] = []
    ll_cached, s = timed(cached.loglikelihood, requests)
    rows.append(("(a) hf prefix-cached loglikelihood", args.items / s))
    ll_plain, s = timed(plain.loglikelihood, requests)
    rows.append(("(b) hf plain loglikelihood", args.items / s))
    diffs = {"cached vs plain": max(abs(a - b) for a, b in zip(ll_cached, ll_plain))}

    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except ImportError as e:
        print(f"(c) skipped: lm-eval is not importable ({e})")
        lm = None
    else:
        logging.getLogger("lm_eval").setLevel(logging.ERROR)
        lm = HFLM(pretrained=plain.model, tokenizer=plain.tokenizer, batch_size=args.batch_size, device="cpu")
        insts = [Instance(request_type="loglikelihood", doc={}, arguments=r, idx=i) for i, r in enumerate(requests)]
        res, s = timed(lambda x: lm.loglikelihood(x, disable_tqdm=True), insts)
        rows.append(("(c) lm-eval HFLM.loglikelihood", args.items / s))
        ll_lmeval = [r[0] for r in res]
        diffs["cached vs lm-eval"] = max(abs(a - b) for a, b in zip(ll_cached, ll_lmeval))
        argmax = lambda ll: [ll[i] >= ll[i + 1] for i in range(0, len(ll), 2)]  # noqa: E731
        diffs["argmax disagreements cached vs lm-eval"] = sum(
            a != b for a, b in zip(argmax(ll_cached), argmax(ll_lmeval)))

    gen = HFBackend(str(model_dir), batch_size=1, dtype="float32", device="cpu")
    opts = GenOptions(max_new_tokens=6, temperature=0.0)
    contexts = [prompt.context(t) for t in titles[:args.gen_items or args.items]]
    gen.generate(contexts[:2], opts)
    t0 = time.perf_counter()
    for c in contexts:  # the seed's way: one item per call
        gen.generate([c], opts)
    rows.append(("(d) seed-style greedy generation, batch 1", len(contexts) / (time.perf_counter() - t0)))

    width = max(len(r[0]) for r in rows)
    for name, rate in rows:
        print(f"{name:<{width}}  {rate:9.1f} items/s")
    rate = dict(rows)
    a = rate["(a) hf prefix-cached loglikelihood"]
    if lm is not None:
        print(f"ratio cached / lm-eval   {a / rate['(c) lm-eval HFLM.loglikelihood']:6.2f}x  (target >= 3)")
    print(f"ratio cached / plain     {a / rate['(b) hf plain loglikelihood']:6.2f}x")
    print(f"ratio cached / generate  {a / rate['(d) seed-style greedy generation, batch 1']:6.2f}x  (target >= 10)")
    for k, v in diffs.items():
        print(f"max |diff| {k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}")
    print(f"cached path: {cached.cached_requests} requests cached, {cached.token_fallbacks} token fallbacks, "
          f"{cached.context_exceeded} over the context")


def auto_check(model_dir: Path, titles: list[str], args: argparse.Namespace) -> None:
    import torch

    from kofinsent.backends import GenOptions
    from kofinsent.backends.hf import CPU_TOKEN_BUDGETS, HFBackend
    from kofinsent.evaluation.evaluate import (
        EvalConfig,
        items_per_call,
        run_generate,
        score_loglikelihood,
    )
    from kofinsent.prompts.direction import seed2shot

    prompt = seed2shot()
    items = [{"id": str(i), "title": t, "label": "[상승]"} for i, t in enumerate(titles)]
    sizes: list[int | str] = [1, 16, 64, "auto"]
    # generation and the plain path are 5-10x slower per item: fewer items keep the check near a minute
    modes = {"loglik prefix-cached": (items, True), "loglik plain": (items[:max(1, len(items) * 2 // 5)], False),
             "generate, 8 new tokens": (items[:max(1, len(items) // 4)], True)}
    print(f"--batch-size auto vs fixed: torch threads {torch.get_num_threads()}, CPU token budgets "
          f"{CPU_TOKEN_BUDGETS}, best of {args.repeats} interleaved timings, items/s")
    backends = {(m, bs): HFBackend(str(model_dir), batch_size=bs, dtype="float32", device="cpu",
                                   prefix_cache=modes[m][1]) for m in modes for bs in sizes}
    opts = GenOptions(max_new_tokens=8, temperature=0.0)

    def once(mode: str, bs: int | str) -> float:
        b, todo = backends[mode, bs], modes[mode][0]
        cfg = EvalConfig(backend="hf", model=str(model_dir), data="", out="", batch_size=bs)
        if mode.startswith("generate"):
            _, secs = run_generate(b, prompt, todo, opts, items_per_call(cfg, b, "generate"))
        else:
            _, secs = score_loglikelihood(b, prompt, todo, chunk=items_per_call(cfg, b, "loglikelihood"))
        return len(todo) / secs

    best: dict[tuple[str, int | str], float] = {}
    for (mode, _), b in backends.items():  # warm-up: first calls allocate and dispatch slowly
        (b.generate([prompt.context(t) for t in titles[:4]], opts) if mode.startswith("generate")
         else b.loglikelihood([(prompt.context(t), c) for t in titles[:16] for c in (" [상승]", " [하락]")]))
    for _ in range(args.repeats):
        for key in backends:
            best[key] = max(best.get(key, 0.0), once(*key))
    worst = float("inf")
    for mode, (todo, _) in modes.items():
        fixed = {bs: best[mode, bs] for bs in sizes if bs != "auto"}
        top = max(fixed, key=fixed.__getitem__)
        ratio = best[mode, "auto"] / fixed[top]
        worst = min(worst, ratio)
        info = backends[mode, "auto"].batching()
        print(f"{mode:<24} ({len(todo)} items)  " + "  ".join(f"{bs}: {best[mode, bs]:7.1f}" for bs in sizes)
              + f"  | auto / best fixed (batch {top}) = {ratio:.2f}  (budget {info['token_budget']} tokens, "
                f"{info['rows_per_batch']:.1f} rows per batch)")
    print(f"worst auto / best fixed = {worst:.2f}  (target >= 0.90): {'ok' if worst >= 0.9 else 'FAILS'}")


if __name__ == "__main__":
    main()

"""Evaluator speed on a tiny polyglot-ko-shaped GPT-NeoX (~1M parameters, CPU, float32), seed2shot, in one run.

    python benchmarks/eval_bench.py [--items 1000] [--batch-size 16] [--gen-items N] [--threads 1]

Prints items/s (an item = one title = two log-likelihood requests, " [상승]" and " [하락]") of
(a) the hf backend's prefix-cached log-likelihood, (b) its plain (lm-eval-style) path, (c) lm-evaluation-harness's
``HFLM.loglikelihood`` on the same pairs and the same model object (skipped when lm-eval is not installed) — all at
the same batch size — and (d) seed-style generation: one item at a time, greedy, 6 new tokens (enough for a label);
then the ratios cached / lm-eval (target >= 3) and cached / generate (target >= 10). Scores of (a), (b), (c) are
compared too. Timings count scoring only: tokenization to the last score, not imports or model load.

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
    args = ap.parse_args()

    import torch

    from kofinsent import tiny
    from kofinsent.backends import GenOptions
    from kofinsent.backends.hf import HFBackend
    from kofinsent.prompts.direction import CONTINUATIONS, seed2shot

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="eval_bench_"))
    tok = tiny.train_tokenizer(tiny.korean_corpus(4000, 0), vocab_size=1000)
    model_dir = tiny.make_gpt_neox(tmp / "neox", tok, seed=0, hidden=128, layers=4, heads=4)
    titles = tiny.forum_titles(args.items, seed=123)
    prompt = seed2shot()
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


if __name__ == "__main__":
    main()

"""Packed (``kofinsent train --packing``) vs padded micro-batches: training throughput on the tiny model, on the CPU.

    python benchmarks/pack_bench.py [--examples 256] [--batch-size 32] [--hidden 256] [--layers 4] [--repeats 3]
                                    [--threads 1] [--device cpu|cuda]

One LoRA model built as ``kofinsent train`` builds it (``kofinsent.training.loading.load_model``, SDPA attention) trains on the
same seed2shot examples (synthetic forum titles, full loss) in the order the HF Trainer's length-grouped sampler gives,
one pass per policy, from the same LoRA weights and a fresh AdamW each time (``benchmarks/timed_training.py``):

- padded: ``kofinsent.training.collators.PadCollator`` (each micro-batch padded to its longest example);
- packed, rows of ``ROW_TOKENS``: ``PackCollator`` as ``--packing`` runs under SDPA / eager attention;
- packed, one row: ``PackCollator(row_tokens=None)``, the layout ``--packing`` uses under FlashAttention 2 (here under
  SDPA, with a block-diagonal mask over the whole row: its attention grows with the square of the row).

It prints real (non-pad) tokens/s and samples/s per policy, the tokens each computes (padding or filler included),
and checks that every policy's summed loss over the pass is the same (the packed loss equals the padded one). The
titles are of similar length and the sampler groups them by length, so padding is already small here: the gain of
packing is bounded by the padding it removes, the cost is the block-diagonal mask.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    sys.path.insert(0, str(HERE))
    import timed_training as tt  # benchmarks/timed_training.py: the examples, batches and timed training loop

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    tt.add_int_options(ap, {
        "--examples": 256, "--batch-size": 32, "--hidden": 256, "--layers": 4, "--heads": 4,
        "--repeats": (3, "passes per policy (the best one counts)"),
        "--threads": (1, "torch CPU threads (0: torch's default)"), "--seed": 0})
    args = ap.parse_args()

    import torch

    from kofinsent import tiny
    from kofinsent.training.collators import ROW_TOKENS, PackCollator, PadCollator
    from kofinsent.training.loading import load_model
    from kofinsent.training.options import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    tok = tiny.train_tokenizer(tiny.korean_corpus(2000, seed=0), vocab_size=800)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = tiny.make_gpt_neox(Path(tmp) / "neox", tok, seed=0, hidden=args.hidden, layers=args.layers,
                                       heads=args.heads, init_std=0.02)
        cfg = TrainConfig(model=str(model_dir), data="-", out="-", lora_dropout=0.0, packing=True)
        model, tokenizer, facts = load_model(cfg)
    model.to(args.device).train()
    feats = tt.build_examples(tokenizer, args.examples, args.seed)
    order = tt.policy_orders(feats, args.batch_size, args.seed)["grouped"]
    lengths = [len(f["input_ids"]) for f in feats]
    real = sum(lengths)
    pad = tokenizer.pad_token_id
    policies = {"padded (PadCollator)": PadCollator(pad),
                f"packed, rows of {ROW_TOKENS} tokens": PackCollator(pad, ROW_TOKENS),
                "packed, one row per micro-batch": PackCollator(pad, None)}
    print(f"pack_bench: GPT-NeoX {facts['total_params']:,} parameters (hidden {args.hidden}, {args.layers} layers), "
          f"LoRA r 8, {facts['attn_implementation_used']} attention, device {args.device}, torch threads "
          f"{torch.get_num_threads()}; {len(feats)} examples, {min(lengths)}..{max(lengths)} tokens "
          f"({real:,} real), micro-batch {args.batch_size}, length-grouped order, best of {args.repeats}")
    prepared = {name: tt.make_batches(feats, order, args.batch_size, c) for name, c in policies.items()}
    runs = tt.best_passes(model, prepared, args.device, tt.autocast_for(args.device), args.repeats)
    best = {name: (run.seconds, sum(run.losses)) for name, run in runs.items()}
    base = real / best[next(iter(best))][0]
    print(f"  {'policy':<34} {'computed tok':>12} {'waste %':>7} {'seconds':>8} {'real tok/s':>10} "
          f"{'samples/s':>9} {'vs padded':>9} {'sum of losses':>13}")
    for name, (secs, loss) in best.items():
        computed = sum(b["input_ids"].numel() for b in prepared[name])
        print(f"  {name:<34} {computed:>12,} {100 * (1 - real / computed):>7.1f} {secs:>8.2f} {real / secs:>10,.0f} "
              f"{len(feats) / secs:>9,.1f} {real / secs / base:>9.2f} {loss:>13.5f}")
    losses = [loss for _, loss in best.values()]
    print(f"  same loss packed vs padded: max |diff| of the summed loss {max(losses) - min(losses):.2e}")


if __name__ == "__main__":
    main()

"""The Chinese d2l book's Jay Chou lyrics experiment (§6.4–6.8) with rnnrs, for RNN, GRU and LSTM.

As in the book: the first 10,000 characters with newlines as spaces, one-hot inputs, one hidden
layer of 256 units, random sampling of 35-step sequences in batches of 32, SGD with learning rate
100 and gradient clipping to norm 0.01, 250 epochs (160 for GRU/LSTM in the book; 250 here for all),
perplexity every 50 epochs and 50-character greedy continuations of 「分开」 and 「不分开」.

    python examples/d2l_jaychou.py [--corpus ../shared/corpora/jaychou_lyrics.txt] [--epochs 250]

The corpus is copyrighted and only read at run time; it is never part of this repository.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import rnnrs

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=os.path.join(HERE, "..", "..", "shared", "corpora", "jaychou_lyrics.txt"))
    p.add_argument("--epochs", type=int, default=250)
    p.add_argument("--every", type=int, default=50)
    args = p.parse_args()
    if not os.path.exists(args.corpus):
        print(f"corpus not found: {args.corpus} (skipping)", file=sys.stderr)
        return 0
    with open(args.corpus, encoding="utf-8") as f:
        text = f.read().replace("\n", " ").replace("\r", " ")[:10000]
    print(f"| cell | " + " | ".join(f"ppl @{e}" for e in range(args.every, args.epochs + 1, args.every))
          + " | time | 分开 | 不分开 |")
    print("|---" * (4 + args.epochs // args.every) + "|")
    for cell in ("rnn", "gru", "lstm"):
        ppl = {}

        def record(ev, ppl=ppl):
            if ev["event"] == "epoch" and ev["epoch"] % args.every == 0:
                ppl[ev["epoch"]] = ev["train_ppl"]

        t0 = time.perf_counter()
        result = rnnrs.train(text, cell=cell, embed=None, hidden=256, layers=1, dropout=0.0, seq_len=35,
                             batch_size=32, sampling="random", optimizer="sgd", lr=100.0, clip=0.01,
                             epochs=args.epochs, val_fraction=0.0, seed=0, quiet=True, callbacks=[record])
        wall = time.perf_counter() - t0
        tok, model = result.tokenizer, result.model
        outs = []
        for prefix in ("分开", "不分开"):
            ids = model.sample(tok.encode(prefix), length=50, greedy=True)
            outs.append((prefix + tok.decode(ids)).replace("|", "/"))
        cols = " | ".join(f"{ppl.get(e, float('nan')):.2f}" for e in range(args.every, args.epochs + 1, args.every))
        print(f"| {cell} | {cols} | {wall:.0f} s | {outs[0]} | {outs[1]} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

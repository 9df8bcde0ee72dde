"""The Chinese d2l book's Jay Chou lyrics experiment (§6.4–6.8) with rnnrs, for RNN, GRU and LSTM.

With the book's settings: the first 10,000 characters with newlines as spaces, one-hot inputs, one
hidden layer of 256 units, every weight from N(0, 0.01) and zero biases (``init="normal"``),
35-step windows cut at fixed offsets 0, 35, 70, ... (``window_offset="fixed"``) in batches of 32,
SGD with learning rate 100 and gradient clipping to norm 0.01; the RNN with random sampling for
250 epochs, the GRU and LSTM with sequential sampling (state carried, detached) for 160 epochs;
training perplexity every 40 epochs (and at the last) and 50-character greedy continuations of
「分开」 and 「不分开」.

    python examples/d2l_jaychou.py [--corpus ../shared/corpora/jaychou_lyrics.txt] [--scale 1.0]

``--scale`` multiplies the epochs (the tests run a short version). ``--pytorch-init`` uses
PyTorch's initialisation and random windows instead (what this example did before).

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
    p.add_argument("--scale", type=float, default=1.0, help="multiply the book's epochs (default 1)")
    p.add_argument("--pytorch-init", action="store_true", help="PyTorch's initialisation and random windows")
    p.add_argument("--cells", default="rnn,gru,lstm")
    args = p.parse_args()
    book = {"rnn": ("random", 250), "gru": ("sequential", 160), "lstm": ("sequential", 160)}
    if not os.path.exists(args.corpus):
        print(f"corpus not found: {args.corpus} (skipping)", file=sys.stderr)
        return 0
    with open(args.corpus, encoding="utf-8") as f:
        text = f.read().replace("\n", " ").replace("\r", " ")[:10000]
    init = {} if args.pytorch_init else {"init": "normal", "init_std": 0.01, "window_offset": "fixed"}
    print("| cell | sampling | epochs | ppl at epochs | time | 分开 | 不分开 |")
    print("|---|---|---|---|---|---|---|")
    for cell in args.cells.split(","):
        sampling, epochs = book[cell][0], max(1, round(book[cell][1] * args.scale))
        ppl = {}

        def record(ev, ppl=ppl, epochs=epochs):
            if ev["event"] == "epoch" and (ev["epoch"] % 40 == 0 or ev["epoch"] == epochs):
                ppl[ev["epoch"]] = ev["train_ppl"]

        t0 = time.perf_counter()
        result = rnnrs.train(text, cell=cell, embed=None, hidden=256, layers=1, dropout=0.0, seq_len=35,
                             batch_size=32, sampling=sampling, optimizer="sgd", lr=100.0, clip=0.01,
                             epochs=epochs, val_fraction=0.0, seed=0, quiet=True, callbacks=[record], **init)
        wall = time.perf_counter() - t0
        tok, model = result.tokenizer, result.model
        outs = []
        for prefix in ("分开", "不分开"):
            ids = model.sample(tok.encode(prefix), length=50, greedy=True)
            outs.append((prefix + tok.decode(ids)).replace("|", "/"))
        cols = ", ".join(f"{e}: {p:.2f}" for e, p in sorted(ppl.items()))
        print(f"| {cell} | {sampling} | {epochs} | {cols} | {wall:.0f} s | {outs[0]} | {outs[1]} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

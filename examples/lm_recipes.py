"""Measure what the language-model options buy, on the corpora in ../shared/corpora (read at run
time, never shipped). Prints markdown tables for docs/language-models.md:

1. initialisers: validation perplexity after N steps and the gradient norm of the first step;
2. today's recipe vs the AWD-LSTM regularised recipe at the same wall time (two corpora);
3. a BPE model vs a character model, compared in bits per character;
4. fine-tuning the built-in Song-ci model on Jay Chou lyrics vs training from scratch for the
   same wall time, with the <unk> rate of the new corpus.

    python examples/lm_recipes.py [--corpora ../shared/corpora] [--seconds 60] [--only 1,2,3,4]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

import rnnrs
from rnnrs.checkpoint import load_model
from rnnrs.generate import DEFAULT_MODEL_DIR
from rnnrs.trainer import evaluate_ids

HERE = os.path.dirname(os.path.abspath(__file__))


class Deadline:
    """A callback that stops training after ``seconds`` of wall time."""

    def __init__(self, seconds: float) -> None:
        self.end = time.perf_counter() + seconds

    def __call__(self, ev) -> None:
        if ev["event"] == "step" and time.perf_counter() > self.end:
            raise rnnrs.StopTraining()


def run(corpus, seconds, **opts):
    """Train for ``seconds``; returns the result and ``(bits per character, perplexity)`` of the
    final model on the held-out last 5 % of the text."""
    r = rnnrs.train(corpus=corpus, steps=100_000, val_every=0, checkpoint_every=0, quiet=True, plot=False,
                    val_fraction=0.05, callbacks=[Deadline(seconds)], **opts)
    with open(corpus, encoding="utf-8") as f:
        text = f.read()
    return r, bits_per_char(r.model, r.tokenizer, text[len(text) - round(len(text) * 0.05):])


def bits_per_char(model, tok, text):
    ids = tok.encode(text)
    loss, _ = evaluate_ids(model, ids, 32, 64)
    return loss * ids.size / (len(text) * math.log(2)), math.exp(loss)


def initialisers(corpora, steps):
    path = os.path.join(corpora, "timemachine.txt")
    print(f"\n### Initialisers (timemachine.txt, char LSTM 1 x 128, embed 64, {steps} steps, Adam 2e-3)\n")
    print("| init | recurrent_init | forget_bias | gradient norm, step 1 | val ppl |")
    print("|---|---|---|---:|---:|")
    for init, rec, fb in [("pytorch", None, None), ("normal", None, None), ("xavier_uniform", None, None),
                          ("xavier_normal", None, None), ("kaiming_uniform", None, None),
                          ("xavier_uniform", "orthogonal", None), ("xavier_uniform", "orthogonal", 1.0)]:
        norms = []
        r = rnnrs.train(corpus=path, steps=steps, hidden=128, embed=64, layers=1, dropout=0.0, init=init,
                        recurrent_init=rec, forget_bias=fb, quiet=True, plot=False, val_every=0,
                        callbacks=[lambda ev: norms.append(ev["grad_norm"]) if ev["event"] == "step" else None])
        print(f"| {init} | {rec or '(as init)'} | {fb if fb is not None else '-'} | {norms[0]:.3f} | "
              f"{r.summary['val_ppl']:.3f} |", flush=True)


def regularised(corpora, seconds):
    print(f"\n### Today's recipe vs the regularised recipe, {seconds:.0f} s of training each\n")
    print("| corpus | recipe | steps | train ppl | val ppl |")
    print("|---|---|---:|---:|---:|")
    base = dict(hidden=256, embed=128, layers=2, seq_len=64, batch_size=32, lr=3e-3)
    recipes = {"today (dropout 0.1 between layers)": dict(dropout=0.1),
               "AWD: tied, embed 0.1, locked 0.3, weight drop 0.3, forget bias 1": dict(
                   dropout=0.1, tie_weights=True, embed_dropout=0.1, locked_dropout=0.3, weight_drop=0.3,
                   forget_bias=1.0)}
    for name in ("timemachine.txt", "blake_poems.txt"):
        for label, opts in recipes.items():
            r, (_, ppl) = run(os.path.join(corpora, name), seconds, **base, **opts)
            s = r.summary
            print(f"| {name} | {label} | {s['steps']} | {s['train_ppl']:.3f} | {ppl:.3f} |", flush=True)


def bpe_vs_char(corpora, seconds):
    path = os.path.join(corpora, "timemachine.txt")
    print(f"\n### BPE vs characters (timemachine.txt, LSTM 2 x 256, {seconds:.0f} s each)\n")
    print("| tokens | vocabulary | steps | val bits per token | val bits per character |")
    print("|---|---:|---:|---:|---:|")
    for label, opts in (("char", dict(level="char")), ("BPE", dict(level="bpe", bpe_vocab=1000))):
        r, (bpc, ppl) = run(path, seconds, hidden=256, embed=128, layers=2, seq_len=64, batch_size=32, lr=3e-3,
                            **opts)
        bpt = math.log2(ppl)
        print(f"| {label} | {len(r.tokenizer.vocab)} | {r.summary['steps']} | {bpt:.3f} | {bpc:.3f} |", flush=True)


def fine_tune(corpora, seconds):
    path = os.path.join(corpora, "jaychou_lyrics.txt")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    val = text[len(text) - round(len(text) * 0.05):]
    base, tok, _ = load_model(DEFAULT_MODEL_DIR)
    ids = tok.encode(text)
    unk = float(np.mean(ids == 0))
    print(f"\n### Fine-tuning the built-in model on jaychou_lyrics.txt ({seconds:.0f} s each; <unk> rate "
          f"{100 * unk:.2f}%)\n")
    print("| model | vocabulary | steps | val ppl (held-out last 5 %) | val bits per character |")
    print("|---|---|---:|---:|---:|")
    bpc, ppl = bits_per_char(base, tok, val)
    print(f"| built-in, as shipped | built-in (4,299) | 0 | {ppl:.2f} | {bpc:.3f} |")
    r, (bpc, ppl) = run(path, seconds, init_from="builtin", lr=1e-3)
    print(f"| built-in, fine-tuned | built-in (4,299) | {r.summary['steps']} | {ppl:.2f} | {bpc:.3f} |", flush=True)
    r, (bpc, ppl) = run(path, seconds, hidden=256, embed=128, layers=2, lr=3e-3)
    print(f"| from scratch (same size) | its own ({len(r.tokenizer.vocab):,}) | {r.summary['steps']} | {ppl:.2f} | "
          f"{bpc:.3f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpora", default=os.path.join(HERE, "..", "..", "shared", "corpora"))
    p.add_argument("--seconds", type=float, default=60.0, help="wall time per training run (default 60)")
    p.add_argument("--steps", type=int, default=300, help="steps of the initialiser runs (default 300)")
    p.add_argument("--only", default="1,2,3,4")
    args = p.parse_args()
    if not os.path.isdir(args.corpora):
        print(f"corpora not found: {args.corpora} (skipping)", file=sys.stderr)
        return 0
    parts = {"1": lambda: initialisers(args.corpora, args.steps), "2": lambda: regularised(args.corpora, args.seconds),
             "3": lambda: bpe_vs_char(args.corpora, args.seconds), "4": lambda: fine_tune(args.corpora, args.seconds)}
    for k in args.only.split(","):
        parts[k]()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Soak test: train for a long time (20 minutes by default) and show that memory stays flat.

    python scripts/soak.py                      # 20 minutes, RSS every 30 s
    python scripts/soak.py --minutes 1 --every 5 --out /tmp/soak

One process trains a small LSTM language model with the real training loop (``rnnrs.Trainer``:
sequential batches with the state carried, validation, sample previews, checkpoints every
``--checkpoint-every`` steps), and on every RSS sample also loads the last checkpoint back and
generates from it — so the training step, evaluation, sampling, the safetensors writer and reader
all run thousands of times. Every ``--every`` seconds the resident set size (``VmRSS``) is recorded;
the table shows it with the step count and throughput. The verdict compares the second half of the
run with the first sample after warm-up: memory is *flat* when the RSS grew by less than
``--tolerance-mb`` (default 16 MB) and the fitted slope over the second half (when it spans at
least 5 minutes) is under ``--max-slope-mb-per-hour`` (default 20 MB/h). Exit status 0 when flat,
1 otherwise.

Not part of the test suite (it is meant to run for 20 minutes or more).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

import rnnrs
from rnnrs import checkpoint as ck
from rnnrs.trainer import StopTraining, Trainer


def rss_mb() -> float:
    """Resident set size of this process in MiB (``/proc/self/status``; ``ru_maxrss`` elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def corpus(n_chars: int, seed: int = 0) -> str:
    """A synthetic text with some structure (words, lines, punctuation)."""
    rng = np.random.default_rng(seed)
    words = ("the time traveller said that we were sitting in the garden of the old house and the sun was "
             "setting over the river while a bird sang in the dark trees above us").split()
    lines, total = [], 0
    while total < n_chars:
        line = " ".join(rng.choice(words, int(rng.integers(4, 12)))) + rng.choice([".", ",", "!", "?"])
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines)


def slope_per_hour(ts: list, ys: list) -> float:
    if len(ts) < 3:
        return 0.0
    t = np.asarray(ts) / 3600.0
    return float(np.polyfit(t, np.asarray(ys), 1)[0])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=20.0, help="how long to train (default 20)")
    p.add_argument("--every", type=float, default=30.0, help="seconds between RSS samples (default 30)")
    p.add_argument("--out", default=None, help="run directory (default: a temporary one, removed at the end)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--chars", type=int, default=200_000, help="size of the synthetic corpus")
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds of warm-up excluded from the verdict (default: 10%% of the run, at least one sample)")
    p.add_argument("--tolerance-mb", type=float, default=16.0)
    p.add_argument("--max-slope-mb-per-hour", type=float, default=20.0)
    args = p.parse_args(argv)

    out = args.out or tempfile.mkdtemp(prefix="rnnrs-soak-")
    if os.path.exists(os.path.join(out, ck.CHECKPOINT_FILE)):
        print(f"{out} already holds a run; pass another --out", file=sys.stderr)
        return 2
    duration = args.minutes * 60.0
    warmup = args.warmup if args.warmup is not None else max(args.every, 0.1 * duration)
    text = corpus(args.chars)
    rows: list = []
    t0 = time.monotonic()
    state = {"next": t0, "tokens": 0, "generated": 0, "loads": 0, "last": (t0, 0)}

    def sample_rss(step: int) -> None:
        now = time.monotonic()
        gen_chars = 0
        path = os.path.join(out, ck.CHECKPOINT_FILE)
        if os.path.exists(path):  # exercise the reader and the sampler too
            c = ck.load_checkpoint(path)
            g = rnnrs.LyricGenerator(c.model, c.tokenizer)
            gen_chars = len(g.generate("the ", length=200, seed=step))
            state["loads"] += 1
            state["generated"] += gen_chars
        last_t, last_step = state["last"]
        rate = (step - last_step) / max(now - last_t, 1e-9)
        state["last"] = (now, step)
        rows.append((now - t0, step, rss_mb(), rate))
        el, st, rss, r = rows[-1]
        base = rows[0][2]
        print(f"{el:8.0f} {st:9,d} {rss:9.1f} {rss - base:+9.1f} {r:9.1f}", flush=True)

    def on_event(ev: dict) -> None:
        if ev["event"] != "step":
            return
        now = time.monotonic()
        if now >= state["next"]:
            state["next"] = now + args.every
            sample_rss(ev["step"])
        if now - t0 >= duration:
            raise StopTraining

    print(f"rnnrs {rnnrs.__version__} soak: {args.minutes:g} min, RSS every {args.every:g} s, run directory {out}")
    print(f"model: LSTM {args.layers} x {args.hidden}, seq_len {args.seq_len}, batch {args.batch_size}; "
          f"corpus {len(text):,} characters; checkpoint every {args.checkpoint_every} steps")
    print(f"{'time s':>8} {'step':>9} {'RSS MiB':>9} {'vs first':>9} {'steps/s':>9}")
    trainer = Trainer(text=text, out=out, hidden=args.hidden, layers=args.layers, embed=64, seq_len=args.seq_len,
                      batch_size=args.batch_size, steps=10**9, sampling="sequential", val_every=500,
                      sample_every=500, sample_length=100, checkpoint_every=args.checkpoint_every, log_every=10**9,
                      quiet=True, plot=False, callbacks=[on_event])
    try:
        result = trainer.run()
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    sample_rss(result.summary["steps"])

    steady = [r for r in rows if r[0] >= warmup] or rows[-2:]
    half = [r for r in rows if r[0] >= duration / 2] or steady
    first, peak, last = steady[0][2], max(r[2] for r in steady), steady[-1][2]
    growth = peak - first
    # A slope needs a long enough window: a 2 MiB wobble over 30 s would read as 240 MiB/h.
    span = half[-1][0] - half[0][0]
    slope = slope_per_hour([r[0] for r in half], [r[2] for r in half]) if span >= 300 else None
    flat = growth < args.tolerance_mb and (slope is None or slope < args.max_slope_mb_per_hour)
    print()
    print(f"steps: {result.summary['steps']:,} in {rows[-1][0]:.0f} s ({result.summary['tokens_per_s']:,.0f} tokens/s); "
          f"checkpoint reloads + generations: {state['loads']} ({state['generated']:,} characters)")
    print(f"RSS: start {rows[0][2]:.1f} MiB, after warm-up ({warmup:.0f} s) {first:.1f} MiB, peak {peak:.1f} MiB, "
          f"end {last:.1f} MiB; growth after warm-up {growth:+.1f} MiB; slope over the second half "
          + (f"{slope:+.1f} MiB/h" if slope is not None else "n/a (under 5 minutes)"))
    print(f"verdict: {'FLAT' if flat else 'GROWING'} (tolerance {args.tolerance_mb:g} MiB, "
          f"{args.max_slope_mb_per_hour:g} MiB/h)")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())

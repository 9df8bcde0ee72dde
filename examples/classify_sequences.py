"""Classify which kind of signal a variable-length sequence comes from, with rnnrs.Sequential.

Four kinds, generated here (no downloads): a sine, a square wave, a sawtooth (each with random
frequency, phase, amplitude and offset) and a random walk, all with additive noise and lengths from
30 to 100 steps. The batch is padded and the true lengths are passed, so the GRU reads each sequence
only up to its end. The baseline is the majority class.

    python examples/classify_sequences.py            # full size (~1-2 min on 2 cores)
    python examples/classify_sequences.py --small    # smoke test (seconds)
"""

from __future__ import annotations

import argparse
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from rnnrs import keras as K

KINDS = ("sine", "square", "sawtooth", "random walk")


def make_signal(kind: int, n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n)
    freq = rng.uniform(1 / 25, 1 / 6)
    phase = rng.uniform(0, 2 * np.pi)
    amp = rng.uniform(0.5, 2.0)
    off = rng.uniform(-1, 1)
    if kind == 0:
        s = np.sin(2 * np.pi * freq * t + phase)
    elif kind == 1:
        s = np.sign(np.sin(2 * np.pi * freq * t + phase))
    elif kind == 2:
        s = 2 * ((freq * t + phase / (2 * np.pi)) % 1.0) - 1
    else:
        s = np.cumsum(rng.normal(0, 0.3, size=n))
        s = s - s.mean()
    return (off + amp * s + rng.normal(0, 0.3, size=n)).astype(np.float32)


def make_dataset(n: int, seed: int, min_len: int = 30, max_len: int = 100):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(KINDS), size=n)
    seqs = [make_signal(int(k), int(rng.integers(min_len, max_len + 1)), rng)[:, None] for k in labels]
    x = K.pad_sequences(seqs, dtype=np.float32, padding="post")  # (Keras pads at the front by default)
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    return x, lengths, labels.astype(np.int64)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=4000, help="training sequences")
    p.add_argument("--test", type=int, default=1000, help="test sequences")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--units", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--small", action="store_true", help="tiny run for tests")
    p.add_argument("--verbose", type=int, default=2)
    a = p.parse_args(argv)
    if a.small:
        a.train, a.test, a.epochs, a.units = 300, 100, 2, 8

    x, lengths, y = make_dataset(a.train, a.seed)
    xt, lt, yt = make_dataset(a.test, a.seed + 1)
    model = K.Sequential([K.GRU(a.units), K.Dense(len(KINDS), activation="softmax")], seed=a.seed)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=K.Adam(0.005), metrics=["accuracy"],
                  clipnorm=5.0)
    t0 = time.perf_counter()
    model.fit(x, y, epochs=a.epochs, batch_size=64, validation_split=0.1, lengths=lengths, verbose=a.verbose)
    secs = time.perf_counter() - t0
    loss, acc = model.evaluate(xt, yt, lengths=lt)
    majority = float(np.mean(yt == np.bincount(y).argmax()))
    print(f"test accuracy {acc:.3f} (loss {loss:.3f}) vs majority-class baseline {majority:.3f}; "
          f"{a.train} training sequences, {a.epochs} epochs in {secs:.0f} s")
    return {"accuracy": acc, "loss": loss, "baseline": majority, "seconds": secs}


if __name__ == "__main__":
    main()

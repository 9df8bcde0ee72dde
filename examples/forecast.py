"""Forecast the next value of a noisy series with a trend and two seasonalities, with rnnrs.Sequential.

The series (generated here, no downloads) is ``trend + daily (period 24) + weekly (period 168) +
AR(1) noise``. The model sees the last ``window`` values (normalised, relative to the last one) and
predicts the change to the next value; it is trained on the first 80% of the series and tested on
the rest. Baselines: the last value, and the seasonal-naive value (24 steps ago).

    python examples/forecast.py            # full size (~1-2 min on 2 cores)
    python examples/forecast.py --small    # smoke test (seconds)
"""

from __future__ import annotations

import argparse
import time
from typing import Dict, Optional, Sequence

import numpy as np

from rnnrs import keras as K

DAY, WEEK = 24, 168


def make_series(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    noise = np.zeros(n)
    eps = rng.normal(0, 0.6, size=n)
    for i in range(1, n):
        noise[i] = 0.5 * noise[i - 1] + eps[i]
    return (10 + 0.01 * t + 3 * np.sin(2 * np.pi * t / DAY) + 1.5 * np.sin(2 * np.pi * t / DAY * 2 + 1)
            + 2 * np.sin(2 * np.pi * t / WEEK) + noise)


def windows(s: np.ndarray, window: int, start: int, stop: int):
    idx = np.arange(max(start, window), stop)
    x = np.stack([s[i - window:i] for i in idx])
    return x, s[idx], idx


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--length", type=int, default=6000, help="series length")
    p.add_argument("--window", type=int, default=48)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--units", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--small", action="store_true", help="tiny run for tests")
    p.add_argument("--verbose", type=int, default=2)
    a = p.parse_args(argv)
    if a.small:
        a.length, a.epochs, a.units = 1200, 2, 8

    s = make_series(a.length, a.seed)
    cut = int(0.8 * a.length)
    xtr, ytr, _ = windows(s, a.window, 0, cut)
    xte, yte, ite = windows(s, a.window, cut, a.length)
    scale = float(np.std(np.diff(s[:cut])))

    def features(x: np.ndarray) -> np.ndarray:
        # Relative to the last value: the trend drops out; two channels: level and step change.
        rel = (x - x[:, -1:]) / scale
        d = np.diff(x, axis=1, prepend=x[:, :1]) / scale
        return np.stack([rel, d], axis=-1).astype(np.float32)

    target = lambda x, y: ((y - x[:, -1]) / scale)[:, None].astype(np.float32)  # noqa: E731
    model = K.Sequential([K.LSTM(a.units), K.Dense(1)], seed=a.seed)
    model.compile(loss="mse", optimizer=K.Adam(0.003), clipnorm=5.0)
    t0 = time.perf_counter()
    model.fit(features(xtr), target(xtr, ytr), epochs=a.epochs, batch_size=64, validation_split=0.1,
              verbose=a.verbose)
    secs = time.perf_counter() - t0
    pred = xte[:, -1] + model.predict(features(xte))[:, 0] * scale
    err = rmse(pred, yte)
    last = rmse(xte[:, -1], yte)
    seasonal = rmse(s[ite - DAY], yte)
    print(f"test RMSE {err:.3f} vs last value {last:.3f}, seasonal naive (t-{DAY}) {seasonal:.3f}; "
          f"series of {a.length}, {a.epochs} epochs in {secs:.0f} s")
    return {"rmse": err, "last_value": last, "seasonal_naive": seasonal, "seconds": secs}


if __name__ == "__main__":
    main()

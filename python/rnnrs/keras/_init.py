"""Keras' weight initialisers (``kernel_initializer=``, ``recurrent_initializer=``, ...) and the
per-process random seed of layers built without an explicit one."""

from __future__ import annotations

import itertools
import math
from typing import Any, Tuple

import numpy as np

_STATE = {"seed": 0}
_COUNTER = itertools.count()
FLOATX = {"dtype": "float32"}

NAMES = ("glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal",
         "orthogonal", "zeros", "ones", "random_uniform", "random_normal", "uniform", "normal")


def set_random_seed(seed: int) -> None:
    """Keras' ``keras.utils.set_random_seed``: the weights of layers built from now on (and the
    dropout masks of models compiled from now on) are drawn from ``seed``; same seed, same script,
    same weights."""
    global _COUNTER
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    _STATE["seed"] = int(seed)
    _COUNTER = itertools.count()


def next_stream() -> Tuple[int, int]:
    """``(seed, n)``: a fresh random stream for one layer."""
    return _STATE["seed"], next(_COUNTER)


def check(name: str, value: Any) -> str:
    if not isinstance(value, str) or value not in NAMES:
        raise ValueError(f"{name}: expected one of {NAMES}, got {value!r}")
    return value


def draw(kind: str, shape: Tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """An array of ``shape`` (Keras' layout: ``(fan_in, fan_out)`` for kernels) from initialiser ``kind``."""
    fan_in, fan_out = (shape[0], shape[1]) if len(shape) == 2 else (shape[0], shape[0])
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "ones":
        return np.ones(shape)
    if kind in ("random_uniform", "uniform"):
        return rng.uniform(-0.05, 0.05, shape)
    if kind in ("random_normal", "normal"):
        return rng.normal(0.0, 0.05, shape)
    if kind == "orthogonal":
        rows, cols = shape[0], int(np.prod(shape[1:]))
        a = rng.standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return q.reshape(shape)
    scale = {"glorot": 2.0 / (fan_in + fan_out), "he": 2.0 / fan_in, "lecun": 1.0 / fan_in}[kind.split("_")[0]]
    if kind.endswith("uniform"):
        limit = math.sqrt(3.0 * scale)
        return rng.uniform(-limit, limit, shape)
    # Keras' *_normal draw from a normal truncated at 2 sd, rescaled to the variance.
    sd = math.sqrt(scale) / 0.87962566103423978
    out = rng.normal(0.0, sd, shape)
    bad = np.abs(out) > 2 * sd
    while bad.any():
        out[bad] = rng.normal(0.0, sd, int(bad.sum()))
        bad = np.abs(out) > 2 * sd
    return out

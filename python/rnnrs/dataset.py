"""Language-model minibatches: the d2l sampling schemes, seeded and resumable.

A *corpus* is a 1-D ``np.int64`` array of token ids (e.g. ``tok.encode(text)``).
Every batch is a pair ``(X, Y)`` of C-contiguous ``np.int64`` arrays of shape
``(batch_size, seq_len)`` with ``Y`` equal to ``X`` shifted one token to the
right in the corpus (``Y[r, t] == corpus[p + t + 1]`` where ``X[r, t] ==
corpus[p + t]``).  Batches are fresh copies, never views of the corpus.

Two schemes, as in d2l section "Language Models and the Dataset":

* :func:`random_batches` (d2l ``seq_data_iter_random``): a random offset in
  ``[0, seq_len - 1]`` is dropped from the front, the rest is cut into
  non-overlapping subsequences of ``seq_len`` tokens (the last one must still
  have a target token), their order is shuffled and they are grouped
  ``batch_size`` at a time.  Adjacent batches are *not* adjacent in the text,
  so hidden state must be re-initialised for every batch.
* :func:`sequential_batches` (d2l ``seq_data_iter_sequential``): after the
  random offset the corpus is cut into ``batch_size`` equally long contiguous
  streams (row ``r`` of every batch reads stream ``r``), and batch ``j + 1``
  continues exactly where batch ``j`` stopped, so a model may carry its hidden
  state across batches (detaching the gradient).  d2l draws this offset from
  ``[0, num_steps]``; here both schemes use ``[0, seq_len - 1]``.

In both schemes the last incomplete batch is dropped, and the number of
batches may differ by one between epochs (it depends on the epoch's offset);
use ``num_batches(...)`` for the exact count.

Randomness
----------
All randomness of an epoch comes from exactly one generator::

    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
    offset = rng.integers(0, seq_len)          # first draw, both schemes
    order = rng.permutation(num_subseqs)       # second draw, random scheme only

(``window_offset="fixed"`` still draws the offset, then uses 0: windows at ``0, seq_len,
2*seq_len, ...`` as in the book's first edition), so an epoch is a pure function of ``(corpus, batch_size, seq_len, seed,
epoch)``: no global numpy/Python random state is read or modified.  Training
resumes bit-identically from ``(epoch, batch index)`` with
``LMBatches.epoch_batches(epoch, start=batch_index)``, which jumps straight to
that batch without generating the earlier ones.

Size requirement
----------------
Every epoch must contain at least one batch whatever its offset, which needs
``min_corpus_tokens(batch_size, seq_len) == (batch_size + 1) * seq_len``
tokens (``seq_len - 1`` offset tokens, ``batch_size * seq_len`` inputs and one
final target token).
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterator
from typing import Any, Tuple

import numpy as np

__all__ = [
    "split_train_val",
    "random_batches",
    "sequential_batches",
    "LMBatches",
    "min_corpus_tokens",
    "SAMPLING_SCHEMES",
    "WINDOW_OFFSETS",
]

SAMPLING_SCHEMES = ("random", "sequential")
WINDOW_OFFSETS = ("random", "fixed")

Batch = Tuple[np.ndarray, np.ndarray]


# --------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_ids(ids: Any, name: str = "ids") -> np.ndarray:
    """Return ``ids`` as a 1-D int64 array of non-negative ids (no copy if possible)."""
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must be an integer array (expected dtype int64), got dtype {arr.dtype}"
        )
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (expected shape (n,)), got shape {arr.shape}")
    if arr.size:
        if arr.dtype.kind == "u" and arr.dtype.itemsize >= 8 and int(arr.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"{name} contains ids that do not fit in int64")
        if arr.dtype.kind == "i" and int(arr.min()) < 0:
            pos = int(np.argmax(arr < 0))
            raise ValueError(
                f"{name} must be non-negative token ids, got {int(arr[pos])} at index {pos}"
            )
    return np.ascontiguousarray(arr, dtype=np.int64)


def min_corpus_tokens(batch_size: int, seq_len: int) -> int:
    """Fewest tokens for which every epoch yields at least one batch:
    ``(batch_size + 1) * seq_len``."""
    batch_size = _check_int(batch_size, "batch_size", 1)
    seq_len = _check_int(seq_len, "seq_len", 1)
    return (batch_size + 1) * seq_len


def _check_setup(ids: Any, batch_size: Any, seq_len: Any, seed: Any, epoch: Any) -> tuple:
    batch_size = _check_int(batch_size, "batch_size", 1)
    seq_len = _check_int(seq_len, "seq_len", 1)
    seed = _check_int(seed, "seed", 0)
    epoch = _check_int(epoch, "epoch", 0)
    arr = _check_ids(ids)
    need = (batch_size + 1) * seq_len
    if arr.size < need:
        raise ValueError(
            f"corpus too short: one batch of batch_size={batch_size} x seq_len={seq_len} "
            f"in every epoch needs at least (batch_size + 1) * seq_len = {need} tokens, "
            f"got {arr.size}"
        )
    return arr, batch_size, seq_len, seed, epoch


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))


# --------------------------------------------------------------------------
# epoch plans (cheap: no batch is materialised)
# --------------------------------------------------------------------------


def _offset(rng: np.random.Generator, seq_len: int, window_offset: str) -> int:
    """The epoch's first draw: the random offset, or 0 for fixed windows (drawn all the same, so
    the rest of the epoch's draws do not depend on ``window_offset``)."""
    offset = int(rng.integers(0, seq_len))
    return offset if window_offset == "random" else 0


def _check_offset(window_offset: Any) -> str:
    if window_offset not in WINDOW_OFFSETS:
        raise ValueError(f"window_offset: expected one of {WINDOW_OFFSETS}, got {window_offset!r}")
    return str(window_offset)


def _random_plan(n: int, batch_size: int, seq_len: int, seed: int, epoch: int, window_offset: str = "random"):
    rng = _epoch_rng(seed, epoch)
    offset = _offset(rng, seq_len, window_offset)
    num_subseqs = (n - offset - 1) // seq_len
    order = rng.permutation(num_subseqs)
    starts = offset + order.astype(np.int64) * seq_len
    return starts, num_subseqs // batch_size


def _sequential_plan(n: int, batch_size: int, seq_len: int, seed: int, epoch: int, window_offset: str = "random"):
    rng = _epoch_rng(seed, epoch)
    offset = _offset(rng, seq_len, window_offset)
    stream_len = (n - offset - 1) // batch_size
    return offset, stream_len, stream_len // seq_len


def _check_start(start: Any, num_batches: int) -> int:
    start = _check_int(start, "start", 0)
    if start > num_batches:
        raise ValueError(
            f"start must be <= the number of batches in this epoch ({num_batches}), got {start}"
        )
    return start


def _iter_random(arr, batch_size, seq_len, starts, num_batches, start) -> Iterator[Batch]:
    cols = np.arange(seq_len, dtype=np.int64)
    for b in range(start, num_batches):
        idx = starts[b * batch_size:(b + 1) * batch_size, None] + cols
        yield arr[idx], arr[idx + 1]


def _iter_sequential(arr, batch_size, seq_len, offset, stream_len, num_batches,
                     start) -> Iterator[Batch]:
    used = batch_size * stream_len
    xs = arr[offset:offset + used].reshape(batch_size, stream_len)
    ys = arr[offset + 1:offset + 1 + used].reshape(batch_size, stream_len)
    for b in range(start, num_batches):
        sl = slice(b * seq_len, (b + 1) * seq_len)
        yield np.array(xs[:, sl], dtype=np.int64, order="C"), np.array(ys[:, sl], dtype=np.int64,
                                                                       order="C")


# --------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------


def split_train_val(ids: Any, val_fraction: float, *, min_tokens: int = 2
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """Split a corpus (1-D integer token ids) into a contiguous head (train) and tail (validation).

    ``n_val = round(len(ids) * val_fraction)`` (Python rounding); the
    validation part is ``ids[len(ids) - n_val:]``.  ``val_fraction`` must be a
    real number in ``[0, 1)``; ``0`` gives an empty validation array.

    "Too small to be useful": the training part, and the validation part when
    ``val_fraction > 0``, must each hold at least ``min_tokens`` tokens
    (default 2 = one input and its target); otherwise ``ValueError``.  Pass
    ``min_tokens=min_corpus_tokens(batch_size, seq_len)`` to require a full
    batch in each part.  Returns two new int64 arrays.
    """
    arr = _check_ids(ids)
    min_tokens = _check_int(min_tokens, "min_tokens", 1)
    if isinstance(val_fraction, (bool, np.bool_)) or not isinstance(val_fraction, numbers.Real):
        raise TypeError(f"val_fraction must be a float, got {type(val_fraction).__name__}")
    frac = float(val_fraction)
    if not (math.isfinite(frac) and 0.0 <= frac < 1.0):
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n = int(arr.size)
    n_val = int(round(n * frac))
    n_train = n - n_val
    if frac > 0 and n_val < min_tokens:
        raise ValueError(
            f"validation part too small: val_fraction={frac} of {n} tokens gives {n_val} "
            f"tokens, need at least {min_tokens}"
        )
    if n_train < min_tokens:
        raise ValueError(
            f"training part too small: {n_train} of {n} tokens remain after taking "
            f"{n_val} for validation, need at least {min_tokens}"
        )
    return arr[:n_train].copy(), arr[n_train:].copy()


def random_batches(ids: Any, batch_size: int, seq_len: int, seed: int, epoch: int, *,
                   start: int = 0, window_offset: str = "random") -> Iterator[Batch]:
    """d2l ``seq_data_iter_random``: shuffled non-overlapping subsequences.

    Yields ``(X, Y)`` int64 arrays of shape ``(batch_size, seq_len)`` for
    batches ``start, start + 1, ...`` of epoch ``epoch``.  Arguments are
    validated immediately (not at the first ``next``).  See the module
    docstring for the exact random draws; ``window_offset="fixed"`` cuts the windows at
    ``0, seq_len, 2*seq_len, ...`` (the first edition of the book).
    """
    arr, batch_size, seq_len, seed, epoch = _check_setup(ids, batch_size, seq_len, seed, epoch)
    starts, num_batches = _random_plan(arr.size, batch_size, seq_len, seed, epoch, _check_offset(window_offset))
    start = _check_start(start, num_batches)
    return _iter_random(arr, batch_size, seq_len, starts, num_batches, start)


def sequential_batches(ids: Any, batch_size: int, seq_len: int, seed: int, epoch: int, *,
                       start: int = 0, window_offset: str = "random") -> Iterator[Batch]:
    """d2l ``seq_data_iter_sequential``: ``batch_size`` parallel contiguous streams.

    Yields ``(X, Y)`` int64 arrays of shape ``(batch_size, seq_len)`` for
    batches ``start, start + 1, ...`` of epoch ``epoch``. Row ``r`` of batch
    ``j + 1`` starts at the corpus position right after the last token of row
    ``r`` of batch ``j`` (so ``X_{j+1}[r, 0] == Y_j[r, -1]``).  Arguments are
    validated immediately. ``window_offset="fixed"`` starts the streams at 0.
    """
    arr, batch_size, seq_len, seed, epoch = _check_setup(ids, batch_size, seq_len, seed, epoch)
    offset, stream_len, num_batches = _sequential_plan(arr.size, batch_size, seq_len, seed, epoch,
                                                       _check_offset(window_offset))
    start = _check_start(start, num_batches)
    return _iter_sequential(arr, batch_size, seq_len, offset, stream_len, num_batches, start)


class LMBatches:
    """Epoch-indexed minibatches over one corpus, for training loops.

    ``LMBatches(ids, batch_size, seq_len, sampling="random"|"sequential", seed=0)``

    * ``epoch_batches(epoch, start=0)`` -> iterator of ``(X, Y)`` from batch
      index ``start`` (resume mid-epoch: identical to skipping ``start``
      batches of the full epoch, but without computing them).
    * ``num_batches(epoch)`` -> exact number of batches in that epoch (it can
      vary by one between epochs because of the random offset; ``len()`` is
      therefore not defined).
    * ``carries_state`` -> ``True`` for ``"sequential"`` (keep the hidden
      state between consecutive batches of an epoch, reset it at the start
      of every epoch), ``False`` for ``"random"`` (fresh state every batch).

    The corpus is validated and converted to int64 once (no copy when it
    already is a contiguous int64 array -- do not mutate it afterwards).
    """

    def __init__(self, ids: Any, batch_size: int, seq_len: int, sampling: str = "random",
                 seed: int = 0, window_offset: str = "random") -> None:
        if sampling not in SAMPLING_SCHEMES:
            raise ValueError(f"sampling must be one of {SAMPLING_SCHEMES}, got {sampling!r}")
        arr, batch_size, seq_len, seed, _ = _check_setup(ids, batch_size, seq_len, seed, 0)
        self._ids = arr
        self._batch_size = batch_size
        self._seq_len = seq_len
        self._sampling = sampling
        self._seed = seed
        self._window_offset = _check_offset(window_offset)

    @property
    def ids(self) -> np.ndarray:
        """The corpus: the validated 1-D int64 array ``(num_tokens,)``, C-contiguous (not a copy:
        do not mutate it)."""
        return self._ids

    @property
    def batch_size(self) -> int:
        """Rows (sequences) of every batch."""
        return self._batch_size

    @property
    def seq_len(self) -> int:
        """Columns (time steps) of every batch."""
        return self._seq_len

    @property
    def sampling(self) -> str:
        """``"random"`` or ``"sequential"``."""
        return self._sampling

    @property
    def window_offset(self) -> str:
        """``"random"`` (a random offset per epoch, d2l 2.0) or ``"fixed"`` (windows at 0, T, 2T, ...)."""
        return self._window_offset

    @property
    def seed(self) -> int:
        """The seed each epoch's generator is derived from (together with the epoch number)."""
        return self._seed

    @property
    def num_tokens(self) -> int:
        """Number of tokens in the corpus."""
        return int(self._ids.size)

    @property
    def carries_state(self) -> bool:
        """``True`` for ``"sequential"`` sampling: carry the hidden state from one batch of an
        epoch to the next (reset it at every epoch); ``False`` for ``"random"``."""
        return self._sampling == "sequential"

    def num_batches(self, epoch: int) -> int:
        """Exact number of batches in ``epoch`` (it may differ by one between epochs: it depends on
        the epoch's random offset). Cheap: no batch is built."""
        epoch = _check_int(epoch, "epoch", 0)
        if self._sampling == "random":
            # Only the offset matters; computed without the permutation.
            offset = _offset(_epoch_rng(self._seed, epoch), self._seq_len, self._window_offset)
            return ((self._ids.size - offset - 1) // self._seq_len) // self._batch_size
        return _sequential_plan(self._ids.size, self._batch_size, self._seq_len, self._seed,
                                epoch, self._window_offset)[2]

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches ``start, start + 1, ...`` of ``epoch``: ``(X, Y)`` pairs of C-contiguous int64
        ``(batch_size, seq_len)`` arrays, the same as :func:`random_batches` /
        :func:`sequential_batches` with this object's arguments."""
        epoch = _check_int(epoch, "epoch", 0)
        arr, bs, sl, seed = self._ids, self._batch_size, self._seq_len, self._seed
        if self._sampling == "random":
            starts, nb = _random_plan(arr.size, bs, sl, seed, epoch, self._window_offset)
            return _iter_random(arr, bs, sl, starts, nb, _check_start(start, nb))
        offset, stream_len, nb = _sequential_plan(arr.size, bs, sl, seed, epoch, self._window_offset)
        return _iter_sequential(arr, bs, sl, offset, stream_len, nb, _check_start(start, nb))

    def __repr__(self) -> str:
        return (f"LMBatches(num_tokens={self.num_tokens}, batch_size={self._batch_size}, "
                f"seq_len={self._seq_len}, sampling={self._sampling!r}, seed={self._seed}"
                + (f", window_offset={self._window_offset!r})" if self._window_offset != "random" else ")"))

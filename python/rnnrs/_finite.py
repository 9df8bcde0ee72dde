"""Where a non-finite input sits in the array the user passed, for errors the core raises on a
view or a batch of it (``batch_first`` layers hand it time-major; Keras models hand it in batches,
maybe shuffled)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from ._rnnrs import NonFiniteError


def at_user_index(e: Exception, name: str, a: np.ndarray, rows: Optional[np.ndarray] = None) -> Exception:
    """``e`` if it is not the core's non-finite ``name`` error; else that error with the index of
    the first non-finite value of ``a``, in the user's array: ``a`` is the user's array (in its
    own axis order), or, with ``rows``, the batch ``user[rows]`` (its row ``i`` is user row
    ``rows[i]``)."""
    if not isinstance(e, NonFiniteError) or not str(e).startswith(f"{name}: expected finite values"):
        return e
    bad = np.argwhere(~np.isfinite(a))
    if bad.size == 0:
        return e
    idx = [int(i) for i in bad[0]]
    v = float(a[tuple(idx)])
    if rows is not None:
        idx[0] = int(rows[idx[0]])
    shown = "NaN" if np.isnan(v) else ("inf" if v > 0 else "-inf")
    return NonFiniteError(f"{name}: expected finite values, got {shown} at index {idx}")

"""``rnnrs.keras.utils``: ``pad_sequences`` (Keras' defaults: pad and truncate at the front),
``to_categorical`` and ``set_random_seed``."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ._init import set_random_seed
from ._sequential import pad_sequences

__all__ = ["pad_sequences", "to_categorical", "set_random_seed"]


def to_categorical(y: Any, num_classes: Optional[int] = None, dtype: Any = "float32") -> np.ndarray:
    """Class ids of any shape → one-hot vectors on a new last axis, as Keras' ``to_categorical``."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        if y.size and not np.all(np.mod(y, 1) == 0):
            raise ValueError(f"y: expected integer class ids, got {y.dtype} values")
        y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"y: expected class ids >= 0, got {int(y.min())}")
    n = int(num_classes) if num_classes is not None else int(y.max()) + 1 if y.size else 0
    if y.size and y.max() >= n:
        raise ValueError(f"y: expected class ids in [0, {n}) (num_classes), got {int(y.max())}")
    out = np.zeros(y.shape + (n,), dtype=dtype)
    np.put_along_axis(out, y[..., None], 1, axis=-1)
    return out

"""``rnnrs.keras.models``: ``Sequential``, ``Model`` and ``load_model``."""

from ._functional import Model
from ._sequential import Sequential, load_model

__all__ = ["Sequential", "Model", "load_model"]

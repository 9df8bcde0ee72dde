"""``rnnrs.keras.callbacks``: Keras' training callbacks (see :mod:`rnnrs.callbacks`)."""

from ..callbacks import Callback, EarlyStopping, LambdaCallback, ModelCheckpoint, ReduceLROnPlateau
from ._fit import History

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau", "LambdaCallback", "History"]

"""``rnnrs.keras.optimizers``: Keras' optimizers with Keras' defaults."""

from ._sequential import SGD, Adam, AdamW, RMSprop

__all__ = ["SGD", "Adam", "AdamW", "RMSprop"]

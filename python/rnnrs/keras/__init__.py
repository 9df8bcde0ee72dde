"""Keras' API on the Rust core: :class:`Sequential`, the functional :class:`Model` (``Input``,
layers called on tensors), the layers, losses, optimizers and callbacks Keras programs use, and
the ``layers``/``models``/``callbacks``/``optimizers``/``utils`` namespaces, so that a program
written for Keras runs after changing its imports::

    from rnnrs import keras                      # was: import keras (or from tensorflow import keras)
    from rnnrs.keras import layers               # was: from keras import layers

    model = keras.Sequential([layers.Embedding(1000, 32, mask_zero=True),
                              layers.Bidirectional(layers.LSTM(64)), layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=5, validation_split=0.1,
              callbacks=[keras.callbacks.EarlyStopping(patience=2)])

Shapes are batch-first, as in Keras: token ids ``(N, T)`` (first layer an embedding) or features
``(N, T, F)``. Names, arguments, defaults, weight layouts (``get_weights``) and initialisers are
Keras'; ``docs/keras.md`` lists what is supported and where rnnrs differs.

A :class:`Sequential` the Rust ``SeqModel`` can run trains with one Rust call per batch; any other
model (``RepeatVector``, ``return_state``, ``stateful``, ...) runs as a graph of layers whose
recurrences run in Rust (``rnnrs.LSTM`` etc.) with an exact backward pass in NumPy.

``save``/``load_model`` use rnnrs' checkpoint format (safetensors + JSON metadata, no pickle).
"""

from __future__ import annotations

from ._fit import History
from ._functional import Model
from ._init import set_random_seed
from ._layers import (GRU, LSTM, Bidirectional, Dense, Dropout, Embedding, Input, InputLayer, KerasTensor, Layer,
                      Masking, RepeatVector, SimpleRNN, TimeDistributed, _RecurrentLayer)
from ._sequential import SGD, Adam, AdamW, RMSprop, Sequential, _optimizer, load_model, pad_sequences
from . import callbacks, layers, models, optimizers, utils

__all__ = [
    "Sequential", "Model", "Input", "InputLayer", "Layer", "Embedding", "SimpleRNN", "GRU", "LSTM", "Dense", "Dropout",
    "Masking", "RepeatVector", "TimeDistributed", "Bidirectional", "SGD", "Adam", "AdamW", "RMSprop", "History",
    "load_model", "pad_sequences", "set_random_seed", "callbacks", "layers", "models", "optimizers", "utils",
]

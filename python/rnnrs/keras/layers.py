"""``rnnrs.keras.layers``: Keras' layer names (``from rnnrs.keras.layers import LSTM, Dense``)."""

from ._layers import (GRU, LSTM, Bidirectional, Dense, Dropout, Embedding, Input, InputLayer, Layer, Masking,
                      RepeatVector, SimpleRNN, TimeDistributed)

__all__ = ["Input", "InputLayer", "Layer", "Embedding", "SimpleRNN", "GRU", "LSTM", "Dense", "Dropout", "Masking",
           "RepeatVector", "TimeDistributed", "Bidirectional"]

"""A small Keras-style model API on the Rust core: :class:`Sequential` of :class:`Embedding`,
:class:`SimpleRNN`/:class:`GRU`/:class:`LSTM`, :class:`Dense` and :class:`Dropout`.

::

    from rnnrs.keras import Sequential, Embedding, LSTM, Dense
    model = Sequential([Embedding(1000, 32), LSTM(64, return_sequences=True), LSTM(32),
                        Dense(4, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(X, y, epochs=5, batch_size=32, validation_split=0.1)
    probs = model.predict(X_test)             # (N, 4)

Shapes are batch-first, as in Keras: ``x`` is token ids ``(N, T)`` (first layer an embedding) or
features ``(N, T, F)``; a recurrent layer outputs ``(N, T, D*units)`` with ``return_sequences=True``,
else its final state ``(N, D*units)``; :class:`Dense` acts on the last axis (per time step on
sequences). Targets: class ids ``(N,)``/``(N, T)`` for ``sparse_categorical_crossentropy``,
distributions ``(N, C)``/``(N, T, C)`` for ``categorical_crossentropy``, values of the output's shape
for ``mse``.

Variable-length batches: pass ``lengths (N,)`` to ``fit``/``evaluate``/``predict``, or use
``Embedding(..., mask_zero=True)`` (trailing id-0 padding gives the lengths), or build both with
:func:`pad_sequences`. Recurrent layers stop at each sequence's end (many-to-one takes the state at
its true last step) and padded steps count neither in the loss nor in the metrics.

Each training batch is **one** call into Rust (``SeqModel.train_step``: forward, loss, backward,
gradient clipping, optimizer update, GIL released). The layer classes here only describe the
model; they are not the PyTorch-style :class:`rnnrs.LSTM` etc.

``save``/``load_model`` use the checkpoint format (safetensors + JSON metadata, no pickle).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _rnnrs
from ._finite import at_user_index

__all__ = [
    "Sequential", "Embedding", "SimpleRNN", "GRU", "LSTM", "Dense", "Dropout",
    "SGD", "Adam", "AdamW", "History", "load_model", "pad_sequences",
]

LOSSES = ("mse", "categorical_crossentropy", "sparse_categorical_crossentropy")
_LOSS_ALIASES = {"mean_squared_error": "mse"}
ACTIVATIONS = ("linear", "tanh", "relu", "sigmoid", "softmax")
FORMAT = "rnnrs.sequential/1"


# ------------------------------------------------------------------------------------------ layers
class Layer:
    """Base of the layer descriptions."""

    def get_config(self) -> Dict[str, Any]:
        raise NotImplementedError

    def _spec(self) -> Dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _pos_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
    return int(v)


class Embedding(Layer):
    """Token ids ``(N, T)`` → vectors ``(N, T, output_dim)``; only as the first layer.
    ``mask_zero=True``: id 0 is trailing padding, and each sequence's length is taken from it."""

    def __init__(self, input_dim: int, output_dim: int, mask_zero: bool = False) -> None:
        self.input_dim = _pos_int("input_dim", input_dim)
        self.output_dim = _pos_int("output_dim", output_dim)
        self.mask_zero = bool(mask_zero)

    def get_config(self) -> Dict[str, Any]:
        return {"input_dim": self.input_dim, "output_dim": self.output_dim, "mask_zero": self.mask_zero}

    def _spec(self) -> Dict[str, Any]:
        return {"type": "embedding", "input_dim": self.input_dim, "output_dim": self.output_dim}


class _RecurrentLayer(Layer):
    _cell = ""

    def __init__(self, units: int, return_sequences: bool = False, bidirectional: bool = False,
                 input_shape: Optional[Tuple[Optional[int], int]] = None) -> None:
        self.units = _pos_int("units", units)
        self.return_sequences = bool(return_sequences)
        self.bidirectional = bool(bidirectional)
        self.input_shape = None if input_shape is None else tuple(input_shape)

    def get_config(self) -> Dict[str, Any]:
        cfg: Dict[str, Any] = {"units": self.units, "return_sequences": self.return_sequences,
                               "bidirectional": self.bidirectional}
        if self.input_shape is not None:
            cfg["input_shape"] = list(self.input_shape)
        return cfg

    def _spec(self) -> Dict[str, Any]:
        return {"type": "recurrent", "cell": self._cell, "units": self.units,
                "return_sequences": self.return_sequences, "bidirectional": self.bidirectional}


class SimpleRNN(_RecurrentLayer):
    """Elman RNN layer, ``activation`` ``"tanh"`` or ``"relu"``."""

    def __init__(self, units: int, activation: str = "tanh", **kwargs: Any) -> None:
        if activation not in ("tanh", "relu"):
            raise ValueError(f"activation: expected 'tanh' or 'relu', got {activation!r}")
        self.activation = activation
        self._cell = f"rnn_{activation}"
        super().__init__(units, **kwargs)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "activation": self.activation}


class GRU(_RecurrentLayer):
    """GRU layer (PyTorch's gate equations: reset gate after the recurrent product)."""

    _cell = "gru"


class LSTM(_RecurrentLayer):
    """LSTM layer."""

    _cell = "lstm"


class Dense(Layer):
    """``activation(x · Wᵀ + b)`` on the last axis. ``activation``: None/"linear", "tanh", "relu",
    "sigmoid", "softmax" (required last for the cross-entropy losses)."""

    def __init__(self, units: int, activation: Optional[str] = None,
                 input_shape: Optional[Tuple[int, ...]] = None) -> None:
        self.units = _pos_int("units", units)
        act = activation or "linear"
        if act not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
        self.activation = act
        self.input_shape = None if input_shape is None else tuple(input_shape)

    def get_config(self) -> Dict[str, Any]:
        cfg: Dict[str, Any] = {"units": self.units, "activation": self.activation}
        if self.input_shape is not None:
            cfg["input_shape"] = list(self.input_shape)
        return cfg

    def _spec(self) -> Dict[str, Any]:
        return {"type": "dense", "units": self.units, "activation": self.activation}


class Dropout(Layer):
    """Inverted dropout with probability ``rate`` in training; identity in inference."""

    def __init__(self, rate: float) -> None:
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= rate < 1.0:
            raise ValueError(f"rate: expected a float in [0, 1), got {rate!r}")
        self.rate = float(rate)

    def get_config(self) -> Dict[str, Any]:
        return {"rate": self.rate}

    def _spec(self) -> Dict[str, Any]:
        return {"type": "dropout", "rate": self.rate}


_LAYERS = {c.__name__: c for c in (Embedding, SimpleRNN, GRU, LSTM, Dense, Dropout)}


# -------------------------------------------------------------------------------------- optimizers
class _Opt:
    name = ""

    def __init__(self, learning_rate: float, **kw: Any) -> None:
        self.learning_rate = float(learning_rate)
        self.kw = kw

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "learning_rate": self.learning_rate, **self.kw}


class SGD(_Opt):
    """``torch.optim.SGD`` semantics; Keras' default ``learning_rate=0.01``."""

    name = "sgd"

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(learning_rate, momentum=float(momentum), nesterov=bool(nesterov),
                         weight_decay=float(weight_decay))


class Adam(_Opt):
    """Adam; Keras' default ``learning_rate=0.001``."""

    name = "adam"

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, weight_decay: float = 0.0) -> None:
        super().__init__(learning_rate, beta_1=float(beta_1), beta_2=float(beta_2), epsilon=float(epsilon),
                         weight_decay=float(weight_decay))


class AdamW(Adam):
    """AdamW (decoupled weight decay, default 0.004 like Keras)."""

    name = "adamw"

    def __init__(self, learning_rate: float = 0.001, weight_decay: float = 0.004, **kw: Any) -> None:
        super().__init__(learning_rate, weight_decay=weight_decay, **kw)


def _optimizer(spec: Union[str, _Opt, Mapping[str, Any]]) -> _Opt:
    if isinstance(spec, _Opt):
        return spec
    if isinstance(spec, str):
        table = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
        if spec.lower() not in table:
            raise ValueError(f"optimizer: expected one of {sorted(table)} or an optimizer object, got {spec!r}")
        return table[spec.lower()]()
    if isinstance(spec, Mapping):
        cfg = dict(spec)
        name = cfg.pop("name")
        opt = _optimizer(name)
        opt.learning_rate = float(cfg.pop("learning_rate", opt.learning_rate))
        opt.kw.update(cfg)
        return opt
    raise TypeError(f"optimizer: expected a name or an optimizer object, got {type(spec).__name__}")


# ----------------------------------------------------------------------------------------- helpers
def pad_sequences(sequences: Sequence[Any], maxlen: Optional[int] = None, value: float = 0,
                  dtype: Any = None) -> Tuple[np.ndarray, np.ndarray]:
    """Pad a list of sequences (each ``(T_i,)`` ids or ``(T_i, F)`` features) at the end to a
    batch ``(N, T)``/``(N, T, F)``; return ``(padded, lengths)``. Longer sequences are cut to
    ``maxlen`` (keeping the start)."""
    seqs = [np.asarray(s) for s in sequences]
    if not seqs:
        raise ValueError("sequences: expected at least one sequence, got none")
    lengths = np.array([min(len(s), maxlen) if maxlen else len(s) for s in seqs], dtype=np.int64)
    t = int(maxlen or lengths.max())
    dtype = dtype or seqs[0].dtype
    out = np.full((len(seqs), t) + seqs[0].shape[1:], value, dtype=dtype)
    for i, (s, n) in enumerate(zip(seqs, lengths)):
        out[i, :n] = s[:n]
    return out, lengths


class History:
    """What :meth:`Sequential.fit` returns: ``history`` maps ``"loss"``, ``"accuracy"``,
    ``"val_loss"``, ``"val_accuracy"`` to one value per epoch."""

    def __init__(self) -> None:
        self.history: Dict[str, List[float]] = {}
        self.epoch: List[int] = []

    def _add(self, epoch: int, logs: Mapping[str, float]) -> None:
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))


class _Progress:
    def __init__(self, total: int, epoch: int, epochs: int, verbose: int, stream: Any) -> None:
        self.total, self.verbose, self.stream = total, verbose, stream
        self.start = time.perf_counter()
        self.last = 0.0
        self.width = 0
        if verbose:
            print(f"Epoch {epoch}/{epochs}", file=stream)

    def update(self, done: int, logs: Mapping[str, float], final: bool = False) -> None:
        now = time.perf_counter()
        if self.verbose != 1 or (not final and now - self.last < 0.1):
            return
        self.last = now
        width = 30
        fill = width * done // max(self.total, 1)
        bar = "=" * max(fill - 1, 0) + (">" if fill < width else "=") + "." * (width - fill)
        text = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
        line = f"{done}/{self.total} [{bar}] - {now - self.start:.1f}s - {text}"
        self.stream.write("\r" + line.ljust(self.width))
        self.width = max(self.width, len(line))
        if final:
            self.stream.write("\n")
        self.stream.flush()

    def end(self, logs: Mapping[str, float]) -> None:
        if self.verbose == 2:
            text = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            print(f"{self.total}/{self.total} - {time.perf_counter() - self.start:.1f}s - {text}", file=self.stream)


# -------------------------------------------------------------------------------------- Sequential
class Sequential:
    """A linear stack of layers trained by the Rust core (see the module docstring).

    ``dtype`` float32 (default) or float64; every weight is drawn from ``seed``.
    """

    def __init__(self, layers: Optional[Sequence[Layer]] = None, *, seed: int = 0, dtype: Any = np.float32,
                 name: Optional[str] = None) -> None:
        self.layers: List[Layer] = []
        for layer in layers or []:
            self.add(layer)
        self.seed = int(seed)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype: expected float32 or float64, got {self.dtype}")
        self.name = name or "sequential"
        self.loss: Optional[str] = None
        self.metrics: List[str] = []
        self.optimizer: Optional[_Opt] = None
        self.clipnorm: Optional[float] = None
        self._core: Optional[Any] = None
        self._input_features = 0

    def add(self, layer: Layer) -> None:
        """Append a layer (before the model is built)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"layer: expected an rnnrs.keras layer, got {type(layer).__name__} "
                            "(note: rnnrs.LSTM is the PyTorch-style layer; use rnnrs.keras.LSTM here)")
        if getattr(self, "_core", None) is not None:
            raise ValueError("add: the model is already built")
        self.layers.append(layer)

    # ------------------------------------------------------------------------------------ building
    @property
    def built(self) -> bool:
        return self._core is not None

    def _takes_ids(self) -> bool:
        return bool(self.layers) and isinstance(self.layers[0], Embedding)

    def build(self, input_features: Optional[int] = None) -> None:
        """Create the weights. ``input_features`` (the ``F`` of ``(N, T, F)``) is taken from the
        first layer's ``input_shape`` or the first data seen when not given."""
        if self._core is not None:
            return
        if not self.layers:
            raise ValueError("build: expected at least one layer, got none")
        if self.loss is None:
            raise ValueError("build: call compile(loss=..., optimizer=...) first")
        if not self._takes_ids():
            shape = getattr(self.layers[0], "input_shape", None)
            if input_features is None and shape:
                input_features = int(shape[-1])
            if input_features is None:
                raise ValueError("build: expected input_features (or input_shape on the first layer)")
            self._input_features = _pos_int("input_features", input_features)
        cfg = {"input_features": self._input_features, "layers": [l._spec() for l in self.layers],
               "loss": self.loss}
        self._core = _rnnrs.SeqModel(json.dumps(cfg), self.dtype.name, self.seed)
        self._set_optimizer()

    def _set_optimizer(self) -> None:
        if self._core is None or self.optimizer is None:
            return
        o = self.optimizer
        kw = o.kw
        if o.name == "sgd":
            self._core.set_optimizer("sgd", o.learning_rate, momentum=kw["momentum"], nesterov=kw["nesterov"],
                                     weight_decay=kw["weight_decay"])
        else:
            self._core.set_optimizer(o.name, o.learning_rate, weight_decay=kw["weight_decay"],
                                     betas=(kw["beta_1"], kw["beta_2"]), eps=kw["epsilon"])

    def compile(self, loss: str = "sparse_categorical_crossentropy", optimizer: Any = "adam",
                metrics: Optional[Sequence[str]] = None, clipnorm: Optional[float] = None) -> None:
        """Choose the loss (``"mse"``, ``"categorical_crossentropy"``,
        ``"sparse_categorical_crossentropy"``), the optimizer (``"adam"``, ``"sgd"``, ``"adamw"`` or
        :class:`Adam`/:class:`SGD`/:class:`AdamW` objects), ``metrics`` (``["accuracy"]``; ``"mae"``,
        the mean absolute error against targets of the output's shape, with ``"mse"`` or
        ``"categorical_crossentropy"``) and an optional global gradient-norm clip."""
        loss = _LOSS_ALIASES.get(loss, loss)
        if loss not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
        metrics = list(metrics or [])
        for m in metrics:
            if m not in ("accuracy", "acc", "mae"):
                raise ValueError(f"metrics: expected 'accuracy' or 'mae', got {m!r}")
            if m == "mae" and loss == "sparse_categorical_crossentropy":  # (class ids: |p - id| means nothing)
                raise ValueError("metrics: 'mae' compares outputs with targets of the same shape: expected loss "
                                 "'mse' or 'categorical_crossentropy', got 'sparse_categorical_crossentropy' "
                                 "(targets are class ids)")
        if self._core is not None and loss != self.loss:
            raise ValueError("compile: the loss of a built model cannot change")
        self.loss = loss
        self.metrics = ["accuracy" if m == "acc" else m for m in metrics]
        self.optimizer = _optimizer(optimizer)
        self.clipnorm = None if clipnorm is None else float(clipnorm)
        self._set_optimizer()
        if self._takes_ids() or (self.layers and getattr(self.layers[0], "input_shape", None)):
            self.build()

    # ---------------------------------------------------------------------------------------- data
    def _x(self, x: Any) -> np.ndarray:
        try:
            x = np.asarray(x)
        except ValueError as e:  # ragged nested lists
            raise ValueError(f"x: expected a rectangular array (pad ragged sequences with pad_sequences), got {e}") from None
        if x.size == 0 or x.ndim == 0:
            raise ValueError(f"x: expected at least one example with at least one step, got shape {x.shape}")
        if x.dtype == object:
            raise TypeError("x: expected a numeric array, got objects")
        if self._takes_ids():
            if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
                raise ValueError(f"x: expected integer token ids (N, T), got {x.dtype} array of shape {x.shape}")
            return np.ascontiguousarray(x, dtype=np.int64)
        if x.ndim != 3:
            raise ValueError(f"x: expected features (N, T, F), got shape {x.shape}")
        if not self.built:
            self.build(x.shape[2])
        return np.ascontiguousarray(x, dtype=self.dtype)

    def _y(self, y: Any) -> np.ndarray:
        try:
            y = np.asarray(y)
        except ValueError as e:
            raise ValueError(f"y: expected a rectangular array, got {e}") from None
        if y.dtype == object:
            raise TypeError("y: expected a numeric array, got objects")
        if self.loss == "sparse_categorical_crossentropy":
            if not np.issubdtype(y.dtype, np.integer):
                raise TypeError(f"y: expected integer class ids for sparse_categorical_crossentropy, got {y.dtype}")
            return np.ascontiguousarray(y, dtype=np.int64)
        return np.ascontiguousarray(y, dtype=self.dtype)

    def _lengths(self, x: np.ndarray, lengths: Any) -> Optional[np.ndarray]:
        if lengths is not None:
            return np.ascontiguousarray(np.asarray(lengths), dtype=np.int64)
        first = self.layers[0]
        if isinstance(first, Embedding) and first.mask_zero:
            nz = x != 0
            last = x.shape[1] - np.argmax(nz[:, ::-1], axis=1)
            return np.where(nz.any(axis=1), last, 1).astype(np.int64)
        return None

    def _core_or_raise(self) -> Any:
        if self._core is None:
            raise ValueError("the model is not built: call compile() and fit() (or build()) first")
        return self._core

    # ------------------------------------------------------------------------------------ training
    def train_on_batch(self, x: Any, y: Any, lengths: Any = None) -> Dict[str, float]:
        """One optimizer step on one batch (one Rust call); returns ``{"loss", "accuracy"?}``."""
        x = self._x(x)
        core = self._core_or_raise()
        loss, correct, count, _ = core.train_step(x, self._y(y), self._lengths(x, lengths), self.clipnorm)
        logs = {"loss": loss}
        if "accuracy" in self.metrics:
            logs["accuracy"] = correct / max(count, 1)
        return logs

    def fit(self, x: Any, y: Any, epochs: int = 1, batch_size: int = 32, *, validation_split: float = 0.0,
            validation_data: Optional[Tuple[Any, ...]] = None, shuffle: bool = True, verbose: int = 1,
            lengths: Any = None, callbacks: Optional[Sequence[Any]] = None, file: Any = None) -> History:
        """Train for ``epochs`` passes over ``(x, y)`` in mini-batches of ``batch_size`` (one Rust call
        each). ``validation_split`` holds out the *last* fraction of the data (before shuffling), as
        Keras does; ``validation_data=(x, y)`` or ``(x, y, lengths)`` gives it explicitly.
        ``verbose``: 0 silent, 1 progress bar, 2 one line per epoch. ``callbacks``: callables
        ``f(epoch, logs)`` called after each epoch. Returns a :class:`History`."""
        epochs, batch_size = _pos_int("epochs", epochs), _pos_int("batch_size", batch_size)
        x, y = self._x(x), self._y(y)
        n = len(x)
        if len(y) != n:
            raise ValueError(f"y: expected {n} examples (as many as x), got {len(y)}")
        lens = self._lengths(x, lengths)
        val, val_first = None, 0  # (val_first: the user's row of the first validation example)
        if validation_data is not None:
            val = tuple(validation_data) + (None,) * (3 - len(validation_data))
        elif validation_split:
            if not 0.0 < validation_split < 1.0:
                raise ValueError(f"validation_split: expected a float in (0, 1), got {validation_split}")
            split = int(n * (1.0 - validation_split))
            if split < 1 or split >= n:
                raise ValueError(f"validation_split: {validation_split} leaves no training or no validation data")
            val = (x[split:], y[split:], None if lens is None else lens[split:])
            x, y = x[:split], y[:split]
            lens = None if lens is None else lens[:split]
            n = val_first = split
        stream = file or sys.stdout
        steps = math.ceil(n / batch_size)
        history = History()
        for epoch in range(epochs):
            order = np.random.default_rng([self.seed, 7, epoch]).permutation(n) if shuffle else np.arange(n)
            bar = _Progress(steps, epoch + 1, epochs, verbose, stream)
            tot_loss = tot_correct = tot_count = 0.0
            for s in range(steps):
                idx = np.sort(order[s * batch_size:(s + 1) * batch_size]) if not shuffle else order[s * batch_size:(s + 1) * batch_size]
                xb, yb = x[idx], y[idx]
                lb = None if lens is None else lens[idx]
                loss, correct, count, _ = self._batch("train_step", idx, xb, yb, lb, self.clipnorm)
                tot_loss += loss * count
                tot_correct += correct
                tot_count += count
                logs = self._logs(tot_loss, tot_correct, tot_count)
                bar.update(s + 1, logs, final=False)
            logs = self._logs(tot_loss, tot_correct, tot_count)
            if val is not None:
                vl = self._evaluate(val[0], val[1], val[2], batch_size, first=val_first)
                logs.update({f"val_{k}": v for k, v in vl.items()})
            bar.update(steps, logs, final=True)
            bar.end(logs)
            history._add(epoch, logs)
            for cb in callbacks or []:
                cb(epoch, logs)
        self.history = history
        return history

    def _logs(self, loss: float, correct: float, count: float) -> Dict[str, float]:
        logs = {"loss": loss / max(count, 1)}
        if "accuracy" in self.metrics:
            logs["accuracy"] = correct / max(count, 1)
        return logs

    def _batch(self, method: str, rows: np.ndarray, xb: np.ndarray, *args: Any) -> Any:
        """``core.method(xb, *args)`` for the batch of user rows ``rows``; a non-finite ``x`` or
        ``y`` is reported at its index in the user's arrays."""
        try:
            return getattr(self._core_or_raise(), method)(xb, *args)
        except _rnnrs.NonFiniteError as e:
            err = at_user_index(e, "x", xb, rows)
            if err is e and method != "predict":
                err = at_user_index(e, "y", args[0], rows)
            raise err from None

    def _evaluate(self, x: Any, y: Any, lengths: Any, batch_size: int, first: int = 0) -> Dict[str, float]:
        batch_size = _pos_int("batch_size", batch_size)
        x, y = self._x(x), self._y(y)
        if len(y) != len(x):
            raise ValueError(f"y: expected {len(x)} examples (as many as x), got {len(y)}")
        lens = self._lengths(x, lengths)
        core = self._core_or_raise()
        tot_loss = tot_correct = tot_count = 0.0
        mae_num = mae_den = 0.0
        for s in range(0, len(x), batch_size):
            lb = None if lens is None else lens[s:s + batch_size]
            rows = first + np.arange(s, min(s + batch_size, len(x)))
            loss, correct, count, _ = self._batch("evaluate", rows, x[s:s + batch_size], y[s:s + batch_size], lb)
            tot_loss += loss * count
            tot_correct += correct
            tot_count += count
            if "mae" in self.metrics:  # over the true steps only (padded ones count in no metric)
                err = np.abs(core.predict(x[s:s + batch_size], lb) - y[s:s + batch_size])
                if lb is not None and err.ndim == 3:
                    err = err[np.arange(err.shape[1])[None, :] < np.asarray(lb)[:, None]]
                mae_num += float(err.sum(dtype=np.float64))
                mae_den += err.size
        logs = self._logs(tot_loss, tot_correct, tot_count)
        if "mae" in self.metrics:
            logs["mae"] = mae_num / max(mae_den, 1)
        return logs

    def evaluate(self, x: Any, y: Any, batch_size: int = 32, *, lengths: Any = None,
                 verbose: int = 0, return_dict: bool = False) -> Any:
        """Loss (and metrics) in inference mode: a float, ``[loss, metric...]`` with metrics, or a
        dict with ``return_dict=True``."""
        logs = self._evaluate(x, y, lengths, batch_size)
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        if return_dict:
            return logs
        return logs["loss"] if len(logs) == 1 else list(logs.values())

    def predict(self, x: Any, batch_size: int = 256, *, lengths: Any = None, verbose: int = 0) -> np.ndarray:
        """Outputs for ``x`` in inference mode, batch-first: ``(N, C)`` or ``(N, T, C)``."""
        batch_size = _pos_int("batch_size", batch_size)
        x = self._x(x)
        self._core_or_raise()
        lens = self._lengths(x, lengths)
        outs = [self._batch("predict", np.arange(s, min(s + batch_size, len(x))), x[s:s + batch_size],
                            None if lens is None else lens[s:s + batch_size])
                for s in range(0, len(x), batch_size)]
        return np.concatenate(outs, axis=0)

    def __call__(self, x: Any, lengths: Any = None) -> np.ndarray:
        return self.predict(x, lengths=lengths)

    # ------------------------------------------------------------------------------------- weights
    def get_weights(self) -> Dict[str, np.ndarray]:
        """Copies of every parameter: ``{"layers.{i}.{name}": array}`` (recurrent names as PyTorch)."""
        return dict(self._core_or_raise().state_dict())

    def set_weights(self, weights: Mapping[str, Any]) -> None:
        """Replace every parameter (names as :meth:`get_weights`)."""
        self._core_or_raise().load_state_dict(
            [(k, np.ascontiguousarray(v, dtype=self.dtype)) for k, v in weights.items()])

    def count_params(self) -> int:
        return int(self._core_or_raise().num_params())

    def summary(self, file: Any = None) -> None:
        """Print the layers, their output shapes and parameter counts."""
        out = file or sys.stdout
        w = self.get_weights() if self.built else {}
        print(f'Model: "{self.name}"', file=out)
        print(f"{'Layer':<34}{'Output shape':<22}{'Params':>10}", file=out)
        shape: Tuple[Any, ...] = ("N", "T") if self._takes_ids() else ("N", "T", self._input_features or "F")
        for i, l in enumerate(self.layers):
            if isinstance(l, Embedding):
                shape = ("N", "T", l.output_dim)
            elif isinstance(l, _RecurrentLayer):
                u = l.units * (2 if l.bidirectional else 1)
                shape = ("N", "T", u) if l.return_sequences else ("N", u)
            elif isinstance(l, Dense):
                shape = shape[:-1] + (l.units,)
            n = sum(a.size for k, a in w.items() if k.startswith(f"layers.{i}."))
            print(f"{repr(l)[:33]:<34}{str(shape):<22}{n:>10}", file=out)
        if self.built:
            print(f"Total params: {self.count_params()}", file=out)

    def get_config(self) -> Dict[str, Any]:
        return {
            "format": FORMAT, "name": self.name, "seed": self.seed, "dtype": self.dtype.name,
            "input_features": self._input_features,
            "layers": [{"class": type(l).__name__, "config": l.get_config()} for l in self.layers],
            "compile": None if self.loss is None else {
                "loss": self.loss, "metrics": self.metrics, "clipnorm": self.clipnorm,
                "optimizer": None if self.optimizer is None else self.optimizer.get_config()},
        }

    def save(self, path: Union[str, "os.PathLike[str]"], include_optimizer: bool = True) -> None:
        """Write the configuration, weights and (by default) optimizer state to ``path``: a
        safetensors file with the JSON configuration in its metadata (atomic; no pickle)."""
        from .checkpoint import write_tensors
        from ._rnnrs import NonFiniteError
        core = self._core_or_raise()
        tensors = {f"model.{k}": v for k, v in core.state_dict()}
        bad = [k for k, v in tensors.items() if not np.all(np.isfinite(v))]
        if bad:
            raise NonFiniteError(f"save: expected finite weights, got NaN/Inf in {bad[0]} (and {len(bad) - 1} more); "
                                 f"nothing was written to {os.fspath(path)}")
        meta = {"format": FORMAT, "config": json.dumps(self.get_config())}
        if include_optimizer:
            steps, items = core.optimizer_state()
            tensors.update({f"optimizer.{k}": v for k, v in items})
            meta["optimizer_steps"] = str(steps)
            meta["dropout_state"] = json.dumps(list(core.dropout_state()))
        write_tensors(path, tensors, meta)

    def export_onnx(self, path: Union[str, "os.PathLike[str]"], opset: Optional[int] = None, *,
                    dtype: str = "float32", padding: str = "post") -> Any:
        """Write the built model to ``path`` as ONNX: ``x`` (and ``sequence_lens`` unless the embedding
        masks zeros) in, ``y`` as :meth:`predict` out. Needs ``pip install 'rnnrs[onnx]'``. See
        :func:`rnnrs.onnx_export.export_sequential` and ``docs/onnx.md``."""
        from .onnx_export import export_sequential
        return export_sequential(self, path, opset, dtype=dtype, padding=padding)

    def __repr__(self) -> str:
        return f"Sequential([{', '.join(map(repr, self.layers))}])"


def load_model(path: Union[str, "os.PathLike[str]"]) -> Sequential:
    """A :class:`Sequential` saved with :meth:`Sequential.save`: same layers, weights, compile
    settings and (if saved) optimizer state, so training continues where it stopped."""
    from .checkpoint import CheckpointError, read_tensors
    tensors, meta = read_tensors(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{os.fspath(path)}: expected an {FORMAT} file, got format {meta.get('format')!r}")
    try:
        return _model_from(tensors, meta, path)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError, IndexError) as e:
        what = f"missing entry {e}" if isinstance(e, KeyError) else str(e)
        raise CheckpointError(f"{os.fspath(path)}: not a valid {FORMAT} file ({type(e).__name__}: {what})") from None


def _model_from(tensors: Mapping[str, np.ndarray], meta: Mapping[str, str], path: Any) -> Sequential:
    from .checkpoint import CheckpointError
    cfg = json.loads(meta["config"])
    if not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
        raise CheckpointError(f"{os.fspath(path)}: expected a JSON object with a list of layers in 'config'")
    layers = []
    for entry in cfg["layers"]:
        cls = _LAYERS.get(entry["class"])
        if cls is None:
            raise CheckpointError(f"{os.fspath(path)}: unknown layer class {entry['class']!r}")
        if not isinstance(entry.get("config"), dict):
            raise CheckpointError(f"{os.fspath(path)}: expected a config object for layer {entry['class']!r}")
        layers.append(cls(**entry["config"]))
    model = Sequential(layers, seed=cfg["seed"], dtype=cfg["dtype"], name=cfg["name"])
    comp = cfg["compile"]
    model.loss = comp["loss"]
    model.metrics = comp["metrics"]
    model.clipnorm = comp["clipnorm"]
    model.optimizer = None if comp["optimizer"] is None else _optimizer(comp["optimizer"])
    model.build(cfg["input_features"] or None)
    core = model._core_or_raise()
    core.load_state_dict([(k[len("model."):], v.astype(model.dtype)) for k, v in tensors.items()
                          if k.startswith("model.")])
    opt = [(k[len("optimizer."):], v.astype(model.dtype)) for k, v in tensors.items() if k.startswith("optimizer.")]
    if "optimizer_steps" in meta and model.optimizer is not None:
        core.load_optimizer_state(int(meta["optimizer_steps"]), opt)
        seed, calls = json.loads(meta["dropout_state"])
        core.set_dropout_state(int(seed), int(calls))
    return model

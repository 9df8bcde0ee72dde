"""The Keras-style :class:`Sequential` model (see :mod:`rnnrs.keras`).

A stack the Rust ``SeqModel`` can run (Embedding/Masking first, recurrent layers without
``return_state``/``stateful``/``go_backwards``/dropout, ``Bidirectional`` with ``merge_mode="concat"``,
Dense, Dropout, ``TimeDistributed(Dense)``) trains with **one** Rust call per batch
(``SeqModel.train_step``: forward, loss, backward, clipping, update, GIL released). Any other stack
(``RepeatVector``, ``stateful=True``, ...) runs as a functional :class:`~rnnrs.keras.Model` over
the same layers. Either way the layers are initialised as Keras does (Glorot-uniform kernels,
orthogonal recurrent weights, ``unit_forget_bias``) from the model's ``seed``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .. import _rnnrs
from .._finite import at_user_index
from . import _init
from ._fit import History, LearningRate, pos_int as _pos_int, run_fit, sample_weights, split_validation
from ._layers import (Bidirectional, Dense, Embedding, InputLayer, KerasTensor, Layer, Masking, TimeDistributed,
                      _RecurrentLayer, from_config, layers_state, load_layers_state)

LOSSES = ("mse", "categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy")
_LOSS_ALIASES = {"mean_squared_error": "mse"}
FORMAT = "rnnrs.sequential/1"


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


class RMSprop(_Opt):
    """RMSprop (Keras' defaults ``learning_rate=0.001``, ``rho=0.9``, ``epsilon=1e-7``; no momentum,
    not centered): ``v = rho·v + (1 - rho)·g²``, ``w -= lr·g / (√v + epsilon)``."""

    name = "rmsprop"

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.9, momentum: float = 0.0, epsilon: float = 1e-7,
                 centered: bool = False, weight_decay: float = 0.0) -> None:
        if momentum or centered:
            raise ValueError(f"RMSprop: expected momentum=0.0 and centered=False (not supported yet), "
                             f"got momentum={momentum!r}, centered={centered!r}")
        if not 0.0 <= float(rho) < 1.0:
            raise ValueError(f"RMSprop: rho: expected a number in [0, 1), got {rho!r}")
        super().__init__(learning_rate, rho=float(rho), epsilon=float(epsilon), weight_decay=float(weight_decay))


def _optimizer(spec: Union[str, _Opt, Mapping[str, Any]]) -> _Opt:
    if isinstance(spec, _Opt):
        return spec
    if isinstance(spec, str):
        table = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}
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
def pad_sequences(sequences: Sequence[Any], maxlen: Optional[int] = None, dtype: Any = "int32",
                  padding: str = "pre", truncating: str = "pre", value: float = 0.0) -> np.ndarray:
    """Keras' ``pad_sequences``: a list of sequences (each ``(T_i,)`` ids or ``(T_i, F)``
    features) → one array ``(N, maxlen)``/``(N, maxlen, F)``. ``padding="pre"`` (Keras' default)
    puts ``value`` before each sequence, ``"post"`` after; sequences longer than ``maxlen`` lose
    their start (``truncating="pre"``) or end (``"post"``)."""
    if padding not in ("pre", "post") or truncating not in ("pre", "post"):
        raise ValueError(f"padding/truncating: expected 'pre' or 'post', got {padding!r}/{truncating!r}")
    seqs = [np.asarray(s) for s in sequences]
    if not seqs:
        raise ValueError("sequences: expected at least one sequence, got none")
    if maxlen is not None:
        maxlen = _pos_int("maxlen", maxlen)
    t = int(maxlen or max(len(s) for s in seqs))
    tail = next((s.shape[1:] for s in seqs if len(s)), ())
    out = np.full((len(seqs), t) + tail, value, dtype=dtype)
    for i, s in enumerate(seqs):
        if not len(s):
            continue
        if s.shape[1:] != tail:
            raise ValueError(f"sequences[{i}]: expected steps of shape {tail} (as the others), got {s.shape[1:]}")
        s = s[-t:] if truncating == "pre" else s[:t]
        if padding == "pre":
            out[i, t - len(s):] = s
        else:
            out[i, :len(s)] = s
    return out


def _layer_width(layer: Layer, width: int) -> int:
    if isinstance(layer, Embedding):
        return layer.output_dim
    if isinstance(layer, Bidirectional):
        return 2 * layer.forward_layer.units
    if isinstance(layer, _RecurrentLayer):
        return layer.units * (2 if layer.bidirectional else 1)
    if isinstance(layer, (Dense, TimeDistributed)) and hasattr(getattr(layer, "layer", layer), "units"):
        return getattr(layer, "layer", layer).units
    return width


# -------------------------------------------------------------------------------------- Sequential
class Sequential(LearningRate):
    """A linear stack of layers (see the module docstring): trained by one Rust call per batch when
    the Rust ``SeqModel`` can run the stack, else as a functional :class:`~rnnrs.keras.Model`.

    ``dtype`` float32 (default) or float64; every weight is drawn from ``seed``.
    """

    def __init__(self, layers: Optional[Sequence[Any]] = None, *, seed: int = 0, dtype: Any = np.float32,
                 name: Optional[str] = None) -> None:
        self.layers: List[Layer] = []
        self._input: Optional[InputLayer] = None
        self._core: Optional[Any] = None
        self._graph: Optional[Any] = None
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
        self._input_features = 0
        self._rust_index: Dict[int, int] = {}
        self.stop_training = False
        self.history: Optional[History] = None

    def add(self, layer: Any) -> None:
        """Append a layer (before the model is built); ``add(Input(shape))`` sets the input shape."""
        if self.built:
            raise ValueError("add: the model is already built")
        if isinstance(layer, KerasTensor) and isinstance(layer.node.layer, InputLayer):
            layer = layer.node.layer
        if isinstance(layer, InputLayer):
            if self.layers or self._input is not None:
                raise ValueError("add: expected Input only as the first layer")
            self._input = layer
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"layer: expected an rnnrs.keras layer, got {type(layer).__name__} "
                            "(note: rnnrs.LSTM is the PyTorch-style layer; use rnnrs.keras.LSTM here)")
        self.layers.append(layer)

    # ------------------------------------------------------------------------------------ building
    @property
    def built(self) -> bool:
        return getattr(self, "_core", None) is not None or getattr(self, "_graph", None) is not None

    def _takes_ids(self) -> bool:
        if self._input is not None and self._input.ids:
            return True
        return bool(self.layers) and isinstance(self.layers[0], Embedding)

    def _mask_layer(self) -> Optional[Layer]:
        first = self.layers[0] if self.layers else None
        if isinstance(first, Masking) or (isinstance(first, Embedding) and first.mask_zero):
            return first
        return None

    def _rust_ok(self) -> bool:
        rest = self.layers[1:] if isinstance(self._mask_layer(), Masking) else self.layers
        return bool(rest) and all(l._spec() is not None for l in rest) and \
            not (isinstance(self._mask_layer(), Masking) and isinstance(rest[0], Embedding))

    def build(self, input_features: Optional[int] = None) -> None:
        """Create the weights. ``input_features`` (the ``F`` of ``(N, T, F)``) is taken from
        ``Input(shape)``, the first layer's ``input_shape`` or the first data seen when not given."""
        if self.built:
            return
        if not self.layers:
            raise ValueError("build: expected at least one layer, got none")
        if self.loss is None:
            raise ValueError("build: call compile(loss=..., optimizer=...) first")
        shape: Optional[Tuple[Any, ...]] = None
        if self._input is not None:
            shape = self._input.shape
        elif getattr(self.layers[0], "input_shape", None):
            shape = self.layers[0].input_shape
        if not self._takes_ids():
            if input_features is None and shape:
                input_features = shape[-1]
            if input_features is None:
                raise ValueError("build: expected input_features (or Input(shape) / input_shape on the first layer)")
            self._input_features = _pos_int("input_features", input_features)
        if self._rust_ok():
            self._build_rust()
        else:
            self._build_graph(shape)

    def _build_rust(self) -> None:
        rest = [l for l in self.layers if not isinstance(l, Masking)]
        cfg = {"input_features": self._input_features, "layers": [l._spec() for l in rest], "loss": self.loss}
        core = _rnnrs.SeqModel(json.dumps(cfg), self.dtype.name, self.seed)
        # Keras' initialisation (Glorot-uniform kernels, orthogonal recurrent weights, zero biases
        # with unit_forget_bias), drawn from the seed, in place of the core's PyTorch-style one.
        state = dict(core.state_dict())
        width = self._input_features
        for j, l in enumerate(rest):
            init = getattr(l, "_init_torch", None)
            if init is not None:
                for k, v in init(np.random.default_rng([self.seed, j]), width).items():
                    state[f"layers.{j}.{k}"] = v.astype(self.dtype)
            width = _layer_width(l, width)
            self._rust_index[id(l)] = j
            l._owner = self
            for s in l._sublayers():
                s._owner = self
        core.load_state_dict(list(state.items()))
        self._core = core
        self._set_optimizer()

    def _build_graph(self, shape: Optional[Tuple[Any, ...]]) -> None:
        from ._functional import Model
        from ._layers import Input
        saved = dict(_init._STATE), _init._COUNTER, dict(_init.FLOATX)
        _init.set_random_seed(self.seed)
        _init.FLOATX["dtype"] = self.dtype.name
        try:
            if self._takes_ids():
                inp = Input(shape=tuple(shape) if shape else (None,), dtype="int64")
            else:
                t = tuple(shape[:-1]) if shape and len(shape) > 1 else (None,)
                inp = Input(shape=t + (self._input_features,))
            t_ = inp
            for l in self.layers:
                t_ = l(t_)
            if isinstance(t_, list):
                raise ValueError("Sequential: expected one output per layer, got several (return_state=True "
                                 "needs the functional API: Model(inputs, outputs))")
            self._graph = Model(inp, t_, name=self.name, seed=self.seed)
        finally:
            _init._STATE.update(saved[0])
            _init._COUNTER = saved[1]
            _init.FLOATX.update(saved[2])
        self._graph.compile(optimizer=self.optimizer, loss=self.loss, metrics=self.metrics, clipnorm=self.clipnorm)

    def _set_optimizer(self) -> None:
        if self._core is None or self.optimizer is None:
            return
        o = self.optimizer
        kw = o.kw
        if o.name == "sgd":
            self._core.set_optimizer("sgd", o.learning_rate, momentum=kw["momentum"], nesterov=kw["nesterov"],
                                     weight_decay=kw["weight_decay"])
        elif o.name == "rmsprop":
            self._core.set_optimizer("rmsprop", o.learning_rate, weight_decay=kw["weight_decay"],
                                     betas=(kw["rho"], 0.0), eps=kw["epsilon"])
        else:
            self._core.set_optimizer(o.name, o.learning_rate, weight_decay=kw["weight_decay"],
                                     betas=(kw["beta_1"], kw["beta_2"]), eps=kw["epsilon"])

    def compile(self, optimizer: Any = "adam", loss: str = "sparse_categorical_crossentropy",
                metrics: Optional[Sequence[str]] = None, clipnorm: Optional[float] = None) -> None:
        """Choose the loss (``"mse"``, ``"categorical_crossentropy"``,
        ``"sparse_categorical_crossentropy"``, ``"binary_crossentropy"``), the optimizer (``"adam"``,
        ``"sgd"``, ``"adamw"``, ``"rmsprop"`` or :class:`Adam`/:class:`SGD`/:class:`AdamW`/
        :class:`RMSprop` objects), ``metrics`` (``["accuracy"]``; ``"mae"``, the mean absolute
        error against targets of the output's shape, with ``"mse"`` or
        ``"categorical_crossentropy"``) and an optional global gradient-norm clip."""
        if isinstance(optimizer, str) and optimizer in LOSSES + tuple(_LOSS_ALIASES):
            optimizer, loss = loss, optimizer  # (the former positional order compile(loss, optimizer))
        loss = _LOSS_ALIASES.get(loss, loss)
        if loss not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
        metrics = list(metrics or [])
        for m in metrics:
            if m not in ("accuracy", "acc", "mae"):
                raise ValueError(f"metrics: expected 'accuracy' or 'mae', got {m!r}")
            if m == "mae" and loss in ("sparse_categorical_crossentropy", "binary_crossentropy"):
                why = "targets are class ids" if loss == "sparse_categorical_crossentropy" else "use accuracy"
                raise ValueError(f"metrics: 'mae' compares outputs with targets of the same shape: expected loss "
                                 f"'mse' or 'categorical_crossentropy', got {loss!r} ({why})")
        if self.built and loss != self.loss:
            raise ValueError("compile: the loss of a built model cannot change")
        self.loss = loss
        self.metrics = ["accuracy" if m == "acc" else m for m in metrics]
        self.optimizer = _optimizer(optimizer)
        self.clipnorm = None if clipnorm is None else float(clipnorm)
        self._set_optimizer()
        if self._graph is not None:
            self._graph.compile(optimizer=self.optimizer, loss=self.loss, metrics=[m for m in self.metrics if m != "mae"],
                                clipnorm=self.clipnorm)
        if self._takes_ids() or self._input is not None or (self.layers and getattr(self.layers[0], "input_shape", None)):
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
        if self.loss == "binary_crossentropy" and y.ndim == 1:
            y = y[:, None]  # (Keras' Dense(1, "sigmoid") takes labels (N,))
        return np.ascontiguousarray(y, dtype=self.dtype)

    def _seq_out(self) -> bool:
        for l in reversed(self.layers):
            if isinstance(l, (_RecurrentLayer, Bidirectional)):
                return l.return_sequences
        return True

    def _masked(self, x: np.ndarray, lengths: Any) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
        """``(x, lengths, order)`` for the Rust core: with a mask (``mask_zero`` ids, ``Masking``),
        each row's kept steps are gathered to the front (``order``, None if already there) and
        ``lengths`` counts them (at least 1), so masked steps anywhere are skipped as in Keras."""
        if lengths is not None:
            return x, np.ascontiguousarray(np.asarray(lengths), dtype=np.int64), None
        m = self._mask_layer()
        if m is None:
            return x, None, None
        keep = np.any(x != m.mask_value, axis=-1) if isinstance(m, Masking) else (x != 0)
        lens = keep.sum(axis=1)
        t = x.shape[1]
        if (keep == (np.arange(t)[None, :] < lens[:, None])).all():
            return x, np.maximum(lens, 1).astype(np.int64), None
        order = np.argsort(~keep, axis=1, kind="stable")
        xi = order if x.ndim == 2 else order[:, :, None]
        return np.ascontiguousarray(np.take_along_axis(x, xi, axis=1)), np.maximum(lens, 1).astype(np.int64), order

    def _lengths(self, x: np.ndarray, lengths: Any) -> Optional[np.ndarray]:
        return self._masked(x, lengths)[1]

    def _core_or_raise(self) -> Any:
        if self._core is None:
            if self._graph is not None:
                raise ValueError("this Sequential runs as a functional graph (it has layers the Rust SeqModel "
                                 "does not run); the Rust core is not available")
            raise ValueError("the model is not built: call compile() and fit() (or build()) first")
        return self._core

    def _prepare(self, x: Any, y: Any, lengths: Any) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        x, y = self._x(x), self._y(y)
        if len(y) != len(x):
            raise ValueError(f"y: expected {len(x)} examples (as many as x), got {len(y)}")
        x, lens, order = self._masked(x, lengths)
        if order is not None and self._seq_out() and y.ndim >= 2 and y.shape[1] == x.shape[1]:
            y = np.ascontiguousarray(np.take_along_axis(y, order if y.ndim == 2 else order[:, :, None], axis=1))
        return x, y, lens

    # ------------------------------------------------------------------------------------ training
    def _apply_lr(self, value: float) -> None:
        if self._core is not None:
            self._core.set_lr(value)
        if self._graph is not None:
            self._graph.learning_rate = value

    def train_on_batch(self, x: Any, y: Any, lengths: Any = None, sample_weight: Any = None,
                       class_weight: Any = None) -> Dict[str, float]:
        """One optimizer step on one batch (one Rust call); returns ``{"loss", "accuracy"?}``."""
        if self._graph is not None or (not self.built and not self._rust_ok()):
            self._x(x)
            self._graph_or_build()
            return self._graph.train_on_batch(self._x(x), self._y(y), sample_weight, class_weight)
        x, y, lens = self._prepare(x, y, lengths)
        core = self._core_or_raise()
        w = sample_weights(len(y), y, sample_weight, class_weight, self.loss != "mse")
        loss, correct, count, _ = core.train_step(x, y, lens, self.clipnorm, None if w is None else list(w))
        return self._logs(loss * count, correct, count)

    def _graph_or_build(self) -> None:
        if not self.built:
            self.build()

    def fit(self, x: Any, y: Any, batch_size: Optional[int] = None, epochs: int = 1, verbose: Any = "auto", *,
            callbacks: Optional[Sequence[Any]] = None, validation_split: float = 0.0,
            validation_data: Optional[Tuple[Any, ...]] = None, shuffle: bool = True, class_weight: Any = None,
            sample_weight: Any = None, lengths: Any = None, file: Any = None) -> History:
        """Train for ``epochs`` passes over ``(x, y)`` in mini-batches of ``batch_size`` (32; one Rust
        call each). ``validation_split`` holds out the *last* fraction of the data (before
        shuffling), as Keras does; ``validation_data=(x, y)`` or ``(x, y, lengths)`` gives it
        explicitly. ``verbose``: 0 silent, 1 progress bar, 2 one line per epoch. ``callbacks``:
        :mod:`rnnrs.keras.callbacks` objects (Keras' hooks) or callables ``f(epoch, logs)`` called
        after each epoch; ``model.stop_training = True`` ends training after the epoch.
        ``class_weight`` ``{class: weight}`` / ``sample_weight (N,)`` weigh each example's loss.
        Returns a :class:`History`."""
        epochs, batch_size = _pos_int("epochs", epochs), _pos_int("batch_size", 32 if batch_size is None else batch_size)
        verbose = 1 if verbose == "auto" else int(verbose)
        if not self.built:
            self._x(x)
            self.build()
        if self._graph is not None:
            if lengths is not None:
                raise ValueError("lengths: this Sequential runs as a functional graph; mark padding with "
                                 "Embedding(mask_zero=True) or Masking instead")
            vd = validation_data
            return self._graph.fit(self._x(x), self._y(y), batch_size=batch_size, epochs=epochs, verbose=verbose,
                                   callbacks=self._rewire(callbacks), validation_split=validation_split,
                                   validation_data=None if vd is None else (self._x(vd[0]), self._y(vd[1])),
                                   shuffle=shuffle, class_weight=class_weight, sample_weight=sample_weight, file=file)
        x, y, lens = self._prepare(x, y, lengths)
        n = len(x)
        w = sample_weights(n, y, sample_weight, class_weight, self.loss != "mse")
        val, val_first = None, 0  # (val_first: the user's row of the first validation example)
        if validation_data is not None:
            vd = tuple(validation_data) + (None,) * (3 - len(validation_data))
            val = self._prepare(vd[0], vd[1], vd[2])
        elif validation_split:
            split = split_validation(n, validation_split)
            val = (x[split:], y[split:], None if lens is None else lens[split:])
            x, y = x[:split], y[:split]
            lens = None if lens is None else lens[:split]
            w = None if w is None else w[:split]
            val_first = split

        def step(xb: List[np.ndarray], yb: np.ndarray, extras: Dict[str, Any], rows: Any) -> Tuple[float, float, float]:
            wb = extras["w"]
            loss, correct, count, _ = self._batch("train_step", rows, xb[0], yb, extras["lens"], self.clipnorm,
                                                  None if wb is None else list(wb))
            return loss, correct, count

        def evaluate(vx: np.ndarray, vy: np.ndarray, vl: Any, first: int = 0) -> Dict[str, float]:
            return self._evaluate(vx, vy, vl, batch_size, first=first, prepared=True)

        return run_fit(self, [x], y, {"lens": lens, "w": w}, epochs=epochs, batch_size=batch_size, val=val,
                       val_first=val_first, shuffle=shuffle, verbose=verbose, callbacks=callbacks, stream=file,
                       step=step, evaluate=evaluate, seed=self.seed)

    def _rewire(self, callbacks: Optional[Sequence[Any]]) -> Optional[List[Any]]:
        """Callbacks given to a graph-backed Sequential see the Sequential (for save, stop_training)."""
        if not callbacks:
            return None
        from ..callbacks import Callback
        outer = self

        class _Bridge(Callback):
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def set_model(self, model: Any) -> None:
                self.model = model
                if isinstance(self.inner, Callback):
                    self.inner.set_model(outer)

            def on_train_begin(self, logs: Any = None) -> None:
                outer.stop_training = False
                if isinstance(self.inner, Callback):
                    self.inner.on_train_begin(logs)

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                if isinstance(self.inner, Callback):
                    self.inner.on_epoch_begin(epoch, logs)

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                if isinstance(self.inner, Callback):
                    self.inner.on_epoch_end(epoch, logs)
                else:
                    self.inner(epoch, logs)
                if outer.stop_training:
                    self.model.stop_training = True

            def on_train_end(self, logs: Any = None) -> None:
                if isinstance(self.inner, Callback):
                    self.inner.on_train_end(logs)

        return [_Bridge(cb) for cb in callbacks]

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

    def _evaluate(self, x: Any, y: Any, lengths: Any, batch_size: int, first: int = 0, prepared: bool = False,
                  sample_weight: Any = None) -> Dict[str, float]:
        batch_size = _pos_int("batch_size", batch_size)
        if not prepared:
            x, y, lengths = self._prepare(x, y, lengths)
        lens = lengths
        core = self._core_or_raise()
        w = sample_weights(len(y), y, sample_weight, None, True)
        tot_loss = tot_correct = tot_count = 0.0
        mae_num = mae_den = 0.0
        for s in range(0, len(x), batch_size):
            lb = None if lens is None else lens[s:s + batch_size]
            rows = first + np.arange(s, min(s + batch_size, len(x)))
            wb = None if w is None else list(w[s:s + batch_size])
            loss, correct, count, _ = self._batch("evaluate", rows, x[s:s + batch_size], y[s:s + batch_size], lb, wb)
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

    def evaluate(self, x: Any, y: Any, batch_size: Optional[int] = None, verbose: int = 0, *, lengths: Any = None,
                 sample_weight: Any = None, return_dict: bool = False) -> Any:
        """Loss (and metrics) in inference mode: a float, ``[loss, metric...]`` with metrics, or a
        dict with ``return_dict=True``."""
        if self._graph is not None:
            return self._graph.evaluate(self._x(x), self._y(y), batch_size=batch_size, verbose=verbose,
                                        sample_weight=sample_weight, return_dict=return_dict)
        logs = self._evaluate(x, y, lengths, 32 if batch_size is None else batch_size, sample_weight=sample_weight)
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        if return_dict:
            return logs
        return logs["loss"] if len(logs) == 1 else list(logs.values())

    def predict(self, x: Any, batch_size: Optional[int] = None, verbose: Any = 0, *, lengths: Any = None) -> np.ndarray:
        """Outputs for ``x`` in inference mode, batch-first: ``(N, C)`` or ``(N, T, C)`` (with a
        mask, the outputs of masked steps are 0)."""
        batch_size = _pos_int("batch_size", 256 if batch_size is None else batch_size)
        x = self._x(x)
        if self._graph is not None:
            return self._graph.predict(x, batch_size=batch_size)
        self._core_or_raise()
        x, lens, order = self._masked(x, lengths)
        outs = [self._batch("predict", np.arange(s, min(s + batch_size, len(x))), x[s:s + batch_size],
                            None if lens is None else lens[s:s + batch_size])
                for s in range(0, len(x), batch_size)]
        out = np.concatenate(outs, axis=0)
        if order is not None and out.ndim == 3:
            full = np.zeros_like(out)
            np.put_along_axis(full, order[:, :, None], out, axis=1)
            assert lens is not None  # (a mask gives lengths)
            valid = np.arange(out.shape[1])[None, :] < lens[:, None]
            keep = np.zeros(valid.shape, bool)
            np.put_along_axis(keep, order, valid, axis=1)
            out = full * keep[:, :, None]
        return out

    def predict_on_batch(self, x: Any) -> np.ndarray:
        return self.predict(x, batch_size=len(np.asarray(x)))

    def __call__(self, x: Any, lengths: Any = None) -> np.ndarray:
        return self.predict(x, lengths=lengths)

    def reset_states(self) -> None:
        """Forget the carried state of every ``stateful=True`` layer."""
        for l in self.layers:
            if hasattr(l, "reset_states"):
                l.reset_states()

    # ------------------------------------------------------------------------------------- weights
    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of every parameter with PyTorch's names: ``{"layers.{i}.{name}": array}`` (a
        functional-graph Sequential: ``{"{layer name}.{name}": array}``)."""
        if self._graph is not None:
            return layers_state(self.layers)
        return dict(self._core_or_raise().state_dict())

    def load_state_dict(self, weights: Mapping[str, Any]) -> None:
        """Replace every parameter (names as :meth:`state_dict`)."""
        if self._graph is not None:
            load_layers_state(self.layers, dict(weights))
            return
        self._core_or_raise().load_state_dict(
            [(k, np.ascontiguousarray(v, dtype=self.dtype)) for k, v in weights.items()])

    def get_weights(self) -> List[np.ndarray]:
        """Keras' flat list of arrays, layer by layer (``[kernel, recurrent_kernel, bias]`` per
        recurrent layer with Keras' gate order and biases, ``[kernel, bias]`` per Dense, ...)."""
        if self._graph is not None:
            return self._graph.get_weights()
        self._core_or_raise()
        return [w for l in self.layers for w in l.get_weights()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Replace every weight from Keras' flat list (as :meth:`get_weights`)."""
        if self._graph is not None:
            self._graph.set_weights(weights)
            return
        self._core_or_raise()
        weights = list(weights)
        counts = [len(l.get_weights()) for l in self.layers]
        if len(weights) != sum(counts):
            raise ValueError(f"set_weights: expected a list of {sum(counts)} arrays (as get_weights()), got {len(weights)}")
        i = 0
        for l, k in zip(self.layers, counts):
            if k:
                l.set_weights(weights[i:i + k])
            i += k

    def _layer_state(self, layer: Layer) -> Dict[str, np.ndarray]:
        j = self._rust_index[id(layer)]
        prefix = f"layers.{j}."
        return {k[len(prefix):]: v for k, v in self._core_or_raise().state_dict() if k.startswith(prefix)}

    def _load_layer_state(self, layer: Layer, w: Mapping[str, np.ndarray]) -> None:
        state = dict(self._core_or_raise().state_dict())
        j = self._rust_index[id(layer)]
        for k, v in w.items():
            state[f"layers.{j}.{k}"] = np.ascontiguousarray(v, dtype=self.dtype)
        self._core_or_raise().load_state_dict(list(state.items()))

    def _weights_copy(self) -> Dict[str, np.ndarray]:
        return self.state_dict()

    def _set_weights_copy(self, w: Mapping[str, np.ndarray]) -> None:
        self.load_state_dict(w)

    def count_params(self) -> int:
        """Keras' count: the sizes of every ``get_weights()`` array (one LSTM/SimpleRNN bias, so
        fewer than ``state_dict()`` holds)."""
        if self._graph is not None:
            return self._graph.count_params()
        self._core_or_raise()
        return int(sum(w.size for w in self.get_weights()))

    def summary(self, file: Any = None) -> None:
        """Print the layers, their output shapes and parameter counts."""
        if self._graph is not None:
            self._graph.summary(file)
            return
        out = file or sys.stdout
        print(f'Model: "{self.name}"', file=out)
        print(f"{'Layer (type)':<40}{'Output shape':<26}{'Params':>10}", file=out)
        shape: Tuple[Any, ...] = (None, None) if self._takes_ids() else (None, None, self._input_features or None)
        for l in self.layers:
            if isinstance(l, Embedding):
                shape = (None, None, l.output_dim)
            elif isinstance(l, (_RecurrentLayer, Bidirectional)):
                u = _layer_width(l, 0)
                shape = (None, None, u) if l.return_sequences else (None, u)
            elif isinstance(l, (Dense, TimeDistributed)):
                shape = shape[:-1] + (_layer_width(l, 0),)
            n = l.count_params() if self.built else 0
            print(f"{l.name + ' (' + type(l).__name__ + ')':<40}{str(shape):<26}{n:>10}", file=out)
        if self.built:
            print(f"Total params: {self.count_params()}", file=out)

    def get_config(self) -> Dict[str, Any]:
        layers = ([{"class": "InputLayer", "config": self._input.get_config()}] if self._input is not None else []) + \
            [{"class": type(l).__name__, "config": l.get_config()} for l in self.layers]
        return {
            "format": FORMAT, "name": self.name, "seed": self.seed, "dtype": self.dtype.name,
            "input_features": self._input_features,
            "layers": layers,
            "compile": None if self.loss is None else {
                "loss": self.loss, "metrics": self.metrics, "clipnorm": self.clipnorm,
                "optimizer": None if self.optimizer is None else self.optimizer.get_config()},
        }

    def load_weights(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Replace the weights from a file :meth:`save` (or ``ModelCheckpoint``) wrote for a model
        of the same layers."""
        from ..checkpoint import read_tensors
        tensors, _ = read_tensors(path)
        self.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})

    def save(self, path: Union[str, "os.PathLike[str]"], include_optimizer: bool = True, overwrite: bool = True) -> None:
        """Write the configuration, weights and (by default) optimizer state to ``path``: a
        safetensors file with the JSON configuration in its metadata (atomic; no pickle)."""
        from ..checkpoint import write_tensors
        from .._rnnrs import NonFiniteError
        if self._graph is not None:
            tensors = {f"model.{k}": v for k, v in self.state_dict().items()}
        else:
            tensors = {f"model.{k}": v for k, v in self._core_or_raise().state_dict()}
        bad = [k for k, v in tensors.items() if not np.all(np.isfinite(v))]
        if bad:
            raise NonFiniteError(f"save: expected finite weights, got NaN/Inf in {bad[0]} (and {len(bad) - 1} more); "
                                 f"nothing was written to {os.fspath(path)}")
        meta = {"format": FORMAT, "config": json.dumps(self.get_config())}
        if include_optimizer and self._core is not None:
            steps, items = self._core.optimizer_state()
            tensors.update({f"optimizer.{k}": v for k, v in items})
            meta["optimizer_steps"] = str(steps)
            meta["dropout_state"] = json.dumps(list(self._core.dropout_state()))
        elif include_optimizer and self._graph is not None and self._graph._opt is not None:
            for k, st in self._graph._opt.state.items():
                for j, a in enumerate(st):
                    tensors[f"optimizer.{k}.{j}"] = a
            meta["graph_optimizer_steps"] = str(self._graph._opt.steps)
            meta["graph_steps"] = str(self._graph._steps)
        write_tensors(path, tensors, meta)

    save_weights = save

    def export_onnx(self, path: Union[str, "os.PathLike[str]"], opset: Optional[int] = None, *,
                    dtype: str = "float32", padding: str = "post") -> Any:
        """Write the built model to ``path`` as ONNX: ``x`` (and ``sequence_lens`` unless the embedding
        masks zeros) in, ``y`` as :meth:`predict` out. Needs ``pip install 'rnnrs[onnx]'``. See
        :func:`rnnrs.onnx_export.export_sequential` and ``docs/onnx.md``."""
        from ..onnx_export import export_sequential
        odd = [l for l in self.layers if type(l).__name__ not in ("Embedding", "SimpleRNN", "GRU", "LSTM", "Dense", "Dropout")]
        if self._core is None or odd or self._input is not None:
            raise ValueError("export_onnx: expected a built Sequential of Embedding, SimpleRNN/GRU/LSTM, Dense and "
                             f"Dropout layers, got {[type(l).__name__ for l in odd] or 'an unbuilt or graph model'}")
        return export_sequential(self, path, opset, dtype=dtype, padding=padding)

    def __repr__(self) -> str:
        return f"Sequential([{', '.join(map(repr, self.layers))}])"


def load_model(path: Union[str, "os.PathLike[str]"], compile: bool = True) -> Any:
    """A model saved with ``save``: a :class:`Sequential` or a functional :class:`Model`, with the
    same layers, weights, compile settings and (if saved) optimizer state, so training continues
    where it stopped."""
    from ..checkpoint import CheckpointError, read_tensors
    from ._functional import FORMAT as FUNCTIONAL, model_from
    tensors, meta = read_tensors(path)
    if meta.get("format") not in (FORMAT, FUNCTIONAL):
        raise CheckpointError(f"{os.fspath(path)}: expected an {FORMAT} or {FUNCTIONAL} file, got format {meta.get('format')!r}")
    try:
        if meta.get("format") == FUNCTIONAL:
            return model_from(tensors, meta)
        return _model_from(tensors, meta, path)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError, IndexError) as e:
        what = f"missing entry {e}" if isinstance(e, KeyError) else str(e)
        raise CheckpointError(f"{os.fspath(path)}: not a valid {meta.get('format')} file ({type(e).__name__}: {what})") from None


def _model_from(tensors: Mapping[str, np.ndarray], meta: Mapping[str, str], path: Any) -> Sequential:
    from ..checkpoint import CheckpointError
    cfg = json.loads(meta["config"])
    if not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
        raise CheckpointError(f"{os.fspath(path)}: expected a JSON object with a list of layers in 'config'")
    layers: List[Any] = []
    for entry in cfg["layers"]:
        if not isinstance(entry.get("config"), dict):
            raise CheckpointError(f"{os.fspath(path)}: expected a config object for layer {entry['class']!r}")
        try:
            layers.append(from_config(entry))
        except ValueError as e:
            if "unknown layer class" in str(e):
                raise CheckpointError(f"{os.fspath(path)}: {e}") from None
            raise
    model = Sequential(layers, seed=cfg["seed"], dtype=cfg["dtype"], name=cfg["name"])
    comp = cfg["compile"]
    model.loss = comp["loss"]
    model.metrics = comp["metrics"]
    model.clipnorm = comp["clipnorm"]
    model.optimizer = None if comp["optimizer"] is None else _optimizer(comp["optimizer"])
    model.build(cfg["input_features"] or None)
    weights = {k[len("model."):]: v.astype(model.dtype) for k, v in tensors.items() if k.startswith("model.")}
    opt = [(k[len("optimizer."):], v.astype(model.dtype)) for k, v in tensors.items() if k.startswith("optimizer.")]
    if model._graph is not None:
        model.load_state_dict(weights)
        g = model._graph
        if "graph_optimizer_steps" in meta and g._opt is not None:
            for k, v in opt:
                pname, j = k.rsplit(".", 1)
                st = g._opt.state.setdefault(pname, [])
                while len(st) <= int(j):
                    st.append(v)
                st[int(j)] = v.copy()
            g._opt.steps, g._steps = int(meta["graph_optimizer_steps"]), int(meta["graph_steps"])
        return model
    core = model._core_or_raise()
    core.load_state_dict(list(weights.items()))
    if "optimizer_steps" in meta and model.optimizer is not None:
        core.load_optimizer_state(int(meta["optimizer_steps"]), opt)
        seed, calls = json.loads(meta["dropout_state"])
        core.set_dropout_state(int(seed), int(calls))
    return model

"""The layers of :mod:`rnnrs.keras`, with Keras' names, arguments, defaults and shapes.

Each layer is both a description (``_spec()``: what the one-call Rust ``SeqModel`` behind
:class:`~rnnrs.keras.Sequential` runs) and, when called on tensors (``layer(x)``), a node of a
functional graph (:class:`~rnnrs.keras.Model`) with a forward and an exact backward pass in NumPy and
the PyTorch-style :class:`rnnrs.LSTM` etc. of the Rust core for the recurrences.

Parameters are held in PyTorch's layout (``weight_ih_l0``, ...) and converted to Keras' lists by
``get_weights``/``set_weights``.
"""

from __future__ import annotations

import numbers
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _init

ACTIVATIONS = ("linear", "tanh", "relu", "sigmoid", "softmax")
_NAMES: Dict[str, int] = {}


def _pos_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
    return int(v)


def _rate(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 <= v < 1.0:
        raise ValueError(f"{name}: expected a float in [0, 1), got {v!r}")
    return float(v)


def _auto_name(cls: str) -> str:
    base = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cls).lower()  # (LSTM -> lstm, SimpleRNN -> simple_rnn)
    n = _NAMES.get(base, 0)
    _NAMES[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


# ------------------------------------------------------------------------------------------ tensors
class KerasTensor:
    """A symbolic tensor of a functional graph: ``shape`` with ``None`` for the batch (and unknown
    time) axes. Made by :func:`Input` and by calling a layer on tensors."""

    def __init__(self, shape: Tuple[Optional[int], ...], dtype: str, node: "Node", index: int) -> None:
        self.shape, self.dtype, self.node, self.index = shape, dtype, node, index

    def __repr__(self) -> str:
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, from {self.node.layer.name}>"


class Node:
    """One call of a layer: its input tensors (main inputs, then initial states) and outputs."""

    _ids = 0

    def __init__(self, layer: "Layer", inputs: List[KerasTensor], n_main: int) -> None:
        self.layer, self.inputs, self.n_main = layer, inputs, n_main
        self.outputs: List[KerasTensor] = []
        Node._ids += 1
        self.id = Node._ids


def _flat(x: Any) -> List[Any]:
    if isinstance(x, (list, tuple)):
        return [v for item in x for v in _flat(item)]
    return [x]


# ------------------------------------------------------------------------------------------- layers
class Layer:
    """Base of the layers. ``layer(tensor)`` adds a node to a functional graph and returns its
    output tensor(s); ``get_weights()``/``set_weights()`` use Keras' list layout."""

    def __init__(self, name: Optional[str] = None, dtype: Any = None, input_shape: Any = None,
                 trainable: bool = True) -> None:
        self.name = name or _auto_name(type(self).__name__)
        self._dtype = None if dtype is None else np.dtype(dtype)
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.trainable = bool(trainable)
        self._params: Dict[str, np.ndarray] = {}
        self._grads: Dict[str, np.ndarray] = {}
        self._nodes: List[Node] = []
        self.built = False
        self._owner: Any = None  # a Sequential whose Rust core holds the weights

    # --------------------------------------------------------------------------- description
    def get_config(self) -> Dict[str, Any]:
        return {}

    def _spec(self) -> Optional[Dict[str, Any]]:
        """The Rust ``SeqModel`` layer, or None when only the Python graph runs this layer."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    # -------------------------------------------------------------------------------- graph
    def __call__(self, inputs: Any, initial_state: Any = None, mask: Any = None, training: Any = None) -> Any:
        main = _flat(inputs)
        states = [] if initial_state is None else _flat(initial_state)
        for t in main + states:
            if not isinstance(t, KerasTensor):
                raise TypeError(f"{self.name}: expected symbolic tensors (from rnnrs.keras.Input or another layer), "
                                f"got {type(t).__name__}; to run a layer on arrays, put it in a Model or Sequential")
        if states and not isinstance(self, (_RecurrentLayer, Bidirectional)):
            raise TypeError(f"{self.name}: initial_state: expected a recurrent layer, got {type(self).__name__}")
        node = Node(self, main + states, len(main))
        shapes = [t.shape for t in main]
        dtype = self._float_dtype()
        if not self.built:
            self._build(shapes, dtype)
            self.built = True
        out_shapes = self._output_shapes(shapes, len(states))
        node.outputs = [KerasTensor(s, dtype.name, node, i) for i, s in enumerate(out_shapes)]
        self._nodes.append(node)
        return node.outputs[0] if len(node.outputs) == 1 else list(node.outputs)

    def _float_dtype(self) -> np.dtype:
        return self._dtype if self._dtype is not None else np.dtype(_init.FLOATX["dtype"])

    @property
    def output(self) -> Any:
        if not self._nodes:
            raise ValueError(f"{self.name}: expected a layer called on a tensor, got one never called")
        out = self._nodes[0].outputs
        return out[0] if len(out) == 1 else list(out)

    @property
    def input(self) -> Any:
        if not self._nodes:
            raise ValueError(f"{self.name}: expected a layer called on a tensor, got one never called")
        ins = self._nodes[0].inputs
        return ins[0] if len(ins) == 1 else list(ins)

    def _build(self, shapes: List[Tuple[Optional[int], ...]], dtype: np.dtype) -> None:
        pass

    def _output_shapes(self, shapes: List[Tuple[Optional[int], ...]], n_states: int) -> List[Tuple[Optional[int], ...]]:
        return [shapes[0]]

    def _forward(self, xs: List[np.ndarray], masks: List[Optional[np.ndarray]], training: bool,
                 ctx: Dict[str, Any]) -> Tuple[List[np.ndarray], List[Optional[np.ndarray]], Any]:
        """``(outputs, output masks, cache for _backward)``."""
        return [xs[0]], [masks[0]], None

    def _backward(self, cache: Any, douts: List[Optional[np.ndarray]]) -> List[Optional[np.ndarray]]:
        """Gradients w.r.t. the node's inputs from those w.r.t. its outputs (None: zero); adds
        parameter gradients into ``_grads``."""
        return [douts[0]]

    def _zero_grads(self) -> None:
        for k, v in self._params.items():
            self._grads[k] = np.zeros_like(v)

    def _sublayers(self) -> List["Layer"]:
        return [self]

    # ------------------------------------------------------------------------------ weights
    def _torch_weights(self) -> Dict[str, np.ndarray]:
        if self._owner is not None:
            return self._owner._layer_state(self)
        return {k: v.copy() for k, v in self._params.items()}

    def _load_torch(self, w: Dict[str, np.ndarray]) -> None:
        if self._owner is not None:
            self._owner._load_layer_state(self, w)
            return
        for k, v in w.items():
            if self._params[k].shape != v.shape:
                raise ValueError(f"{self.name}: {k}: expected shape {self._params[k].shape}, got {v.shape}")
            self._params[k][...] = v

    def _keras_weights(self, w: Dict[str, np.ndarray]) -> List[np.ndarray]:
        return []

    def _from_keras(self, arrays: List[np.ndarray]) -> Dict[str, np.ndarray]:
        return {}

    def _n_weights(self) -> int:
        return 0

    def get_weights(self) -> List[np.ndarray]:
        """Keras' list of this layer's weights (``[kernel, recurrent_kernel, bias]`` for recurrent
        layers, ``[kernel, bias]`` for Dense, ``[embeddings]`` for Embedding)."""
        if not self.built and self._owner is None:
            return []
        return self._keras_weights(self._torch_weights())

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Replace the weights from Keras' list (shapes as :meth:`get_weights`)."""
        weights = [np.asarray(w) for w in weights]
        current = self.get_weights()
        if len(weights) != len(current):
            raise ValueError(f"{self.name}: set_weights: expected a list of {len(current)} arrays "
                             f"(shapes {[c.shape for c in current]}), got {len(weights)}")
        for i, (w, c) in enumerate(zip(weights, current)):
            if w.shape != c.shape:
                raise ValueError(f"{self.name}: set_weights: weight {i}: expected shape {c.shape}, got {w.shape}")
            if not np.all(np.isfinite(w)):
                from .._rnnrs import NonFiniteError
                raise NonFiniteError(f"{self.name}: set_weights: weight {i} contains NaN or infinity")
        self._load_torch(self._from_keras(weights))

    def count_params(self) -> int:
        return int(sum(w.size for w in self.get_weights()))


class InputLayer(Layer):
    """The layer behind :func:`Input` (also accepted by ``Sequential.add``)."""

    def __init__(self, shape: Any = None, dtype: Any = None, name: Optional[str] = None, batch_size: Any = None,
                 input_shape: Any = None) -> None:
        shape = input_shape if shape is None else shape
        if shape is None:
            raise ValueError("Input: expected shape=(...) without the batch axis, got none")
        shape = (shape,) if isinstance(shape, numbers.Integral) else tuple(shape)
        super().__init__(name=name)
        self.shape = tuple(None if s is None else _pos_int("shape", s) for s in shape)
        kind = np.dtype(dtype) if dtype is not None else None
        self.ids = kind is not None and np.issubdtype(kind, np.integer)
        self.input_dtype = dtype
        self.batch_size = batch_size

    def get_config(self) -> Dict[str, Any]:
        return {"shape": list(self.shape), "dtype": None if self.input_dtype is None else str(np.dtype(self.input_dtype))}


def Input(shape: Any = None, dtype: Any = None, name: Optional[str] = None, batch_size: Any = None,
          **kwargs: Any) -> KerasTensor:
    """A symbolic input of ``shape`` (without the batch axis; ``None`` for a variable length).
    An integer ``dtype`` (``"int32"``) marks token ids for an :class:`Embedding`."""
    layer = InputLayer(shape, dtype, name, batch_size, **kwargs)
    node = Node(layer, [], 0)
    kind = "int64" if layer.ids else (layer._dtype or np.dtype(_init.FLOATX["dtype"])).name
    node.outputs = [KerasTensor((None,) + layer.shape, kind, node, 0)]
    layer._nodes.append(node)
    layer.built = True
    return node.outputs[0]


class Embedding(Layer):
    """Token ids ``(N, T)`` → vectors ``(N, T, output_dim)``. ``mask_zero=True``: id 0 is padding
    (anywhere: before, after or inside a sequence), and the steps it marks are skipped by the
    recurrent layers and by the loss, as in Keras."""

    def __init__(self, input_dim: int, output_dim: int, mask_zero: bool = False,
                 embeddings_initializer: str = "uniform", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.input_dim = _pos_int("input_dim", input_dim)
        self.output_dim = _pos_int("output_dim", output_dim)
        self.mask_zero = bool(mask_zero)
        self.embeddings_initializer = _init.check("embeddings_initializer", embeddings_initializer)

    def get_config(self) -> Dict[str, Any]:
        cfg: Dict[str, Any] = {"input_dim": self.input_dim, "output_dim": self.output_dim, "mask_zero": self.mask_zero}
        if self.embeddings_initializer != "uniform":
            cfg["embeddings_initializer"] = self.embeddings_initializer
        return cfg

    def _spec(self) -> Dict[str, Any]:
        return {"type": "embedding", "input_dim": self.input_dim, "output_dim": self.output_dim}

    def _init_torch(self, rng: np.random.Generator, in_features: int) -> Dict[str, np.ndarray]:
        return {"weight": _init.draw(self.embeddings_initializer, (self.input_dim, self.output_dim), rng)}

    def _build(self, shapes: List[Tuple[Optional[int], ...]], dtype: np.dtype) -> None:
        rng = np.random.default_rng(_init.next_stream())
        self._params = {k: v.astype(dtype) for k, v in self._init_torch(rng, 0).items()}

    def _output_shapes(self, shapes: List[Tuple[Optional[int], ...]], n_states: int) -> List[Tuple[Optional[int], ...]]:
        return [shapes[0] + (self.output_dim,)]

    def _forward(self, xs: List[np.ndarray], masks: List[Optional[np.ndarray]], training: bool,
                 ctx: Dict[str, Any]) -> Tuple[List[np.ndarray], List[Optional[np.ndarray]], Any]:
        ids = xs[0]
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"{self.name}: expected integer token ids, got {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.input_dim):
            bad = int(ids[(ids < 0) | (ids >= self.input_dim)][0])
            raise ValueError(f"{self.name}: expected token ids in [0, {self.input_dim}), got {bad}")
        mask = (ids != 0) if self.mask_zero else masks[0]
        return [self._params["weight"][ids]], [mask], ids

    def _backward(self, cache: Any, douts: List[Optional[np.ndarray]]) -> List[Optional[np.ndarray]]:
        if douts[0] is not None:
            np.add.at(self._grads["weight"], cache.reshape(-1), douts[0].reshape(-1, self.output_dim))
        return [None]

    def _keras_weights(self, w: Dict[str, np.ndarray]) -> List[np.ndarray]:
        return [w["weight"]]

    def _from_keras(self, arrays: List[np.ndarray]) -> Dict[str, np.ndarray]:
        return {"weight": arrays[0]}


class Masking(Layer):
    """Mask the time steps whose features all equal ``mask_value`` (they are skipped by recurrent
    layers and the loss, and set to 0 in the output), as Keras' ``Masking``."""

    def __init__(self, mask_value: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mask_value = float(mask_value)

    def get_config(self) -> Dict[str, Any]:
        cfg: Dict[str, Any] = {"mask_value": self.mask_value}
        if self.input_shape is not None:
            cfg["input_shape"] = list(self.input_shape)
        return cfg

    def _forward(self, xs: List[np.ndarray], masks: List[Optional[np.ndarray]], training: bool,
                 ctx: Dict[str, Any]) -> Tuple[List[np.ndarray], List[Optional[np.ndarray]], Any]:
        keep = np.any(xs[0] != self.mask_value, axis=-1)
        return [xs[0] * keep[..., None]], [keep], keep

    def _backward(self, cache: Any, douts: List[Optional[np.ndarray]]) -> List[Optional[np.ndarray]]:
        return [None if douts[0] is None else douts[0] * cache[..., None]]


class Dense(Layer):
    """``activation(x · kernel + bias)`` on the last axis (per time step on sequences).
    ``activation``: None/"linear", "tanh", "relu", "sigmoid", "softmax"."""

    def __init__(self, units: int, activation: Optional[str] = None, use_bias: bool = True,
                 kernel_initializer: str = "glorot_uniform", bias_initializer: str = "zeros", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = _pos_int("units", units)
        act = activation or "linear"
        if act not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
        self.activation = act
        if not use_bias:
            raise ValueError("use_bias: expected True (rnnrs' Dense always has a bias), got False")
        self.kernel_initializer = _init.check("kernel_initializer", kernel_initializer)
        self.bias_initializer = _init.check("bias_initializer", bias_initializer)

    def get_config(self) -> Dict[str, Any]:
        cfg: Dict[str, Any] = {"units": self.units, "activation": self.activation}
        for k, d in (("kernel_initializer", "glorot_uniform"), ("bias_initializer", "zeros")):
            if getattr(self, k) != d:
                cfg[k] = getattr(self, k)
        if self.input_shape is not None:
            cfg["input_shape"] = list(self.input_shape)
        return cfg

    def _spec(self) -> Dict[str, Any]:
        return {"type": "dense", "units": self.units, "activation": self.activation}

    def _init_torch(self, rng: np.random.Generator, in_features: int) -> Dict[str, np.ndarray]:
        kernel = _init.draw(self.kernel_initializer, (in_features, self.units), rng)
        return {"weight": kernel.T.copy(), "bias": _init.draw(self.bias_initializer, (self.units,), rng)}

    def _build(self, shapes: List[Tuple[Optional[int], ...]], dtype: np.dtype) -> None:
        f = shapes[0][-1]
        if f is None:
            raise ValueError(f"{self.name}: expected a known last axis, got shape {shapes[0]}")
        rng = np.random.default_rng(_init.next_stream())
        self._params = {k: v.astype(dtype) for k, v in self._init_torch(rng, f).items()}

    def _output_shapes(self, shapes: List[Tuple[Optional[int], ...]], n_states: int) -> List[Tuple[Optional[int], ...]]:
        return [shapes[0][:-1] + (self.units,)]

    def _forward(self, xs: List[np.ndarray], masks: List[Optional[np.ndarray]], training: bool,
                 ctx: Dict[str, Any]) -> Tuple[List[np.ndarray], List[Optional[np.ndarray]], Any]:
        x = xs[0]
        w, b = self._params["weight"], self._params["bias"]
        if x.shape[-1] != w.shape[1]:
            raise ValueError(f"{self.name}: expected inputs with {w.shape[1]} features on the last axis, got shape {x.shape}")
        y = activate(self.activation, x @ w.T + b)
        return [y], [masks[0]], (x, y)

    def _backward(self, cache: Any, douts: List[Optional[np.ndarray]], pre_activation: bool = False) -> List[Optional[np.ndarray]]:
        x, y = cache
        d = douts[0]
        if d is None:
            return [None]
        dz = d if pre_activation else activation_backward(self.activation, y, d)
        f = x.shape[-1]
        self._grads["weight"] += dz.reshape(-1, self.units).T @ x.reshape(-1, f)
        self._grads["bias"] += dz.reshape(-1, self.units).sum(axis=0)
        return [dz @ self._params["weight"]]

    def _keras_weights(self, w: Dict[str, np.ndarray]) -> List[np.ndarray]:
        return [w["weight"].T.copy(), w["bias"]]

    def _from_keras(self, arrays: List[np.ndarray]) -> Dict[str, np.ndarray]:
        return {"weight": arrays[0].T.copy(), "bias": arrays[1]}

    def _n_weights(self) -> int:
        return 2


def activate(act: str, z: np.ndarray) -> np.ndarray:
    if act == "linear":
        return z
    if act == "tanh":
        return np.tanh(z)
    if act == "relu":
        return np.maximum(z, 0)
    if act == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * z))
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def activation_backward(act: str, y: np.ndarray, d: np.ndarray) -> np.ndarray:
    if act == "linear":
        return d
    if act == "tanh":
        return d * (1 - y * y)
    if act == "relu":
        return d * (y > 0)
    if act == "sigmoid":
        return d * y * (1 - y)
    return y * (d - (d * y).sum(axis=-1, keepdims=True))


class Dropout(Layer):
    """Inverted dropout with probability ``rate`` in training; identity in inference."""

    def __init__(self, rate: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate = _rate("rate", rate)

    def get_config(self) -> Dict[str, Any]:
        return {"rate": self.rate}

    def _spec(self) -> Dict[str, Any]:
        return {"type": "dropout", "rate": self.rate}

    def _forward(self, xs: List[np.ndarray], masks: List[Optional[np.ndarray]], training: bool,
                 ctx: Dict[str, Any]) -> Tuple[List[np.ndarray], List[Optional[np.ndarray]], Any]:
        if not training or self.rate == 0.0:
            return [xs[0]], [masks[0]], None
        keep = (ctx["rng"].random(xs[0].shape) >= self.rate) / (1.0 - self.rate)
        keep = keep.astype(xs[0].dtype)
        return [xs[0] * keep], [masks[0]], keep

    def _backward(self, cache: Any, douts: List[Optional[np.ndarray]]) -> List[Optional[np.ndarray]]:
        if cache is None or douts[0] is None:
            return [douts[0]]
        return [douts[0] * cache]


class RepeatVector(Layer):
    """``(N, F)`` → ``(N, n, F)``: the input repeated ``n`` times (Keras' ``RepeatVector``)."""

    def __init__(self, n: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n = _pos_int("n", n)

    def get_config(self) -> Dict[str, Any]:
        return {"n": self.n}

    def _output_shapes(self, shapes: List[Tuple[Optional[int], ...]], n_states: int) -> List[Tuple[Optional[int], ...]]:
        if len(shapes[0]) != 2:
            raise ValueError(f"{self.name}: expected an input (batch, features), got shape {shapes[0]}")
        return [(shapes[0][0], self.n, shapes[0][1])]

    def _forward(self, xs: List[np.ndarray], masks: List[Optional[np.ndarray]], training: bool,
                 ctx: Dict[str, Any]) -> Tuple[List[np.ndarray], List[Optional[np.ndarray]], Any]:
        if xs[0].ndim != 2:
            raise ValueError(f"{self.name}: expected an input (batch, features), got shape {xs[0].shape}")
        return [np.repeat(xs[0][:, None, :], self.n, axis=1)], [None], None

    def _backward(self, cache: Any, douts: List[Optional[np.ndarray]]) -> List[Optional[np.ndarray]]:
        return [None if douts[0] is None else douts[0].sum(axis=1)]


class TimeDistributed(Layer):
    """Apply ``layer`` (a :class:`Dense` or :class:`Dropout`) to every time step of ``(N, T, ...)``."""

    def __init__(self, layer: Layer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(layer, (Dense, Dropout)):
            raise TypeError(f"TimeDistributed: expected a Dense or Dropout layer, got {type(layer).__name__}")
        self.layer = layer

    def get_config(self) -> Dict[str, Any]:
        return {"layer": {"class": type(self.layer).__name__, "config": self.layer.get_config()}}

    def _spec(self) -> Optional[Dict[str, Any]]:
        return self.layer._spec()  # (Dense and Dropout act on the last axis already)

    def _build(self, shapes: List[Tuple[Optional[int], ...]], dtype: np.dtype) -> None:
        if not self.layer.built:
            self.layer._dtype = self.layer._dtype or dtype
            self.layer._build([shapes[0][1:]], dtype)
            self.layer.built = True
        self._params, self._grads = self.layer._params, self.layer._grads

    def _output_shapes(self, shapes: List[Tuple[Optional[int], ...]], n_states: int) -> List[Tuple[Optional[int], ...]]:
        return [shapes[0][:2] + self.layer._output_shapes([shapes[0][2:]], 0)[0]]

    def _forward(self, xs: List[np.ndarray], masks: List[Optional[np.ndarray]], training: bool,
                 ctx: Dict[str, Any]) -> Tuple[List[np.ndarray], List[Optional[np.ndarray]], Any]:
        ys, _, cache = self.layer._forward(xs, [None], training, ctx)
        return ys, [masks[0]], cache

    def _backward(self, cache: Any, douts: List[Optional[np.ndarray]], pre_activation: bool = False) -> List[Optional[np.ndarray]]:
        if isinstance(self.layer, Dense):
            return self.layer._backward(cache, douts, pre_activation)
        return self.layer._backward(cache, douts)

    def _zero_grads(self) -> None:
        self.layer._zero_grads()
        self._params, self._grads = self.layer._params, self.layer._grads

    def _keras_weights(self, w: Dict[str, np.ndarray]) -> List[np.ndarray]:
        return self.layer._keras_weights(w)

    def _from_keras(self, arrays: List[np.ndarray]) -> Dict[str, np.ndarray]:
        return self.layer._from_keras(arrays)

    def _init_torch(self, rng: np.random.Generator, in_features: int) -> Dict[str, np.ndarray]:
        return self.layer._init_torch(rng, in_features) if isinstance(self.layer, Dense) else {}


# ------------------------------------------------------------------------------ recurrent layers
_GATES = {"rnn": 1, "gru": 3, "lstm": 4}


class _RecurrentLayer(Layer):
    _cell = ""
    _kind = ""

    def __init__(self, units: int, activation: str = "tanh", recurrent_activation: str = "sigmoid",
                 use_bias: bool = True, kernel_initializer: str = "glorot_uniform",
                 recurrent_initializer: str = "orthogonal", bias_initializer: str = "zeros",
                 unit_forget_bias: bool = True, dropout: float = 0.0, recurrent_dropout: float = 0.0,
                 return_sequences: bool = False, return_state: bool = False, go_backwards: bool = False,
                 stateful: bool = False, unroll: bool = False, reset_after: bool = True,
                 bidirectional: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = _pos_int("units", units)
        if recurrent_activation != "sigmoid" and self._kind != "rnn":
            raise ValueError(f"recurrent_activation: expected 'sigmoid' (the only gate activation of rnnrs), "
                             f"got {recurrent_activation!r}")
        if activation != "tanh" and self._kind != "rnn":
            raise ValueError(f"activation: expected 'tanh' for {type(self).__name__}, got {activation!r}")
        if not use_bias:
            raise ValueError("use_bias: expected True (rnnrs' recurrent layers always have biases), got False")
        if not reset_after:
            raise ValueError("reset_after: expected True (Keras' default, PyTorch's GRU), got False")
        self.kernel_initializer = _init.check("kernel_initializer", kernel_initializer)
        self.recurrent_initializer = _init.check("recurrent_initializer", recurrent_initializer)
        self.bias_initializer = _init.check("bias_initializer", bias_initializer)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.dropout = _rate("dropout", dropout)
        self.recurrent_dropout = _rate("recurrent_dropout", recurrent_dropout)
        self.return_sequences, self.return_state = bool(return_sequences), bool(return_state)
        self.go_backwards, self.stateful = bool(go_backwards), bool(stateful)
        self.bidirectional = bool(bidirectional)
        if self.bidirectional and (self.return_state or self.stateful or self.go_backwards or self.dropout
                                   or self.recurrent_dropout):
            raise ValueError("bidirectional=True: expected a plain layer (use Bidirectional(layer) for "
                             "return_state, stateful, go_backwards or dropout)")
        self.unroll = bool(unroll)
        self._runners: List[Any] = []
        self._carried: Optional[List[np.ndarray]] = None
        self._version = 0

    _DEFAULTS = {"kernel_initializer": "glorot_uniform", "recurrent_initializer": "orthogonal",
                 "bias_initializer": "zeros", "unit_forget_bias": True, "dropout": 0.0, "recurrent_dropout": 0.0,
                 "return_state": False, "go_backwards": False, "stateful": False}

    def get_config(self) -> Dict[str, Any]:
        cfg: Dict[str, Any] = {"units": self.units, "return_sequences": self.return_sequences,
                               "bidirectional": self.bidirectional}
        for k, d in self._DEFAULTS.items():
            if getattr(self, k) != d:
                cfg[k] = getattr(self, k)
        if self.input_shape is not None:
            cfg["input_shape"] = list(self.input_shape)
        return cfg

    def _spec(self) -> Optional[Dict[str, Any]]:
        if self.return_state or self.go_backwards or self.stateful or self.dropout or self.recurrent_dropout:
            return None
        return {"type": "recurrent", "cell": self._cell, "units": self.units,
                "return_sequences": self.return_sequences, "bidirectional": self.bidirectional}

    @property
    def _n_states(self) -> int:
        return 2 if self._kind == "lstm" else 1

    # ---------------------------------------------------------------------- weights (layouts)
    def _init_torch(self, rng: np.random.Generator, in_features: int) -> Dict[str, np.ndarray]:
        """Keras' initialisation, in PyTorch's layout (all directions)."""
        g, h = _GATES[self._kind], self.units
        out: Dict[str, np.ndarray] = {}
        for suffix in ([""] + (["_reverse"] if self.bidirectional else [])):
            kernel = _init.draw(self.kernel_initializer, (in_features, g * h), rng)
            rec = _init.draw(self.recurrent_initializer, (h, g * h), rng)
            bias = _init.draw(self.bias_initializer, (g * h,), rng) if self.bias_initializer != "zeros" else np.zeros(g * h)
            if self._kind == "lstm" and self.unit_forget_bias:
                bias[h:2 * h] = 1.0
            bias_hh = np.zeros(g * h)
            if self._kind == "gru":  # (Keras' GRU has a second, recurrent bias row)
                bias_hh = bias.copy() if self.bias_initializer != "zeros" else np.zeros(g * h)
            out.update(self._to_torch([kernel, rec, np.stack([bias, bias_hh]) if self._kind == "gru" else bias], suffix))
        return out

    def _to_torch(self, arrays: List[np.ndarray], suffix: str = "") -> Dict[str, np.ndarray]:
        kernel, rec, bias = (np.asarray(a) for a in arrays)
        h = self.units
        if self._kind == "gru":  # Keras z, r, h -> PyTorch r, z, n
            perm = np.r_[h:2 * h, 0:h, 2 * h:3 * h]
            return {f"weight_ih_l0{suffix}": kernel[:, perm].T.copy(), f"weight_hh_l0{suffix}": rec[:, perm].T.copy(),
                    f"bias_ih_l0{suffix}": bias[0][perm].copy(), f"bias_hh_l0{suffix}": bias[1][perm].copy()}
        return {f"weight_ih_l0{suffix}": kernel.T.copy(), f"weight_hh_l0{suffix}": rec.T.copy(),
                f"bias_ih_l0{suffix}": bias.copy(), f"bias_hh_l0{suffix}": np.zeros_like(bias)}

    def _to_keras(self, w: Dict[str, np.ndarray], suffix: str = "") -> List[np.ndarray]:
        h = self.units
        wi, wh = w[f"weight_ih_l0{suffix}"], w[f"weight_hh_l0{suffix}"]
        bi, bh = w[f"bias_ih_l0{suffix}"], w[f"bias_hh_l0{suffix}"]
        if self._kind == "gru":  # PyTorch r, z, n -> Keras z, r, h
            perm = np.r_[h:2 * h, 0:h, 2 * h:3 * h]
            return [wi[perm].T.copy(), wh[perm].T.copy(), np.stack([bi[perm], bh[perm]])]
        return [wi.T.copy(), wh.T.copy(), bi + bh]

    def _keras_weights(self, w: Dict[str, np.ndarray]) -> List[np.ndarray]:
        out = self._to_keras(w)
        return out + (self._to_keras(w, "_reverse") if self.bidirectional else [])

    def _from_keras(self, arrays: List[np.ndarray]) -> Dict[str, np.ndarray]:
        out = self._to_torch(arrays[:3])
        if self.bidirectional:
            out.update(self._to_torch(arrays[3:6], "_reverse"))
        return out

    def _n_weights(self) -> int:
        return 6 if self.bidirectional else 3

    # ---------------------------------------------------------------------------- graph
    def _build(self, shapes: List[Tuple[Optional[int], ...]], dtype: np.dtype) -> None:
        if len(shapes[0]) != 3 or shapes[0][-1] is None:
            raise ValueError(f"{self.name}: expected an input (batch, time, features), got shape {shapes[0]}")
        if self.bidirectional:
            raise ValueError(f"{self.name}: bidirectional=True runs in Sequential only; in a functional model "
                             "use Bidirectional(layer)")
        self._in_features = int(shapes[0][-1])
        rng = np.random.default_rng(_init.next_stream())
        self._params = {k: v.astype(dtype) for k, v in self._init_torch(rng, self._in_features).items()}

    def _output_shapes(self, shapes: List[Tuple[Optional[int], ...]], n_states: int) -> List[Tuple[Optional[int], ...]]:
        if n_states not in (0, self._n_states):
            raise ValueError(f"{self.name}: initial_state: expected {self._n_states} tensor(s) "
                             f"({'[h, c]' if self._n_states == 2 else '[h]'}), got {n_states}")
        b, t = shapes[0][0], shapes[0][1]
        out = [(b, t, self.units) if self.return_sequences else (b, self.units)]
        return out + ([(b, self.units)] * self._n_states if self.return_state else [])

    def _runner(self, k: int, dtype: np.dtype) -> Any:
        from .. import layers as torch_layers
        while len(self._runners) <= k:
            cls = {"lstm": torch_layers.LSTM, "gru": torch_layers.GRU, "rnn": torch_layers.RNN}[self._kind]
            extra = {"nonlinearity": self._cell[4:]} if self._kind == "rnn" else {}
            self._runners.append(cls(self._in_features, self.units, batch_first=True, dtype=dtype, **extra))
        return self._runners[k]

    def reset_states(self, states: Any = None) -> None:
        """Forget (or set) the carried state of a ``stateful=True`` layer."""
        self._carried = None if states is None else [np.asarray(s) for s in _flat(states)]

    def _forward(self, xs: List[np.ndarray], masks: List[Optional[np.ndarray]], training: bool,
                 ctx: Dict[str, Any]) -> Tuple[List[np.ndarray], List[Optional[np.ndarray]], Any]:
        x, mask = xs[0], masks[0]
        states = xs[1:]
        if x.ndim != 3 or x.shape[2] != self._in_features:
            raise ValueError(f"{self.name}: expected inputs (batch, time, {self._in_features}), got shape {x.shape}")
        b, t = x.shape[0], x.shape[1]
        for s in states:
            if s.shape != (b, self.units):
                raise ValueError(f"{self.name}: initial_state: expected arrays ({b}, {self.units}), got shape {s.shape}")
        carried = False
        if not states and self.stateful and self._carried is not None:
            if self._carried[0].shape[0] != b:
                raise ValueError(f"{self.name}: stateful: expected batch {self._carried[0].shape[0]} (the carried "
                                 f"state's; call reset_states() to change it), got {b}")
            states, carried = self._carried, True
        if self.go_backwards:
            x = x[:, ::-1]
            mask = None if mask is None else mask[:, ::-1]
        # Masked steps are skipped: gather each row's kept steps to the front, run with lengths.
        if mask is not None and not mask.all():
            order = np.argsort(~mask, axis=1, kind="stable")
            lengths = mask.sum(axis=1).astype(np.int64)
            xc = np.take_along_axis(x, order[:, :, None], axis=1)
        else:
            order, lengths, xc = None, None, x
        drop = None
        if training and self.dropout:
            drop = ((ctx["rng"].random((b, 1, x.shape[2])) >= self.dropout) / (1.0 - self.dropout)).astype(x.dtype)
            xc = xc * drop
        k = ctx["calls"].get(id(self), 0)
        ctx["calls"][id(self)] = k + 1
        runner = self._runner(k, x.dtype)
        if ctx.get("version", {}).get(id(runner)) != ctx["step"]:
            runner.load_state_dict(self._params)
            ctx.setdefault("version", {})[id(runner)] = ctx["step"]
        runner.train(training)
        h0 = states[0][None].astype(x.dtype) if states else None
        c0 = states[1][None].astype(x.dtype) if len(states) > 1 else None
        rdrop = None
        if training and self.recurrent_dropout:
            rdrop = ((ctx["rng"].random((b, self.units)) >= self.recurrent_dropout)
                     / (1.0 - self.recurrent_dropout)).astype(x.dtype)
            y, h_n, c_n, tape = self._cell_forward(k, xc, h0, c0, lengths, rdrop)
        else:
            y, h_n, c_n = runner._forward(np.ascontiguousarray(xc), h0, c0, lengths)
            tape = None
        if order is not None:
            yo = np.zeros_like(y)
            np.put_along_axis(yo, order[:, :, None], y, axis=1)
            yo *= mask[:, :, None]
            y = yo
        last = h_n[0]
        if self.stateful:
            self._carried = [h_n[0].copy()] + ([c_n[0].copy()] if c_n is not None else [])
        outs = [y if self.return_sequences else last]
        if self.return_state:
            outs += [h_n[0]] + ([c_n[0]] if c_n is not None else [])
        out_mask = masks[0] if self.return_sequences else None
        cache = (k, order, mask, lengths, drop, bool(xs[1:]) and not carried, len(xs) - 1, (b, t), tape, rdrop)
        return outs, [out_mask] * len(outs), cache

    def _backward(self, cache: Any, douts: List[Optional[np.ndarray]]) -> List[Optional[np.ndarray]]:
        k, order, mask, lengths, drop, has_states, n_state_inputs, (b, t), tape, rdrop = cache
        runner = self._runners[k]
        dtype = runner.dtype
        d_main = douts[0]
        dy = np.zeros((b, t, self.units), dtype) if not self.return_sequences or d_main is None else d_main.astype(dtype)
        dh = np.zeros((b, self.units), dtype)
        dc = np.zeros((b, self.units), dtype) if self._kind == "lstm" else None
        if not self.return_sequences and d_main is not None:
            dh = dh + d_main
        if self.return_state:
            if douts[1] is not None:
                dh = dh + douts[1]
            if self._kind == "lstm" and douts[2] is not None:
                dc = dc + douts[2]
        if order is not None:
            dy = np.take_along_axis(dy * mask[:, :, None], order[:, :, None], axis=1)
        if tape is not None:
            dx, dh0, dc0 = self._cell_backward(k, tape, dy, dh, dc)
        else:
            dx, dh0, dc0 = runner._backward(np.ascontiguousarray(dy), dh[None], None if dc is None else dc[None])
            dh0 = dh0[0]
            dc0 = None if dc0 is None else dc0[0]
        if drop is not None:
            dx = dx * drop
        if order is not None:
            dxo = np.zeros_like(dx)
            np.put_along_axis(dxo, order[:, :, None], dx, axis=1)
            dx = dxo
        if self.go_backwards:
            dx = dx[:, ::-1]
        out: List[Optional[np.ndarray]] = [dx]
        if n_state_inputs:
            out += [dh0, dc0][:n_state_inputs] if has_states else [None] * n_state_inputs
        return out

    def _collect_grads(self) -> None:
        for r in self._runners:
            for name, g in r.grads().items():
                self._grads[name] += g
            r.zero_grad()
        for c in getattr(self, "_cells", []):
            for name, g in c.grads().items():
                self._grads[name.replace("weight_ih", "weight_ih_l0").replace("weight_hh", "weight_hh_l0")
                            .replace("bias_ih", "bias_ih_l0").replace("bias_hh", "bias_hh_l0")] += g
            c.zero_grad()

    # ------------------------------------------------------------- recurrent dropout (one step a call)
    def _cell_for(self, k: int, dtype: np.dtype) -> Any:
        from .. import cells
        cells_ = self.__dict__.setdefault("_cells", [])
        while len(cells_) <= k:
            cls = {"lstm": cells.LSTMCell, "rnn": cells.RNNCell, "gru": cells.GRUCell}[self._kind]
            extra = {"nonlinearity": self._cell[4:]} if self._kind == "rnn" else {}
            cells_.append(cls(self._in_features, self.units, dtype=dtype, **extra))
        p = self._params
        cells_[k].load_state_dict({"weight_ih": p["weight_ih_l0"], "weight_hh": p["weight_hh_l0"],
                                   "bias_ih": p["bias_ih_l0"], "bias_hh": p["bias_hh_l0"]})
        return cells_[k]

    def _cell_forward(self, k: int, x: np.ndarray, h0: Any, c0: Any, lengths: Any, rdrop: np.ndarray) -> Any:
        """Keras' recurrent dropout: the state entering the recurrent products is multiplied by one
        mask per sequence ``m``. One :class:`rnnrs.LSTMCell`/``RNNCell``/``GRUCell`` call per step on
        ``hm = h * m``; steps past a length keep the state. Exact for SimpleRNN and LSTM, whose state
        enters nowhere else. A GRU's update ``h' = (1 - z) n + z h`` takes the unmasked ``h``: the
        cell gives ``(1 - z) n + z hm``, so ``z (h - hm)`` is added, with ``z`` recomputed in NumPy
        from the layer's weights (rows ``H:2H``, PyTorch's gate order r, z, n)."""
        cell = self._cell_for(k, x.dtype)
        cell.eval().train(True)  # (drop any steps recorded by a forward that had no backward)
        b, t = x.shape[0], x.shape[1]
        h = np.zeros((b, self.units), x.dtype) if h0 is None else h0[0]
        c = (np.zeros((b, self.units), x.dtype) if c0 is None else c0[0]) if self._kind == "lstm" else None
        valid = np.ones((b, t), bool) if lengths is None else np.arange(t)[None, :] < lengths[:, None]
        ys = np.zeros((b, t, self.units), x.dtype)
        gru = self._kind == "gru"
        steps: List[Any] = []
        if gru:
            u, p = self.units, self._params
            w_iz, w_hz = p["weight_ih_l0"][u:2 * u], p["weight_hh_l0"][u:2 * u]
            b_z = p["bias_ih_l0"][u:2 * u] + p["bias_hh_l0"][u:2 * u]
        for s in range(t):
            v = valid[:, s:s + 1]
            xs = np.ascontiguousarray(x[:, s])
            hm = h * rdrop
            hn, cn = cell._step(xs, hm, c)
            if gru:
                z = 1.0 / (1.0 + np.exp(-(xs @ w_iz.T + hm @ w_hz.T + b_z)))
                hn = hn + z * (h - hm)
                steps.append((xs, hm, h, z))
            if c is not None:
                c = np.where(v, cn, c)
            h = np.where(v, hn, h)
            ys[:, s] = hn * v
        return ys, h[None], None if c is None else c[None], (valid, rdrop, steps)

    def _cell_backward(self, k: int, tape: Any, dy: np.ndarray, dh: np.ndarray, dc: Any) -> Any:
        valid, rdrop, steps = tape
        cell = self._cells[k]
        b, t = valid.shape
        dx = np.zeros((b, t, self._in_features), dy.dtype)
        if steps:
            u, p, g = self.units, self._params, self._grads
            w_iz, w_hz = p["weight_ih_l0"][u:2 * u], p["weight_hh_l0"][u:2 * u]
        for s in reversed(range(t)):
            v = valid[:, s:s + 1]
            if not steps:
                dxs, dhp, dcp = cell._backward(np.ascontiguousarray(dy[:, s] * v), dh * v,
                                               None if dc is None else dc * v)
                dh = dhp * rdrop + dh * ~v
                if dc is not None:
                    dc = dcp + dc * ~v
                dx[:, s] = dxs
                continue
            # GRU: h' = cell(x, hm) + z * q with q = h - hm = h * (1 - m), z = sigmoid(a_z(x, hm)).
            xs, hm, h, z = steps[s]
            dout = (dy[:, s] + dh) * v
            dxs, dhm, _ = cell._backward(np.ascontiguousarray(dout), None, None)
            da_z = dout * (h - hm) * z * (1.0 - z)
            g["weight_ih_l0"][u:2 * u] += da_z.T @ xs
            g["weight_hh_l0"][u:2 * u] += da_z.T @ hm
            g["bias_ih_l0"][u:2 * u] += da_z.sum(axis=0)
            g["bias_hh_l0"][u:2 * u] += da_z.sum(axis=0)
            dhm = dhm + da_z @ w_hz
            dh = (dhm * rdrop + dout * z * (1.0 - rdrop)) + dh * ~v
            dx[:, s] = dxs + da_z @ w_iz
        return dx, dh, dc


class SimpleRNN(_RecurrentLayer):
    """Elman RNN layer, ``activation`` ``"tanh"`` or ``"relu"``."""

    _kind = "rnn"

    def __init__(self, units: int, activation: str = "tanh", **kwargs: Any) -> None:
        if activation not in ("tanh", "relu"):
            raise ValueError(f"activation: expected 'tanh' or 'relu', got {activation!r}")
        self.activation = activation
        self._cell = f"rnn_{activation}"
        super().__init__(units, **kwargs)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "activation": self.activation}


class GRU(_RecurrentLayer):
    """GRU layer (Keras' default ``reset_after=True``, which is PyTorch's GRU)."""

    _cell = "gru"
    _kind = "gru"


class LSTM(_RecurrentLayer):
    """LSTM layer."""

    _cell = "lstm"
    _kind = "lstm"


# --------------------------------------------------------------------------------- Bidirectional
MERGE_MODES = ("concat", "sum", "mul", "ave", None)


class Bidirectional(Layer):
    """Run ``layer`` forwards and a copy of it backwards (``go_backwards``) and merge their outputs
    (``merge_mode``: ``"concat"``, ``"sum"``, ``"mul"``, ``"ave"`` or None for a list), as Keras'
    ``Bidirectional``. With ``return_state`` the outputs are ``[merged, forward states...,
    backward states...]``."""

    def __init__(self, layer: _RecurrentLayer, merge_mode: Optional[str] = "concat",
                 backward_layer: Optional[_RecurrentLayer] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(layer, _RecurrentLayer):
            raise TypeError(f"Bidirectional: expected a SimpleRNN, GRU or LSTM layer, got {type(layer).__name__}")
        if layer.bidirectional:
            raise ValueError("Bidirectional: expected a layer with bidirectional=False, got bidirectional=True")
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"merge_mode: expected one of {MERGE_MODES}, got {merge_mode!r}")
        self.merge_mode = merge_mode
        self.forward_layer = layer
        if backward_layer is None:
            cfg = dict(layer.get_config())
            cfg.pop("bidirectional", None)
            cfg["go_backwards"] = not layer.go_backwards
            backward_layer = type(layer)(**cfg, name=f"backward_{layer.name}")
        if not isinstance(backward_layer, _RecurrentLayer) or backward_layer.units != layer.units:
            raise ValueError("backward_layer: expected a recurrent layer with the forward layer's units")
        self.backward_layer = backward_layer
        self.return_sequences, self.return_state = layer.return_sequences, layer.return_state
        if self.input_shape is None:
            self.input_shape = layer.input_shape

    def get_config(self) -> Dict[str, Any]:
        return {"layer": {"class": type(self.forward_layer).__name__, "config": self.forward_layer.get_config()},
                "merge_mode": self.merge_mode}

    def _spec(self) -> Optional[Dict[str, Any]]:
        f = self.forward_layer._spec()
        if f is None or self.merge_mode != "concat" or self.backward_layer.get_config() != {
                **self.forward_layer.get_config(), "go_backwards": True}:
            return None
        return {**f, "bidirectional": True}

    def _init_torch(self, rng: np.random.Generator, in_features: int) -> Dict[str, np.ndarray]:
        out = self.forward_layer._init_torch(rng, in_features)
        out.update({k + "_reverse": v for k, v in self.backward_layer._init_torch(rng, in_features).items()})
        return out

    def _sublayers(self) -> List[Layer]:
        return [self.forward_layer, self.backward_layer]

    def _build(self, shapes: List[Tuple[Optional[int], ...]], dtype: np.dtype) -> None:
        for l in self._sublayers():
            if not l.built:
                l._dtype = l._dtype or dtype
                l._build(shapes, dtype)
                l.built = True

    def _output_shapes(self, shapes: List[Tuple[Optional[int], ...]], n_states: int) -> List[Tuple[Optional[int], ...]]:
        half = n_states // 2
        if n_states % 2:
            raise ValueError(f"{self.name}: initial_state: expected the forward states then the backward ones, got {n_states}")
        f = self.forward_layer._output_shapes(shapes, half)
        main = f[0][:-1] + (2 * self.forward_layer.units if self.merge_mode == "concat" else self.forward_layer.units,)
        mains = [f[0], f[0]] if self.merge_mode is None else [main]
        return mains + f[1:] * 2

    def _forward(self, xs: List[np.ndarray], masks: List[Optional[np.ndarray]], training: bool,
                 ctx: Dict[str, Any]) -> Tuple[List[np.ndarray], List[Optional[np.ndarray]], Any]:
        half = (len(xs) - 1) // 2
        fo, _, fc = self.forward_layer._forward([xs[0]] + xs[1:1 + half], masks[:1], training, ctx)
        bo, _, bc = self.backward_layer._forward([xs[0]] + xs[1 + half:], masks[:1], training, ctx)
        a, r = fo[0], bo[0]
        if self.return_sequences:
            r = r[:, ::-1]
        if self.merge_mode == "concat":
            mains = [np.concatenate([a, r], axis=-1)]
        elif self.merge_mode == "sum":
            mains = [a + r]
        elif self.merge_mode == "mul":
            mains = [a * r]
        elif self.merge_mode == "ave":
            mains = [(a + r) / 2]
        else:
            mains = [a, r]
        outs = mains + fo[1:] + bo[1:]
        m = masks[0] if self.return_sequences else None
        return outs, [m] * len(outs), (fc, bc, a, r, half, len(fo) - 1)

    def _backward(self, cache: Any, douts: List[Optional[np.ndarray]]) -> List[Optional[np.ndarray]]:
        fc, bc, a, r, half, ns = cache
        n_main = 2 if self.merge_mode is None else 1
        d = douts[0]
        da = dr = None
        if self.merge_mode is None:
            da, dr = douts[0], douts[1]
        elif d is not None:
            u = a.shape[-1]
            if self.merge_mode == "concat":
                da, dr = d[..., :u], d[..., u:]
            elif self.merge_mode == "sum":
                da, dr = d, d
            elif self.merge_mode == "mul":
                da, dr = d * r, d * a
            else:
                da, dr = d / 2, d / 2
        if dr is not None and self.return_sequences:
            dr = dr[:, ::-1]
        fst, bst = douts[n_main:n_main + ns], douts[n_main + ns:]
        gf = self.forward_layer._backward(fc, [da] + list(fst))
        gb = self.backward_layer._backward(bc, [dr] + list(bst))
        dx = gf[0] + gb[0]
        return [dx] + gf[1:] + gb[1:]

    def _keras_weights(self, w: Dict[str, np.ndarray]) -> List[np.ndarray]:
        fw = {k: v for k, v in w.items() if not k.endswith("_reverse")}
        bw = {k[:-len("_reverse")]: v for k, v in w.items() if k.endswith("_reverse")}
        return self.forward_layer._keras_weights(fw) + self.backward_layer._keras_weights(bw)

    def _from_keras(self, arrays: List[np.ndarray]) -> Dict[str, np.ndarray]:
        out = self.forward_layer._from_keras(arrays[:3])
        out.update({k + "_reverse": v for k, v in self.backward_layer._from_keras(arrays[3:]).items()})
        return out

    def _torch_weights(self) -> Dict[str, np.ndarray]:
        if self._owner is not None:
            return self._owner._layer_state(self)
        out = self.forward_layer._torch_weights()
        out.update({k + "_reverse": v for k, v in self.backward_layer._torch_weights().items()})
        return out

    def _load_torch(self, w: Dict[str, np.ndarray]) -> None:
        if self._owner is not None:
            self._owner._load_layer_state(self, w)
            return
        self.forward_layer._load_torch({k: v for k, v in w.items() if not k.endswith("_reverse")})
        self.backward_layer._load_torch({k[:-len("_reverse")]: v for k, v in w.items() if k.endswith("_reverse")})

    def reset_states(self) -> None:
        self.forward_layer.reset_states()
        self.backward_layer.reset_states()


def layers_state(layers: Sequence[Layer]) -> Dict[str, np.ndarray]:
    """``{"layers.{i}.{PyTorch name}": copy}`` over ``layers`` (a model's ``state_dict``)."""
    return {f"layers.{i}.{k}": v for i, l in enumerate(layers) for k, v in l._torch_weights().items()}


def load_layers_state(layers: Sequence[Layer], weights: Dict[str, Any]) -> None:
    """Replace the weights of ``layers`` from :func:`layers_state`'s names (all of them, same
    shapes, finite; nothing changes on error)."""
    from .._rnnrs import NonFiniteError
    mine = layers_state(layers)
    missing, extra = sorted(set(mine) - set(weights)), sorted(set(weights) - set(mine))
    if missing or extra:
        raise ValueError(f"load_state_dict: expected the entries {sorted(mine)}, got missing {missing}, unexpected {extra}")
    for k, v in weights.items():
        if np.shape(v) != mine[k].shape:
            raise ValueError(f"load_state_dict: {k}: expected shape {mine[k].shape}, got {np.shape(v)}")
        if not np.all(np.isfinite(v)):
            raise NonFiniteError(f"{k}: contains NaN or infinity")
    for i, l in enumerate(layers):
        prefix = f"layers.{i}."
        part = {k[len(prefix):]: np.asarray(v) for k, v in weights.items() if k.startswith(prefix)}
        if part:
            l._load_torch(part)


LAYER_CLASSES = {c.__name__: c for c in (Embedding, SimpleRNN, GRU, LSTM, Dense, Dropout, Masking, RepeatVector,
                                         TimeDistributed, Bidirectional, InputLayer)}


def from_config(entry: Dict[str, Any]) -> Layer:
    """A layer from ``{"class": name, "config": {...}}`` (what models save)."""
    cls = LAYER_CLASSES.get(entry["class"])
    if cls is None:
        raise ValueError(f"unknown layer class {entry['class']!r}")
    cfg = dict(entry["config"])
    if cls in (TimeDistributed, Bidirectional):
        cfg["layer"] = from_config(cfg["layer"])
    return cls(**cfg)

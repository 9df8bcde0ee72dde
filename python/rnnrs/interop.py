"""Weights in and out of PyTorch and Keras.

rnnrs layers already name, shape and order their parameters exactly like ``torch.nn.RNN/GRU/LSTM``
(``weight_ih_l{k}`` ``(G*H, I)``, ``weight_hh_l{k}`` ``(G*H, H)``, ``bias_ih_l{k}``/``bias_hh_l{k}``
``(G*H,)``, ``..._reverse`` for the reverse direction; gates LSTM ``i, f, g, o``, GRU ``r, z, n``;
``G`` = 4 for LSTM, 3 for GRU, 1 for RNN), so ``layer.load_state_dict(module.state_dict())`` and
``module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})`` need no
renaming or reordering. This module adds:

* :func:`from_torch` / :func:`to_torch`: build the equivalent layer (configuration and weights) from a
  ``torch.nn.RNN/GRU/LSTM`` module, or the equivalent module from an rnnrs layer. Also reachable as
  ``rnnrs.LSTM.from_torch(module)`` and ``layer.to_torch()``.
* :func:`from_keras`: build a layer from Keras weight arrays (``layer.get_weights()`` of
  ``SimpleRNN``/``GRU``/``LSTM``, optionally wrapped in ``Bidirectional``) — no TensorFlow needed, the
  arrays are converted with NumPy. Also reachable as ``rnnrs.LSTM.from_keras(weights)``.
  :func:`to_keras` goes the other way (arrays for ``keras_layer.set_weights``).

PyTorch is optional: it is imported only inside :func:`from_torch`/:func:`to_torch` (an ``ImportError``
saying so when it is missing). See ``docs/interop.md`` for examples.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import numpy as np

from .layers import GRU, LSTM, RNN, _Recurrent, _dtype_name

__all__ = ["from_torch", "to_torch", "from_keras", "to_keras", "KERAS_CELLS"]

#: What the converters return: the rnnrs class matching the source's kind.
AnyLayer = Union[RNN, GRU, LSTM]

#: ``cell`` names accepted by :func:`from_keras` and the Keras layer each one reads.
KERAS_CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "SimpleRNN", "simple_rnn": "SimpleRNN", "simplernn": "SimpleRNN"}

_TORCH_DTYPES = ("float32", "float64")


def _torch() -> Any:
    try:
        torch = importlib.import_module("torch")  # lazily, and untyped: torch is optional
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise ImportError("rnnrs.interop: this function needs PyTorch (pip install torch); "
                          "rnnrs itself does not depend on it") from e
    return torch


def _kind(cls: type) -> str:
    """``"lstm"``, ``"gru"`` or ``"rnn"`` for an rnnrs layer class (GRU subclasses RNN: check it first)."""
    if issubclass(cls, LSTM):
        return "lstm"
    if issubclass(cls, GRU):
        return "gru"
    if issubclass(cls, RNN):
        return "rnn"
    raise TypeError(f"expected rnnrs.RNN, rnnrs.GRU or rnnrs.LSTM, got {cls.__name__}")


_LAYER_CLASSES: Dict[str, Type[_Recurrent]] = {"lstm": LSTM, "gru": GRU, "rnn": RNN}


_NAMES = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
_KERAS_NAMES = {"lstm": "LSTM", "gru": "GRU", "rnn": "SimpleRNN"}


def _check_expected(expected: Optional[type], kind: str, what: str) -> None:
    """``TypeError`` when ``rnnrs.X.from_...`` is given the weights of another kind of layer."""
    if expected is None or expected is _Recurrent:
        return
    want = _kind(expected)
    if want != kind:
        src, names = ("torch.nn.", _NAMES) if what == "from_torch" else ("Keras ", _KERAS_NAMES)
        raise TypeError(f"{expected.__name__}.{what}: expected a {src}{names[want]}, got a {src}{names[kind]} "
                        f"(use rnnrs.{_NAMES[kind]}.{what})")


# ------------------------------------------------------------------------------------------ PyTorch
def from_torch(module: Any, dtype: Any = None, *, seed: int = 0,
               expected: Optional[type] = None) -> AnyLayer:
    """The rnnrs layer equivalent to ``module``, a ``torch.nn.RNN``, ``GRU`` or ``LSTM``.

    Reads ``input_size``, ``hidden_size``, ``num_layers``, ``bidirectional``, ``batch_first``,
    ``dropout``, ``nonlinearity`` (RNN) and the training mode from ``module`` and copies its weights
    (to CPU, as NumPy arrays of ``dtype``).

    Args:
        module: a ``torch.nn.RNN``, ``torch.nn.GRU`` or ``torch.nn.LSTM`` (any device).
        dtype: ``numpy.float32`` or ``numpy.float64``; None (default) keeps the module's dtype, which
            must then be ``torch.float32`` or ``torch.float64``.
        seed: seed of the layer's dropout stream (dropout masks never match PyTorch's).
        expected: the rnnrs class asking (``rnnrs.LSTM.from_torch`` passes ``LSTM``); a module of
            another kind raises ``TypeError``.

    Raises:
        TypeError: not a torch RNN/GRU/LSTM, of the wrong kind, or an unsupported dtype.
        ValueError: ``proj_size > 0`` (LSTM with projections) or ``bias=False``, which rnnrs layers
            cannot express, or ``dropout`` outside ``[0, 1)``.
    """
    torch = _torch()
    nn = torch.nn
    if isinstance(module, nn.LSTM):
        kind = "lstm"
    elif isinstance(module, nn.GRU):
        kind = "gru"
    elif isinstance(module, nn.RNN):
        kind = "rnn"
    else:
        raise TypeError(f"from_torch: expected a torch.nn.RNN, torch.nn.GRU or torch.nn.LSTM, "
                        f"got {type(module).__name__}")
    _check_expected(expected, kind, "from_torch")
    proj = int(getattr(module, "proj_size", 0) or 0)
    if proj > 0:
        raise ValueError(f"from_torch: expected proj_size=0, got proj_size={proj} "
                         "(LSTM projections are not supported by rnnrs)")
    if not module.bias:
        raise ValueError("from_torch: expected bias=True, got bias=False "
                         "(rnnrs layers always have bias_ih and bias_hh)")
    if dtype is None:
        tdt = str(next(module.parameters()).dtype).removeprefix("torch.")
        if tdt not in _TORCH_DTYPES:
            raise TypeError(f"from_torch: expected a module of torch.float32 or torch.float64, got torch.{tdt} "
                            "(pass dtype=numpy.float32 or numpy.float64 to convert)")
        dtype = np.dtype(tdt)
    dtype = np.dtype(_dtype_name(dtype))
    kwargs: Dict[str, Any] = dict(
        bidirectional=bool(module.bidirectional), dropout=float(module.dropout),
        batch_first=bool(module.batch_first), dtype=dtype, seed=seed,
    )
    layer: _Recurrent
    if kind == "rnn":
        layer = RNN(module.input_size, module.hidden_size, module.num_layers,
                    nonlinearity=module.nonlinearity, **kwargs)
    else:
        layer = _LAYER_CLASSES[kind](module.input_size, module.hidden_size, module.num_layers, **kwargs)
    state = {k: v.detach().to("cpu").numpy() for k, v in module.state_dict().items()}
    layer.load_state_dict(state)
    layer.train(bool(module.training))
    return layer  # type: ignore[return-value]


def to_torch(layer: _Recurrent, device: Any = None) -> Any:
    """The ``torch.nn.RNN``/``GRU``/``LSTM`` equivalent to ``layer``: same configuration
    (``batch_first``, ``dropout``, ``bidirectional``, ``nonlinearity``), weights, dtype
    (``torch.float32``/``torch.float64``) and training mode, on ``device`` (default CPU).
    The module's parameters are copies: later changes to either side do not reach the other."""
    torch = _torch()
    if not isinstance(layer, _Recurrent):
        raise TypeError(f"to_torch: expected an rnnrs.RNN, GRU or LSTM, got {type(layer).__name__}")
    kind = _kind(type(layer))
    tdtype = getattr(torch, layer.dtype.name)
    kwargs: Dict[str, Any] = dict(
        num_layers=layer.num_layers, bias=True, batch_first=layer.batch_first, dropout=layer.dropout,
        bidirectional=layer.bidirectional, dtype=tdtype, device=device,
    )
    if kind == "lstm":
        module = torch.nn.LSTM(layer.input_size, layer.hidden_size, **kwargs)
    elif kind == "gru":
        module = torch.nn.GRU(layer.input_size, layer.hidden_size, **kwargs)
    else:
        module = torch.nn.RNN(layer.input_size, layer.hidden_size, nonlinearity=getattr(layer, "nonlinearity", "tanh"),
                              **kwargs)
    with torch.no_grad():
        module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in layer.state_dict().items()},
                               strict=True)
    module.train(layer.training)
    return module


# -------------------------------------------------------------------------------------------- Keras
def _as_layers(weights: Any) -> List[List[np.ndarray]]:
    """``weights`` as a list (per layer) of lists of float64 arrays; a single layer's list is accepted."""
    if isinstance(weights, np.ndarray) or not isinstance(weights, (list, tuple)) or not weights:
        raise TypeError("from_keras: expected weights as a non-empty list (one entry per layer) of "
                        f"Keras get_weights() lists, got {type(weights).__name__}")
    if all(isinstance(w, np.ndarray) for w in weights):  # one layer's get_weights()
        weights = [weights]
    layers = []
    for k, lw in enumerate(weights):
        if isinstance(lw, np.ndarray) or not isinstance(lw, (list, tuple)):
            raise TypeError(f"from_keras: weights[{k}]: expected a list of arrays (the layer's get_weights()), "
                            f"got {type(lw).__name__}")
        arrays = []
        for j, a in enumerate(lw):
            arr = np.asarray(a)
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise TypeError(f"from_keras: weights[{k}][{j}]: expected a numeric array, got dtype {arr.dtype}")
            arrays.append(arr.astype(np.float64))
        layers.append(arrays)
    return layers


def _split_directions(k: int, arrays: List[np.ndarray], bidirectional: bool,
                      ) -> List[Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]]:
    """``[(kernel, recurrent_kernel, bias or None)]`` per direction of layer ``k``."""
    n = len(arrays)
    dirs = 2 if bidirectional else 1
    if n not in (2 * dirs, 3 * dirs):
        want = "6 (or 4 without bias) arrays: forward then backward kernel, recurrent_kernel, bias" if bidirectional \
            else "3 (or 2 without bias) arrays: kernel, recurrent_kernel, bias"
        raise ValueError(f"from_keras: weights[{k}]: expected {want}, got {n} arrays"
                         + ("" if bidirectional or n not in (4, 6) else " (pass bidirectional=True for a "
                                                                       "Bidirectional wrapper)"))
    per = n // dirs
    out = []
    for d in range(dirs):
        part = arrays[d * per:(d + 1) * per]
        out.append((part[0], part[1], part[2] if per == 3 else None))
    return out


def _keras_to_torch_gates(kind: str, m: np.ndarray, hidden: int) -> np.ndarray:
    """Keras columns ``(…, G*H)`` in Keras gate order → PyTorch rows ``(G*H, …)`` in PyTorch order.

    LSTM: Keras ``i, f, c, o`` = PyTorch ``i, f, g, o`` (same order). GRU: Keras ``z, r, h`` →
    PyTorch ``r, z, n``. RNN: one block."""
    if kind == "gru":
        z, r, h = m[..., :hidden], m[..., hidden:2 * hidden], m[..., 2 * hidden:]
        m = np.concatenate([r, z, h], axis=-1)
    return np.ascontiguousarray(m.T) if m.ndim == 2 else np.ascontiguousarray(m)


def from_keras(cell: str, weights: Sequence[Any], *, bidirectional: bool = False, reset_after: bool = True,
               activation: str = "tanh", recurrent_activation: str = "sigmoid", batch_first: bool = True,
               dropout: float = 0.0, dtype: Any = np.float32, seed: int = 0,
               expected: Optional[type] = None) -> AnyLayer:
    """An rnnrs layer from Keras weight arrays, converted with NumPy (no TensorFlow needed).

    Args:
        cell: ``"lstm"`` (Keras ``LSTM``), ``"gru"`` (``GRU``) or ``"rnn"`` (``SimpleRNN``; also
            ``"simple_rnn"``).
        weights: one entry per stacked Keras layer, each that layer's ``get_weights()``:
            ``[kernel (I, G*H), recurrent_kernel (H, G*H), bias]`` with ``bias`` ``(G*H,)``, or
            ``(2, G*H)`` for a GRU with ``reset_after=True`` (row 0 input bias, row 1 recurrent bias);
            ``G`` = 4 (LSTM), 3 (GRU), 1 (SimpleRNN). Without ``bias`` (``use_bias=False``) the rnnrs
            biases are zero (and trainable). A ``Bidirectional`` wrapper's ``get_weights()`` holds the
            forward layer's arrays then the backward layer's (pass ``bidirectional=True``). A single
            layer's list may be passed directly. Layers after the first must take the previous
            layer's output (``I = D*H``) and all layers must have the same ``H``.
        bidirectional: the layers are ``Bidirectional(...)`` with ``merge_mode="concat"``.
        reset_after: the Keras GRU's ``reset_after`` (default True, Keras' default since TF 2).
            ``reset_after=False`` applies the reset gate *before* the recurrent matmul,
            ``tanh(W x + U (r * h))``, which PyTorch's (and rnnrs') GRU, ``tanh(W x + r * (U h + b))``,
            cannot express: ``ValueError``.
        activation: the Keras ``activation``: ``"tanh"``; a SimpleRNN also takes ``"relu"``.
        recurrent_activation: the Keras ``recurrent_activation`` (LSTM and GRU): only
            ``"sigmoid"`` (Keras' default since TF 2; the older ``"hard_sigmoid"`` is refused).
        batch_first: the layer's input layout; True (default) matches Keras' ``(batch, time, features)``.
        dropout: rnnrs dropout between stacked layers in training (Keras' ``dropout`` and
            ``recurrent_dropout`` inside the cell have no rnnrs equivalent and are not read).
        dtype: ``numpy.float32`` (default) or ``numpy.float64``.
        seed: seed of the dropout stream.
        expected: the rnnrs class asking (``rnnrs.LSTM.from_keras`` passes ``LSTM``).

    Returns:
        ``rnnrs.LSTM``, ``rnnrs.GRU`` or ``rnnrs.RNN`` whose outputs equal the Keras model's
        (``return_sequences=True`` output = ``y``, final states = ``h_n``/``c_n``).

    Raises:
        ValueError: an inexpressible configuration (GRU ``reset_after=False``, other activations),
            wrong number of arrays, or inconsistent shapes (the message names the array).
        TypeError: an unknown ``cell`` or non-numeric weights.
    """
    if not isinstance(cell, str) or cell.lower() not in KERAS_CELLS:
        raise TypeError(f"from_keras: cell: expected one of {sorted(KERAS_CELLS)}, got {cell!r}")
    kind = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn"}[KERAS_CELLS[cell.lower()]]
    _check_expected(expected, kind, "from_keras")
    if kind == "gru" and not reset_after:
        raise ValueError("from_keras: a Keras GRU with reset_after=False cannot be expressed: it computes "
                         "tanh(W x + U (r * h)), PyTorch's and rnnrs' GRU compute tanh(W x + b + r * (U h + b_hn)); "
                         "retrain the Keras model with reset_after=True (its default since TensorFlow 2)")
    allowed = ("tanh", "relu") if kind == "rnn" else ("tanh",)
    if activation not in allowed:
        raise ValueError(f"from_keras: activation: expected {' or '.join(map(repr, allowed))} for a Keras "
                         f"{KERAS_CELLS[cell.lower()]}, got {activation!r}")
    if kind != "rnn" and recurrent_activation != "sigmoid":
        raise ValueError(f"from_keras: recurrent_activation: expected 'sigmoid' (PyTorch's gates), "
                         f"got {recurrent_activation!r}")
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    layers = _as_layers(list(weights) if isinstance(weights, tuple) else weights)
    dirs = 2 if bidirectional else 1

    state: Dict[str, np.ndarray] = {}
    input_size = hidden = -1
    for k, arrays in enumerate(layers):
        for d, (kernel, rec, bias) in enumerate(_split_directions(k, arrays, bidirectional)):
            where = f"weights[{k}]" + ("" if not bidirectional else (" forward" if d == 0 else " backward"))
            if rec.ndim != 2 or rec.shape[1] != gates * rec.shape[0]:
                raise ValueError(f"from_keras: {where} recurrent_kernel: expected shape (H, {gates}*H), "
                                 f"got {rec.shape}")
            h = rec.shape[0]
            if hidden == -1:
                hidden = h
            elif h != hidden:
                raise ValueError(f"from_keras: {where}: expected hidden size {hidden} like the first layer "
                                 f"(rnnrs stacks share one hidden_size), got {h}")
            want_in = None if k == 0 else dirs * hidden
            if kernel.ndim != 2 or kernel.shape[1] != gates * h or (want_in is not None and kernel.shape[0] != want_in):
                shape = f"({'I' if want_in is None else want_in}, {gates * h})"
                raise ValueError(f"from_keras: {where} kernel: expected shape {shape}, got {kernel.shape}")
            if k == 0:
                if input_size == -1:
                    input_size = kernel.shape[0]
                elif kernel.shape[0] != input_size:
                    raise ValueError(f"from_keras: {where} kernel: expected shape ({input_size}, {gates * h}) "
                                     f"like the forward kernel, got {kernel.shape}")
            if bias is None:
                b_ih, b_hh = np.zeros(gates * h), np.zeros(gates * h)
            elif kind == "gru":
                if bias.shape == (gates * h,):
                    raise ValueError(f"from_keras: {where} bias: expected shape (2, {gates * h}) (reset_after=True), "
                                     f"got {bias.shape}, the bias of a GRU with reset_after=False, which cannot "
                                     "be expressed (see reset_after)")
                if bias.shape != (2, gates * h):
                    raise ValueError(f"from_keras: {where} bias: expected shape (2, {gates * h}), got {bias.shape}")
                b_ih, b_hh = bias[0], bias[1]
            else:
                if bias.shape != (gates * h,):
                    raise ValueError(f"from_keras: {where} bias: expected shape ({gates * h},), got {bias.shape}")
                b_ih, b_hh = bias, np.zeros(gates * h)
            sfx = f"l{k}" + ("_reverse" if d == 1 else "")
            state[f"weight_ih_{sfx}"] = _keras_to_torch_gates(kind, kernel, h)
            state[f"weight_hh_{sfx}"] = _keras_to_torch_gates(kind, rec, h)
            state[f"bias_ih_{sfx}"] = _keras_to_torch_gates(kind, b_ih, h)
            state[f"bias_hh_{sfx}"] = _keras_to_torch_gates(kind, b_hh, h)

    kwargs: Dict[str, Any] = dict(bidirectional=bidirectional, dropout=dropout, batch_first=batch_first,
                                  dtype=dtype, seed=seed)
    layer: _Recurrent
    if kind == "rnn":
        layer = RNN(input_size, hidden, len(layers), nonlinearity=activation, **kwargs)
    else:
        layer = _LAYER_CLASSES[kind](input_size, hidden, len(layers), **kwargs)
    layer.load_state_dict(state)
    return layer  # type: ignore[return-value]


def to_keras(layer: _Recurrent) -> List[List[np.ndarray]]:
    """The inverse of :func:`from_keras`: per layer, the Keras ``get_weights()`` list (forward then
    backward arrays when bidirectional) of float64 arrays; a GRU's bias is ``(2, 3H)``
    (``reset_after=True``). Use with ``keras_layer.set_weights(...)``."""
    if not isinstance(layer, _Recurrent):
        raise TypeError(f"to_keras: expected an rnnrs.RNN, GRU or LSTM, got {type(layer).__name__}")
    kind = _kind(type(layer))
    h = layer.hidden_size
    sd = {k: np.asarray(v, dtype=np.float64) for k, v in layer.state_dict().items()}

    def back(m: np.ndarray, transpose: bool = True) -> np.ndarray:
        """PyTorch rows ``(G*H, …)`` → Keras columns ``(…, G*H)``, gates in Keras' order."""
        m = m.T if transpose else m
        if kind == "gru":
            r, z, n = m[..., :h], m[..., h:2 * h], m[..., 2 * h:]
            m = np.concatenate([z, r, n], axis=-1)
        return np.ascontiguousarray(m)

    out = []
    for k in range(layer.num_layers):
        arrays: List[np.ndarray] = []
        for d in range(layer.num_directions):
            sfx = f"l{k}" + ("_reverse" if d == 1 else "")
            b_ih, b_hh = sd[f"bias_ih_{sfx}"], sd[f"bias_hh_{sfx}"]
            bias = back(np.stack([b_ih, b_hh]), transpose=False) if kind == "gru" else back(b_ih + b_hh, False)
            arrays += [back(sd[f"weight_ih_{sfx}"]), back(sd[f"weight_hh_{sfx}"]), bias]
        out.append(arrays)
    return out

"""Recurrent layers with PyTorch's conventions: :class:`RNN`, :class:`GRU` and :class:`LSTM`.

All three are stacks of ``num_layers`` layers, optionally bidirectional, computed by the Rust core
with the GIL released. Shapes (``T`` time steps, ``B`` batch, ``I`` input features, ``H`` hidden
features, ``L`` layers, ``D`` = 2 if bidirectional else 1):

* input ``x``: ``(T, B, I)``, or ``(B, T, I)`` with ``batch_first=True``;
* output ``y``: ``(T, B, D*H)`` (or ``(B, T, D*H)``), directions concatenated ``[forward, reverse]``;
* states ``h0``/``h_n`` (and ``c0``/``c_n`` for LSTM): ``(L*D, B, H)`` — never batch-first.

Variable-length batches need no packing: pass ``lengths`` (``B`` integers in ``[0, T]``, any order)
with a padded batch. Sequence ``b`` is ``x[:lengths[b], b]``; its outputs past its end are zero, its
final state is the state after its last true step (the reverse direction starts there), and the next
``backward`` ignores the padding (``dy`` there has no effect, ``dx`` there is zero). Every sequence
gets the results it would get alone.

With ``stateful=True`` a layer carries its final state into the next ``forward`` (when no initial
state is passed), for streaming a long sequence in chunks or one step at a time: feeding a sequence
in chunks gives the same outputs as feeding it whole. The carried state is *detached*: ``backward``
of a chunk stops at the chunk's start (truncated BPTT). :meth:`reset_states` forgets the state;
:attr:`states` reads it (and can set it).

Parameters are named and shaped exactly like ``torch.nn.RNN/GRU/LSTM`` (``weight_ih_l0``,
``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``, ``..._reverse``), gates in PyTorch's order (LSTM
``i, f, g, o``; GRU ``r, z, n``), initialised ``U(-1/sqrt(H), 1/sqrt(H))`` from ``seed``, or by
``init=`` (input weights; ``"pytorch"``, ``"normal"`` with ``init_std``, ``"xavier_uniform"``,
``"xavier_normal"``, ``"kaiming_uniform"``, ``"orthogonal"``: each gate block), ``recurrent_init=``
(recurrent weights; default as ``init``) and ``forget_bias=`` (LSTM: ``b_ih_f + b_hh_f``); biases
are zero unless ``init="pytorch"``.
Gradients accumulate across ``backward`` calls until :meth:`zero_grad`, as in PyTorch.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple

import numpy as np

from . import _rnnrs
from ._finite import at_user_index
from ._rnnrs import NonFiniteError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["RNN", "GRU", "LSTM"]

_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float64): "float64"}


def _dtype_name(dtype: Any) -> str:
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"dtype: expected numpy.float32 or numpy.float64, got {dtype!r}") from e
    if dt not in _DTYPES:
        raise TypeError(f"dtype: expected numpy.float32 or numpy.float64, got {dt}")
    return _DTYPES[dt]



def _state_items(state_dict: Any, dtype: Any) -> list:
    """``[(name, C-contiguous array of dtype)]`` from a ``state_dict`` mapping, for the core's
    ``load_state_dict`` (``TypeError`` for a non-mapping, a non-str key or a non-numeric value)."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict: expected a mapping of name -> array, got {type(state_dict).__name__}")
    items = []
    for k, v in state_dict.items():
        if not isinstance(k, str):
            raise TypeError(f"state_dict: expected str keys, got {type(k).__name__} {k!r}")
        try:
            arr = np.require(np.asarray(v), dtype, ["C_CONTIGUOUS", "ALIGNED"])
        except (TypeError, ValueError) as e:
            raise TypeError(f"{k}: expected a numeric array, got {type(v).__name__}") from e
        items.append((k, arr))
    return items

def _check_int(name: str, value: Any, minimum: int, limit: int = 2**63) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    if value >= limit:
        raise ValueError(f"{name}: expected an integer in [{minimum}, 2**{limit.bit_length() - 1}), got {value}")
    return value


def _check_seed(seed: Any) -> int:
    return _check_int("seed", seed, 0, 2**64)

INITS = ("pytorch", "normal", "xavier_uniform", "xavier_normal", "kaiming_uniform", "orthogonal")
"""Initialiser names (``init=``/``recurrent_init=``); see :func:`_apply_init`."""


def _apply_init(core: Any, init: Any, recurrent_init: Any, init_std: Any, forget_bias: Any, seed: int) -> None:
    """Re-draw ``core``'s parameters with the named initialisers (the core checks names and values):
    ``init`` for input weights (and the embedding and output layer of a model), ``recurrent_init``
    (None: as ``init``) for recurrent weights; biases keep PyTorch's draw with ``init="pytorch"``
    and are zero otherwise; ``init_std`` is the standard deviation of ``"normal"``; ``forget_bias``
    (LSTM) sets the forget gate's total bias ``b_ih_f + b_hh_f``."""
    for name, v, optional in (("init", init, False), ("recurrent_init", recurrent_init, True)):
        if not (isinstance(v, str) or (optional and v is None)):
            raise TypeError(f"{name}: expected one of {list(INITS)}, got {type(v).__name__} {v!r}")
    for name, v, optional in (("init_std", init_std, False), ("forget_bias", forget_bias, True)):
        if not ((isinstance(v, numbers.Real) and not isinstance(v, bool)) or (optional and v is None)):
            raise TypeError(f"{name}: expected a number, got {type(v).__name__} {v!r}")
    if init == "pytorch" and recurrent_init in (None, "pytorch") and forget_bias is None:
        if not (math.isfinite(init_std) and init_std > 0):
            raise ValueError(f"init_std: expected a finite number > 0, got {init_std!r}")
        return  # PyTorch's draw, made when the core object was created
    core.init_parameters(init, recurrent_init, float(init_std), None if forget_bias is None else float(forget_bias),
                         seed)



class _Parameters:
    """``state_dict``/``load_state_dict``/``grads``/``zero_grad``/``num_parameters`` of a layer or
    cell whose compiled part is ``self._core`` (PyTorch's names and shapes, the object's dtype)."""

    dtype: np.dtype[Any]
    _core: Any

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of the parameters: ``{name: array}`` with PyTorch's names, shapes and order, in
        the object's dtype. Layers: ``weight_ih_l{k}`` ``(G*H, I)`` for ``k = 0`` (``(G*H, D*H)``
        above), ``weight_hh_l{k}`` ``(G*H, H)``, ``bias_ih_l{k}``/``bias_hh_l{k}`` ``(G*H,)``, each
        also ``..._reverse`` when bidirectional; cells: the same without the ``_l0`` (``G`` = 4 for
        LSTM, 3 for GRU, 1 for RNN)."""
        return dict(self._core.state_dict())

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Replace every parameter (all names exactly once, same shapes). Values are cast to the
        object's dtype. Raises ``ValueError`` naming a missing, unexpected or mis-shaped entry; on
        error nothing changes. What a training forward kept for ``backward`` is dropped."""
        self._core.load_state_dict(_state_items(state_dict, self.dtype))
        self._forget_forward()

    def _forget_forward(self) -> None:
        """Drop what was kept for ``backward`` (the weights it was recorded with are gone)."""

    def grads(self) -> Dict[str, np.ndarray]:
        """Copies of the accumulated gradients, same keys, shapes and dtype as :meth:`state_dict`."""
        return dict(self._core.grads())

    def zero_grad(self) -> None:
        """Set every accumulated gradient to zero."""
        self._core.zero_grad()

    def num_parameters(self) -> int:
        """Number of trainable scalars."""
        return sum(a.size for a in self.state_dict().values())


class _Recurrent(_Parameters):
    """Shared implementation of RNN, GRU and LSTM (see the module docstring for shapes)."""

    _cell = ""
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    batch_first: bool
    dropout: float
    seed: int
    training: bool
    dtype: np.dtype[Any]
    stateful: bool
    _core: _rnnrs.Recurrent
    _last_tb: Optional[Tuple[int, int]]
    _carried: Optional[Tuple[np.ndarray, Optional[np.ndarray]]]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        dropout: float = 0.0,
        batch_first: bool = False,
        stateful: bool = False,
        dtype: Any = np.float32,
        seed: int = 0,
        init: str = "pytorch",
        recurrent_init: Optional[str] = None,
        init_std: float = 0.01,
        forget_bias: Optional[float] = None,
        _cell: Optional[str] = None,
    ) -> None:
        input_size = _check_int("input_size", input_size, 1)
        hidden_size = _check_int("hidden_size", hidden_size, 1)
        num_layers = _check_int("num_layers", num_layers, 1)
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
            raise TypeError(f"dropout: expected a float in [0, 1), got {type(dropout).__name__} {dropout!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a float in [0, 1), got {dropout}")
        self.dtype = np.dtype(_dtype_name(dtype))
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bidirectional, self.batch_first = bool(bidirectional), bool(batch_first)
        self.dropout, self.seed = float(dropout), _check_seed(seed)
        self.training = True
        self.stateful = bool(stateful)
        if self.stateful and self.bidirectional:
            raise ValueError("stateful: expected a unidirectional layer, got bidirectional=True "
                             "(a reverse pass cannot be continued across chunks)")
        self._carried = None
        self._core = _rnnrs.Recurrent(
            _cell or self._cell, input_size, hidden_size, num_layers, self.bidirectional, self.dropout,
            _DTYPES[self.dtype], self.seed,
        )
        _apply_init(self._core, init, recurrent_init, init_std, forget_bias, self.seed)

    # ----------------------------------------------------------------------------------------------
    @property
    def num_directions(self) -> int:
        """``D``: 2 if the layer is bidirectional, else 1."""
        return 2 if self.bidirectional else 1

    def _state_shape(self, batch: int) -> Tuple[int, int, int]:
        return (self.num_layers * self.num_directions, batch, self.hidden_size)

    def _array(self, name: str, a: Any, shape_doc: str) -> np.ndarray:
        if not isinstance(a, np.ndarray):
            if isinstance(a, (list, tuple)):
                a = np.asarray(a, dtype=self.dtype)
            else:
                raise TypeError(f"{name}: expected a numpy.ndarray {shape_doc} of {self.dtype}, got {type(a).__name__}")
        if a.dtype != self.dtype:
            raise TypeError(f"{name}: expected dtype {self.dtype} (the layer's dtype), got {a.dtype}")
        if a.ndim != 3:
            raise ValueError(f"{name}: expected a 3-D array {shape_doc}, got shape {a.shape}")
        return a if a.flags.aligned else a.copy()  # (the core cannot view misaligned data)

    def _seq(self, name: str, a: Any, features: int) -> np.ndarray:
        doc = f"(batch, seq_len, {features})" if self.batch_first else f"(seq_len, batch, {features})"
        a = self._array(name, a, doc)
        if a.shape[2] != features:
            raise ValueError(f"{name}: expected shape {doc}, got {a.shape}")
        return a.swapaxes(0, 1) if self.batch_first else a

    def _state(self, name: str, a: Any, batch: int) -> Optional[np.ndarray]:
        if a is None:
            return None
        shape = self._state_shape(batch)
        a = self._array(name, a, str(shape))
        if a.shape != shape:
            raise ValueError(f"{name}: expected shape {shape} (num_layers*num_directions, batch, hidden_size), got {a.shape}")
        return a

    def _out(self, y: np.ndarray) -> np.ndarray:
        return y.swapaxes(0, 1) if self.batch_first else y

    def _lengths(self, lengths: Any, t: int, b: int) -> Optional[np.ndarray]:
        if lengths is None:
            return None
        a = np.asarray(lengths)
        if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"lengths: expected integers, got dtype {a.dtype}")
        if a.shape != (b,):
            raise ValueError(f"lengths: expected shape ({b},) (one length per sequence), got {a.shape}")
        if a.size and (a.min() < 0 or a.max() > t):
            bad = int(a[(a < 0) | (a > t)][0])
            raise ValueError(f"lengths: expected every length in [0, {t}] (seq_len), got {bad}")
        return np.ascontiguousarray(a, dtype=np.int64)

    def _forward(self, x: Any, h0: Any, c0: Any, lengths: Any = None) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        x = self._seq("x", x, self.input_size)
        t, b = x.shape[0], x.shape[1]
        h0, c0 = self._state("h0", h0, b), self._state("c0", c0, b)
        lens = self._lengths(lengths, t, b)
        if self.stateful and h0 is None and c0 is None and self._carried is not None:
            if self._carried[0].shape[1] != b:
                raise ValueError(f"x: expected batch {self._carried[0].shape[1]} (the carried state's; "
                                 f"call reset_states() to change it), got {b}")
            h0, c0 = self._carried
        try:
            y, h_n, c_n = self._core.forward(x, h0, c0, self.training, lens)
        except NonFiniteError as e:  # (the core saw x time-major: report the index in the user's x)
            raise at_user_index(e, "x", self._out(x)) from None
        self._last_tb = (t, b) if self.training else None
        if self.stateful:
            self._carried = (h_n.copy(), None if c_n is None else c_n.copy())
        return self._out(y), h_n, c_n

    def reset_states(self) -> None:
        """Forget the carried state (``stateful=True``): the next forward starts from zeros."""
        self._carried = None

    @property
    def states(self) -> Any:
        """The carried state (``stateful=True``): ``h (L*D, B, H)`` (RNN/GRU) or ``(h, c)`` (LSTM),
        arrays of the layer's dtype (float32/float64), or None before the first forward / after
        :meth:`reset_states`. Copies, detached from any graph. Assign an array (or pair) of that
        shape and dtype to set it, or None to reset."""
        if self._carried is None:
            return None
        h, c = self._carried
        return h.copy() if c is None else (h.copy(), c.copy())

    @states.setter
    def states(self, value: Any) -> None:
        if value is None:
            self._carried = None
            return
        h, c = _pair("states", value) if self._cell == "lstm" else (value, None)
        h = self._array("states", h, "(L*D, B, H)")
        b = h.shape[1]
        h = self._state("states", h, b)
        c = self._state("states", c, b) if self._cell == "lstm" else None
        if self._cell == "lstm" and c is None:
            raise TypeError("states: expected a pair (h, c) for an LSTM")
        assert h is not None
        self._carried = (h.copy(), None if c is None else c.copy())

    def _backward(self, dy: Any, dh_n: Any, dc_n: Any) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        if not self.training:
            raise ValueError("backward: expected a forward in training mode, got a layer in eval mode (call train())")
        last_tb: Optional[Tuple[int, int]] = getattr(self, "_last_tb", None)
        if last_tb is None:
            raise ValueError("backward: expected a preceding forward in training mode, got none")
        t, b = last_tb
        dh = self.num_directions * self.hidden_size
        expected = (b, t, dh) if self.batch_first else (t, b, dh)
        dy = self._array("dy", dy, str(expected))
        if dy.shape != expected:
            raise ValueError(f"dy: expected shape {expected} (the shape of the last forward's output), got {dy.shape}")
        dy = dy.swapaxes(0, 1) if self.batch_first else dy
        dh_n, dc_n = self._state("dh_n", dh_n, b), self._state("dc_n", dc_n, b)
        try:
            dx, dh0, dc0 = self._core.backward(dy, dh_n, dc_n)
        except NonFiniteError as e:
            raise at_user_index(e, "dy", self._out(dy)) from None
        return self._out(dx), dh0, dc0

    # ----------------------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Self:
        """Training mode (dropout on; forward keeps what backward needs). Returns ``self``."""
        self.training = bool(mode)
        if not self.training:
            self._core.clear_tape()
            self._last_tb = None
        return self

    def eval(self) -> Self:
        """Inference mode: no dropout, nothing kept for backward. Returns ``self``."""
        return self.train(False)

    # ------------------------------------------------------------------- interchange (see rnnrs.interop)
    @classmethod
    def from_torch(cls, module: Any, dtype: Any = None, *, seed: int = 0) -> Self:
        """The layer equivalent to ``module`` (a ``torch.nn.RNN``/``GRU``/``LSTM`` of this class's
        kind): its configuration, weights and training mode; ``dtype`` None keeps the module's
        (float32 or float64). ``ValueError`` for ``proj_size > 0`` or ``bias=False``.
        See :func:`rnnrs.interop.from_torch`."""
        from . import interop
        return interop.from_torch(module, dtype, seed=seed, expected=cls)  # type: ignore[return-value]

    def to_torch(self, device: Any = None) -> Any:
        """An equivalent ``torch.nn.RNN``/``GRU``/``LSTM`` holding copies of the weights (same
        dtype, ``batch_first``, ``dropout``, training mode). See :func:`rnnrs.interop.to_torch`."""
        from . import interop
        return interop.to_torch(self, device)

    @classmethod
    def from_keras(cls, weights: Any, **kwargs: Any) -> Self:
        """The layer from Keras ``get_weights()`` arrays, one list per stacked layer (kernels
        ``(I, G*H)``, transposed and gate-reordered here). Keyword arguments as
        :func:`rnnrs.interop.from_keras` (``bidirectional``, ``reset_after``, ``activation``,
        ``batch_first=True``, ``dtype``, ...)."""
        from . import interop
        cell = "lstm" if issubclass(cls, LSTM) else "gru" if issubclass(cls, GRU) else "rnn"
        return interop.from_keras(cell, weights, expected=cls, **kwargs)  # type: ignore[return-value]

    def export_onnx(self, path: Any, opset: Optional[int] = None, *, dtype: str = "float32",
                    padding: str = "post") -> Any:
        """Write the layer to ``path`` as an ONNX graph of ONNX's own recurrent operators, inputs
        ``x``, ``h0`` (``c0``), ``sequence_lens`` and outputs ``y``, ``h_n`` (``c_n``) as :meth:`forward`;
        ``dtype="float16"`` stores the weights in half precision. Needs ``pip install 'rnnrs[onnx]'``.
        See :func:`rnnrs.onnx_export.export_layer` and ``docs/onnx.md``."""
        from .onnx_export import export_layer
        return export_layer(self, path, opset, dtype=dtype, padding=padding)

    def __repr__(self) -> str:
        extra = "".join(
            f", {k}={v!r}" for k, v in (("bidirectional", self.bidirectional), ("dropout", self.dropout),
                                        ("batch_first", self.batch_first), ("stateful", self.stateful)) if v
        )
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
                f"{extra}, dtype={self.dtype.name})")


class RNN(_Recurrent):
    """Elman RNN: ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``, ``act`` = ``tanh`` or ``relu``.

    ``y, h_n = rnn.forward(x, h0=None)``; ``dx, dh0 = rnn.backward(dy, dh_n=None)``.
    See the module docstring for shapes; every float array in or out has the layer's ``dtype``
    (float32 or float64; another dtype raises ``TypeError``).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, nonlinearity: str = "tanh",
                 **kwargs: Any) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, _cell=f"rnn_{nonlinearity}", **kwargs)

    def forward(self, x: Any, h0: Any = None, lengths: Any = None) -> Tuple[np.ndarray, np.ndarray]:
        """``x (T, B, I)`` (``(B, T, I)`` if ``batch_first``) and optional ``h0 (L*D, B, H)`` →
        ``(y (T, B, D*H), h_n (L*D, B, H))`` (``y`` batch-first if ``batch_first``), all float32/float64
        of the layer's dtype; ``lengths (B,)`` ints for a padded batch (see the module docstring)."""
        y, h_n, _ = self._forward(x, h0, None, lengths)
        return y, h_n

    def backward(self, dy: Any, dh_n: Any = None) -> Tuple[np.ndarray, np.ndarray]:
        """Backward of the last training-mode forward: ``dy (T, B, D*H)`` (batch-first if
        ``batch_first``), ``dh_n (L*D, B, H)`` or None → ``(dx (T, B, I), dh0 (L*D, B, H))``, all of
        the layer's dtype. Parameter gradients are added into :meth:`grads`."""
        dx, dh0, _ = self._backward(dy, dh_n, None)
        return dx, dh0

    __call__ = forward


class GRU(RNN):
    """GRU, gates ``r, z, n``: ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``,
    ``h' = (1 - z) * n + z * h``. Same ``forward``/``backward`` as :class:`RNN`."""

    _cell = "gru"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, **kwargs: Any) -> None:
        _Recurrent.__init__(self, input_size, hidden_size, num_layers, **kwargs)


class LSTM(_Recurrent):
    """LSTM, gates ``i, f, g, o``: ``c' = f*c + i*g``, ``h' = o*tanh(c')``.

    ``y, (h_n, c_n) = lstm.forward(x, (h0, c0))`` (state optional, either part may be None);
    ``dx, (dh0, dc0) = lstm.backward(dy, (dh_n, dc_n))`` (state gradients optional).
    See the module docstring for shapes; every float array in or out has the layer's ``dtype``
    (float32 or float64; another dtype raises ``TypeError``).
    """

    _cell = "lstm"

    def forward(self, x: Any, state: Optional[Tuple[Any, Any]] = None,
                lengths: Any = None) -> Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """``x (T, B, I)`` (``(B, T, I)`` if ``batch_first``) and optional ``(h0, c0)`` →
        ``(y (T, B, D*H), (h_n, c_n))`` (``y`` batch-first if ``batch_first``), states ``(L*D, B, H)``,
        all float32/float64 of the layer's dtype; ``lengths (B,)`` ints for a padded batch (see the
        module docstring)."""
        h0, c0 = _pair("state", state)
        y, h_n, c_n = self._forward(x, h0, c0, lengths)
        assert c_n is not None  # an LSTM always returns its cell state
        return y, (h_n, c_n)

    def backward(self, dy: Any, state_grads: Optional[Tuple[Any, Any]] = None) -> Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """Backward of the last training-mode forward: ``dy (T, B, D*H)`` (batch-first if
        ``batch_first``) and optional ``(dh_n, dc_n)``, each ``(L*D, B, H)`` or None → ``(dx (T, B, I),
        (dh0, dc0))``, states ``(L*D, B, H)``, all of the layer's dtype. Parameter gradients are added
        into :meth:`grads`."""
        dh_n, dc_n = _pair("state_grads", state_grads)
        dx, dh0, dc0 = self._backward(dy, dh_n, dc_n)
        assert dc0 is not None  # an LSTM always returns the cell-state gradient
        return dx, (dh0, dc0)

    __call__ = forward


def _pair(name: str, state: Any) -> Tuple[Any, Any]:
    if state is None:
        return None, None
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise TypeError(f"{name}: expected a tuple (h, c) of arrays or None, got {type(state).__name__}")
    return state[0], state[1]

"""One time step of a recurrent network, with backpropagation through time across calls:
:class:`RNNCell`, :class:`GRUCell` and :class:`LSTMCell`, as ``torch.nn.RNNCell/GRUCell/LSTMCell``.

A layer (:class:`rnnrs.LSTM`, ...) runs a whole sequence in one call. A cell runs one step, for the
loops a layer cannot express: a decoder that feeds back its own predictions, attention, any custom
recurrence. In training mode every call is recorded; :meth:`backward` then differentiates the
recorded steps one at a time **in reverse order of the calls**, each call taking the gradient of
the loss with respect to that step's output and the state gradient the later step returned::

    cell = rnnrs.LSTMCell(8, 16, dtype=np.float64, seed=0)
    h = c = None
    hs = []
    for x_t in xs:                                # forward, T calls
        h, c = cell(x_t, None if h is None else (h, c))
        hs.append(h)
    dstate = None
    for t in reversed(range(len(xs))):            # backward, T calls in reverse
        dx_t, dstate = cell.backward(dloss_dh[t], dstate)
    cell.grads()                                  # {"weight_ih": ..., "bias_hh": ...}

The gradients are exactly those of the one-layer layer run over the same steps. Shapes: ``x``
``(B, I)``, states ``(B, H)`` — or ``(I,)`` and ``(H,)`` for one unbatched sequence. Parameters
``weight_ih (G*H, I)``, ``weight_hh (G*H, H)``, ``bias_ih``, ``bias_hh (G*H,)``, gates in PyTorch's
order (LSTM ``i, f, g, o``; GRU ``r, z, n``), initialised ``U(-1/sqrt(H), 1/sqrt(H))`` from ``seed``
(the weights of the one-layer layer with that seed, under ``_l0`` names), or by the layers'
``init=``, ``recurrent_init=``, ``init_std=`` and ``forget_bias=`` (see :mod:`rnnrs.layers`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import numpy as np

from . import _rnnrs
from ._finite import at_user_index
from ._rnnrs import NonFiniteError
from .layers import _DTYPES, _Parameters, _apply_init, _check_int, _check_seed, _dtype_name

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["RNNCell", "GRUCell", "LSTMCell"]


class _Cell(_Parameters):
    """Shared implementation of the three cells (see the module docstring)."""

    _cell = ""
    input_size: int
    hidden_size: int
    seed: int
    training: bool
    dtype: np.dtype[Any]
    _core: _rnnrs.RecurrentCell
    _steps: list

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, dtype: Any = np.float32,
                 seed: int = 0, _cell: Optional[str] = None, **init: Any) -> None:
        self.input_size = _check_int("input_size", input_size, 1)
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        if bias is not True:
            raise ValueError(f"bias: expected True (rnnrs cells always have biases), got {bias!r}")
        self.dtype = np.dtype(_dtype_name(dtype))
        self.seed = _check_seed(seed)
        self.training = True
        self._steps = []  # per recorded step: (batch, whether its x was 1-D)
        self._core = _rnnrs.RecurrentCell(_cell or self._cell, self.input_size, self.hidden_size,
                                          _DTYPES[self.dtype], self.seed)
        _init(self._core, init, self.seed)

    # ------------------------------------------------------------------------------------ arrays
    def _array(self, name: str, a: Any, features: int, batch: Optional[int], unbatched: bool) -> np.ndarray:
        """``a`` as a 2-D ``(batch, features)`` array of the cell's dtype; ``unbatched``: ``a`` is
        one sequence's 1-D ``(features,)`` and gains a batch axis of 1."""
        if isinstance(a, (list, tuple)):
            a = np.asarray(a, dtype=self.dtype)
        expected = f"({features},)" if unbatched else f"({'batch' if batch is None else batch}, {features})"
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name}: expected a numpy.ndarray {expected} of {self.dtype}, got {type(a).__name__}")
        if a.dtype != self.dtype:
            raise TypeError(f"{name}: expected dtype {self.dtype} (the cell's dtype), got {a.dtype}")
        ok = a.shape == (features,) if unbatched else (a.ndim == 2 and a.shape[1] == features
                                                       and (batch is None or a.shape[0] == batch))
        if not ok:
            raise ValueError(f"{name}: expected shape {expected}, got {a.shape}")
        a = a[None, :] if unbatched else a
        return a if a.flags.aligned else a.copy()

    def _step(self, x: Any, h: Any, c: Any) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        unbatched = isinstance(x, np.ndarray) and x.ndim == 1
        x2 = self._array("x", x, self.input_size, None, unbatched)
        b = x2.shape[0]
        h2, c2 = (None if a is None else self._array(n, a, self.hidden_size, b, unbatched) for n, a in (("h", h), ("c", c)))
        try:
            h_new, c_new = self._core.step(x2, h2, c2, self.training)
        except NonFiniteError as e:  # the core saw x as one time step: report the index in x
            raise at_user_index(e, "x", np.asarray(x)) from None
        if self.training:
            self._steps.append((b, unbatched))
        if unbatched:
            return h_new[0], None if c_new is None else c_new[0]
        return h_new, c_new

    def _backward(self, dh: Any, dh_next: Any, dc_next: Any) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        if not self.training:
            raise ValueError("backward: expected a cell in training mode, got eval mode (call train())")
        if not self._steps:
            raise ValueError("backward: expected a recorded training step, got none (every forward call "
                             "in training mode has had its backward)")
        b, unbatched = self._steps[-1]
        grads = [None if a is None else self._array(n, a, self.hidden_size, b, unbatched)
                 for n, a in (("dh", dh), ("dh_next", dh_next), ("dc_next", dc_next))]
        dx, dh0, dc0 = self._core.backward(*grads)
        self._steps.pop()
        if unbatched:
            return dx[0], dh0[0], None if dc0 is None else dc0[0]
        return dx, dh0, dc0

    # -------------------------------------------------------------------------------- parameters
    @property
    def pending_steps(self) -> int:
        """Training steps recorded whose :meth:`backward` has not run yet."""
        return int(self._core.pending_steps)

    def train(self, mode: bool = True) -> Self:
        """Training mode: every call is recorded for :meth:`backward`. Returns ``self``."""
        self.training = bool(mode)
        if not self.training:
            self._core.clear_tape()
            self._steps = []
        return self

    def eval(self) -> Self:
        """Inference mode: nothing is recorded (and recorded steps are dropped). Returns ``self``."""
        return self.train(False)

    def _forget_forward(self) -> None:
        self._steps = []

    def __repr__(self) -> str:
        extra = f", nonlinearity={self.nonlinearity!r}" if isinstance(self, RNNCell) else ""
        return f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra}, dtype={self.dtype.name})"


class RNNCell(_Cell):
    """Elman RNN step: ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``, ``act`` = ``tanh`` or ``relu``.

    ``h = cell(x, h=None)``; ``dx, dh_prev = cell.backward(dh, dh_next=None)``.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh", *,
                 dtype: Any = np.float32, seed: int = 0, **init: Any) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, dtype=dtype, seed=seed, _cell=f"rnn_{nonlinearity}", **init)

    def forward(self, x: Any, h: Any = None) -> np.ndarray:
        """``x (B, I)`` (or ``(I,)``) and ``h (B, H)`` or None (zeros) → the next ``h``."""
        return self._step(x, h, None)[0]

    def backward(self, dh: Any, dh_next: Any = None) -> Tuple[np.ndarray, np.ndarray]:
        """Backward of the most recent recorded step: ``dh`` the loss gradient w.r.t. its output
        (or None), ``dh_next`` the gradient the later step's backward returned (None for the last
        step) → ``(dx, dh_prev)``. Parameter gradients are added into :meth:`grads`."""
        dx, dh0, _ = self._backward(dh, dh_next, None)
        return dx, dh0

    __call__ = forward


class GRUCell(RNNCell):
    """GRU step, gates ``r, z, n``: ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``,
    ``h' = (1 - z) * n + z * h``. Same ``forward``/``backward`` as :class:`RNNCell`."""

    _cell = "gru"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, dtype: Any = np.float32,
                 seed: int = 0, **init: Any) -> None:
        _Cell.__init__(self, input_size, hidden_size, bias, dtype=dtype, seed=seed, **init)


class LSTMCell(_Cell):
    """LSTM step, gates ``i, f, g, o``: ``c' = f*c + i*g``, ``h' = o*tanh(c')``.

    ``h, c = cell(x, (h, c))`` (state optional); ``dx, (dh_prev, dc_prev) = cell.backward(dh,
    (dh_next, dc_next))`` (state gradients optional).
    """

    _cell = "lstm"

    def forward(self, x: Any, state: Optional[Tuple[Any, Any]] = None) -> Tuple[np.ndarray, np.ndarray]:
        """``x (B, I)`` (or ``(I,)``) and ``(h, c)``, each ``(B, H)`` or None (zeros) → ``(h, c)``."""
        h, c = _pair("state", state)
        h_new, c_new = self._step(x, h, c)
        assert c_new is not None  # an LSTM always returns its cell state
        return h_new, c_new

    def backward(self, dh: Any, dstate: Optional[Tuple[Any, Any]] = None) -> Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
        """Backward of the most recent recorded step: ``dh`` the loss gradient w.r.t. its output
        ``h`` (or None), ``dstate = (dh_next, dc_next)`` the gradients the later step's backward
        returned (None for the last step) → ``(dx, (dh_prev, dc_prev))``. Parameter gradients are
        added into :meth:`grads`."""
        dh_next, dc_next = _pair("dstate", dstate)
        dx, dh0, dc0 = self._backward(dh, dh_next, dc_next)
        assert dc0 is not None
        return dx, (dh0, dc0)

    __call__ = forward


_INIT_DEFAULTS = {"init": "pytorch", "recurrent_init": None, "init_std": 0.01, "forget_bias": None}


def _init(core: Any, kwargs: Dict[str, Any], seed: int) -> None:
    """The cells' ``init=``, ``recurrent_init=``, ``init_std=``, ``forget_bias=`` (as the layers')."""
    unknown = sorted(set(kwargs) - set(_INIT_DEFAULTS))
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r} (expected dtype, seed or one of "
                        f"{sorted(_INIT_DEFAULTS)})")
    args = {**_INIT_DEFAULTS, **kwargs}
    _apply_init(core, args["init"], args["recurrent_init"], args["init_std"], args["forget_bias"], seed)


def _pair(name: str, state: Any) -> Tuple[Any, Any]:
    if state is None:
        return None, None
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise TypeError(f"{name}: expected a tuple (h, c) of arrays or None, got {type(state).__name__}")
    return state[0], state[1]

"""Type stubs of the compiled module ``rnnrs._rnnrs`` (built from ``rust/rnnrs-py``).

This is the private engine room: use the public ``rnnrs`` package (``rnnrs.LSTM``,
``rnnrs.LanguageModel``, ...), which validates arguments and wraps these classes.

Conventions (``T`` time steps, ``B`` batch, ``I`` input features, ``H`` hidden features, ``L``
layers, ``D`` = 2 if bidirectional else 1, ``V`` vocabulary size):

* float arrays are ``numpy.float32`` or ``numpy.float64`` — exactly the object's ``dtype``, never
  converted here (a mismatch raises ``TypeError``);
* token ids are ``numpy.int64`` arrays, time-major ``(T, B)``;
* recurrent arrays are time-major; states are ``(L*D, B, H)``.

A test (``tests/test_typing.py``, ``python -m mypy.stubtest rnnrs._rnnrs``) keeps this file and
the compiled module in sync.
"""

from collections.abc import Sequence
from typing import Any, Final, Literal, TypedDict, final

import numpy as np
import numpy.typing as npt

__version__: Final[str]
MAX_SEQUENCES: Final[int]
"""Most sequences one ``sample``/``Sampler`` call generates (``rnnrs::sample::MAX_SEQUENCES``)."""
MAX_TOKENS: Final[int]
"""Most new tokens one ``sample``/``Sampler``/``beam_search`` call generates (``rnnrs::sample::MAX_TOKENS``)."""
__all__ = [
    "SeqModel",
    "NonFiniteError",
    "safetensors_dumps",
    "safetensors_loads",
    "LanguageModel",
    "Recurrent",
    "RecurrentCell",
    "beam_search",
    "sample",
    "Sampler",
    "ContinuousSampler",
    "MAX_SEQUENCES",
    "MAX_TOKENS",
    "set_num_threads",
    "get_num_threads",
    "__version__",
]

_Float = npt.NDArray[np.floating[Any]]
"""A float32 or float64 array (the dtype of the layer or model it is passed to)."""
_Ids = npt.NDArray[np.int64]
"""Token ids: a C- or F-ordered int64 array, every id ``>= 0`` (and ``< V`` for a model)."""
_State = tuple[_Float, _Float | None]
"""Recurrent state ``(h, c)``: ``h`` ``(L, B, H)``; ``c`` ``(L, B, H)`` for LSTM, None otherwise."""
_Named = list[tuple[str, _Float]]
"""``[(name, array)]`` in a fixed order (PyTorch's for parameters)."""
_RawTensor = tuple[str, str, list[int], bytes]
"""``(name, dtype, shape, data)``: a safetensors dtype such as ``"F32"``, little-endian bytes."""

class _RecurrentConfig(TypedDict):
    cell: str
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    dropout: float

class _LanguageModelConfig(TypedDict):
    vocab_size: int
    embed_size: int | None
    hidden_size: int
    num_layers: int
    cell: str
    dropout: float
    tie_weights: bool
    embed_dropout: float
    locked_dropout: float
    weight_drop: float

def set_num_threads(n: int | None) -> None:
    """Compute with ``n`` threads from now on in this process (``None``: rayon's default pool,
    ``RAYON_NUM_THREADS`` or one per core). Results are the same bits for any count."""

def get_num_threads() -> int:
    """The number of threads rnnrs computes with in this process."""

class NonFiniteError(ValueError):
    """A NaN or infinite value where a finite one is required (input, weight, loss or gradient)."""

@final
class RecurrentCell:
    """One RNN/GRU/LSTM time step with BPTT across calls (wrapped by ``rnnrs.LSTMCell`` etc.)."""

    def __new__(cls, cell: str, input_size: int, hidden_size: int, dtype: str = "float32", seed: int = 0) -> RecurrentCell: ...
    @property
    def dtype(self) -> str: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def pending_steps(self) -> int: ...
    def step(self, x: _Float, h: _Float | None = None, c: _Float | None = None,
             train: bool = True) -> tuple[_Float, _Float | None]: ...
    def backward(self, dh: _Float | None = None, dh_next: _Float | None = None,
                 dc_next: _Float | None = None) -> tuple[_Float, _Float, _Float | None]: ...
    def state_dict(self) -> _Named: ...
    def grads(self) -> _Named: ...
    def load_state_dict(self, items: list[tuple[str, _Float]]) -> None: ...
    def init_parameters(self, init: str, recurrent_init: str | None = None, init_std: float = 0.01,
                        forget_bias: float | None = None, seed: int = 0) -> None:
        """Re-draw the parameters with the named initialisers (see ``rnnrs::init``)."""
    def zero_grad(self) -> None: ...
    def clear_tape(self) -> None: ...

@final
class Recurrent:
    """Multi-layer, optionally bidirectional RNN/GRU/LSTM (time-major). Use the Python classes
    ``rnnrs.RNN``, ``rnnrs.GRU`` and ``rnnrs.LSTM``, which wrap this one.

    Args:
        cell: ``"rnn_tanh"``, ``"rnn_relu"``, ``"gru"`` or ``"lstm"``.
        input_size, hidden_size, num_layers: ``I``, ``H``, ``L`` (each ``>= 1``).
        bidirectional: ``D`` = 2 when True.
        dropout: on the outputs of every layer but the last in training, in ``[0, 1)``.
        dtype: ``"float32"`` or ``"float64"``: the dtype of every array in and out.
        seed: initialises the parameters ``U(-1/sqrt(H), 1/sqrt(H))`` and the dropout stream.
    """

    def __new__(
        cls,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        dtype: str = "float32",
        seed: int = 0,
    ) -> Recurrent: ...
    @property
    def dtype(self) -> Literal["float32", "float64"]:
        """``"float32"`` or ``"float64"``."""
    @property
    def config(self) -> _RecurrentConfig:
        """The configuration as a dict: ``cell``, ``input_size``, ``hidden_size``, ``num_layers``,
        ``bidirectional``, ``dropout``."""
    def forward(
        self,
        x: _Float,
        h0: _Float | None = None,
        c0: _Float | None = None,
        train: bool = True,
        lengths: npt.NDArray[np.integer[Any]] | None = None,
    ) -> tuple[_Float, _Float, _Float | None]:
        """Forward pass over ``x (T, B, I)`` with optional ``h0``/``c0 (L*D, B, H)`` (zeros if None).

        Returns ``(y (T, B, D*H), h_n (L*D, B, H), c_n (L*D, B, H) or None)`` (``c_n`` for LSTM only).
        With ``train=True`` the pass applies dropout and keeps what :meth:`backward` needs.
        """
    def backward(
        self, dy: _Float, dh_n: _Float | None = None, dc_n: _Float | None = None
    ) -> tuple[_Float, _Float, _Float | None]:
        """Backward pass of the last training forward: ``dy (T, B, D*H)``, optional
        ``dh_n``/``dc_n (L*D, B, H)``. Returns ``(dx (T, B, I), dh0 (L*D, B, H), dc0 or None)`` and adds
        the parameter gradients into :meth:`grads`. ``ValueError`` without a training forward."""
    def state_dict(self) -> _Named:
        """Copies of the parameters as ``[(name, array)]`` with PyTorch's names, shapes and order:
        ``weight_ih_l{k}`` ``(G*H, I or D*H)``, ``weight_hh_l{k}`` ``(G*H, H)``, ``bias_ih_l{k}``,
        ``bias_hh_l{k}`` ``(G*H,)`` (``_reverse`` suffix for the reverse direction), ``G`` = 1/3/4."""
    def grads(self) -> _Named:
        """Copies of the accumulated gradients, same names, shapes and order as :meth:`state_dict`."""
    def load_state_dict(self, items: Sequence[tuple[str, Any]]) -> None:
        """Replace all parameters from ``(name, array)`` pairs: every name exactly once, same shapes,
        arrays of the layer's dtype. Nothing changes on error (``ValueError``/``TypeError``)."""
    def init_parameters(self, init: str, recurrent_init: str | None = None, init_std: float = 0.01,
                        forget_bias: float | None = None, seed: int = 0) -> None:
        """Re-draw the parameters with the named initialisers (see ``rnnrs::init``)."""
    def zero_grad(self) -> None:
        """Set every gradient to zero."""
    def clear_tape(self) -> None:
        """Drop the kept forward state (what ``eval()`` does)."""
    def dropout_state(self) -> tuple[int, int]:
        """``(seed, calls)`` of the dropout stream."""
    def set_dropout_state(self, seed: int, calls: int) -> None:
        """Restore the dropout stream position."""

@final
class LanguageModel:
    """The compiled language model (embedding or one-hot → recurrent stack → linear, plus its
    optimizer); use ``rnnrs.LanguageModel``.

    Args:
        vocab_size: ``V``.
        embed_size: embedding width, or None for one-hot inputs.
        hidden_size, num_layers: ``H``, ``L``.
        cell: ``"rnn_tanh"``, ``"rnn_relu"``, ``"gru"`` or ``"lstm"``.
        dropout: between recurrent layers in training, in ``[0, 1)``.
        dtype: ``"float32"`` or ``"float64"``.
        seed: initialises every parameter and the dropout stream.
    """

    def __new__(
        cls,
        vocab_size: int,
        embed_size: int | None,
        hidden_size: int,
        num_layers: int = 1,
        cell: str = "lstm",
        dropout: float = 0.0,
        dtype: str = "float32",
        seed: int = 0,
        tie_weights: bool = False,
        embed_dropout: float = 0.0,
        locked_dropout: float = 0.0,
        weight_drop: float = 0.0,
    ) -> LanguageModel: ...
    @property
    def dtype(self) -> Literal["float32", "float64"]:
        """``"float32"`` or ``"float64"``."""
    @property
    def config(self) -> _LanguageModelConfig:
        """The configuration as a dict: ``vocab_size``, ``embed_size``, ``hidden_size``,
        ``num_layers``, ``cell``, ``dropout``."""
    def logits(self, ids: _Ids, state: _State | None = None) -> tuple[_Float, _State]:
        """Logits ``(T, B, V)`` for ids ``(T, B)`` and the final state ``(h, c)`` (inference)."""
    def evaluate(self, inputs: _Ids, targets: _Ids, state: _State | None = None) -> tuple[float, _State]:
        """Mean cross-entropy (nats per token) of ``targets`` given ``inputs`` (both ``(T, B)``) and the
        final state (inference, no dropout)."""
    def loss_and_grad(self, inputs: _Ids, targets: _Ids, state: _State | None = None) -> tuple[float, _State]:
        """Training-mode forward + loss + backward, **adding** into the gradients; returns
        ``(loss, final_state)``."""
    def train_step(
        self, inputs: _Ids, targets: _Ids, state: _State | None = None, clip: float | None = None
    ) -> tuple[float, float, _State]:
        """One full step (zero grads, forward, loss, backward, clip the global norm to ``clip``,
        update); returns ``(loss, grad_norm_before_clipping, final_state)``. Raises
        :class:`NonFiniteError` (parameters unchanged) on a NaN/Inf loss or gradient, ``ValueError``
        without an optimizer (see :meth:`set_optimizer`)."""
    def set_optimizer(
        self,
        name: str,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        betas: tuple[float, float] = ...,
        eps: float = 1e-8,
    ) -> None:
        """Choose the optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"`` (fresh state);
        ``betas`` defaults to ``(0.9, 0.999)``."""
    def set_lr(self, lr: float) -> None:
        """Change the learning rate of the optimizer."""
    def optimizer_state(self) -> tuple[int, _Named]:
        """``(steps, [(name, array)])`` of the optimizer, for checkpoints (``(0, [])`` without one)."""
    def load_optimizer_state(self, steps: int, items: Sequence[tuple[str, Any]]) -> None:
        """Restore what :meth:`optimizer_state` returned (after :meth:`set_optimizer` with the same
        settings)."""
    def state_dict(self) -> _Named:
        """Copies of the parameters, ``[(name, array)]``: ``embedding.weight`` ``(V, E)`` (absent when
        one-hot), ``rnn.weight_ih_l0`` … (as :meth:`Recurrent.state_dict`), ``linear.weight``
        ``(V, H)``, ``linear.bias`` ``(V,)``."""
    def grads(self) -> _Named:
        """Copies of the gradients, same names as :meth:`state_dict`."""
    def load_state_dict(self, items: Sequence[tuple[str, Any]]) -> None:
        """Replace all parameters (all names exactly once, same shapes, the model's dtype; nothing
        changes on error)."""
    def init_parameters(self, init: str, recurrent_init: str | None = None, init_std: float = 0.01,
                        forget_bias: float | None = None, seed: int = 0) -> None:
        """Re-draw the parameters with the named initialisers (see ``rnnrs::init``)."""
    def zero_grad(self) -> None:
        """Set every gradient to zero."""
    def num_params(self) -> int:
        """Number of trainable scalars."""
    def dropout_state(self) -> tuple[int, int]:
        """``(seed, calls)`` of the dropout stream."""
    def set_dropout_state(self, seed: int, calls: int) -> None:
        """Restore the dropout stream position."""

def safetensors_dumps(tensors: Sequence[_RawTensor], metadata: dict[str, str]) -> bytes:
    """Serialize ``[(name, dtype, shape, data_bytes)]`` and ``{str: str}`` metadata to safetensors
    bytes."""

def safetensors_loads(data: bytes, path: str = "<bytes>") -> tuple[list[_RawTensor], dict[str, str]]:
    """Parse safetensors bytes into ``([(name, dtype, shape, data_bytes)], metadata)``; ``path`` is
    used in error messages only. ``ValueError`` on a malformed file."""

def sample(
    model: LanguageModel,
    prefixes: Sequence[_Ids],
    seeds: Sequence[int],
    length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    stop_tokens: Sequence[int] = ...,
    banned_tokens: Sequence[int] = ...,
    weights: Literal["auto", "f32", "f16"] = "auto",
) -> list[tuple[_Ids, npt.NDArray[np.float64], bool]]:
    """Generate ``length`` new tokens after each 1-D int64 prefix (sequence ``i`` from ``seeds[i]``)
    in one batch. Returns ``[(ids (n,) int64, logprobs (n,) float64, stopped)]``: the new ids, their
    model log-probabilities and whether the sequence ended on one of ``stop_tokens`` (default none).
    ``temperature=0`` is greedy. ``weights``: storage of the streamed weights (``"auto"``: float16
    when exact, ``"f16"``: float16 even if lossy, float32 models only; ``"f32"``); ``ValueError``
    for another string."""

def beam_search(
    model: LanguageModel, prefix: _Ids, width: int, length: int
) -> tuple[_Ids, npt.NDArray[np.float64], float]:
    """Beam search of ``width`` beams for ``length`` new tokens after ``prefix`` (1-D int64). Returns
    ``(ids (length,) int64, logprobs (length,) float64, total_logprob)`` of the best sequence (never
    less probable than greedy)."""

@final
class Sampler:
    """Streaming generation: ``Sampler(model, prefixes, seeds, length, ...)`` (arguments as
    :func:`sample`), then ``advance(n)`` returns the tokens generated since the last call. Chunks
    never change the result: the concatenated pieces equal what :func:`sample` returns with the same
    arguments."""

    def __new__(
        cls,
        model: LanguageModel,
        prefixes: Sequence[_Ids],
        seeds: Sequence[int],
        length: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float = 1.0,
        stop_tokens: Sequence[int] = ...,
        banned_tokens: Sequence[int] = ...,
        weights: Literal["auto", "f32", "f16"] = "auto",
    ) -> Sampler: ...
    def advance(self, tokens: int) -> list[tuple[_Ids, npt.NDArray[np.float64]]]:
        """Generate until every unfinished sequence has ``tokens`` more new tokens (or finished), and
        return, per sequence, ``(ids int64, logprobs float64)`` of the tokens not returned before."""
    @property
    def done(self) -> bool:
        """Whether every sequence is finished."""
    @property
    def stopped(self) -> list[bool]:
        """Per sequence: whether it ended on a stop token."""
    @property
    def weights_used(self) -> Literal["f32", "f16"]:
        """The weight storage the last ``advance`` used (``"auto"`` resolved); before the first,
        the one it will use."""

_SeqStep = tuple[int, int | None, float | None, list[tuple[int, float]], bool, bool, bool]
"""``(id, token, logprob, top, finished, stopped, nonfinite)`` of one sequence in one step."""

@final
class ContinuousSampler:
    """Continuous batching: sequences with their own options join (:meth:`add`) and leave
    (:meth:`remove`, or by finishing) between steps; :meth:`step` advances all of them by one token
    with the GIL released. Each sequence's tokens equal :func:`sample` of it alone with the same
    seed and options. Use one sampler from one thread at a time."""

    def __new__(cls, model: LanguageModel, capacity: int, weights: Literal["auto", "f32", "f16"] = "auto") -> ContinuousSampler: ...
    def add(
        self,
        prefix: _Ids,
        seed: int,
        length: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float = 1.0,
        stop_tokens: Sequence[int] = ...,
        banned_tokens: Sequence[int] = ...,
        top_logprobs: int = 0,
    ) -> int:
        """Add a sequence (it joins at the next :meth:`step`); returns its id. ``ValueError`` for a
        bad option or prefix, or a full sampler."""
    def remove(self, id: int) -> bool:
        """Drop sequence ``id``; False if it is not in the sampler."""
    def step(self, steps: int = 1) -> list[_SeqStep]:
        """``steps`` steps of every sequence (fewer if the sampler empties), the GIL released: in
        order, for each sequence that picked a token or finished, ``(id, token, logprob, top,
        finished, stopped, nonfinite)``; ``top`` is ``[(token, logprob)]`` most probable first.
        Finished sequences have left the sampler."""
    def __len__(self) -> int: ...
    @property
    def capacity(self) -> int:
        """Most concurrent sequences."""
    @property
    def ids(self) -> list[int]:
        """Ids of the sequences in the sampler."""
    @property
    def last_sizes(self) -> list[int]:
        """The number of sequences stepped at each step of the last :meth:`step` call."""

@final
class SeqModel:
    """The compiled sequential model (embedding, recurrent, dense, dropout layers + loss + optimizer);
    use ``rnnrs.Sequential``. ``config_json``: ``{"input_features": F, "layers": [...], "loss": ...}``."""

    def __new__(cls, config_json: str, dtype: str = "float32", seed: int = 0) -> SeqModel: ...
    @property
    def dtype(self) -> Literal["float32", "float64"]: ...
    @property
    def config_json(self) -> str: ...
    @property
    def takes_ids(self) -> bool: ...
    def predict(self, x: npt.NDArray[Any], lengths: npt.NDArray[np.integer[Any]] | None = None) -> _Float:
        """Outputs ``(B, C)`` or ``(B, T, C)`` for ids ``(B, T)`` or features ``(B, T, F)``."""
    def evaluate(
        self, x: npt.NDArray[Any], y: npt.NDArray[Any], lengths: npt.NDArray[np.integer[Any]] | None = None,
        sample_weight: Sequence[float] | None = None,
    ) -> tuple[float, int, int, float]:
        """``(loss, correct, count, 0.0)`` in inference mode."""
    def train_step(
        self, x: npt.NDArray[Any], y: npt.NDArray[Any], lengths: npt.NDArray[np.integer[Any]] | None = None, clip: float | None = None,
        sample_weight: Sequence[float] | None = None,
    ) -> tuple[float, int, int, float]:
        """One whole training step: ``(loss, correct, count, grad_norm)``."""
    def set_optimizer(
        self,
        name: str,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        betas: tuple[float, float] = ...,
        eps: float = 1e-08,
    ) -> None: ...
    def set_lr(self, lr: float) -> None: ...
    def optimizer_state(self) -> tuple[int, list[tuple[str, _Float]]]: ...
    def load_optimizer_state(self, steps: int, items: list[tuple[str, _Float]]) -> None: ...
    def state_dict(self) -> list[tuple[str, _Float]]: ...
    def grads(self) -> list[tuple[str, _Float]]: ...
    def load_state_dict(self, items: list[tuple[str, _Float]]) -> None: ...
    def num_params(self) -> int: ...
    def dropout_state(self) -> tuple[int, int]: ...
    def set_dropout_state(self, seed: int, calls: int) -> None: ...

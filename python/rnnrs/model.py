"""A recurrent language model: Embedding (or one-hot) → RNN/GRU/LSTM stack → Linear → softmax.

Token ids are **time-major** ``(T, B)`` int arrays (transpose the ``(B, T)`` batches of
:mod:`rnnrs.dataset`). The recurrent state is a tuple ``(h, c)`` of ``(num_layers, B, hidden_size)``
arrays, with ``c`` None for RNN and GRU models. One :meth:`LanguageModel.train_step` — forward, loss,
backpropagation through time, gradient clipping and the optimizer update — is one call into Rust with
the GIL released.

Parameter names follow PyTorch (as in d2l's ``RNNModel``): ``embedding.weight``,
``rnn.weight_ih_l0`` … ``rnn.bias_hh_l{L-1}``, ``linear.weight``, ``linear.bias``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple, Union, overload

import numpy as np
import numpy.typing as npt

from . import _rnnrs
from .layers import _apply_init, _check_int, _check_seed, _dtype_name, _state_items

__all__ = ["LanguageModel", "CELLS"]

#: Accepted ``cell`` names and the core cell each maps to.
CELLS = {"lstm": "lstm", "gru": "gru", "rnn": "rnn_tanh", "rnn_tanh": "rnn_tanh", "rnn_relu": "rnn_relu"}

State = Tuple[np.ndarray, Optional[np.ndarray]]
#: Token ids as returned by sampling and beam search: an int64 array.
Ids = npt.NDArray[np.int64]
#: Per-token log-probabilities as returned with ``return_logprobs=True``: a float64 array.
LogProbs = npt.NDArray[np.float64]


def as_ids(name: str, ids: Any, ndim: int = 2) -> np.ndarray:
    """``ids`` (an integer array or nested lists) as an int64 array of rank ``ndim`` — ``(T, B)``
    for ``ndim=2``, ``(T,)`` for ``ndim=1`` — or TypeError (non-integer data) / ValueError (wrong
    rank), naming ``name``. An aligned int64 array is passed as it is (any strides: the core reads
    views); other integer dtypes are converted."""
    try:
        a = np.asarray(ids)
    except (ValueError, TypeError) as e:  # ragged nested lists
        raise TypeError(f"{name}: expected integer token ids (an array or nested lists), got {e}") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise TypeError(f"{name}: expected integer token ids, got dtype {a.dtype}")
    if a.ndim != ndim:
        shape = "(seq_len, batch)" if ndim == 2 else "(seq_len,)"
        raise ValueError(f"{name}: expected a {ndim}-D array {shape} of token ids, got shape {a.shape}")
    if a.dtype == np.int64:
        return a if a.flags.aligned else a.copy()  # (the core cannot view misaligned data)
    if a.dtype == np.uint64 and a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{name}: expected token ids below 2**63, got {int(a.max())}")
    try:
        return a.astype(np.int64)
    except (MemoryError, ValueError):  # ValueError: "array is too big"
        raise ValueError(f"{name}: expected an array that fits in memory, got shape {a.shape}") from None


def _real(name: str, value: Any, expected: str, ok: Any = lambda v: math.isfinite(v)) -> float:
    """``value`` as a float, or TypeError/ValueError naming ``name``, ``expected`` and the value."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected {expected}, got {type(value).__name__} {value!r}")
    v = float(value)
    if not ok(v):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return v


_OPTION_DEFAULTS = {"tie_weights": False, "embed_dropout": 0.0, "locked_dropout": 0.0, "weight_drop": 0.0}


class LanguageModel:
    """Embedding (or one-hot when ``embed_size=None``) → recurrent stack → Linear.

    Args:
        vocab_size: number of token ids ``V``.
        embed_size: embedding width, or None for one-hot inputs (the d2l book's models).
        hidden_size: hidden width ``H`` of every recurrent layer.
        num_layers: recurrent layers ``L``.
        cell: ``"lstm"``, ``"gru"``, ``"rnn"`` (tanh) or ``"rnn_relu"``.
        dropout: dropout between recurrent layers in training, in ``[0, 1)``.
        seed: initialises every parameter (same seed, same model).
        dtype: ``numpy.float32`` (default) or ``numpy.float64``: the dtype of the parameters,
            gradients, logits and states.
        init, recurrent_init, init_std, forget_bias: initialisers as for :class:`rnnrs.LSTM`;
            ``init`` also draws the embedding and the output layer (``"normal"`` with
            ``init_std=0.01`` is the d2l book's ``N(0, 0.01)`` weights and zero biases).
        tie_weights: the output layer shares the embedding matrix (AWD-LSTM); with
            ``embed_size != hidden_size`` a learned ``proj.weight (E, H)`` maps the hidden state
            to the embedding width first. ``linear.weight`` is then not a parameter of its own.
        embed_dropout, locked_dropout, weight_drop: the AWD-LSTM regularisers, in training only,
            each a probability in ``[0, 1)``: drop whole token types (embedding rows) per batch;
            one dropout mask per sequence, shared over time, on the stack's input (embedding
            models) and output; one DropConnect mask per batch on every ``W_hh``.

    Token ids passed in are integer arrays (int64 is used as it is, other integer dtypes are
    converted); float arrays coming out (logits, states, parameters) have the model's ``dtype``.
    """

    cell: str
    seed: int
    dtype: np.dtype[Any]
    _core: _rnnrs.LanguageModel

    def __init__(self, vocab_size: int, embed_size: Optional[int] = 128, hidden_size: int = 256,
                 num_layers: int = 2, cell: str = "lstm", dropout: float = 0.0, seed: int = 0,
                 dtype: Any = np.float32, *, init: str = "pytorch", recurrent_init: Optional[str] = None,
                 init_std: float = 0.01, forget_bias: Optional[float] = None, tie_weights: bool = False,
                 embed_dropout: float = 0.0, locked_dropout: float = 0.0, weight_drop: float = 0.0) -> None:
        vocab_size = _check_int("vocab_size", vocab_size, 1)
        if embed_size is not None:
            embed_size = _check_int("embed_size", embed_size, 1)
        hidden_size = _check_int("hidden_size", hidden_size, 1)
        num_layers = _check_int("num_layers", num_layers, 1)
        if not isinstance(cell, str):
            raise TypeError(f"cell: expected one of {sorted(CELLS)}, got {type(cell).__name__} {cell!r}")
        if cell not in CELLS:
            raise ValueError(f"cell: expected one of {sorted(CELLS)}, got {cell!r}")
        for name, p in (("dropout", dropout), ("embed_dropout", embed_dropout), ("locked_dropout", locked_dropout),
                        ("weight_drop", weight_drop)):
            if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p < 1.0:
                raise ValueError(f"{name}: expected a float in [0, 1), got {p!r}")
        if not isinstance(tie_weights, (bool, np.bool_)):
            raise TypeError(f"tie_weights: expected True or False, got {type(tie_weights).__name__} {tie_weights!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout={dropout} acts between recurrent layers and has no effect with num_layers=1 "
                          "(use locked_dropout, embed_dropout or weight_drop to regularise one layer)",
                          UserWarning, stacklevel=2)
        self.cell = cell
        self.seed = _check_seed(seed)
        self.dtype = np.dtype(_dtype_name(dtype))
        self._core = _rnnrs.LanguageModel(vocab_size, embed_size, hidden_size, num_layers, CELLS[cell],
                                          float(dropout), self.dtype.name, self.seed, bool(tie_weights),
                                          float(embed_dropout), float(locked_dropout), float(weight_drop))
        _apply_init(self._core, init, recurrent_init, init_std, forget_bias, self.seed)
        self.optimizer: Optional[Dict[str, Any]] = None

    # ---------------------------------------------------------------------------------------- config
    @property
    def config(self) -> Dict[str, Any]:
        """Constructor arguments (JSON-serialisable): ``LanguageModel(**model.config)`` rebuilds it."""
        c = dict(self._core.config)
        for k, default in _OPTION_DEFAULTS.items():  # (absent when off: files stay as before)
            if c.get(k) == default:
                del c[k]
        c["cell"] = self.cell
        c["seed"] = self.seed
        c["dtype"] = self.dtype.name
        return c

    @property
    def vocab_size(self) -> int:
        """Number of token ids ``V`` (valid ids are ``0 .. V-1``)."""
        return int(self._core.config["vocab_size"])

    @property
    def hidden_size(self) -> int:
        """Hidden width ``H`` of every recurrent layer."""
        return int(self._core.config["hidden_size"])

    @property
    def num_layers(self) -> int:
        """Number of recurrent layers ``L``."""
        return int(self._core.config["num_layers"])

    def num_parameters(self) -> int:
        """Number of trainable scalars."""
        return int(self._core.num_params())

    def __repr__(self) -> str:
        c = self._core.config
        return (f"LanguageModel(vocab_size={c['vocab_size']}, embed_size={c['embed_size']}, "
                f"hidden_size={c['hidden_size']}, num_layers={c['num_layers']}, cell={self.cell!r}, "
                f"dropout={c['dropout']}, dtype={self.dtype.name}, params={self.num_parameters():,})")

    # ---------------------------------------------------------------------------------------- state
    def zero_state(self, batch_size: int) -> State:
        """An all-zero ``(h, c)`` state for ``batch_size`` sequences: ``h`` of shape
        ``(L, batch_size, H)`` in the model's dtype (float32/float64); ``c`` the same for LSTM,
        None for RNN/GRU."""
        shape = (self.num_layers, _check_int("batch_size", batch_size, 1), self.hidden_size)
        h = np.zeros(shape, self.dtype)
        return h, (np.zeros(shape, self.dtype) if self.cell == "lstm" else None)

    def _state(self, state: Optional[State]) -> Optional[State]:
        if state is None:
            return None
        if not isinstance(state, tuple) or len(state) != 2:
            raise TypeError(f"state: expected a tuple (h, c) (c None for RNN/GRU) or None, got {type(state).__name__}")
        return tuple(a.copy() if isinstance(a, np.ndarray) and not a.flags.aligned else a  # type: ignore[return-value]
                     for a in state)

    # -------------------------------------------------------------------------------------- compute
    def logits(self, ids: Any, state: Optional[State] = None) -> Tuple[np.ndarray, State]:
        """Logits for integer token ids ``(T, B)`` (inference, no dropout).

        ``state`` is an initial ``(h, c)`` as :meth:`zero_state` returns (None: zeros). Returns
        ``(logits, (h_n, c_n))``: logits ``(T, B, V)`` and ``h_n`` ``(L, B, H)`` in the model's dtype
        (float32/float64), ``c_n`` the same for LSTM, None for RNN/GRU."""
        return self._core.logits(as_ids("ids", ids), self._state(state))

    def evaluate(self, inputs: Any, targets: Any, state: Optional[State] = None) -> Tuple[float, State]:
        """Mean cross-entropy (nats per token) of ``targets`` given ``inputs`` (integer token ids,
        both ``(T, B)``), inference mode. Returns ``(loss, final_state)``; states as in :meth:`logits`."""
        return self._core.evaluate(as_ids("inputs", inputs), as_ids("targets", targets), self._state(state))

    def loss_and_grad(self, inputs: Any, targets: Any, state: Optional[State] = None) -> Tuple[float, State]:
        """Training-mode forward, loss and backward for integer token ids ``inputs``/``targets``
        ``(T, B)``; gradients are **added** (see :meth:`zero_grad`). Returns ``(loss, final_state)``;
        states as in :meth:`logits`."""
        return self._core.loss_and_grad(as_ids("inputs", inputs), as_ids("targets", targets), self._state(state))

    def set_optimizer(self, name: str = "adam", lr: float = 2e-3, *, momentum: float = 0.0,
                      weight_decay: float = 0.0, nesterov: bool = False,
                      betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        """Use ``"sgd"`` (PyTorch ``SGD``), ``"adam"``, ``"adamw"`` or ``"rmsprop"`` (its ``rho`` is
        ``betas[0]``) with fresh state."""
        if not isinstance(name, str):
            raise TypeError(f"optimizer: expected 'sgd', 'adam', 'adamw' or 'rmsprop', got {type(name).__name__} "
                            f"{name!r}")
        lr = _real("lr", lr, "a finite number >= 0")
        momentum = _real("momentum", momentum, "a number in [0, 1)")
        weight_decay = _real("weight_decay", weight_decay, "a finite number >= 0")
        eps = _real("eps", eps, "a finite number > 0")
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov: expected True or False, got {type(nesterov).__name__} {nesterov!r}")
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
            raise TypeError(f"betas: expected a pair (beta1, beta2) of numbers in [0, 1), got {betas!r}")
        betas = (_real("beta1", betas[0], "a number in [0, 1)"), _real("beta2", betas[1], "a number in [0, 1)"))
        if name in ("adam", "adamw", "rmsprop") and (momentum or nesterov):
            what = f"momentum={momentum:g}" if momentum else "nesterov=True"
            raise ValueError(f"{what.split('=')[0]}: applies to optimizer 'sgd' only, got {what} with {name!r} "
                             "(Adam's momentum is betas[0])")
        self._core.set_optimizer(name, lr, momentum, weight_decay, bool(nesterov), betas, eps)
        self.optimizer = dict(name=name, lr=float(lr), momentum=float(momentum), weight_decay=float(weight_decay),
                              nesterov=bool(nesterov), betas=[float(betas[0]), float(betas[1])], eps=float(eps))

    def set_lr(self, lr: float) -> None:
        """Change the optimizer's learning rate (for schedules)."""
        lr = _real("lr", lr, "a finite number >= 0")
        self._core.set_lr(lr)
        if self.optimizer is not None:
            self.optimizer["lr"] = float(lr)

    def train_step(self, inputs: Any, targets: Any, state: Optional[State] = None,
                   clip: Optional[float] = None) -> Tuple[float, float, State]:
        """One step: zero grads, forward, loss, BPTT, clip the global norm to ``clip``, update.

        ``inputs``/``targets`` are integer token ids ``(T, B)`` (time-major: transpose the ``(B, T)``
        batches of :mod:`rnnrs.dataset`); ``state`` an initial ``(h, c)`` as :meth:`zero_state`
        returns, or None for zeros. Returns ``(loss, grad_norm_before_clipping, final_state)``; the state is detached (plain
        arrays), ready to carry into the next batch of sequential sampling. Raises
        :class:`rnnrs.NonFiniteError` — with the parameters unchanged — on a NaN/Inf loss or gradient.
        """
        if clip is not None:
            clip = _real("clip", clip, "a finite number > 0 or None")
        return self._core.train_step(as_ids("inputs", inputs), as_ids("targets", targets), self._state(state), clip)

    # ------------------------------------------------------------------------------------ parameters
    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of all parameters by PyTorch-style name, in the model's dtype: ``embedding.weight``
        ``(V, E)`` (absent when one-hot), ``rnn.weight_ih_l{k}`` ``(G*H, E)`` for ``k = 0``
        (``(G*H, V)`` when one-hot) and ``(G*H, H)`` above, ``rnn.weight_hh_l{k}`` ``(G*H, H)``, ``rnn.bias_ih_l{k}``/``rnn.bias_hh_l{k}`` ``(G*H,)``,
        ``linear.weight`` ``(V, H)``, ``linear.bias`` ``(V,)`` (``G`` = 4 for LSTM, 3 for GRU, 1 for
        RNN)."""
        return dict(self._core.state_dict())

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Replace all parameters (every name of :meth:`state_dict` exactly once, same shapes);
        values (any numeric arrays) are cast to the model's dtype. Nothing changes on error."""
        self._core.load_state_dict(_state_items(state_dict, self.dtype))

    def grads(self) -> Dict[str, np.ndarray]:
        """Copies of the accumulated gradients: same keys, shapes and dtype as :meth:`state_dict`."""
        return dict(self._core.grads())

    def zero_grad(self) -> None:
        """Set every accumulated gradient to zero (:meth:`loss_and_grad` adds into them;
        :meth:`train_step` zeroes them itself)."""
        self._core.zero_grad()

    # ------------------------------------------------------------------------------------------ files
    def save(self, directory: Any, tokenizer: Any = None, info: Optional[Mapping[str, Any]] = None,
             dtype: Any = None) -> str:
        """Write ``directory/model.safetensors`` (weights, config, tokenizer, info) atomically; see
        :func:`rnnrs.checkpoint.save_model`. Returns the file's path."""
        from .checkpoint import save_model
        return save_model(directory, self, tokenizer, info, dtype)

    @classmethod
    def load(cls, path: Any) -> "LanguageModel":
        """Load a model saved by :meth:`save` (or the model of a training run's directory)."""
        from .checkpoint import load_model
        return load_model(path)[0]

    def export_onnx(self, path: Any, opset: Optional[int] = None, *, tokenizer: Any = None,
                    info: Optional[Mapping[str, Any]] = None, dtype: str = "float32") -> Any:
        """Write the model to ``path`` as ONNX (token ids ``(T, B)`` and states in, logits and states
        out), and ``tokenizer`` beside it as ``out.tokenizer.json``; ``dtype="float16"`` stores the
        weights in half precision. Needs ``pip install 'rnnrs[onnx]'``. See
        :func:`rnnrs.onnx_export.export_language_model` and ``docs/onnx.md``."""
        from .onnx_export import export_language_model
        return export_language_model(self, path, opset, tokenizer=tokenizer, info=info, dtype=dtype)

    # -------------------------------------------------------------------------------------- sampling
    # (The overloads only give the precise return type for ``return_logprobs=False``/``True``.)
    @overload
    def sample(self, prefix_ids: Any, length: int = ..., temperature: float = ..., top_k: Optional[int] = ...,
               top_p: Optional[float] = ..., repetition_penalty: float = ..., stop_tokens: Any = ..., seed: int = ...,
               greedy: bool = ..., return_logprobs: Literal[False] = ..., banned_tokens: Any = ..., weights: str = ...) -> Ids: ...

    @overload
    def sample(self, prefix_ids: Any, length: int = ..., temperature: float = ..., top_k: Optional[int] = ...,
               top_p: Optional[float] = ..., repetition_penalty: float = ..., stop_tokens: Any = ..., seed: int = ...,
               greedy: bool = ..., *, return_logprobs: Literal[True], banned_tokens: Any = ...,
               weights: str = ...
               ) -> Tuple[Ids, LogProbs]: ...

    @overload
    def sample(self, prefix_ids: Any, length: int = ..., temperature: float = ..., top_k: Optional[int] = ...,
               top_p: Optional[float] = ..., repetition_penalty: float = ..., stop_tokens: Any = ..., seed: int = ...,
               greedy: bool = ..., return_logprobs: bool = ..., banned_tokens: Any = ...,
               weights: str = ...
               ) -> Union[Ids, Tuple[Ids, LogProbs]]: ...

    def sample(self, prefix_ids: Any, length: int = 500, temperature: float = 1.0, top_k: Optional[int] = None,
               top_p: Optional[float] = None, repetition_penalty: float = 1.0, stop_tokens: Any = (), seed: int = 0,
               greedy: bool = False, return_logprobs: bool = False,
               banned_tokens: Any = (), weights: str = "auto") -> Union[Ids, Tuple[Ids, LogProbs]]:
        """Generate up to ``length`` new token ids after ``prefix_ids`` (1-D integer ids ``(n0,)`` in
        ``[0, V)``, non-empty) in one Rust call.

        Returns the new ids only (int64 ``(n,)``, ``n == length`` unless a ``stop_tokens`` id was
        generated — it is included); with ``return_logprobs=True``, ``(ids, logprobs)`` where
        ``logprobs[t]`` (float64) is the model's log-probability of ``ids[t]`` (its log-softmax, before
        penalty, temperature and filtering). ``temperature=0`` or ``greedy=True`` is argmax decoding (the
        d2l book's ``predict``); ``top_k``/``top_p`` filter, ``repetition_penalty`` is CTRL's;
        ``banned_tokens`` ids are never generated (e.g. ``[0]``, ``<unk>``); see
        :mod:`rnnrs.generate`. Same prefix, options and ``seed`` ⇒ the same ids, on any number of threads.

        ``weights`` is how the weights read for every token are stored: ``"auto"`` (default) uses a
        float16 copy when every weight is exactly representable in float16 (bit-identical results,
        faster), ``"f16"`` also when that rounds them (float32 models only; faster, log-probabilities
        change by ~1e-3), ``"f32"`` never. The copy is kept with the model until its weights change.
        """
        from .generate import prefix_array, sampling_options, _seed
        opts = sampling_options(length, temperature, top_k, top_p, repetition_penalty, stop_tokens, greedy,
                                banned_tokens, weights)
        prefix = prefix_array("prefix_ids", prefix_ids, self.vocab_size)
        ((ids, logprobs, _),) = _rnnrs.sample(self._core, [prefix], [_seed("seed", seed)], **opts)
        return (ids, logprobs) if return_logprobs else ids

    @overload
    def sample_many(self, prefixes: Any, length: int = ..., temperature: float = ..., top_k: Optional[int] = ...,
                    top_p: Optional[float] = ..., repetition_penalty: float = ..., stop_tokens: Any = ...,
                    seed: int = ..., greedy: bool = ..., return_logprobs: Literal[False] = ...,
                    banned_tokens: Any = ..., weights: str = ...) -> List[Ids]: ...

    @overload
    def sample_many(self, prefixes: Any, length: int = ..., temperature: float = ..., top_k: Optional[int] = ...,
                    top_p: Optional[float] = ..., repetition_penalty: float = ..., stop_tokens: Any = ...,
                    seed: int = ..., greedy: bool = ..., *, return_logprobs: Literal[True],
                    banned_tokens: Any = ..., weights: str = ...) -> List[Tuple[Ids, LogProbs]]: ...

    @overload
    def sample_many(self, prefixes: Any, length: int = ..., temperature: float = ..., top_k: Optional[int] = ...,
                    top_p: Optional[float] = ..., repetition_penalty: float = ..., stop_tokens: Any = ...,
                    seed: int = ..., greedy: bool = ..., return_logprobs: bool = ...,
                    banned_tokens: Any = ..., weights: str = ...) -> Union[List[Ids], List[Tuple[Ids, LogProbs]]]: ...

    def sample_many(self, prefixes: Any, length: int = 500, temperature: float = 1.0, top_k: Optional[int] = None,
                    top_p: Optional[float] = None, repetition_penalty: float = 1.0, stop_tokens: Any = (),
                    seed: int = 0, greedy: bool = False, return_logprobs: bool = False,
                    banned_tokens: Any = (), weights: str = "auto") -> List[Any]:
        """:meth:`sample` for a list of prefixes (1-D integer id arrays or lists; lengths may differ),
        stepped together as one batch.

        Sequence ``i`` uses seed ``seed + i``, so its result equals
        ``sample(prefixes[i], ..., seed=seed + i)``. Returns a list of int64 ``(n_i,)`` id arrays (of
        ``(ids, logprobs)`` pairs, ``logprobs`` float64 ``(n_i,)``, with ``return_logprobs=True``).
        """
        from .generate import _check_count, prefix_array, sampling_options, _seed
        opts = sampling_options(length, temperature, top_k, top_p, repetition_penalty, stop_tokens, greedy,
                                banned_tokens, weights)
        if isinstance(prefixes, (str, bytes, np.ndarray)) or not hasattr(prefixes, "__len__"):
            raise TypeError(f"prefixes: expected a list of 1-D token id arrays, got {type(prefixes).__name__}")
        _check_count("prefixes", len(prefixes))
        arrays = [prefix_array(f"prefixes[{i}]", p, self.vocab_size) for i, p in enumerate(prefixes)]
        seed = _seed("seed", seed)
        if seed + max(len(arrays) - 1, 0) >= 2**64:
            raise ValueError(f"seed: expected seed + len(prefixes) - 1 < 2**64, got seed {seed}")
        if not arrays:
            return []
        out = _rnnrs.sample(self._core, arrays, [seed + i for i in range(len(arrays))], **opts)
        return [(ids, lps) if return_logprobs else ids for ids, lps, _ in out]

    @overload
    def beam_search(self, prefix_ids: Any, length: int = ..., beam_width: int = ...,
                    return_logprobs: Literal[False] = ...) -> Tuple[Ids, float]: ...

    @overload
    def beam_search(self, prefix_ids: Any, length: int = ..., beam_width: int = ..., *,
                    return_logprobs: Literal[True]) -> Tuple[Ids, float, LogProbs]: ...

    @overload
    def beam_search(self, prefix_ids: Any, length: int = ..., beam_width: int = ...,
                    return_logprobs: bool = ...) -> Union[Tuple[Ids, float], Tuple[Ids, float, LogProbs]]: ...

    def beam_search(self, prefix_ids: Any, length: int = 100, beam_width: int = 4,
                    return_logprobs: bool = False) -> Union[Tuple[Ids, float], Tuple[Ids, float, LogProbs]]:
        """The most probable continuation of ``length`` tokens after ``prefix_ids`` (1-D integer ids
        in ``[0, V)``, non-empty) found by a beam search of ``beam_width`` beams: ``(ids,
        total_logprob)`` with ``ids`` int64 ``(length,)`` and ``total_logprob`` a float (natural log);
        ``(ids, total_logprob, logprobs)``, ``logprobs`` float64 ``(length,)`` per token, with
        ``return_logprobs=True``. Width 1 is greedy decoding; the result is never less probable than
        greedy decoding's. Deterministic (no seed)."""
        from .generate import prefix_array, _int
        prefix = prefix_array("prefix_ids", prefix_ids, self.vocab_size)
        ids, logprobs, total = _rnnrs.beam_search(self._core, prefix, _int("beam_width", beam_width, 1),
                                                  _int("length", length, 0))
        return (ids, float(total), logprobs) if return_logprobs else (ids, float(total))

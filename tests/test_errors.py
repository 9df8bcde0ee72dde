"""Every bad input at every public entry point gets a clear exception — never a crash, hang or panic.

The battery feeds the Python API (``RNN``/``GRU``/``LSTM``, ``LanguageModel``, tokenizers, datasets,
``train``/``Trainer``, the checkpoint loaders, ``LyricGenerator``) and the command line
(``python -m rnnrs train|evaluate|generate``) wrong ranks, shapes and dtypes, non-arrays, zero-size
and huge (broadcast, overflowing) arrays, NaN/Inf inputs and weights, out-of-range token ids, empty,
binary, non-UTF-8 and single-character corpora, sequences longer than the corpus, invalid
hyperparameters (zero/negative sizes, dropout outside [0, 1), negative temperature, top-p outside
(0, 1], top-k <= 0, negative length, bool or float where an int is expected), prefixes with unknown
characters and mismatched vocabularies. Each case names the exception class it must raise
(``ValueError``, ``TypeError``, ``OSError`` or an rnnrs class derived from them) and a pattern its
message must match (what was expected and what was received). A Rust panic would surface as
``PanicException`` (a ``BaseException``) or a ``RuntimeError("internal error ...")`` and fail the case;
an abort or segfault would kill the run. CLI errors must be one line on stderr with exit status 2.

Valid-but-unusual inputs (non-contiguous, reversed, read-only, Fortran-ordered arrays, lists, a
single-character corpus, a prefix with unknown characters) are checked to give the same results as
the plain ones. ``docs/errors.md`` is the table of what is rejected and how.

The end of the file checks that no error loses work: a full disk (a small tmpfs) or a read-only
directory while checkpointing is reported and the previous checkpoint survives; an update that would
make parameters non-finite is refused naming the step, and no poisoned checkpoint is ever written.
"""

import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

from rnnrs import (GRU, LSTM, RNN, CharTokenizer, LanguageModel, LMBatches, LyricGenerator, NonFiniteError,
                   UnknownTokenWarning, Vocab, WordTokenizer, random_batches, sequential_batches, split_train_val,
                   train)
from rnnrs import checkpoint as ck
from rnnrs.cli import main
from rnnrs.tokenizer import NotFittedError, load_tokenizer, tokenizer_from_json
from rnnrs.trainer import ConfigError, Trainer, TrainingError

TEXT = "the cat sat on the mat. the dog ate the log.\n" * 12
TOK = CharTokenizer().fit(TEXT)
V = len(TOK.vocab)
I, H = 3, 4
F32 = np.float32
MIB = 1 << 20

#: A broadcast view with a huge shape and no memory behind it.
HUGE_IDS = np.broadcast_to(np.zeros((1, 1), np.int64), (2**28, 2**28))
HUGE_IDS_I32 = np.broadcast_to(np.zeros((1, 1), np.int32), (2**30, 2**30))
HUGE_X = np.broadcast_to(np.zeros((1, 1, I), F32), (2**20, 2**20, I))
HUGE_T = np.broadcast_to(np.zeros((1, 1, I), F32), (2**40, 1, I))
FIT = "fits? in memory"


def raises(fn, exc, pattern):
    """``fn()`` raises ``exc`` (never a panic or an internal error) whose message matches ``pattern``."""
    with pytest.raises(exc) as info:
        fn()
    e = info.value
    assert isinstance(e, (ValueError, TypeError, OSError)), f"{type(e).__name__} is not a user-error class"
    msg = str(e)
    assert "internal error" not in msg and "panicked" not in msg, msg
    assert re.search(pattern, msg), f"message {msg!r} does not match {pattern!r}"
    return e


def case(id, fn, exc, pattern):
    return pytest.param(fn, exc, pattern, id=id)


def arr(shape, value=0.0, dtype=F32):
    return np.full(shape, value, dtype)


# ================================================================================ recurrent layers
def _layer(cls, **kw):
    return cls(I, H, **kw)


def _state(cls, h):
    """The layer's state argument built from one array ``h``."""
    return (h, None) if cls is LSTM else h


FORWARD_CASES = [
    ("x 2-D", lambda c: arr((2, I)), ValueError, r"x: expected a 3-D array .*got shape \(2, 3\)"),
    ("x 4-D", lambda c: arr((2, 2, I, 1)), ValueError, r"x: expected a 3-D array .*got shape \(2, 2, 3, 1\)"),
    ("x wrong features", lambda c: arr((2, 2, 5)), ValueError, r"x: expected shape \(seq_len, batch, 3\), got \(2, 2, 5\)"),
    ("x float64", lambda c: arr((2, 2, I), dtype=np.float64), TypeError, r"x: expected dtype float32.*got float64"),
    ("x float16", lambda c: arr((2, 2, I), dtype=np.float16), TypeError, r"x: expected dtype float32.*got float16"),
    ("x big-endian", lambda c: arr((2, 2, I), dtype=">f4"), TypeError, r"x: expected dtype float32.*got >f4"),
    ("x int64", lambda c: np.zeros((2, 2, I), np.int64), TypeError, r"x: expected dtype float32.*got int64"),
    ("x bool", lambda c: np.zeros((2, 2, I), bool), TypeError, r"x: expected dtype float32.*got bool"),
    ("x complex", lambda c: np.zeros((2, 2, I), np.complex64), TypeError, r"x: expected dtype float32.*got complex64"),
    ("x object", lambda c: np.full((2, 2, I), None, object), TypeError, r"x: expected dtype float32.*got object"),
    ("x str", lambda c: "abc", TypeError, r"x: expected a numpy.ndarray .*got str"),
    ("x None", lambda c: None, TypeError, r"x: expected a numpy.ndarray .*got NoneType"),
    ("x dict", lambda c: {}, TypeError, r"x: expected a numpy.ndarray .*got dict"),
    ("x T=0", lambda c: arr((0, 2, I)), ValueError, r"x: expected shape \(seq_len >= 1, batch >= 1, 3\), got \(0, 2, 3\)"),
    ("x B=0", lambda c: arr((2, 0, I)), ValueError, r"x: expected shape \(seq_len >= 1, batch >= 1, 3\), got \(2, 0, 3\)"),
    ("x NaN", lambda c: arr((2, 2, I), np.nan), NonFiniteError, r"x: expected finite values, got NaN at index \[0, 0, 0\]"),
    ("x +inf", lambda c: arr((2, 2, I), np.inf), NonFiniteError, r"x: expected finite values, got inf"),
    ("x -inf", lambda c: arr((2, 2, I), -np.inf), NonFiniteError, r"x: expected finite values, got -inf"),
    ("x huge broadcast", lambda c: HUGE_X, ValueError, rf"x: expected sizes whose arrays {FIT}, got seq_len 1048576 x batch 1048576"),
    ("x huge seq_len", lambda c: HUGE_T, ValueError, rf"x: expected sizes whose arrays {FIT}, got seq_len 1099511627776 x batch 1"),
]

STATE_CASES = [
    ("h0 wrong shape", lambda c: arr((1, 3, H)), ValueError, r"h0: expected shape \(1, 2, 4\) .*got \(1, 3, 4\)"),
    ("h0 2-D", lambda c: arr((2, H)), ValueError, r"h0: expected a 3-D array .*got shape \(2, 4\)"),
    ("h0 float64", lambda c: arr((1, 2, H), dtype=np.float64), TypeError, r"h0: expected dtype float32.*got float64"),
    ("h0 NaN", lambda c: arr((1, 2, H), np.nan), NonFiniteError, r"h0: expected finite values, got NaN"),
    ("h0 inf", lambda c: arr((1, 2, H), np.inf), NonFiniteError, r"h0: expected finite values, got inf"),
    ("h0 str", lambda c: "h", TypeError, r"h0: expected a numpy.ndarray"),
]

CELLS = [RNN, GRU, LSTM]


@pytest.mark.parametrize("cls", CELLS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("x_of,exc,pattern", [case(*c) for c in FORWARD_CASES])
def test_layer_forward_rejects(cls, x_of, exc, pattern):
    layer = _layer(cls)
    raises(lambda: layer.forward(x_of(cls)), exc, pattern)


@pytest.mark.parametrize("cls", CELLS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("h_of,exc,pattern", [case(*c) for c in STATE_CASES])
def test_layer_initial_state_rejects(cls, h_of, exc, pattern):
    layer = _layer(cls)
    raises(lambda: layer.forward(arr((2, 2, I)), _state(cls, h_of(cls))), exc, pattern)


def test_lstm_state_must_be_a_pair():
    for bad in [(arr((1, 2, H)),), "hc", 5]:
        raises(lambda: _layer(LSTM).forward(arr((2, 2, I)), bad), TypeError, r"state: expected a tuple \(h, c\)")
    raises(lambda: _layer(LSTM).forward(arr((2, 2, I)), (None, arr((1, 2, H), np.inf))), NonFiniteError,
           r"c0: expected finite values, got inf")


def _dy_of(cls, dy):
    return (dy, None) if cls is LSTM else (dy,)


BACKWARD_CASES = [
    ("dy wrong shape", lambda: arr((2, 2, H + 1)), ValueError, r"dy: expected shape \(2, 2, 4\) .*got \(2, 2, 5\)"),
    ("dy float64", lambda: arr((2, 2, H), dtype=np.float64), TypeError, r"dy: expected dtype float32.*got float64"),
    ("dy NaN", lambda: arr((2, 2, H), np.nan), NonFiniteError, r"dy: expected finite values, got NaN"),
    ("dy list of str", lambda: [["a"]], ValueError, r"could not convert|dy"),
    ("dy None", lambda: None, TypeError, r"dy: expected a numpy.ndarray"),
]


@pytest.mark.parametrize("cls", CELLS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("dy_of,exc,pattern", [case(*c) for c in BACKWARD_CASES])
def test_layer_backward_rejects(cls, dy_of, exc, pattern):
    layer = _layer(cls)
    layer.forward(arr((2, 2, I), 0.5))
    raises(lambda: layer.backward(dy_of()), exc, pattern)


@pytest.mark.parametrize("cls", CELLS, ids=lambda c: c.__name__)
def test_layer_backward_without_a_training_forward(cls):
    raises(lambda: _layer(cls).backward(arr((2, 2, H))), ValueError, r"backward: expected a preceding forward")
    layer = _layer(cls)
    layer.forward(arr((2, 2, I)))
    layer.eval()
    raises(lambda: layer.backward(arr((2, 2, H))), ValueError, r"backward: expected a forward in training mode")


CONSTRUCTOR_CASES = [
    ("input_size 0", dict(input_size=0), ValueError, r"input_size: expected an integer >= 1, got 0"),
    ("hidden_size -1", dict(hidden_size=-1), ValueError, r"hidden_size: expected an integer >= 1, got -1"),
    ("num_layers 0", dict(num_layers=0), ValueError, r"num_layers: expected an integer >= 1, got 0"),
    ("input_size bool", dict(input_size=True), TypeError, r"input_size: expected an integer >= 1, got bool True"),
    ("input_size float", dict(input_size=3.0), TypeError, r"input_size: expected an integer >= 1, got float 3.0"),
    ("hidden_size str", dict(hidden_size="4"), TypeError, r"hidden_size: expected an integer >= 1, got str '4'"),
    ("hidden_size None", dict(hidden_size=None), TypeError, r"hidden_size: expected an integer >= 1, got NoneType"),
    ("hidden_size 2**70", dict(hidden_size=2**70), ValueError, r"hidden_size: expected an integer in \[1, 2\*\*63\), got 1180591620717411303424"),
    ("sizes overflow", dict(input_size=2**40, hidden_size=2**40), ValueError, rf"recurrent layer size: expected sizes whose arrays {FIT}, got input_size 1099511627776, hidden_size 1099511627776.*overflows"),
    ("sizes beyond memory", dict(input_size=10**6, hidden_size=10**6), ValueError, rf"recurrent layer size: expected sizes whose arrays {FIT}, got input_size 1000000, hidden_size 1000000, num_layers 1 \(\d+ bytes = [\d.]+ GiB, which cannot be allocated\)"),
    ("num_layers beyond memory", dict(hidden_size=4096, num_layers=10**6), ValueError, rf"recurrent layer size: expected sizes whose arrays {FIT}"),
    ("dropout 1.0", dict(dropout=1.0), ValueError, r"dropout: expected a float in \[0, 1\), got 1.0"),
    ("dropout -0.1", dict(dropout=-0.1), ValueError, r"dropout: expected a float in \[0, 1\), got -0.1"),
    ("dropout nan", dict(dropout=float("nan")), ValueError, r"dropout: expected a float in \[0, 1\), got nan"),
    ("dropout str", dict(dropout="0.1"), TypeError, r"dropout: expected a float in \[0, 1\), got str '0.1'"),
    ("dropout bool", dict(dropout=True), TypeError, r"dropout: expected a float in \[0, 1\), got bool True"),
    ("dtype float16", dict(dtype=np.float16), TypeError, r"dtype: expected numpy.float32 or numpy.float64, got float16"),
    ("dtype bogus", dict(dtype="bogus"), TypeError, r"dtype: expected numpy.float32 or numpy.float64, got 'bogus'"),
    ("seed -1", dict(seed=-1), ValueError, r"seed: expected an integer >= 0, got -1"),
    ("seed 2**64", dict(seed=2**64), ValueError, r"seed: expected an integer in \[0, 2\*\*64\), got 18446744073709551616"),
    ("seed float", dict(seed=1.5), TypeError, r"seed: expected an integer >= 0, got float 1.5"),
]


@pytest.mark.parametrize("cls", CELLS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("kw,exc,pattern", [case(*c) for c in CONSTRUCTOR_CASES])
def test_layer_constructor_rejects(cls, kw, exc, pattern):
    kw = dict(kw)
    args = (kw.pop("input_size", I), kw.pop("hidden_size", H), kw.pop("num_layers", 1))
    raises(lambda: cls(*args, **kw), exc, pattern)


def test_rnn_nonlinearity():
    raises(lambda: RNN(I, H, nonlinearity="sigmoid"), ValueError, r"nonlinearity: expected 'tanh' or 'relu', got 'sigmoid'")


def _weights(layer, fn):
    return {k: fn(v) for k, v in layer.state_dict().items()}


LOAD_CASES = [
    ("NaN weight", lambda l: _weights(l, lambda v: np.full_like(v, np.nan)), NonFiniteError, r"weight_ih_l0: contains NaN or infinity"),
    ("inf weight", lambda l: dict(_weights(l, lambda v: v), bias_hh_l0=np.full(l.state_dict()["bias_hh_l0"].shape, np.inf)), NonFiniteError, r"bias_hh_l0: contains NaN or infinity"),
    ("missing", lambda l: {}, ValueError, r'missing parameter "weight_ih_l0"'),
    ("unexpected", lambda l: dict(_weights(l, lambda v: v), extra=np.zeros(1)), ValueError, r'unexpected parameters \["extra"\]'),
    ("wrong shape", lambda l: _weights(l, lambda v: np.zeros(v.shape + (1,))), ValueError, r"weight_ih_l0: expected shape \(\d+, 3\), got \(\d+, 3, 1\)"),
    ("str values", lambda l: _weights(l, lambda v: "abc"), TypeError, r"weight_ih_l0: expected a numeric array, got str"),
    ("object values", lambda l: _weights(l, lambda v: object()), TypeError, r"weight_ih_l0: expected a numeric array, got object"),
    ("not a mapping", lambda l: [("weight_ih_l0", 1)], TypeError, r"state_dict: expected a mapping of name -> array, got list"),
    ("int key", lambda l: {0: np.zeros(1)}, TypeError, r"state_dict: expected str keys, got int 0"),
]


@pytest.mark.parametrize("cls", CELLS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("sd_of,exc,pattern", [case(*c) for c in LOAD_CASES])
def test_layer_load_state_dict_rejects_and_changes_nothing(cls, sd_of, exc, pattern):
    layer = _layer(cls)
    before = layer.state_dict()
    raises(lambda: layer.load_state_dict(sd_of(layer)), exc, pattern)
    after = layer.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


UNUSUAL_LAYOUTS = {
    "non-contiguous": lambda x: np.repeat(x, 2, axis=2)[:, :, ::2],
    "reversed view": lambda x: np.ascontiguousarray(x[::-1])[::-1],
    "read-only": lambda x: _readonly(x.copy()),
    "Fortran order": np.asfortranarray,
    "nested list": lambda x: x.tolist(),
    "misaligned": lambda x: _misaligned(x),
}


def _misaligned(a):
    """A copy of ``a`` whose data is not aligned to its dtype (``np.frombuffer`` at an odd offset)."""
    buf = bytearray(a.nbytes + 1)
    out = np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


def _readonly(a):
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("cls", CELLS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("layout", sorted(UNUSUAL_LAYOUTS))
def test_layer_accepts_unusual_layouts_with_identical_results(cls, layout):
    x = np.random.default_rng(0).standard_normal((5, 3, I)).astype(F32)
    want, _ = _layer(cls).forward(x)
    got, _ = _layer(cls).forward(UNUSUAL_LAYOUTS[layout](x))
    assert np.array_equal(got, want)


# ================================================================================= language model
def _lm(cell="lstm", **kw):
    return LanguageModel(V, 4, 8, 1, cell, **kw)


LM_CONSTRUCTOR_CASES = [
    ("vocab_size 0", dict(vocab_size=0), ValueError, r"vocab_size: expected an integer >= 1, got 0"),
    ("vocab_size -1", dict(vocab_size=-1), ValueError, r"vocab_size: expected an integer >= 1, got -1"),
    ("vocab_size bool", dict(vocab_size=True), TypeError, r"vocab_size: expected an integer >= 1, got bool True"),
    ("vocab_size float", dict(vocab_size=10.0), TypeError, r"vocab_size: expected an integer >= 1, got float 10.0"),
    ("vocab_size str", dict(vocab_size="10"), TypeError, r"vocab_size: expected an integer >= 1, got str '10'"),
    ("vocab_size None", dict(vocab_size=None), TypeError, r"vocab_size: expected an integer >= 1, got NoneType"),
    ("vocab_size 2**70", dict(vocab_size=2**70), ValueError, r"vocab_size: expected an integer in \[1, 2\*\*63\)"),
    ("embed_size 0", dict(embed_size=0), ValueError, r"embed_size: expected an integer >= 1, got 0"),
    ("embed_size float", dict(embed_size=1.5), TypeError, r"embed_size: expected an integer >= 1, got float 1.5"),
    ("hidden_size 0", dict(hidden_size=0), ValueError, r"hidden_size: expected an integer >= 1, got 0"),
    ("hidden_size bool", dict(hidden_size=False), TypeError, r"hidden_size: expected an integer >= 1, got bool False"),
    ("num_layers 0", dict(num_layers=0), ValueError, r"num_layers: expected an integer >= 1, got 0"),
    ("num_layers -2", dict(num_layers=-2), ValueError, r"num_layers: expected an integer >= 1, got -2"),
    ("cell unknown", dict(cell="transformer"), ValueError, r"cell: expected one of \['gru', 'lstm', 'rnn', 'rnn_relu', 'rnn_tanh'\], got 'transformer'"),
    ("cell list", dict(cell=["lstm"]), TypeError, r"cell: expected one of .*, got list \['lstm'\]"),
    ("cell None", dict(cell=None), TypeError, r"cell: expected one of .*, got NoneType None"),
    ("dropout 1", dict(dropout=1), ValueError, r"dropout: expected a float in \[0, 1\), got 1"),
    ("dropout -0.5", dict(dropout=-0.5), ValueError, r"dropout: expected a float in \[0, 1\), got -0.5"),
    ("dropout nan", dict(dropout=float("nan")), ValueError, r"dropout: expected a float in \[0, 1\), got nan"),
    ("dropout str", dict(dropout="0"), ValueError, r"dropout: expected a float in \[0, 1\), got '0'"),
    ("dtype int32", dict(dtype=np.int32), TypeError, r"dtype: expected numpy.float32 or numpy.float64, got int32"),
    ("dtype float16", dict(dtype="float16"), TypeError, r"dtype: expected numpy.float32 or numpy.float64, got float16"),
    ("seed -1", dict(seed=-1), ValueError, r"seed: expected an integer >= 0, got -1"),
    ("seed 2**64", dict(seed=2**64), ValueError, r"seed: expected an integer in \[0, 2\*\*64\)"),
    ("sizes beyond memory", dict(vocab_size=10**6, embed_size=10**6, hidden_size=10), ValueError, rf"model size: expected sizes whose arrays {FIT}, got vocab_size 1000000, embed_size 1000000, hidden_size 10, num_layers 1 \(\d+ bytes"),
    ("hidden 2**31", dict(hidden_size=2**31), ValueError, rf"model size: expected sizes whose arrays {FIT}, got vocab_size \d+, embed_size 4, hidden_size 2147483648"),
    ("sizes overflow", dict(vocab_size=2**40, embed_size=2**40, hidden_size=2**40), ValueError, rf"model size: expected sizes whose arrays {FIT}.*overflows a 64-bit count"),
    ("one-hot vocab beyond memory", dict(vocab_size=2**33, embed_size=None, hidden_size=8), ValueError, rf"model size: expected sizes whose arrays {FIT}, got vocab_size 8589934592, embed_size None"),
]


@pytest.mark.parametrize("kw,exc,pattern", [case(*c) for c in LM_CONSTRUCTOR_CASES])
def test_language_model_constructor_rejects(kw, exc, pattern):
    args = dict(vocab_size=V, embed_size=4, hidden_size=8, num_layers=1)
    args.update(kw)
    raises(lambda: LanguageModel(**args), exc, pattern)


IDS_CASES = [
    ("float ids", lambda: np.zeros((2, 2)), TypeError, r"{n}: expected integer token ids, got dtype float64"),
    ("bool ids", lambda: np.zeros((2, 2), bool), TypeError, r"{n}: expected integer token ids, got dtype bool"),
    ("str ids", lambda: np.array([["a"]]), TypeError, r"{n}: expected integer token ids, got dtype <U1"),
    ("object ids", lambda: np.array([[None]]), TypeError, r"{n}: expected integer token ids, got dtype object"),
    ("None", lambda: None, TypeError, r"{n}: expected integer token ids, got dtype object"),
    ("ragged list", lambda: [[1, 2], [3]], TypeError, r"{n}: expected integer token ids"),
    ("negative id", lambda: np.array([[0, -1]]), ValueError, r"{n}: expected token ids >= 0, got -1"),
    ("id == vocab", lambda: np.array([[0, V]]), ValueError, rf"{{n}} token id: expected an id in \[0, {V}\), got {V}"),
    ("id 2**62", lambda: np.array([[2**62]]), ValueError, rf"{{n}} token id: expected an id in \[0, {V}\), got 4611686018427387904"),
    ("uint64 2**64-1", lambda: np.array([[2**64 - 1]], np.uint64), ValueError, r"{n}: expected token ids below 2\*\*63, got 18446744073709551615"),
    ("1-D", lambda: np.zeros(3, np.int64), ValueError, r"{n}: expected a 2-D array \(seq_len, batch\) of token ids, got shape \(3,\)"),
    ("3-D", lambda: np.zeros((2, 2, 2), np.int64), ValueError, r"{n}: expected a 2-D array .*got shape \(2, 2, 2\)"),
    ("0-D", lambda: np.int64(3), ValueError, r"{n}: expected a 2-D array .*got shape \(\)"),
    ("seq_len 0", lambda: np.zeros((0, 2), np.int64), ValueError, r"{n}: expected shape \(seq_len >= 1, batch >= 1\), got \(0, 2\)"),
    ("batch 0", lambda: np.zeros((2, 0), np.int64), ValueError, r"{n}: expected shape \(seq_len >= 1, batch >= 1\), got \(2, 0\)"),
    ("huge broadcast int64", lambda: HUGE_IDS, ValueError, rf"{{n}}: expected sizes whose arrays {FIT}, got (shape \[268435456, 268435456\]|shape \(268435456, 268435456\))"),
    ("huge broadcast int32", lambda: HUGE_IDS_I32, ValueError, rf"{{n}}: expected an array that {FIT}, got shape \(1073741824, 1073741824\)"),
]

LM_METHODS = {
    "logits": ("ids", lambda m, x: m.logits(x)),
    "evaluate": ("inputs", lambda m, x: m.evaluate(x, x)),
    "loss_and_grad": ("inputs", lambda m, x: m.loss_and_grad(x, x)),
    "train_step": ("inputs", lambda m, x: m.train_step(x, x)),
}


def _trainable(cell="lstm", **kw):
    m = _lm(cell, **kw)
    m.set_optimizer("adam", 1e-3)
    return m


@pytest.mark.parametrize("method", sorted(LM_METHODS))
@pytest.mark.parametrize("ids_of,exc,pattern", [case(*c) for c in IDS_CASES])
def test_language_model_rejects_bad_token_ids(method, ids_of, exc, pattern):
    name, call = LM_METHODS[method]
    m = _trainable()
    before = m.state_dict()
    raises(lambda: call(m, ids_of()), exc, pattern.format(n=name))
    assert all(np.array_equal(before[k], v) for k, v in m.state_dict().items())


X = np.arange(6, dtype=np.int64).reshape(3, 2) % V

TARGET_CASES = [
    ("targets shape", lambda: np.zeros((2, 2), np.int64), ValueError, r"targets: expected shape \(3, 2\), got \(2, 2\)"),
    ("targets out of range", lambda: np.full((3, 2), V + 1), ValueError, rf"targets token id: expected an id in \[0, {V}\), got {V + 1}"),
    ("targets negative", lambda: np.full((3, 2), -2), ValueError, r"targets: expected token ids >= 0, got -2"),
    ("targets float", lambda: np.zeros((3, 2)), TypeError, r"targets: expected integer token ids, got dtype float64"),
]


@pytest.mark.parametrize("method", ["evaluate", "loss_and_grad", "train_step"])
@pytest.mark.parametrize("y_of,exc,pattern", [case(*c) for c in TARGET_CASES])
def test_language_model_rejects_bad_targets(method, y_of, exc, pattern):
    m = _trainable()
    raises(lambda: getattr(m, method)(X, y_of()), exc, pattern)


def _lm_state(cell, h, c="zeros"):
    if isinstance(c, str):
        c = arr((1, 2, 8)) if cell == "lstm" else None
    return (h, c)


STATE_LM_CASES = [
    ("lstm", "h wrong shape", lambda: (arr((1, 3, 8)), arr((1, 3, 8))), ValueError, r"state h: expected shape \(1, 2, 8\), got \(1, 3, 8\)"),
    ("lstm", "h float64", lambda: (arr((1, 2, 8), dtype=np.float64), arr((1, 2, 8))), TypeError, r"state h: expected dtype float32, got float64"),
    ("lstm", "h NaN", lambda: (arr((1, 2, 8), np.nan), arr((1, 2, 8))), NonFiniteError, r"h0: expected finite values, got NaN"),
    ("lstm", "c inf", lambda: (arr((1, 2, 8)), arr((1, 2, 8), np.inf)), NonFiniteError, r"c0: expected finite values, got inf"),
    ("lstm", "c missing", lambda: (arr((1, 2, 8)), None), ValueError, r"state: an LSTM state needs both h and c"),
    ("lstm", "list not tuple", lambda: [arr((1, 2, 8)), arr((1, 2, 8))], TypeError, r"state: expected a tuple \(h, c\) .*got list"),
    ("lstm", "1-tuple", lambda: (arr((1, 2, 8)),), TypeError, r"state: expected a tuple \(h, c\) .*got tuple"),
    ("lstm", "str", lambda: ("h", "c"), TypeError, r"state h: expected a numpy.ndarray of float32, got str"),
    ("gru", "c given", lambda: (arr((1, 2, 8)), arr((1, 2, 8))), ValueError, r"state: a gru model has no cell state c"),
    ("gru", "h 2-D", lambda: (arr((2, 8)), None), ValueError, r"state h: expected a 3-D array, got 2-D with shape \[2, 8\]"),
]


@pytest.mark.parametrize("method", ["logits", "evaluate", "loss_and_grad", "train_step"])
@pytest.mark.parametrize("cell,state_of,exc,pattern",
                         [pytest.param(c, s, e, p, id=f"{c} {i}") for c, i, s, e, p in STATE_LM_CASES])
def test_language_model_rejects_bad_states(method, cell, state_of, exc, pattern):
    m = _trainable(cell)
    args = (X,) if method == "logits" else (X, X)
    raises(lambda: getattr(m, method)(*args, state_of()), exc, pattern)


CLIP_CASES = [
    ("clip -1", -1, ValueError, r"clip: expected a finite number > 0, got -1"),
    ("clip 0", 0.0, ValueError, r"clip: expected a finite number > 0, got 0"),
    ("clip nan", float("nan"), ValueError, r"clip: expected a finite number > 0 or None, got nan"),
    ("clip inf", float("inf"), ValueError, r"clip: expected a finite number > 0 or None, got inf"),
    ("clip str", "1", TypeError, r"clip: expected a finite number > 0 or None, got str '1'"),
    ("clip bool", True, TypeError, r"clip: expected a finite number > 0 or None, got bool True"),
]


@pytest.mark.parametrize("clip,exc,pattern", [case(*c) for c in CLIP_CASES])
def test_train_step_rejects_bad_clip(clip, exc, pattern):
    raises(lambda: _trainable().train_step(X, X, clip=clip), exc, pattern)


def test_misaligned_arrays_work_through_the_api_and_are_refused_by_the_binding():
    m = _lm()
    ids = np.arange(6, dtype=np.int64).reshape(3, 2) % V
    h = np.full((1, 2, 8), 0.1, F32)
    want, _ = m.logits(ids, (h, h))
    got, _ = m.logits(_misaligned(ids), (_misaligned(h), _misaligned(h)))
    assert np.array_equal(got, want)
    m.load_state_dict({k: _misaligned(v) for k, v in m.state_dict().items()})
    assert np.array_equal(m.sample(_misaligned(np.array([1, 2])), length=5, seed=1), m.sample([1, 2], length=5, seed=1))
    raises(lambda: m._core.logits(_misaligned(ids)), ValueError,
           r"ids: expected an aligned array, got one whose data is not aligned to its dtype")
    raises(lambda: _layer(LSTM)._core.forward(_misaligned(arr((2, 2, I))), None, None, True), ValueError,
           r"x: expected an aligned array")


def test_train_step_needs_an_optimizer():
    raises(lambda: _lm().train_step(X, X), ValueError, r"train_step: expected an optimizer, got none \(call set_optimizer first\)")
    raises(lambda: _lm().set_lr(0.1), ValueError, r"set_lr: expected an optimizer, got none")


OPTIMIZER_CASES = [
    ("name unknown", dict(name="adagrad"), ValueError, r"optimizer: expected 'sgd', 'adam', 'adamw' or 'rmsprop', got \"adagrad\""),
    ("name int", dict(name=5), TypeError, r"optimizer: expected 'sgd', 'adam', 'adamw' or 'rmsprop', got int 5"),
    ("name None", dict(name=None), TypeError, r"optimizer: expected 'sgd', 'adam', 'adamw' or 'rmsprop', got NoneType"),
    ("lr -1", dict(lr=-1), ValueError, r"lr: expected a finite number >= 0, got -1"),
    ("lr nan", dict(lr=float("nan")), ValueError, r"lr: expected a finite number >= 0, got nan"),
    ("lr inf", dict(lr=float("inf")), ValueError, r"lr: expected a finite number >= 0, got inf"),
    ("lr str", dict(lr="0.1"), TypeError, r"lr: expected a finite number >= 0, got str '0.1'"),
    ("lr bool", dict(lr=True), TypeError, r"lr: expected a finite number >= 0, got bool True"),
    ("lr None", dict(lr=None), TypeError, r"lr: expected a finite number >= 0, got NoneType"),
    ("momentum 1", dict(name="sgd", momentum=1.0), ValueError, r"momentum: expected a number in \[0, 1\), got 1"),
    ("momentum -0.1", dict(name="sgd", momentum=-0.1), ValueError, r"momentum: expected a number in \[0, 1\), got -0.1"),
    ("momentum nan", dict(name="sgd", momentum=float("nan")), ValueError, r"momentum: expected a number in \[0, 1\), got nan"),
    ("weight_decay -1", dict(weight_decay=-1.0), ValueError, r"weight_decay: expected a finite number >= 0, got -1"),
    ("eps 0", dict(eps=0.0), ValueError, r"eps: expected a finite number > 0, got 0"),
    ("eps -1", dict(eps=-1.0), ValueError, r"eps: expected a finite number > 0, got -1"),
    ("betas 1-tuple", dict(betas=(0.9,)), TypeError, r"betas: expected a pair \(beta1, beta2\) of numbers in \[0, 1\), got \(0.9,\)"),
    ("betas str", dict(betas="ab"), TypeError, r"betas: expected a pair \(beta1, beta2\).*got 'ab'"),
    ("betas None", dict(betas=None), TypeError, r"betas: expected a pair \(beta1, beta2\).*got None"),
    ("beta1 1.0", dict(betas=(1.0, 0.9)), ValueError, r"beta1: expected a number in \[0, 1\), got 1"),
    ("beta2 1.5", dict(betas=(0.9, 1.5)), ValueError, r"beta2: expected a number in \[0, 1\), got 1.5"),
    ("beta1 str", dict(betas=("a", 0.9)), TypeError, r"beta1: expected a number in \[0, 1\), got str 'a'"),
    ("nesterov without momentum", dict(name="sgd", nesterov=True), ValueError, r"nesterov: expected momentum > 0 with nesterov, got 0"),
    ("nesterov str", dict(name="sgd", nesterov="yes"), TypeError, r"nesterov: expected True or False, got str 'yes'"),
    ("momentum with adam", dict(momentum=0.9), ValueError,
     r"momentum: applies to optimizer 'sgd' only, got momentum=0.9 with 'adam' \(Adam's momentum is betas\[0\]\)"),
    ("nesterov with adamw", dict(name="adamw", nesterov=True), ValueError, r"nesterov: applies to optimizer 'sgd' only"),
]


@pytest.mark.parametrize("kw,exc,pattern", [case(*c) for c in OPTIMIZER_CASES])
def test_set_optimizer_rejects(kw, exc, pattern):
    kw = dict(kw)
    name, lr = kw.pop("name", "adam"), kw.pop("lr", 1e-3)
    raises(lambda: _lm().set_optimizer(name, lr, **kw), exc, pattern)


@pytest.mark.parametrize("lr,exc,pattern", [(-1.0, ValueError, r"lr: expected a finite number >= 0, got -1"),
                                            (float("nan"), ValueError, r"lr: expected a finite number >= 0, got nan"),
                                            ("x", TypeError, r"lr: expected a finite number >= 0, got str 'x'")])
def test_set_lr_rejects(lr, exc, pattern):
    raises(lambda: _trainable().set_lr(lr), exc, pattern)


LM_LOAD_CASES = [
    ("NaN weight", lambda sd: dict(sd, **{"linear.bias": np.full_like(sd["linear.bias"], np.nan)}), NonFiniteError, r"linear.bias: contains NaN or infinity"),
    ("-inf weight", lambda sd: dict(sd, **{"embedding.weight": np.full_like(sd["embedding.weight"], -np.inf)}), NonFiniteError, r"embedding.weight: contains NaN or infinity"),
    ("missing", lambda sd: {k: v for k, v in sd.items() if k != "linear.weight"}, ValueError, r'missing parameter "linear.weight"'),
    ("unexpected", lambda sd: dict(sd, bogus=np.zeros(2)), ValueError, r'unexpected parameters \["bogus"\]'),
    ("mismatched vocabulary", lambda sd: LanguageModel(V + 3, 4, 8, 1).state_dict(), ValueError, rf"embedding.weight: expected shape \({V}, 4\), got \({V + 3}, 4\)"),
    ("str value", lambda sd: dict(sd, **{"linear.bias": "x"}), TypeError, r"linear.bias: expected a numeric array, got str"),
    ("not a mapping", lambda sd: list(sd.items()), TypeError, r"state_dict: expected a mapping of name -> array, got list"),
    ("int key", lambda sd: {1: np.zeros(1)}, TypeError, r"state_dict: expected str keys, got int 1"),
]


@pytest.mark.parametrize("sd_of,exc,pattern", [case(*c) for c in LM_LOAD_CASES])
def test_language_model_load_state_dict_rejects_and_changes_nothing(sd_of, exc, pattern):
    m = _lm()
    before = m.state_dict()
    raises(lambda: m.load_state_dict(sd_of(dict(before))), exc, pattern)
    assert all(np.array_equal(before[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("batch,exc,pattern", [(0, ValueError, r"batch_size: expected an integer >= 1, got 0"),
                                               (-1, ValueError, r"batch_size: expected an integer >= 1, got -1"),
                                               (2.0, TypeError, r"batch_size: expected an integer >= 1, got float")])
def test_zero_state_rejects(batch, exc, pattern):
    raises(lambda: _lm().zero_state(batch), exc, pattern)


@pytest.mark.parametrize("layout", sorted(UNUSUAL_LAYOUTS))
def test_language_model_accepts_unusual_layouts_with_identical_results(layout):
    m = _lm()
    ids = np.random.default_rng(1).integers(0, V, (6, 3)).astype(np.int64)
    want, _ = m.logits(ids)
    odd = UNUSUAL_LAYOUTS[layout](ids[:, :, None])
    odd = np.asarray(odd)[:, :, 0] if layout != "nested list" else [[r[0] for r in row] for row in odd]
    got, _ = m.logits(odd)
    assert np.array_equal(got, want)
    got, _ = m.logits(ids.astype(np.int32))
    assert np.array_equal(got, want)


# ======================================================================================= sampling
SAMPLING_CASES = [
    ("length -1", dict(length=-1), ValueError, r"length: expected an integer >= 0, got -1"),
    ("length float", dict(length=3.0), TypeError, r"length: expected an integer >= 0, got float 3.0"),
    ("length bool", dict(length=True), TypeError, r"length: expected an integer >= 0, got bool True"),
    ("length str", dict(length="3"), TypeError, r"length: expected an integer >= 0, got str '3'"),
    ("length 2**40", dict(length=2**40), ValueError, r"length: expected at most 67108864 tokens, got 1099511627776"),
    ("length 2**70", dict(length=2**70), ValueError, r"length: expected an integer in \[0, 2\*\*63\), got 1180591620717411303424"),
    ("temperature -1", dict(temperature=-1), ValueError, r"temperature: expected a finite number >= 0 \(0 = greedy\), got -1.0"),
    ("temperature nan", dict(temperature=float("nan")), ValueError, r"temperature: expected a finite number >= 0 \(0 = greedy\), got nan"),
    ("temperature inf", dict(temperature=float("inf")), ValueError, r"temperature: expected a finite number >= 0 \(0 = greedy\), got inf"),
    ("temperature str", dict(temperature="hot"), TypeError, r"temperature: expected a finite number >= 0 \(0 = greedy\), got str 'hot'"),
    ("temperature bool", dict(temperature=True), TypeError, r"temperature: expected .*, got bool True"),
    ("top_k 0", dict(top_k=0), ValueError, r"top_k: expected an integer >= 1, got 0"),
    ("top_k -1", dict(top_k=-1), ValueError, r"top_k: expected an integer >= 1, got -1"),
    ("top_k float", dict(top_k=2.5), TypeError, r"top_k: expected an integer >= 1 or None, got float 2.5"),
    ("top_k bool", dict(top_k=True), TypeError, r"top_k: expected an integer >= 1 or None, got bool True"),
    ("top_k str", dict(top_k="3"), TypeError, r"top_k: expected an integer >= 1 or None, got str '3'"),
    ("top_p 0", dict(top_p=0.0), ValueError, r"top_p: expected a number in \(0, 1\] or None, got 0.0"),
    ("top_p -0.1", dict(top_p=-0.1), ValueError, r"top_p: expected a number in \(0, 1\] or None, got -0.1"),
    ("top_p 1.01", dict(top_p=1.01), ValueError, r"top_p: expected a number in \(0, 1\] or None, got 1.01"),
    ("top_p nan", dict(top_p=float("nan")), ValueError, r"top_p: expected a number in \(0, 1\] or None, got nan"),
    ("top_p str", dict(top_p="0.9"), TypeError, r"top_p: expected a number in \(0, 1\] or None, got str '0.9'"),
    ("repetition_penalty 0", dict(repetition_penalty=0), ValueError, r"repetition_penalty: expected a finite number > 0 \(1 = no penalty\), got 0.0"),
    ("repetition_penalty -1", dict(repetition_penalty=-1.0), ValueError, r"repetition_penalty: expected a finite number > 0 .*got -1.0"),
    ("repetition_penalty nan", dict(repetition_penalty=float("nan")), ValueError, r"repetition_penalty: expected a finite number > 0 .*got nan"),
    ("repetition_penalty inf", dict(repetition_penalty=float("inf")), ValueError, r"repetition_penalty: expected a finite number > 0 .*got inf"),
    ("seed -1", dict(seed=-1), ValueError, r"seed: expected an integer >= 0, got -1"),
    ("seed 2**64", dict(seed=2**64), ValueError, r"seed: expected an integer in \[0, 2\*\*64\), got 18446744073709551616"),
    ("seed float", dict(seed=1.5), TypeError, r"seed: expected an integer >= 0, got float 1.5"),
    ("seed str", dict(seed="1"), TypeError, r"seed: expected an integer >= 0, got str '1'"),
    ("greedy int", dict(greedy=1), TypeError, r"greedy: expected True or False, got int 1"),
    ("greedy str", dict(greedy="yes"), TypeError, r"greedy: expected True or False, got str 'yes'"),
]

STOP_IDS_CASES = [
    ("stop id == vocab", dict(stop_tokens=[V]), ValueError, rf"stop token: expected an id in \[0, {V}\), got {V}"),
    ("stop id -1", dict(stop_tokens=[-1]), ValueError, r"stop token: expected an integer >= 0, got -1"),
    ("stop id 2**70", dict(stop_tokens=[2**70]), ValueError, r"stop token: expected an integer in \[0, 2\*\*63\), got 1180591620717411303424"),
    ("stop id float", dict(stop_tokens=[1.5]), TypeError, r"stop token: expected an integer >= 0, got float 1.5"),
    ("stop_tokens str", dict(stop_tokens="a"), TypeError, r"stop_tokens: expected a sequence of token ids, got str"),
    ("stop_tokens int", dict(stop_tokens=5), TypeError, r"stop_tokens: expected a sequence of token ids, got int"),
]

PREFIX_CASES = [
    ("empty", [], ValueError, r"{n}: expected at least one token id, got an empty prefix"),
    ("id == vocab", [1, V], ValueError, rf"{{n}}: expected token ids in \[0, {V}\), got {V}"),
    ("negative", [-1], ValueError, r"{n}: expected token ids in \[0, \d+\), got -1"),
    ("float", [1.5], TypeError, r"{n}: expected integer token ids, got dtype float64"),
    ("text", "the", TypeError, r"{n}: expected token ids \(a 1-D integer array or list\), got str; encode text"),
    ("2-D", [[1, 2]], ValueError, r"{n}: expected a 1-D array \(seq_len,\) of token ids, got shape \(1, 2\)"),
    ("None", None, TypeError, r"{n}: expected integer token ids, got dtype object"),
]

SAMPLERS = {
    "LanguageModel.sample": lambda m, kw: m.sample([1, 2], **{"length": 3, **kw}),
    "LanguageModel.sample_many": lambda m, kw: m.sample_many([[1], [2, 3]], **{"length": 3, **kw}),
    "LyricGenerator.generate": lambda m, kw: _gen(m).generate("the", **_gen_kw(kw)),
    "LyricGenerator.generate_many": lambda m, kw: _gen(m).generate_many(["the", "cat"], **_gen_kw(kw)),
    "LyricGenerator.stream": lambda m, kw: "".join(_gen(m).stream("the", **_gen_kw(kw))),
}


def _gen(m):
    return LyricGenerator(m, TOK)


def _gen_kw(kw):
    return {"length": 3, **kw}


@pytest.mark.parametrize("entry", sorted(SAMPLERS))
@pytest.mark.parametrize("kw,exc,pattern", [case(*c) for c in SAMPLING_CASES])
def test_sampling_options_are_checked_everywhere(entry, kw, exc, pattern):
    raises(lambda: SAMPLERS[entry](_lm(), kw), exc, pattern)


@pytest.mark.parametrize("entry", ["LanguageModel.sample", "LanguageModel.sample_many"])
@pytest.mark.parametrize("kw,exc,pattern", [case(*c) for c in STOP_IDS_CASES])
def test_stop_token_ids_are_checked(entry, kw, exc, pattern):
    raises(lambda: SAMPLERS[entry](_lm(), kw), exc, pattern)


@pytest.mark.parametrize("entry", ["sample", "sample_many", "beam_search"])
@pytest.mark.parametrize("prefix,exc,pattern", [case(*c) for c in PREFIX_CASES])
def test_prefix_ids_are_checked(entry, prefix, exc, pattern):
    m = _lm()
    if entry == "sample_many":
        raises(lambda: m.sample_many([[1], prefix], length=2), exc, pattern.format(n=r"prefixes\[1\]"))
    else:
        raises(lambda: getattr(m, entry)(prefix, 2), exc, pattern.format(n="prefix_ids"))


MANY_CASES = [
    ("prefixes str", "abc", TypeError, r"prefixes: expected a list of 1-D token id arrays, got str"),
    ("prefixes int", 5, TypeError, r"prefixes: expected a list of 1-D token id arrays, got int"),
    ("prefixes array", np.zeros((2, 2), np.int64), TypeError, r"prefixes: expected a list of 1-D token id arrays, got ndarray"),
    ("too many prefixes", [[1]] * 4097, ValueError, r"prefixes: expected at most 4096 sequences in one call, got 4097"),
]


@pytest.mark.parametrize("prefixes,exc,pattern", [case(*c) for c in MANY_CASES])
def test_sample_many_rejects(prefixes, exc, pattern):
    raises(lambda: _lm().sample_many(prefixes, length=2), exc, pattern)


def test_sample_many_seed_overflow():
    raises(lambda: _lm().sample_many([[1], [2]], length=2, seed=2**64 - 1), ValueError,
           r"seed: expected seed \+ len\(prefixes\) - 1 < 2\*\*64, got seed 18446744073709551615")


BEAM_CASES = [
    ("width 0", dict(beam_width=0), ValueError, r"beam_width: expected an integer >= 1, got 0"),
    ("width -1", dict(beam_width=-1), ValueError, r"beam_width: expected an integer >= 1, got -1"),
    ("width float", dict(beam_width=1.5), TypeError, r"beam_width: expected an integer >= 1, got float 1.5"),
    ("width 4097", dict(beam_width=4097), ValueError, r"beam width: expected an integer in \[1, 4096\], got 4097"),
    ("width 2**70", dict(beam_width=2**70), ValueError, r"beam_width: expected an integer in \[1, 2\*\*63\)"),
    ("length -1", dict(length=-1), ValueError, r"length: expected an integer >= 0, got -1"),
    ("length x width too large", dict(length=2**25, beam_width=8), ValueError, r"length × beam width: expected at most 67108864 tokens, got 33554432 × 8"),
]


@pytest.mark.parametrize("kw,exc,pattern", [case(*c) for c in BEAM_CASES])
def test_beam_search_rejects(kw, exc, pattern):
    raises(lambda: _lm().beam_search([1, 2], **{"length": 3, **kw}), exc, pattern)


# ==================================================================================== generator
GENERATOR_CASES = [
    ("model str", lambda: LyricGenerator("model", TOK), TypeError, r"model: expected an rnnrs.LanguageModel, got str"),
    ("tokenizer None", lambda: LyricGenerator(_lm(), None), TypeError, r"tokenizer: expected a fitted rnnrs CharTokenizer or WordTokenizer, got None"),
    ("tokenizer unfitted", lambda: LyricGenerator(_lm(), CharTokenizer()), TypeError, r"tokenizer: expected a fitted .*got CharTokenizer\(vocab_size=None"),
    ("mismatched vocabulary", lambda: LyricGenerator(_lm(), CharTokenizer().fit(TEXT + "xyz")), ValueError, rf"tokenizer: expected a vocabulary of {V} tokens \(the model's vocab_size\), got {V + 3}"),
    ("prefix None", lambda: _gen(_lm()).generate(None), TypeError, r"prefix: expected a str, got NoneType"),
    ("prefix bytes", lambda: _gen(_lm()).generate(b"the"), TypeError, r"prefix: expected a str, got bytes"),
    ("prefix int", lambda: _gen(_lm()).beam(5), TypeError, r"prefix: expected a str, got int"),
    ("prefixes str", lambda: _gen(_lm()).generate_many("the"), TypeError, r"prefixes: expected a list of str, got str"),
    ("prefixes None", lambda: _gen(_lm()).generate_many(None), TypeError, r"prefixes: expected a list of str, got NoneType"),
    ("prefixes of int", lambda: _gen(_lm()).generate_many([1, 2]), TypeError, r"prefix: expected a str, got int"),
    ("too many prefixes", lambda: _gen(_lm()).generate_many(["a"] * 4097, length=1), ValueError, r"prefixes: expected at most 4096 sequences in one call, got 4097"),
    ("stop unknown token", lambda: _gen(_lm()).generate("the", stop=["zz"]), ValueError, r"stop: expected tokens of the model's vocabulary, got 'zz'"),
    ("stop int", lambda: _gen(_lm()).generate("the", stop=[1]), TypeError, r"stop: expected tokens as str, got int 1"),
    ("stop None", lambda: _gen(_lm()).generate("the", stop=None), TypeError, r"stop: expected a sequence of tokens \(str\), got NoneType"),
    ("chunk_size 0", lambda: _gen(_lm()).stream("the", chunk_size=0), ValueError, r"chunk_size: expected an integer >= 1, got 0"),
    ("chunk_size float", lambda: _gen(_lm()).stream("the", chunk_size=1.0), TypeError, r"chunk_size: expected an integer >= 1, got float 1.0"),
    ("beam width 0", lambda: _gen(_lm()).beam("the", width=0), ValueError, r"width: expected an integer >= 1, got 0"),
    ("beam length -1", lambda: _gen(_lm()).beam("the", length=-1), ValueError, r"length: expected an integer >= 0, got -1"),
    ("score int", lambda: _gen(_lm()).score(5), TypeError, r"text: expected a str, got int"),
    ("score prefix None", lambda: _gen(_lm()).score("the", prefix=None), TypeError, r"prefix: expected a str, got NoneType"),
]


@pytest.mark.parametrize("fn,exc,pattern", [case(*c) for c in GENERATOR_CASES])
def test_generator_rejects(fn, exc, pattern):
    raises(fn, exc, pattern)


def test_unknown_prefix_characters_warn_and_still_generate():
    g = _gen(_lm())
    with pytest.warns(UnknownTokenWarning, match=r"prefix 'ZQ the': 3 token\(s\) not in the model's vocabulary .*'Z', 'Q', ' '|prefix 'ZQ the': 2 token"):
        text = g.generate("ZQ the", length=4, seed=1)
    assert text.startswith("ZQ the") and len(text) > len("ZQ the")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert g.generate("", length=3, seed=1) != ""  # nothing known: starts from the newline token
    with pytest.warns(UnknownTokenWarning):
        assert g.generate("中文", length=2, seed=1).startswith("中文")


# =================================================================================== tokenizers
TOKENIZERS = [CharTokenizer, WordTokenizer]

TOKENIZER_CASES = [
    ("fit empty", lambda c: c().fit(""), ValueError, r"cannot fit a tokenizer on empty text"),
    ("fit bytes", lambda c: c().fit(b"abc"), TypeError, r"text must be str, got bytes"),
    ("fit None", lambda c: c().fit(None), TypeError, r"text must be str, got NoneType"),
    ("fit int", lambda c: c().fit(5), TypeError, r"text must be str, got int"),
    ("fit lone surrogate", lambda c: c().fit("ab \udc80 cd"), ValueError, r"text contains a lone surrogate U\+DC80 at index 3"),
    ("fit punctuation only, letters_only", lambda c: c(letters_only=True).fit("123 ... !!"), ValueError, r"no tokens left to fit after normalisation \(lower=False, letters_only=True\)"),
    ("min_freq bool", lambda c: c().fit("a b", min_freq=True), TypeError, r"min_freq must be an int, got bool"),
    ("min_freq float", lambda c: c().fit("a b", min_freq=1.5), TypeError, r"min_freq must be an int, got float"),
    ("max_size 0", lambda c: c().fit("a b", max_size=0), ValueError, r"max_size must be >= 1 \+ len\(reserved_tokens\) = 1 .*got 0"),
    ("lower int", lambda c: c(lower=1), TypeError, r"lower must be a bool, got int"),
    ("letters_only str", lambda c: c(letters_only="yes"), TypeError, r"letters_only must be a bool, got str"),
    ("vocab not a Vocab", lambda c: c(vocab={"a": 1}), TypeError, r"vocab must be a Vocab or None, got dict"),
    ("encode before fit", lambda c: c().encode("abc"), NotFittedError, r"has no vocabulary: call fit\(text\) first"),
    ("decode before fit", lambda c: c().decode([1]), NotFittedError, r"has no vocabulary: call fit\(text\) first"),
    ("encode bytes", lambda c: c().fit("a b").encode(b"a"), TypeError, r"text must be str, got bytes"),
    ("encode None", lambda c: c().fit("a b").encode(None), TypeError, r"text must be str, got NoneType"),
    ("decode out of range", lambda c: c().fit("a b").decode([99]), ValueError, r"token id 99 is out of range for a vocabulary of size \d+"),
    ("decode negative", lambda c: c().fit("a b").decode([-1]), ValueError, r"token id -1 is out of range"),
    ("decode float", lambda c: c().fit("a b").decode([1.5]), TypeError, r"ids must be integers, got dtype float64"),
    ("decode 2-D", lambda c: c().fit("a b").decode([[1]]), ValueError, r"ids must be 1-D, got shape \(1, 1\)"),
    ("decode str", lambda c: c().fit("a b").decode("ab"), TypeError, r"ids must be integers, got dtype <U2"),
]


@pytest.mark.parametrize("cls", TOKENIZERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("fn,exc,pattern", [case(*c) for c in TOKENIZER_CASES])
def test_tokenizer_rejects(cls, fn, exc, pattern):
    raises(lambda: fn(cls), exc, pattern)


def _tok_json(**change):
    d = json.loads(TOK.to_json())
    d.update(change)
    return json.dumps(d)


TOKENIZER_FILE_CASES = [
    ("not JSON", lambda p: tokenizer_from_json("{"), ValueError, r"tokenizer is not valid JSON"),
    ("not UTF-8", lambda p: tokenizer_from_json(b"\xff\xfe"), ValueError, r"tokenizer JSON is not valid UTF-8"),
    ("a list", lambda p: tokenizer_from_json("[]"), ValueError, r"tokenizer JSON must be an object, got list"),
    ("deeply nested", lambda p: tokenizer_from_json("[" * 100_000 + "]" * 100_000), ValueError, r"tokenizer JSON is nested too deeply"),
    ("wrong format", lambda p: tokenizer_from_json(_tok_json(format="bpe")), ValueError, r"tokenizer JSON has format 'bpe', expected 'rnnrs-tokenizer'"),
    ("wrong version", lambda p: tokenizer_from_json(_tok_json(version=2)), ValueError, r"tokenizer JSON has unsupported version 2, expected 1"),
    ("wrong level", lambda p: tokenizer_from_json(_tok_json(level="byte")), ValueError, r"tokenizer JSON has level 'byte', expected one of \['bpe', 'char', 'word'\]"),
    ("lower not bool", lambda p: tokenizer_from_json(_tok_json(lower="no")), ValueError, r"tokenizer JSON field 'lower' must be true or false, got 'no'"),
    ("vocab junk", lambda p: tokenizer_from_json(_tok_json(vocab={"format": "x"})), ValueError, r"vocab JSON has format 'x', expected 'rnnrs-vocab'"),
    ("Vocab.from_dict list", lambda p: Vocab.from_dict([]), ValueError, r"vocab JSON must be an object, got list"),
    ("missing file", lambda p: load_tokenizer(p / "missing.json"), FileNotFoundError, r"No such file or directory"),
    ("a directory", lambda p: load_tokenizer(p), IsADirectoryError, r"Is a directory"),
    ("binary file", lambda p: load_tokenizer(_write(p / "bin.json", b"\x00\xff\x00")), ValueError, r"tokenizer file .*bin.json' is not valid UTF-8"),
]


def _write(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("fn,exc,pattern", [case(*c) for c in TOKENIZER_FILE_CASES])
def test_tokenizer_files_rejected(tmp_path, fn, exc, pattern):
    raises(lambda: fn(tmp_path), exc, pattern)


def test_single_character_corpora_work():
    tok = CharTokenizer().fit("a")
    assert len(tok.vocab) == 2 and tok.decode(tok.encode("aaa")) == "aaa"
    assert tok.encode("b").tolist() == [0]  # unknown -> <unk>
    r = train("a" * 400, steps=2, embed=4, hidden=4, layers=1, seq_len=4, batch_size=2, quiet=True, plot=False)
    assert r.summary["steps"] == 2 and len(r.tokenizer.vocab) == 2


# ===================================================================================== datasets
IDS = np.arange(100) % 7

DATASET_CASES = [
    ("empty corpus", dict(ids=np.array([], np.int64)), ValueError, r"corpus too short: .*needs at least \(batch_size \+ 1\) \* seq_len = 9 tokens, got 0"),
    ("seq_len longer than corpus", dict(seq_len=1000), ValueError, r"corpus too short: one batch of batch_size=2 x seq_len=1000 .*= 3000 tokens, got 100"),
    ("float ids", dict(ids=np.arange(100.0)), ValueError, r"ids must be an integer array \(expected dtype int64\), got dtype float64"),
    ("negative ids", dict(ids=-IDS - 1), ValueError, r"ids must be non-negative token ids, got -1 at index 0"),
    ("2-D ids", dict(ids=IDS.reshape(10, 10)), ValueError, r"ids must be 1-D \(expected shape \(n,\)\), got shape \(10, 10\)"),
    ("uint64 ids beyond int64", dict(ids=np.full(100, 2**64 - 1, np.uint64)), ValueError, r"ids contains ids that do not fit in int64"),
    ("batch_size 0", dict(batch_size=0), ValueError, r"batch_size must be >= 1, got 0"),
    ("batch_size bool", dict(batch_size=True), TypeError, r"batch_size must be an int, got bool"),
    ("seq_len -1", dict(seq_len=-1), ValueError, r"seq_len must be >= 1, got -1"),
    ("seq_len float", dict(seq_len=3.0), TypeError, r"seq_len must be an int, got float"),
    ("seed -1", dict(seed=-1), ValueError, r"seed must be >= 0, got -1"),
    ("epoch -1", dict(epoch=-1), ValueError, r"epoch must be >= 0, got -1"),
    ("start past the epoch", dict(start=10**6), ValueError, r"start must be <= the number of batches in this epoch \(\d+\), got 1000000"),
    ("huge batch", dict(batch_size=2**62, seq_len=2**62), ValueError, r"corpus too short"),
]


@pytest.mark.parametrize("fn", [random_batches, sequential_batches], ids=lambda f: f.__name__)
@pytest.mark.parametrize("kw,exc,pattern", [case(*c) for c in DATASET_CASES])
def test_batches_reject(fn, kw, exc, pattern):
    args = dict(ids=IDS, batch_size=2, seq_len=3, seed=0, epoch=0)
    args.update(kw)
    raises(lambda: fn(**args), exc, pattern)


SPLIT_CASES = [
    ("fraction 1", dict(val_fraction=1.0), ValueError, r"val_fraction must be in \[0, 1\), got 1.0"),
    ("fraction -0.1", dict(val_fraction=-0.1), ValueError, r"val_fraction must be in \[0, 1\), got -0.1"),
    ("fraction nan", dict(val_fraction=float("nan")), ValueError, r"val_fraction must be in \[0, 1\), got nan"),
    ("fraction str", dict(val_fraction="0.1"), TypeError, r"val_fraction must be a float, got str"),
    ("fraction bool", dict(val_fraction=True), TypeError, r"val_fraction must be a float, got bool"),
    ("too small", dict(ids=np.array([1, 2, 3]), val_fraction=0.5), ValueError, r"validation part too small: val_fraction=0.5 of 3 tokens gives 2 tokens, need at least 4|part too small"),
    ("empty", dict(ids=np.array([], np.int64), val_fraction=0.0), ValueError, r"training part too small: 0 of 0 tokens"),
]


@pytest.mark.parametrize("kw,exc,pattern", [case(*c) for c in SPLIT_CASES])
def test_split_train_val_rejects(kw, exc, pattern):
    args = dict(ids=IDS, val_fraction=0.1, min_tokens=4)
    args.update(kw)
    raises(lambda: split_train_val(args.pop("ids"), **args), exc, pattern)


def test_lmbatches_sampling():
    raises(lambda: LMBatches(IDS, 2, 3, sampling="shuffled"), ValueError,
           r"sampling must be one of \('random', 'sequential'\), got 'shuffled'")


# ================================================================================ train / Trainer
TRAIN_TEXT = "hello world, the quick brown fox jumps over the lazy dog. " * 20
TINY = dict(embed=4, hidden=8, layers=1, seq_len=4, batch_size=2, steps=2, quiet=True, plot=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    (d / "empty.txt").write_bytes(b"")
    (d / "binary.txt").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    (d / "latin1.txt").write_bytes("café au lait, crème brûlée ".encode("latin-1") * 20)
    (d / "single.txt").write_text("a", encoding="utf-8")
    (d / "short.txt").write_text("hello world\n", encoding="utf-8")
    (d / "good.txt").write_text(TRAIN_TEXT, encoding="utf-8")
    (d / "a_file").write_text("x", encoding="utf-8")
    return d


TRAIN_CASES = [
    ("empty text", lambda f: train("", **TINY), ConfigError, r"corpus: expected some text, got an empty string"),
    ("single character", lambda f: train("a", **TINY), ConfigError, r"corpus too short: 1 tokens, but one batch of batch_size 2 x seq_len 4 needs \(batch_size \+ 1\) \* seq_len = 12"),
    ("seq_len longer than the corpus", lambda f: train("abcdef", **dict(TINY, seq_len=1000)), ConfigError, r"corpus too short: 6 tokens, .*seq_len 1000 needs .* = 3,000"),
    ("bytes data", lambda f: train(b"abc", **TINY), ConfigError, r"ids: expected a 1-D integer array of token ids, got shape \(\) and dtype \|S3"),
    ("int data", lambda f: train(5, **TINY), ConfigError, r"ids: expected a 1-D integer array of token ids, got shape \(\) and dtype int64"),
    ("float ids", lambda f: train(np.arange(100.0), **TINY), ConfigError, r"ids: expected a 1-D integer array .*dtype float64"),
    ("negative ids", lambda f: train(-np.arange(100), **TINY), ConfigError, r"ids: expected token ids >= 0, got -99"),
    ("2-D ids", lambda f: train(np.zeros((10, 10), np.int64), **TINY), ConfigError, r"ids: expected a 1-D integer array of token ids, got shape \(10, 10\)"),
    ("ids beyond the tokenizer", lambda f: train(np.arange(200) % 50, tokenizer=TOK, **TINY), ConfigError, rf"ids: expected ids below the tokenizer's vocabulary size {V}, got 49"),
    ("lone surrogate", lambda f: train("a\udc80" * 50, **TINY), ConfigError, r"corpus: text contains a lone surrogate U\+DC80 at index 1"),
    ("tokenizer junk", lambda f: train(TRAIN_TEXT, tokenizer="junk", **TINY), TypeError, r"tokenizer: expected a fitted rnnrs CharTokenizer, WordTokenizer or BPETokenizer or None, got str"),
    ("tokenizer unfitted", lambda f: train(TRAIN_TEXT, tokenizer=CharTokenizer(), **TINY), ConfigError, r"tokenizer: expected a fitted tokenizer \(call fit\(text\) first\), got CharTokenizer\(vocab_size=None"),
    ("corpus missing", lambda f: train(corpus=str(f / "missing.txt"), **TINY), ConfigError, r"corpus .*missing.txt: no such file"),
    ("corpus empty", lambda f: train(corpus=str(f / "empty.txt"), **TINY), ConfigError, r"corpus .*empty.txt: the file is empty"),
    ("corpus binary", lambda f: train(corpus=str(f / "binary.txt"), **TINY), ConfigError, r"corpus .*binary.txt: expected UTF-8 text, got a binary file \(NUL byte at offset 7\)"),
    ("corpus latin-1", lambda f: train(corpus=str(f / "latin1.txt"), **TINY), ConfigError, r"corpus .*latin1.txt: expected UTF-8 text, got byte 0xe9 at offset 3"),
    ("corpus single char", lambda f: train(corpus=str(f / "single.txt"), **TINY), ConfigError, r"corpus too short: 1 tokens"),
    ("corpus directory", lambda f: train(corpus=str(f), **TINY), ConfigError, r"corpus .*binary.txt: expected UTF-8 text, got a binary file"),  # (a folder: its files)
    ("corpus empty folder", lambda f: (os.makedirs(f / "empty_dir", exist_ok=True), train(corpus=str(f / "empty_dir"), **TINY)), ConfigError, r"corpus .*empty_dir: expected a folder with text files, got an empty folder"),
    ("corpus empty list", lambda f: train(corpus=[], **TINY), ConfigError, r"corpus: expected a path, a non-empty list of paths, or None, got \[\]"),
    ("corpus int", lambda f: train(corpus=5, **TINY), ConfigError, r"corpus: expected a path, a non-empty list of paths, or None, got 5"),
    ("two data sources", lambda f: train(TRAIN_TEXT, corpus=str(f / "good.txt"), **TINY), ConfigError, r"data: expected one of text=, ids= or config.corpus, got more than one"),
    ("out is a file", lambda f: train(TRAIN_TEXT, out=str(f / "a_file"), **TINY), ConfigError, r"out .*a_file: expected a directory, got a file"),
    ("out uncreatable", lambda f: train(TRAIN_TEXT, out=str(f / "a_file" / "sub"), **TINY), ConfigError, r"out .*sub: cannot create the directory"),
    ("resume without out", lambda f: train(TRAIN_TEXT, resume=True, **TINY), ConfigError, r"resume: needs out"),
    ("unknown option", lambda f: train(TRAIN_TEXT, hiden=8, **TINY), TypeError, r"unknown training options \['hiden'\]; see rnnrs.TrainConfig"),
]

CONFIG_CASES = [
    ("hidden", 0, r"an integer >= 1, got 0"), ("hidden", -1, r"an integer >= 1, got -1"),
    ("hidden", True, r"an integer >= 1, got True"), ("hidden", 8.0, r"an integer >= 1, got 8.0"),
    ("hidden", "8", r"an integer >= 1, got '8'"), ("embed", 0, r"an integer >= 1 or None, got 0"),
    ("layers", 0, r"an integer >= 1, got 0"), ("seq_len", 0, r"an integer >= 1, got 0"),
    ("batch_size", -2, r"an integer >= 1, got -2"), ("steps", 0, r"an integer >= 1 or None, got 0"),
    ("epochs", 1.5, r"an integer >= 1 or None, got 1.5"), ("dropout", 1.0, r"a finite number in \[0, 1\), got 1.0"),
    ("dropout", -0.1, r"a finite number in \[0, 1\), got -0.1"), ("dropout", float("nan"), r"got nan"),
    ("lr", 0, r"a finite number in \(0, inf\), got 0"), ("lr", -1e-3, r"got -0.001"),
    ("lr", float("inf"), r"got inf"), ("clip", -1, r"a finite number in \(0, inf\) or None, got -1"),
    ("clip", 0, r"got 0"), ("val_fraction", 1, r"a finite number in \[0, 1\), got 1"),
    ("cell", "transformer", r"one of 'lstm', 'gru', 'rnn', 'rnn_tanh', 'rnn_relu', got 'transformer'"),
    ("cell", ["lstm"], r"got \['lstm'\]"), ("sampling", "shuffled", r"one of 'random', 'sequential', got 'shuffled'"),
    ("optimizer", "adagrad", r"one of 'sgd', 'adam', 'adamw', 'rmsprop', got 'adagrad'"),
    ("dtype", "float16", r"one of 'float32', 'float64', got 'float16'"),
    ("on_nonfinite", "ignore", r"one of 'stop', 'skip', got 'ignore'"),
    ("seed", -1, r"an integer >= 0, got -1"), ("seed", 1.0, r"an integer >= 0, got 1.0"),
    ("seed", 2**63, r"an integer in \[0, 2\*\*63\), got 9223372036854775808"),
    ("max_vocab", 1, r"an integer >= 2 or None, got 1"), ("min_freq", 0, r"an integer >= 1, got 0"),
    ("sample_temperature", -1, r"a finite number in \(0, inf\), got -1"),
    ("sample_length", 0, r"an integer >= 1, got 0"), ("momentum", 0.9, r"applies to optimizer 'sgd' only"),
    ("quiet", "yes", r"True or False, got 'yes'"), ("decay_gamma", 0, r"a finite number in \(0, 1\], got 0"),
    ("warmup", -1, r"an integer >= 0, got -1"), ("patience", 0, r"an integer >= 1 or None, got 0"),
]


@pytest.mark.parametrize("fn,exc,pattern", [case(*c) for c in TRAIN_CASES])
def test_train_rejects(files, fn, exc, pattern):
    raises(lambda: fn(files), exc, pattern)


@pytest.mark.parametrize("field,value,pattern", [pytest.param(f, v, p, id=f"{f}={v!r}") for f, v, p in CONFIG_CASES])
def test_train_config_rejects(field, value, pattern):
    raises(lambda: train(TRAIN_TEXT, **dict(TINY, **{field: value})), ConfigError, rf"^{field}: .*{pattern}")


@pytest.mark.parametrize("kw,pattern", [
    (dict(hidden=2**40), rf"model size: expected sizes whose arrays {FIT}, got vocab_size \d+, embed_size 4, hidden_size 1099511627776"),
    (dict(embed=2**40), rf"model size: expected sizes whose arrays {FIT}, got vocab_size \d+, embed_size 1099511627776"),
    (dict(hidden=2**16, layers=2**20), rf"model size: expected sizes whose arrays {FIT}"),
    (dict(batch_size=2**40), r"corpus too short: [\d,]+ tokens, but one batch of batch_size 1099511627776"),
])
def test_train_rejects_sizes_beyond_memory(kw, pattern):
    raises(lambda: train(TRAIN_TEXT, **dict(TINY, **kw)), ValueError, pattern)


def test_trainer_rejects_a_non_config():
    raises(lambda: Trainer("config"), TypeError, r"config: expected a TrainConfig, got str")


# ============================================================================ checkpoint loading
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("saved")
    m = _trainable()
    m.save(d / "model", TOK)
    m.save(d / "no_tokenizer")
    ck.save_checkpoint(d / "run", m, TOK, {"step": 0})
    tensors, meta = ck.read_tensors(d / "model" / ck.MODEL_FILE)
    other = CharTokenizer().fit(TEXT + "xyz")
    ck.write_tensors(d / "mismatched.safetensors", tensors, dict(meta, tokenizer=other.to_json(indent=None)))
    ck.write_tensors(d / "v2.safetensors", tensors, dict(meta, version="2"))
    (d / "junk.safetensors").write_bytes(os.urandom(256))
    (d / "empty.safetensors").write_bytes(b"")
    import pickle
    (d / "pickle.safetensors").write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    (d / "emptydir").mkdir()
    return d


LOADER_CASES = [
    ("missing file", "missing.safetensors", OSError, r"No such file or directory"),
    ("directory without the file", "emptydir", OSError, r"No such file or directory"),
    ("empty file", "empty.safetensors", ck.CheckpointError, r"empty.safetensors: not a safetensors file: expected at least 8 bytes, got 0"),
    ("random bytes", "junk.safetensors", ck.CheckpointError, r"junk.safetensors: (header of \d+ bytes exceeds the limit|not a valid safetensors file)"),
    ("a pickle", "pickle.safetensors", ck.CheckpointError, r"pickle.safetensors: (header of \d+ bytes exceeds|not a valid safetensors)"),
    ("wrong version", "v2.safetensors", ck.CheckpointError, r"v2.safetensors: expected format version 1, got '2' \(written by a different rnnrs version\)"),
    ("mismatched vocabulary", "mismatched.safetensors", ck.CheckpointError, rf"mismatched vocabulary and model: the model has vocab_size {V}, the tokenizer has {V + 3} tokens"),
]

LOADERS = {
    "load_model": ck.load_model,
    "load_checkpoint": ck.load_checkpoint,
    "LyricGenerator.load": LyricGenerator.load,
    "LanguageModel.load": LanguageModel.load,
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize("name,exc,pattern", [case(*c) for c in LOADER_CASES])
def test_loaders_reject(saved, loader, name, exc, pattern):
    if loader == "load_checkpoint" and name in ("v2.safetensors", "mismatched.safetensors"):
        pattern = r"expected format version 1|expected a 'checkpoint' file, got 'model'"
    raises(lambda: LOADERS[loader](saved / name), exc, pattern)


def test_loading_the_wrong_kind_or_without_tokenizer(saved):
    raises(lambda: ck.load_checkpoint(saved / "model"), OSError, r"No such file")
    raises(lambda: ck.load_checkpoint(saved / "model" / ck.MODEL_FILE), ck.CheckpointError,
           r"expected a 'checkpoint' file, got 'model'")
    raises(lambda: LyricGenerator.load(saved / "no_tokenizer"), ValueError,
           r"expected a model file with its tokenizer, got one without")


# ===================================================================================== the CLI
@pytest.fixture(scope="module")
def cli_env(tmp_path_factory, files):
    d = tmp_path_factory.mktemp("cli")
    run = d / "run"
    assert main(["train", "--corpus", str(files / "good.txt"), "--out", str(run), "--steps", "2", "--embed", "4",
                 "--hidden", "8", "--layers", "1", "--seq-len", "4", "--batch-size", "2", "--quiet", "--no-plot"]) == 0
    tensors, meta = ck.read_tensors(run / ck.MODEL_FILE)
    bigger = CharTokenizer().fit(TRAIN_TEXT + "ZQX")
    (d / "mismatched").mkdir()
    ck.write_tensors(d / "mismatched" / ck.MODEL_FILE, tensors, dict(meta, tokenizer=bigger.to_json(indent=None)))
    LanguageModel(5, 4, 4, 1).save(d / "no_tokenizer")
    return {"run": str(run), "mismatched": str(d / "mismatched"), "no_tok": str(d / "no_tokenizer"),
            "out": str(d / "new"), "files": files, **{k: str(files / f"{k}.txt") for k in
                                                      ("empty", "binary", "latin1", "single", "short", "good")}}


T = ["train", "--corpus", "{good}", "--out", "{out}", "--steps", "2", "--seq-len", "4", "--batch-size", "2", "--quiet",
     "--no-plot"]
E = ["evaluate", "--model", "{run}", "--corpus"]
G = ["generate", "--model", "{run}", "--prefix", "the"]

CLI_CASES = [
    ("train: corpus missing", ["train", "--corpus", "{files}/missing.txt", "--out", "{out}"], r"corpus .*missing.txt: no such file"),
    ("train: corpus empty", ["train", "--corpus", "{empty}", "--out", "{out}"], r"empty.txt: the file is empty"),
    ("train: corpus binary", ["train", "--corpus", "{binary}", "--out", "{out}"], r"binary.txt: expected UTF-8 text, got a binary file \(NUL byte at offset 7\)"),
    ("train: corpus not UTF-8", ["train", "--corpus", "{latin1}", "--out", "{out}"], r"latin1.txt: expected UTF-8 text, got byte 0xe9 at offset 3"),
    ("train: single character", ["train", "--corpus", "{single}", "--out", "{out}"], r"corpus too short: 1 tokens"),
    ("train: seq-len longer than corpus", ["train", "--corpus", "{short}", "--out", "{out}", "--seq-len", "1000"], r"corpus too short: 12 tokens, .*seq_len 1000"),
    ("train: hidden beyond memory", T + ["--hidden", "2000000", "--embed", "2000000"], rf"model size: expected sizes whose arrays {FIT}, got vocab_size \d+, embed_size 2000000, hidden_size 2000000"),
    ("train: corpus is a directory", ["train", "--corpus", "{files}", "--out", "{out}"], r"binary.txt: expected UTF-8 text, got a binary file"),
    ("train: out is a file", ["train", "--corpus", "{good}", "--out", "{good}"], r"out .*good.txt: expected a directory, got a file"),
    ("train: hidden 0", T + ["--hidden", "0"], r"argument --hidden: expected an integer >= 1, got 0"),
    ("train: hidden -3", T + ["--hidden", "-3"], r"argument --hidden: expected an integer >= 1, got -3"),
    ("train: hidden float", T + ["--hidden", "8.5"], r"argument --hidden: invalid integer value: '8.5'"),
    ("train: hidden huge", T + ["--hidden", "99999999999"], rf"model size: expected sizes whose arrays {FIT}, got vocab_size \d+, embed_size 128, hidden_size 99999999999"),
    ("train: hidden 2**70", T + ["--hidden", str(2**70)], r"--hidden: expected an integer in \[1, 2\*\*63\), got 1180591620717411303424"),
    ("train: layers 0", T + ["--layers", "0"], r"argument --layers: expected an integer >= 1, got 0"),
    ("train: dropout 1", T + ["--dropout", "1"], r"--dropout: expected a finite number in \[0, 1\), got 1.0"),
    ("train: dropout nan", T + ["--dropout", "nan"], r"argument --dropout: expected a finite number, got nan"),
    ("train: lr -1", T + ["--lr", "-1"], r"--lr: expected a finite number in \(0, inf\), got -1.0"),
    ("train: lr inf", T + ["--lr", "inf"], r"argument --lr: expected a finite number, got inf"),
    ("train: lr text", T + ["--lr", "fast"], r"argument --lr: invalid number value: 'fast'"),
    ("train: seq-len 0", T + ["--seq-len", "0"], r"argument --seq-len: expected an integer >= 1, got 0"),
    ("train: batch-size -1", T + ["--batch-size", "-1"], r"argument --batch-size: expected an integer >= 1, got -1"),
    ("train: clip -1", T + ["--clip", "-1"], r"--clip: expected a finite number in \(0, inf\) or None, got -1.0"),
    ("train: val-fraction 1", T + ["--val-fraction", "1"], r"--val-fraction: expected a finite number in \[0, 1\), got 1.0"),
    ("train: cell unknown", T + ["--cell", "transformer"], r"argument --cell: invalid choice: 'transformer'"),
    ("train: epochs and steps", T + ["--epochs", "2"], r"argument --epochs: not allowed with argument --steps"),
    ("train: momentum with adam", T + ["--momentum", "0.9"], r"--momentum: applies to optimizer 'sgd' only"),
    ("train: unknown option", T + ["--hiden", "8"], r"unrecognized arguments: --hiden 8"),
    ("train: no corpus", ["train", "--out", "{out}"], r"--corpus: required to start a new run"),
    ("train: one-hot and embed", T + ["--one-hot", "--embed", "8"], r"--one-hot and --embed: expected at most one of them"),
    ("evaluate: binary corpus", E + ["{binary}"], r"binary.txt: expected UTF-8 text, got a binary file"),
    ("evaluate: not UTF-8", E + ["{latin1}"], r"latin1.txt: expected UTF-8 text, got byte 0xe9 at offset 3"),
    ("evaluate: empty corpus", E + ["{empty}"], r"empty.txt: the file is empty"),
    ("evaluate: single character", E + ["{single}"], r"--corpus .*single.txt: expected at least 2 tokens, got 1"),
    ("evaluate: missing corpus", E + ["{files}/missing.txt"], r"missing.txt: no such file"),
    ("evaluate: model missing", ["evaluate", "--model", "{files}/nope", "--corpus", "{good}"], r"--model .*nope: No such file or directory"),
    ("evaluate: model is text", ["evaluate", "--model", "{good}", "--corpus", "{good}"], r"good.txt: (header of \d+ bytes exceeds the limit|not a valid safetensors file)"),
    ("evaluate: mismatched vocabulary", ["evaluate", "--model", "{mismatched}", "--corpus", "{good}"], r"mismatched vocabulary and model: the model has vocab_size \d+, the tokenizer has \d+ tokens"),
    ("evaluate: no tokenizer", ["evaluate", "--model", "{no_tok}", "--corpus", "{good}"], r"expected a model saved with its tokenizer, got none"),
    ("evaluate: seq-len 0", E + ["{good}", "--seq-len", "0"], r"argument --seq-len: expected an integer >= 1, got 0"),
    ("generate: length -1", G + ["--length", "-1"], r"argument --length: expected an integer >= 0, got -1"),
    ("generate: length huge", G + ["--length", "99999999999"], r"length: expected at most 67108864 tokens, got 99999999999"),
    ("generate: length text", G + ["--length", "ten"], r"argument --length: invalid integer value: 'ten'"),
    ("generate: temperature -1", G + ["--temperature", "-1"], r"temperature: expected a finite number >= 0 \(0 = greedy\), got -1.0"),
    ("generate: temperature nan", G + ["--temperature", "nan"], r"argument --temperature: expected a finite number, got nan"),
    ("generate: top-k 0", G + ["--top-k", "0"], r"argument --top-k: expected an integer >= 1, got 0"),
    ("generate: top-p 0", G + ["--top-p", "0"], r"top_p: expected a number in \(0, 1\] or None, got 0.0"),
    ("generate: top-p 1.5", G + ["--top-p", "1.5"], r"top_p: expected a number in \(0, 1\] or None, got 1.5"),
    ("generate: repetition-penalty 0", G + ["--repetition-penalty", "0"], r"repetition_penalty: expected a finite number > 0"),
    ("generate: beam 0", G + ["--beam", "0"], r"argument --beam: expected an integer >= 1, got 0"),
    ("generate: beam 99999", G + ["--beam", "99999"], r"beam width: expected an integer in \[1, 4096\], got 99999"),
    ("generate: num-samples huge", G + ["--num-samples", "99999999"], r"--num-samples: expected at most 4096, got 99999999"),
    ("generate: seed -1", G + ["--seed", "-1"], r"argument --seed: expected an integer >= 0, got -1"),
    ("generate: seed 2**64", G + ["--seed", str(2**64)], r"seed: expected an integer in \[0, 2\*\*64\)"),
    ("generate: no prefix", ["generate", "--model", "{run}"], r"the following arguments are required: --prefix"),
    ("generate: model missing", ["generate", "--model", "{files}/nope", "--prefix", "a"], r"--model .*nope: No such file or directory"),
    ("generate: model is text", ["generate", "--model", "{good}", "--prefix", "a"], r"good.txt: (header of \d+ bytes exceeds the limit|not a valid safetensors file)"),
    ("generate: mismatched vocabulary", ["generate", "--model", "{mismatched}", "--prefix", "a"], r"mismatched vocabulary and model"),
    ("generate: no tokenizer", ["generate", "--model", "{no_tok}", "--prefix", "a"], r"expected a model file with its tokenizer, got one without"),
    ("no command", ["--bogus"], r"unrecognized arguments: --bogus|invalid choice"),
]


def _argv(argv, env):
    return [a.format(**env) for a in argv]


def _one_line_error(stderr, pattern, command):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(f"rnnrs{command}: error: "), lines[0]
    assert re.search(pattern, lines[0]), f"{lines[0]!r} does not match {pattern!r}"


@pytest.mark.parametrize("argv,pattern", [pytest.param(a, p, id=i) for i, a, p in CLI_CASES])
def test_cli_errors_in_process(cli_env, argv, pattern):
    argv = _argv(argv, cli_env)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    assert status == 2, err.getvalue()
    command = f" {argv[0]}" if argv[0] in ("train", "evaluate", "generate") else ""
    _one_line_error(err.getvalue(), pattern, command)
    assert not os.path.exists(os.path.join(cli_env["out"], ck.CHECKPOINT_FILE))


#: The cases also run in a real subprocess (exit status, nothing else on stderr, no traceback).
SUBPROCESS_CASES = ["train: corpus binary", "train: corpus not UTF-8", "train: single character", "train: hidden huge",
                    "train: dropout 1", "train: lr inf", "evaluate: single character", "evaluate: mismatched vocabulary",
                    "evaluate: model is text", "generate: temperature -1", "generate: top-p 0", "generate: top-k 0",
                    "generate: length huge", "generate: num-samples huge", "generate: model missing"]


@pytest.mark.parametrize("argv,pattern", [pytest.param(a, p, id=i) for i, a, p in CLI_CASES if i in SUBPROCESS_CASES])
def test_cli_errors_in_a_subprocess(cli_env, argv, pattern):
    argv = _argv(argv, cli_env)
    env = dict(os.environ, PYTHONIOENCODING="utf-8", RUST_BACKTRACE="1")
    p = subprocess.run([sys.executable, "-m", "rnnrs", *argv], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 2, p.stderr
    _one_line_error(p.stderr, pattern, f" {argv[0]}")


def test_generate_with_unknown_prefix_characters_warns_on_one_line(cli_env):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["generate", "--model", cli_env["run"], "--prefix", "ZQ hello", "--length", "5"])
    assert status == 0 and out.getvalue().startswith("ZQ hello")
    assert err.getvalue().count("\n") == 1 and "rnnrs generate: warning: prefix 'ZQ hello'" in err.getvalue()
    assert "'Z', 'Q'" in err.getvalue()


# ========================================================================== no error loses work
def _run(out, steps, **kw):
    events = []
    opts = dict(TINY, steps=steps, checkpoint_every=2, val_fraction=0.0, sampling="sequential")
    opts.update(kw)
    try:
        r = train(TRAIN_TEXT, out=str(out), callbacks=[events.append], **opts)
    except (TrainingError, NonFiniteError) as e:
        return events, e
    return events, r


@contextlib.contextmanager
def tmpfs(path, size):
    """A tmpfs of ``size`` bytes mounted at ``path`` (skip the test if mounting is not allowed)."""
    path.mkdir(exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip() or p.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _checkpoint_size(tmp_path):
    events, r = _run(tmp_path / "probe", 2)
    return os.path.getsize(tmp_path / "probe" / ck.CHECKPOINT_FILE)


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path):
    size = _checkpoint_size(tmp_path)
    # Room for one checkpoint, not for the second copy an atomic replace needs.
    room = (size * 3 // 2 + 4095) // 4096 * 4096
    if room >= 2 * size:
        pytest.skip(f"checkpoint of {size} bytes: a tmpfs cannot hold one copy but not two")
    with tmpfs(tmp_path / "small", room) as out:
        events, result = _run(out, 6)
        errors = [e for e in events if e["event"] == "checkpoint_error"]
        saved = [e["step"] for e in events if e["event"] == "checkpoint"]
        assert saved == [2] and errors, events[-3:]
        assert all("No space left on device" in e["message"] and "the previous checkpoint is kept" in e["message"]
                   for e in errors if e["path"].endswith(ck.CHECKPOINT_FILE))
        assert isinstance(result, TrainingError) and "could not be written" in str(result)
        c = ck.load_checkpoint(out)
        assert c.trainer["step"] == 2
        assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    # the saved checkpoint resumes elsewhere
    assert ck.load_checkpoint(tmp_path / "probe").trainer["step"] == 2


def test_disk_full_from_the_command_line_is_one_line_and_keeps_the_checkpoint(tmp_path):
    size = _checkpoint_size(tmp_path)
    room = (size * 3 // 2 + 4095) // 4096 * 4096
    if room >= 2 * size:
        pytest.skip("checkpoint too small for the tmpfs granularity")
    corpus = tmp_path / "c.txt"
    corpus.write_text(TRAIN_TEXT, encoding="utf-8")
    with tmpfs(tmp_path / "small", room) as out:
        p = subprocess.run([sys.executable, "-m", "rnnrs", "train", "--corpus", str(corpus), "--out", str(out),
                            "--steps", "6", "--checkpoint-every", "2", "--embed", "4", "--hidden", "8", "--layers", "1",
                            "--seq-len", "4", "--batch-size", "2", "--val-fraction", "0", "--sampling", "sequential",
                            "--quiet", "--no-plot"], capture_output=True, text=True, timeout=120)
        assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
        assert "rnnrs train: error: training finished but the final checkpoint could not be written" in p.stderr
        assert ck.load_checkpoint(out).trainer["step"] == 2


def test_a_read_only_directory_while_checkpointing_keeps_the_previous_checkpoint(tmp_path):
    with tmpfs(tmp_path / "ro", 4 * MIB) as out:
        def remount_read_only(event):
            if event["event"] == "checkpoint" and event["step"] == 2:
                subprocess.run(["mount", "-o", "remount,ro", str(out)], check=True)

        evs, result = [], None
        try:
            train(TRAIN_TEXT, out=str(out), callbacks=[evs.append, remount_read_only],
                  **dict(TINY, steps=6, checkpoint_every=2, val_fraction=0.0))
        except TrainingError as e:
            result = e
        errors = [e for e in evs if e["event"] == "checkpoint_error"]
        assert errors and all("Read-only file system" in e["message"] for e in errors), evs[-3:]
        assert [e["step"] for e in evs if e["event"] == "checkpoint"] == [2]
        assert isinstance(result, TrainingError)
        assert ck.load_checkpoint(out).trainer["step"] == 2


def test_an_overflowing_update_stops_naming_the_step_and_writes_no_poisoned_checkpoint(tmp_path):
    """A finite gradient times a huge learning rate overflows the weights: the step is refused
    (parameters unchanged), training stops naming it, and the checkpoint holds the last good state."""
    events, result = _run(tmp_path, 20, optimizer="adam", lr=1e38, clip=None, checkpoint_every=1)
    assert isinstance(result, NonFiniteError)
    assert re.search(r"at step 1 .*would make parameters non-finite; parameters left unchanged", str(result)), result
    assert "Training stopped with the parameters after step 0 (saved in the checkpoint)" in str(result)
    assert not [e for e in events if e["event"] == "checkpoint_error"]
    c = ck.load_checkpoint(tmp_path)
    assert c.trainer["step"] == 0 and c.trainer["status"] == "nonfinite"
    assert all(np.isfinite(v).all() for v in c.model.state_dict().values())
    assert all(np.isfinite(a).all() for _, a in c.model._core.optimizer_state()[1])


def test_an_overflowing_update_can_be_skipped(tmp_path):
    m = _trainable()
    m.set_optimizer("adam", 1e38)  # lr / (1 - beta1) overflows float32
    before = m.state_dict()
    raises(lambda: m.train_step(X, X), NonFiniteError, r"training step 1: .*would make parameters non-finite")
    assert all(np.array_equal(before[k], v) for k, v in m.state_dict().items())
    assert m._core.optimizer_state()[0] == 0
    m.set_lr(0.1)
    loss, norm, _ = m.train_step(X, X)
    assert math.isfinite(loss) and all(np.isfinite(v).all() for v in m.state_dict().values())


def test_overflowing_updates_are_skipped_with_on_nonfinite_skip_then_stop(tmp_path):
    events, result = _run(tmp_path, 30, optimizer="adam", lr=1e38, clip=None, on_nonfinite="skip")
    skips = [e for e in events if e["event"] == "nonfinite" and e["action"] == "skip"]
    assert [e["step"] for e in skips] == list(range(1, 11))
    assert all("batch skipped" in e["message"] for e in skips)
    assert isinstance(result, NonFiniteError) and re.search(r"at step 11 .*10 batches skipped before it", str(result))
    c = ck.load_checkpoint(tmp_path)
    assert c.trainer["step"] == 10 and c.trainer["skipped"] == list(range(1, 11))
    assert all(np.isfinite(v).all() for v in c.model.state_dict().values())

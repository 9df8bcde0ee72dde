"""Variable-length (padded) batches: ``forward(x, ..., lengths=...)`` and the following ``backward``.

The property: a padded batch gives the results of running each sequence alone — checked against the
float64 oracle (``oracle.rnn_forward/rnn_backward`` with ``lengths``, which by definition runs each
sequence alone) and against rnnrs itself on each sequence alone. Padding values never matter.
"""

import numpy as np
import pytest
from hypothesis import assume, given, note
from hypothesis import strategies as st

import oracle
import rnnrs

from test_layers import RELU_MARGIN, bf, bwd, make, params64

DTYPES = (np.float64, np.float32)


def fwd(m, mode, x, h0=None, c0=None, lengths=None):
    if mode == "lstm":
        state = None if h0 is None else (h0, c0)
        y, (h_n, c_n) = m.forward(x, state, lengths=lengths)
        return y, h_n, c_n
    y, h_n = m.forward(x, h0, lengths=lengths)
    return y, h_n, None


def configs():
    return st.fixed_dictionaries({
        "L": st.integers(1, 2),
        "bi": st.booleans(),
        "T": st.integers(1, 7),
        "B": st.one_of(st.integers(1, 5), st.integers(15, 34)),   # one or several 16-row blocks
        "I": st.integers(1, 5),
        "H": st.integers(1, 5),
        "init": st.booleans(),
        "state_grads": st.booleans(),
        "batch_first": st.booleans(),
        "seed": st.integers(0, 2 ** 32 - 1),
        "data_seed": st.integers(0, 2 ** 32 - 1),
    })


def draw_data(cfg, mode, dtype, lengths, attempt):
    rng = np.random.default_rng([cfg["data_seed"], attempt])
    L, D, T, B, I, H = cfg["L"], 2 if cfg["bi"] else 1, cfg["T"], cfg["B"], cfg["I"], cfg["H"]

    def u(shape):
        return rng.uniform(-2.0, 2.0, size=shape).astype(dtype).astype(np.float64)

    x = u((T, B, I))
    # Padding holds large junk: it must not leak anywhere.
    for b, n in enumerate(lengths):
        x[n:, b] = rng.uniform(-50.0, 50.0, size=(T - n, I)).astype(dtype)
    h0 = u((L * D, B, H)) if cfg["init"] else None
    c0 = u((L * D, B, H)) if cfg["init"] and mode == "lstm" else None
    dy = u((T, B, D * H))
    dh_n = u((L * D, B, H)) if cfg["state_grads"] else None
    dc_n = u((L * D, B, H)) if cfg["state_grads"] and mode == "lstm" else None
    return x, h0, c0, dy, dh_n, dc_n


def check(mode, dtype, cfg, lengths):
    L, bi, T, B, I, H = cfg["L"], cfg["bi"], cfg["T"], cfg["B"], cfg["I"], cfg["H"]
    D, lstm, bfirst = 2 if bi else 1, mode == "lstm", cfg["batch_first"]
    tag = f"{mode} {np.dtype(dtype).name} L={L} bi={bi} T={T} B={B} I={I} H={H} lengths={lengths}"
    m = make(mode, I, H, L, bi, dtype, seed=cfg["seed"], batch_first=bfirst)
    p = params64(m)
    for attempt in range(20):
        x, h0, c0, dy, dh_n, dc_n = draw_data(cfg, mode, dtype, lengths, attempt)
        if mode != "rnn_relu":
            break
        ok = all(n == 0 or oracle.relu_margin(p, x[:n, b:b + 1], None if h0 is None else h0[:, b:b + 1], L, bi)
                 > RELU_MARGIN[dtype] for b, n in enumerate(lengths))
        if ok:
            break
    else:
        assume(False)

    def cast(a):
        return None if a is None else a.astype(dtype)

    ey, eh, ec = oracle.rnn_forward(mode, p, x, h0, c0, L, bi, lengths=lengths)
    edx, edh0, edc0, eg = oracle.rnn_backward(mode, p, x, h0, c0, L, bi, dy, dh_n, dc_n, lengths=lengths)

    lens = np.array(lengths, dtype=np.int64)
    y, h_n, c_n = fwd(m, mode, bf(cast(x), bfirst), cast(h0), cast(c0), lengths=lens)
    y = bf(y, bfirst)
    oracle.assert_close(y, ey, dtype, f"y [{tag}]")
    oracle.assert_close(h_n, eh, dtype, f"h_n [{tag}]")
    if lstm:
        oracle.assert_close(c_n, ec, dtype, f"c_n [{tag}]")
    for b, n in enumerate(lengths):
        assert np.all(y[n:, b] == 0), f"output past the end of sequence {b} is not zero [{tag}]"
    state_grads = (cast(dh_n), cast(dc_n)) if lstm else cast(dh_n)
    if lstm:
        dx, (dh0, dc0) = m.backward(bf(cast(dy), bfirst), state_grads if dh_n is not None else None)
    else:
        dx, dh0 = m.backward(bf(cast(dy), bfirst), state_grads)
        dc0 = None
    dx = bf(dx, bfirst)
    oracle.assert_close(dx, edx, dtype, f"dx [{tag}]")
    oracle.assert_close(dh0, edh0, dtype, f"dh0 [{tag}]")
    if lstm:
        oracle.assert_close(dc0, edc0, dtype, f"dc0 [{tag}]")
    for b, n in enumerate(lengths):
        assert np.all(dx[n:, b] == 0), f"dx past the end of sequence {b} is not zero [{tag}]"
    g = m.grads()
    for k in g:
        oracle.assert_close(g[k], eg[k], dtype, f"grad {k} [{tag}]")

    # rnnrs itself on each sequence alone, same parameters.
    for b, n in enumerate(lengths):
        if n == 0:
            continue
        m.zero_grad()
        sl = slice(b, b + 1)
        yb, hb, cb = fwd(m, mode, bf(cast(x[:n, sl]), bfirst), cast(None if h0 is None else h0[:, sl]),
                         cast(None if c0 is None else c0[:, sl]))
        oracle.assert_close(y[:n, sl], bf(yb, bfirst), dtype, f"y vs alone b={b} [{tag}]")
        oracle.assert_close(h_n[:, sl], hb, dtype, f"h_n vs alone b={b} [{tag}]")
        if lstm:
            oracle.assert_close(c_n[:, sl], cb, dtype, f"c_n vs alone b={b} [{tag}]")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("mode", oracle.MODES)
@given(data=st.data())
def test_padded_batch_equals_each_sequence_alone(mode, dtype, data):
    cfg = data.draw(configs(), label="cfg")
    lengths = data.draw(st.lists(st.integers(0, cfg["T"]), min_size=cfg["B"], max_size=cfg["B"]), label="lengths")
    note(f"cfg={cfg} lengths={lengths}")
    check(mode, dtype, cfg, lengths)


@pytest.mark.parametrize("mode", oracle.MODES)
def test_fixed_unsorted_lengths_bidirectional(mode):
    cfg = dict(L=2, bi=True, T=9, B=5, I=4, H=6, init=True, state_grads=True, batch_first=False,
               seed=3, data_seed=11)
    check(mode, np.float64, cfg, [3, 9, 1, 0, 6])


@pytest.mark.parametrize("mode", oracle.MODES)
def test_full_lengths_are_bit_identical_to_no_lengths(mode):
    rng = np.random.default_rng(1)
    m = make(mode, 3, 4, 2, True, np.float32, seed=2)
    x = rng.standard_normal((6, 3, 3)).astype(np.float32)
    a = fwd(m, mode, x)
    b = fwd(m, mode, x, lengths=np.array([6, 6, 6]))
    for u, v in zip(a, b):
        if u is not None:
            np.testing.assert_array_equal(u, v)


def test_padding_values_do_not_matter():
    rng = np.random.default_rng(2)
    m = rnnrs.GRU(3, 5, 2, bidirectional=True, dtype=np.float64, seed=4)
    x = rng.standard_normal((8, 4, 3))
    lengths = np.array([2, 8, 5, 1])
    y1, h1 = m.forward(x, lengths=lengths)
    x2 = x.copy()
    for b, n in enumerate(lengths):
        x2[n:, b] = 1e3
    y2, h2 = m.forward(x2, lengths=lengths)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(h1, h2)


def test_dy_on_padding_is_ignored():
    rng = np.random.default_rng(3)
    m = rnnrs.LSTM(2, 3, dtype=np.float64, seed=1)
    x = rng.standard_normal((5, 2, 2))
    lengths = np.array([5, 2])
    dy = rng.standard_normal((5, 2, 3))
    m.forward(x, lengths=lengths)
    dx1, _ = m.backward(dy)
    g1 = m.grads()
    m.zero_grad()
    dy[2:, 1] = 77.0
    m.forward(x, lengths=lengths)
    dx2, _ = m.backward(dy)
    np.testing.assert_array_equal(dx1, dx2)
    for k, v in m.grads().items():
        np.testing.assert_array_equal(v, g1[k])


@pytest.mark.parametrize("bad,exc,msg", [
    (np.array([1, 2]), ValueError, "expected shape (3,)"),
    (np.array([1, 2, 7]), ValueError, "[0, 5]"),
    (np.array([1, -1, 2]), ValueError, "[0, 5]"),
    (np.array([1.0, 2.0, 3.0]), TypeError, "integers"),
])
def test_bad_lengths(bad, exc, msg):
    m = rnnrs.RNN(2, 3)
    x = np.zeros((5, 3, 2), dtype=np.float32)
    with pytest.raises(exc) as e:
        m.forward(x, lengths=bad)
    assert msg in str(e.value)


def test_core_rejects_bad_lengths_too():
    core = rnnrs._rnnrs.Recurrent("gru", 2, 3)
    x = np.zeros((4, 2, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=r"lengths: expected every length in \[0, 4\]"):
        core.forward(x, None, None, True, np.array([1, 9]))
    with pytest.raises(ValueError, match="lengths"):
        core.forward(x, None, None, True, np.array([1, 2, 3]))

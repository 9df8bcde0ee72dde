"""rnnrs layers (RNN tanh/relu, GRU, LSTM) against the float64 oracle.

Hypothesis property tests over random configurations, plus plain tests of the
module API (grad accumulation, state_dict, init, dropout, errors).

Skipped when rnnrs is not importable, unless RNNRS_REQUIRED=1 is set (then a
missing rnnrs is an error).
"""

import math
import os
import re

import numpy as np
import pytest
from hypothesis import assume, given, note
from hypothesis import strategies as st

import oracle

if os.environ.get("RNNRS_REQUIRED"):
    import rnnrs
else:
    rnnrs = pytest.importorskip("rnnrs")

DTYPES = (np.float64, np.float32)
# relu: redraw data when a pre-activation sits within this (relative) margin of
# the kink, since rounding could legitimately flip the branch there.
RELU_MARGIN = {np.float64: 1e-9, np.float32: 1e-4}


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def make(mode, I, H, L=1, bi=False, dtype=np.float64, seed=0, dropout=0.0, batch_first=False):
    kw = dict(input_size=I, hidden_size=H, num_layers=L, bidirectional=bi, dropout=dropout,
              batch_first=batch_first, dtype=dtype, seed=seed)
    if mode == "lstm":
        return rnnrs.LSTM(**kw)
    if mode == "gru":
        return rnnrs.GRU(**kw)
    if mode == "rnn_tanh":
        return rnnrs.RNN(nonlinearity="tanh", **kw)
    if mode == "rnn_relu":
        return rnnrs.RNN(nonlinearity="relu", **kw)
    raise ValueError(mode)


def fwd(m, mode, x, h0=None, c0=None):
    """-> (y, h_n, c_n) with c_n None unless lstm."""
    if mode == "lstm":
        if h0 is None:
            y, (h_n, c_n) = m.forward(x)
        else:
            y, (h_n, c_n) = m.forward(x, (h0, c0))
        return y, h_n, c_n
    y, h_n = m.forward(x) if h0 is None else m.forward(x, h0)
    return y, h_n, None


def bwd(m, mode, dy, dh_n=None, dc_n=None, omit=False):
    """-> (dx, dh0, dc0) with dc0 None unless lstm."""
    if mode == "lstm":
        if omit:
            dx, (dh0, dc0) = m.backward(dy)
        else:
            dx, (dh0, dc0) = m.backward(dy, (dh_n, dc_n))
        return dx, dh0, dc0
    if omit:
        dx, dh0 = m.backward(dy)
    elif dh_n is None:
        dx, dh0 = m.backward(dy, dh_n=None)
    else:
        dx, dh0 = m.backward(dy, dh_n)
    return dx, dh0, None


def params64(m):
    return {k: np.asarray(v, dtype=np.float64) for k, v in m.state_dict().items()}


def bf(a, batch_first):
    """time-major <-> batch-first for x / y / dy / dx."""
    return np.ascontiguousarray(a.transpose(1, 0, 2)) if batch_first else a


def mentions(msg, numbers):
    return all(re.search(rf"(?<!\d){n}(?!\d)", msg) for n in numbers)


# ---------------------------------------------------------------------------
# Property test: rnnrs == oracle
# ---------------------------------------------------------------------------
STATE_GRAD_CHOICES = {
    "lstm": ["omit", "none", "both", "h_only", "c_only"],
    "gru": ["omit", "none", "given"],
    "rnn_tanh": ["omit", "none", "given"],
    "rnn_relu": ["omit", "none", "given"],
}


def configs(mode):
    return st.fixed_dictionaries({
        "L": st.integers(1, 3),
        "bi": st.booleans(),
        "T": st.integers(1, 10),
        # Small batches, and batches spanning several of the time loops' 16-row blocks.
        "B": st.one_of(st.integers(1, 6), st.integers(15, 36)),
        "I": st.integers(1, 8),
        "H": st.integers(1, 8),
        "init": st.booleans(),
        "state_grads": st.sampled_from(STATE_GRAD_CHOICES[mode]),
        "batch_first": st.booleans(),
        "eval_first": st.booleans(),
        "seed": st.integers(0, 2 ** 32 - 1),
        "data_seed": st.integers(0, 2 ** 32 - 1),
    })


def _draw_data(cfg, mode, dtype, attempt):
    """float64 values in [-2, 2], rounded through the layer dtype."""
    rng = np.random.default_rng([cfg["data_seed"], attempt])
    L, D, T, B, I, H = cfg["L"], 2 if cfg["bi"] else 1, cfg["T"], cfg["B"], cfg["I"], cfg["H"]
    lstm = mode == "lstm"

    def u(shape):
        return rng.uniform(-2.0, 2.0, size=shape).astype(dtype).astype(np.float64)

    x = u((T, B, I))
    h0 = u((L * D, B, H)) if cfg["init"] else None
    c0 = u((L * D, B, H)) if (cfg["init"] and lstm) else None
    dy = u((T, B, D * H))
    sg = cfg["state_grads"]
    dh_n = u((L * D, B, H)) if sg in ("given", "both", "h_only") else None
    dc_n = u((L * D, B, H)) if sg in ("both", "c_only") else None
    return x, h0, c0, dy, dh_n, dc_n


def _check_against_oracle(mode, dtype, cfg):
    L, bi, T, B, I, H = cfg["L"], cfg["bi"], cfg["T"], cfg["B"], cfg["I"], cfg["H"]
    D = 2 if bi else 1
    lstm = mode == "lstm"
    batch_first = cfg["batch_first"]
    tag = (f"{mode} {np.dtype(dtype).name} L={L} bi={bi} T={T} B={B} I={I} H={H} "
           f"init={cfg['init']} sg={cfg['state_grads']} bf={batch_first} seed={cfg['seed']}")

    m = make(mode, I, H, L, bi, dtype, seed=cfg["seed"], batch_first=batch_first)
    sd = m.state_dict()
    assert list(sd) == list(oracle.param_shapes(mode, I, H, L, bi))
    for k, v in sd.items():
        assert v.dtype == dtype, f"state_dict()[{k}] dtype {v.dtype}"
    p = params64(m)

    for attempt in range(20):
        x, h0, c0, dy, dh_n, dc_n = _draw_data(cfg, mode, dtype, attempt)
        if mode != "rnn_relu" or oracle.relu_margin(p, x, h0, L, bi) > RELU_MARGIN[dtype]:
            break
    else:
        assume(False)

    ey, eh, ec = oracle.rnn_forward(mode, p, x, h0, c0, L, bi)
    edx, edh0, edc0, egrads = oracle.rnn_backward(mode, p, x, h0, c0, L, bi, dy, dh_n, dc_n)

    def cast(a):
        return None if a is None else a.astype(dtype)

    xin = bf(cast(x), batch_first)
    xin_copy = xin.copy()

    if cfg["eval_first"]:
        m.eval()
        assert not m.training
        y, h_n, c_n = fwd(m, mode, xin, cast(h0), cast(c0))
        oracle.assert_close(bf(y, batch_first), ey, dtype, f"y (eval) [{tag}]")
        oracle.assert_close(h_n, eh, dtype, f"h_n (eval) [{tag}]")
        if lstm:
            oracle.assert_close(c_n, ec, dtype, f"c_n (eval) [{tag}]")
        m.train()
    assert m.training

    y, h_n, c_n = fwd(m, mode, xin, cast(h0), cast(c0))
    np.testing.assert_array_equal(xin, xin_copy)        # input not modified
    assert y.dtype == dtype and h_n.dtype == dtype
    assert y.shape == ((B, T, D * H) if batch_first else (T, B, D * H))
    oracle.assert_close(bf(y, batch_first), ey, dtype, f"y [{tag}]")
    oracle.assert_close(h_n, eh, dtype, f"h_n [{tag}]")
    if lstm:
        assert c_n.dtype == dtype
        oracle.assert_close(c_n, ec, dtype, f"c_n [{tag}]")

    dx, dh0, dc0 = bwd(m, mode, bf(cast(dy), batch_first), cast(dh_n), cast(dc_n),
                       omit=cfg["state_grads"] == "omit")
    assert dx.dtype == dtype and dh0.dtype == dtype
    oracle.assert_close(bf(dx, batch_first), edx, dtype, f"dx [{tag}]")
    oracle.assert_close(dh0, edh0, dtype, f"dh0 [{tag}]")
    if lstm:
        assert dc0.dtype == dtype
        oracle.assert_close(dc0, edc0, dtype, f"dc0 [{tag}]")
    g = m.grads()
    assert list(g) == list(sd), f"grads() keys {list(g)} != state_dict keys {list(sd)}"
    for k in sd:
        assert g[k].dtype == dtype, f"grads()[{k}] dtype {g[k].dtype}"
        oracle.assert_close(g[k], egrads[k], dtype, f"grad {k} [{tag}]")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("mode", oracle.MODES)
@given(data=st.data())
def test_matches_oracle(mode, dtype, data):
    cfg = data.draw(configs(mode), label="cfg")
    note(f"mode={mode} dtype={np.dtype(dtype).name} cfg={cfg}")
    _check_against_oracle(mode, dtype, cfg)


# ---------------------------------------------------------------------------
# A few fixed, larger configurations (independent of hypothesis)
# ---------------------------------------------------------------------------
FIXED = [
    ("lstm", dict(L=2, bi=True, T=7, B=4, I=8, H=16)),
    ("gru", dict(L=3, bi=True, T=10, B=6, I=5, H=8)),
    ("rnn_tanh", dict(L=2, bi=False, T=12, B=3, I=4, H=6)),
    ("rnn_relu", dict(L=2, bi=True, T=9, B=5, I=8, H=8)),
    ("lstm", dict(L=2, bi=True, T=5, B=37, I=3, H=5)),   # three row blocks (16 + 16 + 5)
    ("gru", dict(L=1, bi=False, T=6, B=33, I=4, H=6)),
    # Weights larger than half of any current L2 (W_hh 6.5 MB): the input projection is a
    # separate pass and the rows go in 32-row blocks (32 + 8). (An RNN that large needs
    # H = 1280, where float32 sums over 1280 terms, plain NumPy's included, exceed the float32
    # tolerance; LSTM and RNN share this path.)
    ("lstm", dict(L=1, bi=True, T=3, B=40, I=64, H=640)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("mode,shape", FIXED, ids=[f[0] for f in FIXED])
def test_fixed_configs_match_oracle(mode, shape, dtype):
    cfg = dict(shape, init=True, state_grads="both" if mode == "lstm" else "given",
               batch_first=False, eval_first=False, seed=1234, data_seed=99)
    _check_against_oracle(mode, dtype, cfg)
    cfg.update(init=False, state_grads="omit", batch_first=True, eval_first=True, seed=7)
    _check_against_oracle(mode, dtype, cfg)


# ---------------------------------------------------------------------------
# Module API
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", oracle.MODES)
def test_grads_accumulate_and_zero_grad(mode):
    rng = np.random.default_rng(0)
    T, B, I, H, L = 4, 3, 3, 4, 2
    m = make(mode, I, H, L, True, np.float64, seed=5)
    x = rng.uniform(-2, 2, size=(T, B, I))
    dy = rng.uniform(-2, 2, size=(T, B, 2 * H))
    for v in m.grads().values():
        np.testing.assert_array_equal(v, 0.0)           # fresh module: zero grads
    fwd(m, mode, x)
    dx1, _, _ = bwd(m, mode, dy, omit=True)
    g1 = {k: v.copy() for k, v in m.grads().items()}
    assert any(np.abs(v).max() > 0 for v in g1.values())
    fwd(m, mode, x)
    dx2, _, _ = bwd(m, mode, dy, omit=True)
    g2 = m.grads()
    np.testing.assert_array_equal(dx1, dx2)              # dx does not accumulate
    for k in g1:
        oracle.assert_close(g2[k], 2.0 * g1[k], np.float64, f"accumulated grad {k} ({mode})")
    m.zero_grad()
    for k, v in m.grads().items():
        np.testing.assert_array_equal(v, 0.0, err_msg=f"{k} after zero_grad")
    fwd(m, mode, x)
    bwd(m, mode, dy, omit=True)
    for k, v in m.grads().items():
        oracle.assert_close(v, g1[k], np.float64, f"grad {k} after zero_grad ({mode})")


@pytest.mark.parametrize("mode", oracle.MODES)
@pytest.mark.parametrize("L,bi", [(1, False), (1, True), (3, False), (3, True)])
def test_pytorch_names_and_shapes(mode, L, bi):
    I, H = 6, 5
    m = make(mode, I, H, L, bi, np.float32)
    sd = m.state_dict()
    expected = oracle.param_shapes(mode, I, H, L, bi)
    assert list(sd) == list(expected)
    for k, shape in expected.items():
        assert sd[k].shape == shape, f"{k}: {sd[k].shape} != {shape}"
        assert sd[k].dtype == np.float32
    assert list(m.grads()) == list(expected)


def test_default_dtype_is_float32_and_default_mode_is_train():
    m = rnnrs.GRU(3, 4)
    assert m.state_dict()["weight_ih_l0"].dtype == np.float32
    assert m.training
    y, h_n = m.forward(np.zeros((2, 1, 3), dtype=np.float32))
    assert y.dtype == np.float32 and y.shape == (2, 1, 4) and h_n.shape == (1, 1, 4)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("mode", oracle.MODES)
def test_state_dict_round_trip(mode, dtype):
    I, H, L = 3, 4, 2
    a = make(mode, I, H, L, True, dtype, seed=1)
    b = make(mode, I, H, L, True, dtype, seed=2)
    sda = a.state_dict()
    # copies: mutating the returned arrays does not touch the module
    first = next(iter(sda))
    before = sda[first].copy()
    sda[first][...] = 123.0
    np.testing.assert_array_equal(a.state_dict()[first], before)
    sda = a.state_dict()

    b.load_state_dict(sda)
    sdb = b.state_dict()
    assert list(sdb) == list(sda)
    for k in sda:
        np.testing.assert_array_equal(sdb[k], sda[k])
    # load_state_dict copies too
    sda[first][...] = 7.0
    np.testing.assert_array_equal(b.state_dict()[first], before)

    x = np.random.default_rng(0).uniform(-2, 2, size=(5, 2, I)).astype(dtype)
    ya, ha, ca = fwd(a, mode, x)
    yb, hb, cb = fwd(b, mode, x)
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(ha, hb)


@pytest.mark.parametrize("mode", oracle.MODES)
def test_load_state_dict_rejects_bad_input(mode):
    m = make(mode, 3, 4, 2, True, np.float64, seed=1)
    orig = m.state_dict()

    bad = m.state_dict()
    bad["weight_hh_l1_reverse"] = np.zeros((1, 4))
    with pytest.raises(ValueError):
        m.load_state_dict(bad)

    bad = m.state_dict()
    bad["weight_ih_l1"] = bad["weight_ih_l1"].T.copy()       # transposed
    with pytest.raises(ValueError):
        m.load_state_dict(bad)

    bad = m.state_dict()
    bad["bias_ih_l0"] = bad["bias_ih_l0"][None, :]          # wrong rank
    with pytest.raises(ValueError):
        m.load_state_dict(bad)

    bad = m.state_dict()
    del bad["bias_hh_l0"]
    with pytest.raises(ValueError):
        m.load_state_dict(bad)

    for k, v in m.state_dict().items():                      # unchanged after failures
        np.testing.assert_array_equal(v, orig[k], err_msg=k)


@pytest.mark.parametrize("mode", oracle.MODES)
def test_init_range_and_seeding(mode):
    I, H, L = 7, 9, 2
    bound = 1.0 / math.sqrt(H)
    m = make(mode, I, H, L, True, np.float64, seed=42)
    sd = m.state_dict()
    allv = np.concatenate([v.ravel() for v in sd.values()])
    assert np.all(np.abs(allv) <= bound), f"max |w| {np.abs(allv).max()} > 1/sqrt(H) = {bound}"
    # roughly uniform over the whole range, not degenerate
    assert np.abs(allv).max() > 0.9 * bound
    assert abs(allv.mean()) < 0.1 * bound
    assert len(np.unique(allv)) > 0.99 * allv.size
    for k, v in sd.items():
        assert len(np.unique(v)) > 1, f"{k} is constant"
        if v.size >= 40:      # uniform(-b, b) has std b/sqrt(3) ~ 0.58 b
            assert np.std(v) > 0.4 * bound, f"{k} looks degenerate (std {np.std(v)})"

    same = make(mode, I, H, L, True, np.float64, seed=42).state_dict()
    other = make(mode, I, H, L, True, np.float64, seed=43).state_dict()
    for k in sd:
        np.testing.assert_array_equal(sd[k], same[k], err_msg=f"same seed, {k}")
        assert not np.array_equal(sd[k], other[k]), f"seeds 42 and 43 give the same {k}"

    m32 = make(mode, I, H, L, True, np.float32, seed=42).state_dict()
    for k, v in m32.items():
        assert v.dtype == np.float32
        assert np.all(np.abs(v) <= np.float32(bound))


@pytest.mark.parametrize("mode", oracle.MODES)
def test_dropout(mode):
    rng = np.random.default_rng(1)
    T, B, I, H, L = 6, 4, 5, 8, 3
    x = rng.uniform(-2, 2, size=(T, B, I))
    m = make(mode, I, H, L, True, np.float64, seed=3, dropout=0.5)
    p = params64(m)
    ey, eh, ec = oracle.rnn_forward(mode, p, x, None, None, L, True)

    m.eval()
    y_eval, h_eval, c_eval = fwd(m, mode, x)
    oracle.assert_close(y_eval, ey, np.float64, f"eval output with dropout=0.5 ({mode})")
    oracle.assert_close(h_eval, eh, np.float64, f"eval h_n with dropout=0.5 ({mode})")

    m.train()
    y_tr, h_tr, c_tr = fwd(m, mode, x)
    assert not np.allclose(y_tr, y_eval), "dropout=0.5 in train mode changed nothing"
    # the first layer is computed before any dropout: its final states are exact
    oracle.assert_close(h_tr[:2], eh[:2], np.float64, f"layer-0 h_n under dropout ({mode})")
    if mode == "lstm":
        oracle.assert_close(c_tr[:2], ec[:2], np.float64, f"layer-0 c_n under dropout ({mode})")
    # and the backward runs and gives finite values of the right shape
    dx, dh0, _ = bwd(m, mode, rng.uniform(-1, 1, size=y_tr.shape), omit=True)
    assert dx.shape == x.shape and np.all(np.isfinite(dx))

    # same seed -> same dropout masks
    m2 = make(mode, I, H, L, True, np.float64, seed=3, dropout=0.5)
    y_tr2, _, _ = fwd(m2, mode, x)
    np.testing.assert_array_equal(y_tr, y_tr2)


@pytest.mark.parametrize("mode", oracle.MODES)
def test_dropout_never_after_last_layer(mode):
    rng = np.random.default_rng(2)
    T, B, I, H = 5, 3, 4, 6
    x = rng.uniform(-2, 2, size=(T, B, I))
    dy = rng.uniform(-2, 2, size=(T, B, 2 * H))
    m = make(mode, I, H, 1, True, np.float64, seed=4, dropout=0.9)
    m.train()
    p = params64(m)
    y, h_n, c_n = fwd(m, mode, x)
    ey, eh, ec = oracle.rnn_forward(mode, p, x, None, None, 1, True)
    oracle.assert_close(y, ey, np.float64, f"num_layers=1 dropout=0.9 train y ({mode})")
    oracle.assert_close(h_n, eh, np.float64, f"num_layers=1 dropout=0.9 train h_n ({mode})")
    dx, _, _ = bwd(m, mode, dy, omit=True)
    edx, _, _, eg = oracle.rnn_backward(mode, p, x, None, None, 1, True, dy)
    oracle.assert_close(dx, edx, np.float64, f"num_layers=1 dropout=0.9 train dx ({mode})")
    for k, v in m.grads().items():
        oracle.assert_close(v, eg[k], np.float64, f"num_layers=1 dropout=0.9 grad {k} ({mode})")


@pytest.mark.parametrize("mode", oracle.MODES)
def test_backward_after_eval_forward_raises(mode):
    m = make(mode, 3, 4, 1, False, np.float64)
    x = np.ones((2, 1, 3))
    m.eval()
    fwd(m, mode, x)
    with pytest.raises(ValueError):
        bwd(m, mode, np.ones((2, 1, 4)), omit=True)
    m.train()
    fwd(m, mode, x)
    bwd(m, mode, np.ones((2, 1, 4)), omit=True)          # fine in train mode


@pytest.mark.parametrize("mode", oracle.MODES)
def test_wrong_dtype_raises_type_error(mode):
    lstm = mode == "lstm"
    T, B, I, H = 3, 2, 4, 5
    for layer_dt, wrong_dt in ((np.float64, np.float32), (np.float32, np.float64)):
        m = make(mode, I, H, 1, False, layer_dt)
        good_x = np.zeros((T, B, I), dtype=layer_dt)
        good_h = np.zeros((1, B, H), dtype=layer_dt)
        with pytest.raises(TypeError):
            fwd(m, mode, np.zeros((T, B, I), dtype=wrong_dt))
        with pytest.raises(TypeError):
            fwd(m, mode, np.zeros((T, B, I), dtype=np.int64))
        with pytest.raises(TypeError):
            fwd(m, mode, good_x, np.zeros((1, B, H), dtype=wrong_dt), good_h if lstm else None)
        if lstm:
            with pytest.raises(TypeError):
                fwd(m, mode, good_x, good_h, np.zeros((1, B, H), dtype=wrong_dt))
        fwd(m, mode, good_x)
        with pytest.raises(TypeError):
            bwd(m, mode, np.zeros((T, B, H), dtype=wrong_dt), omit=True)
        fwd(m, mode, good_x)
        with pytest.raises(TypeError):
            bwd(m, mode, np.zeros((T, B, H), dtype=layer_dt), np.zeros((1, B, H), dtype=wrong_dt),
                good_h if lstm else None)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("mode", oracle.MODES)
def test_wrong_shapes_raise_value_error_with_expected_shape(mode, batch_first):
    lstm = mode == "lstm"
    T, B, I, H, L = 6, 3, 7, 5, 2           # L*D = 4, D*H = 10
    LD, DH = 4, 10
    m = make(mode, I, H, L, True, np.float64, batch_first=batch_first)
    x = np.zeros((B, T, I) if batch_first else (T, B, I))
    h_ok = np.zeros((LD, B, H))

    # x: wrong rank, wrong feature size -> message mentions input_size 7
    for bad_x in (np.zeros((T, B)), np.zeros((T, B, 2, 1)),
                  np.zeros((B, T, 9)) if batch_first else np.zeros((T, B, 9))):
        with pytest.raises(ValueError) as ei:
            fwd(m, mode, bad_x)
        assert mentions(str(ei.value), [I]), f"x {bad_x.shape}: message {str(ei.value)!r} lacks {I}"

    # h0 / c0: expected (4, 3, 5)
    bad_h = np.zeros((8, 9, 11))
    with pytest.raises(ValueError) as ei:
        fwd(m, mode, x, bad_h, h_ok if lstm else None)
    assert mentions(str(ei.value), [LD, B, H]), f"h0: message {str(ei.value)!r} lacks (4, 3, 5)"
    with pytest.raises(ValueError):
        fwd(m, mode, x, np.zeros((LD, B)), h_ok if lstm else None)     # wrong rank
    if lstm:
        with pytest.raises(ValueError) as ei:
            fwd(m, mode, x, h_ok, bad_h)
        assert mentions(str(ei.value), [LD, B, H]), f"c0: message {str(ei.value)!r} lacks (4, 3, 5)"

    # dy: expected (T, B, 10) or (B, T, 10)
    fwd(m, mode, x)
    with pytest.raises(ValueError) as ei:
        bwd(m, mode, np.zeros((12, 9, 11)), omit=True)
    assert mentions(str(ei.value), [T, B, DH]), f"dy: message {str(ei.value)!r} lacks {(T, B, DH)}"
    fwd(m, mode, x)
    with pytest.raises(ValueError):
        bwd(m, mode, np.zeros((T, B)), omit=True)
    # dh_n: expected (4, 3, 5)
    fwd(m, mode, x)
    dy_ok = np.zeros((B, T, DH) if batch_first else (T, B, DH))
    with pytest.raises(ValueError) as ei:
        bwd(m, mode, dy_ok, bad_h, h_ok if lstm else None)
    assert mentions(str(ei.value), [LD, B, H]), f"dh_n: message {str(ei.value)!r} lacks (4, 3, 5)"
    # after all those errors a correct call still works
    fwd(m, mode, x)
    bwd(m, mode, dy_ok, omit=True)


def test_dropout_is_inverted_dropout_between_layers():
    """2-layer relu RNN whose second layer is the identity: its output is exactly
    the dropped-out first-layer output, each entry 0 or y0/(1-p)."""
    rng = np.random.default_rng(5)
    T, B, I, H, p = 20, 8, 3, 8, 0.3
    m = make("rnn_relu", I, H, 2, False, np.float64, seed=9, dropout=p)
    sd = m.state_dict()
    sd["weight_ih_l1"] = np.eye(H)
    sd["weight_hh_l1"] = np.zeros((H, H))
    sd["bias_ih_l1"] = np.zeros(H)
    sd["bias_hh_l1"] = np.zeros(H)
    sd["bias_ih_l0"] = np.abs(sd["bias_ih_l0"]) + 0.5         # mostly positive layer-0 output
    m.load_state_dict(sd)
    x = rng.uniform(-2, 2, size=(T, B, I))
    y0, _, _ = oracle.rnn_forward("rnn_relu", {k: v for k, v in sd.items() if "_l0" in k}, x)
    m.train()
    y, h_n = m.forward(x)
    pos = y0 > 1e-6
    assert pos.sum() > 500
    kept = np.isclose(y, y0 / (1 - p), rtol=1e-12, atol=0)
    dropped = y == 0
    assert np.all((kept | dropped)[pos]), "dropout output is neither 0 nor y/(1-p)"
    np.testing.assert_array_equal(y[~pos], 0.0)
    frac = dropped[pos].mean()
    n = pos.sum()
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n), f"drop fraction {frac} vs p={p}"


@pytest.mark.parametrize("mode", oracle.MODES)
def test_dropout_backward_consistent_with_forward(mode):
    """With dropout in train mode the mask depends only on the seed, so fresh
    same-seed modules see the same mask: check dx and a few parameter grads
    by central finite differences through rnnrs itself (float64)."""
    rng = np.random.default_rng(6)
    T, B, I, H, L, D = 3, 2, 2, 3, 2, 2
    eps = 1e-6
    x = rng.uniform(-2, 2, size=(T, B, I))
    dy = rng.uniform(-2, 2, size=(T, B, D * H))
    sd = make(mode, I, H, L, True, np.float64, seed=21, dropout=0.5).state_dict()

    def fresh(params):
        mm = make(mode, I, H, L, True, np.float64, seed=21, dropout=0.5)
        mm.load_state_dict(params)
        mm.train()
        return mm

    def loss(xx, params):
        y, _, _ = fwd(fresh(params), mode, xx)
        return float((y * dy).sum())

    m = fresh(sd)
    y, _, _ = fwd(m, mode, x)
    y_eval = oracle.rnn_forward(mode, sd, x, None, None, L, True)[0]
    assert not np.allclose(y, y_eval), "dropout had no effect"
    dx, _, _ = bwd(m, mode, dy, omit=True)
    g = m.grads()

    fd = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        fd[idx] = (loss(xp, sd) - loss(xm, sd)) / (2 * eps)
    np.testing.assert_allclose(dx, fd, rtol=1e-6, atol=1e-8, err_msg=f"dx under dropout ({mode})")
    for name in ("weight_ih_l0", "weight_hh_l0_reverse", "bias_hh_l0"):
        for idx in [(0,) * sd[name].ndim, tuple(s - 1 for s in sd[name].shape)]:
            sp = {k: v.copy() for k, v in sd.items()}
            sm = {k: v.copy() for k, v in sd.items()}
            sp[name][idx] += eps
            sm[name][idx] -= eps
            f = (loss(x, sp) - loss(x, sm)) / (2 * eps)
            assert abs(g[name][idx] - f) <= 1e-8 + 1e-6 * abs(f), \
                f"grad {name}{idx} under dropout ({mode}): {g[name][idx]} vs fd {f}"


@pytest.mark.parametrize("mode", oracle.MODES)
def test_non_contiguous_inputs(mode):
    rng = np.random.default_rng(8)
    T, B, I, H, L = 4, 3, 3, 2, 2
    lstm = mode == "lstm"
    m = make(mode, I, H, L, True, np.float64, seed=2)
    p = params64(m)
    x = rng.uniform(-2, 2, size=(T, B, 2 * I))[:, :, ::2]             # strided view
    h0 = np.ascontiguousarray(rng.uniform(-1, 1, size=(B, 2 * L, H))).transpose(1, 0, 2)
    c0 = h0[::-1] if lstm else None
    dy = np.ascontiguousarray(rng.uniform(-2, 2, size=(2 * H, B, T))).transpose(2, 1, 0)
    assert not x.flags.c_contiguous and not h0.flags.c_contiguous and not dy.flags.c_contiguous
    y, h_n, c_n = fwd(m, mode, x, h0, c0)
    dx, dh0, dc0 = bwd(m, mode, dy, omit=True)
    ey, eh, ec = oracle.rnn_forward(mode, p, x, h0, c0, L, True)
    edx, edh0, edc0, _ = oracle.rnn_backward(mode, p, x, h0, c0, L, True, dy)
    oracle.assert_close(y, ey, np.float64, f"y, non-contiguous inputs ({mode})")
    oracle.assert_close(h_n, eh, np.float64, f"h_n, non-contiguous inputs ({mode})")
    oracle.assert_close(dx, edx, np.float64, f"dx, non-contiguous inputs ({mode})")
    oracle.assert_close(dh0, edh0, np.float64, f"dh0, non-contiguous inputs ({mode})")
    if lstm:
        oracle.assert_close(c_n, ec, np.float64, f"c_n, non-contiguous inputs ({mode})")
        oracle.assert_close(dc0, edc0, np.float64, f"dc0, non-contiguous inputs ({mode})")

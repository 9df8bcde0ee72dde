"""The oracle checked against itself: central finite differences for every
gradient, literal scalar re-implementations of the cell equations, structural
identities (reverse direction, layer stacking) and hand-computed optimizer steps.

Does not need rnnrs.
"""

import copy
import itertools
import math

import numpy as np
import pytest

import oracle

FD_EPS = 1e-6
FD_RTOL = 1e-6
FD_ATOL = 1e-8


def _fd_check(f, arrays, analytic, what):
    """f() -> scalar using the (mutable) float64 arrays in `arrays` (dict).
    Compare central differences of every entry with analytic[name]."""
    for name, arr in arrays.items():
        fd = np.zeros_like(arr)
        it = np.nditer(arr, flags=["multi_index"])
        for _ in it:
            idx = it.multi_index
            orig = arr[idx]
            arr[idx] = orig + FD_EPS
            fp = f()
            arr[idx] = orig - FD_EPS
            fm = f()
            arr[idx] = orig
            fd[idx] = (fp - fm) / (2 * FD_EPS)
        an = np.asarray(analytic[name], dtype=np.float64)
        assert an.shape == fd.shape, f"{what} {name}: shape {an.shape} vs {fd.shape}"
        err = np.abs(an - fd)
        bound = FD_ATOL + FD_RTOL * np.abs(fd)
        assert np.all(err <= bound), (
            f"{what} {name}: analytic vs finite differences max abs err {err.max():.3e}, "
            f"worst at {np.unravel_index(np.argmax(err / bound), err.shape)}\n"
            f"analytic={an}\nfd={fd}")


# ---------------------------------------------------------------------------
# RNN / GRU / LSTM BPTT against finite differences
# ---------------------------------------------------------------------------
RNN_FD_CASES = [
    # (mode, num_layers, bidirectional, T, B, I, H, with_init, with_state_grads)
    (mode, L, bi, 3, 2, 3, 2, True, True)
    for mode in oracle.MODES for L in (1, 2) for bi in (False, True)
] + [
    (mode, 2, True, 4, 3, 2, 3, False, False) for mode in oracle.MODES
] + [
    (mode, 1, False, 4, 3, 3, 3, False, True) for mode in oracle.MODES
]


@pytest.mark.parametrize("mode,L,bi,T,B,I,H,with_init,with_sg", RNN_FD_CASES)
def test_rnn_backward_matches_finite_differences(mode, L, bi, T, B, I, H, with_init, with_sg):
    D = 2 if bi else 1
    lstm = mode == "lstm"
    base_seed = RNN_FD_CASES.index((mode, L, bi, T, B, I, H, with_init, with_sg)) * 1000

    def draw(seed):
        rng = np.random.default_rng(seed)
        # a bit larger than PyTorch's init so the nonlinearities are exercised
        params = oracle.random_params(mode, I, H, L, bi, rng, scale=0.9)
        x = rng.uniform(-2, 2, size=(T, B, I))
        h0 = rng.uniform(-1, 1, size=(L * D, B, H)) if with_init else None
        c0 = rng.uniform(-1, 1, size=(L * D, B, H)) if (with_init and lstm) else None
        dy = rng.normal(size=(T, B, D * H))
        dh_n = rng.normal(size=(L * D, B, H)) if with_sg else None
        dc_n = rng.normal(size=(L * D, B, H)) if (with_sg and lstm) else None
        return params, x, h0, c0, dy, dh_n, dc_n

    for seed in range(base_seed, base_seed + 100):
        params, x, h0, c0, dy, dh_n, dc_n = draw(seed)
        if mode != "rnn_relu":
            break
        # relu: no pre-activation near the kink (finite differences would straddle
        # it), and the output must exercise both branches
        y, _, _ = oracle.rnn_forward(mode, params, x, h0, None, L, bi)
        if oracle.relu_margin(params, x, h0, L, bi) > 1e-4 and (y == 0).any() and (y > 0).any():
            break
    else:
        pytest.fail("no usable relu test data found")

    def loss():
        y, h_n, c_n = oracle.rnn_forward(mode, params, x, h0, c0, L, bi)
        s = float((y * dy).sum())
        if dh_n is not None:
            s += float((h_n * dh_n).sum())
        if dc_n is not None:
            s += float((c_n * dc_n).sum())
        return s

    dx, dh0, dc0, grads = oracle.rnn_backward(mode, params, x, h0, c0, L, bi, dy, dh_n, dc_n)
    assert set(grads) == set(params)
    assert dh0.shape == (L * D, B, H)
    assert (dc0 is None) == (not lstm)

    arrays = dict(params)
    analytic = dict(grads)
    arrays["x"], analytic["x"] = x, dx
    if with_init:
        arrays["h0"], analytic["h0"] = h0, dh0
        if lstm:
            arrays["c0"], analytic["c0"] = c0, dc0
    _fd_check(loss, arrays, analytic, f"{mode} L={L} bi={bi}")

    if not with_init:
        # dh0/dc0 are still the gradients w.r.t. the zero initial state
        h0z = np.zeros((L * D, B, H))
        c0z = np.zeros((L * D, B, H)) if lstm else None
        _, dh0z, dc0z, _ = oracle.rnn_backward(mode, params, x, h0z, c0z, L, bi, dy, dh_n, dc_n)
        np.testing.assert_array_equal(dh0, dh0z)
        if lstm:
            np.testing.assert_array_equal(dc0, dc0z)


# ---------------------------------------------------------------------------
# Conventions: literal scalar loops for one step, reverse direction, stacking
# ---------------------------------------------------------------------------
def _sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def _dot(row, vec):
    return sum(a * b for a, b in zip(row, vec))


@pytest.mark.parametrize("mode", oracle.MODES)
def test_single_step_matches_scalar_loops(mode):
    """T=1, B=1: the equations written out element by element in plain Python."""
    rng = np.random.default_rng(7)
    I, H = 3, 2
    p = oracle.random_params(mode, I, H, 1, False, rng, scale=0.8)
    x = rng.uniform(-2, 2, size=I)
    h = rng.uniform(-1, 1, size=H)
    c = rng.uniform(-1, 1, size=H)
    Wi, Wh, bi, bh = (p["weight_ih_l0"].tolist(), p["weight_hh_l0"].tolist(),
                      p["bias_ih_l0"].tolist(), p["bias_hh_l0"].tolist())

    def pre(row):  # W_ih[row] x + b_ih[row] + W_hh[row] h + b_hh[row]
        return _dot(Wi[row], x) + bi[row] + _dot(Wh[row], h) + bh[row]

    h_new, c_new = [], []
    for j in range(H):
        if mode == "rnn_tanh":
            h_new.append(math.tanh(pre(j)))
        elif mode == "rnn_relu":
            h_new.append(max(0.0, pre(j)))
        elif mode == "lstm":
            i_ = _sig(pre(0 * H + j))
            f_ = _sig(pre(1 * H + j))
            g_ = math.tanh(pre(2 * H + j))
            o_ = _sig(pre(3 * H + j))
            cj = f_ * c[j] + i_ * g_
            c_new.append(cj)
            h_new.append(o_ * math.tanh(cj))
        elif mode == "gru":
            r_ = _sig(pre(0 * H + j))
            z_ = _sig(pre(1 * H + j))
            rn = 2 * H + j
            n_ = math.tanh(_dot(Wi[rn], x) + bi[rn] + r_ * (_dot(Wh[rn], h) + bh[rn]))
            h_new.append((1 - z_) * n_ + z_ * h[j])
    y, h_n, c_n = oracle.rnn_forward(mode, p, x.reshape(1, 1, I), h.reshape(1, 1, H),
                                     c.reshape(1, 1, H) if mode == "lstm" else None)
    np.testing.assert_allclose(y.reshape(H), h_new, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(h_n.reshape(H), h_new, rtol=1e-13, atol=1e-14)
    if mode == "lstm":
        np.testing.assert_allclose(c_n.reshape(H), c_new, rtol=1e-13, atol=1e-14)
    else:
        assert c_n is None


def _split_direction(params, d):
    sfx = "_reverse" if d else ""
    return {k.replace(sfx, "") if d else k: v for k, v in params.items()
            if (k.endswith("_reverse") == bool(d)) and k.endswith(("l0", "l0_reverse"))}


@pytest.mark.parametrize("mode", oracle.MODES)
def test_reverse_direction_is_forward_on_time_reversed_input(mode):
    rng = np.random.default_rng(11)
    T, B, I, H = 5, 2, 3, 4
    lstm = mode == "lstm"
    p = oracle.random_params(mode, I, H, 1, True, rng)
    x = rng.uniform(-2, 2, size=(T, B, I))
    h0 = rng.uniform(-1, 1, size=(2, B, H))
    c0 = rng.uniform(-1, 1, size=(2, B, H)) if lstm else None
    y, h_n, c_n = oracle.rnn_forward(mode, p, x, h0, c0, 1, True)
    assert y.shape == (T, B, 2 * H) and h_n.shape == (2, B, H)

    pf = _split_direction(p, 0)
    pr = _split_direction(p, 1)
    yf, hf, cf = oracle.rnn_forward(mode, pf, x, h0[0:1], c0[0:1] if lstm else None)
    yr, hr, cr = oracle.rnn_forward(mode, pr, x[::-1], h0[1:2], c0[1:2] if lstm else None)
    np.testing.assert_array_equal(y[..., :H], yf)
    np.testing.assert_array_equal(y[..., H:], yr[::-1])       # output at t is state after x_t
    np.testing.assert_array_equal(h_n[0], hf[0])
    np.testing.assert_array_equal(h_n[1], hr[0])
    np.testing.assert_array_equal(h_n[1], y[0, :, H:])        # reverse final = after t=0
    np.testing.assert_array_equal(h_n[0], y[T - 1, :, :H])
    if lstm:
        np.testing.assert_array_equal(c_n[0], cf[0])
        np.testing.assert_array_equal(c_n[1], cr[0])


@pytest.mark.parametrize("mode,bi", list(itertools.product(oracle.MODES, (False, True))))
def test_two_layers_equal_two_stacked_single_layers(mode, bi):
    rng = np.random.default_rng(13)
    T, B, I, H = 4, 3, 2, 3
    D = 2 if bi else 1
    lstm = mode == "lstm"
    p = oracle.random_params(mode, I, H, 2, bi, rng)
    x = rng.uniform(-2, 2, size=(T, B, I))
    h0 = rng.uniform(-1, 1, size=(2 * D, B, H))
    c0 = rng.uniform(-1, 1, size=(2 * D, B, H)) if lstm else None
    y, h_n, c_n = oracle.rnn_forward(mode, p, x, h0, c0, 2, bi)

    p0 = {k: v for k, v in p.items() if "_l0" in k}
    p1 = {k.replace("_l1", "_l0"): v for k, v in p.items() if "_l1" in k}
    y0, h_0, c_0 = oracle.rnn_forward(mode, p0, x, h0[:D], c0[:D] if lstm else None, 1, bi)
    y1, h_1, c_1 = oracle.rnn_forward(mode, p1, y0, h0[D:], c0[D:] if lstm else None, 1, bi)
    np.testing.assert_array_equal(y, y1)
    np.testing.assert_array_equal(h_n, np.concatenate([h_0, h_1]))
    if lstm:
        np.testing.assert_array_equal(c_n, np.concatenate([c_0, c_1]))


def test_param_shapes_are_pytorch():
    s = oracle.param_shapes("lstm", 8, 16, 2, True)
    assert list(s) == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
        "weight_ih_l0_reverse", "weight_hh_l0_reverse", "bias_ih_l0_reverse", "bias_hh_l0_reverse",
        "weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1",
        "weight_ih_l1_reverse", "weight_hh_l1_reverse", "bias_ih_l1_reverse", "bias_hh_l1_reverse",
    ]
    assert s["weight_ih_l0"] == (64, 8)
    assert s["weight_ih_l1"] == (64, 32)
    assert s["weight_hh_l1_reverse"] == (64, 16)
    assert s["bias_hh_l1"] == (64,)
    assert oracle.param_shapes("gru", 5, 7, 1, False)["weight_ih_l0"] == (21, 5)
    assert oracle.param_shapes("rnn_relu", 5, 7, 1, False)["weight_hh_l0"] == (7, 7)


def test_assert_close_reports_and_fails():
    saved = copy.deepcopy(oracle.MAX_SEEN)   # keep these deliberate failures out of the summary
    try:
        _assert_close_checks()
    finally:
        oracle.MAX_SEEN.clear()
        oracle.MAX_SEEN.update(saved)


def _assert_close_checks():
    oracle.assert_close(np.float32([1.0, 2.0]), [1.0, 2.0 + 1e-5], np.float32, "ok")
    with pytest.raises(AssertionError, match=r"thing.*max abs diff"):
        oracle.assert_close(np.array([1.0, 2.0]), [1.0, 2.0 + 1e-6], np.float64, "thing")
    with pytest.raises(AssertionError, match="shape"):
        oracle.assert_close(np.zeros(3), np.zeros(4), np.float64, "shape thing")


# ---------------------------------------------------------------------------
# Embedding / linear / cross-entropy
# ---------------------------------------------------------------------------
def test_embedding_forward_and_fd():
    rng = np.random.default_rng(3)
    V, E = 5, 3
    W = rng.normal(size=(V, E))
    ids = np.array([[1, 4, 1], [0, 1, 3]])        # repeated ids must accumulate
    out = oracle.embedding_forward(W, ids)
    assert out.shape == (2, 3, E)
    np.testing.assert_array_equal(out[0, 1], W[4])
    dout = rng.normal(size=out.shape)
    dW = oracle.embedding_backward(W.shape, ids, dout)
    np.testing.assert_allclose(dW[1], dout[0, 0] + dout[0, 2] + dout[1, 1], rtol=1e-15)
    np.testing.assert_array_equal(dW[2], 0.0)
    _fd_check(lambda: float((oracle.embedding_forward(W, ids) * dout).sum()),
              {"W": W}, {"W": dW}, "embedding")


def test_linear_forward_and_fd():
    rng = np.random.default_rng(4)
    W = rng.normal(size=(3, 4))
    b = rng.normal(size=3)
    x = rng.normal(size=(2, 5, 4))                # leading dims are flattened
    out = oracle.linear_forward(W, b, x)
    np.testing.assert_allclose(out[1, 2], W @ x[1, 2] + b, rtol=1e-14)
    dout = rng.normal(size=out.shape)
    dx, dW, db = oracle.linear_backward(W, x, dout)
    _fd_check(lambda: float((oracle.linear_forward(W, b, x) * dout).sum()),
              {"W": W, "b": b, "x": x}, {"W": dW, "b": db, "x": dx}, "linear")


def test_cross_entropy_value_fd_and_stability():
    logits = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, -1.0]])
    targets = np.array([2, 0])
    loss, dl = oracle.cross_entropy(logits, targets)
    by_hand = (-math.log(math.exp(3) / (math.exp(1) + math.exp(2) + math.exp(3)))
               - math.log(math.exp(0.5) / (2 * math.exp(0.5) + math.exp(-1.0)))) / 2
    assert abs(loss - by_hand) < 1e-14
    assert abs(loss - 0.603261074643053) < 1e-12    # = (log(1+e^-1+e^-2) + log(2+e^-1.5)) / 2
    np.testing.assert_allclose(dl.sum(axis=1), 0.0, atol=1e-16)

    rng = np.random.default_rng(5)
    logits = rng.normal(size=(4, 6)) * 3
    targets = rng.integers(0, 6, size=4)
    _, dl = oracle.cross_entropy(logits, targets)
    _fd_check(lambda: oracle.cross_entropy(logits, targets)[0], {"logits": logits},
              {"logits": dl}, "cross_entropy")

    big = np.array([[1000.0, 0.0, -1000.0], [-1000.0, -999.0, -1001.0]])
    loss, dl = oracle.cross_entropy(big, np.array([1, 1]))
    assert np.isfinite(loss) and np.all(np.isfinite(dl))
    lse2 = -999.0 + math.log(1 + math.exp(-1) + math.exp(-2))
    assert abs(loss - (1000.0 + (lse2 + 999.0)) / 2) < 1e-9


# ---------------------------------------------------------------------------
# Clipping and optimizers
# ---------------------------------------------------------------------------
def test_clip_grad_norm():
    g = {"a": np.array([3.0, 0.0]), "b": np.array([[0.0], [4.0]])}   # norm 5
    total, clipped = oracle.clip_grad_norm(g, 1.0)
    assert total == 5.0
    new_norm = math.sqrt(sum(float((v ** 2).sum()) for v in clipped.values()))
    assert abs(new_norm - 1.0) < 1e-6                   # exactly max_norm up to the 1e-6 guard
    np.testing.assert_allclose(clipped["a"], [3.0 / (5 + 1e-6), 0.0], rtol=1e-15)
    np.testing.assert_array_equal(g["a"], [3.0, 0.0])   # input untouched
    total, clipped = oracle.clip_grad_norm(g, 10.0)      # below: unchanged
    assert total == 5.0
    np.testing.assert_array_equal(clipped["b"], g["b"])
    total, clipped = oracle.clip_grad_norm(g, 5.0)       # coef = 5/(5+1e-6) < 1: scaled
    assert clipped["a"][0] < 3.0


def test_sgd_two_steps_by_hand():
    p = {"w": np.array([1.0])}
    g1, g2 = {"w": np.array([0.5])}, {"w": np.array([-0.2])}
    # plain momentum 0.9, lr 0.1: buf1 = 0.5, p1 = 1 - 0.05; buf2 = 0.45 - 0.2 = 0.25, p2 = 0.95 - 0.025
    p1, s1 = oracle.sgd_step(p, g1, None, lr=0.1, momentum=0.9)
    p2, s2 = oracle.sgd_step(p1, g2, s1, lr=0.1, momentum=0.9)
    assert abs(p1["w"][0] - 0.95) < 1e-15 and abs(p2["w"][0] - 0.925) < 1e-15
    assert abs(s2["w"]["momentum_buffer"][0] - 0.25) < 1e-15
    # nesterov: d1 = 0.5 + 0.9*0.5 = 0.95 -> 0.905 ; buf2 = 0.25, d2 = -0.2 + 0.225 -> 0.9025
    p1, s1 = oracle.sgd_step(p, g1, {}, lr=0.1, momentum=0.9, nesterov=True)
    p2, _ = oracle.sgd_step(p1, g2, s1, lr=0.1, momentum=0.9, nesterov=True)
    assert abs(p1["w"][0] - 0.905) < 1e-15 and abs(p2["w"][0] - 0.9025) < 1e-15
    # weight decay 0.1: d1 = 0.6 -> 0.94 ; d2 = -0.2 + 0.094 = -0.106, buf2 = 0.54 - 0.106 = 0.434 -> 0.8966
    p1, s1 = oracle.sgd_step(p, g1, None, lr=0.1, momentum=0.9, weight_decay=0.1)
    p2, _ = oracle.sgd_step(p1, g2, s1, lr=0.1, momentum=0.9, weight_decay=0.1)
    assert abs(p1["w"][0] - 0.94) < 1e-15 and abs(p2["w"][0] - 0.8966) < 1e-15
    # no momentum: plain p - lr*g, no state
    p1, s1 = oracle.sgd_step(p, g1, None, lr=0.1)
    assert abs(p1["w"][0] - 0.95) < 1e-15 and s1 == {}
    np.testing.assert_array_equal(p["w"], [1.0])        # input untouched


def test_adam_two_steps_by_hand():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    p = {"w": np.array([1.0])}
    g1, g2 = {"w": np.array([0.5])}, {"w": np.array([-0.2])}

    # written out: m1 = 0.05, v1 = 0.00025, mhat = 0.5, vhat = 0.25
    m1, v1 = 0.1 * 0.5, 0.001 * 0.25
    p1_hand = 1.0 - (lr / (1 - b1)) * m1 / (math.sqrt(v1) / math.sqrt(1 - b2) + eps)
    m2, v2 = b1 * m1 + 0.1 * -0.2, b2 * v1 + 0.001 * 0.04
    p2_hand = p1_hand - (lr / (1 - b1 ** 2)) * m2 / (math.sqrt(v2) / math.sqrt(1 - b2 ** 2) + eps)
    assert abs(p1_hand - 0.900000002) < 1e-12 and abs(p2_hand - 0.8654394181165108) < 1e-12

    p1, s1 = oracle.adam_step(p, g1, None, 1, lr)
    p2, s2 = oracle.adam_step(p1, g2, s1, 2, lr)
    assert abs(p1["w"][0] - p1_hand) < 1e-15 and abs(p2["w"][0] - p2_hand) < 1e-15
    assert abs(s2["w"]["exp_avg"][0] - 0.025) < 1e-15
    assert abs(s2["w"]["exp_avg_sq"][0] - 0.00028975) < 1e-17

    # Adam with L2 weight decay 0.1 (added to the gradient): g1' = 0.6, g2' = -0.2 + 0.1*p1
    p1, s1 = oracle.adam_step(p, g1, None, 1, lr, weight_decay=0.1)
    p2, _ = oracle.adam_step(p1, g2, s1, 2, lr, weight_decay=0.1)
    assert abs(p1["w"][0] - 0.9000000016666666) < 1e-13
    assert abs(p2["w"][0] - 0.8475190629593703) < 1e-13

    # AdamW, decoupled weight decay 0.1: p *= 1 - lr*wd before the Adam update
    p1, s1 = oracle.adam_step(p, g1, None, 1, lr, weight_decay=0.1, decoupled=True)
    p2, _ = oracle.adam_step(p1, g2, s1, 2, lr, weight_decay=0.1, decoupled=True)
    assert abs(p1["w"][0] - (0.99 - (1.0 - p1_hand))) < 1e-15   # 0.890000002
    assert abs(p1["w"][0] - 0.890000002) < 1e-13
    assert abs(p2["w"][0] - 0.8465394180965108) < 1e-13
    np.testing.assert_array_equal(p["w"], [1.0])

"""RNNCell / GRUCell / LSTMCell: one step per call, BPTT across calls.

Stepping a cell T times and calling backward T times in reverse gives the outputs and gradients of
the one-layer layer over the same steps (to 1e-10 in float64) and of the NumPy oracle; a decoder
loop that feeds each output back as the next input (which no layer can express) matches finite
differences of its loss.
"""

import numpy as np
import pytest

import oracle
import rnnrs

CELLS = [("lstm", rnnrs.LSTMCell, rnnrs.LSTM, {}), ("gru", rnnrs.GRUCell, rnnrs.GRU, {}),
         ("rnn_tanh", rnnrs.RNNCell, rnnrs.RNN, {"nonlinearity": "tanh"}),
         ("rnn_relu", rnnrs.RNNCell, rnnrs.RNN, {"nonlinearity": "relu"})]


def _run_cell(cell, x, h0, c0, dy, dh_n, dc_n):
    """Forward over x (T, B, I) step by step, then backward step by step in reverse."""
    lstm = isinstance(cell, rnnrs.LSTMCell)
    h, c, hs = h0, c0, []
    for t in range(x.shape[0]):
        if lstm:
            h, c = cell(x[t], (h, c))
        else:
            h = cell(x[t], h)
        hs.append(h)
    assert cell.pending_steps == x.shape[0]
    dxs = [None] * x.shape[0]
    dstate = (dh_n, dc_n) if lstm else dh_n
    for t in reversed(range(x.shape[0])):
        dxs[t], dstate = cell.backward(dy[t], dstate)
    assert cell.pending_steps == 0
    return np.stack(hs), h, c, np.stack(dxs), dstate


@pytest.mark.parametrize("mode,Cell,Layer,kw", CELLS, ids=[c[0] for c in CELLS])
def test_cell_steps_equal_the_layer_and_the_oracle(mode, Cell, Layer, kw):
    rng = np.random.default_rng(7)
    T, B, I, H = 6, 3, 4, 5
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, H))
    h0, dh_n = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    lstm = mode == "lstm"
    c0 = rng.standard_normal((B, H)) if lstm else None
    dc_n = rng.standard_normal((B, H)) if lstm else None

    cell = Cell(I, H, dtype=np.float64, seed=3, **kw)
    layer = Layer(I, H, dtype=np.float64, seed=3, **kw)
    assert {k + "_l0": v for k, v in cell.state_dict().items()}.keys() == layer.state_dict().keys()
    for k, v in cell.state_dict().items():  # same seed, same weights
        np.testing.assert_array_equal(v, layer.state_dict()[k + "_l0"])

    ys, h, c, dx, dstate = _run_cell(cell, x, h0, c0, dy, dh_n, dc_n)
    if lstm:
        y, (h_n, c_n) = layer.forward(x, (h0[None], c0[None]))
        ldx, (ldh0, ldc0) = layer.backward(dy, (dh_n[None], dc_n[None]))
        np.testing.assert_allclose(c, c_n[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(dstate[1], ldc0[0], rtol=0, atol=1e-10)
        dh0 = dstate[0]
    else:
        y, h_n = layer.forward(x, h0[None])
        ldx, ldh0 = layer.backward(dy, dh_n[None])
        dh0 = dstate
    np.testing.assert_allclose(ys, y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h, h_n[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(dx, ldx, rtol=0, atol=1e-10)
    np.testing.assert_allclose(dh0, ldh0[0], rtol=0, atol=1e-10)
    for k, g in cell.grads().items():
        np.testing.assert_allclose(g, layer.grads()[k + "_l0"], rtol=0, atol=1e-10, err_msg=k)

    # and the independent NumPy BPTT
    params = {k + "_l0": v for k, v in cell.state_dict().items()}
    odx, odh0, odc0, ograds = oracle.rnn_backward(mode, params, x, h0[None], None if c0 is None else c0[None], 1,
                                                  False, dy, dh_n[None], None if dc_n is None else dc_n[None])
    oracle.assert_close(dx, odx, "float64", f"{mode} cell dx")
    oracle.assert_close(dh0, odh0[0], "float64", f"{mode} cell dh0")
    for k, g in cell.grads().items():
        oracle.assert_close(g, ograds[k + "_l0"], "float64", f"{mode} cell {k}")


@pytest.mark.parametrize("mode,Cell,Layer,kw", CELLS, ids=[c[0] for c in CELLS])
def test_a_feedback_decoder_matches_finite_differences(mode, Cell, Layer, kw):
    """x_{t+1} = h_t @ A: the input of every step depends on the previous output, so gradients
    must flow through the user's code between the cell's calls."""
    rng = np.random.default_rng(11)
    T, B, H = 5, 2, 4
    A = rng.standard_normal((H, H)) * 0.5
    x0 = rng.standard_normal((B, H))
    w = rng.standard_normal((T, B, H))  # loss = sum_t <w_t, h_t>
    lstm = mode == "lstm"

    def loss_and_grad(cell):
        cell.zero_grad()
        x, h, c, hs = x0, None, None, []
        for t in range(T):
            if lstm:
                h, c = cell(x, None if h is None else (h, c))
            else:
                h = cell(x, h)
            hs.append(h)
            x = h @ A
        loss = float(sum((w[t] * hs[t]).sum() for t in range(T)))
        dstate, dx_next = None, np.zeros((B, H))
        for t in reversed(range(T)):
            dh = w[t] + dx_next @ A.T  # h_t reaches the loss directly and through x_{t+1}
            dx, dstate = cell.backward(dh, dstate)
            dx_next = dx
        return loss, dx_next, cell.grads()

    cell = Cell(H, H, dtype=np.float64, seed=5, **kw)
    _, dx0, grads = loss_and_grad(cell)
    params = cell.state_dict()
    eps = 1e-6
    probe = np.random.default_rng(0)
    for name in ["weight_hh", "bias_ih"]:
        for _ in range(3):
            idx = tuple(int(probe.integers(n)) for n in params[name].shape)
            plus, minus = {k: v.copy() for k, v in params.items()}, {k: v.copy() for k, v in params.items()}
            plus[name][idx] += eps
            minus[name][idx] -= eps
            c2 = Cell(H, H, dtype=np.float64, **kw)
            c2.load_state_dict(plus)
            lp = loss_and_grad(c2)[0]
            c2.load_state_dict(minus)
            lm = loss_and_grad(c2)[0]
            fd = (lp - lm) / (2 * eps)
            assert abs(fd - grads[name][idx]) < 1e-6 * max(1.0, abs(fd)), (name, idx, fd, grads[name][idx])
    assert dx0.shape == (B, H)


def test_unbatched_steps_and_float32():
    cell = rnnrs.LSTMCell(3, 4, seed=1)  # float32 by default
    h, c = cell(np.ones(3, dtype=np.float32))
    assert h.shape == (4,) and c.shape == (4,) and h.dtype == np.float32
    hb, cb = rnnrs.LSTMCell(3, 4, seed=1).eval()(np.ones((1, 3), dtype=np.float32))
    np.testing.assert_array_equal(h, hb[0])
    dx, (dh, dc) = cell.backward(np.ones(4, dtype=np.float32))
    assert dx.shape == (3,) and dh.shape == (4,) and dc.shape == (4,)


def test_eval_records_nothing_and_backward_needs_a_step():
    cell = rnnrs.GRUCell(3, 4, dtype=np.float64).eval()
    cell(np.ones((2, 3)))
    assert cell.pending_steps == 0
    with pytest.raises(ValueError, match="training mode"):
        cell.backward(np.ones((2, 4)))
    cell.train()
    with pytest.raises(ValueError, match="expected a recorded training step, got none"):
        cell.backward(np.ones((2, 4)))


def test_bad_input_is_a_clear_error_and_changes_nothing():
    cell = rnnrs.LSTMCell(3, 4, dtype=np.float64)
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, 3\), got \(2, 5\)"):
        cell(np.ones((2, 5)))
    with pytest.raises(TypeError, match="x: expected dtype float64"):
        cell(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"h: expected shape \(2, 4\), got \(3, 4\)"):
        cell(np.ones((2, 3)), (np.ones((3, 4)), None))
    with pytest.raises(TypeError, match="state: expected a tuple"):
        cell(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(rnnrs.NonFiniteError, match=r"x: expected finite values, got NaN at index \[1, 2\]"):
        cell(np.array([[0.0, 0, 0], [0, 0, np.nan]]))
    assert cell.pending_steps == 0
    cell(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"dh: expected shape \(2, 4\), got \(1, 4\)"):
        cell.backward(np.ones((1, 4)))
    assert cell.pending_steps == 1, "a refused backward keeps the step"
    with pytest.raises(ValueError, match="bias: expected True"):
        rnnrs.GRUCell(3, 4, bias=False)
    with pytest.raises(ValueError, match="nonlinearity"):
        rnnrs.RNNCell(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="hidden_size: expected an integer >= 1, got 0"):
        rnnrs.LSTMCell(3, 0)
    with pytest.raises(ValueError, match="missing parameter"):
        cell.load_state_dict({"weight_ih": np.zeros((16, 3))})

"""The classic worked example: a scalar tanh RNN over three steps.

    h_t = tanh(W_hx x_t + W_hh h_{t-1} + b_h),  y_t = W_hy h_t + b_y
    x = [0.5, 0.1, -0.3], h_0 = 0, W_hx = 0.8, W_hh = 0.3, b_h = 0.1,
    W_hy = 1.0, b_y = 0.2

Expected values are computed step by step with math.tanh *and* written as
literal decimals; both the oracle and rnnrs.RNN (float64) must reproduce them.
Then one hand-written BPTT for the loss L = sum_t y_t.
"""

import math
import os

import numpy as np
import pytest

import oracle

W_HX, W_HH, B_H = 0.8, 0.3, 0.1
W_HY, B_Y = 1.0, 0.2
XS = [0.5, 0.1, -0.3]

# --- forward, step by step -------------------------------------------------
H0 = 0.0
H1 = math.tanh(0.8 * 0.5 + 0.3 * H0 + 0.1)      # tanh(0.5)
H2 = math.tanh(0.8 * 0.1 + 0.3 * H1 + 0.1)      # tanh(0.18 + 0.3*H1) = tanh(0.318635...)
H3 = math.tanh(0.8 * -0.3 + 0.3 * H2 + 0.1)     # tanh(-0.14 + 0.3*H2) = tanh(-0.047518...)
Y1, Y2, Y3 = (W_HY * h + B_Y for h in (H1, H2, H3))

# the same numbers as literal decimals
H_LITERAL = [0.462117157, 0.308272293, -0.047482579]
Y_LITERAL = [0.662117157, 0.508272293, 0.152517421]

# --- backward for L = y1 + y2 + y3, step by step --------------------------
# dL/dh_t from the output is W_hy = 1; delta_t = dL/da_t = dh_t * (1 - h_t^2)
DELTA3 = (W_HY + 0.0) * (1 - H3 ** 2)
DELTA2 = (W_HY + W_HH * DELTA3) * (1 - H2 ** 2)
DELTA1 = (W_HY + W_HH * DELTA2) * (1 - H1 ** 2)
D_H0 = W_HH * DELTA1
D_X = [W_HX * DELTA1, W_HX * DELTA2, W_HX * DELTA3]
D_W_HX = DELTA1 * 0.5 + DELTA2 * 0.1 + DELTA3 * -0.3
D_W_HH = DELTA1 * H0 + DELTA2 * H1 + DELTA3 * H2
D_B = DELTA1 + DELTA2 + DELTA3

DELTA_LITERAL = [1.063870289, 1.175846550, 0.997745405]
D_H0_LITERAL = 0.319161087
D_X_LITERAL = [0.851096231, 0.940677240, 0.798196324]
D_W_HX_LITERAL, D_W_HH_LITERAL, D_B_LITERAL = 0.350196178, 0.850956129, 3.237462244

PARAMS = {
    "weight_ih_l0": np.array([[W_HX]]),
    "weight_hh_l0": np.array([[W_HH]]),
    "bias_ih_l0": np.array([B_H]),
    "bias_hh_l0": np.array([0.0]),
}
X = np.array(XS).reshape(3, 1, 1)


def _get_rnnrs():
    if os.environ.get("RNNRS_REQUIRED"):
        import rnnrs
        return rnnrs
    return pytest.importorskip("rnnrs")


def test_hand_values_match_literals():
    assert H1 == math.tanh(0.5)
    np.testing.assert_allclose([H1, H2, H3], H_LITERAL, rtol=0, atol=1e-9)
    np.testing.assert_allclose([Y1, Y2, Y3], Y_LITERAL, rtol=0, atol=1e-9)
    np.testing.assert_allclose([DELTA1, DELTA2, DELTA3], DELTA_LITERAL, rtol=0, atol=1e-9)
    np.testing.assert_allclose(D_X, D_X_LITERAL, rtol=0, atol=1e-9)
    assert abs(D_H0 - D_H0_LITERAL) < 1e-9
    assert abs(D_W_HX - D_W_HX_LITERAL) < 1e-9
    assert abs(D_W_HH - D_W_HH_LITERAL) < 1e-9
    assert abs(D_B - D_B_LITERAL) < 1e-9


def _check_forward(h_seq, h_n, dtype):
    oracle.assert_close(np.asarray(h_seq).reshape(3), [H1, H2, H3], dtype, "textbook h_t")
    oracle.assert_close(np.asarray(h_n).reshape(1), [H3], dtype, "textbook h_n")
    out = oracle.linear_forward(np.array([[W_HY]]), np.array([B_Y]),
                                np.asarray(h_seq, dtype=np.float64).reshape(3, 1))
    oracle.assert_close(out.reshape(3), [Y1, Y2, Y3], dtype, "textbook y_t")
    if dtype == np.float64:
        np.testing.assert_allclose(out.reshape(3), Y_LITERAL, rtol=0, atol=1e-9)
        np.testing.assert_allclose(np.asarray(h_seq).reshape(3), H_LITERAL, rtol=0, atol=1e-9)


def _check_backward(dx, dh0, grads, dtype):
    oracle.assert_close(np.asarray(dx).reshape(3), D_X, dtype, "textbook dx")
    oracle.assert_close(np.asarray(dh0).reshape(1), [D_H0], dtype, "textbook dh0")
    oracle.assert_close(np.asarray(grads["weight_ih_l0"]).reshape(1), [D_W_HX], dtype, "textbook dW_hx")
    oracle.assert_close(np.asarray(grads["weight_hh_l0"]).reshape(1), [D_W_HH], dtype, "textbook dW_hh")
    oracle.assert_close(np.asarray(grads["bias_ih_l0"]).reshape(1), [D_B], dtype, "textbook db_ih")
    oracle.assert_close(np.asarray(grads["bias_hh_l0"]).reshape(1), [D_B], dtype, "textbook db_hh")


def test_oracle_reproduces_textbook():
    y, h_n, c_n = oracle.rnn_forward("rnn_tanh", PARAMS, X)
    assert c_n is None
    _check_forward(y, h_n, np.float64)
    # dL/dy_rnn = W_hy for L = sum_t (W_hy h_t + b_y)
    dy = np.full((3, 1, 1), W_HY)
    dx, dh0, dc0, grads = oracle.rnn_backward("rnn_tanh", PARAMS, X, None, None, 1, False, dy)
    assert dc0 is None
    _check_backward(dx, dh0, grads, np.float64)


def test_rnnrs_reproduces_textbook():
    rnnrs = _get_rnnrs()
    m = rnnrs.RNN(input_size=1, hidden_size=1, num_layers=1, nonlinearity="tanh",
                  dtype=np.float64, seed=0)
    m.load_state_dict({k: v.copy() for k, v in PARAMS.items()})
    sd = m.state_dict()
    for k, v in PARAMS.items():
        np.testing.assert_array_equal(sd[k], v)
    m.train()
    y, h_n = m.forward(X.copy())
    assert y.dtype == np.float64 and y.shape == (3, 1, 1) and h_n.shape == (1, 1, 1)
    _check_forward(y, h_n, np.float64)
    m.zero_grad()
    dx, dh0 = m.backward(np.full((3, 1, 1), W_HY))
    assert dx.shape == (3, 1, 1) and dh0.shape == (1, 1, 1)
    _check_backward(dx, dh0, m.grads(), np.float64)


def test_rnnrs_reproduces_textbook_float32():
    rnnrs = _get_rnnrs()
    m = rnnrs.RNN(input_size=1, hidden_size=1, nonlinearity="tanh", dtype=np.float32, seed=0)
    m.load_state_dict({k: v.astype(np.float32) for k, v in PARAMS.items()})
    y, h_n = m.forward(X.astype(np.float32))
    assert y.dtype == np.float32
    # float32 rounding of the weights themselves is far below RTOL_F32
    _check_forward(y, h_n, np.float32)

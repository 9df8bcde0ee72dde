"""Stateful streaming: ``stateful=True`` carries the final state into the next forward.

Forward: feeding a sequence in chunks (or one step at a time) equals feeding it whole. Backward:
truncated BPTT — the carried state is a constant for the next chunk, so a chunk's gradients are
those of the oracle on that chunk alone started from the carried state.
"""

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

import oracle
import rnnrs

from test_layers import make, params64

MODES = oracle.MODES


def run(m, mode, x, lengths=None):
    if mode == "lstm":
        y, (h, c) = m.forward(x, lengths=lengths)
        return y, h, c
    y, h = m.forward(x, lengths=lengths)
    return y, h, None


def split_points(T, cuts):
    pts = sorted({c for c in cuts if 0 < c < T})
    return list(zip([0] + pts, pts + [T]))


@pytest.mark.parametrize("mode", MODES)
@given(T=st.integers(1, 12), B=st.integers(1, 4), L=st.integers(1, 2),
       cuts=st.lists(st.integers(1, 11), max_size=4), seed=st.integers(0, 2 ** 16),
       batch_first=st.booleans())
def test_chunks_equal_whole(mode, T, B, L, cuts, seed, batch_first):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(T, B, 3))
    whole = make(mode, 3, 4, L, False, np.float64, seed=seed)
    stream = make(mode, 3, 4, L, False, np.float64, seed=seed)
    stream.stateful = True
    stream.batch_first = whole.batch_first = batch_first
    xin = x.transpose(1, 0, 2) if batch_first else x
    taxis = 1 if batch_first else 0
    ey, eh, ec = run(whole, mode, xin)
    parts = split_points(T, cuts)
    note(f"chunks {parts}")
    ys = []
    for a, b in parts:
        y, h, c = run(stream, mode, np.take(xin, range(a, b), axis=taxis))
        ys.append(y)
    oracle.assert_close(np.concatenate(ys, axis=taxis), ey, np.float64, f"{mode} chunked y")
    oracle.assert_close(h, eh, np.float64, f"{mode} chunked h_n")
    if mode == "lstm":
        oracle.assert_close(c, ec, np.float64, f"{mode} chunked c_n")


@pytest.mark.parametrize("mode", MODES)
def test_one_step_at_a_time_matches_whole_float32(mode):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 2, 3)).astype(np.float32)
    whole = make(mode, 3, 5, 2, False, np.float32, seed=9).eval()
    stream = make(mode, 3, 5, 2, False, np.float32, seed=9).eval()
    stream.stateful = True
    ey, eh, _ = run(whole, mode, x)
    ys = [run(stream, mode, x[t:t + 1])[0] for t in range(10)]
    np.testing.assert_allclose(np.concatenate(ys), ey, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_truncated_bptt_gradients(mode):
    """Chunk 2's gradients = the oracle's on chunk 2 alone, from chunk 1's final state (constant)."""
    rng = np.random.default_rng(5)
    T1, T2, B, I, H, L = 4, 5, 3, 3, 4, 2
    x = rng.uniform(-2, 2, size=(T1 + T2, B, I))
    dy = rng.uniform(-1, 1, size=(T2, B, H))
    m = make(mode, I, H, L, False, np.float64, seed=2)
    m.stateful = True
    p = params64(m)
    run(m, mode, x[:T1])
    st_ = m.states
    h1, c1 = st_ if mode == "lstm" else (st_, None)
    m.zero_grad()
    run(m, mode, x[T1:])
    if mode == "lstm":
        dx, (dh0, _) = m.backward(dy)
    else:
        dx, dh0 = m.backward(dy)
    edx, edh0, _, eg = oracle.rnn_backward(mode, p, x[T1:], h1, c1, L, False, dy)
    oracle.assert_close(dx, edx, np.float64, f"{mode} chunk dx")
    oracle.assert_close(dh0, edh0, np.float64, f"{mode} chunk dh0 (the gradient at the cut)")
    for k, v in m.grads().items():
        oracle.assert_close(v, eg[k], np.float64, f"{mode} chunk grad {k}")


def test_stateful_with_lengths_carries_each_sequence_state():
    """With lengths, the carried state is each sequence's state at its true last step."""
    rng = np.random.default_rng(1)
    m = rnnrs.GRU(2, 3, dtype=np.float64, stateful=True, seed=1)
    ref = rnnrs.GRU(2, 3, dtype=np.float64, seed=1)
    x1 = rng.standard_normal((4, 2, 2))
    x2 = rng.standard_normal((3, 2, 2))
    m.forward(x1, lengths=np.array([4, 2]))
    y2, _ = m.forward(x2)
    # sequence 1 is x1[:2, 1] followed by x2[:, 1]
    yr, _ = ref.forward(np.concatenate([x1[:2, 1:2], x2[:, 1:2]]))
    oracle.assert_close(y2[:, 1:2], yr[2:], np.float64, "stateful + lengths")


def test_reset_states_and_state_property():
    m = rnnrs.LSTM(2, 3, 2, dtype=np.float64, stateful=True)
    x = np.ones((3, 2, 2))
    assert m.states is None
    y1, _ = m.forward(x)
    h, c = m.states
    assert h.shape == (2, 2, 3) and c.shape == (2, 2, 3)
    y2, _ = m.forward(x)
    assert not np.allclose(y1, y2)  # the state was carried
    m.reset_states()
    assert m.states is None
    y3, _ = m.forward(x)
    np.testing.assert_array_equal(y1, y3)
    m.states = (h, c)
    y4, _ = m.forward(x)
    np.testing.assert_array_equal(y2, y4)
    # an explicit initial state overrides the carried one
    y5, _ = m.forward(x, (np.zeros((2, 2, 3)), np.zeros((2, 2, 3))))
    np.testing.assert_array_equal(y1, y5)
    with pytest.raises(ValueError, match="reset_states"):
        m.forward(np.ones((3, 5, 2)))


def test_non_stateful_does_not_carry():
    m = rnnrs.RNN(2, 3, dtype=np.float64)
    x = np.ones((3, 2, 2))
    y1, _ = m.forward(x)
    y2, _ = m.forward(x)
    np.testing.assert_array_equal(y1, y2)
    assert m.states is None


def test_stateful_bidirectional_is_rejected():
    with pytest.raises(ValueError, match="bidirectional"):
        rnnrs.GRU(2, 3, bidirectional=True, stateful=True)

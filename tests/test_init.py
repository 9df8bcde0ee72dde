"""Initialisers (init=, recurrent_init=, init_std=, forget_bias=) on layers, cells and models:
each one's statistics, the gate blocks, the biases, seeding and errors."""

import numpy as np
import pytest

import rnnrs

H, I = 64, 48


def _var_ok(a, want, rel=0.05):
    got = float(np.var(a))
    assert abs(got / want - 1) < rel, f"variance {got}, formula {want}"


@pytest.mark.parametrize("Layer,G", [(rnnrs.LSTM, 4), (rnnrs.GRU, 3), (rnnrs.RNN, 1)])
def test_orthogonal_makes_each_gate_block_of_w_hh_orthogonal(Layer, G):
    layer = Layer(I, H, num_layers=2, bidirectional=True, dtype=np.float64, recurrent_init="orthogonal", seed=1)
    for name, w in layer.state_dict().items():
        if name.startswith("weight_hh"):
            for g in range(G):
                b = w[g * H:(g + 1) * H]
                np.testing.assert_allclose(b @ b.T, np.eye(H), atol=1e-5, err_msg=f"{name} gate {g}")
        if name.startswith("bias"):  # init stays "pytorch": biases keep PyTorch's draw
            assert np.abs(w).max() <= 1 / np.sqrt(H) and np.any(w != 0)


@pytest.mark.parametrize("init,var_ih,var_hh", [
    ("xavier_uniform", 2 / (I + 4 * H), 2 / (H + 4 * H)),
    ("xavier_normal", 2 / (I + 4 * H), 2 / (H + 4 * H)),
    ("kaiming_uniform", 2 / I, 2 / H),
    ("normal", 0.01 ** 2, 0.01 ** 2),
])
def test_variances_follow_the_formulas_and_biases_are_zero(init, var_ih, var_hh):
    sd = rnnrs.LSTM(I, H, dtype=np.float64, init=init, seed=3).state_dict()
    _var_ok(sd["weight_ih_l0"], var_ih)
    _var_ok(sd["weight_hh_l0"], var_hh)
    assert not sd["bias_ih_l0"].any() and not sd["bias_hh_l0"].any()


def test_pytorch_default_is_unchanged_and_forget_bias_sums():
    a = rnnrs.LSTM(5, 8, seed=4).state_dict()
    b = rnnrs.LSTM(5, 8, seed=4, init="pytorch").state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = rnnrs.LSTM(5, 8, seed=4, forget_bias=1.0, dtype=np.float64).state_dict()
    np.testing.assert_array_equal(c["bias_ih_l0"][8:16] + c["bias_hh_l0"][8:16], np.ones(8))
    np.testing.assert_array_equal(c["weight_hh_l0"], rnnrs.LSTM(5, 8, seed=4, dtype=np.float64).state_dict()["weight_hh_l0"])
    k = rnnrs.LSTM(5, 8, init="xavier_uniform", recurrent_init="orthogonal", forget_bias=1.0).state_dict()
    assert k["bias_ih_l0"][8:16].tolist() == [1.0] * 8 and not k["bias_ih_l0"][:8].any()


def test_the_d2l_normal_model_and_cells():
    m = rnnrs.LanguageModel(30, None, 32, 1, "rnn", init="normal", dtype=np.float64, seed=0)
    for name, p in m.state_dict().items():
        if "bias" in name:
            assert not p.any(), name
        else:
            _var_ok(p, 0.01 ** 2, rel=0.2)
    cell = rnnrs.GRUCell(6, 10, recurrent_init="orthogonal", dtype=np.float64)
    w = cell.state_dict()["weight_hh"]
    np.testing.assert_allclose(w[:10] @ w[:10].T, np.eye(10), atol=1e-5)
    lm = rnnrs.LanguageModel(30, 8, 16, 2, "lstm", init="xavier_uniform", init_std=0.5, forget_bias=1.0)
    assert lm.state_dict()["rnn.bias_ih_l1"][16:32].tolist() == [1.0] * 16


def test_seeded_and_the_same_on_any_thread_count():
    a = rnnrs.GRU(7, 9, init="orthogonal", seed=5).state_dict()
    rnnrs.set_num_threads(1)
    try:
        b = rnnrs.GRU(7, 9, init="orthogonal", seed=5).state_dict()
    finally:
        rnnrs.set_num_threads(None)
    c = rnnrs.GRU(7, 9, init="orthogonal", seed=6).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["weight_hh_l0"], c["weight_hh_l0"])


def test_a_model_trains_from_every_initialiser():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 12, size=(17, 4))
    for init in ["pytorch", "normal", "xavier_uniform", "xavier_normal", "kaiming_uniform", "orthogonal"]:
        m = rnnrs.LanguageModel(12, 8, 16, 1, "lstm", init=init, seed=0)
        m.set_optimizer("adam", lr=1e-2)
        first = m.train_step(ids[:-1], ids[1:])[0]
        for _ in range(30):
            last = m.train_step(ids[:-1], ids[1:])[0]
        assert last < first, (init, first, last)


def test_bad_initialiser_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="init: expected one of"):
        rnnrs.LSTM(3, 4, init="glorot")
    with pytest.raises(ValueError, match="recurrent_init: expected one of"):
        rnnrs.LSTM(3, 4, recurrent_init="he")
    with pytest.raises(TypeError, match="init: expected one of"):
        rnnrs.LSTM(3, 4, init=1)
    with pytest.raises(ValueError, match="forget_bias.*only LSTM"):
        rnnrs.GRU(3, 4, forget_bias=1.0)
    with pytest.raises(ValueError, match="init_std: expected a finite number > 0"):
        rnnrs.LSTM(3, 4, init="normal", init_std=0.0)
    with pytest.raises(ValueError, match="init_std"):
        rnnrs.LSTM(3, 4, init_std=-1.0)
    with pytest.raises(TypeError, match="forget_bias: expected a number"):
        rnnrs.LSTM(3, 4, forget_bias="1")
    with pytest.raises(TypeError, match="unexpected keyword argument 'kernel_init'"):
        rnnrs.LSTMCell(3, 4, kernel_init="orthogonal")

"""LanguageModel regularisation (embed_dropout, locked_dropout, weight_drop) and tie_weights from
Python: gradients against finite differences (float64, the same masks for every evaluation),
inference without dropout, seeding, files, ONNX, errors. (The Rust tests check every option.)"""

import os
import warnings

import numpy as np
import pytest

import rnnrs
from rnnrs.checkpoint import load_model, save_model

X = (np.arange(24).reshape(4, 6) * 5 + 1) % 11
Y = (np.arange(24).reshape(4, 6) * 3 + 2) % 11


def _loss(m, calls):
    seed = m._core.dropout_state()[0]
    m._core.set_dropout_state(seed, calls)
    m.zero_grad()
    return m.loss_and_grad(X, Y)[0]


@pytest.mark.parametrize("opts", [dict(embed_dropout=0.3), dict(locked_dropout=0.3), dict(weight_drop=0.4),
                                  dict(tie_weights=True), dict(tie_weights=True, embed_dropout=0.2,
                                                               locked_dropout=0.2, weight_drop=0.2)])
def test_gradients_match_finite_differences(opts):
    m = rnnrs.LanguageModel(11, 4, 6, 2, "gru", dtype=np.float64, seed=1, **opts)
    _loss(m, 3)
    grads, params = m.grads(), m.state_dict()
    rng = np.random.default_rng(0)
    for name in params:
        for _ in range(3):
            idx = tuple(int(rng.integers(n)) for n in params[name].shape)
            p = {k: v.copy() for k, v in params.items()}
            p[name][idx] += 1e-6
            m.load_state_dict(p)
            lp = _loss(m, 3)
            p[name][idx] -= 2e-6
            m.load_state_dict(p)
            lm = _loss(m, 3)
            fd = (lp - lm) / 2e-6
            assert abs(fd - grads[name][idx]) < 1e-6 * max(1, abs(fd)), (opts, name, idx, fd, grads[name][idx])
        m.load_state_dict(params)


def test_training_only_seeded_and_saved(tmp_path):
    opts = dict(embed_dropout=0.1, locked_dropout=0.2, weight_drop=0.3, tie_weights=True)
    a = rnnrs.LanguageModel(11, 8, 16, 1, seed=2, **opts)
    b = rnnrs.LanguageModel(11, 8, 16, 1, seed=2, **opts)
    for m in (a, b):
        m.set_optimizer("adam", lr=1e-2)
    for _ in range(5):
        la, lb = a.train_step(X, Y)[0], b.train_step(X, Y)[0]
        assert la == lb
    plain = rnnrs.LanguageModel(11, 8, 16, 1, seed=2, tie_weights=True)
    plain.load_state_dict(a.state_dict())
    assert a.evaluate(X, Y)[0] == plain.evaluate(X, Y)[0], "inference has no dropout"
    save_model(tmp_path, a)
    m, _, _ = load_model(tmp_path)
    assert m.config == a.config and m.config["tie_weights"] is True
    np.testing.assert_array_equal(m.logits(X)[0], a.logits(X)[0])
    assert "linear.weight" not in m.state_dict() and "proj.weight" in m.state_dict()
    assert "tie_weights" not in rnnrs.LanguageModel(11, 8, 16, 1).config, "defaults stay out of files"


def test_tied_model_exports_to_onnx(tmp_path):
    if not os.environ.get("RNNRS_REQUIRED"):
        pytest.importorskip("onnxruntime")
    import onnxruntime as ort
    m = rnnrs.LanguageModel(11, 8, 16, 2, "lstm", seed=3, tie_weights=True)
    m.export_onnx(tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    h0 = np.zeros((2, 6, 16), np.float32)
    feeds = {"ids": X.astype(np.int64), "h0": h0, "c0": h0}
    got = sess.run(["logits"], feeds)[0]
    np.testing.assert_allclose(got, m.logits(X)[0], rtol=1e-4, atol=1e-5)


def test_errors_and_the_one_layer_warning():
    with pytest.raises(ValueError, match="tie_weights"):
        rnnrs.LanguageModel(11, None, 16, 1, tie_weights=True)
    with pytest.raises(ValueError, match="embed_dropout"):
        rnnrs.LanguageModel(11, None, 16, 1, embed_dropout=0.1)
    with pytest.raises(ValueError, match=r"weight_drop: expected a float in \[0, 1\)"):
        rnnrs.LanguageModel(11, 8, 16, 1, weight_drop=1.0)
    with pytest.raises(TypeError, match="tie_weights: expected True or False"):
        rnnrs.LanguageModel(11, 8, 16, 1, tie_weights=1)
    with pytest.warns(UserWarning, match="no effect with num_layers=1"):
        rnnrs.LanguageModel(11, 8, 16, 1, dropout=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rnnrs.LanguageModel(11, 8, 16, 2, dropout=0.2)


def test_the_same_bits_on_any_number_of_threads():
    opts = dict(embed_dropout=0.1, locked_dropout=0.2, weight_drop=0.3, tie_weights=True, init="xavier_uniform",
                recurrent_init="orthogonal", forget_bias=1.0)
    x = np.random.default_rng(0).integers(0, 11, (33, 40))
    runs = []
    for n in (1, 2, 3):
        rnnrs.set_num_threads(n)
        try:
            m = rnnrs.LanguageModel(11, 24, 48, 2, seed=5, **opts)
            m.set_optimizer("adam", lr=1e-2)
            losses = [m.train_step(x[:-1], x[1:], clip=1.0)[0] for _ in range(3)]
            runs.append((losses, m.state_dict()))
        finally:
            rnnrs.set_num_threads(None)
    for losses, sd in runs[1:]:
        assert losses == runs[0][0]
        for k, v in sd.items():
            np.testing.assert_array_equal(v, runs[0][1][k], err_msg=k)

"""rnnrs.Sequential (Keras-style, rnnrs.keras): gradients of the one-call Rust training step against
central finite differences of the loss, padded batches, save/load, fit/evaluate/predict."""

import io

import numpy as np
import pytest

import rnnrs
from rnnrs import keras as K

FD_EPS = 1e-6
FD_RTOL = 1e-5
FD_ATOL = 1e-8


def grads_via_step(model, x, y, lengths):
    """Gradients of the training loss: one train_step with plain SGD at lr=0 (no update)."""
    core = model._core
    core.set_optimizer("sgd", 0.0)
    before = dict(core.state_dict())
    core.train_step(model._x(x), model._y(y), lengths)
    for k, v in core.state_dict():
        np.testing.assert_array_equal(v, before[k])
    return dict(core.grads())


def fd_check(model, x, y, lengths, names=None, max_entries=6, seed=0):
    g = grads_via_step(model, x, y, lengths)
    w = model.state_dict()
    rng = np.random.default_rng(seed)
    xx, yy = model._x(x), model._y(y)

    def loss(weights):
        model.load_state_dict(weights)
        return model._core.evaluate(xx, yy, lengths)[0]

    for name in names or list(w):
        flat = w[name].reshape(-1)
        for i in rng.choice(flat.size, size=min(max_entries, flat.size), replace=False):
            wp = {k: v.copy() for k, v in w.items()}
            wp[name].reshape(-1)[i] += FD_EPS
            lp = loss(wp)
            wp[name].reshape(-1)[i] -= 2 * FD_EPS
            lm = loss(wp)
            num = (lp - lm) / (2 * FD_EPS)
            got = g[name].reshape(-1)[i]
            assert abs(got - num) <= FD_ATOL + FD_RTOL * max(abs(num), 1e-3) * 10, (name, i, got, num)
    model.load_state_dict(w)


def test_gradients_many_to_one_sparse_ce_with_lengths():
    rng = np.random.default_rng(0)
    m = K.Sequential([K.Embedding(7, 4), K.LSTM(5, return_sequences=True), K.GRU(3, bidirectional=True),
                      K.Dense(4, activation="tanh"), K.Dense(3, activation="softmax")], dtype=np.float64, seed=3)
    m.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    x = rng.integers(0, 7, size=(5, 6))
    y = rng.integers(0, 3, size=5)
    fd_check(m, x, y, np.array([6, 2, 4, 1, 5]))


@pytest.mark.parametrize("cell", [K.SimpleRNN, K.GRU, K.LSTM])
def test_gradients_many_to_many_categorical_and_mse(cell):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5, 3))
    lengths = np.array([5, 3, 1, 4])
    m = K.Sequential([cell(4, return_sequences=True), K.Dense(3, activation="softmax")], dtype=np.float64, seed=1)
    m.compile(loss="categorical_crossentropy", optimizer="sgd")
    y = rng.dirichlet(np.ones(3), size=(4, 5))
    m.build(3)
    fd_check(m, x, y, lengths)
    r = K.Sequential([cell(4, return_sequences=True, bidirectional=True), K.Dense(2, activation="sigmoid"),
                      K.Dense(2)], dtype=np.float64, seed=2)
    r.compile(loss="mse", optimizer="sgd")
    r.build(3)
    fd_check(r, x, rng.standard_normal((4, 5, 2)), lengths)


def test_padded_batch_predictions_equal_each_sequence_alone():
    rng = np.random.default_rng(2)
    m = K.Sequential([K.Embedding(9, 4, mask_zero=True), K.GRU(6, return_sequences=True), K.LSTM(5),
                      K.Dense(3, activation="softmax")], dtype=np.float64, seed=4)
    m.compile(loss="sparse_categorical_crossentropy")
    seqs = [rng.integers(1, 9, size=n) for n in (3, 7, 1, 5)]
    x = K.pad_sequences(seqs, padding="post")
    lengths = (x != 0).sum(axis=1)
    np.testing.assert_array_equal(lengths, [3, 7, 1, 5])
    p = m.predict(x)                     # lengths from mask_zero
    np.testing.assert_allclose(p, m.predict(x, lengths=lengths), rtol=0, atol=0)
    # Keras' default pre-padding: the masked leading steps are skipped, same predictions.
    np.testing.assert_allclose(m.predict(K.pad_sequences(seqs)), p, rtol=1e-12, atol=1e-12)
    for i, s in enumerate(seqs):
        np.testing.assert_allclose(p[i], m.predict(s[None])[0], rtol=1e-12, atol=1e-12)


def test_fit_learns_and_reports_history():
    rng = np.random.default_rng(3)
    n, t = 400, 8
    x = rng.integers(1, 6, size=(n, t))
    y = (x[:, 0] > 3).astype(np.int64)    # depends on the first token: needs memory
    m = K.Sequential([K.Embedding(6, 8), K.GRU(16), K.Dense(2, activation="softmax")], seed=0)
    m.compile(loss="sparse_categorical_crossentropy", optimizer=K.Adam(0.02), metrics=["accuracy"])
    out = io.StringIO()
    h = m.fit(x, y, epochs=6, batch_size=32, validation_split=0.25, verbose=1, file=out)
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(h.history["loss"]) == 6 and h.history["loss"][-1] < h.history["loss"][0]
    assert h.history["val_accuracy"][-1] > 0.9
    assert "Epoch 6/6" in out.getvalue() and "val_accuracy" in out.getvalue()
    loss, acc = m.evaluate(x, y)
    assert acc > 0.9 and loss < 0.4
    assert m.predict(x[:3]).shape == (3, 2)


def test_save_load_roundtrip_and_resume(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 6, 2)).astype(np.float32)
    y = x.sum(axis=1)
    def make():
        m = K.Sequential([K.LSTM(8, return_sequences=True), K.Dropout(0.2), K.LSTM(4), K.Dense(2)], seed=5)
        m.compile(loss="mse", optimizer="adam", metrics=["mae"])
        return m
    a = make()
    a.fit(x, y, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / "model.safetensors"
    a.save(path)
    b = K.load_model(path)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))
    assert b.get_config() == a.get_config()
    # Training continues identically (optimizer state and dropout stream restored).
    a.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    b.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    with open(path, "rb") as f:
        assert b"pickle" not in f.read(200)


def test_sequential_is_exported_and_names_do_not_collide():
    assert rnnrs.keras.Sequential is K.Sequential
    assert K.LSTM is not rnnrs.LSTM
    with pytest.raises(TypeError, match="rnnrs.keras.LSTM"):
        K.Sequential([rnnrs.LSTM(3, 4)])


@pytest.mark.parametrize("layers,loss,match", [
    ([K.GRU(3), K.Dense(2)], "sparse_categorical_crossentropy", "softmax"),
    ([K.GRU(3), K.GRU(2), K.Dense(2)], "mse", "return_sequences"),
    ([K.Dense(2), K.Embedding(3, 2)], "mse", "first layer"),
])
def test_bad_models(layers, loss, match):
    m = K.Sequential(layers)
    m.compile(loss=loss)
    with pytest.raises(ValueError, match=match):
        m.build(3)


def test_bad_inputs():
    m = K.Sequential([K.Embedding(5, 2), K.GRU(3), K.Dense(2, activation="softmax")])
    m.compile(loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        m.predict(np.array([[1, 7]]))
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\)"):
        m.train_on_batch(np.array([[1, 2]]), np.array([4]))
    with pytest.raises(ValueError, match="lengths"):
        m.predict(np.array([[1, 2]]), lengths=[3])
    with pytest.raises(ValueError, match="loss"):
        m.compile(loss="hinge")


def _load_example(name):
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_classify_sequences_beats_the_majority_class():
    # A reduced run (a few seconds); the full run's numbers are in docs/sequence-models.md.
    r = _load_example("classify_sequences").main(["--train", "1500", "--test", "400", "--epochs", "8", "--verbose", "0"])
    assert 0.0 < r["baseline"] < 0.4 and np.isfinite(r["loss"])
    assert r["accuracy"] > r["baseline"] + 0.3, r


def test_example_forecast_beats_the_naive_forecasts():
    r = _load_example("forecast").main(["--length", "3000", "--epochs", "8", "--verbose", "0"])
    assert r["last_value"] > 0 and r["seasonal_naive"] > 0
    assert r["rmse"] < 0.8 * min(r["last_value"], r["seasonal_naive"]), r


def test_examples_small_runs_work():
    r = _load_example("classify_sequences").main(["--small", "--verbose", "0"])
    assert 0.0 <= r["accuracy"] <= 1.0 and np.isfinite(r["loss"])
    r = _load_example("forecast").main(["--small", "--verbose", "0"])
    assert np.isfinite(r["rmse"])


def test_mae_is_over_true_steps_and_needs_targets_of_the_outputs_shape():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((10, 7, 3)).astype(np.float64)
    y = rng.standard_normal((10, 7, 2))
    lengths = np.array([7, 3, 1, 5, 7, 2, 6, 4, 7, 1])
    m = K.Sequential([K.GRU(5, return_sequences=True), K.Dense(2)], dtype=np.float64, seed=1)
    m.compile(loss="mse", optimizer="adam", metrics=["mae"])
    m.build(3)
    p = m.predict(x, lengths=lengths)
    keep = np.arange(7)[None, :] < lengths[:, None]
    want = np.abs(p - y)[keep].mean()  # padded steps count in no metric
    logs = m.evaluate(x, y, batch_size=4, lengths=lengths, return_dict=True)
    assert logs["mae"] == pytest.approx(want, rel=1e-12)
    assert m.evaluate(x, y, batch_size=3, return_dict=True)["mae"] == pytest.approx(np.abs(m.predict(x) - y).mean(),
                                                                                    rel=1e-12)
    # Class ids are not comparable with probabilities (Keras would broadcast |p_c - id|): refused.
    c = K.Sequential([K.GRU(4), K.Dense(2, activation="softmax")])
    with pytest.raises(ValueError, match=r"'mae' compares outputs with targets of the same shape: expected loss "
                                         r"'mse' or 'categorical_crossentropy', got "
                                         r"'sparse_categorical_crossentropy' \(targets are class ids\)"):
        c.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy", "mae"])


def test_mae_with_categorical_crossentropy_is_against_the_distributions():
    # Targets of categorical_crossentropy have the output's shape, so mae is defined (as in Keras):
    # mean |p - y| over classes and true steps, in evaluate and in fit's validation.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((12, 6, 3))
    y = np.eye(3)[rng.integers(0, 3, size=(12, 6))]
    lengths = np.array([6, 2, 1, 4, 6, 3, 5, 6, 1, 2, 6, 4])
    m = K.Sequential([K.LSTM(4, return_sequences=True), K.Dense(3, activation="softmax")], dtype=np.float64, seed=2)
    m.compile(loss="categorical_crossentropy", metrics=["accuracy", "mae"])
    m.build(3)
    keep = np.arange(6)[None, :] < lengths[:, None]
    p = m.predict(x, lengths=lengths)
    logs = m.evaluate(x, y, batch_size=5, lengths=lengths, return_dict=True)
    assert logs["mae"] == pytest.approx(np.abs(p - y)[keep].mean(), rel=1e-12)
    assert logs["mae"] != pytest.approx(np.abs(p - y).mean(), rel=1e-6)  # (padded steps would change it)
    h = m.fit(x, y, epochs=2, batch_size=4, validation_split=0.25, lengths=lengths, verbose=0)
    p = m.predict(x[9:], lengths=lengths[9:])
    assert h.history["val_mae"][-1] == pytest.approx(np.abs(p - y[9:])[keep[9:]].mean(), rel=1e-12)


def test_non_finite_inputs_are_reported_at_the_users_index():
    # Layers see batch-first input time-major, models see it in (shuffled) batches: the index in
    # the message must still be the one in the array the user passed.
    x = np.zeros((4, 5, 3), np.float32)
    x[1, 3, 2] = np.nan
    with pytest.raises(rnnrs.NonFiniteError, match=r"x: expected finite values, got NaN at index \[1, 3, 2\]"):
        rnnrs.GRU(3, 4, batch_first=True).forward(x)
    layer = rnnrs.LSTM(3, 4, batch_first=True).train()
    y, _ = layer.forward(np.zeros((4, 5, 3), np.float32))
    dy = np.zeros_like(y)
    dy[2, 1, 0] = -np.inf
    with pytest.raises(rnnrs.NonFiniteError, match=r"dy: expected finite values, got -inf at index \[2, 1, 0\]"):
        layer.backward(dy)
    m = K.Sequential([K.LSTM(4), K.Dense(2)], seed=0)
    m.compile(loss="mse")
    xs = np.zeros((10, 3, 2), np.float32)
    xs[6, 2, 1] = np.inf
    with pytest.raises(rnnrs.NonFiniteError, match=r"x: expected finite values, got inf at index \[6, 2, 1\]"):
        m.predict(xs, batch_size=4)
    ys = np.zeros((10, 2), np.float32)
    with pytest.raises(rnnrs.NonFiniteError, match=r"at index \[6, 2, 1\]"):
        m.fit(xs, ys, epochs=1, batch_size=3, shuffle=True, verbose=0)
    with pytest.raises(rnnrs.NonFiniteError, match=r"at index \[6, 2, 1\]"):
        m.evaluate(xs, ys, batch_size=4)
    ys[7, 1] = np.nan
    with pytest.raises(rnnrs.NonFiniteError, match=r"y: expected finite values, got NaN at index \[7, 1\]"):
        m.evaluate(np.zeros_like(xs), ys, batch_size=4)


def test_validation_data_trains_and_non_finite_validation_is_at_the_users_index():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((10, 3, 2)), rng.standard_normal((10, 2))
    xv, yv = rng.standard_normal((5, 3, 2)), rng.standard_normal((5, 2))
    m = K.Sequential([K.GRU(4), K.Dense(2)], dtype=np.float64, seed=0)
    m.compile(loss="mse", metrics=["mae"])
    h = m.fit(x, y, epochs=2, batch_size=4, validation_data=(xv, yv), verbose=0)
    assert h.history["val_loss"][-1] == pytest.approx(m.evaluate(xv, yv)[0], rel=1e-12)
    assert h.history["val_mae"][-1] == pytest.approx(np.abs(m.predict(xv) - yv).mean(), rel=1e-12)
    xv[3, 1, 0] = np.nan  # validation_data: its own index
    with pytest.raises(rnnrs.NonFiniteError, match=r"x: expected finite values, got NaN at index \[3, 1, 0\]"):
        m.fit(x, y, epochs=1, batch_size=4, validation_data=(xv, yv), verbose=0)
    x[9, 2, 1] = -np.inf  # validation_split=0.2 holds out rows 8, 9 of the user's x
    with pytest.raises(rnnrs.NonFiniteError, match=r"x: expected finite values, got -inf at index \[9, 2, 1\]"):
        m.fit(x, y, epochs=1, batch_size=4, validation_split=0.2, verbose=0)

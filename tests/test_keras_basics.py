"""rnnrs.keras, the Keras-compatibility basics: binary_crossentropy (value and gradient against
finite differences), RMSprop (against its formula), sample_weight/class_weight, Keras' initialisers
and get_weights/set_weights layout (against a NumPy forward written from Keras' equations),
pad_sequences with Keras' defaults, mask_zero with pre-padding, and the callbacks wired into fit."""

import io

import numpy as np
import pytest

import rnnrs

from rnnrs import keras as K
from rnnrs.keras import _init
from rnnrs.keras import callbacks as C
from rnnrs.keras import layers as L


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def step_grads(model, x, y, weights=None):
    """Gradients of the loss via one Rust training step with SGD at lr=0."""
    core = model._core
    core.set_optimizer("sgd", 0.0)
    core.train_step(*model._prepare(x, y, None), None, weights)
    return dict(core.grads())


def fd_check(model, x, y, weights=None, eps=1e-6, entries=5):
    g = step_grads(model, x, y, weights)
    w = model.state_dict()
    xx, yy, lens = model._prepare(x, y, None)
    rng = np.random.default_rng(0)

    def loss(state):
        model.load_state_dict(state)
        return model._core.evaluate(xx, yy, lens, weights)[0]

    for name in w:
        flat = w[name].reshape(-1)
        for i in rng.choice(flat.size, size=min(entries, flat.size), replace=False):
            wp = {k: v.copy() for k, v in w.items()}
            wp[name].reshape(-1)[i] += eps
            lp = loss(wp)
            wp[name].reshape(-1)[i] -= 2 * eps
            lm = loss(wp)
            num = (lp - lm) / (2 * eps)
            assert g[name].reshape(-1)[i] == pytest.approx(num, rel=1e-5, abs=1e-8), (name, i)
    model.load_state_dict(w)


def sentiment_like(n=6, t=5, seed=0):
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(1, 9, size=k) for k in rng.integers(1, t + 1, size=n)]
    return K.utils.pad_sequences(seqs, maxlen=t), rng.integers(0, 2, size=n)


# ------------------------------------------------------------------------- binary cross-entropy
def test_binary_crossentropy_value_and_gradients():
    x, y = sentiment_like()
    m = K.Sequential([L.Embedding(9, 4, mask_zero=True), L.Bidirectional(L.LSTM(3)), L.Dense(1, activation="sigmoid")],
                     dtype=np.float64, seed=2)
    m.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    p = m.predict(x)[:, 0]
    want = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    logs = m.evaluate(x, y, return_dict=True)
    assert logs["loss"] == pytest.approx(want, rel=1e-12)
    assert logs["accuracy"] == pytest.approx(np.mean((p > 0.5) == (y == 1)))
    fd_check(m, x, y)
    w = [0.5, 2.0, 1.0, 0.0, 3.0, 1.0]
    assert m.evaluate(x, y, sample_weight=w)[0] == pytest.approx(
        -np.mean(np.array(w) * (y * np.log(p) + (1 - y) * np.log(1 - p))), rel=1e-12)
    fd_check(m, x, y, w)


def test_binary_crossentropy_needs_a_sigmoid_output():
    m = K.Sequential([L.Embedding(9, 4), L.LSTM(3), L.Dense(1)])
    with pytest.raises(ValueError, match="sigmoid"):
        m.compile(optimizer="adam", loss="binary_crossentropy")


def test_class_weight_is_sample_weight_by_class():
    x, y = sentiment_like(8, seed=3)
    runs = []
    for kw in ({"class_weight": {0: 1.0, 1: 3.0}}, {"sample_weight": np.where(y == 1, 3.0, 1.0)}):
        m = K.Sequential([L.Embedding(9, 4, mask_zero=True), L.GRU(3), L.Dense(1, activation="sigmoid")], seed=1)
        m.compile(optimizer="adam", loss="binary_crossentropy")
        runs.append(m.fit(x, y, epochs=2, batch_size=3, verbose=0, **kw).history["loss"])
    assert runs[0] == runs[1]
    with pytest.raises(ValueError, match=r"sample_weight: expected shape \(8,\)"):
        m.fit(x, y, sample_weight=[1.0, 2.0], verbose=0)


# ------------------------------------------------------------------------------------ RMSprop
def test_rmsprop_follows_its_formula():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((5, 4, 3)), rng.standard_normal((5, 2))
    m = K.Sequential([L.SimpleRNN(3, input_shape=(None, 3)), L.Dense(2)], dtype=np.float64, seed=0)
    m.compile(optimizer=K.optimizers.RMSprop(learning_rate=0.01, rho=0.8), loss="mse")
    w = m.state_dict()
    v = {k: np.zeros_like(a) for k, a in w.items()}
    for _ in range(3):
        core = m._core
        m.train_on_batch(x, y)
        g = dict(core.grads())
        for k in w:
            v[k] = 0.8 * v[k] + 0.2 * g[k] ** 2
            w[k] = w[k] - 0.01 * g[k] / (np.sqrt(v[k]) + 1e-7)
        got = m.state_dict()
        for k in w:
            np.testing.assert_allclose(got[k], w[k], rtol=1e-10, atol=1e-12)
    assert K.Sequential([L.Dense(1)])._input is None
    with pytest.raises(ValueError, match="momentum=0.0"):
        K.optimizers.RMSprop(momentum=0.9)


# ------------------------------------------------------------------- weights: layout, initialisers
def keras_forward(kind, weights, x, units, sequences=False):
    """One recurrent layer from Keras' get_weights() list, with Keras' equations: the last state,
    or every step's output with ``sequences``."""
    kernel, rec, bias = weights
    b, t, _ = x.shape
    h = np.zeros((b, units))
    c = np.zeros((b, units))
    ys = []
    for s in range(t):
        if kind == "lstm":
            z = x[:, s] @ kernel + h @ rec + bias
            i, f, g, o = np.split(z, 4, axis=1)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
        elif kind == "gru":  # reset_after=True: z, r, h gates, bias (2, 3H)
            xz, xr, xh = np.split(x[:, s] @ kernel + bias[0], 3, axis=1)
            hz, hr, hh = np.split(h @ rec + bias[1], 3, axis=1)
            z, r = sigmoid(xz + hz), sigmoid(xr + hr)
            h = z * h + (1 - z) * np.tanh(xh + r * hh)
        else:
            h = np.tanh(x[:, s] @ kernel + h @ rec + bias)
        ys.append(h)
    return np.stack(ys, axis=1) if sequences else h


@pytest.mark.parametrize("mode", ["concat", "sum", "mul", "ave"])
def test_bidirectional_and_go_backwards_follow_keras(mode):
    """Keras: the backward layer reads the sequence reversed (go_backwards) and, with
    return_sequences, its outputs are reversed back before merging; a go_backwards layer alone
    returns its outputs in the order it read them."""
    _init.FLOATX["dtype"] = "float64"
    try:
        rng = np.random.default_rng(8)
        x = rng.standard_normal((3, 5, 2))
        inp = K.Input(shape=(None, 2))
        bi = L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode=mode)
        back = L.LSTM(3, go_backwards=True, return_sequences=True)
        model = K.Model(inp, [bi(inp), back(inp)])
        model.set_weights([rng.standard_normal(w.shape) * 0.5 for w in model.get_weights()])
        w = bi.get_weights()
        f = keras_forward("gru", w[:3], x, 4, sequences=True)
        r = keras_forward("gru", w[3:], x[:, ::-1], 4, sequences=True)[:, ::-1]
        want = {"concat": np.concatenate([f, r], axis=-1), "sum": f + r, "mul": f * r, "ave": (f + r) / 2}[mode]
        got_bi, got_back = model.predict(x)
        np.testing.assert_allclose(got_bi, want, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got_back, keras_forward("lstm", back.get_weights(), x[:, ::-1], 3, sequences=True),
                                   rtol=1e-10, atol=1e-12)
    finally:
        _init.FLOATX["dtype"] = "float32"


@pytest.mark.parametrize("cls, kind", [(L.LSTM, "lstm"), (L.GRU, "gru"), (L.SimpleRNN, "rnn")])
def test_get_weights_is_keras_layout_and_init(cls, kind):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 2))
    m = K.Sequential([cls(5, input_shape=(None, 2)), L.Dense(2)], dtype=np.float64, seed=7)
    m.compile(optimizer="adam", loss="mse")
    w = m.get_weights()
    g = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    assert [a.shape for a in w] == [(2, g * 5), (5, g * 5), (2, g * 5) if kind == "gru" else (g * 5,), (5, 2), (2,)]
    # Keras' defaults: orthogonal recurrent kernel (orthonormal rows), zero biases but the forget gate's.
    np.testing.assert_allclose(w[1] @ w[1].T, np.eye(5), atol=1e-12)
    want_bias = np.zeros_like(w[2])
    if kind == "lstm":
        want_bias[5:10] = 1.0
    np.testing.assert_array_equal(w[2], want_bias)
    limit = np.sqrt(6 / (2 + g * 5))
    assert np.abs(w[0]).max() <= limit and np.abs(w[0]).max() > limit / 2
    # Random weights in, then the model computes what Keras' equations give from that list.
    new = [rng.standard_normal(a.shape) * 0.5 for a in w]
    m.set_weights(new)
    for a, b in zip(m.get_weights(), new):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)
    h = keras_forward(kind, new[:3], x, 5)
    np.testing.assert_allclose(m.predict(x), h @ new[3] + new[4], rtol=1e-10, atol=1e-12)
    assert m.count_params() == sum(a.size for a in w) == {"lstm": 4, "gru": 3, "rnn": 1}[kind] * 5 * (2 + 5 + 1) \
        + (15 if kind == "gru" else 0) + 12
    with pytest.raises(ValueError, match="expected a list of 5 arrays"):
        m.set_weights(new[:2])
    with pytest.raises(rnnrs.NonFiniteError, match="contains NaN or infinity"):
        m.set_weights([np.full_like(a, np.nan) for a in new])
    with pytest.raises(ValueError, match=r"weight 0: expected shape"):
        m.set_weights([new[1]] + new[1:])


def test_same_seed_same_weights():
    a, b, c = (K.Sequential([L.Embedding(9, 3), L.LSTM(4), L.Dense(2, activation="softmax")], seed=s) for s in (1, 1, 2))
    for m in (a, b, c):
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(p, q)
    assert any(not np.array_equal(p, q) for p, q in zip(a.get_weights(), c.get_weights()))


# ---------------------------------------------------------------------------- padding and masks
def test_pad_sequences_keras_defaults():
    seqs = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
    np.testing.assert_array_equal(K.utils.pad_sequences(seqs), [[0, 0, 1, 2, 3], [0, 0, 0, 0, 4], [5, 6, 7, 8, 9]])
    np.testing.assert_array_equal(K.utils.pad_sequences(seqs, maxlen=3), [[1, 2, 3], [0, 0, 4], [7, 8, 9]])
    np.testing.assert_array_equal(K.utils.pad_sequences(seqs, maxlen=3, padding="post", truncating="post", value=-1),
                                  [[1, 2, 3], [4, -1, -1], [5, 6, 7]])
    assert K.utils.pad_sequences(seqs).dtype == np.int32
    f = K.utils.pad_sequences([np.ones((2, 3)), np.ones((1, 3))], dtype="float32")
    assert f.shape == (2, 2, 3) and f[1, 0].sum() == 0
    with pytest.raises(ValueError, match="padding"):
        K.utils.pad_sequences(seqs, padding="middle")


def test_mask_zero_skips_zeros_anywhere_like_dropping_them():
    rng = np.random.default_rng(6)
    m = K.Sequential([L.Embedding(9, 4, mask_zero=True), L.GRU(5, return_sequences=True), L.LSTM(3),
                      L.Dense(2, activation="softmax")], dtype=np.float64, seed=1)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    seqs = [rng.integers(1, 9, size=k) for k in (3, 6, 1, 5)]
    pre, post = K.utils.pad_sequences(seqs, maxlen=7), K.utils.pad_sequences(seqs, maxlen=7, padding="post")
    inside = post.copy()
    inside[1] = [seqs[1][0], 0, 0] + list(seqs[1][1:5])   # zeros inside, last token dropped by maxlen
    alone = np.array([m.predict(s[None])[0] for s in seqs])
    np.testing.assert_allclose(m.predict(pre), alone, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.predict(post), alone, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.predict(inside)[1], m.predict(seqs[1][None, :5])[0], rtol=1e-12, atol=1e-12)


def test_masking_layer_on_features():
    rng = np.random.default_rng(7)
    seqs = [rng.standard_normal((k, 2)) + 3 for k in (2, 5, 3)]
    m = K.Sequential([L.Masking(0.0, input_shape=(None, 2)), L.LSTM(4), L.Dense(1)], dtype=np.float64, seed=0)
    m.compile(optimizer="adam", loss="mse")
    x = K.utils.pad_sequences(seqs, dtype="float64")
    alone = np.array([m.predict(s[None])[0] for s in seqs])
    np.testing.assert_allclose(m.predict(x), alone, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------- callbacks
def tiny(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 6, size=(60, 5))
    y = (x[:, 0] > 3).astype(np.int64)
    m = K.Sequential([L.Embedding(6, 4), L.GRU(6), L.Dense(2, activation="softmax")], seed=seed)
    m.compile(optimizer=K.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m, x, y


def test_early_stopping_stops_and_restores_best_weights():
    m, x, y = tiny()
    es = C.EarlyStopping(monitor="loss", min_delta=10.0, patience=2, restore_best_weights=True)
    seen = []
    h = m.fit(x, y, epochs=20, verbose=0, callbacks=[es, lambda epoch, logs: seen.append((epoch, logs["loss"]))])
    assert len(h.history["loss"]) == 3 and es.stopped_epoch == 2 and [e for e, _ in seen] == [0, 1, 2]
    assert m.stop_training
    # The first epoch's weights are back: evaluating now gives a loss other than the last epoch's model.
    m2, _, _ = tiny()
    m2.fit(x, y, epochs=1, verbose=0, shuffle=True)
    for a, b in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_on_val_loss_needs_validation_data():
    m, x, y = tiny()
    with pytest.raises(ValueError, match="monitor 'val_loss'"):
        m.fit(x, y, epochs=2, verbose=0, callbacks=[C.EarlyStopping()])
    h = m.fit(x, y, epochs=30, verbose=0, validation_split=0.25, callbacks=[C.EarlyStopping(patience=1)])
    vl = h.history["val_loss"]
    assert len(vl) < 30 and vl[-1] >= min(vl[:-1])  # (stopped at an epoch without improvement)


def test_model_checkpoint_save_best_only_and_weights_only(tmp_path):
    m, x, y = tiny()
    ck = C.ModelCheckpoint(str(tmp_path / "m-{epoch:02d}.safetensors"), monitor="loss", save_best_only=True)
    h = m.fit(x, y, epochs=4, verbose=0, callbacks=[ck])
    losses = h.history["loss"]
    best = [i for i in range(4) if losses[i] < min(losses[:i], default=np.inf)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"m-{i + 1:02d}.safetensors" for i in best]
    last = K.load_model(tmp_path / f"m-{best[-1] + 1:02d}.safetensors")
    if best[-1] == 3:
        for a, b in zip(last.get_weights(), m.get_weights()):
            np.testing.assert_array_equal(a, b)
    C.ModelCheckpoint(str(tmp_path / "w.safetensors"), save_weights_only=True).set_model(m)
    m.fit(x, y, epochs=1, verbose=0, callbacks=[C.ModelCheckpoint(str(tmp_path / "w.safetensors"), monitor="loss",
                                                                  save_weights_only=True)])
    from rnnrs.checkpoint import read_tensors
    tensors, _ = read_tensors(tmp_path / "w.safetensors")
    assert tensors and not any(k.startswith("optimizer.") for k in tensors)


def test_reduce_lr_on_plateau_lowers_the_learning_rate():
    m, x, y = tiny()
    lrs = []
    cb = C.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0, min_lr=0.004)
    m.fit(x, y, epochs=4, verbose=0, callbacks=[cb, C.LambdaCallback(on_epoch_end=lambda e, l: lrs.append(m.learning_rate))])
    assert lrs == pytest.approx([0.02, 0.01, 0.005, 0.004])


def test_stop_training_from_a_callback_and_bad_callbacks():
    m, x, y = tiny()

    class Stop(C.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    assert len(m.fit(x, y, epochs=9, verbose=0, callbacks=[Stop()]).history["loss"]) == 2
    with pytest.raises(TypeError, match="callbacks: expected"):
        m.fit(x, y, verbose=0, callbacks=[3])


def test_verbose_output_and_history():
    m, x, y = tiny()
    out = io.StringIO()
    h = m.fit(x, y, epochs=2, verbose=2, file=out)
    assert out.getvalue().count("Epoch ") == 2 and h.epoch == [0, 1]

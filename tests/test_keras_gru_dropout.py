"""rnnrs.keras' GRU with ``recurrent_dropout``: Keras' semantics (the mask enters only the recurrent
products, the update ``z * h`` takes the unmasked state) against a NumPy reference on Keras'
weight layout; every parameter's and the inputs' gradients against central finite differences in
float64 (masks held fixed: same step number); an all-ones mask against the plain (one-call Rust)
GRU's outputs and gradients; inference without dropout."""

import numpy as np
import pytest

from rnnrs import keras as K
from rnnrs.keras import _init
from rnnrs.keras import layers as L
from rnnrs.keras._functional import loss_and_grad


@pytest.fixture(autouse=True)
def float64():
    saved = dict(_init.FLOATX)
    _init.FLOATX["dtype"] = "float64"
    K.utils.set_random_seed(1)
    yield
    _init.FLOATX.update(saved)


def _loss(model, xs, y):
    outs, _, values = model._run(xs, True, False)
    return loss_and_grad(model.loss, outs[0], y, values[id(model.outputs[0])][1], None, False)[0]


def _input_grads(model, xs, y):
    """The loss gradient w.r.t. each (float) model input, from the graph's backward pass."""
    for l in model._param_layers():
        l._zero_grads()
    outs, caches, values = model._run(xs, True, True)
    g = loss_and_grad(model.loss, outs[0], y, values[id(model.outputs[0])][1], None, model._logits())[3]
    grads = {id(model.outputs[0]): g}
    first = True
    for node, cache in reversed(caches):
        douts = [grads.get(id(t)) for t in node.outputs]
        if all(d is None for d in douts):
            continue
        pre = first and model._logits() and node.outputs[0] is model.outputs[0]
        first = False
        dins = node.layer._backward(cache, douts, True) if pre else node.layer._backward(cache, douts)
        for t, d in zip(node.inputs, dins):
            if d is not None:
                grads[id(t)] = grads[id(t)] + d if id(t) in grads else d
    for l in model._param_layers():
        l._collect_grads() if hasattr(l, "_collect_grads") else None
    return [grads.get(id(t)) for t in model.inputs]


def fd_check(model, xs, y, loss, entries=6, eps=1e-6, inputs=True):
    """Every parameter's gradient (and, with ``inputs``, every float input's) from one training
    step (SGD, lr 0) against central differences of the training-mode loss (same dropout masks)."""
    model.compile(optimizer=K.optimizers.SGD(0.0), loss=loss)
    step = model._steps
    model._train_batch(xs, y, None)
    model._steps = step
    layers = model._param_layers()
    grads = {(id(l), k): l._grads[k].copy() for l in layers for k in l._params}
    rng = np.random.default_rng(0)
    checked = 0

    def central(flat, i):
        old = flat[i]
        flat[i] = old + eps
        lp = _loss(model, xs, y)
        flat[i] = old - eps
        lm = _loss(model, xs, y)
        flat[i] = old
        return (lp - lm) / (2 * eps)

    for l in layers:
        for k, p in l._params.items():
            flat = p.reshape(-1)
            for i in rng.choice(flat.size, min(entries, flat.size), replace=False):
                num = central(flat, i)
                assert grads[(id(l), k)].reshape(-1)[i] == pytest.approx(num, rel=1e-5, abs=1e-8), (l.name, k, i)
                checked += 1
    if inputs:
        dxs = _input_grads(model, xs, y)
        model._steps = step
        for x, dx in zip(xs, dxs):
            if not np.issubdtype(x.dtype, np.floating):
                continue
            assert dx is not None and dx.shape == x.shape
            flat = x.reshape(-1)
            live = np.flatnonzero(flat != 0)  # (perturbing a Masking-padded step would unmask it)
            for i in rng.choice(live, min(3 * entries, live.size), replace=False):
                assert dx.reshape(-1)[i] == pytest.approx(central(flat, i), rel=1e-5, abs=1e-8), ("input", i)
                checked += 1
    assert checked > 10


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_gru_recurrent_dropout_gradients(return_sequences, go_backwards):
    rng = np.random.default_rng(10)
    inp = K.Input(shape=(6, 3))
    a = L.Masking()(inp)
    a = L.GRU(5, return_sequences=return_sequences, go_backwards=go_backwards, recurrent_dropout=0.3)(a)
    out = L.TimeDistributed(L.Dense(2))(a) if return_sequences else L.Dense(2)(a)
    model = K.Model(inp, out)
    x = rng.standard_normal((4, 6, 3))
    x[0, :2] = 0  # pre-padding
    x[2, 4:] = 0  # post-padding
    x[3, 3] = 0  # a masked step inside a sequence
    y = rng.standard_normal((4, 6, 2) if return_sequences else (4, 2))
    fd_check(model, [x], y, "mse")


def test_gru_dropout_and_recurrent_dropout_with_states_gradients():
    rng = np.random.default_rng(11)
    x_in, s_in = K.Input(shape=(None, 3)), K.Input(shape=(4,))
    pre = L.Dense(3, activation="tanh")(x_in)  # (checks the GRU's dx through a weight, too)
    y, h = L.GRU(4, return_sequences=True, return_state=True, dropout=0.25, recurrent_dropout=0.4)(
        pre, initial_state=s_in)
    out = L.Dense(3, activation="softmax")(L.GRU(4, recurrent_dropout=0.5, go_backwards=True)(y, initial_state=[h]))
    model = K.Model([x_in, s_in], out)
    fd_check(model, [rng.standard_normal((3, 5, 3)), rng.standard_normal((3, 4))],
             rng.integers(0, 3, size=3), "sparse_categorical_crossentropy")


def test_gru_recurrent_dropout_mask_zero_and_bidirectional_gradients():
    rng = np.random.default_rng(12)
    inp = K.Input(shape=(None,), dtype="int32")
    e = L.Embedding(9, 4, mask_zero=True)(inp)
    b = L.Bidirectional(L.GRU(3, return_sequences=True, recurrent_dropout=0.3), merge_mode="sum")(e)
    model = K.Model(inp, L.Dense(1, activation="sigmoid")(L.GRU(3, recurrent_dropout=0.2, dropout=0.2)(b)))
    x = K.utils.pad_sequences([rng.integers(1, 9, size=n) for n in (2, 6, 1, 4)], maxlen=6)
    x[1, 2] = 0
    fd_check(model, [x], rng.integers(0, 2, size=(4, 1)).astype(float), "binary_crossentropy", inputs=False)


def _keras_gru_reference(x, weights, m, h0=None, go_backwards=False, mask_update=False):
    """Keras' GRUCell (reset_after=True, recurrent dropout mask ``m``), on Keras' z, r, h layout."""
    kernel, rec, bias = weights
    u = rec.shape[0]
    h = np.zeros((x.shape[0], u)) if h0 is None else h0
    xs = x[:, ::-1] if go_backwards else x
    ys = []
    sig = lambda a: 1.0 / (1.0 + np.exp(-a))  # noqa: E731
    for t in range(xs.shape[1]):
        mx = xs[:, t] @ kernel + bias[0]
        mi = (h * m) @ rec + bias[1]
        z = sig(mx[:, :u] + mi[:, :u])
        r = sig(mx[:, u:2 * u] + mi[:, u:2 * u])
        hh = np.tanh(mx[:, 2 * u:] + r * mi[:, 2 * u:])
        h = z * (h * m if mask_update else h) + (1 - z) * hh  # Keras: the unmasked state
        ys.append(h)
    return np.stack(ys, axis=1)


@pytest.mark.parametrize("go_backwards", [False, True])
def test_gru_recurrent_dropout_is_keras_semantics(go_backwards):
    rng = np.random.default_rng(13)
    inp = K.Input(shape=(5, 3))
    gru = L.GRU(4, return_sequences=True, recurrent_dropout=0.5, go_backwards=go_backwards)
    model = K.Model(inp, gru(inp))
    model.compile(optimizer="sgd", loss="mse")
    w = model.get_weights()
    w = [w[0], w[1], rng.standard_normal(w[2].shape)]  # nonzero biases in both rows
    model.set_weights(w)
    x = rng.standard_normal((3, 5, 3))
    ys, _, _ = model._run([x], True, False)
    # The graph's mask: the first draw of the step's generator (no input dropout here).
    g = np.random.default_rng([model.seed, 31, model._steps])
    m = (g.random((3, 4)) >= 0.5) / 0.5
    assert 0 < (m == 0).sum() < m.size
    np.testing.assert_allclose(ys[0], _keras_gru_reference(x, w, m, go_backwards=go_backwards), rtol=1e-12, atol=1e-13)
    # ... which differs from masking the state in the update too (what a plain cell step does).
    wrong = _keras_gru_reference(x, w, m, go_backwards=go_backwards, mask_update=True)
    assert not np.allclose(ys[0], wrong)
    # Inference: no dropout, the plain GRU on the same weights.
    plain_in = K.Input(shape=(5, 3))
    plain = K.Model(plain_in, L.GRU(4, return_sequences=True, go_backwards=go_backwards)(plain_in))
    plain.set_weights(w)
    np.testing.assert_allclose(model.predict(x), plain.predict(x), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(model.predict(x), _keras_gru_reference(x, w, np.ones_like(m), go_backwards=go_backwards),
                               rtol=1e-12, atol=1e-13)


def test_gru_all_ones_mask_equals_the_plain_layer_outputs_and_gradients():
    """p tiny: the mask is all ones (scaled by 1/(1-p) ~ 1), so the per-step cell path must give
    the one-call Rust GRU's training outputs and every gradient."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((4, 6, 3))
    x[1, 4:] = 0
    x[2, 2] = 0
    y = rng.standard_normal((4, 6, 2))
    models = []
    for p in (1e-13, 0.0):
        inp = K.Input(shape=(6, 3))
        a = L.GRU(5, return_sequences=True, recurrent_dropout=p)(L.Masking()(inp))
        model = K.Model(inp, L.TimeDistributed(L.Dense(2))(a))
        model.compile(optimizer=K.optimizers.SGD(0.0), loss="mse")
        models.append(model)
    models[1].set_weights(models[0].get_weights())
    tapes = []
    for model in models:
        outs, caches, _ = model._run([x], True, True)
        tapes.append(caches[1][1][8])  # (the GRU's cache: its per-step tape, None for the Rust call)
        model._train_batch([x], y, None)
    assert tapes[0] is not None and tapes[1] is None
    np.testing.assert_allclose(models[0]._run([x], True, False)[0][0], models[1]._run([x], True, False)[0][0],
                               rtol=1e-10, atol=1e-12)
    for la, lb in zip(models[0]._param_layers(), models[1]._param_layers()):
        for k in la._params:
            np.testing.assert_allclose(la._grads[k], lb._grads[k], rtol=1e-9, atol=1e-11, err_msg=f"{la.name} {k}")


def test_sequential_gru_recurrent_dropout_trains_and_predicts_without_dropout(tmp_path):
    rng = np.random.default_rng(15)
    x, y = rng.standard_normal((8, 5, 3)), rng.integers(0, 2, size=8)
    model = K.Sequential([L.Input((5, 3)), L.GRU(6, recurrent_dropout=0.3, dropout=0.1),
                          L.Dense(2, activation="softmax")], dtype=np.float64, seed=4)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert model._graph is not None
    before = model.get_weights()
    h = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(h.history["loss"]).all()
    assert not np.allclose(before[1], model.get_weights()[1])
    plain = K.Sequential([L.Input((5, 3)), L.GRU(6), L.Dense(2, activation="softmax")], dtype=np.float64, seed=4)
    plain.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(model.predict(x), plain.predict(x), rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(model.predict(x), model.predict(x))
    model.save(tmp_path / "gru.keras")
    back = K.models.load_model(tmp_path / "gru.keras")
    assert back.layers[0].recurrent_dropout == 0.3
    np.testing.assert_array_equal(back.predict(x), model.predict(x))

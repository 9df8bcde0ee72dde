"""rnnrs.keras' functional API: gradients of whole graphs (encoder states into a decoder,
Bidirectional in every merge mode, masks, go_backwards, dropout and recurrent dropout,
RepeatVector, TimeDistributed) against central finite differences in float64; the graph against
the one-call Rust Sequential on the same weights; Keras' lstm_seq2seq inference pattern; stateful
layers; save/load."""

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


def fd_check(model, xs, y, loss, entries=4, eps=1e-6):
    """Every parameter's gradient from one training step (SGD, lr 0) against central differences
    of the training-mode loss (same dropout masks: same step number)."""
    model.compile(optimizer=K.optimizers.SGD(0.0), loss=loss)
    step = model._steps
    model._train_batch(xs, y, None)
    model._steps = step
    layers = model._param_layers()
    grads = {(id(l), k): l._grads[k].copy() for l in layers for k in l._params}

    def value():
        outs, _, values = model._run(xs, True, False)
        return loss_and_grad(model.loss, outs[0], y, values[id(model.outputs[0])][1], None, False)[0]

    rng = np.random.default_rng(0)
    checked = 0
    for l in layers:
        for k, p in l._params.items():
            flat = p.reshape(-1)
            for i in rng.choice(flat.size, min(entries, flat.size), replace=False):
                old = flat[i]
                flat[i] = old + eps
                lp = value()
                flat[i] = old - eps
                lm = value()
                flat[i] = old
                num = (lp - lm) / (2 * eps)
                assert grads[(id(l), k)].reshape(-1)[i] == pytest.approx(num, rel=1e-5, abs=1e-8), (l.name, k, i)
                checked += 1
    assert checked > 10


def test_encoder_states_into_decoder_gradients():
    rng = np.random.default_rng(0)
    enc_in, dec_in = K.Input(shape=(None, 5)), K.Input(shape=(None, 4))
    _, h, c = L.LSTM(6, return_state=True)(enc_in)
    dec, _, _ = L.LSTM(6, return_sequences=True, return_state=True)(dec_in, initial_state=[h, c])
    model = K.Model([enc_in, dec_in], L.Dense(4, activation="softmax")(dec))
    assert [type(l).__name__ for l in model.layers] == ["InputLayer", "InputLayer", "LSTM", "LSTM", "Dense"]
    xs = [rng.standard_normal((3, 5, 5)), rng.standard_normal((3, 4, 4))]
    fd_check(model, xs, rng.dirichlet(np.ones(4), size=(3, 4)), "categorical_crossentropy")


def test_gru_state_and_initial_state_input_gradients():
    rng = np.random.default_rng(1)
    x_in, s_in = K.Input(shape=(None, 3)), K.Input(shape=(4,))
    y, h = L.GRU(4, return_sequences=True, return_state=True)(x_in, initial_state=s_in)
    out = L.Dense(2)(L.SimpleRNN(4)(y, initial_state=[h]))
    model = K.Model([x_in, s_in], out)
    fd_check(model, [rng.standard_normal((3, 5, 3)), rng.standard_normal((3, 4))], rng.standard_normal((3, 2)), "mse")


@pytest.mark.parametrize("mode", ["concat", "sum", "mul", "ave"])
def test_bidirectional_with_masks_gradients(mode):
    rng = np.random.default_rng(2)
    inp = K.Input(shape=(None,), dtype="int32")
    e = L.Embedding(9, 4, mask_zero=True)(inp)
    b = L.Bidirectional(L.GRU(5, return_sequences=True), merge_mode=mode)(e)
    out = L.Dense(1, activation="sigmoid")(L.Bidirectional(L.LSTM(3), merge_mode=mode)(b))
    model = K.Model(inp, out)
    x = K.utils.pad_sequences([rng.integers(1, 9, size=n) for n in (2, 6, 1, 4)], maxlen=6)
    x[1, 2] = 0  # a masked step inside a sequence
    fd_check(model, [x], rng.integers(0, 2, size=(4, 1)).astype(float), "binary_crossentropy")


def test_masking_go_backwards_dropouts_repeat_timedistributed_gradients():
    rng = np.random.default_rng(3)
    inp = K.Input(shape=(7, 3))
    a = L.Masking()(inp)
    a = L.LSTM(4, go_backwards=True, return_sequences=True, dropout=0.3, recurrent_dropout=0.4)(a)
    a = L.SimpleRNN(3, recurrent_dropout=0.2)(a)
    a = L.RepeatVector(2)(a)
    a = L.GRU(4, return_sequences=True)(a)
    model = K.Model(inp, L.TimeDistributed(L.Dense(3, activation="softmax"))(a))
    x = rng.standard_normal((4, 7, 3))
    x[0, :3] = 0
    x[2, 5:] = 0
    fd_check(model, [x], rng.integers(0, 3, size=(4, 2)), "sparse_categorical_crossentropy")


def test_graph_equals_rust_sequential_on_the_same_weights():
    rng = np.random.default_rng(4)
    x = K.utils.pad_sequences([rng.integers(1, 9, size=n) for n in (2, 6, 1, 4)], maxlen=6)
    x[1, 2] = 0
    y = np.array([0, 1, 1, 0])
    seq = K.Sequential([L.Embedding(9, 4, mask_zero=True), L.Bidirectional(L.LSTM(5, return_sequences=True)), L.GRU(3),
                        L.Dense(2, activation="softmax")], dtype=np.float64, seed=3)
    seq.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
    assert seq._core is not None  # (the one-call Rust path)
    inp = K.Input(shape=(None,), dtype="int32")
    out = L.Dense(2, activation="softmax")(L.GRU(3)(L.Bidirectional(L.LSTM(5, return_sequences=True))(
        L.Embedding(9, 4, mask_zero=True)(inp))))
    model = K.Model(inp, out)
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
    model.set_weights(seq.get_weights())
    np.testing.assert_allclose(model.predict(x), seq.predict(x), rtol=1e-12, atol=1e-13)
    for _ in range(3):
        a = model.train_on_batch(x, y, sample_weight=[1, 2, 0.5, 1])
        b = seq.train_on_batch(x, y, sample_weight=[1, 2, 0.5, 1])
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-12)
    for p, q in zip(model.get_weights(), seq.get_weights()):
        np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-12)


def test_lstm_seq2seq_inference_models_share_the_trained_layers(tmp_path):
    rng = np.random.default_rng(5)
    enc_in = K.Input(shape=(None, 4))
    _, h, c = L.LSTM(8, return_state=True)(enc_in)
    dec_in = K.Input(shape=(None, 3))
    dec_lstm = L.LSTM(8, return_sequences=True, return_state=True)
    dec_out, _, _ = dec_lstm(dec_in, initial_state=[h, c])
    dense = L.Dense(3, activation="softmax")
    model = K.Model([enc_in, dec_in], dense(dec_out))
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    xe, xd = rng.standard_normal((6, 5, 4)), np.eye(3)[rng.integers(0, 3, size=(6, 4))]
    model.fit([xe, xd], np.eye(3)[rng.integers(0, 3, size=(6, 4))], batch_size=3, epochs=2, verbose=0)
    model.save(tmp_path / "s2s.keras")
    model = K.models.load_model(tmp_path / "s2s.keras")
    # keras.io's inference set-up, indices and all:
    encoder_model = K.Model(model.input[0], model.layers[2].output[1:])
    h_in, c_in = K.Input(shape=(8,)), K.Input(shape=(8,))
    out, h2, c2 = model.layers[3](model.input[1], initial_state=[h_in, c_in])
    decoder_model = K.Model([model.input[1], h_in, c_in], [model.layers[4](out), h2, c2])
    full = model.predict([xe, xd])
    states = encoder_model.predict(xe)
    for t in range(4):  # step by step with the carried states == the teacher-forced sequence
        p, hh, cc = decoder_model.predict([xd[:, t:t + 1]] + states)
        np.testing.assert_allclose(p[:, 0], full[:, t], rtol=1e-10, atol=1e-12)
        states = [hh, cc]


def test_stateful_layer_carries_state_across_batches():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 6, 3))
    inp = K.Input(shape=(None, 3))
    model = K.Model(inp, L.GRU(4, stateful=True, return_sequences=True)(inp))
    whole = model.predict(x)
    model.reset_states()
    parts = np.concatenate([model.predict(x[:, :2]), model.predict(x[:, 2:])], axis=1)
    np.testing.assert_allclose(parts, whole, rtol=1e-12, atol=1e-13)
    model.reset_states()
    np.testing.assert_allclose(model.predict(x[:, :2]), whole[:, :2], rtol=1e-12)
    with pytest.raises(ValueError, match="stateful: expected batch 2"):
        model.predict(x[:1])


def test_sequential_with_graph_only_layers_runs_as_a_graph(tmp_path):
    rng = np.random.default_rng(7)
    model = K.Sequential(dtype=np.float64, seed=2)
    model.add(L.Input((5, 4)))
    model.add(L.LSTM(6))
    model.add(L.RepeatVector(3))
    model.add(L.LSTM(6, return_sequences=True))
    model.add(L.Dense(4, activation="softmax"))
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    assert model._graph is not None
    x, y = rng.standard_normal((8, 5, 4)), np.eye(4)[rng.integers(0, 4, size=(8, 3))]
    h = model.fit(x, y, batch_size=4, epochs=2, verbose=0, validation_data=(x, y),
                  callbacks=[K.callbacks.EarlyStopping(patience=5)])
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert model.predict(x).shape == (8, 3, 4)
    model.save(tmp_path / "m.safetensors")
    back = K.load_model(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    # A model built again from the same code (other automatic layer names) loads the weights.
    again = K.Sequential([L.Input((5, 4)), L.LSTM(6), L.RepeatVector(3), L.LSTM(6, return_sequences=True),
                          L.Dense(4, activation="softmax")], dtype=np.float64, seed=9)
    again.compile(loss="categorical_crossentropy", optimizer="adam")
    assert not np.array_equal(again.predict(x), model.predict(x))
    again.load_weights(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(again.predict(x), model.predict(x))
    assert len(model.get_weights()) == 3 + 3 + 2


def test_errors_name_expected_and_received():
    inp = K.Input(shape=(None, 3))
    with pytest.raises(ValueError, match=r"initial_state: expected 2 tensor\(s\)"):
        L.LSTM(4)(inp, initial_state=[K.Input(shape=(4,))])
    with pytest.raises(TypeError, match="expected symbolic tensors"):
        L.LSTM(4)(np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="merge_mode"):
        L.Bidirectional(L.LSTM(3), merge_mode="max")
    model = K.Model(inp, L.Dense(2)(L.LSTM(4)(inp)))
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match=r"x \(input_layer.*\): expected shape \('N', 'T', 3\), got \(2, 5, 4\)"):
        model.predict(np.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match=r"recurrent_dropout: expected a float in \[0, 1\), got 1.0"):
        L.GRU(3, recurrent_dropout=1.0)

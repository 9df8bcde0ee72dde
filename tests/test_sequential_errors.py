"""rnnrs.keras.Sequential under bad input: every mistake is a clear ValueError/TypeError (or an rnnrs
error), never a crash, an abort or a poisoned file; hostile model files are rejected by
``load_model`` (hypothesis mutations of a real file, bytes and JSON configuration)."""

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnrs
from rnnrs import keras as K
from rnnrs.checkpoint import CheckpointError

REJECTED = (CheckpointError, ValueError, TypeError, OSError)


def small_model(seed=0):
    m = K.Sequential([K.Embedding(10, 4), K.GRU(5), K.Dense(3, activation="softmax")], seed=seed)
    m.compile(loss="sparse_categorical_crossentropy", optimizer=K.Adam(0.01), metrics=["accuracy"])
    return m


X = np.random.default_rng(0).integers(0, 10, size=(16, 6))
Y = (X[:, 0] % 3).astype(np.int64)


@pytest.mark.parametrize("layers, match", [
    ([K.LSTM(10**6)], "recurrent layer size"),
    ([K.Embedding(10**7, 10**6), K.LSTM(4)], "embedding size"),
    ([K.Embedding(10, 4), K.LSTM(4), K.Dense(10**12)], "linear size"),
])
def test_huge_layers_are_a_value_error_not_an_abort(layers, match):
    m = K.Sequential(layers)
    with pytest.raises(ValueError, match=match):
        m.compile(loss="mse", optimizer="adam")  # builds at once when the first layer is an embedding
        m.build(3)


def test_empty_model():
    m = K.Sequential([])
    m.compile(loss="mse")
    with pytest.raises(ValueError, match="at least one layer"):
        m.build(3)


@pytest.mark.parametrize("kw, match", [
    ({"batch_size": 0}, "batch_size: expected an integer >= 1, got 0"),
    ({"batch_size": -1}, "batch_size: expected an integer >= 1, got -1"),
    ({"batch_size": 2.5}, "batch_size: expected an integer >= 1, got 2.5"),
    ({"epochs": -1}, "epochs: expected an integer >= 1, got -1"),
    ({"epochs": True}, "epochs: expected an integer >= 1, got True"),
])
def test_fit_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        small_model().fit(X, Y, verbose=0, **kw)


def test_evaluate_and_predict_arguments():
    m = small_model()
    m.fit(X, Y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got 0"):
        m.evaluate(X, Y, batch_size=0)
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got 0"):
        m.predict(X, batch_size=0)
    with pytest.raises(ValueError, match="expected 16 examples"):
        m.evaluate(X, Y[:3])


@pytest.mark.parametrize("x, err, match", [
    (np.zeros((0, 6), np.int64), ValueError, "at least one example"),
    ([[1, 2, 3], [1, 2]], ValueError, "rectangular"),
    (np.zeros((4, 6)), ValueError, "integer token ids"),
    (np.array([[object()]]), TypeError, "numeric"),
])
def test_bad_x(x, err, match):
    with pytest.raises(err, match=match):
        small_model().fit(x, Y[:4], verbose=0)


def test_a_non_finite_update_is_refused_and_never_saved(tmp_path):
    m = small_model()
    m.compile(loss="sparse_categorical_crossentropy", optimizer=K.SGD(1e30))
    with pytest.raises(rnnrs.NonFiniteError, match=r"training step \d+: .*parameters left unchanged"):
        m.fit(X, Y, epochs=5, batch_size=4, verbose=0)
    w = m.state_dict()
    assert all(np.isfinite(v).all() for v in w.values())
    # Poisoned weights cannot even be set, so they can never be saved.
    with pytest.raises(rnnrs.NonFiniteError, match="NaN or infinity"):
        m.load_state_dict({k: np.full_like(v, np.nan) for k, v in w.items()})
    path = tmp_path / "m.safetensors"
    m.save(path)
    for k, v in K.load_model(path).state_dict().items():
        np.testing.assert_array_equal(v, w[k])


# ------------------------------------------------------------------------------------ hostile files
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    m = small_model()
    m.fit(X, Y, epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("seq") / "m.safetensors"
    m.save(path)
    return path.read_bytes()


def _split(data):
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def _join(header, body):
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + body


def _load_or_reject(path):
    try:
        m = K.load_model(path)
    except REJECTED as e:
        assert str(e).strip()
        return None
    m.predict(X[:2])  # a model that loads must work
    return m


def test_saved_model_round_trips(saved, tmp_path):
    p = tmp_path / "m.safetensors"
    p.write_bytes(saved)
    assert _load_or_reject(p) is not None


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                    max_leaves=6)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.lists(st.sampled_from(["layers", 0, 1, 2, "config", "units", "input_dim", "output_dim", "seed",
                                      "compile", "optimizer", "loss", "class", "dtype", "input_features",
                                      "activation", "learning_rate"]), min_size=1, max_size=4),
       value=JSON)
def test_mutated_config_is_loaded_or_rejected(saved, tmp_path, path, value):
    header, body = _split(saved)
    cfg = json.loads(header["__metadata__"]["config"])
    node = cfg
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            break
    try:
        node[path[-1]] = value
    except (IndexError, TypeError):
        cfg = value
    header["__metadata__"]["config"] = json.dumps(cfg)
    header["__metadata__"].pop("checksum", None)
    p = tmp_path / "m.safetensors"
    p.write_bytes(_join(header, body))
    _load_or_reject(p)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8))
def test_bit_flips_are_rejected(saved, tmp_path, flips):
    data = bytearray(saved)
    for pos, val in flips:
        data[pos % len(data)] = val
    p = tmp_path / "m.safetensors"
    p.write_bytes(bytes(data))
    _load_or_reject(p)


@pytest.mark.parametrize("key, value", [("optimizer_steps", "-1"), ("optimizer_steps", "x"),
                                        ("optimizer_steps", str(2**70)), ("dropout_state", "[1]"),
                                        ("dropout_state", "[-1, 2]"), ("config", "{"), ("config", "[]")])
def test_bad_metadata_is_a_checkpoint_error(saved, tmp_path, key, value):
    header, body = _split(saved)
    header["__metadata__"][key] = value
    header["__metadata__"].pop("checksum", None)
    p = tmp_path / "m.safetensors"
    p.write_bytes(_join(header, body))
    with pytest.raises(CheckpointError):
        K.load_model(p)

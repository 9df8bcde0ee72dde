"""ONNX export (``rnnrs.onnx_export``, ``export_onnx`` methods, ``rnnrs export``) checked in ONNX Runtime.

* every cell, 1-3 layers, uni- and bidirectional, random shapes: ONNX Runtime's outputs and final
  states equal rnnrs' forward, with and without initial states and ``sequence_lens`` (lengths 0 too);
* the built-in model: teacher-forced logits equal rnnrs' to 1e-4, and greedy generation step by step
  in ONNX Runtime gives ``LyricGenerator.default(ban=()).generate(prefix, greedy=True)``;
* the CLI, float16 weights, keras ``Sequential``, the refusals, and ``examples/onnx_generate.py``.

Skipped without onnx/onnxruntime unless RNNRS_REQUIRED=1 is set (CI installs both).
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

if os.environ.get("RNNRS_REQUIRED"):
    import onnx
    import onnxruntime as ort
else:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")

import rnnrs
from rnnrs import cli, keras, onnx_export
from rnnrs.generate import DEFAULT_MODEL_DIR

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "onnx_generate.py"
PREFIXES = ["明月", "春风又绿江南岸", "浪淘尽"]
# float32 against float32: the two sum the same products in different orders (and ORT's kernels use
# their own tanh/sigmoid), a few ulp per step over a handful of steps.
RTOL, ATOL = 1e-5, 1e-6


def session(path):
    return ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])


def make_layer(cell, i, h, layers, bi, seed, **kw):
    if cell == "lstm":
        return rnnrs.LSTM(i, h, layers, bidirectional=bi, seed=seed, **kw)
    if cell == "gru":
        return rnnrs.GRU(i, h, layers, bidirectional=bi, seed=seed, **kw)
    return rnnrs.RNN(i, h, layers, nonlinearity=cell[4:], bidirectional=bi, seed=seed, **kw)


def run_both(layer, sess, x, h0, c0, lengths):
    """(ORT outputs, rnnrs outputs) for one input; None states/lengths: zeros / full length."""
    b, t = (x.shape[0], x.shape[1]) if layer.batch_first else (x.shape[1], x.shape[0])
    zeros = np.zeros((layer.num_layers * layer.num_directions, b, layer.hidden_size), np.float32)
    feeds = {"x": x, "h0": zeros if h0 is None else h0,
             "sequence_lens": np.full(b, t, np.int32) if lengths is None else lengths.astype(np.int32)}
    if isinstance(layer, rnnrs.LSTM):
        feeds["c0"] = zeros if c0 is None else c0
        y, (h, c) = layer.forward(x, None if h0 is None else (h0, c0), lengths=lengths)
        ref = [y, h, c]
    else:
        y, h = layer.forward(x, h0, lengths=lengths)
        ref = [y, h]
    return sess.run(None, feeds), ref


# ====================================================================================== layers
@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
def test_layer_matches_rnnrs(tmp_path, cell, layers, bi):
    rng = np.random.default_rng([layers, bi, len(cell)])
    i, h = (int(v) for v in rng.integers(1, 9, size=2))
    layer = make_layer(cell, i, h, layers, bi, seed=int(rng.integers(1000))).eval()
    path = tmp_path / "layer.onnx"
    layer.export_onnx(path)
    onnx.checker.check_model(onnx.load(path))
    sess = session(path)
    n_out = 3 if cell == "lstm" else 2
    assert [o.name for o in sess.get_outputs()] == ["y", "h_n", "c_n"][:n_out]
    shape = (layers * layer.num_directions, None, h)
    for t, b in [(int(rng.integers(1, 12)), int(rng.integers(1, 6))), (1, 1), (int(rng.integers(2, 12)), 5)]:
        x = rng.standard_normal((t, b, i)).astype(np.float32)
        states = [rng.standard_normal((shape[0], b, h)).astype(np.float32) for _ in range(2)]
        lengths = rng.integers(0, t + 1, size=b)
        lengths[0] = t  # a full-length sequence and (b > 1) zero-length ones occur
        if b > 2:
            lengths[1] = 0
        for with_state in (False, True):
            for lens in (None, lengths):
                h0, c0 = states if with_state else (None, None)
                got, ref = run_both(layer, sess, x, h0, c0, lens)
                for name, g, r in zip(["y", "h_n", "c_n"], got, ref):
                    np.testing.assert_allclose(
                        g, r, rtol=RTOL, atol=ATOL,
                        err_msg=f"{name}: {cell} L={layers} bi={bi} T={t} B={b} state={with_state} lengths={lens}")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_relu"])
def test_batch_first_and_float64_layers(tmp_path, cell):
    rng = np.random.default_rng(7)
    layer = make_layer(cell, 3, 5, 2, True, seed=3, batch_first=True, dtype=np.float64).eval()
    layer.export_onnx(tmp_path / "l.onnx")
    sess = session(tmp_path / "l.onnx")
    assert sess.get_inputs()[0].shape == ["batch", "seq_len", 3]
    x = rng.standard_normal((4, 6, 3))
    lengths = np.array([6, 1, 3, 5])
    ref32 = make_layer(cell, 3, 5, 2, True, seed=3, batch_first=True).eval()  # float64 weights are rounded to float32
    ref32.load_state_dict(layer.state_dict())
    got, ref = run_both(ref32, sess, x.astype(np.float32), None, None, lengths)
    assert got[0].shape == (4, 6, 10)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=RTOL, atol=ATOL)


def test_layer_float16_weights(tmp_path):
    rng = np.random.default_rng(11)
    layer = rnnrs.LSTM(4, 6, 2, bidirectional=True, seed=5).eval()
    layer.export_onnx(tmp_path / "h.onnx", dtype="float16")
    model = onnx.load(tmp_path / "h.onnx")
    floats = [t for t in model.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    assert floats and all(t.data_type == onnx.TensorProto.FLOAT16 for t in floats)
    assert sum(n.op_type == "Cast" for n in model.graph.node) == len(floats)
    # equals rnnrs with the weights rounded to float16
    layer.load_state_dict({k: v.astype(np.float16) for k, v in layer.state_dict().items()})
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    got, ref = run_both(layer, session(tmp_path / "h.onnx"), x, None, None, np.array([5, 2, 4]))
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("cell,embed", [("gru", None), ("rnn_relu", 4), ("lstm", None)])
def test_language_model_matches(tmp_path, cell, embed):
    rng = np.random.default_rng(len(cell))
    lm = rnnrs.LanguageModel(9, embed, 7, 2, cell=cell, seed=2)
    lm.export_onnx(tmp_path / "lm.onnx")
    sess = session(tmp_path / "lm.onnx")
    ops = {n.op_type for n in onnx.load(tmp_path / "lm.onnx").graph.node}
    assert ("OneHot" if embed is None else "Gather") in ops
    ids = rng.integers(0, 9, size=(6, 3))
    h0 = rng.standard_normal((2, 3, 7)).astype(np.float32)
    c0 = rng.standard_normal((2, 3, 7)).astype(np.float32) if cell == "lstm" else None
    logits, (h, c) = lm.logits(ids, (h0, c0))
    got = sess.run(None, {"ids": ids, "h0": h0, **({"c0": c0} if c0 is not None else {})})
    for g, r in zip(got, [logits, h] + ([c] if c is not None else [])):
        np.testing.assert_allclose(g, r, rtol=RTOL, atol=ATOL)


# ================================================================================ built-in model
@pytest.fixture(scope="module")
def builtin():
    if not os.path.isfile(os.path.join(DEFAULT_MODEL_DIR, "model.safetensors")) and not os.environ.get("RNNRS_REQUIRED"):
        pytest.skip("the built-in model is not installed")
    return rnnrs.LyricGenerator.default(ban=())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The built-in model exported by the CLI, float32 and float16: {dtype: path}."""
    d = tmp_path_factory.mktemp("onnx")
    paths = {"float32": d / "lyrics.onnx", "float16": d / "lyrics16.onnx"}
    assert cli.main(["export", "--onnx", os.fspath(paths["float32"])]) == 0
    assert cli.main(["export", "--onnx", os.fspath(paths["float16"]), "--float16", "--opset", "18"]) == 0
    return paths


def ort_greedy(sess, ids, length):
    """Greedy continuation of ``ids`` in ORT, one step per call, the state fed back: (ids, smallest
    top-2 logit gap seen)."""
    model_inputs = sess.get_inputs()[1:]
    state = {i.name: np.zeros((i.shape[0], 1, i.shape[2]), np.float32) for i in model_inputs}
    x, out, gap = np.asarray(ids, np.int64)[:, None], [], np.inf
    for _ in range(length):
        logits, *new = sess.run(None, {"ids": x, **state})
        top2 = np.sort(logits[-1, 0])[-2:]
        gap = min(gap, float(top2[1] - top2[0]))
        out.append(int(np.argmax(logits[-1, 0])))
        x = np.array([[out[-1]]], np.int64)
        state = dict(zip(state, new))
    return np.array(out), gap


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_builtin_teacher_forced_logits(builtin, exported, dtype):
    text = "明月几时有，把酒问青天。不知天上宫阙，今夕是何年。"
    ids = builtin.tokenizer.encode(text)
    batch = np.stack([ids, ids[::-1]], axis=1)
    ref, (h, c) = builtin.model.logits(batch)
    h0, c0 = builtin.model.zero_state(2)
    got = session(exported[dtype]).run(None, {"ids": batch, "h0": h0, "c0": c0})
    # the built-in weights are exact in float16, so float16 storage changes nothing
    np.testing.assert_allclose(got[0], ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[1], h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[2], c, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_builtin_greedy_generation_matches(builtin, exported, dtype):
    sess = session(exported[dtype])
    for prefix in PREFIXES:
        expected = builtin.generate(prefix, length=100, greedy=True)
        ids, _ = builtin.encode_prefix(prefix)
        got, gap = ort_greedy(sess, ids, 100)
        text = prefix + builtin.tokenizer.decode(got)
        assert text == expected, f"{prefix!r}: smallest top-2 logit gap {gap:.3g} (a near-tie flips greedy decoding)"


def test_cli_export_files_and_metadata(builtin, exported):
    path = exported["float32"]
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["rnnrs_version"] == rnnrs.__version__
    assert json.loads(meta["rnnrs_config"]) == builtin.model.config
    assert meta["rnnrs_tokenizer"] == "lyrics.tokenizer.json"
    assert rnnrs.load_tokenizer(onnx_export.tokenizer_path(path)) == builtin.tokenizer
    assert [i.name for i in session(path).get_inputs()] == ["ids", "h0", "c0"]
    assert {n.op_type for n in model.graph.node} >= {"LSTM", "Gather", "MatMul"}
    assert sum(n.op_type == "LSTM" for n in model.graph.node) == builtin.model.num_layers
    size32, size16 = os.path.getsize(path), os.path.getsize(exported["float16"])
    assert 0.45 < size16 / size32 < 0.55, (size32, size16)
    assert onnx.load(exported["float16"]).opset_import[0].version == 18


def test_example_script_matches_rnnrs_generate_greedy(builtin, tmp_path):
    """The issue's "done when": `rnnrs export --onnx` and the example script print what
    `rnnrs generate --greedy --no-ban` prints."""
    def run(*args):
        return subprocess.run([sys.executable, *map(os.fspath, args)], capture_output=True, text=True,
                              encoding="utf-8", timeout=120, check=True).stdout
    path = tmp_path / "lyrics.onnx"
    assert run("-m", "rnnrs", "export", "--onnx", path).startswith(f"wrote {path} ")
    for prefix in PREFIXES[:2]:
        expected = run("-m", "rnnrs", "generate", "--greedy", "--no-ban", "--prefix", prefix)
        assert run(EXAMPLE, path, prefix, "100") == expected


# ======================================================================================= keras
def _keras_models():
    a = keras.Sequential([keras.Embedding(12, 5, mask_zero=True), keras.LSTM(6, return_sequences=True, bidirectional=True),
                          keras.GRU(4), keras.Dropout(0.2), keras.Dense(3, activation="softmax")], seed=1)
    a.compile()
    b = keras.Sequential([keras.SimpleRNN(5, activation="relu", return_sequences=True, input_shape=(None, 3)),
                          keras.Dense(2, activation="tanh")], seed=2)
    b.compile(loss="mse")
    c = keras.Sequential([keras.Embedding(7, 3), keras.GRU(4, bidirectional=True), keras.Dense(2, activation="sigmoid")],
                         seed=3)
    c.compile(loss="mse")
    return {"mask_zero": a, "features": b, "ids": c}


@pytest.mark.parametrize("name", ["mask_zero", "features", "ids"])
def test_sequential_matches_predict(tmp_path, name):
    model = _keras_models()[name]
    rng = np.random.default_rng(len(name))
    lengths = np.array([6, 1, 4, 6, 2])
    if name == "features":
        x = rng.standard_normal((5, 6, 3)).astype(np.float32)
    else:
        x = rng.integers(1, model.layers[0].input_dim, size=(5, 6))
        x[np.arange(6)[None, :] >= lengths[:, None]] = 0  # post-padding
        if name == "mask_zero":
            x[1] = 0  # an all-padding row: length 1, as predict takes it
    path = tmp_path / "seq.onnx"
    model.export_onnx(path)
    sess = session(path)
    feeds = {"x": x}
    if name != "mask_zero":
        feeds["sequence_lens"] = lengths.astype(np.int32)
    got = sess.run(None, feeds)[0]
    np.testing.assert_allclose(got, model.predict(x, lengths=None if name == "mask_zero" else lengths),
                               rtol=RTOL, atol=ATOL)


# ==================================================================================== refusals
def test_refusals(tmp_path):
    layer = rnnrs.GRU(2, 3)
    out = tmp_path / "x.onnx"
    with pytest.raises(ValueError, match="padding.*post"):
        layer.export_onnx(out, padding="pre")
    with pytest.raises(ValueError, match="opset"):
        layer.export_onnx(out, opset=9)
    with pytest.raises(ValueError, match="opset"):
        layer.export_onnx(out, opset=10_000)
    with pytest.raises(TypeError, match="opset"):
        layer.export_onnx(out, opset="17")
    with pytest.raises(ValueError, match="dtype"):
        layer.export_onnx(out, dtype="float64")
    with pytest.raises(TypeError, match="path"):
        layer.export_onnx(123)
    with pytest.raises(OSError):
        layer.export_onnx(tmp_path / "missing" / "x.onnx")
    with pytest.raises(IsADirectoryError):
        layer.export_onnx(tmp_path)
    with pytest.raises(TypeError, match="layer"):
        onnx_export.export_layer(object(), out)
    with pytest.raises(TypeError, match="model"):
        onnx_export.export_language_model(layer, out)
    with pytest.raises(ValueError, match="tokenizer"):
        rnnrs.LanguageModel(5, 3, 4, 1).export_onnx(out, tokenizer=rnnrs.CharTokenizer().fit("abcdefgh"))
    unbuilt = keras.Sequential([keras.LSTM(3)])
    with pytest.raises(ValueError, match="built"):
        unbuilt.export_onnx(out)
    big = rnnrs.LSTM(2, 2)
    big.load_state_dict({k: np.full_like(v, 1e6) for k, v in big.state_dict().items()})
    with pytest.raises(ValueError, match="float16"):
        big.export_onnx(out, dtype="float16")
    assert not out.exists()


def test_missing_onnx_is_an_import_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'rnnrs\[onnx\]'"):
        rnnrs.GRU(2, 3).export_onnx(tmp_path / "x.onnx")


def test_cli_without_onnx(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert cli.main(["export", "--onnx", os.fspath(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnrs export: error:") and "pip install 'rnnrs[onnx]'" in err and err.count("\n") == 1, err


def test_import_rnnrs_does_not_import_onnx():
    code = "import sys, rnnrs, rnnrs.onnx_export; print('onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("argv,needle", [
    (["--opset", "5"], "--opset"),
    (["--model", "/nonexistent/model"], "/nonexistent/model"),
    (["--onnx-missing"], "--onnx"),
])
def test_cli_errors(tmp_path, capsys, argv, needle):
    args = ["export"] + (argv if argv == ["--onnx-missing"] else ["--onnx", os.fspath(tmp_path / "m.onnx")] + argv)
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnrs export: error:") and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "m.onnx").exists()


def test_cli_unwritable_output(tmp_path, capsys):
    assert cli.main(["export", "--onnx", os.fspath(tmp_path / "no" / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnrs export: error:") and err.count("\n") == 1, err

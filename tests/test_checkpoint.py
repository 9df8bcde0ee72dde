"""Model files and training checkpoints: round trips, corruption, atomic writes (rnnrs.checkpoint)."""

import errno
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnrs
from rnnrs import checkpoint as ck
from rnnrs.tokenizer import CharTokenizer

TEXT = "hello world, hello rust. 你好，世界！ " * 4


def _model(cell="lstm", dropout=0.0, layers=2, embed=6, seed=3):
    tok = CharTokenizer().fit(TEXT)
    m = rnnrs.LanguageModel(len(tok.vocab), embed, 12, layers, cell, dropout=dropout, seed=seed)
    return m, tok


def _trained(cell="lstm", optimizer="adam", steps=3, dropout=0.3):
    m, tok = _model(cell, dropout=dropout)
    kw = {"momentum": 0.9} if optimizer == "sgd" else {}
    m.set_optimizer(optimizer, 1e-2, **kw)
    ids = tok.encode(TEXT)
    x = ids[:40].reshape(8, 5)
    y = ids[1:41].reshape(8, 5)
    for _ in range(steps):
        m.train_step(x, y, None, 1.0)
    return m, tok, x


def _write_checkpoint(tmp_path, **kw):
    m, tok, x = _trained(**kw)
    h = np.arange(2 * 5 * 12, dtype=np.float32).reshape(2, 5, 12)
    path = ck.save_checkpoint(tmp_path, m, tok, {"step": 3, "history": [1.5, 2.5], "note": "ü"},
                              {"loss": np.array([1.0, np.nan, 0.5]), "state.h": h}, info={"who": "test"})
    return path, m, tok, x


# ------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_model_file_round_trip_gives_identical_logits(tmp_path, cell):
    m, tok, x = _trained(cell)
    m.save(tmp_path, tok, {"val_ppl": 3.5})
    m2, tok2, info = ck.load_model(tmp_path)
    assert tok2 == tok and info == {"val_ppl": 3.5} and m2.config == m.config
    a, _ = m.logits(x)
    b, _ = m2.logits(x)
    assert np.array_equal(a, b)
    assert np.array_equal(rnnrs.LanguageModel.load(tmp_path).logits(x)[0], a)


def test_float16_model_file_is_close(tmp_path):
    m, tok, x = _trained()
    ck.save_model(tmp_path, m, tok, dtype=np.float16)
    m2 = rnnrs.LanguageModel.load(tmp_path)
    assert m2.dtype == np.float32
    np.testing.assert_allclose(m2.logits(x)[0], m.logits(x)[0], atol=2e-2)


def test_save_dtype_must_be_a_float_that_holds_every_weight(tmp_path):
    m, tok, _ = _trained()
    for bad in (np.int32, "uint8", "nonsense"):
        with pytest.raises(ValueError, match="dtype: expected float16, float32 or float64"):
            ck.save_model(tmp_path / "a", m, tok, dtype=bad)
    sd = m.state_dict()
    name = sorted(sd)[0]
    sd[name] = sd[name].copy()
    sd[name].flat[0] = 1e5  # beyond float16's 65504
    m.load_state_dict(sd)
    ck.save_model(tmp_path / "b", m, tok)  # a good file already there stays intact
    with pytest.raises(ValueError, match=f"{name}: a weight does not fit in float16"):
        ck.save_model(tmp_path / "b", m, tok, dtype=np.float16)
    assert rnnrs.LanguageModel.load(tmp_path / "b").state_dict()[name].flat[0] == 1e5
    assert not os.path.exists(tmp_path / "a")


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_checkpoint_round_trip_restores_everything(tmp_path, optimizer):
    path, m, tok, x = _write_checkpoint(tmp_path, optimizer=optimizer)
    assert os.path.basename(path) == ck.CHECKPOINT_FILE
    c = ck.load_checkpoint(tmp_path)
    assert c.path == path and c.tokenizer == tok and c.info == {"who": "test"}
    assert c.trainer == {"step": 3, "history": [1.5, 2.5], "note": "ü"}
    assert set(c.tensors) == {"loss", "state.h"}
    assert np.array_equal(c.tensors["loss"], [1.0, np.nan, 0.5], equal_nan=True)
    sd, sd2 = m.state_dict(), c.model.state_dict()
    assert all(np.array_equal(sd[k], sd2[k]) for k in sd)
    s1, items1 = m._core.optimizer_state()
    s2, items2 = c.model._core.optimizer_state()
    assert s1 == s2 == 3 and [n for n, _ in items1] == [n for n, _ in items2]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(items1, items2))
    assert c.model.optimizer == m.optimizer
    assert c.model._core.dropout_state() == m._core.dropout_state()
    # the next step is identical in both
    y = x[1:].copy()
    xs = x[:-1].copy()
    m.train_step(xs, y, None, 1.0)
    c.model.train_step(xs, y, None, 1.0)
    sd, sd2 = m.state_dict(), c.model.state_dict()
    assert all(np.array_equal(sd[k], sd2[k]) for k in sd)


def test_load_model_accepts_a_checkpoint_file(tmp_path):
    path, m, tok, x = _write_checkpoint(tmp_path)
    m2, tok2, _ = ck.load_model(path)
    assert np.array_equal(m2.logits(x)[0], m.logits(x)[0]) and tok2 == tok


def test_a_run_directory_with_only_its_checkpoint_loads_from_that(tmp_path):
    # A run killed before its first model file leaves only checkpoint.safetensors.
    path, m, tok, x = _write_checkpoint(tmp_path)
    assert os.path.dirname(path) == str(tmp_path) and not os.path.exists(tmp_path / ck.MODEL_FILE)
    m2, tok2, _ = ck.load_model(tmp_path)
    assert np.array_equal(m2.logits(x)[0], m.logits(x)[0]) and tok2 == tok
    # With a model file the directory means that file.
    other = rnnrs.LanguageModel(m.vocab_size, 4, 8, 1, seed=9)
    ck.save_model(tmp_path, other, tok)
    assert np.array_equal(ck.load_model(tmp_path)[0].logits(x)[0], other.logits(x)[0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no model.safetensors or checkpoint.safetensors") as e:
        ck.load_model(tmp_path / "empty")
    assert e.value.errno == errno.ENOENT and e.value.filename == str(tmp_path / "empty")


def test_files_without_a_checksum_still_load(tmp_path):
    m, tok, x = _trained()
    tensors = m.state_dict()
    meta = ck.model_metadata(m, tok)
    raw = [(k, "F32", list(v.shape), np.ascontiguousarray(v, "<f4").tobytes()) for k, v in tensors.items()]
    data = rnnrs._rnnrs.safetensors_dumps(raw, meta)  # no checksum entry
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    assert np.array_equal(ck.load_model(tmp_path)[0].logits(x)[0], m.logits(x)[0])


# -------------------------------------------------------------------------------------- bad files
def test_truncated_files_are_rejected(tmp_path):
    path, *_ = _write_checkpoint(tmp_path)
    data = open(path, "rb").read()
    for cut in [0, 1, 7, 8, 20, len(data) // 2, len(data) - 1]:
        p = tmp_path / f"cut{cut}.safetensors"
        p.write_bytes(data[:cut])
        with pytest.raises(ck.CheckpointError):
            ck.load_checkpoint(p)


def test_bit_flips_are_rejected(tmp_path):
    path, *_ = _write_checkpoint(tmp_path)
    data = open(path, "rb").read()
    header = 8 + int.from_bytes(data[:8], "little")
    for pos in [header + 3, len(data) - 2, header - 10, 40]:
        flipped = bytearray(data)
        flipped[pos] ^= 0x10
        p = tmp_path / f"flip{pos}.safetensors"
        p.write_bytes(bytes(flipped))
        with pytest.raises(ck.CheckpointError):
            ck.load_checkpoint(p)
    p = tmp_path / "data-flip.safetensors"
    flipped = bytearray(data)
    flipped[len(data) - 2] ^= 1
    p.write_bytes(bytes(flipped))
    with pytest.raises(ck.CheckpointError, match="checksum mismatch"):
        ck.load_checkpoint(p)


def _rewrite(path, out, **meta_changes):
    tensors, meta = ck.read_tensors(path)
    meta.update(meta_changes)
    ck.write_tensors(out, tensors, meta)


def test_wrong_version_kind_and_format_are_rejected(tmp_path):
    path, *_ = _write_checkpoint(tmp_path)
    _rewrite(path, tmp_path / "v2.safetensors", version="2")
    with pytest.raises(ck.CheckpointError, match="version"):
        ck.load_checkpoint(tmp_path / "v2.safetensors")
    _rewrite(path, tmp_path / "other.safetensors", format="pytorch")
    with pytest.raises(ck.CheckpointError, match="format"):
        ck.load_checkpoint(tmp_path / "other.safetensors")
    m, tok = _model()
    m.save(tmp_path / "model_dir", tok)
    with pytest.raises(ck.CheckpointError, match="'checkpoint' file"):
        ck.load_checkpoint(tmp_path / "model_dir" / "model.safetensors")


def test_inconsistent_contents_are_rejected(tmp_path):
    path, *_ = _write_checkpoint(tmp_path)
    _rewrite(path, tmp_path / "a.safetensors", trainer="[1, 2]")
    with pytest.raises(ck.CheckpointError, match="trainer state"):
        ck.load_checkpoint(tmp_path / "a.safetensors")
    _rewrite(path, tmp_path / "b.safetensors", trainer="{not json")
    with pytest.raises(ck.CheckpointError, match="not valid JSON"):
        ck.load_checkpoint(tmp_path / "b.safetensors")
    _rewrite(path, tmp_path / "c.safetensors", dropout=json.dumps({"seed": -1, "calls": 0}))
    with pytest.raises(ck.CheckpointError, match="seed"):
        ck.load_checkpoint(tmp_path / "c.safetensors")
    _rewrite(path, tmp_path / "d.safetensors", optimizer=json.dumps({"name": "adam", "lr": 0.01, "steps": 1.5}))
    with pytest.raises(ck.CheckpointError, match="steps"):
        ck.load_checkpoint(tmp_path / "d.safetensors")
    tensors, meta = ck.read_tensors(path)
    tensors = dict(tensors)
    tensors["optim.linear.bias.exp_avg"] = np.zeros(3, np.float32)  # wrong shape
    ck.write_tensors(tmp_path / "e.safetensors", tensors, meta)
    with pytest.raises(ck.CheckpointError, match="optimizer"):
        ck.load_checkpoint(tmp_path / "e.safetensors")
    config = json.loads(meta["config"])
    config["hidden_size"] = 13
    _rewrite(path, tmp_path / "f.safetensors", config=json.dumps(config))
    with pytest.raises(ck.CheckpointError, match="do not fit"):
        ck.load_checkpoint(tmp_path / "f.safetensors")


def test_garbage_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    (tmp_path / "pickle.safetensors").write_bytes(b"\x80\x04\x95" + b"\x00" * 40)
    for name in ["empty", "junk", "pickle"]:
        with pytest.raises(ck.CheckpointError):
            ck.load_checkpoint(tmp_path / f"{name}.safetensors")
    with pytest.raises(FileNotFoundError):
        ck.load_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError):
        ck.load_checkpoint(tmp_path)  # a directory without checkpoint.safetensors


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    path, *_ = _write_checkpoint(d)
    return open(path, "rb").read()


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_fuzzed_checkpoints_load_or_raise_checkpoint_error(tmp_path_factory, checkpoint_bytes, data):
    raw = bytearray(checkpoint_bytes)
    n = data.draw(st.integers(1, 4))
    for _ in range(n):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[:data.draw(st.integers(0, len(raw)))]
    p = tmp_path_factory.mktemp("f") / "checkpoint.safetensors"
    p.write_bytes(bytes(raw))
    try:
        c = ck.load_checkpoint(p)
    except ck.CheckpointError:
        return
    assert bytes(raw) == checkpoint_bytes or isinstance(c, ck.Checkpoint)


# ---------------------------------------------------------------------------------- atomic writes
def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path, m, tok, x = _write_checkpoint(tmp_path)
    before = open(path, "rb").read()
    m.train_step(x[:-1].copy(), x[1:].copy(), None, 1.0)  # new weights that must not land half-way

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rnnrs._atomic.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        ck.save_checkpoint(tmp_path, m, tok, {"step": 4})
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == [ck.CHECKPOINT_FILE]  # no temporary file left behind
    assert ck.load_checkpoint(tmp_path).trainer["step"] == 3


def test_non_finite_weights_are_never_written(tmp_path, monkeypatch):
    path, m, tok, _ = _write_checkpoint(tmp_path)
    before = open(path, "rb").read()
    good = m.state_dict()

    def poisoned():
        sd = {k: v.copy() for k, v in good.items()}
        sd["linear.bias"][0] = np.nan
        return sd

    monkeypatch.setattr(m, "state_dict", poisoned)
    with pytest.raises(ValueError, match="non-finite"):
        ck.save_checkpoint(tmp_path, m, tok, {"step": 4})
    assert open(path, "rb").read() == before

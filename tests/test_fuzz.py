"""Fuzzing the model and checkpoint loaders: no file can crash, hang or run code.

Every loader — ``rnnrs.checkpoint.read_tensors``, ``load_model``, ``load_checkpoint``,
``LyricGenerator.load`` and ``Trainer.resume`` — is fed random bytes, mutated seed files
(truncated, bit-flipped, bytes overwritten, inserted or deleted, the header length rewritten),
structurally rewritten safetensors headers (wrong dtypes, shapes, offsets, metadata types,
oversized and deeply nested JSON) and fully valid files (checksum included) with hostile contents
(wrong version, wrong shapes, NaN weights, mismatched vocabulary, wrong JSON types). Each must
either load into something usable or raise ``CheckpointError``/``ValueError``/``OSError`` with a
message — never another exception, a panic, a crash or a hang (a watchdog aborts the run with
tracebacks after ``WATCHDOG_S``).

The seed corpus is ``tests/fuzz_corpus/*.safetensors`` (``tests/fuzz_corpus/make.py`` writes it).
Example counts follow the hypothesis profile (``HYPOTHESIS_PROFILE=fast|thorough``, see conftest):
``EXAMPLES`` per test, a few times more for the cheap byte-level tests.
"""

import faulthandler
import importlib.util
import json
import math
import pathlib
import re
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnrs
from rnnrs import checkpoint as ck
from rnnrs.generate import LyricGenerator
from rnnrs.trainer import Trainer

CORPUS = pathlib.Path(__file__).parent / "fuzz_corpus"
SEEDS = sorted(CORPUS.glob("*.safetensors"))
SEED_BYTES = {p.name: p.read_bytes() for p in SEEDS}
MODEL_SEEDS = [n for n in SEED_BYTES if n.startswith("model_")]
CHECKPOINT_SEEDS = [n for n in SEED_BYTES if n.startswith("checkpoint_")]
_spec = importlib.util.spec_from_file_location("fuzz_corpus_make", CORPUS / "make.py")
_make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_make)
TEXT = _make.TEXT

#: Examples per test in the current hypothesis profile (fast: 30, thorough: 500).
EXAMPLES = settings.default.max_examples
#: A loader taking longer than this (all of a test's examples together) is a hang.
WATCHDOG_S = 300
#: The exceptions a loader may raise for a bad file.
REJECTED = (ck.CheckpointError, ValueError, OSError)

LOADERS = {
    "read_tensors": ck.read_tensors,
    "load_model": ck.load_model,
    "load_checkpoint": ck.load_checkpoint,
    "LyricGenerator.load": LyricGenerator.load,
}

def fuzz(examples):
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def watchdog():
    """Abort with every thread's traceback if a test hangs (a hang is a bug, not a slow test)."""
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def test_seed_corpus_is_small_and_loads():
    assert len(SEEDS) >= 5 and sum(len(b) for b in SEED_BYTES.values()) < 200_000
    for name in MODEL_SEEDS + CHECKPOINT_SEEDS:
        model, _, _ = ck.load_model(CORPUS / name)
        assert model.num_parameters() > 0
    for name in CHECKPOINT_SEEDS:
        assert ck.load_checkpoint(CORPUS / name).model.optimizer is not None
    with pytest.raises(ck.CheckpointError, match="expected an 'rnnrs' file, got format 'pt'"):
        ck.load_model(CORPUS / "other_format.safetensors")


# ------------------------------------------------------------------------------------------ helpers
def exercise(result, loader):
    """A loaded result must be usable: run the model once."""
    if loader == "read_tensors":
        tensors, meta = result
        assert all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in tensors.items())
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
        return
    model = result.model if hasattr(result, "model") else result[0]
    ids = np.zeros((2, 1), np.int64)
    logits, _ = model.logits(ids)
    assert logits.shape == (2, 1, model.vocab_size)
    if loader == "LyricGenerator.load":
        assert isinstance(result.generate("the", length=3, seed=1), str)


def load_all(path, loaders=tuple(LOADERS)):
    """Run each loader on ``path``: it loads (and the result works) or raises a rejection with a
    message. Returns the loaders that accepted the file."""
    accepted = []
    for name in loaders:
        try:
            result = LOADERS[name](path)
        except REJECTED as e:
            assert str(e).strip(), f"{name}: {type(e).__name__} without a message"
            continue
        exercise(result, name)
        accepted.append(name)
    return accepted


def write(workdir, data, name="checkpoint.safetensors"):
    path = workdir / name
    path.write_bytes(bytes(data))
    return path


def split(data):
    """``(header dict, data section)`` of a safetensors file."""
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def join(header, body, pad=0):
    h = json.dumps(header).encode("utf-8") + b" " * pad
    return struct.pack("<Q", len(h)) + h + body


# ------------------------------------------------------------------------------------ random bytes
@fuzz(4 * EXAMPLES)
@given(data=st.one_of(
    st.binary(max_size=4096),
    st.builds(lambda n, rest: struct.pack("<Q", n) + rest, st.integers(0, 2**64 - 1), st.binary(max_size=2048)),
    st.builds(lambda rest: struct.pack("<Q", len(rest)) + rest, st.binary(max_size=2048)),
    st.builds(lambda text: struct.pack("<Q", len(text.encode())) + text.encode(), st.text(max_size=500)),
))
def test_random_bytes_are_rejected(workdir, data):
    assert load_all(write(workdir, data)) == []


# ------------------------------------------------------------------------------- byte-level mutations
def _mutate(data, ops):
    data = bytearray(data)
    for op, a, b, payload in ops:
        if not data and op != "insert":
            continue
        i = a % max(len(data), 1)
        if op == "flip":
            data[i] ^= 1 << (b % 8)
        elif op == "set":
            data[i] = b % 256
        elif op == "truncate":
            del data[i:]
        elif op == "delete":
            del data[i:i + 1 + b % 64]
        elif op == "insert":
            data[i:i] = payload
        elif op == "header_len":  # rewrite the 8-byte header length
            data[:8] = struct.pack("<Q", b)
    return bytes(data)


_op = st.tuples(st.sampled_from(["flip", "flip", "set", "truncate", "delete", "insert", "header_len"]),
                st.integers(0, 2**31), st.integers(0, 2**64 - 1), st.binary(min_size=1, max_size=32))


@fuzz(4 * EXAMPLES)
@given(seed=st.sampled_from(sorted(SEED_BYTES)), ops=st.lists(_op, min_size=1, max_size=6))
def test_mutated_seed_files_load_or_are_rejected(workdir, seed, ops):
    data = _mutate(SEED_BYTES[seed], ops)
    accepted = load_all(write(workdir, data))
    if data != SEED_BYTES[seed] and seed != "other_format.safetensors":
        # Every byte of an rnnrs file is covered by the checksum or the format: a change that still
        # loads can only be one that leaves the parsed contents equal (e.g. JSON whitespace). (A
        # foreign file without a checksum has no such protection.)
        for name in accepted:
            if name != "read_tensors":
                continue
            t1, m1 = ck.read_tensors(write(workdir, data))
            t0, m0 = ck.read_tensors(write(workdir, SEED_BYTES[seed], "orig.safetensors"))
            assert m1 == m0 and t1.keys() == t0.keys()
            assert all(np.array_equal(t1[k], t0[k], equal_nan=True) for k in t0)


def test_every_truncation_of_a_checkpoint_is_rejected(workdir):
    data = SEED_BYTES["checkpoint_sgd.safetensors"]
    cuts = sorted(set(range(0, 64)) | set(range(0, len(data), max(1, len(data) // (2 * EXAMPLES)))))
    for cut in cuts:
        assert load_all(write(workdir, data[:cut]), ("read_tensors", "load_checkpoint")) == [], cut


def test_oversized_and_lying_headers_are_rejected_without_reading_them(workdir):
    header, body = split(SEED_BYTES["model_lstm.safetensors"])
    raw = json.dumps(header).encode()
    cases = {
        "length above the 16 MiB cap": struct.pack("<Q", 16 << 20 | 1) + raw + body,
        "length 2^64 - 1": struct.pack("<Q", 2**64 - 1) + raw + body,
        "length past the end": struct.pack("<Q", len(raw) + len(body) + 1) + raw + body,
        "length one short": struct.pack("<Q", len(raw) - 1) + raw + body,
        "a 17 MiB header of spaces": struct.pack("<Q", len(raw) + (17 << 20)) + raw + b" " * (17 << 20) + body,
        "header is a JSON list": join([header], body),
        "header is not UTF-8": struct.pack("<Q", 4) + b"\xff\xfe\xfd\xfc" + body,
    }
    for what, data in cases.items():
        p = write(workdir, data)
        with pytest.raises(ck.CheckpointError) as e:
            ck.load_model(p)
        assert str(p) in str(e.value), what
    # padding under the cap is valid safetensors (and loads)
    p = write(workdir, struct.pack("<Q", len(raw) + (1 << 20)) + raw + b" " * (1 << 20) + body)
    assert load_all(p) == ["read_tensors", "load_model", "LyricGenerator.load"]


# ----------------------------------------------------------------------- structural header rewrites
_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                         st.text(max_size=20))
_json = st.recursive(_json_scalar, lambda c: st.one_of(st.lists(c, max_size=4),
                                                     st.dictionaries(st.text(max_size=8), c, max_size=4)),
                     max_leaves=12)
_dim = st.one_of(st.integers(0, 16), st.integers(-5, -1), st.sampled_from([2**31, 2**32 + 1, 2**62, 2**63, 2**64 - 1]),
                 st.just(1.5), st.just("3"))
_offset = st.one_of(st.integers(0, 20000), st.sampled_from([2**63, 2**64 - 1]), st.integers(-3, -1))


@st.composite
def header_rewrites(draw):
    seed = draw(st.sampled_from(sorted(SEED_BYTES)))
    header, body = split(SEED_BYTES[seed])
    names = sorted(k for k in header if k != "__metadata__")
    for _ in range(draw(st.integers(1, 4))):
        what = draw(st.sampled_from(["dtype", "shape", "offsets", "drop", "dup", "extra_key", "meta_value",
                                     "meta_type", "meta_drop", "tensor_type", "body"]))
        name = draw(st.sampled_from(names)) if names else "x"
        entry = header.get(name)
        if what == "dtype" and isinstance(entry, dict):
            entry["dtype"] = draw(st.one_of(st.sampled_from(["F16", "F32", "F64", "I8", "I16", "I32", "I64", "U8",
                                                              "BOOL", "BF16", "F8_E4M3", "C64", "X", ""]), _json))
        elif what == "shape" and isinstance(entry, dict):
            entry["shape"] = draw(st.one_of(st.lists(_dim, max_size=4), _json))
        elif what == "offsets" and isinstance(entry, dict):
            entry["data_offsets"] = draw(st.one_of(st.lists(_offset, min_size=2, max_size=2),
                                                   st.lists(_offset, max_size=3), _json))
        elif what == "drop":
            header.pop(name, None)
        elif what == "dup":
            header[name + draw(st.sampled_from(["", ".x", "_copy"]))] = entry
        elif what == "extra_key" and isinstance(entry, dict):
            entry[draw(st.text(max_size=6))] = draw(_json)
        elif what == "tensor_type":
            header[name] = draw(_json)
        elif what.startswith("meta") and isinstance(header.get("__metadata__"), dict) and header["__metadata__"]:
            meta = header["__metadata__"]
            key = draw(st.sampled_from(sorted(meta)))
            if what == "meta_drop":
                meta.pop(key)
            elif what == "meta_value":
                meta[key] = draw(st.one_of(st.text(max_size=40), st.sampled_from(["", "{", "null", "[]", "1e999"])))
            else:
                meta[key] = draw(_json)
        elif what == "body":
            body = _mutate(body, draw(st.lists(_op, min_size=1, max_size=2)))
    return join(header, body, pad=draw(st.integers(0, 8)))


@fuzz(2 * EXAMPLES)
@given(data=header_rewrites())
def test_rewritten_headers_load_or_are_rejected(workdir, data):
    load_all(write(workdir, data))


# ------------------------------------------------- valid files (checksum included), hostile contents
def _deep(depth):
    return "[" * depth + "]" * depth


_hostile_meta = st.one_of(
    _json.map(json.dumps),
    st.text(max_size=60),
    st.sampled_from(["", "null", "{}", "[]", "true", "1e999", "NaN", "-Infinity", '"x"', "{", _deep(200),
                     _deep(100_000), '{"a":' * 50_000 + "1" + "}" * 50_000]),
    st.integers(1, 3 << 20).map(lambda n: json.dumps({"pad": "x" * n})),  # up to ~3 MB of JSON
)

_config_field = st.sampled_from(["vocab_size", "embed_size", "hidden_size", "num_layers", "cell", "dropout",
                                 "seed", "dtype", "unknown"])
_config_value = st.one_of(_json_scalar, _json, st.sampled_from(
    [0, -1, 1, 2**31, 2**40, 2**63, 2**64, 10**30, 1e400, -0.0, 0.999, 1.0, "float16", "int8", "lstm ", "LSTM"]))


def _obj(meta, key):
    """The JSON object in ``meta[key]``, or None if an earlier mutation made it something else."""
    try:
        v = json.loads(meta.get(key, "null"))
    except (ValueError, RecursionError):
        return None
    return v if isinstance(v, dict) else None


@st.composite
def hostile_files(draw):
    """``(seed name, tensors, metadata)`` for ``write_tensors`` (which adds a valid checksum)."""
    seed = draw(st.sampled_from(MODEL_SEEDS + CHECKPOINT_SEEDS))
    tensors, meta = ck.read_tensors(CORPUS / seed)
    tensors = {k: np.array(v) for k, v in tensors.items()}
    meta = dict(meta)
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(["meta", "config", "version", "tensor_shape", "tensor_value", "tensor_dtype",
                                     "tensor_drop", "tensor_extra", "tokenizer", "optimizer", "trainer"]))
        names = sorted(tensors)
        if what == "meta":
            meta[draw(st.sampled_from(sorted(meta) + ["extra"]))] = draw(_hostile_meta)
        elif what == "config" and _obj(meta, "config") is not None:
            config = _obj(meta, "config")
            config[draw(_config_field)] = draw(_config_value)
            meta["config"] = json.dumps(config)
        elif what == "version":
            meta[draw(st.sampled_from(["version", "format", "kind"]))] = draw(st.one_of(
                st.sampled_from(["0", "2", "1.0", " 1", "999999999999999999999", "rnnrs", "model", "checkpoint"]),
                st.text(max_size=5)))
        elif what == "tensor_shape" and names:
            k = draw(st.sampled_from(names))
            tensors[k] = np.zeros(draw(st.lists(st.integers(0, 7), max_size=3)), tensors[k].dtype)
        elif what == "tensor_value" and names:
            k = draw(st.sampled_from(names))
            if tensors[k].size and tensors[k].dtype.kind == "f":
                with np.errstate(over="ignore"):
                    tensors[k].flat[draw(st.integers(0, tensors[k].size - 1))] = draw(
                        st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e-30, -1.0]))
        elif what == "tensor_dtype" and names:
            k = draw(st.sampled_from(names))
            with np.errstate(all="ignore"):
                tensors[k] = tensors[k].astype(draw(st.sampled_from(["<f2", "<f4", "<f8", "<i4", "<i8", "u1"])))
        elif what == "tensor_drop" and names:
            tensors.pop(draw(st.sampled_from(names)))
        elif what == "tensor_extra":
            prefix = draw(st.sampled_from(["", "rnn.", "optim.", "trainer.", "embedding.", "linear."]))
            tensors[prefix + draw(st.sampled_from(["weight", "x", "state.h", "weight.exp_avg", "bias"]))] = \
                np.zeros(draw(st.lists(st.integers(0, 4), max_size=3)), np.float32)
        elif what == "tokenizer" and _obj(meta, "tokenizer") is not None:
            tok = _obj(meta, "tokenizer")
            field = draw(st.sampled_from(["vocab", "level", "lower", "version", "idx_to_token", "token_freqs"]))
            if field in ("idx_to_token", "token_freqs") and isinstance(tok.get("vocab"), dict):
                old = tok["vocab"].get(field)
                shorter = old[:-1] if isinstance(old, list) else old
                tok["vocab"][field] = draw(st.one_of(_json, st.just(shorter)))
            else:
                tok[field] = draw(_json)
            meta["tokenizer"] = json.dumps(tok)
        elif what == "optimizer" and _obj(meta, "optimizer") is not None:
            opt = _obj(meta, "optimizer")
            opt[draw(st.sampled_from(["name", "lr", "steps", "betas", "eps", "momentum", "nesterov"]))] = draw(
                st.one_of(_config_value, st.sampled_from([2**64 - 1, 2**63, -1, [0.9], [0.9, 2.0], "sgd", "adamw"])))
            meta["optimizer"] = json.dumps(opt)
        elif what == "trainer" and _obj(meta, "trainer") is not None:
            tr = _obj(meta, "trainer")
            key = draw(st.sampled_from(sorted(tr) + ["extra"]))
            tr[key] = draw(st.one_of(_config_value, _json))
            meta["trainer"] = json.dumps(tr)
    return seed, tensors, meta


@fuzz(2 * EXAMPLES)
@given(case=hostile_files())
def test_valid_files_with_hostile_contents_load_or_are_rejected(workdir, case):
    _, tensors, meta = case
    path = workdir / "hostile.safetensors"
    try:
        ck.write_tensors(path, tensors, meta)
    except (TypeError, ValueError):  # e.g. a dtype the format cannot store: nothing to load
        return
    load_all(path)


TRAINER_FIELDS = ["epoch", "batch", "step", "epoch_start_step", "tokens_seen", "train_time", "best_val_loss",
                  "best_step", "bad_vals", "pending_val", "val_history", "epoch_history", "skipped", "data",
                  "train_config", "finished", "status"]


@fuzz(EXAMPLES)
@given(field=st.sampled_from(TRAINER_FIELDS), value=st.one_of(_config_value, _json),
       sub=st.sampled_from(["seq_len", "hidden", "lr", "batch_size", "sampling", "steps", "unknown"]),
       tensor=st.sampled_from([None, "trainer.loss", "trainer.state.h", "optim.linear.bias.exp_avg_sq"]))
def test_resuming_from_hostile_trainer_state_is_rejected_or_works(tmp_path_factory, field, value, sub, tensor):
    """``Trainer.resume`` on a valid checkpoint whose trainer state was replaced: a clear error (or a
    run that trains on), never another exception."""
    out = tmp_path_factory.mktemp("resume")
    tensors, meta = ck.read_tensors(CORPUS / "checkpoint_adam_sequential.safetensors")
    tensors = {k: np.array(v) for k, v in tensors.items()}
    trainer = json.loads(meta["trainer"])
    if field == "train_config":
        trainer["train_config"][sub] = value
    elif field == "data" and isinstance(value, dict):
        trainer["data"].update(value)
    else:
        trainer[field] = value
    meta = dict(meta, trainer=json.dumps(trainer, allow_nan=True))
    if tensor is not None:
        tensors[tensor] = -np.ones(tensors[tensor].shape[:1] + (1,) * (tensors[tensor].ndim > 1), tensors[tensor].dtype)
    ck.write_tensors(out / ck.CHECKPOINT_FILE, tensors, meta)
    try:
        t = Trainer.resume(out, text=TEXT, steps=6, quiet=True, plot=False)
        t._setup()
    except (ck.CheckpointError, ValueError, TypeError) as e:
        assert str(e).strip()
        return
    try:
        r = t.run()  # accepted: it must train on (to 6 steps, or report that it is past them)
    except rnnrs.NonFiniteError as e:  # e.g. a hostile lr of 1e37: stopped cleanly, naming the step
        assert re.search(r"at step \d+ ", str(e)), e
        return
    assert r.summary["steps"] >= 4


# ------------------------------------------------------------------------------------ explicit cases
def test_mismatched_vocabulary_is_rejected(workdir):
    tensors, meta = ck.read_tensors(CORPUS / "model_lstm.safetensors")
    bigger = rnnrs.CharTokenizer().fit(TEXT + "xyz")
    ck.write_tensors(workdir / "m.safetensors", tensors, dict(meta, tokenizer=bigger.to_json(indent=None)))
    for loader in ("load_model", "LyricGenerator.load"):
        with pytest.raises(ck.CheckpointError, match="mismatched vocabulary and model: the model has vocab_size "
                                                      r"\d+, the tokenizer has \d+ tokens"):
            LOADERS[loader](workdir / "m.safetensors")


@pytest.mark.parametrize("version", ["0", "2", "1.0", "", "v1"])
def test_wrong_versions_are_rejected(workdir, version):
    tensors, meta = ck.read_tensors(CORPUS / "checkpoint_sgd.safetensors")
    ck.write_tensors(workdir / "v.safetensors", tensors, dict(meta, version=version))
    with pytest.raises(ck.CheckpointError, match=f"expected format version 1, got '{version}'"):
        ck.load_checkpoint(workdir / "v.safetensors")


def test_deeply_nested_and_huge_metadata_are_rejected(workdir):
    tensors, meta = ck.read_tensors(CORPUS / "model_lstm.safetensors")
    for key in ("config", "tokenizer", "info"):
        for value, pattern in [(_deep(100_000), "nested too deeply"), ("{" * 10, "not valid JSON"),
                               (json.dumps({"pad": "x" * (4 << 20)}), "")]:
            ck.write_tensors(workdir / "d.safetensors", tensors, dict(meta, **{key: value}))
            try:
                ck.load_model(workdir / "d.safetensors")
            except ck.CheckpointError as e:
                assert pattern in str(e) and key in str(e) or key == "info" and not pattern
            else:
                assert key == "info", "only free-form info may hold any JSON object"


def test_non_finite_or_negative_optimizer_state_is_rejected(workdir):
    tensors, meta = ck.read_tensors(CORPUS / "checkpoint_adam_sequential.safetensors")
    for name, value, pattern in [("optim.linear.bias.exp_avg", np.nan, "expected finite values, got NaN"),
                                 ("optim.linear.bias.exp_avg_sq", -1.0, r"expected values >= 0"),
                                 ("optim.linear.bias.exp_avg", np.inf, "expected finite values, got inf")]:
        t = {k: np.array(v) for k, v in tensors.items()}
        t[name][0] = value
        ck.write_tensors(workdir / "o.safetensors", t, meta)
        with pytest.raises(ck.CheckpointError, match=f"invalid optimizer state: .*{pattern}"):
            ck.load_checkpoint(workdir / "o.safetensors")


def test_a_huge_step_count_trains_on(workdir):
    """``steps`` near 2^64 (a hostile or very old checkpoint) must not overflow the optimizer."""
    tensors, meta = ck.read_tensors(CORPUS / "checkpoint_adam_sequential.safetensors")
    opt = json.loads(meta["optimizer"])
    for steps in (2**31 - 1, 2**31, 2**63, 2**64 - 1):
        ck.write_tensors(workdir / "s.safetensors", tensors, dict(meta, optimizer=json.dumps(dict(opt, steps=steps))))
        m = ck.load_checkpoint(workdir / "s.safetensors").model
        ids = np.arange(12, dtype=np.int64).reshape(4, 3) % m.vocab_size
        loss, norm, _ = m.train_step(ids, ids, None, 1.0)
        assert math.isfinite(loss) and all(np.isfinite(v).all() for v in m.state_dict().values())


def test_loading_never_unpickles(workdir, monkeypatch):
    """No loader touches pickle (a pickle payload is just bytes that fail to parse)."""
    import pickle

    def refuse(*a, **k):
        raise AssertionError("pickle used while loading")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    payload = pickle.dumps({"a": 1}, protocol=4)
    for data in [payload, SEED_BYTES["checkpoint_sgd.safetensors"]]:
        load_all(write(workdir, data))
    evil = b"cos\nsystem\n(S'touch " + str(workdir / "pwned").encode() + b"'\ntR."  # a pickle that runs a command
    assert load_all(write(workdir, evil)) == []
    assert not (workdir / "pwned").exists()


def test_a_damaged_checksum_key_is_not_a_missing_checksum(workdir):
    data = bytearray(SEED_BYTES["model_lstm.safetensors"])
    i = bytes(data).index(b'"checksum"') + 1
    data[i] ^= 0x01  # "checksum" -> "bhecksum": the checksum would otherwise be skipped silently
    p = write(workdir, data)
    with pytest.raises(ck.CheckpointError, match="expected the checksum under the metadata key 'checksum', got it "
                                                  "under 'bhecksum': the file is corrupted"):
        ck.read_tensors(p)


@pytest.mark.parametrize("field,value,pattern", [
    ("epoch", -1, r"invalid trainer state: epoch: expected an integer >= 0, got -1"),
    ("step", "4", r"invalid trainer state: step: expected an integer >= 0, got '4'"),
    ("train_time", float("inf"), r"invalid trainer state: train_time: expected a finite number of seconds >= 0"),
    ("pending_val", "false", r"invalid trainer state: pending_val: expected true or false, got 'false'"),
    ("val_history", "0", r"invalid trainer state: val_history: expected a list of records with an integer 'step'"),
    ("skipped", [1.5], r"invalid trainer state: skipped: expected a list of step numbers"),
    ("data", None, r"invalid trainer state: data: expected a record with the corpus fingerprint"),
    ("best_val_loss", "low", r"invalid trainer state: best_val_loss: expected a number or null"),
])
def test_inconsistent_trainer_state_is_rejected_on_resume(tmp_path, field, value, pattern):
    tensors, meta = ck.read_tensors(CORPUS / "checkpoint_adam_sequential.safetensors")
    trainer = json.loads(meta["trainer"])
    trainer[field] = value
    ck.write_tensors(tmp_path / ck.CHECKPOINT_FILE, tensors, dict(meta, trainer=json.dumps(trainer)))
    with pytest.raises(ck.CheckpointError, match=pattern):
        Trainer.resume(tmp_path, text=TEXT, steps=6, quiet=True, plot=False)._setup()

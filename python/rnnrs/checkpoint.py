"""Safe model files: safetensors weights with JSON metadata, in one file, written atomically.

A model directory holds ``model.safetensors``: the weights (float32, or float16 for compact
distribution) plus, in the safetensors metadata, ``format``/``version``, the model config, the
tokenizer and free-form info — all JSON strings. Loading parses a JSON header and raw little-endian
numbers; it can never execute code (no pickle anywhere). Truncated, corrupted, wrong-version or
mismatched files raise :class:`CheckpointError` (a ``ValueError``) saying what is wrong; a missing
file raises ``OSError``.

A training run's directory also holds ``checkpoint.safetensors`` (``kind="checkpoint"``): the
weights in the model's own dtype, the optimizer's tensors (``optim.<param>.<slot>``), the trainer's
tensors (``trainer.*``: carried hidden state, per-step losses) and, in the metadata, the optimizer
settings, the dropout stream position and the trainer's state as JSON — everything needed to
continue the run bit-identically (:func:`save_checkpoint`, :func:`load_checkpoint`).

Every file carries a ``checksum`` (SHA-256 over the metadata and all tensors), so a bit flip or a
partial copy is reported instead of silently loading different weights. The format is documented
in ``docs/checkpoint-format.md``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from . import _rnnrs
from ._atomic import atomic_write_bytes
from .model import LanguageModel
from .tokenizer import tokenizer_from_json

__all__ = ["CheckpointError", "FORMAT", "VERSION", "MODEL_FILE", "CHECKPOINT_FILE", "write_tensors",
           "read_tensors", "save_model", "load_model", "model_file", "Checkpoint", "save_checkpoint",
           "load_checkpoint", "checkpoint_file"]

FORMAT = "rnnrs"
VERSION = 1
MODEL_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"
#: Metadata key of the SHA-256 over everything else in the file (see :func:`_digest`).
CHECKSUM_KEY = "checksum"
#: Tensor name prefixes that are not model weights.
OPTIM_PREFIX = "optim."
TRAINER_PREFIX = "trainer."
#: Files larger than this are refused before reading (a model of ~500M float32 parameters).
MAX_FILE_BYTES = 2 << 30

_DT = {np.dtype("<f2"): "F16", np.dtype("<f4"): "F32", np.dtype("<f8"): "F64",
       np.dtype("<i4"): "I32", np.dtype("<i8"): "I64", np.dtype("u1"): "U8"}
_NP = {v: k for k, v in _DT.items()}

PathLike = Union[str, "os.PathLike[str]"]


class CheckpointError(ValueError):
    """A model or checkpoint file exists but is not a valid rnnrs file (or does not fit the model)."""


def _digest(raw: Any, metadata: Mapping[str, str]) -> str:
    """``"sha256:<hex>"`` over the metadata (sorted, without the checksum itself) and the tensors
    (sorted by name: name, dtype, shape, little-endian bytes)."""
    h = hashlib.sha256()
    for k in sorted(metadata):
        if k != CHECKSUM_KEY:
            h.update(json.dumps([k, metadata[k]], ensure_ascii=False).encode("utf-8"))
    for name, dt, shape, buf in sorted(raw, key=lambda r: r[0]):
        h.update(json.dumps([name, dt, list(shape), len(buf)]).encode("utf-8"))
        h.update(buf)
    return "sha256:" + h.hexdigest()


def write_tensors(path: PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """Write ``tensors`` (``{name: array}`` of any shape, dtype float16/float32/float64,
    int32/int64 or uint8; stored C-ordered little-endian) and string ``metadata`` to ``path`` as
    safetensors, atomically (the old file, if any, survives any error), with a ``checksum`` metadata
    entry. ``TypeError`` for another dtype."""
    raw = []
    for name, a in tensors.items():
        a = np.asarray(a)
        dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        if np.dtype(dt) not in _DT:
            raise TypeError(f"{name}: expected a float16/32/64, int32/64 or uint8 array, got {a.dtype}")
        a = np.ascontiguousarray(a, dtype=np.dtype(dt).newbyteorder("<"))
        raw.append((str(name), _DT[np.dtype(dt).newbyteorder("<")], list(a.shape), a.tobytes()))
    meta = {str(k): str(v) for k, v in metadata.items() if k != CHECKSUM_KEY}
    meta[CHECKSUM_KEY] = _digest(raw, meta)
    data = _rnnrs.safetensors_dumps(raw, meta)
    atomic_write_bytes(path, data)


def read_tensors(path: PathLike) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Read a safetensors file: ``({name: array}, metadata)``, the arrays read-only with their
    stored shape and (little-endian) dtype: float16/float32/float64, int32/int64 or uint8.
    ``OSError`` if it cannot be read, :class:`CheckpointError` if it is not a valid safetensors file
    or its checksum does not match."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size > MAX_FILE_BYTES:
        raise CheckpointError(f"{path}: expected a file of at most {MAX_FILE_BYTES} bytes, got {size}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        raw, meta = _rnnrs.safetensors_loads(data, path)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    del data
    if CHECKSUM_KEY not in meta:
        damaged = [k for k, v in meta.items() if v.startswith("sha256:")]
        if damaged:  # e.g. a flipped bit in the key's name: the checksum must not be silently skipped
            raise CheckpointError(f"{path}: expected the checksum under the metadata key {CHECKSUM_KEY!r}, got it "
                                  f"under {damaged[0]!r}: the file is corrupted")
    if CHECKSUM_KEY in meta:
        got = _digest(raw, meta)
        if got != meta[CHECKSUM_KEY]:
            raise CheckpointError(f"{path}: checksum mismatch (expected {meta[CHECKSUM_KEY]}, got {got}): "
                                  "the file is corrupted (a flipped bit or an incomplete copy)")
    tensors = {name: np.frombuffer(buf, dtype=_NP[dt]).reshape(shape) for name, dt, shape, buf in raw}
    return tensors, dict(meta)


def _json_meta(meta: Mapping[str, str], key: str, path: str) -> Any:
    if key not in meta:
        raise CheckpointError(f"{path}: expected metadata field {key!r}, got fields {sorted(meta)}")
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: metadata field {key!r} is not valid JSON: {e}") from None
    except RecursionError:
        raise CheckpointError(f"{path}: metadata field {key!r} is JSON nested too deeply to be parsed") from None


def check_header(meta: Mapping[str, str], path: str, kind: str) -> None:
    """Reject files of another format, kind or version."""
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: expected an {FORMAT!r} file, got format {meta.get('format')!r}")
    if meta.get("version") != str(VERSION):
        raise CheckpointError(f"{path}: expected format version {VERSION}, got {meta.get('version')!r}"
                              " (written by a different rnnrs version)")
    if meta.get("kind") != kind:
        raise CheckpointError(f"{path}: expected a {kind!r} file, got {meta.get('kind')!r}")


def model_metadata(model: LanguageModel, tokenizer: Any = None, info: Optional[Mapping[str, Any]] = None,
                   kind: str = "model") -> Dict[str, str]:
    """The metadata block shared by model files and training checkpoints."""
    return {
        "format": FORMAT,
        "version": str(VERSION),
        "kind": kind,
        "config": json.dumps(model.config, sort_keys=True),
        "tokenizer": tokenizer.to_json(indent=None) if tokenizer is not None else "null",
        "info": json.dumps(dict(info or {}), sort_keys=True, ensure_ascii=False),
    }


def model_file(path: PathLike) -> str:
    """``path`` itself if it is a file; for a directory ``path/model.safetensors``, or
    ``path/checkpoint.safetensors`` when a run has written only that (it was stopped before its
    first model file: a killed run, or one whose first validation had not come yet).
    ``FileNotFoundError`` naming both files for a directory with neither."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return path
    for name in (MODEL_FILE, CHECKPOINT_FILE):
        f = os.path.join(path, name)
        if os.path.exists(f):
            return f
    raise FileNotFoundError(errno.ENOENT, f"{os.strerror(errno.ENOENT)} (no {MODEL_FILE} or {CHECKPOINT_FILE} in "
                            "the directory)", path)


def save_model(directory: PathLike, model: LanguageModel, tokenizer: Any = None,
               info: Optional[Mapping[str, Any]] = None, dtype: Any = None) -> str:
    """Write ``directory/model.safetensors`` atomically and return its path. The weights are
    stored in the model's dtype (float32/float64), or in ``dtype`` if given: ``dtype=np.float16``
    stores them in half precision (they are widened to the model's dtype on load)."""
    directory = os.fspath(directory)
    sd = model.state_dict()
    if dtype is not None:
        try:
            dt = np.dtype(dtype)
        except TypeError as e:
            raise ValueError(f"dtype: expected float16, float32 or float64, got {dtype!r}") from e
        if dt not in (np.float16, np.float32, np.float64):
            raise ValueError(f"dtype: expected float16, float32 or float64, got {dt.name}")
        with np.errstate(over="ignore"):
            cast = {k: v.astype(dt) for k, v in sd.items()}
        for k, v in cast.items():
            if not np.isfinite(v).all():
                raise ValueError(f"{k}: a weight does not fit in {dt.name} (largest |value| "
                                 f"{float(np.abs(sd[k]).max()):g}); save in a wider dtype")
        sd = cast
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, MODEL_FILE)
    write_tensors(path, sd, model_metadata(model, tokenizer, info))
    return path


def model_from_tensors(tensors: Mapping[str, np.ndarray], meta: Mapping[str, str], path: str,
                       kind: str = "model") -> Tuple[LanguageModel, Any, Dict[str, Any]]:
    """Rebuild ``(model, tokenizer or None, info)`` from what :func:`read_tensors` returned."""
    check_header(meta, path, kind)
    config = _json_meta(meta, "config", path)
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected the config to be a JSON object, got {type(config).__name__}")
    allowed = {"vocab_size", "embed_size", "hidden_size", "num_layers", "cell", "dropout", "seed", "dtype",
               "tie_weights", "embed_dropout", "locked_dropout", "weight_drop"}
    unknown = set(config) - allowed
    if unknown:
        raise CheckpointError(f"{path}: unexpected config fields {sorted(unknown)}")
    try:
        with warnings.catch_warnings():  # (a saved model's settings are no news to its user)
            warnings.simplefilter("ignore", UserWarning)
            model = LanguageModel(**config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid model config: {e}") from None
    weights = {k: v for k, v in tensors.items()
               if "." in k and not k.startswith((OPTIM_PREFIX, TRAINER_PREFIX))}
    try:
        model.load_state_dict(weights)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: weights do not fit the config: {e}") from None
    tok_json = meta.get("tokenizer", "null")
    tokenizer = None
    if tok_json != "null":
        try:
            tokenizer = tokenizer_from_json(tok_json)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: invalid tokenizer: {e}") from None
        if tokenizer.vocab is None or len(tokenizer.vocab) != model.vocab_size:
            got = None if tokenizer.vocab is None else len(tokenizer.vocab)
            raise CheckpointError(f"{path}: mismatched vocabulary and model: the model has vocab_size "
                                  f"{model.vocab_size}, the tokenizer has {got} tokens")
    info = _json_meta(meta, "info", path) if "info" in meta else {}
    return model, tokenizer, info if isinstance(info, dict) else {}


def load_model(path: PathLike) -> Tuple[LanguageModel, Any, Dict[str, Any]]:
    """Load ``(model, tokenizer or None, info)`` from a model directory or ``.safetensors`` file
    (a training ``checkpoint.safetensors`` works too: its weights, without the training state)."""
    f = model_file(path)
    tensors, meta = read_tensors(f)
    kind = "checkpoint" if meta.get("kind") == "checkpoint" else "model"
    return model_from_tensors(tensors, meta, f, kind)


# ------------------------------------------------------------------------------ training checkpoints
def checkpoint_file(path: PathLike) -> str:
    """``path`` itself if it is a file, else ``path/checkpoint.safetensors``."""
    path = os.fspath(path)
    return os.path.join(path, CHECKPOINT_FILE) if os.path.isdir(path) else path


@dataclass
class Checkpoint:
    """A training checkpoint as loaded by :func:`load_checkpoint`.

    ``model`` has its weights, optimizer (settings, step count and moment tensors) and dropout
    stream position restored; ``trainer`` is the trainer's JSON state; ``tensors`` are the
    ``trainer.*`` tensors with the prefix removed (e.g. ``"loss"``, ``"state.h"``), read-only
    arrays with their stored shape and dtype.
    """

    path: str
    model: LanguageModel
    tokenizer: Any
    info: Dict[str, Any]
    trainer: Dict[str, Any]
    tensors: Dict[str, np.ndarray] = field(default_factory=dict)


def _check_finite_weights(model: LanguageModel, what: str) -> Dict[str, np.ndarray]:
    sd = model.state_dict()
    for name, a in sd.items():
        if not np.all(np.isfinite(a)):
            raise ValueError(f"refusing to write {what}: parameter {name} has non-finite values (NaN/Inf); "
                             "the previous file is kept")
    return sd


def save_checkpoint(directory: PathLike, model: LanguageModel, tokenizer: Any = None,
                    trainer: Optional[Mapping[str, Any]] = None,
                    tensors: Optional[Mapping[str, np.ndarray]] = None,
                    info: Optional[Mapping[str, Any]] = None) -> str:
    """Write ``directory/checkpoint.safetensors`` atomically and return its path.

    Contents: the weights in the model's dtype; the optimizer's tensors as ``optim.<name>`` and its
    settings and step count (metadata ``optimizer``); the dropout stream position (``dropout``);
    ``trainer`` (a JSON-serialisable dict, metadata ``trainer``) and ``tensors`` (stored as
    ``trainer.<name>``). Raises ``ValueError`` (and writes nothing) if a weight is NaN/Inf, and
    ``OSError`` if the file cannot be written — the previous checkpoint then survives unchanged.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    out: Dict[str, np.ndarray] = dict(_check_finite_weights(model, "a checkpoint"))
    optim = None
    if model.optimizer is not None:
        steps, items = model._core.optimizer_state()
        for name, a in items:
            out[OPTIM_PREFIX + name] = a
        optim = dict(model.optimizer, steps=int(steps))
    for name, a in (tensors or {}).items():
        out[TRAINER_PREFIX + name] = np.asarray(a)
    meta = model_metadata(model, tokenizer, info, kind="checkpoint")
    seed, calls = model._core.dropout_state()
    meta["optimizer"] = json.dumps(optim, sort_keys=True)
    meta["dropout"] = json.dumps({"seed": int(seed), "calls": int(calls)})
    meta["trainer"] = json.dumps(_json_safe(dict(trainer or {})), sort_keys=True, ensure_ascii=False,
                                 allow_nan=False)
    path = os.path.join(directory, CHECKPOINT_FILE)
    write_tensors(path, out, meta)
    return path


def _json_safe(x: Any) -> Any:
    """NaN/Inf floats → None, so the metadata is strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _u64(obj: Any, key: str, path: str) -> int:
    v = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2 ** 64:
        raise CheckpointError(f"{path}: expected {key!r} to be an integer in [0, 2^64), got {v!r}")
    return v


def load_checkpoint(path: PathLike) -> Checkpoint:
    """Load a training checkpoint (a run directory or the ``.safetensors`` file itself) with the
    model's optimizer and dropout stream restored. ``OSError`` if missing or unreadable,
    :class:`CheckpointError` if corrupted, of another format/version/kind, or inconsistent."""
    f = checkpoint_file(path)
    tensors, meta = read_tensors(f)
    model, tokenizer, info = model_from_tensors(tensors, meta, f, kind="checkpoint")
    trainer = _json_meta(meta, "trainer", f)
    if not isinstance(trainer, dict):
        raise CheckpointError(f"{f}: expected the trainer state to be a JSON object, got {type(trainer).__name__}")
    optim = _json_meta(meta, "optimizer", f)
    if optim is not None:
        if not isinstance(optim, dict):
            raise CheckpointError(f"{f}: expected the optimizer settings to be a JSON object or null, "
                                  f"got {type(optim).__name__}")
        steps = _u64(optim, "steps", f)
        try:
            betas = optim.get("betas", [0.9, 0.999])
            model.set_optimizer(optim["name"], optim["lr"], momentum=optim.get("momentum", 0.0),
                                weight_decay=optim.get("weight_decay", 0.0), nesterov=optim.get("nesterov", False),
                                betas=(betas[0], betas[1]), eps=optim.get("eps", 1e-8))
            items = [(k[len(OPTIM_PREFIX):], v) for k, v in tensors.items() if k.startswith(OPTIM_PREFIX)]
            model._core.load_optimizer_state(steps, items)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise CheckpointError(f"{f}: invalid optimizer state: {e}") from None
    elif any(k.startswith(OPTIM_PREFIX) for k in tensors):
        raise CheckpointError(f"{f}: optimizer tensors without optimizer settings")
    dropout = _json_meta(meta, "dropout", f)
    model._core.set_dropout_state(_u64(dropout, "seed", f), _u64(dropout, "calls", f))
    extra = {k[len(TRAINER_PREFIX):]: v for k, v in tensors.items() if k.startswith(TRAINER_PREFIX)}
    return Checkpoint(path=f, model=model, tokenizer=tokenizer, info=info, trainer=trainer, tensors=extra)

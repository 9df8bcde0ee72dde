"""Safe model files: safetensors weights with JSON metadata, in one file, written atomically.

A model directory holds ``model.safetensors``: the weights (float32, or float16 for compact
distribution) plus, in the safetensors metadata, ``format``/``version``, the model config, the
tokenizer and free-form info — all JSON strings. Loading parses a JSON header and raw little-endian
numbers; it can never execute code (no pickle anywhere). Truncated, corrupted, wrong-version or
mismatched files raise :class:`CheckpointError` (a ``ValueError``) saying what is wrong; a missing
file raises ``OSError``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from . import _rnnrs
from ._atomic import atomic_write_bytes
from .model import LanguageModel
from .tokenizer import tokenizer_from_json

__all__ = ["CheckpointError", "FORMAT", "VERSION", "MODEL_FILE", "write_tensors", "read_tensors",
           "save_model", "load_model", "model_file"]

FORMAT = "rnnrs"
VERSION = 1
MODEL_FILE = "model.safetensors"
#: Files larger than this are refused before reading (a model of ~500M float32 parameters).
MAX_FILE_BYTES = 2 << 30

_DT = {np.dtype("<f2"): "F16", np.dtype("<f4"): "F32", np.dtype("<f8"): "F64",
       np.dtype("<i4"): "I32", np.dtype("<i8"): "I64", np.dtype("u1"): "U8"}
_NP = {v: k for k, v in _DT.items()}

PathLike = Union[str, "os.PathLike[str]"]


class CheckpointError(ValueError):
    """A model or checkpoint file exists but is not a valid rnnrs file (or does not fit the model)."""


def write_tensors(path: PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """Write ``tensors`` and string ``metadata`` to ``path`` as safetensors, atomically."""
    raw = []
    for name, a in tensors.items():
        a = np.asarray(a)
        dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        if np.dtype(dt) not in _DT:
            raise TypeError(f"{name}: expected a float16/32/64, int32/64 or uint8 array, got {a.dtype}")
        a = np.ascontiguousarray(a, dtype=np.dtype(dt).newbyteorder("<"))
        raw.append((str(name), _DT[np.dtype(dt).newbyteorder("<")], list(a.shape), a.tobytes()))
    data = _rnnrs.safetensors_dumps(raw, {str(k): str(v) for k, v in metadata.items()})
    atomic_write_bytes(path, data)


def read_tensors(path: PathLike) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Read a safetensors file: ``({name: array}, metadata)``. ``OSError`` if it cannot be read,
    :class:`CheckpointError` if it is not a valid safetensors file."""
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
    tensors = {name: np.frombuffer(buf, dtype=_NP[dt]).reshape(shape) for name, dt, shape, buf in raw}
    return tensors, dict(meta)


def _json_meta(meta: Mapping[str, str], key: str, path: str) -> Any:
    if key not in meta:
        raise CheckpointError(f"{path}: expected metadata field {key!r}, got fields {sorted(meta)}")
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: metadata field {key!r} is not valid JSON: {e}") from None


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
    """``path`` itself if it is a file, else ``path/model.safetensors``."""
    path = os.fspath(path)
    return os.path.join(path, MODEL_FILE) if os.path.isdir(path) else path


def save_model(directory: PathLike, model: LanguageModel, tokenizer: Any = None,
               info: Optional[Mapping[str, Any]] = None, dtype: Any = None) -> str:
    """Write ``directory/model.safetensors`` atomically and return its path. ``dtype=np.float16``
    stores the weights in half precision (they are widened on load)."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    sd = model.state_dict()
    if dtype is not None:
        sd = {k: v.astype(dtype) for k, v in sd.items()}
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
    allowed = {"vocab_size", "embed_size", "hidden_size", "num_layers", "cell", "dropout", "seed", "dtype"}
    unknown = set(config) - allowed
    if unknown:
        raise CheckpointError(f"{path}: unexpected config fields {sorted(unknown)}")
    try:
        model = LanguageModel(**config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid model config: {e}") from None
    weights = {k: v for k, v in tensors.items() if "." in k and not k.startswith("optim.")}
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
    """Load ``(model, tokenizer or None, info)`` from a model directory or ``.safetensors`` file."""
    f = model_file(path)
    tensors, meta = read_tensors(f)
    return model_from_tensors(tensors, meta, f)

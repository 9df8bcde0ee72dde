"""Export to ONNX: :class:`rnnrs.LanguageModel`, the layers :class:`rnnrs.RNN`/``GRU``/``LSTM`` and
:class:`rnnrs.keras.Sequential`, and the command ``python -m rnnrs export`` (see ``docs/onnx.md``).

The graphs use ONNX's own ``RNN``/``GRU``/``LSTM`` operators, one per layer (PyTorch's gate blocks
reordered: LSTM ``i,f,g,o`` -> ``i,o,f,c``, GRU ``r,z,n`` -> ``z,r,h`` with ``linear_before_reset=1``;
biases ``[W_b, R_b]``), chained by ``Transpose``/``Reshape`` of ``Y [T, D, B, H]`` -> ``[T, B, D*H]``,
final states concatenated into ``(L*D, B, H)``. States are explicit inputs and outputs (``h0``/``c0``
in, ``h_n``/``c_n`` out, always present: feed zeros to start), sequence length and batch are dynamic,
so one graph serves a whole sequence and step-by-step generation. The graph computes in float32;
``dtype="float16"`` stores the weights as float16 initialisers, each followed by a ``Cast`` to
float32 (ONNX Runtime's CPU kernels have no float16 RNNs). Export is inference: dropout is left out.

``onnx`` is imported only when an export runs (``pip install 'rnnrs[onnx]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["export_layer", "export_language_model", "export_sequential", "tokenizer_path",
           "DEFAULT_OPSET", "MIN_OPSET"]

#: The default and the lowest supported opset (Squeeze/Unsqueeze/Softmax as in opset 13+, 14's
#: recurrent operators).
DEFAULT_OPSET, MIN_OPSET = 17, 14
DTYPES = ("float32", "float16")
# ONNX's gate blocks, as indices of PyTorch's: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h.
_GATES = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn_tanh": (0,), "rnn_relu": (0,)}
_OPS = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN", "rnn_relu": "RNN"}
_ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'rnnrs[onnx]'") from None
    return onnx


def _check_path(path: Any) -> str:
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike file name, got {type(path).__name__} {path!r}")
    path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise ValueError(f"path: expected a non-empty file name, got {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(21, "Is a directory (expected a file name such as model.onnx)", path)
    return path


def _check_options(opset: Any, dtype: Any, padding: Any) -> Tuple[int, bool]:
    onnx = _onnx()
    opset = DEFAULT_OPSET if opset is None else opset
    newest = int(onnx.defs.onnx_opset_version())
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"opset: expected an integer in [{MIN_OPSET}, {newest}], got {type(opset).__name__} {opset!r}")
    if not MIN_OPSET <= int(opset) <= newest:
        raise ValueError(f"opset: expected an integer in [{MIN_OPSET}, {newest}] (the installed onnx "
                         f"{onnx.__version__} knows up to {newest}), got {opset}")
    name = np.dtype(dtype).name if isinstance(dtype, type) else dtype
    if name not in DTYPES:
        raise ValueError(f"dtype: expected 'float32' or 'float16' (the weights' storage; the graph computes in "
                         f"float32), got {dtype!r}")
    if padding != "post":
        raise ValueError(f"padding: expected 'post', got {padding!r}: ONNX's sequence_lens means padding at the "
                         "end of each sequence; pre-padded batches cannot be expressed (pad at the end, as "
                         "rnnrs.keras.pad_sequences(..., padding='post') does)")
    return int(opset), name == "float16"


def tokenizer_path(path: Any) -> str:
    """Where the tokenizer of a language model exported to ``path`` is written: ``out.onnx`` ->
    ``out.tokenizer.json``."""
    path = os.fspath(path)
    return (path[:-5] if path.endswith(".onnx") else path) + ".tokenizer.json"


# ============================================================================================ graph
class _Graph:
    """Nodes, initialisers and graph inputs/outputs being assembled (names are unique)."""

    def __init__(self, float16: bool) -> None:
        self.onnx = _onnx()
        self.float16 = float16
        self.nodes: List[Any] = []
        self.inits: List[Any] = []
        self.inputs: List[Any] = []
        self.outputs: List[Any] = []
        self._count = 0

    def _name(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    def node(self, op: str, inputs: Sequence[str], n_out: int = 1, out: Optional[Sequence[str]] = None,
             **attrs: Any) -> List[str]:
        outs = list(out) if out is not None else [self._name(op.lower()) for _ in range(n_out)]
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), outs, name=self._name(op), **attrs))
        return outs

    def one(self, op: str, inputs: Sequence[str], **attrs: Any) -> str:
        return self.node(op, inputs, **attrs)[0]

    def const(self, name: str, array: Any) -> str:
        """An initialiser stored as it is (integer shapes, indices)."""
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(array), self._name(name)))
        return self.inits[-1].name

    def weight(self, name: str, array: np.ndarray) -> str:
        """A float32 tensor: a float32 initialiser, or a float16 one followed by a Cast."""
        if not self.float16:
            return self.const(name, np.ascontiguousarray(array, dtype=np.float32))
        with np.errstate(over="ignore"):
            half = np.asarray(array).astype(np.float16)
        if not np.isfinite(half).all():
            raise ValueError(f"dtype: a weight does not fit in float16 (largest |value| {float(np.abs(array).max()):g}); "
                             "export in float32")
        return self.one("Cast", [self.const(name + "_f16", half)], to=self.onnx.TensorProto.FLOAT)

    def input(self, name: str, elem: int, shape: Sequence[Any]) -> str:
        self.inputs.append(self.onnx.helper.make_tensor_value_info(name, elem, list(shape)))
        return name

    def output(self, name: str, value: str, elem: int, shape: Sequence[Any]) -> None:
        self.node("Identity", [value], out=[name])
        self.outputs.append(self.onnx.helper.make_tensor_value_info(name, elem, list(shape)))

    def save(self, path: str, opset: int, kind: str, config: Mapping[str, Any],
             extra: Optional[Mapping[str, str]] = None) -> Any:
        from . import _rnnrs
        from ._atomic import atomic_write_bytes
        helper = self.onnx.helper
        graph = helper.make_graph(self.nodes, f"rnnrs_{kind}", self.inputs, self.outputs, self.inits)
        opsets = [helper.make_opsetid("", opset)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="rnnrs",
                                  producer_version=_rnnrs.__version__,
                                  ir_version=helper.find_min_ir_version_for(opsets))
        meta = {"rnnrs_version": _rnnrs.__version__, "rnnrs_kind": kind,
                "rnnrs_config": json.dumps(dict(config), sort_keys=True),
                "rnnrs_weights": "float16" if self.float16 else "float32", **dict(extra or {})}
        helper.set_model_props(model, meta)
        self.onnx.checker.check_model(model, full_check=True)
        atomic_write_bytes(path, model.SerializeToString())
        return model


def _gates(a: np.ndarray, cell: str) -> np.ndarray:
    """PyTorch's gate blocks of ``a`` (``(G*H, ...)``) in ONNX's order."""
    blocks = np.split(a, len(_GATES[cell]))
    return np.concatenate([blocks[i] for i in _GATES[cell]])


def _stack(g: _Graph, x: str, sd: Mapping[str, np.ndarray], prefix: str, cell: str, num_layers: int,
           directions: int, hidden: int, h0: str = "", c0: str = "", lens: str = "") -> Tuple[str, str, str]:
    """Chained single-layer ONNX recurrent operators on time-major ``x (T, B, I)``: ``(y (T, B, D*H),
    h_n (L*D, B, H), c_n)`` (``c_n`` "" unless LSTM). ``h0``/``c0``: ``(L*D, B, H)`` or ""."""
    suffixes = ["", "_reverse"][:directions]
    attrs: Dict[str, Any] = {"hidden_size": hidden,
                             "direction": "bidirectional" if directions == 2 else "forward"}
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    if cell.startswith("rnn"):
        attrs["activations"] = [_ACTIVATIONS[cell[4:]]] * directions
    hs, cs = [], []
    for layer in range(num_layers):
        def param(kind: str) -> List[np.ndarray]:  # one per direction, gates in ONNX's order
            return [_gates(sd[f"{prefix}{kind}_l{layer}{s}"], cell) for s in suffixes]
        w, r = np.stack(param("weight_ih")), np.stack(param("weight_hh"))
        b = np.stack([np.concatenate(pair) for pair in zip(param("bias_ih"), param("bias_hh"))])
        ins = [x, g.weight(f"W_l{layer}", w), g.weight(f"R_l{layer}", r), g.weight(f"B_l{layer}", b), lens]
        for state in (h0, c0) if cell == "lstm" else (h0,):
            ins.append(_layer_slice(g, state, layer, directions))
        outs = g.node(_OPS[cell], ins, n_out=3 if cell == "lstm" else 2, **attrs)
        hs.append(outs[1])
        cs.append(outs[2] if cell == "lstm" else "")
        x = g.one("Reshape", [g.one("Transpose", [outs[0]], perm=[0, 2, 1, 3]), g.const("shape", np.array([0, 0, -1]))])
    h_n = hs[0] if num_layers == 1 else g.one("Concat", hs, axis=0)
    c_n = "" if cell != "lstm" else cs[0] if num_layers == 1 else g.one("Concat", cs, axis=0)
    if lens and h0:  # ONNX Runtime's final state of a zero-length sequence is 0, rnnrs' (and PyTorch's) is h0
        empty = g.one("Unsqueeze", [g.one("Equal", [lens, g.const("zero", np.array(0, np.int32))]),
                                    g.const("axes", np.array([0, 2]))])
        h_n, c_n = g.one("Where", [empty, h0, h_n]), (g.one("Where", [empty, c0, c_n]) if c0 else c_n)
    return x, h_n, c_n


def _layer_slice(g: _Graph, state: str, layer: int, directions: int) -> str:
    if not state:
        return ""
    return g.one("Slice", [state, g.const("start", np.array([layer * directions])),
                           g.const("end", np.array([(layer + 1) * directions])), g.const("axis", np.array([0]))])


def _cell_of(layer: Any) -> str:
    from .layers import GRU, LSTM
    return "lstm" if isinstance(layer, LSTM) else "gru" if isinstance(layer, GRU) else f"rnn_{layer.nonlinearity}"


# ========================================================================================== exports
def export_layer(layer: Any, path: Any, opset: Optional[int] = None, *, dtype: str = "float32",
                 padding: str = "post") -> Any:
    """Write ``layer`` (an :class:`rnnrs.RNN`/``GRU``/``LSTM``) to ``path`` as ONNX; returns the
    ``onnx.ModelProto``. Inputs ``x`` (``(T, B, I)``, ``(B, T, I)`` if ``batch_first``), ``h0`` (and
    ``c0`` for LSTM) ``(L*D, B, H)``, ``sequence_lens`` int32 ``(B,)`` (lengths in ``[0, T]``, as
    ``forward``'s ``lengths``; ``T`` for full sequences); outputs ``y``, ``h_n`` (and ``c_n``), as
    :meth:`forward`. ``padding`` must be ``"post"``: ``sequence_lens`` cannot describe pre-padding."""
    from .layers import _Recurrent
    if not isinstance(layer, _Recurrent):
        raise TypeError(f"layer: expected an rnnrs.RNN, GRU or LSTM, got {type(layer).__name__}")
    path = _check_path(path)
    opset, float16 = _check_options(opset, dtype, padding)
    g = _Graph(float16)
    F, I32 = g.onnx.TensorProto.FLOAT, g.onnx.TensorProto.INT32
    cell, dirs, hidden = _cell_of(layer), layer.num_directions, layer.hidden_size
    seq = ["batch", "seq_len"] if layer.batch_first else ["seq_len", "batch"]
    state_shape = [layer.num_layers * dirs, "batch", hidden]
    x = g.input("x", F, seq + [layer.input_size])
    h0 = g.input("h0", F, state_shape)
    c0 = g.input("c0", F, state_shape) if cell == "lstm" else ""
    lens = g.input("sequence_lens", I32, ["batch"])
    if layer.batch_first:
        x = g.one("Transpose", [x], perm=[1, 0, 2])
    y, h_n, c_n = _stack(g, x, layer.state_dict(), "", cell, layer.num_layers, dirs, hidden, h0, c0, lens)
    if layer.batch_first:
        y = g.one("Transpose", [y], perm=[1, 0, 2])
    g.output("y", y, F, seq + [dirs * hidden])
    g.output("h_n", h_n, F, state_shape)
    if cell == "lstm":
        g.output("c_n", c_n, F, state_shape)
    config = {"cell": cell, "input_size": layer.input_size, "hidden_size": hidden, "num_layers": layer.num_layers,
              "bidirectional": layer.bidirectional, "batch_first": layer.batch_first, "dtype": layer.dtype.name}
    return g.save(path, opset, "layer", config)


def export_language_model(model: Any, path: Any, opset: Optional[int] = None, *, tokenizer: Any = None,
                          info: Optional[Mapping[str, Any]] = None, dtype: str = "float32") -> Any:
    """Write ``model`` (an :class:`rnnrs.LanguageModel`) to ``path`` as ONNX, and ``tokenizer`` (if
    given) beside it as JSON (:func:`tokenizer_path`); returns the ``onnx.ModelProto``. Inputs
    ``ids`` int64 ``(T, B)`` (time-major, as :meth:`LanguageModel.logits`), ``h0`` (and ``c0`` for
    LSTM) ``(L, B, H)``; outputs ``logits (T, B, V)``, ``h_n`` (and ``c_n``)."""
    from .model import CELLS, LanguageModel
    if not isinstance(model, LanguageModel):
        raise TypeError(f"model: expected an rnnrs.LanguageModel, got {type(model).__name__}")
    path = _check_path(path)
    opset, float16 = _check_options(opset, dtype, "post")
    if tokenizer is not None and (getattr(tokenizer, "vocab", None) is None or len(tokenizer.vocab) != model.vocab_size):
        raise ValueError(f"tokenizer: expected a fitted tokenizer of {model.vocab_size} tokens (the model's vocab_size), "
                         f"got {tokenizer!r}")
    g = _Graph(float16)
    F = g.onnx.TensorProto.FLOAT
    cell, sd, cfg = CELLS[model.cell], model.state_dict(), model.config
    state_shape = [model.num_layers, "batch", model.hidden_size]
    ids = g.input("ids", g.onnx.TensorProto.INT64, ["seq_len", "batch"])
    h0 = g.input("h0", F, state_shape)
    c0 = g.input("c0", F, state_shape) if cell == "lstm" else ""
    if cfg["embed_size"] is None:  # one-hot inputs
        x = g.one("OneHot", [ids, g.const("depth", np.array(model.vocab_size, np.int64)),
                             g.const("off_on", np.array([0, 1], np.float32))], axis=-1)
    else:
        x = g.one("Gather", [g.weight("embedding", sd["embedding.weight"]), ids], axis=0)
    y, h_n, c_n = _stack(g, x, sd, "rnn.", cell, model.num_layers, 1, model.hidden_size, h0, c0)
    w_out = sd.get("linear.weight")
    if w_out is None:  # tied: the output layer is the embedding (times the projection when E != H)
        w_out = sd["embedding.weight"] if "proj.weight" not in sd else sd["embedding.weight"] @ sd["proj.weight"]
    logits = g.one("Add", [g.one("MatMul", [y, g.weight("linear_weight_t", w_out.T)]),
                           g.weight("linear_bias", sd["linear.bias"])])
    g.output("logits", logits, F, ["seq_len", "batch", model.vocab_size])
    g.output("h_n", h_n, F, state_shape)
    if cell == "lstm":
        g.output("c_n", c_n, F, state_shape)
    extra = {"rnnrs_info": json.dumps(dict(info or {}), sort_keys=True, ensure_ascii=False)}
    if tokenizer is not None:
        extra["rnnrs_tokenizer"] = os.path.basename(tokenizer_path(path))
    out = g.save(path, opset, "language_model", cfg, extra)
    if tokenizer is not None:
        tokenizer.save(tokenizer_path(path))
    return out


def export_sequential(model: Any, path: Any, opset: Optional[int] = None, *, dtype: str = "float32",
                      padding: str = "post") -> Any:
    """Write a built :class:`rnnrs.keras.Sequential` to ``path`` as ONNX; returns the
    ``onnx.ModelProto``. Input ``x``: token ids int64 ``(N, T)`` (first layer an ``Embedding``) or
    features ``(N, T, F)``, and ``sequence_lens`` int32 ``(N,)`` (lengths in ``[1, T]``) unless the
    embedding has ``mask_zero=True`` (then the graph takes them from the trailing zeros, as
    ``predict`` does); output ``y`` as ``predict``: ``(N, C)`` or ``(N, T, C)``."""
    from .keras import Dense, Embedding, Sequential, _RecurrentLayer
    if not isinstance(model, Sequential):
        raise TypeError(f"model: expected an rnnrs.keras.Sequential, got {type(model).__name__}")
    if not model.built:
        raise ValueError("model: expected a built model (call compile() and fit() or build() first)")
    path = _check_path(path)
    opset, float16 = _check_options(opset, dtype, padding)
    g = _Graph(float16)
    F, sd = g.onnx.TensorProto.FLOAT, model.state_dict()
    first = model.layers[0]
    if isinstance(first, Embedding):
        x = g.input("x", g.onnx.TensorProto.INT64, ["batch", "seq_len"])
        lens = _mask_zero_lengths(g, x) if first.mask_zero else g.input("sequence_lens", g.onnx.TensorProto.INT32, ["batch"])
        a = g.one("Gather", [g.weight("embedding", sd["layers.0.weight"]), g.one("Transpose", [x], perm=[1, 0])], axis=0)
    else:
        x = g.input("x", F, ["batch", "seq_len", model._input_features])
        lens = g.input("sequence_lens", g.onnx.TensorProto.INT32, ["batch"])
        a = g.one("Transpose", [x], perm=[1, 0, 2])
    seq, width = True, 0
    for i, layer in enumerate(model.layers):
        if isinstance(layer, _RecurrentLayer):
            dirs = 2 if layer.bidirectional else 1
            y, h_n, _ = _stack(g, a, sd, f"layers.{i}.", layer._cell, 1, dirs, layer.units, lens=lens)
            seq, width = layer.return_sequences, dirs * layer.units
            a = y if seq else g.one("Reshape", [g.one("Transpose", [h_n], perm=[1, 0, 2]), g.const("shape", np.array([0, -1]))])
        elif isinstance(layer, Dense):
            a = g.one("Add", [g.one("MatMul", [a, g.weight(f"dense{i}_weight_t", sd[f"layers.{i}.weight"].T)]),
                              g.weight(f"dense{i}_bias", sd[f"layers.{i}.bias"])])
            if layer.activation == "softmax":
                a = g.one("Softmax", [a], axis=-1)
            elif layer.activation != "linear":
                a = g.one(_ACTIVATIONS[layer.activation], [a])
            width = layer.units
    if seq:
        a = g.one("Transpose", [a], perm=[1, 0, 2])
    g.output("y", a, F, ["batch", "seq_len", width] if seq else ["batch", width])
    return g.save(path, opset, "sequential", model.get_config())


def _mask_zero_lengths(g: _Graph, ids: str) -> str:
    """int32 ``(N,)``: 1 + the index of each row's last non-zero id (1 for an all-zero row), as
    ``Sequential`` computes the lengths of ``Embedding(mask_zero=True)``."""
    nz = g.one("Cast", [g.one("Not", [g.one("Equal", [ids, g.const("zero", np.array(0, np.int64))])])],
               to=g.onnx.TensorProto.FLOAT)
    last = g.one("ArgMax", [nz], axis=1, keepdims=1, select_last_index=1)
    seen = g.one("Cast", [g.one("GatherElements", [nz, last], axis=1)], to=g.onnx.TensorProto.BOOL)
    one = g.const("one", np.array([1], np.int64))
    lens = g.one("Where", [seen, g.one("Add", [last, one]), one])
    return g.one("Cast", [g.one("Squeeze", [lens, one])], to=g.onnx.TensorProto.INT32)


# ============================================================================================== CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``rnnrs export``."""
    parser.add_argument("--model", metavar="DIR", default=None,
                        help="a trained model directory or .safetensors file (default: the built-in lyrics model)")
    parser.add_argument("--onnx", metavar="FILE", required=True,
                        help="the ONNX file to write (the tokenizer goes beside it: FILE without .onnx + .tokenizer.json)")
    parser.add_argument("--opset", type=int, metavar="N", default=DEFAULT_OPSET,
                        help=f"ONNX opset, >= {MIN_OPSET} (default {DEFAULT_OPSET})")
    parser.add_argument("--float16", action="store_true",
                        help="store the weights in float16 (half the file; the graph still computes in float32)")


def run(args: argparse.Namespace) -> int:
    """Run ``rnnrs export``: 0, or 2 after one line on stderr for a user error."""
    from .checkpoint import load_model
    from .generate import DEFAULT_MODEL_DIR

    model_dir = args.model if args.model is not None else DEFAULT_MODEL_DIR
    try:
        model, tokenizer, info = load_model(model_dir)
        export_language_model(model, args.onnx, args.opset, tokenizer=tokenizer, info=info,
                              dtype="float16" if args.float16 else "float32")
    except ImportError as e:
        return _error(str(e))
    except OSError as e:
        return _error(f"{e.filename or model_dir}: {e.strerror or e}")
    except (ValueError, TypeError) as e:
        message = str(e)
        for option, flag in (("opset:", "--opset:"), ("dtype:", "--float16:")):
            message = flag + message[len(option):] if message.startswith(option) else message
        return _error(message)
    size = os.path.getsize(args.onnx)
    tok = f" and {tokenizer_path(args.onnx)}" if tokenizer is not None else ""
    print(f"wrote {args.onnx} ({size / 1e6:.1f} MB, {'float16' if args.float16 else 'float32'} weights){tok}", flush=True)
    return 0


def _error(message: str) -> int:
    print(f"rnnrs export: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    return 2

"""Keras' functional API: ``Model(inputs, outputs)`` over a graph of layers called on tensors.

The forward pass runs the nodes in topological order (the recurrences in Rust, one
``rnnrs.LSTM``/... call per node); the backward pass runs them in reverse, each layer returning the
exact gradients w.r.t. its inputs (including a recurrent layer's ``initial_state``) and adding its
parameter gradients. Losses, metrics and optimizers are Keras' (see :meth:`Model.compile`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _init
from ._fit import History, LearningRate, pos_int, run_fit, sample_weights, split_validation
from ._layers import (Dense, InputLayer, KerasTensor, Layer, Node, TimeDistributed, _flat, _RecurrentLayer,
                      Bidirectional, from_config, layers_state, load_layers_state)

FORMAT = "rnnrs.functional/1"
LOSSES = ("mse", "categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy")
LOSS_ALIASES = {"mean_squared_error": "mse"}
EPS = 1e-7


def loss_and_grad(loss: str, p: np.ndarray, y: np.ndarray, mask: Optional[np.ndarray], w: Optional[np.ndarray],
                  logits_grad: bool) -> Tuple[float, float, int, np.ndarray]:
    """``(mean loss, correct, count, gradient)``: the gradient w.r.t. the output ``p``, or w.r.t. its
    pre-activation with ``logits_grad`` (softmax/sigmoid output with its cross-entropy). Steps where
    ``mask`` is False count nowhere; ``w`` weighs each example."""
    c = p.shape[-1]
    if loss == "sparse_categorical_crossentropy":
        y = np.asarray(y)
        if y.shape == p.shape[:-1] + (1,):
            y = y[..., 0]
        if y.shape != p.shape[:-1]:
            raise ValueError(f"y: expected class ids of shape {p.shape[:-1]}, got {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= c):
            raise ValueError(f"y: expected class ids in [0, {c}), got {int(y[(y < 0) | (y >= c)][0])}")
        t = np.zeros(p.shape, p.dtype)
        np.put_along_axis(t, y[..., None].astype(np.int64), 1.0, axis=-1)
    else:
        t = np.asarray(y, dtype=p.dtype)
        if t.shape == p.shape[:-1] and p.shape[-1] == 1:
            t = t[..., None]  # (labels (N,) for a Dense(1) output, as Keras takes them)
        if t.shape != p.shape:
            raise ValueError(f"y: expected targets of the output's shape {p.shape}, got {t.shape}")
    valid = np.ones(p.shape[:-1], bool) if mask is None or p.ndim == 2 else mask
    rw = np.ones(p.shape[:-1]) if w is None else np.broadcast_to(w.reshape((-1,) + (1,) * (p.ndim - 2)), p.shape[:-1])
    rw = rw * valid
    count = int(valid.sum())
    inv = 1.0 / max(count, 1)
    if loss == "mse":
        d = p - t
        per = (d * d).mean(axis=-1)
        g = 2.0 * d / c
        correct = 0.0
    elif loss == "binary_crossentropy":
        q = np.clip(p, EPS, 1 - EPS)
        per = -(t * np.log(q) + (1 - t) * np.log(1 - q)).mean(axis=-1)
        g = (p - t) / c if logits_grad else (q - t) / (q * (1 - q)) / c
        correct = float((((p > 0.5) == (t > 0.5)).all(axis=-1) & valid).sum())
    else:
        q = np.clip(p, EPS, 1.0)
        per = -(t * np.log(q)).sum(axis=-1)
        g = p * t.sum(axis=-1, keepdims=True) - t if logits_grad else -t / q
        correct = float(((np.argmax(p, -1) == np.argmax(t, -1)) & valid).sum())
    total = float((per * rw).sum())
    grad = (g * (rw * inv)[..., None]).astype(p.dtype)
    return total * inv, correct, count, grad


def _collect(outputs: List[KerasTensor]) -> List[Node]:
    """The nodes the outputs depend on, inputs first, in creation order (a topological order)."""
    seen: Dict[int, Node] = {}
    stack = [t.node for t in outputs]
    while stack:
        node = stack.pop()
        if node.id in seen:
            continue
        seen[node.id] = node
        stack.extend(t.node for t in node.inputs)
    return sorted(seen.values(), key=lambda n: n.id)


class _Optimizer:
    """Keras' optimizers on NumPy arrays (SGD with momentum/Nesterov, Adam, AdamW, RMSprop), the
    same arithmetic as the Rust optimizers behind :class:`Sequential`."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.state: Dict[str, List[np.ndarray]] = {}
        self.steps = 0

    def step(self, params: Dict[str, np.ndarray], grads: Dict[str, np.ndarray]) -> None:
        o, kw = self.cfg, self.cfg.kw
        lr = o.learning_rate
        self.steps += 1
        t = self.steps
        for k, p in params.items():
            g = grads[k].astype(p.dtype)
            st = self.state.setdefault(k, [])
            if o.name == "sgd":
                if kw["weight_decay"]:
                    g = g + kw["weight_decay"] * p
                if kw["momentum"]:
                    if not st:
                        st.append(g.copy())
                    else:
                        st[0] *= kw["momentum"]
                        st[0] += g
                    g = g + kw["momentum"] * st[0] if kw["nesterov"] else st[0]
                p -= lr * g
            elif o.name == "rmsprop":
                if not st:
                    st.append(np.zeros_like(p))
                st[0] *= kw["rho"]
                st[0] += (1 - kw["rho"]) * g * g
                p -= lr * g / (np.sqrt(st[0]) + kw["epsilon"])
            else:
                b1, b2, eps, wd = kw["beta_1"], kw["beta_2"], kw["epsilon"], kw["weight_decay"]
                if o.name == "adamw":
                    p *= 1 - lr * wd
                elif wd:
                    g = g + wd * p
                if not st:
                    st += [np.zeros_like(p), np.zeros_like(p)]
                st[0] *= b1
                st[0] += (1 - b1) * g
                st[1] *= b2
                st[1] += (1 - b2) * g * g
                denom = np.sqrt(st[1]) / np.sqrt(1 - b2 ** t) + eps
                p -= (lr / (1 - b1 ** t)) * st[0] / denom


class Model(LearningRate):
    """A functional model: ``Model(inputs, outputs)`` with ``inputs``/``outputs`` tensors (or lists
    of them) from :func:`rnnrs.keras.Input` and layer calls. ``compile``/``fit``/``evaluate``/
    ``predict``/``save`` as :class:`Sequential`; several inputs are given as a list of arrays in the
    order of ``inputs``, several outputs come back as a list (training takes one output)."""

    def __init__(self, inputs: Any, outputs: Any, name: Optional[str] = None, *, seed: Optional[int] = None) -> None:
        self._single_in = not isinstance(inputs, (list, tuple))
        self._single_out = not isinstance(outputs, (list, tuple))
        self.inputs: List[KerasTensor] = _flat(inputs)
        self.outputs: List[KerasTensor] = _flat(outputs)
        for t in self.inputs + self.outputs:
            if not isinstance(t, KerasTensor):
                raise TypeError(f"Model: expected symbolic tensors as inputs and outputs, got {type(t).__name__}")
        for t in self.inputs:
            if not isinstance(t.node.layer, InputLayer):
                raise ValueError(f"Model: inputs: expected tensors made by Input(), got the output of {t.node.layer.name}")
        self._nodes = _collect(self.outputs)
        given = {id(t) for t in self.inputs}
        for node in self._nodes:
            if isinstance(node.layer, InputLayer) and id(node.outputs[0]) not in given:
                raise ValueError(f"Model: the outputs depend on input {node.layer.name!r}, which is not among the "
                                 f"model's inputs {[t.node.layer.name for t in self.inputs]}")
        self.name = name or "functional"
        self.seed = _init._STATE["seed"] if seed is None else int(seed)
        self.loss: Optional[str] = None
        self.metrics: List[str] = []
        self.optimizer: Any = None
        self.clipnorm: Optional[float] = None
        self._opt: Optional[_Optimizer] = None
        self._steps = 0
        self.stop_training = False
        self.history: Optional[History] = None

    # ------------------------------------------------------------------------------------- graph
    @property
    def layers(self) -> List[Layer]:
        """The layers, inputs first then in the order they were called (each once)."""
        seen: List[Layer] = [t.node.layer for t in self.inputs]
        for node in self._nodes:
            if node.layer not in seen:
                seen.append(node.layer)
        return seen

    @property
    def input(self) -> Any:
        return self.inputs[0] if self._single_in else list(self.inputs)

    @property
    def output(self) -> Any:
        return self.outputs[0] if self._single_out else list(self.outputs)

    def get_layer(self, name: str) -> Layer:
        for l in self.layers:
            if l.name == name:
                return l
        raise ValueError(f"get_layer: expected one of {[l.name for l in self.layers]}, got {name!r}")

    def _param_layers(self) -> List[Layer]:
        out: List[Layer] = []
        for l in self.layers:
            for s in l._sublayers():
                inner = s.layer if isinstance(s, TimeDistributed) else s
                if inner._params and inner not in out:
                    out.append(inner)
        return out

    def _run(self, xs: List[np.ndarray], training: bool, keep: bool) -> Tuple[List[np.ndarray], List[Any], Dict[int, Any]]:
        values: Dict[int, Tuple[np.ndarray, Optional[np.ndarray]]] = {}
        for t, a in zip(self.inputs, xs):
            values[id(t)] = (a, None)
        ctx: Dict[str, Any] = {"calls": {}, "step": self._steps, "training": training,
                               "rng": np.random.default_rng([self.seed, 31, self._steps])}
        caches: List[Any] = []
        for node in self._nodes:
            if isinstance(node.layer, InputLayer):
                continue
            ins = [values[id(t)] for t in node.inputs]
            outs, masks, cache = node.layer._forward([a for a, _ in ins], [m for _, m in ins[:node.n_main]] or [None],
                                                     training, ctx)
            for t, a, m in zip(node.outputs, outs, masks):
                values[id(t)] = (a, m)
            caches.append((node, cache) if keep else None)
        return [values[id(t)][0] for t in self.outputs], caches, values

    def _backward(self, caches: List[Any], d_out: np.ndarray, logits: bool) -> None:
        grads: Dict[int, np.ndarray] = {id(self.outputs[0]): d_out}
        first = True
        for node, cache in reversed(caches):
            douts = [grads.get(id(t)) for t in node.outputs]
            if all(d is None for d in douts):
                continue
            layer = node.layer
            pre = first and logits and node.outputs[0] is self.outputs[0]
            first = False
            dins = layer._backward(cache, douts, True) if pre else layer._backward(cache, douts)
            for t, d in zip(node.inputs, dins):
                if d is not None and not (isinstance(t.node.layer, InputLayer) and t.dtype == "int64"):
                    grads[id(t)] = grads[id(t)] + d if id(t) in grads else d

    # --------------------------------------------------------------------------------- compile
    def compile(self, optimizer: Any = "rmsprop", loss: Optional[str] = None, metrics: Optional[Sequence[str]] = None,
                clipnorm: Optional[float] = None, **kwargs: Any) -> None:
        """Keras' ``compile``: ``loss`` one of ``mse``, ``categorical_crossentropy``,
        ``sparse_categorical_crossentropy``, ``binary_crossentropy``; ``optimizer`` a name
        (``"rmsprop"``, ``"adam"``, ``"sgd"``, ``"adamw"``) or an optimizer object; ``metrics``
        ``["accuracy"]``; ``clipnorm`` clips the global gradient norm."""
        from ._sequential import _optimizer
        if kwargs:
            raise TypeError(f"compile: unexpected arguments {sorted(kwargs)}")
        loss = LOSS_ALIASES.get(loss, loss) if isinstance(loss, str) else loss
        if loss not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
        metrics = ["accuracy" if m == "acc" else m for m in (metrics or [])]
        for m in metrics:
            if m != "accuracy":
                raise ValueError(f"metrics: expected 'accuracy', got {m!r}")
        self.loss, self.metrics = loss, metrics
        self.optimizer = _optimizer(optimizer)
        self._opt = _Optimizer(self.optimizer)
        self.clipnorm = None if clipnorm is None else float(clipnorm)

    # ------------------------------------------------------------------------------------ data
    def _xs(self, x: Any) -> List[np.ndarray]:
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(self.inputs):
            raise ValueError(f"x: expected {len(self.inputs)} input array(s) (one per model input), got {len(xs)}")
        out = []
        n = None
        for t, a in zip(self.inputs, xs):
            a = np.asarray(a)
            name = t.node.layer.name
            if a.dtype == object:
                raise TypeError(f"x ({name}): expected a numeric array, got objects")
            want = (len(a),) + t.shape[1:] if a.ndim == len(t.shape) else None
            if want is None or any(w is not None and w != g for w, g in zip(want, a.shape)):
                raise ValueError(f"x ({name}): expected shape {('N',) + tuple('T' if s is None else s for s in t.shape[1:])}, "
                                 f"got {a.shape}")
            if n is not None and len(a) != n:
                raise ValueError(f"x ({name}): expected {n} examples (as the first input), got {len(a)}")
            n = len(a)
            if t.dtype == "int64":
                if not np.issubdtype(a.dtype, np.integer):
                    raise TypeError(f"x ({name}): expected integer token ids, got {a.dtype}")
                out.append(a.astype(np.int64))
            else:
                out.append(np.ascontiguousarray(a, dtype=t.dtype))
        return out

    def _y(self, y: Any) -> np.ndarray:
        y = np.asarray(y)
        if y.dtype == object:
            raise TypeError("y: expected a numeric array, got objects")
        if self.loss == "sparse_categorical_crossentropy" and not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.equal(np.mod(y, 1), 0)):
                raise TypeError(f"y: expected integer class ids for sparse_categorical_crossentropy, got {y.dtype}")
            y = y.astype(np.int64)
        return y

    def _logits(self) -> bool:
        layer = self.outputs[0].node.layer
        dense = layer.layer if isinstance(layer, TimeDistributed) else layer
        if not isinstance(dense, Dense):
            return False
        return (self.loss in ("categorical_crossentropy", "sparse_categorical_crossentropy") and dense.activation == "softmax") \
            or (self.loss == "binary_crossentropy" and dense.activation == "sigmoid")

    def _logs(self, loss: float, correct: float, count: float) -> Dict[str, float]:
        logs = {"loss": loss / max(count, 1)}
        if "accuracy" in self.metrics:
            logs["accuracy"] = correct / max(count, 1)
        return logs

    # -------------------------------------------------------------------------------- training
    def _train_batch(self, xs: List[np.ndarray], y: np.ndarray, w: Optional[np.ndarray]) -> Tuple[float, float, int]:
        if self._opt is None or self.loss is None:
            raise ValueError("fit: call compile(optimizer=..., loss=...) first")
        if len(self.outputs) != 1:
            raise ValueError(f"fit: expected a model with one output to train, got {len(self.outputs)}")
        players = self._param_layers()
        for l in players:
            l._zero_grads()
        outs, caches, values = self._run(xs, True, True)
        mask = values[id(self.outputs[0])][1]
        logits = self._logits()
        loss, correct, count, g = loss_and_grad(self.loss, outs[0], y, mask, w, logits)
        if not np.isfinite(loss):
            raise _nonfinite(f"training step {self._steps + 1}: loss {loss}; parameters left unchanged")
        self._backward(caches, g, logits)
        params: Dict[str, np.ndarray] = {}
        grads: Dict[str, np.ndarray] = {}
        for i, l in enumerate(players):
            if isinstance(l, _RecurrentLayer):
                l._collect_grads()
            if not l.trainable:
                continue
            for k in l._params:
                params[f"{i}.{k}"], grads[f"{i}.{k}"] = l._params[k], l._grads[k]
        norm = float(np.sqrt(sum(float((g_ * g_).sum()) for g_ in grads.values())))
        if not np.isfinite(norm):
            raise _nonfinite(f"training step {self._steps + 1}: gradient norm {norm}; parameters left unchanged")
        if self.clipnorm is not None and norm > self.clipnorm:
            scale = self.clipnorm / (norm + 1e-6)
            grads = {k: v * scale for k, v in grads.items()}
        assert self._opt is not None
        self._opt.cfg = self.optimizer
        self._opt.step(params, grads)
        self._steps += 1
        return loss, correct, count

    def train_on_batch(self, x: Any, y: Any, sample_weight: Any = None, class_weight: Any = None) -> Dict[str, float]:
        xs, y = self._xs(x), self._y(y)
        w = sample_weights(len(y), y, sample_weight, class_weight, self.loss != "mse")
        loss, correct, count = self._train_batch(xs, y, w)
        return self._logs(loss * count, correct, count)

    def fit(self, x: Any = None, y: Any = None, batch_size: Optional[int] = None, epochs: int = 1, verbose: Any = "auto",
            callbacks: Optional[Sequence[Any]] = None, validation_split: float = 0.0, validation_data: Any = None,
            shuffle: bool = True, class_weight: Any = None, sample_weight: Any = None, initial_epoch: int = 0,
            file: Any = None) -> History:
        """Keras' ``fit`` (``batch_size`` 32 by default, ``validation_split`` holds out the last
        fraction before shuffling, ``callbacks`` Keras callbacks or ``f(epoch, logs)`` callables)."""
        epochs, batch_size = pos_int("epochs", epochs), pos_int("batch_size", 32 if batch_size is None else batch_size)
        verbose = 1 if verbose == "auto" else int(verbose)
        xs, y = self._xs(x), self._y(y)
        n = len(xs[0])
        if len(y) != n:
            raise ValueError(f"y: expected {n} examples (as many as x), got {len(y)}")
        w = sample_weights(n, y, sample_weight, class_weight, self.loss != "mse")
        val, first = None, 0
        if validation_data is not None:
            vd = tuple(validation_data)
            val = (self._xs(vd[0]), self._y(vd[1]), None if len(vd) < 3 else np.asarray(vd[2], np.float64))
        elif validation_split:
            first = split = split_validation(n, validation_split)
            val = ([a[split:] for a in xs], y[split:], None if w is None else w[split:])
            xs, y, w = [a[:split] for a in xs], y[:split], None if w is None else w[:split]

        def step(xb: List[np.ndarray], yb: np.ndarray, extras: Dict[str, Any], rows: Any) -> Tuple[float, float, float]:
            return self._train_batch(xb, yb, extras["w"])

        def evaluate(vx: List[np.ndarray], vy: np.ndarray, vw: Any, first: int = 0) -> Dict[str, float]:
            return self._evaluate(vx, vy, vw, batch_size)

        return run_fit(self, xs, y, {"w": w}, epochs=epochs, batch_size=batch_size, val=val, val_first=first,
                       shuffle=shuffle, verbose=verbose, callbacks=callbacks, stream=file, step=step,
                       evaluate=evaluate, seed=self.seed)

    def _evaluate(self, xs: List[np.ndarray], y: np.ndarray, w: Optional[np.ndarray], batch_size: int) -> Dict[str, float]:
        if self.loss is None:
            raise ValueError("evaluate: call compile(optimizer=..., loss=...) first")
        if len(y) != len(xs[0]):
            raise ValueError(f"y: expected {len(xs[0])} examples (as many as x), got {len(y)}")
        tot = cor = cnt = 0.0
        for s in range(0, len(y), batch_size):
            sl = slice(s, s + batch_size)
            outs, _, values = self._run([a[sl] for a in xs], False, False)
            mask = values[id(self.outputs[0])][1]
            loss, c, k, _ = loss_and_grad(self.loss, outs[0], y[sl], mask, None if w is None else w[sl], False)
            tot, cor, cnt = tot + loss * k, cor + c, cnt + k
        return self._logs(tot, cor, cnt)

    def evaluate(self, x: Any = None, y: Any = None, batch_size: Optional[int] = None, verbose: Any = 0,
                 sample_weight: Any = None, return_dict: bool = False) -> Any:
        """Loss (and metrics) in inference mode: a float, ``[loss, metric...]``, or a dict."""
        xs, y = self._xs(x), self._y(y)
        w = sample_weights(len(y), y, sample_weight, None, True)
        logs = self._evaluate(xs, y, w, pos_int("batch_size", 32 if batch_size is None else batch_size))
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        if return_dict:
            return logs
        return logs["loss"] if len(logs) == 1 else list(logs.values())

    def predict(self, x: Any, batch_size: Optional[int] = None, verbose: Any = 0) -> Any:
        """Outputs in inference mode (a list of arrays for several outputs)."""
        xs = self._xs(x)
        bs = pos_int("batch_size", 32 if batch_size is None else batch_size)
        parts: List[List[np.ndarray]] = []
        for s in range(0, len(xs[0]), bs):
            outs, _, _ = self._run([a[s:s + bs] for a in xs], False, False)
            parts.append(outs)
        res = [np.concatenate([p[i] for p in parts], axis=0) for i in range(len(self.outputs))]
        return res[0] if self._single_out and len(res) == 1 else res

    def predict_on_batch(self, x: Any) -> Any:
        return self.predict(x, batch_size=len(self._xs(x)[0]))

    def __call__(self, x: Any) -> Any:
        if any(isinstance(t, KerasTensor) for t in _flat(x)):
            raise TypeError("Model: calling a model on tensors (nesting models) is not supported; call its layers")
        return self.predict(x)

    def reset_states(self) -> None:
        """Forget the carried state of every ``stateful=True`` layer."""
        for l in self.layers:
            if hasattr(l, "reset_states"):
                l.reset_states()

    # ---------------------------------------------------------------------------------- weights
    def get_weights(self) -> List[np.ndarray]:
        """Keras' flat list: every layer's ``get_weights()`` in :attr:`layers` order."""
        return [w for l in self.layers for w in l.get_weights()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        weights = list(weights)
        want = sum(len(l.get_weights()) for l in self.layers)
        if len(weights) != want:
            raise ValueError(f"set_weights: expected a list of {want} arrays (as get_weights()), got {len(weights)}")
        i = 0
        for l in self.layers:
            k = len(l.get_weights())
            if k:
                l.set_weights(weights[i:i + k])
            i += k

    def state_dict(self) -> Dict[str, np.ndarray]:
        """``{"layers.{i}.{PyTorch name}": array}`` copies of every parameter, ``i`` indexing
        :attr:`layers`."""
        return layers_state(self.layers)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_layers_state(self.layers, dict(state))

    def load_weights(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Replace the weights from a file :meth:`save` (or ``ModelCheckpoint``) wrote for a model
        of the same layers."""
        from ..checkpoint import read_tensors
        tensors, _ = read_tensors(path)
        self.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})

    def _weights_copy(self) -> Dict[str, np.ndarray]:
        return self.state_dict()

    def _set_weights_copy(self, w: Mapping[str, np.ndarray]) -> None:
        self.load_state_dict(w)

    def count_params(self) -> int:
        """Keras' count: the sizes of every ``get_weights()`` array (one LSTM/SimpleRNN bias)."""
        return int(sum(w.size for w in self.get_weights()))

    def summary(self, file: Any = None) -> None:
        out = file or sys.stdout
        print(f'Model: "{self.name}"', file=out)
        print(f"{'Layer (type)':<40}{'Output shape':<26}{'Params':>10}", file=out)
        for l in self.layers:
            shape = l._nodes[0].outputs[0].shape if l._nodes and l._nodes[0].outputs else ()
            print(f"{l.name + ' (' + type(l).__name__ + ')':<40}{str(shape):<26}{l.count_params():>10}", file=out)
        print(f"Total params: {self.count_params()}", file=out)

    # ----------------------------------------------------------------------------------- saving
    def get_config(self) -> Dict[str, Any]:
        layer_ids = {id(l): i for i, l in enumerate(self.layers)}
        nodes: List[Dict[str, Any]] = []
        index: Dict[int, int] = {}
        for node in self._nodes:
            index[node.id] = len(nodes)
            nodes.append({"layer": layer_ids[id(node.layer)], "n_main": node.n_main,
                          "inputs": [[index[t.node.id], t.index] for t in node.inputs]})
        return {
            "format": FORMAT, "name": self.name, "seed": self.seed,
            "layers": [{"class": type(l).__name__, "name": l.name, "dtype": l._float_dtype().name,
                        "config": l.get_config()} for l in self.layers],
            "nodes": nodes,
            "inputs": [index[t.node.id] for t in self.inputs], "outputs": [[index[t.node.id], t.index] for t in self.outputs],
            "single": [self._single_in, self._single_out],
            "compile": None if self.loss is None else {"loss": self.loss, "metrics": self.metrics, "clipnorm": self.clipnorm,
                                                      "optimizer": self.optimizer.get_config()},
        }

    def save(self, path: Union[str, "os.PathLike[str]"], include_optimizer: bool = True, overwrite: bool = True) -> None:
        """Write the graph, the weights and (by default) the optimizer state to ``path``: one
        safetensors file with the JSON configuration in its metadata (atomic; no pickle). Keras'
        ``.keras``/``.h5`` names are accepted; the content is rnnrs' format either way."""
        from ..checkpoint import write_tensors
        tensors = {f"model.{k}": v for k, v in self.state_dict().items()}
        bad = [k for k, v in tensors.items() if not np.all(np.isfinite(v))]
        if bad:
            raise _nonfinite(f"save: expected finite weights, got NaN/Inf in {bad[0]}; nothing was written to {os.fspath(path)}")
        meta = {"format": FORMAT, "config": json.dumps(self.get_config())}
        if include_optimizer and self._opt is not None:
            for k, st in self._opt.state.items():
                for j, a in enumerate(st):
                    tensors[f"optimizer.{k}.{j}"] = a
            meta["optimizer_steps"] = str(self._opt.steps)
            meta["steps"] = str(self._steps)
        write_tensors(path, tensors, meta)

    save_weights = save


def _nonfinite(msg: str) -> Exception:
    from .._rnnrs import NonFiniteError
    return NonFiniteError(msg)


def model_from(tensors: Mapping[str, np.ndarray], meta: Mapping[str, str]) -> Model:
    """Rebuild a :class:`Model` that :meth:`Model.save` wrote."""
    from ._layers import Input
    cfg = json.loads(meta["config"])
    layers: List[Any] = []  # (a Layer, or an InputLayer's entry until Input() below makes it)
    for entry in cfg["layers"]:
        if entry["class"] == "InputLayer":
            layers.append(entry)
            continue
        layer = from_config(entry)
        layer.name = entry["name"]
        layer._dtype = np.dtype(entry["dtype"])
        layers.append(layer)
    made: List[List[KerasTensor]] = []
    for nd in cfg["nodes"]:
        spec = layers[nd["layer"]]
        if isinstance(spec, dict):
            c = spec["config"]
            t = Input(shape=tuple(c["shape"]), dtype=c["dtype"], name=spec["name"])
            layers[nd["layer"]] = t.node.layer
            made.append([t])
            continue
        ins = [made[i][j] for i, j in nd["inputs"]]
        main, states = ins[:nd["n_main"]], ins[nd["n_main"]:]
        out = spec(main[0] if len(main) == 1 else main, initial_state=states or None)
        made.append(_flat(out))
    single_in, single_out = cfg["single"]
    ins = [made[i][0] for i in cfg["inputs"]]
    outs = [made[i][j] for i, j in cfg["outputs"]]
    model = Model(ins[0] if single_in else ins, outs[0] if single_out else outs, name=cfg["name"], seed=cfg["seed"])
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    comp = cfg["compile"]
    if comp is not None:
        model.compile(optimizer=comp["optimizer"], loss=comp["loss"], metrics=comp["metrics"], clipnorm=comp["clipnorm"])
        if "optimizer_steps" in meta and model._opt is not None:
            for k, v in tensors.items():
                if k.startswith("optimizer."):
                    pname, j = k[len("optimizer."):].rsplit(".", 1)
                    st = model._opt.state.setdefault(pname, [])
                    while len(st) <= int(j):
                        st.append(None)  # type: ignore[arg-type]
                    st[int(j)] = v.copy()
            model._opt.steps = int(meta["optimizer_steps"])
            model._steps = int(meta["steps"])
    return model

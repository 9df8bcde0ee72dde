"""The training loop both model classes share: epochs of shuffled mini-batches, validation,
Keras' callbacks (plain ``f(epoch, logs)`` callables too), ``class_weight``/``sample_weight``,
``model.stop_training``, the progress bar and :class:`History`."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np


class History:
    """What ``fit`` returns: ``history`` maps ``"loss"``, ``"accuracy"``, ``"val_loss"``,
    ``"val_accuracy"`` to one value per epoch."""

    def __init__(self) -> None:
        self.history: Dict[str, List[float]] = {}
        self.epoch: List[int] = []
        self.params: Dict[str, Any] = {}

    def _add(self, epoch: int, logs: Mapping[str, float]) -> None:
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))


class _Progress:
    def __init__(self, total: int, epoch: int, epochs: int, verbose: int, stream: Any) -> None:
        self.total, self.verbose, self.stream = total, verbose, stream
        self.start = time.perf_counter()
        self.last = 0.0
        self.width = 0
        if verbose:
            print(f"Epoch {epoch}/{epochs}", file=stream)

    def update(self, done: int, logs: Mapping[str, float], final: bool = False) -> None:
        now = time.perf_counter()
        if self.verbose != 1 or (not final and now - self.last < 0.1):
            return
        self.last = now
        width = 30
        fill = width * done // max(self.total, 1)
        bar = "=" * max(fill - 1, 0) + (">" if fill < width else "=") + "." * (width - fill)
        text = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
        line = f"{done}/{self.total} [{bar}] - {now - self.start:.1f}s - {text}"
        self.stream.write("\r" + line.ljust(self.width))
        self.width = max(self.width, len(line))
        if final:
            self.stream.write("\n")
        self.stream.flush()

    def end(self, logs: Mapping[str, float]) -> None:
        if self.verbose == 2:
            text = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            print(f"{self.total}/{self.total} - {time.perf_counter() - self.start:.1f}s - {text}", file=self.stream)


class LearningRate:
    """``model.learning_rate``: the optimizer's learning rate, settable (``ReduceLROnPlateau``
    does); moments are kept. Subclasses apply a change with ``_apply_lr``."""

    optimizer: Any

    @property
    def learning_rate(self) -> float:
        if self.optimizer is None:
            raise ValueError("learning_rate: call compile() first")
        return float(self.optimizer.learning_rate)

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        if self.optimizer is None:
            raise ValueError("learning_rate: call compile() first")
        value = float(value)
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"learning_rate: expected a finite number >= 0, got {value}")
        self.optimizer.learning_rate = value
        self._apply_lr(value)

    def _apply_lr(self, value: float) -> None:
        pass


def pos_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
    return int(v)


def sample_weights(n: int, y: np.ndarray, sample_weight: Any, class_weight: Any, sparse_or_onehot: bool) -> Optional[np.ndarray]:
    """Per-example loss weights ``(n,)`` from Keras' ``sample_weight`` and/or ``class_weight``
    (``{class: weight}``, by the example's class: its id, its one-hot arg-max, or its 0/1 label)."""
    w = None
    if sample_weight is not None:
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.shape != (n,):
            raise ValueError(f"sample_weight: expected shape ({n},) (one weight per example), got {w.shape}")
        if not np.all(np.isfinite(w)) or (w < 0).any():
            raise ValueError("sample_weight: expected finite weights >= 0")
    if class_weight is not None:
        if not isinstance(class_weight, Mapping):
            raise TypeError(f"class_weight: expected a dict {{class: weight}}, got {type(class_weight).__name__}")
        if y.ndim > 2 or (y.ndim == 2 and not sparse_or_onehot):
            raise ValueError(f"class_weight: expected one class per example (targets (N,) or (N, C) one-hot, "
                             f"or (N, 1) labels), got targets of shape {y.shape}")
        if y.ndim == 2 and y.shape[1] > 1:
            cls = np.argmax(y, axis=1)
        else:
            cls = np.rint(y.reshape(n)).astype(np.int64)
        cw = np.array([float(class_weight.get(int(c), 1.0)) for c in cls])
        w = cw if w is None else w * cw
    return w


def callback_list(callbacks: Optional[Sequence[Any]], model: Any) -> List[Any]:
    from ..callbacks import Callback, LambdaCallback
    out = []
    for cb in callbacks or []:
        if isinstance(cb, Callback):
            out.append(cb)
        elif callable(cb):  # a plain f(epoch, logs), called after each epoch
            out.append(LambdaCallback(on_epoch_end=cb))
        else:
            raise TypeError(f"callbacks: expected rnnrs.keras.callbacks.Callback objects or callables "
                            f"f(epoch, logs), got {type(cb).__name__}")
    for cb in out:
        cb.set_model(model)
    return out


def run_fit(model: Any, xs: List[np.ndarray], y: np.ndarray, extras: Dict[str, Optional[np.ndarray]], *,
            epochs: int, batch_size: int, val: Optional[Tuple[Any, ...]], val_first: int, shuffle: bool,
            verbose: int, callbacks: Optional[Sequence[Any]], stream: Any,
            step: Callable[..., Tuple[float, float, float]],
            evaluate: Callable[..., Dict[str, float]], seed: int) -> History:
    """The epochs: ``step(xs_b, y_b, extras_b)`` → ``(loss, correct, count)`` of one batch;
    ``evaluate(*val, first=)`` → validation logs."""
    n = len(y)
    stream = stream or sys.stdout
    steps = math.ceil(n / batch_size)
    history = History()
    history.params = {"epochs": epochs, "steps": steps, "verbose": verbose}
    cbs = callback_list(callbacks, model)
    model.stop_training = False
    model.history = history
    for cb in cbs:
        cb.on_train_begin({})
    logs: Dict[str, float] = {}
    for epoch in range(epochs):
        for cb in cbs:
            cb.on_epoch_begin(epoch, {})
        order = np.random.default_rng([seed, 7, epoch]).permutation(n) if shuffle else np.arange(n)
        bar = _Progress(steps, epoch + 1, epochs, verbose, stream)
        tot_loss = tot_correct = tot_count = 0.0
        for s in range(steps):
            idx = order[s * batch_size:(s + 1) * batch_size]
            loss, correct, count = step([a[idx] for a in xs], y[idx],
                                        {k: None if v is None else v[idx] for k, v in extras.items()}, idx)
            tot_loss += loss * count
            tot_correct += correct
            tot_count += count
            bar.update(s + 1, model._logs(tot_loss, tot_correct, tot_count), final=False)
        logs = model._logs(tot_loss, tot_correct, tot_count)
        if val is not None:
            vl = evaluate(*val, first=val_first)
            logs.update({f"val_{k}": v for k, v in vl.items()})
        bar.update(steps, logs, final=True)
        bar.end(logs)
        history._add(epoch, logs)
        for cb in cbs:
            cb.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    for cb in cbs:
        cb.on_train_end(logs)
    return history


def split_validation(n: int, validation_split: float) -> int:
    """The first validation row of Keras' ``validation_split`` (the last fraction, before shuffling)."""
    if not 0.0 < validation_split < 1.0:
        raise ValueError(f"validation_split: expected a float in (0, 1), got {validation_split}")
    split = int(n * (1.0 - validation_split))
    if split < 1 or split >= n:
        raise ValueError(f"validation_split: {validation_split} leaves no training or no validation data")
    return split

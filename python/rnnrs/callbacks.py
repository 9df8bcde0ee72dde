"""Keras' training callbacks for :meth:`rnnrs.keras.Sequential.fit`: :class:`Callback`,
:class:`EarlyStopping`, :class:`ModelCheckpoint`, :class:`ReduceLROnPlateau` (also reachable as
``rnnrs.keras.callbacks``).

Names, arguments and defaults are Keras'. ``fit`` calls ``set_model``, then ``on_train_begin``,
per epoch ``on_epoch_begin``/``on_epoch_end(epoch, logs)`` (``logs`` holds ``loss``, ``accuracy``,
``val_loss``, ... of that epoch) and at the end ``on_train_end``; a callback that sets
``model.stop_training = True`` ends training after the current epoch.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau", "LambdaCallback"]


class Callback:
    """Base class: override the hooks you need. ``self.model`` is the model being trained."""

    model: Any = None

    def set_model(self, model: Any) -> None:
        self.model = model

    def on_train_begin(self, logs: Optional[Mapping[str, float]] = None) -> None:
        pass

    def on_train_end(self, logs: Optional[Mapping[str, float]] = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: Optional[Mapping[str, float]] = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: Optional[Mapping[str, float]] = None) -> None:
        pass


class LambdaCallback(Callback):
    """A callback from plain functions, as in Keras (``on_epoch_end=lambda epoch, logs: ...``)."""

    def __init__(self, on_epoch_begin: Any = None, on_epoch_end: Any = None, on_train_begin: Any = None,
                 on_train_end: Any = None) -> None:
        for name, f in (("on_epoch_begin", on_epoch_begin), ("on_epoch_end", on_epoch_end),
                        ("on_train_begin", on_train_begin), ("on_train_end", on_train_end)):
            if f is not None:
                if not callable(f):
                    raise TypeError(f"{name}: expected a callable, got {type(f).__name__}")
                setattr(self, name, f)


def _mode(name: str, mode: str, monitor: str) -> str:
    """``"min"``/``"max"`` from Keras' ``mode`` (``"auto"``: max for accuracies, else min)."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{name}: mode: expected 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if monitor.endswith("acc") or monitor.endswith("accuracy") else "min"
    return mode


def _nonneg(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


class _Monitor(Callback):
    """Tracks the best value of ``monitor`` (improvement = better by more than ``min_delta``)."""

    def __init__(self, who: str, monitor: str, mode: str, min_delta: float) -> None:
        if not isinstance(monitor, str):
            raise TypeError(f"{who}: monitor: expected a metric name such as 'val_loss', got {monitor!r}")
        self.monitor = monitor
        self.mode = _mode(who, mode, monitor)
        self.min_delta = _nonneg(f"{who}: min_delta", min_delta)
        self._who = who
        self.best = math.inf if self.mode == "min" else -math.inf

    def _value(self, logs: Optional[Mapping[str, float]]) -> Optional[float]:
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(f"{self._who}: monitor {self.monitor!r}: expected one of the epoch's metrics "
                             f"{sorted(logs)}, got none by that name (validation metrics need validation data)")
        v = float(logs[self.monitor])
        return v if math.isfinite(v) else None

    def _improved(self, value: float, reference: float) -> bool:
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta


class EarlyStopping(_Monitor):
    """Stop training when ``monitor`` has not improved for ``patience`` epochs (Keras' defaults:
    ``monitor="val_loss"``, ``patience=0``). ``restore_best_weights`` puts back the weights of the
    best epoch when it stops (or at the end). ``stopped_epoch`` is the epoch it stopped at (0: never)."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: Optional[float] = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0) -> None:
        super().__init__("EarlyStopping", monitor, mode, min_delta)
        self.patience = int(_nonneg("EarlyStopping: patience", patience))
        self.start_from_epoch = int(_nonneg("EarlyStopping: start_from_epoch", start_from_epoch))
        self.verbose, self.baseline = int(verbose), None if baseline is None else float(baseline)
        self.restore_best_weights = bool(restore_best_weights)

    def on_train_begin(self, logs: Optional[Mapping[str, float]] = None) -> None:
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_weights: Optional[Dict[str, np.ndarray]] = None

    def on_epoch_end(self, epoch: int, logs: Optional[Mapping[str, float]] = None) -> None:
        value = self._value(logs)
        if epoch < self.start_from_epoch:
            return
        reference = self.best
        if self.best_weights is None and self.baseline is not None:
            reference = self.baseline  # the first epoch must beat the baseline too
        if value is not None and self._improved(value, reference):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model._weights_copy()
            return
        self.wait += 1
        if self.wait >= self.patience and epoch > 0:  # (Keras: `patience` epochs without improvement)
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.verbose:
                print(f"Epoch {epoch + 1}: early stopping", file=sys.stderr)

    def on_train_end(self, logs: Optional[Mapping[str, float]] = None) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.",
                      file=sys.stderr)
            self.model._set_weights_copy(self.best_weights)


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for ``patience``
    epochs, then wait ``cooldown`` epochs; never below ``min_lr`` (Keras' defaults). The optimizer's
    moments are kept."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0) -> None:
        super().__init__("ReduceLROnPlateau", monitor, mode, min_delta)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0.0 < factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor: expected a number in (0, 1), got {factor!r}")
        self.factor = float(factor)
        self.patience = int(_nonneg("ReduceLROnPlateau: patience", patience))
        self.cooldown = int(_nonneg("ReduceLROnPlateau: cooldown", cooldown))
        self.min_lr = _nonneg("ReduceLROnPlateau: min_lr", min_lr)
        self.verbose = int(verbose)

    def on_train_begin(self, logs: Optional[Mapping[str, float]] = None) -> None:
        self.wait, self.cooldown_counter = 0, 0
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch: int, logs: Optional[Mapping[str, float]] = None) -> None:
        value = self._value(logs)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if value is not None and self._improved(value, self.best):
            self.best, self.wait = value, 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait >= self.patience:
            old = self.model.learning_rate
            new = max(old * self.factor, self.min_lr)
            if new < old:
                self.model.learning_rate = new
                if self.verbose:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new:g}.", file=sys.stderr)
                self.cooldown_counter, self.wait = self.cooldown, 0


class ModelCheckpoint(_Monitor):
    """Save the model after every epoch (or only when ``monitor`` improved, ``save_best_only``) to
    ``filepath``, which may name the epoch and metrics (``"ckpt-{epoch:02d}-{val_loss:.3f}.safetensors"``,
    ``epoch`` counting from 1 as in Keras). The file is rnnrs' safetensors model file (no pickle),
    loadable with :func:`rnnrs.keras.load_model`; ``save_weights_only`` leaves the optimizer state out."""

    def __init__(self, filepath: Union[str, "os.PathLike[str]"], monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 save_freq: str = "epoch", initial_value_threshold: Optional[float] = None) -> None:
        super().__init__("ModelCheckpoint", monitor, mode, 0.0)
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(f"ModelCheckpoint: filepath: expected a path, got {type(filepath).__name__}")
        if save_freq != "epoch":
            raise ValueError(f"ModelCheckpoint: save_freq: expected 'epoch', got {save_freq!r}")
        self.filepath = os.fspath(filepath)
        self.verbose, self.save_best_only = int(verbose), bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        if initial_value_threshold is not None:
            self.best = float(initial_value_threshold)

    def on_epoch_end(self, epoch: int, logs: Optional[Mapping[str, float]] = None) -> None:
        logs = dict(logs or {})
        if self.save_best_only:
            value = self._value(logs)
            if value is None or not self._improved(value, self.best):
                return
            self.best = value
        try:
            path = self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"ModelCheckpoint: filepath {self.filepath!r}: expected fields among "
                             f"'epoch' and {sorted(logs)}, got {e}") from None
        self.model.save(path, include_optimizer=not self.save_weights_only)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved model to {path}", file=sys.stderr)

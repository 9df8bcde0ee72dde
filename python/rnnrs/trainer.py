"""Train a language model: a config dataclass and one readable loop, :meth:`Trainer.run`.

For a student, three lines::

    import rnnrs
    result = rnnrs.train(open("timemachine.txt").read(), epochs=5, seq_len=35, hidden=256, out="runs/tm")
    print(result.summary["val_ppl"], result.sample("time traveller", 50))

``result.model`` and ``result.tokenizer`` are the trained model and its tokenizer; ``result.history``
holds the per-step losses and the validation perplexities; with ``out=`` the run directory holds
``model.safetensors`` (load it with :meth:`rnnrs.LanguageModel.load`), ``checkpoint.safetensors``
(``rnnrs.train(..., resume=True)`` continues it bit-identically) and ``curve.png`` (with matplotlib).
The command line does the same: ``python -m rnnrs train --corpus FILE --out DIR``.

What one training step does (see :meth:`Trainer.run`): set the learning rate of the schedule, take
the next ``(B, T)`` batch of the epoch, call :meth:`LanguageModel.train_step` (forward, loss, BPTT,
gradient clipping and the optimizer update, in Rust), carry the returned state to the next batch if
the sampling scheme is sequential, then validate, preview, checkpoint and log on their schedules.

No lost work: checkpoints are single files replaced atomically; SIGINT (Ctrl-C) and SIGTERM finish
the current step, write a checkpoint and return (a second Ctrl-C aborts at once, keeping the last
complete checkpoint); a non-finite loss stops (or skips the batch) with a message naming the step,
and a checkpoint is never written with NaN/Inf weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import _rnnrs
from ._rnnrs import NonFiniteError
from .checkpoint import (CHECKPOINT_FILE, MODEL_FILE, CheckpointError, load_checkpoint, save_checkpoint,
                         save_model)
from .dataset import LMBatches, min_corpus_tokens, split_train_val
from .generate import LyricGenerator, UnknownTokenWarning
from .layers import INITS
from .model import CELLS, LanguageModel
from .corpus import corpus_files, join_documents, split_documents
from .tokenizer import CharTokenizer, WordTokenizer, _Tokenizer

__all__ = ["TrainConfig", "Trainer", "TrainResult", "History", "ConfigError", "TrainingError", "StopTraining",
           "train", "read_corpus", "prepare_text", "evaluate_ids", "lr_schedule", "ConsoleLogger", "JsonLogger"]

Event = Dict[str, Any]
Callback = Callable[[Event], Any]

PLOT_FILE = "curve.png"
#: Consecutive non-finite steps after which ``on_nonfinite="skip"`` gives up.
MAX_CONSECUTIVE_SKIPS = 10
#: Epochs when neither ``epochs`` nor ``steps`` is given.
DEFAULT_EPOCHS = 10


class ConfigError(ValueError):
    """A user error in the configuration or the data: bad option value, unreadable or too short
    corpus, a checkpoint that does not match. The message says what was expected and what was got."""


class TrainingError(RuntimeError):
    """Training could not finish its work (e.g. the final checkpoint could not be written)."""


class StopTraining(Exception):
    """Raise from a callback to end training gracefully (a checkpoint is written as at the end)."""


# ============================================================================================ config
@dataclass
class TrainConfig:
    """Everything that defines a training run (printed at the start, stored in the checkpoint).

    ``embed=None`` feeds one-hot vectors (the d2l book's models). Exactly one of ``epochs`` and
    ``steps`` may be set; with neither, ``epochs=10``. ``val_every``/``sample_every``: ``None`` =
    at the end of every epoch, ``0`` = never (validation still runs once at the end), ``N`` = every
    N steps. ``checkpoint_every``: every N steps (``0`` = only at the end); checkpoints are written
    only when ``out`` is set. ``patience``: stop after this many validations without a new best.
    Schedules: ``"constant"``, ``"cosine"`` (from ``lr`` down to ``min_lr`` at the last step) or
    ``"step"`` (multiply by ``decay_gamma`` every ``decay_every`` steps, default a third of the
    run), each after ``warmup`` steps of linear warm-up.
    """

    # data
    corpus: Optional[Any] = None  # a path, or a list of files and folders (see rnnrs.corpus)
    out: Optional[str] = None
    level: str = "char"  # "char", "word" or "bpe"
    tokenizer_file: Optional[str] = None  # bpe: a Hugging Face tokenizer.json instead of fitting one
    bpe_vocab: Optional[int] = None  # bpe: the vocabulary to fit (default 2000)
    lower: bool = False
    letters_only: bool = False
    newlines_as_spaces: bool = False
    max_chars: Optional[int] = None
    min_freq: int = 1
    max_vocab: Optional[int] = None
    val_fraction: float = 0.05
    # model
    cell: str = "lstm"
    embed: Optional[int] = 128
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.1
    dtype: str = "float32"
    init: str = "pytorch"
    recurrent_init: Optional[str] = None
    init_std: float = 0.01
    forget_bias: Optional[float] = None
    embed_dropout: float = 0.0
    locked_dropout: float = 0.0
    weight_drop: float = 0.0
    tie_weights: bool = False
    init_from: Optional[str] = None  # a model directory or file, or "builtin": fine-tune it
    # batches and run length
    seq_len: int = 64
    batch_size: int = 32
    sampling: str = "random"
    window_offset: str = "random"
    epochs: Optional[int] = None
    steps: Optional[int] = None
    # optimizer and schedule
    optimizer: str = "adam"
    lr: float = 2e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: int = 0
    min_lr: float = 0.0
    decay_every: Optional[int] = None
    decay_gamma: float = 0.1
    clip: Optional[float] = 1.0
    # what happens along the way
    val_every: Optional[int] = None
    sample_every: Optional[int] = None
    sample_prefix: Optional[str] = None
    sample_length: int = 100
    sample_temperature: float = 0.8
    checkpoint_every: int = 200
    log_every: int = 10
    patience: Optional[int] = None
    on_nonfinite: str = "stop"
    seed: int = 0
    # output and run control (not part of what defines the run)
    save_dtype: Optional[str] = None
    plot: bool = True
    json: bool = False
    quiet: bool = False
    resume: bool = False
    overwrite: bool = False

    def validate(self) -> "TrainConfig":
        """Check every field; raise :class:`ConfigError` naming the field, what was expected and
        what was got. Returns ``self``."""
        def fail(name: str, expected: str) -> None:
            raise ConfigError(f"{name}: expected {expected}, got {getattr(self, name)!r}")

        def integer(name: str, minimum: int, optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
                fail(name, f"an integer >= {minimum}" + (" or None" if optional else ""))
            if v >= 2**63:
                fail(name, f"an integer in [{minimum}, 2**63)")
            setattr(self, name, int(v))  # NumPy scalars become plain ints (JSON in checkpoints)

        def real(name: str, lo: float, hi: float = math.inf, lo_open: bool = False, hi_open: bool = True,
                 optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            ok = not isinstance(v, bool) and isinstance(v, (int, float, np.floating, np.integer))
            ok = ok and math.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
            if not ok:
                lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
                fail(name, f"a finite number in {lb}{lo:g}, {hi:g}{rb}" + (" or None" if optional else ""))
            if isinstance(v, np.generic):
                setattr(self, name, v.item())

        def choice(name: str, options: Sequence[Any]) -> None:
            if getattr(self, name) not in options:
                fail(name, "one of " + ", ".join(repr(o) for o in options))

        def boolean(name: str) -> None:
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                fail(name, "True or False")
            setattr(self, name, bool(getattr(self, name)))

        for name in ("out", "sample_prefix", "tokenizer_file", "init_from"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, (str, os.PathLike)):
                fail(name, "a string or None")
        if self.init_from is not None and os.fspath(self.init_from) != "builtin":
            self.init_from = os.path.abspath(os.fspath(self.init_from))
        if isinstance(self.corpus, (list, tuple)):
            if not self.corpus or not all(isinstance(c, (str, os.PathLike)) for c in self.corpus):
                fail("corpus", "a path, a non-empty list of paths, or None")
            self.corpus = [os.fspath(c) for c in self.corpus]
        elif self.corpus is not None and not isinstance(self.corpus, (str, os.PathLike)):
            fail("corpus", "a path, a non-empty list of paths, or None")
        choice("level", ("char", "word", "bpe"))
        integer("bpe_vocab", 257, optional=True)
        if self.level != "bpe" and (self.bpe_vocab is not None or self.tokenizer_file is not None):
            which = "bpe_vocab" if self.bpe_vocab is not None else "tokenizer_file"
            raise ConfigError(f"{which}: applies to level 'bpe' only, got level {self.level!r}")
        if self.bpe_vocab is not None and self.tokenizer_file is not None:
            raise ConfigError("bpe_vocab and tokenizer_file: expected at most one of them (a tokenizer file has "
                              "its own vocabulary)")
        choice("window_offset", ("random", "fixed"))
        choice("init", INITS)
        choice("recurrent_init", (None, *INITS))
        real("init_std", 0.0, lo_open=True)
        real("forget_bias", -math.inf, optional=True)
        if self.forget_bias is not None and self.cell != "lstm":
            raise ConfigError(f"forget_bias: applies to cell 'lstm' only (the forget gate), got cell {self.cell!r}")
        for name in ("embed_dropout", "locked_dropout", "weight_drop"):
            real(name, 0.0, 1.0)
        boolean("tie_weights")
        if self.tie_weights and self.embed is None and self.init_from is None:
            raise ConfigError("tie_weights: expected a model with an embedding, got embed=None (one-hot inputs)")
        if self.embed_dropout and self.embed is None and self.init_from is None:
            raise ConfigError(f"embed_dropout: expected a model with an embedding, got embed=None (one-hot inputs)")
        choice("cell", tuple(CELLS))
        choice("dtype", ("float32", "float64"))
        choice("sampling", ("random", "sequential"))
        choice("optimizer", ("sgd", "adam", "adamw", "rmsprop"))
        choice("schedule", ("constant", "cosine", "step"))
        choice("on_nonfinite", ("stop", "skip"))
        choice("save_dtype", (None, "float16", "float32", "float64"))
        for name in ("lower", "letters_only", "newlines_as_spaces", "plot", "json", "quiet", "resume",
                     "overwrite"):
            boolean(name)
        integer("max_chars", 1, optional=True)
        integer("min_freq", 1)
        integer("max_vocab", 2, optional=True)
        real("val_fraction", 0.0, 1.0)
        integer("embed", 1, optional=True)
        integer("hidden", 1)
        integer("layers", 1)
        real("dropout", 0.0, 1.0)
        integer("seq_len", 1)
        integer("batch_size", 1)
        integer("epochs", 1, optional=True)
        integer("steps", 1, optional=True)
        if self.epochs is not None and self.steps is not None:
            raise ConfigError(f"epochs and steps: expected at most one of them, got epochs={self.epochs} "
                              f"and steps={self.steps}")
        real("lr", 0.0, lo_open=True)
        real("momentum", 0.0, 1.0)
        if self.momentum and self.optimizer != "sgd":
            raise ConfigError(f"momentum: applies to optimizer 'sgd' only, got momentum={self.momentum} "
                              f"with optimizer {self.optimizer!r}")
        real("weight_decay", 0.0)
        integer("warmup", 0)
        real("min_lr", 0.0)
        if self.min_lr > self.lr:
            raise ConfigError(f"min_lr: expected at most lr={self.lr:g}, got {self.min_lr:g}")
        integer("decay_every", 1, optional=True)
        real("decay_gamma", 0.0, 1.0, lo_open=True, hi_open=False)
        real("clip", 0.0, lo_open=True, optional=True)
        integer("val_every", 0, optional=True)
        integer("sample_every", 0, optional=True)
        integer("sample_length", 1)
        real("sample_temperature", 0.0, lo_open=True)
        integer("checkpoint_every", 0)
        integer("log_every", 1)
        integer("patience", 1, optional=True)
        integer("seed", 0)
        if self.seed >= 2 ** 63:
            fail("seed", "an integer in [0, 2**63)")
        if self.resume and self.out is None:
            raise ConfigError("resume: needs out (the run directory holding checkpoint.safetensors)")
        return self

    @property
    def total_epochs(self) -> Optional[int]:
        """Epochs to train (None when the run is measured in steps)."""
        if self.steps is not None:
            return None
        return self.epochs if self.epochs is not None else DEFAULT_EPOCHS

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("corpus", "out", "tokenizer_file", "init_from"):
            if isinstance(d[k], list):
                d[k] = [os.fspath(x) for x in d[k]]
            elif d[k] is not None:
                d[k] = os.fspath(d[k])
        return d

    def format(self, width: int = 100) -> str:
        """The config as indented ``name=value,`` lines of at most ``width`` characters (printed at
        the start of training)."""
        lines, line = [], "   "
        for k, v in self.to_dict().items():
            item = f" {k}={v!r},"
            if len(line) + len(item) > width and line.strip():
                lines.append(line)
                line = "   "
            line += item
        lines.append(line)
        return "\n".join(lines)


#: Fields that define the run: they must match the checkpoint when resuming.
FROZEN_FIELDS = ("level", "lower", "letters_only", "newlines_as_spaces", "max_chars", "min_freq", "max_vocab",
                 "val_fraction", "cell", "embed", "hidden", "layers", "dropout", "dtype", "seq_len",
                 "batch_size", "sampling", "optimizer", "momentum", "weight_decay", "schedule", "warmup",
                 "min_lr", "decay_every", "decay_gamma", "seed", "tokenizer_file", "bpe_vocab", "init",
                 "recurrent_init", "init_std", "forget_bias", "embed_dropout", "locked_dropout", "weight_drop",
                 "tie_weights", "init_from", "window_offset")


# ============================================================================================== data
def read_corpus(path: Any) -> str:
    """Read a UTF-8 text file strictly (a leading BOM is dropped, ``\\r\\n`` becomes ``\\n``).

    Raises :class:`ConfigError` for a missing, unreadable, empty, binary (NUL bytes) or non-UTF-8
    file, naming the byte offset of the first bad byte."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError(f"corpus {path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"corpus {path}: expected a text file, got a directory") from None
    except OSError as e:
        raise ConfigError(f"corpus {path}: cannot read it: {e.strerror or e}") from None
    if not data:
        raise ConfigError(f"corpus {path}: the file is empty")
    nul = data.find(b"\0")
    if nul >= 0:
        raise ConfigError(f"corpus {path}: expected UTF-8 text, got a binary file (NUL byte at offset {nul})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"corpus {path}: expected UTF-8 text, got byte 0x{data[e.start]:02x} at offset "
                          f"{e.start} ({e.reason}); convert the file to UTF-8 first") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n")


def prepare_text(text: str, newlines_as_spaces: bool = False, max_chars: Optional[int] = None) -> str:
    """The book's preprocessing before tokenizing: newlines (and ``\\r``) to spaces, then the first
    ``max_chars`` characters (e.g. the Jay Chou experiment: ``True, 10000``)."""
    if not isinstance(text, str):
        raise TypeError(f"text: expected str, got {type(text).__name__}")
    if newlines_as_spaces:
        text = text.replace("\n", " ").replace("\r", " ")
    if max_chars is not None:
        text = text[:max_chars]
    return text


def make_tokenizer(config: TrainConfig) -> Any:
    """A new tokenizer for ``config.level`` (``"bpe"``: Hugging Face tokenizers, the ``rnnrs[bpe]``
    extra; from ``config.tokenizer_file`` when given, else to be fitted with ``bpe_vocab`` tokens)."""
    if config.level == "bpe":
        from .bpe import BPETokenizer
        if config.tokenizer_file is not None:
            return BPETokenizer.from_file(config.tokenizer_file, lower=config.lower, letters_only=config.letters_only)
        return BPETokenizer(vocab_size=config.bpe_vocab or 2000, lower=config.lower, letters_only=config.letters_only)
    cls = CharTokenizer if config.level == "char" else WordTokenizer
    return cls(lower=config.lower, letters_only=config.letters_only)


def _fingerprint(ids: np.ndarray) -> str:
    return "sha256:" + hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes()).hexdigest()


# ======================================================================================== evaluation
def evaluate_ids(model: LanguageModel, ids: Any, batch_size: int = 32, seq_len: int = 64,
                 should_stop: Optional[Callable[[], bool]] = None) -> Optional[Tuple[float, int]]:
    """Mean cross-entropy (nats per token) of ``model`` over a whole 1-D corpus of ids.

    The corpus is cut into ``min(batch_size, n // seq_len)`` equally long contiguous streams
    (sequential partitioning without an offset) read ``seq_len`` tokens at a time with the state
    carried, so each token after the first is predicted once, from all the text before it in its
    stream (at most ``batch_size - 1`` tokens at the end are left out). Deterministic: no dropout,
    no randomness. Returns ``(mean_loss, tokens_predicted)``, or None if ``should_stop()`` became
    true. Perplexity is ``exp(mean_loss)``, bits per token ``mean_loss / ln 2``.
    """
    ids = np.ascontiguousarray(np.asarray(ids), dtype=np.int64)
    if ids.ndim != 1 or ids.size < 2:
        raise ValueError(f"ids: expected a 1-D array of at least 2 token ids, got shape {ids.shape}")
    n = ids.size - 1
    streams = max(1, min(batch_size, n // seq_len))
    length = n // streams
    xs = ids[:streams * length].reshape(streams, length)
    ys = ids[1:streams * length + 1].reshape(streams, length)
    state = None
    total, count = 0.0, 0
    for t in range(0, length, seq_len):
        x, y = xs[:, t:t + seq_len].T, ys[:, t:t + seq_len].T
        loss, state = model.evaluate(x, y, state)
        total += float(loss) * x.size
        count += x.size
        if should_stop is not None and should_stop():
            return None
    return total / count, count


def lr_schedule(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """The learning rate of step ``s`` (0-based) of a run of ``total_steps`` steps."""
    lr, min_lr, warmup = float(config.lr), float(config.min_lr), int(config.warmup)
    decay_every = config.decay_every or max(1, total_steps // 3)

    def at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        if config.schedule == "cosine":
            span = max(1, total_steps - 1 - warmup)
            progress = min(1.0, (step - warmup) / span)
            return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
        if config.schedule == "step":
            return lr * config.decay_gamma ** ((step - warmup) // decay_every)
        return lr

    return at


# ====================================================================================== results
@dataclass
class History:
    """What happened during training: ``loss[s]`` is the training loss of step ``s + 1`` (NaN if
    the step was skipped), ``val`` one dict per validation (``step``, ``epoch``, ``val_loss``,
    ``val_ppl``, ``train_ppl``), ``epochs`` one dict per finished epoch (``epoch``, ``step``,
    ``train_ppl`` — the mean over the epoch's steps, as in the book), ``skipped`` the skipped steps."""

    loss: List[float] = field(default_factory=list)
    val: List[Dict[str, Any]] = field(default_factory=list)
    epochs: List[Dict[str, Any]] = field(default_factory=list)
    skipped: List[int] = field(default_factory=list)

    def train_ppl(self, last: int) -> float:
        """Perplexity from the mean loss of the last ``last`` finite steps (NaN if none)."""
        tail = np.asarray(self.loss[-last:], dtype=np.float64) if last > 0 else np.empty(0)
        tail = tail[np.isfinite(tail)]
        with np.errstate(over="ignore"):
            return float(np.exp(tail.mean())) if tail.size else math.nan


@dataclass
class TrainResult:
    """Returned by :meth:`Trainer.run` and :func:`train`."""

    model: LanguageModel
    tokenizer: Any
    history: History
    summary: Dict[str, Any]
    out: Optional[str] = None

    def sample(self, prefix: str, length: int = 100, temperature: float = 0.8, seed: int = 0) -> Optional[str]:
        """``prefix`` and a sampled continuation of ``length`` tokens, as
        :meth:`rnnrs.LyricGenerator.generate` makes it with ``top_p=None`` (the prefix kept as
        given, its tokens outside the vocabulary left out of the model's input with an
        :class:`~rnnrs.generate.UnknownTokenWarning`, ``<unk>`` never generated). None without
        a tokenizer or for a model other than :class:`rnnrs.LanguageModel`."""
        return _preview(self.model, self.tokenizer, prefix, length, temperature, seed)


def _preview(model: LanguageModel, tokenizer: Any, prefix: str, length: int, temperature: float,
             seed: int, newlines_as_spaces: bool = False) -> Optional[str]:
    if tokenizer is None or not hasattr(model, "_core"):
        return None
    gen = LyricGenerator(model, tokenizer, info={"newlines_as_spaces": newlines_as_spaces})
    return gen.generate(prefix, length=length, temperature=temperature, top_p=None, seed=seed)


# ======================================================================================== logging
def _fmt_time(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _fmt_ppl(x: Optional[float]) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"


def _json_safe(x: Any) -> Any:
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


class JsonLogger:
    """Prints every event except the per-step ``"step"`` events as one JSON object per line."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream

    def __call__(self, event: Event) -> None:
        if event["event"] == "step":
            return
        stream = self.stream or sys.stdout
        stream.write(json.dumps(_json_safe(event), ensure_ascii=False, allow_nan=False) + "\n")
        stream.flush()


class _LineBar:
    """A minimal progress line on a terminal (``\\r``-updated, at most 10 times a second)."""

    def __init__(self, total: int, initial: int, stream: Any) -> None:
        self.total, self.n, self.stream = total, initial, stream
        self.postfix, self._last, self._shown = "", 0.0, False

    def update(self, n: int, postfix: str) -> None:
        self.n += n
        self.postfix = postfix
        now = time.monotonic()
        if now - self._last >= 0.1 or self.n >= self.total:
            self._last = now
            self._draw()

    def _draw(self) -> None:
        pct = 100.0 * self.n / self.total if self.total else 100.0
        self.stream.write(f"\r\x1b[K{pct:5.1f}% {self.n}/{self.total} steps | {self.postfix}")
        self.stream.flush()
        self._shown = True

    def write(self, line: str) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        print(line, flush=True)
        if self._shown:
            self._draw()

    def close(self) -> None:
        if self._shown:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


class ConsoleLogger:
    """Human-readable output: the config at the start, a progress bar (``tqdm`` if installed, else a
    terminal line; plain lines every ``log_every`` steps when not on a terminal), validation
    results, sample previews, warnings and the final summary."""

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress
        self.bar: Any = None
        self.line_mode = False

    def _print(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def __call__(self, event: Event) -> None:
        kind = event["event"]
        handler = getattr(self, "on_" + kind, None)
        if handler is not None:
            handler(event)

    def on_start(self, ev: Event) -> None:
        d, m = ev["data"], ev["model"]
        print(f"rnnrs {ev['version']}: training a {d['level']}-level {m['cell'].upper()} language model")
        print("TrainConfig(\n" + ev["config_text"] + "\n)")
        src = d.get("corpus") or "(text given in Python)"
        print(f"data: {src}: {d['tokens']:,} tokens, {d['train_tokens']:,} for training, "
              f"{d['val_tokens']:,} for validation; vocabulary of {d['vocab_size']:,}")
        print(f"model: {m['repr']}")
        print(f"run: {ev['total_steps']:,} steps ({ev['steps_per_epoch']:,} per epoch), "
              f"{ev['tokens_per_step']:,} tokens per step" + (f", output in {ev['out']}" if ev.get("out") else ""))
        if ev.get("resumed_step") is not None:
            print(f"resuming from step {ev['resumed_step']:,} (epoch {ev['epoch'] + 1}, batch {ev['batch']})")
        if not self.progress:
            return
        total, initial = int(ev["total_steps"]), int(ev.get("resumed_step") or 0)
        try:
            from tqdm.auto import tqdm  # optional
            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)
        except ImportError:
            if sys.stderr.isatty():
                self.bar = _LineBar(total, initial, sys.stderr)
            else:
                self.line_mode = True

    def on_step(self, ev: Event) -> None:
        if self.bar is not None:
            postfix = (f"epoch {ev['epoch'] + 1} loss {ev['avg_loss']:.3f} ppl {_fmt_ppl(ev['avg_ppl'])} "
                       f"{ev['tokens_per_s']:,.0f} tok/s")
            if hasattr(self.bar, "set_postfix_str"):
                self.bar.set_postfix_str(postfix, refresh=False)
                self.bar.update(1)
            else:
                self.bar.update(1, postfix)

    def on_progress(self, ev: Event) -> None:
        if self.line_mode:
            print(f"step {ev['step']:>7,} | epoch {ev['epoch'] + 1} | loss {ev['loss']:.4f} | ppl "
                  f"{_fmt_ppl(ev['ppl'])} | lr {ev['lr']:.3g} | {ev['tokens_per_s']:,.0f} tok/s", flush=True)

    def on_val(self, ev: Event) -> None:
        best = " (best)" if ev["best"] else ""
        self._print(f"step {ev['step']:,} (epoch {ev['epoch_float']:.2f}): train ppl {_fmt_ppl(ev['train_ppl'])}, "
                    f"val ppl {_fmt_ppl(ev['val_ppl'])}{best}")

    def on_sample(self, ev: Event) -> None:
        self._print(f"  sample: {ev['text']!r}")

    def on_warning(self, ev: Event) -> None:
        self._print(f"warning: {ev['message']}")

    on_checkpoint_error = on_warning

    def on_nonfinite(self, ev: Event) -> None:
        if ev["action"] == "skip":  # a stop is reported by the NonFiniteError raised from run()
            self.on_warning(ev)

    def on_early_stop(self, ev: Event) -> None:
        self._print(f"early stop at step {ev['step']:,}: no better validation perplexity in {ev['patience']} "
                    f"validations (best {_fmt_ppl(ev['best_val_ppl'])} at step {ev['best_step']:,})")

    def on_interrupt(self, ev: Event) -> None:
        self._print(f"{ev['signal']}: stopped after step {ev['step']:,}"
                    + ("; resume with --resume (or resume=True)" if ev.get("checkpoint") else ""))

    def on_summary(self, ev: Event) -> None:
        self.close()
        print(f"{ev['status']} after {ev['steps']:,} steps ({ev['epochs']:.2f} epochs) in {_fmt_time(ev['wall_time_s'])}: "
              f"train ppl {_fmt_ppl(ev['train_ppl'])}, val ppl {_fmt_ppl(ev['val_ppl'])}"
              + (f" (best {_fmt_ppl(ev['best_val_ppl'])} at step {ev['best_step']:,})"
                 if ev.get("best_step") is not None else "")
              + (f", {ev['tokens_per_s']:,.0f} tokens/s" if ev["tokens_per_s"] else ""))
        for key, what in (("model_file", "model"), ("checkpoint_file", "checkpoint"), ("plot_file", "curve")):
            if ev.get(key):
                print(f"  {what}: {ev[key]}")
        if ev.get("sample"):
            print(f"  sample: {ev['sample']!r}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ====================================================================================== signals
class _StopSignals:
    """While active, SIGINT and SIGTERM only set :attr:`received` (the loop then finishes the step,
    writes a checkpoint and returns); a second signal raises ``KeyboardInterrupt`` at once. Only
    installed in the main thread."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)

    def __init__(self, quiet: bool) -> None:
        self.received: Optional[str] = None
        self.quiet = quiet
        self._old: Dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        if not self.quiet:
            sys.stderr.write(f"\n{self.received}: finishing this step and saving; press Ctrl-C again to "
                             "abort at once (the last complete checkpoint is kept)\n")
            sys.stderr.flush()

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                try:
                    old = signal.getsignal(s)
                    signal.signal(s, self._handle)
                except (ValueError, OSError):
                    continue
                self._old[s] = old if old is not None else signal.SIG_DFL
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            try:
                signal.signal(s, old)
            except (ValueError, OSError):
                pass
        self._old.clear()


# ======================================================================================== trainer
class Trainer:
    """One training run. ``Trainer(config, text=..., ids=..., tokenizer=..., callbacks=[...]).run()``.

    Data comes from ``text`` (a str), ``ids`` (a 1-D int array; pass ``tokenizer`` too to decode
    samples) or ``config.corpus`` (a UTF-8 file). Callbacks receive event dicts (``"event"`` is one
    of ``start``, ``step``, ``progress``, ``epoch``, ``val``, ``sample``, ``checkpoint``,
    ``checkpoint_error``, ``warning``, ``nonfinite``, ``early_stop``, ``interrupt``, ``summary``) and
    may raise :class:`StopTraining`. The console or JSON logger is added according to
    ``config.json``/``config.quiet``.
    """

    def __init__(self, config: Optional[TrainConfig] = None, *, text: Optional[str] = None, ids: Any = None,
                 tokenizer: Any = None, callbacks: Iterable[Callback] = (), **overrides: Any) -> None:
        config = config if config is not None else TrainConfig()
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            raise TypeError(f"unknown training options {sorted(unknown)}; see rnnrs.TrainConfig")
        self.config = dataclasses.replace(config, **overrides).validate()
        # What the user chose (for init_from: the rest comes from the model): the overrides, and
        # the fields of ``config`` that differ from the defaults.
        defaults = TrainConfig()
        self._given = set(overrides) | {f.name for f in dataclasses.fields(TrainConfig)
                                        if getattr(config, f.name) != getattr(defaults, f.name)}
        if sum(x is not None for x in (text, ids, self.config.corpus)) > 1 and not (
                self.config.resume and self.config.corpus is not None):
            raise ConfigError("data: expected one of text=, ids= or config.corpus, got more than one")
        if tokenizer is not None and not isinstance(tokenizer, _Tokenizer):
            raise TypeError(f"tokenizer: expected a fitted rnnrs CharTokenizer, WordTokenizer or BPETokenizer or "
                            f"None, got {type(tokenizer).__name__}")
        if tokenizer is not None and self.config.init_from is not None:
            raise ConfigError("tokenizer and init_from: expected at most one of them (fine-tuning uses the model's "
                              "tokenizer)")
        if tokenizer is not None and tokenizer.vocab is None:
            raise ConfigError(f"tokenizer: expected a fitted tokenizer (call fit(text) first), got {tokenizer!r}; "
                              "or pass none to fit one on the data")
        self.text, self.ids_in = text, ids
        self.tokenizer: Any = tokenizer
        self.callbacks: List[Callback] = list(callbacks)
        #: A callback's output pipe was closed (it was dropped and training stopped; see ``_emit``).
        self.output_closed = False
        if self.config.json:
            self.callbacks.append(JsonLogger())
        elif not self.config.quiet:
            self.callbacks.append(ConsoleLogger())
        self.model: Optional[LanguageModel] = None
        self.history = History()
        self._ready = False

    # ----------------------------------------------------------------------------- resuming
    @classmethod
    def resume(cls, out: Any, *, text: Optional[str] = None, ids: Any = None, tokenizer: Any = None,
               callbacks: Iterable[Callback] = (), **overrides: Any) -> "Trainer":
        """A trainer that continues the run in ``out`` with the configuration stored in its
        checkpoint; ``overrides`` may change the run's length, schedules of validation, samples,
        checkpoints and logs, the output options, and ``lr``/``clip`` (a note says that the run then
        is no longer identical to an uninterrupted one); changing anything that defines the model or
        the data (e.g. ``hidden``) is a :class:`ConfigError`. Without a checkpoint in ``out`` this
        starts a new run with ``overrides``."""
        out = os.fspath(out)
        path = os.path.join(out, CHECKPOINT_FILE)
        if not os.path.exists(path):
            return cls(TrainConfig(), text=text, ids=ids, tokenizer=tokenizer, callbacks=callbacks,
                       **dict(overrides, out=out, resume=True))
        ckpt = load_checkpoint(path)
        saved = _saved_config(ckpt.trainer, path)
        if overrides.get("init_from") not in (None, "builtin"):  # (the checkpoint keeps it absolute)
            overrides["init_from"] = os.path.abspath(os.fspath(overrides["init_from"]))
        for name in FROZEN_FIELDS:
            if name in overrides and overrides[name] != getattr(saved, name):
                raise ConfigError(f"{name}: the checkpoint in {out} was trained with {getattr(saved, name)!r}, got "
                                  f"{overrides[name]!r}; drop the option to resume, or start a new run "
                                  "(another --out, or --overwrite)")
        if "epochs" in overrides and "steps" not in overrides:
            overrides["steps"] = None
        if "steps" in overrides and "epochs" not in overrides:
            overrides["epochs"] = None
        if text is not None or ids is not None:
            overrides.setdefault("corpus", None)
        session = {"json": False, "quiet": False}  # how this session prints is not inherited
        config = dataclasses.replace(saved, **dict(session, **overrides, out=out, resume=True, overwrite=False))
        trainer = cls(config, text=text, ids=ids, tokenizer=tokenizer, callbacks=callbacks)
        trainer._preloaded = ckpt
        return trainer

    # ------------------------------------------------------------------------------- setup
    def _setup(self) -> None:
        """Data, tokenizer, model and optimizer — or all of them from the checkpoint when resuming."""
        cfg = self.config
        ckpt = None
        if cfg.out is not None:
            out = os.fspath(cfg.out)
            if os.path.exists(out) and not os.path.isdir(out):
                raise ConfigError(f"out {out}: expected a directory, got a file")
            path = os.path.join(out, CHECKPOINT_FILE)
            if cfg.resume and os.path.exists(path):
                ckpt = getattr(self, "_preloaded", None) or load_checkpoint(path)
                self._preloaded = None
            elif cfg.resume:
                self._warn(f"no checkpoint in {out}: starting a new run", later=True)
            elif os.path.exists(path) and not cfg.overwrite:
                raise ConfigError(f"out {out}: already holds a training checkpoint; pass --resume (resume=True) "
                                  "to continue it, or --overwrite (overwrite=True) to start over")
            try:
                os.makedirs(out, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"out {out}: cannot create the directory: {e.strerror or e}") from None
            _remove_stale_temporaries(out)
        init_model = None
        if ckpt is not None:
            self._check_resume_config(ckpt)
            self.tokenizer = ckpt.tokenizer if ckpt.tokenizer is not None else self.tokenizer
        elif cfg.init_from is not None:
            init_model = self._init_from()
            cfg = self.config
        self._load_data()
        if ckpt is not None:
            self.model = ckpt.model
            self._restore(ckpt)
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                self.model = LanguageModel(
                    self.vocab_size, cfg.embed, cfg.hidden, cfg.layers, cfg.cell, cfg.dropout, cfg.seed,
                    np.dtype(cfg.dtype), init=cfg.init, recurrent_init=cfg.recurrent_init, init_std=cfg.init_std,
                    forget_bias=cfg.forget_bias, tie_weights=cfg.tie_weights, embed_dropout=cfg.embed_dropout,
                    locked_dropout=cfg.locked_dropout, weight_drop=cfg.weight_drop)
            for w in caught:  # (dropout without effect on one layer): said once, in the run's log
                self._warn(str(w.message), later=True)
            if init_model is not None:
                self.model.load_state_dict(init_model.state_dict())
                unknown = int(np.count_nonzero(self.ids == 0)) if self.tokenizer.vocab.idx_to_token[0] == "<unk>" else 0
                self.unknown_tokens = unknown
                self._warn(f"fine-tuning {self._init_path}: {unknown:,} of {self.ids.size:,} tokens of the corpus "
                           f"({100.0 * unknown / max(self.ids.size, 1):.2f}%) are not in the model's vocabulary and "
                           "became <unk>" if unknown else f"fine-tuning {self._init_path}: every token of the corpus "
                           "is in the model's vocabulary", later=True)
            self.model.set_optimizer(cfg.optimizer, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
            self.epoch, self.batch, self.step = 0, 0, 0
            self.carry: Any = None
            self.tokens_seen, self.train_time = 0, 0.0
            self.best_val, self.best_step, self.bad_vals = math.inf, None, 0
            self.pending_val, self.epoch_start_step = False, 0
            self.resumed_step: Optional[int] = None
        self.total_steps = self._total_steps()
        self.lr_at = lr_schedule(cfg, self.total_steps)
        self._ready = True

    def _init_from(self) -> LanguageModel:
        """Load ``init_from`` and take its architecture and tokenizer into the config (fine-tuning)."""
        from . import finetune
        try:
            model, tokenizer, info, path = finetune.load(self.config.init_from)
            updates = finetune.settings(model, tokenizer, info, self.config, self._given, path)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.config = dataclasses.replace(self.config, **updates).validate()
        self.tokenizer, self._init_path = tokenizer, path
        return model

    def _check_resume_config(self, ckpt: Any) -> None:
        saved = _saved_config(ckpt.trainer, ckpt.path)
        diffs = [n for n in FROZEN_FIELDS if getattr(saved, n) != getattr(self.config, n)]
        if diffs:
            n = diffs[0]
            raise ConfigError(f"{n}: the checkpoint in {self.config.out} was trained with {getattr(saved, n)!r}, "
                              f"got {getattr(self.config, n)!r}; use the same settings to resume (or "
                              "Trainer.resume(out) / --resume without them), or start a new run")
        for n in ("lr", "clip"):
            if getattr(saved, n) != getattr(self.config, n):
                self._warn(f"{n} changed from {getattr(saved, n)!r} to {getattr(self.config, n)!r}: the resumed run "
                           "differs from an uninterrupted one from here on", later=True)

    def _load_data(self) -> None:
        cfg = self.config
        if self.ids_in is not None:
            ids = np.asarray(self.ids_in)
            if ids.ndim != 1 or ids.dtype.kind not in "iu":
                raise ConfigError(f"ids: expected a 1-D integer array of token ids, got shape {ids.shape} "
                                  f"and dtype {ids.dtype}")
            ids = ids.astype(np.int64)
            if ids.size and ids.min() < 0:
                raise ConfigError(f"ids: expected token ids >= 0, got {int(ids.min())}")
            vocab = len(self.tokenizer.vocab) if self.tokenizer is not None else int(ids.max(initial=0)) + 1
            if ids.size and ids.max() >= vocab:
                raise ConfigError(f"ids: expected ids below the tokenizer's vocabulary size {vocab}, got {int(ids.max())}")
            source = None
        else:
            names: List[str] = ["text"]
            if self.text is not None:
                texts, source = [self.text], None
            elif cfg.corpus is not None:
                try:
                    names = corpus_files(cfg.corpus)
                except (TypeError, ValueError) as e:
                    raise ConfigError(str(e)) from None
                texts = [read_corpus(f) for f in names]
                source = names[0] if len(names) == 1 else names
            else:
                raise ConfigError("data: expected text=, ids= or a corpus file (config.corpus / --corpus), got none")
            if len(texts) == 1:
                texts = [prepare_text(texts[0], cfg.newlines_as_spaces, cfg.max_chars)]
            else:
                texts = [prepare_text(t, cfg.newlines_as_spaces) for t in texts]
            text = join_documents(texts)
            if not text:
                raise ConfigError("corpus: expected some text, got an empty string")
            if self.tokenizer is None:
                try:
                    tok = make_tokenizer(cfg)
                    self.tokenizer = tok if tok.vocab is not None else tok.fit(
                        text, min_freq=cfg.min_freq, max_size=cfg.max_vocab)
                except ValueError as e:
                    raise ConfigError(f"corpus: {e}") from None
            if len(texts) > 1:
                try:
                    ids, joined_train, joined_val = split_documents(texts, self.tokenizer.encode, cfg.val_fraction, names)
                except ValueError as e:
                    raise ConfigError(f"corpus too short for validation: {e}; use --val-fraction 0 for none") from None
                self._document_split = (joined_train, joined_val)
            else:
                ids = self.tokenizer.encode(text)
            self.chars = len(text)
            vocab = len(self.tokenizer.vocab)
        self.vocab_size = vocab
        self.source = source
        self.fingerprint = _fingerprint(ids)
        need = min_corpus_tokens(cfg.batch_size, cfg.seq_len)
        if ids.size < need:
            raise ConfigError(f"corpus too short: {ids.size:,} tokens, but one batch of batch_size {cfg.batch_size} x "
                              f"seq_len {cfg.seq_len} needs (batch_size + 1) * seq_len = {need:,}; use a longer corpus "
                              "or a smaller --batch-size/--seq-len")
        try:
            train_ids, val_ids = getattr(self, "_document_split", None) or split_train_val(
                ids, cfg.val_fraction, min_tokens=2)
        except ValueError as e:
            raise ConfigError(f"corpus too short for validation: {e}; use --val-fraction 0 for none") from None
        if train_ids.size < need:
            held = f" after holding out {val_ids.size:,} for validation" if val_ids.size else ""
            raise ConfigError(f"corpus too short: {train_ids.size:,} training tokens{held}, but one batch of "
                              f"batch_size {cfg.batch_size} x seq_len {cfg.seq_len} needs (batch_size + 1) * seq_len"
                              f" = {need:,}; use a longer corpus or a smaller --batch-size/--seq-len")
        self.ids, self.train_ids, self.val_ids = ids, train_ids, val_ids
        self.batches = LMBatches(train_ids, cfg.batch_size, cfg.seq_len, cfg.sampling, cfg.seed, cfg.window_offset)

    def _restore(self, ckpt: Any) -> None:
        t = ckpt.trainer
        path = ckpt.path

        def bad(key: str, expected: str) -> CheckpointError:
            got = t.get(key, "nothing") if isinstance(t, dict) else t
            return CheckpointError(f"{path}: invalid trainer state: {key}: expected {expected}, got {got!r:.100}")

        def count(key: str) -> int:
            v = t.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise bad(key, "an integer >= 0")
            return v

        def records(key: str) -> List[Dict[str, Any]]:
            v = t.get(key)
            if not isinstance(v, list) or not all(isinstance(r, dict) and not isinstance(r.get("step"), bool)
                                                  and isinstance(r.get("step"), int) for r in v):
                raise bad(key, "a list of records with an integer 'step'")
            return list(v)

        data = t.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("fingerprint"), str):
            raise bad("data", "a record with the corpus fingerprint")
        if data["fingerprint"] != self.fingerprint:
            tokens = data.get("tokens")
            raise ConfigError(f"corpus: the text differs from the one the checkpoint {path} was trained on "
                              f"({tokens if isinstance(tokens, int) else '?':,} tokens, {data['fingerprint'][:19]}…; "
                              f"got {self.ids.size:,} tokens, {self.fingerprint[:19]}…); resume with the same corpus "
                              "and options")
        self.epoch, self.batch, self.step = count("epoch"), count("batch"), count("step")
        self.tokens_seen, self.bad_vals, self.epoch_start_step = count("tokens_seen"), count("bad_vals"), \
            count("epoch_start_step")
        train_time, best = t.get("train_time"), t.get("best_val_loss")
        if isinstance(train_time, bool) or not isinstance(train_time, (int, float)) or not 0 <= train_time < math.inf:
            raise bad("train_time", "a finite number of seconds >= 0")
        if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float)) or math.isnan(best)):
            raise bad("best_val_loss", "a number or null")
        if t.get("best_step") is not None:
            count("best_step")
        if not isinstance(t.get("pending_val"), bool):
            raise bad("pending_val", "true or false")
        skipped = t.get("skipped")
        if not isinstance(skipped, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in skipped):
            raise bad("skipped", "a list of step numbers")
        self.train_time = float(train_time)
        self.best_val = math.inf if best is None else float(best)
        self.best_step = t["best_step"]
        # (a validation cut short can only be pending if there is validation data)
        self.pending_val = t["pending_val"] and self.val_ids.size > 0
        self.history = History(loss=[float(x) for x in np.asarray(ckpt.tensors.get("loss", []), np.float64).ravel()],
                               val=records("val_history"), epochs=records("epoch_history"), skipped=list(skipped))
        if len(self.history.loss) != self.step:
            raise CheckpointError(f"{path}: expected {self.step} per-step losses, got {len(self.history.loss)}")
        if self.epoch_start_step > self.step:
            raise CheckpointError(f"{path}: epoch_start_step {self.epoch_start_step} is after step {self.step}")
        if not 0 <= self.batch < self.batches.num_batches(self.epoch):
            raise CheckpointError(f"{path}: batch {self.batch} is outside epoch {self.epoch} of this corpus")
        h, c = ckpt.tensors.get("state.h"), ckpt.tensors.get("state.c")
        self.carry = None
        if h is not None:
            want = (self.model.num_layers, self.config.batch_size, self.model.hidden_size)
            if h.shape != want or (c is not None and c.shape != want) or ((c is None) != (self.model.cell != "lstm")):
                raise CheckpointError(f"{path}: expected a carried state of shape {want}, got "
                                      f"{h.shape} and {None if c is None else c.shape}")
            self.carry = (np.array(h, dtype=self.model.dtype), None if c is None else np.array(c, dtype=self.model.dtype))
        self.resumed_step = self.step

    def _total_steps(self) -> int:
        cfg = self.config
        if cfg.steps is not None:
            return cfg.steps
        return sum(self.batches.num_batches(e) for e in range(cfg.total_epochs))

    # ------------------------------------------------------------------------------ events
    def _emit(self, kind: str, **fields: Any) -> None:
        """Send an event to every callback. A callback's :class:`StopTraining` takes effect before
        the next step (so the position saved in the checkpoint is always consistent)."""
        event = {"event": kind, **fields}
        for cb in list(self.callbacks):
            try:
                cb(event)
            except StopTraining:
                self.stop_requested = True
            except BrokenPipeError:
                # Its reader went away (``rnnrs train --json | head -1``): stop as for StopTraining,
                # so the run is saved, without that callback. (``output_closed`` tells the CLI.)
                self.stop_requested = self.output_closed = True
                self.callbacks.remove(cb)

    def _warn(self, message: str, later: bool = False) -> None:
        if later:
            self._pending_warnings = getattr(self, "_pending_warnings", []) + [message]
        else:
            self._emit("warning", message=message)

    # -------------------------------------------------------------------------------- loop
    def run(self) -> TrainResult:
        """Train until the epochs/steps are done, early stopping, a signal or a callback's
        :class:`StopTraining`; returns a :class:`TrainResult`. Raises :class:`rnnrs.NonFiniteError`
        (after saving a checkpoint of the last good state) when a non-finite loss stops training."""
        if not self._ready:
            self._setup()
        self._begin_session()
        status = "completed"
        with _StopSignals(quiet=self.config.quiet or self.config.json) as self._signals:
            try:
                if self.pending_val:  # a validation cut short by a signal in the previous session
                    status = self._validate_and_check() or status
                if self.config.patience is not None and self.bad_vals >= self.config.patience:
                    status = "early_stop"  # resuming a run that already stopped early (raise --patience to go on)
                batches, num_batches = None, 0
                while status == "completed" and not self._should_stop():
                    if batches is None:  # a new epoch, or the resumed one from its saved batch index
                        batches = self.batches.epoch_batches(self.epoch, start=self.batch)
                        num_batches = self.batches.num_batches(self.epoch)
                    x, y = next(batches)  # (B, T) int64; the model wants time-major (T, B)
                    self.model.set_lr(self.lr_at(self.step))
                    if not self._train_step(x, y, num_batches):
                        status = "nonfinite"
                        break
                    epoch_end = self.batch == num_batches
                    if epoch_end:  # the next epoch starts from a fresh state
                        self._end_epoch()
                        batches = None
                    status = self._after_step(epoch_end) or status
            except BaseException:
                self._close_callbacks()
                raise
            if status == "completed" and self.stop_requested:
                status = "stopped"
            if status in ("completed", "early_stop", "stopped") and self._signals.received:
                status = "interrupted"
            summary = self._finish(status, time.perf_counter() - self.session_start)
        if status == "nonfinite":
            raise NonFiniteError(self.nonfinite_message)
        return TrainResult(self.model, self.tokenizer, self.history, summary,
                           None if self.config.out is None else os.fspath(self.config.out))

    def _begin_session(self) -> None:
        self.session_start = time.perf_counter()
        self.session_tokens, self.session_train_time = 0, 0.0
        self.stop_requested, self.consecutive_skips, self.nonfinite_message = False, 0, None
        self._window = [0.0, 0, 0, 0.0]  # loss sum, finite steps, tokens, seconds since the last progress event
        done = np.asarray(self.history.loss[self.epoch_start_step:], np.float64)
        done = done[np.isfinite(done)]
        self._epoch_sum = [float(done.sum()), int(done.size)]  # this epoch's finite losses so far
        self._emit_start()
        for message in getattr(self, "_pending_warnings", []):
            self._emit("warning", message=message)
        self._pending_warnings = []
        if self.resumed_step is not None and self._done():
            cfg = self.config
            length = f"steps {cfg.steps}" if cfg.steps is not None else f"epochs {cfg.total_epochs}"
            self._emit("warning", message=f"the run is already at step {self.step:,} (epoch {self.epoch + 1}, batch "
                                          f"{self.batch}), past {length}: nothing to train; raise --epochs or "
                                          "--steps to continue it")

    def _should_stop(self) -> bool:
        return self._signals.received is not None or self.stop_requested or self._done()

    def _train_step(self, x: np.ndarray, y: np.ndarray, num_batches: int) -> bool:
        """One optimizer step on the batch ``(x, y)``; False if a non-finite loss stops training."""
        t0 = time.perf_counter()
        try:
            loss, grad_norm, state = self.model.train_step(x.T, y.T, self.carry, self.config.clip)
            self.consecutive_skips = 0
        except NonFiniteError as e:
            if not self._nonfinite(e, num_batches):
                return False
            loss, grad_norm, state = math.nan, math.nan, None
        self.step += 1
        self.batch += 1
        self.carry = state if self.batches.carries_state else None  # already detached
        self._account(loss, grad_norm, x.size, time.perf_counter() - t0, num_batches)
        return True

    def _nonfinite(self, error: Exception, num_batches: int) -> bool:
        """Report a non-finite step (the parameters are unchanged); True to skip the batch."""
        cfg = self.config
        message = (f"non-finite loss or gradient at step {self.step + 1} (epoch {self.epoch + 1}, batch "
                   f"{self.batch + 1} of {num_batches}): {error}")
        self.consecutive_skips += 1
        if cfg.on_nonfinite == "skip" and self.consecutive_skips <= MAX_CONSECUTIVE_SKIPS:
            self._emit("nonfinite", step=self.step + 1, epoch=self.epoch, batch=self.batch, action="skip",
                       message=message + "; batch skipped")
            self.history.skipped.append(self.step + 1)
            return True
        if cfg.on_nonfinite == "skip":
            message += f"; {MAX_CONSECUTIVE_SKIPS} batches skipped before it"
        self.nonfinite_message = (message + f". Training stopped with the parameters after step {self.step}"
                                  + (" (saved in the checkpoint)" if cfg.out is not None else "")
                                  + "; try a lower --lr, a --clip value, or --on-nonfinite skip")
        self._emit("nonfinite", step=self.step + 1, epoch=self.epoch, batch=self.batch, action="stop",
                   message=self.nonfinite_message)
        return False

    def _close_callbacks(self) -> None:
        for cb in self.callbacks:
            close = getattr(cb, "close", None)
            if callable(close):
                close()

    def _done(self) -> bool:
        cfg = self.config
        if cfg.steps is not None:
            return self.step >= cfg.steps
        return self.epoch >= cfg.total_epochs

    def _account(self, loss: float, grad_norm: float, tokens: int, seconds: float, num_batches: int) -> None:
        """Record one step: history, throughput, and the per-step and periodic progress events."""
        self.history.loss.append(float(loss))
        self.tokens_seen += tokens
        self.session_tokens += tokens
        self.train_time += seconds
        self.session_train_time += seconds
        w = self._window
        if math.isfinite(loss):
            w[0] += loss
            w[1] += 1
        w[2] += tokens
        w[3] += seconds
        if math.isfinite(loss):
            self._epoch_sum[0] += loss
            self._epoch_sum[1] += 1
        avg = self._epoch_sum[0] / self._epoch_sum[1] if self._epoch_sum[1] else math.nan
        tok_s = self.session_tokens / max(self.session_train_time, 1e-9)
        self._emit("step", step=self.step, epoch=self.epoch, batch=self.batch, loss=float(loss),
                   grad_norm=float(grad_norm), avg_loss=avg, avg_ppl=_exp(avg), tokens_per_s=tok_s,
                   lr=self.lr_at(self.step - 1))
        if self.step % self.config.log_every == 0 or self.batch >= num_batches:
            mean = w[0] / w[1] if w[1] else math.nan
            self._emit("progress", step=self.step, epoch=self.epoch, batch=self.batch, num_batches=num_batches,
                       loss=mean, ppl=_exp(mean), lr=self.lr_at(self.step - 1), grad_norm=float(grad_norm),
                       tokens_per_s=w[2] / max(w[3], 1e-9), tokens=self.tokens_seen, elapsed_s=self.train_time)
            self._window = [0.0, 0, 0, 0.0]

    def _end_epoch(self) -> None:
        mean = self._epoch_sum[0] / self._epoch_sum[1] if self._epoch_sum[1] else math.nan
        record = {"epoch": self.epoch + 1, "step": self.step, "train_loss": mean, "train_ppl": _exp(mean)}
        self.history.epochs.append(_json_safe(record))
        self._emit("epoch", **record)
        self.epoch += 1
        self.batch = 0
        self.carry = None
        self.epoch_start_step = self.step
        self._epoch_sum = [0.0, 0]

    def _after_step(self, epoch_end: bool) -> Optional[str]:
        """Validation, previews and checkpoints on their schedules; returns a new status or None."""
        cfg = self.config
        status = None
        validated = False
        if self.val_ids.size and _due(cfg.val_every, self.step, epoch_end) and not self._done():
            status = self._validate_and_check()
            validated = True
        if cfg.sample_every is None:  # with each validation (each epoch without validation data)
            sample_now = validated or (epoch_end and not self.val_ids.size)
        else:
            sample_now = cfg.sample_every > 0 and self.step % cfg.sample_every == 0
        if sample_now and not self._done():
            self._sample()
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and not self._done() and status is None:
            self._save(final=False)
        return status

    def _validate(self) -> Optional[Dict[str, Any]]:
        """A full pass over the validation ids; None if interrupted by a signal."""
        cfg = self.config
        result = evaluate_ids(self.model, self.val_ids, cfg.batch_size, cfg.seq_len,
                              should_stop=lambda: self._signals.received is not None)
        if result is None:
            self.pending_val = True
            return None
        self.pending_val = False
        loss = result[0]
        best = loss < self.best_val
        if best:
            self.best_val, self.best_step, self.bad_vals = loss, self.step, 0
        else:
            self.bad_vals += 1
        nb = max(1, self.batches.num_batches(self.epoch))
        record = {"step": self.step, "epoch": self.epoch, "epoch_float": self.epoch + self.batch / nb,
                  "val_loss": loss, "val_ppl": _exp(loss), "val_bits_per_token": loss / math.log(2),
                  "train_ppl": self.history.train_ppl(self._epoch_window()), "best": best}
        self.history.val.append(_json_safe(record))
        self._emit("val", **record)
        if best and cfg.out is not None:
            self._save_model(best=True)
        return record

    def _validate_and_check(self) -> Optional[str]:
        record = self._validate()
        if record is None:
            return None
        cfg = self.config
        if cfg.patience is not None and self.bad_vals >= cfg.patience:
            self._emit("early_stop", step=self.step, patience=cfg.patience, best_step=self.best_step,
                       best_val_ppl=_exp(self.best_val))
            return "early_stop"
        return None

    def _epoch_window(self) -> int:
        nb = self.batches.num_batches(max(0, self.epoch - 1) if self.batch == 0 else self.epoch)
        return max(1, nb)

    def _sample(self, final: bool = False) -> Optional[str]:
        cfg = self.config
        if self.tokenizer is None or getattr(self, "_no_samples", False):
            return None
        if not hasattr(self.model, "_core"):
            self._no_samples = True
            return None
        prefix = cfg.sample_prefix
        if prefix is None:
            head = self.train_ids[:10 if self.tokenizer.level == "char" else 3]
            prefix = self.tokenizer.decode(head)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UnknownTokenWarning)
                text = _preview(self.model, self.tokenizer, prefix, cfg.sample_length, cfg.sample_temperature,
                                cfg.seed + self.step, cfg.newlines_as_spaces)
            if caught and not getattr(self, "_warned_prefix", False):  # once per session
                self._warned_prefix = True
                self._warn(f"sample previews: {caught[0].message}")
        except (TypeError, ValueError, NotImplementedError) as e:
            self._no_samples = True
            self._warn(f"sample previews turned off: {type(e).__name__}: {e}")
            return None
        if text is not None:
            self._emit("sample", step=self.step, prefix=prefix, text=text, final=final)
        return text

    # ---------------------------------------------------------------------------- saving
    def _trainer_state(self, finished: bool, status: Optional[str]) -> Dict[str, Any]:
        cfg = self.config.to_dict()
        if cfg.get("corpus"):  # so that a resume from another working directory finds it
            c = cfg["corpus"]
            cfg["corpus"] = [os.path.abspath(x) for x in c] if isinstance(c, list) else os.path.abspath(c)
        if cfg.get("init_from") and cfg["init_from"] != "builtin":
            cfg["init_from"] = os.path.abspath(cfg["init_from"])
        return {
            "train_config": cfg,
            "rnnrs_version": _rnnrs.__version__,
            "epoch": self.epoch, "batch": self.batch, "step": self.step,
            "epoch_start_step": self.epoch_start_step,
            "tokens_seen": self.tokens_seen, "train_time": self.train_time,
            "best_val_loss": None if not math.isfinite(self.best_val) else self.best_val,
            "best_step": self.best_step, "bad_vals": self.bad_vals, "pending_val": self.pending_val,
            "val_history": self.history.val, "epoch_history": self.history.epochs,
            "skipped": self.history.skipped,
            "numpy_rng": None,  # the trainer keeps no RNG: batches are a function of (seed, epoch)
            "data": {"corpus": self.source, "fingerprint": self.fingerprint, "tokens": int(self.ids.size),
                     "train_tokens": int(self.train_ids.size), "val_tokens": int(self.val_ids.size)},
            "finished": finished, "status": status,
        }

    def _info(self, best: bool) -> Dict[str, Any]:
        cfg = self.config.to_dict()
        for k in ("out", "resume", "overwrite", "json", "quiet"):
            cfg.pop(k, None)
        c = cfg.get("corpus")
        if c:  # (file names only: a model file does not reveal where its corpus lived)
            cfg["corpus"] = [os.path.basename(x) for x in c] if isinstance(c, list) else os.path.basename(c)
        if cfg.get("init_from") and cfg["init_from"] != "builtin":
            cfg["init_from"] = os.path.basename(os.path.normpath(cfg["init_from"]))
        last_val = self.history.val[-1] if self.history.val else {}
        return {"trained_by": "rnnrs train", "rnnrs_version": _rnnrs.__version__, "step": self.step,
                "epoch": self.epoch, "best": best, "val_ppl": last_val.get("val_ppl"),
                "train_ppl": last_val.get("train_ppl"), "newlines_as_spaces": self.config.newlines_as_spaces,
                "train_config": cfg}

    def _save(self, final: bool, status: Optional[str] = None) -> Optional[str]:
        """Write the checkpoint (atomically). On failure the previous one survives and a
        ``checkpoint_error`` event is emitted; returns the path or None."""
        out = self.config.out
        if out is None:
            return None
        tensors: Dict[str, np.ndarray] = {"loss": np.asarray(self.history.loss, dtype=np.float64)}
        if self.carry is not None:
            tensors["state.h"] = self.carry[0]
            if self.carry[1] is not None:
                tensors["state.c"] = self.carry[1]
        try:
            path = save_checkpoint(out, self.model, self.tokenizer, self._trainer_state(final, status), tensors,
                                   info=self._info(best=False))
        except (OSError, ValueError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            self._emit("checkpoint_error", step=self.step, path=os.path.join(os.fspath(out), CHECKPOINT_FILE),
                       message=f"could not write the checkpoint at step {self.step} to {out}: {reason}; "
                               "the previous checkpoint is kept")
            self.checkpoint_errors = getattr(self, "checkpoint_errors", 0) + 1
            return None
        self._emit("checkpoint", step=self.step, path=path)
        return path

    def _save_model(self, best: bool) -> Optional[str]:
        out = self.config.out
        dtype = None if self.config.save_dtype is None else np.dtype(self.config.save_dtype)
        try:
            if not all(np.all(np.isfinite(a)) for a in self.model.state_dict().values()):
                raise ValueError("the model has non-finite weights")
            path = save_model(out, self.model, self.tokenizer, self._info(best), dtype)
        except (OSError, ValueError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            self._emit("checkpoint_error", step=self.step, path=os.path.join(os.fspath(out), MODEL_FILE),
                       message=f"could not write the model at step {self.step} to {out}: {reason}; "
                               "the previous model file is kept")
            self.checkpoint_errors = getattr(self, "checkpoint_errors", 0) + 1
            return None
        self.model_saved_step = self.step
        return path

    def _finish(self, status: str, wall: float) -> Dict[str, Any]:
        """Final validation and preview (unless interrupted), checkpoint, model file, plot, summary."""
        cfg = self.config
        sample = None
        if status in ("completed", "early_stop"):  # (a stopped run resumes exactly: no extra validation)
            last_val_step = self.history.val[-1]["step"] if self.history.val else None
            if self.val_ids.size and last_val_step != self.step:
                self._validate()
            if self._signals.received:  # cut short: the run is not complete, a resume validates again
                status = "interrupted"
            elif cfg.sample_every != 0:
                sample = self._sample(final=True)
        checkpoint = self._save(final=status in ("completed", "early_stop"), status=status)
        model_file = None
        if cfg.out is not None:
            # With validation, model.safetensors already holds the best model (saved when it was
            # found, possibly in an earlier session); otherwise save the current weights.
            best_file = os.path.join(os.fspath(cfg.out), MODEL_FILE)
            if self.val_ids.size and self.best_step is not None and os.path.exists(best_file):
                model_file = best_file
            else:
                model_file = self._save_model(best=False)
        plot_file = None
        if cfg.out is not None and cfg.plot:
            from .plot import plot_history
            plot_file = plot_history(self.history, os.path.join(os.fspath(cfg.out), PLOT_FILE),
                                     title=self._plot_title())
        if status == "interrupted":
            self._emit("interrupt", signal=self._signals.received, step=self.step, checkpoint=checkpoint)
        last_val = self.history.val[-1] if self.history.val else None
        final_val = last_val if last_val is not None and last_val["step"] == self.step else None
        window = self._epoch_window()
        train_ppl = self.history.train_ppl(window)
        nb = max(1, self.batches.num_batches(self.epoch))
        summary = {
            "status": status, "signal": self._signals.received if status == "interrupted" else None,
            "steps": self.step, "epochs": self.epoch + self.batch / nb, "tokens": self.tokens_seen,
            "train_loss": math.log(train_ppl) if math.isfinite(train_ppl) else None, "train_ppl": train_ppl,
            "val_loss": final_val["val_loss"] if final_val else None,
            "val_ppl": final_val["val_ppl"] if final_val else None,
            "val_bits_per_token": final_val["val_bits_per_token"] if final_val else None,
            "best_val_ppl": _exp(self.best_val) if math.isfinite(self.best_val) else None,
            "best_step": self.best_step,
            "tokens_per_s": self.session_tokens / max(self.session_train_time, 1e-9),
            "wall_time_s": wall, "train_time_s": self.train_time,
            "skipped_steps": len(self.history.skipped),
            "checkpoint_errors": getattr(self, "checkpoint_errors", 0),
            "out": None if cfg.out is None else os.fspath(cfg.out),
            "model_file": model_file, "checkpoint_file": checkpoint, "plot_file": plot_file,
            "sample": sample,
        }
        summary = _json_safe(summary)
        self._emit("summary", **summary)
        if cfg.out is not None and status in ("completed", "early_stop") and checkpoint is None:
            raise TrainingError(f"training finished but the final checkpoint could not be written to {cfg.out} "
                                "(see the message above); the previous checkpoint is kept")
        return summary

    def _plot_title(self) -> str:
        m = self.model
        src = self.source if not isinstance(self.source, list) else f"{len(self.source)} files"
        return (f"{self.config.level}-level {m.cell.upper()}, {m.num_layers} x {m.hidden_size}"
                + (f" — {os.path.basename(src)}" if src else ""))

    def _emit_start(self) -> None:
        cfg, m = self.config, self.model
        self._emit("start", version=_rnnrs.__version__, config=cfg.to_dict(), config_text=cfg.format(),
                   data={"corpus": self.source, "level": cfg.level, "tokens": int(self.ids.size),
                         "train_tokens": int(self.train_ids.size), "val_tokens": int(self.val_ids.size),
                         "vocab_size": self.vocab_size},
                   model={"cell": m.cell, "config": m.config, "parameters": m.num_parameters(), "repr": repr(m)},
                   total_steps=self.total_steps, steps_per_epoch=self.batches.num_batches(self.epoch),
                   tokens_per_step=cfg.batch_size * cfg.seq_len, out=None if cfg.out is None else os.fspath(cfg.out),
                   resumed_step=self.resumed_step, epoch=self.epoch, batch=self.batch)


def _remove_stale_temporaries(out: str) -> None:
    """Temporary files of writes cut short by SIGKILL or a power cut (never the real files)."""
    prefixes = tuple("." + name + "." for name in (CHECKPOINT_FILE, MODEL_FILE, PLOT_FILE))
    for name in os.listdir(out):
        if name.startswith(prefixes) and name.endswith(".tmp"):
            try:
                os.unlink(os.path.join(out, name))
            except OSError:
                pass


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except (OverflowError, ValueError):
        return math.inf if x == x else math.nan


def _due(every: Optional[int], step: int, epoch_end: bool) -> bool:
    if every is None:
        return epoch_end
    return every > 0 and step % every == 0


def _saved_config(trainer: Mapping[str, Any], path: str) -> TrainConfig:
    d = trainer.get("train_config")
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: expected the trainer state to hold train_config, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(d) - known
    if unknown:
        raise CheckpointError(f"{path}: unknown training options {sorted(unknown)} (written by a newer rnnrs?)")
    try:
        return TrainConfig(**d).validate()
    except (TypeError, ConfigError) as e:
        raise CheckpointError(f"{path}: invalid train_config: {e}") from None


# =========================================================================================== API
def train(data: Any = None, *, tokenizer: Any = None, callbacks: Iterable[Callback] = (),
          **options: Any) -> TrainResult:
    """Train a language model in one call and return a :class:`TrainResult`.

    ``data`` is the text (a ``str``), a 1-D array of token ids, or None with ``corpus="file.txt"``.
    ``options`` are :class:`TrainConfig` fields, e.g. ``epochs=5, hidden=256, cell="gru",
    embed=None, seq_len=35, out="runs/x"``. With ``resume=True`` and ``out=``, the run in ``out``
    continues from its checkpoint (the options that define the model and the data must match).
    """
    text, ids = (data, None) if isinstance(data, str) else (None, data)
    if options.get("resume") and options.get("out") is not None:
        overrides = {k: v for k, v in options.items() if k not in ("out", "resume")}
        return Trainer.resume(options["out"], text=text, ids=ids, tokenizer=tokenizer, callbacks=callbacks,
                              **overrides).run()
    return Trainer(TrainConfig(), text=text, ids=ids, tokenizer=tokenizer, callbacks=callbacks, **options).run()

"""rnnrs: fast CPU recurrent networks (RNN, GRU, LSTM) with a Rust core.

Layers follow PyTorch's conventions; see :mod:`rnnrs.layers`. Tokenizers and datasets for
language modelling live in :mod:`rnnrs.tokenizer` and :mod:`rnnrs.dataset`.
"""

from typing import TYPE_CHECKING, Any

from . import _rnnrs
from .dataset import LMBatches, random_batches, sequential_batches, split_train_val
from ._rnnrs import NonFiniteError, get_num_threads, set_num_threads
from .generate import LyricGenerator, UnknownTokenWarning
from .layers import GRU, LSTM, RNN
from .cells import GRUCell, LSTMCell, RNNCell
from .checkpoint import CheckpointError, load_checkpoint
from .model import LanguageModel
from .tokenizer import CharTokenizer, Vocab, WordTokenizer, load_tokenizer

if TYPE_CHECKING:
    from . import interop, keras, tune
    from .keras import Sequential
    from .trainer import StopTraining, TrainConfig, Trainer, TrainResult, train

__version__: str = _rnnrs.__version__

# The trainer, the Keras-style API and the interchange helpers load on first use, which keeps
# ``import rnnrs`` fast (benches/compare.py --system measures it).
_LAZY = {
    "interop": ("interop", None), "keras": ("keras", None), "Sequential": ("keras", "Sequential"),
    "train": ("trainer", "train"), "Trainer": ("trainer", "Trainer"), "TrainConfig": ("trainer", "TrainConfig"),
    "TrainResult": ("trainer", "TrainResult"), "StopTraining": ("trainer", "StopTraining"),
    "tune": ("tune", None),  # Ray Tune sweeps; Ray itself is imported only when a sweep runs
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'rnnrs' has no attribute {name!r}")
    import importlib
    module, attr = _LAZY[name]
    mod = importlib.import_module(f".{module}", __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))

__all__ = [
    "RNN",
    "GRU",
    "LSTM",
    "RNNCell",
    "GRUCell",
    "LSTMCell",
    "LanguageModel",
    "LyricGenerator",
    "UnknownTokenWarning",
    "interop",
    "keras",
    "Sequential",
    "NonFiniteError",
    "set_num_threads",
    "get_num_threads",
    "CheckpointError",
    "load_checkpoint",
    "train",
    "Trainer",
    "TrainConfig",
    "TrainResult",
    "StopTraining",
    "tune",
    "CharTokenizer",
    "WordTokenizer",
    "Vocab",
    "load_tokenizer",
    "LMBatches",
    "random_batches",
    "sequential_batches",
    "split_train_val",
    "__version__",
]

"""rnnrs: fast CPU recurrent networks (RNN, GRU, LSTM) with a Rust core.

Layers follow PyTorch's conventions; see :mod:`rnnrs.layers`. Tokenizers and datasets for
language modelling live in :mod:`rnnrs.tokenizer` and :mod:`rnnrs.dataset`.
"""

from . import _rnnrs
from . import interop, keras
from .dataset import LMBatches, random_batches, sequential_batches, split_train_val
from ._rnnrs import NonFiniteError
from .generate import LyricGenerator, UnknownTokenWarning
from .keras import Sequential
from .layers import GRU, LSTM, RNN
from .checkpoint import CheckpointError, load_checkpoint
from .model import LanguageModel
from .tokenizer import CharTokenizer, Vocab, WordTokenizer, load_tokenizer
from .trainer import StopTraining, TrainConfig, Trainer, TrainResult, train

__version__: str = _rnnrs.__version__

__all__ = [
    "RNN",
    "GRU",
    "LSTM",
    "LanguageModel",
    "LyricGenerator",
    "UnknownTokenWarning",
    "interop",
    "keras",
    "Sequential",
    "NonFiniteError",
    "CheckpointError",
    "load_checkpoint",
    "train",
    "Trainer",
    "TrainConfig",
    "TrainResult",
    "StopTraining",
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

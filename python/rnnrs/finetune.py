"""Fine-tuning: start a run from a trained model's weights and tokenizer (``--init-from DIR|builtin``,
``rnnrs.train(..., init_from=...)``), as char-rnn's ``-init_from`` and nanoGPT's ``init_from``.

The model keeps its architecture and its vocabulary: options that would change them take the
model's values, and one given with another value is an error naming both. Tokens of the new corpus
outside the vocabulary become ``<unk>`` (counted and reported). The optimizer starts fresh.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Tuple

BUILTIN = "builtin"

#: TrainConfig field -> how to read it from ``(model config, tokenizer)``.
_ARCHITECTURE = {
    "cell": lambda c, t: c["cell"],
    "embed": lambda c, t: c["embed_size"],
    "hidden": lambda c, t: c["hidden_size"],
    "layers": lambda c, t: c["num_layers"],
    "tie_weights": lambda c, t: bool(c.get("tie_weights", False)),
    "level": lambda c, t: t.level,
    "lower": lambda c, t: t.lower,
    "letters_only": lambda c, t: t.letters_only,
}
#: Options that only shape a new model's initial weights: meaningless when the weights are given.
_INITIALISERS = {"init": "pytorch", "recurrent_init": None, "init_std": 0.01, "forget_bias": None}


def model_path(init_from: Any) -> str:
    """The model directory or file ``init_from`` names (``"builtin"``: the built-in model)."""
    if os.fspath(init_from) == BUILTIN:
        from .generate import DEFAULT_MODEL_DIR
        return DEFAULT_MODEL_DIR
    return os.fspath(init_from)


def load(init_from: Any) -> Tuple[Any, Any, Dict[str, Any], str]:
    """``(model, tokenizer, info, path)`` of the model to start from; ``ValueError`` if it has no
    tokenizer, ``OSError``/:class:`rnnrs.CheckpointError` if it cannot be read."""
    from .checkpoint import load_model
    path = model_path(init_from)
    model, tokenizer, info = load_model(path)
    if tokenizer is None:
        raise ValueError(f"init_from {path}: expected a model saved with its tokenizer, got none")
    return model, tokenizer, info, path


def settings(model: Any, tokenizer: Any, info: Dict[str, Any], config: Any, given: Iterable[str],
             path: str) -> Dict[str, Any]:
    """The TrainConfig fields the run takes from the model. ``ValueError`` naming both values for an
    architecture option given with another value, or for an initialiser given at all."""
    given = set(given)
    c = model.config
    out: Dict[str, Any] = {}
    for name, read in _ARCHITECTURE.items():
        value = read(c, tokenizer)
        if name in given and getattr(config, name) != value:
            raise ValueError(f"{name}: the model in {path} has {value!r}, got {getattr(config, name)!r} "
                             "(fine-tuning keeps the model's architecture and vocabulary; drop the option)")
        out[name] = value
    for name, default in _INITIALISERS.items():
        if name in given and getattr(config, name) != default:
            raise ValueError(f"{name}: expected no initialiser with init_from (the weights come from {path}), "
                             f"got {getattr(config, name)!r}")
    if "newlines_as_spaces" not in given and "newlines_as_spaces" in info:
        out["newlines_as_spaces"] = bool(info["newlines_as_spaces"])
    if "dtype" not in given:
        out["dtype"] = c["dtype"]
    return out

"""Typical user code, checked with ``mypy --strict`` by ``tests/test_typing.py`` (and also run there,
so the examples stay true). Not a test module itself (pytest collects ``test_*.py`` only).

Each function is what a user would write; the annotations on the left-hand sides are the types the
public API promises.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import numpy.typing as npt

import rnnrs
from rnnrs import interop

FloatArray = npt.NDArray[np.floating[Any]]
TEXT = "twinkle twinkle little star\nhow I wonder what you are\n" * 20


def layers() -> float:
    """PyTorch-style layers: forward, backward, gradients, state dicts."""
    rng = np.random.default_rng(0)
    lstm = rnnrs.LSTM(8, 16, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    x = rng.standard_normal((5, 3, 8))
    y, (h_n, c_n) = lstm.forward(x)
    dx, (dh0, dc0) = lstm.backward(np.ones_like(y), (np.zeros_like(h_n), None))
    grads: Dict[str, np.ndarray] = lstm.grads()
    lstm.zero_grad()
    sd: Dict[str, np.ndarray] = lstm.state_dict()
    lstm.load_state_dict(sd)
    y_eval, (h_eval, _) = lstm.eval()(x)  # train()/eval() return the layer, as in PyTorch
    lstm.train()

    gru = rnnrs.GRU(8, 4, batch_first=True)
    xb = rng.standard_normal((3, 5, 8)).astype(np.float32)
    out, h = gru(xb)
    g_dx, g_dh0 = gru.backward(np.ones_like(out))

    rnn = rnnrs.RNN(8, 4, nonlinearity="relu", dtype=np.float64)
    r_out, r_h = rnn.forward(x, np.zeros((1, 3, 4)))
    n: int = rnn.num_parameters() + lstm.num_parameters() + gru.num_parameters()
    shapes: List[Tuple[int, ...]] = [a.shape for a in (dx, dh0, dc0, g_dx, g_dh0, y_eval, h_eval, r_h)]
    return float(y.sum() + c_n.sum() + r_out.sum() + h.sum()) + n + len(grads) + len(shapes)


def language_model(directory: str) -> float:
    """A character model trained step by step, saved and loaded."""
    tok = rnnrs.CharTokenizer()
    tok.fit(TEXT)
    ids: np.ndarray = tok.encode(TEXT)
    assert tok.vocab is not None
    model = rnnrs.LanguageModel(vocab_size=len(tok.vocab), embed_size=None, hidden_size=16, num_layers=1,
                                cell="gru", seed=1)
    model.set_optimizer("adam", lr=1e-2)
    train_ids, val_ids = rnnrs.split_train_val(ids, 0.1)
    state: Optional[Tuple[np.ndarray, Optional[np.ndarray]]] = None
    loss = grad_norm = 0.0
    for inputs, targets in rnnrs.sequential_batches(train_ids, batch_size=4, seq_len=8, seed=0, epoch=0):
        loss, grad_norm, state = model.train_step(inputs.T, targets.T, state, clip=1.0)
    val_loss, _ = model.evaluate(val_ids[:-1, None], val_ids[1:, None])
    logits, (h, c) = model.logits(ids[:10, None])
    probs = np.exp(logits[-1, 0] - logits[-1, 0].max())
    next_char: str = tok.decode([int(np.argmax(probs))])
    path: str = model.save(directory, tok)
    again = rnnrs.LanguageModel.load(path)
    config: Dict[str, Any] = again.config
    try:
        model.train_step(np.zeros((2, 1), np.int64), np.zeros((2, 1), np.int64))
    except rnnrs.NonFiniteError as e:  # a NaN/Inf loss or gradient leaves the weights unchanged
        print(e)
    return loss + grad_norm + val_loss + len(next_char) + len(config) + float(h.sum())


def training(directory: str) -> float:
    """One call, or a Trainer with a callback."""
    result = rnnrs.train(TEXT, hidden=16, layers=1, seq_len=8, batch_size=4, steps=3, quiet=True,
                         plot=False)
    model: rnnrs.LanguageModel = result.model
    events: List[str] = []

    def on_event(event: Dict[str, Any]) -> None:
        events.append(str(event["event"]))

    config = rnnrs.TrainConfig(hidden=16, layers=1, seq_len=8, batch_size=4, steps=2, quiet=True, plot=False,
                               out=os.path.join(directory, "run"))
    again: rnnrs.TrainResult = rnnrs.Trainer(config, text=TEXT, callbacks=[on_event]).run()
    ckpt = rnnrs.load_checkpoint(os.path.join(directory, "run"))
    return float(result.history.loss[-1]) + model.num_parameters() + len(events) + len(again.history.loss) \
        + len(ckpt.info)


def pytorch_and_keras() -> float:
    """Weights from Keras arrays (and the PyTorch helpers, which need torch at run time)."""
    rng = np.random.default_rng(0)
    kernel, recurrent, bias = rng.standard_normal((3, 8)), rng.standard_normal((2, 8)), np.zeros(8)
    lstm = rnnrs.LSTM.from_keras([[kernel, recurrent, bias]], dtype=np.float64)
    gru = interop.from_keras("gru", [rng.standard_normal((3, 6)), rng.standard_normal((2, 6)), np.zeros((2, 6))])
    y, (h_n, c_n) = lstm(rng.standard_normal((1, 4, 3)))
    back: List[List[np.ndarray]] = interop.to_keras(gru)
    if importlib.util.find_spec("torch") is None:  # PyTorch is optional
        return float(y.sum()) + len(back)
    module = lstm.to_torch()  # a torch.nn.LSTM
    same = rnnrs.LSTM.from_torch(module)
    y2, (h2, c2) = same.eval()(rng.standard_normal((1, 4, 3)))
    return float(y.sum() + y2.sum()) + len(back) + same.num_parameters()


def compiled_module() -> int:
    """The private compiled module is typed too (for library authors)."""
    from rnnrs import _rnnrs

    core = _rnnrs.Recurrent("lstm", 3, 4, num_layers=1, dtype="float64")
    y, h_n, c_n = core.forward(np.zeros((2, 1, 3)), train=False)
    names: List[str] = [name for name, _ in core.state_dict()]
    blob: bytes = _rnnrs.safetensors_dumps([("w", "F64", [1], np.zeros(1).tobytes())], {"k": "v"})
    tensors, meta = _rnnrs.safetensors_loads(blob)
    return len(names) + len(tensors) + len(meta) + y.ndim + (0 if c_n is None else c_n.ndim)


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        print(layers(), language_model(d), training(d), pytorch_and_keras(), compiled_module())


if __name__ == "__main__":
    main()

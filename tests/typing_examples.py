"""Typical user code, checked with ``mypy --strict`` by ``tests/test_typing.py`` (and also run there,
so the examples stay true). Not a test module itself (pytest collects ``test_*.py`` only).

Each function is what a user would write; the annotations on the left-hand sides are the types the
public API promises.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from typing import Any, Dict, Iterator, List, Optional, Tuple, assert_type

import numpy as np
import numpy.typing as npt

import rnnrs
from rnnrs import interop
from rnnrs.checkpoint import Checkpoint

FloatArray = npt.NDArray[np.floating[Any]]
Ids = npt.NDArray[np.int64]
LogProbs = npt.NDArray[np.float64]
State = Tuple[np.ndarray, Optional[np.ndarray]]
TEXT = "twinkle twinkle little star\nhow I wonder what you are\n" * 20


def layers() -> float:
    """PyTorch-style layers: forward, backward, gradients, state dicts."""
    rng = np.random.default_rng(0)
    lstm = rnnrs.LSTM(8, 16, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    x = rng.standard_normal((5, 3, 8))
    y, (h_n, c_n) = assert_type(lstm.forward(x), Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]])
    dx, (dh0, dc0) = lstm.backward(np.ones_like(y), (np.zeros_like(h_n), None))
    grads: Dict[str, np.ndarray] = lstm.grads()
    lstm.zero_grad()
    sd: Dict[str, np.ndarray] = lstm.state_dict()
    lstm.load_state_dict(sd)
    y_eval, (h_eval, _) = lstm.eval()(x)  # train()/eval() return the layer, as in PyTorch
    assert_type(lstm.train(), rnnrs.LSTM)

    gru = rnnrs.GRU(8, 4, batch_first=True)
    xb = rng.standard_normal((3, 5, 8)).astype(np.float32)
    out, h = assert_type(gru(xb), Tuple[np.ndarray, np.ndarray])
    g_dx, g_dh0 = gru.backward(np.ones_like(out))
    assert_type(gru.eval().train(), rnnrs.GRU)

    rnn = rnnrs.RNN(8, 4, nonlinearity="relu", dtype=np.float64)
    r_out, r_h = rnn.forward(x, np.zeros((1, 3, 4)))
    n: int = rnn.num_parameters() + lstm.num_parameters() + gru.num_parameters()
    assert_type(lstm.num_directions, int)
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
    train_ids, val_ids = assert_type(rnnrs.split_train_val(ids, 0.1), Tuple[np.ndarray, np.ndarray])
    state: Optional[State] = model.zero_state(4)
    loss = grad_norm = 0.0
    batches = rnnrs.LMBatches(train_ids, batch_size=4, seq_len=8, sampling="sequential", seed=0)
    assert batches.carries_state and batches.num_batches(0) >= 1
    for inputs, targets in rnnrs.sequential_batches(train_ids, batch_size=4, seq_len=8, seed=0, epoch=0):
        loss, grad_norm, state = assert_type(model.train_step(inputs.T, targets.T, state, clip=1.0),
                                             Tuple[float, float, State])
    val_loss, _ = assert_type(model.evaluate(val_ids[:-1, None], val_ids[1:, None]), Tuple[float, State])
    logits, (h, c) = model.logits(ids[:10, None])
    assert logits.shape == (10, 1, model.vocab_size) and h.shape == (model.num_layers, 1, model.hidden_size)
    probs = np.exp(logits[-1, 0] - logits[-1, 0].max())
    next_char: str = tok.decode([int(np.argmax(probs))])
    path: str = model.save(directory, tok)
    again = assert_type(rnnrs.LanguageModel.load(path), rnnrs.LanguageModel)
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
    ckpt = assert_type(rnnrs.load_checkpoint(os.path.join(directory, "run")), Checkpoint)
    return float(result.history.loss[-1]) + model.num_parameters() + len(events) + len(again.history.loss) \
        + len(ckpt.info)


def pytorch_and_keras() -> float:
    """Weights from Keras arrays (and the PyTorch helpers, which need torch at run time)."""
    rng = np.random.default_rng(0)
    kernel, recurrent, bias = rng.standard_normal((3, 8)), rng.standard_normal((2, 8)), np.zeros(8)
    lstm = assert_type(rnnrs.LSTM.from_keras([[kernel, recurrent, bias]], dtype=np.float64), rnnrs.LSTM)
    gru = interop.from_keras("gru", [rng.standard_normal((3, 6)), rng.standard_normal((2, 6)), np.zeros((2, 6))])
    y, (h_n, c_n) = lstm(rng.standard_normal((1, 4, 3)))
    back: List[List[np.ndarray]] = interop.to_keras(gru)
    if importlib.util.find_spec("torch") is None:  # PyTorch is optional
        return float(y.sum()) + len(back)
    module = lstm.to_torch()  # a torch.nn.LSTM
    same = assert_type(rnnrs.LSTM.from_torch(module), rnnrs.LSTM)
    y2, (h2, c2) = same.eval()(rng.standard_normal((1, 4, 3)))
    return float(y.sum() + y2.sum()) + len(back) + same.num_parameters()


def generation() -> float:
    """Sampling from a tiny trained model: token ids with ``LanguageModel``, text with ``LyricGenerator``."""
    tok = rnnrs.CharTokenizer()
    tok.fit(TEXT)
    assert tok.vocab is not None
    model = rnnrs.LanguageModel(vocab_size=len(tok.vocab), embed_size=8, hidden_size=16, num_layers=1,
                                cell="lstm", seed=2)
    model.set_optimizer("adam", lr=1e-2)
    for inputs, targets in rnnrs.random_batches(tok.encode(TEXT), batch_size=4, seq_len=8, seed=0, epoch=0):
        model.train_step(inputs.T, targets.T, clip=1.0)

    # Token ids in, token ids out (precisely typed: int64 ids, float64 log-probabilities).
    prefix = tok.encode("twinkle")
    ids = assert_type(model.sample(prefix, length=12, temperature=0.8, top_p=0.9, seed=3), Ids)
    ids2, logprobs = assert_type(model.sample(prefix, length=12, temperature=0.8, top_p=0.9, seed=3,
                                              return_logprobs=True), Tuple[Ids, LogProbs])
    assert np.array_equal(ids, ids2) and logprobs.shape == ids.shape and bool(np.all(logprobs <= 0))
    greedy = model.sample(prefix, length=5, greedy=True)
    many = assert_type(model.sample_many([prefix, prefix[:3]], length=12, temperature=0.8, top_p=0.9, seed=3),
                       List[Ids])
    assert np.array_equal(many[0], ids)  # sequence i of a batch uses seed + i
    scored = assert_type(model.sample_many([prefix], length=4, seed=3, return_logprobs=True),
                         List[Tuple[Ids, LogProbs]])
    best, total = assert_type(model.beam_search(prefix, length=6, beam_width=3), Tuple[Ids, float])
    _, _, per_token = assert_type(model.beam_search(prefix, length=6, beam_width=3, return_logprobs=True),
                                  Tuple[Ids, float, LogProbs])
    first: str = tok.decode(ids)

    # Text in, text out.
    gen = rnnrs.LyricGenerator(model, tok)
    text = gen.generate("twinkle", length=20, temperature=0.8, seed=1)
    assert isinstance(text, str) and text.startswith("twinkle")
    pieces = assert_type(gen.stream("twinkle", length=20, temperature=0.8, seed=1, chunk_size=4), Iterator[str])
    assert "".join(pieces) == text  # streaming gives the same text
    with_lps = gen.generate("how I", length=10, seed=2, stop=["\n"], return_logprobs=True)
    assert isinstance(with_lps, tuple)
    line, lps = with_lps
    texts: List[str] = gen.generate_many(["twinkle", "little"], length=10, seed=1)
    assert texts[0] == gen.generate("twinkle", length=10, seed=1)
    beamed = gen.beam("twinkle", length=10, width=2, return_logprob=True)
    assert isinstance(beamed, tuple)
    beam_text, beam_logprob = beamed
    score: float = gen.score(" little star", prefix="twinkle")
    return (float(total) + float(per_token.sum()) + float(lps.sum()) + beam_logprob + score + len(first)
            + len(line) + len(beam_text) + len(texts) + len(scored) + greedy.size + best.size)


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
        print(layers(), language_model(d), training(d), pytorch_and_keras(), generation(), compiled_module())


if __name__ == "__main__":
    main()

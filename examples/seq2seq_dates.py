"""Translate dates written many ways ("3rd of March 2021", "03/03/21", "Wednesday, 3 March 2021")
into ISO form ("2021-03-03") with an encoder-decoder (Keras' functional API, as keras.io's
``lstm_seq2seq``).

The encoder (``Embedding(mask_zero=True)`` over characters, pre-padded, then ``LSTM(return_state=
True)``) hands its final states to the decoder LSTM as ``initial_state``; the decoder is trained
with teacher forcing (its input is the target shifted right after a start token). For inference
the trained layers are rewired into an encoder model and a one-step decoder model, and the answer
is decoded greedily and with beam search. Dates are generated here (no downloads), 1950-2049, in
ten formats; two-digit years mean 1950-2049. The score is exact match on held-out dates.

    python examples/seq2seq_dates.py            # full size
    python examples/seq2seq_dates.py --small    # smoke test (seconds)
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from rnnrs import keras
from rnnrs.keras import layers

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
START, END = "\t", "\n"
OUT_LEN = 10  # "YYYY-MM-DD"


def ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


FORMATS = [
    lambda d: f"{ordinal(d.day)} of {MONTHS[d.month - 1]} {d.year}",           # 3rd of March 2021
    lambda d: f"{d.day:02d}/{d.month:02d}/{d.year % 100:02d}",                 # 03/03/21
    lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",                      # March 3, 2021
    lambda d: f"{d.day} {MONTHS[d.month - 1][:3]} {d.year}",                   # 3 Mar 2021
    lambda d: f"{d.year}.{d.month:02d}.{d.day:02d}",                           # 2021.03.03
    lambda d: f"{DAYS[d.weekday()]}, {d.day} {MONTHS[d.month - 1]} {d.year}",  # Wednesday, 3 March 2021
    lambda d: f"{d.day}-{d.month}-{d.year}",                                   # 3-3-2021
    lambda d: f"{d.day} {MONTHS[d.month - 1].lower()} {d.year % 100:02d}",     # 3 march 21
    lambda d: f"{d.year}{d.month:02d}{d.day:02d}",                             # 20210303
    lambda d: f"{MONTHS[d.month - 1][:3].upper()} {ordinal(d.day)} {d.year}",  # MAR 3rd 2021
]


def make_dates(n: int, rng: np.random.Generator) -> Tuple[List[str], List[str]]:
    first, span = dt.date(1950, 1, 1).toordinal(), dt.date(2049, 12, 31).toordinal() - dt.date(1950, 1, 1).toordinal()
    days = rng.integers(0, span + 1, size=n)
    fmts = rng.integers(0, len(FORMATS), size=n)
    dates = [dt.date.fromordinal(first + int(k)) for k in days]
    return [FORMATS[f](d) for f, d in zip(fmts, dates)], [d.isoformat() for d in dates]


def build(n_in: int, n_out: int, units: int, emb: int) -> Tuple[keras.Model, keras.Model, keras.Model]:
    """The training model and, sharing its layers, the inference encoder and one-step decoder."""
    encoder_inputs = keras.Input(shape=(None,), dtype="int32")
    x = layers.Embedding(n_in, emb, mask_zero=True)(encoder_inputs)
    _, state_h, state_c = layers.LSTM(units, return_state=True)(x)
    encoder_states = [state_h, state_c]

    decoder_inputs = keras.Input(shape=(None,), dtype="int32")
    decoder_embedding = layers.Embedding(n_out, emb)
    decoder_lstm = layers.LSTM(units, return_sequences=True, return_state=True)
    decoder_dense = layers.Dense(n_out, activation="softmax")
    y, _, _ = decoder_lstm(decoder_embedding(decoder_inputs), initial_state=encoder_states)
    model = keras.Model([encoder_inputs, decoder_inputs], decoder_dense(y))

    encoder_model = keras.Model(encoder_inputs, encoder_states)
    h_in, c_in = keras.Input(shape=(units,)), keras.Input(shape=(units,))
    y, h, c = decoder_lstm(decoder_embedding(decoder_inputs), initial_state=[h_in, c_in])
    decoder_model = keras.Model([decoder_inputs, h_in, c_in], [decoder_dense(y), h, c])
    return model, encoder_model, decoder_model


def greedy(encoder_model: keras.Model, decoder_model: keras.Model, x: np.ndarray, start: int) -> np.ndarray:
    """``(N, OUT_LEN)`` output ids, each step the most likely character."""
    h, c = encoder_model.predict(x, batch_size=512)
    tok = np.full((len(x), 1), start)
    out = np.zeros((len(x), OUT_LEN), dtype=np.int64)
    for t in range(OUT_LEN):
        p, h, c = decoder_model.predict([tok, h, c], batch_size=512)
        out[:, t] = tok[:, 0] = np.argmax(p[:, 0], axis=-1)
    return out


def beam_search(encoder_model: keras.Model, decoder_model: keras.Model, x: np.ndarray, start: int,
                width: int) -> np.ndarray:
    """``(N, OUT_LEN)`` output ids: the most likely sequence among ``width`` kept per step (all
    examples' beams decoded as one batch)."""
    n = len(x)
    h, c = encoder_model.predict(x, batch_size=512)
    h, c = np.repeat(h, width, axis=0), np.repeat(c, width, axis=0)
    tok = np.full((n * width, 1), start)
    score = np.zeros((n, width))
    score[:, 1:] = -np.inf  # all beams start equal: keep one until the first step branches
    seqs = np.zeros((n, width, 0), dtype=np.int64)
    for _ in range(OUT_LEN):
        p, h, c = decoder_model.predict([tok, h, c], batch_size=512)
        v = p.shape[-1]
        total = score[:, :, None] + np.log(np.maximum(p[:, 0].reshape(n, width, v), 1e-30))
        best = np.argsort(-total.reshape(n, -1), axis=1, kind="stable")[:, :width]
        beam, char = best // v, best % v
        score = np.take_along_axis(total.reshape(n, -1), best, axis=1)
        seqs = np.concatenate([np.take_along_axis(seqs, beam[:, :, None], axis=1), char[:, :, None]], axis=2)
        rows = (np.arange(n)[:, None] * width + beam).reshape(-1)
        h, c = h[rows], c[rows]
        tok = char.reshape(-1, 1)
    return seqs[:, 0]


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=20000, help="training dates (10 %% for validation)")
    p.add_argument("--test", type=int, default=2000, help="held-out dates")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--units", type=int, default=128)
    p.add_argument("--embedding", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--beam", type=int, default=3, help="beam width")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--small", action="store_true", help="tiny run for tests")
    p.add_argument("--verbose", type=int, default=2)
    a = p.parse_args(argv)
    if a.small:
        a.train, a.test, a.epochs, a.units, a.embedding = 200, 50, 1, 16, 8

    rng = np.random.default_rng(a.seed)
    src, tgt = make_dates(a.train, rng)
    test_src, test_tgt = make_dates(a.test, np.random.default_rng(a.seed + 1))
    in_chars = sorted({ch for s in src + test_src for ch in s})
    in_ids = {ch: i + 1 for i, ch in enumerate(in_chars)}  # 0: padding
    out_chars = [START, END] + sorted(set("0123456789-"))
    out_ids = {ch: i for i, ch in enumerate(out_chars)}
    maxlen = max(len(s) for s in src + test_src)

    def encode(texts: Sequence[str]) -> np.ndarray:
        return keras.utils.pad_sequences([[in_ids[ch] for ch in s] for s in texts], maxlen=maxlen)

    x, xt = encode(src), encode(test_src)
    y = np.array([[out_ids[ch] for ch in t] for t in tgt])                     # (N, 10)
    dec_in = np.concatenate([np.full((len(y), 1), out_ids[START]), y[:, :-1]], axis=1)  # teacher forcing

    keras.utils.set_random_seed(a.seed)
    model, encoder_model, decoder_model = build(len(in_ids) + 1, len(out_chars), a.units, a.embedding)
    model.compile(optimizer=keras.optimizers.Adam(a.lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], clipnorm=5.0)
    t0 = time.perf_counter()
    model.fit([x, dec_in], y, batch_size=a.batch_size, epochs=a.epochs, validation_split=0.1, verbose=a.verbose,
              callbacks=[keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1)])
    secs = time.perf_counter() - t0
    want = np.array([[out_ids[ch] for ch in t] for t in test_tgt])
    t1 = time.perf_counter()
    g = greedy(encoder_model, decoder_model, xt, out_ids[START])
    b = beam_search(encoder_model, decoder_model, xt, out_ids[START], a.beam)
    dsecs = time.perf_counter() - t1
    exact_greedy = float(np.mean((g == want).all(axis=1)))
    exact_beam = float(np.mean((b == want).all(axis=1)))
    for s, row in list(zip(test_src, b))[:5]:
        print(f"{s!r:>32} -> {''.join(out_chars[i] for i in row)}")
    print(f"held-out exact match: greedy {exact_greedy:.3f}, beam search (width {a.beam}) {exact_beam:.3f}; "
          f"{a.train} dates, {a.epochs} epochs in {secs:.0f} s, decoding {len(xt)} dates twice in {dsecs:.1f} s")
    return {"greedy": exact_greedy, "beam": exact_beam, "seconds": secs}


if __name__ == "__main__":
    main()

"""Keras' "addition RNN": learn to add two numbers given as a string ("535+61" -> "596").

keras.io's ``addition_rnn`` example with its model, unchanged but for the imports: an LSTM encoder,
``RepeatVector`` of its final state, an LSTM decoder with ``return_sequences``, and a softmax over
the 12 characters at each output step; queries reversed, one-hot inputs, ``categorical_crossentropy``
with Adam. Questions are generated here (no downloads). The score is the exact-match accuracy of
whole answers on held-out questions.

    python examples/addition.py                         # keras.io's size: 3 digits, 50000 questions
    python examples/addition.py --digits 2 --train 8000 # a quicker run
"""

from __future__ import annotations

import argparse
import time
from typing import Dict, Optional, Sequence

import numpy as np

from rnnrs import keras
from rnnrs.keras import layers


class CharacterTable:
    """One-hot encoding of strings over a fixed alphabet (as in the Keras example)."""

    def __init__(self, chars: str) -> None:
        self.chars = sorted(set(chars))
        self.char_indices = {c: i for i, c in enumerate(self.chars)}
        self.indices_char = {i: c for i, c in enumerate(self.chars)}

    def encode(self, text: str, num_rows: int) -> np.ndarray:
        x = np.zeros((num_rows, len(self.chars)))
        for i, c in enumerate(text):
            x[i, self.char_indices[c]] = 1
        return x

    def decode(self, x: np.ndarray, calc_argmax: bool = True) -> str:
        if calc_argmax:
            x = x.argmax(axis=-1)
        return "".join(self.indices_char[int(i)] for i in x)


def make_questions(n: int, digits: int, rng: np.random.Generator) -> tuple:
    maxlen = digits + 1 + digits
    possible = 10 ** digits * (10 ** digits + 1) // 2  # (unordered pairs: a+b and b+a are one question)
    if n > possible:
        raise ValueError(f"--train: expected at most {possible} distinct questions of {digits} digits, got {n}")
    questions, expected, seen = [], [], set()
    while len(questions) < n:
        a, b = (int("".join(rng.choice(list("0123456789"), size=int(rng.integers(1, digits + 1))))) for _ in range(2))
        key = tuple(sorted((a, b)))
        if key in seen:
            continue
        seen.add(key)
        q = f"{a}+{b}"
        questions.append((q + " " * (maxlen - len(q)))[::-1])  # reversed, as REVERSE = True
        ans = str(a + b)
        expected.append(ans + " " * (digits + 1 - len(ans)))
    return questions, expected


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--digits", type=int, default=3)
    p.add_argument("--train", type=int, default=50000, help="questions (10 %% held out)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--units", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--small", action="store_true", help="tiny run for tests")
    p.add_argument("--verbose", type=int, default=2)
    a = p.parse_args(argv)
    if a.small:
        a.digits, a.train, a.epochs, a.units = 1, 50, 1, 8
    digits, maxlen = a.digits, 2 * a.digits + 1
    chars = "0123456789+ "
    ctable = CharacterTable(chars)
    rng = np.random.default_rng(a.seed)
    questions, expected = make_questions(a.train, digits, rng)
    x = np.zeros((len(questions), maxlen, len(chars)), dtype=bool)
    y = np.zeros((len(questions), digits + 1, len(chars)), dtype=bool)
    for i, sentence in enumerate(questions):
        x[i] = ctable.encode(sentence, maxlen)
    for i, sentence in enumerate(expected):
        y[i] = ctable.encode(sentence, digits + 1)
    split_at = len(x) - len(x) // 10
    (x_train, x_val), (y_train, y_val) = (x[:split_at], x[split_at:]), (y[:split_at], y[split_at:])

    keras.utils.set_random_seed(a.seed)
    model = keras.Sequential()
    model.add(layers.Input((maxlen, len(chars))))
    model.add(layers.LSTM(a.units))
    model.add(layers.RepeatVector(digits + 1))
    model.add(layers.LSTM(a.units, return_sequences=True))
    model.add(layers.Dense(len(chars), activation="softmax"))
    model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam(a.lr), metrics=["accuracy"])
    t0 = time.perf_counter()
    model.fit(x_train, y_train, batch_size=a.batch_size, epochs=a.epochs, validation_data=(x_val, y_val),
              verbose=a.verbose)
    secs = time.perf_counter() - t0
    preds = np.argmax(model.predict(x_val), axis=-1)
    exact = float(np.mean((preds == np.argmax(y_val, axis=-1)).all(axis=1)))
    q, want, got = ctable.decode(x_val[0])[::-1], ctable.decode(y_val[0]), ctable.decode(preds[0], calc_argmax=False)
    print(f"Q {q} T {want} P {got}")
    print(f"held-out exact match {exact:.3f}; {len(x_train)} questions of {digits} digits, {a.epochs} epochs "
          f"in {secs:.0f} s")
    return {"exact_match": exact, "seconds": secs}


if __name__ == "__main__":
    main()

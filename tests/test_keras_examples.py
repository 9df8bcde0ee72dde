"""The Keras examples at reduced size, each against its floor (the full-size figures are in
docs/sequence-models.md): dates >= 90 % exact match (greedy and beam search), addition >= 50 %
exact match, sentiment >= 80 % accuracy (and above the bag-of-words vote)."""

import importlib.util
import pathlib

import numpy as np


def load_example(name):
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sentiment_bidirectional_lstm_reaches_80_percent():
    r = load_example("sentiment").main(["--train", "1500", "--test", "500", "--epochs", "6", "--verbose", "0"])
    assert r["accuracy"] >= 0.80 and r["accuracy"] > r["baseline"] + 0.2, r


def test_addition_rnn_reaches_50_percent_exact_match():
    r = load_example("addition").main(["--digits", "2", "--train", "3000", "--epochs", "15", "--units", "64",
                                       "--lr", "0.01", "--verbose", "0"])
    assert r["exact_match"] >= 0.50, r


def test_seq2seq_dates_reaches_90_percent_exact_match():
    r = load_example("seq2seq_dates").main(["--train", "5000", "--test", "500", "--epochs", "16", "--units", "64",
                                            "--lr", "0.01", "--verbose", "0"])
    assert r["greedy"] >= 0.90 and r["beam"] >= 0.90, r


def test_small_runs_and_beam_search_of_width_one_is_greedy():
    for name in ("sentiment", "addition", "seq2seq_dates"):
        r = load_example(name).main(["--small", "--verbose", "0"])
        assert all(np.isfinite(v) for v in r.values()), (name, r)
    mod = load_example("seq2seq_dates")
    from rnnrs import keras
    keras.utils.set_random_seed(3)
    model, enc, dec = mod.build(12, 13, 8, 4)
    x = np.random.default_rng(0).integers(1, 12, size=(7, 9))
    np.testing.assert_array_equal(mod.beam_search(enc, dec, x, 0, 1), mod.greedy(enc, dec, x, 0))
    b = mod.beam_search(enc, dec, x, 0, 4)
    assert b.shape == (7, mod.OUT_LEN)

"""Generation: LanguageModel.sample/sample_many/beam_search, LyricGenerator and the generate command.

References are the model's own sequence pass (``model.logits`` on the growing sequence) in float64.
The sampling loop's per-step products round differently from that pass (same math, another
summation order), so comparisons of logits allow ``LOGIT_TOL``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

import rnnrs
from rnnrs import CharTokenizer, LanguageModel, WordTokenizer
from rnnrs import _rnnrs
from rnnrs.generate import (DEFAULT_MODEL_DIR, LyricGenerator, UnknownTokenWarning, add_generate_arguments,
                            run_generate)

#: Step logits vs the sequence pass (float32 rounding, different summation order).
LOGIT_TOL = 1e-4
#: Log-probabilities vs float64 log-softmax of the sequence pass.
LOGPROB_TOL = 1e-4

TEXT = ("明月几时有\n把酒问青天\n不知天上宫阙\n今夕是何年\n我欲乘风归去\n又恐琼楼玉宇\n高处不胜寒\n"
        "起舞弄清影\n何似在人间\n") * 12


# ========================================================================================= fixtures
def train(model: LanguageModel, ids: np.ndarray, steps: int, seq_len: int = 16, batch: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    model.set_optimizer("adam", lr=0.02)
    for _ in range(steps):
        starts = rng.integers(0, ids.size - seq_len - 1, size=batch)
        x = np.stack([ids[s:s + seq_len] for s in starts], axis=1)
        y = np.stack([ids[s + 1:s + seq_len + 1] for s in starts], axis=1)
        model.train_step(x, y, clip=1.0)
    return model


@pytest.fixture(scope="module")
def char_tok():
    return CharTokenizer().fit(TEXT)


@pytest.fixture(scope="module")
def trained(char_tok):
    """A small LSTM trained briefly on a repeated verse: peaked, non-trivial distributions."""
    model = LanguageModel(len(char_tok.vocab), embed_size=16, hidden_size=48, num_layers=2, seed=3)
    return train(model, char_tok.encode(TEXT), steps=60)


@pytest.fixture(scope="module")
def model_dir(trained, char_tok, tmp_path_factory):
    d = tmp_path_factory.mktemp("lyrics")
    trained.save(d, char_tok, info={"note": "test model"})
    return str(d)


@pytest.fixture(scope="module")
def gen(trained, char_tok):
    return LyricGenerator(trained, char_tok)


def tiny(cell="lstm", embed=6, vocab=23, hidden=12, layers=2, dtype=np.float32, seed=5):
    return LanguageModel(vocab, embed_size=embed, hidden_size=hidden, num_layers=layers, cell=cell, seed=seed,
                         dtype=dtype)


def last_logits(model: LanguageModel, seq) -> np.ndarray:
    logits, _ = model.logits(np.asarray(seq, dtype=np.int64).reshape(-1, 1))
    return logits[-1, 0].astype(np.float64)


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


# ======================================================================================= the loop
def test_same_seed_same_ids_and_different_seeds_differ(trained):
    a = trained.sample([1, 2, 3], length=60, temperature=1.0, seed=7)
    assert a.dtype == np.int64 and a.shape == (60,)
    np.testing.assert_array_equal(a, trained.sample([1, 2, 3], length=60, temperature=1.0, seed=7))
    assert not np.array_equal(a, trained.sample([1, 2, 3], length=60, temperature=1.0, seed=8))


@pytest.mark.parametrize("make", [lambda t: t, lambda t: tiny("gru", embed=None), lambda t: tiny("rnn", dtype=np.float64)])
def test_greedy_is_the_argmax_of_the_models_own_logits(trained, make):
    model = make(trained)
    prefix = [1, 2, 3]
    ids, lps = model.sample(prefix, length=30, greedy=True, return_logprobs=True)
    seq = list(prefix)
    for t, (tok, lp) in enumerate(zip(ids.tolist(), lps.tolist())):
        z = last_logits(model, seq)
        top2 = np.sort(z)[-2:]
        assert z[tok] >= z.max() - LOGIT_TOL, f"step {t}"
        if top2[1] - top2[0] > 10 * LOGIT_TOL:
            assert tok == int(np.argmax(z)), f"step {t}"
        assert lp == pytest.approx(log_softmax(z)[tok], abs=LOGPROB_TOL)
        seq.append(tok)


def test_temperature_to_zero_is_greedy(trained):
    greedy = trained.sample([4, 5], length=40, greedy=True)
    np.testing.assert_array_equal(trained.sample([4, 5], length=40, temperature=0.0, seed=3), greedy)
    for seed in range(3):
        np.testing.assert_array_equal(trained.sample([4, 5], length=40, temperature=1e-7, seed=seed), greedy)
        # Scaled logits would overflow float32: the limit (greedy), not NaN.
        np.testing.assert_array_equal(trained.sample([4, 5], length=40, temperature=1e-300, top_k=3, seed=seed), greedy)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_top_k_only_emits_the_k_most_probable(k):
    model = tiny(vocab=30, dtype=np.float64)
    ids = model.sample([1], length=40, temperature=1.5, top_k=k, seed=k)
    seq = [1]
    for tok in ids.tolist():
        z = last_logits(model, seq)
        kth = np.sort(z)[-k]
        assert z[tok] >= kth - LOGIT_TOL
        seq.append(tok)


@pytest.mark.parametrize("p,temperature,k", [(0.5, 1.0, None), (0.9, 0.7, None), (0.3, 2.0, None), (0.8, 1.0, 6)])
def test_top_p_only_emits_the_nucleus(p, temperature, k):
    model = tiny(vocab=40, dtype=np.float64, seed=9)
    ids = model.sample([2, 3], length=60, temperature=temperature, top_p=p, top_k=k, seed=1)
    seq = [2, 3]
    for tok in ids.tolist():
        z = last_logits(model, seq) / temperature
        order = np.argsort(-z, kind="stable")
        if k is not None:
            order = order[:k]
        w = np.exp(z[order] - z[order].max())
        cum_before = np.concatenate([[0.0], np.cumsum(w / w.sum())[:-1]])
        allowed = set(order[cum_before < p + 1e-6].tolist())
        assert tok in allowed, (tok, sorted(allowed))
        seq.append(tok)


def test_logprobs_are_the_models_log_softmax(trained):
    ids, lps = trained.sample([1, 2], length=25, temperature=0.8, top_p=0.9, repetition_penalty=1.2, seed=2,
                              return_logprobs=True)
    assert lps.dtype == np.float64 and lps.shape == ids.shape
    seq = [1, 2]
    for tok, lp in zip(ids.tolist(), lps.tolist()):
        assert lp == pytest.approx(log_softmax(last_logits(trained, seq))[tok], abs=LOGPROB_TOL)
        seq.append(tok)


@pytest.mark.parametrize("r", [1.5, 0.7])
def test_repetition_penalty_is_ctrl_style(trained, r):
    prefix = [1, 2, 3]
    ids = trained.sample(prefix, length=25, greedy=True, repetition_penalty=r)
    seq = list(prefix)
    for tok in ids.tolist():
        z = last_logits(trained, seq)
        seen = sorted(set(seq))
        z[seen] = np.where(z[seen] > 0, z[seen] / r, z[seen] * r)
        assert z[tok] >= z.max() - LOGIT_TOL
        seq.append(tok)
    flat = tiny(seed=11)
    assert not np.array_equal(flat.sample(prefix, 25, greedy=True), flat.sample(prefix, 25, greedy=True,
                                                                                repetition_penalty=1.5))


def test_stop_tokens_end_the_sequence_and_are_included(trained):
    free = trained.sample([1], length=40, greedy=True)
    stop = int(free[6])
    first = int(np.flatnonzero(free == stop)[0])
    out = trained.sample([1], length=40, greedy=True, stop_tokens=[stop])
    np.testing.assert_array_equal(out, free[:first + 1])
    out2 = trained.sample_many([[1], [1, 2, 3]], length=40, greedy=True, stop_tokens=(stop,))
    np.testing.assert_array_equal(out2[0], out)


PREFIXES = [[1], [2, 3, 4, 5, 6, 7], [3, 3], [4, 1, 2], [5] * 9]
OPTIONS = [dict(), dict(temperature=0.7, top_k=3, repetition_penalty=1.3), dict(temperature=1.4, top_p=0.8, stop_tokens=[2]),
           dict(greedy=True, repetition_penalty=2.0)]


@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("make", [lambda t: t, lambda t: tiny("gru", embed=None, vocab=30), lambda t: tiny("rnn_relu", dtype=np.float64)])
def test_a_batch_equals_each_sequence_alone(trained, make, opts):
    model = make(trained)
    batch = model.sample_many(PREFIXES, length=20, seed=10, return_logprobs=True, **opts)
    for i, p in enumerate(PREFIXES):
        ids, lps = model.sample(p, length=20, seed=10 + i, return_logprobs=True, **opts)
        np.testing.assert_array_equal(batch[i][0], ids)
        np.testing.assert_array_equal(batch[i][1], lps)


@given(st.lists(st.lists(st.integers(0, 22), min_size=1, max_size=6), min_size=1, max_size=4),
       st.integers(0, 2**64 - 8), st.sampled_from(OPTIONS))
def test_batch_equals_alone_property(prefixes, seed, opts):
    model = tiny()
    batch = model.sample_many(prefixes, length=8, seed=seed, **opts)
    for i, p in enumerate(prefixes):
        np.testing.assert_array_equal(batch[i], model.sample(p, length=8, seed=seed + i, **opts))


def test_beam_search_width_one_is_greedy_and_wider_never_worse(trained):
    for model in (trained, tiny("gru", vocab=18, hidden=8)):
        for prefix in ([1], [2, 3, 4]):
            g, g_lps = model.sample(prefix, length=15, greedy=True, return_logprobs=True)
            ids, total, lps = model.beam_search(prefix, length=15, beam_width=1, return_logprobs=True)
            np.testing.assert_array_equal(ids, g)
            assert total == pytest.approx(float(np.sum(g_lps)), abs=1e-9)
            for width in (2, 3, 8):
                ids, total, lps = model.beam_search(prefix, 15, width, return_logprobs=True)
                assert ids.shape == (15,)
                assert total >= float(np.sum(g_lps)) - 1e-9, width
                seq, want = list(prefix), 0.0
                for tok in ids.tolist():
                    want += log_softmax(last_logits(model, seq))[tok]
                    seq.append(tok)
                assert total == pytest.approx(want, abs=1e-3)


def test_results_do_not_depend_on_the_number_of_threads(tmp_path):
    code = ("import numpy as np, rnnrs\n"
            "m = rnnrs.LanguageModel(2100, 32, 64, 2, seed=1)\n"
            "out = m.sample_many([[1, 2], [3], [4, 5, 6], [7, 8, 9, 10]] * 2, length=12, top_p=0.9, seed=5)\n"
            "b = m.beam_search([1, 2], 6, 3)[0]\n"
            "h = m.sample_many([[1, 2], [3]], length=12, top_p=0.9, seed=5, weights='f16', return_logprobs=True)\n"
            "print([a.tolist() for a in out], b.tolist(), [(i.tolist(), l.tolist()) for i, l in h])\n")
    outs = []
    for threads in ("1", "2"):
        env = dict(os.environ, RAYON_NUM_THREADS=threads)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert outs[0] == outs[1]


def test_sampling_releases_the_gil():
    model = tiny(vocab=3000, embed=64, hidden=128, layers=2)
    done = threading.Event()
    ticks = 0

    def work():
        model.sample([1], length=600, seed=0)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    start = time.perf_counter()
    while not done.is_set():
        ticks += 1
    t.join()
    elapsed = time.perf_counter() - start
    # With the GIL held for the whole call, this loop could not run while sampling.
    assert elapsed < 0.05 or ticks > 1000, (ticks, elapsed)


# ==================================================================================== validation
BAD = [
    (dict(temperature=-1.0), ValueError, "temperature: expected a finite number >= 0"),
    (dict(temperature=float("nan")), ValueError, "temperature"),
    (dict(temperature="hot"), TypeError, "temperature: expected a finite number"),
    (dict(temperature=True), TypeError, "temperature"),
    (dict(top_k=0), ValueError, "top_k: expected an integer >= 1, got 0"),
    (dict(top_k=2.5), TypeError, "top_k"),
    (dict(top_p=0.0), ValueError, "top_p: expected a number in (0, 1] or None, got 0.0"),
    (dict(top_p=1.5), ValueError, "got 1.5"),
    (dict(repetition_penalty=0.0), ValueError, "repetition_penalty: expected a finite number > 0"),
    (dict(stop_tokens=[99]), ValueError, "stop token: expected an id in [0, 23), got 99"),
    (dict(stop_tokens=[-1]), ValueError, "stop token: expected an integer >= 0, got -1"),
    (dict(stop_tokens="a"), TypeError, "stop_tokens"),
    (dict(length=-1), ValueError, "length: expected an integer >= 0, got -1"),
    (dict(length=2.0), TypeError, "length"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=2**64), ValueError, "seed"),
    (dict(greedy="yes"), TypeError, "greedy"),
    (dict(prefix_ids=[]), ValueError, "prefix_ids: expected at least one token id"),
    (dict(prefix_ids=[1, 23]), ValueError, "prefix_ids: expected token ids in [0, 23), got 23"),
    (dict(prefix_ids=[-1]), ValueError, "got -1"),
    (dict(prefix_ids=[[1, 2]]), ValueError, "expected a 1-D array"),
    (dict(prefix_ids=[1.5]), TypeError, "integer token ids"),
    (dict(prefix_ids="明月"), TypeError, "encode text with a tokenizer"),
    (dict(weights="bf16"), ValueError, 'weights: expected one of "auto", "f32", "f16", got \'bf16\''),
    (dict(weights=16), TypeError, "weights: expected one of"),
    (dict(weights=None), TypeError, "weights"),
]


@pytest.mark.parametrize("kwargs,exc,message", BAD)
def test_invalid_arguments_raise_clear_errors(kwargs, exc, message):
    model = tiny()
    kwargs = dict(kwargs)
    prefix = kwargs.pop("prefix_ids", [1, 2])
    with pytest.raises(exc) as e:
        model.sample(prefix, length=kwargs.pop("length", 5), **kwargs)
    assert message in str(e.value)


def test_invalid_batch_and_beam_arguments():
    model = tiny()
    with pytest.raises(ValueError, match=r"prefixes\[1\]: expected at least one token id"):
        model.sample_many([[1], []], 5)
    with pytest.raises(TypeError, match="prefixes"):
        model.sample_many(np.array([1, 2]), 5)
    assert model.sample_many([], 5) == []
    with pytest.raises(ValueError, match="beam_width: expected an integer >= 1, got 0"):
        model.beam_search([1], 5, 0)
    with pytest.raises(ValueError, match="prefix_ids"):
        model.beam_search([30], 5, 2)
    with pytest.raises(ValueError, match=r"expected an id in \[0, 23\)"):
        _rnnrs.sample(model._core, [np.array([1])], [0], 5, stop_tokens=[23])


# ===================================================================================== generator
def test_generate_returns_prefix_and_continuation(gen):
    text = gen.generate("明月", length=30, seed=1)
    assert text.startswith("明月") and len(text) == 2 + 30
    assert text == gen.generate("明月", length=30, seed=1)
    text2, lps = gen.generate("明月", length=30, seed=1, return_logprobs=True)
    assert text2 == text and lps.shape == (30,) and np.all(lps <= 0)
    assert gen.score(text[2:], prefix="明月") == pytest.approx(float(lps.sum()), abs=1e-3)


@pytest.mark.parametrize("chunk", [1, 3, 1000])
@pytest.mark.parametrize("opts", [dict(), dict(temperature=1.2, top_p=None, top_k=5), dict(greedy=True, stop=["\n"]),
                                  dict(repetition_penalty=1.3)])
def test_streaming_equals_generate(gen, chunk, opts):
    pieces = list(gen.stream("把酒", length=40, seed=4, chunk_size=chunk, **opts))
    assert pieces[0] == "把酒"
    assert "".join(pieces) == gen.generate("把酒", length=40, seed=4, **opts)
    if chunk == 1 and "stop" not in opts:
        assert len(pieces) == 41


def test_stream_is_lazy_and_incremental(gen):
    it = gen.stream("明月", length=10**6, seed=0)  # would take long to generate at once
    got = [next(it) for _ in range(5)]
    assert got[0] == "明月" and all(len(p) == 1 for p in got[1:])


def test_generate_many_equals_generate_with_consecutive_seeds(gen):
    prefixes = ["明月", "我欲乘风", "高"]
    out = gen.generate_many(prefixes, length=25, seed=7, top_k=8)
    assert out == [gen.generate(p, length=25, seed=7 + i, top_k=8) for i, p in enumerate(prefixes)]
    assert gen.generate_many([], length=5) == []


def test_stop_token_strings(gen):
    text = gen.generate("明月", length=50, greedy=True, stop=["\n"])
    assert text.endswith("\n") and text.count("\n") == 1
    with pytest.raises(ValueError, match="stop: expected tokens of the model's vocabulary, got 'Z'"):
        gen.generate("明月", stop=["Z"])


def test_beam(gen):
    text, total = gen.beam("明月", length=20, width=4, return_logprob=True)
    assert text.startswith("明月") and len(text) == 22
    g, lps = gen.generate("明月", length=20, greedy=True, return_logprobs=True)
    assert total >= float(lps.sum()) - 1e-9
    assert gen.beam("明月", length=20, width=1) == g


def test_unknown_prefix_characters_are_dropped_with_a_warning(gen):
    with pytest.warns(UnknownTokenWarning, match="'X', '☃'"):
        text = gen.generate("明X月☃", length=20, seed=3)
    assert text.startswith("明X月☃")
    assert text[4:] == gen.generate("明月", length=20, seed=3)[2:]
    # Nothing known, or an empty prefix: start from the newline token (not part of the text).
    assert gen.start_id == gen.tokenizer.vocab["\n"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = gen.generate("", length=20, seed=3)
    assert empty == gen.generate("\n", length=20, seed=3)[1:]
    with pytest.warns(UnknownTokenWarning):
        assert gen.generate("XY", length=20, seed=3) == "XY" + empty
    with pytest.warns(UnknownTokenWarning):
        pieces = list(gen.stream("XY", length=5, seed=3))
    assert "".join(pieces) == "XY" + empty[:5]


def test_start_token_without_newline_is_the_most_frequent(trained):
    tok = CharTokenizer().fit(TEXT.replace("\n", "，"))
    g = LyricGenerator(tiny(vocab=len(tok.vocab)), tok)
    assert g.start_id == tok.vocab[tok.vocab.token_freqs[0][0]]
    assert len(g.generate("", length=7)) == 7


def test_word_level_generator_joins_with_spaces():
    text = "the moon over the river the wind in the pines " * 30
    tok = WordTokenizer().fit(text)
    model = train(LanguageModel(len(tok.vocab), 8, 24, 1, seed=2), tok.encode(text), steps=30)
    g = LyricGenerator(model, tok)
    out = g.generate("the moon", length=6, seed=1)
    assert out.startswith("the moon ") and len(out.split()) == 8
    assert "".join(g.stream("the moon", length=6, seed=1)) == out
    assert g.generate("", length=3, seed=1).count(" ") == 2
    # A prefix ending with a space is continued after it: no second space.
    out = g.generate("the moon ", length=6, seed=1)
    assert out.startswith("the moon ") and "  " not in out and len(out.split()) == 8
    assert "".join(g.stream("the moon ", length=6, seed=1)) == out


def test_letters_only_prefix_keeps_its_trailing_separator():
    """The book's preprocessing strips a text's ends, but a prefix is continued: a model trained on
    letters and single spaces must be given the space a trailing separator stands for, and the text
    must not show a second one."""
    text = "the time machine by h g wells " * 30
    tok = CharTokenizer(letters_only=True, lower=True).fit(text)
    model = train(LanguageModel(len(tok.vocab), 8, 32, 1, seed=2), tok.encode(text), steps=60)
    g = LyricGenerator(model, tok)
    space = tok.vocab[" "]
    ids, _ = g.encode_prefix("The time ")
    assert ids.tolist() == tok.encode("the time").tolist() + [space]
    for prefix in ("the time ", "the time, ", "the time,", "the time\n"):
        assert g.encode_prefix(prefix)[0].tolist() == ids.tolist()
    assert g.encode_prefix("the time")[0].tolist() == ids.tolist()[:-1]
    assert g.encode_prefix("...")[0].tolist() == [g.start_id]  # nothing left: no lone space
    # Greedy after the space is the next word, not a space: one space in the printed text.
    out = g.generate("the time ", length=8, greedy=True)
    assert out == "the time " + tok.decode(model.sample(ids, length=8, greedy=True))
    assert "  " not in out and out.startswith("the time m")
    # A separator that is not whitespace is followed by the space the model saw.
    assert g.generate("the time,", length=8, greedy=True) == "the time, " + out[len("the time "):]
    for prefix in ("the time,", "the time "):
        assert "".join(g.stream(prefix, length=8, greedy=True, chunk_size=3)) == \
            g.generate(prefix, length=8, greedy=True)
    assert g.score("machine", prefix="the time,") == pytest.approx(g.score("machine", prefix="the time "))


def test_load_and_default(model_dir, gen, tmp_path, trained):
    loaded = LyricGenerator.load(model_dir)
    assert loaded.info.get("note") == "test model"
    assert loaded.generate("明月", length=15, seed=2) == gen.generate("明月", length=15, seed=2)
    with pytest.raises(OSError):
        LyricGenerator.load(tmp_path / "missing")
    trained.save(tmp_path / "no_tok")
    with pytest.raises(ValueError, match="tokenizer"):
        LyricGenerator.load(tmp_path / "no_tok")
    builtin = os.path.join(DEFAULT_MODEL_DIR, "model.safetensors")
    if os.path.isfile(builtin) or os.environ.get("RNNRS_REQUIRED"):  # the package ships it: CI must find it
        g = LyricGenerator.default()
        assert len(g.generate("明月", length=30, seed=0)) == 2 + 30
    else:
        with pytest.raises(FileNotFoundError, match="songci"):
            LyricGenerator.default()


def test_generator_argument_errors(gen, trained):
    with pytest.raises(TypeError, match="prefix: expected a str"):
        gen.generate(12)
    with pytest.raises(TypeError, match="prefixes: expected a list of str"):
        gen.generate_many("明月")
    with pytest.raises(ValueError, match="temperature"):
        gen.generate("明月", temperature=-0.5)
    with pytest.raises(ValueError, match="chunk_size"):
        gen.stream("明月", chunk_size=0)
    with pytest.raises(ValueError, match="expected a vocabulary of"):
        LyricGenerator(trained, CharTokenizer().fit("abc"))
    with pytest.raises(TypeError, match="model"):
        LyricGenerator("model", gen.tokenizer)


# ============================================================================================ CLI
def cli(argv, capsys):
    parser = argparse.ArgumentParser(prog="rnnrs generate")
    add_generate_arguments(parser)
    rc = run_generate(parser.parse_args(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_prints_prefix_and_continuation(model_dir, gen, capsys):
    rc, out, err = cli(["--model", model_dir, "--prefix", "明月", "--length", "20", "--seed", "3"], capsys)
    assert rc == 0 and err == ""
    assert out == gen.generate("明月", length=20, seed=3) + "\n"
    rc, out2, _ = cli(["--model", model_dir, "--prefix", "明月", "--length", "20", "--seed", "3", "--stream"], capsys)
    assert rc == 0 and out2 == out


def test_cli_samples_json_greedy_beam(model_dir, gen, capsys):
    args = ["--model", model_dir, "--prefix", "明月", "--length", "12", "--seed", "5", "--num-samples", "3",
            "--top-k", "5", "--top-p", "0.95", "--temperature", "1.1", "--repetition-penalty", "1.1"]
    rc, out, _ = cli(args, capsys)
    want = gen.generate_many(["明月"] * 3, length=12, seed=5, top_k=5, top_p=0.95, temperature=1.1,
                             repetition_penalty=1.1)
    expected = "\n".join(f"--- sample {i + 1}/3 (seed {5 + i}) ---\n{t}\n" for i, t in enumerate(want))
    assert rc == 0 and out == expected
    rc, out, _ = cli(args + ["--json"], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["text"] for r in rows] == want and [r["seed"] for r in rows] == [5, 6, 7]
    assert all(r["prefix"] == "明月" and r["tokens"] == 12 and r["logprob"] < 0 for r in rows)
    rc, out, _ = cli(args + ["--stream"], capsys)
    assert rc == 0 and out == expected
    rc, out, _ = cli(["--model", model_dir, "--prefix", "明月", "--length", "12", "--greedy"], capsys)
    assert out == gen.generate("明月", length=12, greedy=True) + "\n"
    rc, out, _ = cli(["--model", model_dir, "--prefix", "明月", "--length", "12", "--beam", "3", "--json"], capsys)
    row = json.loads(out)
    assert row["text"] == gen.beam("明月", 12, 3) and row["tokens"] == 12 and row["seed"] is None


@pytest.mark.parametrize("argv,message", [
    (["--model", "{missing}", "--prefix", "明月"], "rnnrs generate: error: "),
    (["--model", "{dir}", "--prefix", "明月", "--temperature", "-1"], "temperature: expected a finite number >= 0"),
    (["--model", "{dir}", "--prefix", "明月", "--top-p", "0"], "top_p"),
    (["--model", "{dir}", "--prefix", "明月", "--beam", "2", "--num-samples", "2"], "--num-samples 1"),
])
def test_cli_user_errors_are_one_line_and_status_2(model_dir, tmp_path, capsys, argv, message):
    argv = [a.format(dir=model_dir, missing=str(tmp_path / "nope")) for a in argv]
    rc, out, err = cli(argv, capsys)
    assert rc == 2 and out == ""
    assert message in err and err.count("\n") == 1, err


def test_cli_without_model_uses_the_builtin(capsys):
    rc, out, err = cli(["--prefix", "明月", "--length", "10"], capsys)
    if os.path.isfile(os.path.join(DEFAULT_MODEL_DIR, "model.safetensors")) or os.environ.get("RNNRS_REQUIRED"):
        assert rc == 0 and out.startswith("明月")
    else:
        assert rc == 2 and "built-in model is not installed" in err and "songci" in err


def test_cli_warns_about_unknown_prefix_characters(model_dir, capsys):
    rc, out, err = cli(["--model", model_dir, "--prefix", "明Q月", "--length", "5"], capsys)
    assert rc == 0 and out.startswith("明Q月")
    assert err.startswith("rnnrs generate: warning: ") and "'Q'" in err


def test_cli_from_a_subprocess(model_dir, gen):
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    probe = subprocess.run([sys.executable, "-m", "rnnrs", "generate", "--help"], capture_output=True, text=True,
                           env=env, timeout=60)
    if probe.returncode != 0 or "--prefix" not in probe.stdout:
        pytest.skip(f"`python -m rnnrs generate` is not wired in this installation: {probe.stderr.strip()[-200:]}")
    r = subprocess.run([sys.executable, "-m", "rnnrs", "generate", "--model", model_dir, "--prefix", "明月",
                        "--length", "25", "--seed", "9", "--top-p", "0.8"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == gen.generate("明月", length=25, seed=9, top_p=0.8) + "\n"
    r = subprocess.run([sys.executable, "-m", "rnnrs", "generate", "--model", model_dir, "--prefix", "明月",
                        "--temperature", "-2"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r.stderr


# ================================================================================== banned tokens
def test_banned_tokens_are_never_generated(trained):
    prefix = [1, 2, 3]
    free = np.concatenate([trained.sample(prefix, length=80, temperature=1.5, seed=s) for s in range(6)])
    common = np.bincount(free).argsort()[::-1][:3]           # the tokens it generates most
    assert np.isin(free, common).sum() > 20                  # (so the check below can fail)
    for s in range(6):
        got = trained.sample(prefix, length=80, temperature=1.5, seed=s, banned_tokens=common)
        assert not np.isin(got, common).any()
        got = trained.sample(prefix, length=40, temperature=1.0, top_k=5, top_p=0.9, seed=s, banned_tokens=common)
        assert not np.isin(got, common).any()


def test_greedy_with_banned_tokens_is_the_argmax_of_the_rest(trained):
    prefix, banned = [1, 2, 3], [int(trained.sample([1, 2, 3], length=1, greedy=True)[0]), 0]
    got, lps = trained.sample(prefix, length=12, greedy=True, banned_tokens=banned, return_logprobs=True)
    seq = list(prefix)
    for t, lp in zip(got, lps):
        z = last_logits(trained, seq)
        assert abs(lp - log_softmax(z)[t]) < LOGPROB_TOL       # the raw model's log-probability
        z[banned] = -np.inf
        assert t == int(np.argmax(z))
        seq.append(int(t))


def test_banned_tokens_validation(trained):
    with pytest.raises(ValueError, match="banned token: expected an id in"):
        trained.sample([1], length=3, banned_tokens=[trained.vocab_size])
    with pytest.raises(ValueError, match="banned token: expected an integer >= 0, got -1"):
        trained.sample([1], length=3, banned_tokens=[-1])
    with pytest.raises(ValueError, match="fewer than all"):
        trained.sample([1], length=3, banned_tokens=list(range(trained.vocab_size)))
    with pytest.raises(TypeError, match="banned_tokens"):
        trained.sample([1], length=3, banned_tokens=5)


def test_the_generator_bans_unk_by_default(char_tok):
    untrained = LanguageModel(len(char_tok.vocab), embed_size=4, hidden_size=8, num_layers=1, seed=0)
    wild = LyricGenerator(untrained, char_tok, ban=())
    assert any("<unk>" in wild.generate("明月", length=200, temperature=3.0, top_p=None, seed=s) for s in range(5))
    tame = LyricGenerator(untrained, char_tok)
    assert tame.ban == ("<unk>",)
    for s in range(5):
        assert "<unk>" not in tame.generate("明月", length=200, temperature=3.0, top_p=None, seed=s)
        assert "<unk>" not in "".join(tame.stream("明月", length=50, temperature=3.0, top_p=None, seed=s))
    with pytest.raises(TypeError, match="ban: expected a sequence of tokens"):
        LyricGenerator(untrained, char_tok, ban="<unk>")


def test_the_builtin_model_bans_unk_and_the_lost_character_mark():
    g = LyricGenerator.default()
    assert set(g.ban) == {"<unk>", "□"} and "□" in g.tokenizer.vocab
    texts = g.generate_many(["明月"] * 24, length=200, seed=0)
    assert not any("<unk>" in t or "□" in t for t in texts)


def test_cli_ban_options(model_dir, capsys):
    rc, out, _ = cli(["--model", model_dir, "--prefix", "明月", "--length", "30", "--ban", "月", "--ban", "明",
                      "--seed", "3"], capsys)
    assert rc == 0 and "明" not in out[2:] and "月" not in out[2:]
    rc, out, _ = cli(["--model", model_dir, "--prefix", "明月", "--length", "5", "--no-ban"], capsys)
    assert rc == 0 and out.startswith("明月")
    # A token the model does not have (a typo, or a word at character level) is a usage error.
    rc, out, err = cli(["--model", model_dir, "--prefix", "明月", "--length", "5", "--ban", "明月"], capsys)
    assert rc == 2 and out == "" and "--ban" in err and "'明月'" in err and "one character per token" in err


def test_cli_ban_adds_to_the_default_bans(capsys):
    # Hot sampling from the built-in model emits `□` and `<unk>` unless banned (checked first, so
    # the test can fail); `--ban` must keep those default bans and add its own token.
    argv = ["--prefix", "明月", "--length", "1500", "--num-samples", "4", "--temperature", "1.5", "--top-p", "1.0"]
    rc, out, _ = cli(argv + ["--no-ban"], capsys)
    assert rc == 0 and ("□" in out or "<unk>" in out)
    rc, out, _ = cli(argv + ["--ban", "春"], capsys)
    body = out.replace("明月", "")
    assert rc == 0 and "□" not in out and "<unk>" not in out and "春" not in body
    rc, out, _ = cli(argv[:4] + ["--no-ban", "--ban", "春"], capsys)
    assert rc == 0 and "春" not in out.replace("明月", "")


def test_ban_accepts_any_iterable_once(char_tok):
    untrained = LanguageModel(len(char_tok.vocab), embed_size=4, hidden_size=8, num_layers=1, seed=0)
    g = LyricGenerator(untrained, char_tok, ban=(t for t in ["<unk>", "a"]))
    assert g.ban == ("<unk>", "a")


# ========================================================================== float16 weight storage
#: Log-probabilities with weights="f16" (float32 weights rounded to float16) vs float32's.
F16_LOGPROB_TOL = 1e-2


def rounded_to_f16(model: LanguageModel) -> LanguageModel:
    """``model`` with every weight rounded to float16 (exactly representable)."""
    out = LanguageModel(**model.config)
    out.load_state_dict({k: v.astype(np.float16).astype(np.float32) for k, v in model.state_dict().items()})
    return out


def weights_used(model: LanguageModel, weights: str = "auto") -> str:
    return _rnnrs.Sampler(model._core, [np.array([1], dtype=np.int64)], [0], 1, weights=weights).weights_used


def samples(model, weights, **opts):
    out = model.sample_many([[1, 2, 3], [4], [5, 6]], length=30, seed=9, return_logprobs=True, weights=weights,
                            **opts)
    return [(ids.tolist(), lps.tolist()) for ids, lps in out]


@pytest.mark.parametrize("opts", [dict(), dict(temperature=0.7, top_p=0.9, repetition_penalty=1.2), dict(greedy=True)])
def test_float16_exact_weights_give_the_float32_results_automatically(trained, opts):
    exact = rounded_to_f16(trained)
    assert weights_used(exact) == "f16" and weights_used(exact, "f32") == "f32"
    want = samples(exact, "f32", **opts)
    assert samples(exact, "auto", **opts) == want  # exact float equality of every logprob
    assert samples(exact, "f16", **opts) == want
    # Ordinary float32 weights: unchanged default.
    assert weights_used(trained) == "f32" and weights_used(trained, "f16") == "f16"
    assert samples(trained, "auto", **opts) == samples(trained, "f32", **opts)


def test_the_builtin_model_streams_float16_with_the_float32_results():
    if not os.path.isfile(os.path.join(DEFAULT_MODEL_DIR, "model.safetensors")) and not os.environ.get("RNNRS_REQUIRED"):
        pytest.skip("the built-in model is not installed")
    g = LyricGenerator.default()
    assert weights_used(g.model) == "f16"
    text, lps = g.generate("明月", length=40, seed=4, return_logprobs=True)
    text32, lps32 = g.generate("明月", length=40, seed=4, return_logprobs=True, weights="f32")
    assert text == text32 and np.array_equal(lps, lps32)
    assert "".join(g.stream("明月", length=40, seed=4, weights="f16")) == text


def test_lossy_float16_logprobs_are_close_to_float32(trained):
    worst = 0.0
    for seed in range(4):
        prefix = [1 + seed, 2, 3]
        ids, lps = trained.sample(prefix, length=25, seed=seed, return_logprobs=True, weights="f16")
        seq = list(prefix)
        for tok, lp in zip(ids, lps):
            worst = max(worst, abs(lp - log_softmax(last_logits(trained, seq))[tok]))
            seq.append(int(tok))
    assert 0.0 < worst < F16_LOGPROB_TOL


def test_the_float16_copy_follows_every_change_of_the_weights(trained, char_tok):
    model = rounded_to_f16(trained)
    before = samples(model, "f16")
    train(model, char_tok.encode(TEXT), steps=2, seed=1)  # the weights change (and are no longer exact)
    after = samples(model, "f16")
    assert after != before
    assert after == samples(_fresh(model), "f16")
    assert weights_used(model) == "f32"
    # Loading float16-exact weights: the automatic copy is made from them.
    other = rounded_to_f16(tiny(vocab=model.vocab_size, embed=16, hidden=48, seed=8))
    model.load_state_dict(other.state_dict())
    assert weights_used(model) == "f16"
    assert samples(model, "auto") == samples(other, "f32")
    # Mid-stream: a streaming sampler uses the weights the model has at each advance.
    def stream(weights):
        m = rounded_to_f16(trained)
        s = _rnnrs.Sampler(m._core, [np.array([1, 2], dtype=np.int64)], [3], 30, weights=weights)
        (a, _), = s.advance(10)
        m.load_state_dict(other.state_dict())
        (b, lp), = s.advance(20)
        return a.tolist() + b.tolist(), lp.tolist()
    assert stream("auto") == stream("f32")


def _fresh(model: LanguageModel) -> LanguageModel:
    """A new model with ``model``'s weights (and no cached float16 copy)."""
    out = LanguageModel(**model.config)
    out.load_state_dict(model.state_dict())
    return out


def test_float16_needs_a_float32_model():
    m64 = tiny(dtype=np.float64)
    assert m64.sample([1], length=3, weights="auto").size == 3
    with pytest.raises(ValueError, match="float32 model"):
        m64.sample([1], length=3, weights="f16")


def test_cli_weights_option(model_dir, gen, capsys):
    rc, out, err = cli(["--model", model_dir, "--prefix", "明月", "--length", "20", "--seed", "3", "--weights", "f16"],
                       capsys)
    assert rc == 0 and err == ""
    assert out == gen.generate("明月", length=20, seed=3, weights="f16") + "\n"
    with pytest.raises(SystemExit):
        cli(["--model", model_dir, "--prefix", "明月", "--weights", "f8"], capsys)
    assert "invalid choice: 'f8'" in capsys.readouterr().err


# ===================================================================================== interrupts
@pytest.mark.parametrize("call,length", [
    (lambda m, n: m.sample([1, 2], length=n, temperature=1.0, seed=0), 20_000_000),
    (lambda m, n: m.sample_many([[1], [2], [3]], length=n, temperature=1.0, seed=0), 10_000_000),
    (lambda m, n: m.beam_search([1, 2], length=n, beam_width=3), 1_500_000),
], ids=["sample", "sample_many", "beam_search"])
def test_ctrl_c_stops_a_long_generation(call, length):
    """One call that would generate for many seconds must honour Ctrl-C while it runs: the Rust
    loop looks at Python's signal handlers between chunks. (Without that the KeyboardInterrupt
    only comes when the whole call is done: the check is that it comes long before.)"""
    model = tiny()
    t = time.perf_counter()
    call(model, length // 100)
    whole = 100 * (time.perf_counter() - t)  # what the uninterrupted call would take
    timer = threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT))
    t = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            call(model, length)
    finally:
        timer.cancel()
    assert time.perf_counter() - t < whole / 4, f"interrupted after {time.perf_counter() - t:.1f} s of ~{whole:.0f}"
    assert len(model.sample([1], length=5, seed=0)) == 5  # the model is still usable

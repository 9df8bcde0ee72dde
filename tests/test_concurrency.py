"""Threads: one model shared by many generating threads, independent models trained and sampled in
parallel, and the GIL released during every long Rust call.

* Many Python threads generating from **one** model at once get exactly what sequential calls get
  (``LanguageModel.sample``/``sample_many``/``beam_search``/``logits``, ``LyricGenerator.generate``
  and ``stream``): generation reads the model and keeps its state per call.
* Training one model while generating from another, in parallel threads, gives the same weights and
  texts as doing the two one after the other.
* A pure-Python thread keeps running while the main thread is inside a long Rust call (the binding
  releases the GIL: ``py.detach``), for the calls that can take long.
* Using one model from another thread *while it trains* is refused with an exception (never a
  crash or a torn read): the call that finds the model busy raises ``RuntimeError("Already
  borrowed")`` (PyO3's borrow check). A model is not meant to be trained and read at the same time.
"""

import threading
import time

import numpy as np
import pytest

import rnnrs
from rnnrs import LSTM, CharTokenizer, LanguageModel, LyricGenerator
from rnnrs import _rnnrs

TEXT = "the cat sat on the mat. the dog ate the log. a bird in the hand.\n" * 40
TOK = CharTokenizer().fit(TEXT)
V = len(TOK.vocab)
THREADS = 8


def _model(seed=0, hidden=32, cell="lstm"):
    m = LanguageModel(V, 16, hidden, 2, cell, seed=seed)
    m.set_optimizer("adam", 1e-2)
    ids = TOK.encode(TEXT)
    x, y = ids[:20 * 8].reshape(20, 8), ids[1:20 * 8 + 1].reshape(20, 8)
    for _ in range(3):
        m.train_step(x, y, None, 1.0)
    return m


def run_threads(jobs):
    """Run ``jobs`` (callables) in threads started together; return their results in order."""
    results, errors = [None] * len(jobs), []
    barrier = threading.Barrier(len(jobs))

    def work(i, job):
        try:
            barrier.wait()
            results[i] = job()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((i, e))

    threads = [threading.Thread(target=work, args=(i, j)) for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    return results


def _same(a, b):
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


@pytest.fixture(scope="module")
def model():
    return _model()


CALLS = {
    "sample": lambda m, g, i: m.sample([1 + i % 5, 2], length=60, temperature=0.9, top_p=0.95, seed=i,
                                       return_logprobs=True),
    "sample_many": lambda m, g, i: m.sample_many([[1], [2, 3], [4]], length=40, top_k=5, seed=10 * i),
    "beam_search": lambda m, g, i: m.beam_search([1 + i % 3], length=20, beam_width=3, return_logprobs=True),
    "logits": lambda m, g, i: m.logits(np.full((30, 4), i % V, np.int64))[0],
    "evaluate": lambda m, g, i: m.evaluate(np.full((30, 4), i % V, np.int64), np.full((30, 4), (i + 1) % V))[0],
    "generate": lambda m, g, i: g.generate("the ", length=50, seed=i, repetition_penalty=1.2),
    "stream": lambda m, g, i: list(g.stream("a ", length=30, seed=i, chunk_size=7)),
    "score": lambda m, g, i: g.score("the cat sat", prefix="a "),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_many_threads_on_one_model_match_sequential_calls(model, call):
    gen = LyricGenerator(model, TOK)
    fn = CALLS[call]
    # twice as many jobs as threads' worth of seeds: the same seed twice must agree too
    seeds = [i % THREADS for i in range(2 * THREADS)]
    sequential = [fn(model, gen, s) for s in seeds]
    parallel = run_threads([lambda s=s: fn(model, gen, s) for s in seeds])
    assert all(_same(p, q) for p, q in zip(parallel, sequential))
    assert _same(parallel[0], parallel[THREADS])


def test_mixed_calls_from_many_threads_on_one_model(model):
    gen = LyricGenerator(model, TOK)
    jobs = [(name, i) for i in range(3) for name in sorted(CALLS)]
    sequential = [CALLS[n](model, gen, i) for n, i in jobs]
    parallel = run_threads([lambda n=n, i=i: CALLS[n](model, gen, i) for n, i in jobs])
    assert all(_same(p, q) for p, q in zip(parallel, sequential))


def _train_some(m, steps=15):
    ids = TOK.encode(TEXT)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        starts = rng.integers(0, ids.size - 33, 8)
        x = np.stack([ids[s:s + 32] for s in starts], axis=1)
        y = np.stack([ids[s + 1:s + 33] for s in starts], axis=1)
        losses.append(m.train_step(x, y, None, 1.0)[0])
    return losses, m.state_dict()


def test_training_and_generating_different_models_in_parallel(model):
    a, b = _model(seed=1), _model(seed=2)
    want_train = _train_some(_model(seed=1))
    gen = LyricGenerator(b, TOK)
    want_text = [gen.generate("the ", length=80, seed=s) for s in range(4)]
    got = run_threads([lambda: _train_some(a)] + [lambda s=s: gen.generate("the ", length=80, seed=s) for s in range(4)])
    losses, sd = got[0]
    assert losses == want_train[0]
    assert all(np.array_equal(sd[k], want_train[1][k]) for k in sd)
    assert got[1:] == want_text


def test_several_models_training_in_parallel_match_sequential_training():
    seeds = [3, 4, 5]
    want = [_train_some(_model(seed=s), steps=8) for s in seeds]
    got = run_threads([lambda s=s: _train_some(_model(seed=s), steps=8) for s in seeds])
    for (wl, wsd), (gl, gsd) in zip(want, got):
        assert wl == gl and all(np.array_equal(wsd[k], gsd[k]) for k in wsd)


def test_trainer_runs_in_a_thread_while_another_generates(tmp_path, model):
    gen = LyricGenerator(model, TOK)
    want = rnnrs.train(TEXT, steps=6, embed=8, hidden=16, layers=1, seq_len=16, batch_size=4, quiet=True, plot=False)
    want_texts = [gen.generate("a ", length=40, seed=s) for s in range(3)]
    got = run_threads([lambda: rnnrs.train(TEXT, steps=6, embed=8, hidden=16, layers=1, seq_len=16, batch_size=4,
                                           quiet=True, plot=False, out=str(tmp_path / "run"))]
                      + [lambda s=s: gen.generate("a ", length=40, seed=s) for s in range(3)])
    r = got[0]
    assert r.history.loss == want.history.loss
    assert got[1:] == want_texts
    assert rnnrs.checkpoint.load_checkpoint(tmp_path / "run").trainer["step"] == 6


def test_reading_a_model_while_it_trains_is_an_exception_not_a_crash():
    m = _model(hidden=128)
    ids = np.random.default_rng(0).integers(0, V, (64, 32))
    stop = threading.Event()
    seen = []

    gen = LyricGenerator(m, TOK)

    def reader():
        k = 0
        while not stop.is_set():
            k += 1
            try:
                if k % 3 == 0:
                    m.logits(ids[:4, :2])
                elif k % 3 == 1:
                    m.sample([1], length=5, seed=k)
                else:  # the streaming sampler borrows the model at creation and at every chunk
                    "".join(gen.stream("the ", length=6, chunk_size=2, seed=k))
            except RuntimeError as e:
                seen.append(str(e))

    t = threading.Thread(target=reader)
    t.start()
    trained = 0
    try:
        for _ in range(8):
            try:
                m.train_step(ids, ids)
                trained += 1
            except RuntimeError as e:  # the reader holds the model right now
                seen.append(str(e))
    finally:
        stop.set()
        t.join(timeout=60)
    assert all("borrowed" in s for s in seen), seen[:3]
    assert all(np.isfinite(v).all() for v in m.state_dict().values())
    m.logits(ids[:4, :2])  # and the model is fine afterwards


# ---------------------------------------------------------------------------------- GIL released
def _gaps_during(call):
    """Run ``call()`` here while a pure-Python thread ticks every 2 ms; return ``(elapsed, longest
    stretch of the call without a tick)``. With the GIL held for the whole call the ticker could not
    run at all, and the longest stretch would be the whole call."""
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            time.sleep(0.002)
            ticks.append(time.perf_counter())

    t = threading.Thread(target=ticker)
    t.start()
    time.sleep(0.02)
    t0 = time.perf_counter()
    call()
    t1 = time.perf_counter()
    stop.set()
    t.join()
    inside = [x for x in ticks if t0 <= x <= t1]
    points = [t0] + inside + [t1]
    return t1 - t0, max(b - a for a, b in zip(points, points[1:]))


@pytest.fixture(scope="module")
def big():
    m = LanguageModel(V, 64, 256, 2, "lstm", seed=1)
    m.set_optimizer("adam", 1e-3)
    return m


# Each call takes a size ``n``; the test doubles it until one call lasts long enough to measure
# (release builds on a fast machine finish small calls in a few milliseconds).
LONG_CALLS = {
    "LanguageModel.train_step": lambda m, n: m.train_step(np.ones((24 * n, 32), np.int64), np.ones((24 * n, 32), np.int64)),
    "LanguageModel.logits": lambda m, n: m.logits(np.ones((48 * n, 32), np.int64)),
    "LanguageModel.evaluate": lambda m, n: m.evaluate(np.ones((48 * n, 32), np.int64), np.ones((48 * n, 32), np.int64)),
    "LanguageModel.sample": lambda m, n: m.sample([1], length=300 * n, seed=1),
    "LanguageModel.beam_search": lambda m, n: m.beam_search([1], length=40 * n, beam_width=8),
    "Sampler.advance": lambda m, n: _rnnrs.Sampler(m._core, [np.array([1])], [0], 300 * n).advance(300 * n),
    "LSTM forward+backward": lambda m, n: _lstm_pass(n),
    "LanguageModel()": lambda m, n: LanguageModel(5000, 512, 1024 * n, 2),
    "safetensors_loads": lambda m, n: _rnnrs.safetensors_loads(_BIG_FILE(n)),
}


def _lstm_pass(n):
    layer = LSTM(64, 256, 2, seed=0)
    y, _ = layer.forward(np.ones((30 * n, 32, 64), np.float32))
    layer.backward(np.ones_like(y))


_cache = {}


def _BIG_FILE(n):
    if n not in _cache:
        raw = [(f"t{i}", "F32", [1 << 20], np.zeros(1 << 20, "<f4").tobytes()) for i in range(48 * n)]
        _cache[n] = _rnnrs.safetensors_dumps(raw, {})
    return _cache[n]


@pytest.mark.parametrize("call", sorted(LONG_CALLS))
def test_long_rust_calls_release_the_gil(big, call):
    fn = LONG_CALLS[call]
    n = 1
    while True:
        fn(big, n)  # warm up (allocations, caches, the big file)
        elapsed, longest = _gaps_during(lambda: fn(big, n))
        if elapsed > 0.1 or n >= 16:
            break
        n *= 2
    assert elapsed > 0.05, f"{call} took {elapsed:.3f}s: too short to tell"
    assert longest < 0.5 * elapsed, f"{call}: the Python thread stood still for {longest:.3f}s of {elapsed:.3f}s"


def test_the_gil_measurement_sees_a_call_that_holds_the_gil():
    """Control: a C loop that never releases the GIL (``sum`` over a ``range``) freezes the ticker."""
    elapsed, longest = _gaps_during(lambda: sum(range(10**7)))
    if elapsed < 0.05:
        pytest.skip("the control call was too fast to measure")
    assert longest > 0.5 * elapsed

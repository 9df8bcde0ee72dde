"""Tests for rnnrs.dataset (pure numpy; runs without the compiled extension)."""


import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st


import rnnrs.dataset as ds  # noqa: E402
LMBatches = ds.LMBatches
FAST = settings(max_examples=40, deadline=None)
SCHEMES = ["random", "sequential"]


def unique_corpus(n, seed=0):
    """Distinct ids, so every token's position in the corpus is unambiguous."""
    return np.random.default_rng(seed).permutation(n).astype(np.int64)


def batches(ids, b, t, sampling, seed, epoch, start=0):
    fn = ds.random_batches if sampling == "random" else ds.sequential_batches
    return list(fn(ids, b, t, seed, epoch, start=start))


def positions(ids, X):
    """Corpus position of every X[r, 0] (ids must be unique)."""
    where = np.empty(ids.max() + 1, dtype=np.int64)
    where[ids] = np.arange(ids.size)
    return where[X[:, 0]]


def reference_epoch(ids, b, t, sampling, seed, epoch):
    """Independent re-implementation of the documented algorithm (pins the seeding
    contract that bit-identical resume depends on)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
    off = int(rng.integers(0, t))
    out = []
    if sampling == "random":
        corpus = ids[off:]
        n_sub = (len(corpus) - 1) // t
        starts = list(range(0, n_sub * t, t))
        starts = [starts[i] for i in rng.permutation(n_sub)]
        for i in range(0, b * (n_sub // b), b):
            js = starts[i:i + b]
            out.append((np.array([corpus[j:j + t] for j in js]),
                        np.array([corpus[j + 1:j + 1 + t] for j in js])))
    else:
        n_tok = ((len(ids) - off - 1) // b) * b
        xs = ids[off:off + n_tok].reshape(b, -1)
        ys = ids[off + 1:off + 1 + n_tok].reshape(b, -1)
        for i in range(0, t * (xs.shape[1] // t), t):
            out.append((xs[:, i:i + t], ys[:, i:i + t]))
    return out


setups = st.tuples(
    st.integers(1, 6),           # batch_size
    st.integers(1, 9),           # seq_len
    st.integers(0, 120),         # extra tokens beyond the minimum
    st.integers(0, 2**64),       # seed
    st.integers(0, 1000),        # epoch
)


# ---------------------------------------------------------------- invariants


@FAST
@given(setups, st.sampled_from(SCHEMES))
def test_batches_shift_bounds_shape_dtype(setup, sampling):
    b, t, extra, seed, epoch = setup
    n = (b + 1) * t + extra
    ids = unique_corpus(n, seed % 1000)
    got = batches(ids, b, t, sampling, seed, epoch)
    lm = LMBatches(ids, b, t, sampling=sampling, seed=seed)
    assert len(got) == lm.num_batches(epoch) >= 1
    for X, Y in got:
        assert X.shape == Y.shape == (b, t)
        assert X.dtype == Y.dtype == np.int64
        assert X.flags.c_contiguous and Y.flags.c_contiguous
        assert not np.shares_memory(X, ids) and not np.shares_memory(Y, ids)
        pos = positions(ids, X)
        assert (pos >= 0).all() and (pos + t + 1 <= n).all()
        for r, p in enumerate(pos.tolist()):
            assert X[r].tolist() == ids[p:p + t].tolist()
            assert Y[r].tolist() == ids[p + 1:p + t + 1].tolist()


@FAST
@given(setups)
def test_random_sampling_uses_disjoint_subsequences(setup):
    b, t, extra, seed, epoch = setup
    n = (b + 1) * t + extra
    ids = unique_corpus(n)
    got = batches(ids, b, t, "random", seed, epoch)
    starts = np.concatenate([positions(ids, X) for X, _ in got])
    offset = int(starts.min()) % t
    assert offset < t
    assert len(set(starts.tolist())) == starts.size == len(got) * b
    assert (starts % t == offset).all()          # all on the same grid of length t ...
    srt = np.sort(starts)
    assert (np.diff(srt) >= t).all()             # ... hence non-overlapping
    n_sub = (n - offset - 1) // t
    assert len(got) == n_sub // b                # only the incomplete last batch is dropped
    assert srt.max() <= offset + (n_sub - 1) * t


@FAST
@given(setups)
def test_sequential_batches_continue_each_stream(setup):
    b, t, extra, seed, epoch = setup
    n = (b + 1) * t + extra
    ids = unique_corpus(n)
    got = batches(ids, b, t, "sequential", seed, epoch)
    first = positions(ids, got[0][0])
    offset = int(first[0])
    assert 0 <= offset < t
    stream_len = (n - offset - 1) // b
    assert first.tolist() == [offset + r * stream_len for r in range(b)]
    assert len(got) == stream_len // t
    for (X0, Y0), (X1, _) in zip(got, got[1:]):
        p0, p1 = positions(ids, X0), positions(ids, X1)
        assert (p1 == p0 + t).all()              # row r continues where it stopped
        assert (X1[:, 0] == Y0[:, -1]).all()


@FAST
@given(setups, st.sampled_from(SCHEMES))
def test_matches_reference_implementation_of_seeding_contract(setup, sampling):
    b, t, extra, seed, epoch = setup
    ids = np.random.default_rng(1).integers(0, 50, size=(b + 1) * t + extra)
    got = batches(ids, b, t, sampling, seed, epoch)
    ref = reference_epoch(ids, b, t, sampling, seed, epoch)
    assert len(got) == len(ref)
    for (X, Y), (RX, RY) in zip(got, ref):
        np.testing.assert_array_equal(X, RX)
        np.testing.assert_array_equal(Y, RY)


# ---------------------------------------------------------------- determinism / resume


@pytest.mark.parametrize("sampling", SCHEMES)
def test_same_seed_epoch_identical_and_independent_of_global_rng(sampling):
    ids = np.random.default_rng(5).integers(0, 30, size=2000)
    np.random.seed(1)
    a = batches(ids, 4, 7, sampling, 3, 2)
    np.random.seed(999)
    np.random.random(10)
    b = batches(ids, 4, 7, sampling, 3, 2)
    assert len(a) == len(b) > 0
    for (x1, y1), (x2, y2) in zip(a, b):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)


@pytest.mark.parametrize("sampling", SCHEMES)
def test_different_epochs_and_seeds_differ(sampling):
    ids = unique_corpus(5000)
    epochs = [batches(ids, 4, 13, sampling, 0, e) for e in range(6)]
    firsts = {e[0][0].tobytes() for e in epochs}
    if sampling == "random":
        assert len(firsts) == 6          # order is reshuffled every epoch
    else:
        assert len(firsts) >= 2          # only the offset (13 choices) changes
    s0 = batches(ids, 4, 13, sampling, 0, 0)
    s1 = batches(ids, 4, 13, sampling, 1, 0)
    s2 = batches(ids, 4, 13, sampling, 2, 0)
    assert len({s0[0][0].tobytes(), s1[0][0].tobytes(), s2[0][0].tobytes()}) >= 2


@FAST
@given(setups, st.sampled_from(SCHEMES), st.data())
def test_epoch_batches_start_equals_tail_of_full_epoch(setup, sampling, data):
    b, t, extra, seed, epoch = setup
    ids = np.random.default_rng(2).integers(0, 100, size=(b + 1) * t + extra)
    lm = LMBatches(ids, b, t, sampling=sampling, seed=seed)
    full = list(lm.epoch_batches(epoch))
    k = data.draw(st.integers(0, len(full)))
    tail = list(lm.epoch_batches(epoch, start=k))
    assert len(tail) == len(full) - k
    for (x1, y1), (x2, y2) in zip(full[k:], tail):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    # the module functions give the same stream
    fn_tail = batches(ids, b, t, sampling, seed, epoch, start=k)
    assert all(np.array_equal(x1, x2) for (x1, _), (x2, _) in zip(tail, fn_tail))


def test_lmbatches_properties():
    ids = np.arange(1000) % 17
    r = LMBatches(ids, 8, 10, sampling="random", seed=4)
    s = LMBatches(ids, 8, 10, sampling="sequential")
    assert not r.carries_state and s.carries_state
    assert (r.batch_size, r.seq_len, r.sampling, r.seed, r.num_tokens) == (8, 10, "random", 4, 1000)
    assert s.seed == 0 and r.ids.dtype == np.int64
    for lm in (r, s):
        for e in range(5):
            assert lm.num_batches(e) == len(list(lm.epoch_batches(e)))
            assert lm.num_batches(e) in (11, 12)   # varies by at most one with the offset
    assert "LMBatches(num_tokens=1000" in repr(r)


@pytest.mark.parametrize("sampling", SCHEMES)
@pytest.mark.parametrize("b,t", [(1, 1), (1, 5), (3, 1), (4, 6)])
def test_minimum_corpus_gives_a_batch_every_epoch(sampling, b, t):
    need = ds.min_corpus_tokens(b, t)
    assert need == (b + 1) * t
    lm = LMBatches(np.arange(need), b, t, sampling=sampling, seed=7)
    for e in range(30):
        assert lm.num_batches(e) >= 1
    with pytest.raises(ValueError, match=rf"needs at least .* = {need} tokens, got {need - 1}"):
        LMBatches(np.arange(need - 1), b, t, sampling=sampling)


def test_accepts_other_integer_dtypes_and_lists():
    ref = batches(np.arange(200, dtype=np.int64), 2, 5, "random", 1, 1)
    for ids in (np.arange(200, dtype=np.int32), np.arange(200, dtype=np.uint16), list(range(200))):
        got = batches(ids, 2, 5, "random", 1, 1)
        assert all(np.array_equal(a[0], g[0]) and g[0].dtype == np.int64 for a, g in zip(ref, got))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("sampling", SCHEMES)
def test_errors_are_raised_eagerly_with_expected_and_received(sampling):
    fn = ds.random_batches if sampling == "random" else ds.sequential_batches
    ids = np.arange(100)
    cases = [
        (dict(batch_size=0), ValueError, "batch_size must be >= 1, got 0"),
        (dict(seq_len=0), ValueError, "seq_len must be >= 1, got 0"),
        (dict(seq_len=-3), ValueError, "seq_len must be >= 1, got -3"),
        (dict(batch_size=2.0), TypeError, "batch_size must be an int, got float"),
        (dict(batch_size=True), TypeError, "batch_size must be an int, got bool"),
        (dict(seed=-1), ValueError, "seed must be >= 0, got -1"),
        (dict(epoch=-1), ValueError, "epoch must be >= 0, got -1"),
        (dict(ids=np.arange(100.0)), ValueError, "expected dtype int64), got dtype float64"),
        (dict(ids=np.ones(100, dtype=bool)), ValueError, "got dtype bool"),
        (dict(ids=np.arange(100).reshape(10, 10)), ValueError, "got shape (10, 10)"),
        (dict(ids=np.array([1, 2, -5] + [0] * 97)), ValueError, "got -5 at index 2"),
        (dict(ids=np.arange(20)), ValueError, "needs at least (batch_size + 1) * seq_len = 24 "
                                              "tokens, got 20"),
        (dict(start=-1), ValueError, "start must be >= 0"),
        (dict(start=10**6), ValueError, "start must be <= the number of batches"),
    ]
    for override, exc, fragment in cases:
        kw = dict(ids=ids, batch_size=3, seq_len=6, seed=0, epoch=0, start=0)
        kw.update(override)
        with pytest.raises(exc) as info:
            fn(kw.pop("ids"), kw.pop("batch_size"), kw.pop("seq_len"), kw.pop("seed"),
               kw.pop("epoch"), **kw)          # raised by the call itself, not by next()
        assert fragment in str(info.value), (fragment, str(info.value))


def test_lmbatches_errors():
    ids = np.arange(100)
    with pytest.raises(ValueError, match="sampling must be one of"):
        LMBatches(ids, 2, 3, sampling="shuffle")
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        LMBatches(ids, 0, 3)
    lm = LMBatches(ids, 2, 3)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        lm.num_batches(-1)
    with pytest.raises(ValueError, match="start must be <="):
        lm.epoch_batches(0, start=lm.num_batches(0) + 1)
    assert list(lm.epoch_batches(0, start=lm.num_batches(0))) == []


# ---------------------------------------------------------------- split_train_val


def test_split_train_val_basic():
    ids = np.arange(100)
    train, val = ds.split_train_val(ids, 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))
    assert train.dtype == val.dtype == np.int64
    train, val = ds.split_train_val(ids, 0)
    assert train.tolist() == list(range(100)) and val.size == 0 and val.dtype == np.int64
    train, val = ds.split_train_val(np.arange(100), 0.29)   # 28.999... rounds to 29
    assert val.size == 29
    train[0] = 77
    assert ids[0] == 0                                      # copies, not views


@FAST
@given(st.integers(2, 500), st.floats(0, 0.99))
def test_split_train_val_partition(n, frac):
    ids = np.arange(n)
    n_val = round(n * frac)
    assume(n - n_val >= 2 and (frac == 0 or n_val >= 2))
    train, val = ds.split_train_val(ids, frac)
    assert np.array_equal(np.concatenate([train, val]), ids)
    assert val.size == n_val


@pytest.mark.parametrize("frac, exc, fragment", [
    (1.0, ValueError, "[0, 1), got 1.0"),
    (-0.1, ValueError, "[0, 1), got -0.1"),
    (float("nan"), ValueError, "[0, 1)"),
    (1.5, ValueError, "[0, 1)"),
    ("0.1", TypeError, "float, got str"),
    (True, TypeError, "float, got bool"),
])
def test_split_train_val_bad_fraction(frac, exc, fragment):
    with pytest.raises(exc) as info:
        ds.split_train_val(np.arange(100), frac)
    assert fragment in str(info.value)


def test_split_train_val_too_small():
    with pytest.raises(ValueError, match="validation part too small: .* gives 1 tokens, need at least 2"):
        ds.split_train_val(np.arange(10), 0.1)
    with pytest.raises(ValueError, match="training part too small"):
        ds.split_train_val(np.arange(10), 0.9)
    with pytest.raises(ValueError, match="training part too small"):
        ds.split_train_val(np.arange(1), 0.0)
    need = ds.min_corpus_tokens(2, 5)
    with pytest.raises(ValueError, match=f"need at least {need}"):
        ds.split_train_val(np.arange(100), 0.1, min_tokens=need)
    train, val = ds.split_train_val(np.arange(200), 0.1, min_tokens=need)
    assert val.size == 20
    with pytest.raises(ValueError, match="got dtype float64"):
        ds.split_train_val(np.arange(10.0), 0.1)
    with pytest.raises(ValueError, match="non-negative"):
        ds.split_train_val(np.array([3, -1, 2, 2]), 0.0)


def test_fixed_window_offset_cuts_at_multiples_of_seq_len():
    from rnnrs.dataset import LMBatches, WINDOW_OFFSETS, random_batches, sequential_batches
    ids = np.arange(1000, dtype=np.int64)
    assert WINDOW_OFFSETS == ("random", "fixed")
    for epoch in range(4):
        for X, Y in random_batches(ids, 4, 7, 3, epoch, window_offset="fixed"):
            assert (X[:, 0] % 7 == 0).all() and (Y == X + 1).all()
        first = next(sequential_batches(ids, 4, 7, 3, epoch, window_offset="fixed"))[0]
        assert first[0, 0] == 0
    # the random default still moves the windows between epochs
    starts = {int(next(random_batches(ids, 4, 7, 3, e))[0][0, 0]) % 7 for e in range(8)}
    assert len(starts) > 1
    b = LMBatches(ids, 4, 7, "random", 3, window_offset="fixed")
    assert b.window_offset == "fixed" and b.num_batches(0) == (1000 - 1) // 7 // 4
    assert [x.tolist() for x, _ in b.epoch_batches(1, start=2)] == \
        [x.tolist() for x, _ in random_batches(ids, 4, 7, 3, 1, window_offset="fixed")][2:]
    with pytest.raises(ValueError, match="window_offset: expected one of"):
        LMBatches(ids, 4, 7, window_offset="zero")

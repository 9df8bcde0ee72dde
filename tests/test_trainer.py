"""The training loop (rnnrs.trainer): learning, resume, schedules, early stop, non-finite steps."""

import errno
import math
import os
import signal

import numpy as np
import pytest

import rnnrs
from rnnrs import checkpoint as ck
from rnnrs import trainer as tr
from rnnrs.trainer import ConfigError, StopTraining, Trainer, TrainConfig, TrainingError, train

#: A tiny model and small batches: every run here takes well under a second.
TINY = dict(embed=8, hidden=16, layers=1, seq_len=8, batch_size=4, lr=1e-2, quiet=True, dropout=0.0, plot=False)


def synthetic_text(n=3000, seed=0):
    """A pseudo-random text over 10 symbols (no corpus files needed)."""
    return "".join(np.random.default_rng(seed).choice(list("abcdefgh \n"), n))


def weights_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)


def stop_at(step):
    def callback(event):
        if event["event"] == "step" and event["step"] == step:
            raise StopTraining
    return callback


# ------------------------------------------------------------------------------------------ learning
def test_loss_falls_on_a_repeated_text(tmp_path):
    text = "the quick brown fox jumps over the lazy dog. " * 50
    r = train(text, out=str(tmp_path), epochs=4, embed=16, hidden=32, layers=1, seq_len=16, batch_size=8,
              lr=1e-2, quiet=True, plot=False)
    ppl = [e["train_ppl"] for e in r.history.epochs]
    assert len(ppl) == 4 and ppl[-1] < ppl[0] / 3
    assert r.summary["status"] == "completed"
    assert r.summary["val_ppl"] < 3.0 < len(r.tokenizer.vocab)
    assert r.summary["steps"] == len(r.history.loss) > 0 and r.summary["tokens_per_s"] > 0
    for key in ("train_ppl", "val_ppl", "tokens_per_s", "wall_time_s", "steps", "best_val_ppl"):
        assert r.summary[key] is not None
    # the run directory: a model that generation can load, and the checkpoint
    m = rnnrs.LanguageModel.load(tmp_path)
    m2, tok, info = ck.load_model(tmp_path)
    assert tok == r.tokenizer and info["best"] and info["step"] == r.summary["best_step"]
    x = r.tokenizer.encode("the quick brown")[:, None]
    assert np.array_equal(m.logits(x)[0], m2.logits(x)[0])
    c = ck.load_checkpoint(tmp_path)
    assert weights_equal(c.model, r.model) and c.trainer["finished"] and c.trainer["step"] == r.summary["steps"]


def test_token_ids_as_input():
    ids = np.tile(np.arange(7), 200)
    r = train(ids, steps=30, **TINY)
    assert r.tokenizer is None and r.model.vocab_size == 7
    assert r.history.loss[-1] < r.history.loss[0]


def test_config_is_validated_with_readable_messages():
    cases = {"seq_len": 0, "batch_size": -1, "dropout": 1.0, "lr": 0.0, "cell": "transformer", "level": "byte",
             "sampling": "shuffled", "optimizer": "lbfgs", "clip": -1.0, "val_fraction": 1.0, "schedule": "linear",
             "on_nonfinite": "ignore", "hidden": 2.5, "embed": 0, "seed": -3}
    for name, value in cases.items():
        with pytest.raises(ConfigError, match=f"^{name}: expected .*got {value!r}"):
            TrainConfig(**{name: value}).validate()
    with pytest.raises(ConfigError, match="at most one"):
        TrainConfig(epochs=1, steps=2).validate()
    with pytest.raises(ConfigError, match="momentum"):
        TrainConfig(momentum=0.9, optimizer="adam").validate()
    with pytest.raises(TypeError, match="unknown training options"):
        Trainer(hidden_size=3)


def test_data_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="corpus too short"):
        Trainer(text="abc" * 10, **TINY)._setup()
    with pytest.raises(ConfigError, match="validation"):
        Trainer(text=synthetic_text(44), val_fraction=0.01, **TINY)._setup()
    with pytest.raises(ConfigError, match="expected text"):
        Trainer(**TINY)._setup()
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"abc\n" * 10 + b"\xc3\x28")
    with pytest.raises(ConfigError, match="offset 40"):
        tr.read_corpus(bad)
    (tmp_path / "nul.txt").write_bytes(b"ab\x00cd")
    with pytest.raises(ConfigError, match="binary"):
        tr.read_corpus(tmp_path / "nul.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ConfigError, match="empty"):
        tr.read_corpus(tmp_path / "empty.txt")
    (tmp_path / "crlf.txt").write_bytes("\ufeffa\r\nb".encode())
    assert tr.read_corpus(tmp_path / "crlf.txt") == "a\nb"
    assert tr.prepare_text("a\nb\nc", newlines_as_spaces=True, max_chars=4) == "a b "


def test_existing_run_is_not_overwritten_by_accident(tmp_path):
    text = synthetic_text()
    train(text, out=str(tmp_path), steps=3, **TINY)
    with pytest.raises(ConfigError, match="--resume"):
        train(text, out=str(tmp_path), steps=3, **TINY)
    r = train(text, out=str(tmp_path), steps=3, overwrite=True, **TINY)
    assert r.summary["steps"] == 3


# ------------------------------------------------------------------------------------------ state
@pytest.mark.parametrize("sampling", ["random", "sequential"])
def test_state_is_carried_only_with_sequential_sampling(sampling):
    trainer = Trainer(text=synthetic_text(), epochs=2, sampling=sampling, **TINY)
    trainer._setup()
    calls = []
    real = trainer.model.train_step

    def spy(x, y, state=None, clip=None):
        calls.append(state is not None)
        return real(x, y, state, clip)

    trainer.model.train_step = spy
    trainer.run()
    per_epoch = trainer.batches.num_batches(0)
    if sampling == "random":
        assert not any(calls)
    else:  # fresh state at the start of each epoch, carried afterwards
        assert calls[0] is False and all(calls[1:per_epoch]) and calls[per_epoch] is False


# ------------------------------------------------------------------------------------------ resume
RESUME = dict(embed=8, hidden=16, layers=2, seq_len=8, batch_size=4, lr=1e-2, quiet=True, dropout=0.2, plot=False,
              val_every=7, checkpoint_every=5, schedule="cosine", warmup=3, patience=50)


@pytest.mark.parametrize("sampling,optimizer", [("random", "adam"), ("sequential", "adam"),
                                                ("sequential", "sgd"), ("random", "adamw")])
def test_resume_is_bit_identical(tmp_path, sampling, optimizer):
    text = synthetic_text()
    opts = dict(RESUME, sampling=sampling, optimizer=optimizer, steps=40,
                **({"momentum": 0.9} if optimizer == "sgd" else {}))
    straight = train(text, **opts)
    first = train(text, out=str(tmp_path), callbacks=[stop_at(17)], **opts)
    assert first.summary["status"] == "stopped" and first.summary["steps"] == 17
    c = ck.load_checkpoint(tmp_path)
    assert c.trainer["step"] == 17 and (("state.h" in c.tensors) == (sampling == "sequential"))
    resumed = train(text, out=str(tmp_path), resume=True, **opts)
    assert resumed.summary["steps"] == 40
    assert weights_equal(straight.model, resumed.model)
    assert np.array_equal(straight.history.loss, resumed.history.loss)
    assert straight.history.val == resumed.history.val and straight.history.epochs == resumed.history.epochs
    s1, o1 = straight.model._core.optimizer_state()
    s2, o2 = resumed.model._core.optimizer_state()
    assert s1 == s2 and all(np.array_equal(a, b) for (_, a), (_, b) in zip(o1, o2))


def test_sigint_during_validation_then_resume_is_bit_identical(tmp_path, monkeypatch):
    text = synthetic_text()
    opts = dict(RESUME, steps=30)
    straight = train(text, **opts)
    real = tr.evaluate_ids
    calls = [0]

    def interrupted_once(model, ids, *args, **kw):
        calls[0] += 1
        if calls[0] == 2:  # the second validation (step 14) is cut short by Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)
        return real(model, ids, *args, **kw)

    monkeypatch.setattr(tr, "evaluate_ids", interrupted_once)
    first = train(text, out=str(tmp_path), **opts)
    assert first.summary["status"] == "interrupted" and first.summary["signal"] == "SIGINT"
    assert first.summary["steps"] == 14 and ck.load_checkpoint(tmp_path).trainer["pending_val"]
    monkeypatch.setattr(tr, "evaluate_ids", real)
    resumed = train(text, out=str(tmp_path), resume=True, **opts)
    assert weights_equal(straight.model, resumed.model) and straight.history.val == resumed.history.val


def test_sigint_during_the_final_validation_is_an_interrupt(tmp_path, monkeypatch):
    text = synthetic_text()
    opts = dict(RESUME, steps=30)  # validations at steps 7, 14, 21, 28 and the final one at 30
    straight = train(text, **opts)
    assert [v["step"] for v in straight.history.val] == [7, 14, 21, 28, 30]
    real = tr.evaluate_ids
    calls = [0]

    def interrupted_last(model, ids, *args, **kw):
        calls[0] += 1
        if calls[0] == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return real(model, ids, *args, **kw)

    monkeypatch.setattr(tr, "evaluate_ids", interrupted_last)
    first = train(text, out=str(tmp_path), **opts)
    assert first.summary["status"] == "interrupted" and first.summary["signal"] == "SIGINT"
    assert first.summary["steps"] == 30 and first.summary["val_ppl"] is None and first.summary["sample"] is None
    assert ck.load_checkpoint(tmp_path).trainer["pending_val"]
    monkeypatch.setattr(tr, "evaluate_ids", real)
    resumed = train(text, out=str(tmp_path), resume=True, **opts)
    assert resumed.summary["status"] == "completed"
    assert weights_equal(straight.model, resumed.model) and straight.history.val == resumed.history.val


def test_resume_from_another_directory_finds_a_relative_corpus(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "c.txt").write_text(synthetic_text(), encoding="utf-8")
    monkeypatch.chdir(tmp_path / "data")
    first = train(corpus="c.txt", out=str(tmp_path / "run"), steps=6, **TINY)
    assert first.summary["steps"] == 6
    monkeypatch.chdir(tmp_path)
    more = Trainer.resume(tmp_path / "run", steps=9, quiet=True).run()
    assert more.summary["steps"] == 9 and more.summary["status"] == "completed"


def test_numpy_scalar_options_train_save_and_resume(tmp_path):
    # Options taken from NumPy (np.arange, np.float32 ...) are stored as plain Python values, so
    # the checkpoint's JSON metadata can hold them and the run can be resumed.
    text = synthetic_text()
    opts = dict(TINY, hidden=np.int64(16), lr=np.float32(1e-2), lower=np.True_, steps=np.int32(6))
    r = train(text, out=str(tmp_path), **opts)
    assert r.summary["steps"] == 6
    assert os.path.exists(tmp_path / ck.MODEL_FILE) and os.path.exists(tmp_path / ck.CHECKPOINT_FILE)
    loaded = rnnrs.LanguageModel.load(str(tmp_path))
    assert weights_equal(r.model, loaded)
    more = Trainer.resume(tmp_path, text=text, steps=8).run()
    assert more.summary["steps"] == 8


def test_resume_from_a_finished_run_with_more_steps(tmp_path):
    text = synthetic_text()
    straight = train(text, steps=30, **TINY)
    train(text, out=str(tmp_path), steps=12, **TINY)
    more = Trainer.resume(tmp_path, text=text, steps=30).run()
    assert more.summary["steps"] == 30 and weights_equal(straight.model, more.model)


def test_resume_rejects_changed_settings_and_corpus(tmp_path):
    text = synthetic_text()
    train(text, out=str(tmp_path), steps=5, **TINY)
    with pytest.raises(ConfigError, match="hidden"):
        Trainer.resume(tmp_path, text=text, hidden=32)
    with pytest.raises(ConfigError, match="hidden"):
        Trainer(TrainConfig(**dict(TINY, hidden=32)), text=text, out=str(tmp_path), resume=True, steps=9)._setup()
    with pytest.raises(ConfigError, match="differs from the one"):
        Trainer.resume(tmp_path, text=synthetic_text(seed=1), steps=9)._setup()


def test_resume_without_a_checkpoint_starts_a_new_run(tmp_path):
    events = []
    r = train(synthetic_text(), out=str(tmp_path / "new"), resume=True, steps=3, callbacks=[events.append], **TINY)
    assert r.summary["steps"] == 3
    assert any(e["event"] == "warning" and "starting a new run" in e["message"] for e in events)


# ------------------------------------------------------------------------------------------ schedule
def test_lr_schedules():
    at = tr.lr_schedule(TrainConfig(lr=0.1), 100)
    assert at(0) == at(99) == 0.1
    at = tr.lr_schedule(TrainConfig(lr=0.1, warmup=4), 100)
    assert [at(s) for s in range(5)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])
    at = tr.lr_schedule(TrainConfig(lr=0.1, schedule="cosine", min_lr=0.01, warmup=10), 111)
    assert at(10) == pytest.approx(0.1) and at(110) == pytest.approx(0.01) and at(60) == pytest.approx(0.055)
    assert all(at(s) >= at(s + 1) for s in range(10, 110))
    at = tr.lr_schedule(TrainConfig(lr=0.1, schedule="step", decay_every=10, decay_gamma=0.5), 100)
    assert [at(0), at(9), at(10), at(25)] == pytest.approx([0.1, 0.1, 0.05, 0.025])


def test_schedule_is_applied_to_the_optimizer():
    seen = []
    train(synthetic_text(), steps=12, schedule="step", decay_every=4, decay_gamma=0.5,
          callbacks=[lambda e: e["event"] == "step" and seen.append(e["lr"])], **TINY)
    assert seen == pytest.approx([1e-2] * 4 + [5e-3] * 4 + [2.5e-3] * 4)


# ------------------------------------------------------------------------------------------ early stop
def test_early_stop_on_validation_perplexity(tmp_path, monkeypatch):
    losses = iter([2.0, 1.5, 1.6, 1.7, 1.4, 1.3])
    monkeypatch.setattr(tr, "evaluate_ids", lambda *a, **k: (next(losses), 10))
    events = []
    r = train(synthetic_text(), out=str(tmp_path), steps=100, val_every=5, patience=2,
              callbacks=[events.append], **TINY)
    assert r.summary["status"] == "early_stop" and r.summary["steps"] == 20
    assert r.summary["best_step"] == 10 and r.summary["best_val_ppl"] == pytest.approx(math.exp(1.5))
    assert [e["event"] for e in events].count("early_stop") == 1
    assert ck.load_model(tmp_path)[2]["step"] == 10  # model.safetensors holds the best model
    again = Trainer.resume(tmp_path, text=synthetic_text()).run()  # stays stopped
    assert again.summary["status"] == "early_stop" and again.summary["steps"] == 20


# ------------------------------------------------------------------------------------------ non-finite
def _fail_at(trainer, steps):
    real = trainer.model.train_step
    count = [0]

    def step(x, y, state=None, clip=None):
        count[0] += 1
        if count[0] in steps:
            raise rnnrs.NonFiniteError("training step: loss nan, gradient norm nan; parameters left unchanged")
        return real(x, y, state, clip)

    trainer.model.train_step = step


def test_non_finite_loss_stops_naming_the_step_and_saves_the_last_good_state(tmp_path):
    trainer = Trainer(text=synthetic_text(), out=str(tmp_path), steps=30, checkpoint_every=5, **TINY)
    trainer._setup()
    _fail_at(trainer, {13})
    events = []
    trainer.callbacks.append(events.append)
    with pytest.raises(rnnrs.NonFiniteError, match="at step 13 .*stopped with the parameters after step 12"):
        trainer.run()
    assert [e["action"] for e in events if e["event"] == "nonfinite"] == ["stop"]
    c = ck.load_checkpoint(tmp_path)
    assert c.trainer["step"] == 12 and c.trainer["status"] == "nonfinite"
    assert weights_equal(c.model, trainer.model)
    assert all(np.isfinite(v).all() for v in c.model.state_dict().values())


def test_non_finite_loss_can_skip_the_batch():
    trainer = Trainer(text=synthetic_text(), steps=20, on_nonfinite="skip", **TINY)
    trainer._setup()
    _fail_at(trainer, {5, 6})
    r = trainer.run()
    assert r.summary["steps"] == 20 and r.summary["skipped_steps"] == 2 and r.history.skipped == [5, 6]
    assert math.isnan(r.history.loss[4]) and math.isfinite(r.history.loss[6])


def test_skipping_gives_up_after_many_non_finite_steps_in_a_row():
    trainer = Trainer(text=synthetic_text(), steps=40, on_nonfinite="skip", **TINY)
    trainer._setup()
    _fail_at(trainer, set(range(3, 40)))
    with pytest.raises(rnnrs.NonFiniteError, match="at step 13 .*10 batches skipped"):
        trainer.run()


# ------------------------------------------------------------------------------------------ output
def test_events_callbacks_and_json_logger(capsys):
    events = []
    train(synthetic_text(), epochs=2, val_every=None, callbacks=[events.append], **dict(TINY, quiet=False, json=True))
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "summary"
    assert {"step", "progress", "epoch", "val"} <= set(kinds)
    lines = capsys.readouterr().out.splitlines()
    import json
    parsed = [json.loads(line) for line in lines]
    assert parsed[0]["event"] == "start" and parsed[-1]["event"] == "summary"
    assert "step" not in {p["event"] for p in parsed}
    assert parsed[-1]["val_ppl"] > 1 and parsed[-1]["tokens_per_s"] > 0


def test_console_output(capsys):
    train(synthetic_text(), epochs=1, **dict(TINY, quiet=False))
    out = capsys.readouterr().out
    assert "TrainConfig(" in out and "val ppl" in out and "completed after" in out


def test_sample_previews_are_the_generators_text():
    # Previews are LyricGenerator's text: the prefix as given (characters outside the vocabulary
    # kept in the text, left out of the model's input, one warning), <unk> never generated.
    events = []
    r = train(synthetic_text(), epochs=1, sample_prefix="XYab", sample_length=40, sample_temperature=1.0,
              callbacks=[events.append], **TINY)
    samples = [e for e in events if e["event"] == "sample"]
    gen = rnnrs.LyricGenerator(r.model, r.tokenizer)
    with pytest.warns(rnnrs.UnknownTokenWarning):
        want = gen.generate("XYab", length=40, temperature=1.0, top_p=None, seed=samples[-1]["step"])
    assert samples and samples[-1]["text"] == want == r.summary["sample"] and want.startswith("XYab")
    warned = [e["message"] for e in events if e["event"] == "warning" and "sample previews" in e["message"]]
    assert len(warned) == 1 and "'X'" in warned[0]
    with pytest.warns(rnnrs.UnknownTokenWarning):
        hot = r.sample("HELLO", length=300, temperature=5.0, seed=1)
    assert hot.startswith("HELLO") and "<unk>" not in hot and len(hot) == 5 + 300
    assert len(r.sample("", length=7)) == 7  # an empty prefix starts from the start token


def test_curve_png(tmp_path):
    if not os.environ.get("RNNRS_REQUIRED"):  # CI installs the test extra, which has matplotlib
        pytest.importorskip("matplotlib")
    r = train(synthetic_text(), out=str(tmp_path), epochs=2, **dict(TINY, plot=True))
    assert r.summary["plot_file"] == os.path.join(str(tmp_path), "curve.png")
    assert open(r.summary["plot_file"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_failed_checkpoint_write_is_reported_and_the_previous_one_kept(tmp_path, monkeypatch):
    events = []

    def disk_full_from_step_10(event):
        events.append(event)
        if event["event"] == "step" and event["step"] == 10:
            def fsync(fd):
                raise OSError(errno.ENOSPC, "No space left on device")
            monkeypatch.setattr(rnnrs._atomic.os, "fsync", fsync)

    with pytest.raises(TrainingError, match="final checkpoint could not be written"):
        train(synthetic_text(), out=str(tmp_path), steps=20, checkpoint_every=5, callbacks=[disk_full_from_step_10],
              **TINY)
    monkeypatch.undo()
    errors = [e for e in events if e["event"] == "checkpoint_error"]
    assert errors and "No space left on device" in errors[0]["message"] and errors[0]["step"] == 10
    assert ck.load_checkpoint(tmp_path).trainer["step"] == 5
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


# ------------------------------------------------------------------------------------------ real text
CORPORA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "corpora")


@pytest.mark.skipif(not os.path.exists(os.path.join(CORPORA, "timemachine.txt")), reason="../shared/corpora absent")
def test_the_time_machine_with_the_books_preprocessing():
    r = train(corpus=os.path.join(CORPORA, "timemachine.txt"), lower=True, letters_only=True, max_chars=20000,
              steps=60, embed=None, hidden=32, layers=1, seq_len=35, batch_size=16, lr=1e-2, quiet=True, plot=False)
    assert len(r.tokenizer.vocab) == 28  # <unk>, space and 26 letters, as in the book
    first, last = np.mean(r.history.loss[:5]), np.mean(r.history.loss[-5:])
    assert last < first - 0.3

"""Training options of the "better language models" work: fine-tuning (init_from), initialisers,
AWD-LSTM regularisation and tied weights, BPE tokens, several corpus files, fixed windows — from
Python and the command line, saved in checkpoints and resumed."""

import json
import os

import numpy as np
import pytest

import rnnrs
from rnnrs.checkpoint import load_model
from rnnrs.cli import main
from rnnrs.generate import DEFAULT_MODEL_DIR
from rnnrs.trainer import ConfigError, Trainer, TrainConfig

TINY = dict(embed=8, hidden=16, layers=1, seq_len=8, batch_size=4, lr=1e-2, quiet=True, dropout=0.0, plot=False)
TEXT = "the quick brown fox jumps over the lazy dog.\nand then it sleeps in the sun all day.\n" * 40
POEM = "明月几时有，把酒问青天。不知天上宫阙，今夕是何年。我欲乘风归去，又恐琼楼玉宇，高处不胜寒。\n" * 12


def _builtin():
    if not os.path.isfile(os.path.join(DEFAULT_MODEL_DIR, "model.safetensors")) and not os.environ.get("RNNRS_REQUIRED"):
        pytest.skip("the built-in model is not installed")


# ------------------------------------------------------------------------------------- init_from
def test_fine_tuning_the_builtin_model(tmp_path):
    _builtin()
    text = POEM + "ABC明月\n"  # Latin letters are not in the built-in vocabulary
    events = []
    t = Trainer(TrainConfig(), text=text, init_from="builtin", steps=3, seq_len=16, batch_size=4, quiet=True,
                plot=False, out=str(tmp_path / "ft"), val_fraction=0.1, callbacks=[events.append])
    t._setup()
    base, tok, _ = load_model(DEFAULT_MODEL_DIR)
    assert t.model.config["hidden_size"] == base.config["hidden_size"] and t.config.hidden == 256
    assert t.tokenizer == tok
    for k, v in base.state_dict().items():  # starts from the built-in weights (cast to float32)
        np.testing.assert_array_equal(t.model.state_dict()[k], v.astype(np.float32))
    assert t.unknown_tokens == 3
    result = t.run()
    warned = [e["message"] for e in events if e["event"] == "warning"]
    assert any("3 of" in w and "became <unk>" in w for w in warned), warned
    assert result.summary["steps"] == 3
    # a fine-tuning run resumes as any run
    more = rnnrs.train(text, out=str(tmp_path / "ft"), resume=True, steps=5, quiet=True)
    assert more.summary["steps"] == 5 and more.model.config["hidden_size"] == 256


def test_fine_tuning_refuses_another_architecture(tmp_path):
    _builtin()
    with pytest.raises(ConfigError, match=r"hidden: the model in .* has 256, got 128"):
        Trainer(TrainConfig(), text=POEM, init_from="builtin", hidden=128, quiet=True)._setup()
    with pytest.raises(ConfigError, match="level: the model in .* has 'char', got 'word'"):
        Trainer(TrainConfig(), text=POEM, init_from="builtin", level="word", quiet=True)._setup()
    with pytest.raises(ConfigError, match="init: expected no initialiser with init_from"):
        Trainer(TrainConfig(), text=POEM, init_from="builtin", init="orthogonal", quiet=True)._setup()


def test_fine_tuning_a_run_from_the_cli(tmp_path, capsys):
    corpus = tmp_path / "a.txt"
    corpus.write_text(TEXT)
    base = ["--embed", "8", "--hidden", "16", "--layers", "1", "--seq-len", "8", "--batch-size", "4", "--quiet",
            "--no-plot"]
    assert main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "base"), "--steps", "3", *base]) == 0
    other = tmp_path / "b.txt"
    other.write_text(TEXT.upper() + TEXT)
    assert main(["train", "--corpus", str(other), "--out", str(tmp_path / "ft"), "--init-from", str(tmp_path / "base"),
                 "--steps", "2", "--seq-len", "8", "--batch-size", "4", "--quiet", "--no-plot"]) == 0
    model, _, _ = load_model(tmp_path / "ft")
    assert model.config["hidden_size"] == 16
    assert main(["train", "--corpus", str(other), "--out", str(tmp_path / "ft2"), "--init-from",
                 str(tmp_path / "base"), "--hidden", "32", "--quiet"]) == 2
    assert "hidden: the model in" in capsys.readouterr().err


# ----------------------------------------------------------------------- initialisers, regularisers
def test_initialisers_and_regularisers_reach_the_model_and_the_checkpoint(tmp_path):
    opts = dict(init="xavier_uniform", recurrent_init="orthogonal", forget_bias=1.0, embed_dropout=0.1,
                locked_dropout=0.2, weight_drop=0.3, tie_weights=True, window_offset="fixed")
    r = rnnrs.train(TEXT, out=str(tmp_path / "run"), steps=4, **{**TINY, "layers": 2}, **opts)
    c = r.model.config
    assert c["tie_weights"] and c["weight_drop"] == 0.3 and "linear.weight" not in r.model.state_dict()
    again = rnnrs.train(TEXT, out=str(tmp_path / "run"), resume=True, steps=6, quiet=True)
    assert again.summary["steps"] == 6
    with pytest.raises(ConfigError, match="weight_drop: the checkpoint .* was trained with 0.3, got 0.5"):
        rnnrs.train(TEXT, out=str(tmp_path / "run"), resume=True, steps=8, weight_drop=0.5, quiet=True)
    # an uninterrupted run of the same length ends bit-identically (the masks follow the stream)
    whole = rnnrs.train(TEXT, out=str(tmp_path / "whole"), steps=6, **{**TINY, "layers": 2}, **opts)
    for k, v in whole.model.state_dict().items():
        np.testing.assert_array_equal(v, again.model.state_dict()[k], err_msg=k)
    fresh = rnnrs.LanguageModel(**{k: v for k, v in c.items()})
    assert fresh.config == c


def test_option_errors():
    with pytest.raises(ConfigError, match="forget_bias: applies to cell 'lstm' only"):
        rnnrs.train(TEXT, cell="gru", forget_bias=1.0, **TINY)
    with pytest.raises(ConfigError, match="init: expected one of"):
        rnnrs.train(TEXT, init="glorot", **TINY)
    with pytest.raises(ConfigError, match="tie_weights: expected a model with an embedding"):
        rnnrs.train(TEXT, **{**TINY, "embed": None}, tie_weights=True)
    with pytest.raises(ConfigError, match="bpe_vocab: applies to level 'bpe' only"):
        rnnrs.train(TEXT, bpe_vocab=500, **TINY)
    with pytest.raises(ConfigError, match="window_offset: expected one of"):
        rnnrs.train(TEXT, window_offset="zero", **TINY)


def test_dropout_on_one_layer_is_reported_once():
    events = []
    rnnrs.train(TEXT, steps=1, callbacks=[events.append], **{**TINY, "dropout": 0.1})
    warned = [e["message"] for e in events if e["event"] == "warning"]
    assert sum("no effect with num_layers=1" in w for w in warned) == 1, warned


# ------------------------------------------------------------------------------------------- BPE
def test_a_bpe_model_trains_generates_and_evaluates(tmp_path, capsys):
    pytest.importorskip("tokenizers") if not os.environ.get("RNNRS_REQUIRED") else None
    corpus = tmp_path / "tm.txt"
    corpus.write_text(TEXT)
    assert main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "bpe"), "--level", "bpe", "--bpe-vocab",
                 "300", "--steps", "5", "--embed", "8", "--hidden", "16", "--layers", "1", "--seq-len", "8",
                 "--batch-size", "4", "--quiet", "--no-plot"]) == 0
    gen = rnnrs.LyricGenerator.load(tmp_path / "bpe")
    assert gen.tokenizer.level == "bpe" and len(gen.tokenizer.vocab) <= 300
    text = gen.generate("the quick", length=20, seed=1)
    assert text.startswith("the quick")  # (an untrained model may pick invalid bytes: test_bpe.py checks streaming)
    pieces = list(gen.stream("the quick", length=20, seed=1))
    assert "".join(pieces) == text
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "bpe"), "--corpus", str(corpus), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["level"] == "bpe" and out["bits_per_char"] < out["bits_per_token"]
    assert out["bits_per_char"] == pytest.approx(out["loss"] * out["tokens"] / (len(TEXT) * np.log(2)))


# ------------------------------------------------------------------------------------ many files
def test_several_files_and_folders_split_each_file(tmp_path):
    (tmp_path / "lyrics").mkdir()
    docs = {"a.txt": TEXT, "lyrics/b.txt": TEXT.replace("fox", "cat"), "lyrics/c.txt": TEXT.replace("dog", "owl")}
    for name, text in docs.items():
        (tmp_path / name).write_text(text)
    t = Trainer(TrainConfig(), corpus=[str(tmp_path / "a.txt"), str(tmp_path / "lyrics")], val_fraction=0.1,
                steps=2, **TINY)
    t._setup()
    assert t.source == [str(tmp_path / n) for n in ("a.txt", "lyrics/b.txt", "lyrics/c.txt")]
    tok, sep = t.tokenizer, t.tokenizer.encode("\n\n")
    tails = []
    for name in ("a.txt", "lyrics/b.txt", "lyrics/c.txt"):
        ids = tok.encode(docs[name])
        tails.append(ids[len(ids) - round(len(ids) * 0.1):])
    expected = np.concatenate([tails[0], sep, tails[1], sep, tails[2]])
    np.testing.assert_array_equal(t.val_ids, expected)
    r = t.run()
    assert r.summary["steps"] == 2
    with pytest.raises(ConfigError, match="corpus .*empty folder"):
        (tmp_path / "none").mkdir()
        Trainer(TrainConfig(), corpus=str(tmp_path / "none"), **TINY)._setup()


def test_several_files_from_the_cli_and_resume_checks_the_set(tmp_path, capsys):
    for n in "ab":
        (tmp_path / f"{n}.txt").write_text(TEXT)
    args = ["--embed", "8", "--hidden", "16", "--layers", "1", "--seq-len", "8", "--batch-size", "4", "--quiet",
            "--no-plot"]
    out = str(tmp_path / "run")
    assert main(["train", "--corpus", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "--out", out, "--steps", "2",
                 *args]) == 0
    assert main(["train", "--out", out, "--resume", "--steps", "3", "--quiet"]) == 0
    (tmp_path / "b.txt").write_text(TEXT.replace("fox", "cat"))
    capsys.readouterr()
    assert main(["train", "--out", out, "--resume", "--steps", "4", "--quiet"]) == 2
    assert "the text differs" in capsys.readouterr().err


def test_rmsprop_trains_and_resumes_bit_identically(tmp_path):
    a = rnnrs.train(TEXT, out=str(tmp_path / "a"), steps=4, optimizer="rmsprop", **TINY)
    rnnrs.train(TEXT, out=str(tmp_path / "b"), steps=2, optimizer="rmsprop", **TINY)
    b = rnnrs.train(TEXT, out=str(tmp_path / "b"), resume=True, steps=4, quiet=True)
    for k, v in a.model.state_dict().items():
        np.testing.assert_array_equal(v, b.model.state_dict()[k], err_msg=k)
    assert a.summary["train_loss"] < np.log(len(a.tokenizer.vocab))


def test_a_fine_tuning_run_resumes_with_its_original_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text(TEXT)
    rnnrs.train(corpus="a.txt", out="base", steps=2, **TINY)
    small = {k: v for k, v in TINY.items() if k not in ("embed", "hidden", "layers")}
    rnnrs.train(corpus="a.txt", out="ft", init_from="base", steps=2, **small)
    # the same relative --init-from again, now with resume: accepted
    r = rnnrs.train(corpus="a.txt", out="ft", init_from="base", resume=True, steps=3, quiet=True)
    assert r.summary["steps"] == 3
    with pytest.raises(ConfigError, match="init_from: the checkpoint"):
        rnnrs.train(corpus="a.txt", out="ft", init_from="other", resume=True, steps=4, quiet=True)

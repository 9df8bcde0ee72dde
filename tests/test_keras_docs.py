"""docs/keras.md's keras.io programs (addition_rnn, lstm_seq2seq, bidirectional_lstm_imdb) run as
printed there — only their size constants are replaced here, so that they take seconds."""

import contextlib
import io
import pathlib
import re

import pytest

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "keras.md"
SMALLER = {
    "addition_rnn": [("TRAINING_SIZE = 50000", "TRAINING_SIZE = 1500"), ("DIGITS = 3", "DIGITS = 2"),
                     ("epochs = 30", "epochs = 3"), ("layers.LSTM(128", "layers.LSTM(16")],
    "lstm_seq2seq": [("epochs = 100 ", "epochs = 1 "), ("num_samples = 10000 ", "num_samples = 200 "),
                     ("latent_dim = 256 ", "latent_dim = 16 ")],
    "bidirectional_lstm_imdb": [("load_data(25000), load_data(25000)", "load_data(200), load_data(100)"),
                                ("maxlen = 200 ", "maxlen = 20 "), ("epochs=2", "epochs=1"), ("LSTM(64", "LSTM(8")],
}


def programs():
    text = DOC.read_text(encoding="utf-8")
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        m = re.match(r"# not run \(keras\.io's (\w+)", block)
        if m:
            yield m.group(1), block


def test_the_doc_shows_all_three():
    assert sorted(name for name, _ in programs()) == sorted(SMALLER)


@pytest.mark.parametrize("name", sorted(SMALLER))
def test_keras_io_program_runs(name, tmp_path, monkeypatch):
    code = dict(programs())[name]
    for old, new in SMALLER[name]:
        assert old in code, (name, old)
        code = code.replace(old, new)
    assert "import keras" not in code.replace("from rnnrs import keras", "")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"docs/keras.md:{name}", "exec"), {"__name__": "__main__"})
    assert out.getvalue()

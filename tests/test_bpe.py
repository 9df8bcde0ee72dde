"""BPETokenizer: byte-level BPE through Hugging Face tokenizers (rnnrs[bpe]).

Skipped without tokenizers unless RNNRS_REQUIRED=1 is set (CI installs it).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

if os.environ.get("RNNRS_REQUIRED"):
    import tokenizers  # noqa: F401
else:
    pytest.importorskip("tokenizers")

from rnnrs.bpe import BPETokenizer
from rnnrs.tokenizer import load_tokenizer, tokenizer_from_json

TEXT = ("The Time Traveller (for so it will be convenient to speak of him) was expounding a recondite "
        "matter to us. His grey eyes shone and twinkled, and his usually pale face was flushed and animated.\n") * 30


def test_round_trip_and_compression():
    tok = BPETokenizer(vocab_size=400).fit(TEXT)
    assert 300 < len(tok.vocab) <= 400 and tok.vocab.idx_to_token[0] == "<unk>"
    ids = tok.encode(TEXT)
    assert ids.dtype == np.int64 and tok.decode(ids) == TEXT
    assert ids.size < len(TEXT) / 3, "merges should shorten the text"
    unseen = "Ünïcødé — 明月 🌙 never seen"
    assert tok.decode(tok.encode(unseen)) == unseen, "byte-level: no unknown characters"
    assert not (tok.encode(unseen) == 0).any()


def test_deterministic_and_serialised_without_pickle(tmp_path):
    a, b = BPETokenizer(vocab_size=350).fit(TEXT), BPETokenizer(vocab_size=350).fit(TEXT)
    assert a == b and (a.encode(TEXT) == b.encode(TEXT)).all()
    c = tokenizer_from_json(a.to_json())
    assert isinstance(c, BPETokenizer) and c == a
    a.save(tmp_path / "tok.json")
    assert load_tokenizer(tmp_path / "tok.json") == a
    assert b"pickle" not in (tmp_path / "tok.json").read_bytes()


def test_streaming_never_shows_a_broken_character():
    zh = "明月几时有，把酒问青天。不知天上宫阙，今夕是何年。"
    tok = BPETokenizer(vocab_size=257).fit(zh * 5)  # bytes only: every character is 3 tokens
    ids = tok.encode(zh)
    assert ids.size == 3 * len(zh)
    s = tok.stream()
    pieces = [s.step(i) for i in ids]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + s.flush() == zh
    assert sum(1 for p in pieces if p) == len(zh)  # one character per completed triple
    s2 = tok.stream()
    assert s2.step(ids[:4]) == zh[0] and s2.flush() == "\ufffd"  # a dangling byte shows only at the end


def test_lower_letters_only_and_brought_files(tmp_path):
    tok = BPETokenizer(vocab_size=300, lower=True, letters_only=True).fit(TEXT)
    assert tok.decode(tok.encode("The GREY eyes!")) == "the grey eyes"
    path = tmp_path / "tokenizer.json"
    path.write_text(tok._hf.to_str(), encoding="utf-8")
    brought = BPETokenizer.from_file(path)
    assert (brought.encode("the grey eyes") == tok.encode("the grey eyes")).all()
    (tmp_path / "bad.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="expected a Hugging Face tokenizer.json"):
        BPETokenizer.from_file(tmp_path / "bad.json")
    with pytest.raises(OSError):
        BPETokenizer.from_file(tmp_path / "missing.json")


def test_errors():
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer(vocab_size=10)
    with pytest.raises(ValueError, match="empty text"):
        BPETokenizer().fit("")
    tok = BPETokenizer(vocab_size=300).fit(TEXT)
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([10**6])
    with pytest.raises(ValueError, match="no vocabulary|fit"):
        BPETokenizer().encode("x")


def test_import_rnnrs_does_not_import_tokenizers():
    code = "import sys, rnnrs, rnnrs.tokenizer; print('tokenizers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

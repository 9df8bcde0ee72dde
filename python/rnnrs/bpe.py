"""Subword tokens: :class:`BPETokenizer`, byte-level BPE through Hugging Face ``tokenizers``
(the optional extra ``rnnrs[bpe]``).

Words explode a vocabulary and characters are weak units for English; byte-level BPE (GPT-2's
scheme) has neither problem and never meets an unknown character. Train one on the corpus::

    tok = BPETokenizer(vocab_size=2000).fit(text)   # deterministic: the same text, the same merges
    ids = tok.encode(text)
    assert tok.decode(ids) == text

or bring a Hugging Face ``tokenizer.json`` with :meth:`BPETokenizer.from_file`. The tokenizer is
saved inside the model file as JSON (no pickle). Id 0 is ``<unk>`` for tokenizers trained here.

A byte-level token may end inside a UTF-8 character (a Chinese character is 3 bytes, often split
over tokens): :meth:`BPETokenizer.stream` returns a decoder that holds such bytes back until the
character is complete, so streamed text never shows broken characters.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, List, Optional, Union

import numpy as np

from .tokenizer import TOKENIZER_FORMAT, UNK_TOKEN, Vocab, _check_bool, _check_int, _FORMAT_VERSION, _Tokenizer

__all__ = ["BPETokenizer", "BPEStream"]

_INSTALL = "pip install 'rnnrs[bpe]'"


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as e:
        raise ImportError(f"BPE tokens need the Hugging Face tokenizers package: {_INSTALL} ({e})") from None
    return tokenizers


def _vocab_of(hf: Any) -> Vocab:
    """A :class:`Vocab` whose ids are the HF tokenizer's ids (order as HF numbers them)."""
    size = hf.get_vocab_size(with_added_tokens=True)
    itt = [hf.id_to_token(i) for i in range(size)]
    if any(t is None for t in itt):
        missing = next(i for i, t in enumerate(itt) if t is None)
        raise ValueError(f"tokenizer: expected ids 0..{size - 1} without gaps, got no token for id {missing}")
    vocab = Vocab.__new__(Vocab)
    vocab._init_state([itt[0]], [(t, 0) for t in itt[1:]])
    return vocab


class BPETokenizer(_Tokenizer):
    """Byte-level BPE tokenizer (Hugging Face ``tokenizers``), with the char and word tokenizers'
    interface: ``fit``, ``encode``, ``decode``, ``vocab``, ``to_json``/``from_json``, ``save``/``load``.

    ``vocab_size`` is the target size when fitting (>= 257: ``<unk>`` and the 256 byte tokens);
    ``min_freq`` the fewest occurrences of a pair that gets merged. ``lower`` and ``letters_only``
    normalise as the other tokenizers do.
    """

    level = "bpe"

    def __init__(self, vocab_size: int = 2000, lower: bool = False, letters_only: bool = False) -> None:
        super().__init__(None, lower=lower, letters_only=letters_only)
        self.vocab_size = _check_int(vocab_size, "vocab_size", 257)
        self._hf: Any = None

    # -- construction -------------------------------------------------------------------------
    def fit(self, text: str, min_freq: int = 2, reserved_tokens: Optional[Iterable[str]] = None,
            max_size: Optional[int] = None) -> "BPETokenizer":
        """Learn ``vocab_size`` (or ``max_size``) tokens from ``text`` (after normalisation); returns
        ``self``. ``reserved_tokens`` become special tokens right after ``<unk>``."""
        tk = _tokenizers()
        norm = self.normalize(text)
        if not norm:
            raise ValueError("cannot fit a tokenizer on empty text")
        size = self.vocab_size if max_size is None else _check_int(max_size, "max_size", 257)
        special = [UNK_TOKEN] + [t for t in (reserved_tokens or []) if t != UNK_TOKEN]
        hf = tk.Tokenizer(tk.models.BPE(unk_token=UNK_TOKEN))
        hf.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(vocab_size=size, min_frequency=_check_int(min_freq, "min_freq", 0),
                                         special_tokens=special, show_progress=False,
                                         initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
        hf.train_from_iterator(_chunks(norm), trainer=trainer, length=None)
        self._set(hf)
        return self

    @classmethod
    def from_file(cls, path: Union[str, "os.PathLike[str]"], lower: bool = False,
                  letters_only: bool = False) -> "BPETokenizer":
        """A tokenizer from a Hugging Face ``tokenizer.json`` (``OSError`` if unreadable,
        ``ValueError`` if it is not a tokenizer)."""
        tk = _tokenizers()
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError as e:
            raise ValueError(f"{os.fspath(path)}: expected a UTF-8 tokenizer.json, got {e}") from None
        try:
            hf = tk.Tokenizer.from_str(text)
        except Exception as e:  # tokenizers raises its own Exception type
            raise ValueError(f"{os.fspath(path)}: expected a Hugging Face tokenizer.json, got {e}") from None
        tok = cls(lower=lower, letters_only=letters_only)
        tok._set(hf)
        return tok

    def _set(self, hf: Any) -> None:
        self._hf = hf
        self.vocab = _vocab_of(hf)
        self.vocab_size = len(self.vocab)

    # -- the tokenizer interface --------------------------------------------------------------
    def tokenize(self, text: str) -> list:
        """The token strings of ``normalize(text)`` (byte-level: a leading space shows as ``Ġ``)."""
        self._require_vocab()
        return list(self._hf.encode(self.normalize(text), add_special_tokens=False).tokens)

    def _count(self, norm: str) -> dict:  # (fit is overridden)
        raise NotImplementedError

    def encode(self, text: str) -> np.ndarray:
        """Text -> 1-D ``np.int64`` ids."""
        self._require_vocab()
        norm = self.normalize(text)
        if not norm:
            return np.empty(0, dtype=np.int64)
        return np.asarray(self._hf.encode(norm, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids: Any) -> str:
        """Ids -> text (``ValueError`` for ids out of range). Bytes of an incomplete character at
        the end decode to U+FFFD; :meth:`stream` avoids that for text shown as it is generated."""
        vocab = self._require_vocab()
        arr = vocab._check_ids(ids)
        return str(self._hf.decode(arr.tolist(), skip_special_tokens=False))

    def stream(self) -> "BPEStream":
        """A streaming decoder: ``step(ids) -> str`` returns the text the new ids complete."""
        self._require_vocab()
        return BPEStream(self)

    # -- serialisation ------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BPETokenizer):
            return NotImplemented
        return (self.lower == other.lower and self.letters_only == other.letters_only
                and self.vocab == other.vocab and self.to_dict() == other.to_dict())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, lower={self.lower}, letters_only={self.letters_only})"

    def to_dict(self) -> dict:
        """JSON-ready dict: the common header and ``"hf"``, the Hugging Face tokenizer's own JSON."""
        return {
            "format": TOKENIZER_FORMAT, "version": _FORMAT_VERSION, "level": self.level,
            "lower": self.lower, "letters_only": self.letters_only, "vocab_size": self.vocab_size,
            "hf": None if self._hf is None else json.loads(self._hf.to_str()),
        }

    @classmethod
    def _from_dict(cls, obj: dict) -> "BPETokenizer":
        lower = _check_bool(obj.get("lower"), "tokenizer JSON field 'lower'")
        letters = _check_bool(obj.get("letters_only"), "tokenizer JSON field 'letters_only'")
        tok = cls(lower=lower, letters_only=letters)
        if obj.get("hf") is not None:
            tk = _tokenizers()
            try:
                hf = tk.Tokenizer.from_str(json.dumps(obj["hf"]))
            except Exception as e:
                raise ValueError(f"tokenizer JSON field 'hf': expected a Hugging Face tokenizer, got {e}") from None
            tok._set(hf)
        return tok


def _chunks(text: str, size: int = 1 << 16) -> Iterable[str]:
    """The text in pieces cut at newlines (the trainer's pre-tokenizer never merges across them)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


class BPEStream:
    """Incremental decoding for :meth:`BPETokenizer.stream`: bytes of a character split over
    tokens are held back until it is complete, so the text never shows broken characters;
    :meth:`flush` returns what is left (U+FFFD for bytes that never completed)."""

    def __init__(self, tok: BPETokenizer) -> None:
        self._tok = tok
        self._ids: List[int] = []
        self._shown = ""  # text returned so far
        self._stream = _tokenizers().decoders.DecodeStream(skip_special_tokens=False)

    def step(self, ids: Any) -> str:
        """Feed new ids; returns the newly completed text (maybe empty)."""
        arr = self._tok._require_vocab()._check_ids(np.atleast_1d(np.asarray(ids)))
        out = []
        for i in arr.tolist():
            self._ids.append(i)
            piece = self._stream.step(self._tok._hf, i)
            if piece:
                out.append(piece)
        new = "".join(out)
        self._shown += new
        return new

    def flush(self) -> str:
        """The rest of the text, incomplete characters included (as U+FFFD)."""
        text = self._tok._hf.decode(self._ids, skip_special_tokens=False)
        new = text[len(self._shown):] if text.startswith(self._shown) else ""
        self._shown = text
        return new

"""Character- and word-level tokenizers and a vocabulary, in pure Python + numpy.

This module mirrors the preprocessing of the "Dive into Deep Learning" (d2l)
text chapters (``Vocab``, ``tokenize(lines, 'char'|'word')``) while also being
correct for arbitrary Unicode text such as Chinese lyrics with emoji.

Quick start::

    tok = CharTokenizer().fit(text)          # vocabulary from the text itself
    ids = tok.encode(text)                    # 1-D np.int64 array
    assert tok.decode(ids) == text            # exact for in-vocabulary text
    tok.save("vocab.json")
    tok = load_tokenizer("vocab.json")        # -> CharTokenizer / WordTokenizer

Reproducing the book's preprocessing of *The Time Machine*::

    tok = CharTokenizer(letters_only=True, lower=True).fit(raw_text)

which is ``re.sub('[^A-Za-z]+', ' ', text).strip().lower()`` for ASCII text
(see :meth:`CharTokenizer.normalize` for the exact Unicode rule).

Design decisions
----------------
* **Tokens are Unicode code points** (exactly what iterating a Python ``str``
  yields).  Grapheme clusters are *not* merged: ``"e\\u0301"`` (e + combining
  acute) is two tokens, a ZWJ emoji family is five, a flag is two.  Round trips
  are still exact, but a sampling model can emit a lone combining mark or half
  a flag.  No Unicode normalisation (NFC/NFKC) is applied; do it yourself
  before ``fit``/``encode`` if you want composed and decomposed forms merged.
* Lone surrogates (e.g. from ``errors="surrogateescape"``) are not valid
  Unicode and are rejected with ``ValueError``.
* Index 0 is always ``"<unk>"``; unknown tokens encode to 0 and id 0 decodes
  to the literal string ``"<unk>"`` (as in d2l).
* Vocabulary order is deterministic: ``<unk>``, the reserved tokens in the
  order given, then the remaining tokens by decreasing count, ties broken by
  code-point order of the token string (Python ``str`` comparison).  Never
  hash- or insertion-order dependent.
* Files are UTF-8 JSON (human readable, Chinese is not escaped) written
  atomically (temp file in the same directory, fsync, ``os.replace``).
"""

from __future__ import annotations

import collections
import itertools
import json
import operator
import os
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, Optional, Union

import numpy as np

from ._atomic import atomic_write_text

__all__ = [
    "Vocab",
    "CharTokenizer",
    "WordTokenizer",
    "load_tokenizer",
    "tokenizer_from_json",
    "NotFittedError",
    "UNK_TOKEN",
    "VOCAB_FORMAT",
    "TOKENIZER_FORMAT",
]

UNK_TOKEN = "<unk>"
VOCAB_FORMAT = "rnnrs-vocab"
TOKENIZER_FORMAT = "rnnrs-tokenizer"
_FORMAT_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]


class NotFittedError(ValueError, RuntimeError):
    """A tokenizer was used before it had a vocabulary (call ``fit(text)`` first or pass ``vocab=``).

    A ``ValueError`` like every other user mistake, and a ``RuntimeError`` for older code."""


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def _type_name(x: Any) -> str:
    return type(x).__name__


def _check_text(text: Any, what: str = "text") -> str:
    """Return ``text`` if it is a valid Unicode ``str``; raise otherwise."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be str, got {_type_name(text)}")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(
                f"{what} contains a lone surrogate U+{ord(text[e.start]):04X} at "
                f"index {e.start}; it is not valid Unicode (read files with "
                f"encoding='utf-8' and errors='strict' or 'replace')"
            ) from None
    return text


def _check_int(value: Any, name: str, minimum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {_type_name(value)}")
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {_type_name(value)}")
    return bool(value)


_atomic_write_text = atomic_write_text


def _read_json_file(path: PathLike, what: str) -> str:
    with open(os.fspath(path), "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} file {os.fspath(path)!r} is not valid UTF-8: {e}") from None


def _parse_json(s: Any, what: str) -> Any:
    if isinstance(s, (bytes, bytearray)):
        try:
            s = bytes(s).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{what} JSON is not valid UTF-8: {e}") from None
    if not isinstance(s, str):
        raise TypeError(f"{what} JSON must be str, got {_type_name(s)}")
    try:
        return json.loads(s)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise ValueError(f"{what} JSON is nested too deeply to be parsed") from None


def _check_header(obj: Any, fmt: str, what: str) -> None:
    if not isinstance(obj, dict):
        raise ValueError(f"{what} JSON must be an object, got {type(obj).__name__}")
    got_fmt = obj.get("format")
    if got_fmt != fmt:
        raise ValueError(f"{what} JSON has format {got_fmt!r}, expected {fmt!r}")
    version = obj.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version != _FORMAT_VERSION:
        raise ValueError(
            f"{what} JSON has unsupported version {version!r}, expected {_FORMAT_VERSION}"
        )


def _is_letter_or_mark(ch: str) -> bool:
    return ch.isalpha() or unicodedata.category(ch)[0] == "M"


def _letters_only(text: str) -> str:
    """Replace every run of non-letters by one ASCII space and strip the ends.

    Vectorised over code points (a Python loop only over *distinct* code
    points), so it stays fast on multi-megabyte corpora.
    """
    if not text:
        return text
    cps = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    present = np.flatnonzero(np.bincount(cps))
    keep_table = np.zeros(int(present[-1]) + 1, dtype=bool)
    keep_table[present] = np.fromiter(
        (_is_letter_or_mark(chr(c)) for c in present.tolist()), dtype=bool, count=present.size
    )
    keep = keep_table[cps]
    out = np.where(keep, cps, np.uint32(0x20))
    sep = ~keep
    drop = sep.copy()
    drop[1:] &= sep[:-1]  # a separator directly after another one collapses
    out = out[~drop]
    return out.astype("<u4", copy=False).tobytes().decode("utf-32-le").strip(" ")


# --------------------------------------------------------------------------
# Vocab
# --------------------------------------------------------------------------


class Vocab:
    """Token <-> id mapping with deterministic, count-based order (d2l ``Vocab``).

    Parameters
    ----------
    tokens_or_counter:
        ``None`` (empty), a mapping ``token -> count`` (e.g. ``collections.Counter``),
        or an iterable of tokens.  As in d2l, an iterable of lists/tuples of
        tokens (one per line) is flattened one level.  A bare ``str`` is
        rejected (pass ``list(text)`` or ``text.split()``).
    min_freq:
        Tokens with count ``< min_freq`` are dropped (``0`` and ``1`` keep all).
    reserved_tokens:
        Tokens placed right after ``<unk>`` in the given order, whether or not
        they occur in the input (e.g. ``["<pad>", "<bos>", "<eos>"]``).
        Must be unique, non-empty and must not contain ``"<unk>"``.
    max_size:
        Cap on the *total* size including ``<unk>`` and the reserved tokens;
        the least frequent tokens (by the order above) are cut.  Must be
        ``>= 1 + len(reserved_tokens)``.

    Order: index 0 ``<unk>``, then reserved tokens, then the other tokens by
    count descending, ties by code-point order of the token string.

    Attributes (all return fresh copies; the vocabulary is immutable):
    ``idx_to_token`` (list), ``token_to_idx`` (dict), ``reserved_tokens`` (list),
    ``token_freqs``: list of ``(token, count)`` for the *counted* tokens kept
    in the vocabulary, in vocabulary order (i.e. aligned with
    ``idx_to_token[1 + len(reserved_tokens):]``) -- so ``token_freqs[:10]`` are
    the ten most frequent tokens as in the book.  Occurrences of ``<unk>`` or a
    reserved token in the input are not listed there.

    Equality compares ``idx_to_token``, ``reserved_tokens`` and ``token_freqs``.
    """

    __slots__ = ("_itt", "_t2i", "_reserved", "_freqs", "_char_table")

    def __init__(
        self,
        tokens_or_counter: Union[None, Mapping, Iterable] = None,
        min_freq: int = 1,
        reserved_tokens: Optional[Iterable[str]] = None,
        max_size: Optional[int] = None,
    ) -> None:
        min_freq = _check_int(min_freq, "min_freq", 0)
        reserved = self._check_reserved(reserved_tokens)
        if max_size is not None:
            max_size = _check_int(max_size, "max_size")
            if max_size < 1 + len(reserved):
                raise ValueError(
                    f"max_size must be >= 1 + len(reserved_tokens) = {1 + len(reserved)} "
                    f"(room for '<unk>' and the reserved tokens), got {max_size}"
                )
        self._build(self._count(tokens_or_counter), min_freq, reserved, max_size)

    # -- construction helpers ------------------------------------------------

    @classmethod
    def _from_counts(cls, counts: dict, min_freq: int = 1, reserved_tokens: Any = None,
                     max_size: Optional[int] = None) -> "Vocab":
        """Like ``Vocab(counts, ...)`` but trusts ``counts`` (str -> int >= 0),
        which the tokenizers have already validated; options are still checked."""
        self = cls(None, min_freq=min_freq, reserved_tokens=reserved_tokens, max_size=max_size)
        self._build(counts, min_freq, self._reserved, max_size)
        return self

    def _build(self, counts: dict, min_freq: int, reserved: list,
               max_size: Optional[int]) -> None:
        special = set(reserved)
        special.add(UNK_TOKEN)
        items = [(t, c) for t, c in counts.items() if c >= min_freq and t not in special]
        # canonical order: count descending, ties by code point (two stable sorts)
        items.sort(key=operator.itemgetter(0))
        items.sort(key=operator.itemgetter(1), reverse=True)
        if max_size is not None:
            items = items[: max_size - 1 - len(reserved)]
        self._init_state([UNK_TOKEN] + list(reserved), items)

    def _init_state(self, head: list, items: list) -> None:
        self._reserved = list(head[1:])
        self._freqs = items
        self._itt = list(head) + [t for t, _ in items]
        self._t2i = {t: i for i, t in enumerate(self._itt)}
        self._char_table = None
        if len(self._t2i) != len(self._itt):
            raise ValueError("vocabulary tokens are not unique")

    @staticmethod
    def _check_token(tok: Any, what: str) -> str:
        if not isinstance(tok, str):
            raise TypeError(f"{what} must be str, got {_type_name(tok)}: {tok!r}")
        if not tok:
            raise ValueError(f"{what} must be a non-empty string")
        if not tok.isascii():
            _check_text(tok, what)
        return tok

    @classmethod
    def _check_reserved(cls, reserved_tokens: Any) -> list:
        if reserved_tokens is None:
            return []
        if isinstance(reserved_tokens, str):
            raise TypeError("reserved_tokens must be a list of str, got a single str")
        reserved = [cls._check_token(t, "reserved token") for t in reserved_tokens]
        if UNK_TOKEN in reserved:
            raise ValueError("'<unk>' is always index 0; do not list it in reserved_tokens")
        if len(set(reserved)) != len(reserved):
            dup = [t for t, c in collections.Counter(reserved).items() if c > 1]
            raise ValueError(f"reserved_tokens contains duplicates: {dup}")
        return reserved

    @classmethod
    def _count(cls, source: Any) -> dict:
        if source is None:
            return {}
        if isinstance(source, str):
            raise TypeError(
                "Vocab expects tokens (a list of str) or a token->count mapping, got a str; "
                "pass list(text) for characters or text.split() for words"
            )
        if isinstance(source, Mapping):
            counts = {}
            for tok, c in source.items():
                cls._check_token(tok, "token")
                c = _check_int(c, f"count of token {tok!r}")
                if c < 0:
                    raise ValueError(f"count of token {tok!r} must be >= 0, got {c}")
                counts[tok] = c
            return counts
        if not isinstance(source, Iterable):
            raise TypeError(
                f"Vocab expects an iterable of tokens or a token->count mapping, got "
                f"{_type_name(source)}"
            )
        counter: collections.Counter = collections.Counter()
        for item in source:
            if isinstance(item, (list, tuple)):
                counter.update(item)
            else:
                counter[item] += 1
        for tok in counter:
            cls._check_token(tok, "token")
        return dict(counter)

    # -- mapping API -----------------------------------------------------------

    @property
    def unk(self) -> int:
        """Id of ``<unk>`` (always 0)."""
        return 0

    @property
    def idx_to_token(self) -> list:
        """All tokens by id (``idx_to_token[i]`` is the token of id ``i``; index 0 is ``<unk>``);
        a fresh list."""
        return list(self._itt)

    @property
    def token_to_idx(self) -> dict:
        """``{token: id}`` for every token of the vocabulary; a fresh dict (use ``vocab[token]`` to
        map unknown tokens to 0)."""
        return dict(self._t2i)

    @property
    def reserved_tokens(self) -> list:
        """The reserved tokens in order, ids ``1 .. len(reserved_tokens)`` (``<unk>`` not included);
        a fresh list."""
        return list(self._reserved)

    @property
    def token_freqs(self) -> list:
        """``[(token, count)]`` of the counted tokens kept, in vocabulary order (count descending,
        ties by code point), aligned with ``idx_to_token[1 + len(reserved_tokens):]``; a fresh list."""
        return list(self._freqs)

    def __len__(self) -> int:
        return len(self._itt)

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and token in self._t2i

    def __getitem__(self, tokens: Any) -> Any:
        """``vocab["a"] -> id`` (unknown -> 0); a list/tuple gives a list of ids."""
        if isinstance(tokens, str):
            return self._t2i.get(tokens, 0)
        if isinstance(tokens, (list, tuple)):
            return [self[t] for t in tokens]
        raise TypeError(f"Vocab index must be a str token or a list of them, got {_type_name(tokens)}")

    def to_ids(self, tokens: Iterable[str]) -> np.ndarray:
        """Map tokens (an iterable of str, not a bare str) to a 1-D ``np.int64`` array
        ``(len(tokens),)`` (unknown -> 0)."""
        if isinstance(tokens, str):
            raise TypeError("to_ids expects a sequence of tokens, got a str; use list(text)")
        get = self._t2i.get
        out = []
        for t in tokens:
            if not isinstance(t, str):
                raise TypeError(f"tokens must be str, got {_type_name(t)}: {t!r}")
            out.append(get(t, 0))
        return np.array(out, dtype=np.int64)

    def _check_ids(self, ids: Any) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.size == 0:
            if arr.ndim != 1:
                raise ValueError(f"ids must be 1-D, got shape {arr.shape}")
            return np.empty(0, dtype=np.int64)
        if arr.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
        if arr.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {arr.shape}")
        lo, hi = int(arr.min()), int(arr.max())
        n = len(self._itt)
        if lo < 0 or hi >= n:
            bad = lo if lo < 0 else hi
            raise ValueError(f"token id {bad} is out of range for a vocabulary of size {n} "
                             f"(valid ids: 0..{n - 1})")
        return arr.astype(np.int64, copy=False)

    def to_tokens(self, ids: Any) -> Any:
        """Id -> token (a single int gives a str; a list or 1-D integer array of ids, any integer
        dtype, a list of str).

        Ids outside ``0..len(vocab)-1`` raise ``ValueError`` (no negative indexing).
        """
        if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
            i = int(ids)
            if not 0 <= i < len(self._itt):
                raise ValueError(f"token id {i} is out of range for a vocabulary of size "
                                 f"{len(self._itt)} (valid ids: 0..{len(self._itt) - 1})")
            return self._itt[i]
        arr = self._check_ids(ids)
        itt = self._itt
        return [itt[i] for i in arr.tolist()]

    def _char_lookup(self) -> np.ndarray:
        """Dense code point -> id table (last slot: 0 for code points beyond it)."""
        if self._char_table is None:
            singles = [(ord(t), i) for i, t in enumerate(self._itt) if len(t) == 1]
            top = max((cp for cp, _ in singles), default=-1)
            table = np.zeros(top + 2, dtype=np.int64)
            if singles:
                cps, ids = zip(*singles)
                table[list(cps)] = ids
            self._char_table = table
        return self._char_table

    # -- equality / repr -------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return (self._itt == other._itt and self._reserved == other._reserved
                and self._freqs == other._freqs)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = self._itt[: 1 + len(self._reserved) + 8]
        more = ", ..." if len(self._itt) > len(head) else ""
        return f"Vocab(size={len(self._itt)}, tokens={head!r}{more})"

    # -- serialisation -----------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-ready dict (``format``, ``version``, ``reserved_tokens``,
        ``idx_to_token``, ``token_freqs``)."""
        return {
            "format": VOCAB_FORMAT,
            "version": _FORMAT_VERSION,
            "reserved_tokens": list(self._reserved),
            "idx_to_token": list(self._itt),
            "token_freqs": [[t, c] for t, c in self._freqs],
        }

    @classmethod
    def from_dict(cls, obj: Any) -> "Vocab":
        """Inverse of :meth:`to_dict`; ``ValueError`` naming the problem if malformed."""
        what = "vocab"
        _check_header(obj, VOCAB_FORMAT, what)
        for key in ("reserved_tokens", "idx_to_token", "token_freqs"):
            if key not in obj:
                raise ValueError(f"{what} JSON is missing the field {key!r}")
            if not isinstance(obj[key], list):
                raise ValueError(f"{what} JSON field {key!r} must be a list, got "
                                 f"{type(obj[key]).__name__}")
        itt, reserved, freqs = obj["idx_to_token"], obj["reserved_tokens"], obj["token_freqs"]
        for i, t in enumerate(itt):
            if not isinstance(t, str) or not t:
                raise ValueError(f"{what} JSON idx_to_token[{i}] must be a non-empty string, "
                                 f"got {t!r}")
        if not itt or itt[0] != UNK_TOKEN:
            raise ValueError(f"{what} JSON idx_to_token[0] must be {UNK_TOKEN!r}, got "
                             f"{(itt[0] if itt else None)!r}")
        if len(set(itt)) != len(itt):
            dup = [t for t, c in collections.Counter(itt).items() if c > 1]
            raise ValueError(f"{what} JSON idx_to_token has duplicate tokens: {dup[:10]}")
        if itt[1: 1 + len(reserved)] != reserved:
            raise ValueError(f"{what} JSON reserved_tokens {reserved[:10]!r} do not match "
                             f"idx_to_token[1:{1 + len(reserved)}]")
        pairs = []
        for i, p in enumerate(freqs):
            if (not isinstance(p, list) or len(p) != 2 or not isinstance(p[0], str)
                    or isinstance(p[1], bool) or not isinstance(p[1], int) or p[1] < 0):
                raise ValueError(f"{what} JSON token_freqs[{i}] must be [token, count>=0], "
                                 f"got {p!r}")
            pairs.append((p[0], p[1]))
        rest = itt[1 + len(reserved):]
        if [t for t, _ in pairs] != rest:
            raise ValueError(f"{what} JSON token_freqs tokens do not match "
                             f"idx_to_token[{1 + len(reserved)}:]")
        for i in range(1, len(pairs)):
            if (-pairs[i - 1][1], pairs[i - 1][0]) > (-pairs[i][1], pairs[i][0]):
                raise ValueError(f"{what} JSON token_freqs is not in canonical order "
                                 f"(count descending, then code point) at index {i}")
        try:
            for t in itt:
                cls._check_token(t, "token")
        except (TypeError, ValueError) as e:
            raise ValueError(f"{what} JSON: {e}") from None
        self = cls.__new__(cls)
        self._init_state([UNK_TOKEN] + list(reserved), pairs)
        return self

    def to_json(self, indent: Optional[int] = 1) -> str:
        """UTF-8-friendly JSON string (non-ASCII characters are not escaped)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    @classmethod
    def from_json(cls, s: Union[str, bytes]) -> "Vocab":
        """Inverse of :meth:`to_json` (a str or UTF-8 bytes); ``ValueError`` naming the problem if
        it is not valid JSON or not a valid vocabulary."""
        return cls.from_dict(_parse_json(s, "vocab"))

    def save(self, path: PathLike) -> None:
        """Atomically write :meth:`to_json` to ``path`` (UTF-8)."""
        _atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: PathLike) -> "Vocab":
        """Read a file written by :meth:`save`; ``ValueError`` if it is not one."""
        return cls.from_json(_read_json_file(path, "vocab"))


# --------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------


class _Tokenizer:
    level: str = ""

    def __init__(self, vocab: Optional[Vocab] = None, lower: bool = False,
                 letters_only: bool = False) -> None:
        if vocab is not None and not isinstance(vocab, Vocab):
            raise TypeError(f"vocab must be a Vocab or None, got {_type_name(vocab)}")
        self.vocab: Optional[Vocab] = vocab
        self.lower = _check_bool(lower, "lower")
        self.letters_only = _check_bool(letters_only, "letters_only")

    # -- text processing -----------------------------------------------------------

    def normalize(self, text: str) -> str:
        """Apply the configured normalisation and return the resulting string.

        * ``lower=True``: ``str.lower()`` (full Unicode lower-casing; may
          change the length, e.g. ``"İ"`` -> ``"i\\u0307"``).
        * ``letters_only=True``: every maximal run of characters that are
          neither letters (``str.isalpha()``: Unicode categories L*, which
          includes Chinese characters) nor combining marks (categories M*,
          kept so accents and Devanagari vowel signs survive) is replaced by
          one ASCII space, and leading/trailing spaces are removed.  Digits,
          ``_``, punctuation (incl. ``，。``), symbols, emoji and all whitespace
          (newlines too) are separators.  For ASCII text this is exactly the
          book's ``re.sub('[^A-Za-z]+', ' ', text).strip()``.  Letters are
          judged by the Unicode database of the running Python.

        The book's preprocessing is ``letters_only=True, lower=True``; the two
        options are independent.  Raises ``TypeError`` for non-``str`` input.
        """
        text = _check_text(text)
        if self.lower:
            text = text.lower()
        if self.letters_only:
            text = _letters_only(text)
        return text

    def tokenize(self, text: str) -> list:  # pragma: no cover - overridden
        """The tokens (a list of str) of ``normalize(text)``; see the subclasses."""
        raise NotImplementedError

    def _count(self, norm: str) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError

    def fit(self, text: str, min_freq: int = 1, reserved_tokens: Optional[Iterable[str]] = None,
            max_size: Optional[int] = None) -> "_Tokenizer":
        """Build ``self.vocab`` from ``text`` (after normalisation); returns ``self``.

        Arguments after ``text`` are passed to :class:`Vocab`.  Empty text (or
        text that normalises to nothing) raises ``ValueError``.
        """
        norm = self.normalize(text)
        if not text:
            raise ValueError("cannot fit a tokenizer on empty text")
        counts = self._count(norm)
        if not counts:
            raise ValueError(
                f"no tokens left to fit after normalisation (lower={self.lower}, "
                f"letters_only={self.letters_only}) of a text of {len(text)} characters"
            )
        self.vocab = Vocab._from_counts(counts, min_freq=min_freq,
                                        reserved_tokens=reserved_tokens, max_size=max_size)
        return self

    def _require_vocab(self) -> Vocab:
        if self.vocab is None:
            raise NotFittedError(
                f"{type(self).__name__} has no vocabulary: call fit(text) first or pass vocab="
            )
        return self.vocab

    def encode(self, text: str) -> np.ndarray:  # pragma: no cover - overridden
        """Text -> 1-D ``np.int64`` ids ``(num_tokens,)`` (unknown tokens -> 0); ``NotFittedError``
        without a vocabulary. See the subclasses."""
        raise NotImplementedError

    def decode(self, ids: Any) -> str:  # pragma: no cover - overridden
        """1-D integer ids (a list or an array of any integer dtype) -> text; ``ValueError`` for ids
        out of range, ``NotFittedError`` without a vocabulary. See the subclasses."""
        raise NotImplementedError

    # -- misc ---------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Tokenizer):
            return NotImplemented
        return (type(self) is type(other) and self.lower == other.lower
                and self.letters_only == other.letters_only and self.vocab == other.vocab)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        size = None if self.vocab is None else len(self.vocab)
        return (f"{type(self).__name__}(vocab_size={size}, lower={self.lower}, "
                f"letters_only={self.letters_only})")

    # -- serialisation --------------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-ready dict: ``format``, ``version``, ``level`` (``"char"`` or ``"word"``),
        ``lower``, ``letters_only`` and ``vocab`` (:meth:`Vocab.to_dict`, or None if not fitted)."""
        return {
            "format": TOKENIZER_FORMAT,
            "version": _FORMAT_VERSION,
            "level": self.level,
            "lower": self.lower,
            "letters_only": self.letters_only,
            "vocab": None if self.vocab is None else self.vocab.to_dict(),
        }

    def to_json(self, indent: Optional[int] = 1) -> str:
        """:meth:`to_dict` as a JSON string (non-ASCII characters are not escaped)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    @classmethod
    def from_dict(cls, obj: Any) -> "_Tokenizer":
        """Inverse of :meth:`to_dict`: a tokenizer of this class. ``ValueError`` naming the problem
        if ``obj`` is malformed or of the other level (:func:`load_tokenizer` and
        :func:`tokenizer_from_json` pick the class from the level)."""
        tok = _tokenizer_from_dict(obj)
        if cls is not _Tokenizer and type(tok) is not cls:
            raise ValueError(
                f"tokenizer JSON has level {tok.level!r}, but {cls.__name__} has level "
                f"{cls.level!r}; use rnnrs.tokenizer.load_tokenizer() to get the right class"
            )
        return tok

    @classmethod
    def from_json(cls, s: Union[str, bytes]) -> "_Tokenizer":
        """Inverse of :meth:`to_json` (a str or UTF-8 bytes); errors as :meth:`from_dict`."""
        return cls.from_dict(_parse_json(s, "tokenizer"))

    def save(self, path: PathLike) -> None:
        """Atomically write options + vocabulary as UTF-8 JSON to ``path``."""
        _atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: PathLike) -> "_Tokenizer":
        """Read a file written by :meth:`save`: a tokenizer of this class (``ValueError`` if the
        file is malformed or of the other level; ``OSError`` if it cannot be read)."""
        return cls.from_json(_read_json_file(path, "tokenizer"))


class CharTokenizer(_Tokenizer):
    """Character-level tokenizer: one token per Unicode code point.

    ``tokenize(text) == list(normalize(text))``.  Grapheme clusters are not
    merged (see the module docstring); ``decode(encode(s)) == s`` holds for
    every ``s`` whose code points are all in the vocabulary (with
    ``lower``/``letters_only`` it is ``normalize(s)``).  Multi-character
    vocabulary entries (``<unk>``, reserved tokens such as ``<pad>``) are never
    produced by ``encode`` but ``decode`` writes them out literally.

    ``encode`` is vectorised (UTF-32 view of the text + a dense code point ->
    id table), so megabytes of text encode in tens of milliseconds.
    """

    level = "char"

    def tokenize(self, text: str) -> list:
        """``list(normalize(text))``: one str per Unicode code point."""
        return list(self.normalize(text))

    def _count(self, norm: str) -> dict:
        if not norm:
            return {}
        cps = np.frombuffer(norm.encode("utf-32-le"), dtype="<u4")
        counts = np.bincount(cps)
        present = np.flatnonzero(counts)
        return {chr(c): n for c, n in zip(present.tolist(), counts[present].tolist())}

    def encode(self, text: str) -> np.ndarray:
        """Text -> 1-D ``np.int64`` ids ``(len(normalize(text)),)``; characters not in the vocab -> 0."""
        vocab = self._require_vocab()
        norm = self.normalize(text)
        if not norm:
            return np.empty(0, dtype=np.int64)
        cps = np.frombuffer(norm.encode("utf-32-le"), dtype="<u4")
        table = vocab._char_lookup()
        idx = np.minimum(cps, np.uint32(table.size - 1))
        return table[idx]

    def decode(self, ids: Any) -> str:
        """Ids (list or 1-D integer array) -> text, concatenating the tokens.

        ``ValueError`` naming the id and the vocabulary size for ids out of range.
        """
        vocab = self._require_vocab()
        arr = vocab._check_ids(ids)
        itt = vocab._itt
        return "".join(map(itt.__getitem__, arr.tolist()))


class WordTokenizer(_Tokenizer):
    """Word-level tokenizer: ``tokenize(text) == normalize(text).split()``.

    Splits on runs of Unicode whitespace (``str.split()``); ``decode`` joins
    tokens with single spaces, so whitespace (newlines, repeated spaces) is
    **not** preserved at word level: ``decode(encode(s)) == " ".join(s.split())``
    for in-vocabulary text.  Punctuation stays attached to words unless
    ``letters_only=True``.  Chinese text has no spaces, so a whole run of
    Chinese characters is one "word"; use :class:`CharTokenizer` for Chinese,
    or pre-segment it (e.g. with a word segmenter) and join the words with
    spaces.
    """

    level = "word"

    def tokenize(self, text: str) -> list:
        """``normalize(text).split()``: words separated by runs of Unicode whitespace."""
        return self.normalize(text).split()

    def _count(self, norm: str) -> dict:
        return dict(collections.Counter(norm.split()))

    def encode(self, text: str) -> np.ndarray:
        """Text -> 1-D ``np.int64`` word ids ``(len(tokenize(text)),)``; unknown words -> 0."""
        vocab = self._require_vocab()
        words = self.normalize(text).split()
        get = vocab._t2i.get
        return np.fromiter(map(get, words, itertools.repeat(0)), dtype=np.int64, count=len(words))

    def decode(self, ids: Any) -> str:
        """Ids (a list or 1-D integer array) -> words joined by single spaces (``ValueError`` for
        ids out of range)."""
        vocab = self._require_vocab()
        arr = vocab._check_ids(ids)
        itt = vocab._itt
        return " ".join(map(itt.__getitem__, arr.tolist()))


_LEVELS = {"char": CharTokenizer, "word": WordTokenizer}


def _tokenizer_from_dict(obj: Any) -> _Tokenizer:
    what = "tokenizer"
    _check_header(obj, TOKENIZER_FORMAT, what)
    level = obj.get("level")
    if level == "bpe":  # (needs the optional tokenizers package: imported only for such files)
        from .bpe import BPETokenizer
        return BPETokenizer._from_dict(obj)
    if level not in _LEVELS:
        raise ValueError(f"{what} JSON has level {level!r}, expected one of {sorted([*_LEVELS, 'bpe'])}")
    opts = {}
    for key in ("lower", "letters_only"):
        value = obj.get(key)
        if not isinstance(value, bool):
            raise ValueError(f"{what} JSON field {key!r} must be true or false, got {value!r}")
        opts[key] = value
    if "vocab" not in obj:
        raise ValueError(f"{what} JSON is missing the field 'vocab'")
    vocab = None if obj["vocab"] is None else Vocab.from_dict(obj["vocab"])
    return _LEVELS[level](vocab=vocab, **opts)


def tokenizer_from_json(s: Union[str, bytes]) -> _Tokenizer:
    """Parse a tokenizer JSON string into a :class:`CharTokenizer` or :class:`WordTokenizer`."""
    return _tokenizer_from_dict(_parse_json(s, "tokenizer"))


def load_tokenizer(path: PathLike) -> _Tokenizer:
    """Load a file written by ``CharTokenizer.save``/``WordTokenizer.save``,
    returning an instance of the right class.  ``ValueError`` if malformed."""
    return tokenizer_from_json(_read_json_file(path, "tokenizer"))

"""Text generation: :class:`LyricGenerator` (tokenizer + model → text) and the ``generate`` command.

The sampling loop itself runs in Rust (``rnnrs._rnnrs.sample``/``Sampler``/``beam_search``): one call
generates a whole batch of sequences with the GIL released, with no Python in the loop. Same model,
prefix, options and seed ⇒ the same text, on any number of threads, in a batch or alone, streamed or
not.

Quick start::

    gen = LyricGenerator.load("runs/songci")          # or LyricGenerator.default(): the built-in model
    print(gen.generate("明月", length=100, temperature=0.8, top_p=0.9, seed=1))
    for piece in gen.stream("明月", length=100, seed=1):
        print(piece, end="", flush=True)               # the same text, as it is generated
    gen.generate_many(["明月", "春风"], seed=1)         # one batch; sequence i uses seed 1 + i

**Options** (as in Hugging Face ``generate``, applied in this order): ``repetition_penalty`` (CTRL:
the logit ``l`` of every token already in the prefix or generated becomes ``l / r`` if ``l > 0`` else
``l * r``), ``temperature`` (``0`` or ``greedy=True``: argmax), ``top_k``, ``top_p`` (nucleus: the
smallest most-probable set with probability ``>= p``), then one random draw from the sequence's own
seeded stream. ``stop`` tokens end a sequence (they are included in the text).

**Weight storage** (``weights=``, ``--weights``): generating one sequence is limited by how fast the
weights can be read (every token reads all of them), so they can be streamed as float16 — half the
bytes — with float32 arithmetic. ``"auto"`` (the default) does so only when every weight is exactly
representable in float16 (a model saved in float16, like the built-in one): the results are then
bit-identical to ``"f32"``. ``"f16"`` rounds ordinary float32 weights to float16 (lossy: each weight
changes by at most 2⁻¹¹ of its size, log-probabilities typically by ~1e-3), ``"f32"`` never uses
float16. The float16 copy is made once and kept with the model until its weights change.

**Log-probabilities** (``return_logprobs=True``, :meth:`LyricGenerator.score`) are the model's own:
``log p_model(token | context)`` of each generated token, natural log, *before* the penalty,
temperature and filtering — comparable across samples drawn with different options, e.g. to rank
them by their sum.

**Prefix characters not in the vocabulary** are dropped from the model's input with an
:class:`UnknownTokenWarning` naming them, and kept in the returned text. If nothing of the prefix is
left (or the prefix is ``""``), generation starts from :attr:`LyricGenerator.start_id`: the newline
token when the vocabulary has one (the start of a line), else the most frequent token; that start
token is not part of the returned text.

**A prefix is continued**, so with a ``letters_only`` character tokenizer (which strips a text's ends)
a prefix ending with non-letters gives the model the one space such a run became in training:
``"the time "`` and ``"the time,"`` are both continued after ``"the time "`` (and the returned text
of the latter is ``"the time, "`` + continuation).
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import os
import sys
import warnings
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _rnnrs
from .tokenizer import _is_letter_or_mark

__all__ = [
    "LyricGenerator",
    "UnknownTokenWarning",
    "DEFAULT_MODEL_DIR",
    "add_generate_arguments",
    "run_generate",
]

#: Directory of the built-in model (``model.safetensors`` with its tokenizer), shipped in the package.
DEFAULT_MODEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "songci")

EXIT_OK, EXIT_USAGE = 0, 2


class UnknownTokenWarning(UserWarning):
    """Part of a prefix is not in the model's vocabulary and was left out of the model's input."""


# ================================================================================ option checking
def _type_name(x: Any) -> str:
    return type(x).__name__


def _int(name: str, value: Any, minimum: int, optional: bool = False,
         limit: Optional[int] = 2**63) -> Optional[int]:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        none = " or None" if optional else ""
        raise TypeError(f"{name}: expected an integer >= {minimum}{none}, got {_type_name(value)} {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    if limit is not None and value >= limit:
        raise ValueError(f"{name}: expected an integer in [{minimum}, 2**{limit.bit_length() - 1}), got {value}")
    return value


def _real(name: str, value: Any, expected: str, ok, optional: bool = False) -> Optional[float]:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected {expected}, got {_type_name(value)} {value!r}")
    value = float(value)
    if not ok(value):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return value


def _seed(name: str, value: Any) -> int:
    seed = _int(name, value, 0, limit=2**64)
    assert seed is not None  # (not optional)
    return seed


#: The values of ``weights=`` (see the module documentation).
WEIGHT_FORMATS = ("auto", "f32", "f16")


def _weights(weights: Any) -> str:
    expected = "one of " + ", ".join(f'"{w}"' for w in WEIGHT_FORMATS)
    if not isinstance(weights, str):
        raise TypeError(f"weights: expected {expected}, got {_type_name(weights)} {weights!r}")
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"weights: expected {expected}, got {weights!r}")
    return weights


def sampling_options(length: Any, temperature: Any = 1.0, top_k: Any = None, top_p: Any = None,
                     repetition_penalty: Any = 1.0, stop_tokens: Any = (), greedy: Any = False,
                     banned_tokens: Any = (), weights: Any = "auto") -> Dict[str, Any]:
    """Check the sampling options (``TypeError`` for a wrong type, ``ValueError`` for a value out of
    range, each naming the option, what was expected and what was given) and return them as the
    keyword arguments of ``rnnrs._rnnrs.sample``. ``greedy=True`` sets the temperature to 0."""
    if not isinstance(greedy, (bool, np.bool_)):
        raise TypeError(f"greedy: expected True or False, got {_type_name(greedy)} {greedy!r}")
    temperature = _real("temperature", temperature, "a finite number >= 0 (0 = greedy)",
                        lambda v: math.isfinite(v) and v >= 0.0)
    if isinstance(stop_tokens, (str, bytes)) or not isinstance(stop_tokens, Iterable):
        raise TypeError(f"stop_tokens: expected a sequence of token ids, got {_type_name(stop_tokens)}")
    stops = [_int("stop token", t, 0) for t in stop_tokens]
    if isinstance(banned_tokens, (str, bytes)) or not isinstance(banned_tokens, Iterable):
        raise TypeError(f"banned_tokens: expected a sequence of token ids, got {_type_name(banned_tokens)}")
    banned = [_int("banned token", t, 0) for t in banned_tokens]
    top_k = _int("top_k", top_k, 1, optional=True, limit=None)
    return dict(
        length=_int("length", length, 0),
        temperature=0.0 if greedy else temperature,
        top_k=None if top_k is None else min(top_k, 2**63),  # k >= vocabulary size keeps every token
        top_p=_real("top_p", top_p, "a number in (0, 1] or None", lambda v: 0.0 < v <= 1.0, optional=True),
        repetition_penalty=_real("repetition_penalty", repetition_penalty, "a finite number > 0 (1 = no penalty)",
                                 lambda v: math.isfinite(v) and v > 0.0),
        stop_tokens=stops,
        banned_tokens=banned,
        weights=_weights(weights),
    )


def _check_count(name: str, n: int) -> None:
    """At most ``MAX_SEQUENCES`` sequences in one call (checked before any work is done)."""
    if n > _rnnrs.MAX_SEQUENCES:
        raise ValueError(f"{name}: expected at most {_rnnrs.MAX_SEQUENCES} sequences in one call, got {n}")


def prefix_array(name: str, ids: Any, vocab_size: int) -> np.ndarray:
    """A non-empty 1-D int64 array of ids in ``[0, vocab_size)``, or TypeError/ValueError."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{name}: expected token ids (a 1-D integer array or list), got {_type_name(ids)}; "
                        "encode text with a tokenizer, or use LyricGenerator")
    a = np.asarray(ids)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.integer) or (a.size == 0 and a.dtype.kind == "f")):
        raise TypeError(f"{name}: expected integer token ids, got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array (seq_len,) of token ids, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name}: expected at least one token id, got an empty prefix")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"{name}: expected token ids in [0, {vocab_size}), got {lo if lo < 0 else hi}")
    return np.require(a, np.int64, ["C_CONTIGUOUS", "ALIGNED"])


# ====================================================================================== generator
class LyricGenerator:
    """Generate text with a :class:`rnnrs.LanguageModel` and its tokenizer.

    Args:
        model: a :class:`rnnrs.LanguageModel`.
        tokenizer: the :class:`rnnrs.CharTokenizer` or :class:`rnnrs.WordTokenizer` it was trained
            with (its vocabulary size must equal the model's).
        info: optional metadata (from the model file), e.g. ``{"newlines_as_spaces": True}``: newlines
            of a prefix then become spaces in the model's input, as in training.
        ban: tokens never generated (sampling; :meth:`beam` is a plain search of the model and does
            not ban). Default: ``<unk>``, which decodes to the literal text ``"<unk>"``. The built-in
            model also bans ``□``, the corpus's mark for a lost character. Tokens not in the
            vocabulary are ignored; ``ban=()`` generates from the model's full distribution.

    See the module documentation for the options, log-probabilities and unknown prefix characters.
    """

    def __init__(self, model: Any, tokenizer: Any, info: Optional[Dict[str, Any]] = None,
                 ban: Iterable[str] = ("<unk>",)) -> None:
        if not hasattr(model, "_core") or not hasattr(model, "vocab_size"):
            raise TypeError(f"model: expected an rnnrs.LanguageModel, got {_type_name(model)}")
        vocab = getattr(tokenizer, "vocab", None)
        if vocab is None or not hasattr(tokenizer, "tokenize") or not hasattr(tokenizer, "decode"):
            raise TypeError(f"tokenizer: expected a fitted rnnrs CharTokenizer or WordTokenizer, got {tokenizer!r}")
        if len(vocab) != model.vocab_size:
            raise ValueError(f"tokenizer: expected a vocabulary of {model.vocab_size} tokens (the model's vocab_size), "
                             f"got {len(vocab)}")
        self.model = model
        self.tokenizer = tokenizer
        self.info: Dict[str, Any] = dict(info or {})
        if isinstance(ban, str) or not isinstance(ban, Iterable):
            raise TypeError(f"ban: expected a sequence of tokens (str), got {ban!r}")
        ban = tuple(ban)  # (a generator is read once)
        if not all(isinstance(t, str) for t in ban):
            raise TypeError(f"ban: expected a sequence of tokens (str), got {ban!r}")
        self.ban: Tuple[str, ...] = ban

    def _banned_ids(self) -> List[int]:
        vocab = self.tokenizer.vocab
        return [int(vocab[t]) for t in self.ban if t in vocab]

    # ------------------------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"], ban: Iterable[str] = ("<unk>",)) -> "LyricGenerator":
        """Load a model directory (or ``.safetensors`` file) written by training or
        :meth:`rnnrs.LanguageModel.save` with its tokenizer. ``OSError`` if it cannot be read,
        ``ValueError`` (:class:`rnnrs.CheckpointError`) if it is not a valid model file or has no
        tokenizer."""
        from .checkpoint import load_model
        model, tokenizer, info = load_model(path)
        if tokenizer is None:
            raise ValueError(f"{os.fspath(path)}: expected a model file with its tokenizer, got one without "
                             "(save it with model.save(dir, tokenizer))")
        return cls(model, tokenizer, info, ban=ban)

    @classmethod
    def default(cls, ban: Iterable[str] = ("<unk>", "□")) -> "LyricGenerator":
        """The built-in lyrics model shipped in the package (:data:`DEFAULT_MODEL_DIR`).
        ``FileNotFoundError`` naming the path if this installation does not include it."""
        path = os.path.join(DEFAULT_MODEL_DIR, "model.safetensors")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"the built-in model is not installed: {path} does not exist "
                                    "(pass a trained model directory instead)")
        return cls.load(DEFAULT_MODEL_DIR, ban=ban)

    def __repr__(self) -> str:
        return f"LyricGenerator(model={self.model!r}, tokenizer={self.tokenizer!r})"

    # ----------------------------------------------------------------------------------- prefixes
    @property
    def start_id(self) -> int:
        """The token generation starts from when a prefix has nothing in the vocabulary: the
        newline token if the vocabulary has one, else the most frequent token (else ``<unk>``)."""
        vocab = self.tokenizer.vocab
        if self.tokenizer.level == "bpe":  # (byte-level tokens spell a newline "Ċ")
            nl = self.tokenizer.encode("\n")
            return int(nl[0]) if nl.size == 1 else 0
        if "\n" in vocab:
            return int(vocab["\n"])
        freqs = vocab.token_freqs
        return int(vocab[freqs[0][0]]) if freqs else 0

    def encode_prefix(self, prefix: str) -> Tuple[np.ndarray, List[str]]:
        """``(ids, dropped)``: the model's input for ``prefix`` (never empty: see :attr:`start_id`)
        and the prefix tokens left out because they are not in the vocabulary. No warning."""
        ids, dropped = self._known(prefix, "prefix", continued=True)
        return (ids if ids.size else np.array([self.start_id], dtype=np.int64)), dropped

    def _known(self, text: str, what: str, continued: bool = False) -> Tuple[np.ndarray, List[str]]:
        """Ids of the tokens of ``text`` that are in the vocabulary (maybe none), and the others.
        ``continued``: ``text`` is a prefix, so a separator it ends with is kept (see :meth:`_glue`)."""
        if not isinstance(text, str):
            raise TypeError(f"{what}: expected a str, got {_type_name(text)}")
        if self.info.get("newlines_as_spaces"):
            text = text.replace("\n", " ")
        vocab = self.tokenizer.vocab
        tokens = self.tokenizer.tokenize(text)
        if continued and tokens and self._ends_with_separator(text):
            tokens.append(" ")
        ids = np.array([vocab[t] for t in tokens if t in vocab], dtype=np.int64)
        return ids, [t for t in tokens if t not in vocab]

    def _prefix_ids(self, prefix: str, stacklevel: int) -> np.ndarray:
        """``stacklevel``: as for a ``warnings.warn`` in the calling API method."""
        ids, dropped = self.encode_prefix(prefix)
        _warn_unknown(f"prefix {prefix!r}", dropped, stacklevel + 2)
        return ids

    def _stop_ids(self, stop: Any) -> List[int]:
        if isinstance(stop, str):
            stop = (stop,)
        if not isinstance(stop, Iterable):
            raise TypeError(f"stop: expected a sequence of tokens (str), got {_type_name(stop)}")
        vocab, ids = self.tokenizer.vocab, []
        for t in stop:
            if not isinstance(t, str):
                raise TypeError(f"stop: expected tokens as str, got {_type_name(t)} {t!r}")
            if t not in vocab and self.tokenizer.level == "bpe" and self.tokenizer.encode(t).size == 1:
                ids.append(int(self.tokenizer.encode(t)[0]))  # (the text of one subword token)
                continue
            if t not in vocab:
                raise ValueError(f"stop: expected tokens of the model's vocabulary, got {t!r}")
            ids.append(int(vocab[t]))
        return ids

    def _ends_with_separator(self, text: str) -> bool:
        """Whether ``text`` ends with a run of non-letters that a ``letters_only`` character
        tokenizer strips. Such a model learnt every such run as one space, and a prefix is the
        start of a longer text, so its input gets that space: ``"the time "`` (or ``"the time,"``)
        is continued as ``"the time "``, not as ``"the time"`` (which would continue the word)."""
        tok = self.tokenizer
        return tok.level == "char" and tok.letters_only and bool(text) and not _is_letter_or_mark(text[-1])

    def _glue(self, prefix: str) -> str:
        """What goes between ``prefix`` and its continuation in the returned text: a space between
        words at word level, and at character level the space the model was given after a prefix
        ending with a separator that is not already whitespace (``"the time," + " " + "machine"``)."""
        if not prefix:
            return ""
        if self.tokenizer.level == "word":
            return "" if prefix[-1].isspace() else " "
        return " " if self._ends_with_separator(prefix) and not prefix[-1].isspace() and \
            self.tokenizer.tokenize(prefix) else ""

    def _join(self, prefix: str, ids: np.ndarray) -> str:
        """The text of ``ids`` as it continues ``prefix`` (with :meth:`_glue`). Subword tokens that
        end inside a character are left out rather than shown broken."""
        if not ids.size:
            return ""
        if self.tokenizer.level == "bpe":
            return self.tokenizer.stream().step(ids)
        return self._glue(prefix) + self.tokenizer.decode(ids)

    # --------------------------------------------------------------------------------- generation
    def generate(self, prefix: str, length: int = 100, temperature: float = 0.8, top_k: Optional[int] = None,
                 top_p: Optional[float] = 0.9, repetition_penalty: float = 1.0, seed: int = 0, greedy: bool = False,
                 stop: Iterable[str] = (), return_logprobs: bool = False,
                 weights: str = "auto") -> Union[str, Tuple[str, np.ndarray]]:
        """``prefix`` followed by up to ``length`` generated tokens (fewer if a ``stop`` token is
        generated). With ``return_logprobs=True``: ``(text, logprobs)``, the model log-probability of
        each generated token (float64). ``weights``: ``"auto"``, ``"f32"`` or ``"f16"`` (see the
        module documentation)."""
        out = self.generate_many([prefix], length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                                 repetition_penalty=repetition_penalty, seed=seed, greedy=greedy, stop=stop,
                                 return_logprobs=return_logprobs, weights=weights, _stacklevel=3)
        return out[0]

    def generate_many(self, prefixes: Sequence[str], length: int = 100, temperature: float = 0.8,
                      top_k: Optional[int] = None, top_p: Optional[float] = 0.9, repetition_penalty: float = 1.0,
                      seed: int = 0, greedy: bool = False, stop: Iterable[str] = (), return_logprobs: bool = False,
                      weights: str = "auto", _stacklevel: int = 2) -> List[Any]:
        """:meth:`generate` for several prefixes in one batch (one Rust call): sequence ``i`` uses
        seed ``seed + i``, so it equals ``generate(prefixes[i], ..., seed=seed + i)``."""
        if isinstance(prefixes, str) or not isinstance(prefixes, Sequence):
            raise TypeError(f"prefixes: expected a list of str, got {_type_name(prefixes)}")
        opts = sampling_options(length, temperature, top_k, top_p, repetition_penalty, self._stop_ids(stop), greedy,
                                self._banned_ids(), weights)
        seed = _seed("seed", seed)
        if prefixes and seed + len(prefixes) - 1 >= 2**64:
            raise ValueError(f"seed: expected seed + number of prefixes - 1 < 2**64, got seed {seed}")
        if not prefixes:
            return []
        _check_count("prefixes", len(prefixes))
        ids = []
        for p in prefixes:  # (a loop, not a comprehension: the warning's stack level stays right)
            ids.append(self._prefix_ids(p, _stacklevel))
        out = _rnnrs.sample(self.model._core, ids, [seed + i for i in range(len(ids))], **opts)
        texts = []
        for p, (new, lps, _) in zip(prefixes, out):
            text = p + self._join(p, new)
            texts.append((text, lps) if return_logprobs else text)
        return texts

    def stream(self, prefix: str, length: int = 100, temperature: float = 0.8, top_k: Optional[int] = None,
               top_p: Optional[float] = 0.9, repetition_penalty: float = 1.0, seed: int = 0, greedy: bool = False,
               stop: Iterable[str] = (), chunk_size: int = 1, weights: str = "auto") -> Iterator[str]:
        """Yield the text of :meth:`generate` piece by piece as it is generated: first ``prefix``,
        then the text of every ``chunk_size`` new tokens (one Rust call per chunk; the sampler keeps
        the recurrent state and the random stream between calls). ``"".join(stream(...)) ==
        generate(...)`` with the same arguments."""
        opts = sampling_options(length, temperature, top_k, top_p, repetition_penalty, self._stop_ids(stop), greedy,
                                self._banned_ids(), weights)
        seed = _seed("seed", seed)
        chunk_size = _int("chunk_size", chunk_size, 1)
        ids = self._prefix_ids(prefix, 2)
        sampler = _rnnrs.Sampler(self.model._core, [ids], [seed], **opts)
        return self._pieces(prefix, sampler, chunk_size)

    def _pieces(self, prefix: str, sampler: Any, chunk_size: int) -> Iterator[str]:
        yield prefix
        glue = self._glue(prefix)
        word = self.tokenizer.level == "word"
        bpe = self.tokenizer.stream() if self.tokenizer.level == "bpe" else None
        while not sampler.done:
            (new, _), = sampler.advance(chunk_size)
            if bpe is not None:  # (bytes of a character split over tokens wait for the rest)
                piece = bpe.step(new) if new.size else ""
                if piece:
                    yield piece
            elif new.size:
                yield glue + self.tokenizer.decode(new)
                glue = " " if word else ""

    def beam(self, prefix: str, length: int = 100, width: int = 4,
             return_logprob: bool = False) -> Union[str, Tuple[str, float]]:
        """``prefix`` and the most probable continuation of ``length`` tokens that a beam search of
        ``width`` beams finds (never less probable than greedy decoding; width 1 is greedy). With
        ``return_logprob=True``: ``(text, total log-probability of the continuation)``."""
        length = _int("length", length, 0)
        width = _int("width", width, 1)
        ids = self._prefix_ids(prefix, 2)
        new, _, total = _rnnrs.beam_search(self.model._core, ids, width, length)
        text = prefix + self._join(prefix, new)
        return (text, float(total)) if return_logprob else text

    def score(self, text: str, prefix: str = "") -> float:
        """Total model log-probability (natural log) of the tokens of ``text`` following ``prefix``
        (following :attr:`start_id` if ``prefix`` is empty): ``log p(text | prefix)``, the quantity
        ``return_logprobs`` reports per token. Tokens not in the vocabulary are left out, with an
        :class:`UnknownTokenWarning`; an empty ``text`` scores 0."""
        ctx = self._prefix_ids(prefix, 2)
        body, dropped = self._known(text, "text")
        _warn_unknown(f"text {text!r}", dropped, 3)
        if body.size == 0:
            return 0.0
        seq = np.concatenate([ctx, body])
        logits, _ = self.model.logits(seq[:-1].reshape(-1, 1))
        z = logits[ctx.size - 1:, 0, :].astype(np.float64)
        z = z - z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(logp[np.arange(body.size), body].sum())


def _warn_unknown(what: str, dropped: List[str], stacklevel: int) -> None:
    if dropped:
        shown = ", ".join(repr(t) for t in dict.fromkeys(dropped))
        warnings.warn(f"{what}: {len(dropped)} token(s) not in the model's vocabulary were left out of its input "
                      f"(kept in the returned text): {shown}", UnknownTokenWarning, stacklevel=stacklevel)


# ============================================================================================= CLI
def _nonneg_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return v


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return v


def _number(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return v


_nonneg_int.__name__ = "integer"
_positive_int.__name__ = "integer"
_number.__name__ = "number"


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``rnnrs generate`` to ``parser``."""
    p = parser
    p.add_argument("--model", metavar="DIR", default=None,
                   help="a trained model directory or .safetensors file (default: the built-in lyrics model)")
    p.add_argument("--prefix", metavar="TEXT", required=True, help="the text to continue, e.g. 明月")
    p.add_argument("--length", type=_nonneg_int, metavar="N", default=100, help="new tokens per sample (default 100)")
    p.add_argument("--temperature", type=_number, metavar="T", default=0.8,
                   help="softmax temperature, >= 0; 0 is greedy (default 0.8)")
    p.add_argument("--top-k", type=_positive_int, metavar="K", default=None,
                   help="sample among the K most probable tokens only")
    p.add_argument("--top-p", type=_number, metavar="P", default=0.9,
                   help="nucleus sampling: the smallest most-probable set with probability >= P, in (0, 1]; "
                        "1 disables it (default 0.9)")
    p.add_argument("--repetition-penalty", type=_number, metavar="R", default=1.0,
                   help="CTRL repetition penalty > 0 on tokens already seen; 1 is none (default 1.0)")
    p.add_argument("--beam", type=_positive_int, metavar="N", default=None,
                   help="beam search with N beams instead of sampling (deterministic; ignores the sampling options)")
    p.add_argument("--num-samples", type=_positive_int, metavar="N", default=1,
                   help="samples to generate (in one batch); sample i uses seed S + i (default 1)")
    p.add_argument("--seed", type=_nonneg_int, metavar="S", default=0, help="random seed (default 0)")
    p.add_argument("--greedy", action="store_true", help="always take the most probable token (temperature 0)")
    p.add_argument("--stream", action="store_true", help="print the text as it is generated")
    p.add_argument("--ban", metavar="TOKEN", action="append", default=None,
                   help="a token never to generate, besides the defaults (repeatable; the defaults: <unk>, and for "
                        "the built-in model also □)")
    p.add_argument("--no-ban", action="store_true",
                   help="drop the default bans (sample from the model's full distribution, except --ban tokens)")
    p.add_argument("--weights", choices=WEIGHT_FORMATS, default="auto",
                   help="storage of the weights read for every token: auto (float16 when that is exact, as for the "
                        "built-in model: the same text, faster), f16 (float16 also when lossy: faster, slightly "
                        "different probabilities), f32 (default auto)")
    p.add_argument("--json", action="store_true",
                   help='one JSON object per sample and line: {"prefix", "text" (prefix + continuation), '
                        '"seed", "tokens" (number generated), "logprob" (their total model log-probability)}')


def _error(message: str) -> int:
    print(f"rnnrs generate: error: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def run_generate(args: argparse.Namespace) -> int:
    """Run ``rnnrs generate`` with parsed ``args``; returns the exit status (0, or 2 after one line on
    stderr for a user error: unreadable model, invalid option value)."""
    if args.beam is not None and args.num_samples > 1:
        return _error(f"--beam is deterministic: expected --num-samples 1, got {args.num_samples}")
    if args.num_samples > _rnnrs.MAX_SEQUENCES:
        return _error(f"--num-samples: expected at most {_rnnrs.MAX_SEQUENCES}, got {args.num_samples}")
    # `--ban` adds to the model's default bans; `--no-ban` clears them first.
    ban: Optional[Tuple[str, ...]] = () if args.no_ban else None
    try:
        if args.model is not None:
            gen = LyricGenerator.load(args.model) if ban is None else LyricGenerator.load(args.model, ban=ban)
        else:
            gen = LyricGenerator.default() if ban is None else LyricGenerator.default(ban=ban)
        if args.ban:
            unknown = [t for t in args.ban if t not in gen.tokenizer.vocab]
            if unknown:
                level = ("one character per token" if gen.tokenizer.level == "char" else "one word per token")
                return _error(f"--ban: expected tokens of the model's vocabulary ({level}), got "
                              + ", ".join(repr(t) for t in unknown))
            gen.ban = tuple(dict.fromkeys(gen.ban + tuple(args.ban)))
    except OSError as e:
        return _error(f"--model {args.model if args.model is not None else DEFAULT_MODEL_DIR}: {e.strerror or e}")
    except ValueError as e:
        return _error(str(e))
    opts = dict(length=args.length, temperature=args.temperature, top_k=args.top_k,
                top_p=None if args.top_p == 1.0 else args.top_p, repetition_penalty=args.repetition_penalty,
                greedy=args.greedy, weights=args.weights)
    seeds = [args.seed + i for i in range(args.num_samples)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnknownTokenWarning)
        try:
            if args.beam is not None:
                text, total = gen.beam(args.prefix, args.length, args.beam, return_logprob=True)
                results = [(text, None, args.length, total)]
            elif args.stream and not args.json:
                _warn(caught)
                for i, seed in enumerate(seeds):
                    _sample_header(i, seed, len(seeds))
                    for piece in gen.stream(args.prefix, seed=seed, **opts):
                        print(piece, end="", flush=True)
                        _warn(caught)
                    print(flush=True)
                return EXIT_OK
            else:
                out = gen.generate_many([args.prefix] * len(seeds), seed=args.seed, return_logprobs=True, **opts)
                results = [(text, seed, lps.size, float(lps.sum())) for (text, lps), seed in zip(out, seeds)]
        except (TypeError, ValueError) as e:
            return _error(str(e))
        _warn(caught)
    for i, (text, seed, tokens, total) in enumerate(results):
        if args.json:
            print(json.dumps({"prefix": args.prefix, "text": text, "seed": seed, "tokens": tokens, "logprob": total},
                             ensure_ascii=False), flush=True)
        else:
            _sample_header(i, seed, len(results))
            print(text, flush=True)
    return EXIT_OK


def _sample_header(i: int, seed: Optional[int], n: int) -> None:
    """With several samples, a line ``--- sample i/n (seed S) ---`` before each: the texts
    themselves may contain blank lines."""
    if n > 1:
        print(f"{chr(10) if i else ''}--- sample {i + 1}/{n} (seed {seed}) ---", flush=True)


def _warn(caught: List[warnings.WarningMessage]) -> None:
    """Print recorded warnings as ``rnnrs generate: warning: ...`` lines, once each."""
    for w in caught:
        print(f"rnnrs generate: warning: {w.message}", file=sys.stderr, flush=True)
    caught.clear()


# The command-line entry points (``rnnrs generate``; see ``cli.COMMANDS``).
add_arguments = add_generate_arguments
run = run_generate

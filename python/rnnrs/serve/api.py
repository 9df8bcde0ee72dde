"""The OpenAI completions protocol of ``rnnrs serve``, in plain Python (no FastAPI): checking a
request body (:func:`parse_completion`), following one choice's text with its stop strings and
log-probabilities (:class:`ChoiceText`), and OpenAI-shaped errors (:class:`APIError`)."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

#: Most choices (prompts × n) in one request.
MAX_CHOICES = 128
#: Most stop strings (as OpenAI).
MAX_STOP = 4
#: Most top log-probabilities per token (as OpenAI's completions).
MAX_LOGPROBS = 5
#: Largest seed + choice index.
SEED_LIMIT = 2**64


class APIError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
                 type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self) -> Dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: Optional[str] = None,
               code: Optional[str] = None) -> Dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _bad(param: str, message: str, code: str = "invalid_value") -> APIError:
    return APIError(400, f"{param}: {message}", param=param, code=code)


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _integer(body: Dict[str, Any], name: str, default: Optional[int], lo: int, hi: int) -> Optional[int]:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(name, f"expected an integer in [{lo}, {hi}], got {_kind(v)}", "invalid_type")
    if not lo <= v <= hi:
        raise _bad(name, f"expected an integer in [{lo}, {hi}], got {v}")
    return v


def _number(body: Dict[str, Any], name: str, default: Optional[float], expected: str, ok: Any) -> Optional[float]:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(name, f"expected {expected}, got {_kind(v)}", "invalid_type")
    v = float(v)
    if not (math.isfinite(v) and ok(v)):
        raise _bad(name, f"expected {expected}, got {v!r}")
    return v


def _boolean(body: Dict[str, Any], name: str) -> bool:
    v = body.get(name)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise _bad(name, f"expected true or false, got {_kind(v)}", "invalid_type")
    return v


def _strings(body: Dict[str, Any], name: str, most: Optional[int]) -> List[str]:
    v = body.get(name)
    if v is None:
        return []
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise _bad(name, f"expected a string or an array of strings, got {_kind(v)}", "invalid_type")
    if most is not None and len(v) > most:
        raise _bad(name, f"expected at most {most} strings, got {len(v)}")
    return v


#: Fields of OpenAI's completions API that rnnrs accepts only with their neutral value: name →
#: (is it neutral?, what is accepted).
def _neutral(body: Dict[str, Any], n: int) -> None:
    checks = {
        "echo": (lambda v: v is False, "false"),
        "best_of": (lambda v: not isinstance(v, bool) and isinstance(v, int) and v in (1, n), f"1 or n ({n})"),
        "presence_penalty": (lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and v == 0, "0"),
        "frequency_penalty": (lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and v == 0, "0"),
        "logit_bias": (lambda v: v == {}, "{} (rnnrs has `ban` for tokens never to generate)"),
        "user": (lambda v: isinstance(v, str), "a string"),
        "suffix": (lambda v: v == "", "null or \"\" (no insertion)"),
    }
    for name, (ok, accepted) in checks.items():
        v = body.get(name)
        if v is not None and not ok(v):
            raise _bad(name, f"rnnrs accepts only {accepted} (or null), got {v!r}", "unsupported_value")


#: Every field a completion request may have.
FIELDS = frozenset({
    "model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream", "stream_options",
    "logprobs", "echo", "best_of", "presence_penalty", "frequency_penalty", "logit_bias", "user", "suffix",
    "top_k", "repetition_penalty", "ban",
})


@dataclass
class Completion:
    """A checked completion request."""

    model: str
    prompts: List[str]
    prefixes: List[np.ndarray]
    max_tokens: int
    n: int
    seed: int
    stream: bool
    include_usage: bool
    logprobs: Optional[int]
    stop: List[str]
    options: Dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_tokens(self) -> int:
        return sum(int(p.size) for p in self.prefixes)


def parse_completion(body: Any, gen: Any, model_id: str, max_tokens: int) -> Completion:
    """Check a ``POST /v1/completions`` body for the generator ``gen`` (a
    :class:`rnnrs.LyricGenerator`) served as ``model_id``, with at most ``max_tokens`` tokens
    in a prompt and in a completion. Raises :class:`APIError` naming the field."""
    if not isinstance(body, dict):
        raise APIError(400, f"expected a JSON object as the request body, got {_kind(body)}", code="invalid_body")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise APIError(400, f"Unrecognized request argument supplied: {unknown[0]}", param=unknown[0],
                       code="unknown_parameter")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model", f"expected a string, got {_kind(model)}", "invalid_type")
    if model is not None and model != model_id:
        raise APIError(404, f"The model `{model}` does not exist: this server serves `{model_id}`", param="model",
                       code="model_not_found")
    prompt = body.get("prompt", "")
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(p, (int, list)) for p in prompt):
        raise _bad("prompt", "token-id prompts are not supported: send text (a string or an array of strings)",
                   "unsupported_value")
    else:
        raise _bad("prompt", f"expected a string or a non-empty array of strings, got {_kind(prompt)}",
                   "invalid_type")
    n = _integer(body, "n", 1, 1, MAX_CHOICES)
    assert n is not None
    if len(prompts) * n > MAX_CHOICES:
        raise _bad("n", f"expected at most {MAX_CHOICES} choices (prompts × n), got {len(prompts)} × {n}")
    _neutral(body, n)
    length = _integer(body, "max_tokens", 16, 0, max_tokens)
    assert length is not None
    temperature = _number(body, "temperature", 1.0, "a number in [0, 2]", lambda v: 0.0 <= v <= 2.0)
    top_p = _number(body, "top_p", 1.0, "a number in (0, 1]", lambda v: 0.0 < v <= 1.0)
    top_k = _integer(body, "top_k", None, 1, 2**31)
    penalty = _number(body, "repetition_penalty", 1.0, "a number in (0, 10]", lambda v: 0.0 < v <= 10.0)
    stop = _strings(body, "stop", MAX_STOP)
    if any(s == "" for s in stop):
        raise _bad("stop", "expected non-empty strings, got \"\"")
    ban = _strings(body, "ban", None)
    vocab = gen.tokenizer.vocab
    unknown_ban = [t for t in ban if t not in vocab]
    if unknown_ban:
        raise _bad("ban", f"expected tokens of the model's vocabulary, got {unknown_ban[0]!r}")
    banned = sorted(set(gen._banned_ids()) | {int(vocab[t]) for t in ban})
    if len(banned) >= len(vocab):
        raise _bad("ban", "expected fewer banned tokens than the whole vocabulary")
    logprobs = _integer(body, "logprobs", None, 0, MAX_LOGPROBS)
    stream = _boolean(body, "stream")
    opts = body.get("stream_options")
    include_usage = False
    if opts is not None:
        if not stream:
            raise _bad("stream_options", "only allowed with stream: true")
        if not isinstance(opts, dict) or set(opts) - {"include_usage"}:
            raise _bad("stream_options", "expected {\"include_usage\": true|false}", "invalid_type")
        include_usage = _boolean(opts, "include_usage")
    choices = len(prompts) * n
    seed = _integer(body, "seed", None, 0, SEED_LIMIT - choices)
    if seed is None:
        seed = secrets.randbelow(2**63)
    prefixes = []
    for i, p in enumerate(prompts):
        ids, _dropped = gen.encode_prefix(p)
        if ids.size > max_tokens:
            which = f"prompt {i}" if len(prompts) > 1 else "the prompt"
            raise APIError(400, f"prompt: {which} has {ids.size} tokens, more than this server's limit of {max_tokens} "
                                "(--max-tokens)", param="prompt", code="context_length_exceeded")
        prefixes.append(ids)
    options = dict(length=length, temperature=temperature, top_k=top_k, top_p=None if top_p == 1.0 else top_p,
                   repetition_penalty=penalty, banned_tokens=banned)
    return Completion(model=model_id, prompts=prompts, prefixes=prefixes, max_tokens=length, n=n, seed=seed,
                      stream=stream, include_usage=include_usage, logprobs=logprobs, stop=stop, options=options)


class ChoiceText:
    """The text of one choice as its tokens arrive: what :meth:`rnnrs.LyricGenerator.generate`
    appends to the prompt, cut before the first stop string (not included). Text that might be
    the start of a stop string is held back until it is known not to be."""

    def __init__(self, gen: Any, prompt: str, stop: List[str], logprobs: Optional[int]) -> None:
        self.gen = gen
        self.prompt = prompt
        self.stop = stop
        self.want_logprobs = logprobs is not None
        self.text = ""  # the completion so far (cut at a stop string once found)
        self.emitted = 0  # characters of `text` already handed out
        self.glue = gen._glue(prompt)
        self.word = gen.tokenizer.level == "word"
        # Subword (BPE) tokens may end inside a character: its bytes wait for the rest.
        self._stream = gen.tokenizer.stream() if gen.tokenizer.level == "bpe" else None
        self.tokens = 0
        self.finish_reason: Optional[str] = None
        # Log-probabilities: per token (string, logprob, top, offset in the completion).
        self.entries: List[Tuple[str, float, Optional[Dict[str, float]], int]] = []
        self.entries_emitted = 0

    def _decode(self, token: int) -> str:
        return str(self.gen.tokenizer.decode(np.array([token], dtype=np.int64)))

    def feed(self, token: int, logprob: float, top: Optional[List[Tuple[int, float]]]) -> None:
        """Append one generated token (nothing once finished)."""
        if self.finish_reason is not None:
            return
        self.tokens += 1
        piece = self._stream.step(token) if self._stream is not None else self._decode(token)
        start = len(self.text) + len(self.glue)
        if self.want_logprobs:
            tops = {self._decode(t): lp for t, lp in top} if top else ({} if top is not None else None)
            self.entries.append((piece, logprob, tops, start))
        before = len(self.text)
        self.text += self.glue + piece
        self.glue = " " if self.word else ""
        if self.stop:
            longest = max(len(s) for s in self.stop)
            lo = max(0, before - longest + 1)
            hits = [i for i in (self.text.find(s, lo) for s in self.stop) if i >= 0]
            if hits:
                self.text = self.text[:min(hits)]
                self.finish_reason = "stop"

    def finish(self, reason: str = "length") -> None:
        if self.finish_reason is None:
            self.finish_reason = reason

    def _safe(self) -> int:
        """Characters of ``text`` that can be handed out now."""
        if self.finish_reason is not None or not self.stop:
            return len(self.text)
        held = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text)), held, -1):
                if self.text.endswith(s[:k]):
                    held = k
                    break
        return len(self.text) - held

    def take(self) -> Tuple[str, Optional[Dict[str, Any]]]:
        """The text (and log-probabilities, OpenAI's ``{tokens, token_logprobs, top_logprobs,
        text_offset}``) not handed out before."""
        safe = self._safe()
        delta = self.text[self.emitted:safe]
        self.emitted = safe
        if not self.want_logprobs:
            return delta, None
        if self.finish_reason == "length":
            k = len(self.entries)
        else:  # tokens that start inside the text handed out (not those cut by a stop string)
            limit = len(self.text) if self.finish_reason is not None else safe
            k = self.entries_emitted
            while k < len(self.entries) and self.entries[k][3] < limit:
                k += 1
        chosen = self.entries[self.entries_emitted:k]
        self.entries_emitted = k
        base = len(self.prompt)
        return delta, {
            "tokens": [e[0] for e in chosen],
            "token_logprobs": [e[1] for e in chosen],
            "top_logprobs": [e[2] for e in chosen],
            "text_offset": [base + e[3] for e in chosen],
        }

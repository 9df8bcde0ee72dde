"""The batching engine of ``rnnrs serve``: one worker thread steps one
:class:`rnnrs._rnnrs.ContinuousSampler` for every request (continuous batching).

Requests submit :class:`Sequence` objects (one per choice); the worker adds waiting sequences to
the sampler between steps while it has room, removes cancelled ones (a client that went away), runs
a few steps with the GIL released (one while anyone waits to join) and hands every sequence its new token on the asyncio event loop of
its request (one ``call_soon_threadsafe`` per loop and step). The event loop never waits for the
sampler; a step never waits for the event loop. No FastAPI here: this module is plain Python.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import Any, Deque, Dict, List, Optional, Sequence as Seq, Tuple

import numpy as np

from .. import _rnnrs

#: Upper bounds of the histogram of sequences per sampler step (``rnnrs_batch_sequences``).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class QueueFull(Exception):
    """More sequences are waiting than the engine accepts (the server answers 503)."""


class Sequence:
    """One sequence to generate (one choice of a request) and where its tokens go.

    ``queue`` receives ``(index, token, logprob, top, finished)`` tuples on ``loop``, and
    ``(index, None, message, None, True)`` if the sampler refused it or failed."""

    __slots__ = ("index", "prefix", "seed", "options", "top_logprobs", "loop", "queue", "cancelled", "sid")

    def __init__(self, index: int, prefix: np.ndarray, seed: int, options: Dict[str, Any], top_logprobs: int,
                 loop: asyncio.AbstractEventLoop, queue: "asyncio.Queue[Any]") -> None:
        self.index = index
        self.prefix = prefix
        self.seed = seed
        self.options = options
        self.top_logprobs = top_logprobs
        self.loop = loop
        self.queue = queue
        self.cancelled = False
        self.sid: Optional[int] = None


class Metrics:
    """Counters for ``GET /metrics`` (Prometheus text format). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Dict[Tuple[str, int], int] = collections.Counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.nsteps = 0
        self.step_seconds = 0.0
        self.batch = [0] * len(BATCH_BUCKETS)
        self.batch_sum = 0

    def request(self, route: str, status: int) -> None:
        with self._lock:
            self.requests[(route, status)] += 1

    def prompt(self, tokens: int) -> None:
        with self._lock:
            self.prompt_tokens += tokens

    def steps(self, sizes: List[int], tokens: int, seconds: float) -> None:
        """Record sampler steps of ``sizes`` sequences each, which made ``tokens`` in ``seconds``."""
        with self._lock:
            self.step_seconds += seconds
            self.completion_tokens += tokens
            for sequences in sizes:
                self.nsteps += 1
                self.batch_sum += sequences
                for i, le in enumerate(BATCH_BUCKETS):
                    if sequences <= le:
                        self.batch[i] += 1

    def render(self, queued: int, active: int, capacity: int) -> str:
        with self._lock:
            lines = [
                "# HELP rnnrs_requests_total HTTP requests answered, by route and status code.",
                "# TYPE rnnrs_requests_total counter",
            ]
            for (route, status), n in sorted(self.requests.items()):
                lines.append(f'rnnrs_requests_total{{route="{route}",status="{status}"}} {n}')
            lines += [
                "# HELP rnnrs_prompt_tokens_total Prompt tokens of accepted completion requests.",
                "# TYPE rnnrs_prompt_tokens_total counter",
                f"rnnrs_prompt_tokens_total {self.prompt_tokens}",
                "# HELP rnnrs_completion_tokens_total Tokens generated.",
                "# TYPE rnnrs_completion_tokens_total counter",
                f"rnnrs_completion_tokens_total {self.completion_tokens}",
                "# HELP rnnrs_queue_length Sequences waiting for a slot in the sampler.",
                "# TYPE rnnrs_queue_length gauge",
                f"rnnrs_queue_length {queued}",
                "# HELP rnnrs_active_sequences Sequences in the sampler.",
                "# TYPE rnnrs_active_sequences gauge",
                f"rnnrs_active_sequences {active}",
                "# HELP rnnrs_max_batch Most sequences stepped together (--max-batch).",
                "# TYPE rnnrs_max_batch gauge",
                f"rnnrs_max_batch {capacity}",
                "# HELP rnnrs_step_seconds_total Time spent in sampler steps.",
                "# TYPE rnnrs_step_seconds_total counter",
                f"rnnrs_step_seconds_total {self.step_seconds:.6f}",
                "# HELP rnnrs_batch_sequences Sequences per sampler step.",
                "# TYPE rnnrs_batch_sequences histogram",
            ]
            for le, n in zip(BATCH_BUCKETS, self.batch):
                lines.append(f'rnnrs_batch_sequences_bucket{{le="{le}"}} {n}')
            lines += [
                f'rnnrs_batch_sequences_bucket{{le="+Inf"}} {self.nsteps}',
                f"rnnrs_batch_sequences_sum {self.batch_sum}",
                f"rnnrs_batch_sequences_count {self.nsteps}",
            ]
        return "\n".join(lines) + "\n"


class Engine:
    """The worker thread and its sampler for ``model`` (an :class:`rnnrs.LanguageModel`):
    at most ``max_batch`` sequences stepped together, at most ``max_queue`` waiting."""

    def __init__(self, model: Any, max_batch: int = 32, max_queue: int = 256, steps_per_call: int = 4) -> None:
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"max_batch: expected >= 1 and max_queue >= 0, got {max_batch} and {max_queue}")
        self.sampler = _rnnrs.ContinuousSampler(model._core, max_batch)
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.steps_per_call = steps_per_call
        self.metrics = Metrics()
        self._pending: Deque[Sequence] = collections.deque()
        self._active: Dict[int, Sequence] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="rnnrs-sampler", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------- request side
    def submit(self, seqs: Seq[Sequence]) -> None:
        """Queue ``seqs`` (all or none); :class:`QueueFull` if that would exceed ``max_queue``
        waiting sequences."""
        with self._cond:
            if self._stop:
                raise QueueFull("the server is shutting down")
            if len(self._pending) + len(seqs) > self.max_queue:
                raise QueueFull(f"{len(self._pending)} sequences are waiting (at most {self.max_queue}); "
                                "retry later")
            self._pending.extend(seqs)
            self._cond.notify()

    def cancel(self, seqs: Seq[Sequence]) -> None:
        """Stop generating ``seqs``: waiting ones leave the queue, running ones leave the sampler
        before its next step. Idempotent."""
        with self._cond:
            for s in seqs:
                s.cancelled = True
            if any(s.sid is None for s in seqs):
                keep = [p for p in self._pending if not p.cancelled]
                self._pending.clear()
                self._pending.extend(keep)
            self._cond.notify()

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def active(self) -> int:
        return len(self._active)

    def close(self) -> None:
        """Stop the worker thread (after its current step)."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=10)

    # -------------------------------------------------------------------------- worker side
    def _run(self) -> None:
        while True:
            try:
                if not self._iteration():
                    return
            except Exception as e:  # (a bug: fail the running requests, keep serving the next ones)
                self._fail_all(f"internal error in the sampler loop: {type(e).__name__}: {e}")

    def _fail_all(self, message: str) -> None:
        deliveries: Dict[asyncio.AbstractEventLoop, List[Tuple[Sequence, Any]]] = {}
        for sid, s in list(self._active.items()):
            try:
                self.sampler.remove(sid)
            except Exception:
                pass
            deliveries.setdefault(s.loop, []).append((s, (s.index, None, message, None, True)))
        self._active.clear()
        _send(deliveries)

    def _iteration(self) -> bool:
        """Join, drop, step, deliver; False when the engine is closed."""
        sampler, active = self.sampler, self._active
        with self._cond:
            while not self._stop and not self._pending and not active:
                self._cond.wait()
            if self._stop:
                return False
            joins: List[Sequence] = []
            while self._pending and len(active) + len(joins) < self.max_batch:
                joins.append(self._pending.popleft())
        deliveries: Dict[asyncio.AbstractEventLoop, List[Tuple[Sequence, Any]]] = {}
        for sid, s in list(active.items()):
            if s.cancelled:
                sampler.remove(sid)
                del active[sid]
        for s in joins:
            if s.cancelled:
                continue
            try:
                s.sid = sampler.add(s.prefix, s.seed, top_logprobs=s.top_logprobs, **s.options)
            except (TypeError, ValueError, OverflowError) as e:
                deliveries.setdefault(s.loop, []).append((s, (s.index, None, str(e), None, True)))
                continue
            active[s.sid] = s
        if active:
            t0 = time.perf_counter()
            try:
                # Several steps per call when nobody waits to join (each call hands the GIL
                # back and forth once); one when someone does, so that they join at once.
                events = sampler.step(1 if self._pending else self.steps_per_call)
            except Exception as e:  # (e.g. a model changed under the server: fail its requests, keep serving)
                _send(deliveries)
                self._fail_all(str(e))
                return True
            tokens = 0
            for sid, token, logprob, top, finished, _stopped, nonfinite in events:
                seq = active.pop(sid) if finished else active.get(sid)
                if token is not None:
                    tokens += 1
                if seq is None or seq.cancelled:
                    continue
                item: Tuple[Any, ...]
                if nonfinite:
                    item = (seq.index, None, "the model produced a NaN or infinite logit", None, True)
                else:
                    item = (seq.index, token, logprob, top, finished)
                deliveries.setdefault(seq.loop, []).append((seq, item))
            self.metrics.steps(sampler.last_sizes, tokens, time.perf_counter() - t0)
        _send(deliveries)
        return True


def _send(deliveries: Dict[asyncio.AbstractEventLoop, List[Tuple[Sequence, Any]]]) -> None:
    """Hand items to their sequences' queues on their event loops (one call per loop)."""
    for loop, items in deliveries.items():
        try:
            loop.call_soon_threadsafe(_deliver, items)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            for s, _ in items:
                s.cancelled = True


def _deliver(items: List[Tuple[Sequence, Any]]) -> None:
    for s, item in items:
        s.queue.put_nowait(item)

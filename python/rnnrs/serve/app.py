"""The ASGI application of ``rnnrs serve`` (FastAPI): routes, authentication, body limits and
OpenAI-shaped errors. Imported only when the server starts (``import rnnrs`` never imports it)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import time
import uuid
from typing import Any, AsyncIterator, Dict, List, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from .api import APIError, ChoiceText, Completion, error_body, parse_completion
from .engine import Engine, QueueFull, Sequence

#: Largest request body accepted (bytes); larger ones get 413.
MAX_BODY = 1 << 20
#: How often a non-streaming request checks whether its client is still there (seconds).
DISCONNECT_POLL = 0.5
#: Routes counted by name in the metrics (others count as "other").
ROUTES = ("/", "/health", "/metrics", "/v1/models", "/v1/completions")

_PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "index.html")


def _error(e: APIError, headers: Optional[Dict[str, str]] = None) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=headers)


def create_app(gen: Any, model_id: str, max_batch: int = 32, max_tokens: int = 2000, api_key: Optional[str] = None,
               max_queue: int = 256, engine: Optional[Engine] = None) -> FastAPI:
    """The server for ``gen`` (an :class:`rnnrs.LyricGenerator`) as ``model_id``: at most
    ``max_batch`` sequences sampled together, ``max_tokens`` tokens per prompt and per completion, ``max_queue`` sequences waiting; ``api_key``: required as ``Authorization: Bearer KEY``
    on ``/v1/*`` and ``/metrics``. The app's ``state.engine`` is its :class:`Engine` (stopped at
    shutdown)."""
    eng = engine if engine is not None else Engine(gen.model, max_batch=max_batch, max_queue=max_queue)
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        eng.close()

    app = FastAPI(title="rnnrs", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.engine = eng
    created = int(time.time())
    with open(_PAGE, encoding="utf-8") as f:
        page = f.read()

    app.add_middleware(Guard, engine=eng, api_key=api_key)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            msg, code = f"Unknown route: {request.method} {request.url.path}", "not_found"
        elif exc.status_code == 405:
            msg, code = f"Method {request.method} not allowed on {request.url.path}", "method_not_allowed"
        else:
            msg, code = str(exc.detail), None
        return JSONResponse(error_body(msg, "invalid_request_error", None, code), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        loc = ".".join(str(x) for x in errs[0].get("loc", ())[1:]) if errs else None
        msg = errs[0].get("msg", "invalid request") if errs else "invalid request"
        return JSONResponse(error_body(f"{loc}: {msg}" if loc else msg, "invalid_request_error", loc or None,
                                       "invalid_value"), status_code=400)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "server_error", None,
                                       "internal_error"), status_code=500)

    # --------------------------------------------------------------------------------- routes
    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> Dict[str, Any]:
        return {"status": "ok", "model": model_id, "active": eng.active, "queued": eng.queued}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(eng.metrics.render(eng.queued, eng.active, eng.max_batch),
                                 media_type="text/plain; version=0.0.4")

    def model_card() -> Dict[str, Any]:
        tok = gen.tokenizer
        return {
            "id": model_id, "object": "model", "created": created, "owned_by": "rnnrs",
            "config": gen.model.config,
            "tokenizer": {"level": tok.level, "vocab_size": len(tok.vocab)},
            "max_tokens": max_tokens, "max_batch": eng.max_batch, "banned": list(gen.ban),
        }

    @app.get("/v1/models")
    async def models() -> Dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name}")
    async def model(name: str) -> Any:
        if name != model_id:
            raise APIError(404, f"The model `{name}` does not exist: this server serves `{model_id}`",
                           param="model", code="model_not_found")
        return model_card()

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        raw = await _read_body(request)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON: {e}", code="invalid_json")
        req = parse_completion(body, gen, model_id, max_tokens)
        loop = asyncio.get_running_loop()
        queue: "asyncio.Queue[Any]" = asyncio.Queue()
        seqs, texts = [], []
        for p, (prompt, prefix) in enumerate(zip(req.prompts, req.prefixes)):
            for j in range(req.n):
                i = p * req.n + j
                seqs.append(Sequence(i, prefix, req.seed + i, req.options, req.logprobs or 0, loop, queue))
                texts.append(ChoiceText(gen, prompt, req.stop, req.logprobs))
        try:
            eng.submit(seqs)
        except QueueFull as e:
            return _error(APIError(503, f"the server is busy: {e}", type="server_error", code="queue_full"),
                          headers={"Retry-After": "1"})
        eng.metrics.prompt(req.prompt_tokens)
        cid = f"cmpl-{uuid.uuid4().hex}"
        now = int(time.time())
        if req.stream:
            return StreamingResponse(_stream(eng, req, seqs, texts, queue, cid, now), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            await _collect(request, eng, seqs, texts, queue)
        finally:
            eng.cancel(seqs)
        choices = []
        for i, t in enumerate(texts):
            text, lps = t.take()
            choices.append({"text": text, "index": i, "logprobs": lps, "finish_reason": t.finish_reason})
        return JSONResponse({"id": cid, "object": "text_completion", "created": now, "model": model_id,
                             "system_fingerprint": f"rnnrs-{__version__}", "choices": choices,
                             "usage": _usage(req, texts)})

    return app


class Guard:
    """ASGI middleware: the API key on ``/v1/*`` and ``/metrics``, the body-size limit from
    ``Content-Length``, and the request counter of the metrics (a plain ASGI wrapper, so streaming
    responses and client disconnects pass through untouched)."""

    def __init__(self, app: Any, engine: Engine, api_key: Optional[str]) -> None:
        self.app, self.engine, self.api_key = app, engine, api_key

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in ROUTES else ("/v1/models" if path.startswith("/v1/models/") else "other")
        status = [500]

        async def send_status(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            try:
                if self.api_key is not None and (path.startswith("/v1/") or path == "/metrics"):
                    _check_key(headers.get("authorization"), self.api_key)
                length = headers.get("content-length")
                if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
                    raise APIError(413, f"request body too large: at most {MAX_BODY} bytes",
                                   code="request_too_large")
            except APIError as e:
                await _error(e)(scope, receive, send_status)
                return
            await self.app(scope, receive, send_status)
        finally:
            self.engine.metrics.request(route, status[0])


def _check_key(auth: Optional[str], key: str) -> None:
    if auth is None:
        raise APIError(401, "You didn't provide an API key: send it as `Authorization: Bearer KEY`",
                       code="invalid_api_key")
    scheme, _, given = auth.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
        raise APIError(401, "Incorrect API key provided", code="invalid_api_key")


async def _read_body(request: Request) -> bytes:
    chunks: List[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise APIError(413, f"request body too large: at most {MAX_BODY} bytes", code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _usage(req: Completion, texts: List[ChoiceText]) -> Dict[str, int]:
    done = sum(t.tokens for t in texts)
    return {"prompt_tokens": req.prompt_tokens, "completion_tokens": done, "total_tokens": req.prompt_tokens + done}


def _apply(item: Any, texts: List[ChoiceText], eng: Engine, seqs: List[Sequence]) -> int:
    """Apply one engine item to its choice; returns its index. Raises APIError if generation failed."""
    index, token, logprob, top, finished = item
    t = texts[index]
    if token is None and isinstance(logprob, str):
        raise APIError(500, f"generation failed: {logprob}", type="server_error", code="generation_failed")
    if token is not None:
        t.feed(token, logprob, top if t.want_logprobs else None)
    if t.finish_reason == "stop" and not finished:
        eng.cancel([seqs[index]])  # a stop string: this choice needs no more tokens
        finished = True
    if finished:
        t.finish("length")
    return index


async def _collect(request: Request, eng: Engine, seqs: List[Sequence], texts: List[ChoiceText],
                   queue: "asyncio.Queue[Any]") -> None:
    left = len(texts)
    done = [False] * len(texts)
    while left:
        try:
            item = await asyncio.wait_for(queue.get(), DISCONNECT_POLL)
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                return
            continue
        i = _apply(item, texts, eng, seqs)
        if texts[i].finish_reason is not None and not done[i]:
            done[i] = True
            left -= 1


def _sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


async def _stream(eng: Engine, req: Completion, seqs: List[Sequence], texts: List[ChoiceText],
                  queue: "asyncio.Queue[Any]", cid: str, now: int) -> AsyncIterator[bytes]:
    head = {"id": cid, "object": "text_completion", "created": now, "model": req.model,
            "system_fingerprint": f"rnnrs-{__version__}"}
    extra = {"usage": None} if req.include_usage else {}
    done = [False] * len(texts)
    left = len(texts)
    try:
        while left:
            item = await queue.get()
            items = [item]
            while not queue.empty():  # everything that arrived meanwhile, in one chunk per choice
                items.append(queue.get_nowait())
            touched: Dict[int, None] = {}
            try:
                for it in items:
                    touched[_apply(it, texts, eng, seqs)] = None
            except APIError as e:
                yield _sse(e.body())
                return
            choices = []
            for i in touched:
                if done[i]:
                    continue
                t = texts[i]
                text, lps = t.take()
                if t.finish_reason is not None:
                    done[i] = True
                    left -= 1
                if text or t.finish_reason is not None or (lps and lps["tokens"]):
                    choices.append({"text": text, "index": i, "logprobs": lps, "finish_reason": t.finish_reason})
            if choices:
                yield _sse({**head, "choices": choices, **extra})
        if req.include_usage:
            yield _sse({**head, "choices": [], "usage": _usage(req, texts)})
        yield b"data: [DONE]\n\n"
    finally:  # also when the client went away (Starlette cancels this generator)
        eng.cancel(seqs)

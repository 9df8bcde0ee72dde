"""``rnnrs serve``: an OpenAI-compatible HTTP API (``POST /v1/completions`` with streaming,
``GET /v1/models``, ``/health``, ``/metrics``) and a web page (``GET /``) for a language model,
with concurrent requests sharing one sampler (continuous batching). See ``docs/serve.md``.

Needs the ``serve`` extra (``pip install 'rnnrs[serve]'``: FastAPI and uvicorn), imported only
when the server is created: importing this package does not import them.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional, Tuple

__all__ = ["add_arguments", "run", "create_app", "load_generator"]

EXIT_OK, EXIT_USAGE = 0, 2
INSTALL_HINT = "pip install 'rnnrs[serve]'"
#: ``sys.setswitchinterval`` of the server process (seconds).
SWITCH_INTERVAL = 0.001


def _port(text: str) -> int:
    v = int(text)
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in [0, 65535], got {text}")
    return v


_port.__name__ = "port"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``rnnrs serve``."""
    from ..generate import _positive_int as _positive
    p = parser
    p.add_argument("--model", metavar="DIR", default=None,
                   help="a trained model directory or .safetensors file (default: the built-in lyrics model)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000)")
    p.add_argument("--max-batch", type=_positive, metavar="N", default=32,
                   help="most sequences sampled together; more wait in a queue (default 32)")
    p.add_argument("--max-tokens", type=_positive, metavar="N", default=2000,
                   help="most tokens of a completion (max_tokens) and of a prompt (default 2000)")
    p.add_argument("--max-queue", type=_positive, metavar="N", default=256,
                   help="most sequences waiting for a slot; beyond it requests get 503 (default 256)")
    p.add_argument("--api-key", metavar="KEY", default=os.environ.get("RNNRS_API_KEY"),
                   help="require `Authorization: Bearer KEY` on /v1/* and /metrics "
                        "(default: $RNNRS_API_KEY, else no key)")


def load_generator(model: Optional[str]) -> Tuple[Any, str]:
    """``(LyricGenerator, model id)`` for ``--model`` (None: the built-in model, id ``songci``)."""
    from ..generate import LyricGenerator
    if model is None:
        return LyricGenerator.default(), "songci"
    name = os.path.basename(os.path.normpath(model))
    if name.endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    return LyricGenerator.load(model), name or "model"


def create_app(gen: Any, model_id: str, **kwargs: Any) -> Any:
    """The ASGI app (see :func:`rnnrs.serve.app.create_app`); ImportError naming the extra if
    FastAPI is missing."""
    try:
        from .app import create_app as make
    except ImportError as e:
        raise ImportError(f"rnnrs serve needs FastAPI and uvicorn ({e}): {INSTALL_HINT}") from e
    return make(gen, model_id, **kwargs)


def _error(message: str) -> int:
    print(f"rnnrs serve: error: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    """Run the server until Ctrl-C; 2 after one line on stderr for a user error."""
    try:
        import uvicorn
        app_module = __import__("rnnrs.serve.app", fromlist=["create_app"])
    except ImportError as e:
        return _error(f"the server needs FastAPI and uvicorn, which are not installed ({e}): {INSTALL_HINT}")
    try:
        gen, model_id = load_generator(args.model)
    except OSError as e:
        return _error(f"--model {args.model}: {e.strerror or e}")
    except ValueError as e:
        return _error(str(e))
    app = app_module.create_app(gen, model_id, max_batch=args.max_batch, max_tokens=args.max_tokens,
                                api_key=args.api_key, max_queue=args.max_queue)
    # The sampler's thread takes the GIL back after every call: let it wait 1 ms, not Python's
    # default 5, behind the event loop (measured: 1.7x the tokens/s of 16-32 streams).
    sys.setswitchinterval(SWITCH_INTERVAL)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"rnnrs serve: {model_id} on http://{host}:{args.port} (page at /, API at /v1; Ctrl-C to stop)",
          file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=3)
    except OSError as e:  # e.g. the port is in use
        return _error(f"--host {args.host} --port {args.port}: {e.strerror or e}")
    except KeyboardInterrupt:
        pass
    return EXIT_OK

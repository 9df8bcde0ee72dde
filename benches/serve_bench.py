"""Throughput and latency of `rnnrs serve` under concurrent streaming clients.

Starts `python -m rnnrs serve` (the built-in model unless --model) on 127.0.0.1 as a separate
process (so the load generator does not share its interpreter), then for each concurrency C runs C
streaming `/v1/completions` clients at once, each asking for --tokens new tokens with its own seed
(mixed temperatures and top-p), and reports:

* tokens/s: all completion tokens of the round / wall time of the round (first request sent to the
  last `[DONE]`);
* per-stream tokens/s (median);
* latency to the first token (median and max over the C streams): request sent → first chunk with text;
* the sequences per sampler step (mean, from /metrics) — the batching the round achieved.

    python benches/serve_bench.py                          # C = 1, 8, 16, 32; 300 tokens each
    python benches/serve_bench.py --concurrency 1 8 32 --tokens 500 --rounds 3 --json
    python benches/serve_bench.py --url http://127.0.0.1:8000   # an already running server

Needs `pip install 'rnnrs[serve]' httpx`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def _stream(http: Any, url: str, body: Dict[str, Any], t0: float) -> Dict[str, float]:
    first: Optional[float] = None
    tokens = 0
    async with http.stream("POST", url + "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {await r.aread()!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if first is None and any(c["text"] for c in chunk.get("choices", [])):
                first = time.perf_counter()
    end = time.perf_counter()
    return {"ttft": (first or end) - t0, "tokens": tokens, "seconds": end - t0}


async def _round(url: str, c: int, tokens: int, seed: int, headers: Dict[str, str]) -> Dict[str, Any]:
    import httpx
    temps, tops = [0.7, 1.0, 1.2, 0.9], [0.9, 1.0, 0.8, 0.95]
    async with httpx.AsyncClient(timeout=600, headers=headers, limits=httpx.Limits(max_connections=c + 4)) as http:
        m0 = (await http.get(url + "/metrics")).text
        t0 = time.perf_counter()
        bodies = [{"prompt": ["明月", "春风", "江南", "夜雨"][i % 4], "max_tokens": tokens, "seed": seed + i,
                   "temperature": temps[i % 4], "top_p": tops[(i // 4) % 4], "stream": True,
                   "stream_options": {"include_usage": True}} for i in range(c)]
        res = await asyncio.gather(*[_stream(http, url, b, t0) for b in bodies])
        wall = time.perf_counter() - t0
        m1 = (await http.get(url + "/metrics")).text
    steps = _metric(m1, "rnnrs_batch_sequences_count") - _metric(m0, "rnnrs_batch_sequences_count")
    seqs = _metric(m1, "rnnrs_batch_sequences_sum") - _metric(m0, "rnnrs_batch_sequences_sum")
    total = sum(r["tokens"] for r in res)
    return {
        "concurrency": c,
        "tokens": total,
        "seconds": wall,
        "tokens_per_s": total / wall,
        "per_stream_tokens_per_s": statistics.median(r["tokens"] / r["seconds"] for r in res),
        "ttft_median_ms": 1000 * statistics.median(r["ttft"] for r in res),
        "ttft_max_ms": 1000 * max(r["ttft"] for r in res),
        "mean_sequences_per_step": seqs / steps if steps else 0.0,
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="benchmark this running server instead of starting one")
    p.add_argument("--model", help="model directory for the server started here (default: the built-in model)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 16, 32])
    p.add_argument("--tokens", type=int, default=300, help="new tokens per stream (default 300)")
    p.add_argument("--rounds", type=int, default=2, help="rounds per concurrency; the best is reported (default 2)")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--api-key", default=None)
    p.add_argument("--json", action="store_true", help="one JSON object per concurrency")
    args = p.parse_args(argv)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    proc = None
    url = args.url
    if url is None:
        import httpx
        port = _free_port()
        cmd = [sys.executable, "-m", "rnnrs", "serve", "--port", str(port), "--max-batch", str(args.max_batch),
               "--max-tokens", str(max(2000, args.tokens))]
        if args.model:
            cmd += ["--model", args.model]
        if args.api_key:
            cmd += ["--api-key", args.api_key]
        proc = subprocess.Popen(cmd)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                print("serve_bench: the server did not start", file=sys.stderr)
                return 1
            time.sleep(0.1)
    try:
        asyncio.run(_round(url, 2, 20, 0, headers))  # warm-up
        if not args.json:
            print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.tokens} tokens "
                  f"per stream; best of {args.rounds}")
            print(f"{'streams':>7} {'tokens/s':>9} {'per stream':>10} {'TTFT med ms':>11} {'TTFT max ms':>11} "
                  f"{'seq/step':>8}")
        for c in args.concurrency:
            runs = [asyncio.run(_round(url, c, args.tokens, 1000 * k, headers)) for k in range(args.rounds)]
            best = max(runs, key=lambda r: r["tokens_per_s"])
            if args.json:
                print(json.dumps(best), flush=True)
            else:
                print(f"{c:>7} {best['tokens_per_s']:>9.0f} {best['per_stream_tokens_per_s']:>10.0f} "
                      f"{best['ttft_median_ms']:>11.1f} {best['ttft_max_ms']:>11.1f} "
                      f"{best['mean_sequences_per_step']:>8.1f}", flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=15)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Side-by-side timing of rnnrs, PyTorch (when importable) and the NumPy oracle, in one run.

Same weights, same inputs; outputs (and, for forward+backward, input gradients) are checked equal
before anything is timed. Each library is timed in its own block (never interleaved call by call:
two thread pools in one process slow each other down), blocks alternate over several rounds, and
the report gives medians and the ratio PyTorch/rnnrs (> 1 means rnnrs is faster). Every block
starts after a quiet gap (`--gap`, 0.3 s): OpenBLAS's worker threads, behind NumPy, keep spinning
for about 0.1 s after a call, and timed inside that window the next library loses most of a core
(measured: rnnrs S forward 1.50 ms right after the NumPy block, 1.00 ms without NumPy).

    python benches/compare.py                       # all configs, 2 threads
    python benches/compare.py --threads 1 --config 'S|M$' --json
    python benches/compare.py --mode fwd            # forward only
    python benches/compare.py --system              # import time, 1 vs 2 thread scaling and bit
                                                    # identity, peak memory of training M
    python benches/compare.py --config 'LM|I-.*' --peak 190   # the user's jobs: language-model train
                                                    # step, inference forward at batch 1-32, and
                                                    # each as a fraction of a 190 GFLOP/s peak
    python benches/compare.py --scaling             # 1 -> 2 threads for LM and I-lstm-B32
    python benches/compare.py --cli                 # `rnnrs train` end to end against a plain
                                                    # PyTorch loop (tokens/s, fresh processes)

PyTorch is never a dependency of rnnrs: install it in a separate venv together with rnnrs to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="threads for every library (default 2)")
    p.add_argument("--config", default=".*", help="regex over config names (S, M, L, M-gru, M-rnn, M-bi, G256, G512)")
    p.add_argument("--mode", choices=["fwd", "fwdbwd", "both"], default="both")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of blocks")
    p.add_argument("--reps", type=int, default=5, help="timed calls per block")
    p.add_argument("--gap", type=float, default=0.3,
                   help="seconds of quiet before every timed block, for the other libraries' threads to stop "
                        "spinning (default 0.3)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-numpy", action="store_true", help="skip the (slow, float64) NumPy oracle")
    p.add_argument("--json", action="store_true", help="one JSON object per result line")
    p.add_argument("--peak", type=float, default=None,
                   help="the machine's float32 FMA peak in GFLOP/s on all threads used (e.g. 2x the "
                        "`cargo bench -p rnnrs-benches -- machine/` figure): results also as fractions of it")
    p.add_argument("--lib", choices=["rnnrs", "torch"], default=None,
                   help="time this library only (rnnrs: PyTorch is not even imported). Two thread pools in one "
                        "process slow each other down for longer than --gap: for the fairest figures run "
                        "--lib rnnrs and --lib torch in alternating processes")
    p.add_argument("--scaling", action="store_true", help="1 -> 2 thread scaling of LM and I-lstm-B32 (fresh processes)")
    p.add_argument("--cli", action="store_true", help="`rnnrs train` end to end against a plain PyTorch loop")
    p.add_argument("--cli-steps", type=int, default=300, help="optimizer steps of the --cli runs (default 300)")
    p.add_argument("--system", action="store_true",
                   help="instead of the timings: import time, scaling 1 -> 2 threads at L, bit identity across "
                        "thread counts, peak memory of forward+backward at M (each in fresh processes)")
    p.add_argument("--child", choices=["digest", "memory-rnnrs", "memory-torch"], help=argparse.SUPPRESS)
    return p.parse_args()


ARGS = _parse()
for var in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)
for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(var, None)

import numpy as np  # noqa: E402

import rnnrs  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
try:
    import oracle  # noqa: E402
except ImportError:  # pragma: no cover
    oracle = None
try:
    if ARGS.no_torch or ARGS.lib == "rnnrs":
        raise ImportError
    import torch  # noqa: E402

    torch.set_num_threads(ARGS.threads)
except ImportError:
    torch = None

#            cell   input hidden layers bidi  batch seq
CONFIGS = {
    "S": ("lstm", 64, 128, 1, False, 32, 35),
    "M": ("lstm", 256, 256, 2, False, 64, 64),
    "L": ("lstm", 512, 512, 2, False, 64, 100),
    "M-gru": ("gru", 256, 256, 2, False, 64, 64),
    "M-rnn": ("rnn", 256, 256, 2, False, 64, 64),
    "M-bi": ("lstm", 256, 256, 2, True, 64, 64),
    # Inference forward of the user's model shapes (input 128, hidden 256, 2 layers, 64 steps)
    # at the batch sizes of evaluation and generation; H200: a hidden size not a multiple of 16.
    **{f"I-{c}-B{b}": (c, 128, 256, 2, False, b, 64) for c in ("lstm", "gru") for b in (1, 8, 16, 32)},
    "I-lstm-H200-B32": ("lstm", 128, 200, 2, False, 32, 64),
}
# Configurations timed forward only (inference).
FORWARD_ONLY = {name for name in CONFIGS if name.startswith("I-")}
# The language-model train step of the trainer's defaults: vocab 66, embed 128, LSTM 256 x 2,
# 64 steps, batch 32, Adam (lr 2e-3), global-norm clip 1.
LM = dict(vocab=66, embed=128, hidden=256, layers=2, seq=64, batch=32)
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
MODE = {"lstm": "lstm", "gru": "gru", "rnn": "rnn_tanh"}


def flops(cell, inp, hid, layers, bidi, batch, seq):
    d = 2 if bidi else 1
    return sum(2 * GATES[cell] * hid * ((inp if l == 0 else d * hid) + hid) * d * batch * seq for l in range(layers))


def median_ms(fn, reps, min_block_s=0.25):
    """Times (ms) of at least `reps` calls, and of as many more (up to 200) as fill `min_block_s`:
    fast configurations get enough samples for their median to stand against the machine's noise.
    Starts after `--gap` seconds of quiet (see the module docstring)."""
    time.sleep(ARGS.gap)
    t0 = time.perf_counter()
    fn()  # warm-up
    warm = time.perf_counter() - t0
    if min_block_s > 0:
        reps = max(reps, min(200, int(min_block_s / max(warm, 1e-6))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def build(name):
    cell, inp, hid, layers, bidi, batch, seq = CONFIGS[name]
    cls = {"lstm": rnnrs.LSTM, "gru": rnnrs.GRU, "rnn": rnnrs.RNN}[cell]
    layer = cls(inp, hid, layers, bidirectional=bidi, dtype=np.float32, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((seq, batch, inp)).astype(np.float32)
    dy = rng.standard_normal((seq, batch, (2 if bidi else 1) * hid)).astype(np.float32)
    return cell, layer, x, dy


def rnnrs_fns(layer, x, dy, cell):
    def fwd():
        layer.eval()
        return layer.forward(x)[0]

    def fwdbwd():
        layer.train()
        layer.forward(x)
        return layer.backward(dy)[0]

    return fwd, fwdbwd


def torch_fns(name, layer, x, dy, cell):
    _, inp, hid, layers, bidi, _, _ = CONFIGS[name]
    mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](inp, hid, layers, bidirectional=bidi)
    with torch.no_grad():
        for k, v in layer.state_dict().items():
            getattr(mod, k).copy_(torch.from_numpy(v))
    xt = torch.from_numpy(x)
    dyt = torch.from_numpy(dy)

    def fwd():
        with torch.no_grad():
            return mod(xt)[0].numpy()

    def fwdbwd():
        xg = xt.clone().requires_grad_(True)
        y = mod(xg)[0]
        y.backward(dyt)
        mod.zero_grad(set_to_none=True)
        return xg.grad.numpy()

    return fwd, fwdbwd


def numpy_fns(layer, x, dy, cell, name):
    _, _, _, layers, bidi, _, _ = CONFIGS[name]
    params = {k: v.astype(np.float64) for k, v in layer.state_dict().items()}
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)

    def fwd():
        return oracle.rnn_forward(MODE[cell], params, x64, num_layers=layers, bidirectional=bidi)[0]

    def fwdbwd():
        return oracle.rnn_backward(MODE[cell], params, x64, None, None, layers, bidi, dy64)[0]

    return fwd, fwdbwd


def gen_setup(hidden):
    model = rnnrs.LanguageModel(4000, 256, hidden, 2, "lstm", seed=0)
    sd = model.state_dict()
    return model, sd


def gen_rnnrs(model, length, weights="f32"):
    return lambda: model.sample([1], length=length, temperature=1.0, seed=0, weights=weights)


def gen_rnnrs_batch(model, length, batch, weights="f32"):
    return lambda: model.sample_many([[1 + i] for i in range(batch)], length=length, temperature=1.0, seed=0,
                                     weights=weights)


#: Generation rows: rnnrs / rnnrs_b32 stream the float32 weights (weights="f32"); rnnrs_f16 /
#: rnnrs_b32_f16 stream float16 copies of them (weights="f16": lossy for these random float32
#: weights, float32 arithmetic). PyTorch and NumPy use the float32 weights.
GEN_LEGEND = ("rnnrs: float32 weights; rnnrs_f16: float16 weight storage (weights='f16'), float32 arithmetic; "
              "b32: 32 sequences at once (ms per token of one sequence)")


def gen_torch(sd, hidden, length):
    emb = torch.nn.Embedding(4000, 256)
    lstm = torch.nn.LSTM(256, hidden, 2)
    lin = torch.nn.Linear(hidden, 4000)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(sd["embedding.weight"]))
        for k, v in sd.items():
            if k.startswith("rnn."):
                getattr(lstm, k[4:]).copy_(torch.from_numpy(v))
        lin.weight.copy_(torch.from_numpy(sd["linear.weight"]))
        lin.bias.copy_(torch.from_numpy(sd["linear.bias"]))
    gen = torch.Generator().manual_seed(0)

    def run():
        with torch.no_grad():
            tok, state, out = torch.tensor([[1]]), None, []
            for _ in range(length):
                y, state = lstm(emb(tok), state)
                p = torch.softmax(lin(y[-1]), -1)
                tok = torch.multinomial(p, 1, generator=gen).view(1, 1)
                out.append(int(tok))
            return out

    return run


def gen_numpy(sd, hidden, length):
    E = sd["embedding.weight"]
    layers = [(sd[f"rnn.weight_ih_l{k}"].T.copy(), sd[f"rnn.weight_hh_l{k}"].T.copy(),
               sd[f"rnn.bias_ih_l{k}"] + sd[f"rnn.bias_hh_l{k}"]) for k in range(2)]
    W, b = sd["linear.weight"].T.copy(), sd["linear.bias"]
    rng = np.random.default_rng(0)

    def sig(x):
        return 1.0 / (1.0 + np.exp(-x))

    def run():
        tok, out = 1, []
        h = [np.zeros(hidden, np.float32) for _ in layers]
        c = [np.zeros(hidden, np.float32) for _ in layers]
        for _ in range(length):
            x = E[tok]
            for k, (wi, wh, bb) in enumerate(layers):
                g = x @ wi + h[k] @ wh + bb
                i, f, gg, o = sig(g[:hidden]), sig(g[hidden:2 * hidden]), np.tanh(g[2 * hidden:3 * hidden]), sig(g[3 * hidden:])
                c[k] = f * c[k] + i * gg
                h[k] = o * np.tanh(c[k])
                x = h[k]
            z = x @ W + b
            p = np.exp(z - z.max())
            tok = int(rng.choice(4000, p=p / p.sum()))
            out.append(tok)
        return out

    return run


def generation():
    length = 500
    legend_shown = False
    for hidden in (256, 512):
        name = f"G{hidden}"
        if not re.fullmatch(ARGS.config, name):
            continue
        model, sd = gen_setup(hidden)
        fns = {"rnnrs": gen_rnnrs(model, length), "rnnrs_f16": gen_rnnrs(model, length, "f16")}
        if torch is not None:
            fns["torch"] = gen_torch(sd, hidden, length)
        if not ARGS.no_numpy:
            fns["numpy"] = gen_numpy(sd, hidden, length)
        batch = 32
        fns["rnnrs_b32"] = gen_rnnrs_batch(model, length, batch)
        fns["rnnrs_b32_f16"] = gen_rnnrs_batch(model, length, batch, "f16")
        times = {lib: [] for lib in fns}
        for _ in range(ARGS.rounds):
            for lib, fn in fns.items():
                times[lib] += median_ms(fn, 2)
        med = {lib: statistics.median(t) / (length * (batch if "_b32" in lib else 1)) for lib, t in times.items()}
        row = {"config": name, "mode": "gen", "threads": ARGS.threads, **{k: v for k, v in med.items()},
               "unit": "ms/token"}
        if ARGS.json:
            print(json.dumps(row), flush=True)
            continue
        libs = " | ".join(f"{k} {v:.3f}" for k, v in med.items())
        ratio = (f"  torch/rnnrs {med['torch'] / med['rnnrs']:.1f}x, torch/rnnrs_f16 {med['torch'] / med['rnnrs_f16']:.1f}x"
                 if "torch" in med else "")
        print(f"{name:6} gen     ms/token: {libs}{ratio}  batch-32 speed-up {med['rnnrs'] / med['rnnrs_b32']:.1f}x"
              f" (f16 {med['rnnrs_f16'] / med['rnnrs_b32_f16']:.1f}x)", flush=True)
        if not legend_shown:
            print(f"       ({GEN_LEGEND})", flush=True)
            legend_shown = True


def report(row):
    if ARGS.peak:
        for lib in ("rnnrs", "torch"):
            if row.get(lib):
                row[f"{lib}_peak_fraction"] = row["gflops"] * min(row.get(k) or 1e30 for k in ("rnnrs", "torch")) / row[lib] / ARGS.peak
    if ARGS.json:
        print(json.dumps(row), flush=True)
        return
    libs = " | ".join(f"{k} {row[k]:9.2f} ms" for k in ("rnnrs", "torch", "numpy") if row.get(k) is not None)
    ratio = f"  torch/rnnrs {row['torch'] / row['rnnrs']:.2f}x" if row.get("torch") and row.get("rnnrs") else ""
    peak = ""
    if ARGS.peak:
        peak = "  of peak: " + ", ".join(f"{lib} {row[lib + '_peak_fraction']:.0%}" for lib in ("rnnrs", "torch")
                                        if row.get(lib + "_peak_fraction") is not None)
    print(f"{row['config']:6} {row['mode']:7} {libs}  {row['gflops']:.0f} GFLOP/s (fastest){ratio}{peak}", flush=True)


def lm_flops():
    """FLOPs of one LM train step as PyTorch computes it (forward 2·G·H·(in + H) per layer and
    token plus the output layer, backward twice that): rnnrs's table lookup for layer 0 does fewer."""
    c = LM
    per_token = sum(2 * 4 * c["hidden"] * ((c["embed"] if l == 0 else c["hidden"]) + c["hidden"]) for l in range(c["layers"]))
    per_token += 2 * c["hidden"] * c["vocab"]
    return 3 * per_token * c["seq"] * c["batch"]


def lm_job():
    """The language-model train step, rnnrs against the same model in PyTorch (same weights, the
    first step's losses checked equal), each timed in its own blocks."""
    c = LM
    rng = np.random.default_rng(0)
    x = rng.integers(0, c["vocab"], (c["seq"], c["batch"]))
    y = rng.integers(0, c["vocab"], (c["seq"], c["batch"]))

    def make_rnnrs():
        m = rnnrs.LanguageModel(c["vocab"], c["embed"], c["hidden"], c["layers"], "lstm", seed=0)
        m.set_optimizer("adam", 2e-3)
        return m

    m = make_rnnrs()
    fns = {"rnnrs": lambda: m.train_step(x, y, None, 1.0)[0]}
    first = {"rnnrs": make_rnnrs().train_step(x, y, None, 1.0)[0]}
    if torch is not None:
        sd = m.state_dict()

        class TorchLM(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.embedding = torch.nn.Embedding(c["vocab"], c["embed"])
                self.rnn = torch.nn.LSTM(c["embed"], c["hidden"], c["layers"])
                self.linear = torch.nn.Linear(c["hidden"], c["vocab"])

            def forward(self, ids):
                return self.linear(self.rnn(self.embedding(ids))[0])

        def make_torch():
            tm = TorchLM()
            tm.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
            opt = torch.optim.Adam(tm.parameters(), lr=2e-3)
            xt, yt = torch.from_numpy(x), torch.from_numpy(y).reshape(-1)

            def step():
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(tm(xt).reshape(-1, c["vocab"]), yt)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(tm.parameters(), 1.0)
                opt.step()
                return loss.item()
            return step

        first["torch"] = make_torch()()
        if abs(first["torch"] - first["rnnrs"]) > 1e-4 * abs(first["rnnrs"]):
            raise SystemExit(f"LM: first-step losses differ: rnnrs {first['rnnrs']}, torch {first['torch']}")
        fns["torch"] = make_torch()
    if ARGS.lib:
        fns = {ARGS.lib: fns[ARGS.lib]}
    times = {lib: [] for lib in fns}
    for _ in range(ARGS.rounds):
        for lib, fn in fns.items():
            times[lib] += median_ms(fn, ARGS.reps)
    med = {lib: statistics.median(t) for lib, t in times.items()}
    report({"config": "LM", "mode": "train", "threads": ARGS.threads, **med, "gflops": lm_flops() / 1e6 / min(med.values())})


def main():
    modes = ["fwd", "fwdbwd"] if ARGS.mode == "both" else [ARGS.mode]
    if not ARGS.json:
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, threads={ARGS.threads}, "
              f"rnnrs {rnnrs.__version__}, torch {torch.__version__ if torch else 'absent'}, numpy {np.__version__}")
    if re.fullmatch(ARGS.config, "LM"):
        lm_job()
    for name in CONFIGS:
        if not re.fullmatch(ARGS.config, name):
            continue
        if name in FORWARD_ONLY and "fwd" not in modes:
            continue
        cfg_modes = ["fwd"] if name in FORWARD_ONLY else modes
        cell, layer, x, dy = build(name)
        impls = {"rnnrs": rnnrs_fns(layer, x, dy, cell)}
        if torch is not None:
            impls["torch"] = torch_fns(name, layer, x, dy, cell)
        if oracle is not None and not ARGS.no_numpy:
            impls["numpy"] = numpy_fns(layer, x, dy, cell, name)
        for mode in cfg_modes:
            ref = impls["rnnrs"][("fwd", "fwdbwd").index(mode)]()
            fns = {}
            for lib, pair in impls.items():
                fn = pair[("fwd", "fwdbwd").index(mode)]
                out = fn()
                if not np.allclose(out, ref, rtol=1e-3, atol=1e-4):
                    raise SystemExit(f"{name} {mode}: {lib} disagrees with rnnrs (max diff {np.abs(out - ref).max():.3g})")
                fns[lib] = fn
            if ARGS.lib:
                fns = {ARGS.lib: fns[ARGS.lib]}
            times = {lib: [] for lib in fns}
            for _ in range(ARGS.rounds):
                for lib, fn in fns.items():
                    times[lib] += median_ms(fn, 1, 0) if lib == "numpy" else median_ms(fn, ARGS.reps)
            med = {lib: statistics.median(t) for lib, t in times.items()}
            f = flops(*CONFIGS[name]) * (3 if mode == "fwdbwd" else 1)
            report({"config": name, "mode": mode, "threads": ARGS.threads, **med, "gflops": f / 1e6 / min(med.values())})


# --------------------------------------------------------------------------------- --system checks
def child():
    """Run in a fresh process by ``system()``: print one JSON line."""
    name = "M"
    cell, layer, x, dy = build(name)
    if ARGS.child == "digest":
        import hashlib
        fwd, fwdbwd = rnnrs_fns(layer, x, dy, cell)
        y, dx = fwd(), fwdbwd()
        g = layer.grads()
        h = hashlib.sha256(y.tobytes() + dx.tobytes() + b"".join(g[k].tobytes() for k in sorted(g))).hexdigest()
        print(json.dumps({"threads": ARGS.threads, "sha256": h}))
        return
    import resource
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fns = rnnrs_fns(layer, x, dy, cell) if ARGS.child == "memory-rnnrs" else torch_fns(name, layer, x, dy, cell)
    for _ in range(3):
        fns[1]()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"lib": ARGS.child.split("-")[1], "peak_mb": peak / 1024, "above_imports_mb": (peak - base) / 1024}))


def _run(args, env=None):
    import subprocess
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *args], capture_output=True, text=True,
                         env=env, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def system():
    import subprocess
    rows = []
    # import time: median of 5 fresh interpreters each
    for mod in ["sys", "numpy", "rnnrs"] + (["torch"] if torch is not None else []):  # sys: bare start-up
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", f"import {mod}"], check=True)
            ts.append((time.perf_counter() - t0) * 1e3)
        rows.append({"check": "import", "module": mod, "ms": statistics.median(ts), "unit": "ms, fresh interpreter"})
    # scaling at L, forward+backward, rnnrs only
    per = {}
    for th in (1, 2):
        res = _run(["--threads", str(th), "--config", "L", "--mode", "fwdbwd", "--no-torch", "--no-numpy", "--json",
                    "--rounds", str(ARGS.rounds), "--reps", str(ARGS.reps)])
        per[th] = [r for r in res if r.get("config") == "L"][0]["rnnrs"]
    rows.append({"check": "scaling L fwd+bwd", "ms_1_thread": per[1], "ms_2_threads": per[2],
                 "speedup": per[1] / per[2]})
    # bit identity across thread counts (M, forward, forward+backward, all gradients)
    digests = {th: _run(["--threads", str(th), "--child", "digest"])[0]["sha256"] for th in (1, 2, 3, 4)}
    rows.append({"check": "bit-identical M for 1/2/3/4 threads", "identical": len(set(digests.values())) == 1,
                 "sha256": digests[1][:16]})
    # peak memory of forward+backward at M
    for lib in ["rnnrs"] + (["torch"] if torch is not None else []):
        r = _run(["--threads", str(ARGS.threads), "--child", f"memory-{lib}"])[0]
        rows.append({"check": "peak memory M fwd+bwd", **r})
    for r in rows:
        print(json.dumps(r) if ARGS.json else "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                         for k, v in r.items()), flush=True)


def scaling():
    """1 -> 2 threads for the LM train step and the batch-32 LSTM forward, rnnrs alone, each
    thread count in its own fresh process."""
    per = {}
    for th in (1, 2):
        for r in _run(["--threads", str(th), "--config", "LM|I-lstm-B32", "--mode", "fwd", "--no-torch", "--no-numpy",
                       "--json", "--rounds", str(ARGS.rounds), "--reps", str(ARGS.reps)]):
            if r.get("config") in ("LM", "I-lstm-B32"):
                per[(r["config"], th)] = r["rnnrs"]
    for name in ("LM", "I-lstm-B32"):
        row = {"check": f"scaling {name}", "ms_1_thread": per[(name, 1)], "ms_2_threads": per[(name, 2)],
               "speedup": per[(name, 1)] / per[(name, 2)]}
        print(json.dumps(row) if ARGS.json else "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                         for k, v in row.items()), flush=True)


TORCH_LOOP = r'''
# A plain PyTorch character-LM loop equivalent to `rnnrs train`'s defaults: 5 % validation split,
# random 64-step windows in batches of 32, embed 128, LSTM 256 x 2 with dropout 0.1, Adam 2e-3,
# clip 1, a log line every 10 steps, a checkpoint every 200 steps and at the end, and a final
# validation loss.
import sys, time, numpy as np, torch
corpus, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(int(sys.argv[4]))
text = open(corpus, encoding="utf-8").read()
chars = sorted(set(text))
lut = {ch: i for i, ch in enumerate(chars)}
ids = np.fromiter((lut[ch] for ch in text), dtype=np.int64, count=len(text))
n_val = int(len(ids) * 0.05)
train, val = ids[:-n_val], ids[-n_val:]
V, T, B = len(chars), 64, 32
class LM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(V, 128)
        self.rnn = torch.nn.LSTM(128, 256, 2, dropout=0.1)
        self.linear = torch.nn.Linear(256, V)
    def forward(self, x):
        return self.linear(self.rnn(self.embedding(x))[0])
torch.manual_seed(0)
model = LM()
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
rng = np.random.default_rng(0)
for step in range(1, steps + 1):
    starts = rng.integers(0, len(train) - T - 1, B)
    win = np.stack([train[s:s + T + 1] for s in starts], axis=1)
    x, y = torch.from_numpy(win[:-1]), torch.from_numpy(win[1:])
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if step % 10 == 0:
        print(f"step {step} loss {loss.item():.4f}", flush=True)
    if step % 200 == 0 or step == steps:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, out + "/checkpoint.pt")
model.eval()
with torch.no_grad():
    n = (len(val) - 1) // T * T
    vx = torch.from_numpy(val[:n].reshape(-1, T).T.copy())
    vy = torch.from_numpy(val[1:n + 1].reshape(-1, T).T.copy())
    print("val loss", torch.nn.functional.cross_entropy(model(vx).reshape(-1, V), vy.reshape(-1)).item())
'''


def cli():
    """`rnnrs train` end to end (fresh process: imports, data loading, logging, checkpoints)
    against the plain PyTorch loop above, same corpus and steps; tokens/s of the whole process."""
    import subprocess
    import tempfile
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    words = ["".join(rng.choice(letters, rng.integers(1, 9))) for _ in range(3000)]
    punct = [" ", " ", " ", " ", ", ", ". ", "\n", "; ", "! ", "? "]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write("".join(words[i] + punct[j] for i, j in zip(rng.integers(0, len(words), 200_000),
                                                              rng.integers(0, len(punct), 200_000)))[:1_100_000])
        loop = os.path.join(tmp, "torch_loop.py")
        with open(loop, "w", encoding="utf-8") as f:
            f.write(TORCH_LOOP)
        env = dict(os.environ)
        cmds = {"rnnrs": [sys.executable, "-m", "rnnrs", "train", "--corpus", corpus, "--out", os.path.join(tmp, "r"),
                          "--steps", str(ARGS.cli_steps), "--quiet", "--no-plot", "--overwrite"]}
        if torch is not None:
            os.makedirs(os.path.join(tmp, "t"), exist_ok=True)
            cmds["torch"] = [sys.executable, loop, corpus, os.path.join(tmp, "t"), str(ARGS.cli_steps), str(ARGS.threads)]
        times = {lib: [] for lib in cmds}
        for _ in range(ARGS.rounds):
            for lib, cmd in cmds.items():
                time.sleep(ARGS.gap)
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, env=env, capture_output=True)
                times[lib].append(time.perf_counter() - t0)
        tokens = ARGS.cli_steps * LM["seq"] * LM["batch"]
        row = {"check": "train end to end", "steps": ARGS.cli_steps, "threads": ARGS.threads,
               **{f"{lib}_s": statistics.median(t) for lib, t in times.items()},
               **{f"{lib}_tokens_per_s": tokens / statistics.median(t) for lib, t in times.items()}}
        if "torch" in times:
            row["rnnrs_over_torch_tokens_per_s"] = row["rnnrs_tokens_per_s"] / row["torch_tokens_per_s"]
        print(json.dumps(row) if ARGS.json else "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                         for k, v in row.items()), flush=True)


if __name__ == "__main__":
    if ARGS.child:
        child()
    elif ARGS.system:
        system()
    elif ARGS.scaling:
        scaling()
    elif ARGS.cli:
        cli()
    else:
        main()
        generation()

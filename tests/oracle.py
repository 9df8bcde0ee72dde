"""Independent float64 NumPy reference ("oracle") for rnnrs.

Written for obviousness, not speed: plain Python loops over layers, directions
and time steps, float64 throughout, and no dependency on rnnrs.

Conventions are exactly PyTorch's (torch.nn.RNN / GRU / LSTM, seq-first):

* modes: "rnn_tanh", "rnn_relu", "gru", "lstm"; gates per layer G = 1, 1, 3, 4.
* params: dict with PyTorch names/shapes, for layer k and direction suffix
  sfx in ("", "_reverse"):
      weight_ih_l{k}{sfx}  (G*H, I_k)   I_0 = input_size, I_k = D*H for k > 0
      weight_hh_l{k}{sfx}  (G*H, H)
      bias_ih_l{k}{sfx}    (G*H,)
      bias_hh_l{k}{sfx}    (G*H,)
* RNN : h' = act(W_ih x + b_ih + W_hh h + b_hh)
* LSTM: gates (i, f, g, o) = W_ih x + b_ih + W_hh h + b_hh;
        c' = f*c + i*g ; h' = o*tanh(c')
* GRU : r = s(W_ir x + b_ir + W_hr h + b_hr)
        z = s(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r*(W_hn h + b_hn))
        h' = (1-z)*n + z*h
* x is (T, B, I); h0/c0 are (L*D, B, H) indexed layer*D + direction; None
  means zeros.  y is (T, B, D*H): forward direction in [..., :H], reverse in
  [..., H:].  The reverse direction runs t = T-1 .. 0; its output at time t is
  its state after consuming x_t, and its final state is the one after t = 0.
* No dropout.

The backward pass (BPTT) is written by hand and is itself checked against
central finite differences in test_oracle.py.
"""

import math

import numpy as np

# ---------------------------------------------------------------------------
# Tolerances
# ---------------------------------------------------------------------------
RTOL_F64 = 1e-10
ATOL_F64 = 1e-10
RTOL_F32 = 1e-4
ATOL_F32 = 1e-5

MODES = ("rnn_tanh", "rnn_relu", "gru", "lstm")
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}

# Largest differences seen by assert_close, per dtype name.  Printed at the end
# of a pytest session by conftest.py (pytest_terminal_summary).
MAX_SEEN = {}


def tolerances(dtype):
    """(rtol, atol) for comparing a result computed in `dtype` against the oracle."""
    dt = np.dtype(dtype)
    if dt == np.float64:
        return RTOL_F64, ATOL_F64
    if dt == np.float32:
        return RTOL_F32, ATOL_F32
    raise ValueError(f"no tolerance defined for dtype {dt}")


def _record(dtype_name, what, max_abs, max_rel, ratio):
    entry = MAX_SEEN.setdefault(
        dtype_name,
        {"max_abs": 0.0, "max_abs_what": "", "max_rel": 0.0, "max_rel_what": "",
         "max_ratio": 0.0, "max_ratio_what": "", "count": 0},
    )
    entry["count"] += 1
    if max_abs > entry["max_abs"]:
        entry["max_abs"], entry["max_abs_what"] = max_abs, what
    if max_rel > entry["max_rel"]:
        entry["max_rel"], entry["max_rel_what"] = max_rel, what
    if ratio > entry["max_ratio"]:
        entry["max_ratio"], entry["max_ratio_what"] = ratio, what


def assert_close(actual, expected, dtype, what):
    """Assert |actual - expected| <= atol + rtol*|expected| elementwise.

    `dtype` selects the tolerances (the dtype the *actual* result was computed
    in).  On failure the message names `what`, the shapes, the max abs and rel
    difference and the worst element.  Every call also records the largest
    differences seen in MAX_SEEN.
    """
    rtol, atol = tolerances(dtype)
    a = np.asarray(actual)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"{what}: shape {a.shape} != expected {e.shape}")
    a = a.astype(np.float64)
    if a.size == 0:
        return
    if not np.all(np.isfinite(a)):
        raise AssertionError(f"{what}: actual contains non-finite values")
    diff = np.abs(a - e)
    bound = atol + rtol * np.abs(e)
    ratio = diff / bound
    max_abs = float(diff.max())
    # relative difference, reported only where it is meaningful (|expected| >= 1e-3)
    big = np.abs(e) >= 1e-3
    max_rel = float((diff[big] / np.abs(e[big])).max()) if big.any() else 0.0
    max_ratio = float(ratio.max())
    _record(np.dtype(dtype).name, what, max_abs, max_rel, max_ratio)
    if max_ratio > 1.0:
        idx = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        raise AssertionError(
            f"{what} ({np.dtype(dtype).name}): mismatch, max abs diff {max_abs:.3e}, "
            f"max rel diff {max_rel:.3e} (rtol={rtol:g}, atol={atol:g}); worst element "
            f"{idx}: actual {a[idx]!r} expected {e[idx]!r} "
            f"({int((ratio > 1).sum())}/{ratio.size} elements out of tolerance)"
        )


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
def sigmoid(a):
    # numerically stable logistic, elementwise
    a = np.asarray(a, dtype=np.float64)
    out = np.empty_like(a)
    pos = a >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-a[pos]))
    ea = np.exp(a[~pos])
    out[~pos] = ea / (1.0 + ea)
    return out


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def param_names(num_layers, bidirectional):
    """PyTorch parameter names in PyTorch's order."""
    names = []
    for k in range(num_layers):
        for sfx in (["", "_reverse"] if bidirectional else [""]):
            names += [f"weight_ih_l{k}{sfx}", f"weight_hh_l{k}{sfx}",
                      f"bias_ih_l{k}{sfx}", f"bias_hh_l{k}{sfx}"]
    return names


def param_shapes(mode, input_size, hidden_size, num_layers, bidirectional):
    """Ordered dict name -> shape, exactly as PyTorch."""
    G = GATES[mode]
    H = hidden_size
    D = 2 if bidirectional else 1
    shapes = {}
    for k in range(num_layers):
        I_k = input_size if k == 0 else D * H
        for sfx in (["", "_reverse"] if bidirectional else [""]):
            shapes[f"weight_ih_l{k}{sfx}"] = (G * H, I_k)
            shapes[f"weight_hh_l{k}{sfx}"] = (G * H, H)
            shapes[f"bias_ih_l{k}{sfx}"] = (G * H,)
            shapes[f"bias_hh_l{k}{sfx}"] = (G * H,)
    return shapes


def random_params(mode, input_size, hidden_size, num_layers, bidirectional, rng, scale=None):
    """Random float64 params, uniform in +-scale (default 1/sqrt(H), like PyTorch)."""
    if scale is None:
        scale = 1.0 / math.sqrt(hidden_size)
    return {name: rng.uniform(-scale, scale, size=shape)
            for name, shape in param_shapes(mode, input_size, hidden_size,
                                            num_layers, bidirectional).items()}


def _infer_sizes(mode, params, num_layers, bidirectional):
    G = GATES[mode]
    D = 2 if bidirectional else 1
    w = _f64(params["weight_hh_l0"])
    H = w.shape[1]
    assert w.shape == (G * H, H), f"weight_hh_l0 has shape {w.shape}, expected {(G * H, H)}"
    I = _f64(params["weight_ih_l0"]).shape[1]
    expected = param_shapes(mode, I, H, num_layers, bidirectional)
    for name, shape in expected.items():
        assert name in params, f"missing parameter {name}"
        assert _f64(params[name]).shape == shape, (
            f"{name} has shape {_f64(params[name]).shape}, expected {shape}")
    assert set(params) == set(expected), f"unexpected parameters {set(params) - set(expected)}"
    return G, D, I, H


# ---------------------------------------------------------------------------
# One cell step (batched over B)
# ---------------------------------------------------------------------------
def _cell_forward(mode, W_ih, W_hh, b_ih, b_hh, x_t, h, c):
    """One time step. x_t (B, I), h (B, H), c (B, H) or None.

    Returns (h_new, c_new, cache); c_new is None unless lstm.
    """
    H = h.shape[1]
    gi = x_t @ W_ih.T + b_ih          # (B, G*H)
    gh = h @ W_hh.T + b_hh            # (B, G*H)
    if mode == "rnn_tanh":
        a = gi + gh
        h_new = np.tanh(a)
        return h_new, None, dict(x=x_t, h=h, a=a, h_new=h_new)
    if mode == "rnn_relu":
        a = gi + gh
        h_new = np.maximum(a, 0.0)
        return h_new, None, dict(x=x_t, h=h, a=a, h_new=h_new)
    if mode == "lstm":
        a = gi + gh
        i = sigmoid(a[:, 0 * H:1 * H])
        f = sigmoid(a[:, 1 * H:2 * H])
        g = np.tanh(a[:, 2 * H:3 * H])
        o = sigmoid(a[:, 3 * H:4 * H])
        c_new = f * c + i * g
        tc = np.tanh(c_new)
        h_new = o * tc
        return h_new, c_new, dict(x=x_t, h=h, c=c, a=a, i=i, f=f, g=g, o=o, tc=tc)
    if mode == "gru":
        r = sigmoid(gi[:, 0 * H:1 * H] + gh[:, 0 * H:1 * H])
        z = sigmoid(gi[:, 1 * H:2 * H] + gh[:, 1 * H:2 * H])
        ghn = gh[:, 2 * H:3 * H]
        a_n = gi[:, 2 * H:3 * H] + r * ghn
        n = np.tanh(a_n)
        h_new = (1.0 - z) * n + z * h
        return h_new, None, dict(x=x_t, h=h, r=r, z=z, n=n, ghn=ghn, a_n=a_n)
    raise ValueError(f"unknown mode {mode!r}")


def _cell_backward(mode, W_ih, W_hh, cache, dh_new, dc_new):
    """Backward of one step.

    Given dL/dh_new (B, H) and dL/dc_new (lstm only), returns
    (dx_t, dh, dc, dW_ih, dW_hh, db_ih, db_hh); dc is None unless lstm.
    """
    x_t, h = cache["x"], cache["h"]
    dc = None
    if mode == "rnn_tanh":
        da = dh_new * (1.0 - cache["h_new"] ** 2)
        dgi = dgh = da
    elif mode == "rnn_relu":
        da = dh_new * (cache["a"] > 0.0)
        dgi = dgh = da
    elif mode == "lstm":
        i, f, g, o, tc, c = (cache[k] for k in ("i", "f", "g", "o", "tc", "c"))
        dc_total = dc_new + dh_new * o * (1.0 - tc ** 2)
        do = dh_new * tc
        di = dc_total * g
        dg = dc_total * i
        df = dc_total * c
        dc = dc_total * f
        da = np.concatenate([
            di * i * (1.0 - i),
            df * f * (1.0 - f),
            dg * (1.0 - g ** 2),
            do * o * (1.0 - o),
        ], axis=1)
        dgi = dgh = da
    elif mode == "gru":
        r, z, n, ghn = cache["r"], cache["z"], cache["n"], cache["ghn"]
        dn = dh_new * (1.0 - z)
        dz = dh_new * (h - n)
        dh_direct = dh_new * z
        da_n = dn * (1.0 - n ** 2)          # d/d(gi_n + r*ghn)
        dr = da_n * ghn
        da_r = dr * r * (1.0 - r)
        da_z = dz * z * (1.0 - z)
        dgi = np.concatenate([da_r, da_z, da_n], axis=1)
        dgh = np.concatenate([da_r, da_z, da_n * r], axis=1)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    dW_ih = dgi.T @ x_t
    dW_hh = dgh.T @ h
    db_ih = dgi.sum(axis=0)
    db_hh = dgh.sum(axis=0)
    dx_t = dgi @ W_ih
    dh = dgh @ W_hh
    if mode == "gru":
        dh = dh + dh_direct
    return dx_t, dh, dc, dW_ih, dW_hh, db_ih, db_hh


# ---------------------------------------------------------------------------
# Full multi-layer, (bi)directional forward / backward
# ---------------------------------------------------------------------------
def _time_order(direction, T):
    return range(T) if direction == 0 else range(T - 1, -1, -1)


def _forward_with_cache(mode, params, x, h0, c0, num_layers, bidirectional):
    if mode not in GATES:
        raise ValueError(f"unknown mode {mode!r}")
    G, D, I, H = _infer_sizes(mode, params, num_layers, bidirectional)
    x = _f64(x)
    assert x.ndim == 3 and x.shape[2] == I, f"x has shape {x.shape}, expected (T, B, {I})"
    T, B, _ = x.shape
    h0 = np.zeros((num_layers * D, B, H)) if h0 is None else _f64(h0)
    assert h0.shape == (num_layers * D, B, H), f"h0 shape {h0.shape}"
    if mode == "lstm":
        c0 = np.zeros((num_layers * D, B, H)) if c0 is None else _f64(c0)
        assert c0.shape == (num_layers * D, B, H), f"c0 shape {c0.shape}"
    h_n = np.zeros((num_layers * D, B, H))
    c_n = np.zeros((num_layers * D, B, H)) if mode == "lstm" else None
    caches = {}          # (layer, direction) -> {t: cache}
    layer_in = x
    for k in range(num_layers):
        y = np.zeros((T, B, D * H))
        for d in range(D):
            sfx = "_reverse" if d == 1 else ""
            W_ih = _f64(params[f"weight_ih_l{k}{sfx}"])
            W_hh = _f64(params[f"weight_hh_l{k}{sfx}"])
            b_ih = _f64(params[f"bias_ih_l{k}{sfx}"])
            b_hh = _f64(params[f"bias_hh_l{k}{sfx}"])
            idx = k * D + d
            h = h0[idx]
            c = c0[idx] if mode == "lstm" else None
            steps = {}
            for t in _time_order(d, T):
                h, c, cache = _cell_forward(mode, W_ih, W_hh, b_ih, b_hh, layer_in[t], h, c)
                steps[t] = cache
                y[t, :, d * H:(d + 1) * H] = h
            caches[(k, d)] = steps
            h_n[idx] = h
            if mode == "lstm":
                c_n[idx] = c
        layer_in = y
    return layer_in, h_n, c_n, caches


def rnn_forward(mode, params, x, h0=None, c0=None, num_layers=1, bidirectional=False, lengths=None):
    """Returns (y, h_n, c_n); c_n is None unless mode == 'lstm'.

    With `lengths` (B ints in [0, T]) the batch is padded: by definition each
    sequence b is run alone on x[:lengths[b], b]; y is zero past its end and
    h_n/c_n are its final states (the initial state for length 0).
    """
    if lengths is not None:
        return _padded_forward(mode, params, x, h0, c0, num_layers, bidirectional, lengths)
    y, h_n, c_n, _ = _forward_with_cache(mode, params, x, h0, c0, num_layers, bidirectional)
    return y, h_n, c_n


def _state_or_zeros(a, mode_has, shape):
    if not mode_has:
        return None
    return np.zeros(shape) if a is None else _f64(a)


def _padded_forward(mode, params, x, h0, c0, num_layers, bidirectional, lengths):
    _, D, _, H = _infer_sizes(mode, params, num_layers, bidirectional)
    x = _f64(x)
    T, B, _ = x.shape
    lengths = [int(v) for v in lengths]
    assert len(lengths) == B and all(0 <= v <= T for v in lengths), f"lengths {lengths}"
    shape = (num_layers * D, B, H)
    h0 = _state_or_zeros(h0, True, shape)
    c0 = _state_or_zeros(c0, mode == "lstm", shape)
    y = np.zeros((T, B, D * H))
    h_n = h0.copy()
    c_n = None if c0 is None else c0.copy()
    for b, n in enumerate(lengths):
        if n == 0:
            continue
        yb, hb, cb = rnn_forward(mode, params, x[:n, b:b + 1], h0[:, b:b + 1],
                                 None if c0 is None else c0[:, b:b + 1], num_layers, bidirectional)
        y[:n, b:b + 1] = yb
        h_n[:, b:b + 1] = hb
        if c_n is not None:
            c_n[:, b:b + 1] = cb
    return y, h_n, c_n


def _padded_backward(mode, params, x, h0, c0, num_layers, bidirectional, dy, dh_n, dc_n, lengths):
    _, D, _, H = _infer_sizes(mode, params, num_layers, bidirectional)
    x = _f64(x)
    T, B, _ = x.shape
    lengths = [int(v) for v in lengths]
    shape = (num_layers * D, B, H)
    h0 = _state_or_zeros(h0, True, shape)
    c0 = _state_or_zeros(c0, mode == "lstm", shape)
    dh_n = _state_or_zeros(dh_n, True, shape)
    dc_n = _state_or_zeros(dc_n, mode == "lstm", shape)
    dy = _f64(dy)
    dx = np.zeros_like(x)
    dh0 = dh_n.copy()                       # length 0: the state passes straight through
    dc0 = None if dc_n is None else dc_n.copy()
    grads = {name: np.zeros_like(_f64(p)) for name, p in params.items()}
    for b, n in enumerate(lengths):
        if n == 0:
            continue
        sl = slice(b, b + 1)
        dxb, dhb, dcb, gb = rnn_backward(
            mode, params, x[:n, sl], h0[:, sl], None if c0 is None else c0[:, sl], num_layers,
            bidirectional, dy[:n, sl], dh_n[:, sl], None if dc_n is None else dc_n[:, sl])
        dx[:n, sl] = dxb
        dh0[:, sl] = dhb
        if dc0 is not None:
            dc0[:, sl] = dcb
        for k in grads:
            grads[k] += gb[k]
    return dx, dh0, dc0, grads


def rnn_backward(mode, params, x, h0, c0, num_layers, bidirectional, dy, dh_n=None, dc_n=None,
                 lengths=None):
    """Hand-written BPTT.

    With `lengths`, the gradients of the padded forward (see rnn_forward):
    each sequence's own BPTT, parameter gradients summed over sequences,
    dy past a sequence's end ignored and dx there zero.

    Returns (dx, dh0, dc0, grads): gradients of the scalar
    sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n) w.r.t. x, h0, c0 and params.
    dc0 is None unless lstm; dh0 is always returned (gradient w.r.t. the zero
    initial state when h0 is None).
    """
    if lengths is not None:
        return _padded_backward(mode, params, x, h0, c0, num_layers, bidirectional, dy, dh_n, dc_n, lengths)
    _, _, _, caches = _forward_with_cache(mode, params, x, h0, c0, num_layers, bidirectional)
    G, D, I, H = _infer_sizes(mode, params, num_layers, bidirectional)
    x = _f64(x)
    T, B, _ = x.shape
    dy = _f64(dy)
    assert dy.shape == (T, B, D * H), f"dy shape {dy.shape}, expected {(T, B, D * H)}"
    LD = num_layers * D
    dh_n = np.zeros((LD, B, H)) if dh_n is None else _f64(dh_n)
    assert dh_n.shape == (LD, B, H)
    if mode == "lstm":
        dc_n = np.zeros((LD, B, H)) if dc_n is None else _f64(dc_n)
        assert dc_n.shape == (LD, B, H)
    dh0 = np.zeros((LD, B, H))
    dc0 = np.zeros((LD, B, H)) if mode == "lstm" else None
    grads = {name: np.zeros_like(_f64(p)) for name, p in params.items()}

    d_out = dy                              # gradient w.r.t. current layer's output
    for k in range(num_layers - 1, -1, -1):
        I_k = I if k == 0 else D * H
        d_in = np.zeros((T, B, I_k))        # gradient w.r.t. current layer's input
        for d in range(D):
            sfx = "_reverse" if d == 1 else ""
            W_ih = _f64(params[f"weight_ih_l{k}{sfx}"])
            W_hh = _f64(params[f"weight_hh_l{k}{sfx}"])
            idx = k * D + d
            dh = dh_n[idx].copy()
            dc = dc_n[idx].copy() if mode == "lstm" else None
            steps = caches[(k, d)]
            # walk the processing order backwards
            for t in reversed(list(_time_order(d, T))):
                dh_total = dh + d_out[t, :, d * H:(d + 1) * H]
                dx_t, dh, dc, dW_ih, dW_hh, db_ih, db_hh = _cell_backward(
                    mode, W_ih, W_hh, steps[t], dh_total, dc)
                d_in[t] += dx_t
                grads[f"weight_ih_l{k}{sfx}"] += dW_ih
                grads[f"weight_hh_l{k}{sfx}"] += dW_hh
                grads[f"bias_ih_l{k}{sfx}"] += db_ih
                grads[f"bias_hh_l{k}{sfx}"] += db_hh
            dh0[idx] = dh
            if mode == "lstm":
                dc0[idx] = dc
        d_out = d_in
    return d_out, dh0, dc0, grads


def relu_margin(params, x, h0=None, num_layers=1, bidirectional=False):
    """For mode 'rnn_relu': min over all pre-activations a of
    |a| / (1 + sum of |terms| making up a).  A small value means some
    pre-activation sits so close to 0 that rounding in a lower-precision
    implementation could flip the relu branch.  Used by tests to redraw."""
    _, _, _, caches = _forward_with_cache("rnn_relu", params, x, h0, None, num_layers, bidirectional)
    best = math.inf
    for (k, d), steps in caches.items():
        sfx = "_reverse" if d == 1 else ""
        W_ih = np.abs(_f64(params[f"weight_ih_l{k}{sfx}"]))
        W_hh = np.abs(_f64(params[f"weight_hh_l{k}{sfx}"]))
        b = np.abs(_f64(params[f"bias_ih_l{k}{sfx}"])) + np.abs(_f64(params[f"bias_hh_l{k}{sfx}"]))
        for cache in steps.values():
            scale = 1.0 + np.abs(cache["x"]) @ W_ih.T + np.abs(cache["h"]) @ W_hh.T + b
            best = min(best, float((np.abs(cache["a"]) / scale).min()))
    return best


# ---------------------------------------------------------------------------
# Embedding / linear / loss
# ---------------------------------------------------------------------------
def embedding_forward(weight, ids):
    """out[...] = weight[ids[...]]; ids is any integer array."""
    return _f64(weight)[np.asarray(ids)]


def embedding_backward(weight_shape, ids, dout):
    """dweight with repeated ids accumulated."""
    dweight = np.zeros(weight_shape)
    ids = np.asarray(ids).reshape(-1)
    dout = _f64(dout).reshape(ids.shape[0], weight_shape[1])
    for n in range(ids.shape[0]):
        dweight[ids[n]] += dout[n]
    return dweight


def linear_forward(weight, bias, x):
    """x @ W.T + b; x is (..., in), W is (out, in), b is (out,) or None."""
    out = _f64(x) @ _f64(weight).T
    if bias is not None:
        out = out + _f64(bias)
    return out


def linear_backward(weight, x, dout):
    """Returns (dx, dweight, dbias) for linear_forward."""
    weight, x, dout = _f64(weight), _f64(x), _f64(dout)
    n_out, n_in = weight.shape
    dx = dout @ weight
    dweight = dout.reshape(-1, n_out).T @ x.reshape(-1, n_in)
    dbias = dout.reshape(-1, n_out).sum(axis=0)
    return dx, dweight, dbias


def cross_entropy(logits, targets):
    """Mean cross-entropy over N rows. Returns (loss, dlogits)."""
    logits = _f64(logits)
    targets = np.asarray(targets)
    N, V = logits.shape
    m = logits.max(axis=1, keepdims=True)
    shifted = logits - m
    lse = np.log(np.exp(shifted).sum(axis=1, keepdims=True))   # log-sum-exp minus m
    log_probs = shifted - lse
    loss = -float(log_probs[np.arange(N), targets].mean())
    dlogits = np.exp(log_probs)
    dlogits[np.arange(N), targets] -= 1.0
    dlogits /= N
    return loss, dlogits


# ---------------------------------------------------------------------------
# Gradient clipping and optimizers
# ---------------------------------------------------------------------------
def clip_grad_norm(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_ (L2): returns (total_norm, clipped copies)."""
    total = math.sqrt(sum(float((_f64(g) ** 2).sum()) for g in grads.values()))
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        clipped = {k: _f64(g) * coef for k, g in grads.items()}
    else:
        clipped = {k: _f64(g).copy() for k, g in grads.items()}
    return total, clipped


def sgd_step(params, grads, state, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    """torch.optim.SGD (dampening 0).

    state: dict name -> {"momentum_buffer": array} (None or {} at the start).
    Returns (new_params, new_state); inputs are not modified.
    """
    state = {} if state is None else state
    new_params, new_state = {}, {}
    for name, p in params.items():
        p = _f64(p)
        d_p = _f64(grads[name])
        if weight_decay != 0.0:
            d_p = d_p + weight_decay * p
        if momentum != 0.0:
            old = state.get(name, {}).get("momentum_buffer")
            if old is None:
                buf = d_p.copy()                 # first step: buf = grad
            else:
                buf = momentum * _f64(old) + d_p  # dampening 0
            new_state[name] = {"momentum_buffer": buf}
            d_p = d_p + momentum * buf if nesterov else buf
        new_params[name] = p - lr * d_p
    return new_params, new_state


def adam_step(params, grads, state, step, lr, betas=(0.9, 0.999), eps=1e-8,
              weight_decay=0.0, decoupled=False):
    """torch.optim.Adam (decoupled=False, L2 added to grad) or torch.optim.AdamW
    (decoupled=True, p *= 1 - lr*wd).  step is 1-based (the step being taken).

    state: dict name -> {"exp_avg": m, "exp_avg_sq": v} (None or {} at the start).
    Returns (new_params, new_state); inputs are not modified.
    """
    assert step >= 1
    state = {} if state is None else state
    beta1, beta2 = betas
    new_params, new_state = {}, {}
    for name, p in params.items():
        p = _f64(p)
        g = _f64(grads[name])
        if decoupled:
            p = p * (1.0 - lr * weight_decay)
        elif weight_decay != 0.0:
            g = g + weight_decay * p
        st = state.get(name, {})
        m = _f64(st["exp_avg"]) if "exp_avg" in st else np.zeros_like(p)
        v = _f64(st["exp_avg_sq"]) if "exp_avg_sq" in st else np.zeros_like(p)
        m = beta1 * m + (1.0 - beta1) * g
        v = beta2 * v + (1.0 - beta2) * g * g
        bias_correction1 = 1.0 - beta1 ** step
        bias_correction2 = 1.0 - beta2 ** step
        step_size = lr / bias_correction1
        denom = np.sqrt(v) / math.sqrt(bias_correction2) + eps
        new_params[name] = p - step_size * m / denom
        new_state[name] = {"exp_avg": m, "exp_avg_sq": v}
    return new_params, new_state

"""rnnrs.LanguageModel (forward, loss, BPTT, clipping, optimizers) against the float64 oracle.

The oracle side is composed from the independent pieces in ``oracle.py``:

    x      = embedding_forward(E, ids)            (or one-hot rows of eye(V))
    y, h_n = rnn_forward(mode, rnn_params, x, h0, c0, L)
    logits = linear_forward(W, b, y)
    loss   = cross_entropy(logits.reshape(T*B, V), targets.reshape(T*B))

and backwards through cross_entropy -> linear_backward -> rnn_backward ->
embedding_backward.  Optimizer steps use oracle.clip_grad_norm, oracle.sgd_step
and oracle.adam_step.  Tolerances come from oracle.tolerances (via
oracle.assert_close) and are never loosened here; instead, examples where a
correct implementation could legitimately differ by more are redrawn: relu
pre-activations too close to 0 (oracle.relu_margin), a gradient norm on the
clipping boundary, and Adam steps made ill-conditioned by tiny gradient entries
(see adam_update_sensitivity).

Skipped when rnnrs is not importable, unless RNNRS_REQUIRED=1 is set.
"""

import os

import numpy as np
import pytest
from hypothesis import assume, currently_in_test_context, given
from hypothesis import note as _hyp_note
from hypothesis import strategies as st

import oracle

if os.environ.get("RNNRS_REQUIRED"):
    import rnnrs
else:
    rnnrs = pytest.importorskip("rnnrs")

# LanguageModel cell name -> oracle mode
CELL_MODE = {"lstm": "lstm", "gru": "gru", "rnn": "rnn_tanh", "rnn_relu": "rnn_relu"}
CELLS = tuple(CELL_MODE)
# relu: redraw when a pre-activation sits within this relative margin of the kink
# (rounding could legitimately flip the branch there); same values as test_layers.
RELU_MARGIN = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-4}


def note(msg):
    """hypothesis.note inside a hypothesis test; a no-op in plain tests."""
    if currently_in_test_context():
        _hyp_note(msg)


def reject(why):
    """Discard a hypothesis example; in a plain (fixed-config) test, fail loudly instead."""
    if currently_in_test_context():
        assume(False)
    raise AssertionError(f"fixed configuration unusable: {why}")


# ---------------------------------------------------------------------------
# Configurations and data
# ---------------------------------------------------------------------------
def configs():
    return st.fixed_dictionaries({
        "onehot": st.booleans(),
        "V": st.integers(2, 9),
        "E": st.integers(1, 6),
        "H": st.integers(1, 6),
        "L": st.integers(1, 2),
        "T": st.integers(1, 6),
        "B": st.integers(1, 4),
        "init": st.booleans(),          # pass an initial state (else None = zeros)
        # None: keep the model's own initialisation; else load uniform(-s, s)
        # parameters through load_state_dict (larger values saturate the gates more)
        "param_scale": st.sampled_from([None, 0.5, 1.5]),
        "seed": st.integers(0, 2 ** 32 - 1),
        "data_seed": st.integers(0, 2 ** 32 - 1),
    })


def tag_of(cell, cfg, dtype=np.float64):
    return (f"{cell} {np.dtype(dtype).name} onehot={cfg['onehot']} V={cfg['V']} E={cfg['E']} "
            f"H={cfg['H']} L={cfg['L']} T={cfg['T']} B={cfg['B']} init={cfg['init']} "
            f"scale={cfg['param_scale']} seed={cfg['seed']} data_seed={cfg['data_seed']}")


def expected_shapes(cell, cfg):
    mode = CELL_MODE[cell]
    V, H, L = cfg["V"], cfg["H"], cfg["L"]
    I = V if cfg["onehot"] else cfg["E"]
    shapes = {}
    if not cfg["onehot"]:
        shapes["embedding.weight"] = (V, cfg["E"])
    for k, s in oracle.param_shapes(mode, I, H, L, False).items():
        shapes["rnn." + k] = s
    shapes["linear.weight"] = (V, H)
    shapes["linear.bias"] = (V,)
    return shapes


def make_model(cell, cfg, dtype=np.float64):
    """-> (model, float64 copy of its parameters)."""
    m = rnnrs.LanguageModel(cfg["V"], None if cfg["onehot"] else cfg["E"], cfg["H"], cfg["L"],
                            cell=cell, dropout=0.0, seed=cfg["seed"], dtype=dtype)
    sd = m.state_dict()
    shapes = expected_shapes(cell, cfg)
    assert set(sd) == set(shapes), f"state_dict keys {sorted(sd)} != {sorted(shapes)}"
    for k, v in sd.items():
        assert v.shape == shapes[k], f"{k}: shape {v.shape} != {shapes[k]}"
        assert v.dtype == np.dtype(dtype), f"{k}: dtype {v.dtype}"
    if cfg["param_scale"] is not None:
        rng = np.random.default_rng([cfg["seed"] % 2 ** 32, 17])
        s = cfg["param_scale"]
        new = {k: rng.uniform(-s, s, size=shape).astype(dtype) for k, shape in shapes.items()}
        m.load_state_dict(new)
    return m, params64(m)


def params64(m):
    return {k: np.asarray(v, dtype=np.float64) for k, v in m.state_dict().items()}


def draw_batch(rng, cfg, dtype=np.float64):
    """(inputs, targets) int64 (T, B)."""
    V, T, B = cfg["V"], cfg["T"], cfg["B"]
    return (rng.integers(0, V, size=(T, B), dtype=np.int64),
            rng.integers(0, V, size=(T, B), dtype=np.int64))


def draw_state(rng, cell, cfg, dtype=np.float64):
    """(h0, c0) float64 values representable in `dtype`, or (None, None)."""
    if not cfg["init"]:
        return None, None
    shape = (cfg["L"], cfg["B"], cfg["H"])
    h0 = rng.uniform(-1.0, 1.0, size=shape).astype(dtype).astype(np.float64)
    c0 = rng.uniform(-1.0, 1.0, size=shape).astype(dtype).astype(np.float64) if cell == "lstm" else None
    return h0, c0


def model_state(h0, c0, dtype=np.float64):
    if h0 is None:
        return None
    return (h0.astype(dtype), None if c0 is None else c0.astype(dtype))


# ---------------------------------------------------------------------------
# The oracle language model
# ---------------------------------------------------------------------------
def rnn_part(P):
    return {k[len("rnn."):]: v for k, v in P.items() if k.startswith("rnn.")}


def oracle_inputs(P, cfg, ids):
    """RNN input x (T, B, I): embedding rows, or one-hot vectors of the ids."""
    if cfg["onehot"]:
        return np.eye(cfg["V"])[ids]
    return oracle.embedding_forward(P["embedding.weight"], ids)


def oracle_logits(cell, cfg, P, ids, h0, c0):
    """-> (logits (T, B, V), h_n, c_n)."""
    x = oracle_inputs(P, cfg, ids)
    y, h_n, c_n = oracle.rnn_forward(CELL_MODE[cell], rnn_part(P), x, h0, c0, cfg["L"], False)
    return oracle.linear_forward(P["linear.weight"], P["linear.bias"], y), h_n, c_n


def oracle_loss_and_grad(cell, cfg, P, inputs, targets, h0, c0):
    """-> (loss, grads by state_dict name, h_n, c_n)."""
    mode, L, V = CELL_MODE[cell], cfg["L"], cfg["V"]
    T, B = inputs.shape
    x = oracle_inputs(P, cfg, inputs)
    rp = rnn_part(P)
    y, h_n, c_n = oracle.rnn_forward(mode, rp, x, h0, c0, L, False)
    logits = oracle.linear_forward(P["linear.weight"], P["linear.bias"], y)
    loss, dlogits = oracle.cross_entropy(logits.reshape(T * B, V), targets.reshape(T * B))
    dy, dW, db = oracle.linear_backward(P["linear.weight"], y, dlogits.reshape(T, B, V))
    dx, _, _, rgrads = oracle.rnn_backward(mode, rp, x, h0, c0, L, False, dy)
    grads = {"rnn." + k: g for k, g in rgrads.items()}
    grads["linear.weight"], grads["linear.bias"] = dW, db
    if not cfg["onehot"]:
        grads["embedding.weight"] = oracle.embedding_backward(P["embedding.weight"].shape, inputs, dx)
    return loss, grads, h_n, c_n


def relu_ok(cell, cfg, P, ids, h0, dtype=np.float64):
    """False when some relu pre-activation is too close to the kink for `dtype`."""
    if CELL_MODE[cell] != "rnn_relu":
        return True
    x = oracle_inputs(P, cfg, ids)
    return oracle.relu_margin(rnn_part(P), x, h0, cfg["L"], False) > RELU_MARGIN[np.dtype(dtype)]


def draw_relu_safe(rng, cell, cfg, P, dtype=np.float64):
    """Draw (inputs, targets, h0, c0), redrawing a few times for relu; assume() otherwise."""
    for _ in range(20):
        inputs, targets = draw_batch(rng, cfg)
        h0, c0 = draw_state(rng, cell, cfg, dtype)
        if relu_ok(cell, cfg, P, inputs, h0, dtype):
            return inputs, targets, h0, c0
    reject("relu pre-activation too close to 0")


def check_state(state, h_exp, c_exp, cell, dtype, what):
    assert isinstance(state, tuple) and len(state) == 2, f"{what}: state {type(state)}"
    h, c = state
    assert h.dtype == np.dtype(dtype), f"{what}: h dtype {h.dtype}"
    oracle.assert_close(h, h_exp, dtype, f"{what} h")
    if cell == "lstm":
        assert c is not None, f"{what}: c is None for lstm"
        assert c.dtype == np.dtype(dtype), f"{what}: c dtype {c.dtype}"
        oracle.assert_close(c, c_exp, dtype, f"{what} c")
    else:
        assert c is None, f"{what}: c should be None for {cell}"


# ---------------------------------------------------------------------------
# (1) logits and final state
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
@given(cfg=configs())
def test_logits_match_oracle(cell, cfg):
    tag = tag_of(cell, cfg)
    note(tag)
    m, P = make_model(cell, cfg)
    rng = np.random.default_rng(cfg["data_seed"])
    ids, _, h0, c0 = draw_relu_safe(rng, cell, cfg, P)
    ids_copy = ids.copy()

    logits, state = m.logits(ids, model_state(h0, c0))
    np.testing.assert_array_equal(ids, ids_copy)
    e_logits, e_h, e_c = oracle_logits(cell, cfg, P, ids, h0, c0)
    assert logits.dtype == np.float64
    assert logits.shape == (cfg["T"], cfg["B"], cfg["V"])
    oracle.assert_close(logits, e_logits, np.float64, f"logits [{tag}]")
    check_state(state, e_h, e_c, cell, np.float64, f"final state [{tag}]")


# ---------------------------------------------------------------------------
# (2) loss_and_grad: loss and every gradient; gradients accumulate
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
@given(cfg=configs())
def test_loss_and_grad_match_oracle(cell, cfg):
    tag = tag_of(cell, cfg)
    note(tag)
    m, P = make_model(cell, cfg)
    rng = np.random.default_rng(cfg["data_seed"])
    inputs, targets, h0, c0 = draw_relu_safe(rng, cell, cfg, P)

    e_loss, e_grads, e_h, e_c = oracle_loss_and_grad(cell, cfg, P, inputs, targets, h0, c0)
    assert set(e_grads) == set(P)

    m.zero_grad()
    loss, state = m.loss_and_grad(inputs, targets, model_state(h0, c0))
    oracle.assert_close(np.float64(loss), e_loss, np.float64, f"loss [{tag}]")
    check_state(state, e_h, e_c, cell, np.float64, f"final state [{tag}]")
    g = m.grads()
    assert set(g) == set(P), f"grads() keys {sorted(g)} != state_dict keys {sorted(P)}"
    for k in P:
        assert g[k].dtype == np.float64, f"grads()[{k}] dtype {g[k].dtype}"
        oracle.assert_close(g[k], e_grads[k], np.float64, f"grad {k} [{tag}]")

    # parameters untouched by loss_and_grad
    for k, v in params64(m).items():
        np.testing.assert_array_equal(v, P[k], err_msg=f"{k} changed by loss_and_grad [{tag}]")

    # a second call adds the same gradients again; zero_grad clears them
    m.loss_and_grad(inputs, targets, model_state(h0, c0))
    g2 = m.grads()
    for k in P:
        oracle.assert_close(g2[k], 2.0 * e_grads[k], np.float64, f"accumulated grad {k} [{tag}]")
    m.zero_grad()
    for k, v in m.grads().items():
        assert not np.any(v), f"grad {k} not zero after zero_grad [{tag}]"


# ---------------------------------------------------------------------------
# (3) train_step with every optimizer, with and without clipping, 3 steps
# ---------------------------------------------------------------------------
def optimizers():
    sgd = st.fixed_dictionaries({
        "name": st.just("sgd"), "lr": st.sampled_from([0.01, 0.1, 0.5]),
        "momentum": st.sampled_from([0.0, 0.9]),
        "weight_decay": st.sampled_from([0.0, 0.01]),
        "nesterov": st.booleans(),
    }).map(lambda o: dict(o, nesterov=o["nesterov"] and o["momentum"] > 0.0))
    adam = st.fixed_dictionaries({
        "name": st.sampled_from(["adam", "adamw"]), "lr": st.sampled_from([0.001, 0.01, 0.1]),
        "weight_decay": st.sampled_from([0.0, 0.01, 0.1]),
        "betas": st.sampled_from([(0.9, 0.999), (0.8, 0.99)]),
        "eps": st.sampled_from([1e-8, 1e-6]),
    })
    return st.one_of(sgd, adam)


def oracle_opt_step(opt, P, grads, state, step):
    if opt["name"] == "sgd":
        return oracle.sgd_step(P, grads, state, opt["lr"], momentum=opt["momentum"],
                               weight_decay=opt["weight_decay"], nesterov=opt["nesterov"])
    return oracle.adam_step(P, grads, state, step, opt["lr"], betas=opt["betas"], eps=opt["eps"],
                            weight_decay=opt["weight_decay"], decoupled=opt["name"] == "adamw")


# Adam divides by sqrt(v) + eps, so where a gradient entry is tiny (|g| << eps is
# possible: e.g. 1e-12 from a nearly dead relu path) an absolute rounding
# difference d in g -- harmless for the gradient itself -- moves the parameter by
# about lr * d / (sqrt(v) + eps), up to lr * d / eps.  Such steps are
# ill-conditioned, not wrong, so (like the relu margin) they are redrawn: d is
# estimated as ADAM_GRAD_ROUNDING * max|g| and the resulting parameter error must
# stay below ADAM_MAX_UPDATE_ERROR (1% of the float64 atol).
ADAM_GRAD_ROUNDING = 1e-15
ADAM_MAX_UPDATE_ERROR = 1e-2 * oracle.ATOL_F64


def adam_update_sensitivity(opt, grads, new_state, step):
    """Estimated worst parameter error of this Adam step caused by gradient rounding."""
    if opt["name"] == "sgd":
        return 0.0
    G = max(float(np.abs(g).max()) for g in grads.values())
    bc2 = 1.0 - opt["betas"][1] ** step
    worst = 0.0
    for name, s in new_state.items():
        v = s["exp_avg_sq"]
        seen = v > 0.0          # entries whose gradient has always been exactly 0 stay put
        if np.any(seen):
            denom = np.sqrt(v[seen]) / np.sqrt(bc2) + opt["eps"]
            worst = max(worst, float((opt["lr"] * ADAM_GRAD_ROUNDING * G / denom).max()))
    return worst


def set_optimizer(m, opt):
    kw = {k: v for k, v in opt.items() if k not in ("name", "lr")}
    m.set_optimizer(opt["name"], opt["lr"], **kw)


def run_train_steps(cell, cfg, opt, clip, n_steps, dtype, adam_guard=True):
    """n_steps train_step calls (new batch each step, state carried) vs the oracle."""
    tag = tag_of(cell, cfg, dtype) + f" opt={opt} clip={clip}"
    note(tag)
    m, P = make_model(cell, cfg, dtype)
    set_optimizer(m, opt)
    rng = np.random.default_rng(cfg["data_seed"])
    h0, c0 = draw_state(rng, cell, cfg, dtype)
    state = model_state(h0, c0, dtype)
    opt_state = None
    for step in range(1, n_steps + 1):
        stag = f"step {step} [{tag}]"
        for _ in range(20):
            inputs, targets = draw_batch(rng, cfg)
            if relu_ok(cell, cfg, P, inputs, h0, dtype):
                break
        else:
            reject("relu pre-activation too close to 0")
        e_loss, e_grads, e_h, e_c = oracle_loss_and_grad(cell, cfg, P, inputs, targets, h0, c0)
        e_norm, e_clipped = (oracle.clip_grad_norm(e_grads, clip) if clip is not None
                             else (oracle.clip_grad_norm(e_grads, np.inf)[0], e_grads))
        if clip is not None:
            # don't sit on the clip / no-clip boundary
            if abs(clip / (e_norm + 1e-6) - 1.0) <= 1e-6:
                reject("gradient norm on the clipping boundary")
        P_new, opt_state = oracle_opt_step(opt, P, e_clipped, opt_state, step)
        if adam_guard and adam_update_sensitivity(opt, e_clipped, opt_state, step) > ADAM_MAX_UPDATE_ERROR:
            reject("Adam step ill-conditioned (tiny gradient entries)")

        loss, norm, state = m.train_step(inputs, targets, state, clip=clip)
        oracle.assert_close(np.float64(loss), e_loss, dtype, f"loss {stag}")
        oracle.assert_close(np.float64(norm), e_norm, dtype, f"grad_norm {stag}")
        check_state(state, e_h, e_c, cell, dtype, f"state {stag}")
        got = m.state_dict()
        assert set(got) == set(P_new)
        for k in P_new:
            assert got[k].dtype == np.dtype(dtype)
            oracle.assert_close(got[k], P_new[k], dtype, f"param {k} after {stag}")
        P, h0, c0 = P_new, e_h, e_c


@pytest.mark.parametrize("cell", CELLS)
@given(cfg=configs(), opt=optimizers(), clip=st.sampled_from([None, 0.05, 1.0, 100.0]))
def test_train_step_matches_oracle_optimizers(cell, cfg, opt, clip):
    run_train_steps(cell, cfg, opt, clip, n_steps=3, dtype=np.float64)


# ---------------------------------------------------------------------------
# (4) evaluate: oracle loss and final state, no side effects
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
@given(cfg=configs())
def test_evaluate_matches_oracle_and_changes_nothing(cell, cfg):
    tag = tag_of(cell, cfg)
    note(tag)
    m, P = make_model(cell, cfg)
    rng = np.random.default_rng(cfg["data_seed"])
    inputs, targets, h0, c0 = draw_relu_safe(rng, cell, cfg, P)
    e_loss, _, e_h, e_c = oracle_loss_and_grad(cell, cfg, P, inputs, targets, h0, c0)

    # accumulate some gradients first: evaluate must leave them alone too
    m.loss_and_grad(inputs, targets, model_state(h0, c0))
    grads_before = m.grads()
    m.set_optimizer("adam", 0.1)

    loss, state = m.evaluate(inputs, targets, model_state(h0, c0))
    oracle.assert_close(np.float64(loss), e_loss, np.float64, f"evaluate loss [{tag}]")
    check_state(state, e_h, e_c, cell, np.float64, f"evaluate state [{tag}]")
    for k, v in params64(m).items():
        np.testing.assert_array_equal(v, P[k], err_msg=f"{k} changed by evaluate [{tag}]")
    for k, v in m.grads().items():
        np.testing.assert_array_equal(v, grads_before[k], err_msg=f"grad {k} changed by evaluate [{tag}]")
    # and again, same answer (no hidden state kept between calls)
    loss2, _ = m.evaluate(inputs, targets, model_state(h0, c0))
    assert loss2 == loss


# ---------------------------------------------------------------------------
# (5) float32 model at float32 tolerance
# ---------------------------------------------------------------------------
F32_CFG = dict(onehot=False, V=7, E=5, H=6, L=2, T=6, B=3, init=True, param_scale=None,
               seed=20240607, data_seed=11)
F32_OPTS = [
    dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
    dict(name="adamw", lr=0.01, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8),
]


@pytest.mark.parametrize("onehot", [False, True], ids=["embed", "onehot"])
@pytest.mark.parametrize("cell", CELLS)
def test_float32_model_matches_oracle(cell, onehot):
    dtype = np.float32
    cfg = dict(F32_CFG, onehot=onehot)
    tag = tag_of(cell, cfg, dtype)
    m, P = make_model(cell, cfg, dtype)
    rng = np.random.default_rng(cfg["data_seed"])
    inputs, targets, h0, c0 = draw_relu_safe(rng, cell, cfg, P, dtype)
    st32 = model_state(h0, c0, dtype)

    logits, state = m.logits(inputs, st32)
    e_logits, e_h, e_c = oracle_logits(cell, cfg, P, inputs, h0, c0)
    assert logits.dtype == np.float32
    oracle.assert_close(logits, e_logits, dtype, f"logits [{tag}]")
    check_state(state, e_h, e_c, cell, dtype, f"logits state [{tag}]")

    e_loss, e_grads, e_h, e_c = oracle_loss_and_grad(cell, cfg, P, inputs, targets, h0, c0)
    loss, _ = m.evaluate(inputs, targets, st32)
    oracle.assert_close(np.float64(loss), e_loss, dtype, f"evaluate loss [{tag}]")

    m.zero_grad()
    loss, state = m.loss_and_grad(inputs, targets, st32)
    oracle.assert_close(np.float64(loss), e_loss, dtype, f"loss [{tag}]")
    check_state(state, e_h, e_c, cell, dtype, f"loss_and_grad state [{tag}]")
    g = m.grads()
    for k in P:
        assert g[k].dtype == np.float32, f"grads()[{k}] dtype {g[k].dtype}"
        oracle.assert_close(g[k], e_grads[k], dtype, f"grad {k} [{tag}]")

    # (deterministic config, checked to be well inside the float32 tolerance; the
    # float64-based Adam conditioning guard does not apply)
    for opt in F32_OPTS:
        run_train_steps(cell, cfg, opt, clip=0.5, n_steps=3, dtype=dtype, adam_guard=False)

"""Weights moving between rnnrs and PyTorch (skipped without torch) and from Keras weight arrays.

PyTorch: for every cell, single/multi-layer, uni/bidirectional, float32/float64 and both layouts, a
layer converted in either direction gives the same outputs, final states, input/state gradients and
parameter gradients as the PyTorch module.

Keras: a small, independent NumPy implementation of the Keras equations (kernels ``(I, G*H)``,
gate orders LSTM ``i, f, c, o`` and GRU ``z, r, h`` with ``reset_after=True``, ``Bidirectional``
with ``merge_mode="concat"``) runs on hand-built Keras-layout arrays; ``from_keras`` must reproduce it.
"""

from __future__ import annotations

import numpy as np
import pytest

import oracle
import rnnrs
from rnnrs import interop

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
DTYPES = (np.float64, np.float32)
# (num_layers, bidirectional, batch_first)
SHAPES = [(1, False, False), (2, False, True), (1, True, True), (3, True, False)]
I, H, T, B = 3, 4, 5, 2


def layer_cls(cell):
    return {"lstm": rnnrs.LSTM, "gru": rnnrs.GRU}.get(cell, rnnrs.RNN)


def make_layer(cell, num_layers, bidirectional, batch_first, dtype, seed=3):
    kw = dict(bidirectional=bidirectional, batch_first=batch_first, dtype=dtype, seed=seed)
    if cell.startswith("rnn"):
        kw["nonlinearity"] = cell[4:]
    return layer_cls(cell)(I, H, num_layers, **kw)


# ================================================================================= PyTorch
@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return torch


def make_module(torch, cell, num_layers, bidirectional, batch_first, dtype):
    tdt = getattr(torch, np.dtype(dtype).name)
    kw = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, dtype=tdt)
    if cell == "lstm":
        return torch.nn.LSTM(I, H, **kw)
    if cell == "gru":
        return torch.nn.GRU(I, H, **kw)
    return torch.nn.RNN(I, H, nonlinearity=cell[4:], **kw)


def compare_with_torch(torch, layer, module, dtype, what):
    """Same forward (y, h_n, c_n) and backward (dx, dh0, dc0, parameter grads) for random data."""
    rng = np.random.default_rng(7)
    lstm = isinstance(layer, rnnrs.LSTM)
    d = layer.num_directions
    xshape = (B, T, I) if layer.batch_first else (T, B, I)
    yshape = xshape[:2] + (d * H,)
    sshape = (layer.num_layers * d, B, H)
    x, h0, c0 = (rng.standard_normal(s).astype(dtype) for s in (xshape, sshape, sshape))
    dy, dh, dc = (rng.standard_normal(s).astype(dtype) for s in (yshape, sshape, sshape))

    # rnnrs
    layer.train()
    layer.zero_grad()
    if lstm:
        y, (h_n, c_n) = layer(x, (h0, c0))
        dx, (dh0, dc0) = layer.backward(dy, (dh, dc))
    else:
        y, h_n = layer(x, h0)
        dx, dh0 = layer.backward(dy, dh)
    grads = layer.grads()

    # torch
    module.train()
    module.zero_grad()
    tx, th0, tc0 = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    if lstm:
        ty, (th_n, tc_n) = module(tx, (th0, tc0))
        loss = (ty * torch.from_numpy(dy)).sum() + (th_n * torch.from_numpy(dh)).sum() \
            + (tc_n * torch.from_numpy(dc)).sum()
    else:
        ty, th_n = module(tx, th0)
        loss = (ty * torch.from_numpy(dy)).sum() + (th_n * torch.from_numpy(dh)).sum()
    loss.backward()

    def close(a, t, name):
        assert a.dtype == np.dtype(dtype), f"{what} {name}: dtype {a.dtype}"
        oracle.assert_close(a, t.detach().numpy(), dtype, f"{what} {name}")

    close(y, ty, "y")
    close(h_n, th_n, "h_n")
    close(dx, tx.grad, "dx")
    close(dh0, th0.grad, "dh0")
    if lstm:
        close(c_n, tc_n, "c_n")
        close(dc0, tc0.grad, "dc0")
    named = dict(module.named_parameters())
    assert list(grads) == list(named), what
    for k, g in grads.items():
        close(g, named[k].grad, f"grad {k}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("num_layers,bidirectional,batch_first", SHAPES)
@pytest.mark.parametrize("cell", CELLS)
def test_from_torch_matches(torch, cell, num_layers, bidirectional, batch_first, dtype):
    module = make_module(torch, cell, num_layers, bidirectional, batch_first, dtype)
    layer = layer_cls(cell).from_torch(module)
    assert type(layer) is layer_cls(cell)
    assert layer.dtype == np.dtype(dtype)
    assert (layer.num_layers, layer.bidirectional, layer.batch_first) == (num_layers, bidirectional, batch_first)
    compare_with_torch(torch, layer, module, dtype, f"from_torch {cell}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("num_layers,bidirectional,batch_first", SHAPES)
@pytest.mark.parametrize("cell", CELLS)
def test_to_torch_matches(torch, cell, num_layers, bidirectional, batch_first, dtype):
    layer = make_layer(cell, num_layers, bidirectional, batch_first, dtype)
    module = layer.to_torch()
    expected = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(cell, torch.nn.RNN)
    assert type(module) is expected
    assert next(module.parameters()).dtype == getattr(torch, np.dtype(dtype).name)
    assert (module.num_layers, module.bidirectional, module.batch_first) == (num_layers, bidirectional, batch_first)
    compare_with_torch(torch, layer, module, dtype, f"to_torch {cell}")


@pytest.mark.parametrize("cell", CELLS)
def test_state_dicts_interchange_without_conversion(torch, cell):
    """Keys, shapes and order are torch's: state dicts move both ways with no renaming."""
    module = make_module(torch, cell, 2, True, False, np.float64)
    layer = make_layer(cell, 2, True, False, np.float64)
    tsd = module.state_dict()
    assert list(layer.state_dict()) == list(tsd)
    assert all(layer.state_dict()[k].shape == tuple(v.shape) for k, v in tsd.items())
    layer.load_state_dict(tsd)  # torch tensors straight in
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, tsd[k].numpy(), err_msg=k)
    other = make_layer(cell, 2, True, False, np.float64, seed=11)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in other.state_dict().items()})
    for k, v in module.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), other.state_dict()[k], err_msg=k)


def test_from_torch_reads_configuration(torch):
    m = torch.nn.RNN(3, 5, 2, nonlinearity="relu", batch_first=True, dropout=0.25, bidirectional=True)
    m.eval()
    layer = rnnrs.RNN.from_torch(m, seed=9)
    assert (layer.input_size, layer.hidden_size, layer.num_layers) == (3, 5, 2)
    assert (layer.nonlinearity, layer.batch_first, layer.dropout, layer.bidirectional) == ("relu", True, 0.25, True)
    assert layer.training is False and layer.seed == 9 and layer.dtype == np.float32
    back = layer.to_torch()
    assert (back.nonlinearity, back.batch_first, back.dropout, back.bidirectional) == ("relu", True, 0.25, True)
    assert back.training is False
    # generic entry point picks the class
    assert type(interop.from_torch(torch.nn.GRU(2, 3))) is rnnrs.GRU


def test_from_torch_dtype_conversion(torch):
    m = torch.nn.LSTM(3, 4, dtype=torch.float64)
    assert rnnrs.LSTM.from_torch(m).dtype == np.float64
    layer = rnnrs.LSTM.from_torch(m, dtype=np.float32)
    assert layer.dtype == np.float32
    np.testing.assert_allclose(layer.state_dict()["weight_hh_l0"], m.weight_hh_l0.detach().numpy(), rtol=1e-6)
    with pytest.raises(TypeError, match="float16"):
        rnnrs.LSTM.from_torch(torch.nn.LSTM(3, 4, dtype=torch.float16))
    assert rnnrs.LSTM.from_torch(torch.nn.LSTM(3, 4, dtype=torch.float16), dtype=np.float32).dtype == np.float32


def test_from_torch_refusals(torch):
    with pytest.raises(ValueError, match="proj_size"):
        rnnrs.LSTM.from_torch(torch.nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(ValueError, match="bias=False"):
        rnnrs.GRU.from_torch(torch.nn.GRU(3, 4, bias=False))
    with pytest.raises(TypeError, match=r"rnnrs\.GRU\.from_torch"):
        rnnrs.LSTM.from_torch(torch.nn.GRU(3, 4))
    with pytest.raises(TypeError, match="LSTM"):
        rnnrs.RNN.from_torch(torch.nn.LSTM(3, 4))  # GRU subclasses RNN in rnnrs, but kinds must match
    with pytest.raises(TypeError, match="Linear"):
        rnnrs.LSTM.from_torch(torch.nn.Linear(3, 4))


def test_to_torch_copies_weights(torch):
    layer = rnnrs.GRU(2, 3, dtype=np.float64)
    module = layer.to_torch()
    with torch.no_grad():
        module.weight_hh_l0.zero_()
    assert np.abs(layer.state_dict()["weight_hh_l0"]).sum() > 0


# =================================================================================== Keras
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def keras_cell_step(cell, x, h, c, kernel, rec, bias):
    """One Keras time step, float64, written from the Keras docs' equations in Keras' layout."""
    n = rec.shape[0]
    if cell == "lstm":  # columns i, f, c, o; one bias
        a = x @ kernel + h @ rec + bias
        i, f, cc, o = (a[:, k * n:(k + 1) * n] for k in range(4))
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(cc)
        return sigmoid(o) * np.tanh(c), c
    if cell == "gru":  # columns z, r, h; bias (2, 3n) = input bias, recurrent bias (reset_after=True)
        xa = x @ kernel + bias[0]
        ha = h @ rec + bias[1]
        z = sigmoid(xa[:, :n] + ha[:, :n])
        r = sigmoid(xa[:, n:2 * n] + ha[:, n:2 * n])
        hh = np.tanh(xa[:, 2 * n:] + r * ha[:, 2 * n:])
        return z * h + (1.0 - z) * hh, None
    act = np.tanh if cell == "rnn_tanh" else (lambda v: np.maximum(v, 0.0))
    return act(x @ kernel + h @ rec + bias), None


def keras_layer(cell, xs, weights, go_backwards=False):
    """A Keras RNN layer with return_sequences=True, return_state=True over batch-major ``xs``."""
    kernel, rec, bias = weights
    b, t = xs.shape[:2]
    h = np.zeros((b, rec.shape[0]))
    c = np.zeros_like(h)
    out = np.zeros((b, t, rec.shape[0]))
    steps = range(t - 1, -1, -1) if go_backwards else range(t)
    for s in steps:
        h, c = keras_cell_step(cell, xs[:, s], h, c, kernel, rec, bias)
        out[:, s] = h  # Bidirectional re-aligns the backward layer's outputs to the input's time order
    return out, h, c


def keras_stack(cell, xs, layers, bidirectional):
    """Stacked (optionally Bidirectional, merge_mode="concat") Keras layers: y, [h per layer/dir], [c ...]."""
    hs, cs = [], []
    for w in layers:
        if bidirectional:
            yf, hf, cf = keras_layer(cell, xs, w[:3])
            yb, hb, cb = keras_layer(cell, xs, w[3:], go_backwards=True)
            xs = np.concatenate([yf, yb], axis=-1)
            hs += [hf, hb]
            cs += [cf, cb]
        else:
            xs, h, c = keras_layer(cell, xs, w)
            hs.append(h)
            cs.append(c)
    return xs, np.stack(hs), np.stack(cs)


def keras_weights(rng, cell, num_layers, bidirectional, scale=0.5):
    g = GATES[cell]
    layers = []
    for k in range(num_layers):
        fan_in = I if k == 0 else (2 if bidirectional else 1) * H
        arrays = []
        for _ in range(2 if bidirectional else 1):
            bias = rng.uniform(-scale, scale, (2, g * H) if cell == "gru" else (g * H,))
            arrays += [rng.uniform(-scale, scale, (fan_in, g * H)), rng.uniform(-scale, scale, (H, g * H)), bias]
        layers.append(arrays)
    return layers


def keras_kwargs(cell, bidirectional, dtype):
    kw = dict(bidirectional=bidirectional, dtype=dtype)
    if cell.startswith("rnn"):
        kw["activation"] = cell[4:]
    return kw


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, False), (1, True), (2, True)])
@pytest.mark.parametrize("cell", CELLS)
def test_from_keras_matches_keras_equations(cell, num_layers, bidirectional, dtype):
    rng = np.random.default_rng(1)
    weights = keras_weights(rng, cell, num_layers, bidirectional)
    xs = rng.standard_normal((B, T, I))
    y_ref, h_ref, c_ref = keras_stack(cell, xs, weights, bidirectional)

    layer = layer_cls(cell).from_keras(weights, **keras_kwargs(cell, bidirectional, dtype))
    assert type(layer) is layer_cls(cell) and layer.batch_first and layer.dtype == np.dtype(dtype)
    assert (layer.num_layers, layer.bidirectional) == (num_layers, bidirectional)
    out = layer.eval()(xs.astype(dtype))
    y, h_n = out[0], (out[1][0] if cell == "lstm" else out[1])
    what = f"from_keras {cell} L={num_layers} bi={bidirectional}"
    oracle.assert_close(y, y_ref, dtype, f"{what} y")
    oracle.assert_close(h_n, h_ref, dtype, f"{what} h_n")
    if cell == "lstm":
        oracle.assert_close(out[1][1], c_ref, dtype, f"{what} c_n")


@pytest.mark.parametrize("cell", CELLS)
def test_to_keras_round_trip(cell):
    rng = np.random.default_rng(2)
    weights = keras_weights(rng, cell, 2, True)
    # Keras has one LSTM/SimpleRNN bias: from_keras puts it in bias_ih (bias_hh = 0), so it round-trips
    layer = interop.from_keras(cell.split("_")[0], weights, **keras_kwargs(cell, True, np.float64))
    back = interop.to_keras(layer)
    assert len(back) == 2
    for k in range(2):
        assert len(back[k]) == 6
        for a, b in zip(back[k], weights[k]):
            np.testing.assert_array_equal(a, b)
    # a torch-style layer (two biases) goes out as one Keras bias with the same outputs
    native = make_layer(cell, 2, True, True, np.float64)
    again = interop.from_keras(cell.split("_")[0], interop.to_keras(native), **keras_kwargs(cell, True, np.float64))
    x = rng.standard_normal((B, T, I))
    np.testing.assert_allclose(again.eval()(x)[0], native.eval()(x)[0], rtol=1e-12, atol=1e-12)


def test_from_keras_single_layer_list_and_no_bias():
    rng = np.random.default_rng(4)
    kernel, rec = rng.standard_normal((I, 4 * H)), rng.standard_normal((H, 4 * H))
    layer = rnnrs.LSTM.from_keras([kernel, rec], dtype=np.float64)  # use_bias=False, one layer
    assert all(not v.any() for k, v in layer.state_dict().items() if k.startswith("bias"))
    xs = rng.standard_normal((B, T, I))
    y_ref, _, _ = keras_stack("lstm", xs, [[kernel, rec, np.zeros(4 * H)]], False)
    oracle.assert_close(layer.eval()(xs)[0], y_ref, np.float64, "lstm no bias")
    time_major = rnnrs.LSTM.from_keras([kernel, rec], dtype=np.float64, batch_first=False)
    oracle.assert_close(time_major.eval()(xs.swapaxes(0, 1))[0].swapaxes(0, 1), y_ref, np.float64, "time major")


def test_from_keras_refusals():
    rng = np.random.default_rng(5)
    gru = keras_weights(rng, "gru", 1, False)
    with pytest.raises(ValueError, match="reset_after=False"):
        rnnrs.GRU.from_keras(gru, reset_after=False)
    old_bias = [[gru[0][0], gru[0][1], rng.standard_normal(3 * H)]]  # reset_after=False's (3H,) bias
    with pytest.raises(ValueError, match="reset_after=False"):
        rnnrs.GRU.from_keras(old_bias)
    with pytest.raises(ValueError, match="recurrent_activation"):
        rnnrs.GRU.from_keras(gru, recurrent_activation="hard_sigmoid")
    with pytest.raises(ValueError, match="activation"):
        rnnrs.LSTM.from_keras(keras_weights(rng, "lstm", 1, False), activation="relu")
    with pytest.raises(ValueError, match=r"recurrent_kernel: expected shape \(H, 3\*H\)"):
        rnnrs.GRU.from_keras(keras_weights(rng, "lstm", 1, False))  # LSTM arrays given to a GRU
    with pytest.raises(ValueError, match="bidirectional=True"):
        rnnrs.LSTM.from_keras(keras_weights(rng, "lstm", 1, True))
    with pytest.raises(ValueError, match=r"weights\[1\] kernel: expected shape \(4, 16\)"):
        bad = keras_weights(rng, "lstm", 2, False)
        bad[1][0] = bad[1][0][:3]
        rnnrs.LSTM.from_keras(bad)
    with pytest.raises(ValueError, match="hidden size"):
        rnnrs.RNN.from_keras([keras_weights(rng, "rnn_tanh", 1, False)[0],
                              [rng.standard_normal((H, 2 * H)), rng.standard_normal((2 * H, 2 * H))]])
    with pytest.raises(TypeError, match="cell"):
        interop.from_keras("transformer", gru)
    with pytest.raises(TypeError, match=r"rnnrs\.GRU\.from_keras"):
        interop.from_keras("gru", gru, expected=rnnrs.LSTM)
    with pytest.raises(TypeError, match="list"):
        rnnrs.LSTM.from_keras(np.zeros((3, 4)))


def test_interop_needs_no_torch_import():
    """Importing rnnrs.interop and converting Keras weights never imports torch."""
    import subprocess
    import sys
    code = ("import sys, numpy as np, rnnrs.interop as i; "
            "i.from_keras('rnn', [np.ones((2, 3)), np.ones((3, 3)), np.zeros(3)]); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)

"""How far back does the gradient reach? The RNN tutorial's central lesson, measured.

For each cell (tanh-RNN, ReLU-RNN, GRU, LSTM) the loss is a function of the **last** step's output
only; the plot shows the norm of its gradient with respect to every earlier input, ``||dL/dx_t||``,
taken from ``backward``'s ``dx``, over 100 time steps (log scale). Three panels:

1. PyTorch's default initialisation ``U(-1/sqrt(H), 1/sqrt(H))``;
2. the initialisers the tutorial recommends: Xavier input weights and orthogonal recurrent weights
   (and Keras' LSTM forget-gate bias of 1);
3. a ReLU-RNN with large recurrent weights (orthogonal x 2), with and without clipping the
   gradient's global norm to 1.

Run: ``python examples/gradient_flow.py [--out docs/gradient_flow.png] [--steps 100]``
(needs ``rnnrs[plot]``); it also prints each curve's first and last values.
"""

from __future__ import annotations

import argparse

import numpy as np

import rnnrs

CELLS = [("tanh-RNN", rnnrs.RNN, {"nonlinearity": "tanh"}), ("ReLU-RNN", rnnrs.RNN, {"nonlinearity": "relu"}),
         ("GRU", rnnrs.GRU, {}), ("LSTM", rnnrs.LSTM, {})]
INPUT, HIDDEN, BATCH = 32, 64, 16


def input_gradient_norms(layer, x: np.ndarray, clip: float = None) -> np.ndarray:
    """``||dL/dx_t||`` (mean over the batch) for ``L = sum(y_T * w)``, a random projection of the
    last output; with ``clip``, after scaling the whole gradient to global norm <= clip."""
    y, _ = layer.forward(x)
    dy = np.zeros_like(y)
    dy[-1] = np.random.default_rng(1).standard_normal(dy[-1].shape)
    dx, _ = layer.backward(dy)
    if clip is not None:
        total = float(np.sqrt((dx ** 2).sum() + sum((g ** 2).sum() for g in layer.grads().values())))
        dx = dx * min(1.0, clip / (total + 1e-6))
    return np.sqrt((dx ** 2).sum(axis=2)).mean(axis=1)


def curves(steps: int) -> dict:
    x = np.random.default_rng(0).standard_normal((steps, BATCH, INPUT))
    out = {}
    for panel, kw in (("PyTorch default", {}),
                      ("Xavier + orthogonal", {"init": "xavier_uniform", "recurrent_init": "orthogonal"})):
        for name, Layer, extra in CELLS:
            layer = Layer(INPUT, HIDDEN, dtype=np.float64, seed=0, **extra, **kw)
            out[(panel, name)] = input_gradient_norms(layer, x)
    lstm = rnnrs.LSTM(INPUT, HIDDEN, dtype=np.float64, seed=0, init="xavier_uniform", recurrent_init="orthogonal",
                      forget_bias=1.0)
    out[("Xavier + orthogonal", "LSTM, forget bias 1")] = input_gradient_norms(lstm, x)
    relu = rnnrs.RNN(INPUT, HIDDEN, nonlinearity="relu", dtype=np.float64, seed=0, recurrent_init="orthogonal")
    sd = relu.state_dict()
    sd["weight_hh_l0"] = sd["weight_hh_l0"] * 2.0
    relu.load_state_dict(sd)
    out[("large recurrent weights", "ReLU-RNN")] = input_gradient_norms(relu, x)
    relu.zero_grad()
    out[("large recurrent weights", "ReLU-RNN, clipped to 1")] = input_gradient_norms(relu, x, clip=1.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="gradient_flow.png", help="PNG to write (default gradient_flow.png)")
    ap.add_argument("--steps", type=int, default=100, help="time steps (default 100)")
    args = ap.parse_args()
    data = curves(args.steps)
    for (panel, name), g in data.items():
        print(f"{panel:24s} {name:24s} ||dL/dx_T|| {g[-1]:9.3e}   ||dL/dx_1|| {g[0]:9.3e}   ratio {g[0] / g[-1]:9.3e}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = list(dict.fromkeys(p for p, _ in data))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), sharey=True)
    for ax, panel in zip(axes, panels):
        for (p, name), g in data.items():
            if p == panel:
                ax.semilogy(np.arange(1, len(g) + 1), np.maximum(g, 1e-300), label=name)
        ax.set_title(panel)
        ax.set_xlabel("input time step t (the loss reads step %d)" % args.steps)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("||dL / dx_t||")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

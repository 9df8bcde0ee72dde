"""examples/gradient_flow.py: the curves it plots show what the tutorial says they show."""

import importlib.util
import pathlib

import numpy as np

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "gradient_flow.py"


def _load():
    spec = importlib.util.spec_from_file_location("gradient_flow", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_vanishing_exploding_and_what_helps():
    data = _load().curves(steps=40)
    ratio = {k: g[0] / g[-1] for k, g in data.items()}
    for cell in ["tanh-RNN", "ReLU-RNN", "GRU", "LSTM"]:
        assert ratio[("PyTorch default", cell)] < 1e-5, cell              # vanishing
    assert ratio[("Xavier + orthogonal", "tanh-RNN")] > ratio[("PyTorch default", "tanh-RNN")]
    assert ratio[("Xavier + orthogonal", "LSTM, forget bias 1")] > 100 * ratio[("Xavier + orthogonal", "LSTM")]
    assert ratio[("large recurrent weights", "ReLU-RNN")] > 1e3                # exploding
    clipped = data[("large recurrent weights", "ReLU-RNN, clipped to 1")]
    assert np.all(clipped <= 1.0 + 1e-9)                                       # clipping bounds it
    np.testing.assert_allclose(ratio[("large recurrent weights", "ReLU-RNN, clipped to 1")],
                               ratio[("large recurrent weights", "ReLU-RNN")], rtol=1e-9)  # same shape

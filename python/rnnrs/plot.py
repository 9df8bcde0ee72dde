"""Loss and perplexity curves of a training run as a PNG (needs the optional ``matplotlib``:
``pip install rnnrs[plot]``). Uses matplotlib's object API with the Agg canvas, so it never touches
the global pyplot state or the backend of a notebook."""

from __future__ import annotations

import math
import os
from typing import Any, Optional

import numpy as np

__all__ = ["plot_history"]


def _moving_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` finite values at each position (NaNs are left out)."""
    ok = np.isfinite(x)
    v = np.where(ok, x, 0.0)
    cs = np.concatenate([[0.0], np.cumsum(v)])
    cn = np.concatenate([[0], np.cumsum(ok)])
    i = np.arange(1, x.size + 1)
    lo = np.maximum(0, i - window)
    n = cn[i] - cn[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (cs[i] - cs[lo]) / np.maximum(n, 1), np.nan)


def plot_history(history: Any, path: str, title: Optional[str] = None) -> Optional[str]:
    """Write the training loss (per step and smoothed) and the training/validation perplexity
    to ``path`` as a PNG; returns the path, or None when matplotlib is not installed, there is
    nothing to plot or the file cannot be written. The file is written to a temporary name and
    renamed (atomic).

    ``history`` needs ``loss`` (per-step training losses, a sequence or 1-D array of floats; NaN
    entries are skipped in the smoothed curve) and ``val`` (a list of dicts with ``"step"`` and
    ``"val_ppl"``; entries whose ``val_ppl`` is None or not finite are left out), as
    :class:`rnnrs.trainer.History` has."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    loss = np.asarray(history.loss, dtype=np.float64)
    if loss.size == 0:
        return None
    steps = np.arange(1, loss.size + 1)
    window = max(1, min(100, loss.size // 20 or 1))
    smooth = _moving_mean(loss, window)

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(steps, loss, color="tab:blue", alpha=0.25, linewidth=0.8, label="train loss (per step)")
    ax1.plot(steps, smooth, color="tab:blue", linewidth=1.5, label=f"train loss (mean of {window})")
    ax1.set_xlabel("step")
    ax1.set_ylabel("cross-entropy (nats per token)")
    ax1.legend(loc="upper right")
    ax1.grid(True, alpha=0.3)

    with np.errstate(over="ignore"):
        ax2.plot(steps, np.exp(smooth), color="tab:blue", linewidth=1.5, label="train perplexity")
    val = [v for v in history.val if v.get("val_ppl") is not None and math.isfinite(v["val_ppl"])]
    if val:
        ax2.plot([v["step"] for v in val], [v["val_ppl"] for v in val], "o-", color="tab:orange",
                 linewidth=1.5, markersize=4, label="validation perplexity")
    ax2.set_yscale("log")
    from matplotlib.ticker import FuncFormatter
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax2.yaxis.set_major_formatter(plain)
    ax2.yaxis.set_minor_formatter(plain)
    ax2.set_xlabel("step")
    ax2.set_ylabel("perplexity")
    ax2.legend(loc="upper right")
    ax2.grid(True, which="both", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()

    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), "." + os.path.basename(path) + ".tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return None
    return path

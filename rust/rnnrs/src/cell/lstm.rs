//! LSTM, gates in PyTorch order `i, f, g, o`:
//! `i = σ(a_i)`, `f = σ(a_f)`, `g = tanh(a_g)`, `o = σ(a_o)`, `c' = f·c + i·g`, `h' = o·tanh(c')`,
//! where `a = W_ih x + b_ih + W_hh h + b_hh`.

use super::{Bwd, Fwd};
use crate::element::Element;

pub(crate) fn forward<F: Element>(s: Fwd<'_, F>, hidden: usize) {
    let h4 = 4 * hidden;
    for (g, (&x, &r)) in s.gates.iter_mut().zip(s.xw.iter().zip(s.hw)) {
        *g = x + r;
    }
    let rows = s.gates.chunks_exact_mut(h4).zip(s.c.chunks_exact_mut(hidden)).zip(s.h.chunks_exact_mut(hidden));
    for (((gates, c), h), c_prev) in rows.zip(s.c_prev.chunks_exact(hidden)) {
        let (sig_if, rest) = gates.split_at_mut(2 * hidden);
        let (g, o) = rest.split_at_mut(hidden);
        F::sigmoid_inplace(sig_if);
        F::tanh_inplace(g);
        F::sigmoid_inplace(o);
        let (i, f) = sig_if.split_at(hidden);
        for j in 0..hidden {
            c[j] = f[j] * c_prev[j] + i[j] * g[j];
        }
        h.copy_from_slice(c);
        F::tanh_inplace(h);
        for (hv, &ov) in h.iter_mut().zip(o.iter()) {
            *hv *= ov;
        }
    }
}

/// `dh_direct` is used as scratch for `tanh(c')` (an LSTM has no direct `dh` path).
pub(crate) fn backward<F: Element>(s: Bwd<'_, F>, hidden: usize) {
    let h4 = 4 * hidden;
    let one = F::one();
    let tcs = s.dh_direct;
    tcs.copy_from_slice(s.c);
    F::tanh_inplace(tcs);
    let rows = s.gates.chunks_exact(h4).zip(s.dg_ih.chunks_exact_mut(h4)).zip(s.dc.chunks_exact_mut(hidden));
    let per_row = s.c_prev.chunks_exact(hidden).zip(s.dh.chunks_exact(hidden)).zip(tcs.chunks_exact(hidden));
    for (((gates, dg), dc), ((c_prev, dh), tc)) in rows.zip(per_row) {
        for j in 0..hidden {
            let (i, f, g, o) = (gates[j], gates[hidden + j], gates[2 * hidden + j], gates[3 * hidden + j]);
            let t = tc[j];
            let dct = dc[j] + dh[j] * o * (one - t * t);
            dg[j] = dct * g * i * (one - i);
            dg[hidden + j] = dct * c_prev[j] * f * (one - f);
            dg[2 * hidden + j] = dct * i * (one - g * g);
            dg[3 * hidden + j] = dh[j] * t * o * (one - o);
            dc[j] = dct * f;
        }
    }
}

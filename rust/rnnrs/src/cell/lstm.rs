//! LSTM, gates in PyTorch order `i, f, g, o`:
//! `i = σ(a_i)`, `f = σ(a_f)`, `g = tanh(a_g)`, `o = σ(a_o)`, `c' = f·c + i·g`, `h' = o·tanh(c')`,
//! where `a = W_ih x + b_ih + W_hh h + b_hh`.

use super::{Bwd, Fwd};
use crate::element::Element;

#[inline(always)]
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
#[inline(always)]
pub(crate) fn backward<F: Element>(s: Bwd<'_, F>, hidden: usize) {
    let h4 = 4 * hidden;
    let tcs = s.dh_direct;
    tcs.copy_from_slice(s.c);
    F::tanh_inplace(tcs);
    let rows = s.gates.chunks_exact(h4).zip(s.dg_ih.chunks_exact_mut(h4)).zip(s.dc.chunks_exact_mut(hidden));
    let per_row = s.c_prev.chunks_exact(hidden).zip(s.dh.chunks_exact(hidden)).zip(tcs.chunks_exact(hidden));
    for (((gates, dg), dc), ((c_prev, dh), tc)) in rows.zip(per_row) {
        // Equal-length slices per gate, so that the loop below vectorises without bounds checks.
        let (gi, rest) = gates.split_at(hidden);
        let (gf, rest) = rest.split_at(hidden);
        let (gg, go) = rest.split_at(hidden);
        let (di, rest) = dg.split_at_mut(hidden);
        let (df, rest) = rest.split_at_mut(hidden);
        let (dgg, d_o) = rest.split_at_mut(hidden);
        row_backward(RowIn { gi, gf, gg, go, c_prev, dh, tc }, di, df, dgg, d_o, dc);
    }
}

/// One row's inputs to [`row_backward`]: gate activations, previous cell state, `dh`, `tanh(c')`.
struct RowIn<'a, F> {
    gi: &'a [F],
    gf: &'a [F],
    gg: &'a [F],
    go: &'a [F],
    c_prev: &'a [F],
    dh: &'a [F],
    tc: &'a [F],
}

/// The gate gradients of one row. Kept out of line: as a function of its own its output slices
/// cannot alias (in the caller they could, as far as the compiler knows), so the loop vectorises.
#[inline(never)]
fn row_backward<F: Element>(x: RowIn<'_, F>, di: &mut [F], df: &mut [F], dgg: &mut [F], d_o: &mut [F], dc: &mut [F]) {
    let one = F::one();
    let n = dc.len();
    let (di, df, dgg, d_o) = (&mut di[..n], &mut df[..n], &mut dgg[..n], &mut d_o[..n]);
    let (gi, gf, gg, go, c_prev, dh, tc) = (&x.gi[..n], &x.gf[..n], &x.gg[..n], &x.go[..n], &x.c_prev[..n], &x.dh[..n], &x.tc[..n]);
    for j in 0..n {
        let (i, f, g, o, t) = (gi[j], gf[j], gg[j], go[j], tc[j]);
        let dct = dc[j] + dh[j] * o * (one - t * t);
        di[j] = dct * g * i * (one - i);
        df[j] = dct * c_prev[j] * f * (one - f);
        dgg[j] = dct * i * (one - g * g);
        d_o[j] = dh[j] * t * o * (one - o);
        dc[j] = dct * f;
    }
}

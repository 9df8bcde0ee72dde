//! LSTM, gates in PyTorch order `i, f, g, o`:
//! `i = σ(a_i)`, `f = σ(a_f)`, `g = tanh(a_g)`, `o = σ(a_o)`, `c' = f·c + i·g`, `h' = o·tanh(c')`,
//! where `a = W_ih x + b_ih + W_hh h + b_hh`.

use super::{Bwd, Fwd};
use crate::element::Element;

#[inline(always)]
pub(crate) fn forward<F: Element>(s: Fwd<'_, F>, hidden: usize) {
    let h4 = 4 * hidden;
    if !s.xw.is_empty() {
        for (g, (&x, &r)) in s.gates.iter_mut().zip(s.xw.iter().zip(s.hw)) {
            *g = x + r;
        }
    }
    // `(gates + bias) + hw`, row by row inside the row kernel (see `Fwd`).
    let add = s.xw.is_empty() && !s.hw.is_empty();
    let rows = s.gates.chunks_exact_mut(h4).zip(s.c.chunks_exact_mut(hidden)).zip(s.h.chunks_exact_mut(hidden));
    for (row, (((gates, c), h), c_prev)) in rows.zip(s.c_prev.chunks_exact(hidden)).enumerate() {
        let (gi, rest) = gates.split_at_mut(hidden);
        let (gf, rest) = rest.split_at_mut(hidden);
        let (gg, go) = rest.split_at_mut(hidden);
        let (bias, hw) = if add { (s.bias, &s.hw[row * h4..(row + 1) * h4]) } else { (&[][..], &[][..]) };
        row_forward(RowAdd { bias, hw, c_prev }, gi, gf, gg, go, c, h);
    }
}

/// One row's inputs to [`row_forward`] besides its gates: `bias` and `hw` (`(4H)` each, to add
/// to the gates first; both empty when the gates hold the sums) and the previous cell state.
struct RowAdd<'a, F> {
    bias: &'a [F],
    hw: &'a [F],
    c_prev: &'a [F],
}

super::avx512_or_any! {
    /// The gate activations, cell and hidden state of one row, in one pass.
    fn row_forward<F>(x: RowAdd<'_, F>, gi: &mut [F], gf: &mut [F], gg: &mut [F], go: &mut [F], c: &mut [F], h: &mut [F]) => row_forward_body
}

#[inline(always)]
fn row_forward_body<F: Element>(x: RowAdd<'_, F>, gi: &mut [F], gf: &mut [F], gg: &mut [F], go: &mut [F], c: &mut [F], h: &mut [F]) {
    let n = c.len();
    let (gi, gf, gg, go, h, c_prev) = (&mut gi[..n], &mut gf[..n], &mut gg[..n], &mut go[..n], &mut h[..n], &x.c_prev[..n]);
    if !x.hw.is_empty() {
        for (q, g) in [&mut *gi, &mut *gf, &mut *gg, &mut *go].into_iter().enumerate() {
            let (bias, hw) = (&x.bias[q * n..(q + 1) * n], &x.hw[q * n..(q + 1) * n]);
            for j in 0..n {
                g[j] = (g[j] + bias[j]) + hw[j];
            }
        }
    }
    for j in 0..n {
        let (i, f, g, o) = (gi[j].sigmoid_elem(), gf[j].sigmoid_elem(), gg[j].tanh_elem(), go[j].sigmoid_elem());
        (gi[j], gf[j], gg[j], go[j]) = (i, f, g, o);
        let cj = f * c_prev[j] + i * g;
        c[j] = cj;
        h[j] = cj.tanh_elem() * o;
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

super::avx512_or_any! {
    /// The gate gradients of one row. Out of line: as a function of its own its output slices
    /// cannot alias (in the caller they could, as far as the compiler knows), so the loop
    /// vectorises.
    fn row_backward<F>(x: RowIn<'_, F>, di: &mut [F], df: &mut [F], dgg: &mut [F], d_o: &mut [F], dc: &mut [F]) => row_backward_body
}

#[inline(always)]
fn row_backward_body<F: Element>(x: RowIn<'_, F>, di: &mut [F], df: &mut [F], dgg: &mut [F], d_o: &mut [F], dc: &mut [F]) {
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

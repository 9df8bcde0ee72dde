//! GRU, gates in PyTorch order `r, z, n`:
//! `r = σ(W_ir x + b_ir + W_hr h + b_hr)`, `z = σ(W_iz x + b_iz + W_hz h + b_hz)`,
//! `n = tanh(W_in x + b_in + r·(W_hn h + b_hn))`, `h' = (1 - z)·n + z·h`.
//! The reset gate multiplies the whole recurrent term `W_hn h + b_hn`, so the `n` block of the
//! recurrent pre-activation gradient is `r` times that of the input side.

use super::{Bwd, Fwd};
use crate::element::Element;

#[inline(always)]
pub(crate) fn forward<F: Element>(s: Fwd<'_, F>, hidden: usize) {
    let h3 = 3 * hidden;
    let one = F::one();
    let rows = s.gates.chunks_exact_mut(h3).zip(s.xw.chunks_exact(h3)).zip(s.hw.chunks_exact(h3));
    for (((gates, xw), hw), (h, h_prev)) in rows.zip(s.h.chunks_exact_mut(hidden).zip(s.h_prev.chunks_exact(hidden))) {
        let (rz, n) = gates.split_at_mut(2 * hidden);
        // The input side gets `b_ih` here when it is apart (`bias`).
        let bias = (!s.bias.is_empty()).then(|| &s.bias[..h3]);
        match bias {
            None => (0..2 * hidden).for_each(|j| rz[j] = xw[j] + hw[j]),
            Some(b) => (0..2 * hidden).for_each(|j| rz[j] = (xw[j] + b[j]) + hw[j]),
        }
        F::sigmoid_inplace(rz);
        let (r, z) = rz.split_at(hidden);
        let (xn, hn) = (&xw[2 * hidden..], &hw[2 * hidden..]);
        match bias {
            None => (0..hidden).for_each(|j| n[j] = xn[j] + r[j] * hn[j]),
            Some(b) => (0..hidden).for_each(|j| n[j] = (xn[j] + b[2 * hidden + j]) + r[j] * hn[j]),
        }
        F::tanh_inplace(n);
        for j in 0..hidden {
            h[j] = (one - z[j]) * n[j] + z[j] * h_prev[j];
        }
    }
}

#[inline(always)]
pub(crate) fn backward<F: Element>(s: Bwd<'_, F>, hidden: usize) {
    let h3 = 3 * hidden;
    let batch = s.dh.len() / hidden;
    let one = F::one();
    for b in 0..batch {
        let gates = &s.gates[b * h3..(b + 1) * h3];
        let hw = &s.hw[b * h3..(b + 1) * h3];
        let dgi = &mut s.dg_ih[b * h3..(b + 1) * h3];
        let dgh = &mut s.dg_hh[b * h3..(b + 1) * h3];
        let r = b * hidden..(b + 1) * hidden;
        let (h_prev, dh) = (&s.h_prev[r.clone()], &s.dh[r.clone()]);
        let direct = &mut s.dh_direct[r];
        for j in 0..hidden {
            let (rg, z, n) = (gates[j], gates[hidden + j], gates[2 * hidden + j]);
            let dan = dh[j] * (one - z) * (one - n * n);
            let daz = dh[j] * (h_prev[j] - n) * z * (one - z);
            let dar = dan * hw[2 * hidden + j] * rg * (one - rg);
            dgi[j] = dar;
            dgi[hidden + j] = daz;
            dgi[2 * hidden + j] = dan;
            dgh[j] = dar;
            dgh[hidden + j] = daz;
            dgh[2 * hidden + j] = dan * rg;
            direct[j] = dh[j] * z;
        }
    }
}

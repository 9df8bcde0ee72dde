//! LSTM, gates in PyTorch order `i, f, g, o`:
//! `i = σ(a_i)`, `f = σ(a_f)`, `g = tanh(a_g)`, `o = σ(a_o)`, `c' = f·c + i·g`, `h' = o·tanh(c')`,
//! where `a = W_ih x + b_ih + W_hh h + b_hh`.

use super::{Bwd, Fwd};
use crate::element::Element;

pub(crate) fn forward<F: Element>(s: Fwd<'_, F>, hidden: usize) {
    let h4 = 4 * hidden;
    let batch = s.h.len() / hidden;
    for b in 0..batch {
        let xw = &s.xw[b * h4..(b + 1) * h4];
        let hw = &s.hw[b * h4..(b + 1) * h4];
        let gates = &mut s.gates[b * h4..(b + 1) * h4];
        let c_prev = &s.c_prev[b * hidden..(b + 1) * hidden];
        let c = &mut s.c[b * hidden..(b + 1) * hidden];
        let h = &mut s.h[b * hidden..(b + 1) * hidden];
        for j in 0..hidden {
            let i = (xw[j] + hw[j]).sigmoid();
            let f = (xw[hidden + j] + hw[hidden + j]).sigmoid();
            let g = (xw[2 * hidden + j] + hw[2 * hidden + j]).tanh();
            let o = (xw[3 * hidden + j] + hw[3 * hidden + j]).sigmoid();
            let cn = f * c_prev[j] + i * g;
            gates[j] = i;
            gates[hidden + j] = f;
            gates[2 * hidden + j] = g;
            gates[3 * hidden + j] = o;
            c[j] = cn;
            h[j] = o * cn.tanh();
        }
    }
}

pub(crate) fn backward<F: Element>(s: Bwd<'_, F>, hidden: usize) {
    let h4 = 4 * hidden;
    let batch = s.dh.len() / hidden;
    let one = F::one();
    for b in 0..batch {
        let gates = &s.gates[b * h4..(b + 1) * h4];
        let dg = &mut s.dg_ih[b * h4..(b + 1) * h4];
        let r = b * hidden..(b + 1) * hidden;
        let (c, c_prev, dh) = (&s.c[r.clone()], &s.c_prev[r.clone()], &s.dh[r.clone()]);
        let dc = &mut s.dc[r];
        for j in 0..hidden {
            let (i, f, g, o) = (gates[j], gates[hidden + j], gates[2 * hidden + j], gates[3 * hidden + j]);
            let tc = c[j].tanh();
            let dct = dc[j] + dh[j] * o * (one - tc * tc);
            dg[j] = dct * g * i * (one - i);
            dg[hidden + j] = dct * c_prev[j] * f * (one - f);
            dg[2 * hidden + j] = dct * i * (one - g * g);
            dg[3 * hidden + j] = dh[j] * tc * o * (one - o);
            dc[j] = dct * f;
        }
    }
}

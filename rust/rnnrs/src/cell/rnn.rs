//! Elman RNN: `h' = act(W_ih x + b_ih + W_hh h + b_hh)` with `act` = `tanh` or `relu`.
//! Backward: `da = dh · act'(a)`, with `tanh'(a) = 1 - h'^2` and `relu'(a) = [h' > 0]`.

use super::{Bwd, Fwd};
use crate::element::Element;

#[inline(always)]
pub(crate) fn forward<F: Element>(s: Fwd<'_, F>, relu: bool) {
    if s.xw.is_empty() {
        // `(gates + bias) + hw` (see `Fwd`; nothing when `hw` is empty too).
        if !s.hw.is_empty() {
            for (row, hw) in s.gates.chunks_exact_mut(s.bias.len()).zip(s.hw.chunks_exact(s.bias.len())) {
                for ((g, &b), &r) in row.iter_mut().zip(s.bias).zip(hw) {
                    *g = (*g + b) + r;
                }
            }
        }
    } else {
        for ((g, &x), &r) in s.gates.iter_mut().zip(s.xw).zip(s.hw) {
            *g = x + r;
        }
    }
    if relu {
        s.gates.iter_mut().for_each(|g| *g = g.max(F::zero()));
    } else {
        F::tanh_inplace(s.gates);
    }
    s.h.copy_from_slice(s.gates);
}

#[inline(always)]
pub(crate) fn backward<F: Element>(s: Bwd<'_, F>, relu: bool) {
    for ((d, &h), &dh) in s.dg_ih.iter_mut().zip(s.h).zip(s.dh) {
        *d = if relu {
            if h > F::zero() {
                dh
            } else {
                F::zero()
            }
        } else {
            dh * (F::one() - h * h)
        };
    }
}

//! The recurrent cells: one time step forward and backward, on contiguous `(batch, ·)` row blocks.
//!
//! Each step receives the input projection `xw = W_ih x + b_ih` and the recurrent projection
//! `hw = W_hh h + b_hh` (both `(B, G·H)`, computed by the caller as matrix products) and does the
//! elementwise rest. The backward step turns the gradient of the new state into the gradients of the
//! gate pre-activations, from which the caller forms all weight gradients as large matrix products.

pub mod gru;
pub mod lstm;
pub mod rnn;

use crate::element::Element;
use crate::error::{invalid, Error};
use std::fmt;
use std::str::FromStr;

/// Which recurrent cell a layer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CellKind {
    /// Elman RNN with `tanh`: `h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`.
    RnnTanh,
    /// Elman RNN with `relu`.
    RnnRelu,
    /// Gated recurrent unit, gates `r, z, n` (PyTorch order).
    Gru,
    /// Long short-term memory, gates `i, f, g, o` (PyTorch order).
    Lstm,
}

impl CellKind {
    /// Number of gate blocks `G`: the weight matrices have `G · hidden_size` rows.
    pub fn gates(self) -> usize {
        match self {
            CellKind::RnnTanh | CellKind::RnnRelu => 1,
            CellKind::Gru => 3,
            CellKind::Lstm => 4,
        }
    }
    /// Whether the cell has a cell state `c` besides `h` (LSTM only).
    pub fn has_cell_state(self) -> bool {
        self == CellKind::Lstm
    }
    /// The name used in configs and files: `rnn_tanh`, `rnn_relu`, `gru`, `lstm`.
    pub fn name(self) -> &'static str {
        match self {
            CellKind::RnnTanh => "rnn_tanh",
            CellKind::RnnRelu => "rnn_relu",
            CellKind::Gru => "gru",
            CellKind::Lstm => "lstm",
        }
    }
}

impl serde::Serialize for CellKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for CellKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for CellKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CellKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "rnn_tanh" | "rnn" | "tanh" => Ok(CellKind::RnnTanh),
            "rnn_relu" | "relu" => Ok(CellKind::RnnRelu),
            "gru" => Ok(CellKind::Gru),
            "lstm" => Ok(CellKind::Lstm),
            _ => Err(invalid("cell", "one of 'rnn_tanh', 'rnn_relu', 'gru', 'lstm'", format!("{s:?}"))),
        }
    }
}

/// One forward step of `cell` (see [`Fwd`]), compiled for AVX-512 when the CPU has it: the
/// elementwise loops then use 16-lane vectors instead of the baseline's 4. They are plain IEEE adds
/// and multiplies (never contracted into fused multiply-adds), so both builds give the same bits.
/// (Functions the cells keep out of line, for their loops to vectorise, dispatch for themselves:
/// see [`avx512_or_any`].)
pub(crate) fn forward<F: Element>(cell: CellKind, s: Fwd<'_, F>, hidden: usize) {
    #[cfg(target_arch = "x86_64")]
    if crate::activation::has_avx512() {
        // SAFETY: the CPU has AVX-512F (detected at run time).
        return unsafe { x86::forward(cell, s, hidden) };
    }
    forward_any(cell, s, hidden)
}

/// One backward step of `cell` (see [`Bwd`]), compiled like [`forward`].
pub(crate) fn backward<F: Element>(cell: CellKind, s: Bwd<'_, F>, hidden: usize) {
    #[cfg(target_arch = "x86_64")]
    if crate::activation::has_avx512() {
        // SAFETY: the CPU has AVX-512F (detected at run time).
        return unsafe { x86::backward(cell, s, hidden) };
    }
    backward_any(cell, s, hidden)
}

#[inline(always)]
fn forward_any<F: Element>(cell: CellKind, s: Fwd<'_, F>, hidden: usize) {
    match cell {
        CellKind::RnnTanh => rnn::forward(s, false),
        CellKind::RnnRelu => rnn::forward(s, true),
        CellKind::Gru => gru::forward(s, hidden),
        CellKind::Lstm => lstm::forward(s, hidden),
    }
}

#[inline(always)]
fn backward_any<F: Element>(cell: CellKind, s: Bwd<'_, F>, hidden: usize) {
    match cell {
        CellKind::RnnTanh => rnn::backward(s, false),
        CellKind::RnnRelu => rnn::backward(s, true),
        CellKind::Gru => gru::backward(s, hidden),
        CellKind::Lstm => lstm::backward(s, hidden),
    }
}

/// Defines `$name`, which runs `$body` (an `#[inline(always)]` function of the same arguments)
/// compiled for AVX-512 when the CPU has it, and for the baseline otherwise. Both copies are kept
/// out of line, so their slice arguments are known not to alias and the loops vectorise.
macro_rules! avx512_or_any {
    ($(#[$m:meta])* fn $name:ident<F>($($a:ident: $t:ty),* $(,)?) => $body:ident) => {
        $(#[$m])*
        fn $name<F: Element>($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            if crate::activation::has_avx512() {
                #[target_feature(enable = "avx512f")]
                #[inline(never)]
                unsafe fn avx512<F: Element>($($a: $t),*) {
                    $body($($a),*)
                }
                // SAFETY: the CPU has AVX-512F (detected at run time).
                return unsafe { avx512($($a),*) };
            }
            #[inline(never)]
            fn any<F: Element>($($a: $t),*) {
                $body($($a),*)
            }
            any($($a),*)
        }
    };
}
pub(crate) use avx512_or_any;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{backward_any, forward_any, Bwd, CellKind, Fwd};
    use crate::element::Element;

    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn forward<F: Element>(cell: CellKind, s: Fwd<'_, F>, hidden: usize) {
        forward_any(cell, s, hidden)
    }

    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn backward<F: Element>(cell: CellKind, s: Bwd<'_, F>, hidden: usize) {
        backward_any(cell, s, hidden)
    }
}

/// Buffers of one forward step. All slices are row-major `(B, ·)` blocks.
///
/// RNN and LSTM take their pre-activations in one of three ways: `xw + hw`; `gates` already
/// holding them (`xw`, `hw` and `bias` empty); or `(gates + bias) + hw` (`xw` empty: the sequence
/// pass, whose `gates` hold the input projection and `bias` is `b_ih + b_hh`). The GRU takes
/// `xw` and `hw`, and adds `bias` (`b_ih`), when given, to `xw` first.
pub(crate) struct Fwd<'a, F> {
    /// `(B, G·H)` input projection including `b_ih` (may be empty, see above).
    pub xw: &'a [F],
    /// `(B, G·H)` recurrent projection (including `b_hh` unless `bias` holds it).
    pub hw: &'a [F],
    /// `(G·H)` or empty: added to every row of the input side before `hw` (see above).
    pub bias: &'a [F],
    /// `(B, H)` previous hidden state.
    pub h_prev: &'a [F],
    /// `(B, H)` previous cell state (LSTM; empty otherwise).
    pub c_prev: &'a [F],
    /// `(B, G·H)` out: gate activations kept for backward (in: the pre-activations when `xw` is
    /// empty).
    pub gates: &'a mut [F],
    /// `(B, H)` out: new hidden state.
    pub h: &'a mut [F],
    /// `(B, H)` out: new cell state (LSTM; empty otherwise).
    pub c: &'a mut [F],
}

/// Buffers of one backward step. All slices are row-major `(B, ·)` blocks.
pub(crate) struct Bwd<'a, F> {
    /// `(B, G·H)` gate activations from the forward step.
    pub gates: &'a [F],
    /// `(B, G·H)` recurrent projection `W_hh h + b_hh` (GRU needs its `n` block; others: empty).
    pub hw: &'a [F],
    /// `(B, H)` hidden state the step produced.
    pub h: &'a [F],
    /// `(B, H)` hidden state the step started from.
    pub h_prev: &'a [F],
    /// `(B, H)` cell state the step produced (LSTM; empty otherwise).
    pub c: &'a [F],
    /// `(B, H)` cell state the step started from (LSTM; empty otherwise).
    pub c_prev: &'a [F],
    /// `(B, H)` in: total gradient w.r.t. the new hidden state.
    pub dh: &'a [F],
    /// `(B, H)` in: gradient w.r.t. the new cell state; out: w.r.t. the previous one (LSTM).
    pub dc: &'a mut [F],
    /// `(B, G·H)` out: gradient w.r.t. the input-side pre-activations.
    pub dg_ih: &'a mut [F],
    /// `(B, G·H)` out: gradient w.r.t. the recurrent-side pre-activations (GRU only; empty otherwise:
    /// for the other cells it equals `dg_ih`).
    pub dg_hh: &'a mut [F],
    /// `(B, H)` out: the part of `dh_prev` that does not flow through `W_hh` (GRU: `dh·z`).
    pub dh_direct: &'a mut [F],
}

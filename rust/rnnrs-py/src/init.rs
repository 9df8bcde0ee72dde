//! The initialisers' arguments, parsed once for every class that offers `init_parameters`.

use crate::convert::to_py;
use pyo3::prelude::*;
use rnnrs::{CellKind, Element, Init, InitConfig, Module};

/// Re-draw `module`'s parameters (`cell` cells of `hidden` units): `init` for input weights,
/// embedding and output layer (and biases: PyTorch's draw for "pytorch", else zeros),
/// `recurrent_init` (default: `init`) for recurrent weights, `init_std` for "normal",
/// `forget_bias` for LSTM. Nothing changes on error.
#[allow(clippy::too_many_arguments)]
pub fn apply<F: Element>(
    module: &mut dyn Module<F>,
    cell: CellKind,
    hidden: usize,
    init: &str,
    recurrent_init: Option<&str>,
    init_std: f64,
    forget_bias: Option<f64>,
    seed: u64,
) -> PyResult<()> {
    let init: Init = init.parse().map_err(to_py)?;
    let recurrent_init: Init = match recurrent_init {
        Some(s) => s.parse().map_err(|e: rnnrs::Error| to_py(rename(e)))?,
        None => init,
    };
    let cfg = InitConfig { init, recurrent_init, init_std, forget_bias };
    rnnrs::init_parameters(module, cell, hidden, &cfg, seed).map_err(to_py)
}

/// `init: ...` → `recurrent_init: ...` in a parse error of the recurrent initialiser's name.
fn rename(e: rnnrs::Error) -> rnnrs::Error {
    match e {
        rnnrs::Error::Invalid { expected, got, .. } => rnnrs::Error::Invalid { what: "recurrent_init".into(), expected, got },
        e => e,
    }
}

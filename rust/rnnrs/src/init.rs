//! Weight initialisers beyond PyTorch's default: [`Init`] and [`InitConfig`], applied to a layer,
//! a cell or a language model by [`init_parameters`].
//!
//! PyTorch draws every recurrent parameter from `U(-1/√H, 1/√H)` (what [`crate::Recurrent::new`]
//! does). The d2l book uses `N(0, 0.01²)` weights and zero biases; Keras uses Glorot-uniform input
//! kernels, orthogonal recurrent kernels and zero biases with the LSTM forget-gate bias at 1. The
//! RNN tutorial this library follows names Xavier and He initialisation as cures for unstable
//! training. Every initialiser is a seeded draw: parameter `k` (in visiting order) uses the
//! stream `(seed, INIT, k)`, so the result depends on nothing but the seed.
//!
//! Rules, for a parameter of shape `(rows, cols)`:
//! * `input` initialiser on `weight_ih*`, the embedding and the output layer's weight, `recurrent`
//!   on `weight_hh*`; `fan_in = cols`, `fan_out = rows` over the whole gate-stacked matrix (as
//!   `torch.nn.init` and Keras do), except [`Init::Orthogonal`], which makes each `H`-row gate block
//!   orthogonal (semi-orthogonal when not square);
//! * biases keep PyTorch's draw when the input initialiser is [`Init::Pytorch`], and are zero
//!   otherwise; `forget_bias` (LSTM only) then sets `b_ih_f = forget_bias` and `b_hh_f = 0`, so the
//!   forget gate's total bias is `forget_bias`;
//! * [`Init::Pytorch`] leaves a parameter as it was created.

use crate::cell::CellKind;
use crate::element::Element;
use crate::error::{invalid, Error, Result};
use crate::module::Module;
use crate::rng;
use ndarray::{s, Array2, ArrayViewMutD, Ix2};
use std::str::FromStr;

const INIT_STREAM: u64 = 0x1417_1A11;

/// How to draw a weight matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Keep PyTorch's `U(-1/√H, 1/√H)` (the embedding's `N(0, 1)`, the output layer's
    /// `U(-1/√fan_in, 1/√fan_in)`).
    Pytorch,
    /// `N(0, std²)` with [`InitConfig::init_std`] (the d2l book: 0.01).
    Normal,
    /// Glorot/Xavier uniform: `U(-a, a)`, `a = √(6 / (fan_in + fan_out))`.
    XavierUniform,
    /// Glorot/Xavier normal: `N(0, 2 / (fan_in + fan_out))`.
    XavierNormal,
    /// He/Kaiming uniform for ReLU (`torch.nn.init.kaiming_uniform_`'s defaults): `U(-a, a)`,
    /// `a = √2 · √(3 / fan_in)`.
    KaimingUniform,
    /// Each gate block orthogonal (QR of a Gaussian matrix, signs fixed as PyTorch does).
    Orthogonal,
}

impl Init {
    /// Every initialiser's name, as [`FromStr`] accepts it.
    pub const NAMES: [&'static str; 6] = ["pytorch", "normal", "xavier_uniform", "xavier_normal", "kaiming_uniform", "orthogonal"];

    /// The name [`FromStr`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            Init::Pytorch => "pytorch",
            Init::Normal => "normal",
            Init::XavierUniform => "xavier_uniform",
            Init::XavierNormal => "xavier_normal",
            Init::KaimingUniform => "kaiming_uniform",
            Init::Orthogonal => "orthogonal",
        }
    }
}

impl FromStr for Init {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let found = Init::NAMES.iter().position(|&n| n == s);
        let all = [Init::Pytorch, Init::Normal, Init::XavierUniform, Init::XavierNormal, Init::KaimingUniform, Init::Orthogonal];
        found.map(|i| all[i]).ok_or_else(|| invalid("init", format!("one of {:?}", Init::NAMES), format!("{s:?}")))
    }
}

/// Which initialiser for which weights (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct InitConfig {
    /// Input weights (`weight_ih*`), embedding and output layer; also decides the biases.
    pub init: Init,
    /// Recurrent weights (`weight_hh*`).
    pub recurrent_init: Init,
    /// Standard deviation of [`Init::Normal`].
    pub init_std: f64,
    /// LSTM only: the forget gate's total bias `b_ih_f + b_hh_f`.
    pub forget_bias: Option<f64>,
}

impl Default for InitConfig {
    /// PyTorch's initialisation everywhere.
    fn default() -> Self {
        InitConfig { init: Init::Pytorch, recurrent_init: Init::Pytorch, init_std: 0.01, forget_bias: None }
    }
}

impl InitConfig {
    /// `init` for every weight.
    pub fn new(init: Init) -> Self {
        InitConfig { init, recurrent_init: init, ..Default::default() }
    }
    /// Keras' defaults: Glorot-uniform input weights, orthogonal recurrent weights, zero biases and
    /// (for LSTM) a forget-gate bias of 1.
    pub fn keras(cell: CellKind) -> Self {
        InitConfig {
            init: Init::XavierUniform,
            recurrent_init: Init::Orthogonal,
            init_std: 0.01,
            forget_bias: cell.has_cell_state().then_some(1.0),
        }
    }
    /// Check the numbers against `cell`.
    pub fn validate(&self, cell: CellKind) -> Result<()> {
        if !(self.init_std.is_finite() && self.init_std > 0.0) {
            return Err(invalid("init_std", "a finite number > 0", self.init_std));
        }
        if let Some(fb) = self.forget_bias {
            if !fb.is_finite() {
                return Err(invalid("forget_bias", "a finite number", fb));
            }
            if !cell.has_cell_state() {
                return Err(invalid("forget_bias", "None for a cell without a forget gate (only LSTM has one)", format!("{fb} with a {} cell", cell.name())));
            }
        }
        Ok(())
    }
}

/// What a parameter is, from its name (`[rnn.]weight_ih_l0`, `weight_hh`, `embedding.weight`,
/// `linear.bias`, ...).
enum Role {
    InputWeight,
    RecurrentWeight,
    InputBias,
    RecurrentBias,
    OtherWeight,
    OtherBias,
}

fn role(name: &str) -> Role {
    let local = name.strip_prefix("rnn.").unwrap_or(name);
    if local.starts_with("weight_ih") {
        Role::InputWeight
    } else if local.starts_with("weight_hh") {
        Role::RecurrentWeight
    } else if local.starts_with("bias_ih") {
        Role::InputBias
    } else if local.starts_with("bias_hh") {
        Role::RecurrentBias
    } else if local.ends_with("bias") {
        Role::OtherBias
    } else {
        Role::OtherWeight
    }
}

/// Re-draw the parameters of `module` (a [`crate::Recurrent`], [`crate::RecurrentCell`] or
/// [`crate::LanguageModel`] whose recurrent cells are `cell` with `hidden` units) by `config` from
/// `seed`. Nothing changes on error.
pub fn init_parameters<F: Element>(module: &mut dyn Module<F>, cell: CellKind, hidden: usize, config: &InitConfig, seed: u64) -> Result<()> {
    config.validate(cell)?;
    let mut k = 0u64;
    module.visit_mut(&mut |name, p, _| {
        let mut r = rng::stream(&[seed, INIT_STREAM, k]);
        k += 1;
        let init = match role(name) {
            Role::RecurrentWeight => config.recurrent_init,
            Role::InputWeight | Role::OtherWeight => config.init,
            Role::InputBias | Role::RecurrentBias | Role::OtherBias => {
                bias(p, role(name), cell, hidden, config);
                return;
            }
        };
        let block = matches!(role(name), Role::InputWeight | Role::RecurrentWeight).then_some(hidden);
        weight(p, init, block, config.init_std, &mut r);
    });
    Ok(())
}

fn bias<F: Element>(mut p: ArrayViewMutD<'_, F>, role: Role, cell: CellKind, hidden: usize, config: &InitConfig) {
    if config.init != Init::Pytorch {
        p.fill(F::zero());
    }
    if let (Some(fb), true) = (config.forget_bias, cell.has_cell_state()) {
        // gates i, f, g, o: the forget gate is rows [H, 2H)
        let v = if matches!(role, Role::InputBias) { F::from_f64(fb) } else { F::zero() };
        if matches!(role, Role::InputBias | Role::RecurrentBias) {
            p.slice_mut(s![hidden..2 * hidden]).fill(v);
        }
    }
}

fn weight<F: Element>(p: ArrayViewMutD<'_, F>, init: Init, gate_rows: Option<usize>, std: f64, r: &mut rng::Rng) {
    let Ok(mut p) = p.into_dimensionality::<Ix2>() else { return };
    let (rows, cols) = p.dim();
    let (fan_in, fan_out) = (cols as f64, rows as f64);
    let uniform = |r: &mut rng::Rng, a: f64| (2.0 * rng::uniform(r) - 1.0) * a;
    match init {
        Init::Pytorch => {}
        Init::Normal => p.iter_mut().for_each(|v| *v = F::from_f64(std * rng::normal(r))),
        Init::XavierNormal => {
            let sd = (2.0 / (fan_in + fan_out)).sqrt();
            p.iter_mut().for_each(|v| *v = F::from_f64(sd * rng::normal(r)));
        }
        Init::XavierUniform => {
            let a = (6.0 / (fan_in + fan_out)).sqrt();
            p.iter_mut().for_each(|v| *v = F::from_f64(uniform(r, a)));
        }
        Init::KaimingUniform => {
            let a = 2f64.sqrt() * (3.0 / fan_in).sqrt();
            p.iter_mut().for_each(|v| *v = F::from_f64(uniform(r, a)));
        }
        Init::Orthogonal => {
            let block = gate_rows.unwrap_or(rows).max(1);
            for b in 0..rows.div_ceil(block) {
                let hi = ((b + 1) * block).min(rows);
                let q = orthogonal(hi - b * block, cols, r);
                p.slice_mut(s![b * block..hi, ..]).zip_mut_with(&q, |v, &x| *v = F::from_f64(x));
            }
        }
    }
}

/// A `rows × cols` matrix with orthonormal rows (if `rows <= cols`) or columns: modified
/// Gram–Schmidt (twice, for accuracy) on the columns of a Gaussian matrix, which is the Q of its QR
/// decomposition with a positive diagonal in R, as `torch.nn.init.orthogonal_` arranges.
fn orthogonal(rows: usize, cols: usize, r: &mut rng::Rng) -> Array2<f64> {
    let (n, m) = (rows.max(cols), rows.min(cols));
    let mut a = Array2::from_shape_fn((n, m), |_| rng::normal(r));
    for j in 0..m {
        for _pass in 0..2 {
            for i in 0..j {
                let dot = a.column(i).dot(&a.column(j));
                let qi = a.column(i).to_owned();
                a.column_mut(j).scaled_add(-dot, &qi);
            }
        }
        let norm = a.column(j).dot(&a.column(j)).sqrt();
        a.column_mut(j).mapv_inplace(|v| v / norm);
    }
    if rows < cols {
        a.reversed_axes()
    } else {
        a
    }
}

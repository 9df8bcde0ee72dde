//! Gradient clipping and optimizers with PyTorch's semantics (`clip_grad_norm_`, `SGD`, `Adam`,
//! `AdamW`). Optimizer state is kept per parameter, in the module's visiting order, and can be
//! exported and restored for checkpoints.

use crate::element::Element;
use crate::error::{check_shape, invalid, Error, Result};
use crate::module::Module;
use ndarray::{ArrayD, ArrayViewD, Zip};

/// Global L2 norm of all gradients of `m`, accumulated in `f64` in a fixed order.
pub fn grad_norm<F: Element>(m: &dyn Module<F>) -> f64 {
    let mut sq = 0.0f64;
    m.visit(&mut |_, _, g| sq += g.iter().map(|&v| v.to_f64() * v.to_f64()).sum::<f64>());
    sq.sqrt()
}

/// `torch.nn.utils.clip_grad_norm_`: scale all gradients by `max_norm / (norm + 1e-6)` when that is
/// below 1. Returns the norm before clipping (which may be NaN or infinite; then nothing is scaled).
pub fn clip_grad_norm<F: Element>(m: &mut dyn Module<F>, max_norm: f64) -> f64 {
    let norm = grad_norm(m);
    let coef = max_norm / (norm + 1e-6);
    if norm.is_finite() && coef < 1.0 {
        let c = F::from_f64(coef);
        m.visit_mut(&mut |_, _, mut g| g.mapv_inplace(|v| v * c));
    }
    norm
}

/// Which update rule, with its hyperparameters.
#[derive(Clone, Debug, PartialEq)]
pub enum OptimizerConfig {
    /// `torch.optim.SGD` (dampening 0).
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum factor (0 = plain SGD).
        momentum: f64,
        /// L2 penalty added to the gradient.
        weight_decay: f64,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// `torch.optim.Adam` (`decoupled = false`) or `torch.optim.AdamW` (`decoupled = true`).
    Adam {
        /// Learning rate.
        lr: f64,
        /// First-moment decay.
        beta1: f64,
        /// Second-moment decay.
        beta2: f64,
        /// Denominator term.
        eps: f64,
        /// Weight decay: L2 into the gradient (Adam) or decoupled shrinkage (AdamW).
        weight_decay: f64,
        /// AdamW's decoupled weight decay.
        decoupled: bool,
    },
}

impl OptimizerConfig {
    /// Plain SGD with learning rate `lr`.
    pub fn sgd(lr: f64) -> Self {
        OptimizerConfig::Sgd { lr, momentum: 0.0, weight_decay: 0.0, nesterov: false }
    }
    /// Adam with PyTorch's defaults and learning rate `lr`.
    pub fn adam(lr: f64) -> Self {
        OptimizerConfig::Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false }
    }
    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd { lr, .. } | OptimizerConfig::Adam { lr, .. } => *lr,
        }
    }
    /// Check every hyperparameter.
    pub fn validate(&self) -> Result<()> {
        let lr = self.lr();
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(invalid("lr", "a finite number >= 0", lr));
        }
        match *self {
            OptimizerConfig::Sgd { momentum, weight_decay, nesterov, .. } => {
                if !(0.0..1.0).contains(&momentum) {
                    return Err(invalid("momentum", "a number in [0, 1)", momentum));
                }
                if !(weight_decay.is_finite() && weight_decay >= 0.0) {
                    return Err(invalid("weight_decay", "a finite number >= 0", weight_decay));
                }
                if nesterov && momentum == 0.0 {
                    return Err(invalid("nesterov", "momentum > 0 with nesterov", momentum));
                }
            }
            OptimizerConfig::Adam { beta1, beta2, eps, weight_decay, .. } => {
                if !(0.0..1.0).contains(&beta1) {
                    return Err(invalid("beta1", "a number in [0, 1)", beta1));
                }
                if !(0.0..1.0).contains(&beta2) {
                    return Err(invalid("beta2", "a number in [0, 1)", beta2));
                }
                if !(eps.is_finite() && eps > 0.0) {
                    return Err(invalid("eps", "a finite number > 0", eps));
                }
                if !(weight_decay.is_finite() && weight_decay >= 0.0) {
                    return Err(invalid("weight_decay", "a finite number >= 0", weight_decay));
                }
            }
        }
        Ok(())
    }
}

/// An optimizer and its per-parameter state.
#[derive(Clone, Debug)]
pub struct Optimizer<F> {
    config: OptimizerConfig,
    steps: u64,
    /// Per parameter (visiting order): SGD `[momentum_buffer]` (empty until first use); Adam `[exp_avg, exp_avg_sq]`.
    state: Vec<Vec<ArrayD<F>>>,
}

impl<F: Element> Optimizer<F> {
    /// A new optimizer (state is created lazily on the first step).
    pub fn new(config: OptimizerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Optimizer { config, steps: 0, state: Vec::new() })
    }
    /// The configuration.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }
    /// Number of steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }
    /// Change the learning rate (for schedules).
    pub fn set_lr(&mut self, new_lr: f64) -> Result<()> {
        if !(new_lr.is_finite() && new_lr >= 0.0) {
            return Err(invalid("lr", "a finite number >= 0", new_lr));
        }
        match &mut self.config {
            OptimizerConfig::Sgd { lr, .. } | OptimizerConfig::Adam { lr, .. } => *lr = new_lr,
        }
        Ok(())
    }

    /// Apply one update to every parameter of `m` from its gradient.
    pub fn step(&mut self, m: &mut dyn Module<F>) {
        self.steps += 1;
        let t = self.steps as i32;
        let config = self.config.clone();
        let state = &mut self.state;
        let mut k = 0usize;
        m.visit_mut(&mut |_, mut p, g| {
            if state.len() <= k {
                state.push(Vec::new());
            }
            let st = &mut state[k];
            k += 1;
            match config {
                OptimizerConfig::Sgd { lr, momentum, weight_decay, nesterov } => {
                    let (lr, mom, wd) = (F::from_f64(lr), F::from_f64(momentum), F::from_f64(weight_decay));
                    if momentum == 0.0 {
                        Zip::from(&mut p).and(&g).for_each(|p, &g| {
                            let d = g + wd * *p;
                            *p -= lr * d;
                        });
                        return;
                    }
                    let first = st.is_empty();
                    if first {
                        st.push(ArrayD::zeros(p.shape()));
                    }
                    Zip::from(&mut p).and(&g).and(&mut st[0]).for_each(|p, &g, buf| {
                        let d = g + wd * *p;
                        *buf = if first { d } else { mom * *buf + d };
                        let upd = if nesterov { d + mom * *buf } else { *buf };
                        *p -= lr * upd;
                    });
                }
                OptimizerConfig::Adam { lr, beta1, beta2, eps, weight_decay, decoupled } => {
                    if st.is_empty() {
                        st.push(ArrayD::zeros(p.shape()));
                        st.push(ArrayD::zeros(p.shape()));
                    }
                    let bc1 = 1.0 - beta1.powi(t);
                    let bc2 = 1.0 - beta2.powi(t);
                    let step_size = F::from_f64(lr / bc1);
                    let bc2_sqrt = F::from_f64(bc2.sqrt());
                    let (b1, b2, eps_f) = (F::from_f64(beta1), F::from_f64(beta2), F::from_f64(eps));
                    let (one, wd, shrink) = (F::one(), F::from_f64(weight_decay), F::from_f64(1.0 - lr * weight_decay));
                    let (m1, rest) = st.split_at_mut(1);
                    Zip::from(&mut p).and(&g).and(&mut m1[0]).and(&mut rest[0]).for_each(|p, &g, m, v| {
                        let g = if decoupled {
                            *p *= shrink;
                            g
                        } else {
                            g + wd * *p
                        };
                        *m = b1 * *m + (one - b1) * g;
                        *v = b2 * *v + (one - b2) * g * g;
                        let denom = v.sqrt() / bc2_sqrt + eps_f;
                        *p -= step_size * *m / denom;
                    });
                }
            }
        });
    }

    /// The state as named tensors (`{param}.momentum_buffer`, `{param}.exp_avg`, `{param}.exp_avg_sq`)
    /// for checkpoints, given the module it optimizes (for the names).
    pub fn state_tensors(&self, m: &dyn Module<F>) -> Vec<(String, ArrayD<F>)> {
        let names = m.param_names();
        let slots: &[&str] = match self.config {
            OptimizerConfig::Sgd { .. } => &["momentum_buffer"],
            OptimizerConfig::Adam { .. } => &["exp_avg", "exp_avg_sq"],
        };
        let mut out = Vec::new();
        for (name, st) in names.iter().zip(&self.state) {
            for (slot, a) in slots.iter().zip(st) {
                out.push((format!("{name}.{slot}"), a.clone()));
            }
        }
        out
    }

    /// Restore state saved by [`Optimizer::state_tensors`] and the step count.
    pub fn load_state_tensors(&mut self, m: &dyn Module<F>, steps: u64, tensors: &[(String, ArrayViewD<'_, F>)]) -> Result<()> {
        let mut shapes = Vec::new();
        m.visit(&mut |n, p, _| shapes.push((n.to_string(), p.shape().to_vec())));
        let slots: &[&str] = match self.config {
            OptimizerConfig::Sgd { .. } => &["momentum_buffer"],
            OptimizerConfig::Adam { .. } => &["exp_avg", "exp_avg_sq"],
        };
        let mut state = Vec::new();
        for (name, shape) in &shapes {
            let mut st = Vec::new();
            for slot in slots {
                let key = format!("{name}.{slot}");
                if let Some((_, a)) = tensors.iter().find(|(k, _)| *k == key) {
                    check_shape(&key, shape, a.shape())?;
                    st.push(a.to_owned());
                }
            }
            if !st.is_empty() && st.len() != slots.len() {
                return Err(Error::State(format!("optimizer state for {name:?} is incomplete")));
            }
            state.push(st);
        }
        if tensors.len() != state.iter().map(Vec::len).sum::<usize>() {
            return Err(Error::State("optimizer state has entries for unknown parameters".into()));
        }
        self.state = state;
        self.steps = steps;
        Ok(())
    }
}

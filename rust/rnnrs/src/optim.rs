//! Gradient clipping and optimizers with PyTorch's semantics (`clip_grad_norm_`, `SGD`, `Adam`,
//! `AdamW`, `RMSprop`). Optimizer state is kept per parameter, in the module's visiting order, and can be
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
        m.visit_mut(&mut |_, _, mut g| g.par_mapv_inplace(|v| v * c));
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
    /// `torch.optim.RMSprop` (not centered, no momentum), which is also Keras' `RMSprop`:
    /// `v = rho·v + (1 - rho)·g²`, `p -= lr·g / (√v + eps)`.
    RmsProp {
        /// Learning rate.
        lr: f64,
        /// Decay of the mean square (PyTorch's `alpha`, Keras' `rho`).
        rho: f64,
        /// Denominator term.
        eps: f64,
        /// L2 penalty added to the gradient.
        weight_decay: f64,
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
            OptimizerConfig::Sgd { lr, .. } | OptimizerConfig::Adam { lr, .. } | OptimizerConfig::RmsProp { lr, .. } => *lr,
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
            OptimizerConfig::RmsProp { rho, eps, weight_decay, .. } => {
                if !(0.0..1.0).contains(&rho) {
                    return Err(invalid("rho", "a number in [0, 1)", rho));
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
    /// Per parameter (visiting order): SGD `[momentum_buffer]` (empty until first use); Adam
    /// `[exp_avg, exp_avg_sq]`; RMSprop `[square_avg]`.
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
            OptimizerConfig::Sgd { lr, .. } | OptimizerConfig::Adam { lr, .. } | OptimizerConfig::RmsProp { lr, .. } => {
                *lr = new_lr
            }
        }
        Ok(())
    }

    /// Whether [`Optimizer::step`] would leave every parameter and every state value of `m`
    /// finite. Same arithmetic as `step`, nothing is written: a finite gradient times a huge
    /// learning rate can overflow, and the caller can then refuse the update.
    pub fn step_is_finite(&self, m: &dyn Module<F>) -> bool {
        if self.check_module(m).is_err() || check_grad_shapes(m).is_err() {
            return false;
        }
        let t = Self::bias_step(self.steps.saturating_add(1));
        let rule = Rule::new(&self.config, t);
        let mut k = 0usize;
        let mut ok = true;
        m.visit(&mut |_, p, g| {
            let st: &[ArrayD<F>] = self.state.get(k).map_or(&[], Vec::as_slice);
            k += 1;
            if !ok {
                return;
            }
            let zero = F::zero();
            ok = match (rule, st) {
                (Rule::Sgd { .. }, [buf]) => {
                    Zip::from(&p).and(&g).and(buf).all(|&p, &g, &b| {
                        let (p, b) = rule.sgd(p, g, b, false);
                        finite(&[p, b])
                    })
                }
                (Rule::Sgd { .. }, _) => Zip::from(&p).and(&g).all(|&p, &g| {
                    let (p, b) = rule.sgd(p, g, zero, true);
                    finite(&[p, b])
                }),
                (Rule::Adam { .. }, [m1, v1]) => {
                    rayon::iter::ParallelIterator::all(rayon::iter::IntoParallelIterator::into_par_iter(Zip::from(&p).and(&g).and(m1).and(v1)), |(&p, &g, &m, &v)| {
                        let (p, m, v) = rule.adam(p, g, m, v);
                        finite(&[p, m, v])
                    })
                }
                (Rule::Adam { .. }, _) => Zip::from(&p).and(&g).all(|&p, &g| {
                    let (p, m, v) = rule.adam(p, g, zero, zero);
                    finite(&[p, m, v])
                }),
                (Rule::RmsProp { .. }, [v1]) => Zip::from(&p).and(&g).and(v1).all(|&p, &g, &v| {
                    let (p, v) = rule.rmsprop(p, g, v);
                    finite(&[p, v])
                }),
                (Rule::RmsProp { .. }, _) => Zip::from(&p).and(&g).all(|&p, &g| {
                    let (p, v) = rule.rmsprop(p, g, zero);
                    finite(&[p, v])
                }),
            };
        });
        ok
    }

    /// The step number used in Adam's bias corrections: past 2^31 steps they are exactly 1
    /// (`beta^t` underflows to 0), so the count saturates there.
    fn bias_step(steps: u64) -> i32 {
        i32::try_from(steps).unwrap_or(i32::MAX)
    }

    /// `Err` unless `m` has the parameters this optimizer's state was made for (the same number, in
    /// the same order, of the same shapes): an optimizer with state (momentum, Adam's moments)
    /// belongs to one module. Always `Ok` while it holds no state (before the first step, plain SGD).
    pub fn check_module(&self, m: &dyn Module<F>) -> Result<()> {
        if self.state.iter().all(Vec::is_empty) {
            return Ok(());
        }
        let mut k = 0usize;
        let mut bad: Option<String> = None;
        m.visit(&mut |name, p, _| {
            if bad.is_none() {
                match self.state.get(k).and_then(|st| st.first()) {
                    Some(s) if s.shape() != p.shape() => {
                        bad = Some(format!("{name}: state of shape {:?}, got a parameter of shape {:?}", s.shape(), p.shape()))
                    }
                    None if k < self.state.len() => {}
                    None => bad = Some(format!("{} parameters, got more (from {name})", self.state.len())),
                    _ => {}
                }
            }
            k += 1;
        });
        if bad.is_none() && k != self.state.len() {
            bad = Some(format!("{} parameters, got {k}", self.state.len()));
        }
        match bad {
            None => Ok(()),
            Some(b) => Err(Error::State(format!(
                "optimizer: expected the module it has been stepping (its state is for another one): {b}"
            ))),
        }
    }

    /// Apply one update to every parameter of `m` from its gradient; `Err` (nothing changed) if
    /// `m` is not the module this optimizer has been stepping ([`Optimizer::check_module`]) or a
    /// gradient does not have its parameter's shape.
    pub fn step(&mut self, m: &mut dyn Module<F>) -> Result<()> {
        self.check_module(m)?;
        check_grad_shapes(m)?;
        self.steps = self.steps.saturating_add(1);
        let rule = Rule::new(&self.config, Self::bias_step(self.steps));
        let state = &mut self.state;
        let mut k = 0usize;
        m.visit_mut(&mut |_, mut p, g| {
            if state.len() <= k {
                state.push(Vec::new());
            }
            let st = &mut state[k];
            k += 1;
            match rule {
                Rule::Sgd { momentum_zero: true, .. } => {
                    Zip::from(&mut p).and(&g).for_each(|p, &g| *p = rule.sgd(*p, g, F::zero(), true).0);
                }
                Rule::Sgd { .. } => {
                    let first = st.is_empty();
                    if first {
                        st.push(ArrayD::zeros(p.shape()));
                    }
                    Zip::from(&mut p).and(&g).and(&mut st[0]).for_each(|p, &g, buf| {
                        (*p, *buf) = rule.sgd(*p, g, *buf, first);
                    });
                }
                Rule::Adam { .. } => {
                    if st.is_empty() {
                        st.push(ArrayD::zeros(p.shape()));
                        st.push(ArrayD::zeros(p.shape()));
                    }
                    let (m1, rest) = st.split_at_mut(1);
                    // Elementwise, so splitting it over the threads changes no bits.
                    Zip::from(&mut p).and(&g).and(&mut m1[0]).and(&mut rest[0]).par_for_each(|p, &g, m, v| {
                        (*p, *m, *v) = rule.adam(*p, g, *m, *v);
                    });
                }
                Rule::RmsProp { .. } => {
                    if st.is_empty() {
                        st.push(ArrayD::zeros(p.shape()));
                    }
                    Zip::from(&mut p).and(&g).and(&mut st[0]).for_each(|p, &g, v| {
                        (*p, *v) = rule.rmsprop(*p, g, *v);
                    });
                }
            }
        });
        Ok(())
    }

    /// The state as named tensors (`{param}.momentum_buffer`, `{param}.exp_avg`, `{param}.exp_avg_sq`)
    /// for checkpoints, given the module it optimizes (for the names).
    pub fn state_tensors(&self, m: &dyn Module<F>) -> Vec<(String, ArrayD<F>)> {
        let names = m.param_names();
        let slots: &[&str] = match self.config {
            OptimizerConfig::Sgd { .. } => &["momentum_buffer"],
            OptimizerConfig::Adam { .. } => &["exp_avg", "exp_avg_sq"],
            OptimizerConfig::RmsProp { .. } => &["square_avg"],
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
            OptimizerConfig::RmsProp { .. } => &["square_avg"],
        };
        let mut state = Vec::new();
        for (name, shape) in &shapes {
            let mut st = Vec::new();
            for slot in slots {
                let key = format!("{name}.{slot}");
                if let Some((_, a)) = tensors.iter().find(|(k, _)| *k == key) {
                    check_shape(&key, shape, a.shape())?;
                    if let Some(bad) = a.iter().find(|v| !v.is_finite()) {
                        return Err(Error::NonFinite(format!("{key}: expected finite values, got {bad}")));
                    }
                    if *slot == "exp_avg_sq" || *slot == "square_avg" {
                        if let Some(bad) = a.iter().find(|&&v| v < F::zero()) {
                            return Err(invalid(&key, "values >= 0 (a mean of squares)", bad));
                        }
                    }
                    st.push(a.to_owned());
                }
            }
            if !st.is_empty() && st.len() != slots.len() {
                return Err(Error::State(format!("optimizer state for {name:?} is incomplete")));
            }
            state.push(st);
        }
        if tensors.len() != state.iter().map(Vec::len).sum::<usize>() {
            let known: Vec<String> =
                shapes.iter().flat_map(|(n, _)| slots.iter().map(move |s| format!("{n}.{s}"))).collect();
            let mut unknown: Vec<&str> = tensors.iter().map(|(k, _)| k.as_str()).filter(|k| !known.iter().any(|n| n == k)).collect();
            unknown.dedup();
            let got = if unknown.is_empty() { "duplicate entries".to_string() } else { format!("{unknown:?}") };
            return Err(invalid("optimizer state", format!("entries for this model's parameters ({slots:?} each)"), got));
        }
        self.state = state;
        self.steps = steps;
        Ok(())
    }
}

/// `Err(Error::Shape)` naming the first parameter of `m` whose gradient has another shape (a
/// [`Module`] implemented outside the crate may break that contract).
fn check_grad_shapes<F: Element>(m: &dyn Module<F>) -> Result<()> {
    let mut res = Ok(());
    m.visit(&mut |name, p, g| {
        if res.is_ok() && p.shape() != g.shape() {
            let what = format!("optimizer: gradient of {name} (its parameter's shape)");
            res = check_shape(&what, p.shape(), g.shape());
        }
    });
    res
}

fn finite<F: Element>(values: &[F]) -> bool {
    values.iter().all(|v| v.is_finite())
}

/// One optimizer step's constants in the element type, and its per-element arithmetic (shared by
/// [`Optimizer::step`] and [`Optimizer::step_is_finite`], so both compute exactly the same values).
#[derive(Clone, Copy)]
enum Rule<F> {
    Sgd { lr: F, mom: F, wd: F, nesterov: bool, momentum_zero: bool },
    Adam { step_size: F, bc2_sqrt: F, b1: F, b2: F, eps: F, wd: F, shrink: F, decoupled: bool },
    RmsProp { lr: F, rho: F, eps: F, wd: F },
}

impl<F: Element> Rule<F> {
    fn new(config: &OptimizerConfig, t: i32) -> Self {
        match *config {
            OptimizerConfig::Sgd { lr, momentum, weight_decay, nesterov } => Rule::Sgd {
                lr: F::from_f64(lr),
                mom: F::from_f64(momentum),
                wd: F::from_f64(weight_decay),
                nesterov,
                momentum_zero: momentum == 0.0,
            },
            OptimizerConfig::Adam { lr, beta1, beta2, eps, weight_decay, decoupled } => {
                let bc1 = 1.0 - beta1.powi(t);
                let bc2 = 1.0 - beta2.powi(t);
                Rule::Adam {
                    step_size: F::from_f64(lr / bc1),
                    bc2_sqrt: F::from_f64(bc2.sqrt()),
                    b1: F::from_f64(beta1),
                    b2: F::from_f64(beta2),
                    eps: F::from_f64(eps),
                    wd: F::from_f64(weight_decay),
                    shrink: F::from_f64(1.0 - lr * weight_decay),
                    decoupled,
                }
            }
            OptimizerConfig::RmsProp { lr, rho, eps, weight_decay } => Rule::RmsProp {
                lr: F::from_f64(lr),
                rho: F::from_f64(rho),
                eps: F::from_f64(eps),
                wd: F::from_f64(weight_decay),
            },
        }
    }

    /// SGD: `(new parameter, new momentum buffer)`; `first` = no buffer yet.
    #[inline(always)]
    fn sgd(self, p: F, g: F, buf: F, first: bool) -> (F, F) {
        let Rule::Sgd { lr, mom, wd, nesterov, momentum_zero } = self else { unreachable!("an SGD rule") };
        let d = g + wd * p;
        if momentum_zero {
            return (p - lr * d, buf);
        }
        let buf = if first { d } else { mom * buf + d };
        let upd = if nesterov { d + mom * buf } else { buf };
        (p - lr * upd, buf)
    }

    /// Adam/AdamW: `(new parameter, new first moment, new second moment)`.
    #[inline(always)]
    fn adam(self, p: F, g: F, m: F, v: F) -> (F, F, F) {
        let Rule::Adam { step_size, bc2_sqrt, b1, b2, eps, wd, shrink, decoupled } = self else {
            unreachable!("an Adam rule")
        };
        let one = F::one();
        let (p, g) = if decoupled { (p * shrink, g) } else { (p, g + wd * p) };
        let m = b1 * m + (one - b1) * g;
        let v = b2 * v + (one - b2) * g * g;
        let denom = v.sqrt() / bc2_sqrt + eps;
        (p - step_size * m / denom, m, v)
    }

    /// RMSprop: `(new parameter, new mean square)`.
    #[inline(always)]
    fn rmsprop(self, p: F, g: F, v: F) -> (F, F) {
        let Rule::RmsProp { lr, rho, eps, wd } = self else { unreachable!("an RMSprop rule") };
        let g = g + wd * p;
        let v = rho * v + (F::one() - rho) * g * g;
        (p - lr * g / (v.sqrt() + eps), v)
    }
}

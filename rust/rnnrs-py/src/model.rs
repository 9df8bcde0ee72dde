//! `LanguageModel`: embedding/one-hot → RNN/GRU/LSTM → linear, with its optimizer, in float32 or
//! float64. The Python class `rnnrs.LanguageModel` wraps this one.

use crate::convert::{array, detached, ids, to_py};
use crate::recurrent::named;
use numpy::{IntoPyArray, PyArray3};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use rnnrs::{CellKind, LanguageModelConfig, Module, Optimizer, State};

/// A model and its optimizer (created by `set_optimizer`).
pub struct Lm<F> {
    pub model: rnnrs::LanguageModel<F>,
    pub optimizer: Option<Optimizer<F>>,
}

pub enum LmInner {
    F32(Lm<f32>),
    F64(Lm<f64>),
}

/// `with_lm!(inner, x, T => body)`: see `convert::by_dtype`.
macro_rules! with_lm {
    ($($t:tt)*) => {
        crate::convert::by_dtype!(LmInner, $($t)*)
    };
}
pub(crate) use with_lm;

/// The compiled language model; use `rnnrs.LanguageModel`.
#[pyclass(module = "rnnrs._rnnrs")]
pub struct LanguageModel {
    pub inner: LmInner,
}

type PyState<'py> = (Bound<'py, PyAny>, Option<Bound<'py, PyAny>>);

/// Extract an optional `(h, c)` state tuple (`c` None unless LSTM).
fn state_in<F: rnnrs::Element + numpy::Element>(state: Option<&Bound<'_, PyAny>>) -> PyResult<Option<State<F>>> {
    let Some(obj) = state.filter(|o| !o.is_none()) else { return Ok(None) };
    let (h, c): (Bound<'_, PyAny>, Option<Bound<'_, PyAny>>) = obj
        .extract()
        .map_err(|_| PyTypeError::new_err("state: expected a tuple (h, c) with c None for RNN/GRU, or None"))?;
    let dt = F::DTYPE;
    let h = array::<F, ndarray::Ix3>(&h, "state h", 3, dt)?.as_array().to_owned();
    let c = match c.filter(|c| !c.is_none()) {
        Some(c) => Some(array::<F, ndarray::Ix3>(&c, "state c", 3, dt)?.as_array().to_owned()),
        None => None,
    };
    Ok(Some(State { h, c }))
}

fn state_out<'py, F: numpy::Element>(py: Python<'py>, s: State<F>) -> PyState<'py> {
    let c: Option<Bound<'py, PyArray3<F>>> = s.c.map(|c| c.into_pyarray(py));
    (s.h.into_pyarray(py).into_any(), c.map(|c| c.into_any()))
}

#[pymethods]
impl LanguageModel {
    #[new]
    #[pyo3(signature = (vocab_size, embed_size, hidden_size, num_layers=1, cell="lstm", dropout=0.0, dtype="float32", seed=0, tie_weights=false, embed_dropout=0.0, locked_dropout=0.0, weight_drop=0.0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        vocab_size: usize,
        embed_size: Option<usize>,
        hidden_size: usize,
        num_layers: usize,
        cell: &str,
        dropout: f64,
        dtype: &str,
        seed: u64,
        tie_weights: bool,
        embed_dropout: f64,
        locked_dropout: f64,
        weight_drop: f64,
    ) -> PyResult<Self> {
        let cell: CellKind = cell.parse().map_err(to_py)?;
        let cfg = LanguageModelConfig { vocab_size, embed_size, hidden_size, num_layers, cell, dropout };
        let opts = rnnrs::LanguageModelOptions { tie_weights, embed_dropout, locked_dropout, weight_drop };
        let inner = match dtype {
            "float32" => LmInner::F32(Lm { model: detached(py, || rnnrs::LanguageModel::with_options(cfg, opts, seed))?, optimizer: None }),
            "float64" => LmInner::F64(Lm { model: detached(py, || rnnrs::LanguageModel::with_options(cfg, opts, seed))?, optimizer: None }),
            other => return Err(PyTypeError::new_err(format!("dtype: expected 'float32' or 'float64', got {other:?}"))),
        };
        Ok(LanguageModel { inner })
    }

    /// `"float32"` or `"float64"`.
    #[getter]
    fn dtype(&self) -> &'static str {
        match self.inner {
            LmInner::F32(_) => "float32",
            LmInner::F64(_) => "float64",
        }
    }

    /// The configuration as a dict.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let cfg = with_lm!(&self.inner, l, T => l.model.config().clone());
        let d = PyDict::new(py);
        d.set_item("vocab_size", cfg.vocab_size)?;
        d.set_item("embed_size", cfg.embed_size)?;
        d.set_item("hidden_size", cfg.hidden_size)?;
        d.set_item("num_layers", cfg.num_layers)?;
        d.set_item("cell", cfg.cell.name())?;
        d.set_item("dropout", cfg.dropout)?;
        let o = with_lm!(&self.inner, l, T => l.model.options().clone());
        d.set_item("tie_weights", o.tie_weights)?;
        d.set_item("embed_dropout", o.embed_dropout)?;
        d.set_item("locked_dropout", o.locked_dropout)?;
        d.set_item("weight_drop", o.weight_drop)?;
        Ok(d)
    }

    /// Logits `(T, B, V)` for ids `(T, B)` and the final state `(h, c)` (inference).
    #[pyo3(signature = (ids, state=None))]
    fn logits<'py>(&self, py: Python<'py>, ids: &Bound<'py, PyAny>, state: Option<&Bound<'py, PyAny>>) -> PyResult<(Bound<'py, PyAny>, PyState<'py>)> {
        let x = crate::convert::ids::<ndarray::Ix2>(ids, "ids", 2)?;
        with_lm!(&self.inner, l, T => {
            let st = state_in::<T>(state)?;
            let m = &l.model;
            let (logits, s) = detached(py, || m.logits(x.view(), st.as_ref()))?;
            Ok((logits.into_pyarray(py).into_any(), state_out(py, s)))
        })
    }

    /// Mean cross-entropy of `targets` given `inputs` (both `(T, B)`), and the final state (inference).
    #[pyo3(signature = (inputs, targets, state=None))]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyAny>,
        targets: &Bound<'py, PyAny>,
        state: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(f64, PyState<'py>)> {
        let x = ids::<ndarray::Ix2>(inputs, "inputs", 2)?;
        let y = ids::<ndarray::Ix2>(targets, "targets", 2)?;
        with_lm!(&self.inner, l, T => {
            let st = state_in::<T>(state)?;
            let m = &l.model;
            let (loss, s) = detached(py, || m.evaluate(x.view(), y.view(), st.as_ref()))?;
            Ok((loss, state_out(py, s)))
        })
    }

    /// Training-mode forward + loss + backward, **adding** into the gradients; returns `(loss, state)`.
    #[pyo3(signature = (inputs, targets, state=None))]
    fn loss_and_grad<'py>(
        &mut self,
        py: Python<'py>,
        inputs: &Bound<'py, PyAny>,
        targets: &Bound<'py, PyAny>,
        state: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(f64, PyState<'py>)> {
        let x = ids::<ndarray::Ix2>(inputs, "inputs", 2)?;
        let y = ids::<ndarray::Ix2>(targets, "targets", 2)?;
        with_lm!(&mut self.inner, l, T => {
            let st = state_in::<T>(state)?;
            let m = &mut l.model;
            let (loss, s) = detached(py, || m.loss_and_grad(x.view(), y.view(), st.as_ref()))?;
            Ok((loss, state_out(py, s)))
        })
    }

    /// One full step (zero grads, forward, loss, backward, clip, update); returns
    /// `(loss, grad_norm, state)`. Raises `NonFiniteError` (parameters unchanged) on a NaN/Inf loss
    /// or gradient.
    #[pyo3(signature = (inputs, targets, state=None, clip=None))]
    fn train_step<'py>(
        &mut self,
        py: Python<'py>,
        inputs: &Bound<'py, PyAny>,
        targets: &Bound<'py, PyAny>,
        state: Option<&Bound<'py, PyAny>>,
        clip: Option<f64>,
    ) -> PyResult<(f64, f64, PyState<'py>)> {
        let x = ids::<ndarray::Ix2>(inputs, "inputs", 2)?;
        let y = ids::<ndarray::Ix2>(targets, "targets", 2)?;
        with_lm!(&mut self.inner, l, T => {
            let st = state_in::<T>(state)?;
            let Some(opt) = l.optimizer.as_mut() else {
                return Err(PyValueError::new_err("train_step: expected an optimizer, got none (call set_optimizer first)"));
            };
            let m = &mut l.model;
            let (stats, s) = detached(py, || m.train_step(x.view(), y.view(), st.as_ref(), clip, opt))?;
            Ok((stats.loss, stats.grad_norm, state_out(py, s)))
        })
    }

    /// Choose the optimizer: `"sgd"`, `"adam"` or `"adamw"` (fresh state).
    #[pyo3(signature = (name, lr, momentum=0.0, weight_decay=0.0, nesterov=false, betas=(0.9, 0.999), eps=1e-8))]
    #[allow(clippy::too_many_arguments)]
    fn set_optimizer(
        &mut self,
        name: &str,
        lr: f64,
        momentum: f64,
        weight_decay: f64,
        nesterov: bool,
        betas: (f64, f64),
        eps: f64,
    ) -> PyResult<()> {
        let cfg = crate::optimizer::config(name, lr, momentum, weight_decay, nesterov, betas, eps)?;
        with_lm!(&mut self.inner, l, T => crate::optimizer::set(&mut l.optimizer, cfg))
    }

    /// Change the learning rate of the optimizer.
    fn set_lr(&mut self, lr: f64) -> PyResult<()> {
        with_lm!(&mut self.inner, l, T => crate::optimizer::set_lr(&mut l.optimizer, lr))
    }

    /// `(steps, [(name, array)])` of the optimizer, for checkpoints.
    fn optimizer_state<'py>(&self, py: Python<'py>) -> PyResult<(u64, Bound<'py, PyList>)> {
        with_lm!(&self.inner, l, T => crate::optimizer::state(py, &l.optimizer, &l.model))
    }

    /// Restore what `optimizer_state` returned (after `set_optimizer` with the same settings).
    fn load_optimizer_state(&mut self, steps: u64, items: Vec<(String, Bound<'_, PyAny>)>) -> PyResult<()> {
        with_lm!(&mut self.inner, l, T => crate::optimizer::load_state(&mut l.optimizer, &l.model, steps, &items))
    }

    /// Copies of the parameters, `[(name, array)]`: `embedding.weight`, `rnn.weight_ih_l0`, …, `linear.bias`.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        with_lm!(&self.inner, l, T => named(py, l.model.state_dict()))
    }

    /// Copies of the gradients, same names as `state_dict()`.
    fn grads<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        with_lm!(&self.inner, l, T => named(py, l.model.grad_dict()))
    }

    /// Replace all parameters (all names exactly once, same shapes; nothing changes on error).
    fn load_state_dict(&mut self, items: Vec<(String, Bound<'_, PyAny>)>) -> PyResult<()> {
        with_lm!(&mut self.inner, l, T => {
            let dt = <T as rnnrs::Element>::DTYPE;
            let arrays = dyn_arrays::<T>(&items, dt)?;
            let views: Vec<(String, ndarray::ArrayViewD<'_, T>)> = arrays.iter().map(|(n, a)| (n.clone(), a.as_array())).collect();
            l.model.load_state_dict(&views).map_err(to_py)
        })
    }

    /// Re-draw the parameters with the named initialisers (see `rnnrs::init`); nothing changes on
    /// error.
    #[pyo3(signature = (init, recurrent_init=None, init_std=0.01, forget_bias=None, seed=0))]
    fn init_parameters(&mut self, init: &str, recurrent_init: Option<&str>, init_std: f64, forget_bias: Option<f64>, seed: u64) -> PyResult<()> {
        with_lm!(&mut self.inner, x, T => {
            let (cell, hidden) = (x.model.config().cell, x.model.config().hidden_size);
            crate::init::apply(&mut x.model, cell, hidden, init, recurrent_init, init_std, forget_bias, seed)
        })
    }

    /// Set every gradient to zero.
    fn zero_grad(&mut self) {
        with_lm!(&mut self.inner, l, T => l.model.zero_grad())
    }

    /// Number of trainable scalars.
    fn num_params(&self) -> usize {
        with_lm!(&self.inner, l, T => l.model.num_params())
    }

    /// `(seed, calls)` of the dropout stream.
    fn dropout_state(&self) -> (u64, u64) {
        with_lm!(&self.inner, l, T => l.model.rnn().dropout_state())
    }

    /// Restore the dropout stream position.
    fn set_dropout_state(&mut self, seed: u64, calls: u64) {
        with_lm!(&mut self.inner, l, T => l.model.rnn_mut().set_dropout_state(seed, calls))
    }
}

/// Extract `[(name, array)]` of any rank with element `T`.
pub fn dyn_arrays<'py, T: numpy::Element>(
    items: &[(String, Bound<'py, PyAny>)],
    dt: &str,
) -> PyResult<Vec<(String, numpy::PyReadonlyArrayDyn<'py, T>)>> {
    let mut arrays = Vec::with_capacity(items.len());
    for (name, obj) in items {
        let ndim = obj.cast::<numpy::PyUntypedArray>().map(numpy::PyUntypedArrayMethods::ndim).unwrap_or(0);
        arrays.push((name.clone(), array::<T, ndarray::IxDyn>(obj, name, ndim, dt)?));
    }
    Ok(arrays)
}

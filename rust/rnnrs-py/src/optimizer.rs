//! The optimizer slot the Python model classes (`LanguageModel`, `SeqModel`) share: choosing the
//! optimizer, changing its learning rate, and its state for checkpoints. Each `#[pymethods]`
//! method is one call into these.

use crate::model::dyn_arrays;
use crate::recurrent::named;
use crate::convert::to_py;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;
use rnnrs::{Element, Module, Optimizer, OptimizerConfig};

/// The optimizer named by `set_optimizer(name, ...)`: `"sgd"`, `"adam"`, `"adamw"` or `"rmsprop"`
/// (`betas.0` is its `rho`).
#[allow(clippy::too_many_arguments)]
pub fn config(
    name: &str,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    nesterov: bool,
    betas: (f64, f64),
    eps: f64,
) -> PyResult<OptimizerConfig> {
    Ok(match name {
        "sgd" => OptimizerConfig::Sgd { lr, momentum, weight_decay, nesterov },
        "adam" | "adamw" => OptimizerConfig::Adam { lr, beta1: betas.0, beta2: betas.1, eps, weight_decay, decoupled: name == "adamw" },
        "rmsprop" => OptimizerConfig::RmsProp { lr, rho: betas.0, eps, weight_decay },
        other => return Err(PyValueError::new_err(format!("optimizer: expected 'sgd', 'adam', 'adamw' or 'rmsprop', got {other:?}"))),
    })
}

fn missing(what: &str) -> PyErr {
    PyValueError::new_err(format!("{what}: expected an optimizer, got none (call set_optimizer first)"))
}

/// A fresh optimizer in `slot`.
pub fn set<T: Element>(slot: &mut Option<Optimizer<T>>, cfg: OptimizerConfig) -> PyResult<()> {
    *slot = Some(Optimizer::new(cfg).map_err(to_py)?);
    Ok(())
}

/// Change the learning rate of the optimizer in `slot`.
pub fn set_lr<T: Element>(slot: &mut Option<Optimizer<T>>, lr: f64) -> PyResult<()> {
    slot.as_mut().ok_or_else(|| missing("set_lr"))?.set_lr(lr).map_err(to_py)
}

/// `(steps, [(name, array)])` of the optimizer in `slot` (`(0, [])` without one).
pub fn state<'py, T: Element + numpy::Element>(
    py: Python<'py>,
    slot: &Option<Optimizer<T>>,
    model: &dyn Module<T>,
) -> PyResult<(u64, Bound<'py, PyList>)> {
    match slot {
        Some(o) => Ok((o.steps(), named(py, o.state_tensors(model))?)),
        None => Ok((0, PyList::empty(py))),
    }
}

/// Restore what [`state`] returned into the optimizer in `slot`.
pub fn load_state<T: Element + numpy::Element>(
    slot: &mut Option<Optimizer<T>>,
    model: &dyn Module<T>,
    steps: u64,
    items: &[(String, Bound<'_, PyAny>)],
) -> PyResult<()> {
    let arrays = dyn_arrays::<T>(items, T::DTYPE)?;
    let views: Vec<(String, ndarray::ArrayViewD<'_, T>)> = arrays.iter().map(|(n, a)| (n.clone(), a.as_array())).collect();
    let opt = slot.as_mut().ok_or_else(|| missing("load_optimizer_state"))?;
    opt.load_state_tensors(model, steps, &views).map_err(to_py)
}

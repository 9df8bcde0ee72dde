//! `SeqModel`: a sequential stack (embedding, recurrent, dense, dropout) with a loss and its optimizer,
//! in float32 or float64. The Python class `rnnrs.Sequential` wraps this one.

use crate::convert::{array, detached, ids, to_py};
use crate::model::dyn_arrays;
use crate::recurrent::{named, opt_lengths};
use numpy::{IntoPyArray, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;
use rnnrs::{Module, Optimizer, SeqInput, SeqModelConfig, SeqStats, SeqTarget};

/// A model and its optimizer (created by `set_optimizer`).
pub struct Sm<F> {
    pub model: rnnrs::SeqModel<F>,
    pub optimizer: Option<Optimizer<F>>,
}

pub enum SmInner {
    F32(Sm<f32>),
    F64(Sm<f64>),
}

/// `with_sm!(inner, x, T => body)`: see `convert::by_dtype`.
macro_rules! with_sm {
    ($($t:tt)*) => {
        crate::convert::by_dtype!(SmInner, $($t)*)
    };
}

/// The compiled sequential model; use `rnnrs.Sequential`.
#[pyclass(module = "rnnrs._rnnrs")]
pub struct SeqModel {
    inner: SmInner,
}

/// Inputs extracted while attached: ids `(B, T)` or features `(B, T, F)`.
enum In<'py, T: numpy::Element> {
    Ids(ndarray::Array2<usize>),
    Features(numpy::PyReadonlyArray3<'py, T>),
}

impl<'py, T: numpy::Element + rnnrs::Element> In<'py, T> {
    fn extract(obj: &Bound<'py, PyAny>, takes_ids: bool) -> PyResult<Self> {
        if takes_ids {
            Ok(In::Ids(ids::<ndarray::Ix2>(obj, "x", 2)?))
        } else {
            Ok(In::Features(array::<T, ndarray::Ix3>(obj, "x", 3, T::DTYPE)?))
        }
    }
    fn view(&self) -> SeqInput<'_, T> {
        match self {
            In::Ids(a) => SeqInput::Ids(a.view()),
            In::Features(a) => SeqInput::Features(a.as_array()),
        }
    }
}

/// Targets extracted while attached: class ids or values, any rank.
enum Tg<'py, T: numpy::Element> {
    Ids(ndarray::ArrayD<usize>),
    Values(numpy::PyReadonlyArrayDyn<'py, T>),
}

impl<'py, T: numpy::Element + rnnrs::Element> Tg<'py, T> {
    fn extract(obj: &Bound<'py, PyAny>, sparse: bool) -> PyResult<Self> {
        let Ok(a) = obj.cast::<PyUntypedArray>() else {
            return Err(PyTypeError::new_err("y: expected a numpy.ndarray"));
        };
        let ndim = a.ndim();
        if sparse {
            Ok(Tg::Ids(ids::<ndarray::IxDyn>(obj, "y", ndim)?))
        } else {
            Ok(Tg::Values(array::<T, ndarray::IxDyn>(obj, "y", ndim, T::DTYPE)?))
        }
    }
    fn view(&self) -> SeqTarget<'_, T> {
        match self {
            Tg::Ids(a) => SeqTarget::Ids(a.view()),
            Tg::Values(a) => SeqTarget::Values(a.as_array()),
        }
    }
}

type Stats = (f64, usize, usize, f64);

fn stats(s: SeqStats) -> Stats {
    (s.loss, s.correct, s.count, s.grad_norm)
}

#[pymethods]
impl SeqModel {
    /// A model from its JSON configuration (`{"input_features": F, "layers": [...], "loss": ...}`,
    /// see `rnnrs::SeqModelConfig`), dtype `"float32"` or `"float64"`, initialised from `seed`.
    #[new]
    #[pyo3(signature = (config_json, dtype="float32", seed=0))]
    fn new(config_json: &str, dtype: &str, seed: u64) -> PyResult<Self> {
        let cfg = SeqModelConfig::from_json(config_json).map_err(to_py)?;
        let inner = match dtype {
            "float32" => SmInner::F32(Sm { model: rnnrs::SeqModel::new(cfg, seed).map_err(to_py)?, optimizer: None }),
            "float64" => SmInner::F64(Sm { model: rnnrs::SeqModel::new(cfg, seed).map_err(to_py)?, optimizer: None }),
            other => return Err(PyTypeError::new_err(format!("dtype: expected 'float32' or 'float64', got {other:?}"))),
        };
        Ok(SeqModel { inner })
    }

    /// `"float32"` or `"float64"`.
    #[getter]
    fn dtype(&self) -> &'static str {
        match self.inner {
            SmInner::F32(_) => "float32",
            SmInner::F64(_) => "float64",
        }
    }

    /// The configuration as JSON.
    #[getter]
    fn config_json(&self) -> String {
        with_sm!(&self.inner, l, T => l.model.config().to_json())
    }

    /// Whether `x` is token ids `(B, T)` (first layer an embedding) rather than features `(B, T, F)`.
    #[getter]
    fn takes_ids(&self) -> bool {
        with_sm!(&self.inner, l, T => l.model.takes_ids())
    }

    /// The output for `x`, batch-first: `(B, C)` or `(B, T, C)`; `lengths (B,)` for a padded batch.
    #[pyo3(signature = (x, lengths=None))]
    fn predict<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>, lengths: Option<&Bound<'py, PyAny>>) -> PyResult<Bound<'py, PyAny>> {
        let lengths = opt_lengths(lengths)?;
        with_sm!(&self.inner, l, T => {
            let x = In::<T>::extract(x, l.model.takes_ids())?;
            let (xv, model) = (x.view(), &l.model);
            let out = detached(py, || model.predict(xv, lengths.as_deref()))?;
            Ok(out.into_pyarray(py).into_any())
        })
    }

    /// `(loss, correct, count, 0.0)` of a batch in inference mode; `sample_weight (B,)` scales
    /// each example's loss.
    #[pyo3(signature = (x, y, lengths=None, sample_weight=None))]
    fn evaluate(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        y: &Bound<'_, PyAny>,
        lengths: Option<&Bound<'_, PyAny>>,
        sample_weight: Option<Vec<f64>>,
    ) -> PyResult<Stats> {
        let lengths = opt_lengths(lengths)?;
        let w = sample_weight.as_deref();
        with_sm!(&self.inner, l, T => {
            let sparse = l.model.config().loss == rnnrs::LossKind::SparseCategoricalCrossentropy;
            let x = In::<T>::extract(x, l.model.takes_ids())?;
            let y = Tg::<T>::extract(y, sparse)?;
            let (xv, yv, model) = (x.view(), y.view(), &l.model);
            detached(py, || model.evaluate_weighted(xv, yv, lengths.as_deref(), w)).map(stats)
        })
    }

    /// One training step (forward, loss, backward, clip, update) in one call:
    /// `(loss, correct, count, grad_norm)`; `sample_weight (B,)` scales each example's loss.
    #[pyo3(signature = (x, y, lengths=None, clip=None, sample_weight=None))]
    fn train_step(
        &mut self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        y: &Bound<'_, PyAny>,
        lengths: Option<&Bound<'_, PyAny>>,
        clip: Option<f64>,
        sample_weight: Option<Vec<f64>>,
    ) -> PyResult<Stats> {
        let lengths = opt_lengths(lengths)?;
        let w = sample_weight.as_deref();
        with_sm!(&mut self.inner, l, T => {
            let sparse = l.model.config().loss == rnnrs::LossKind::SparseCategoricalCrossentropy;
            let x = In::<T>::extract(x, l.model.takes_ids())?;
            let y = Tg::<T>::extract(y, sparse)?;
            let Some(opt) = l.optimizer.as_mut() else {
                return Err(PyValueError::new_err("train_step: expected an optimizer, got none (call set_optimizer first)"));
            };
            let (xv, yv, model) = (x.view(), y.view(), &mut l.model);
            detached(py, || model.train_step_weighted(xv, yv, lengths.as_deref(), w, clip, opt)).map(stats)
        })
    }

    /// Choose the optimizer: `"sgd"`, `"adam"`, `"adamw"` or `"rmsprop"` (`betas[0]` is its rho;
    /// fresh state).
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
        with_sm!(&mut self.inner, l, T => crate::optimizer::set(&mut l.optimizer, cfg))
    }

    /// Change the learning rate of the optimizer.
    fn set_lr(&mut self, lr: f64) -> PyResult<()> {
        with_sm!(&mut self.inner, l, T => crate::optimizer::set_lr(&mut l.optimizer, lr))
    }

    /// `(steps, [(name, array)])` of the optimizer, for checkpoints.
    fn optimizer_state<'py>(&self, py: Python<'py>) -> PyResult<(u64, Bound<'py, PyList>)> {
        with_sm!(&self.inner, l, T => crate::optimizer::state(py, &l.optimizer, &l.model))
    }

    /// Restore what `optimizer_state` returned (after `set_optimizer` with the same settings).
    fn load_optimizer_state(&mut self, steps: u64, items: Vec<(String, Bound<'_, PyAny>)>) -> PyResult<()> {
        with_sm!(&mut self.inner, l, T => crate::optimizer::load_state(&mut l.optimizer, &l.model, steps, &items))
    }

    /// Copies of the parameters, `[(name, array)]`: `layers.{i}.weight`, `layers.{i}.weight_ih_l0`, …
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        with_sm!(&self.inner, l, T => named(py, l.model.state_dict()))
    }

    /// Copies of the gradients of the last step, same names as `state_dict()`.
    fn grads<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        with_sm!(&self.inner, l, T => named(py, l.model.grad_dict()))
    }

    /// Replace all parameters (all names exactly once, same shapes; nothing changes on error).
    fn load_state_dict(&mut self, items: Vec<(String, Bound<'_, PyAny>)>) -> PyResult<()> {
        with_sm!(&mut self.inner, l, T => {
            let arrays = dyn_arrays::<T>(&items, <T as rnnrs::Element>::DTYPE)?;
            let views: Vec<(String, ndarray::ArrayViewD<'_, T>)> = arrays.iter().map(|(n, a)| (n.clone(), a.as_array())).collect();
            l.model.load_state_dict(&views).map_err(to_py)
        })
    }

    /// Number of trainable scalars.
    fn num_params(&self) -> usize {
        with_sm!(&self.inner, l, T => l.model.num_params())
    }

    /// `(seed, calls)` of the dropout stream.
    fn dropout_state(&self) -> (u64, u64) {
        with_sm!(&self.inner, l, T => l.model.dropout_state())
    }

    /// Restore the dropout stream position.
    fn set_dropout_state(&mut self, seed: u64, calls: u64) {
        with_sm!(&mut self.inner, l, T => l.model.set_dropout_state(seed, calls))
    }
}

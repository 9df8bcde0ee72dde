//! `Recurrent`: the RNN/GRU/LSTM stack, in float32 or float64.

use crate::convert::{array, detached, to_py};
use numpy::{IntoPyArray, PyArray3};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use rnnrs::{CellKind, Module, RecurrentConfig, Tape};

/// A layer and the tape of its last training forward.
pub struct Layer<F> {
    pub net: rnnrs::Recurrent<F>,
    pub tape: Option<Tape<F>>,
}

pub enum Inner {
    F32(Layer<f32>),
    F64(Layer<f64>),
}

/// `with_layer!(inner, x, T => body)`: see `convert::by_dtype`.
macro_rules! with_layer {
    ($($t:tt)*) => {
        crate::convert::by_dtype!(Inner, $($t)*)
    };
}

/// Multi-layer, optionally bidirectional RNN/GRU/LSTM (time-major). Use the Python classes
/// `rnnrs.RNN`, `rnnrs.GRU` and `rnnrs.LSTM`, which wrap this one.
#[pyclass(module = "rnnrs._rnnrs")]
pub struct Recurrent {
    inner: Inner,
}

type StateOut<'py, T> = Option<Bound<'py, PyArray3<T>>>;
/// `(y or dx, h, c or None)` as returned to Python.
type Triple<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>, Option<Bound<'py, PyAny>>);

fn opt_array<'py, T: numpy::Element>(
    obj: Option<&Bound<'py, PyAny>>,
    what: &str,
    dtype: &str,
) -> PyResult<Option<numpy::PyReadonlyArray3<'py, T>>> {
    match obj {
        Some(o) if !o.is_none() => Ok(Some(array(o, what, 3, dtype)?)),
        _ => Ok(None),
    }
}

#[pymethods]
impl Recurrent {
    #[new]
    #[pyo3(signature = (cell, input_size, hidden_size, num_layers=1, bidirectional=false, dropout=0.0, dtype="float32", seed=0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        cell: &str,
        input_size: i64,
        hidden_size: i64,
        num_layers: i64,
        bidirectional: bool,
        dropout: f64,
        dtype: &str,
        seed: u64,
    ) -> PyResult<Self> {
        let size = |what: &str, v: i64| -> PyResult<usize> {
            if v < 1 {
                Err(PyValueError::new_err(format!("{what}: expected an integer >= 1, got {v}")))
            } else {
                Ok(v as usize)
            }
        };
        let cell: CellKind = cell.parse().map_err(to_py)?;
        let cfg = RecurrentConfig::new(cell, size("input_size", input_size)?, size("hidden_size", hidden_size)?)
            .num_layers(size("num_layers", num_layers)?)
            .bidirectional(bidirectional)
            .dropout(dropout);
        cfg.validate().map_err(to_py)?;
        let bytes = if dtype == "float64" { 8 } else { 4 };
        rnnrs::model::check_recurrent_size(&cfg, bytes).map_err(to_py)?;
        let inner = match dtype {
            "float32" => Inner::F32(Layer { net: detached(py, || rnnrs::Recurrent::new(cfg, seed))?, tape: None }),
            "float64" => Inner::F64(Layer { net: detached(py, || rnnrs::Recurrent::new(cfg, seed))?, tape: None }),
            other => return Err(PyTypeError::new_err(format!("dtype: expected 'float32' or 'float64', got {other:?}"))),
        };
        Ok(Recurrent { inner })
    }

    /// `"float32"` or `"float64"`.
    #[getter]
    fn dtype(&self) -> &'static str {
        match self.inner {
            Inner::F32(_) => "float32",
            Inner::F64(_) => "float64",
        }
    }

    /// The configuration as a dict.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let cfg = with_layer!(&self.inner, l, T => l.net.config().clone());
        let d = PyDict::new(py);
        d.set_item("cell", cfg.cell.name())?;
        d.set_item("input_size", cfg.input_size)?;
        d.set_item("hidden_size", cfg.hidden_size)?;
        d.set_item("num_layers", cfg.num_layers)?;
        d.set_item("bidirectional", cfg.bidirectional)?;
        d.set_item("dropout", cfg.dropout)?;
        Ok(d)
    }

    /// Forward pass over `x (T, B, I)`; returns `(y, h_n, c_n or None)`. With `train=True` the
    /// pass applies dropout and keeps what `backward` needs. `lengths` (`B` ints in `[0, T]`, any
    /// order) marks a padded batch: outputs past each end are zero, final states are taken at each
    /// sequence's true last step, and the following `backward` ignores the padding.
    #[pyo3(signature = (x, h0=None, c0=None, train=true, lengths=None))]
    fn forward<'py>(
        &mut self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        h0: Option<&Bound<'py, PyAny>>,
        c0: Option<&Bound<'py, PyAny>>,
        train: bool,
        lengths: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Triple<'py>> {
        let lengths = opt_lengths(lengths)?;
        with_layer!(&mut self.inner, l, T => {
            let dt = <T as rnnrs::Element>::DTYPE;
            let x = array::<T, ndarray::Ix3>(x, "x", 3, dt)?;
            let h0 = opt_array::<T>(h0, "h0", dt)?;
            let c0 = opt_array::<T>(c0, "c0", dt)?;
            let (xv, h0v, c0v) = (x.as_array(), h0.as_ref().map(|a| a.as_array()), c0.as_ref().map(|a| a.as_array()));
            // A broadcast view can have a huge shape without memory behind it: check what the
            // pass would allocate before starting it.
            let (t, b, _) = xv.dim();
            rnnrs::model::check_recurrent_batch(l.net.config(), "x", t, b, std::mem::size_of::<T>()).map_err(to_py)?;
            l.tape = None;
            let net = &mut l.net;
            let lens = lengths.as_deref();
            let (out, tape) = detached(py, || {
                if train {
                    net.forward_train_lengths(xv, h0v, c0v, lens).map(|(o, t)| (o, Some(t)))
                } else {
                    net.forward_lengths(xv, h0v, c0v, lens).map(|o| (o, None))
                }
            })?;
            l.tape = tape;
            let c: StateOut<'py, T> = out.c_n.map(|c| c.into_pyarray(py));
            Ok((out.y.into_pyarray(py).into_any(), out.h_n.into_pyarray(py).into_any(), c.map(|c| c.into_any())))
        })
    }

    /// Backward pass for the last training forward; returns `(dx, dh0, dc0 or None)` and adds the
    /// parameter gradients into `grads()`.
    #[pyo3(signature = (dy, dh_n=None, dc_n=None))]
    fn backward<'py>(
        &mut self,
        py: Python<'py>,
        dy: &Bound<'py, PyAny>,
        dh_n: Option<&Bound<'py, PyAny>>,
        dc_n: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Triple<'py>> {
        with_layer!(&mut self.inner, l, T => {
            let dt = <T as rnnrs::Element>::DTYPE;
            let dy = array::<T, ndarray::Ix3>(dy, "dy", 3, dt)?;
            let dh = opt_array::<T>(dh_n, "dh_n", dt)?;
            let dc = opt_array::<T>(dc_n, "dc_n", dt)?;
            let Some(tape) = l.tape.as_ref() else {
                return Err(PyValueError::new_err(
                    "backward: expected a preceding forward in training mode, got none (call train() and forward first)",
                ));
            };
            let (dyv, dhv, dcv) = (dy.as_array(), dh.as_ref().map(|a| a.as_array()), dc.as_ref().map(|a| a.as_array()));
            let net = &mut l.net;
            let g = detached(py, || net.backward(tape, dyv, dhv, dcv))?;
            let c: StateOut<'py, T> = g.dc0.map(|c| c.into_pyarray(py));
            let dx = g.dx.expect("dense input has an input gradient");
            Ok((dx.into_pyarray(py).into_any(), g.dh0.into_pyarray(py).into_any(), c.map(|c| c.into_any())))
        })
    }

    /// Copies of the parameters as a list of `(name, array)` in PyTorch order.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        with_layer!(&self.inner, l, T => named(py, l.net.state_dict()))
    }

    /// Copies of the accumulated gradients, same names and order as `state_dict()`.
    fn grads<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        with_layer!(&self.inner, l, T => named(py, l.net.grad_dict()))
    }

    /// Replace all parameters from `(name, array)` pairs; every name exactly once, shapes and dtype
    /// must match. Nothing changes on error.
    fn load_state_dict(&mut self, items: Vec<(String, Bound<'_, PyAny>)>) -> PyResult<()> {
        with_layer!(&mut self.inner, l, T => {
            let dt = <T as rnnrs::Element>::DTYPE;
            let arrays = crate::model::dyn_arrays::<T>(&items, dt)?;
            let views: Vec<(String, ndarray::ArrayViewD<'_, T>)> = arrays.iter().map(|(n, a)| (n.clone(), a.as_array())).collect();
            l.tape = None;
            l.net.load_state_dict(&views).map_err(to_py)
        })
    }

    /// Re-draw the parameters with the named initialisers (see `rnnrs::init`); nothing changes on
    /// error.
    #[pyo3(signature = (init, recurrent_init=None, init_std=0.01, forget_bias=None, seed=0))]
    fn init_parameters(&mut self, init: &str, recurrent_init: Option<&str>, init_std: f64, forget_bias: Option<f64>, seed: u64) -> PyResult<()> {
        with_layer!(&mut self.inner, x, T => {
            let (cell, hidden) = (x.net.config().cell, x.net.config().hidden_size);
            crate::init::apply(&mut x.net, cell, hidden, init, recurrent_init, init_std, forget_bias, seed)?;
            x.tape = None; // (recorded with the old weights)
            Ok(())
        })
    }

    /// Set every gradient to zero.
    fn zero_grad(&mut self) {
        with_layer!(&mut self.inner, l, T => l.net.zero_grad())
    }

    /// Drop the kept forward state (what `eval()` does).
    fn clear_tape(&mut self) {
        with_layer!(&mut self.inner, l, T => l.tape = None)
    }

    /// `(seed, calls)` of the dropout stream.
    fn dropout_state(&self) -> (u64, u64) {
        with_layer!(&self.inner, l, T => l.net.dropout_state())
    }

    /// Restore the dropout stream position.
    fn set_dropout_state(&mut self, seed: u64, calls: u64) {
        with_layer!(&mut self.inner, l, T => l.net.set_dropout_state(seed, calls))
    }
}

/// Optional sequence lengths from a 1-D integer array (any integer dtype), checked non-negative.
pub fn opt_lengths(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<usize>>> {
    match obj {
        Some(o) if !o.is_none() => Ok(Some(crate::convert::ids::<ndarray::Ix1>(o, "lengths", 1)?.to_vec())),
        _ => Ok(None),
    }
}

/// `[(name, ndarray)]` from owned arrays (moved into NumPy, no copy).
pub fn named<'py, T: numpy::Element>(py: Python<'py>, items: Vec<(String, ndarray::ArrayD<T>)>) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for (n, a) in items {
        list.append((n, a.into_pyarray(py)))?;
    }
    Ok(list)
}

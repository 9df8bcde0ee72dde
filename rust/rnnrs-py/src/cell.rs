//! `RecurrentCell`: one RNN/GRU/LSTM time step with BPTT across calls, in float32 or float64.

use crate::convert::{array, detached, to_py};
use crate::recurrent::named;
use numpy::{IntoPyArray, PyArray2};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use rnnrs::{CellKind, Module};

enum Inner {
    F32(rnnrs::RecurrentCell<f32>),
    F64(rnnrs::RecurrentCell<f64>),
}

/// `with_cell!(inner, x, T => body)`: see `convert::by_dtype`.
macro_rules! with_cell {
    ($($t:tt)*) => {
        crate::convert::by_dtype!(Inner, $($t)*)
    };
}

/// One time step of an RNN, GRU or LSTM. Use `rnnrs.RNNCell`, `rnnrs.GRUCell` and
/// `rnnrs.LSTMCell`, which wrap this one.
#[pyclass(module = "rnnrs._rnnrs")]
pub struct RecurrentCell {
    inner: Inner,
}

/// `(h, c or None)` or `(dx, dh, dc or None)` as returned to Python.
type Out<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>, Option<Bound<'py, PyAny>>);

fn opt2<'py, T: numpy::Element>(
    obj: Option<&Bound<'py, PyAny>>,
    what: &str,
    dtype: &str,
) -> PyResult<Option<numpy::PyReadonlyArray2<'py, T>>> {
    match obj {
        Some(o) if !o.is_none() => Ok(Some(array(o, what, 2, dtype)?)),
        _ => Ok(None),
    }
}

fn out2<'py, T: numpy::Element>(py: Python<'py>, a: ndarray::Array2<T>) -> Bound<'py, PyAny> {
    let a: Bound<'py, PyArray2<T>> = a.into_pyarray(py);
    a.into_any()
}

#[pymethods]
impl RecurrentCell {
    #[new]
    #[pyo3(signature = (cell, input_size, hidden_size, dtype="float32", seed=0))]
    fn new(py: Python<'_>, cell: &str, input_size: i64, hidden_size: i64, dtype: &str, seed: u64) -> PyResult<Self> {
        let size = |what: &str, v: i64| -> PyResult<usize> {
            usize::try_from(v)
                .ok()
                .filter(|&v| v >= 1)
                .ok_or_else(|| PyValueError::new_err(format!("{what}: expected an integer >= 1, got {v}")))
        };
        let cell: CellKind = cell.parse().map_err(to_py)?;
        let (i, h) = (size("input_size", input_size)?, size("hidden_size", hidden_size)?);
        let inner = match dtype {
            "float32" => Inner::F32(detached(py, || rnnrs::RecurrentCell::new(cell, i, h, seed))?),
            "float64" => Inner::F64(detached(py, || rnnrs::RecurrentCell::new(cell, i, h, seed))?),
            other => return Err(PyTypeError::new_err(format!("dtype: expected 'float32' or 'float64', got {other:?}"))),
        };
        Ok(RecurrentCell { inner })
    }

    /// `"float32"` or `"float64"`.
    #[getter]
    fn dtype(&self) -> &'static str {
        with_cell!(&self.inner, _c, T => <T as rnnrs::Element>::DTYPE)
    }

    /// `{"cell", "input_size", "hidden_size"}`.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let cfg = with_cell!(&self.inner, c, T => c.config().clone());
        let d = PyDict::new(py);
        d.set_item("cell", cfg.cell.name())?;
        d.set_item("input_size", cfg.input_size)?;
        d.set_item("hidden_size", cfg.hidden_size)?;
        Ok(d)
    }

    /// One step from `x (B, I)` and `h`, `c` (`(B, H)` or None for zeros); returns `(h, c or None)`.
    /// With `train=True` the step is recorded for `backward`.
    #[pyo3(signature = (x, h=None, c=None, train=true))]
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        h: Option<&Bound<'py, PyAny>>,
        c: Option<&Bound<'py, PyAny>>,
        train: bool,
    ) -> PyResult<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)> {
        with_cell!(&mut self.inner, cell, T => {
            let dt = <T as rnnrs::Element>::DTYPE;
            let x = array::<T, ndarray::Ix2>(x, "x", 2, dt)?;
            let (h, c) = (opt2::<T>(h, "h", dt)?, opt2::<T>(c, "c", dt)?);
            let (xv, hv, cv) = (x.as_array(), h.as_ref().map(|a| a.as_array()), c.as_ref().map(|a| a.as_array()));
            let st = detached(py, || if train { cell.step_train(xv, hv, cv) } else { cell.step(xv, hv, cv) })?;
            Ok((out2(py, st.h), st.c.map(|c| out2(py, c))))
        })
    }

    /// Backward of the most recent recorded step; returns `(dx, dh, dc or None)` w.r.t. that
    /// step's inputs and adds the parameter gradients into `grads()`.
    #[pyo3(signature = (dh=None, dh_next=None, dc_next=None))]
    fn backward<'py>(
        &mut self,
        py: Python<'py>,
        dh: Option<&Bound<'py, PyAny>>,
        dh_next: Option<&Bound<'py, PyAny>>,
        dc_next: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Out<'py>> {
        with_cell!(&mut self.inner, cell, T => {
            let dt = <T as rnnrs::Element>::DTYPE;
            let (a, b, c) = (opt2::<T>(dh, "dh", dt)?, opt2::<T>(dh_next, "dh_next", dt)?, opt2::<T>(dc_next, "dc_next", dt)?);
            let (av, bv, cv) = (a.as_ref().map(|a| a.as_array()), b.as_ref().map(|a| a.as_array()), c.as_ref().map(|a| a.as_array()));
            let g = detached(py, || cell.backward(av, bv, cv))?;
            Ok((out2(py, g.dx), out2(py, g.dh), g.dc.map(|c| out2(py, c))))
        })
    }

    /// Recorded steps whose backward has not run yet.
    #[getter]
    fn pending_steps(&self) -> usize {
        with_cell!(&self.inner, c, T => c.pending_steps())
    }

    /// Copies of the parameters as `(name, array)` in PyTorch order.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        with_cell!(&self.inner, c, T => named(py, c.state_dict()))
    }

    /// Copies of the accumulated gradients, same names and order as `state_dict()`.
    fn grads<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        with_cell!(&self.inner, c, T => named(py, c.grad_dict()))
    }

    /// Replace all parameters (every name once, same shapes and dtype); drops recorded steps.
    fn load_state_dict(&mut self, items: Vec<(String, Bound<'_, PyAny>)>) -> PyResult<()> {
        with_cell!(&mut self.inner, c, T => {
            let dt = <T as rnnrs::Element>::DTYPE;
            let arrays = crate::model::dyn_arrays::<T>(&items, dt)?;
            let views: Vec<(String, ndarray::ArrayViewD<'_, T>)> = arrays.iter().map(|(n, a)| (n.clone(), a.as_array())).collect();
            c.load_state_dict(&views).map_err(to_py)?;
            c.clear_tape();
            Ok(())
        })
    }

    /// Re-draw the parameters with the named initialisers (see `rnnrs::init`); nothing changes on
    /// error.
    #[pyo3(signature = (init, recurrent_init=None, init_std=0.01, forget_bias=None, seed=0))]
    fn init_parameters(&mut self, init: &str, recurrent_init: Option<&str>, init_std: f64, forget_bias: Option<f64>, seed: u64) -> PyResult<()> {
        with_cell!(&mut self.inner, x, T => {
            let (cell, hidden) = (x.config().cell, x.config().hidden_size);
            crate::init::apply(x, cell, hidden, init, recurrent_init, init_std, forget_bias, seed)?;
            x.clear_tape(); // (recorded with the old weights)
            Ok(())
        })
    }

    /// Set every gradient to zero.
    fn zero_grad(&mut self) {
        with_cell!(&mut self.inner, c, T => c.zero_grad())
    }

    /// Forget every recorded step.
    fn clear_tape(&mut self) {
        with_cell!(&mut self.inner, c, T => c.clear_tape())
    }
}

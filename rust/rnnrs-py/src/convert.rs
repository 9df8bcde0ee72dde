//! The binding's one error mapping, array extraction with clear messages, and the detached call.

use numpy::{Element as NpElement, PyArray, PyArrayMethods, PyReadonlyArray, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, RwLock};

/// The pool every detached call runs in when `set_num_threads` chose one; `None` is rayon's global
/// pool (`RAYON_NUM_THREADS`, read once per process). Results are the same bits for any thread
/// count, so switching pools changes only the speed.
static POOL: RwLock<Option<Arc<rayon::ThreadPool>>> = RwLock::new(None);

/// Compute with `n` threads from now on in this process (`None`: rayon's default pool again).
/// Calls already running finish on the pool they started in.
#[pyfunction]
#[pyo3(signature = (n))]
pub fn set_num_threads(n: Option<usize>) -> PyResult<()> {
    let pool = match n {
        None => None,
        Some(0) => return Err(PyValueError::new_err("set_num_threads: expected a thread count >= 1 or None, got 0")),
        Some(n) if n > 1024 => {
            return Err(PyValueError::new_err(format!("set_num_threads: expected a thread count <= 1024, got {n}")))
        }
        Some(n) => Some(Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .thread_name(|i| format!("rnnrs-{i}"))
                .build()
                .map_err(|e| PyRuntimeError::new_err(format!("set_num_threads: could not start {n} threads: {e}")))?,
        )),
    };
    *POOL.write().unwrap_or_else(|p| p.into_inner()) = pool;
    Ok(())
}

/// The number of threads rnnrs computes with in this process.
#[pyfunction]
pub fn get_num_threads() -> usize {
    match POOL.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
        Some(pool) => pool.current_num_threads(),
        None => rayon::current_num_threads(),
    }
}

/// Run `$body` with `$x` bound to the typed value inside `$inner`, an enum of the binding's
/// `F32(..)`/`F64(..)` shape named `$Enum`, and `$T` to its element type (`f32` or `f64`).
macro_rules! by_dtype {
    ($Enum:ident, $inner:expr, $x:ident, $T:ident => $body:expr) => {
        match $inner {
            $Enum::F32($x) => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            $Enum::F64($x) => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
        }
    };
}
pub(crate) use by_dtype;

pyo3::create_exception!(
    _rnnrs,
    NonFiniteError,
    PyValueError,
    "A NaN or infinite value where a finite one is required (input, weight, loss or gradient)."
);

/// Map a core error to a Python exception: I/O → `OSError`, everything else → `ValueError`.
pub fn to_py(e: rnnrs::Error) -> PyErr {
    match e {
        rnnrs::Error::Io { .. } => PyOSError::new_err(e.to_string()),
        rnnrs::Error::NonFinite(_) => NonFiniteError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// Run `f` with the GIL released; a panic becomes a `RuntimeError` instead of escaping (it is a
/// bug in rnnrs: every user mistake is an `rnnrs::Error`).
pub fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> rnnrs::Result<T> + Send) -> PyResult<T> {
    let pool = POOL.read().unwrap_or_else(|p| p.into_inner()).clone();
    let r = py.detach(|| match pool {
        Some(pool) => pool.install(|| catch_unwind(AssertUnwindSafe(f))),
        None => catch_unwind(AssertUnwindSafe(f)),
    });
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_py(e)),
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(PyRuntimeError::new_err(format!("internal error in rnnrs (please report): {msg}")))
        }
    }
}

/// Extract a read-only NumPy array of element `T` and rank `N`, or raise `TypeError`/`ValueError`
/// saying what was expected and what was received.
pub fn array<'py, T: NpElement, D: ndarray::Dimension>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    ndim: usize,
    dtype: &str,
) -> PyResult<PyReadonlyArray<'py, T, D>> {
    let Ok(arr) = obj.cast::<PyUntypedArray>() else {
        let ty = obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
        return Err(PyTypeError::new_err(format!("{what}: expected a numpy.ndarray of {dtype}, got {ty}")));
    };
    if arr.ndim() != ndim {
        return Err(PyValueError::new_err(format!(
            "{what}: expected a {ndim}-D array, got {}-D with shape {:?}",
            arr.ndim(),
            arr.shape()
        )));
    }
    if !arr.is_aligned() {
        // ndarray cannot view misaligned data (e.g. `np.frombuffer(buf, offset=1)`): refuse it here
        // instead of panicking; the Python wrappers copy such arrays first.
        return Err(PyValueError::new_err(format!(
            "{what}: expected an aligned array, got one whose data is not aligned to its dtype (copy it with numpy.array)"
        )));
    }
    match obj.cast::<PyArray<T, D>>() {
        Ok(a) => Ok(a.readonly()),
        Err(_) => Err(PyTypeError::new_err(format!("{what}: expected dtype {dtype}, got {}", arr.dtype()))),
    }
}

/// Token ids from an integer NumPy array of rank `ndim` (any integer dtype), checked non-negative.
pub fn ids<D: ndarray::Dimension>(obj: &Bound<'_, PyAny>, what: &str, ndim: usize) -> PyResult<ndarray::Array<usize, D>> {
    let a = array::<i64, D>(obj, what, ndim, "int64")?;
    let v = a.as_array();
    // A broadcast view can have a huge shape without the memory behind it: check before copying.
    rnnrs::error::check_alloc(what, &format!("shape {:?}", v.shape()), Some(v.len()), std::mem::size_of::<usize>()).map_err(to_py)?;
    if let Some(bad) = v.iter().find(|&&i| i < 0) {
        return Err(PyValueError::new_err(format!("{what}: expected token ids >= 0, got {bad}")));
    }
    Ok(v.mapv(|i| i as usize))
}

//! safetensors (de)serialisation of raw tensors: `(name, dtype, shape, bytes)` tuples.

use crate::convert::to_py;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rnnrs::io::{from_safetensors, to_safetensors, RawTensor};
use std::collections::BTreeMap;

type Raw = (String, String, Vec<usize>, Vec<u8>);

/// Serialize `[(name, dtype, shape, data_bytes)]` and `{str: str}` metadata to safetensors bytes.
#[pyfunction]
pub fn safetensors_dumps<'py>(py: Python<'py>, tensors: Vec<Raw>, metadata: BTreeMap<String, String>) -> PyResult<Bound<'py, PyBytes>> {
    let raw: Vec<RawTensor> = tensors.into_iter().map(|(name, dtype, shape, data)| RawTensor { name, dtype, shape, data }).collect();
    let bytes = py.detach(|| to_safetensors(&raw, &metadata)).map_err(to_py)?;
    Ok(PyBytes::new(py, &bytes))
}

/// Parse safetensors bytes into `([(name, dtype, shape, data_bytes)], metadata)`; `path` is used in
/// error messages only.
#[pyfunction]
#[pyo3(signature = (data, path="<bytes>"))]
pub fn safetensors_loads(py: Python<'_>, data: &[u8], path: &str) -> PyResult<(Vec<Raw>, BTreeMap<String, String>)> {
    let (tensors, meta) = py.detach(|| from_safetensors(data, path)).map_err(to_py)?;
    Ok((tensors.into_iter().map(|t| (t.name, t.dtype, t.shape, t.data)).collect(), meta))
}

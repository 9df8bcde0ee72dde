//! Tensor files in the safetensors format: a JSON header and raw little-endian data, so that loading
//! a file can never execute code. Bytes in, bytes out; callers add atomic writes.

use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};

/// Largest header accepted on load (the format's own cap is 100 MB; ours is tighter).
pub const MAX_HEADER_BYTES: usize = 16 << 20;

/// A named tensor as raw little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    /// Tensor name.
    pub name: String,
    /// `"F16"`, `"F32"`, `"F64"`, `"I32"`, `"I64"` or `"U8"`.
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// `product(shape) · itemsize` bytes.
    pub data: Vec<u8>,
}

fn dtype_of(s: &str) -> Result<Dtype> {
    Ok(match s {
        "F16" => Dtype::F16,
        "F32" => Dtype::F32,
        "F64" => Dtype::F64,
        "I32" => Dtype::I32,
        "I64" => Dtype::I64,
        "U8" => Dtype::U8,
        _ => return Err(crate::error::invalid("tensor dtype", "one of F16, F32, F64, I32, I64, U8", s)),
    })
}

fn name_of(d: Dtype) -> Option<&'static str> {
    Some(match d {
        Dtype::F16 => "F16",
        Dtype::F32 => "F32",
        Dtype::F64 => "F64",
        Dtype::I32 => "I32",
        Dtype::I64 => "I64",
        Dtype::U8 => "U8",
        _ => return None,
    })
}

/// Serialize tensors and string metadata to safetensors bytes.
pub fn to_safetensors(tensors: &[RawTensor], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let mut views = Vec::with_capacity(tensors.len());
    for t in tensors {
        let v = TensorView::new(dtype_of(&t.dtype)?, t.shape.clone(), &t.data).map_err(|e| {
            crate::error::invalid(&format!("tensor {:?}", t.name), "data matching its dtype and shape", e)
        })?;
        views.push((t.name.clone(), v));
    }
    let meta: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    safetensors::serialize(views, Some(meta)).map_err(|e| Error::Format { path: "<memory>".into(), reason: e.to_string() })
}

/// Parse safetensors bytes (from `path`, for messages) into tensors sorted by name and metadata.
/// Truncated, oversized or inconsistent files are rejected with `Error::Format`.
pub fn from_safetensors(bytes: &[u8], path: &str) -> Result<(Vec<RawTensor>, BTreeMap<String, String>)> {
    let fmt = |reason: String| Error::Format { path: path.into(), reason };
    if bytes.len() < 8 {
        return Err(fmt(format!("not a safetensors file: expected at least 8 bytes, got {}", bytes.len())));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    if n > MAX_HEADER_BYTES {
        return Err(fmt(format!("header of {n} bytes exceeds the limit of {MAX_HEADER_BYTES}")));
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| fmt(format!("not a valid safetensors file: {e}")))?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| fmt(format!("not a valid safetensors file: {e}")))?;
    let metadata: BTreeMap<String, String> = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    let mut out = Vec::new();
    for (name, v) in st.tensors() {
        let dtype = name_of(v.dtype()).ok_or_else(|| fmt(format!("tensor {name:?} has unsupported dtype {:?}", v.dtype())))?;
        out.push(RawTensor { name, dtype: dtype.into(), shape: v.shape().to_vec(), data: v.data().to_vec() });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((out, metadata))
}

//! Float16 copies of the weight matrices that generation streams for every token, cached in the
//! [`LanguageModel`] they were made from.
//!
//! Batch-1 generation is memory-bound: every token reads every recurrent and output weight once.
//! Stored as IEEE float16 and widened exactly to float32 in the step kernel, the weights take half
//! the bytes; the arithmetic (float32 fused multiply-adds in the canonical order) is unchanged, so
//! weights that are exactly representable in float16 — a model saved or distributed in float16,
//! like the built-in one — give bit-identical results (see [`crate::sample::WeightFormat`]).
//!
//! The copy covers `weight_ih_l{k}` (except layer 0 of a one-hot model, whose "product" is a column
//! lookup), `weight_hh_l{k}` and `linear.weight`; embeddings and biases stay in the model's
//! precision. Building it costs a pass over the weights and `2 ×` (their count) bytes, so it is
//! made on first use and kept in the model — and dropped by every method of the model that takes
//! `&mut self` (training steps, optimizer updates, loading weights, [`crate::Module::visit_mut`],
//! [`LanguageModel::rnn_mut`]), the only ways its weights can change. A copy can therefore never
//! be stale.

use crate::aligned::Aligned;
use crate::element::Element;
use crate::error::{invalid, Result};
use crate::model::LanguageModel;
use half::{f16, slice::HalfFloatSliceExt};
use std::sync::{Arc, Mutex, MutexGuard};

/// The float16 weights of one model, in the same row-major `(out, in)` layout as the originals.
#[derive(Debug)]
pub(crate) struct HalfWeights {
    /// Per layer `weight_ih` (empty for layer 0 of a one-hot model). Every matrix starts on a
    /// cache line ([`Aligned`]).
    pub ih: Vec<Aligned<f16>>,
    /// Per layer `weight_hh`.
    pub hh: Vec<Aligned<f16>>,
    /// The output layer's weight `(V, H)`.
    pub linear: Aligned<f16>,
    /// Whether every value converted exactly (then results equal the float32 path bit for bit).
    pub exact: bool,
}

#[derive(Clone, Debug, Default)]
enum Cached {
    /// Nothing known since the weights last changed.
    #[default]
    Unknown,
    /// Some weight is not exactly representable in float16 (no copy kept).
    Inexact,
    /// The copy (exact or rounded).
    Packed(Arc<HalfWeights>),
}

/// A model's cached float16 copy; see the [module documentation](self).
#[derive(Default)]
pub(crate) struct HalfCache(Mutex<Cached>);

impl Clone for HalfCache {
    fn clone(&self) -> Self {
        HalfCache(Mutex::new(self.lock().clone()))
    }
}

impl std::fmt::Debug for HalfCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &*self.lock() {
            Cached::Unknown => "none",
            Cached::Inexact => "weights not exact in float16",
            Cached::Packed(p) if p.exact => "exact float16 copy",
            Cached::Packed(_) => "rounded float16 copy",
        };
        write!(f, "HalfCache({state})")
    }
}

impl HalfCache {
    fn lock(&self) -> MutexGuard<'_, Cached> {
        // The state is replaced whole, never left half-written: a poisoned lock is still valid.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forget the copy: the weights are about to change.
    pub(crate) fn clear(&mut self) {
        *self.0.get_mut().unwrap_or_else(|e| e.into_inner()) = Cached::Unknown;
    }

    /// The exact float16 copy of `model`'s streamed weights, or `None` if some weight is not
    /// exactly representable (checked once per change of the weights).
    pub(crate) fn exact<F: Element>(&self, model: &LanguageModel<F>) -> Option<Arc<HalfWeights>> {
        let mut c = self.lock();
        if let Cached::Unknown = *c {
            *c = match pack(model, false) {
                Ok(Some(p)) => Cached::Packed(Arc::new(p)),
                _ => Cached::Inexact,
            };
        }
        match &*c {
            Cached::Packed(p) if p.exact => Some(p.clone()),
            _ => None,
        }
    }

    /// The float16 copy of `model`'s streamed weights, rounded to nearest where not exact;
    /// `Err` if a weight is beyond float16's range (±65504).
    pub(crate) fn rounded<F: Element>(&self, model: &LanguageModel<F>) -> Result<Arc<HalfWeights>> {
        let mut c = self.lock();
        if let Cached::Packed(p) = &*c {
            return Ok(p.clone());
        }
        let p = Arc::new(pack(model, true)?.expect("lossy packing always gives a copy"));
        *c = Cached::Packed(p.clone());
        Ok(p)
    }
}

/// Convert `src` (in row-major order) to float16. Not `lossy`: `Ok(None)` at the first value that
/// does not convert exactly. `lossy`: round to nearest even, clearing `exact` if any value changes;
/// `Err` for a (finite) value beyond float16's range.
fn convert<F: Element>(src: &ndarray::Array2<F>, lossy: bool, exact: &mut bool) -> Result<Option<Aligned<f16>>> {
    let range_error = |x: f64| invalid("weights \"f16\"", "weights within float16's range (±65504)", x);
    let mut out = Aligned::filled(src.len(), f16::ZERO);
    if let (true, Some(s)) = (std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>(), src.as_slice()) {
        // SAFETY: `F` is `f32` (checked just above).
        let s = unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) };
        // Vectorised both ways (F16C where available); exact iff widening back gives the same bits.
        let mut back = [0f32; CHUNK];
        for (o, x) in out.chunks_mut(CHUNK).zip(s.chunks(CHUNK)) {
            o.convert_from_f32_slice(x);
            let back = &mut back[..x.len()];
            o.convert_to_f32_slice(back);
            if back.iter().zip(x).any(|(b, x)| b.to_bits() != x.to_bits()) {
                if !lossy {
                    return Ok(None);
                }
                *exact = false;
                if let Some((_, &x)) = back.iter().zip(x).find(|(b, _)| b.is_infinite()) {
                    return Err(range_error(x as f64));
                }
            }
        }
        return Ok(Some(out));
    }
    for (o, &x) in out.iter_mut().zip(src) {
        let x = x.to_f64();
        *o = f16::from_f64(x);
        if o.to_f64() != x {
            if !lossy {
                return Ok(None);
            }
            *exact = false;
            if o.is_infinite() {
                return Err(range_error(x));
            }
        }
    }
    Ok(Some(out))
}

/// Values converted per block (the widened copy lives on the stack).
const CHUNK: usize = 1024;

fn pack<F: Element>(model: &LanguageModel<F>, lossy: bool) -> Result<Option<HalfWeights>> {
    let mut exact = true;
    let (mut ih, mut hh) = (Vec::new(), Vec::new());
    for l in 0..model.config().num_layers {
        let p = model.rnn().dir_params(l, 0);
        if l == 0 && model.embedding().is_none() {
            ih.push(Aligned::from_slice(&[]));
        } else {
            let Some(w) = convert(&p.weight_ih, lossy, &mut exact)? else { return Ok(None) };
            ih.push(w);
        }
        let Some(w) = convert(&p.weight_hh, lossy, &mut exact)? else { return Ok(None) };
        hh.push(w);
    }
    let Some(linear) = convert(&model.linear().weight, lossy, &mut exact)? else { return Ok(None) };
    Ok(Some(HalfWeights { ih, hh, linear, exact }))
}

//! The weight matrices that generation streams for every token, packed for the step kernel
//! ([`Panels`]: column panels of `wᵀ`) and cached in the [`LanguageModel`] they were made from.
//!
//! Two copies can be made, each on first use: float32 (the weights themselves, repacked), and
//! float16. Batch-1 generation is memory-bound: every token reads every recurrent and output
//! weight once. Stored as IEEE float16 and widened exactly to float32 in the step kernel, the
//! weights take half the bytes; the arithmetic (float32 fused multiply-adds in the canonical
//! order) is unchanged, so weights that are exactly representable in float16 — a model saved or
//! distributed in float16, like the built-in one — give bit-identical results (see
//! [`crate::sample::WeightFormat`]).
//!
//! A copy covers `weight_ih_l{k}` (except layer 0 of a one-hot model, whose "product" is a column
//! lookup), `weight_hh_l{k}` and `linear.weight`; embeddings and biases are read from the model.
//! Building one costs a pass over the weights and 4 (float32) or 2 (float16) bytes per weight, so
//! it is kept in the model — and dropped by every method of the model that takes `&mut self`
//! (training steps, optimizer updates, loading weights, [`crate::Module::visit_mut`],
//! [`LanguageModel::rnn_mut`]), the only ways its weights can change. A copy can therefore never
//! be stale. Float64 models have no copies (their sampling reads the weights as they are).

use crate::aligned::Aligned;
use crate::element::Element;
use crate::error::{invalid, Result};
use crate::model::LanguageModel;
use crate::step_kernel::Panels;
use half::{f16, slice::HalfFloatSliceExt};
use std::sync::{Arc, Mutex, MutexGuard};

/// The packed weights of one model (float32 or float16 values).
#[derive(Debug)]
pub(crate) struct StepWeights<W> {
    /// Per layer `weight_ih` (`None` for layer 0 of a one-hot model).
    pub ih: Vec<Option<Panels<W>>>,
    /// Per layer `weight_hh`.
    pub hh: Vec<Panels<W>>,
    /// The output layer's weight `(V, H)`.
    pub linear: Panels<W>,
    /// Float16: whether every value converted exactly (then results equal the float32 path bit
    /// for bit). Always true for float32.
    pub exact: bool,
}

#[derive(Clone, Debug, Default)]
enum Half {
    /// Nothing known since the weights last changed.
    #[default]
    Unknown,
    /// Some weight is not exactly representable in float16 (no copy kept).
    Inexact,
    /// The copy (exact or rounded).
    Packed(Arc<StepWeights<f16>>),
}

#[derive(Clone, Debug, Default)]
struct Cached {
    float32: Option<Arc<StepWeights<f32>>>,
    half: Half,
}

/// A model's cached copies; see the [module documentation](self).
#[derive(Default)]
pub(crate) struct StepCache(Mutex<Cached>);

impl Clone for StepCache {
    fn clone(&self) -> Self {
        StepCache(Mutex::new(self.lock().clone()))
    }
}

impl std::fmt::Debug for StepCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.lock();
        let half = match &c.half {
            Half::Unknown => "none",
            Half::Inexact => "weights not exact in float16",
            Half::Packed(p) if p.exact => "exact float16 copy",
            Half::Packed(_) => "rounded float16 copy",
        };
        write!(f, "StepCache(float32 copy: {}, float16: {half})", if c.float32.is_some() { "yes" } else { "none" })
    }
}

impl StepCache {
    fn lock(&self) -> MutexGuard<'_, Cached> {
        // The state is replaced whole, never left half-written: a poisoned lock is still valid.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forget the copies: the weights are about to change.
    pub(crate) fn clear(&mut self) {
        *self.0.get_mut().unwrap_or_else(|e| e.into_inner()) = Cached::default();
    }

    /// The float32 copy of a float32 `model`'s streamed weights (`None` for other models).
    pub(crate) fn float32<F: Element>(&self, model: &LanguageModel<F>) -> Option<Arc<StepWeights<f32>>> {
        as_f32::<F>(&[])?;
        let mut c = self.lock();
        if c.float32.is_none() {
            let pack32 = |w: &ndarray::Array2<F>| {
                let s = as_f32(w.as_slice().expect("weights in standard layout")).expect("a float32 model");
                Some(Panels::new(s, w.nrows(), w.ncols()))
            };
            let packed = pack(model, &mut |w| Ok(pack32(w))).ok().flatten();
            c.float32 = Some(Arc::new(packed.expect("float32 packing always gives a copy")));
        }
        c.float32.clone()
    }

    /// The exact float16 copy of `model`'s streamed weights, or `None` if some weight is not
    /// exactly representable (checked once per change of the weights).
    pub(crate) fn exact<F: Element>(&self, model: &LanguageModel<F>) -> Option<Arc<StepWeights<f16>>> {
        let mut c = self.lock();
        if let Half::Unknown = c.half {
            c.half = match pack_half(model, false) {
                Ok(Some(p)) => Half::Packed(Arc::new(p)),
                _ => Half::Inexact,
            };
        }
        match &c.half {
            Half::Packed(p) if p.exact => Some(p.clone()),
            _ => None,
        }
    }

    /// The float16 copy of `model`'s streamed weights, rounded to nearest where not exact;
    /// `Err` if a weight is beyond float16's range (±65504).
    pub(crate) fn rounded<F: Element>(&self, model: &LanguageModel<F>) -> Result<Arc<StepWeights<f16>>> {
        let mut c = self.lock();
        if let Half::Packed(p) = &c.half {
            return Ok(p.clone());
        }
        let p = Arc::new(pack_half(model, true)?.expect("lossy packing always gives a copy"));
        c.half = Half::Packed(p.clone());
        Ok(p)
    }
}

/// `s` as float32 values if `F` is `f32`.
fn as_f32<F: Element>(s: &[F]) -> Option<&[f32]> {
    (std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>())
        // SAFETY: `F` is `f32` (checked just above).
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) })
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

/// Packs one matrix (`Ok(None)`: no copy).
type PackOne<'a, F, W> = dyn FnMut(&ndarray::Array2<F>) -> Result<Option<Panels<W>>> + 'a;

/// The streamed matrices of `model`, each packed by `one` (`Ok(None)`: no copy).
fn pack<F: Element, W>(model: &LanguageModel<F>, one: &mut PackOne<'_, F, W>) -> Result<Option<StepWeights<W>>> {
    let (mut ih, mut hh) = (Vec::new(), Vec::new());
    for l in 0..model.config().num_layers {
        let p = model.rnn().dir_params(l, 0);
        if l == 0 && model.embedding().is_none() {
            ih.push(None);
        } else {
            let Some(w) = one(&p.weight_ih)? else { return Ok(None) };
            ih.push(Some(w));
        }
        let Some(w) = one(&p.weight_hh)? else { return Ok(None) };
        hh.push(w);
    }
    let Some(linear) = one(&model.linear().weight)? else { return Ok(None) };
    Ok(Some(StepWeights { ih, hh, linear, exact: true }))
}

fn pack_half<F: Element>(model: &LanguageModel<F>, lossy: bool) -> Result<Option<StepWeights<f16>>> {
    let mut exact = true;
    let packed = pack(model, &mut |w| Ok(convert(w, lossy, &mut exact)?.map(|h| Panels::new(&h, w.nrows(), w.ncols()))))?;
    Ok(packed.map(|p| StepWeights { exact, ..p }))
}

//! Generation: `sample`, `beam_search`, the streaming `Sampler` and `ContinuousSampler` — extract, run the core's loop
//! with the GIL released, convert. The loop itself is `rnnrs::Sampler`/`rnnrs::beam_search_until`.
//! Both look at Python's signal handlers every few tens of milliseconds, so Ctrl-C stops a long
//! generation with `KeyboardInterrupt` (or whatever the handler raises).

use crate::convert::{detached, ids};
use crate::model::{LanguageModel, LmInner};
use numpy::{IntoPyArray, PyArray1};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use rnnrs::{SampleConfig, WeightFormat};
use std::time::{Duration, Instant};

/// How long the loops run between looks at Python's signal handlers.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// `(ids int64 (n,), logprobs float64 (n,))` of one sequence.
type Seq<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f64>>);
/// `(ids, logprobs, stopped)` of one sampled sequence.
type Sampled<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f64>>, bool);
/// `(ids, logprobs, total_logprob)` of a beam search.
type BeamOut<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f64>>, f64);

fn seq_out<'py>(py: Python<'py>, ids: &[usize], logprobs: &[f64]) -> Seq<'py> {
    let ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    (ids.into_pyarray(py), logprobs.to_vec().into_pyarray(py))
}

/// Token-id prefixes from a list of 1-D int64 arrays.
fn prefixes_in(prefixes: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<usize>>> {
    let items: Vec<Bound<'_, PyAny>> = prefixes
        .extract()
        .map_err(|_| PyTypeError::new_err("prefixes: expected a list of 1-D int64 arrays of token ids"))?;
    items.iter().enumerate().map(|(i, p)| Ok(ids::<ndarray::Ix1>(p, &format!("prefixes[{i}]"), 1)?.to_vec())).collect()
}

#[allow(clippy::too_many_arguments)]
fn config(
    length: usize,
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
    repetition_penalty: f64,
    stop_tokens: Vec<i64>,
    banned_tokens: Vec<i64>,
    weights: &str,
) -> PyResult<SampleConfig> {
    for (what, ids) in [("stop token", &stop_tokens), ("banned token", &banned_tokens)] {
        if let Some(bad) = ids.iter().find(|&&t| t < 0) {
            return Err(PyValueError::new_err(format!("{what}: expected an id >= 0, got {bad}")));
        }
    }
    Ok(SampleConfig {
        length,
        temperature,
        top_k,
        top_p,
        repetition_penalty,
        stop_tokens: stop_tokens.into_iter().map(|t| t as usize).collect(),
        banned_tokens: banned_tokens.into_iter().map(|t| t as usize).collect(),
        weights: weights.parse::<WeightFormat>().map_err(crate::convert::to_py)?,
    })
}

/// Generate `length` new tokens after each prefix (sequence `i` from `seeds[i]`) in one batch.
/// Returns `[(ids, logprobs, stopped)]`: new ids (int64), their model log-probabilities (float64)
/// and whether the sequence ended on a stop token. `temperature=0` is greedy. `weights` ("auto",
/// "f32" or "f16") is the storage of the streamed weights (`rnnrs::WeightFormat`).
#[pyfunction]
#[pyo3(signature = (model, prefixes, seeds, length, temperature=1.0, top_k=None, top_p=None, repetition_penalty=1.0, stop_tokens=Vec::new(), banned_tokens=Vec::new(), weights="auto"))]
#[allow(clippy::too_many_arguments)]
pub fn sample<'py>(
    py: Python<'py>,
    model: &LanguageModel,
    prefixes: &Bound<'py, PyAny>,
    seeds: Vec<u64>,
    length: usize,
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
    repetition_penalty: f64,
    stop_tokens: Vec<i64>,
    banned_tokens: Vec<i64>,
    weights: &str,
) -> PyResult<Vec<Sampled<'py>>> {
    let prefixes = prefixes_in(prefixes)?;
    let cfg = config(length, temperature, top_k, top_p, repetition_penalty, stop_tokens, banned_tokens, weights)?;
    let out = crate::model::with_lm!(&model.inner, l, T => {
        let m = &l.model;
        let mut s = detached(py, || rnnrs::Sampler::new(m, &prefixes, &seeds, cfg))?;
        // In chunks (which never changes the result), growing while a chunk takes less than
        // `SIGNAL_CHECK`, with a look at the signal handlers in between.
        let mut chunk = 16usize;
        while !s.is_done() {
            let t = Instant::now();
            detached(py, || s.advance(m, chunk))?;
            py.check_signals()?;
            if t.elapsed() < SIGNAL_CHECK {
                chunk = chunk.saturating_mul(2);
            }
        }
        s.into_samples()
    });
    Ok(out
        .iter()
        .map(|s| {
            let (i, lp) = seq_out(py, &s.ids, &s.logprobs);
            (i, lp, s.stopped)
        })
        .collect())
}

/// Beam search of `width` beams for `length` new tokens after `prefix` (1-D int64). Returns
/// `(ids, logprobs, total_logprob)` of the best sequence (never less probable than greedy).
#[pyfunction]
#[pyo3(signature = (model, prefix, width, length))]
pub fn beam_search<'py>(
    py: Python<'py>,
    model: &LanguageModel,
    prefix: &Bound<'py, PyAny>,
    width: usize,
    length: usize,
) -> PyResult<BeamOut<'py>> {
    let prefix = ids::<ndarray::Ix1>(prefix, "prefix", 1)?.to_vec();
    let mut signal: Option<PyErr> = None;
    let beam = crate::model::with_lm!(&model.inner, l, T => {
        let m = &l.model;
        let mut last = Instant::now();
        let mut stop = || {
            if last.elapsed() < SIGNAL_CHECK {
                return false;
            }
            last = Instant::now();
            signal = Python::attach(|py| py.check_signals()).err();
            signal.is_some()
        };
        detached(py, || rnnrs::beam_search_until(m, &prefix, width, length, &mut stop))?
    });
    let Some(beam) = beam else { return Err(signal.expect("the search stops only for a signal")) };
    let (i, lp) = seq_out(py, &beam.ids, &beam.logprobs);
    Ok((i, lp, beam.total_logprob))
}

/// The model, or a clear error if another thread is training it right now (instead of PyO3's panic).
fn busy<T>(r: Result<T, pyo3::pycell::PyBorrowError>) -> PyResult<T> {
    r.map_err(|_| {
        pyo3::exceptions::PyRuntimeError::new_err(
            "model: expected a model no other thread is changing, got one that is being trained right now \
             (Already borrowed): train and sample one model from a single thread",
        )
    })
}

enum Inner {
    F32(rnnrs::Sampler<f32>),
    F64(rnnrs::Sampler<f64>),
}

/// Streaming generation: `Sampler(model, prefixes, seeds, length, ...)` then `advance(n)` returns
/// the tokens generated since the last call. Chunks never change the result: the concatenated
/// pieces equal what `sample` returns with the same arguments.
#[pyclass(module = "rnnrs._rnnrs")]
pub struct Sampler {
    model: Py<LanguageModel>,
    inner: Inner,
    /// Tokens of each sequence already returned by `advance`.
    reported: Vec<usize>,
}

#[pymethods]
impl Sampler {
    #[new]
    #[pyo3(signature = (model, prefixes, seeds, length, temperature=1.0, top_k=None, top_p=None, repetition_penalty=1.0, stop_tokens=Vec::new(), banned_tokens=Vec::new(), weights="auto"))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        model: &Bound<'_, LanguageModel>,
        prefixes: &Bound<'_, PyAny>,
        seeds: Vec<u64>,
        length: usize,
        temperature: f64,
        top_k: Option<usize>,
        top_p: Option<f64>,
        repetition_penalty: f64,
        stop_tokens: Vec<i64>,
        banned_tokens: Vec<i64>,
        weights: &str,
    ) -> PyResult<Self> {
        let prefixes = prefixes_in(prefixes)?;
        let cfg = config(length, temperature, top_k, top_p, repetition_penalty, stop_tokens, banned_tokens, weights)?;
        let inner = match &busy(model.try_borrow())?.inner {
            LmInner::F32(l) => Inner::F32(rnnrs::Sampler::new(&l.model, &prefixes, &seeds, cfg).map_err(crate::convert::to_py)?),
            LmInner::F64(l) => Inner::F64(rnnrs::Sampler::new(&l.model, &prefixes, &seeds, cfg).map_err(crate::convert::to_py)?),
        };
        Ok(Sampler { model: model.clone().unbind(), inner, reported: vec![0; prefixes.len()] })
    }

    /// Generate until every unfinished sequence has `tokens` more new tokens (or finished), and
    /// return, per sequence, `(ids, logprobs)` of the tokens not returned before.
    fn advance<'py>(&mut self, py: Python<'py>, tokens: usize) -> PyResult<Vec<Seq<'py>>> {
        let model = busy(self.model.bind(py).try_borrow())?;
        match (&model.inner, &mut self.inner) {
            (LmInner::F32(l), Inner::F32(s)) => detached(py, || s.advance(&l.model, tokens))?,
            (LmInner::F64(l), Inner::F64(s)) => detached(py, || s.advance(&l.model, tokens))?,
            _ => return Err(PyValueError::new_err("Sampler: the model's dtype changed since the sampler was created")),
        }
        let mut out = Vec::with_capacity(self.reported.len());
        for (i, done) in self.reported.iter_mut().enumerate() {
            let (ids, lps) = match &self.inner {
                Inner::F32(s) => (s.ids(i), s.logprobs(i)),
                Inner::F64(s) => (s.ids(i), s.logprobs(i)),
            };
            out.push(seq_out(py, &ids[*done..], &lps[*done..]));
            *done = ids.len();
        }
        Ok(out)
    }

    /// Whether every sequence is finished.
    #[getter]
    fn done(&self) -> bool {
        match &self.inner {
            Inner::F32(s) => s.is_done(),
            Inner::F64(s) => s.is_done(),
        }
    }

    /// The weight storage the last `advance` used ("f32" or "f16"; "auto" resolved); before the
    /// first, the one it will use.
    #[getter]
    fn weights_used(&self) -> &'static str {
        match &self.inner {
            Inner::F32(s) => s.weights_used().name(),
            Inner::F64(s) => s.weights_used().name(),
        }
    }

    /// Per sequence: whether it ended on a stop token.
    #[getter]
    fn stopped(&self) -> Vec<bool> {
        match &self.inner {
            Inner::F32(s) => (0..s.num_sequences()).map(|i| s.stopped(i)).collect(),
            Inner::F64(s) => (0..s.num_sequences()).map(|i| s.stopped(i)).collect(),
        }
    }
}

enum ContinuousInner {
    F32(rnnrs::ContinuousSampler<f32>),
    F64(rnnrs::ContinuousSampler<f64>),
}

/// What one sequence did in one `ContinuousSampler.step`: `(id, token, logprob, top, finished,
/// stopped, nonfinite)`; `token` and `logprob` are None when no token was picked.
type SeqStep = (u64, Option<i64>, Option<f64>, Vec<(i64, f64)>, bool, bool, bool);

/// Continuous batching (`rnnrs::ContinuousSampler`): sequences with their own options join
/// (`add`) and leave (`remove`, or by finishing) between steps; `step()` advances all of them by
/// one token with the GIL released. Each sequence's tokens equal `sample` of it alone with the same
/// seed and options. Use one sampler from one thread at a time.
#[pyclass(module = "rnnrs._rnnrs")]
pub struct ContinuousSampler {
    model: Py<LanguageModel>,
    inner: ContinuousInner,
    /// Sequences stepped at each step of the last `step` call.
    last_sizes: Vec<usize>,
}

#[pymethods]
impl ContinuousSampler {
    #[new]
    #[pyo3(signature = (model, capacity, weights="auto"))]
    fn new(model: &Bound<'_, LanguageModel>, capacity: usize, weights: &str) -> PyResult<Self> {
        let w = weights.parse::<WeightFormat>().map_err(crate::convert::to_py)?;
        let inner = match &busy(model.try_borrow())?.inner {
            LmInner::F32(l) => {
                ContinuousInner::F32(rnnrs::ContinuousSampler::new(&l.model, capacity, w).map_err(crate::convert::to_py)?)
            }
            LmInner::F64(l) => {
                ContinuousInner::F64(rnnrs::ContinuousSampler::new(&l.model, capacity, w).map_err(crate::convert::to_py)?)
            }
        };
        Ok(ContinuousSampler { model: model.clone().unbind(), inner, last_sizes: Vec::new() })
    }

    /// Add a sequence continuing `prefix` (1-D int64 ids) from `seed`, with its own options (as
    /// `sample`'s) and `top_logprobs` (0-20) most probable tokens reported per step. It joins at
    /// the next `step`. Returns its id. `ValueError` for a bad option or prefix, or a full sampler.
    #[pyo3(signature = (prefix, seed, length, temperature=1.0, top_k=None, top_p=None, repetition_penalty=1.0, stop_tokens=Vec::new(), banned_tokens=Vec::new(), top_logprobs=0))]
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        py: Python<'_>,
        prefix: &Bound<'_, PyAny>,
        seed: u64,
        length: usize,
        temperature: f64,
        top_k: Option<usize>,
        top_p: Option<f64>,
        repetition_penalty: f64,
        stop_tokens: Vec<i64>,
        banned_tokens: Vec<i64>,
        top_logprobs: usize,
    ) -> PyResult<u64> {
        let prefix = ids::<ndarray::Ix1>(prefix, "prefix", 1)?.to_vec();
        let cfg = config(length, temperature, top_k, top_p, repetition_penalty, stop_tokens, banned_tokens, "auto")?;
        let model = busy(self.model.bind(py).try_borrow())?;
        let r = match (&model.inner, &mut self.inner) {
            (LmInner::F32(l), ContinuousInner::F32(s)) => s.add(&l.model, &prefix, seed, &cfg, top_logprobs),
            (LmInner::F64(l), ContinuousInner::F64(s)) => s.add(&l.model, &prefix, seed, &cfg, top_logprobs),
            _ => return Err(PyValueError::new_err("ContinuousSampler: the model's dtype changed since the sampler was created")),
        };
        r.map_err(|e| match e {
            rnnrs::Error::State(m) => PyValueError::new_err(m),
            e => crate::convert::to_py(e),
        })
    }

    /// Drop sequence `id`; False if it is not in the sampler (finished, removed or unknown).
    fn remove(&mut self, id: u64) -> bool {
        match &mut self.inner {
            ContinuousInner::F32(s) => s.remove(id),
            ContinuousInner::F64(s) => s.remove(id),
        }
    }

    /// `steps` steps (default 1; fewer if the sampler empties) of every sequence, with the GIL
    /// released throughout (several steps per call save handing the GIL back and forth). Returns,
    /// in order, for every sequence that picked a token or finished at each step, `(id, token,
    /// logprob, top, finished, stopped, nonfinite)`: `top` lists `(token, logprob)` most probable
    /// first; finished sequences have left the sampler.
    #[pyo3(signature = (steps=1))]
    fn step(&mut self, py: Python<'_>, steps: usize) -> PyResult<Vec<SeqStep>> {
        fn run<F: rnnrs::Element>(
            s: &mut rnnrs::ContinuousSampler<F>,
            m: &rnnrs::LanguageModel<F>,
            steps: usize,
            sizes: &mut Vec<usize>,
        ) -> rnnrs::Result<Vec<rnnrs::SequenceStep>> {
            let mut out = Vec::new();
            for _ in 0..steps {
                if s.is_empty() {
                    break;
                }
                sizes.push(s.len());
                out.extend(s.step(m)?);
            }
            Ok(out)
        }
        let sizes = &mut self.last_sizes;
        sizes.clear();
        let model = busy(self.model.bind(py).try_borrow())?;
        let events = match (&model.inner, &mut self.inner) {
            (LmInner::F32(l), ContinuousInner::F32(s)) => detached(py, || run(s, &l.model, steps, sizes))?,
            (LmInner::F64(l), ContinuousInner::F64(s)) => detached(py, || run(s, &l.model, steps, sizes))?,
            _ => return Err(PyValueError::new_err("ContinuousSampler: the model's dtype changed since the sampler was created")),
        };
        Ok(events
            .into_iter()
            .map(|e| {
                let top = e.top.iter().map(|&(t, lp)| (t as i64, lp)).collect();
                (e.id, e.token.map(|t| t.0 as i64), e.token.map(|t| t.1), top, e.finished, e.stopped, e.nonfinite)
            })
            .collect())
    }

    fn __len__(&self) -> usize {
        match &self.inner {
            ContinuousInner::F32(s) => s.len(),
            ContinuousInner::F64(s) => s.len(),
        }
    }

    /// Most concurrent sequences.
    #[getter]
    fn capacity(&self) -> usize {
        match &self.inner {
            ContinuousInner::F32(s) => s.capacity(),
            ContinuousInner::F64(s) => s.capacity(),
        }
    }

    /// The number of sequences stepped at each step of the last `step` call.
    #[getter]
    fn last_sizes(&self) -> Vec<usize> {
        self.last_sizes.clone()
    }

    /// Ids of the sequences in the sampler.
    #[getter]
    fn ids(&self) -> Vec<u64> {
        match &self.inner {
            ContinuousInner::F32(s) => s.ids(),
            ContinuousInner::F64(s) => s.ids(),
        }
    }
}

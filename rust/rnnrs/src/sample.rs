//! Autoregressive generation from a [`LanguageModel`]: greedy decoding (the d2l book's `predict`),
//! temperature, top-k, top-p (nucleus), a CTRL-style repetition penalty and stop tokens, for a batch
//! of prefixes stepped together; and beam search.
//!
//! ```
//! use rnnrs::{sample, CellKind, LanguageModel, LanguageModelConfig, SampleConfig};
//!
//! let cfg = LanguageModelConfig {
//!     vocab_size: 20, embed_size: Some(8), hidden_size: 16, num_layers: 2, cell: CellKind::Lstm, dropout: 0.0,
//! };
//! let model = LanguageModel::<f32>::new(cfg, 0)?;
//! let opts = SampleConfig::new(30).temperature(0.8).top_p(0.9);
//! // Two prefixes of different lengths, one seed each: sequence i is what sampling it alone gives.
//! let out = sample(&model, &[vec![1, 2, 3], vec![4]], &[7, 8], &opts)?;
//! assert_eq!(out[0].ids.len(), 30);
//! assert!(out[0].logprobs.iter().all(|&lp| lp <= 0.0));
//! # Ok::<(), rnnrs::Error>(())
//! ```
//!
//! # The loop
//! All sequences advance in lock step: at global step `s` every sequence consumes one token — its
//! prefix token `s` while `s` is inside its prefix, else the token it generated last — through the
//! embedding (or one-hot column), every recurrent layer and the output layer, as `(B, ·)` matrix
//! products. A sequence whose prefix has `P` tokens generates its first new token at step `P - 1`,
//! so prefixes of different lengths share the batch. Per generated token, in this order:
//!
//! 1. the model's log-softmax of the raw logits gives the token's reported **log-probability**
//!    (`log p_model(token | context)`, *not* the probability under the modified sampling
//!    distribution, so it can rank samples drawn with different options);
//! 2. the repetition penalty (CTRL): the logit `l` of every token already in the prefix or generated
//!    so far becomes `l / penalty` if `l > 0`, else `l · penalty`;
//! 3. `temperature == 0`: greedy — the first index of the largest penalised logit, no random draw
//!    (also when the temperature is so small that a logit divided by it would exceed `1e30`);
//! 4. otherwise logits are divided by the temperature, softmax, top-k keeps the `k` most probable
//!    tokens, top-p keeps the smallest most-probable set whose probability (renormalised after top-k)
//!    reaches `p` (always at least one token; cumulative sums up to rounding); ties are ordered by
//!    token id. The weights `exp(score - max)` come from the crate's vectorised `exp`
//!    ([`Element::exp_inplace`]); those below `1e-30` are set to 0 (such tokens are never drawn);
//! 5. one uniform draw `u ∈ [0, 1)` from the sequence's own stream `rng::stream(&[seed,
//!    SAMPLE_STREAM])` picks the token by inverse CDF over the kept tokens (in a fixed order: token
//!    id without filters, decreasing probability with top-k; for top-p, the tokens below the cut's
//!    probability range in id order, then the rest of the nucleus by decreasing probability);
//! 6. a stop token ends its sequence (it is included in the output); otherwise a sequence ends after
//!    `length` new tokens.
//!
//! # Determinism
//! Each output of every per-step product is one sum with a fixed order, computed the same way
//! whatever the batch size or the number of threads (threads split the output features, never a
//! sum); each sequence draws only from its own stream. Hence the same model,
//! prefix, options and seed give the same tokens in a batch of any size or alone, on any number of
//! threads, and in one call or in chunks ([`Sampler::advance`]). The per-step products do not go
//! through [`crate::linalg::gemm`]: general GEMM kernels choose different code paths by the number
//! of rows (matrix-vector for one row, other kernels for small blocks), which would make a row's
//! rounding depend on the batch. The float32 step kernel (`step_kernel.rs`: an outer product over
//! weights packed once into column panels, each output one chain of fused multiply-adds in
//! ascending `k`; one generic kernel built for AVX-512, AVX2 + FMA and portable code, all giving
//! the same bits) reads every weight once per step for a whole tile of rows — what batch-1
//! generation, which is memory-bound, needs — so step logits agree with
//! [`LanguageModel::logits`] to rounding, not bit for bit.
//!
//! # Memory
//! [`Sampler::new`] allocates every buffer (states, projections, logits, per-sequence scratch and
//! outputs sized for `length` tokens); stepping allocates nothing.

use crate::aligned::Aligned;
use crate::crew::{with_crew, Crew};
use crate::cell::{self, CellKind};
use crate::element::Element;
use crate::error::{invalid, Error, Result};
use crate::model::{LanguageModel, LanguageModelConfig};
use crate::rng::{self, Rng};
use crate::step_kernel::{Panels, Split};
use crate::step_weights::StepWeights;
use half::f16;
use rayon::prelude::*;
use std::cmp::Ordering;
use std::sync::Arc;

/// Stream tag of the per-sequence sampling generators: sequence `i` draws from
/// `rng::stream(&[seeds[i], SAMPLE_STREAM])`.
pub const SAMPLE_STREAM: u64 = 0x5341_4D50_4C45; // "SAMPLE"

/// Most sequences in one call.
pub const MAX_SEQUENCES: usize = 4096;

/// Most new tokens over all sequences of one call (`length × sequences`), and most tokens of a beam
/// search (`length × width`).
pub const MAX_TOKENS: usize = 1 << 26;

/// Products with at least this many multiply-adds are split over rayon threads.
const PARALLEL_MIN_WORK: usize = 1 << 17;

/// How to pick each new token. Build with [`SampleConfig::new`] and the setters; checked by
/// [`SampleConfig::validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct SampleConfig {
    /// New tokens per sequence (fewer if a stop token is emitted).
    pub length: usize,
    /// Softmax temperature, `>= 0`; `0` means greedy (argmax, no random draw).
    pub temperature: f64,
    /// Keep only the `k` most probable tokens (`k >= 1`); `None` keeps all.
    pub top_k: Option<usize>,
    /// Keep the smallest most-probable set with total probability `>= p`, `p ∈ (0, 1]`; `None`
    /// (or `1`) keeps all.
    pub top_p: Option<f64>,
    /// CTRL repetition penalty `> 0` on tokens of the prefix and the sequence so far; `1` = none.
    pub repetition_penalty: f64,
    /// Token ids that end a sequence when generated (included in the output).
    pub stop_tokens: Vec<usize>,
    /// Token ids that are never generated (probability 0 after every other option; e.g. `<unk>`).
    /// The log-probabilities reported are still those of the raw model.
    pub banned_tokens: Vec<usize>,
    /// How the weights every step streams are stored: see [`WeightFormat`] (default
    /// [`WeightFormat::Auto`]: float16 only when that changes nothing).
    pub weights: WeightFormat,
}

/// Storage of the weight matrices that every generated token reads (`weight_ih_l{k}`,
/// `weight_hh_l{k}`, `linear.weight`); the arithmetic is float32 (or the model's float64) in every
/// case. Batch-1 generation is memory-bound, so float16 storage — half the bytes — makes it faster.
///
/// A float32 model's weights are read from a copy packed for the step kernel: float32 (4 bytes
/// per weight) or float16 (2 bytes), made on first use and cached in the model until its weights
/// change (see [`LanguageModel`]). Float64 models are read as they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WeightFormat {
    /// Float16 when every streamed weight of a float32 model is exactly representable in float16
    /// (e.g. a model saved in float16, like the built-in one): each weight widens back to the very
    /// same float32 value and the sums run in the same order, so the results are
    /// bit-identical to [`WeightFormat::F32`]. Otherwise (or for a float64 model) as `F32`.
    #[default]
    Auto,
    /// The model's own values: a float32 copy (or a float64 model's weights).
    F32,
    /// Float16 copies, rounded to nearest where not exact (lossy for ordinary float32 weights:
    /// each weight changes by at most 2⁻¹¹ of its magnitude; logits typically by ~1e-3). Float32
    /// models only; an error for weights beyond float16's range (±65504).
    F16,
}

impl WeightFormat {
    /// The name used by [`WeightFormat::from_str`](std::str::FromStr): `"auto"`, `"f32"` or `"f16"`.
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::Auto => "auto",
            WeightFormat::F32 => "f32",
            WeightFormat::F16 => "f16",
        }
    }
}

impl std::str::FromStr for WeightFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(WeightFormat::Auto),
            "f32" => Ok(WeightFormat::F32),
            "f16" => Ok(WeightFormat::F16),
            _ => Err(invalid("weights", "one of \"auto\", \"f32\", \"f16\"", format!("{s:?}"))),
        }
    }
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig::new(100)
    }
}

impl SampleConfig {
    /// `length` new tokens from the plain softmax (temperature 1, no filtering, no penalty).
    pub fn new(length: usize) -> Self {
        SampleConfig {
            length,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            stop_tokens: Vec::new(),
            banned_tokens: Vec::new(),
            weights: WeightFormat::Auto,
        }
    }
    /// Greedy decoding of `length` tokens (temperature 0).
    pub fn greedy(length: usize) -> Self {
        SampleConfig::new(length).temperature(0.0)
    }
    /// Set the temperature (`0` = greedy).
    pub fn temperature(mut self, t: f64) -> Self {
        self.temperature = t;
        self
    }
    /// Keep the `k` most probable tokens.
    pub fn top_k(mut self, k: usize) -> Self {
        self.top_k = Some(k);
        self
    }
    /// Nucleus sampling with mass `p`.
    pub fn top_p(mut self, p: f64) -> Self {
        self.top_p = Some(p);
        self
    }
    /// Set the repetition penalty.
    pub fn repetition_penalty(mut self, r: f64) -> Self {
        self.repetition_penalty = r;
        self
    }
    /// Set the stop tokens.
    pub fn stop_tokens(mut self, ids: impl Into<Vec<usize>>) -> Self {
        self.stop_tokens = ids.into();
        self
    }
    /// Set the tokens that are never generated.
    pub fn banned_tokens(mut self, ids: impl Into<Vec<usize>>) -> Self {
        self.banned_tokens = ids.into();
        self
    }
    /// Set the storage of the streamed weights.
    pub fn weights(mut self, w: WeightFormat) -> Self {
        self.weights = w;
        self
    }

    /// Check every field for a model of `vocab_size` tokens.
    pub fn validate(&self, vocab_size: usize) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(invalid("temperature", "a finite number >= 0 (0 = greedy)", self.temperature));
        }
        if self.top_k == Some(0) {
            return Err(invalid("top_k", "an integer >= 1 or None", 0));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(invalid("top_p", "a number in (0, 1] or None", p));
            }
        }
        let r = self.repetition_penalty;
        if !(r.is_finite() && r > 0.0) {
            return Err(invalid("repetition_penalty", "a finite number > 0 (1 = no penalty)", r));
        }
        if let Some(&bad) = self.stop_tokens.iter().find(|&&t| t >= vocab_size) {
            return Err(invalid("stop token", format!("an id in [0, {vocab_size})"), bad));
        }
        if let Some(&bad) = self.banned_tokens.iter().find(|&&t| t >= vocab_size) {
            return Err(invalid("banned token", format!("an id in [0, {vocab_size})"), bad));
        }
        let mut distinct = self.banned_tokens.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() >= vocab_size {
            return Err(invalid("banned tokens", format!("fewer than all {vocab_size} tokens"), distinct.len()));
        }
        if self.length > MAX_TOKENS {
            return Err(invalid("length", format!("at most {MAX_TOKENS} tokens"), self.length));
        }
        Ok(())
    }
}

/// One generated sequence: the new tokens only (not the prefix).
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    /// The new token ids.
    pub ids: Vec<usize>,
    /// `log p_model(ids[t] | prefix, ids[..t])` under the raw model (natural log).
    pub logprobs: Vec<f64>,
    /// Whether the sequence ended on a stop token (else it reached `length`).
    pub stopped: bool,
}

/// Sample `config.length` new tokens after each prefix, sequence `i` from `seeds[i]`, all in one
/// batch. See the [module documentation](self) for the algorithm and its guarantees.
pub fn sample<F: Element, P: AsRef<[usize]>>(
    model: &LanguageModel<F>,
    prefixes: &[P],
    seeds: &[u64],
    config: &SampleConfig,
) -> Result<Vec<Sampled>> {
    let mut s = Sampler::new(model, prefixes, seeds, config.clone())?;
    s.run(model)?;
    Ok(s.into_samples())
}

/// The best sequence of a beam search.
#[derive(Clone, Debug, PartialEq)]
pub struct Beam {
    /// The new token ids.
    pub ids: Vec<usize>,
    /// Per-token model log-probabilities.
    pub logprobs: Vec<f64>,
    /// Their sum (accumulated in order).
    pub total_logprob: f64,
}

/// Validated dimensions of the model a sampler was built for.
#[derive(Clone, Debug, PartialEq)]
struct Dims {
    vocab: usize,
    embed: Option<usize>,
    hidden: usize,
    layers: usize,
    cell: CellKind,
}

impl Dims {
    fn of<F: Element>(model: &LanguageModel<F>) -> Result<Self> {
        let c: &LanguageModelConfig = model.config();
        if model.rnn().config().directions() != 1 {
            return Err(Error::State("sampling: a bidirectional model cannot generate left to right".into()));
        }
        Ok(Dims { vocab: c.vocab_size, embed: c.embed_size, hidden: c.hidden_size, layers: c.num_layers, cell: c.cell })
    }
    fn check<F: Element>(&self, model: &LanguageModel<F>) -> Result<()> {
        let got = Dims::of(model)?;
        if &got != self {
            return Err(Error::State(format!(
                "sampling: expected the model the sampler was created for ({self:?}), got a model with {got:?}"
            )));
        }
        Ok(())
    }
}

fn check_prefix(what: &str, prefix: &[usize], vocab: usize) -> Result<()> {
    if prefix.is_empty() {
        return Err(invalid(what, "at least one token id", "an empty prefix"));
    }
    if let Some(&bad) = prefix.iter().find(|&&t| t >= vocab) {
        return Err(invalid(&format!("{what} token id"), format!("an id in [0, {vocab})"), bad));
    }
    Ok(())
}

/// One sequence of a [`Sampler`]: its prefix, stream, outputs and scratch.
#[derive(Clone, Debug)]
struct Row<F> {
    prefix: Vec<usize>,
    rng: Rng,
    ids: Vec<usize>,
    logprobs: Vec<f64>,
    /// Token already seen (repetition penalty only; else empty).
    seen: Vec<bool>,
    /// The seen tokens, each once (repetition penalty only).
    seen_list: Vec<usize>,
    /// `(V,)` processed scores / weights.
    work: Vec<f64>,
    /// `(V,)` scratch in the model's precision (for the vectorised exp).
    scratch: Vec<F>,
    /// `(V,)` running sums of `work` (see [`exp_weights`]).
    cum: Vec<f64>,
    /// `(V,)` token order for top-k/top-p (else empty).
    order: Vec<usize>,
    /// `(RADIX,)` nucleus histogram for top-p without top-k (else empty).
    sums: Vec<f64>,
    done: bool,
    stopped: bool,
    /// Set when the model produced a NaN/infinite logit for this row.
    nonfinite: bool,
}

/// The options after validation, in the form the per-row step uses.
#[derive(Clone, Debug)]
struct Policy {
    length: usize,
    greedy: bool,
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
    penalty: Option<f64>,
    /// `(V,)`: whether a token stops its sequence.
    is_stop: Vec<bool>,
    /// Tokens never generated.
    banned: Vec<usize>,
}

impl Policy {
    /// The per-row form of a validated `config` for a vocabulary of `v` tokens.
    fn new(config: &SampleConfig, v: usize) -> Self {
        let mut is_stop = vec![false; v];
        for &t in &config.stop_tokens {
            is_stop[t] = true;
        }
        let top_k = config.top_k.filter(|&k| k < v);
        let top_p = config.top_p.filter(|&p| p < 1.0);
        let penalty = (config.repetition_penalty != 1.0).then_some(config.repetition_penalty);
        Policy {
            length: config.length,
            greedy: config.temperature == 0.0,
            temperature: config.temperature,
            top_k,
            top_p,
            penalty,
            is_stop,
            banned: config.banned_tokens.clone(),
        }
    }
}

impl<F: Element> Row<F> {
    /// A sequence continuing `prefix` (checked) from `seed`, its buffers sized for `policy`.
    fn new(prefix: &[usize], seed: u64, policy: &Policy, v: usize) -> Self {
        let prefix = prefix.to_vec();
        let needs_order = !policy.greedy && (policy.top_k.is_some() || policy.top_p.is_some());
        let (mut seen, mut seen_list) = (Vec::new(), Vec::new());
        if policy.penalty.is_some() {
            seen = vec![false; v];
            seen_list.reserve_exact(prefix.len() + policy.length);
            for &t in &prefix {
                if !seen[t] {
                    seen[t] = true;
                    seen_list.push(t);
                }
            }
        }
        Row {
            prefix,
            rng: rng::stream(&[seed, SAMPLE_STREAM]),
            ids: Vec::with_capacity(policy.length),
            logprobs: Vec::with_capacity(policy.length),
            seen,
            seen_list,
            work: vec![0.0; v],
            scratch: vec![F::zero(); v],
            cum: vec![0.0; v],
            order: if needs_order { vec![0; v] } else { Vec::new() },
            sums: if needs_order && policy.top_k.is_none() { vec![0.0; RADIX] } else { Vec::new() },
            done: policy.length == 0,
            stopped: false,
            nonfinite: false,
        }
    }
}

/// A batch of sequences being generated: create with [`Sampler::new`], then [`Sampler::advance`]
/// in chunks (streaming) or [`Sampler::run`] to the end. The model is passed to every call (it must
/// be the same architecture; its weights are read, never changed).
#[derive(Clone, Debug)]
pub struct Sampler<F> {
    config: SampleConfig,
    policy: Policy,
    dims: Dims,
    /// One stepper per group of consecutive rows (see [`row_groups`]).
    groups: Vec<Group<F>>,
    rows: Vec<Row<F>>,
    /// Global steps taken.
    step: usize,
    /// The storage the last call resolved `config.weights` to (`F32` or `F16`).
    used: WeightFormat,
}

/// The weights the steps of a sampler read.
#[derive(Clone, Debug)]
enum Streamed {
    /// The model's own (float64 models).
    Model,
    /// The float32 copy packed for the step kernel.
    F32(Arc<StepWeights<f32>>),
    /// The float16 copy.
    F16(Arc<StepWeights<f16>>),
}

impl Streamed {
    /// The weights a step with `format` reads from `model` (see [`WeightFormat`]).
    fn of<F: Element>(model: &LanguageModel<F>, format: WeightFormat) -> Result<Self> {
        let float32 = std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>();
        let cache = model.step_cache();
        let half = match format {
            WeightFormat::F32 => None,
            WeightFormat::Auto if float32 => cache.exact(model),
            WeightFormat::Auto => None,
            WeightFormat::F16 if float32 => Some(cache.rounded(model)?),
            WeightFormat::F16 => {
                return Err(invalid("weights", "\"f16\" with a float32 model (\"auto\" or \"f32\" otherwise)", "a float64 model"))
            }
        };
        Ok(match half {
            Some(h) => Streamed::F16(h),
            None => cache.float32(model).map_or(Streamed::Model, Streamed::F32),
        })
    }

    fn format(&self) -> WeightFormat {
        match self {
            Streamed::F16(_) => WeightFormat::F16,
            _ => WeightFormat::F32,
        }
    }

    /// Bytes per streamed weight.
    fn width<F>(&self) -> usize {
        match self {
            Streamed::Model => std::mem::size_of::<F>(),
            Streamed::F32(_) => 4,
            Streamed::F16(_) => 2,
        }
    }
}

impl<F: Element> Sampler<F> {
    /// Check the inputs and allocate every buffer. `prefixes[i]` (non-empty ids `< vocab_size`) is
    /// continued from `seeds[i]`.
    pub fn new<P: AsRef<[usize]>>(model: &LanguageModel<F>, prefixes: &[P], seeds: &[u64], config: SampleConfig) -> Result<Self> {
        let dims = Dims::of(model)?;
        let v = dims.vocab;
        config.validate(v)?;
        let b = prefixes.len();
        if b == 0 || b > MAX_SEQUENCES {
            return Err(invalid("prefixes", format!("between 1 and {MAX_SEQUENCES} sequences"), b));
        }
        if seeds.len() != b {
            return Err(invalid("seeds", format!("one seed per prefix ({b})"), seeds.len()));
        }
        for (i, p) in prefixes.iter().enumerate() {
            check_prefix(&format!("prefix {i}"), p.as_ref(), v)?;
        }
        if config.length.saturating_mul(b) > MAX_TOKENS {
            return Err(invalid(
                "length × number of sequences",
                format!("at most {MAX_TOKENS} new tokens in one call"),
                format!("{} × {b}", config.length),
            ));
        }
        let policy = Policy::new(&config, v);
        let rows = prefixes.iter().zip(seeds).map(|(p, &seed)| Row::new(p.as_ref(), seed, &policy, v)).collect();
        let used = Streamed::of(model, config.weights)?.format();
        let per_group = b.div_ceil(row_groups(b));
        let groups = (0..b.div_ceil(per_group))
            .map(|g| {
                let n = per_group.min(b - g * per_group);
                Group { stepper: Stepper::new(model, n), inputs: vec![0; n] }
            })
            .collect();
        Ok(Sampler { config, policy, dims, groups, rows, step: 0, used })
    }

    /// Advance until every unfinished sequence has generated `tokens` more tokens (or finished);
    /// sequences with shorter prefixes are ahead in a batch and may produce more. Chunking never
    /// changes the result: `advance(a)` then `advance(b)` generates what one long call does.
    ///
    /// The model's current weights are used: if they changed since the last call (a training step
    /// in between), the next tokens come from the new weights — through a new float16 copy too.
    pub fn advance(&mut self, model: &LanguageModel<F>, tokens: usize) -> Result<()> {
        self.dims.check(model)?;
        let streamed = Streamed::of(model, self.config.weights)?;
        self.used = streamed.format();
        let s = self.step;
        let steps = self
            .rows
            .iter()
            .filter(|r| !r.done)
            .map(|r| (r.prefix.len() - 1).saturating_sub(s).saturating_add(tokens))
            .max()
            .unwrap_or(0);
        let (policy, v, w) = (&self.policy, self.dims.vocab, &streamed);
        if let [g] = &mut self.groups[..] {
            let members = crew_members::<F>(self.rows.len(), g.stepper.streamed * w.width::<F>(), steps);
            let rows = &mut self.rows;
            with_crew(members, |crew| {
                let crew = (crew.members() > 1).then_some(crew);
                for k in 0..steps {
                    if rows.iter().all(|r| r.done) {
                        break;
                    }
                    g.step(model, w, rows, 0, s + k, policy, v, true, crew)?;
                }
                Ok::<(), Error>(())
            })?;
        } else {
            // Groups of rows are independent: each runs all its steps on its own thread, with no
            // synchronisation (each row's arithmetic is the same as in any other grouping).
            let per_group = self.groups[0].inputs.len();
            self.groups
                .par_iter_mut()
                .zip(self.rows.par_chunks_mut(per_group))
                .enumerate()
                .map(|(gi, (g, rows))| {
                    for k in 0..steps {
                        if rows.iter().all(|r| r.done) {
                            break;
                        }
                        g.step(model, w, rows, gi * per_group, s + k, policy, v, false, None)?;
                    }
                    Ok(())
                })
                .collect::<Result<Vec<()>>>()?;
        }
        self.step = s + steps;
        Ok(())
    }

    /// Generate until every sequence is finished.
    pub fn run(&mut self, model: &LanguageModel<F>) -> Result<()> {
        self.advance(model, self.config.length)
    }

    /// Whether every sequence is finished.
    pub fn is_done(&self) -> bool {
        self.rows.iter().all(|r| r.done)
    }

    /// Number of sequences.
    pub fn num_sequences(&self) -> usize {
        self.rows.len()
    }

    /// The options.
    pub fn config(&self) -> &SampleConfig {
        &self.config
    }

    /// The weight storage the last call used ([`WeightFormat::F32`] — the model's own values —
    /// or [`WeightFormat::F16`]), resolving [`WeightFormat::Auto`]; after [`Sampler::new`], the one
    /// the first step will use.
    pub fn weights_used(&self) -> WeightFormat {
        self.used
    }

    /// New token ids of sequence `i` so far (panics if `i >= num_sequences()`).
    pub fn ids(&self, i: usize) -> &[usize] {
        &self.rows[i].ids
    }

    /// Model log-probabilities of the tokens of [`Sampler::ids`].
    pub fn logprobs(&self, i: usize) -> &[f64] {
        &self.rows[i].logprobs
    }

    /// Whether sequence `i` is finished.
    pub fn finished(&self, i: usize) -> bool {
        self.rows[i].done
    }

    /// Whether sequence `i` ended on a stop token.
    pub fn stopped(&self, i: usize) -> bool {
        self.rows[i].stopped
    }

    /// The sequences generated so far.
    pub fn into_samples(self) -> Vec<Sampled> {
        self.rows.into_iter().map(|r| Sampled { ids: r.ids, logprobs: r.logprobs, stopped: r.stopped }).collect()
    }
}

pub mod continuous;
pub use continuous::{ContinuousSampler, SequenceStep, MAX_TOP_LOGPROBS};

/// Rows stepped by one thread at a time: at least this many per group (below it, the products
/// of all rows are split by columns instead).
const MIN_GROUP_ROWS: usize = 8;

/// Groups of consecutive rows a batch of `b` rows is split into: one per thread when every group
/// keeps at least [`MIN_GROUP_ROWS`] rows, else 1. A batch step is compute-bound; groups run all
/// their steps independently, with no thread waiting for another between the products, cells and
/// draws of a step (measured at 32 rows, H=256, 2 threads, alternating runs on a busy machine:
/// median 0.037 → 0.034 ms/token, best 0.021 → 0.017). Results never depend on it.
fn row_groups(b: usize) -> usize {
    rayon::current_num_threads().min(b / MIN_GROUP_ROWS).max(1)
}

/// The stepper and input buffer of one group of rows.
#[derive(Clone, Debug)]
struct Group<F> {
    stepper: Stepper<F>,
    inputs: Vec<usize>,
}

impl<F: Element> Group<F> {
    /// Global step `s` for `rows` (rows `first..` of the sampler). `parallel`: this is the only
    /// group, so products and draws may be split over threads.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        model: &LanguageModel<F>,
        w: &Streamed,
        rows: &mut [Row<F>],
        first: usize,
        s: usize,
        policy: &Policy,
        v: usize,
        parallel: bool,
        crew: Option<&Crew<'_>>,
    ) -> Result<()> {
        for (inp, r) in self.inputs.iter_mut().zip(rows.iter()) {
            let p = r.prefix.len();
            *inp = if s < p {
                r.prefix[s]
            } else {
                // A finished row keeps being fed a valid token; its results are ignored.
                r.ids.get(s - p).or(r.ids.last()).copied().unwrap_or(r.prefix[p - 1])
            };
        }
        self.stepper.step(model, w, &self.inputs, parallel, crew)?;
        let logits = &self.stepper.logits[..rows.len() * v];
        let pick = |(lg, row): (&[F], &mut Row<F>)| {
            if !row.done && s + 1 >= row.prefix.len() {
                let _ = choose(lg, row, policy);
            }
        };
        if parallel && rows.len() > 1 && rows.len() * v >= 1 << 14 {
            logits.par_chunks(v).zip(rows.par_iter_mut()).for_each(pick);
        } else {
            logits.chunks(v).zip(rows.iter_mut()).for_each(pick);
        }
        if let Some(i) = rows.iter().position(|r| r.nonfinite) {
            return Err(Error::NonFinite(format!(
                "sampling: sequence {} got a NaN or infinite logit at step {s} (are the model's weights finite?)",
                first + i
            )));
        }
        Ok(())
    }
}

/// A temperature that scales some logit beyond this is treated as 0 (greedy).
const OVERFLOW: f64 = 1e30;

/// Weights `exp(score - max)` below this are treated as 0: such a token is less probable than
/// `1e-30` times the most probable one (whose weight is 1), and is never drawn.
const TINY: f64 = 1e-30;

/// `w = exp(e - max(e))` (as f64, [`TINY`] ones zeroed) through `F::exp_inplace` (vectorised for
/// f32), and `cum[i] = w[0] + … + w[i]` summed in that order; `e` holds the scores on entry and is
/// scratch after. Returns `(max, Σ w)` (`Σ w = cum[V - 1]`); NaN or +inf scores make it NaN.
#[inline]
fn exp_weights<F: Element>(e: &mut [F], w: &mut [f64], cum: &mut [f64]) -> (f64, f64) {
    let m = e.iter().fold(F::neg_infinity(), |a, &x| a.max(x));
    for x in e.iter_mut() {
        *x -= m;
    }
    F::exp_inplace(e);
    for (wi, &x) in w.iter_mut().zip(e.iter()) {
        let x = x.to_f64();
        *wi = if x < TINY { 0.0 } else { x };
    }
    let mut s = 0.0;
    for (c, &wi) in cum.iter_mut().zip(w.iter()) {
        s += wi;
        *c = s;
    }
    (m.to_f64(), s)
}

/// `log Σ exp(l)` of raw logits, leaving `w = exp(l - max)` and its running sums `cum`; `e` is
/// scratch.
#[inline]
fn log_sum_exp<F: Element>(logits: &[F], e: &mut [F], w: &mut [f64], cum: &mut [f64]) -> f64 {
    e.copy_from_slice(logits);
    let (m, s) = exp_weights(e, w, cum);
    m + s.ln()
}

/// Decreasing weight, then increasing token id: a total order on kept tokens.
#[inline]
fn by_weight(w: &[f64]) -> impl Fn(&usize, &usize) -> Ordering + '_ {
    move |a, b| w[*b].partial_cmp(&w[*a]).unwrap_or(Ordering::Equal).then(a.cmp(b))
}

/// Digits of the nucleus radix select: 8 bits per pass.
const RADIX: usize = 256;
/// Shift of the first digit: keys are below `2^62`.
const TOP_SHIFT: u32 = 56;
/// Sort the crossing candidates once at most this many remain.
const SORT_AT_MOST: usize = 64;

/// A key that increases as the weight `w ∈ [0, 1]` decreases: the bits of `1.0` minus those of
/// `w` (the bit patterns of non-negative floats are ordered like their values).
#[inline]
fn key(w: f64) -> u64 {
    1.0f64.to_bits().saturating_sub(w.to_bits())
}

/// The first digit whose weight takes `before` to `threshold` (rounding fallback: the last digit
/// with weight); `before` becomes the weight of the earlier digits.
fn crossing(sums: &[f64], before: &mut f64, threshold: f64) -> usize {
    let mut last = 0;
    for (d, &s) in sums.iter().enumerate() {
        if *before + s >= threshold {
            return d;
        }
        *before += s;
        if s > 0.0 {
            last = d;
        }
    }
    *before -= sums[last];
    last
}

/// Top-p over all tokens in O(V): keep the smallest most-probable set with weight `>= p · Σ w`
/// (cumulative sums up to rounding) and draw from it with `u`. A weighted radix select on [`key`]
/// finds the key range where the cumulative weight crosses the threshold — 8 bits per pass, each
/// pass over the remaining candidates only — until at most [`SORT_AT_MOST`] candidates remain; only
/// those are sorted (by [`by_weight`]) to place the cut. Draw order: tokens below the crossing range
/// in token-id order, then the kept candidates in sorted order.
fn nucleus_draw(w: &[f64], order: &mut [usize], sums: &mut [f64], p: f64, u: f64) -> usize {
    let (lo, kept) = nucleus(w, order, sums, p);
    let below = w.iter().enumerate().filter(|&(_, &x)| key(x) < lo).map(|(t, _)| t);
    draw(below.chain(order[..kept].iter().copied()), w, u)
}

/// The nucleus of [`nucleus_draw`]: every token with `key < lo`, and `order[..kept]`.
fn nucleus(w: &[f64], order: &mut [usize], sums: &mut [f64], p: f64) -> (u64, usize) {
    sums.fill(0.0);
    for &x in w {
        sums[(key(x) >> TOP_SHIFT) as usize] += x;
    }
    let threshold = p * sums.iter().sum::<f64>();
    let mut before = 0.0;
    let d = crossing(sums, &mut before, threshold) as u64;
    let mut lo = d << TOP_SHIFT;
    let mut m = 0;
    for (t, &x) in w.iter().enumerate() {
        if key(x) >> TOP_SHIFT == d {
            order[m] = t;
            m += 1;
        }
    }
    let mut shift = TOP_SHIFT;
    while m > SORT_AT_MOST && shift > 0 {
        shift -= 8;
        let digit = |t: usize| (key(w[t]) >> shift) & (RADIX as u64 - 1);
        sums.fill(0.0);
        for &t in &order[..m] {
            sums[digit(t) as usize] += w[t];
        }
        let d = crossing(sums, &mut before, threshold) as u64;
        let mut kept = 0;
        for q in 0..m {
            let t = order[q];
            if digit(t) == d {
                order[kept] = t;
                kept += 1;
            }
        }
        m = kept;
        lo += d << shift;
    }
    // Candidates: keys in [lo, lo + 2^shift); everything below `lo` (weight `before`) is kept.
    order[..m].sort_unstable_by(by_weight(w));
    let (mut kept, mut cum) = (0, before);
    for &t in &order[..m] {
        if cum >= threshold && kept > 0 {
            break;
        }
        cum += w[t];
        kept += 1;
    }
    (lo, kept)
}

/// Length of the smallest prefix of `sorted` with weight `>= threshold` (at least 1).
fn cut_sorted(sorted: &[usize], w: &[f64], threshold: f64) -> usize {
    let mut cum = 0.0;
    for (q, &t) in sorted.iter().enumerate() {
        if cum >= threshold {
            return q.max(1);
        }
        cum += w[t];
    }
    sorted.len()
}

/// Inverse CDF over `ids` (in that order) with weights `w`: the first id whose cumulative weight
/// exceeds `u · Σ w`; rounding fallback: the last id with a positive weight.
fn draw(ids: impl Iterator<Item = usize> + Clone, w: &[f64], u: f64) -> usize {
    let total: f64 = ids.clone().map(|t| w[t]).sum();
    let target = u * total;
    let mut cum = 0.0;
    let mut last = None;
    for t in ids {
        if w[t] > 0.0 {
            last = Some(t);
        }
        cum += w[t];
        if cum > target {
            return t;
        }
    }
    last.unwrap_or(0)
}

/// [`draw`] over all ids `0..V` in order, from the running sums `cum` of `w` ([`exp_weights`]):
/// they are the very sums `draw` forms, so a binary search finds the same id without re-adding.
fn draw_all(w: &[f64], cum: &[f64], u: f64) -> usize {
    let Some(&total) = cum.last() else { return 0 };
    let target = u * total;
    // Running sums of non-negative weights never decrease: the first id whose sum exceeds `target`.
    let t = cum.partition_point(|&c| c <= target);
    if t < cum.len() {
        return t;
    }
    w.iter().rposition(|&x| x > 0.0).unwrap_or(0)
}

/// Pick the next token of `row` from its logits and record it. Returns `log Σ exp(logits)` (not
/// finite, and nothing recorded, when a logit is NaN or infinite).
fn choose<F: Element>(logits: &[F], row: &mut Row<F>, p: &Policy) -> f64 {
    // `work` = exp(l - max): the sampling weights when nothing modifies the distribution.
    let lse = log_sum_exp(logits, &mut row.scratch, &mut row.work, &mut row.cum);
    if !lse.is_finite() {
        row.nonfinite = true;
        row.done = true;
        return lse;
    }
    let token = 'pick: {
        if p.temperature != 1.0 || p.penalty.is_some() || !p.banned.is_empty() {
            for (wi, &x) in row.work.iter_mut().zip(logits) {
                *wi = x.to_f64();
            }
            if let Some(r) = p.penalty {
                for &t in &row.seen_list {
                    let l = row.work[t];
                    row.work[t] = if l > 0.0 { l / r } else { l * r };
                }
            }
            for &t in &p.banned {
                row.work[t] = f64::NEG_INFINITY;
            }
            // Greedy: temperature 0, or so small that the scaled scores would overflow (the limit
            // of sampling as the temperature goes to 0 is the argmax).
            let hi = row.work.iter().filter(|x| x.is_finite()).fold(0.0f64, |a, &x| a.max(x.abs()));
            if p.greedy || hi / p.temperature > OVERFLOW {
                let mut best = 0;
                for (i, &x) in row.work.iter().enumerate() {
                    if x > row.work[best] {
                        best = i;
                    }
                }
                break 'pick best;
            }
            // Scores in the model's precision, then the same exp as the raw weights.
            for (e, &x) in row.scratch.iter_mut().zip(&row.work) {
                *e = F::from_f64(x / p.temperature);
            }
            exp_weights(&mut row.scratch, &mut row.work, &mut row.cum);
        }
        let u = rng::uniform(&mut row.rng);
        let w = &row.work;
        if p.top_k.is_none() && p.top_p.is_none() {
            break 'pick draw_all(w, &row.cum, u);
        }
        let order = &mut row.order;
        match (p.top_k, p.top_p) {
            (Some(k), top_p) => {
                for (i, o) in order.iter_mut().enumerate() {
                    *o = i;
                }
                order.select_nth_unstable_by(k - 1, by_weight(w));
                order[..k].sort_unstable_by(by_weight(w));
                let kept = match top_p {
                    Some(pp) => cut_sorted(&order[..k], w, pp * order[..k].iter().map(|&t| w[t]).sum::<f64>()),
                    None => k,
                };
                draw(order[..kept].iter().copied(), w, u)
            }
            (None, top_p) => nucleus_draw(w, order, &mut row.sums, top_p.unwrap_or(1.0), u),
        }
    };
    row.ids.push(token);
    row.logprobs.push(logits[token].to_f64() - lse);
    if p.penalty.is_some() && !row.seen[token] {
        row.seen[token] = true;
        row.seen_list.push(token);
    }
    if p.is_stop[token] {
        row.stopped = true;
        row.done = true;
    } else if row.ids.len() >= p.length {
        row.done = true;
    }
    lse
}

/// Beam search: keep the `width` most probable continuations (by total model log-probability) for
/// `length` new tokens and return the best. Width 1 is greedy decoding. The greedy continuation is
/// carried alongside the beam and returned if it scores higher, so the result is never less
/// probable than greedy decoding's (plain beam search can lose the greedy path). Ties are broken by
/// beam order, then larger logit, then smaller token id. Stop tokens are not used. Weights are read
/// as with [`WeightFormat::Auto`] (the same results as float32, faster when that is possible).
pub fn beam_search<F: Element>(model: &LanguageModel<F>, prefix: &[usize], width: usize, length: usize) -> Result<Beam> {
    Ok(beam_search_until(model, prefix, width, length, &mut || false)?.expect("never stopped"))
}

/// [`beam_search`] that asks `stop()` before every step of the prefix and of the search and gives
/// up, returning `Ok(None)`, as soon as it says `true` — e.g. to honour Ctrl-C in a long search.
pub fn beam_search_until<F: Element>(
    model: &LanguageModel<F>,
    prefix: &[usize],
    width: usize,
    length: usize,
    stop: &mut dyn FnMut() -> bool,
) -> Result<Option<Beam>> {
    let dims = Dims::of(model)?;
    let v = dims.vocab;
    check_prefix("prefix", prefix, v)?;
    if width == 0 || width > MAX_SEQUENCES {
        return Err(invalid("beam width", format!("an integer in [1, {MAX_SEQUENCES}]"), width));
    }
    if length.saturating_mul(width) > MAX_TOKENS {
        return Err(invalid("length × beam width", format!("at most {MAX_TOKENS} tokens"), format!("{length} × {width}")));
    }
    // Rows 0..width: beams; row `width` (if width > 1): the greedy continuation.
    let rows = if width > 1 { width + 1 } else { 1 };
    let mut st = Stepper::new(model, rows);
    let w = Streamed::of(model, WeightFormat::Auto)?;
    for &t in prefix {
        if stop() {
            return Ok(None);
        }
        st.step(model, &w, &[t], true, None)?;
    }
    st.broadcast_row0(rows, v);
    let mut scores = vec![0.0f64; width];
    // Step `t`, beam `j`: its parent beam at step `t - 1`, its token and that token's logprob (the
    // sequences are traced back at the end: linear in `length`, where copying them was quadratic).
    let mut back = vec![(0usize, 0usize, 0.0f64); width * length];
    let mut greedy = Beam { ids: Vec::with_capacity(length), logprobs: Vec::with_capacity(length), total_logprob: 0.0 };
    let mut tops: Vec<(f64, usize)> = Vec::with_capacity(width + 1);
    // (score, beam, rank within beam, token, logprob)
    let mut cands: Vec<(f64, usize, usize, usize, f64)> = Vec::with_capacity(width * width);
    let mut parents = vec![0usize; width];
    let mut inputs = vec![0usize; rows];
    let (mut scratch, mut escratch, mut cum) = (vec![0.0f64; v], vec![F::zero(); v], vec![0.0f64; v]);
    let mut live = 1;
    for t in 0..length {
        if stop() {
            return Ok(None);
        }
        if t > 0 {
            st.step(model, &w, &inputs, true, None)?;
        }
        cands.clear();
        for (b, &score) in scores[..live].iter().enumerate() {
            let lg = &st.logits[b * v..(b + 1) * v];
            let lse = log_sum_exp(lg, &mut escratch, &mut scratch, &mut cum);
            if !lse.is_finite() {
                return Err(Error::NonFinite(format!("beam search: a NaN or infinite logit at step {t}")));
            }
            largest_logits(lg, width, &mut tops);
            for (rank, &(x, tok)) in tops.iter().enumerate() {
                let lp = x - lse;
                cands.push((score + lp, b, rank, tok, lp));
            }
        }
        cands.sort_unstable_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(Ordering::Equal).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let new_live = cands.len().min(width);
        for (j, c) in cands[..new_live].iter().enumerate() {
            back[t * width + j] = (c.1, c.3, c.4);
            scores[j] = c.0;
            parents[j] = c.1;
            inputs[j] = c.3;
        }
        st.gather_rows(&parents[..new_live]);
        live = new_live;
        if rows > width {
            let lg = &st.logits[width * v..(width + 1) * v];
            let lse = log_sum_exp(lg, &mut escratch, &mut scratch, &mut cum);
            let mut best = 0;
            for (i, &x) in lg.iter().enumerate() {
                if x > lg[best] {
                    best = i;
                }
            }
            let lp = lg[best].to_f64() - lse;
            greedy.ids.push(best);
            greedy.logprobs.push(lp);
            greedy.total_logprob += lp;
            inputs[width] = best;
        }
    }
    if rows > width && greedy.total_logprob > scores[0] {
        return Ok(Some(greedy));
    }
    let (mut ids, mut logprobs) = (vec![0; length], vec![0.0; length]);
    let mut j = 0;
    for t in (0..length).rev() {
        let (parent, tok, lp) = back[t * width + j];
        (ids[t], logprobs[t], j) = (tok, lp, parent);
    }
    Ok(Some(Beam { ids, logprobs, total_logprob: if length > 0 { scores[0] } else { 0.0 } }))
}

/// The `n` largest logits as `(logit, token)` in `tops`: larger first, smaller id first on ties.
fn largest_logits<F: Element>(logits: &[F], n: usize, tops: &mut Vec<(f64, usize)>) {
    tops.clear();
    for (i, &x) in logits.iter().enumerate() {
        let x = x.to_f64();
        if tops.len() < n || x > tops[tops.len() - 1].0 {
            let pos = tops.iter().position(|&(y, _)| x > y).unwrap_or(tops.len());
            tops.insert(pos, (x, i));
            tops.truncate(n);
        }
    }
}

/// One-token-at-a-time inference through the model for up to `rows` sequences, with every buffer
/// allocated once.
#[derive(Clone, Debug)]
struct Stepper<F> {
    rows: usize,
    /// `(rows, E)` embedded inputs (empty for one-hot models). This and `h`, the left-hand sides
    /// of the products, start on cache lines (see [`Aligned`]).
    x0: Aligned<F>,
    /// Per layer `(rows, H)` hidden and cell states.
    h: Vec<Aligned<F>>,
    c: Vec<Vec<F>>,
    h_new: Vec<F>,
    c_new: Vec<F>,
    /// `(rows, G·H)` projections and gate activations.
    xw: Vec<F>,
    hw: Vec<F>,
    gates: Vec<F>,
    /// `(rows · max(G·H, V))` transposed product output.
    tmp: Vec<F>,
    /// `(rows, V)` logits of the last step.
    logits: Vec<F>,
    /// Weights read per step (every streamed matrix once).
    streamed: usize,
}

/// Steps of fewer rows than this are memory-bound (they stream the weights); larger ones are
/// compute-bound.
const FEW_ROWS: usize = 4;

/// Split even few-row products over threads when a step streams at least this many bytes of
/// weights: they no longer stay in cache, and two cores fetch them faster than one. Below it a
/// second thread costs more to wake than it saves (see `step_kernel::affine_f32`).
const SPLIT_STREAMED_BYTES: usize = 16 << 20;

/// Few-row sampling of float32 models streaming at least this many bytes of weights per step
/// runs with a [`Crew`] (below it the weights stay in one core's cache and a handoff per product
/// costs more than it saves).
const CREW_MIN_BYTES: usize = 1 << 20;

/// The crew for `steps` steps of `rows` rows streaming `bytes` per step: one member per rayon
/// thread (at most one per core, and 8), or 1 (no helpers) for float64, batches, short runs and
/// small models.
fn crew_members<F: Element>(rows: usize, bytes: usize, steps: usize) -> usize {
    let f32_model = std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>();
    if f32_model && rows < FEW_ROWS && steps >= 8 && bytes >= CREW_MIN_BYTES {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        rayon::current_num_threads().min(cores).min(8)
    } else {
        1
    }
}

impl<F: Element> Stepper<F> {
    fn new(model: &LanguageModel<F>, rows: usize) -> Self {
        let c = model.config();
        let (hs, l) = (c.hidden_size, c.num_layers);
        let gh = c.cell.gates() * hs;
        let lstm = c.cell.has_cell_state();
        let cs = if lstm { rows * hs } else { 0 };
        Stepper {
            rows,
            x0: Aligned::filled(rows * c.embed_size.unwrap_or(0), F::zero()),
            h: (0..l).map(|_| Aligned::filled(rows * hs, F::zero())).collect(),
            c: vec![vec![F::zero(); cs]; l],
            h_new: vec![F::zero(); rows * hs],
            c_new: vec![F::zero(); cs],
            xw: vec![F::zero(); rows * gh],
            hw: vec![F::zero(); rows * gh],
            gates: vec![F::zero(); rows * gh],
            tmp: vec![F::zero(); if rows > 1 { rows * gh.max(c.vocab_size) } else { 0 }],
            logits: vec![F::zero(); rows * c.vocab_size],
            streamed: (0..l)
                .map(|k| {
                    let p = model.rnn().dir_params(k, 0);
                    let ih = if k == 0 && c.embed_size.is_none() { 0 } else { p.weight_ih.len() };
                    ih + p.weight_hh.len()
                })
                .sum::<usize>()
                + model.linear().weight.len(),
        }
    }

    /// Feed `inputs[i]` to row `i` (rows `0..inputs.len()`): update the states, compute the logits.
    /// The weight matrices are read from `w` (made from `model`). `parallel`: products may be
    /// split over threads (else this runs on one of several); by `crew` when there is one (only
    /// few-row samplers have one, see `crew_members`).
    fn step(&mut self, model: &LanguageModel<F>, w: &Streamed, inputs: &[usize], parallel: bool, crew: Option<&Crew<'_>>) -> Result<()> {
        let b = inputs.len();
        debug_assert!(b <= self.rows);
        let cfg = model.config();
        let (hs, cell) = (cfg.hidden_size, cfg.cell);
        let gh = cell.gates() * hs;
        let lstm = cell.has_cell_state();
        let split = match (parallel, crew, self.streamed * w.width::<F>() >= SPLIT_STREAMED_BYTES) {
            (false, ..) => Split::Never,
            (true, Some(crew), _) => Split::Crew(crew),
            (true, _, true) => Split::Always,
            (true, _, false) => Split::Batches,
        };
        for l in 0..cfg.num_layers {
            let p = model.rnn().dir_params(l, 0);
            let (w_ih, w_hh) = match w {
                Streamed::F32(c) => (c.ih[l].as_ref().map(Mat::F32), Mat::F32(&c.hh[l])),
                Streamed::F16(c) => (c.ih[l].as_ref().map(Mat::F16), Mat::F16(&c.hh[l])),
                Streamed::Model => (Some(Mat::Rows(weights(&p.weight_ih)?)), Mat::Rows(weights(&p.weight_hh)?)),
            };
            let (b_ih, b_hh) = (vector(&p.bias_ih)?, vector(&p.bias_hh)?);
            let xw = &mut self.xw[..b * gh];
            if l == 0 {
                match model.embedding() {
                    Some(e) => {
                        let table = weights(&e.weight)?;
                        let ew = e.weight.ncols();
                        let x = &mut self.x0[..b * ew];
                        for (xr, &id) in x.chunks_exact_mut(ew).zip(inputs) {
                            xr.copy_from_slice(&table[id * ew..(id + 1) * ew]);
                        }
                        affine(x, ew, w_ih.expect("a packed weight_ih"), b_ih, xw, &mut self.tmp, split);
                    }
                    None => {
                        // One-hot input: the projection is a column of W_ih (never packed).
                        let (vi, w_ih) = (p.weight_ih.ncols(), weights(&p.weight_ih)?);
                        for (row, &id) in xw.chunks_exact_mut(gh).zip(inputs) {
                            for (j, o) in row.iter_mut().enumerate() {
                                *o = b_ih[j] + w_ih[j * vi + id];
                            }
                        }
                    }
                }
            } else {
                affine(&self.h[l - 1][..b * hs], hs, w_ih.expect("a packed weight_ih"), b_ih, xw, &mut self.tmp, split);
            }
            let hw = &mut self.hw[..b * gh];
            affine(&self.h[l][..b * hs], hs, w_hh, b_hh, hw, &mut self.tmp, split);
            let c_prev: &[F] = if lstm { &self.c[l][..b * hs] } else { &[] };
            let c_new: &mut [F] = if lstm { &mut self.c_new[..b * hs] } else { &mut [] };
            let s = cell::Fwd {
                xw: &self.xw[..b * gh],
                hw: &self.hw[..b * gh],
                bias: &[],
                h_prev: &self.h[l][..b * hs],
                c_prev,
                gates: &mut self.gates[..b * gh],
                h: &mut self.h_new[..b * hs],
                c: c_new,
            };
            match cell {
                CellKind::RnnTanh => cell::rnn::forward(s, false),
                CellKind::RnnRelu => cell::rnn::forward(s, true),
                CellKind::Gru => cell::gru::forward(s, hs),
                CellKind::Lstm => cell::lstm::forward(s, hs),
            }
            self.h[l][..b * hs].copy_from_slice(&self.h_new[..b * hs]);
            if lstm {
                self.c[l][..b * hs].copy_from_slice(&self.c_new[..b * hs]);
            }
        }
        let lin = model.linear();
        let top = &self.h[cfg.num_layers - 1][..b * hs];
        let w = match w {
            Streamed::F32(c) => Mat::F32(&c.linear),
            Streamed::F16(c) => Mat::F16(&c.linear),
            Streamed::Model => Mat::Rows(weights(&lin.weight)?),
        };
        affine(top, hs, w, vector(&lin.bias)?, &mut self.logits[..b * cfg.vocab_size], &mut self.tmp, split);
        Ok(())
    }

    /// Row `to` of every state becomes a copy of row `from`.
    fn copy_row(&mut self, from: usize, to: usize) {
        let hs = self.h_new.len() / self.rows;
        for l in 0..self.h.len() {
            self.h[l].copy_within(from * hs..(from + 1) * hs, to * hs);
            if !self.c[l].is_empty() {
                self.c[l].copy_within(from * hs..(from + 1) * hs, to * hs);
            }
        }
    }

    /// Row `i` of every state becomes the initial (zero) state.
    fn zero_row(&mut self, i: usize) {
        let hs = self.h_new.len() / self.rows;
        for l in 0..self.h.len() {
            self.h[l][i * hs..(i + 1) * hs].fill(F::zero());
            if !self.c[l].is_empty() {
                self.c[l][i * hs..(i + 1) * hs].fill(F::zero());
            }
        }
    }

    /// Copy row 0's states and logits to rows `1..rows`.
    fn broadcast_row0(&mut self, rows: usize, v: usize) {
        let copy = |buf: &mut [F], w: usize| {
            if w == 0 || buf.is_empty() {
                return;
            }
            let (first, rest) = buf.split_at_mut(w);
            for r in rest.chunks_exact_mut(w).take(rows - 1) {
                r.copy_from_slice(first);
            }
        };
        let hs = self.h_new.len() / self.rows;
        for l in 0..self.h.len() {
            copy(&mut self.h[l], hs);
            copy(&mut self.c[l], hs);
        }
        copy(&mut self.logits, v);
    }

    /// Row `j` of every state becomes old row `parents[j]`, for `j < parents.len()`.
    fn gather_rows(&mut self, parents: &[usize]) {
        let hs = self.h_new.len() / self.rows;
        let n = parents.len();
        for l in 0..self.h.len() {
            for (buf, tmp) in [(&mut self.h[l][..], &mut self.h_new), (&mut self.c[l][..], &mut self.c_new)] {
                if buf.is_empty() {
                    continue;
                }
                for (j, &p) in parents.iter().enumerate() {
                    tmp[j * hs..(j + 1) * hs].copy_from_slice(&buf[p * hs..(p + 1) * hs]);
                }
                buf[..n * hs].copy_from_slice(&tmp[..n * hs]);
            }
        }
    }
}

fn weights<F: Element>(a: &ndarray::Array2<F>) -> Result<&[F]> {
    a.as_slice().ok_or_else(|| Error::State("sampling: expected weights in standard (row-major) layout".into()))
}

fn vector<F: Element>(a: &ndarray::Array1<F>) -> Result<&[F]> {
    a.as_slice().ok_or_else(|| Error::State("sampling: expected contiguous biases".into()))
}

// ------------------------------------------------------------------------------------------------
// The float64 step kernel: out[i, j] = bias[j] + x[i, :] · w[j, :], every output one fixed-order dot.
// ------------------------------------------------------------------------------------------------

/// Lanes of the partial sums of a dot product (see [`dot`]).
const LANES: usize = 8;

/// Weight rows per block: a block stays in cache while every group of input rows passes over it.
const ROW_BLOCK: usize = 32;

/// A weight matrix `(n, k)`: the model's own (row-major), or a packed copy of a float32 model's.
#[derive(Clone, Copy)]
enum Mat<'a, F> {
    Rows(&'a [F]),
    F32(&'a Panels<f32>),
    F16(&'a Panels<f16>),
}

/// `out (b, n) = x (b, k) · wᵀ + bias` for `w: (n, k)`; `tmp` holds at least `b · n` values when
/// `b > 1` and `w` is the model's own. Threads split the `n` outputs; results do not depend on
/// `b` or threads. Packed copies need `F = f32` (the sampler only makes them for float32 models).
/// `split`: which products may use several threads ([`Split`]; the float64 kernel splits large
/// products unless `Split::Never`).
fn affine<F: Element>(x: &[F], k: usize, w: Mat<'_, F>, bias: &[F], out: &mut [F], tmp: &mut [F], split: Split) {
    let w = match w {
        Mat::Rows(w) => w,
        packed => {
            assert!(std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>(), "packed weights of a float32 model");
            // SAFETY: `F` is `f32` (checked above), so the slices can be viewed as `f32`.
            unsafe {
                let cast = |s: &[F]| std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len());
                let o = std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<f32>(), out.len());
                match packed {
                    Mat::F32(p) => crate::step_kernel::affine_f32(cast(x), p, cast(bias), o, split),
                    Mat::F16(p) => crate::step_kernel::affine_f16(cast(x), p, cast(bias), o, split),
                    Mat::Rows(_) => unreachable!(),
                }
            }
            return;
        }
    };
    let n = bias.len();
    let b = x.len() / k;
    debug_assert!(w.len() == n * k && out.len() == b * n);
    // Outputs are produced feature-major `(n, b)`: for b = 1 that is `out` itself.
    let out_t: &mut [F] = if b == 1 { &mut *out } else { &mut tmp[..b * n] };
    let threads = rayon::current_num_threads();
    if threads > 1 && b * n * k >= PARALLEL_MIN_WORK && !matches!(split, Split::Never) {
        let chunk = n.div_ceil(threads).next_multiple_of(8).min(n);
        out_t.par_chunks_mut(chunk * b).zip(w.par_chunks(chunk * k)).zip(bias.par_chunks(chunk)).for_each(|((o, wc), bc)| {
            affine_t(x, b, k, wc, bc, o);
        });
    } else {
        affine_t(x, b, k, w, bias, out_t);
    }
    if b > 1 {
        for (j, col) in tmp[..b * n].chunks_exact(b).enumerate() {
            for (i, &val) in col.iter().enumerate() {
                out[i * n + j] = val;
            }
        }
    }
}

/// `out_t[j · b + i] = bias[j] + x_i · w_j` (float64; float32 goes through `step_kernel`).
fn affine_t<F: Element>(x: &[F], b: usize, k: usize, w: &[F], bias: &[F], out_t: &mut [F]) {
    drive!(x, b, k, w, bias, out_t, dot::<F>, dots_1x4::<F>, dots_4x2::<F>);
}

/// The blocked loop over outputs, with the dot-product kernels `$dot` (1 × 1), `$d14` (one input
/// row × four weight rows) and `$d42` (four input rows × two weight rows).
macro_rules! drive {
    ($x:expr, $b:expr, $k:expr, $w:expr, $bias:expr, $out:expr, $dot:expr, $d14:expr, $d42:expr) => {{
        let (x, b, k, w, bias, out_t) = ($x, $b, $k, $w, $bias, $out);
        let n = bias.len();
        let xr = |i: usize| &x[i * k..(i + 1) * k];
        let wr = |j: usize| &w[j * k..(j + 1) * k];
        for j0 in (0..n).step_by(ROW_BLOCK) {
            let j1 = (j0 + ROW_BLOCK).min(n);
            let mut i = 0;
            while i + 4 <= b {
                let xs = [xr(i), xr(i + 1), xr(i + 2), xr(i + 3)];
                let mut j = j0;
                while j + 2 <= j1 {
                    let d = $d42(xs, [wr(j), wr(j + 1)]);
                    for (c, dc) in d.iter().enumerate() {
                        for (r, &val) in dc.iter().enumerate() {
                            out_t[(j + c) * b + i + r] = bias[j + c] + val;
                        }
                    }
                    j += 2;
                }
                for j in j..j1 {
                    for (r, xv) in xs.iter().enumerate() {
                        out_t[j * b + i + r] = bias[j] + $dot(xv, wr(j));
                    }
                }
                i += 4;
            }
            for i in i..b {
                let xv = xr(i);
                let mut j = j0;
                while j + 4 <= j1 {
                    let d = $d14(xv, [wr(j), wr(j + 1), wr(j + 2), wr(j + 3)]);
                    for (c, &val) in d.iter().enumerate() {
                        out_t[(j + c) * b + i] = bias[j + c] + val;
                    }
                    j += 4;
                }
                for j in j..j1 {
                    out_t[j * b + i] = bias[j] + $dot(xv, wr(j));
                }
            }
        }
    }};
}
use drive;

// Every dot product `x · w` of length `k` is computed the same way, by whichever kernel: `LANES`
// partial sums `acc[l] += x[p + l] · w[p + l]` (multiply, then add: no fused multiply-add)
// over `p = 0, LANES, …` while a whole chunk fits, the lanes reduced by the tree
// `((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))`, then the `k % LANES` tail added in order.
// The kernels differ only in how many dots they interleave, never in the arithmetic.

#[inline(always)]
fn chunk<F: Element>(acc: &mut [F; LANES], x: &[F], w: &[F]) {
    let (x, w) = (&x[..LANES], &w[..LANES]);
    for l in 0..LANES {
        acc[l] += x[l] * w[l];
    }
}

#[inline(always)]
fn finish<F: Element>(a: &[F; LANES], x: &[F], w: &[F], kl: usize) -> F {
    let mut s = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
    for (&xq, &wq) in x[kl..].iter().zip(&w[kl..]) {
        s += xq * wq;
    }
    s
}

#[inline(always)]
fn dot<F: Element>(x: &[F], w: &[F]) -> F {
    let kl = w.len() - w.len() % LANES;
    let mut a = [F::zero(); LANES];
    for p in (0..kl).step_by(LANES) {
        chunk(&mut a, &x[p..], &w[p..]);
    }
    finish(&a, x, w, kl)
}

#[inline(always)]
fn dots_1x4<F: Element>(x: &[F], w: [&[F]; 4]) -> [F; 4] {
    [dot(x, w[0]), dot(x, w[1]), dot(x, w[2]), dot(x, w[3])]
}

#[inline(always)]
fn dots_4x2<F: Element>(x: [&[F]; 4], w: [&[F]; 2]) -> [[F; 4]; 2] {
    [[dot(x[0], w[0]), dot(x[1], w[0]), dot(x[2], w[0]), dot(x[3], w[0])], [
        dot(x[0], w[1]),
        dot(x[1], w[1]),
        dot(x[2], w[1]),
        dot(x[3], w[1]),
    ]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f64], k: usize, w: &[f64], bias: &[f64]) -> Vec<f64> {
        let (b, n) = (x.len() / k, bias.len());
        let mut out = vec![0.0; b * n];
        for i in 0..b {
            for j in 0..n {
                out[i * n + j] = bias[j] + (0..k).map(|q| x[i * k + q] * w[j * k + q]).sum::<f64>();
            }
        }
        out
    }

    #[test]
    fn affine_matches_naive_and_is_row_independent() {
        let mut r = rng::stream(&[3, 4]);
        for &(b, k, n) in &[(1, 1, 1), (1, 19, 7), (3, 8, 5), (5, 33, 67), (9, 130, 41)] {
            let x: Vec<f64> = (0..b * k).map(|_| rng::uniform(&mut r) - 0.5).collect();
            let w: Vec<f64> = (0..n * k).map(|_| rng::uniform(&mut r) - 0.5).collect();
            let bias: Vec<f64> = (0..n).map(|_| rng::uniform(&mut r) - 0.5).collect();
            let mut out = vec![0.0; b * n];
            let mut tmp = vec![0.0; b * n];
            affine(&x, k, Mat::Rows(&w), &bias, &mut out, &mut tmp, Split::Always);
            for (a, e) in out.iter().zip(naive(&x, k, &w, &bias)) {
                assert!((a - e).abs() < 1e-12, "{a} vs {e}");
            }
            for i in 0..b {
                let mut one = vec![0.0; n];
                affine(&x[i * k..(i + 1) * k], k, Mat::Rows(&w), &bias, &mut one, &mut [], Split::Never);
                assert_eq!(&out[i * n..(i + 1) * n], &one[..], "row {i} of {b}");
            }
        }
    }

    #[test]
    fn keys_increase_as_weights_decrease() {
        let mut prev = u64::MAX;
        for i in 0..=4000 {
            let w = (-(4000 - i) as f64 / 40.0).exp(); // increasing weights up to 1
            assert!(key(w) < prev, "{w}");
            prev = key(w);
        }
        assert_eq!(key(1.0), 0);
        assert!(key(0.0) >> TOP_SHIFT < RADIX as u64);
    }

    /// The nucleus found by the radix select equals a full sort's, on flat and peaked weights.
    #[test]
    fn nucleus_radix_select_matches_a_full_sort() {
        let mut r = rng::stream(&[8, 9]);
        for case in 0..60 {
            let v = [5, 70, 300, 4000][case % 4];
            let spread = [0.01, 0.3, 3.0, 30.0][(case / 4) % 4];
            let z: Vec<f64> = (0..v).map(|_| -spread * rng::uniform(&mut r)).collect();
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mut w: Vec<f64> = z.iter().map(|x| (x - m).exp()).collect();
            if case % 5 == 0 {
                w[1 % v] = w[0]; // a tie
            }
            let p = [0.1, 0.5, 0.9, 0.99][(case / 16) % 4];
            let mut sorted: Vec<usize> = (0..v).collect();
            sorted.sort_by(by_weight(&w));
            let total: f64 = w.iter().sum();
            let want = cut_sorted(&sorted, &w, p * total);
            let mut want_set = sorted[..want].to_vec();
            want_set.sort();
            let (mut order, mut sums) = (vec![0; v], vec![0.0; RADIX]);
            let (lo, kept) = nucleus(&w, &mut order, &mut sums, p);
            let mut got: Vec<usize> = (0..v).filter(|&t| key(w[t]) < lo).chain(order[..kept].iter().copied()).collect();
            got.sort();
            assert_eq!(got, want_set, "case {case}: v={v} spread={spread} p={p}");
            for i in 0..50 {
                let t = nucleus_draw(&w, &mut order, &mut sums, p, i as f64 / 50.0);
                assert!(want_set.binary_search(&t).is_ok());
            }
        }
    }

    #[test]
    fn nucleus_keeps_the_smallest_sufficient_set() {
        // Weights sorted: 3 (1.0), 1 (0.8), 2 (0.5), 0 (0.3), 4 (0.25), 5 (0): total 2.85.
        let w = [0.3, 0.8, 0.5, 1.0, 0.25, 0.0];
        let mut order = vec![0; 6];
        let mut sums = vec![0.0; RADIX];
        let kept = |p: f64, order: &mut Vec<usize>, sums: &mut Vec<f64>| -> Vec<usize> {
            let mut seen: Vec<usize> = (0..200).map(|i| nucleus_draw(&w, order, sums, p, i as f64 / 200.0)).collect();
            seen.sort();
            seen.dedup();
            seen
        };
        assert_eq!(kept(0.1, &mut order, &mut sums), vec![3]);
        assert_eq!(kept(1.0 / 2.85, &mut order, &mut sums), vec![3]);
        assert_eq!(kept(1.5 / 2.85, &mut order, &mut sums), vec![1, 3]);
        assert_eq!(kept(2.0 / 2.85, &mut order, &mut sums), vec![1, 2, 3]);
        assert_eq!(kept(2.4 / 2.85, &mut order, &mut sums), vec![0, 1, 2, 3]);
        assert_eq!(kept(0.999, &mut order, &mut sums), vec![0, 1, 2, 3, 4]);
        assert_eq!(cut_sorted(&[3, 1, 2, 0], &w, 1.5), 2);
        assert_eq!(cut_sorted(&[3, 1, 2, 0], &w, 1e-9), 1);
        assert_eq!(cut_sorted(&[3, 1, 2, 0], &w, 99.0), 4);
    }
}

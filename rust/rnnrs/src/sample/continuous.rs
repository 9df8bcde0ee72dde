//! Continuous batching: a [`ContinuousSampler`] steps a changing set of sequences, each with its own
//! options, which join ([`ContinuousSampler::add`]) and leave ([`ContinuousSampler::remove`], or by
//! finishing) between steps — what a server needs to share one sampler among requests that arrive
//! and end at different times.
//!
//! ```
//! use rnnrs::{CellKind, ContinuousSampler, LanguageModel, LanguageModelConfig, SampleConfig, WeightFormat};
//!
//! let cfg = LanguageModelConfig {
//!     vocab_size: 20, embed_size: Some(8), hidden_size: 16, num_layers: 1, cell: CellKind::Gru, dropout: 0.0,
//! };
//! let model = LanguageModel::<f32>::new(cfg, 0)?;
//! let mut s = ContinuousSampler::new(&model, 8, WeightFormat::Auto)?;
//! let a = s.add(&model, &[1, 2], 7, &SampleConfig::new(5).temperature(0.7), 0)?;
//! s.step(&model)?; // `a` consumed token 1
//! let b = s.add(&model, &[3], 8, &SampleConfig::new(5).top_p(0.9), 2)?; // joins the running batch
//! let mut texts = std::collections::HashMap::new();
//! while !s.is_empty() {
//!     for ev in s.step(&model)? {
//!         if let Some((t, _logprob)) = ev.token {
//!             texts.entry(ev.id).or_insert_with(Vec::new).push(t);
//!         }
//!     }
//! }
//! // Each sequence is what `sample` gives for it alone with the same seed and options.
//! let alone = rnnrs::sample(&model, &[vec![3]], &[8], &SampleConfig::new(5).top_p(0.9))?;
//! assert_eq!(texts[&b], alone[0].ids);
//! # let _ = a;
//! # Ok::<(), rnnrs::Error>(())
//! ```
//!
//! # Equivalence
//! A sequence consumes its prefix one token per step from the step after it joined, then its own
//! tokens, exactly as a row of a [`Sampler`](super::Sampler) does, and draws from its own stream
//! `rng::stream(&[seed, SAMPLE_STREAM])` with its own options (the same per-token procedure, see
//! the [module documentation](super)). Every row's arithmetic is independent of the other rows, of
//! its position in the batch and of the number of threads, so each sequence's tokens and
//! log-probabilities are bit-identical to [`sample`](super::sample) of it alone with the same seed,
//! options and weight storage — whoever else joins or leaves meanwhile.
//!
//! # Memory
//! [`ContinuousSampler::new`] allocates the recurrent states of `capacity` rows once; a joining
//! sequence allocates its own scratch (a few vectors of the vocabulary's size) and outputs.

use super::{check_prefix, choose, largest_logits, Dims, Policy, Row, SampleConfig, Stepper, Streamed, WeightFormat, MAX_SEQUENCES, MAX_TOKENS};
use crate::element::Element;
use crate::error::{invalid, Error, Result};
use crate::model::LanguageModel;
use rayon::prelude::*;

/// Most top log-probabilities a sequence can ask for per token.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// What one sequence did in one [`ContinuousSampler::step`].
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceStep {
    /// The id [`ContinuousSampler::add`] returned.
    pub id: u64,
    /// The new token and its model log-probability (`None`: the sequence was still reading its
    /// prefix, or was added with length 0, or got a non-finite logit).
    pub token: Option<(usize, f64)>,
    /// The `top_logprobs` most probable tokens of the raw model at this step with their
    /// log-probabilities, most probable first (ties: smaller id first); empty unless asked for.
    pub top: Vec<(usize, f64)>,
    /// The sequence is finished and has left the sampler (its length reached, a stop token, or a
    /// non-finite logit).
    pub finished: bool,
    /// It ended on a stop token (included in its tokens).
    pub stopped: bool,
    /// It ended because the model produced a NaN or infinite logit (no token this step).
    pub nonfinite: bool,
}

/// One sequence of a [`ContinuousSampler`] (row `i` of the stepper is `seqs[i]`).
#[derive(Clone, Debug)]
struct Seq<F> {
    id: u64,
    row: Row<F>,
    policy: Policy,
    /// Tokens fed to the model so far.
    fed: usize,
    top_n: usize,
    top: Vec<(usize, f64)>,
    /// Scratch of the top list.
    tops: Vec<(f64, usize)>,
    /// Whether a token was picked at the last step.
    picked: bool,
}

/// A sampler whose sequences join and leave between steps, each with its own options and seed:
/// see the [module documentation](self). The model is passed to every call (the same architecture
/// every time; its weights are read, never changed).
#[derive(Clone, Debug)]
pub struct ContinuousSampler<F> {
    dims: Dims,
    weights: WeightFormat,
    stepper: Stepper<F>,
    seqs: Vec<Seq<F>>,
    inputs: Vec<usize>,
    next_id: u64,
    steps: u64,
}

impl<F: Element> ContinuousSampler<F> {
    /// An empty sampler for at most `capacity` concurrent sequences (in `[1, MAX_SEQUENCES]`),
    /// reading the weights as `weights` says (as [`SampleConfig::weights`]; every sequence uses it).
    pub fn new(model: &LanguageModel<F>, capacity: usize, weights: WeightFormat) -> Result<Self> {
        let dims = Dims::of(model)?;
        if capacity == 0 || capacity > MAX_SEQUENCES {
            return Err(invalid("capacity", format!("between 1 and {MAX_SEQUENCES} sequences"), capacity));
        }
        Streamed::of(model, weights)?; // refuse "f16" for a float64 model now
        Ok(ContinuousSampler {
            dims,
            weights,
            stepper: Stepper::new(model, capacity),
            seqs: Vec::with_capacity(capacity),
            inputs: Vec::with_capacity(capacity),
            next_id: 0,
            steps: 0,
        })
    }

    /// Add a sequence continuing `prefix` (non-empty ids `< vocab_size`) from `seed` with
    /// `config` (checked as by [`SampleConfig::validate`]; its `weights` must be the sampler's or
    /// [`WeightFormat::Auto`]), reporting the `top_logprobs` (at most [`MAX_TOP_LOGPROBS`]) most
    /// probable tokens of every step. It starts reading its prefix at the next step. Returns its id
    /// (never reused). An error if the sampler is full.
    pub fn add(
        &mut self,
        model: &LanguageModel<F>,
        prefix: &[usize],
        seed: u64,
        config: &SampleConfig,
        top_logprobs: usize,
    ) -> Result<u64> {
        self.dims.check(model)?;
        let v = self.dims.vocab;
        config.validate(v)?;
        check_prefix("prefix", prefix, v)?;
        if config.weights != self.weights && config.weights != WeightFormat::Auto {
            return Err(invalid(
                "weights",
                format!("the sampler's weight storage ({:?}) or Auto", self.weights.name()),
                format!("{:?}", config.weights.name()),
            ));
        }
        if top_logprobs > MAX_TOP_LOGPROBS {
            return Err(invalid("top_logprobs", format!("an integer in [0, {MAX_TOP_LOGPROBS}]"), top_logprobs));
        }
        if prefix.len().saturating_add(config.length) > MAX_TOKENS {
            return Err(invalid("prefix + length", format!("at most {MAX_TOKENS} tokens"), prefix.len() + config.length));
        }
        if self.seqs.len() >= self.stepper.rows {
            return Err(Error::State(format!(
                "ContinuousSampler::add: the sampler is full ({} sequences); remove or finish one first",
                self.stepper.rows
            )));
        }
        let policy = Policy::new(config, v);
        let row = Row::new(prefix, seed, &policy, v);
        let id = self.next_id;
        self.next_id += 1;
        self.stepper.zero_row(self.seqs.len());
        let top_n = top_logprobs.min(v);
        self.seqs.push(Seq { id, row, policy, fed: 0, top_n, top: Vec::with_capacity(top_n), tops: Vec::with_capacity(top_n), picked: false });
        Ok(id)
    }

    /// Drop sequence `id` (e.g. a cancelled request); `false` if it is not in the sampler (never
    /// added, or already finished or removed).
    pub fn remove(&mut self, id: u64) -> bool {
        match self.seqs.iter().position(|s| s.id == id) {
            Some(i) => {
                self.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Sequence `i` leaves; the last row takes its place.
    fn swap_remove(&mut self, i: usize) {
        let last = self.seqs.len() - 1;
        if i != last {
            self.stepper.copy_row(last, i);
        }
        self.seqs.swap_remove(i);
    }

    /// One step of every sequence: each feeds its next prefix token (or its last token) through the
    /// model, and those past their prefix pick a new token. Returns, for every sequence that picked
    /// a token or finished, what it did; finished sequences leave the sampler. Nothing to do (and an
    /// empty list) when the sampler is empty.
    pub fn step(&mut self, model: &LanguageModel<F>) -> Result<Vec<SequenceStep>> {
        self.dims.check(model)?;
        let mut out = Vec::new();
        // Sequences added with length 0 are finished before reading anything.
        for i in (0..self.seqs.len()).rev() {
            if self.seqs[i].row.done {
                out.push(finish(&self.seqs[i], false));
                self.swap_remove(i);
            }
        }
        let b = self.seqs.len();
        if b == 0 {
            return Ok(out);
        }
        let streamed = Streamed::of(model, self.weights)?;
        self.inputs.clear();
        for s in &self.seqs {
            let r = &s.row;
            let p = r.prefix.len();
            self.inputs.push(if s.fed < p { r.prefix[s.fed] } else { *r.ids.last().expect("a token past the prefix") });
        }
        self.stepper.step(model, &streamed, &self.inputs, true, None)?;
        self.steps += 1;
        let v = self.dims.vocab;
        let logits = &self.stepper.logits[..b * v];
        let pick = |(lg, s): (&[F], &mut Seq<F>)| {
            s.fed += 1;
            s.picked = false;
            if s.fed >= s.row.prefix.len() {
                let lse = choose(lg, &mut s.row, &s.policy);
                s.picked = lse.is_finite();
                if s.picked && s.top_n > 0 {
                    top_logprobs(lg, lse, s.top_n, &mut s.top, &mut s.tops);
                }
            }
        };
        if b > 1 && b * v >= 1 << 14 {
            logits.par_chunks(v).zip(self.seqs.par_iter_mut()).for_each(pick);
        } else {
            logits.chunks(v).zip(self.seqs.iter_mut()).for_each(pick);
        }
        for s in &self.seqs {
            if s.picked {
                let r = &s.row;
                let token = (*r.ids.last().expect("a picked token"), *r.logprobs.last().expect("its logprob"));
                let mut ev = finish(s, true);
                ev.token = Some(token);
                ev.top = if s.top_n > 0 { s.top.clone() } else { Vec::new() };
                ev.finished = r.done;
                out.push(ev);
            } else if s.row.done {
                out.push(finish(s, false));
            }
        }
        for i in (0..self.seqs.len()).rev() {
            if self.seqs[i].row.done {
                self.swap_remove(i);
            }
        }
        Ok(out)
    }

    /// Number of sequences in the sampler.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    /// Whether no sequence is in the sampler.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Most concurrent sequences.
    pub fn capacity(&self) -> usize {
        self.stepper.rows
    }

    /// Ids of the sequences in the sampler.
    pub fn ids(&self) -> Vec<u64> {
        self.seqs.iter().map(|s| s.id).collect()
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The weight storage every step uses (as passed to [`ContinuousSampler::new`]).
    pub fn weights(&self) -> WeightFormat {
        self.weights
    }
}

/// The report of `s` without a token (`finished`: as its row says, unless `picked` says a token
/// is being reported and the caller fills it in).
fn finish<F>(s: &Seq<F>, picked: bool) -> SequenceStep {
    SequenceStep {
        id: s.id,
        token: None,
        top: Vec::new(),
        finished: !picked || s.row.done,
        stopped: s.row.stopped,
        nonfinite: s.row.nonfinite,
    }
}

/// The `n` largest logits as `(token, logit - lse)`, larger first, smaller id first on ties.
fn top_logprobs<F: Element>(logits: &[F], lse: f64, n: usize, top: &mut Vec<(usize, f64)>, scratch: &mut Vec<(f64, usize)>) {
    largest_logits(logits, n, scratch);
    top.clear();
    top.extend(scratch.iter().map(|&(x, t)| (t, x - lse)));
}

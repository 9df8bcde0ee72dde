//! A sequential stack of layers with a loss, for sequence classification and regression (the core
//! of `rnnrs.Sequential`, Keras-style): `Embedding`, recurrent layers (one `Recurrent` each, many-to-
//! many with `return_sequences` or many-to-one), `Dense` with an activation, and `Dropout`.
//!
//! Inputs are batch-first like Keras: token ids `(B, T)` when the first layer is an embedding, else
//! features `(B, T, F)`. Optional `lengths` `(B,)` mark a padded batch: recurrent layers stop at each
//! sequence's end (many-to-one takes the state at the true last step), and padded steps of a
//! sequence output count neither in the loss nor in the metrics. One call of
//! [`SeqModel::train_step`] is a whole step: forward, loss, backward, clipping, update.

use crate::cell::CellKind;
use crate::config::RecurrentConfig;
use crate::element::Element;
use crate::embedding::Embedding;
use crate::error::{check_shape, invalid, Error, Result};
use crate::layer::{Recurrent, Tape};
use crate::linear::Linear;
use crate::module::{Module, Visitor, VisitorMut};
use crate::optim::{clip_grad_norm, grad_norm, Optimizer};
use crate::rng;
use ndarray::{s, Array2, Array3, ArrayD, ArrayView2, ArrayView3, ArrayViewD, Axis, Ix2, Ix3};
use serde::{Deserialize, Serialize};

/// Stream tag of dropout-layer masks.
const DROPOUT_STREAM: u64 = 21;

/// Activation of a dense layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Identity.
    Linear,
    /// `tanh`.
    Tanh,
    /// `max(0, x)`.
    Relu,
    /// Logistic sigmoid.
    Sigmoid,
    /// Softmax over the last axis.
    Softmax,
}

/// One layer of a [`SeqModelConfig`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LayerSpec {
    /// Token ids → vectors; only as the first layer.
    Embedding {
        /// Vocabulary size.
        input_dim: usize,
        /// Vector size.
        output_dim: usize,
    },
    /// One recurrent layer (`rnn_tanh`, `rnn_relu`, `gru`, `lstm`).
    Recurrent {
        /// The cell.
        cell: CellKind,
        /// Hidden size.
        units: usize,
        /// Output every step `(T, B, D·H)` instead of the final state `(B, D·H)`.
        #[serde(default)]
        return_sequences: bool,
        /// Run a reverse direction too (outputs concatenated `[forward, reverse]`).
        #[serde(default)]
        bidirectional: bool,
    },
    /// `act(x · Wᵀ + b)` on the last axis (per time step on sequences).
    Dense {
        /// Output features.
        units: usize,
        /// Activation.
        activation: Activation,
    },
    /// Inverted dropout in training, identity in inference.
    Dropout {
        /// Drop probability in `[0, 1)`.
        rate: f64,
    },
}

/// The loss a model trains with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Mean squared error over every output value.
    Mse,
    /// Cross-entropy against target distributions (one-hot rows); needs a softmax output.
    CategoricalCrossentropy,
    /// Cross-entropy against integer class ids; needs a softmax output.
    SparseCategoricalCrossentropy,
    /// Keras' `binary_crossentropy`: `-(t·ln p + (1 - t)·ln(1 - p))` averaged over the output's
    /// values (`p` clipped to `[1e-7, 1 - 1e-7]` as Keras does for the value); needs a sigmoid output.
    /// A row is correct when every output thresholded at 0.5 equals its target thresholded at 0.5.
    BinaryCrossentropy,
}

/// A model: input features (0 with an embedding first), layers and loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeqModelConfig {
    /// Features of the input `(B, T, F)`; ignored (0) when the first layer is an embedding.
    #[serde(default)]
    pub input_features: usize,
    /// The layers, first to last.
    pub layers: Vec<LayerSpec>,
    /// The loss.
    pub loss: LossKind,
}

impl SeqModelConfig {
    /// Parse the JSON form (what [`SeqModelConfig::to_json`] writes).
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| invalid("model config", "valid JSON of a SeqModelConfig", e))
    }
    /// The JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a config serialises")
    }
}

/// A layer's output: a sequence `(T, B, F)` (time-major) or one vector per example `(B, F)`.
#[derive(Clone, Debug)]
enum Act<F> {
    Seq(Array3<F>),
    Flat(Array2<F>),
}

impl<F: Element> Act<F> {
    /// `(rows, features)` view: `(T·B, F)` or `(B, F)`.
    fn rows(&self) -> ArrayView2<'_, F> {
        match self {
            Act::Seq(a) => {
                let (t, b, f) = a.dim();
                a.view().into_shape_with_order((t * b, f)).expect("contiguous")
            }
            Act::Flat(a) => a.view(),
        }
    }
    fn with_rows(&self, rows: Array2<F>) -> Act<F> {
        match self {
            Act::Seq(a) => {
                let (t, b, _) = a.dim();
                let f = rows.ncols();
                Act::Seq(rows.into_shape_with_order((t, b, f)).expect("contiguous"))
            }
            Act::Flat(_) => Act::Flat(rows),
        }
    }
}

enum Layer<F> {
    Embedding(Embedding<F>),
    Recurrent { net: Recurrent<F>, return_sequences: bool },
    Dense { lin: Linear<F>, act: Activation },
    Dropout(f64),
}

enum Cache<F> {
    Embedding(Vec<usize>),
    Recurrent(Tape<F>),
    /// Input rows and activated output rows.
    Dense(Array2<F>, Array2<F>),
    Dropout(Option<Array2<F>>),
}

/// Loss, correct predictions (classification) and counted rows of one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SeqStats {
    /// Mean loss over the counted rows.
    pub loss: f64,
    /// Rows whose arg-max output equals the target class (0 for MSE).
    pub correct: usize,
    /// Counted rows: examples (many-to-one) or true time steps (many-to-many).
    pub count: usize,
    /// Global gradient norm before clipping (training steps only).
    pub grad_norm: f64,
}

/// Inputs of a batch, batch-first.
#[derive(Clone, Copy, Debug)]
pub enum SeqInput<'a, F> {
    /// `(B, T)` token ids (first layer an embedding).
    Ids(ArrayView2<'a, usize>),
    /// `(B, T, F)` features.
    Features(ArrayView3<'a, F>),
}

/// Targets of a batch, batch-first: `(B,)`/`(B, T)` class ids, or `(B, C)`/`(B, T, C)` values.
#[derive(Clone, Debug)]
pub enum SeqTarget<'a, F> {
    /// Class ids (sparse categorical cross-entropy).
    Ids(ArrayViewD<'a, usize>),
    /// Distributions (categorical cross-entropy) or values (MSE), the output's shape.
    Values(ArrayViewD<'a, F>),
}

/// A sequential model of [`LayerSpec`]s with its loss.
pub struct SeqModel<F> {
    config: SeqModelConfig,
    layers: Vec<Layer<F>>,
    seed: u64,
    dropout_calls: u64,
}

impl<F: Element> SeqModel<F> {
    /// Build and initialise every layer from `seed` (layer `i` draws from stream `(seed, i)`).
    pub fn new(config: SeqModelConfig, seed: u64) -> Result<Self> {
        if config.layers.is_empty() {
            return Err(invalid("layers", "at least one layer", 0));
        }
        let mut width = config.input_features;
        let mut seq = true;
        let mut layers = Vec::new();
        for (i, spec) in config.layers.iter().enumerate() {
            let lseed = rng::mix(seed ^ rng::mix(i as u64 + 1));
            let need_width = |w: usize| if w == 0 { Err(invalid("input_features", "an integer >= 1 (no embedding first)", 0)) } else { Ok(w) };
            layers.push(match *spec {
                LayerSpec::Embedding { input_dim, output_dim } => {
                    if i != 0 {
                        return Err(invalid(&format!("layer {i}"), "an embedding only as the first layer", "embedding"));
                    }
                    width = output_dim;
                    Layer::Embedding(Embedding::new(input_dim, output_dim, lseed)?)
                }
                LayerSpec::Recurrent { cell, units, return_sequences, bidirectional } => {
                    if !seq {
                        return Err(invalid(&format!("layer {i}"), "a sequence input (set return_sequences=True on the recurrent layer before)", "one vector per example"));
                    }
                    let cfg = RecurrentConfig::new(cell, need_width(width)?, units).bidirectional(bidirectional);
                    width = cfg.directions() * units;
                    seq = return_sequences;
                    Layer::Recurrent { net: Recurrent::new(cfg, lseed)?, return_sequences }
                }
                LayerSpec::Dense { units, activation } => {
                    let lin = Linear::new(need_width(width)?, units, lseed)?;
                    width = units;
                    Layer::Dense { lin, act: activation }
                }
                LayerSpec::Dropout { rate } => {
                    if !(0.0..1.0).contains(&rate) {
                        return Err(invalid("dropout rate", "a probability in [0, 1)", rate));
                    }
                    Layer::Dropout(rate)
                }
            });
        }
        if matches!(config.loss, LossKind::CategoricalCrossentropy | LossKind::SparseCategoricalCrossentropy)
            && !matches!(layers.last(), Some(Layer::Dense { act: Activation::Softmax, .. }))
        {
            return Err(invalid("loss", "a last layer Dense(..., activation='softmax') for a cross-entropy loss", "another last layer"));
        }
        if config.loss == LossKind::BinaryCrossentropy
            && !matches!(layers.last(), Some(Layer::Dense { act: Activation::Sigmoid, .. }))
        {
            return Err(invalid("loss", "a last layer Dense(..., activation='sigmoid') for binary_crossentropy", "another last layer"));
        }
        Ok(SeqModel { config, layers, seed, dropout_calls: 0 })
    }

    /// The configuration.
    pub fn config(&self) -> &SeqModelConfig {
        &self.config
    }

    /// Whether the input is token ids (first layer an embedding).
    pub fn takes_ids(&self) -> bool {
        matches!(self.layers[0], Layer::Embedding(_))
    }

    /// `(seed, calls)` of the dropout stream.
    pub fn dropout_state(&self) -> (u64, u64) {
        (self.seed, self.dropout_calls)
    }

    /// Restore the dropout stream position.
    pub fn set_dropout_state(&mut self, seed: u64, calls: u64) {
        self.seed = seed;
        self.dropout_calls = calls;
    }

    /// Inference: the last layer's output, batch-first: `(B, C)` or `(B, T, C)` (zero past each
    /// sequence's end is *not* guaranteed after a dense layer; use `lengths` to mask).
    pub fn predict(&self, x: SeqInput<'_, F>, lengths: Option<&[usize]>) -> Result<ArrayD<F>> {
        Ok(batch_first(self.run(x, lengths)?))
    }

    /// Loss and metrics of a batch in inference mode.
    pub fn evaluate(&self, x: SeqInput<'_, F>, y: SeqTarget<'_, F>, lengths: Option<&[usize]>) -> Result<SeqStats> {
        self.evaluate_weighted(x, y, lengths, None)
    }

    /// [`SeqModel::evaluate`] with one weight `(B,)` per example (Keras' `sample_weight`): each
    /// counted row's loss is multiplied by its example's weight; the mean still divides by the
    /// number of counted rows (Keras' `sum_over_batch_size`). Metrics are unweighted.
    pub fn evaluate_weighted(
        &self,
        x: SeqInput<'_, F>,
        y: SeqTarget<'_, F>,
        lengths: Option<&[usize]>,
        weights: Option<&[f64]>,
    ) -> Result<SeqStats> {
        let out = self.run(x, lengths)?;
        let (stats, _) = self.loss(&out, y, lengths, weights, false)?;
        Ok(stats)
    }

    /// One training step: zero the gradients, forward (dropout on), loss, backward, clip the global
    /// gradient norm to `clip` if given, update with `optimizer`. A non-finite loss or gradient
    /// leaves the parameters unchanged and returns `Error::NonFinite`.
    pub fn train_step(
        &mut self,
        x: SeqInput<'_, F>,
        y: SeqTarget<'_, F>,
        lengths: Option<&[usize]>,
        clip: Option<f64>,
        optimizer: &mut Optimizer<F>,
    ) -> Result<SeqStats> {
        self.train_step_weighted(x, y, lengths, None, clip, optimizer)
    }

    /// [`SeqModel::train_step`] with one loss weight `(B,)` per example (see
    /// [`SeqModel::evaluate_weighted`]).
    pub fn train_step_weighted(
        &mut self,
        x: SeqInput<'_, F>,
        y: SeqTarget<'_, F>,
        lengths: Option<&[usize]>,
        weights: Option<&[f64]>,
        clip: Option<f64>,
        optimizer: &mut Optimizer<F>,
    ) -> Result<SeqStats> {
        if let Some(c) = clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(invalid("clip", "a finite number > 0", c));
            }
        }
        optimizer.check_module(self)?;
        self.zero_grad();
        self.dropout_calls += 1;
        let call = self.dropout_calls;
        let (out, caches) = self.run_train(x, lengths, call)?;
        let (mut stats, grad) = self.loss(&out, y, lengths, weights, true)?;
        self.backward(caches, grad.expect("training loss has a gradient"))?;
        let norm = match clip {
            Some(c) => clip_grad_norm(self, c),
            None => grad_norm(self),
        };
        stats.grad_norm = norm;
        if !stats.loss.is_finite() || !norm.is_finite() {
            return Err(Error::NonFinite(format!(
                "training step {}: loss {}, gradient norm {norm}; parameters left unchanged",
                optimizer.steps() + 1,
                stats.loss
            )));
        }
        if !optimizer.step_is_finite(self) {
            return Err(Error::NonFinite(format!(
                "training step {}: loss {} and gradient norm {norm} are finite, but the update (learning rate {:e}) \
                 would make parameters non-finite; parameters left unchanged",
                optimizer.steps() + 1,
                stats.loss,
                optimizer.config().lr()
            )));
        }
        optimizer.step(self)?;
        Ok(stats)
    }

    /// Inference forward: the time-major output.
    fn run(&self, x: SeqInput<'_, F>, lengths: Option<&[usize]>) -> Result<Act<F>> {
        let (mut a, first) = self.start(x, lengths)?;
        for layer in &self.layers[first..] {
            a = match (layer, a) {
                (Layer::Recurrent { net, return_sequences }, Act::Seq(x)) => {
                    let out = net.forward_lengths(x.view(), None, None, lengths)?;
                    if *return_sequences {
                        Act::Seq(out.y)
                    } else {
                        Act::Flat(final_state(&out.h_n))
                    }
                }
                (Layer::Dense { lin, act }, a) => {
                    let mut z = lin.forward(a.rows())?;
                    activate(*act, &mut z);
                    a.with_rows(z)
                }
                (Layer::Dropout(_), a) => a,
                _ => unreachable!("layer order checked at construction"),
            };
        }
        Ok(a)
    }

    /// Training forward (dropout call `call`): the time-major output and one cache per layer.
    fn run_train(&mut self, x: SeqInput<'_, F>, lengths: Option<&[usize]>, call: u64) -> Result<(Act<F>, Vec<Cache<F>>)> {
        let (mut a, first) = self.start(x, lengths)?;
        let mut caches = Vec::with_capacity(self.layers.len());
        if first == 1 {
            let SeqInput::Ids(ids) = x else { unreachable!("an embedding takes ids") };
            caches.push(Cache::Embedding(ids.t().iter().copied().collect()));
        }
        let seed = self.seed;
        for (i, layer) in self.layers.iter_mut().enumerate().skip(first) {
            a = match (layer, a) {
                (Layer::Recurrent { net, return_sequences }, Act::Seq(x)) => {
                    let (out, tape) = net.forward_train_lengths(x.view(), None, None, lengths)?;
                    caches.push(Cache::Recurrent(tape));
                    if *return_sequences {
                        Act::Seq(out.y)
                    } else {
                        Act::Flat(final_state(&out.h_n))
                    }
                }
                (Layer::Dense { lin, act }, a) => {
                    let input = a.rows().to_owned();
                    let mut z = lin.forward(input.view())?;
                    activate(*act, &mut z);
                    caches.push(Cache::Dense(input, z.clone()));
                    a.with_rows(z)
                }
                (Layer::Dropout(p), a) if *p > 0.0 => {
                    let mut r = rng::stream(&[seed, DROPOUT_STREAM, call, i as u64]);
                    let keep = F::from_f64(1.0 / (1.0 - *p));
                    let rows = a.rows();
                    let mask = Array2::from_shape_simple_fn(rows.dim(), || if rng::uniform(&mut r) < *p { F::zero() } else { keep });
                    let out = &rows * &mask;
                    caches.push(Cache::Dropout(Some(mask)));
                    a.with_rows(out)
                }
                (Layer::Dropout(_), a) => {
                    caches.push(Cache::Dropout(None));
                    a
                }
                _ => unreachable!("layer order checked at construction"),
            };
        }
        Ok((a, caches))
    }

    /// Check the input; return it time-major (embedded if the first layer is an embedding) and the
    /// index of the first layer still to run.
    fn start(&self, x: SeqInput<'_, F>, lengths: Option<&[usize]>) -> Result<(Act<F>, usize)> {
        let (b, t) = match x {
            SeqInput::Ids(ids) => ids.dim(),
            SeqInput::Features(f) => (f.dim().0, f.dim().1),
        };
        if t == 0 || b == 0 {
            return Err(invalid("x", "batch >= 1 and seq_len >= 1", format!("batch {b}, seq_len {t}")));
        }
        if let Some(l) = lengths {
            check_shape("lengths", &[b], &[l.len()])?;
            if let Some(&bad) = l.iter().find(|&&v| v == 0 || v > t) {
                return Err(invalid("lengths", format!("every length in [1, {t}] (seq_len)"), bad));
            }
        }
        match (x, &self.layers[0]) {
            (SeqInput::Ids(ids), Layer::Embedding(e)) => {
                let flat: Vec<usize> = ids.t().iter().copied().collect();
                let out = e.forward(&flat)?;
                let w = out.ncols();
                Ok((Act::Seq(out.into_shape_with_order((t, b, w)).expect("contiguous")), 1))
            }
            (SeqInput::Ids(_), _) => {
                Err(invalid("x", format!("features (batch, seq_len, {})", self.config.input_features), "token ids"))
            }
            (SeqInput::Features(_), Layer::Embedding(_)) => {
                Err(invalid("x", "token ids (batch, seq_len) (the first layer is an embedding)", "float features"))
            }
            (SeqInput::Features(f), _) => {
                check_shape("x", &[b, t, self.config.input_features], f.shape())?;
                crate::layer::check_finite("x", f.into_dyn())?;
                Ok((Act::Seq(f.permuted_axes([1, 0, 2]).as_standard_layout().into_owned()), 0))
            }
        }
    }

    /// Loss and metrics of the (time-major) output; with `grad`, the gradient w.r.t. the output
    /// (w.r.t. the pre-activation for a softmax output with cross-entropy, a sigmoid output with
    /// binary cross-entropy); `weights` scale each example's rows.
    fn loss(
        &self,
        out: &Act<F>,
        y: SeqTarget<'_, F>,
        lengths: Option<&[usize]>,
        weights: Option<&[f64]>,
        grad: bool,
    ) -> Result<(SeqStats, Option<Act<F>>)> {
        let rows = out.rows();
        let (n, c) = rows.dim();
        // Row r of the output is (t, b) = (r / B, r % B) for sequences, b = r for vectors.
        let (tb, bsz) = match out {
            Act::Seq(a) => ((a.dim().0, a.dim().1), a.dim().1),
            Act::Flat(a) => ((1, a.nrows()), a.nrows()),
        };
        if let Some(w) = weights {
            check_shape("sample_weight", &[bsz], &[w.len()])?;
            if let Some(&bad) = w.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
                return Err(invalid("sample_weight", "finite weights >= 0", bad));
            }
        }
        let weight = |r: usize| weights.map_or(1.0, |w| w[r % bsz]);
        let seq = matches!(out, Act::Seq(_));
        let valid = |r: usize| !seq || lengths.is_none_or(|l| r / bsz < l[r % bsz]);
        // Targets in the output's row order.
        let (ids, vals): (Option<Vec<usize>>, Option<Array2<F>>) = match y {
            SeqTarget::Ids(t) => {
                if self.config.loss != LossKind::SparseCategoricalCrossentropy {
                    return Err(invalid("y", "float targets of the output's shape for this loss", "class ids"));
                }
                let want: Vec<usize> = if seq { vec![tb.1, tb.0] } else { vec![tb.1] };
                check_shape("y", &want, t.shape())?;
                let t = if seq { t.into_dimensionality::<Ix2>().expect("2-D").t().to_owned().into_dyn() } else { t.to_owned() };
                let v: Vec<usize> = t.as_standard_layout().iter().copied().collect();
                if let Some(&bad) = v.iter().find(|&&k| k >= c) {
                    return Err(invalid("y", format!("class ids in [0, {c})"), bad));
                }
                (Some(v), None)
            }
            SeqTarget::Values(t) => {
                if self.config.loss == LossKind::SparseCategoricalCrossentropy {
                    return Err(invalid("y", "integer class ids for sparse_categorical_crossentropy", "float values"));
                }
                let want: Vec<usize> = if seq { vec![tb.1, tb.0, c] } else { vec![tb.1, c] };
                check_shape("y", &want, t.shape())?;
                let t = if seq {
                    t.into_dimensionality::<Ix3>().expect("3-D").permuted_axes([1, 0, 2]).as_standard_layout().into_owned().into_shape_with_order((n, c)).expect("contiguous")
                } else {
                    t.into_dimensionality::<Ix2>().expect("2-D").to_owned()
                };
                crate::layer::check_finite("y", t.view().into_dyn())?;
                (None, Some(t))
            }
        };
        let count = (0..n).filter(|&r| valid(r)).count();
        let mut g = grad.then(|| Array2::<F>::zeros((n, c)));
        let mut total = 0.0f64;
        let mut correct = 0usize;
        let inv = 1.0 / count.max(1) as f64;
        for r in (0..n).filter(|&r| valid(r)) {
            let p = rows.row(r);
            let w = weight(r);
            let inv = inv * w;
            let argmax = |v: ndarray::ArrayView1<'_, F>| (0..c).fold(0, |best, k| if v[k] > v[best] { k } else { best });
            match self.config.loss {
                LossKind::Mse => {
                    let t = vals.as_ref().expect("values").row(r);
                    for k in 0..c {
                        let d = p[k].to_f64() - t[k].to_f64();
                        total += w * d * d / c as f64;
                        if let Some(g) = g.as_mut() {
                            g[[r, k]] = F::from_f64(2.0 * d * inv / c as f64);
                        }
                    }
                }
                LossKind::SparseCategoricalCrossentropy | LossKind::CategoricalCrossentropy => {
                    let tgt: Vec<f64> = match &ids {
                        Some(ids) => (0..c).map(|k| if k == ids[r] { 1.0 } else { 0.0 }).collect(),
                        None => vals.as_ref().expect("values").row(r).iter().map(|&v| Element::to_f64(v)).collect(),
                    };
                    let tclass = (0..c).fold(0, |best, k| if tgt[k] > tgt[best] { k } else { best });
                    if argmax(p) == tclass {
                        correct += 1;
                    }
                    for k in 0..c {
                        if tgt[k] != 0.0 {
                            total -= w * tgt[k] * p[k].to_f64().max(1e-300).ln();
                        }
                    }
                    if let Some(g) = g.as_mut() {
                        // Softmax + cross-entropy: d/dz = p·Σt - t.
                        let st: f64 = tgt.iter().sum();
                        for k in 0..c {
                            g[[r, k]] = F::from_f64((p[k].to_f64() * st - tgt[k]) * inv);
                        }
                    }
                }
                LossKind::BinaryCrossentropy => {
                    let t = vals.as_ref().expect("values").row(r);
                    let mut right = true;
                    for k in 0..c {
                        let (pk, tk) = (p[k].to_f64(), t[k].to_f64());
                        let q = pk.clamp(1e-7, 1.0 - 1e-7);
                        total -= w * (tk * q.ln() + (1.0 - tk) * (1.0 - q).ln()) / c as f64;
                        right &= (pk > 0.5) == (tk > 0.5);
                        if let Some(g) = g.as_mut() {
                            // Sigmoid + binary cross-entropy: d/dz = p - t.
                            g[[r, k]] = F::from_f64((pk - tk) * inv / c as f64);
                        }
                    }
                    correct += usize::from(right);
                }
            }
        }
        let stats = SeqStats { loss: total * inv, correct, count, grad_norm: 0.0 };
        Ok((stats, g.map(|g| out.with_rows(g))))
    }

    fn backward(&mut self, mut caches: Vec<Cache<F>>, mut g: Act<F>) -> Result<()> {
        let ce = self.config.loss != LossKind::Mse;
        let last = self.layers.len() - 1;
        for i in (0..self.layers.len()).rev() {
            let cache = caches.pop().expect("one cache per layer");
            g = match (&mut self.layers[i], cache) {
                (Layer::Embedding(e), Cache::Embedding(ids)) => {
                    let Act::Seq(d) = g else { unreachable!("embedding outputs a sequence") };
                    let (t, b, w) = d.dim();
                    // ids are time-major (t, b) like d.
                    e.backward(&ids, d.into_shape_with_order((t * b, w)).expect("contiguous").view());
                    break;
                }
                (Layer::Recurrent { net, .. }, Cache::Recurrent(tape)) => {
                    let (t, b) = tape.dims();
                    let cfg = net.config().clone();
                    let (d, h) = (cfg.directions(), cfg.hidden_size);
                    let grads = match g {
                        Act::Seq(dy) => net.backward(&tape, dy.view(), None, None)?,
                        Act::Flat(dflat) => {
                            let dy = Array3::<F>::zeros((t, b, d * h));
                            let mut dh_n = Array3::<F>::zeros(cfg.state_shape(b));
                            for dir in 0..d {
                                dh_n.index_axis_mut(Axis(0), dir).assign(&dflat.slice(s![.., dir * h..(dir + 1) * h]));
                            }
                            net.backward(&tape, dy.view(), Some(dh_n.view()), None)?
                        }
                    };
                    Act::Seq(grads.dx.expect("dense input"))
                }
                (Layer::Dense { lin, act }, Cache::Dense(input, z)) => {
                    let mut dz = g.rows().to_owned();
                    if !(i == last && ce) {
                        activation_backward(*act, &z, &mut dz);
                    }
                    let dx = lin.backward(input.view(), dz.view());
                    g.with_rows(dx)
                }
                (Layer::Dropout(_), Cache::Dropout(mask)) => match mask {
                    Some(m) => {
                        let d = &g.rows() * &m;
                        g.with_rows(d)
                    }
                    None => g,
                },
                _ => unreachable!("caches match layers"),
            };
        }
        Ok(())
    }
}

/// `(B, D·H)`: the final states of a one-layer stack's directions, concatenated.
fn final_state<F: Element>(h_n: &Array3<F>) -> Array2<F> {
    let (d, b, h) = h_n.dim();
    let mut out = Array2::zeros((b, d * h));
    for dir in 0..d {
        out.slice_mut(s![.., dir * h..(dir + 1) * h]).assign(&h_n.index_axis(Axis(0), dir));
    }
    out
}

fn activate<F: Element>(act: Activation, z: &mut Array2<F>) {
    match act {
        Activation::Linear => {}
        Activation::Tanh => z.mapv_inplace(|v| v.tanh()),
        Activation::Relu => z.mapv_inplace(|v| v.max(F::zero())),
        Activation::Sigmoid => z.mapv_inplace(|v| v.sigmoid()),
        Activation::Softmax => {
            for mut row in z.rows_mut() {
                let m = row.iter().fold(F::neg_infinity(), |a, &b| a.max(b));
                row.mapv_inplace(|v| (v - m).exp());
                let s = row.iter().fold(F::zero(), |a, &b| a + b);
                row.mapv_inplace(|v| v / s);
            }
        }
    }
}

/// `dz = dy · act'(z)` in place, from the activated output `y`.
fn activation_backward<F: Element>(act: Activation, y: &Array2<F>, d: &mut Array2<F>) {
    let one = F::one();
    match act {
        Activation::Linear => {}
        Activation::Tanh => ndarray::Zip::from(d).and(y).for_each(|d, &y| *d *= one - y * y),
        Activation::Relu => ndarray::Zip::from(d).and(y).for_each(|d, &y| {
            if y <= F::zero() {
                *d = F::zero()
            }
        }),
        Activation::Sigmoid => ndarray::Zip::from(d).and(y).for_each(|d, &y| *d *= y * (one - y)),
        Activation::Softmax => {
            for (mut dr, yr) in d.rows_mut().into_iter().zip(y.rows()) {
                let dot = dr.iter().zip(yr.iter()).fold(F::zero(), |a, (&g, &p)| a + g * p);
                ndarray::Zip::from(&mut dr).and(&yr).for_each(|g, &p| *g = p * (*g - dot));
            }
        }
    }
}

/// Time-major output → batch-first array.
fn batch_first<F: Element>(a: Act<F>) -> ArrayD<F> {
    match a {
        Act::Seq(a) => a.permuted_axes([1, 0, 2]).as_standard_layout().into_owned().into_dyn(),
        Act::Flat(a) => a.into_dyn(),
    }
}

impl<F: Element> Module<F> for SeqModel<F> {
    fn visit(&self, f: &mut Visitor<'_, F>) {
        for (i, l) in self.layers.iter().enumerate() {
            let mut g = |n: &str, p: ArrayViewD<'_, F>, gr: ArrayViewD<'_, F>| f(&format!("layers.{i}.{n}"), p, gr);
            match l {
                Layer::Embedding(e) => e.visit(&mut g),
                Layer::Recurrent { net, .. } => net.visit(&mut g),
                Layer::Dense { lin, .. } => lin.visit(&mut g),
                Layer::Dropout(_) => {}
            }
        }
    }
    fn visit_mut(&mut self, f: &mut VisitorMut<'_, F>) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            let mut g = |n: &str, p: ndarray::ArrayViewMutD<'_, F>, gr: ndarray::ArrayViewMutD<'_, F>| f(&format!("layers.{i}.{n}"), p, gr);
            match l {
                Layer::Embedding(e) => e.visit_mut(&mut g),
                Layer::Recurrent { net, .. } => net.visit_mut(&mut g),
                Layer::Dense { lin, .. } => lin.visit_mut(&mut g),
                Layer::Dropout(_) => {}
            }
        }
    }
}

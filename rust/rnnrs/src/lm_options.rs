//! What a [`crate::LanguageModel`] adds around its layers to regularise it, the AWD-LSTM recipe
//! (Merity, Keskar and Socher, 2017): embedding dropout, locked (variational) dropout, weight
//! drop (DropConnect on `W_hh`) and tied input/output embeddings. All are off by default.
//!
//! The dropouts act in training only (`loss_and_grad`, `train_step`), each a seeded draw per batch,
//! with exact gradients through them; inference uses the full weights. Their stream is the
//! recurrent stack's dropout stream (`dropout_state`): a training pass with any of them advances it
//! once before the stack's own dropout, so checkpoints resume them bit-identically.

use crate::config::RecurrentConfig;
use crate::element::Element;
use crate::error::{invalid, Result};
use crate::model::LanguageModelConfig;
use crate::module::{Module, Visitor, VisitorMut};
use crate::rng;
use ndarray::{Array2, Array3, ArrayView2};

/// Regularisation and weight tying of a language model (see the module docs).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct LanguageModelOptions {
    /// The output layer shares the embedding matrix (`V × E`); when `E != H` a learned projection
    /// `proj.weight` (`E × H`) maps the hidden state to the embedding width first.
    pub tie_weights: bool,
    /// Probability of dropping a token type (a whole embedding row) for a batch; kept rows are
    /// scaled by `1 / (1 - p)`.
    pub embed_dropout: f64,
    /// Dropout on the stack's input (embedding models) and output, one mask per sequence shared
    /// over time.
    pub locked_dropout: f64,
    /// DropConnect on every layer's `W_hh`: one mask per batch.
    pub weight_drop: f64,
}

impl LanguageModelOptions {
    /// Check the options against the model's configuration.
    pub fn validate(&self, config: &LanguageModelConfig) -> Result<()> {
        for (what, p) in [("embed_dropout", self.embed_dropout), ("locked_dropout", self.locked_dropout), ("weight_drop", self.weight_drop)] {
            if !(0.0..1.0).contains(&p) {
                return Err(invalid(what, "a probability in [0, 1)", p));
            }
        }
        if config.embed_size.is_none() {
            if self.tie_weights {
                return Err(invalid("tie_weights", "a model with an embedding (embed_size, not one-hot)", "a one-hot model"));
            }
            if self.embed_dropout > 0.0 {
                return Err(invalid("embed_dropout", "0 for a one-hot model (it has no embedding)", self.embed_dropout));
            }
        }
        Ok(())
    }

    /// Whether a training pass draws masks.
    pub(crate) fn drops(&self) -> bool {
        self.embed_dropout > 0.0 || self.locked_dropout > 0.0 || self.weight_drop > 0.0
    }
}

const REG_STREAM: u64 = 0xA3D1_5EED;

/// One batch's masks (`None`/empty: that dropout is off). Entries are `0` or `1 / (1 - p)`.
pub(crate) struct Masks<F> {
    /// Per token type `(V)`.
    pub types: Option<Vec<F>>,
    /// Per sequence and input feature `(B, E)` (embedding models).
    pub input: Option<Array2<F>>,
    /// Per sequence and hidden feature `(B, H)`.
    pub output: Option<Array2<F>>,
    /// Per layer, the `W_hh` mask `(G·H, H)`.
    pub weights: Vec<Array2<F>>,
}

fn keep<F: Element>(r: &mut rng::Rng, p: f64) -> F {
    if rng::uniform(r) < p {
        F::zero()
    } else {
        F::from_f64(1.0 / (1.0 - p))
    }
}

fn mask2<F: Element>(rows: usize, cols: usize, p: f64, parts: &[u64]) -> Option<Array2<F>> {
    (p > 0.0).then(|| {
        let mut r = rng::stream(parts);
        Array2::from_shape_simple_fn((rows, cols), || keep(&mut r, p))
    })
}

impl<F: Element> Masks<F> {
    /// The masks of one training pass over `batch` sequences, from the stack's dropout `(seed, call)`.
    pub(crate) fn draw(opts: &LanguageModelOptions, cfg: &LanguageModelConfig, rnn: &RecurrentConfig, batch: usize, seed: u64, call: u64) -> Self {
        let s = |k: u64| [seed, REG_STREAM, call, k];
        let types = (opts.embed_dropout > 0.0).then(|| {
            let mut r = rng::stream(&s(0));
            (0..cfg.vocab_size).map(|_| keep(&mut r, opts.embed_dropout)).collect()
        });
        let input = cfg.embed_size.and_then(|e| mask2(batch, e, opts.locked_dropout, &s(1)));
        let output = mask2(batch, cfg.hidden_size, opts.locked_dropout, &s(2));
        let weights = (0..rnn.num_layers)
            .filter_map(|l| mask2(rnn.gate_size(), rnn.hidden_size, opts.weight_drop, &s(3 + l as u64)))
            .collect();
        Masks { types, input, output, weights }
    }
}

/// `x[t, b, :] *= types[ids[t, b]]` (embedding dropout; the same for its gradient).
pub(crate) fn scale_by_type<F: Element>(x: &mut Array3<F>, ids: &ArrayView2<'_, usize>, types: &[F]) {
    for ((t, b), &id) in ids.indexed_iter() {
        let k = types[id];
        x.slice_mut(ndarray::s![t, b, ..]).mapv_inplace(|v| v * k);
    }
}

/// `x[t, b, :] *= mask[b, :]` for every `t` (locked dropout; the same for its gradient).
pub(crate) fn scale_locked<F: Element>(x: &mut Array3<F>, mask: &Array2<F>) {
    for mut step in x.outer_iter_mut() {
        step *= mask;
    }
}

/// The learned `E × H` map from the hidden state to the embedding width of a tied model whose
/// sizes differ (`proj.weight`; `logits = (h · Pᵀ) · Eᵀ + b`), initialised as PyTorch's `Linear`.
#[derive(Clone, Debug)]
pub struct Projection<F> {
    /// `(E, H)`.
    pub weight: Array2<F>,
    /// Its gradient.
    pub grad: Array2<F>,
}

impl<F: Element> Projection<F> {
    pub(crate) fn new(embed: usize, hidden: usize, seed: u64) -> Self {
        let k = 1.0 / (hidden as f64).sqrt();
        let mut r = rng::stream(&[seed, 13]);
        let weight = Array2::from_shape_simple_fn((embed, hidden), || F::from_f64((2.0 * rng::uniform(&mut r) - 1.0) * k));
        Projection { grad: Array2::zeros(weight.dim()), weight }
    }
}

impl<F: Element> Module<F> for Projection<F> {
    fn visit(&self, f: &mut Visitor<'_, F>) {
        f("weight", self.weight.view().into_dyn(), self.grad.view().into_dyn());
    }
    fn visit_mut(&mut self, f: &mut VisitorMut<'_, F>) {
        f("weight", self.weight.view_mut().into_dyn(), self.grad.view_mut().into_dyn());
    }
}

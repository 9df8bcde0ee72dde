//! A recurrent language model: embedding (or one-hot) → recurrent stack → linear → softmax,
//! with a complete training step (forward, loss, BPTT, clipping, optimizer update) in one call.

use crate::cell::CellKind;
use crate::config::RecurrentConfig;
use crate::element::Element;
use crate::embedding::Embedding;
use crate::error::{check_alloc, check_shape, invalid, Error, Result};
use crate::step_weights::StepCache;
use crate::layer::Recurrent;
use crate::linear::Linear;
use crate::lm_options::{scale_by_type, scale_locked, LanguageModelOptions, Masks, Projection};
use crate::loss::cross_entropy;
use crate::module::{Module, Visitor, VisitorMut};
use crate::optim::{clip_grad_norm, Optimizer};
use crate::rng::mix;
use ndarray::{Array2, Array3, ArrayView2, ArrayView3};

/// Sizes of a [`LanguageModel`].
#[derive(Clone, Debug, PartialEq)]
pub struct LanguageModelConfig {
    /// Number of token ids.
    pub vocab_size: usize,
    /// Embedding width; `None` feeds one-hot vectors (as in the d2l book).
    pub embed_size: Option<usize>,
    /// Hidden width of every recurrent layer.
    pub hidden_size: usize,
    /// Recurrent layers.
    pub num_layers: usize,
    /// The recurrent cell.
    pub cell: CellKind,
    /// Dropout between recurrent layers (training only).
    pub dropout: f64,
}

impl LanguageModelConfig {
    /// The recurrent stack's configuration.
    pub fn recurrent(&self) -> RecurrentConfig {
        RecurrentConfig::new(self.cell, self.embed_size.unwrap_or(self.vocab_size), self.hidden_size)
            .num_layers(self.num_layers)
            .dropout(self.dropout)
    }
    /// Check every field.
    pub fn validate(&self) -> Result<()> {
        if self.vocab_size == 0 {
            return Err(invalid("vocab_size", "an integer >= 1", self.vocab_size));
        }
        if self.embed_size == Some(0) {
            return Err(invalid("embed_size", "an integer >= 1 or None (one-hot)", 0));
        }
        self.recurrent().validate()
    }
    /// Number of trainable scalars, or `None` if the count overflows `usize`.
    pub fn checked_num_params(&self) -> Option<usize> {
        let (v, h) = (self.vocab_size, self.hidden_size);
        let embedding = match self.embed_size {
            Some(e) => v.checked_mul(e)?,
            None => 0,
        };
        let linear = h.checked_mul(v)?.checked_add(v)?;
        embedding.checked_add(recurrent_num_params(&self.recurrent())?)?.checked_add(linear)
    }
    fn describe(&self) -> String {
        let e = self.embed_size.map_or("None".to_string(), |e| e.to_string());
        format!(
            "vocab_size {}, embed_size {e}, hidden_size {}, num_layers {}",
            self.vocab_size, self.hidden_size, self.num_layers
        )
    }
}

/// Number of trainable scalars of a recurrent stack (as [`RecurrentConfig::num_params`]), or `None`
/// if the count overflows `usize`.
pub fn recurrent_num_params(cfg: &RecurrentConfig) -> Option<usize> {
    let gate_size = cfg.cell.gates().checked_mul(cfg.hidden_size)?;
    let d = cfg.directions();
    let per_dir = |input: usize| -> Option<usize> {
        gate_size.checked_mul(input.checked_add(cfg.hidden_size)?.checked_add(2)?)?.checked_mul(d)
    };
    let first = per_dir(cfg.input_size)?;
    let rest = match cfg.num_layers.checked_sub(1)? {
        0 => 0,
        n => per_dir(d.checked_mul(cfg.hidden_size)?)?.checked_mul(n)?,
    };
    first.checked_add(rest)
}

/// `Err` unless the parameters of `cfg` with their gradients and two optimizer slots (4 values
/// per parameter of `elem_bytes` bytes) fit in memory; see [`check_alloc`]. Run it before
/// creating a [`Recurrent`] whose sizes come from a user.
pub fn check_recurrent_size(cfg: &RecurrentConfig, elem_bytes: usize) -> Result<()> {
    let got = format!(
        "input_size {}, hidden_size {}, num_layers {}",
        cfg.input_size, cfg.hidden_size, cfg.num_layers
    );
    check_alloc("recurrent layer size", &got, recurrent_num_params(cfg).and_then(|n| n.checked_mul(4)), elem_bytes)
}

/// Values a training pass of `cfg` keeps per `(time step, sequence)`: the output, and per layer
/// and direction the gates, states and their gradients (a generous estimate).
fn recurrent_values_per_token(cfg: &RecurrentConfig) -> Option<usize> {
    let per_layer = cfg.cell.gates().checked_add(6)?.checked_mul(cfg.hidden_size)?.checked_mul(cfg.directions())?;
    per_layer
        .checked_mul(cfg.num_layers)?
        .checked_add(cfg.input_size.checked_mul(2)?)?
        .checked_add(cfg.directions().checked_mul(cfg.hidden_size)?.checked_mul(2)?)
}

/// `Err` unless a forward and backward pass of `cfg` over `(seq_len, batch)` fits in memory
/// (see [`check_alloc`]); `what` names the input in the message.
pub fn check_recurrent_batch(cfg: &RecurrentConfig, what: &str, seq_len: usize, batch: usize, elem_bytes: usize) -> Result<()> {
    let n = seq_len.checked_mul(batch).and_then(|tb| tb.checked_mul(recurrent_values_per_token(cfg)?));
    check_alloc(what, &format!("seq_len {seq_len} x batch {batch}"), n, elem_bytes)
}

/// Recurrent state carried between calls: `h` (and `c` for LSTM), each `(L, B, H)`.
#[derive(Clone, Debug, PartialEq)]
pub struct State<F> {
    /// Hidden state `(L, B, H)`.
    pub h: Array3<F>,
    /// Cell state `(L, B, H)` (LSTM only).
    pub c: Option<Array3<F>>,
}

/// What one training step measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Mean cross-entropy over the batch's tokens (nats).
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens in the batch.
    pub tokens: usize,
}

/// Embedding (or one-hot) → recurrent stack → linear; time-major `(T, B)` token ids.
///
/// Sampling caches copies of a float32 model's weights packed for its step kernel (float32, and
/// float16 when used: [`crate::sample::WeightFormat`]); every method that takes `&mut self` drops
/// them, so they always match the weights.
#[derive(Clone, Debug)]
pub struct LanguageModel<F> {
    config: LanguageModelConfig,
    embedding: Option<Embedding<F>>,
    rnn: Recurrent<F>,
    linear: Linear<F>,
    /// Regularisation and weight tying.
    options: LanguageModelOptions,
    /// Tied models whose embedding and hidden widths differ: `E × H` (see [`LanguageModelOptions`]).
    proj: Option<Projection<F>>,
    /// Float16 copy of the streamed weights (sampling); cleared by every `&mut self` method.
    packed: StepCache,
}

impl<F: Element> LanguageModel<F> {
    /// A new model; every part is initialised from `seed` (PyTorch's schemes).
    pub fn new(config: LanguageModelConfig, seed: u64) -> Result<Self> {
        Self::with_options(config, LanguageModelOptions::default(), seed)
    }

    /// A new model with regularisation or tied weights (see [`LanguageModelOptions`]).
    pub fn with_options(config: LanguageModelConfig, options: LanguageModelOptions, seed: u64) -> Result<Self> {
        config.validate()?;
        options.validate(&config)?;
        check_alloc(
            "model size",
            &config.describe(),
            config.checked_num_params().and_then(|n| n.checked_mul(4)),
            std::mem::size_of::<F>(),
        )?;
        let embedding = match config.embed_size {
            Some(e) => Some(Embedding::new(config.vocab_size, e, mix(seed ^ 1))?),
            None => None,
        };
        let rnn = Recurrent::new(config.recurrent(), mix(seed ^ 2))?;
        let linear = Linear::new(config.hidden_size, config.vocab_size, mix(seed ^ 3))?;
        let proj = match (options.tie_weights, config.embed_size) {
            (true, Some(e)) if e != config.hidden_size => Some(Projection::new(e, config.hidden_size, mix(seed ^ 4))),
            _ => None,
        };
        let mut model = LanguageModel { config, embedding, rnn, linear, options, proj, packed: StepCache::default() };
        model.sync_tied();
        Ok(model)
    }

    /// Regularisation and weight tying.
    pub fn options(&self) -> &LanguageModelOptions {
        &self.options
    }

    /// A tied model's output weight is `E` (or `E · P`): recompute it after the parameters changed.
    fn sync_tied(&mut self) {
        if !self.options.tie_weights {
            return;
        }
        let e = &self.embedding.as_ref().expect("tied models have an embedding").weight;
        match &self.proj {
            None => self.linear.weight.assign(e),
            Some(p) => crate::linalg::gemm(F::one(), &e.view(), &p.weight.view(), F::zero(), &mut self.linear.weight.view_mut()),
        }
    }

    /// A tied model's output-weight gradient `dW` goes to the embedding (`dE += dW`, or
    /// `dE += dW · Pᵀ` and `dP += Eᵀ · dW`) and is cleared.
    fn route_tied_grad(&mut self) {
        if !self.options.tie_weights {
            return;
        }
        let dw = std::mem::replace(&mut self.linear.grad_weight, Array2::zeros(self.linear.weight.dim()));
        let emb = self.embedding.as_mut().expect("tied models have an embedding");
        match &mut self.proj {
            None => emb.grad += &dw,
            Some(p) => {
                crate::linalg::gemm(F::one(), &dw.view(), &p.weight.t(), F::one(), &mut emb.grad.view_mut());
                crate::linalg::gemm(F::one(), &emb.weight.t(), &dw.view(), F::one(), &mut p.grad.view_mut());
            }
        }
    }

    /// The masks of one training pass (advancing the stack's dropout stream), if any dropout is on.
    fn draw_masks(&mut self, batch: usize) -> Option<Masks<F>> {
        if !self.options.drops() {
            return None;
        }
        let (seed, calls) = self.rnn.dropout_state();
        self.rnn.set_dropout_state(seed, calls + 1);
        Some(Masks::draw(&self.options, &self.config, self.rnn.config(), batch, seed, calls + 1))
    }

    /// Weight drop: `W_hh ← W_hh ⊙ M` for the pass; returns the originals to put back.
    fn drop_weights(&mut self, masks: &Masks<F>) -> Vec<Array2<F>> {
        let mut saved = Vec::new();
        if masks.weights.is_empty() {
            return saved;
        }
        let mut l = 0;
        self.rnn.visit_mut(&mut |name, p, _| {
            if name.starts_with("weight_hh") {
                let mut p = p.into_dimensionality::<ndarray::Ix2>().expect("2-D");
                saved.push(p.to_owned());
                p *= &masks.weights[l];
                l += 1;
            }
        });
        saved
    }

    /// Undo [`Self::drop_weights`]; the pass's `W_hh` gradient (added since `before`) is masked too.
    fn restore_weights(&mut self, masks: &Masks<F>, saved: Vec<Array2<F>>, before: Vec<Array2<F>>) {
        if saved.is_empty() {
            return;
        }
        let mut l = 0;
        self.rnn.visit_mut(&mut |name, p, g| {
            if name.starts_with("weight_hh") {
                let mut p = p.into_dimensionality::<ndarray::Ix2>().expect("2-D");
                let mut g = g.into_dimensionality::<ndarray::Ix2>().expect("2-D");
                p.assign(&saved[l]);
                let added = &g - &before[l];
                g.assign(&(&before[l] + &(added * &masks.weights[l])));
                l += 1;
            }
        });
    }

    fn weight_hh_grads(&self) -> Vec<Array2<F>> {
        let mut out = Vec::new();
        self.rnn.visit(&mut |name, _, g| {
            if name.starts_with("weight_hh") {
                out.push(g.into_dimensionality::<ndarray::Ix2>().expect("2-D").to_owned());
            }
        });
        out
    }
    /// The configuration.
    pub fn config(&self) -> &LanguageModelConfig {
        &self.config
    }
    /// The embedding (None for one-hot input).
    pub fn embedding(&self) -> Option<&Embedding<F>> {
        self.embedding.as_ref()
    }
    /// The recurrent stack.
    pub fn rnn(&self) -> &Recurrent<F> {
        &self.rnn
    }
    /// The recurrent stack, mutably (e.g. to restore its dropout stream).
    pub fn rnn_mut(&mut self) -> &mut Recurrent<F> {
        self.packed.clear();
        &mut self.rnn
    }
    /// The output layer.
    pub fn linear(&self) -> &Linear<F> {
        &self.linear
    }
    /// The cached packed copies of the weights (see [`crate::sample::WeightFormat`]).
    pub(crate) fn step_cache(&self) -> &StepCache {
        &self.packed
    }

    /// A zero state for `batch` sequences.
    pub fn zero_state(&self, batch: usize) -> State<F> {
        let st = self.rnn.config().state_shape(batch);
        State { h: Array3::zeros(st), c: self.config.cell.has_cell_state().then(|| Array3::zeros(st)) }
    }

    fn check_ids(&self, what: &str, ids: &ArrayView2<'_, usize>) -> Result<()> {
        let (t, b) = ids.dim();
        if t == 0 || b == 0 {
            return Err(invalid(what, "shape (seq_len >= 1, batch >= 1)", format!("({t}, {b})")));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i >= self.config.vocab_size) {
            return Err(invalid(&format!("{what} token id"), format!("an id in [0, {})", self.config.vocab_size), bad));
        }
        Ok(())
    }

    /// `Err` unless the activations of a pass over `(t, b)` ids fit in memory.
    fn check_batch(&self, what: &str, t: usize, b: usize) -> Result<()> {
        let c = &self.config;
        let per_token = recurrent_values_per_token(&c.recurrent())
            .and_then(|n| n.checked_add(c.vocab_size.checked_mul(3)?))
            .and_then(|n| n.checked_add(c.embed_size.unwrap_or(0).checked_mul(2)?));
        let n = t.checked_mul(b).and_then(|tb| tb.checked_mul(per_token?));
        check_alloc(what, &format!("shape ({t}, {b})"), n, std::mem::size_of::<F>())
    }

    fn check_state(&self, state: Option<&State<F>>, batch: usize) -> Result<()> {
        if let Some(s) = state {
            let st = self.rnn.config().state_shape(batch);
            check_shape("state h", &st, s.h.shape())?;
            match (&s.c, self.config.cell.has_cell_state()) {
                (Some(c), true) => check_shape("state c", &st, c.shape())?,
                (None, true) => return Err(Error::State("state: an LSTM state needs both h and c".into())),
                (Some(_), false) => return Err(Error::State(format!("state: a {} model has no cell state c", self.config.cell))),
                (None, false) => {}
            }
        }
        Ok(())
    }

    /// Whether the first layer takes its input projection from the embedding table's rows
    /// (`Recurrent::forward_embedded`): when the vocabulary is at most half the `T·B` tokens, the
    /// products over the table's `V` rows replace those over every token (the default char model:
    /// 66 rows instead of 2,048). Depends on the shapes only.
    fn table_lookup(&self, t: usize, b: usize) -> bool {
        2 * self.config.vocab_size <= t * b
    }

    fn embed(&self, ids: &ArrayView2<'_, usize>) -> Result<Option<Array3<F>>> {
        let (t, b) = ids.dim();
        match &self.embedding {
            None => Ok(None),
            Some(e) => {
                let flat: Vec<usize> = ids.iter().copied().collect();
                let x = e.forward(&flat)?;
                let width = x.ncols();
                Ok(Some(x.into_shape_with_order((t, b, width)).expect("(T, B, E)")))
            }
        }
    }

    /// Logits `(T, B, V)` for `ids: (T, B)` and the final state (inference: no dropout).
    pub fn logits(&self, ids: ArrayView2<'_, usize>, state: Option<&State<F>>) -> Result<(Array3<F>, State<F>)> {
        self.check_batch("ids", ids.nrows(), ids.ncols())?;
        self.check_ids("ids", &ids)?;
        self.check_state(state, ids.ncols())?;
        let (t, b) = ids.dim();
        let (h0, c0) = split_state(state);
        let out = match (&self.embedding, self.table_lookup(t, b)) {
            (Some(e), true) => self.rnn.forward_embedded(ids, &e.weight, h0, c0)?,
            _ => match self.embed(&ids)? {
                Some(x) => self.rnn.forward(x.view(), h0, c0)?,
                None => self.rnn.forward_tokens(ids, h0, c0)?,
            },
        };
        let hs = self.config.hidden_size;
        let y = out.y.into_shape_with_order((t * b, hs)).expect("(T*B, H)");
        let logits = self.linear.forward(y.view())?;
        let v = self.config.vocab_size;
        Ok((logits.into_shape_with_order((t, b, v)).expect("(T, B, V)"), State { h: out.h_n, c: out.c_n }))
    }

    /// Mean cross-entropy of predicting `targets` from `inputs` (both `(T, B)`), and the final state.
    pub fn evaluate(
        &self,
        inputs: ArrayView2<'_, usize>,
        targets: ArrayView2<'_, usize>,
        state: Option<&State<F>>,
    ) -> Result<(f64, State<F>)> {
        check_shape("targets", inputs.shape(), targets.shape())?;
        self.check_batch("inputs", inputs.nrows(), inputs.ncols())?;
        self.check_ids("inputs", &inputs)?;
        self.check_ids("targets", &targets)?;
        let (logits, st) = self.logits(inputs, state)?;
        let (t, b, v) = logits.dim();
        let flat: Vec<usize> = targets.iter().copied().collect();
        let (loss, _) = cross_entropy(logits.into_shape_with_order((t * b, v)).expect("2-D").view(), &flat)?;
        Ok((loss, st))
    }

    /// Forward (training mode), loss and backward: gradients are **added** to the stored ones.
    /// Returns the mean loss and the final state.
    pub fn loss_and_grad(
        &mut self,
        inputs: ArrayView2<'_, usize>,
        targets: ArrayView2<'_, usize>,
        state: Option<&State<F>>,
    ) -> Result<(f64, State<F>)> {
        self.packed.clear();
        check_shape("targets", inputs.shape(), targets.shape())?;
        self.check_batch("inputs", inputs.nrows(), inputs.ncols())?;
        self.check_ids("inputs", &inputs)?;
        self.check_ids("targets", &targets)?;
        self.check_state(state, inputs.ncols())?;
        let (t, b) = inputs.dim();
        let (h0, c0) = split_state(state);
        let masks = self.draw_masks(b);
        // Layer 0 may take its input projection from the embedding table's rows (see
        // `table_lookup`): every token's input must then be its table row, which embedding
        // dropout keeps (it scales whole rows) and locked input dropout does not.
        let lookup = self.embedding.is_some()
            && self.table_lookup(t, b)
            && masks.as_ref().is_none_or(|m| m.input.is_none());
        let types = masks.as_ref().and_then(|m| m.types.as_ref());
        let table = match (&self.embedding, lookup) {
            (Some(e), true) => Some(match types {
                Some(k) => &e.weight * &ndarray::ArrayView1::from(k.as_slice()).insert_axis(ndarray::Axis(1)),
                None => e.weight.clone(),
            }),
            _ => None,
        };
        let mut x = if lookup { None } else { self.embed(&inputs)? };
        if let (Some(x), Some(m)) = (x.as_mut(), masks.as_ref()) {
            if let Some(types) = &m.types {
                scale_by_type(x, &inputs, types);
            }
            if let Some(mask) = &m.input {
                scale_locked(x, mask);
            }
        }
        let (saved, before) = match &masks {
            Some(m) if !m.weights.is_empty() => (self.drop_weights(m), self.weight_hh_grads()),
            _ => (Vec::new(), Vec::new()),
        };
        let pass = self.forward_backward(&inputs, &targets, x.as_ref(), table.as_ref(), h0, c0, masks.as_ref());
        if let Some(m) = &masks {
            self.restore_weights(m, saved, before); // (also when the pass failed)
        }
        self.route_tied_grad();
        let (loss, dx, d_table, st) = pass?;
        if let (Some(e), Some(mut d)) = (self.embedding.as_mut(), d_table) {
            if let Some(k) = types {
                d *= &ndarray::ArrayView1::from(k.as_slice()).insert_axis(ndarray::Axis(1));
            }
            e.grad += &d;
        }
        if let (Some(e), Some(mut dx)) = (self.embedding.as_mut(), dx) {
            if let Some(m) = &masks {
                if let Some(mask) = &m.input {
                    scale_locked(&mut dx, mask);
                }
                if let Some(types) = &m.types {
                    scale_by_type(&mut dx, &inputs, types);
                }
            }
            let flat: Vec<usize> = inputs.iter().copied().collect();
            let width = dx.shape()[2];
            e.backward(&flat, dx.into_shape_with_order((t * b, width)).expect("2-D").view());
        }
        Ok((loss, st))
    }

    /// The training pass from the stack's input (dense `x`, the embedding `table` for a lookup,
    /// or one-hot tokens) to the loss and back: `(loss, dx, the table's gradient, final state)`.
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    fn forward_backward(
        &mut self,
        inputs: &ArrayView2<'_, usize>,
        targets: &ArrayView2<'_, usize>,
        x: Option<&Array3<F>>,
        table: Option<&Array2<F>>,
        h0: Option<ArrayView3<'_, F>>,
        c0: Option<ArrayView3<'_, F>>,
        masks: Option<&Masks<F>>,
    ) -> Result<(f64, Option<Array3<F>>, Option<Array2<F>>, State<F>)> {
        let (t, b) = inputs.dim();
        let (out, tape) = match (x, table) {
            (Some(x), _) => self.rnn.forward_train(x.view(), h0, c0)?,
            (None, Some(tb)) => self.rnn.forward_train_embedded(inputs.view(), tb, h0, c0)?,
            (None, None) => self.rnn.forward_train_tokens(inputs.view(), h0, c0)?,
        };
        let hs = self.config.hidden_size;
        let out_mask = masks.and_then(|m| m.output.as_ref());
        let mut y3 = out.y;
        if let Some(mask) = out_mask {
            scale_locked(&mut y3, mask);
        }
        let y = y3.into_shape_with_order((t * b, hs)).expect("(T*B, H)");
        let logits = self.linear.forward(y.view())?;
        let flat_targets: Vec<usize> = targets.iter().copied().collect();
        let (loss, dlogits) = cross_entropy(logits.view(), &flat_targets)?;
        let dy = self.linear.backward(y.view(), dlogits.view());
        let mut dy = dy.into_shape_with_order((t, b, hs)).expect("(T, B, H)");
        if let Some(mask) = out_mask {
            scale_locked(&mut dy, mask);
        }
        let (g, d_table) = self.rnn.backward_table(&tape, dy.view(), None, None)?;
        Ok((loss, g.dx, d_table, State { h: out.h_n, c: out.c_n }))
    }

    /// One complete training step: zero the gradients, forward, loss, backward, clip the global
    /// gradient norm to `clip` (if given), and update with `optimizer`.
    ///
    /// If the loss or the gradient norm is not finite, or the update would make a parameter (or
    /// an optimizer moment) non-finite, the parameters and the optimizer are left unchanged and
    /// `Error::NonFinite` is returned (the caller decides to stop or skip).
    pub fn train_step(
        &mut self,
        inputs: ArrayView2<'_, usize>,
        targets: ArrayView2<'_, usize>,
        state: Option<&State<F>>,
        clip: Option<f64>,
        optimizer: &mut Optimizer<F>,
    ) -> Result<(StepStats, State<F>)> {
        self.packed.clear();
        if let Some(c) = clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(invalid("clip", "a finite number > 0", c));
            }
        }
        optimizer.check_module(self)?;
        self.zero_grad();
        let (loss, st) = self.loss_and_grad(inputs, targets, state)?;
        let grad_norm = match clip {
            Some(c) => clip_grad_norm(self, c),
            None => crate::optim::grad_norm(self),
        };
        if !loss.is_finite() || !grad_norm.is_finite() {
            return Err(Error::NonFinite(format!(
                "training step {}: loss {loss}, gradient norm {grad_norm}; parameters left unchanged",
                optimizer.steps() + 1
            )));
        }
        if !optimizer.step_is_finite(self) {
            return Err(Error::NonFinite(format!(
                "training step {}: loss {loss} and gradient norm {grad_norm} are finite, but the update (learning \
                 rate {:e}) would make parameters non-finite; parameters left unchanged",
                optimizer.steps() + 1,
                optimizer.config().lr()
            )));
        }
        optimizer.step(self)?;
        Ok((StepStats { loss, grad_norm, tokens: inputs.len() }, st))
    }
}

fn split_state<F>(state: Option<&State<F>>) -> (Option<ArrayView3<'_, F>>, Option<ArrayView3<'_, F>>) {
    match state {
        Some(s) => (Some(s.h.view()), s.c.as_ref().map(|c| c.view())),
        None => (None, None),
    }
}

impl<F: Element> Module<F> for LanguageModel<F> {
    /// Parameters in order: `embedding.weight`, `rnn.*`, `proj.weight` (tied, `E != H`),
    /// `linear.weight` (not for tied models: it is the embedding), `linear.bias`.
    fn visit(&self, f: &mut Visitor<'_, F>) {
        if let Some(e) = &self.embedding {
            e.visit(&mut |n, p, g| f(&format!("embedding.{n}"), p, g));
        }
        self.rnn.visit(&mut |n, p, g| f(&format!("rnn.{n}"), p, g));
        if let Some(pr) = &self.proj {
            pr.visit(&mut |n, p, g| f(&format!("proj.{n}"), p, g));
        }
        let tied = self.options.tie_weights;
        self.linear.visit(&mut |n, p, g| {
            if !(tied && n == "weight") {
                f(&format!("linear.{n}"), p, g)
            }
        });
    }
    fn visit_mut(&mut self, f: &mut VisitorMut<'_, F>) {
        self.packed.clear();
        if let Some(e) = &mut self.embedding {
            e.visit_mut(&mut |n, p, g| f(&format!("embedding.{n}"), p, g));
        }
        self.rnn.visit_mut(&mut |n, p, g| f(&format!("rnn.{n}"), p, g));
        if let Some(pr) = &mut self.proj {
            pr.visit_mut(&mut |n, p, g| f(&format!("proj.{n}"), p, g));
        }
        let tied = self.options.tie_weights;
        self.linear.visit_mut(&mut |n, p, g| {
            if !(tied && n == "weight") {
                f(&format!("linear.{n}"), p, g)
            }
        });
        self.sync_tied();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::OptimizerConfig;
    use ndarray::Array2;

    fn config(vocab_size: usize, embed_size: Option<usize>, hidden_size: usize, num_layers: usize) -> LanguageModelConfig {
        LanguageModelConfig { vocab_size, embed_size, hidden_size, num_layers, cell: CellKind::Lstm, dropout: 0.0 }
    }

    #[test]
    fn absurd_sizes_are_errors_not_aborts() {
        for cfg in [
            config(1 << 40, Some(1 << 40), 1 << 40, 2),
            config(10, Some(4), 1 << 31, 1),
            config(1_000_000, Some(1_000_000), 10, 1),
            config(10, None, 8, usize::MAX),
        ] {
            let e = LanguageModel::<f32>::new(cfg.clone(), 0).unwrap_err();
            assert!(e.to_string().starts_with("model size: expected sizes whose arrays fit in memory, got vocab_size"), "{e}");
        }
        let m = LanguageModel::<f32>::new(config(10, Some(4), 8, 1), 0).unwrap();
        let one = ndarray::Array2::<usize>::ones((1, 1));
        let huge = one.broadcast((1 << 40, 1 << 20)).unwrap();
        let e = m.logits(huge, None).unwrap_err();
        assert!(e.to_string().starts_with("ids: expected sizes whose arrays fit in memory, got shape (1099511627776, 1048576)"), "{e}");
    }

    #[test]
    fn an_overflowing_update_is_refused_and_changes_nothing() {
        let mut m = LanguageModel::<f32>::new(config(6, Some(4), 8, 1), 0).unwrap();
        let mut opt = Optimizer::new(OptimizerConfig::adam(1e38)).unwrap(); // lr / (1 - beta1) overflows f32
        let x = Array2::from_shape_fn((5, 2), |(t, b)| (t + b) % 6);
        let y = Array2::from_shape_fn((5, 2), |(t, b)| (t + 2 * b + 1) % 6);
        let before = m.state_dict();
        let e = m.train_step(x.view(), y.view(), None, None, &mut opt).unwrap_err();
        assert!(matches!(e, Error::NonFinite(_)) && e.to_string().contains("would make parameters non-finite"), "{e}");
        assert_eq!(m.state_dict(), before);
        assert_eq!(opt.steps(), 0);
        let mut opt = Optimizer::new(OptimizerConfig::sgd(0.1)).unwrap();
        m.train_step(x.view(), y.view(), None, None, &mut opt).unwrap();
        assert_ne!(m.state_dict(), before);
    }
}

//! The multi-layer, optionally bidirectional recurrent stack: forward pass and exact
//! backpropagation through time.
//!
//! Per layer and direction the forward pass computes the input projection of all time steps as one
//! matrix product `(T·B, I) · W_ihᵀ`, then steps through time with one `(B, H) · W_hhᵀ` product and
//! the cell's elementwise update per step. The backward pass walks time in reverse, producing the
//! gradients of the gate pre-activations; the weight gradients and the input gradient are then three
//! large matrix products over all time steps. The two directions of a layer run concurrently; each is
//! sequential inside, so results are bit-identical for any number of threads.

use crate::allocator::zeros;
use crate::cell::{self, CellKind};
use crate::colsplit;
use crate::config::RecurrentConfig;
use crate::element::Element;
use crate::error::{check_shape, Error, Result};
use crate::linalg::gemm;
use crate::packed::{add_transposed_product, fits_half_l2, panel_bytes, product, PackedRhs, Start};
use rayon::prelude::*;
use crate::module::{Module, Visitor, VisitorMut};
use crate::rng;
use ndarray::{s, Array1, Array2, Array3, ArrayView2, ArrayView3, ArrayViewD, Axis};

/// Stream tag for parameter initialisation.
const INIT_STREAM: u64 = 1;
/// Stream tag for dropout masks.
const DROPOUT_STREAM: u64 = 2;

/// The four parameters of one layer and direction, PyTorch shapes.
#[derive(Clone, Debug)]
pub struct DirParams<F> {
    /// `(G·H, I_l)`.
    pub weight_ih: Array2<F>,
    /// `(G·H, H)`.
    pub weight_hh: Array2<F>,
    /// `(G·H,)`.
    pub bias_ih: Array1<F>,
    /// `(G·H,)`.
    pub bias_hh: Array1<F>,
}

impl<F: Element> DirParams<F> {
    fn zeros(gate_size: usize, input: usize, hidden: usize) -> Self {
        DirParams {
            weight_ih: Array2::zeros((gate_size, input)),
            weight_hh: Array2::zeros((gate_size, hidden)),
            bias_ih: Array1::zeros(gate_size),
            bias_hh: Array1::zeros(gate_size),
        }
    }
}

/// The forward results: output sequence and final states.
#[derive(Clone, Debug)]
pub struct RecurrentOutput<F> {
    /// `(T, B, D·H)`: the last layer's hidden states, directions concatenated.
    pub y: Array3<F>,
    /// `(L·D, B, H)`: final hidden state of every layer and direction.
    pub h_n: Array3<F>,
    /// `(L·D, B, H)`: final cell state (LSTM only).
    pub c_n: Option<Array3<F>>,
}

/// Gradients w.r.t. the inputs of a forward pass.
#[derive(Clone, Debug)]
pub struct RecurrentInputGrads<F> {
    /// `(T, B, I)`; `None` for token (one-hot) inputs.
    pub dx: Option<Array3<F>>,
    /// `(L·D, B, H)`.
    pub dh0: Array3<F>,
    /// `(L·D, B, H)` (LSTM only).
    pub dc0: Option<Array3<F>>,
}

/// What the backward pass needs from a training forward pass.
#[derive(Clone, Debug)]
pub struct Tape<F> {
    /// The cell of the stack that made the tape (RNN-tanh and RNN-relu tapes have the same shapes).
    cell: CellKind,
    steps: usize,
    batch: usize,
    /// Per-sequence lengths of a padded batch (`None`: every sequence has `steps` steps).
    lengths: Option<Vec<usize>>,
    h0: Array3<F>,
    c0: Option<Array3<F>>,
    layers: Vec<LayerTape<F>>,
}

impl<F> Tape<F> {
    /// `(T, B)` of the forward pass that produced the tape.
    pub fn dims(&self) -> (usize, usize) {
        (self.steps, self.batch)
    }
    /// The lengths of the padded batch the forward pass ran on, if any.
    pub fn lengths(&self) -> Option<&[usize]> {
        self.lengths.as_deref()
    }
}

/// A layer's input: dense features, or token ids standing for one-hot vectors (layer 0 only), whose
/// input projection is a column gather of `W_ih` instead of a matrix product.
#[derive(Clone, Debug)]
enum LayerInput<F> {
    /// `(T·B, I_l)`.
    Dense(Array2<F>),
    /// `T·B` ids in `[0, input_size)`.
    OneHot(Vec<usize>),
    /// `T·B` ids into the rows of an embedding table `(V, I_l)` (layer 0 of a language model with
    /// a small vocabulary): the input projection is a row gather of `table · W_ihᵀ` (`V` rows
    /// instead of `T·B`), and the gradients of `W_ih` and of the table come from the per-token sums
    /// of `dG` (again `V` rows).
    Embedded { ids: Vec<usize>, table: Array2<F> },
}

impl<F: Element> LayerInput<F> {
    fn rows(&self) -> usize {
        match self {
            LayerInput::Dense(a) => a.nrows(),
            LayerInput::OneHot(ids) | LayerInput::Embedded { ids, .. } => ids.len(),
        }
    }
    /// `(T·B, G·H)` = `input · W_ihᵀ` (the time loops add the biases, block by block, while the
    /// rows are in cache).
    fn project(&self, weight: &Array2<F>) -> Array2<F> {
        match self {
            LayerInput::Dense(a) => crate::linalg::product(&a.view(), &weight.t()),
            LayerInput::OneHot(ids) => {
                let mut out = Array2::zeros((ids.len(), weight.nrows()));
                for (mut row, &id) in out.rows_mut().into_iter().zip(ids) {
                    row.assign(&weight.column(id));
                }
                out
            }
            LayerInput::Embedded { ids, table } => {
                let per_token = crate::linalg::product(&table.view(), &weight.t());
                let mut out = zeros(ids.len(), weight.nrows());
                for (mut row, &id) in out.rows_mut().into_iter().zip(ids) {
                    row.assign(&per_token.row(id));
                }
                out
            }
        }
    }
    /// `dW_ih += dGᵀ · input`; returns `Σ_t dG` (the bias gradient), summed in the same pass, and
    /// for an embedded input the per-token sums of `dG` `(V, G·H)`.
    fn add_weight_grad(&self, dg: &Array2<F>, dw: &mut Array2<F>) -> (Array1<F>, Option<Array2<F>>) {
        let mut db = Array1::zeros(dg.ncols());
        match self {
            LayerInput::Dense(a) => {
                add_transposed_product(dg.view(), a.view(), &mut dw.view_mut(), Some(db.as_slice_mut().expect("contiguous")));
            }
            LayerInput::OneHot(ids) => {
                for (row, &id) in dg.rows().into_iter().zip(ids) {
                    let mut col = dw.column_mut(id);
                    col += &row;
                    db += &row;
                }
            }
            LayerInput::Embedded { ids, table } => {
                let mut per_token = Array2::<F>::zeros((table.nrows(), dg.ncols()));
                for (row, &id) in dg.rows().into_iter().zip(ids) {
                    let mut acc = per_token.row_mut(id);
                    acc += &row;
                    db += &row;
                }
                add_transposed_product(per_token.view(), table.view(), &mut dw.view_mut(), None);
                return (db, Some(per_token));
            }
        }
        (db, None)
    }
}

#[derive(Clone, Debug)]
struct LayerTape<F> {
    /// The layer's input after dropout.
    input: LayerInput<F>,
    /// `(T·B, I_l)`: dropout scale (`0` or `1/(1-p)`), if dropout was applied to this input.
    mask: Option<Array2<F>>,
    dirs: Vec<DirTape<F>>,
}

#[derive(Clone, Debug)]
struct DirTape<F> {
    /// `(T·B, G·H)` gate activations.
    gates: Array2<F>,
    /// `(T·B, G·H)` recurrent projections (GRU only).
    hw: Option<Array2<F>>,
    /// `(T·B, H)` hidden states, in time order. With lengths, a padded step holds the state carried
    /// through it (the final state forward, the initial state in reverse), not its zero output.
    h: Array2<F>,
    /// `(T·B, H)` cell states (LSTM only).
    c: Option<Array2<F>>,
}

/// Result of one direction's forward pass.
struct DirRun<F> {
    h: Array2<F>,
    h_last: Array1<F>,
    c_last: Option<Array1<F>>,
    tape: Option<DirTape<F>>,
}

/// A stack of recurrent layers (PyTorch's `nn.RNN`/`nn.GRU`/`nn.LSTM`), time-major.
///
/// ```
/// use rnnrs::{CellKind, Recurrent, RecurrentConfig};
/// use ndarray::Array3;
/// let cfg = RecurrentConfig::new(CellKind::Lstm, 3, 5).num_layers(2).bidirectional(true);
/// let mut lstm = Recurrent::<f64>::new(cfg, 0).unwrap();
/// let x = Array3::<f64>::ones((7, 2, 3)); // (T, B, I)
/// let (out, tape) = lstm.forward_train(x.view(), None, None).unwrap();
/// assert_eq!(out.y.shape(), &[7, 2, 10]);
/// let grads = lstm.backward(&tape, out.y.view(), None, None).unwrap();
/// assert_eq!(grads.dx.unwrap().shape(), &[7, 2, 3]);
/// ```
#[derive(Clone, Debug)]
pub struct Recurrent<F> {
    config: RecurrentConfig,
    params: Vec<DirParams<F>>,
    grads: Vec<DirParams<F>>,
    seed: u64,
    dropout_calls: u64,
    /// The column-split loops' packed forward weights per layer and direction, kept between
    /// calls and cleared by every mutation of the parameters (`visit_mut`).
    packs: PackCache<F>,
}

/// A cache of packed weights: empty in a clone, so a clone never shares a stale copy.
struct PackCache<F>(std::sync::Mutex<Vec<Option<std::sync::Arc<colsplit::FwdPack<F>>>>>);

impl<F> PackCache<F> {
    fn new() -> Self {
        PackCache(std::sync::Mutex::new(Vec::new()))
    }
    fn get(&self, idx: usize) -> Option<std::sync::Arc<colsplit::FwdPack<F>>> {
        self.0.lock().ok()?.get(idx).cloned().flatten()
    }
    fn put(&self, idx: usize, pack: colsplit::FwdPack<F>) {
        if let Ok(mut v) = self.0.lock() {
            if v.len() <= idx {
                v.resize_with(idx + 1, || None);
            }
            v[idx] = Some(std::sync::Arc::new(pack));
        }
    }
    fn clear(&mut self) {
        if let Ok(v) = self.0.get_mut() {
            v.clear();
        }
    }
}

impl<F> Clone for PackCache<F> {
    fn clone(&self) -> Self {
        PackCache::new()
    }
}

impl<F> std::fmt::Debug for PackCache<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PackCache")
    }
}

impl<F: Element> Recurrent<F> {
    /// A new stack with PyTorch's initialisation `U(-1/√H, 1/√H)` drawn from `seed`.
    pub fn new(config: RecurrentConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        crate::model::check_recurrent_size(&config, std::mem::size_of::<F>())?;
        let d = config.directions();
        let (g, h) = (config.gate_size(), config.hidden_size);
        let params: Vec<DirParams<F>> =
            (0..config.num_layers * d).map(|i| DirParams::zeros(g, config.layer_input_size(i / d), h)).collect();
        let grads = params.clone();
        let mut layer = Recurrent { config, params, grads, seed, dropout_calls: 0, packs: PackCache::new() };
        layer.reset_parameters(seed);
        Ok(layer)
    }

    /// Redraw every parameter from `U(-1/√H, 1/√H)` with `seed`, in parameter-name order.
    pub fn reset_parameters(&mut self, seed: u64) {
        let k = 1.0 / (self.config.hidden_size as f64).sqrt();
        let mut r = rng::stream(&[seed, INIT_STREAM]);
        self.visit_mut(&mut |_, mut p, _| p.iter_mut().for_each(|v| *v = F::from_f64((2.0 * rng::uniform(&mut r) - 1.0) * k)));
    }

    /// The configuration.
    pub fn config(&self) -> &RecurrentConfig {
        &self.config
    }

    /// Parameters of layer `layer`, direction `dir` (0 forward, 1 reverse).
    pub fn dir_params(&self, layer: usize, dir: usize) -> &DirParams<F> {
        &self.params[layer * self.config.directions() + dir]
    }

    /// The dropout stream position: how many training passes with dropout have run. Saved in
    /// checkpoints so that a resumed run draws the same masks.
    pub fn dropout_state(&self) -> (u64, u64) {
        (self.seed, self.dropout_calls)
    }

    /// Restore the dropout stream position saved by [`Recurrent::dropout_state`].
    pub fn set_dropout_state(&mut self, seed: u64, calls: u64) {
        self.seed = seed;
        self.dropout_calls = calls;
    }

    /// Inference: no dropout, nothing kept for backward.
    pub fn forward(
        &self,
        x: ArrayView3<'_, F>,
        h0: Option<ArrayView3<'_, F>>,
        c0: Option<ArrayView3<'_, F>>,
    ) -> Result<RecurrentOutput<F>> {
        self.forward_lengths(x, h0, c0, None)
    }

    /// Inference on a padded batch: sequence `b` is `x[..lengths[b], b]` (lengths in any order,
    /// each in `[0, T]`; `None` means all `T`). Outputs past a sequence's end are zero; its final
    /// state is the state after its last true step (the reverse direction starts there), so every
    /// sequence gets the results it would get alone. A length of 0 gives zero outputs and final
    /// state = initial state.
    pub fn forward_lengths(
        &self,
        x: ArrayView3<'_, F>,
        h0: Option<ArrayView3<'_, F>>,
        c0: Option<ArrayView3<'_, F>>,
        lengths: Option<&[usize]>,
    ) -> Result<RecurrentOutput<F>> {
        self.check_inputs(x.dim(), &h0, &c0)?;
        let lengths = check_lengths(lengths, x.dim().0, x.dim().1)?;
        check_finite("x", x.view().into_dyn())?;
        Ok(self.run(dense_input(x), x.dim().0, h0, c0, lengths, None, false)?.0)
    }

    /// Inference on token ids `(T, B)` standing for one-hot inputs of size `input_size` (as in the
    /// d2l book's one-hot language models), without materialising the one-hot vectors.
    pub fn forward_tokens(
        &self,
        ids: ArrayView2<'_, usize>,
        h0: Option<ArrayView3<'_, F>>,
        c0: Option<ArrayView3<'_, F>>,
    ) -> Result<RecurrentOutput<F>> {
        let input = self.check_tokens(ids, &h0, &c0)?;
        Ok(self.run(input, ids.nrows(), h0, c0, None, None, false)?.0)
    }

    /// Training forward on token ids `(T, B)` standing for one-hot inputs (see
    /// [`Recurrent::forward_tokens`]). The tape's backward returns no input gradient.
    pub fn forward_train_tokens(
        &mut self,
        ids: ArrayView2<'_, usize>,
        h0: Option<ArrayView3<'_, F>>,
        c0: Option<ArrayView3<'_, F>>,
    ) -> Result<(RecurrentOutput<F>, Tape<F>)> {
        let input = self.check_tokens(ids, &h0, &c0)?;
        let seed = self.next_dropout_seed();
        let (out, tape) = self.run(input, ids.nrows(), h0, c0, None, seed, true)?;
        Ok((out, tape.expect("a training run keeps its tape")))
    }

    /// Inference on token ids `(T, B)` looked up in an embedding `table (V, input_size)` (the ids
    /// checked `< V` by the caller): the same results as the dense input `table[ids]` up to
    /// rounding, with the input projection computed for the `V` table rows instead of `T·B`.
    pub(crate) fn forward_embedded(
        &self,
        ids: ArrayView2<'_, usize>,
        table: &Array2<F>,
        h0: Option<ArrayView3<'_, F>>,
        c0: Option<ArrayView3<'_, F>>,
    ) -> Result<RecurrentOutput<F>> {
        let input = self.check_embedded(ids, table, &h0, &c0)?;
        Ok(self.run(input, ids.nrows(), h0, c0, None, None, false)?.0)
    }

    /// Training forward of [`Recurrent::forward_embedded`]; its tape's
    /// [`Recurrent::backward_table`] returns the table's gradient.
    pub(crate) fn forward_train_embedded(
        &mut self,
        ids: ArrayView2<'_, usize>,
        table: &Array2<F>,
        h0: Option<ArrayView3<'_, F>>,
        c0: Option<ArrayView3<'_, F>>,
    ) -> Result<(RecurrentOutput<F>, Tape<F>)> {
        let input = self.check_embedded(ids, table, &h0, &c0)?;
        let seed = self.next_dropout_seed();
        let (out, tape) = self.run(input, ids.nrows(), h0, c0, None, seed, true)?;
        Ok((out, tape.expect("a training run keeps its tape")))
    }

    fn check_embedded(
        &self,
        ids: ArrayView2<'_, usize>,
        table: &Array2<F>,
        h0: &Option<ArrayView3<'_, F>>,
        c0: &Option<ArrayView3<'_, F>>,
    ) -> Result<LayerInput<F>> {
        let (t, b) = ids.dim();
        self.check_inputs((t, b, table.ncols()), h0, c0)?;
        let ids: Vec<usize> = ids.iter().copied().collect();
        if let Some(&bad) = ids.iter().find(|&&i| i >= table.nrows()) {
            return Err(crate::error::invalid("token id", format!("an id in [0, {})", table.nrows()), bad));
        }
        Ok(LayerInput::Embedded { ids, table: table.clone() })
    }

    fn check_tokens(
        &self,
        ids: ArrayView2<'_, usize>,
        h0: &Option<ArrayView3<'_, F>>,
        c0: &Option<ArrayView3<'_, F>>,
    ) -> Result<LayerInput<F>> {
        let (t, b) = ids.dim();
        self.check_inputs((t, b, self.config.input_size), h0, c0)?;
        let ids: Vec<usize> = ids.iter().copied().collect();
        if let Some(&bad) = ids.iter().find(|&&i| i >= self.config.input_size) {
            return Err(crate::error::invalid("token id", format!("an id in [0, {})", self.config.input_size), bad));
        }
        Ok(LayerInput::OneHot(ids))
    }

    fn next_dropout_seed(&mut self) -> Option<[u64; 3]> {
        if self.config.dropout > 0.0 && self.config.num_layers > 1 {
            self.dropout_calls += 1;
            Some([self.seed, DROPOUT_STREAM, self.dropout_calls])
        } else {
            None
        }
    }

    /// Training forward: dropout between layers (if configured), and a [`Tape`] for
    /// [`Recurrent::backward`].
    pub fn forward_train(
        &mut self,
        x: ArrayView3<'_, F>,
        h0: Option<ArrayView3<'_, F>>,
        c0: Option<ArrayView3<'_, F>>,
    ) -> Result<(RecurrentOutput<F>, Tape<F>)> {
        self.forward_train_lengths(x, h0, c0, None)
    }

    /// Training forward on a padded batch (see [`Recurrent::forward_lengths`]); the tape keeps the
    /// lengths, so [`Recurrent::backward`] ignores the padding: `dy` at padded steps has no effect,
    /// and `dx` there is zero.
    pub fn forward_train_lengths(
        &mut self,
        x: ArrayView3<'_, F>,
        h0: Option<ArrayView3<'_, F>>,
        c0: Option<ArrayView3<'_, F>>,
        lengths: Option<&[usize]>,
    ) -> Result<(RecurrentOutput<F>, Tape<F>)> {
        self.check_inputs(x.dim(), &h0, &c0)?;
        let lengths = check_lengths(lengths, x.dim().0, x.dim().1)?;
        check_finite("x", x.view().into_dyn())?;
        let seed = self.next_dropout_seed();
        let (out, tape) = self.run(dense_input(x), x.dim().0, h0, c0, lengths, seed, true)?;
        Ok((out, tape.expect("a training run keeps its tape")))
    }

    fn check_inputs(
        &self,
        (t, b, i): (usize, usize, usize),
        h0: &Option<ArrayView3<'_, F>>,
        c0: &Option<ArrayView3<'_, F>>,
    ) -> Result<()> {
        if t == 0 || b == 0 {
            return Err(Error::Shape {
                what: "x".into(),
                expected: format!("(seq_len >= 1, batch >= 1, {})", self.config.input_size),
                got: crate::error::shape_str(&[t, b, i]),
            });
        }
        check_shape("x", &[t, b, self.config.input_size], &[t, b, i])?;
        let st = self.config.state_shape(b);
        if let Some(h) = h0 {
            check_shape("h0", &st, h.shape())?;
            check_finite("h0", h.view().into_dyn())?;
        }
        match (self.config.cell.has_cell_state(), c0) {
            (true, Some(c)) => {
                check_shape("c0", &st, c.shape())?;
                check_finite("c0", c.view().into_dyn())?;
            }
            (false, Some(_)) => return Err(Error::State(format!("c0 given, but a {} layer has no cell state", self.config.cell))),
            _ => {}
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        x: LayerInput<F>,
        t: usize,
        h0: Option<ArrayView3<'_, F>>,
        c0: Option<ArrayView3<'_, F>>,
        lengths: Option<Vec<usize>>,
        dropout_seed: Option<[u64; 3]>,
        keep: bool,
    ) -> Result<(RecurrentOutput<F>, Option<Tape<F>>)> {
        let cfg = &self.config;
        let b = x.rows() / t;
        let (d, hs) = (cfg.directions(), cfg.hidden_size);
        let lstm = cfg.cell.has_cell_state();
        let st = cfg.state_shape(b);
        let h0 = h0.map(|h| h.to_owned()).unwrap_or_else(|| Array3::zeros(st));
        let c0 = if lstm { Some(c0.map(|c| c.to_owned()).unwrap_or_else(|| Array3::zeros(st))) } else { None };
        let mut h_n = Array3::zeros(st);
        let mut c_n = if lstm { Some(Array3::zeros(st)) } else { None };
        let mut layers = Vec::new();
        let mut input = x;
        for l in 0..cfg.num_layers {
            let mask = match (dropout_seed, &mut input) {
                (Some(seed), LayerInput::Dense(a)) if l > 0 => {
                    let m = dropout_mask(a.dim(), cfg.dropout, &[seed[0], seed[1], seed[2], l as u64]);
                    *a *= &m;
                    Some(m)
                }
                _ => None,
            };
            let run_dir = |dir: usize| {
                let idx = l * d + dir;
                let c0v = c0.as_ref().map(|c| c.index_axis(Axis(0), idx));
                let lens = lengths.as_deref();
                let threads = (rayon::current_num_threads() / d).max(1);
                let packs = (&self.packs, idx);
                dir_forward(cfg.cell, &self.params[idx], &input, t, b, h0.index_axis(Axis(0), idx), c0v, lens, dir == 1, keep, threads, packs)
            };
            let runs = if d == 2 {
                let (f, r) = rayon::join(|| run_dir(0), || run_dir(1));
                vec![f, r]
            } else {
                vec![run_dir(0)]
            };
            let mut y = zeros(t * b, d * hs);
            let mut dir_tapes = Vec::new();
            for (dir, run) in runs.into_iter().enumerate() {
                let idx = l * d + dir;
                y.slice_mut(s![.., dir * hs..(dir + 1) * hs]).assign(&run.h);
                h_n.index_axis_mut(Axis(0), idx).assign(&run.h_last.into_shape_with_order((b, hs)).expect("(B, H)"));
                if let (Some(cn), Some(cl)) = (c_n.as_mut(), run.c_last) {
                    cn.index_axis_mut(Axis(0), idx).assign(&cl.into_shape_with_order((b, hs)).expect("(B, H)"));
                }
                if let Some(tp) = run.tape {
                    dir_tapes.push(tp);
                }
            }
            let next = LayerInput::Dense(y);
            if keep {
                layers.push(LayerTape { input: std::mem::replace(&mut input, next), mask, dirs: dir_tapes });
            } else {
                input = next;
            }
        }
        let LayerInput::Dense(y) = input else { unreachable!("every layer outputs dense features") };
        let y = y.into_shape_with_order((t, b, d * hs)).expect("(T, B, D*H)");
        let tape = keep.then(|| Tape { cell: cfg.cell, steps: t, batch: b, lengths, h0, c0, layers });
        Ok((RecurrentOutput { y, h_n, c_n }, tape))
    }

    /// `Err` unless `tape` was made by a forward pass of a stack with this configuration: every
    /// buffer the backward pass reads has the shape it expects (checked before any work).
    fn check_tape(&self, tape: &Tape<F>) -> Result<()> {
        let cfg = &self.config;
        let (t, b) = (tape.steps, tape.batch);
        let (d, hs, gh) = (cfg.directions(), cfg.hidden_size, cfg.cell.gates() * cfg.hidden_size);
        let (lstm, gru) = (cfg.cell.has_cell_state(), cfg.cell == CellKind::Gru);
        let mismatch = |what: String, expected: String, got: String| {
            Err(Error::State(format!(
                "backward: the tape does not come from this layer ({}-layer {}, hidden {}, input {}): {what}: expected \
                 {expected}, got {got}",
                cfg.num_layers,
                cfg.cell,
                cfg.hidden_size,
                cfg.input_size
            )))
        };
        if tape.cell != cfg.cell {
            return mismatch("cell".into(), cfg.cell.to_string(), tape.cell.to_string());
        }
        if tape.layers.len() != cfg.num_layers {
            return mismatch("layers".into(), cfg.num_layers.to_string(), tape.layers.len().to_string());
        }
        let st = cfg.state_shape(b);
        if tape.h0.shape() != st || tape.c0.as_ref().map(|c| c.shape()) != lstm.then_some(&st[..]) {
            return mismatch("initial state".into(), format!("{st:?}{}", if lstm { " (h and c)" } else { "" }),
                            format!("{:?}{}", tape.h0.shape(), if tape.c0.is_some() { " (h and c)" } else { "" }));
        }
        if let Some(l) = &tape.lengths {
            if l.len() != b || l.iter().any(|&n| n > t) {
                return mismatch("lengths".into(), format!("{b} lengths of at most {t}"), format!("{l:?}"));
            }
        }
        for (l, lt) in tape.layers.iter().enumerate() {
            let i = cfg.layer_input_size(l);
            let input = match &lt.input {
                LayerInput::Dense(x) => (x.shape() != [t * b, i]).then(|| format!("{:?}", x.shape())),
                LayerInput::OneHot(ids) => (l > 0 || ids.len() != t * b || ids.iter().any(|&id| id >= i))
                    .then(|| format!("{} one-hot ids", ids.len())),
                LayerInput::Embedded { ids, table } => {
                    (l > 0 || ids.len() != t * b || table.ncols() != i || ids.iter().any(|&id| id >= table.nrows()))
                        .then(|| format!("{} embedded ids", ids.len()))
                }
            };
            if let Some(got) = input {
                return mismatch(format!("layer {l} input"), format!("[{}, {i}]", t * b), got);
            }
            if let Some(m) = lt.mask.as_ref().filter(|m| m.shape() != [t * b, i]) {
                return mismatch(format!("layer {l} dropout mask"), format!("[{}, {i}]", t * b), format!("{:?}", m.shape()));
            }
            if lt.dirs.len() != d {
                return mismatch(format!("layer {l} directions"), d.to_string(), lt.dirs.len().to_string());
            }
            for (k, dt) in lt.dirs.iter().enumerate() {
                let ok = dt.gates.shape() == [t * b, gh]
                    && dt.h.shape() == [t * b, hs]
                    && dt.hw.as_ref().map(|a| a.shape()) == gru.then_some(&[t * b, gh][..])
                    && dt.c.as_ref().map(|a| a.shape()) == lstm.then_some(&[t * b, hs][..]);
                if !ok {
                    return mismatch(
                        format!("layer {l} direction {k} buffers"),
                        format!("those of a {} with hidden size {hs} over {t} steps of batch {b}", cfg.cell),
                        format!("gates {:?}, states {:?}", dt.gates.shape(), dt.h.shape()),
                    );
                }
            }
        }
        Ok(())
    }


    /// Backpropagation through time for the forward pass that produced `tape`.
    ///
    /// `dy` is `(T, B, D·H)`; `dh_n`/`dc_n` are `(L·D, B, H)` or `None` (zero). With a padded batch
    /// (the tape of [`Recurrent::forward_train_lengths`]), `dy` at padded steps is ignored, `dx` there
    /// is zero, and `dh_n`/`dc_n` enter at each sequence's true last step. Parameter gradients
    /// are **added** to the stored gradients (see [`Module::zero_grad`]); the gradients w.r.t. `x`,
    /// `h0` and `c0` are returned.
    pub fn backward(
        &mut self,
        tape: &Tape<F>,
        dy: ArrayView3<'_, F>,
        dh_n: Option<ArrayView3<'_, F>>,
        dc_n: Option<ArrayView3<'_, F>>,
    ) -> Result<RecurrentInputGrads<F>> {
        Ok(self.backward_table(tape, dy, dh_n, dc_n)?.0)
    }

    /// [`Recurrent::backward`], and for the tape of [`Recurrent::forward_train_embedded`] the
    /// gradient of the embedding table `(V, I)` (the input gradient is then `None`).
    pub(crate) fn backward_table(
        &mut self,
        tape: &Tape<F>,
        dy: ArrayView3<'_, F>,
        dh_n: Option<ArrayView3<'_, F>>,
        dc_n: Option<ArrayView3<'_, F>>,
    ) -> Result<(RecurrentInputGrads<F>, Option<Array2<F>>)> {
        let cfg = self.config.clone();
        let (t, b) = (tape.steps, tape.batch);
        let (d, hs) = (cfg.directions(), cfg.hidden_size);
        let lstm = cfg.cell.has_cell_state();
        self.check_tape(tape)?;
        check_shape("dy", &[t, b, d * hs], dy.shape())?;
        check_finite("dy", dy.view().into_dyn())?;
        let st = cfg.state_shape(b);
        if let Some(g) = &dh_n {
            check_shape("dh_n", &st, g.shape())?;
            check_finite("dh_n", g.view().into_dyn())?;
        }
        match (lstm, &dc_n) {
            (true, Some(g)) => {
                check_shape("dc_n", &st, g.shape())?;
                check_finite("dc_n", g.view().into_dyn())?;
            }
            (false, Some(_)) => return Err(Error::State(format!("dc_n given, but a {} layer has no cell state", cfg.cell))),
            _ => {}
        }
        let zero_state = Array3::<F>::zeros(st);
        let dh_n = dh_n.unwrap_or(zero_state.view());
        let dc_n = dc_n.unwrap_or(zero_state.view());
        let mut dh0 = Array3::zeros(st);
        let mut dc0 = if lstm { Some(Array3::zeros(st)) } else { None };
        let mut dy_l: Array2<F> =
            dy.as_standard_layout().into_owned().into_shape_with_order((t * b, d * hs)).expect("contiguous");
        for l in (0..cfg.num_layers).rev() {
            let lt = &tape.layers[l];
            let (params, grads) = (&self.params[l * d..(l + 1) * d], &mut self.grads[l * d..(l + 1) * d]);
            let (g_fwd, g_rev) = grads.split_at_mut(1);
            let run_dir = |dir: usize, g: &mut DirParams<F>| {
                let idx = l * d + dir;
                let dh_seq = dy_l.slice(s![.., dir * hs..(dir + 1) * hs]).to_owned();
                dir_backward(
                    cfg.cell,
                    &params[dir],
                    g,
                    &lt.input,
                    &lt.dirs[dir],
                    t,
                    b,
                    tape.h0.index_axis(Axis(0), idx),
                    tape.c0.as_ref().map(|c| c.index_axis(Axis(0), idx)),
                    dh_seq,
                    dh_n.index_axis(Axis(0), idx),
                    dc_n.index_axis(Axis(0), idx),
                    tape.lengths.as_deref(),
                    dir == 1,
                    (rayon::current_num_threads() / d).max(1),
                )
            };
            let results = if d == 2 {
                let (f, r) = rayon::join(|| run_dir(0, &mut g_fwd[0]), || run_dir(1, &mut g_rev[0]));
                vec![f, r]
            } else {
                vec![run_dir(0, &mut g_fwd[0])]
            };
            let mut dx: Option<Option<Array2<F>>> = None;
            for (dir, (dxd, dhd, dcd)) in results.into_iter().enumerate() {
                let idx = l * d + dir;
                dh0.index_axis_mut(Axis(0), idx).assign(&dhd);
                if let (Some(dc0), Some(dcd)) = (dc0.as_mut(), dcd) {
                    dc0.index_axis_mut(Axis(0), idx).assign(&dcd);
                }
                dx = Some(match (dx, dxd) {
                    (None, g) => g,
                    (Some(Some(acc)), Some(g)) => Some(acc + &g),
                    (Some(_), _) => None,
                });
            }
            if matches!(lt.input, LayerInput::Embedded { .. }) {
                return Ok((RecurrentInputGrads { dx: None, dh0, dc0 }, dx.flatten()));
            }
            match dx.flatten() {
                Some(mut dx) => {
                    if let Some(m) = &lt.mask {
                        dx *= m;
                    }
                    dy_l = dx;
                }
                None => {
                    // One-hot input: no input gradient.
                    return Ok((RecurrentInputGrads { dx: None, dh0, dc0 }, None));
                }
            }
        }
        let dx = dy_l.into_shape_with_order((t, b, cfg.input_size)).expect("(T, B, I)");
        let dx = Some(dx);
        Ok((RecurrentInputGrads { dx, dh0, dc0 }, None))
    }
}

impl<F: Element> Module<F> for Recurrent<F> {
    fn visit(&self, f: &mut Visitor<'_, F>) {
        let d = self.config.directions();
        for (i, (p, g)) in self.params.iter().zip(&self.grads).enumerate() {
            let sfx = format!("_l{}{}", i / d, RecurrentConfig::dir_suffix(i % d));
            f(&format!("weight_ih{sfx}"), p.weight_ih.view().into_dyn(), g.weight_ih.view().into_dyn());
            f(&format!("weight_hh{sfx}"), p.weight_hh.view().into_dyn(), g.weight_hh.view().into_dyn());
            f(&format!("bias_ih{sfx}"), p.bias_ih.view().into_dyn(), g.bias_ih.view().into_dyn());
            f(&format!("bias_hh{sfx}"), p.bias_hh.view().into_dyn(), g.bias_hh.view().into_dyn());
        }
    }
    fn visit_mut(&mut self, f: &mut VisitorMut<'_, F>) {
        // Every change of the parameters passes here (initialisation, loading, optimizer steps).
        self.packs.clear();
        let d = self.config.directions();
        for (i, (p, g)) in self.params.iter_mut().zip(self.grads.iter_mut()).enumerate() {
            let sfx = format!("_l{}{}", i / d, RecurrentConfig::dir_suffix(i % d));
            f(&format!("weight_ih{sfx}"), p.weight_ih.view_mut().into_dyn(), g.weight_ih.view_mut().into_dyn());
            f(&format!("weight_hh{sfx}"), p.weight_hh.view_mut().into_dyn(), g.weight_hh.view_mut().into_dyn());
            f(&format!("bias_ih{sfx}"), p.bias_ih.view_mut().into_dyn(), g.bias_ih.view_mut().into_dyn());
            f(&format!("bias_hh{sfx}"), p.bias_hh.view_mut().into_dyn(), g.bias_hh.view_mut().into_dyn());
        }
    }
}

/// Validate per-sequence lengths: `B` of them, each in `[0, T]`. All equal to `T` is the same as none.
fn check_lengths(lengths: Option<&[usize]>, t: usize, b: usize) -> Result<Option<Vec<usize>>> {
    let Some(l) = lengths else { return Ok(None) };
    check_shape("lengths", &[b], &[l.len()])?;
    if let Some(&bad) = l.iter().find(|&&v| v > t) {
        return Err(crate::error::invalid("lengths", format!("every length in [0, {t}] (seq_len)"), bad));
    }
    Ok(if l.iter().all(|&v| v == t) { None } else { Some(l.to_vec()) })
}

/// Whether sequence `row` is past its end at time `ti`.
#[inline]
fn padded(lengths: Option<&[usize]>, row: usize, ti: usize) -> bool {
    lengths.is_some_and(|l| ti >= l[row])
}

/// `Err(NonFinite)` naming the first NaN/infinite entry of `a`.
pub(crate) fn check_finite<F: Element>(what: &str, a: ArrayViewD<'_, F>) -> Result<()> {
    // Fast path: a sum is NaN/Inf iff some element is (or it overflows, re-checked exactly below).
    let fast = match a.as_slice_memory_order() {
        Some(s) => all_finite(s),
        None => a.iter().all(|v| v.is_finite()),
    };
    if fast {
        return Ok(());
    }
    match a.indexed_iter().find(|(_, v)| !v.is_finite()) {
        None => Ok(()),
        Some((idx, v)) => Err(Error::NonFinite(format!("{what}: expected finite values, got {v} at index {:?}", ndarray::Dimension::slice(&idx)))),
    }
}

/// Whether every value is finite: `v · 0` is NaN exactly for NaN/Inf `v`; eight independent
/// accumulators let the loop vectorise.
fn all_finite<F: Element>(s: &[F]) -> bool {
    let mut acc = [F::zero(); 8];
    let chunks = s.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k] * F::zero();
        }
    }
    acc.iter().all(|a| a.is_finite()) && rest.iter().all(|v| v.is_finite())
}

/// Inverted-dropout scale mask: each entry `0` with probability `p`, else `1/(1-p)`.
fn dropout_mask<F: Element>(dim: (usize, usize), p: f64, stream: &[u64]) -> Array2<F> {
    let mut r = rng::stream(stream);
    let keep = F::from_f64(1.0 / (1.0 - p));
    Array2::from_shape_simple_fn(dim, || if rng::uniform(&mut r) < p { F::zero() } else { keep })
}

/// Sequences per block of the time loops. The batch is cut into blocks of rows (the last may be
/// shorter) that step through time independently and in parallel: rows of a recurrence never
/// interact. The cut depends only on the batch size and the weights, never on the thread count, so
/// results are bit-identical for any number of threads.
///
/// Each block streams the packed recurrent weights once per step. 16 rows keep the per-step
/// product near the kernel's peak while the weights stay in L2; when they are larger than half of
/// it (L: `W_hh` 4 MiB), 32-row blocks halve the traffic from L3 (Xeon, 2 MiB L2, L forward on 2
/// threads: 257 → 239 ms).
fn block_rows(weight_bytes: usize) -> usize {
    if fits_half_l2(weight_bytes) {
        16
    } else {
        32
    }
}

/// The blocks of rows `[start, end)` of a batch of `b` sequences, `rows` each.
fn batch_blocks(b: usize, rows: usize) -> Vec<std::ops::Range<usize>> {
    (0..b).step_by(rows).map(|s| s..(s + rows).min(b)).collect()
}

/// Row-block access to a row-major matrix shared by the blocks of the time loop, each of which
/// touches only the rows of its own sequences (`time · B + row` for its rows).
struct SharedRows<F> {
    ptr: *mut F,
    rows: usize,
    width: usize,
}

// SAFETY: a `SharedRows` is only used while the matrix it points to is mutably borrowed by the
// function that made it, and its users write disjoint rows (see `SharedRows::rows`).
unsafe impl<F: Send> Send for SharedRows<F> {}
unsafe impl<F: Send> Sync for SharedRows<F> {}

impl<F> SharedRows<F> {
    fn new(a: &mut Array2<F>) -> Self {
        let (rows, width) = a.dim();
        let ptr = a.as_slice_mut().expect("contiguous").as_mut_ptr();
        SharedRows { ptr, rows, width }
    }
    /// Rows `start .. start + n` as a slice.
    ///
    /// # Safety
    /// No other live slice from this `SharedRows` may overlap these rows.
    #[allow(clippy::mut_from_ref)]
    unsafe fn rows(&self, start: usize, n: usize) -> &mut [F] {
        assert!(start + n <= self.rows, "rows {start}..{} of {}", start + n, self.rows);
        // SAFETY: in bounds (checked above); exclusivity is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start * self.width), n * self.width) }
    }
}

/// Rows `start .. start + n` of a `(·, W)` contiguous matrix as a slice.
#[inline]
fn block<F>(a: &[F], start: usize, n: usize, w: usize) -> &[F] {
    &a[start * w..(start + n) * w]
}

/// Rows `b0 .. b0 + n` of a `(B, H)` view as an owned, contiguous `(n, H)` matrix.
fn owned_rows<F: Element>(a: ArrayView2<'_, F>, b0: usize, n: usize) -> Array2<F> {
    a.slice(s![b0..b0 + n, ..]).as_standard_layout().into_owned()
}

/// Stack the per-block `(n, H)` results into one flat `(B·H,)` vector.
fn stack_rows<F: Element>(parts: impl Iterator<Item = Array2<F>>, len: usize) -> Array1<F> {
    let mut out = Vec::with_capacity(len);
    for p in parts {
        out.extend_from_slice(p.as_slice().expect("contiguous"));
    }
    Array1::from_vec(out)
}

/// A dense `(T, B, I)` input as `(T·B, I)` rows.
fn dense_input<F: Element>(x: ArrayView3<'_, F>) -> LayerInput<F> {
    let (t, b, i) = x.dim();
    LayerInput::Dense(x.as_standard_layout().into_owned().into_shape_with_order((t * b, i)).expect("contiguous"))
}

#[allow(clippy::too_many_arguments)]
fn dir_forward<F: Element>(
    cell: CellKind,
    p: &DirParams<F>,
    input: &LayerInput<F>,
    t: usize,
    b: usize,
    h0: ArrayView2<'_, F>,
    c0: Option<ArrayView2<'_, F>>,
    lengths: Option<&[usize]>,
    reverse: bool,
    keep: bool,
    threads: usize,
    packs: (&PackCache<F>, usize),
) -> DirRun<F> {
    let gh = p.weight_hh.nrows();
    let hs = p.weight_hh.ncols();
    let lstm = cell.has_cell_state();
    let gru = cell == CellKind::Gru;
    // As in `dir_forward_columns`: inputs the column loops would project themselves.
    let project = (gru || !fits_half_l2(panel_bytes(p.weight_ih.ncols() + hs, gh))) && t * b <= PROJECT_MAX_ROWS;
    if hs >= colsplit::MIN_HIDDEN && (project || !row_blocks_suffice::<F>(b, hs, gh, threads)) {
        let lp = colsplit::Loop { cell, t, b, hs, lengths, reverse, threads };
        return dir_forward_columns(&lp, p, input, h0, c0, keep, packs);
    }
    // RNN and LSTM: `pre = x·W_ihᵀ` for all steps at once; each step adds `(b_ih + b_hh)` and
    // `h·W_hhᵀ` into its rows and the cell turns them into the gate activations in place, so `pre`
    // becomes the tape's gates. GRU needs `W_hn h + b_hn` apart (the reset gate scales it): it keeps
    // separate input (`+ b_ih`) and recurrent projections.
    //
    // With the packed kernel, RNN and LSTM on dense inputs can go one step further: each step
    // computes `(b_ih + b_hh) + x_t·W_ihᵀ + h·W_hhᵀ` as one product of its rows, so the input
    // projection never makes a separate pass over memory (inference keeps no `pre` at all). That
    // pays only while both weights stay in L2 (S); past it, streaming `W_ih` every step costs more
    // than the pass it saves (Xeon, 2 MiB L2, M forward on 2 threads: 47 → 36 ms unfused).
    let fused = !gru;
    // `W_hhᵀ` packed once per call for the per-step products (see `packed`).
    let whh_t = PackedRhs::new(p.weight_hh.t());
    let fuse_input = fits_half_l2(panel_bytes(p.weight_ih.ncols() + hs, gh));
    let step_x = match input {
        LayerInput::Dense(x) if fused && whh_t.is_packed() && fuse_input => {
            Some((x.as_slice().expect("contiguous"), x.ncols(), PackedRhs::new(p.weight_ih.t())))
        }
        _ => None,
    };
    let mut pre = match step_x {
        Some(_) => zeros(if keep { t * b } else { 0 }, gh),
        None => input.project(&p.weight_ih),
    };
    let pre_bias = if fused { &p.bias_ih + &p.bias_hh } else { p.bias_ih.clone() };
    let pre_bias = pre_bias.as_slice().expect("contiguous");
    let b_hh = p.bias_hh.as_slice().expect("contiguous");
    let kept = if keep { t } else { 1 };
    let mut gates = zeros::<F>(if fused { 0 } else { kept * b }, gh);
    let mut hw_all = zeros::<F>((if keep && gru { t } else { 0 }) * b, gh);
    let mut c_all = zeros::<F>((if lstm { kept } else { 0 }) * b, hs);
    let mut h_all = zeros::<F>(t * b, hs);
    let (pre_s, gates_s, hw_s, c_s, h_s) = (
        SharedRows::new(&mut pre),
        SharedRows::new(&mut gates),
        SharedRows::new(&mut hw_all),
        SharedRows::new(&mut c_all),
        SharedRows::new(&mut h_all),
    );
    let run_block = |r: &std::ops::Range<usize>| {
        let (b0, n) = (r.start, r.len());
        let mut h_cur = owned_rows(h0, b0, n);
        let mut c_cur = match c0 {
            Some(c) => owned_rows(c, b0, n),
            None => Array2::zeros((0, hs)),
        };
        // The recurrent product of one step (GRU: unless the tape keeps it).
        let mut hw = Array2::<F>::zeros((if step_x.is_some() || (!fused && keep) { 0 } else { n }, gh));
        // The gates of one step when inference keeps no `pre`.
        let mut scratch = Array2::<F>::zeros((if step_x.is_some() && !keep { n } else { 0 }, gh));
        for step in 0..t {
            let ti = if reverse { t - 1 - step } else { step };
            let k = if keep { ti } else { 0 };
            // SAFETY: this block alone owns rows `b0..b0+n` of every time step, and the slices of
            // one step are dropped before the next step asks for its own.
            let (h_out, c_out) = unsafe { (h_s.rows(ti * b + b0, n), if lstm { c_s.rows(k * b + b0, n) } else { &mut [] }) };
            let pre_rows: &mut [F] = match (&step_x, keep) {
                (Some(_), false) => scratch.as_slice_mut().expect("contiguous"),
                // SAFETY: as above.
                _ => unsafe { pre_s.rows(ti * b + b0, n) },
            };
            if let Some((x, width, wih_t)) = &step_x {
                let parts = [(block(x, ti * b + b0, n, *width), wih_t), (h_cur.as_slice().expect("contiguous"), &whh_t)];
                product(&parts, pre_rows, Start::Bias(pre_bias));
            }
            // The cell's input side, recurrent side, bias to add, and gates (see `cell::Fwd`).
            let (xw_in, hw_in, bias_in, g_out): (&[F], &[F], &[F], &mut [F]) = if step_x.is_some() {
                (&[], &[], &[], pre_rows)
            } else if fused {
                // `(pre + (b_ih + b_hh)) + h·W_hhᵀ`: the product into the block's own rows, and
                // the cell adds it to `pre` row by row. (Accumulating into `pre` inside the product
                // reads rows 4 KiB apart long out of cache at every tile's end, which slows the
                // product by a quarter while the weights stream from L3.)
                let hw_rows = hw.as_slice_mut().expect("contiguous");
                product(&[(h_cur.as_slice().expect("contiguous"), &whh_t)], hw_rows, Start::Zero);
                (&[], &*hw_rows, pre_bias, pre_rows)
            } else {
                // `b_hh + h·W_hhᵀ`, written straight into the tape when there is one.
                let hw_rows: &mut [F] = if keep {
                    // SAFETY: as above.
                    unsafe { hw_s.rows(ti * b + b0, n) }
                } else {
                    hw.as_slice_mut().expect("contiguous")
                };
                product(&[(h_cur.as_slice().expect("contiguous"), &whh_t)], hw_rows, Start::Bias(b_hh));
                // SAFETY: as above.
                (&*pre_rows, &*hw_rows, pre_bias, unsafe { gates_s.rows(k * b + b0, n) })
            };
            let s = cell::Fwd {
                xw: xw_in,
                hw: hw_in,
                bias: bias_in,
                h_prev: h_cur.as_slice().expect("contiguous"),
                c_prev: c_cur.as_slice().expect("contiguous"),
                gates: g_out,
                h: &mut *h_out,
                c: &mut *c_out,
            };
            cell::forward(cell, s, hs);
            // Padded rows carry their state through the step unchanged.
            for row in (0..n).filter(|&row| padded(lengths, b0 + row, ti)) {
                let rr = row * hs..(row + 1) * hs;
                h_out[rr.clone()].copy_from_slice(&h_cur.as_slice().expect("contiguous")[rr.clone()]);
                if lstm {
                    c_out[rr.clone()].copy_from_slice(&c_cur.as_slice().expect("contiguous")[rr]);
                }
            }
            h_cur.as_slice_mut().expect("contiguous").copy_from_slice(h_out);
            if lstm {
                c_cur.as_slice_mut().expect("contiguous").copy_from_slice(c_out);
            }
        }
        (h_cur, c_cur)
    };
    let finals: Vec<(Array2<F>, Array2<F>)> = batch_blocks(b, block_rows(panel_bytes(hs, gh))).par_iter().map(run_block).collect();
    let (hl, cl): (Vec<_>, Vec<_>) = finals.into_iter().unzip();
    let h_last = stack_rows(hl.into_iter(), b * hs);
    let c_last = lstm.then(|| stack_rows(cl.into_iter(), b * hs));
    let gates = if fused { pre } else { gates };
    finish_forward(cell, b, lengths, keep, h_all, h_last, c_last, gates, hw_all, c_all)
}

/// The output of a direction (the states, zero at padded steps; the tape keeps the states
/// themselves) and its tape.
#[allow(clippy::too_many_arguments)]
fn finish_forward<F: Element>(
    cell: CellKind,
    b: usize,
    lengths: Option<&[usize]>,
    keep: bool,
    h_all: Array2<F>,
    h_last: Array1<F>,
    c_last: Option<Array1<F>>,
    gates: Array2<F>,
    hw_all: Array2<F>,
    c_all: Array2<F>,
) -> DirRun<F> {
    let hs = h_all.ncols();
    let (lstm, gru) = (cell.has_cell_state(), cell == CellKind::Gru);
    let (mut y, h_all) = if keep { (h_all.clone(), h_all) } else { (h_all, Array2::zeros((0, hs))) };
    if let Some(l) = lengths {
        for (n, mut r) in y.rows_mut().into_iter().enumerate() {
            if n / b >= l[n % b] {
                r.fill(F::zero());
            }
        }
    }
    let tape = keep.then(|| DirTape { gates, hw: gru.then_some(hw_all), h: h_all, c: lstm.then_some(c_all) });
    DirRun { h: y, h_last, c_last, tape }
}

/// Whether the row-block loops keep every thread busy (at least as many blocks as threads), for
/// float32 on the packed kernel: there they are as fast as the column loops or faster (no
/// barrier per step; batch 64 at H=256), and both give the same bits — the same products
/// (each output summed in the same order whatever the rows or columns around it) and the same
/// elementwise cells — so the choice may depend on the thread count. Inputs the column loops
/// project themselves, and `f64` (whose column loops use their own product), always take the
/// column loops.
fn row_blocks_suffice<F: Element>(b: usize, hs: usize, gh: usize, threads: usize) -> bool {
    F::DTYPE == "float32"
        && crate::activation::has_avx512()
        && batch_blocks(b, block_rows(panel_bytes(hs, gh))).len() >= threads
}

/// Up to this many rows (`T·B`), the column loops project a dense input themselves.
const PROJECT_MAX_ROWS: usize = 1024;

/// [`dir_forward`] split by columns across the threads (see `colsplit`).
fn dir_forward_columns<F: Element>(
    lp: &colsplit::Loop<'_>,
    p: &DirParams<F>,
    input: &LayerInput<F>,
    h0: ArrayView2<'_, F>,
    c0: Option<ArrayView2<'_, F>>,
    keep: bool,
    (cache, idx): (&PackCache<F>, usize),
) -> DirRun<F> {
    let (t, b, hs, cell) = (lp.t, lp.b, lp.hs, lp.cell);
    let gh = p.weight_hh.nrows();
    let (lstm, gru) = (cell.has_cell_state(), cell == CellKind::Gru);
    // RNN and LSTM on dense inputs whose weights fit in half the L2 compute the input projection
    // inside each step (see `dir_forward`); otherwise it is one large product first. The choice
    // depends on the shapes only, never on the thread count.
    let in_steps = !gru && fits_half_l2(panel_bytes(p.weight_ih.ncols() + hs, gh));
    // Short dense inputs (inference at small batches) are projected by the members themselves,
    // each onto its own columns, with its cached packed `W_ihᵀ` (see `colsplit::FwdIn::project`).
    let project = !in_steps && t * b <= PROJECT_MAX_ROWS;
    let fused = match input {
        LayerInput::Dense(x) if in_steps || project => Some(x.as_slice().expect("contiguous")),
        _ => None,
    };
    let mut pre = match fused {
        Some(_) => zeros(if keep && !gru { t * b } else { 0 }, gh),
        None => input.project(&p.weight_ih),
    };
    let pre_bias = if gru { p.bias_ih.clone() } else { &p.bias_ih + &p.bias_hh };
    let mut gates = zeros::<F>(if gru && keep { t * b } else { 0 }, gh);
    let mut hw_all = zeros::<F>(if gru && keep { t * b } else { 0 }, gh);
    let mut c_all = zeros::<F>(if lstm && keep { t * b } else { 0 }, hs);
    let mut h_all = zeros::<F>(t * b, hs);
    let mut c_last = zeros::<F>(if lstm { b } else { 0 }, hs);
    let h0c = h0.as_standard_layout();
    let c0c = c0.map(|c| c.as_standard_layout().into_owned());
    let cached = cache.get(idx);
    let inp = colsplit::FwdIn {
        w_hh: p.weight_hh.view(),
        fused: fused.map(|x| (x, p.weight_ih.view())),
        project: project && fused.is_some(),
        pre_bias: pre_bias.as_slice().expect("contiguous"),
        b_hh: p.bias_hh.as_slice().expect("contiguous"),
        h0: h0c.as_slice().expect("contiguous"),
        c0: c0c.as_ref().map_or(&[], |c| c.as_slice().expect("contiguous")),
        pack: cached.as_deref(),
    };
    let out = colsplit::FwdOut {
        pre: pre.as_slice_mut().expect("contiguous"),
        gates: gates.as_slice_mut().expect("contiguous"),
        hw: hw_all.as_slice_mut().expect("contiguous"),
        c_all: c_all.as_slice_mut().expect("contiguous"),
        h_all: h_all.as_slice_mut().expect("contiguous"),
        c_last: c_last.as_slice_mut().expect("contiguous"),
    };
    let pack = colsplit::forward(lp, inp, out, keep);
    if cached.is_none_or(|c| c.members != pack.members || c.fused != pack.fused) {
        cache.put(idx, pack);
    }
    let last = lp_last(lp);
    let h_last = Array1::from_vec(block(h_all.as_slice().expect("contiguous"), last * b, b, hs).to_vec());
    let c_last = lstm.then(|| c_last.into_shape_with_order(b * hs).expect("(B·H)"));
    let gates = if gru { gates } else { pre };
    finish_forward(cell, b, lp.lengths, keep, h_all, h_last, c_last, gates, hw_all, c_all)
}

/// The time index of a loop's last step.
fn lp_last(lp: &colsplit::Loop<'_>) -> usize {
    if lp.reverse {
        0
    } else {
        lp.t - 1
    }
}

/// One direction's BPTT. Adds parameter gradients into `g`; returns `(dx (T·B, I), dh0 (B, H), dc0)`.
#[allow(clippy::too_many_arguments)]
fn dir_backward<F: Element>(
    cell: CellKind,
    p: &DirParams<F>,
    g: &mut DirParams<F>,
    input: &LayerInput<F>,
    tp: &DirTape<F>,
    t: usize,
    b: usize,
    h0: ArrayView2<'_, F>,
    c0: Option<ArrayView2<'_, F>>,
    dh_seq: Array2<F>,
    dh_n: ArrayView2<'_, F>,
    dc_n: ArrayView2<'_, F>,
    lengths: Option<&[usize]>,
    reverse: bool,
    threads: usize,
) -> (Option<Array2<F>>, Array2<F>, Option<Array2<F>>) {
    let gh = p.weight_hh.nrows();
    let hs = p.weight_hh.ncols();
    let lstm = cell.has_cell_state();
    let gru = cell == CellKind::Gru;
    if hs >= colsplit::MIN_HIDDEN && !row_blocks_suffice::<F>(b, hs, gh, threads) {
        let lp = colsplit::Loop { cell, t, b, hs, lengths, reverse, threads };
        return dir_backward_columns(&lp, p, g, input, tp, h0, c0, dh_seq, dh_n, dc_n);
    }
    let mut dg_ih = zeros::<F>(t * b, gh);
    let mut dg_hh = zeros::<F>(if gru { t * b } else { 0 }, gh);
    // h_prev of every step, in time order: the input of the W_hh product.
    let mut h_prev_all = zeros::<F>(t * b, hs);
    let h_all = tp.h.as_slice().expect("contiguous");
    let gates_all = tp.gates.as_slice().expect("contiguous");
    let hw_all: &[F] = tp.hw.as_ref().map_or(&[], |hw| hw.as_slice().expect("contiguous"));
    let c_all: &[F] = tp.c.as_ref().map_or(&[], |c| c.as_slice().expect("contiguous"));
    let dh_seq = dh_seq.as_slice().expect("contiguous");
    let whh = PackedRhs::new(p.weight_hh.view());
    let (dg_ih_s, dg_hh_s, hp_s) = (SharedRows::new(&mut dg_ih), SharedRows::new(&mut dg_hh), SharedRows::new(&mut h_prev_all));
    let run_block = |r: &std::ops::Range<usize>| {
        let (b0, n) = (r.start, r.len());
        let h0c = owned_rows(h0, b0, n);
        let c0c = c0.map(|c| owned_rows(c, b0, n));
        let mut dh = owned_rows(dh_n, b0, n);
        let mut dc = if lstm { owned_rows(dc_n, b0, n) } else { Array2::zeros((0, hs)) };
        let mut dh_total = Array2::<F>::zeros((n, hs));
        let mut dh_direct = Array2::<F>::zeros((n, hs));
        // Gradients carried unchanged through padded steps.
        let mut dh_keep = Array2::<F>::zeros((if lengths.is_some() { n } else { 0 }, hs));
        let mut dc_keep = Array2::<F>::zeros((if lengths.is_some() && lstm { n } else { 0 }, hs));
        for step in (0..t).rev() {
            let ti = if reverse { t - 1 - step } else { step };
            let row0 = ti * b + b0;
            let any_padded = (0..n).any(|row| padded(lengths, b0 + row, ti));
            if any_padded {
                dh_keep.assign(&dh);
                if lstm {
                    dc_keep.assign(&dc);
                }
            }
            let prev = (step > 0).then(|| if reverse { ti + 1 } else { ti - 1 });
            let h_prev: &[F] = match prev {
                Some(tp_) => block(h_all, tp_ * b + b0, n, hs),
                None => h0c.as_slice().expect("contiguous"),
            };
            // SAFETY: this block alone owns rows `b0..b0+n` of every time step, and the slices of
            // one step are dropped before the next step asks for its own.
            let (hp_out, dgi, dgh) =
                unsafe { (hp_s.rows(row0, n), dg_ih_s.rows(row0, n), if gru { dg_hh_s.rows(row0, n) } else { &mut [] }) };
            hp_out.copy_from_slice(h_prev);
            let (c_cur, c_prev): (&[F], &[F]) = match (lstm, prev) {
                (true, Some(tp_)) => (block(c_all, row0, n, hs), block(c_all, tp_ * b + b0, n, hs)),
                (true, None) => (block(c_all, row0, n, hs), c0c.as_ref().expect("c0").as_slice().expect("c0")),
                _ => (&[], &[]),
            };
            for ((o, &a), &s) in dh_total.iter_mut().zip(dh.iter()).zip(block(dh_seq, row0, n, hs)) {
                *o = a + s;
            }
            let s = cell::Bwd {
                gates: block(gates_all, row0, n, gh),
                hw: if gru { block(hw_all, row0, n, gh) } else { &[] },
                h: block(h_all, row0, n, hs),
                h_prev,
                c: c_cur,
                c_prev,
                dh: dh_total.as_slice().expect("contiguous"),
                dc: dc.as_slice_mut().expect("contiguous"),
                dg_ih: &mut *dgi,
                dg_hh: &mut *dgh,
                dh_direct: dh_direct.as_slice_mut().expect("contiguous"),
            };
            cell::backward(cell, s, hs);
            if any_padded {
                for row in (0..n).filter(|&row| padded(lengths, b0 + row, ti)) {
                    dgi[row * gh..(row + 1) * gh].fill(F::zero());
                    if gru {
                        dgh[row * gh..(row + 1) * gh].fill(F::zero());
                    }
                }
            }
            // dh_prev = dG_hh[t] · W_hh (+ the direct path for GRU).
            if gru {
                dh.assign(&dh_direct);
            }
            whh.mul(if gru { &*dgh } else { &*dgi }, dh.as_slice_mut().expect("contiguous"), gru);
            if any_padded {
                for row in (0..n).filter(|&row| padded(lengths, b0 + row, ti)) {
                    dh.row_mut(row).assign(&dh_keep.row(row));
                    if lstm {
                        dc.row_mut(row).assign(&dc_keep.row(row));
                    }
                }
            }
        }
        (dh, dc)
    };
    let finals: Vec<(Array2<F>, Array2<F>)> = batch_blocks(b, block_rows(panel_bytes(hs, gh))).par_iter().map(run_block).collect();
    let (dhs, dcs): (Vec<_>, Vec<_>) = finals.into_iter().unzip();
    let dh = stack_rows(dhs.into_iter(), b * hs).into_shape_with_order((b, hs)).expect("(B, H)");
    let dc = lstm.then(|| stack_rows(dcs.into_iter(), b * hs).into_shape_with_order((b, hs)).expect("(B, H)"));
    let dx = weight_grads(cell, p, g, input, &dg_ih, &dg_hh, &h_prev_all);
    (dx, dh, dc)
}

/// [`dir_backward`] split by columns across the threads (see `colsplit`).
#[allow(clippy::too_many_arguments)]
fn dir_backward_columns<F: Element>(
    lp: &colsplit::Loop<'_>,
    p: &DirParams<F>,
    g: &mut DirParams<F>,
    input: &LayerInput<F>,
    tp: &DirTape<F>,
    h0: ArrayView2<'_, F>,
    c0: Option<ArrayView2<'_, F>>,
    dh_seq: Array2<F>,
    dh_n: ArrayView2<'_, F>,
    dc_n: ArrayView2<'_, F>,
) -> (Option<Array2<F>>, Array2<F>, Option<Array2<F>>) {
    let (t, b, hs, cell) = (lp.t, lp.b, lp.hs, lp.cell);
    let gh = p.weight_hh.nrows();
    let (lstm, gru) = (cell.has_cell_state(), cell == CellKind::Gru);
    let mut dg_ih = zeros::<F>(t * b, gh);
    let mut dg_hh = zeros::<F>(if gru { t * b } else { 0 }, gh);
    let mut dh0 = zeros::<F>(b, hs);
    let mut dc0 = zeros::<F>(if lstm { b } else { 0 }, hs);
    let h0c = h0.as_standard_layout();
    let c0c = c0.map(|c| c.as_standard_layout().into_owned());
    let (dh_nc, dc_nc) = (dh_n.as_standard_layout(), dc_n.as_standard_layout());
    let h_all = tp.h.as_slice().expect("contiguous");
    // h_prev of every step, in time order: the input of the W_hh gradient.
    let mut h_prev_all = zeros::<F>(t * b, hs);
    for (ti, dst) in h_prev_all.as_slice_mut().expect("contiguous").chunks_exact_mut(b * hs).enumerate() {
        let prev = if lp.reverse { (ti + 1 < t).then_some(ti + 1) } else { ti.checked_sub(1) };
        dst.copy_from_slice(match prev {
            Some(tp_) => block(h_all, tp_ * b, b, hs),
            None => h0c.as_slice().expect("contiguous"),
        });
    }
    let inp = colsplit::BwdIn {
        w_hh: p.weight_hh.view(),
        gates: tp.gates.as_slice().expect("contiguous"),
        hw: tp.hw.as_ref().map_or(&[], |hw| hw.as_slice().expect("contiguous")),
        h_all,
        c_all: tp.c.as_ref().map_or(&[], |c| c.as_slice().expect("contiguous")),
        h0: h0c.as_slice().expect("contiguous"),
        c0: c0c.as_ref().map_or(&[], |c| c.as_slice().expect("contiguous")),
        dh_seq: dh_seq.as_slice().expect("contiguous"),
        dh_n: dh_nc.as_slice().expect("contiguous"),
        dc_n: if lstm { dc_nc.as_slice().expect("contiguous") } else { &[] },
    };
    let out = colsplit::BwdOut {
        dg_ih: dg_ih.as_slice_mut().expect("contiguous"),
        dg_hh: dg_hh.as_slice_mut().expect("contiguous"),
        dh0: dh0.as_slice_mut().expect("contiguous"),
        dc0: dc0.as_slice_mut().expect("contiguous"),
    };
    colsplit::backward(lp, inp, out);
    let dx = weight_grads(cell, p, g, input, &dg_ih, &dg_hh, &h_prev_all);
    (dx, dh0, lstm.then_some(dc0))
}

/// The weight and bias gradients of a direction from its pre-activation gradients (added into
/// `g`), and the input gradient `dG_ih · W_ih` (`None` for one-hot inputs).
fn weight_grads<F: Element>(
    cell: CellKind,
    p: &DirParams<F>,
    g: &mut DirParams<F>,
    input: &LayerInput<F>,
    dg_ih: &Array2<F>,
    dg_hh: &Array2<F>,
    h_prev_all: &Array2<F>,
) -> Option<Array2<F>> {
    let gru = cell == CellKind::Gru;
    let (rows, gh) = dg_ih.dim();
    let dgh = if gru { dg_hh } else { dg_ih };
    let (db_ih, per_token) = input.add_weight_grad(dg_ih, &mut g.weight_ih);
    g.bias_ih += &db_ih;
    // Both biases get the same gradient, except for GRU (whose `b_hn` sits inside the reset gate).
    let mut db_hh = if gru { Array1::zeros(gh) } else { db_ih };
    add_transposed_product(dgh.view(), h_prev_all.view(), &mut g.weight_hh.view_mut(), gru.then(|| db_hh.as_slice_mut().expect("contiguous")));
    g.bias_hh += &db_hh;
    if let Some(per_token) = per_token {
        // The embedding table's gradient, `(V, I)`.
        return Some(crate::linalg::product(&per_token.view(), &p.weight_ih.view()));
    }
    matches!(input, LayerInput::Dense(_)).then(|| {
        let mut dx = zeros::<F>(rows, p.weight_ih.ncols());
        gemm(F::one(), &dg_ih.view(), &p.weight_ih.view(), F::zero(), &mut dx.view_mut());
        dx
    })
}

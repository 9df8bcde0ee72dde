//! One time step of an RNN, GRU or LSTM, with backpropagation through time across calls:
//! [`RecurrentCell`], the `torch.nn.LSTMCell`/`GRUCell`/`RNNCell` of rnnrs.
//!
//! A decoder loop, attention or any custom recurrence calls [`RecurrentCell::step_train`] once per
//! time step and then [`RecurrentCell::backward`] once per step in reverse order, feeding each
//! call the state gradient the previous one returned. The cell is a one-layer [`Recurrent`] run
//! over one time step: every training step keeps its own [`Tape`] on a stack, and `backward` pops
//! the most recent one, so the gradients are exactly those of the layer run over the same steps.

use crate::cell::CellKind;
use crate::config::RecurrentConfig;
use crate::element::Element;
use crate::error::{check_shape, Error, Result};
use crate::layer::{Recurrent, Tape};
use crate::module::{Module, Visitor, VisitorMut};
use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis};

/// A cell's state after a step: `h` `(B, H)`, and `c` `(B, H)` for LSTM.
#[derive(Clone, Debug, PartialEq)]
pub struct CellState<F> {
    /// Hidden state `(B, H)`.
    pub h: Array2<F>,
    /// Cell state `(B, H)` (LSTM only).
    pub c: Option<Array2<F>>,
}

/// Gradients of one step's inputs, returned by [`RecurrentCell::backward`].
#[derive(Clone, Debug, PartialEq)]
pub struct CellGrads<F> {
    /// `(B, I)`: gradient w.r.t. the step's input `x`.
    pub dx: Array2<F>,
    /// `(B, H)`: gradient w.r.t. the state `h` the step started from.
    pub dh: Array2<F>,
    /// `(B, H)`: gradient w.r.t. the cell state `c` the step started from (LSTM only).
    pub dc: Option<Array2<F>>,
}

/// One time step of an RNN/GRU/LSTM with PyTorch's parameters (`weight_ih`, `weight_hh`,
/// `bias_ih`, `bias_hh`; gates `i, f, g, o` and `r, z, n`) and initialisation.
#[derive(Clone, Debug)]
pub struct RecurrentCell<F> {
    net: Recurrent<F>,
    tapes: Vec<Tape<F>>,
}

fn state_view<'a, F>(s: Option<ArrayView2<'a, F>>) -> Option<ArrayView3<'a, F>> {
    s.map(|a| a.insert_axis(Axis(0)))
}

fn first<F: Clone>(a: Array3<F>) -> Array2<F> {
    a.index_axis_move(Axis(0), 0)
}

impl<F: Element> RecurrentCell<F> {
    /// A cell of `cell` kind mapping `input_size` features to `hidden_size`, initialised
    /// `U(-1/√H, 1/√H)` from `seed` (the same weights as a one-layer [`Recurrent`] with that seed).
    pub fn new(cell: CellKind, input_size: usize, hidden_size: usize, seed: u64) -> Result<Self> {
        let config = RecurrentConfig::new(cell, input_size, hidden_size);
        config.validate()?;
        crate::model::check_recurrent_size(&config, std::mem::size_of::<F>())?;
        Ok(RecurrentCell { net: Recurrent::new(config, seed)?, tapes: Vec::new() })
    }

    /// The cell kind and sizes (always one layer, one direction, no dropout).
    pub fn config(&self) -> &RecurrentConfig {
        self.net.config()
    }

    /// The one-layer stack this cell steps (PyTorch's `_l0` parameter names).
    pub fn as_recurrent(&self) -> &Recurrent<F> {
        &self.net
    }

    fn check_step(&self, x: &ArrayView2<'_, F>, h: &Option<ArrayView2<'_, F>>, c: &Option<ArrayView2<'_, F>>) -> Result<()> {
        let cfg = self.net.config();
        let b = x.nrows();
        check_shape("x", &[b, cfg.input_size], x.shape())?;
        if let Some(h) = h {
            check_shape("h", &[b, cfg.hidden_size], h.shape())?;
        }
        match (cfg.cell.has_cell_state(), c) {
            (true, Some(c)) => check_shape("c", &[b, cfg.hidden_size], c.shape()),
            (false, Some(_)) => Err(Error::State(format!(
                "c: expected no cell state for a {} cell (only LSTM has one), got an array",
                cfg.cell.name()
            ))),
            _ => Ok(()),
        }
    }

    /// Inference step: the state after `x` `(B, I)` from `h` (and `c`), each `(B, H)` or `None`
    /// (zeros). Nothing is kept for `backward`.
    pub fn step(&self, x: ArrayView2<'_, F>, h: Option<ArrayView2<'_, F>>, c: Option<ArrayView2<'_, F>>) -> Result<CellState<F>> {
        self.check_step(&x, &h, &c)?;
        let out = self.net.forward(x.insert_axis(Axis(0)), state_view(h), state_view(c))?;
        Ok(CellState { h: first(out.h_n), c: out.c_n.map(first) })
    }

    /// Training step: as [`RecurrentCell::step`], and the step is pushed onto the tape stack for
    /// [`RecurrentCell::backward`].
    pub fn step_train(
        &mut self,
        x: ArrayView2<'_, F>,
        h: Option<ArrayView2<'_, F>>,
        c: Option<ArrayView2<'_, F>>,
    ) -> Result<CellState<F>> {
        self.check_step(&x, &h, &c)?;
        let (out, tape) = self.net.forward_train(x.insert_axis(Axis(0)), state_view(h), state_view(c))?;
        self.tapes.push(tape);
        Ok(CellState { h: first(out.h_n), c: out.c_n.map(first) })
    }

    /// Backward of the most recent training step not yet differentiated (steps are popped in
    /// reverse order of [`RecurrentCell::step_train`]). `dh` is the gradient of the loss w.r.t. that
    /// step's output `h` from outside the recurrence (`None`: zero); `dh_next`/`dc_next` are the
    /// gradients w.r.t. its state that the later step's `backward` returned (`None`: zero, as for
    /// the last step). The parameter gradients are **added** to the stored ones; the gradients
    /// w.r.t. the step's `x`, `h` and `c` are returned.
    pub fn backward(
        &mut self,
        dh: Option<ArrayView2<'_, F>>,
        dh_next: Option<ArrayView2<'_, F>>,
        dc_next: Option<ArrayView2<'_, F>>,
    ) -> Result<CellGrads<F>> {
        let Some(tape) = self.tapes.last() else {
            return Err(Error::State(
                "backward: expected a training step to differentiate, got none (every step_train has had its backward)"
                    .into(),
            ));
        };
        let cfg = self.net.config().clone();
        let b = tape.dims().1;
        let shape = [b, cfg.hidden_size];
        for (what, g) in [("dh", &dh), ("dh_next", &dh_next)] {
            if let Some(g) = g {
                check_shape(what, &shape, g.shape())?;
            }
        }
        match (cfg.cell.has_cell_state(), &dc_next) {
            (true, Some(g)) => check_shape("dc_next", &shape, g.shape())?,
            (false, Some(_)) => {
                return Err(Error::State(format!(
                    "dc_next: expected no cell-state gradient for a {} cell (only LSTM has one), got an array",
                    cfg.cell.name()
                )))
            }
            _ => {}
        }
        let dy = match dh {
            Some(g) => g.insert_axis(Axis(0)).to_owned(),
            None => Array3::zeros((1, b, cfg.hidden_size)),
        };
        let g = self.net.backward(tape, dy.view(), state_view(dh_next), state_view(dc_next))?;
        self.tapes.pop();
        Ok(CellGrads {
            dx: first(g.dx.expect("a dense input has an input gradient")),
            dh: first(g.dh0),
            dc: g.dc0.map(first),
        })
    }

    /// Training steps recorded and not yet differentiated.
    pub fn pending_steps(&self) -> usize {
        self.tapes.len()
    }

    /// Forget every recorded step (what `eval()` does).
    pub fn clear_tape(&mut self) {
        self.tapes.clear();
    }
}

/// `weight_ih_l0` -> `weight_ih`: a cell's parameters carry PyTorch's cell names.
fn cell_name(name: &str) -> &str {
    name.strip_suffix("_l0").unwrap_or(name)
}

impl<F: Element> Module<F> for RecurrentCell<F> {
    fn visit(&self, f: &mut Visitor<'_, F>) {
        self.net.visit(&mut |n, p, g| f(cell_name(n), p, g));
    }
    fn visit_mut(&mut self, f: &mut VisitorMut<'_, F>) {
        self.net.visit_mut(&mut |n, p, g| f(cell_name(n), p, g));
    }
}

//! Configuration of a recurrent stack, validated once; kernels then trust it.

use crate::cell::CellKind;
use crate::error::{invalid, Result};

/// Shape of a (multi-layer, optionally bidirectional) recurrent stack, as in `torch.nn.LSTM(...)`.
#[derive(Clone, Debug, PartialEq)]
pub struct RecurrentConfig {
    /// The cell of every layer.
    pub cell: CellKind,
    /// Features of the input `x` (last axis).
    pub input_size: usize,
    /// Features of the hidden state `h`.
    pub hidden_size: usize,
    /// Stacked layers, `>= 1`.
    pub num_layers: usize,
    /// Run a reverse direction too; outputs are concatenated `[forward, reverse]`.
    pub bidirectional: bool,
    /// Dropout probability on the outputs of every layer but the last, in training only; `[0, 1)`.
    pub dropout: f64,
}

impl RecurrentConfig {
    /// One layer, one direction, no dropout.
    pub fn new(cell: CellKind, input_size: usize, hidden_size: usize) -> Self {
        RecurrentConfig { cell, input_size, hidden_size, num_layers: 1, bidirectional: false, dropout: 0.0 }
    }
    /// Set the number of layers.
    pub fn num_layers(mut self, n: usize) -> Self {
        self.num_layers = n;
        self
    }
    /// Set bidirectional.
    pub fn bidirectional(mut self, yes: bool) -> Self {
        self.bidirectional = yes;
        self
    }
    /// Set the dropout probability between layers.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }
    /// Check every field; the error names the field, the allowed range and the value.
    pub fn validate(&self) -> Result<()> {
        if self.input_size == 0 {
            return Err(invalid("input_size", "an integer >= 1", self.input_size));
        }
        if self.hidden_size == 0 {
            return Err(invalid("hidden_size", "an integer >= 1", self.hidden_size));
        }
        if self.num_layers == 0 {
            return Err(invalid("num_layers", "an integer >= 1", self.num_layers));
        }
        if !(self.dropout >= 0.0 && self.dropout < 1.0) {
            return Err(invalid("dropout", "a probability in [0, 1)", self.dropout));
        }
        Ok(())
    }
    /// 2 when bidirectional, else 1.
    pub fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }
    /// Input features of layer `l`: `input_size` for layer 0, `directions · hidden_size` after.
    pub fn layer_input_size(&self, l: usize) -> usize {
        if l == 0 {
            self.input_size
        } else {
            self.directions() * self.hidden_size
        }
    }
    /// Rows of every weight matrix: `gates · hidden_size`.
    pub fn gate_size(&self) -> usize {
        self.cell.gates() * self.hidden_size
    }
    /// Shape of the state tensors `h0`, `h_n` (and `c0`, `c_n`): `(layers · directions, batch, hidden)`.
    pub fn state_shape(&self, batch: usize) -> [usize; 3] {
        [self.num_layers * self.directions(), batch, self.hidden_size]
    }
    /// Suffix of a parameter name for direction `d`: `""` or `"_reverse"`.
    pub fn dir_suffix(d: usize) -> &'static str {
        if d == 0 {
            ""
        } else {
            "_reverse"
        }
    }
    /// Number of trainable scalars; never panics: `usize::MAX` if the count overflows `usize`
    /// ([`RecurrentConfig::checked_num_params`] tells that case apart). No such stack can be built:
    /// [`crate::Recurrent::new`] rejects sizes whose arrays would not fit in memory.
    pub fn num_params(&self) -> usize {
        self.checked_num_params().unwrap_or(usize::MAX)
    }
    /// Number of trainable scalars, or `None` if the count overflows `usize`.
    pub fn checked_num_params(&self) -> Option<usize> {
        crate::model::recurrent_num_params(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CellKind;

    #[test]
    fn num_params_counts_and_saturates() {
        let c = RecurrentConfig::new(CellKind::Lstm, 3, 4).num_layers(2).bidirectional(true);
        // layer 0: 2 × 16 × (3 + 4 + 2); layer 1: 2 × 16 × (8 + 4 + 2)
        assert_eq!(c.num_params(), 2 * 16 * 9 + 2 * 16 * 14);
        assert_eq!(RecurrentConfig::new(CellKind::Lstm, 3, usize::MAX / 2).num_params(), usize::MAX);
        assert_eq!(RecurrentConfig::new(CellKind::Lstm, 3, usize::MAX / 2).checked_num_params(), None);
        assert_eq!(c.checked_num_params(), Some(c.num_params()));
    }
}

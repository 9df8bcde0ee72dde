//! Embedding lookup: `out[n] = weight[ids[n]]`; backward scatters `dout` rows into `dweight`.

use crate::element::Element;
use crate::error::{invalid, Result};
use crate::module::{Module, Visitor, VisitorMut};
use crate::rng;
use ndarray::{Array2, ArrayView2, Axis};

/// A table of `num_embeddings` vectors of size `dim`, initialised `N(0, 1)` like PyTorch.
#[derive(Clone, Debug)]
pub struct Embedding<F> {
    /// `(num_embeddings, dim)`.
    pub weight: Array2<F>,
    /// Gradient of `weight`.
    pub grad: Array2<F>,
}

impl<F: Element> Embedding<F> {
    /// A new table drawn from `N(0, 1)` with `seed`.
    pub fn new(num_embeddings: usize, dim: usize, seed: u64) -> Result<Self> {
        if num_embeddings == 0 || dim == 0 {
            return Err(invalid("embedding size", "num_embeddings >= 1 and dim >= 1", format!("({num_embeddings}, {dim})")));
        }
        // The table, its gradient and two optimizer slots.
        let n = num_embeddings.checked_mul(dim).and_then(|n| n.checked_mul(4));
        crate::error::check_alloc("embedding size", &format!("({num_embeddings}, {dim})"), n, std::mem::size_of::<F>())?;
        let mut r = rng::stream(&[seed, 11]);
        let weight = Array2::from_shape_simple_fn((num_embeddings, dim), || F::from_f64(rng::normal(&mut r)));
        Ok(Embedding { grad: Array2::zeros(weight.dim()), weight })
    }
    /// Number of rows (the vocabulary size).
    pub fn num_embeddings(&self) -> usize {
        self.weight.nrows()
    }
    /// Check that every id is a valid row.
    pub fn check_ids(&self, ids: &[usize]) -> Result<()> {
        match ids.iter().find(|&&i| i >= self.num_embeddings()) {
            Some(&i) => Err(invalid("token id", format!("an id in [0, {})", self.num_embeddings()), i)),
            None => Ok(()),
        }
    }
    /// `(N, dim)` rows for `ids` (checked).
    pub fn forward(&self, ids: &[usize]) -> Result<Array2<F>> {
        self.check_ids(ids)?;
        let mut out = Array2::zeros((ids.len(), self.weight.ncols()));
        for (mut row, &i) in out.rows_mut().into_iter().zip(ids) {
            row.assign(&self.weight.row(i));
        }
        Ok(out)
    }
    /// Add the gradient of `dout` `(N, dim)` into the rows of `grad` (ids checked by forward).
    pub fn backward(&mut self, ids: &[usize], dout: ArrayView2<'_, F>) {
        for (row, &i) in dout.axis_iter(Axis(0)).zip(ids) {
            let mut g = self.grad.row_mut(i);
            g += &row;
        }
    }
}

impl<F: Element> Module<F> for Embedding<F> {
    fn visit(&self, f: &mut Visitor<'_, F>) {
        f("weight", self.weight.view().into_dyn(), self.grad.view().into_dyn());
    }
    fn visit_mut(&mut self, f: &mut VisitorMut<'_, F>) {
        f("weight", self.weight.view_mut().into_dyn(), self.grad.view_mut().into_dyn());
    }
}

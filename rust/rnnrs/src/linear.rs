//! Fully connected layer `y = x · Wᵀ + b`, PyTorch's `nn.Linear`.

use crate::element::Element;
use crate::error::{check_shape, invalid, Result};
use crate::linalg::gemm;
use crate::module::{Module, Visitor, VisitorMut};
use crate::rng;
use ndarray::{Array1, Array2, ArrayView2, Axis};

/// `y = x · Wᵀ + b` with `W: (out, in)`, `b: (out,)`; init `U(-1/√in, 1/√in)` like PyTorch.
#[derive(Clone, Debug)]
pub struct Linear<F> {
    /// `(out_features, in_features)`.
    pub weight: Array2<F>,
    /// `(out_features,)`.
    pub bias: Array1<F>,
    /// Gradient of `weight`.
    pub grad_weight: Array2<F>,
    /// Gradient of `bias`.
    pub grad_bias: Array1<F>,
}

impl<F: Element> Linear<F> {
    /// A new layer drawn with `seed`.
    pub fn new(in_features: usize, out_features: usize, seed: u64) -> Result<Self> {
        if in_features == 0 || out_features == 0 {
            return Err(invalid("linear size", "in_features >= 1 and out_features >= 1", format!("({in_features}, {out_features})")));
        }
        // The weights, their gradients and two optimizer slots.
        let n = in_features.checked_add(1).and_then(|i| i.checked_mul(out_features)).and_then(|n| n.checked_mul(4));
        crate::error::check_alloc("linear size", &format!("({in_features}, {out_features})"), n, std::mem::size_of::<F>())?;
        let k = 1.0 / (in_features as f64).sqrt();
        let mut r = rng::stream(&[seed, 12]);
        let mut u = || F::from_f64((2.0 * rng::uniform(&mut r) - 1.0) * k);
        let weight = Array2::from_shape_simple_fn((out_features, in_features), &mut u);
        let bias = Array1::from_shape_simple_fn(out_features, &mut u);
        Ok(Linear { grad_weight: Array2::zeros(weight.dim()), grad_bias: Array1::zeros(out_features), weight, bias })
    }
    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.ncols()
    }
    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.nrows()
    }
    /// `(N, out)` from `x: (N, in)`.
    pub fn forward(&self, x: ArrayView2<'_, F>) -> Result<Array2<F>> {
        check_shape("linear input", &[x.nrows(), self.in_features()], x.shape())?;
        let mut y = Array2::zeros((x.nrows(), self.out_features()));
        y.rows_mut().into_iter().for_each(|mut r| r.assign(&self.bias));
        gemm(F::one(), &x, &self.weight.t(), F::one(), &mut y.view_mut());
        Ok(y)
    }
    /// Add parameter gradients for `dy: (N, out)` given the forward input `x`; return `dx: (N, in)`.
    pub fn backward(&mut self, x: ArrayView2<'_, F>, dy: ArrayView2<'_, F>) -> Array2<F> {
        gemm(F::one(), &dy.t(), &x, F::one(), &mut self.grad_weight.view_mut());
        self.grad_bias += &dy.sum_axis(Axis(0));
        let mut dx = Array2::zeros((x.nrows(), self.in_features()));
        gemm(F::one(), &dy, &self.weight.view(), F::zero(), &mut dx.view_mut());
        dx
    }
}

impl<F: Element> Module<F> for Linear<F> {
    fn visit(&self, f: &mut Visitor<'_, F>) {
        f("weight", self.weight.view().into_dyn(), self.grad_weight.view().into_dyn());
        f("bias", self.bias.view().into_dyn(), self.grad_bias.view().into_dyn());
    }
    fn visit_mut(&mut self, f: &mut VisitorMut<'_, F>) {
        f("weight", self.weight.view_mut().into_dyn(), self.grad_weight.view_mut().into_dyn());
        f("bias", self.bias.view_mut().into_dyn(), self.grad_bias.view_mut().into_dyn());
    }
}

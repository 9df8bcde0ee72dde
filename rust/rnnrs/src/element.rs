//! The floating-point element types the crate computes in: `f32` and `f64`.

use ndarray::{LinalgScalar, ScalarOperand};
use num_traits::Float;
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

/// A float type rnnrs computes in (`f32` or `f64`).
pub trait Element:
    Float
    + LinalgScalar
    + ScalarOperand
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + Sum
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + 'static
{
    /// NumPy-style dtype name: `"float32"` or `"float64"`.
    const DTYPE: &'static str;
    /// Convert from `f64` (rounding for `f32`).
    fn from_f64(x: f64) -> Self;
    /// Convert to `f64` (exact).
    fn to_f64(self) -> f64;
    /// Logistic sigmoid `1 / (1 + exp(-x))`.
    #[inline]
    fn sigmoid(self) -> Self {
        Self::one() / (Self::one() + (-self).exp())
    }
    /// `x = sigmoid(x)` elementwise (vectorised for `f32`).
    fn sigmoid_inplace(x: &mut [Self]) {
        x.iter_mut().for_each(|v| *v = v.sigmoid_elem());
    }
    /// `x = tanh(x)` elementwise (vectorised for `f32`).
    fn tanh_inplace(x: &mut [Self]) {
        x.iter_mut().for_each(|v| *v = v.tanh_elem());
    }
    /// One value of [`Element::sigmoid_inplace`], for loops that fuse it with other work (they
    /// vectorise, and give the bits of the slice function).
    #[inline(always)]
    fn sigmoid_elem(self) -> Self {
        self.sigmoid()
    }
    /// One value of [`Element::tanh_inplace`] (see [`Element::sigmoid_elem`]).
    #[inline(always)]
    fn tanh_elem(self) -> Self {
        self.tanh()
    }
    /// `x = exp(x)` elementwise (vectorised for `f32`; inputs are expected in about `[-87, 88]`).
    fn exp_inplace(x: &mut [Self]) {
        x.iter_mut().for_each(|v| *v = v.exp());
    }
}

impl Element for f32 {
    const DTYPE: &'static str = "float32";
    fn sigmoid_inplace(x: &mut [Self]) {
        crate::activation::sigmoid_slice(x)
    }
    fn tanh_inplace(x: &mut [Self]) {
        crate::activation::tanh_slice(x)
    }
    fn exp_inplace(x: &mut [Self]) {
        crate::activation::exp_slice(x)
    }
    #[inline(always)]
    fn sigmoid_elem(self) -> Self {
        crate::activation::sigmoid_f32(self)
    }
    #[inline(always)]
    fn tanh_elem(self) -> Self {
        crate::activation::tanh_f32(self)
    }
    #[inline]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Element for f64 {
    const DTYPE: &'static str = "float64";
    #[inline]
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
}

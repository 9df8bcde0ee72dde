//! Matrix products. Every GEMM of the crate goes through here, so the kernel can be swapped in one place.

use crate::element::Element;
use ndarray::{linalg::general_mat_mul, ArrayView2, ArrayViewMut2};

/// `c = alpha · a · b + beta · c` with `a: (m, k)`, `b: (k, n)`, `c: (m, n)`; any strides.
#[inline]
pub fn gemm<F: Element>(alpha: F, a: &ArrayView2<F>, b: &ArrayView2<F>, beta: F, c: &mut ArrayViewMut2<F>) {
    general_mat_mul(alpha, a, b, beta, c);
}

//! Matrix products. Every general matrix product of the crate goes through here, so the kernel can
//! be swapped in one place; only the time loops' per-step products and their weight gradients use
//! the crate's own kernel (`packed`), where it measured faster. The kernel is the `gemm` crate (AVX-512/AVX2/FMA microkernels chosen at run time), which
//! splits work over output blocks only — never over the summed dimension — so the result of a
//! product is bit-identical for any number of threads.

use crate::element::Element;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

/// Products smaller than this many multiply-adds run on one thread.
pub(crate) const PARALLEL_MIN_WORK: usize = 1 << 18;

/// `c = alpha · a · b + beta · c` with `a: (m, k)`, `b: (k, n)`, `c: (m, n)`; any strides.
/// With `beta == 0`, `c` is overwritten (its old values, even NaN, are ignored).
#[inline]
pub fn gemm<F: Element>(alpha: F, a: &ArrayView2<F>, b: &ArrayView2<F>, beta: F, c: &mut ArrayViewMut2<F>) {
    gemm_in(alpha, a, b, beta, c, true)
}

/// [`gemm()`] on the calling thread only: for products inside work that is already split over
/// threads (the row blocks of the time loops).
#[inline]
pub fn gemm_serial<F: Element>(alpha: F, a: &ArrayView2<F>, b: &ArrayView2<F>, beta: F, c: &mut ArrayViewMut2<F>) {
    gemm_in(alpha, a, b, beta, c, false)
}

fn gemm_in<F: Element>(alpha: F, a: &ArrayView2<F>, b: &ArrayView2<F>, beta: F, c: &mut ArrayViewMut2<F>, parallel: bool) {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(k == k2 && c.dim() == (m, n), "gemm: shapes {:?} · {:?} -> {:?}", a.dim(), b.dim(), c.dim());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if beta == F::zero() {
            c.fill(F::zero());
        } else {
            c.mapv_inplace(|v| v * beta);
        }
        return;
    }
    let (cs0, cs1) = (c.strides()[0], c.strides()[1]);
    // SAFETY: the pointer and strides describe `c` exactly (shape checked above), and `c` is
    // borrowed mutably so it cannot alias `a` or `b`.
    unsafe { raw(alpha, a, b, beta, c.as_mut_ptr(), cs0, cs1, parallel) }
}

/// A new `(m, n)` matrix `a · b` (`a: (m, k)`, `b: (k, n)`, any strides), written by the kernel
/// without being zero-filled first.
pub fn product<F: Element>(a: &ArrayView2<F>, b: &ArrayView2<F>) -> Array2<F> {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(k == k2, "product: shapes {:?} · {:?}", a.dim(), b.dim());
    if m == 0 || n == 0 || k == 0 {
        return Array2::zeros((m, n));
    }
    let mut out: Vec<F> = Vec::with_capacity(m * n);
    crate::allocator::advise_huge_pages(out.spare_capacity_mut());
    // SAFETY: `out` has room for the row-major `(m, n)` result; with `beta == 0` the kernel writes
    // every one of its values without reading any, so all `m · n` are initialised when it returns.
    unsafe {
        raw(F::one(), a, b, F::zero(), out.as_mut_ptr(), n as isize, 1, true);
        out.set_len(m * n);
    }
    Array2::from_shape_vec((m, n), out).expect("(m, n)")
}

/// `c = alpha · a · b + beta · c` into the `(m, n)` destination at `c` with strides `(cs0, cs1)`;
/// `m, n, k >= 1`.
///
/// # Safety
/// `c` with those strides addresses `m · n` writable values that alias neither `a` nor `b`; with
/// `beta != 0` they must be initialised.
#[allow(clippy::too_many_arguments)]
unsafe fn raw<F: Element>(alpha: F, a: &ArrayView2<F>, b: &ArrayView2<F>, beta: F, c: *mut F, cs0: isize, cs1: isize, parallel: bool) {
    let ((m, k), n) = (a.dim(), b.ncols());
    let threads = rayon::current_num_threads();
    let par = if parallel && threads > 1 && m * n * k >= PARALLEL_MIN_WORK {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let (as_, bs) = (a.strides(), b.strides());
    // SAFETY: `a` and `b` are described by their views exactly; `c` by the caller's promise.
    unsafe {
        gemm::gemm(m, n, k, c, cs1, cs0, beta != F::zero(), a.as_ptr(), as_[1], as_[0], b.as_ptr(), bs[1], bs[0], beta, alpha, false, false, false, par);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, ShapeBuilder};

    fn naive(a: &Array2<f64>, b: &Array2<f64>) -> Array2<f64> {
        let (m, k) = a.dim();
        let n = b.ncols();
        Array2::from_shape_fn((m, n), |(i, j)| (0..k).map(|p| a[[i, p]] * b[[p, j]]).sum())
    }

    #[test]
    fn matches_naive_product_for_any_layout() {
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (17, 33, 9), (64, 200, 130)] {
            let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 7 + j * 3) % 13) as f64 - 6.0);
            let b = Array2::from_shape_fn((k, n), |(i, j)| ((i * 5 + j * 11) % 7) as f64 - 3.0);
            let want = naive(&a, &b);
            let bt = Array2::from_shape_vec((k, n).f(), b.t().iter().copied().collect()).unwrap();
            let mut c = Array2::from_elem((m, n), 1.0);
            gemm(1.0, &a.view(), &bt.view(), 2.0, &mut c.view_mut());
            assert_eq!(c, &want + 2.0);
            let mut c = Array2::from_elem((m, n), f64::NAN);
            gemm(1.0, &a.view(), &b.view(), 0.0, &mut c.view_mut());
            assert_eq!(c, want);
            assert_eq!(product(&a.view(), &bt.view()), want);
        }
    }

    #[test]
    fn bit_identical_for_any_thread_count() {
        let (m, k, n) = (257, 301, 263);
        let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 7919 + j * 104729) % 1000) as f32 / 997.0 - 0.5);
        let b = Array2::from_shape_fn((k, n), |(i, j)| ((i * 15485863 + j * 32452843) % 1000) as f32 / 991.0 - 0.5);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut c = Array2::<f32>::zeros((m, n));
                gemm(1.0, &a.view(), &b.t().t(), 0.0, &mut c.view_mut());
                c
            })
        };
        let one = run(1);
        for t in [2, 3, 4] {
            assert!(one.iter().zip(run(t).iter()).all(|(x, y)| x.to_bits() == y.to_bits()), "{t} threads differ");
        }
    }
}

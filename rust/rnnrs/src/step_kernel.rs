//! The float32 product of the sampling loop's steps: `out (b, n) = x (b, k) · wᵀ + bias` for
//! PyTorch-layout weights `w (n, k)`, with every output computed by one canonical dot product, so
//! that a row's result does not depend on the batch size, on how rows and columns are blocked, or
//! on the number of threads (threads split the `n` outputs, never a sum).
//!
//! The canonical dot product of `x` and `w` (length `k`): sixteen partial sums
//! `acc[l] = fma(x[p + l], w[p + l], acc[l])` over `p = 0, 16, …` while a whole chunk fits; the
//! lanes reduced by the tree `r8[l] = acc[l] + acc[l + 8]`, `r4[l] = r8[l] + r8[l + 4]`,
//! `r2[l] = r4[l] + r4[l + 2]`, `s = r2[0] + r2[1]`; then the `k % 16` tail `s = fma(x[q], w[q], s)` in
//! order; the output is `bias + s`. Fused multiply-adds are exact-then-round on every CPU, so the
//! three builds of the one generic kernel — AVX-512, AVX2 + FMA, and portable (`f32::mul_add`) —
//! give the same bits. Blocks of 4 input rows × 4 weight rows keep 16 accumulators in registers
//! and read each weight row once per block of rows: at batch 1 the loop streams the weights (it is
//! memory-bound); at batch 32 it is compute-bound.

#![allow(clippy::needless_range_loop)] // index loops over lanes and blocks read most clearly here

use rayon::prelude::*;

/// Lanes of the partial sums.
const L: usize = 16;
/// Input rows × weight rows per register block.
const R: usize = 4;
const C: usize = 4;
/// Products with at least this many multiply-adds are split over threads (by output columns).
const PARALLEL_MIN_WORK: usize = 1 << 19;

/// Sixteen float32 lanes: the operations the kernel needs, for each build.
trait Lanes: Copy {
    /// # Safety (all methods)
    /// The CPU supports the build's instructions; `load` reads 16 values at `p`.
    unsafe fn zero() -> Self;
    unsafe fn load(p: *const f32) -> Self;
    /// `a · b + c`, one rounding.
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    unsafe fn array(self) -> [f32; L];
    /// The canonical tree `((a0+a8)+(a4+a12)) … `: see the module docs.
    unsafe fn reduce(self) -> f32 {
        // SAFETY: forwarded.
        let a = unsafe { self.array() };
        let mut r8 = [0f32; 8];
        for l in 0..8 {
            r8[l] = a[l] + a[l + 8];
        }
        let r4 = [r8[0] + r8[4], r8[1] + r8[5], r8[2] + r8[6], r8[3] + r8[7]];
        let r2 = [r4[0] + r4[2], r4[1] + r4[3]];
        r2[0] + r2[1]
    }
    /// Scalar `a · b + c`, one rounding.
    unsafe fn fma1(a: f32, b: f32, c: f32) -> f32;
}

#[derive(Clone, Copy)]
struct Portable([f32; L]);

impl Lanes for Portable {
    #[inline(always)]
    unsafe fn zero() -> Self {
        Portable([0.0; L])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 16 readable values.
        Portable(unsafe { std::ptr::read_unaligned(p.cast::<[f32; L]>()) })
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|l| a.0[l].mul_add(b.0[l], c.0[l])))
    }
    #[inline(always)]
    unsafe fn array(self) -> [f32; L] {
        self.0
    }
    #[inline(always)]
    unsafe fn fma1(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// The canonical reduction of the 16 partial sums, then the tail from `kl`.
#[inline(always)]
unsafe fn finish<V: Lanes>(acc: V, x: &[f32], w: &[f32], kl: usize) -> f32 {
    // SAFETY: forwarded from the caller (the build's instructions are available).
    let mut s = unsafe { acc.reduce() };
    for (&xq, &wq) in x[kl..].iter().zip(&w[kl..]) {
        // SAFETY: as above.
        s = unsafe { V::fma1(xq, wq, s) };
    }
    s
}

/// Dots of `RR` input rows with `CC` weight rows (each of length `k`).
#[inline(always)]
unsafe fn block<V: Lanes, const RR: usize, const CC: usize>(xs: &[&[f32]; RR], ws: &[&[f32]; CC], k: usize) -> [[f32; CC]; RR] {
    let kl = k - k % L;
    for r in 0..RR {
        assert!(xs[r].len() >= k);
    }
    for c in 0..CC {
        assert!(ws[c].len() >= k);
    }
    // SAFETY: every load reads 16 values at `p + 16 <= kl <= k`, inside the rows (checked above);
    // the build's instructions are available (caller).
    unsafe {
        let mut acc = [[V::zero(); CC]; RR];
        let mut p = 0;
        while p < kl {
            let mut wv = [V::zero(); CC];
            for c in 0..CC {
                wv[c] = V::load(ws[c].as_ptr().add(p));
            }
            for r in 0..RR {
                let xv = V::load(xs[r].as_ptr().add(p));
                for c in 0..CC {
                    acc[r][c] = V::fma(xv, wv[c], acc[r][c]);
                }
            }
            p += L;
        }
        let mut out = [[0f32; CC]; RR];
        for r in 0..RR {
            for c in 0..CC {
                out[r][c] = finish(acc[r][c], xs[r], ws[c], kl);
            }
        }
        out
    }
}

/// Columns `j0..j1` of `out (b, n)`: `out[i·n + j] = bias[j] + dot(x_i, w_j)`.
///
/// # Safety
/// The build's instructions are available; `out` points to `b · n` values of which this call owns
/// columns `j0..j1`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn columns<V: Lanes>(x: &[f32], k: usize, w: &[f32], bias: &[f32], n: usize, j0: usize, j1: usize, out: &Out) {
    let b = x.len() / k;
    let xr = |i: usize| &x[i * k..(i + 1) * k];
    let wr = |j: usize| &w[j * k..(j + 1) * k];
    let put = |i: usize, j: usize, v: f32| {
        assert!(i < b && j < n);
        // SAFETY: `(i, j)` is inside `out (b, n)`, and column `j` belongs to this call only.
        unsafe { *out.0.add(i * n + j) = bias[j] + v }
    };
    // SAFETY (the `block` calls): forwarded from the caller.
    unsafe {
        let mut j = j0;
        while j < j1 {
            let cc = (j1 - j).min(C);
            let mut i = 0;
            while i < b {
                let rr = (b - i).min(R);
                if rr == R && cc == C {
                    let d = block::<V, 4, 4>(&[xr(i), xr(i + 1), xr(i + 2), xr(i + 3)], &[wr(j), wr(j + 1), wr(j + 2), wr(j + 3)], k);
                    for r in 0..R {
                        for c in 0..C {
                            put(i + r, j + c, d[r][c]);
                        }
                    }
                } else if cc == C {
                    for r in 0..rr {
                        let d = block::<V, 1, 4>(&[xr(i + r)], &[wr(j), wr(j + 1), wr(j + 2), wr(j + 3)], k);
                        for c in 0..C {
                            put(i + r, j + c, d[0][c]);
                        }
                    }
                } else {
                    for r in 0..rr {
                        for c in 0..cc {
                            put(i + r, j + c, block::<V, 1, 1>(&[xr(i + r)], &[wr(j + c)], k)[0][0]);
                        }
                    }
                }
                i += rr;
            }
            j += cc;
        }
    }
}

/// The output pointer, shared by the threads that write disjoint column ranges.
struct Out(*mut f32);
// SAFETY: only used inside `affine` while `out` is mutably borrowed, with disjoint columns per thread.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

type Kernel = fn(&[f32], usize, &[f32], &[f32], usize, usize, usize, &Out);

#[allow(clippy::too_many_arguments)]
fn portable(x: &[f32], k: usize, w: &[f32], bias: &[f32], n: usize, j0: usize, j1: usize, out: &Out) {
    // SAFETY: portable code needs no CPU feature; `affine_with` owns `out` and splits columns.
    unsafe { columns::<Portable>(x, k, w, bias, n, j0, j1, out) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{columns, Lanes, Out, L};
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub(super) struct Avx512(__m512);

    impl Lanes for Avx512 {
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: AVX-512F (caller).
            Avx512(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: 16 readable values (caller).
            Avx512(unsafe { _mm512_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: AVX-512F (caller).
            Avx512(unsafe { _mm512_fmadd_ps(a.0, b.0, c.0) })
        }
        #[inline(always)]
        unsafe fn array(self) -> [f32; L] {
            // SAFETY: `__m512` is 16 `f32`s.
            unsafe { std::mem::transmute::<__m512, [f32; L]>(self.0) }
        }
        #[inline(always)]
        unsafe fn reduce(self) -> f32 {
            // SAFETY: AVX-512F (caller); the same adds, in the same order, as the default method.
            unsafe {
                let lo = _mm512_castps512_ps256(self.0);
                let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(self.0)));
                r8_to_sum(_mm256_add_ps(lo, hi))
            }
        }
        #[inline(always)]
        unsafe fn fma1(a: f32, b: f32, c: f32) -> f32 {
            // SAFETY: FMA (caller).
            unsafe { _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c))) }
        }
    }

    /// Lanes 0–7 and 8–15 in two AVX registers.
    #[derive(Clone, Copy)]
    pub(super) struct Avx2(__m256, __m256);

    impl Lanes for Avx2 {
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: AVX (caller).
            unsafe { Avx2(_mm256_setzero_ps(), _mm256_setzero_ps()) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: 16 readable values (caller).
            unsafe { Avx2(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: FMA (caller).
            unsafe { Avx2(_mm256_fmadd_ps(a.0, b.0, c.0), _mm256_fmadd_ps(a.1, b.1, c.1)) }
        }
        #[inline(always)]
        unsafe fn array(self) -> [f32; L] {
            // SAFETY: two `__m256` are 16 `f32`s.
            unsafe { std::mem::transmute::<[__m256; 2], [f32; L]>([self.0, self.1]) }
        }
        #[inline(always)]
        unsafe fn reduce(self) -> f32 {
            // SAFETY: AVX (caller); the same adds, in the same order, as the default method.
            unsafe { r8_to_sum(_mm256_add_ps(self.0, self.1)) }
        }
        #[inline(always)]
        unsafe fn fma1(a: f32, b: f32, c: f32) -> f32 {
            // SAFETY: FMA (caller).
            unsafe { _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c))) }
        }
    }

    /// `r4 = r8[0..4] + r8[4..8]`, `r2 = (r4[0] + r4[2], r4[1] + r4[3])`, `r2[0] + r2[1]`.
    #[inline(always)]
    unsafe fn r8_to_sum(r8: __m256) -> f32 {
        // SAFETY: AVX (caller).
        unsafe {
            let r4 = _mm_add_ps(_mm256_castps256_ps128(r8), _mm256_extractf128_ps::<1>(r8));
            let r2 = _mm_add_ps(r4, _mm_movehl_ps(r4, r4));
            _mm_cvtss_f32(_mm_add_ss(r2, _mm_shuffle_ps::<1>(r2, r2)))
        }
    }

    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx512_impl(x: &[f32], k: usize, w: &[f32], bias: &[f32], n: usize, j0: usize, j1: usize, out: &Out) {
        // SAFETY: AVX-512F and FMA are enabled here; `out` as for `columns`.
        unsafe { columns::<Avx512>(x, k, w, bias, n, j0, j1, out) }
    }
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx2_impl(x: &[f32], k: usize, w: &[f32], bias: &[f32], n: usize, j0: usize, j1: usize, out: &Out) {
        // SAFETY: AVX2 and FMA are enabled here; `out` as for `columns`.
        unsafe { columns::<Avx2>(x, k, w, bias, n, j0, j1, out) }
    }
    #[allow(clippy::too_many_arguments)]
    pub(super) fn avx512(x: &[f32], k: usize, w: &[f32], bias: &[f32], n: usize, j0: usize, j1: usize, out: &Out) {
        // SAFETY: chosen by `kernel()` only when the CPU has AVX-512F and FMA.
        unsafe { avx512_impl(x, k, w, bias, n, j0, j1, out) }
    }
    #[allow(clippy::too_many_arguments)]
    pub(super) fn avx2(x: &[f32], k: usize, w: &[f32], bias: &[f32], n: usize, j0: usize, j1: usize, out: &Out) {
        // SAFETY: chosen by `kernel()` only when the CPU has AVX2 and FMA.
        unsafe { avx2_impl(x, k, w, bias, n, j0, j1, out) }
    }
}

/// The fastest build of the kernel this CPU runs.
fn kernel() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("fma") {
            return x86::avx512;
        }
        if has!("avx2") && has!("fma") {
            return x86::avx2;
        }
    }
    portable
}

/// `out (b, n) = x (b, k) · wᵀ + bias`, `w (n, k)` row-major; bit-identical per row for any `b`,
/// any number of threads and any of the CPU-specific builds.
pub(crate) fn affine_f32(x: &[f32], k: usize, w: &[f32], bias: &[f32], out: &mut [f32]) {
    affine_with(kernel(), x, k, w, bias, out)
}

fn affine_with(kern: Kernel, x: &[f32], k: usize, w: &[f32], bias: &[f32], out: &mut [f32]) {
    let n = bias.len();
    let b = x.len() / k;
    assert!(w.len() == n * k && out.len() == b * n && x.len() == b * k, "affine: shapes");
    let o = Out(out.as_mut_ptr());
    let threads = rayon::current_num_threads();
    if threads > 1 && b * n * k >= PARALLEL_MIN_WORK {
        let chunk = n.div_ceil(threads).next_multiple_of(C).min(n);
        (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| kern(x, k, w, bias, n, c * chunk, ((c + 1) * chunk).min(n), &o));
    } else {
        kern(x, k, w, bias, n, 0, n, &o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

    /// The canonical dot product, written out plainly.
    fn canonical(x: &[f32], w: &[f32]) -> f32 {
        let k = x.len();
        let kl = k - k % L;
        let mut a = [0f32; L];
        for p in (0..kl).step_by(L) {
            for l in 0..L {
                a[l] = x[p + l].mul_add(w[p + l], a[l]);
            }
        }
        let r8: Vec<f32> = (0..8).map(|l| a[l] + a[l + 8]).collect();
        let r4: Vec<f32> = (0..4).map(|l| r8[l] + r8[l + 4]).collect();
        let mut s = (r4[0] + r4[2]) + (r4[1] + r4[3]);
        for q in kl..k {
            s = x[q].mul_add(w[q], s);
        }
        s
    }

    #[test]
    fn every_build_and_blocking_gives_the_canonical_bits() {
        let mut r = rng::stream(&[5, 7]);
        let mut builds: Vec<Kernel> = vec![portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                builds.push(x86::avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
                builds.push(x86::avx512);
            }
        }
        for &(b, k, n) in &[(1, 1, 3), (1, 37, 9), (4, 16, 2), (6, 131, 45), (9, 256, 70), (32, 64, 33)] {
            let x: Vec<f32> = (0..b * k).map(|_| rng::uniform(&mut r) as f32 - 0.5).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rng::uniform(&mut r) as f32 - 0.5).collect();
            let bias: Vec<f32> = (0..n).map(|_| rng::uniform(&mut r) as f32 - 0.5).collect();
            let want: Vec<u32> = (0..b)
                .flat_map(|i| (0..n).map(move |j| (i, j)))
                .map(|(i, j)| (bias[j] + canonical(&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k])).to_bits())
                .collect();
            for &kern in &builds {
                let mut out = vec![0f32; b * n];
                affine_with(kern, &x, k, &w, &bias, &mut out);
                assert!(out.iter().map(|v| v.to_bits()).eq(want.iter().copied()), "{b}x{k}x{n}");
                // Each row alone gives the same bits as in the batch.
                for i in 0..b {
                    let mut one = vec![0f32; n];
                    affine_with(kern, &x[i * k..(i + 1) * k], k, &w, &bias, &mut one);
                    assert!(one.iter().map(|v| v.to_bits()).eq(want[i * n..(i + 1) * n].iter().copied()));
                }
            }
        }
    }

    #[test]
    fn bit_identical_for_any_thread_count() {
        let mut r = rng::stream(&[8, 9]);
        let (b, k, n) = (7, 300, 1001);
        let x: Vec<f32> = (0..b * k).map(|_| rng::uniform(&mut r) as f32 - 0.5).collect();
        let w: Vec<f32> = (0..n * k).map(|_| rng::uniform(&mut r) as f32 - 0.5).collect();
        let bias = vec![0.25f32; n];
        let run = |t: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
            let mut out = vec![0f32; b * n];
            pool.install(|| affine_f32(&x, k, &w, &bias, &mut out));
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let one = run(1);
        for t in [2, 3, 5] {
            assert_eq!(one, run(t), "{t} threads");
        }
    }

    #[test]
    fn matches_a_float64_product() {
        let mut r = rng::stream(&[1, 2]);
        let (b, k, n) = (5, 77, 13);
        let x: Vec<f32> = (0..b * k).map(|_| rng::uniform(&mut r) as f32 - 0.5).collect();
        let w: Vec<f32> = (0..n * k).map(|_| rng::uniform(&mut r) as f32 - 0.5).collect();
        let bias: Vec<f32> = (0..n).map(|_| rng::uniform(&mut r) as f32).collect();
        let mut out = vec![0f32; b * n];
        affine_f32(&x, k, &w, &bias, &mut out);
        for i in 0..b {
            for j in 0..n {
                let e: f64 = bias[j] as f64 + (0..k).map(|q| x[i * k + q] as f64 * w[j * k + q] as f64).sum::<f64>();
                assert!((out[i * n + j] as f64 - e).abs() < 1e-5, "{} vs {e}", out[i * n + j]);
            }
        }
    }
}

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
//!
//! The same kernel also reads half-precision weights (`w` as IEEE binary16, [`half::f16`]): each
//! weight is widened to float32 exactly on load (`vcvtph2ps`, or [`half::f16::to_f32`] in the
//! portable build) and the float32 dot above runs unchanged, so weights that are exactly
//! representable in float16 give the same bits as their float32 copy — at half the bytes streamed.

#![allow(clippy::needless_range_loop)] // index loops over lanes and blocks read most clearly here

use crate::crew::{share, Crew};
use half::f16;
use rayon::prelude::*;

/// Lanes of the partial sums.
const L: usize = 16;
/// Input rows × weight rows per register block.
const R: usize = 4;
const C: usize = 4;
/// Products with at least this many multiply-adds are split over threads (by output columns), as
/// the caller allows ([`Split`]).
const PARALLEL_MIN_WORK: usize = 1 << 19;

/// Sixteen float32 lanes: the operations the kernel needs, for each build.
trait Lanes: Copy {
    /// # Safety (all methods)
    /// The CPU supports the build's instructions; `load` reads 16 values at `p`.
    unsafe fn zero() -> Self;
    unsafe fn load(p: *const f32) -> Self;
    /// 16 float16 values at `p`, widened exactly.
    unsafe fn load_f16(p: *const f16) -> Self;
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
    /// Ask for the cache line at `p` to be loaded (a hint: it never faults; nothing by default).
    #[inline(always)]
    unsafe fn prefetch(_p: *const u8) {}
    /// [`Lanes::reduce`] of 16 vectors (the same adds, so the same bits; AVX-512 does them 16 at once).
    #[inline(always)]
    unsafe fn reduce16(v: [Self; 16]) -> [f32; 16] {
        let mut out = [0f32; 16];
        for q in 0..16 {
            // SAFETY: forwarded. (A loop, not `map`: closures are not compiled for the build.)
            out[q] = unsafe { v[q].reduce() };
        }
        out
    }
}

/// A stored weight: float32, or float16 widened exactly to float32 on load.
trait Weight: Copy + Send + Sync + 'static {
    /// # Safety
    /// As [`Lanes::load`]: 16 readable weights at `p`, the build's instructions available.
    unsafe fn load<V: Lanes>(p: *const Self) -> V;
    fn to_f32(self) -> f32;
}

impl Weight for f32 {
    #[inline(always)]
    unsafe fn load<V: Lanes>(p: *const f32) -> V {
        // SAFETY: forwarded.
        unsafe { V::load(p) }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Weight for f16 {
    #[inline(always)]
    unsafe fn load<V: Lanes>(p: *const f16) -> V {
        // SAFETY: forwarded.
        unsafe { V::load_f16(p) }
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
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
    unsafe fn load_f16(p: *const f16) -> Self {
        // SAFETY: the caller guarantees 16 readable values.
        let h = unsafe { std::ptr::read_unaligned(p.cast::<[f16; L]>()) };
        Portable(h.map(f16::to_f32))
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

/// The tail from `kl`, added to the reduced sum `s` in order.
#[inline(always)]
unsafe fn finish<V: Lanes, W: Weight>(mut s: f32, x: &[f32], w: &[W], kl: usize) -> f32 {
    for (&xq, &wq) in x[kl..].iter().zip(&w[kl..]) {
        // SAFETY: forwarded from the caller (the build's instructions are available).
        s = unsafe { V::fma1(xq, wq.to_f32(), s) };
    }
    s
}

/// Dots of `RR` input rows with `CC` weight rows (each of length `k`); when `RR · CC` is 16 the
/// partial-sum vectors are reduced together ([`Lanes::reduce16`]).
#[inline(always)]
unsafe fn block<V: Lanes, W: Weight, const RR: usize, const CC: usize>(xs: &[&[f32]; RR], ws: &[&[W]; CC], k: usize) -> [[f32; CC]; RR] {
    // SAFETY: forwarded.
    unsafe { block_pf::<V, W, RR, CC, false>(xs, ws, k, ws) }
}

/// [`block`], prefetching the rows `next` (each of length `k`) alongside.
#[inline(always)]
unsafe fn block_pf<V: Lanes, W: Weight, const RR: usize, const CC: usize, const PF: bool>(xs: &[&[f32]; RR], ws: &[&[W]; CC], k: usize, next: &[&[W]; CC]) -> [[f32; CC]; RR] {
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
            if RR == 1 {
                let xv = V::load(xs[0].as_ptr().add(p));
                for c in 0..CC {
                    acc[0][c] = V::fma(xv, W::load::<V>(ws[c].as_ptr().add(p)), acc[0][c]);
                }
            } else {
                if PF {
                    for c in 0..CC {
                        V::prefetch(next[c].as_ptr().add(p).cast());
                    }
                }
                let mut wv = [V::zero(); CC];
                for c in 0..CC {
                    wv[c] = W::load::<V>(ws[c].as_ptr().add(p));
                }
                for r in 0..RR {
                    let xv = V::load(xs[r].as_ptr().add(p));
                    for c in 0..CC {
                        acc[r][c] = V::fma(xv, wv[c], acc[r][c]);
                    }
                }
            }
            p += L;
        }
        let mut sums = [[0f32; CC]; RR];
        if RR * CC == 16 {
            // (Plain loops, no closures: a closure is not compiled for the build's instructions.)
            let mut flat = [V::zero(); 16];
            for q in 0..16 {
                flat[q] = acc[q / CC][q % CC];
            }
            let red = V::reduce16(flat);
            for q in 0..16 {
                sums[q / CC][q % CC] = red[q];
            }
        } else {
            for r in 0..RR {
                for c in 0..CC {
                    sums[r][c] = acc[r][c].reduce();
                }
            }
        }
        let mut out = [[0f32; CC]; RR];
        for r in 0..RR {
            for c in 0..CC {
                out[r][c] = finish::<V, W>(sums[r][c], xs[r], ws[c], kl);
            }
        }
        out
    }
}

/// Weight rows per column block: 16 rows of weights stay in L1 while every input row passes.
const J: usize = 16;
/// Weight rows per block of a single input row: 8 accumulators hide the fused multiply-add
/// latency (measured at batch 1: 1 × 8 blocks beat 1 × 4 by ~1.25× and 1 × 16 — more concurrent
/// streams, register pressure — by ~1.3×).
const STREAMS: usize = 8;

/// Columns `j0..j1` of `out (b, n)`: `out[i·n + j] = bias[j] + dot(x_i, w_j)`.
///
/// # Safety
/// The build's instructions are available; `out` points to `b · n` values of which this call owns
/// columns `j0..j1`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn columns<V: Lanes, W: Weight>(x: &[f32], k: usize, w: &[W], bias: &[f32], n: usize, j0: usize, j1: usize, out: &Out) {
    let b = x.len() / k;
    let xr = |i: usize| &x[i * k..(i + 1) * k];
    let wr = |j: usize| &w[j * k..(j + 1) * k];
    let put = |i: usize, j: usize, v: f32| {
        assert!(i < b && j < n);
        // SAFETY: `(i, j)` is inside `out (b, n)`, and column `j` belongs to this call only.
        unsafe { *out.0.add(i * n + j) = bias[j] + v }
    };
    let ws4 = |j: usize| [wr(j), wr(j + 1), wr(j + 2), wr(j + 3)];
    // SAFETY (the `block` calls): forwarded from the caller.
    unsafe {
        let mut j = j0;
        while j < j1 {
            let cc = (j1 - j).min(J);
            // Full groups of R input rows: R × C blocks.
            let mut i = 0;
            while i + R <= b {
                let xs = [xr(i), xr(i + 1), xr(i + 2), xr(i + 3)];
                let mut jj = j;
                while jj + C <= j + cc {
                    // The first rows fetch the next block of weight rows, which stream from memory.
                    let d = if i == 0 && jj + J + C <= j1 {
                        block_pf::<V, W, 4, 4, true>(&xs, &ws4(jj), k, &ws4(jj + J))
                    } else {
                        block::<V, W, 4, 4>(&xs, &ws4(jj), k)
                    };
                    for r in 0..R {
                        for c in 0..C {
                            put(i + r, jj + c, d[r][c]);
                        }
                    }
                    jj += C;
                }
                for jj in jj..j + cc {
                    for r in 0..R {
                        put(i + r, jj, block::<V, W, 1, 1>(&[xs[r]], &[wr(jj)], k)[0][0]);
                    }
                }
                i += R;
            }
            // The other rows (all of them at batch 1): 1 × STREAMS blocks, then 1 × C, then 1 × 1.
            for i in i..b {
                let xs = [xr(i)];
                let mut jj = j;
                while jj + STREAMS <= j + cc {
                    let ws: [&[W]; STREAMS] = std::array::from_fn(|c| wr(jj + c));
                    let d = block::<V, W, 1, STREAMS>(&xs, &ws, k);
                    for c in 0..STREAMS {
                        put(i, jj + c, d[0][c]);
                    }
                    jj += STREAMS;
                }
                while jj + C <= j + cc {
                    let d = block::<V, W, 1, 4>(&xs, &ws4(jj), k);
                    for c in 0..C {
                        put(i, jj + c, d[0][c]);
                    }
                    jj += C;
                }
                for jj in jj..j + cc {
                    put(i, jj, block::<V, W, 1, 1>(&xs, &[wr(jj)], k)[0][0]);
                }
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

type Kernel<W> = fn(&[f32], usize, &[W], &[f32], usize, usize, usize, &Out);

#[allow(clippy::too_many_arguments)]
fn portable<W: Weight>(x: &[f32], k: usize, w: &[W], bias: &[f32], n: usize, j0: usize, j1: usize, out: &Out) {
    // SAFETY: portable code needs no CPU feature; `affine_with` owns `out` and splits columns.
    unsafe { columns::<Portable, W>(x, k, w, bias, n, j0, j1, out) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{columns, Lanes, Out, Weight, L};
    use half::f16;
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
        unsafe fn load_f16(p: *const f16) -> Self {
            // SAFETY: 16 readable values (caller); `vcvtph2ps` is AVX-512F.
            Avx512(unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) })
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
        #[inline(always)]
        unsafe fn prefetch(p: *const u8) {
            // SAFETY: SSE; a prefetch never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast()) }
        }
        /// The canonical tree for 16 vectors at once: every level adds the same pairs of lanes as
        /// [`Lanes::reduce`], gathered by shuffles into whole vectors (addition is commutative, so
        /// the bits are the same).
        #[inline(always)]
        unsafe fn reduce16(v: [Self; 16]) -> [f32; 16] {
            // SAFETY: AVX-512F (caller).
            unsafe {
                // r8: vector m holds acc 2m's r8 in lanes 0–7 and acc 2m+1's in lanes 8–15.
                // (Plain loops, no closures: a closure is not compiled with AVX-512 enabled.)
                let mut r8 = [_mm512_setzero_ps(); 8];
                for m in 0..8 {
                    let (a, b) = (v[2 * m].0, v[2 * m + 1].0);
                    r8[m] = _mm512_add_ps(_mm512_shuffle_f32x4::<0x44>(a, b), _mm512_shuffle_f32x4::<0xEE>(a, b));
                }
                // r4: vector m holds acc 4m+q's r4 in 128-bit quarter q.
                let mut r4 = [_mm512_setzero_ps(); 4];
                for m in 0..4 {
                    let (a, b) = (r8[2 * m], r8[2 * m + 1]);
                    r4[m] = _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(a, b), _mm512_shuffle_f32x4::<0xDD>(a, b));
                }
                // r2: quarter q of vector m holds acc (8m + q)'s pair, then acc (8m + 4 + q)'s.
                let mut r2 = [_mm512_setzero_ps(); 2];
                for m in 0..2 {
                    let (a, b) = (r4[2 * m], r4[2 * m + 1]);
                    r2[m] = _mm512_add_ps(_mm512_shuffle_ps::<0x44>(a, b), _mm512_shuffle_ps::<0xEE>(a, b));
                }
                // Lane 4q + t: the sum of acc 4t + q.
                let s = _mm512_add_ps(_mm512_shuffle_ps::<0x88>(r2[0], r2[1]), _mm512_shuffle_ps::<0xDD>(r2[0], r2[1]));
                let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
                std::mem::transmute::<__m512, [f32; 16]>(_mm512_permutexvar_ps(idx, s))
            }
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
        unsafe fn load_f16(p: *const f16) -> Self {
            // SAFETY: 16 readable values (caller); F16C (caller).
            unsafe { Avx2(_mm256_cvtph_ps(_mm_loadu_si128(p.cast())), _mm256_cvtph_ps(_mm_loadu_si128(p.add(8).cast()))) }
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
        #[inline(always)]
        unsafe fn prefetch(p: *const u8) {
            // SAFETY: SSE; a prefetch never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast()) }
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
    unsafe fn avx512_impl<W: Weight>(x: &[f32], k: usize, w: &[W], bias: &[f32], n: usize, j0: usize, j1: usize, out: &Out) {
        // SAFETY: AVX-512F and FMA are enabled here; `out` as for `columns`.
        unsafe { columns::<Avx512, W>(x, k, w, bias, n, j0, j1, out) }
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn avx2_impl<W: Weight>(x: &[f32], k: usize, w: &[W], bias: &[f32], n: usize, j0: usize, j1: usize, out: &Out) {
        // SAFETY: AVX2, FMA and F16C are enabled here; `out` as for `columns`.
        unsafe { columns::<Avx2, W>(x, k, w, bias, n, j0, j1, out) }
    }
    #[allow(clippy::too_many_arguments)]
    pub(super) fn avx512<W: Weight>(x: &[f32], k: usize, w: &[W], bias: &[f32], n: usize, j0: usize, j1: usize, out: &Out) {
        // SAFETY: chosen by `kernel()` only when the CPU has AVX-512F and FMA.
        unsafe { avx512_impl(x, k, w, bias, n, j0, j1, out) }
    }
    #[allow(clippy::too_many_arguments)]
    pub(super) fn avx2<W: Weight>(x: &[f32], k: usize, w: &[W], bias: &[f32], n: usize, j0: usize, j1: usize, out: &Out) {
        // SAFETY: chosen by `kernel()` only when the CPU has AVX2, FMA and F16C.
        unsafe { avx2_impl(x, k, w, bias, n, j0, j1, out) }
    }

    pub(super) fn has_avx512() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma")
    }
    pub(super) fn has_avx2() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
    }
}

/// The fastest build of the kernel this CPU runs.
fn kernel<W: Weight>() -> Kernel<W> {
    #[cfg(target_arch = "x86_64")]
    {
        if x86::has_avx512() {
            return x86::avx512::<W>;
        }
        if x86::has_avx2() {
            return x86::avx2::<W>;
        }
    }
    portable::<W>
}

/// Which products [`affine_f32`] splits over the rayon threads (by output columns), among those
/// with enough work.
#[derive(Clone, Copy)]
pub(crate) enum Split<'a> {
    /// None (the caller already runs on one of several threads).
    Never,
    /// Products of at least 4 rows (compute-bound). Waking a second thread costs ~10 µs per
    /// product, more than it saves on a few-row product while the weights stream from cache
    /// (measured on a 2-core Zen 5, batch 1: one thread is faster for 8–12 MB of weights per step).
    Batches,
    /// Every product (batch 1 with weights beyond the cache: two threads are faster for 23 MB).
    Always,
    /// Every product, by a [`Crew`]: member `m` always computes the same columns.
    Crew(&'a Crew<'a>),
}

/// `out (b, n) = x (b, k) · wᵀ + bias`, `w (n, k)` row-major; bit-identical per row for any `b`,
/// any number of threads and any of the CPU-specific builds.
pub(crate) fn affine_f32(x: &[f32], k: usize, w: &[f32], bias: &[f32], out: &mut [f32], split: Split) {
    affine_with(kernel(), x, k, w, bias, out, split)
}

/// [`affine_f32`] with float16 weights (widened exactly): the same bits as `affine_f32` on the
/// float32 values of `w`.
pub(crate) fn affine_f16(x: &[f32], k: usize, w: &[f16], bias: &[f32], out: &mut [f32], split: Split) {
    affine_with(kernel(), x, k, w, bias, out, split)
}

fn affine_with<W: Weight>(kern: Kernel<W>, x: &[f32], k: usize, w: &[W], bias: &[f32], out: &mut [f32], split: Split) {
    let n = bias.len();
    let b = x.len() / k;
    assert!(w.len() == n * k && out.len() == b * n && x.len() == b * k, "affine: shapes");
    let o = Out(out.as_mut_ptr());
    let threads = rayon::current_num_threads();
    let split = match split {
        Split::Never => false,
        Split::Batches => b >= R,
        Split::Always => true,
        Split::Crew(crew) => {
            let members = crew.members();
            crew.run(&|m| {
                let (j0, j1) = share(n, members, m, J);
                if j0 < j1 {
                    kern(x, k, w, bias, n, j0, j1, &o)
                }
            });
            return;
        }
    };
    if threads > 1 && b * n * k >= PARALLEL_MIN_WORK && split {
        (0..threads).into_par_iter().for_each(|m| {
            let (j0, j1) = share(n, threads, m, J);
            if j0 < j1 {
                kern(x, k, w, bias, n, j0, j1, &o)
            }
        });
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
        let mut builds: Vec<Kernel<f32>> = vec![portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                builds.push(x86::avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
                builds.push(x86::avx512);
            }
        }
        for &(b, k, n) in &[(1, 1, 3), (1, 37, 9), (1, 64, 40), (2, 19, 50), (4, 16, 2), (6, 131, 45), (9, 256, 70), (32, 64, 33)] {
            let x: Vec<f32> = (0..b * k).map(|_| rng::uniform(&mut r) as f32 - 0.5).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rng::uniform(&mut r) as f32 - 0.5).collect();
            let bias: Vec<f32> = (0..n).map(|_| rng::uniform(&mut r) as f32 - 0.5).collect();
            let want: Vec<u32> = (0..b)
                .flat_map(|i| (0..n).map(move |j| (i, j)))
                .map(|(i, j)| (bias[j] + canonical(&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k])).to_bits())
                .collect();
            for &kern in &builds {
                let mut out = vec![0f32; b * n];
                affine_with(kern, &x, k, &w, &bias, &mut out, Split::Always);
                assert!(out.iter().map(|v| v.to_bits()).eq(want.iter().copied()), "{b}x{k}x{n}");
                // Each row alone gives the same bits as in the batch.
                for i in 0..b {
                    let mut one = vec![0f32; n];
                    affine_with(kern, &x[i * k..(i + 1) * k], k, &w, &bias, &mut one, Split::Always);
                    assert!(one.iter().map(|v| v.to_bits()).eq(want[i * n..(i + 1) * n].iter().copied()));
                }
            }
        }
    }

    /// Every build of the float16 kernel widens weights exactly: on float16-representable weights it
    /// gives the float32 kernel's bits; on any float16 weights all builds agree.
    #[test]
    fn float16_weights_give_the_bits_of_their_float32_values() {
        let mut r = rng::stream(&[6, 1]);
        let mut builds: Vec<(Kernel<f32>, Kernel<f16>)> = vec![(portable, portable)];
        #[cfg(target_arch = "x86_64")]
        {
            if x86::has_avx2() {
                builds.push((x86::avx2, x86::avx2));
            }
            if x86::has_avx512() {
                builds.push((x86::avx512, x86::avx512));
            }
        }
        for &(b, k, n) in &[(1, 5, 3), (1, 37, 9), (1, 48, 35), (4, 16, 6), (6, 131, 45), (32, 64, 33)] {
            let x: Vec<f32> = (0..b * k).map(|_| rng::uniform(&mut r) as f32 - 0.5).collect();
            // Weights of every float16 kind: normal, subnormal, zero of both signs.
            let w16: Vec<f16> = (0..n * k)
                .map(|q| match q % 7 {
                    0 => f16::from_f32(1e-6 * (rng::uniform(&mut r) as f32 - 0.5)),
                    1 => f16::from_bits(0x8000),
                    _ => f16::from_f32(4.0 * (rng::uniform(&mut r) as f32 - 0.5)),
                })
                .collect();
            let w32: Vec<f32> = w16.iter().map(|h| h.to_f32()).collect();
            let bias: Vec<f32> = (0..n).map(|_| rng::uniform(&mut r) as f32 - 0.5).collect();
            let bits = |o: &[f32]| o.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let mut want = vec![0f32; b * n];
            affine_with::<f32>(portable, &x, k, &w32, &bias, &mut want, Split::Never);
            for &(k32, k16) in &builds {
                let (mut o32, mut o16) = (vec![0f32; b * n], vec![0f32; b * n]);
                affine_with(k32, &x, k, &w32, &bias, &mut o32, Split::Always);
                affine_with(k16, &x, k, &w16, &bias, &mut o16, Split::Always);
                assert_eq!(bits(&o32), bits(&want), "{b}x{k}x{n}");
                assert_eq!(bits(&o16), bits(&want), "{b}x{k}x{n}");
            }
        }
    }

    #[test]
    fn bit_identical_for_any_thread_count() {
        let mut r = rng::stream(&[8, 9]);
        for (b, k, n) in [(7, 300, 1001), (1, 600, 1001)] {
            let x: Vec<f32> = (0..b * k).map(|_| rng::uniform(&mut r) as f32 - 0.5).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rng::uniform(&mut r) as f32 - 0.5).collect();
            let bias = vec![0.25f32; n];
            let run = |t: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
                let mut out = vec![0f32; b * n];
                pool.install(|| affine_f32(&x, k, &w, &bias, &mut out, Split::Always));
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            let one = run(1);
            for t in [2, 3, 5] {
                assert_eq!(one, run(t), "{t} threads, batch {b}");
            }
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
        affine_f32(&x, k, &w, &bias, &mut out, Split::Never);
        for i in 0..b {
            for j in 0..n {
                let e: f64 = bias[j] as f64 + (0..k).map(|q| x[i * k + q] as f64 * w[j * k + q] as f64).sum::<f64>();
                assert!((out[i * n + j] as f64 - e).abs() < 1e-5, "{} vs {e}", out[i * n + j]);
            }
        }
    }
}

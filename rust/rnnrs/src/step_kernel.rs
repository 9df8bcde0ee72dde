//! The float32 product of the sampling loop's steps: `out (b, n) = x (b, k) · wᵀ + bias` for
//! PyTorch-layout weights `w (n, k)`, packed once into column panels ([`Panels`]), with every
//! output computed by one canonical sum, so that a row's result does not depend on the batch size,
//! on how rows are blocked, or on the number of threads (threads split the panels, never a sum).
//!
//! The canonical sum of output `j` of row `x`: `s = 0`, then `s = fma(x[q], w[j][q], s)` for
//! `q = 0, 1, …, k - 1` in order; the output is `bias[j] + s`. Fused multiply-adds are
//! exact-then-round on every CPU, so the three builds of the one generic kernel — AVX-512,
//! AVX2 + FMA, and portable (`f32::mul_add`) — give the same bits.
//!
//! The kernel is an outer product: a tile of `RB` input rows × `CV` vectors of 16 outputs keeps
//! its `RB · CV` sums in registers; each step `q` loads `CV` vectors of weights (one row of the
//! panel, contiguous) and broadcasts one input value per row. There is no horizontal reduction,
//! and a 6 × 4 AVX-512 tile issues 24 multiply-adds per 10 loads: at batch 32 the product runs at
//! ~93 % of the core's FMA peak (single thread, weights in cache; the dot-product form it replaced,
//! 4 × 4 tiles of 16-lane partial sums reduced at the end, reached 55–60 %). At batch 1 it streams
//! each panel front to back (memory-bound).
//!
//! The same kernel also reads half-precision weights (`w` as IEEE binary16, [`half::f16`]): each
//! weight is widened to float32 exactly on load (`vcvtph2ps`, or [`half::f16::to_f32`] in the
//! portable build) and the float32 sum above runs unchanged, so weights that are exactly
//! representable in float16 give the same bits as their float32 copy — at half the bytes streamed.

#![allow(clippy::needless_range_loop)] // index loops over lanes and tiles read most clearly here

use crate::aligned::Aligned;
use crate::crew::{share, Crew};
use half::f16;
use rayon::prelude::*;

/// Lanes of a vector.
const L: usize = 16;
/// Output columns per panel.
const P: usize = 64;
/// Products with at least this many multiply-adds are split over threads (by panels), as the
/// caller allows ([`Split`]).
const PARALLEL_MIN_WORK: usize = 1 << 19;

/// A weight matrix `w (n, k)` packed for the kernel: panel `p` holds columns `64p .. 64p + 64` of
/// `wᵀ` as `k` rows of 64 values (`w[64p + c][q]` at `(p · k + q) · 64 + c`), zero beyond `n`; the
/// whole starts on a cache line.
pub(crate) struct Panels<W> {
    data: Aligned<W>,
    n: usize,
    k: usize,
}

impl<W: Copy + Default> Panels<W> {
    /// Pack the row-major `w (n, k)`.
    pub(crate) fn new(w: &[W], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "panels: shape");
        let mut data = Aligned::zeros(n.div_ceil(P) * k * P);
        for (j, row) in w.chunks_exact(k.max(1)).enumerate().take(n) {
            let (p, c) = (j / P, j % P);
            let panel = &mut data[p * k * P..(p + 1) * k * P];
            for (q, &v) in row.iter().enumerate() {
                panel[q * P + c] = v;
            }
        }
        Panels { data, n, k }
    }
}

impl<W> std::fmt::Debug for Panels<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Panels({} x {})", self.n, self.k)
    }
}

/// Sixteen float32 lanes: the operations the kernel needs, for each build.
trait Lanes: Copy {
    /// # Safety (all methods)
    /// The CPU supports the build's instructions; `load`/`store` access 16 values at `p`.
    unsafe fn zero() -> Self;
    unsafe fn splat(v: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    /// 16 float16 values at `p`, widened exactly.
    unsafe fn load_f16(p: *const f16) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// `a · b + c`, one rounding.
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    unsafe fn add(a: Self, b: Self) -> Self;
    unsafe fn array(self) -> [f32; L];
}

/// A stored weight: float32, or float16 widened exactly to float32 on load.
trait Weight: Copy + Send + Sync + 'static {
    /// # Safety
    /// As [`Lanes::load`]: 16 readable weights at `p`, the build's instructions available.
    unsafe fn load<V: Lanes>(p: *const Self) -> V;
}

impl Weight for f32 {
    #[inline(always)]
    unsafe fn load<V: Lanes>(p: *const f32) -> V {
        // SAFETY: forwarded.
        unsafe { V::load(p) }
    }
}

impl Weight for f16 {
    #[inline(always)]
    unsafe fn load<V: Lanes>(p: *const f16) -> V {
        // SAFETY: forwarded.
        unsafe { V::load_f16(p) }
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
    unsafe fn splat(v: f32) -> Self {
        Portable([v; L])
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
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller guarantees 16 writable values.
        unsafe { std::ptr::write_unaligned(p.cast::<[f32; L]>(), self.0) }
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|l| a.0[l].mul_add(b.0[l], c.0[l])))
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        Portable(std::array::from_fn(|l| a.0[l] + b.0[l]))
    }
    #[inline(always)]
    unsafe fn array(self) -> [f32; L] {
        self.0
    }
}

/// Outputs `col0 .. col0 + 16 · CV` (those below `n`) of rows `i .. i + RB`: `w` points to the
/// panel's first value of those columns.
///
/// # Safety
/// The build's instructions are available; rows `i .. i + RB` of `x (·, k)` exist; `w` reads
/// `(k - 1) · 64 + 16 · CV` values; `out` as for [`panels`], owning these columns.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<V: Lanes, W: Weight, const RB: usize, const CV: usize>(x: &[f32], i: usize, k: usize, w: *const W, col0: usize, bias: &[f32], out: &Out) {
    let n = bias.len();
    assert!((i + RB) * k <= x.len());
    // SAFETY: in bounds (checked above and by the caller); the build's instructions are available.
    unsafe {
        let xp = x.as_ptr().add(i * k);
        let mut acc = [[V::zero(); CV]; RB];
        for q in 0..k {
            let mut wv = [V::zero(); CV];
            for c in 0..CV {
                wv[c] = W::load::<V>(w.add(q * P + c * L));
            }
            for r in 0..RB {
                let xv = V::splat(*xp.add(r * k + q));
                for c in 0..CV {
                    acc[r][c] = V::fma(xv, wv[c], acc[r][c]);
                }
            }
        }
        for r in 0..RB {
            let o = out.0.add((i + r) * n);
            for c in 0..CV {
                let j = col0 + c * L;
                if j + L <= n {
                    V::add(V::load(bias.as_ptr().add(j)), acc[r][c]).store(o.add(j));
                } else if j < n {
                    let a = acc[r][c].array();
                    for l in 0..n - j {
                        *o.add(j + l) = bias[j + l] + a[l];
                    }
                }
            }
        }
    }
}

/// Panels `p0..p1` of `out (b, n)`: every row, in tiles of `RB` rows (then 2, then 1) × `CV`
/// vectors.
///
/// # Safety
/// The build's instructions are available; `out` points to `b · n` values of which this call owns
/// the columns of panels `p0..p1`.
#[inline(always)]
unsafe fn panels<V: Lanes, W: Weight, const RB: usize, const CV: usize>(x: &[f32], w: &Panels<W>, bias: &[f32], p0: usize, p1: usize, out: &Out) {
    let (n, k) = (w.n, w.k);
    let b = x.len() / k;
    assert!(bias.len() == n && p1 <= n.div_ceil(P) && w.data.len() == n.div_ceil(P) * k * P);
    // SAFETY (the `tile` calls): panel `p` holds `k · 64` values, so `w` reads stay inside it;
    // rows are below `b`; the rest is forwarded from the caller.
    unsafe {
        for p in p0..p1 {
            for sub in (0..P).step_by(L * CV) {
                let col0 = p * P + sub;
                if col0 >= n {
                    break;
                }
                let wp = w.data.as_ptr().add(p * k * P + sub);
                let mut i = 0;
                while i + RB <= b {
                    tile::<V, W, RB, CV>(x, i, k, wp, col0, bias, out);
                    i += RB;
                }
                while i + 2 <= b {
                    tile::<V, W, 2, CV>(x, i, k, wp, col0, bias, out);
                    i += 2;
                }
                if i < b {
                    tile::<V, W, 1, CV>(x, i, k, wp, col0, bias, out);
                }
            }
        }
    }
}

/// The output pointer, shared by the threads that write disjoint column ranges.
struct Out(*mut f32);
// SAFETY: only used inside `affine_with` while `out` is mutably borrowed, with disjoint columns per
// thread.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

type Kernel<W> = fn(&[f32], &Panels<W>, &[f32], usize, usize, &Out);

fn portable<W: Weight>(x: &[f32], w: &Panels<W>, bias: &[f32], p0: usize, p1: usize, out: &Out) {
    // SAFETY: portable code needs no CPU feature; `affine_with` owns `out` and splits panels.
    unsafe { panels::<Portable, W, 2, 1>(x, w, bias, p0, p1, out) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{panels, Lanes, Out, Panels, Weight, L};
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
        unsafe fn splat(v: f32) -> Self {
            // SAFETY: AVX-512F (caller).
            Avx512(unsafe { _mm512_set1_ps(v) })
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
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: 16 writable values (caller).
            unsafe { _mm512_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: AVX-512F (caller).
            Avx512(unsafe { _mm512_fmadd_ps(a.0, b.0, c.0) })
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            // SAFETY: AVX-512F (caller).
            Avx512(unsafe { _mm512_add_ps(a.0, b.0) })
        }
        #[inline(always)]
        unsafe fn array(self) -> [f32; L] {
            // SAFETY: `__m512` is 16 `f32`s.
            unsafe { std::mem::transmute::<__m512, [f32; L]>(self.0) }
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
        unsafe fn splat(v: f32) -> Self {
            // SAFETY: AVX (caller).
            unsafe {
                let a = _mm256_set1_ps(v);
                Avx2(a, a)
            }
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
        unsafe fn store(self, p: *mut f32) {
            // SAFETY: 16 writable values (caller).
            unsafe {
                _mm256_storeu_ps(p, self.0);
                _mm256_storeu_ps(p.add(8), self.1);
            }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: FMA (caller).
            unsafe { Avx2(_mm256_fmadd_ps(a.0, b.0, c.0), _mm256_fmadd_ps(a.1, b.1, c.1)) }
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            // SAFETY: AVX (caller).
            unsafe { Avx2(_mm256_add_ps(a.0, b.0), _mm256_add_ps(a.1, b.1)) }
        }
        #[inline(always)]
        unsafe fn array(self) -> [f32; L] {
            // SAFETY: two `__m256` are 16 `f32`s.
            unsafe { std::mem::transmute::<[__m256; 2], [f32; L]>([self.0, self.1]) }
        }
    }

    // Tiles: AVX-512 6 rows × 4 vectors (24 sums, 4 weight vectors and a broadcast: 29 of 32
    // registers); AVX2 4 rows × 1 vector pair (8 sums + 2 + 1 of 16 registers).
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn avx512_impl<W: Weight>(x: &[f32], w: &Panels<W>, bias: &[f32], p0: usize, p1: usize, out: &Out) {
        // SAFETY: AVX-512F and FMA are enabled here; `out` as for `panels`.
        unsafe { panels::<Avx512, W, 6, 4>(x, w, bias, p0, p1, out) }
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn avx2_impl<W: Weight>(x: &[f32], w: &Panels<W>, bias: &[f32], p0: usize, p1: usize, out: &Out) {
        // SAFETY: AVX2, FMA and F16C are enabled here; `out` as for `panels`.
        unsafe { panels::<Avx2, W, 4, 1>(x, w, bias, p0, p1, out) }
    }
    pub(super) fn avx512<W: Weight>(x: &[f32], w: &Panels<W>, bias: &[f32], p0: usize, p1: usize, out: &Out) {
        // SAFETY: chosen by `kernel()` only when the CPU has AVX-512F and FMA.
        unsafe { avx512_impl(x, w, bias, p0, p1, out) }
    }
    pub(super) fn avx2<W: Weight>(x: &[f32], w: &Panels<W>, bias: &[f32], p0: usize, p1: usize, out: &Out) {
        // SAFETY: chosen by `kernel()` only when the CPU has AVX2, FMA and F16C.
        unsafe { avx2_impl(x, w, bias, p0, p1, out) }
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

/// `out (b, n) = x (b, k) · wᵀ + bias` for the packed `w (n, k)`; bit-identical per row for any
/// `b`, any number of threads and any of the CPU-specific builds.
pub(crate) fn affine_f32(x: &[f32], w: &Panels<f32>, bias: &[f32], out: &mut [f32], split: Split) {
    affine_with(kernel(), x, w, bias, out, split)
}

/// [`affine_f32`] with float16 weights (widened exactly): the same bits as `affine_f32` on the
/// float32 values of `w`.
pub(crate) fn affine_f16(x: &[f32], w: &Panels<f16>, bias: &[f32], out: &mut [f32], split: Split) {
    affine_with(kernel(), x, w, bias, out, split)
}

fn affine_with<W: Weight>(kern: Kernel<W>, x: &[f32], w: &Panels<W>, bias: &[f32], out: &mut [f32], split: Split) {
    let (n, k) = (w.n, w.k);
    let b = x.len() / k;
    assert!(bias.len() == n && out.len() == b * n && x.len() == b * k, "affine: shapes");
    let np = n.div_ceil(P);
    let o = Out(out.as_mut_ptr());
    let threads = rayon::current_num_threads();
    let split = match split {
        Split::Never => false,
        Split::Batches => b >= 4,
        Split::Always => true,
        Split::Crew(crew) => {
            let members = crew.members();
            crew.run(&|m| {
                let (p0, p1) = share(np, members, m, 1);
                if p0 < p1 {
                    kern(x, w, bias, p0, p1, &o)
                }
            });
            return;
        }
    };
    if threads > 1 && b * n * k >= PARALLEL_MIN_WORK && split {
        (0..threads).into_par_iter().for_each(|m| {
            let (p0, p1) = share(np, threads, m, 1);
            if p0 < p1 {
                kern(x, w, bias, p0, p1, &o)
            }
        });
    } else {
        kern(x, w, bias, 0, np, &o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng;

    /// The canonical sum, written out plainly.
    fn canonical(x: &[f32], w: &[f32]) -> f32 {
        x.iter().zip(w).fold(0f32, |s, (&a, &b)| a.mul_add(b, s))
    }

    fn builds<W: Weight>() -> Vec<Kernel<W>> {
        let mut builds: Vec<Kernel<W>> = vec![portable];
        #[cfg(target_arch = "x86_64")]
        {
            if x86::has_avx2() {
                builds.push(x86::avx2);
            }
            if x86::has_avx512() {
                builds.push(x86::avx512);
            }
        }
        builds
    }

    fn values(r: &mut rng::Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng::uniform(r) as f32 - 0.5).collect()
    }

    /// Shapes with full and partial panels and vectors, and every remainder of the row tiles.
    const SHAPES: &[(usize, usize, usize)] =
        &[(1, 1, 3), (1, 37, 9), (1, 64, 70), (2, 19, 50), (3, 16, 2), (5, 131, 45), (7, 256, 130), (9, 3, 64), (32, 64, 200)];

    #[test]
    fn every_build_and_tiling_gives_the_canonical_bits() {
        let mut r = rng::stream(&[5, 7]);
        for &(b, k, n) in SHAPES {
            let (x, w, bias) = (values(&mut r, b * k), values(&mut r, n * k), values(&mut r, n));
            let packed = Panels::new(&w, n, k);
            let want: Vec<u32> = (0..b)
                .flat_map(|i| (0..n).map(move |j| (i, j)))
                .map(|(i, j)| (bias[j] + canonical(&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k])).to_bits())
                .collect();
            for kern in builds::<f32>() {
                let mut out = vec![0f32; b * n];
                affine_with(kern, &x, &packed, &bias, &mut out, Split::Always);
                assert!(out.iter().map(|v| v.to_bits()).eq(want.iter().copied()), "{b}x{k}x{n}");
                // Each row alone gives the same bits as in the batch.
                for i in 0..b {
                    let mut one = vec![0f32; n];
                    affine_with(kern, &x[i * k..(i + 1) * k], &packed, &bias, &mut one, Split::Always);
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
        for &(b, k, n) in SHAPES {
            let x = values(&mut r, b * k);
            // Weights of every float16 kind: normal, subnormal, zero of both signs.
            let w16: Vec<f16> = (0..n * k)
                .map(|q| match q % 7 {
                    0 => f16::from_f32(1e-6 * (rng::uniform(&mut r) as f32 - 0.5)),
                    1 => f16::from_bits(0x8000),
                    _ => f16::from_f32(4.0 * (rng::uniform(&mut r) as f32 - 0.5)),
                })
                .collect();
            let w32: Vec<f32> = w16.iter().map(|h| h.to_f32()).collect();
            let bias = values(&mut r, n);
            let (p32, p16) = (Panels::new(&w32, n, k), Panels::new(&w16, n, k));
            let bits = |o: &[f32]| o.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let mut want = vec![0f32; b * n];
            affine_with::<f32>(portable, &x, &p32, &bias, &mut want, Split::Never);
            for (k32, k16) in builds::<f32>().into_iter().zip(builds::<f16>()) {
                let (mut o32, mut o16) = (vec![0f32; b * n], vec![0f32; b * n]);
                affine_with(k32, &x, &p32, &bias, &mut o32, Split::Always);
                affine_with(k16, &x, &p16, &bias, &mut o16, Split::Always);
                assert_eq!(bits(&o32), bits(&want), "{b}x{k}x{n}");
                assert_eq!(bits(&o16), bits(&want), "{b}x{k}x{n}");
            }
        }
    }

    #[test]
    fn bit_identical_for_any_thread_count() {
        let mut r = rng::stream(&[8, 9]);
        for (b, k, n) in [(7, 300, 1001), (1, 600, 1001)] {
            let (x, w) = (values(&mut r, b * k), values(&mut r, n * k));
            let packed = Panels::new(&w, n, k);
            let bias = vec![0.25f32; n];
            let run = |t: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
                let mut out = vec![0f32; b * n];
                pool.install(|| affine_f32(&x, &packed, &bias, &mut out, Split::Always));
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
        let (x, w) = (values(&mut r, b * k), values(&mut r, n * k));
        let bias: Vec<f32> = (0..n).map(|_| rng::uniform(&mut r) as f32).collect();
        let mut out = vec![0f32; b * n];
        affine_f32(&x, &Panels::new(&w, n, k), &bias, &mut out, Split::Never);
        for i in 0..b {
            for j in 0..n {
                let e: f64 = bias[j] as f64 + (0..k).map(|q| x[i * k + q] as f64 * w[j * k + q] as f64).sum::<f64>();
                assert!((out[i * n + j] as f64 - e).abs() < 1e-5, "{} vs {e}", out[i * n + j]);
            }
        }
    }

    #[test]
    fn panels_hold_the_transposed_weights_padded_with_zeros() {
        let (n, k) = (70, 3);
        let w: Vec<f32> = (0..n * k).map(|v| v as f32 + 1.0).collect();
        let p = Panels::new(&w, n, k);
        assert_eq!(p.data.len(), 2 * k * P);
        for j in 0..2 * P {
            for q in 0..k {
                let want = if j < n { w[j * k + q] } else { 0.0 };
                assert_eq!(p.data[(j / P * k + q) * P + j % P], want, "column {j}, input {q}");
            }
        }
    }
}

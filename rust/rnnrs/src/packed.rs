//! The per-step products of the time loops, `c (m, n) (+)= a (m, k) · B (k, n)`, against a
//! right-hand side packed once per call.
//!
//! Every step of a recurrence multiplies a few rows of states by the same weight matrix (`W_hhᵀ`
//! forward, `W_hh` backward). General GEMM kernels re-pack or re-stride that matrix on every call
//! and are tuned for large `m`; at the 16–64 rows of a step they reach ~80 % of the FMA peak. Here
//! the matrix is laid out once in panels of 64 columns, each panel `k` rows of 64 contiguous values
//! (zero-padded past `n`), and an AVX-512 microkernel computes 6 × 64 tiles of `c` with 24
//! accumulators: per `k`, four panel loads and six broadcasts feed 24 fused multiply-adds. Panels
//! are the outer loop, and each is taken 128 rows (32 KiB, L1-resident) at a time by every tile of
//! a group of rows. Measured at (16·256)·(256·1024) on one core: 220 GFLOP/s on Zen 5 (its FMA
//! peak) against 173 for the `gemm` crate; 161 of 217 on a Xeon (Sapphire Rapids class), where
//! the 128-row passes gained 4–5 % on L (`W_hh` 4 MiB) and nothing measurable on M.
//!
//! The same microkernel computes the weight gradients of a time loop, `dW += dGᵀ · X` summed over
//! every row of every step ([`add_transposed_product`]): there `k` is thousands of rows, and the
//! tiles read `dG` in place, column strips of its rows, against panels of `X` copied 128 rows at
//! a time.
//!
//! Each output of a per-step product is one dot product summed in ascending `k` from zero (then
//! added to `c` when accumulating), whatever `m`, the row grouping or the thread count — so a
//! row's result does not depend on the batch it is in. Without AVX-512 (or for `f64`) the products
//! go through [`crate::linalg::gemm_serial`] on a contiguous copy, and the weight gradients through
//! [`crate::linalg::gemm`].

use crate::aligned::Aligned;
use crate::element::Element;
use crate::linalg::gemm_serial;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;
use std::any::TypeId;

/// Columns per panel (four 16-lane vectors).
const NR: usize = 64;
/// Rows per microkernel tile.
const MR: usize = 6;

/// A right-hand side `B (k, n)` ready for repeated products.
#[derive(Clone, Debug)]
pub(crate) struct PackedRhs<F> {
    k: usize,
    n: usize,
    repr: Repr<F>,
}

#[derive(Clone, Debug)]
enum Repr<F> {
    /// `ceil(n / 64)` panels of `(k, 64)` float32 values.
    Panels(Aligned<f32>),
    /// A row-major copy for the general kernel.
    Dense(Array2<F>),
}

/// `s` as `f32` values, when `F` is `f32`.
fn as_f32<F: Element>(s: &[F]) -> Option<&[f32]> {
    // SAFETY: `F` is `f32` (checked), so the slice already is a `[f32]`.
    (TypeId::of::<F>() == TypeId::of::<f32>()).then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len()) })
}

fn as_f32_mut<F: Element>(s: &mut [F]) -> Option<&mut [f32]> {
    // SAFETY: as for `as_f32`.
    (TypeId::of::<F>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast(), s.len()) })
}

/// Whether this CPU runs the AVX-512 microkernel.
fn has_kernel() -> bool {
    crate::activation::has_avx512()
}

/// The per-core L2 cache in bytes, read once from sysfs (`cpu0/cache/index2`; 1 MiB when that
/// is not available). The time loops use it to keep their per-step weights cache-resident.
pub(crate) fn l2_bytes() -> usize {
    use std::sync::OnceLock;
    static L2: OnceLock<usize> = OnceLock::new();
    *L2.get_or_init(|| {
        std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index2/size").ok().and_then(|s| parse_cache_size(&s)).unwrap_or(1 << 20)
    })
}

/// A sysfs cache size such as `2048K` or `2M`, in bytes.
fn parse_cache_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 1 << 10),
        b'M' => (&s[..s.len() - 1], 1 << 20),
        b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits.parse::<usize>().ok().filter(|&v| v > 0).map(|v| v * unit)
}

/// Whether `bytes` of per-step weights fit in half the L2, leaving the other half for the rows
/// and results that pass through it with them.
pub(crate) fn fits_half_l2(bytes: usize) -> bool {
    bytes <= l2_bytes() / 2
}

/// The bytes `PackedRhs::new` holds for a `(k, n)` float32 right-hand side.
pub(crate) fn panel_bytes(k: usize, n: usize) -> usize {
    n.div_ceil(NR) * k * NR * std::mem::size_of::<f32>()
}

impl<F: Element> PackedRhs<F> {
    /// Pack `b (k, n)` (any strides).
    pub(crate) fn new(b: ArrayView2<'_, F>) -> Self {
        Self::build(b, has_kernel())
    }

    /// Pack `b`, in panels if `panels` and `F` is `f32` (tests call this to check both kernels).
    fn build(b: ArrayView2<'_, F>, panels: bool) -> Self {
        let (k, n) = b.dim();
        let repr = if TypeId::of::<F>() == TypeId::of::<f32>() && panels {
            let panels = n.div_ceil(NR);
            let mut data = Aligned::<f32>::zeros(panels * k * NR);
            // Read `b` in memory order: by columns when it is a transposed view (the `W_hhᵀ` of
            // the forward pass), else by rows.
            if b.strides()[0] == 1 && k > 1 {
                for (j, col) in b.columns().into_iter().enumerate() {
                    let dst = data[(j / NR) * k * NR + j % NR..].iter_mut().step_by(NR);
                    dst.zip(col).for_each(|(d, &v)| *d = Element::to_f64(v) as f32);
                }
            } else {
                for (kk, row) in b.rows().into_iter().enumerate() {
                    for (p, dst) in data.chunks_exact_mut(k * NR).enumerate() {
                        let dst = &mut dst[kk * NR..kk * NR + NR.min(n - p * NR)];
                        let src = row.slice(ndarray::s![p * NR..p * NR + dst.len()]);
                        dst.iter_mut().zip(src).for_each(|(d, &v)| *d = Element::to_f64(v) as f32);
                    }
                }
            }
            Repr::Panels(data)
        } else {
            Repr::Dense(b.as_standard_layout().into_owned())
        };
        PackedRhs { k, n, repr }
    }

    /// Whether `B` is held in panels for the AVX-512 kernel (else products use the general one).
    pub(crate) fn is_packed(&self) -> bool {
        matches!(self.repr, Repr::Panels(_))
    }

    /// `c = a · B` (`accumulate == false`) or `c += a · B`, for row-major contiguous `a (m, k)` and
    /// `c (m, n)`.
    pub(crate) fn mul(&self, a: &[F], c: &mut [F], accumulate: bool) {
        product(&[(a, self)], c, if accumulate { Start::Accumulate } else { Start::Zero });
    }
}

/// What a product adds its sum to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Start<'a, F> {
    /// Nothing: `c = Σ`.
    Zero,
    /// The old values: `c = c + Σ`.
    Accumulate,
    /// A bias row: `c[i, j] = bias[j] + Σ`.
    Bias(&'a [F]),
}

/// `c = start + Σ_p a_p · B_p` over one or two parts (`a_p (m, k_p)` row-major contiguous, all
/// `B_p` with the same `n`). Each output sums part by part, each in ascending `k` from zero, and
/// adds the start last.
pub(crate) fn product<F: Element>(parts: &[(&[F], &PackedRhs<F>)], c: &mut [F], start: Start<'_, F>) {
    assert!(!parts.is_empty() && parts.len() <= 2, "packed product: {} parts", parts.len());
    let n = parts[0].1.n;
    let m = c.len() / n.max(1);
    for (a, b) in parts {
        assert!(b.n == n && a.len() == m * b.k && c.len() == m * n, "packed product: a {} values, c {}, B ({}, {})", a.len(), c.len(), b.k, b.n);
    }
    if let Start::Bias(bias) = start {
        assert_eq!(bias.len(), n, "packed product: bias length");
    }
    // Panels for every part (they are built for all `PackedRhs<f32>` or for none), gathered
    // without allocating: this runs once per time step.
    let mut a32 = [(&[][..], 0usize, &[][..]); 2];
    let mut packed = 0;
    for (slot, (a, b)) in a32.iter_mut().zip(parts) {
        if let (Repr::Panels(p), Some(a)) = (&b.repr, as_f32(a)) {
            *slot = (a, b.k, &p[..]);
            packed += 1;
        }
    }
    if packed == parts.len() && m > 0 && n > 0 {
        #[cfg(target_arch = "x86_64")]
        {
            let start32 = match start {
                Start::Zero => x86::Start::Zero,
                Start::Accumulate => x86::Start::Accumulate,
                Start::Bias(bias) => x86::Start::Bias(as_f32(bias).expect("f32 panels").as_ptr()),
            };
            // SAFETY: panels exist only when the CPU has AVX-512F (`has_kernel`) and `F` is f32;
            // the shapes were checked above.
            unsafe { x86::product(m, n, &a32[..parts.len()], as_f32_mut(c).expect("f32 panels"), start32) };
            return;
        }
    }
    // The general kernel, part by part.
    for (i, (a, b)) in parts.iter().enumerate() {
        let Repr::Dense(bd) = &b.repr else {
            unreachable!("f32 panels are built for every part or for none")
        };
        let av = ArrayView2::from_shape((m, b.k), a).expect("(m, k)");
        let mut cv = ArrayViewMut2::from_shape((m, n), &mut *c).expect("(m, n)");
        let beta = match (i, start) {
            (0, Start::Zero) => F::zero(),
            (0, Start::Bias(bias)) => {
                cv.rows_mut().into_iter().for_each(|mut r| r.iter_mut().zip(bias).for_each(|(v, &bb)| *v = bb));
                F::one()
            }
            _ => F::one(),
        };
        gemm_serial(F::one(), &av, &bd.view(), beta, &mut cv);
    }
}

/// [`product`] whose every output's summation order depends only on `k`, never on `m` or `n`:
/// the column-split time loops give each thread its own columns, whose number changes with the
/// thread count. Panels already have that property; the general kernel (whose blocking depends on
/// the shape) is replaced by plain loops, each output summed part by part in ascending `k` from
/// zero, then added to the start. `scratch` holds one row (grown once, not per call).
pub(crate) fn product_by_columns<F: Element>(parts: &[(&[F], &PackedRhs<F>)], c: &mut [F], start: Start<'_, F>, scratch: &mut Vec<F>) {
    if parts.iter().all(|(_, b)| b.is_packed()) {
        return product(parts, c, start);
    }
    let n = parts[0].1.n;
    let m = c.len() / n.max(1);
    if n == 0 {
        return;
    }
    if scratch.len() < n {
        scratch.resize(n, F::zero());
    }
    let acc = &mut scratch[..n];
    for (i, crow) in c.chunks_exact_mut(n).enumerate().take(m) {
        acc.fill(F::zero());
        for (a, b) in parts {
            let Repr::Dense(bd) = &b.repr else {
                unreachable!("f32 panels are built for every part or for none")
            };
            let bd = bd.as_slice().expect("a row-major copy");
            for (kk, &av) in a[i * b.k..(i + 1) * b.k].iter().enumerate() {
                for (s, &bv) in acc.iter_mut().zip(&bd[kk * n..(kk + 1) * n]) {
                    *s += av * bv;
                }
            }
        }
        match start {
            Start::Zero => crow.copy_from_slice(acc),
            Start::Accumulate => crow.iter_mut().zip(acc.iter()).for_each(|(v, &s)| *v += s),
            Start::Bias(bias) => crow.iter_mut().zip(acc.iter().zip(bias)).for_each(|(v, (&s, &bb))| *v = bb + s),
        }
    }
}

/// `c (m, n) += aᵀ · b` for `a (k, m)` and `b (k, n)`, and `sums (m) += Σ_k a[k, ..]` when given:
/// the weight and bias gradients `dW += dGᵀ · X`, `db += Σ_t dG` of a time loop, whose `k` is every
/// row of every time step. With AVX-512, float32 and rows of unit stride, the rows of `c` are split
/// over the threads and each output is one sum over `k` in fixed passes (see
/// `x86::add_transposed_product`); each column sum runs in ascending `k` from the old value, as
/// `sum_axis` does. Either way the bits do not depend on the thread count.
pub(crate) fn add_transposed_product<F: Element>(a: ArrayView2<'_, F>, b: ArrayView2<'_, F>, c: &mut ArrayViewMut2<'_, F>, sums: Option<&mut [F]>) {
    let ((k, m), (k2, n)) = (a.dim(), b.dim());
    assert!(k == k2 && c.dim() == (m, n), "transposed product: aᵀ {:?} · b {:?} -> {:?}", a.t().dim(), b.dim(), c.dim());
    if let Some(s) = &sums {
        assert_eq!(s.len(), m, "transposed product: sums length");
    }
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let unit_rows = |s: &[isize]| s[1] == 1 && s[0] >= 0;
        if has_kernel() && TypeId::of::<F>() == TypeId::of::<f32>() && unit_rows(a.strides()) && unit_rows(b.strides()) && unit_rows(c.strides()) {
            let threads = if m * n * k >= crate::linalg::PARALLEL_MIN_WORK { rayon::current_num_threads() } else { 1 };
            let chunk = m.div_ceil(threads).next_multiple_of(MR);
            let (lda, ldb, ldc) = (a.strides()[0] as usize, b.strides()[0] as usize, c.strides()[0] as usize);
            // Addresses as integers, to cross threads; each chunk writes its own rows of `c` and
            // values of `sums` only.
            let (ap, bp, cp) = (a.as_ptr() as usize, b.as_ptr() as usize, c.as_mut_ptr() as usize);
            let sp = sums.map(|s| s.as_mut_ptr() as usize);
            let size = std::mem::size_of::<f32>();
            (0..m.div_ceil(chunk)).into_par_iter().for_each(|j| {
                let (m0, m1) = (j * chunk, ((j + 1) * chunk).min(m));
                // SAFETY: AVX-512F (`has_kernel`) and `F == f32` were checked; the pointers are
                // the views' own with their strides, offset to columns (of `a`) and rows (of `c`)
                // `m0..m1`, which no other chunk touches.
                unsafe {
                    x86::add_transposed_product(
                        k, m1 - m0, n,
                        (ap + m0 * size) as *const f32, lda,
                        bp as *const f32, ldb,
                        (cp + m0 * ldc * size) as *mut f32, ldc,
                        sp.map(|s| (s + m0 * size) as *mut f32),
                    );
                }
            });
            return;
        }
    }
    crate::linalg::gemm(F::one(), &a.t(), &b, F::one(), c);
    if let Some(sums) = sums {
        for row in a.rows() {
            sums.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// Depth of one pass over a panel: 128 rows of 64 values (32 KiB) stay in L1 while every tile
    /// of a row group reads them, instead of streaming the whole panel from L2 once per tile.
    const KC: usize = 128;
    /// Rows per group of tiles sharing a pass (their partial sums wait in a 12 KiB scratch).
    const MB: usize = 8 * MR;

    /// What a product adds its sum to (see [`super::Start`]); the bias points to `n` values.
    #[derive(Clone, Copy)]
    pub(super) enum Start {
        Zero,
        Accumulate,
        Bias(*const f32),
    }

    /// Where a pass over part of `k` leaves an `R × 64` tile's sums.
    #[derive(Clone, Copy)]
    enum Dest {
        /// In the scratch rows (stride 64), to be resumed by the next pass.
        Partial(*mut f32),
        /// In `c` (stride `n`, `cols` valid columns from the tile's first one), plus the start.
        Out { c: *mut f32, n: usize, cols: usize, bias: *const f32, start: Start },
    }

    /// One pass of an `R × 64` tile over panel rows `k0..k1`: `acc = (resume or 0) +
    /// Σ_kk a[r, kk] · panel[kk, ..]`, in ascending `kk`, left at `dest`.
    ///
    /// `a[r, kk]` is at `a + r·rs + kk·ks`: `(lda, 1)` for the rows of a row-major `a`, `(1, lda)`
    /// for its columns, read in place by [`add_transposed_product`].
    ///
    /// # Safety
    /// AVX-512F; `a` has `R` rows (stride `rs`) with columns `k0..k1` (stride `ks`), `panel` rows
    /// `k0..k1` of 64 values; `resume` and a partial `dest` point to `R` rows of 64 values; an
    /// output `dest` has `R` rows of stride `n` with `cols <= 64` writable values (and a bias
    /// `cols` values).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize>(a: *const f32, rs: usize, ks: usize, panel: *const f32, k0: usize, k1: usize, resume: Option<*const f32>, dest: Dest) {
        // SAFETY: every access is in bounds by the caller's promise; AVX-512F by the caller.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 4]; R];
            if let Some(src) = resume {
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    for (v, acc_v) in acc_r.iter_mut().enumerate() {
                        *acc_v = _mm512_loadu_ps(src.add(r * NR + v * 16));
                    }
                }
            }
            for kk in k0..k1 {
                let q = panel.add(kk * NR);
                let b = [_mm512_loadu_ps(q), _mm512_loadu_ps(q.add(16)), _mm512_loadu_ps(q.add(32)), _mm512_loadu_ps(q.add(48))];
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(r * rs + kk * ks));
                    for (acc_v, &b_v) in acc_r.iter_mut().zip(&b) {
                        *acc_v = _mm512_fmadd_ps(av, b_v, *acc_v);
                    }
                }
            }
            match dest {
                Dest::Partial(dst) => {
                    for (r, acc_r) in acc.iter().enumerate() {
                        for (v, &acc_v) in acc_r.iter().enumerate() {
                            _mm512_storeu_ps(dst.add(r * NR + v * 16), acc_v);
                        }
                    }
                }
                Dest::Out { c, n, cols, bias, start } => {
                    for (r, acc_r) in acc.iter().enumerate() {
                        for (v, &acc_v) in acc_r.iter().enumerate() {
                            let rem = cols.saturating_sub(v * 16).min(16);
                            if rem == 0 {
                                break;
                            }
                            let mask: __mmask16 = if rem == 16 { 0xffff } else { ((1u32 << rem) - 1) as u16 };
                            let out = c.add(r * n + v * 16);
                            let value = match start {
                                Start::Zero => acc_v,
                                Start::Accumulate => _mm512_add_ps(_mm512_maskz_loadu_ps(mask, out), acc_v),
                                Start::Bias(_) => _mm512_add_ps(_mm512_maskz_loadu_ps(mask, bias.add(v * 16)), acc_v),
                            };
                            _mm512_mask_storeu_ps(out, mask, value);
                        }
                    }
                }
            }
        }
    }

    /// [`tile`] for the first `min(rows, MR)` rows.
    ///
    /// # Safety
    /// As for [`tile`] with `R = min(rows, MR)`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_rows(rows: usize, a: *const f32, rs: usize, ks: usize, panel: *const f32, k0: usize, k1: usize, resume: Option<*const f32>, dest: Dest) {
        // SAFETY: the caller's promise for these `R` rows.
        unsafe {
            match rows.min(MR) {
                6 => tile::<6>(a, rs, ks, panel, k0, k1, resume, dest),
                5 => tile::<5>(a, rs, ks, panel, k0, k1, resume, dest),
                4 => tile::<4>(a, rs, ks, panel, k0, k1, resume, dest),
                3 => tile::<3>(a, rs, ks, panel, k0, k1, resume, dest),
                2 => tile::<2>(a, rs, ks, panel, k0, k1, resume, dest),
                _ => tile::<1>(a, rs, ks, panel, k0, k1, resume, dest),
            }
        }
    }

    /// `c (m, n) = start + Σ_parts a (m, k) · B`, each `B` as packed panels. Per panel and group
    /// of up to `MB` rows, the passes go part by part and `KC` rows of the panel at a time, every
    /// tile of the group taking each pass before the next: each output still sums part by part,
    /// each in ascending `k` from zero, so the bits are those of one unbroken loop.
    ///
    /// # Safety
    /// AVX-512F; per part `a.len() == m·k` and `panels.len() == ceil(n/64)·k·64`; `c.len() == m·n`;
    /// a bias points to `n` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn product(m: usize, n: usize, parts: &[(&[f32], usize, &[f32])], c: &mut [f32], start: Start) {
        let mut scratch = [0f32; MB * NR];
        let sp = scratch.as_mut_ptr();
        // (A part with k = 0 still takes one, empty, pass.)
        let passes: usize = parts.iter().map(|&(_, k, _)| k.div_ceil(KC).max(1)).sum();
        let cp = c.as_mut_ptr();
        for p in 0..n.div_ceil(NR) {
            let cols = (n - p * NR).min(NR);
            for g0 in (0..m).step_by(MB) {
                let g1 = (g0 + MB).min(m);
                let mut pass = 0;
                for &(a, k, panels) in parts {
                    for k0 in (0..k.max(1)).step_by(KC) {
                        let k1 = (k0 + KC).min(k);
                        let last = pass + 1 == passes;
                        let mut r = g0;
                        while r < g1 {
                            // SAFETY: rows `r..r+R` (R <= g1 - r) of `a` and `c`, panel `p`, and
                            // scratch rows `r - g0 ..` (< MB) are in bounds by the caller's
                            // promise; AVX-512F is enabled here.
                            unsafe {
                                let (ap, panel) = (a.as_ptr().add(r * k), panels.as_ptr().add(p * k * NR));
                                let part = sp.add((r - g0) * NR);
                                let resume = (pass > 0).then_some(part.cast_const());
                                let dest = if last {
                                    let bias = match start {
                                        Start::Bias(b) => b.add(p * NR),
                                        _ => std::ptr::null(),
                                    };
                                    Dest::Out { c: cp.add(r * n + p * NR), n, cols, bias, start }
                                } else {
                                    Dest::Partial(part)
                                };
                                tile_rows(g1 - r, ap, k, 1, panel, k0, k1, resume, dest);
                            }
                            r += MR;
                        }
                        pass += 1;
                    }
                }
            }
        }
    }

    /// Rows of `k` per pass of [`add_transposed_product`] (a pass's panel, 32 KiB, stays in L1).
    const KT: usize = 128;

    /// `c (m, n) += aᵀ · b` for row-major `a (k, m)` (row stride `lda`) and `b (k, n)` (row stride
    /// `ldb`), and `sums[j] += Σ_k a[k, j]` (ascending `k`) when given. `k` goes in passes of
    /// [`KT`] rows: each pass copies its rows of `b` into 64-column panels, then every `MR × 64`
    /// tile of `c` takes its pass sum (ascending `k` from zero, broadcasting `a` straight from its
    /// rows) and adds it to `c`. Each output's value depends only on its own column of `a` and of
    /// `b`, never on `m` or on where a caller splits it.
    ///
    /// Measured on Zen 5 against the `gemm` crate (2 threads, best of 24): 378–415 against
    /// 299–309 GFLOP/s at `(4096, 1024)ᵀ · (4096, 256)`, 374–403 against 302–356 at
    /// `(6400, 2048)ᵀ · (6400, 512)`. Copying `a` into strips as well was slower (283 and 324):
    /// the copies cost more than the L1 misses of reading rows 4–8 KiB apart.
    ///
    /// # Safety
    /// AVX-512F; `a` addresses `k` rows of `lda >= m` values, `b` `k` rows of `ldb >= n`, `c` `m`
    /// rows of `ldc >= n` writable values aliasing neither, and `sums` (if given) `m` values.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn add_transposed_product(k: usize, m: usize, n: usize, a: *const f32, lda: usize, b: *const f32, ldb: usize, c: *mut f32, ldc: usize, sums: Option<*mut f32>) {
        let panels = n.div_ceil(NR);
        // Padding columns of the last panel stay zero.
        let mut bp = crate::aligned::Aligned::<f32>::zeros(panels * KT * NR);
        for k0 in (0..k).step_by(KT) {
            let kc = (k - k0).min(KT);
            // SAFETY: rows `k0..k0+kc` of `a` and `b` are in bounds and the panels hold `KT` rows;
            // every tile's rows and columns are in bounds of `a` and `c`.
            unsafe {
                for kk in 0..kc {
                    let brow = std::slice::from_raw_parts(b.add((k0 + kk) * ldb), n);
                    for (p, src) in brow.chunks(NR).enumerate() {
                        bp[p * KT * NR + kk * NR..][..src.len()].copy_from_slice(src);
                    }
                    if let Some(sums) = sums {
                        let arow = std::slice::from_raw_parts(a.add((k0 + kk) * lda), m);
                        std::slice::from_raw_parts_mut(sums, m).iter_mut().zip(arow).for_each(|(s, &v)| *s += v);
                    }
                }
                for p in 0..panels {
                    let cols = (n - p * NR).min(NR);
                    let panel = bp.as_ptr().add(p * KT * NR);
                    for r in (0..m).step_by(MR) {
                        let dest = Dest::Out { c: c.add(r * ldc + p * NR), n: ldc, cols, bias: std::ptr::null(), start: Start::Accumulate };
                        tile_rows(m - r, a.add(k0 * lda + r), 1, lda, panel, 0, kc, None, dest);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &Array2<f64>, b: &Array2<f64>) -> Array2<f64> {
        a.dot(b)
    }

    #[test]
    fn cache_sizes_parse_as_sysfs_writes_them() {
        assert_eq!(parse_cache_size("2048K\n"), Some(2 << 20));
        assert_eq!(parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size("K"), None);
        assert_eq!(parse_cache_size("0K"), None);
        assert!(l2_bytes() >= 1 << 10);
    }

    #[test]
    fn matches_naive_product_for_ragged_shapes() {
        for &(m, k, n) in &[(1, 1, 1), (7, 5, 63), (6, 33, 64), (13, 17, 65), (16, 40, 130), (5, 0, 9)] {
            let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 7 + j * 3) % 13) as f64 - 6.0);
            let b = Array2::from_shape_fn((k, n), |(i, j)| ((i * 5 + j * 11) % 7) as f64 - 3.0);
            let want = naive(&a, &b);
            let (a32, b32) = (a.mapv(|v| v as f32), b.mapv(|v| v as f32));
            // Small integers: every partial sum is exact in f32, so any summation order agrees.
            let packed = PackedRhs::new(b32.t().t());
            let mut c = Array2::<f32>::from_elem((m, n), 1.0);
            packed.mul(a32.as_slice().unwrap(), c.as_slice_mut().unwrap(), true);
            assert_eq!(c.mapv(f64::from), &want + 1.0, "{m}x{k}x{n} accumulate");
            let mut c = Array2::<f32>::from_elem((m, n), f32::NAN);
            packed.mul(a32.as_slice().unwrap(), c.as_slice_mut().unwrap(), false);
            assert_eq!(c.mapv(f64::from), want, "{m}x{k}x{n} overwrite");
            // f64 goes through the general kernel.
            let mut c = Array2::<f64>::zeros((m, n));
            PackedRhs::new(b.view()).mul(a.as_slice().unwrap(), c.as_slice_mut().unwrap(), false);
            assert_eq!(c, want);
        }
    }

    #[test]
    fn panels_agree_with_the_general_kernel() {
        let (m, k, n) = (37, 300, 130);
        let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 31 + j * 17) % 101) as f32 / 50.0 - 1.0);
        let b = Array2::from_shape_fn((k, n), |(i, j)| ((i * 13 + j * 29) % 97) as f32 / 48.0 - 1.0);
        let run = |panels: bool| {
            let packed = PackedRhs::build(b.t().t(), panels);
            assert_eq!(matches!(packed.repr, Repr::Panels(_)), panels && has_kernel());
            let mut c = Array2::<f32>::from_elem((m, n), 0.5);
            packed.mul(a.as_slice().unwrap(), c.as_slice_mut().unwrap(), true);
            c
        };
        let (general, panels) = (run(false), run(true));
        let exact = a.mapv(f64::from).dot(&b.mapv(f64::from)) + 0.5;
        for ((g, p), e) in general.iter().zip(&panels).zip(&exact) {
            assert!((f64::from(*g) - e).abs() < 1e-4 && (f64::from(*p) - e).abs() < 1e-4, "{g} {p} {e}");
        }
    }

    #[test]
    fn two_parts_and_a_bias_match_the_naive_sum() {
        let (m, k1, k2, n) = (11, 19, 70, 100);
        let int = |r: usize, c: usize, s: usize| ((r * 7 + c * s) % 9) as f32 - 4.0;
        let a1 = Array2::from_shape_fn((m, k1), |(i, j)| int(i, j, 3));
        let a2 = Array2::from_shape_fn((m, k2), |(i, j)| int(i, j, 5));
        let b1 = Array2::from_shape_fn((k1, n), |(i, j)| int(i, j, 2));
        let b2 = Array2::from_shape_fn((k2, n), |(i, j)| int(j, i, 4));
        let bias: Vec<f32> = (0..n).map(|j| j as f32 - 50.0).collect();
        let want = a1.dot(&b1) + a2.dot(&b2) + ndarray::ArrayView1::from(&bias[..]);
        for panels in [false, true] {
            let (p1, p2) = (PackedRhs::build(b1.view(), panels), PackedRhs::build(b2.t().t(), panels));
            let mut c = Array2::<f32>::from_elem((m, n), f32::NAN);
            let parts = [(a1.as_slice().unwrap(), &p1), (a2.as_slice().unwrap(), &p2)];
            product(&parts, c.as_slice_mut().unwrap(), Start::Bias(&bias));
            assert_eq!(c, want, "panels: {panels}");
        }
    }

    #[test]
    fn panels_give_the_bits_of_one_fused_multiply_add_loop_per_output() {
        // More rows than a group of tiles and deeper than one pass over a panel, in both parts.
        let (m, k1, k2, n) = (53, 140, 300, 70);
        let val = |r: usize, c: usize, s: usize| ((r * 7919 + c * s) % 1000) as f32 / 997.0 - 0.5;
        let a1 = Array2::from_shape_fn((m, k1), |(i, j)| val(i, j, 104_729));
        let a2 = Array2::from_shape_fn((m, k2), |(i, j)| val(i, j, 1_299_709));
        let b1 = Array2::from_shape_fn((k1, n), |(i, j)| val(j, i, 15_485_863));
        let b2 = Array2::from_shape_fn((k2, n), |(i, j)| val(i, j, 32_452_843));
        let bias: Vec<f32> = (0..n).map(|j| j as f32 / 64.0).collect();
        let (p1, p2) = (PackedRhs::new(b1.view()), PackedRhs::new(b2.t().t()));
        if !p1.is_packed() {
            return; // no AVX-512: the general kernel sums in its own order
        }
        let mut c = vec![f32::NAN; m * n];
        product(&[(a1.as_slice().unwrap(), &p1), (a2.as_slice().unwrap(), &p2)], &mut c, Start::Bias(&bias));
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f32;
                for q in 0..k1 {
                    acc = a1[[i, q]].mul_add(b1[[q, j]], acc);
                }
                for q in 0..k2 {
                    acc = a2[[i, q]].mul_add(b2[[q, j]], acc);
                }
                assert_eq!(c[i * n + j].to_bits(), (bias[j] + acc).to_bits(), "({i}, {j})");
            }
        }
    }

    #[test]
    fn a_rows_result_does_not_depend_on_the_other_rows() {
        let (m, k, n) = (23, 256, 200);
        let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 7919 + j * 104_729) % 1000) as f32 / 997.0 - 0.5);
        let b = Array2::from_shape_fn((k, n), |(i, j)| ((i * 15_485_863 + j * 32_452_843) % 1000) as f32 / 991.0 - 0.5);
        let packed = PackedRhs::new(b.view());
        let mut all = Array2::<f32>::zeros((m, n));
        packed.mul(a.as_slice().unwrap(), all.as_slice_mut().unwrap(), false);
        for r in 0..m {
            let mut one = vec![0.0f32; n];
            packed.mul(a.row(r).as_slice().unwrap(), &mut one, false);
            assert!(one.iter().zip(all.row(r)).all(|(x, y)| x.to_bits() == y.to_bits()), "row {r}");
        }
    }

    #[test]
    fn transposed_product_matches_the_naive_sum_for_ragged_shapes() {
        // k over several passes, m not a multiple of a tile, n not of a panel, a strided `a`.
        for &(k, m, n) in &[(1, 1, 1), (7, 5, 63), (129, 13, 65), (300, 37, 130), (0, 4, 3)] {
            let int = |r: usize, c: usize, s: usize| ((r * 7 + c * s) % 9) as f32 - 4.0;
            let wide = Array2::from_shape_fn((k, m + 3), |(i, j)| int(i, j, 5));
            let a = wide.slice(ndarray::s![.., 2..m + 2]);
            let b = Array2::from_shape_fn((k, n), |(i, j)| int(j, i, 3));
            let c0 = Array2::from_shape_fn((m, n), |(i, j)| int(i, j, 2));
            let want = a.t().mapv(f64::from).dot(&b.mapv(f64::from)) + c0.mapv(f64::from);
            let want_sums: Vec<f64> = (0..m).map(|j| 1.0 + a.column(j).iter().map(|&v| f64::from(v)).sum::<f64>()).collect();
            let mut c = c0.clone();
            let mut sums = vec![1.0f32; m];
            add_transposed_product(a, b.view(), &mut c.view_mut(), Some(&mut sums));
            assert_eq!(c.mapv(f64::from), want, "{k}x{m}x{n}");
            assert_eq!(sums.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(), want_sums, "{k}x{m}x{n} sums");
            // f64 goes through the general kernel.
            let mut c = c0.mapv(f64::from);
            let mut sums = vec![1.0f64; m];
            add_transposed_product(a.mapv(f64::from).view(), b.mapv(f64::from).view(), &mut c.view_mut(), Some(&mut sums));
            assert_eq!(c, want);
            assert_eq!(sums, want_sums);
        }
    }

    #[test]
    fn transposed_product_is_bit_identical_for_any_thread_count() {
        let (k, m, n) = (700, 301, 200);
        let a = Array2::from_shape_fn((k, m), |(i, j)| ((i * 7919 + j * 104_729) % 1000) as f32 / 997.0 - 0.5);
        let b = Array2::from_shape_fn((k, n), |(i, j)| ((i * 15_485_863 + j * 32_452_843) % 1000) as f32 / 991.0 - 0.5);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut c = Array2::<f32>::from_elem((m, n), 0.25);
                let mut sums = vec![0.5f32; m];
                add_transposed_product(a.view(), b.view(), &mut c.view_mut(), Some(&mut sums));
                (c, sums)
            })
        };
        let (c1, s1) = run(1);
        let exact = a.t().mapv(f64::from).dot(&b.mapv(f64::from)) + 0.25;
        assert!(c1.iter().zip(&exact).all(|(&x, &e)| (f64::from(x) - e).abs() < 1e-3));
        for t in [2, 3, 4] {
            let (c, s) = run(t);
            assert!(c1.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits()), "{t} threads: products differ");
            assert!(s1.iter().zip(&s).all(|(x, y)| x.to_bits() == y.to_bits()), "{t} threads: sums differ");
        }
    }
}

//! Vectorised `exp`, `sigmoid` and `tanh` for `f32` slices.
//!
//! The cells spend most of their non-GEMM time in transcendental functions; the scalar libm calls
//! do not vectorise. These kernels are branch-free polynomial evaluations (exp by range reduction
//! to `[-ln2/2, ln2/2]` with a degree-7 polynomial; tanh by an odd Taylor polynomial near 0 and
//! `(1 - e^{-2|x|}) / (1 + e^{-2|x|})` elsewhere), with a relative error of a few ulp, compiled for
//! AVX-512 or AVX2+FMA when the CPU has them (chosen once at run time). Only IEEE add, multiply and
//! divide are used, without fused multiply-add, so every instruction set gives the same bits.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// `1.5 · 2^23`: adding and subtracting it rounds an `f32` of magnitude < 2^22 to an integer.
const ROUND_MAGIC: f32 = 12_582_912.0;

#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // e^r on |r| <= 0.347: Taylor through r^7 (truncation < 3e-9 relative).
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2^n from the integer bits held in t's mantissa (n in [-126, 127] after clamping).
    let bits = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    p * f32::from_bits(((bits + 127) << 23) as u32)
}

#[inline(always)]
pub(crate) fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

#[inline(always)]
pub(crate) fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    // Near 0: odd Taylor series through x^11 (error < 1e-9 for |x| < 0.3).
    let z = a * a;
    let small = a
        * (1.0
            + z * (-1.0 / 3.0
                + z * (2.0 / 15.0 + z * (-17.0 / 315.0 + z * (62.0 / 2835.0 + z * (-1382.0 / 155_925.0))))));
    let e = exp_f32(-2.0 * a);
    let large = (1.0 - e) / (1.0 + e);
    let v = if a < 0.3 { small } else { large };
    v.copysign(x)
}

#[inline(always)]
fn sigmoid_generic(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = sigmoid_f32(*v));
}

#[inline(always)]
fn exp_generic(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = exp_f32(*v));
}

#[inline(always)]
fn tanh_generic(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = tanh_f32(*v));
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f")]
    pub unsafe fn sigmoid_avx512(x: &mut [f32]) {
        super::sigmoid_generic(x)
    }
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tanh_avx512(x: &mut [f32]) {
        super::tanh_generic(x)
    }
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_avx512(x: &mut [f32]) {
        super::exp_generic(x)
    }
    #[target_feature(enable = "avx2")]
    pub unsafe fn exp_avx2(x: &mut [f32]) {
        super::exp_generic(x)
    }
    #[target_feature(enable = "avx2")]
    pub unsafe fn sigmoid_avx2(x: &mut [f32]) {
        super::sigmoid_generic(x)
    }
    #[target_feature(enable = "avx2")]
    pub unsafe fn tanh_avx2(x: &mut [f32]) {
        super::tanh_generic(x)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Isa {
    Avx512,
    Avx2,
    Generic,
}

/// Whether the CPU runs AVX-512F (detected once).
pub(crate) fn has_avx512() -> bool {
    isa() == Isa::Avx512
}

fn isa() -> Isa {
    use std::sync::OnceLock;
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Isa::Avx2;
            }
        }
        Isa::Generic
    })
}

/// `x = 1 / (1 + e^{-x})` elementwise.
pub fn sigmoid_slice(x: &mut [f32]) {
    match isa() {
        // SAFETY: the feature was detected at run time.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::sigmoid_avx512(x) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::sigmoid_avx2(x) },
        _ => sigmoid_generic(x),
    }
}

/// `x = e^x` elementwise (inputs below -87 give `e^-87`, above 88 give `e^88`).
pub fn exp_slice(x: &mut [f32]) {
    match isa() {
        // SAFETY: the feature was detected at run time.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::exp_avx512(x) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::exp_avx2(x) },
        _ => exp_generic(x),
    }
}

/// `x = tanh(x)` elementwise.
pub fn tanh_slice(x: &mut [f32]) {
    match isa() {
        // SAFETY: the feature was detected at run time.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::tanh_avx512(x) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::tanh_avx2(x) },
        _ => tanh_generic(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> i64 {
        ((a.to_bits() as i32 as i64) - (b.to_bits() as i32 as i64)).abs()
    }

    #[test]
    fn close_to_libm_over_the_whole_range() {
        let xs: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 1e-4).chain([1e-30, -1e-30, 0.0, -0.0, 50.0, -90.0, 100.0]).collect();
        let mut s = xs.clone();
        sigmoid_slice(&mut s);
        let mut t = xs.clone();
        tanh_slice(&mut t);
        let mut e: Vec<f32> = xs.iter().map(|v| v.clamp(-80.0, 80.0)).collect();
        exp_slice(&mut e);
        for (&x, &ev) in xs.iter().zip(&e) {
            let want = (x.clamp(-80.0, 80.0) as f64).exp() as f32;
            assert!(ulps(ev, want) <= 4, "exp({x}) = {ev}, want {want}");
        }
        let (mut worst_s, mut worst_t) = (0i64, 0i64);
        for ((&x, &sv), &tv) in xs.iter().zip(&s).zip(&t) {
            let want_s = (1.0 / (1.0 + (-(x as f64)).exp())) as f32;
            let want_t = (x as f64).tanh() as f32;
            if want_s > 1e-30 {
                worst_s = worst_s.max(ulps(sv, want_s));
            }
            worst_t = worst_t.max(ulps(tv, want_t));
            assert!(sv.is_finite() && tv.is_finite() && (-1.0..=1.0).contains(&tv) && (0.0..=1.0).contains(&sv));
        }
        assert!(worst_s <= 8, "sigmoid: {worst_s} ulp");
        assert!(worst_t <= 8, "tanh: {worst_t} ulp");
    }

    #[test]
    fn every_isa_gives_the_same_bits() {
        let xs: Vec<f32> = (-5000..5000).map(|i| i as f32 * 3.7e-3).collect();
        let (mut a, mut b) = (xs.clone(), xs.clone());
        sigmoid_generic(&mut a);
        sigmoid_slice(&mut b);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        let (mut a, mut b) = (xs.clone(), xs.clone());
        exp_generic(&mut a);
        exp_slice(&mut b);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        let (mut a, mut b) = (xs.clone(), xs);
        tanh_generic(&mut a);
        tanh_slice(&mut b);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}

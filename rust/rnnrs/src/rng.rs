//! Seeded random numbers. Every random choice in rnnrs derives from an explicit `u64` seed, and
//! streams are derived by hashing `(seed, purpose, index)`, so results never depend on thread count.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The generator used everywhere in the crate.
pub type Rng = ChaCha8Rng;

/// SplitMix64 finaliser: a strong 64-bit mix used to derive independent stream seeds.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A generator for stream `parts` of `seed` (e.g. `&[seed, DROPOUT, call, layer]`).
pub fn stream(parts: &[u64]) -> Rng {
    let mut h = 0x5EED_u64;
    for &p in parts {
        h = mix(h ^ p);
    }
    Rng::seed_from_u64(h)
}

/// A uniform float in `[0, 1)` with 53 random bits.
#[inline]
pub fn uniform(rng: &mut Rng) -> f64 {
    use rand::Rng as _;
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A standard normal draw (Box–Muller, one value per call).
pub fn normal(rng: &mut Rng) -> f64 {
    let u1 = 1.0 - uniform(rng); // (0, 1]
    let u2 = uniform(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

//! A fixed-length buffer whose first value sits on a 64-byte boundary (a cache line, an AVX-512
//! vector). A `Vec` only promises the alignment of its element type (glibc's allocator gives 16
//! bytes), so the vector loads of the hot kernels straddle two cache lines on most rows. Measured
//! on a Xeon (Sapphire Rapids class), 2 threads: aligned panels made M forward 3–4 % faster, and
//! aligned sampler rows batched sampling (32 sequences, H = 256) about 6 %.
//!
//! No unsafe code: the buffer over-allocates one cache line and starts at the first aligned
//! element. It never reallocates, so the offset stays right; a clone computes its own.

use std::ops::{Deref, DerefMut};

const LINE: usize = 64;

/// `len` values of `T` starting on a 64-byte boundary (for `T` whose size divides 64).
pub(crate) struct Aligned<T> {
    buf: Vec<T>,
    off: usize,
    len: usize,
}

impl<T: Clone> Aligned<T> {
    /// `len` copies of `value`.
    pub(crate) fn filled(len: usize, value: T) -> Self {
        let size = std::mem::size_of::<T>().max(1);
        debug_assert!(LINE.is_multiple_of(size), "aligned: element size {size} does not divide {LINE}");
        let buf = vec![value; len + LINE / size];
        let off = buf.as_ptr().align_offset(LINE).min(LINE / size);
        Aligned { buf, off, len }
    }

    /// A copy of `values`.
    pub(crate) fn from_slice(values: &[T]) -> Self {
        match values.first() {
            None => Aligned { buf: Vec::new(), off: 0, len: 0 },
            Some(v) => {
                let mut a = Self::filled(values.len(), v.clone());
                a.clone_from_slice(values);
                a
            }
        }
    }
}

impl<T: Copy + Default> Aligned<T> {
    /// `len` default values (zeros for numbers).
    pub(crate) fn zeros(len: usize) -> Self {
        Self::filled(len, T::default())
    }
}

impl<T> Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[self.off..self.off + self.len]
    }
}

impl<T> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

impl<T: Clone> Clone for Aligned<T> {
    fn clone(&self) -> Self {
        Self::from_slice(self)
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    /// Whether the first value (if any) is on a cache line.
    fn starts_on_a_line<T>(s: &[T]) -> bool {
        s.is_empty() || (s.as_ptr() as usize).is_multiple_of(LINE)
    }

    #[test]
    fn is_aligned_zeroed_and_of_the_asked_length_and_so_is_a_clone() {
        for len in [0, 1, 15, 16, 17, 1000] {
            let mut a = Aligned::<f32>::zeros(len);
            assert_eq!(a.len(), len);
            assert!(a.iter().all(|&v| v == 0.0));
            assert!(starts_on_a_line(&a));
            a.iter_mut().enumerate().for_each(|(i, v)| *v = i as f32);
            let b = a.clone();
            assert!(starts_on_a_line(&b));
            assert_eq!(&b[..], &a[..]);
            let h = Aligned::from_slice(&vec![f16::ONE; len]);
            assert!(starts_on_a_line(&h));
            assert_eq!(h.len(), len);
            assert!(starts_on_a_line(&Aligned::<f64>::zeros(len)));
        }
    }
}

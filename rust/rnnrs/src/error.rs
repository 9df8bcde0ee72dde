//! The one error type of the crate. Every message says what was expected and what was received.

use std::fmt;

/// Errors returned by rnnrs. Messages carry the offending value (expected vs got).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An array had the wrong shape.
    #[error("{what}: expected shape {expected}, got {got}")]
    Shape { what: String, expected: String, got: String },
    /// A configuration value or argument was out of range.
    #[error("{what}: expected {expected}, got {got}")]
    Invalid { what: String, expected: String, got: String },
    /// An operation was called in the wrong state (e.g. backward without a training forward).
    #[error("{0}")]
    State(String),
    /// A value was NaN or infinite where a finite one is required.
    #[error("{0}")]
    NonFinite(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// A file was read but its content is not a valid rnnrs file.
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shape of an array for messages: `(2, 3, 4)`.
pub(crate) fn shape_str(shape: &[usize]) -> String {
    struct S<'a>(&'a [usize]);
    impl fmt::Display for S<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "(")?;
            for (i, d) in self.0.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                write!(f, "{d}")?;
            }
            if self.0.len() == 1 {
                write!(f, ",")?;
            }
            write!(f, ")")
        }
    }
    S(shape).to_string()
}

/// `Err(Error::Shape)` unless `got == expected`.
pub(crate) fn check_shape(what: &str, expected: &[usize], got: &[usize]) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::Shape { what: what.into(), expected: shape_str(expected), got: shape_str(got) })
    }
}

/// `Err(Error::Invalid)` with the given texts.
pub(crate) fn invalid(what: &str, expected: impl fmt::Display, got: impl fmt::Display) -> Error {
    Error::Invalid { what: what.into(), expected: expected.to_string(), got: got.to_string() }
}

/// Requests below this many bytes are not probed by [`check_alloc`] (only checked for overflow).
const PROBE_FROM_BYTES: usize = 1 << 30;

/// `Err(Error::Invalid)` unless `elements` values of `elem_bytes` bytes each can be allocated.
///
/// Call it before allocating anything whose size comes from a caller, so that an absurd size
/// (e.g. `hidden_size = 2^40`, or a broadcast NumPy view of a huge shape) is an error naming it
/// instead of a process abort: `elements` is `None` when the count itself overflowed `usize`; a
/// total above 1 GiB is probed with a fallible reservation that is released at once (no memory
/// is touched). On Linux with the default heuristic overcommit this rejects requests larger than
/// RAM + swap; a request that is granted can still exhaust memory later.
pub fn check_alloc(what: &str, got: &str, elements: Option<usize>, elem_bytes: usize) -> Result<()> {
    let too_big = |detail: String| invalid(what, "sizes whose arrays fit in memory", format!("{got} ({detail})"));
    let Some(bytes) = elements.and_then(|n| n.checked_mul(elem_bytes)) else {
        return Err(too_big("the number of elements overflows a 64-bit count".into()));
    };
    let detail = || format!("{bytes} bytes = {:.1} GiB, which cannot be allocated", bytes as f64 / (1u64 << 30) as f64);
    if bytes > isize::MAX as usize {
        return Err(too_big(detail()));
    }
    if bytes >= PROBE_FROM_BYTES && Vec::<u8>::new().try_reserve_exact(bytes).is_err() {
        return Err(too_big(detail()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_alloc_rejects_overflow_and_absurd_sizes_without_allocating() {
        assert!(check_alloc("x", "small", Some(1000), 8).is_ok());
        let e = check_alloc("hidden_size", "hidden_size 2^40", None, 4).unwrap_err();
        assert!(e.to_string().starts_with("hidden_size: expected sizes whose arrays fit in memory, got hidden_size 2^40"), "{e}");
        assert!(check_alloc("x", "huge", Some(usize::MAX / 2), 8).is_err());
        assert!(check_alloc("x", "huge", Some(1 << 60), 1).is_err());
    }
}

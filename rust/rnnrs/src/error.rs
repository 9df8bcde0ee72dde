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

//! Benchmarks of rnnrs live in `benches/recurrent.rs`; this library is empty.

//! # rnnrs
//!
//! Fast CPU recurrent networks in pure Rust: batched, multi-layer, bidirectional vanilla RNN
//! (tanh/relu), GRU and LSTM with exact backpropagation through time, plus the pieces to train and
//! sample a language model (embedding, linear, softmax cross-entropy, clipping, SGD/Adam).
//!
//! Conventions follow PyTorch: parameter names (`weight_ih_l0`, `bias_hh_l1_reverse`), gate
//! order (LSTM `i, f, g, o`; GRU `r, z, n` with the reset gate applied to `W_hn h + b_hn`),
//! initialisation `U(-1/√H, 1/√H)`, time-major `(T, B, I)` inputs and `(L·D, B, H)` states.
//!
//! ```
//! use rnnrs::{CellKind, Module, Recurrent, RecurrentConfig};
//! use ndarray::Array3;
//!
//! let cfg = RecurrentConfig::new(CellKind::Gru, 4, 8).num_layers(2);
//! let mut gru = Recurrent::<f32>::new(cfg, 42)?;
//! let x = Array3::<f32>::zeros((5, 3, 4)); // (T, B, I)
//! let (out, tape) = gru.forward_train(x.view(), None, None)?;
//! assert_eq!(out.h_n.shape(), &[2, 3, 8]); // (L·D, B, H)
//! gru.zero_grad();
//! let dy = Array3::<f32>::ones(out.y.raw_dim());
//! let g = gru.backward(&tape, dy.view(), None, None)?;
//! assert_eq!(g.dx.unwrap().shape(), x.shape());
//! # Ok::<(), rnnrs::Error>(())
//! ```
//!
//! ## Performance
//!
//! Work is split over rayon's global pool (`RAYON_NUM_THREADS`); results are bit-identical for
//! any number of threads. Every forward/backward call allocates its buffers (a few MB to tens of
//! MB); with glibc's default settings these are returned to the OS on free and faulted in again on
//! the next call. [`allocator::tune_glibc_malloc`] keeps them (S forward+backward on two threads:
//! 6.0 → 4.2 ms); the Python extension calls it on import.
//!
//! Sampling one to three sequences of a float32 model whose weights exceed 1 MiB starts, for the
//! call, one helper thread per further rayon thread: each thread always computes the same columns
//! of every product, so its share of the weights stays in its own L2 from token to token
//! (2-core Xeon, H=256, float16 weights: 0.189 → 0.078 ms per token). The tokens are the same
//! for any number of threads.

pub mod allocator;
mod aligned;
pub mod activation;
pub mod cell;
mod colsplit;
pub mod config;
pub mod element;
pub mod embedding;
pub mod error;
mod step_weights;
pub mod init;
pub mod io;
pub mod layer;
pub mod linear;
pub mod linalg;
pub mod lm_options;
pub mod loss;
pub mod model;
pub mod module;
pub mod optim;
pub mod recurrent_cell;
mod packed;
pub mod rng;
pub mod sample;
pub mod seqmodel;
mod crew;
mod step_kernel;

pub use cell::CellKind;
pub use config::RecurrentConfig;
pub use element::Element;
pub use embedding::Embedding;
pub use error::{Error, Result};
pub use init::{init_parameters, Init, InitConfig};
pub use layer::{DirParams, Recurrent, RecurrentInputGrads, RecurrentOutput, Tape};
pub use linear::Linear;
pub use loss::cross_entropy;
pub use lm_options::LanguageModelOptions;
pub use model::{LanguageModel, LanguageModelConfig, State, StepStats};
pub use module::Module;
pub use optim::{clip_grad_norm, grad_norm, Optimizer, OptimizerConfig};
pub use recurrent_cell::{CellGrads, CellState, RecurrentCell};
pub use sample::{
    beam_search, beam_search_until, sample, Beam, ContinuousSampler, SampleConfig, Sampled, Sampler, SequenceStep, WeightFormat,
};
pub use seqmodel::{Activation, LayerSpec, LossKind, SeqInput, SeqModel, SeqModelConfig, SeqStats, SeqTarget};

/// The README's Rust example, compiled and run as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctest;

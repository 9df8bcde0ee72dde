//! Criterion benchmarks of the rnnrs crate: forward, forward+backward and a full language-model
//! training step, per cell, over the configurations of the performance issue (float32, time-major).
//! Throughput is reported in tokens (T·B per iteration); GFLOP/s = flops/1e9 / time, with the flop
//! counts printed once per configuration (2·G·H·(in+H) per layer, direction and token forward;
//! backward twice that).
//!
//! Run: `cargo bench -p rnnrs-benches` (all) or `cargo bench -p rnnrs-benches -- M/` (one config).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::{Array2, Array3};
use rnnrs::{CellKind, LanguageModel, LanguageModelConfig, Optimizer, OptimizerConfig, Recurrent, RecurrentConfig};
use std::hint::black_box;
use std::time::Duration;

/// (name, cell, input, hidden, layers, bidirectional, batch, seq_len)
type BenchConfig = (&'static str, CellKind, usize, usize, usize, bool, usize, usize);

const CONFIGS: &[BenchConfig] = &[
    ("S", CellKind::Lstm, 64, 128, 1, false, 32, 35),
    ("M", CellKind::Lstm, 256, 256, 2, false, 64, 64),
    ("L", CellKind::Lstm, 512, 512, 2, false, 64, 100),
    ("M-gru", CellKind::Gru, 256, 256, 2, false, 64, 64),
    ("M-rnn", CellKind::RnnTanh, 256, 256, 2, false, 64, 64),
    ("M-bi", CellKind::Lstm, 256, 256, 2, true, 64, 64),
];

fn forward_flops(cfg: &RecurrentConfig, tokens: usize) -> f64 {
    let g = cfg.cell.gates() as f64;
    let h = cfg.hidden_size as f64;
    (0..cfg.num_layers)
        .map(|l| 2.0 * g * h * (cfg.layer_input_size(l) as f64 + h) * cfg.directions() as f64 * tokens as f64)
        .sum()
}

fn recurrent(c: &mut Criterion) {
    // As the Python extension does on import.
    rnnrs::allocator::tune_glibc_malloc();
    let mut group = c.benchmark_group("recurrent");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for &(name, cell, input, hidden, layers, bidi, batch, steps) in CONFIGS {
        let cfg = RecurrentConfig::new(cell, input, hidden).num_layers(layers).bidirectional(bidi);
        let mut net = Recurrent::<f32>::new(cfg.clone(), 0).expect("valid config");
        let x = Array3::<f32>::from_shape_fn((steps, batch, input), |(t, b, i)| ((t * 7 + b * 3 + i) % 11) as f32 / 11.0 - 0.5);
        let tokens = steps * batch;
        let f = forward_flops(&cfg, tokens);
        eprintln!("{name}: forward {:.2} GFLOP, forward+backward {:.2} GFLOP per iteration", f / 1e9, 3.0 * f / 1e9);
        group.throughput(Throughput::Elements(tokens as u64));
        group.bench_function(BenchmarkId::new("forward", name), |b| {
            b.iter(|| black_box(net.forward(x.view(), None, None).expect("forward")))
        });
        group.bench_function(BenchmarkId::new("forward_backward", name), |b| {
            b.iter(|| {
                let (out, tape) = net.forward_train(x.view(), None, None).expect("forward");
                black_box(net.backward(&tape, out.y.view(), None, None).expect("backward"))
            })
        });
    }
    group.finish();
}

fn train_step(c: &mut Criterion) {
    rnnrs::allocator::tune_glibc_malloc();
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for (name, cell) in [("lstm", CellKind::Lstm), ("gru", CellKind::Gru), ("rnn", CellKind::RnnTanh)] {
        let cfg = LanguageModelConfig { vocab_size: 4000, embed_size: Some(256), hidden_size: 256, num_layers: 2, cell, dropout: 0.0 };
        let mut model = LanguageModel::<f32>::new(cfg, 0).expect("valid config");
        let mut opt = Optimizer::new(OptimizerConfig::adam(1e-3)).expect("valid optimizer");
        let (steps, batch) = (64, 32);
        let x = Array2::from_shape_fn((steps, batch), |(t, b)| (t * 31 + b * 17) % 4000);
        let y = Array2::from_shape_fn((steps, batch), |(t, b)| (t * 31 + b * 17 + 1) % 4000);
        group.throughput(Throughput::Elements((steps * batch) as u64));
        group.bench_function(BenchmarkId::new("lm_4000x256_2layers", name), |b| {
            b.iter(|| black_box(model.train_step(x.view(), y.view(), None, Some(1.0), &mut opt).expect("step")))
        });
    }
    group.finish();
}

/// The machine's float32 fused-multiply-add peak on one thread: 12 independent chains of 16-lane
/// FMAs (enough to cover the FMA latency on current x86 cores). Throughput is in FLOP (2 per lane
/// and FMA), so criterion's "elem/s" reads as FLOP/s; it is the ceiling the GFLOP/s of the other
/// benches (and of PyTorch) are measured against.
fn fma_peak(c: &mut Criterion) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        const ITERS: u64 = 1 << 20;
        #[target_feature(enable = "avx512f")]
        unsafe fn chains(a: f32, b: f32) -> f32 {
            let (a, b) = (_mm512_set1_ps(a), _mm512_set1_ps(b));
            let mut acc = [_mm512_set1_ps(1.0); 12];
            for _ in 0..ITERS {
                for v in acc.iter_mut() {
                    *v = _mm512_fmadd_ps(*v, a, b);
                }
            }
            acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            let mut group = c.benchmark_group("machine");
            group.sample_size(10).measurement_time(Duration::from_secs(2));
            group.throughput(Throughput::Elements(ITERS * 12 * 16 * 2));
            // SAFETY: the CPU has AVX-512F (checked above).
            group.bench_function("fma_peak_avx512_1thread", |b| b.iter(|| black_box(unsafe { chains(black_box(1.000_000_1), black_box(-0.000_000_1)) })));
            group.finish();
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = c;
}

criterion_group!(benches, recurrent, train_step, fma_peak);
criterion_main!(benches);

//! Results do not depend on the number of threads: forward, BPTT and the language-model training
//! step give the same bits in pools of 1, 2, 3 and 4 threads, for batches that span several of the
//! time loops' row blocks (and a padded batch), and a batch's rows equal the same sequences run in
//! a batch of another size to rounding (the blocks step independently).

use ndarray::{Array2, Array3, ArrayD};
use rnnrs::rng;
use rnnrs::{CellKind, LanguageModel, LanguageModelConfig, Module, Optimizer, OptimizerConfig, Recurrent, RecurrentConfig};

fn rand3(shape: (usize, usize, usize), seed: u64) -> Array3<f32> {
    let mut r = rng::stream(&[seed, 5]);
    Array3::from_shape_simple_fn(shape, || (2.0 * rng::uniform(&mut r) - 1.0) as f32)
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

fn bits(a: impl IntoIterator<Item = f32>) -> Vec<u32> {
    a.into_iter().map(f32::to_bits).collect()
}

/// Every output of one forward + backward, as bits.
fn pass(cell: CellKind, bidi: bool, b: usize, lengths: Option<&[usize]>) -> Vec<Vec<u32>> {
    let (t, i, h) = (9, 5, 24);
    let cfg = RecurrentConfig::new(cell, i, h).num_layers(2).bidirectional(bidi);
    let mut net = Recurrent::<f32>::new(cfg.clone(), 3).unwrap();
    let x = rand3((t, b, i), 1);
    let st = cfg.state_shape(b);
    let h0 = rand3((st[0], st[1], st[2]), 2);
    let (out, tape) = net.forward_train_lengths(x.view(), Some(h0.view()), None, lengths).unwrap();
    let dy = rand3(out.y.dim(), 4);
    let g = net.backward(&tape, dy.view(), None, None).unwrap();
    let mut all = vec![
        bits(out.y.iter().copied()),
        bits(out.h_n.iter().copied()),
        bits(g.dh0.iter().copied()),
    ];
    all.push(bits(g.dx.unwrap().iter().copied()));
    for (_, gr) in net.grad_dict() {
        all.push(bits(gr.iter().copied()));
    }
    all
}

#[test]
fn recurrent_passes_are_bit_identical_for_any_thread_count() {
    let lengths: Vec<usize> = (0..37).map(|k| (k * 7) % 10).collect();
    for cell in [CellKind::Lstm, CellKind::Gru, CellKind::RnnTanh] {
        for (bidi, b, lens) in [
            (false, 37, None),
            (true, 33, None),
            (false, 37, Some(&lengths[..])),
            (true, 17, Some(&lengths[..17])),
        ] {
            let one = in_pool(1, || pass(cell, bidi, b, lens));
            for threads in [2, 3, 4] {
                let many = in_pool(threads, || pass(cell, bidi, b, lens));
                assert!(
                    one == many,
                    "{cell:?} bidi={bidi} B={b} lengths={}: {threads} threads differ from 1",
                    lens.is_some()
                );
            }
        }
    }
}

#[test]
fn rows_do_not_depend_on_the_rest_of_the_batch() {
    // The first 5 sequences of a batch of 40 (three row blocks) against the same 5 alone.
    let cfg = RecurrentConfig::new(CellKind::Lstm, 4, 20).num_layers(2);
    let net = Recurrent::<f32>::new(cfg, 9).unwrap();
    let x = rand3((6, 40, 4), 8);
    let big = net.forward(x.view(), None, None).unwrap();
    let small = net.forward(x.slice(ndarray::s![.., 0..5, ..]), None, None).unwrap();
    for (a, b) in big.y.slice(ndarray::s![.., 0..5, ..]).iter().zip(small.y.iter()) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
    }
}

#[test]
fn training_steps_are_bit_identical_for_any_thread_count() {
    for hidden_size in [20, 40] {
        let run = || {
            let cfg = LanguageModelConfig {
                vocab_size: 50,
                embed_size: Some(12),
                hidden_size,
                num_layers: 2,
                cell: CellKind::Lstm,
                dropout: 0.2,
            };
            let mut m = LanguageModel::<f32>::new(cfg, 1).unwrap();
            let mut opt = Optimizer::new(OptimizerConfig::adam(1e-2)).unwrap();
            let x = Array2::from_shape_fn((8, 35), |(t, b)| (t * 13 + b * 7) % 50);
            let y = Array2::from_shape_fn((8, 35), |(t, b)| (t * 13 + b * 7 + 1) % 50);
            let mut losses = Vec::new();
            for _ in 0..3 {
                let (stats, _) = m.train_step(x.view(), y.view(), None, Some(1.0), &mut opt).unwrap();
                losses.push(stats.loss.to_bits());
            }
            let params: Vec<(String, ArrayD<f32>)> = m.state_dict();
            (losses, params.into_iter().map(|(_, p)| bits(p.iter().copied())).collect::<Vec<_>>())
        };
        let one = in_pool(1, run);
        for threads in [2, 3] {
            assert!(one == in_pool(threads, run), "H={hidden_size}: {threads} threads differ from 1");
        }
    }
}

/// Every output of one forward + backward of a stack of hidden size `h` (the column-split loops
/// from 32 units up), as `f64` bits, with initial states `h0` and `c0`, and the output of an
/// inference pass.
fn pass_columns<F: rnnrs::Element>(cell: CellKind, bidi: bool, b: usize, h: usize, lengths: Option<&[usize]>) -> Vec<Vec<u64>> {
    let (t, i) = (7, 6);
    let cfg = RecurrentConfig::new(cell, i, h).num_layers(2).bidirectional(bidi).dropout(0.3);
    let mut net = Recurrent::<F>::new(cfg.clone(), 3).unwrap();
    let conv = |a: Array3<f32>| a.mapv(|v| F::from_f64(f64::from(v)));
    let bits = |a: &mut dyn Iterator<Item = F>| a.map(|v| v.to_f64().to_bits()).collect::<Vec<u64>>();
    let x = conv(rand3((t, b, i), 1));
    let st = cfg.state_shape(b);
    let h0 = conv(rand3((st[0], st[1], st[2]), 2));
    let c0 = conv(rand3((st[0], st[1], st[2]), 6));
    let c0v = (cell == CellKind::Lstm).then(|| c0.view());
    let inf = net.forward_lengths(x.view(), Some(h0.view()), c0v, lengths).unwrap();
    let (out, tape) = net.forward_train_lengths(x.view(), Some(h0.view()), c0v, lengths).unwrap();
    let dy = conv(rand3(out.y.dim(), 4));
    let dh_n = conv(rand3((st[0], st[1], st[2]), 7));
    let g = net.backward(&tape, dy.view(), Some(dh_n.view()), None).unwrap();
    let mut all = vec![
        bits(&mut inf.y.iter().copied()),
        bits(&mut out.y.iter().copied()),
        bits(&mut out.h_n.iter().copied()),
    ];
    all.push(bits(&mut g.dh0.iter().copied()));
    all.push(bits(&mut g.dx.unwrap().iter().copied()));
    if let (Some(c), Some(dc)) = (out.c_n, g.dc0) {
        all.push(bits(&mut c.iter().copied()));
        all.push(bits(&mut dc.iter().copied()));
    }
    for (_, gr) in net.grad_dict() {
        all.push(bits(&mut gr.iter().copied()));
    }
    all
}

#[test]
fn column_split_loops_are_bit_identical_for_any_thread_count() {
    let lengths: Vec<usize> = (0..9).map(|k| (k * 5) % 8).collect();
    let long_lengths: Vec<usize> = (0..40).map(|k| (k * 5) % 8).collect();
    for cell in [CellKind::Lstm, CellKind::Gru, CellKind::RnnTanh] {
        for (bidi, b, h, lens) in [
            (false, 9, 40, None),
            (false, 9, 64, Some(&lengths[..])),
            (true, 5, 48, Some(&lengths[..5])),
            (false, 1, 200, None),
            // Three row blocks of 16: the row-block loops for up to 3 threads, the column loops
            // for 4; bidirectional, one block: row blocks with 1 thread per direction (1-3
            // threads), the column loops with 2 (4 threads).
            (false, 40, 48, None),
            (true, 16, 40, Some(&long_lengths[..16])),
        ] {
            let one = in_pool(1, || pass_columns::<f32>(cell, bidi, b, h, lens));
            let one64 = in_pool(1, || pass_columns::<f64>(cell, bidi, b, h, lens));
            for threads in [2, 3, 4] {
                let many = in_pool(threads, || pass_columns::<f32>(cell, bidi, b, h, lens));
                assert!(one == many, "f32 {cell:?} bidi={bidi} B={b} H={h}: {threads} threads differ from 1");
                let many = in_pool(threads, || pass_columns::<f64>(cell, bidi, b, h, lens));
                assert!(
                    one64 == many,
                    "f64 {cell:?} bidi={bidi} B={b} H={h}: {threads} threads differ from 1"
                );
            }
        }
    }
}

#[test]
fn column_split_rows_do_not_depend_on_the_rest_of_the_batch() {
    // The column loops take the whole batch at once: a batch's rows still give the bits of the
    // same sequences alone.
    let cfg = RecurrentConfig::new(CellKind::Lstm, 4, 40).num_layers(2);
    let net = Recurrent::<f32>::new(cfg, 9).unwrap();
    let x = rand3((6, 12, 4), 8);
    let big = in_pool(2, || net.forward(x.view(), None, None).unwrap());
    let small = in_pool(2, || net.forward(x.slice(ndarray::s![.., 0..5, ..]), None, None).unwrap());
    for (a, b) in big.y.slice(ndarray::s![.., 0..5, ..]).iter().zip(small.y.iter()) {
        assert_eq!(a.to_bits(), b.to_bits(), "{a} vs {b}");
    }
}

#[test]
fn packed_weights_follow_every_change_of_the_parameters() {
    // The column loops keep their packed weights between calls: a change through `visit_mut`
    // (what loading and optimizer steps use) must reach the next forward pass.
    let cfg = RecurrentConfig::new(CellKind::Lstm, 5, 48).num_layers(2);
    let mut net = Recurrent::<f32>::new(cfg.clone(), 1).unwrap();
    let x = rand3((4, 3, 5), 2);
    let before = in_pool(2, || net.forward(x.view(), None, None).unwrap().y);
    assert_eq!(before, in_pool(2, || net.forward(x.view(), None, None).unwrap().y));
    net.visit_mut(&mut |_, mut p, _| p.mapv_inplace(|v| v * 0.5));
    let after = in_pool(2, || net.forward(x.view(), None, None).unwrap().y);
    let mut fresh = Recurrent::<f32>::new(cfg, 1).unwrap();
    fresh.visit_mut(&mut |_, mut p, _| p.mapv_inplace(|v| v * 0.5));
    assert_ne!(before, after);
    assert_eq!(after, in_pool(2, || fresh.forward(x.view(), None, None).unwrap().y));
    // Another thread count packs for its own crew.
    assert_eq!(after, in_pool(3, || net.forward(x.view(), None, None).unwrap().y));
}

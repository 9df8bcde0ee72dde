//! The sampling loop: determinism, greedy = argmax of the model's own logits, batch = one by one,
//! chunked = whole, thread-count independence, filters, penalty, stop tokens, beam search, errors,
//! no allocation per step, and float16 weight storage (exact = bit-identical, lossy = close, never
//! stale).

use half::f16;
use ndarray::{Array2, ArrayD};
use rnnrs::{
    beam_search, sample, CellKind, ContinuousSampler, Element, Error, LanguageModel, LanguageModelConfig, Module, Optimizer, OptimizerConfig,
    SampleConfig, Sampler, WeightFormat,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

// ---------------------------------------------------------------- allocation counting (this thread)

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn bump() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        bump();
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCS.with(|c| c.get())
}

// ---------------------------------------------------------------------------------------- models

fn config(cell: CellKind, embed: Option<usize>, vocab: usize, hidden: usize, layers: usize) -> LanguageModelConfig {
    LanguageModelConfig { vocab_size: vocab, embed_size: embed, hidden_size: hidden, num_layers: layers, cell, dropout: 0.0 }
}

fn random<F: Element>(cell: CellKind, embed: Option<usize>, vocab: usize, hidden: usize, layers: usize) -> LanguageModel<F> {
    LanguageModel::new(config(cell, embed, vocab, hidden, layers), 5).unwrap()
}

/// A small LSTM trained briefly on a repeating pattern, so its distributions are peaked.
fn trained() -> LanguageModel<f32> {
    let mut m = LanguageModel::<f32>::new(config(CellKind::Lstm, Some(8), 12, 24, 2), 1).unwrap();
    let mut opt = Optimizer::new(OptimizerConfig::adam(0.02)).unwrap();
    let pattern = [1usize, 2, 3, 4, 5, 1, 2, 6, 7, 8, 9, 10, 11];
    let text: Vec<usize> = pattern.iter().cycle().take(200).copied().collect();
    let (t, b) = (12, 8);
    for step in 0..80 {
        let x = Array2::from_shape_fn((t, b), |(i, j)| text[(step * 3 + j * 17 + i) % 180]);
        let y = Array2::from_shape_fn((t, b), |(i, j)| text[(step * 3 + j * 17 + i) % 180 + 1]);
        m.train_step(x.view(), y.view(), None, Some(1.0), &mut opt).unwrap();
    }
    m
}

/// Logits `(V,)` after feeding `ids`, from the model's own sequence forward pass.
fn last_logits<F: Element>(m: &LanguageModel<F>, ids: &[usize]) -> Vec<f64> {
    let x = Array2::from_shape_vec((ids.len(), 1), ids.to_vec()).unwrap();
    let (lg, _) = m.logits(x.view(), None).unwrap();
    lg.index_axis(ndarray::Axis(0), ids.len() - 1).iter().map(|&v| Element::to_f64(v)).collect()
}

fn log_softmax(l: &[f64]) -> Vec<f64> {
    let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + l.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
    l.iter().map(|x| x - lse).collect()
}

fn one(m: &LanguageModel<f32>, prefix: &[usize], seed: u64, cfg: &SampleConfig) -> Vec<usize> {
    sample(m, &[prefix], &[seed], cfg).unwrap().remove(0).ids
}

// ----------------------------------------------------------------------------------------- tests

#[test]
fn same_seed_same_tokens_different_seeds_differ() {
    let m = random::<f32>(CellKind::Lstm, Some(6), 30, 16, 2);
    let cfg = SampleConfig::new(40).temperature(1.2);
    let a = one(&m, &[1, 2, 3], 7, &cfg);
    assert_eq!(a.len(), 40);
    assert_eq!(a, one(&m, &[1, 2, 3], 7, &cfg));
    assert_ne!(a, one(&m, &[1, 2, 3], 8, &cfg));
}

#[test]
fn greedy_is_the_argmax_of_the_models_own_logits() {
    for m in [trained(), random::<f32>(CellKind::Gru, None, 15, 10, 1)] {
        let prefix = vec![1, 2, 3];
        let out = sample(&m, &[&prefix], &[0], &SampleConfig::greedy(25)).unwrap().remove(0);
        let mut seq = prefix.clone();
        for (t, (&tok, &lp)) in out.ids.iter().zip(&out.logprobs).enumerate() {
            let l = last_logits(&m, &seq);
            let best = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            // The step kernel and the sequence pass round differently: equal up to rounding.
            assert!(l[tok] >= best - 1e-5, "step {t}: picked {tok} ({}) but the max is {best}", l[tok]);
            assert!((lp - log_softmax(&l)[tok]).abs() < 1e-4, "step {t}: logprob {lp} vs {}", log_softmax(&l)[tok]);
            seq.push(tok);
        }
    }
}

#[test]
fn greedy_f64_matches_argmax_exactly() {
    let m = random::<f64>(CellKind::Lstm, Some(5), 20, 12, 2);
    let out = sample(&m, &[[3usize, 4]], &[0], &SampleConfig::greedy(20)).unwrap().remove(0);
    let mut seq = vec![3, 4];
    for &tok in &out.ids {
        let l = last_logits(&m, &seq);
        let arg = (0..l.len()).fold(0, |b, i| if l[i] > l[b] { i } else { b });
        assert_eq!(tok, arg);
        seq.push(tok);
    }
}

#[test]
fn temperature_zero_and_tiny_temperature_are_greedy() {
    let m = trained();
    let greedy = one(&m, &[1, 2], 0, &SampleConfig::greedy(30));
    for seed in 0..3 {
        assert_eq!(one(&m, &[1, 2], seed, &SampleConfig::new(30).temperature(1e-6)), greedy);
        // So small that logits / temperature overflow: the limit, greedy.
        assert_eq!(one(&m, &[1, 2], seed, &SampleConfig::new(30).temperature(1e-300).top_p(0.5)), greedy);
    }
}

#[test]
fn a_batch_equals_each_sequence_alone() {
    let models: Vec<LanguageModel<f32>> = vec![
        trained(),
        random(CellKind::Gru, Some(7), 40, 20, 2),
        random(CellKind::RnnTanh, None, 25, 9, 3),
        random(CellKind::RnnRelu, Some(3), 17, 5, 1),
    ];
    let prefixes: Vec<Vec<usize>> = vec![vec![1], vec![2, 3, 4, 5, 6, 7], vec![3, 3], vec![4, 1, 2], vec![5; 9]];
    let seeds = [11, 12, 13, 14, 15];
    let cfgs = [
        SampleConfig::new(20),
        SampleConfig::new(20).temperature(0.7).top_k(3).repetition_penalty(1.3),
        SampleConfig::new(20).temperature(1.5).top_p(0.8).stop_tokens(vec![2]),
        SampleConfig::greedy(20).repetition_penalty(2.0),
    ];
    for m in &models {
        for cfg in &cfgs {
            let batch = sample(m, &prefixes, &seeds, cfg).unwrap();
            for (i, p) in prefixes.iter().enumerate() {
                let alone = sample(m, &[p], &[seeds[i]], cfg).unwrap().remove(0);
                assert_eq!(batch[i], alone, "sequence {i} with {cfg:?}");
            }
        }
    }
}

#[test]
fn f64_batch_equals_alone() {
    let m = random::<f64>(CellKind::Lstm, Some(4), 33, 21, 2);
    let prefixes = [vec![1usize, 2, 3], vec![9], vec![4, 4, 4, 4, 4]];
    let cfg = SampleConfig::new(15).top_p(0.9);
    let batch = sample(&m, &prefixes, &[1, 2, 3], &cfg).unwrap();
    for i in 0..3 {
        assert_eq!(batch[i], sample(&m, &[&prefixes[i]], &[i as u64 + 1], &cfg).unwrap().remove(0));
    }
}

#[test]
fn chunked_advance_equals_one_run() {
    let m = trained();
    let prefixes = [vec![1usize, 2, 3, 4], vec![6]];
    let cfg = SampleConfig::new(33).temperature(0.9).top_k(5);
    let whole = sample(&m, &prefixes, &[3, 4], &cfg).unwrap();
    let mut s = Sampler::new(&m, &prefixes, &[3, 4], cfg).unwrap();
    let mut calls = 0;
    while !s.is_done() {
        let before = s.ids(1).len();
        s.advance(&m, 5).unwrap();
        assert!(s.finished(1) || s.ids(1).len() >= before + 5);
        calls += 1;
    }
    assert!(calls >= 7);
    assert_eq!(s.into_samples(), whole);
}

#[test]
fn results_do_not_depend_on_the_number_of_threads() {
    // Large enough that the products and the per-sequence picks run in parallel.
    let m = random::<f32>(CellKind::Lstm, Some(32), 2100, 64, 2);
    let prefixes: Vec<Vec<usize>> = (0..8).map(|i| vec![i + 1; i + 1]).collect();
    let seeds: Vec<u64> = (0..8).collect();
    let cfg = SampleConfig::new(12).temperature(0.9).top_p(0.95);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| (sample(&m, &prefixes, &seeds, &cfg).unwrap(), beam_search(&m, &[1, 2], 3, 8).unwrap()))
    };
    let base = run(1);
    for t in [2, 3] {
        assert_eq!(run(t), base, "{t} threads");
    }
    // 24 sequences: stepped in independent groups of rows, one per thread, on 2 and 3 threads.
    let many: Vec<Vec<usize>> = (0..24).map(|i| vec![i % 7 + 1; i % 5 + 1]).collect();
    let many_seeds: Vec<u64> = (0..24).collect();
    let batch = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| sample(&m, &many, &many_seeds, &cfg).unwrap())
    };
    let base = batch(1);
    assert_eq!(base[5], sample(&m, &many[5..6], &many_seeds[5..6], &cfg).unwrap()[0]);
    for t in [2, 3] {
        assert_eq!(batch(t), base, "24 sequences, {t} threads");
    }
    let half = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| sample(&m, &prefixes, &seeds, &cfg.clone().weights(WeightFormat::F16)).unwrap())
    };
    let base = half(1);
    for t in [2, 3] {
        assert_eq!(half(t), base, "float16 weights, {t} threads");
    }
}

#[test]
fn one_sequence_gives_the_same_tokens_with_a_crew_of_any_size() {
    // 2.3 MB of float32 weights per step (1.2 MB as float16): one sequence on several threads
    // runs with a crew, each member computing its own columns of every product (one member per
    // thread, at most one per core).
    let m = random::<f32>(CellKind::Lstm, Some(64), 1000, 256, 1);
    for weights in [WeightFormat::F32, WeightFormat::F16] {
        let cfg = SampleConfig::new(40).temperature(0.8).weights(weights);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut s = Sampler::new(&m, &[vec![3usize, 1, 4]], &[9], cfg.clone()).unwrap();
                s.advance(&m, 25).unwrap();
                s.advance(&m, 15).unwrap();
                s.into_samples()
            })
        };
        let base = run(1);
        assert_eq!(base[0].ids.len(), 40);
        for t in [2, 3, 4] {
            assert_eq!(run(t), base, "{weights:?}, {t} threads");
        }
    }
}

#[test]
fn top_k_and_top_p_only_emit_allowed_tokens() {
    let m = random::<f64>(CellKind::Lstm, Some(6), 40, 16, 1);
    for (k, p, temp) in [(Some(3), None, 1.0), (None, Some(0.5), 1.0), (Some(10), Some(0.6), 0.7), (None, Some(0.3), 2.0)] {
        let mut cfg = SampleConfig::new(40).temperature(temp);
        cfg.top_k = k;
        cfg.top_p = p;
        let prefix = vec![1, 2];
        let out = sample(&m, &[&prefix], &[9], &cfg).unwrap().remove(0);
        let mut seq = prefix.clone();
        for &tok in &out.ids {
            let l = last_logits(&m, &seq);
            let mut order: Vec<usize> = (0..l.len()).collect();
            order.sort_by(|&a, &b| l[b].partial_cmp(&l[a]).unwrap().then(a.cmp(&b)));
            let mut allowed: Vec<usize> = order[..k.unwrap_or(l.len())].to_vec();
            if let Some(p) = p {
                let z: Vec<f64> = allowed.iter().map(|&t| l[t] / temp).collect();
                let mx = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = z.iter().map(|v| (v - mx).exp()).collect();
                let total: f64 = e.iter().sum();
                let mut cum = 0.0;
                let mut keep = 0;
                for &w in &e {
                    if cum >= p * total + 1e-9 {
                        break;
                    }
                    cum += w;
                    keep += 1;
                }
                allowed.truncate(keep);
            }
            assert!(allowed.contains(&tok), "k={k:?} p={p:?}: {tok} not in {allowed:?}");
            seq.push(tok);
        }
    }
}

#[test]
fn logprobs_are_the_models_log_softmax() {
    let m = trained();
    let out = sample(&m, &[[1usize, 2, 3]], &[4], &SampleConfig::new(20).temperature(0.8).top_p(0.9)).unwrap().remove(0);
    let mut seq = vec![1, 2, 3];
    for (&tok, &lp) in out.ids.iter().zip(&out.logprobs) {
        let want = log_softmax(&last_logits(&m, &seq))[tok];
        assert!((lp - want).abs() < 1e-4, "{lp} vs {want}");
        seq.push(tok);
    }
}

#[test]
fn stop_tokens_end_their_sequence_and_are_included() {
    let m = trained();
    let free = one(&m, &[1, 2], 0, &SampleConfig::greedy(30));
    let stop = free[5];
    let first = free.iter().position(|&t| t == stop).unwrap();
    let out = sample(&m, &[[1usize, 2], [1, 2]], &[0, 0], &SampleConfig::greedy(30).stop_tokens(vec![stop])).unwrap();
    assert_eq!(out[0].ids, free[..=first].to_vec());
    assert!(out[0].stopped);
    assert_eq!(out[0], out[1]);
    let none = sample(&m, &[[1usize, 2]], &[0], &SampleConfig::greedy(30)).unwrap();
    assert!(!none[0].stopped);
}

#[test]
fn repetition_penalty_is_ctrl_style() {
    for m in [trained(), random::<f32>(CellKind::Gru, Some(5), 16, 12, 1)] {
        check_penalty(&m, 1.7);
        check_penalty(&m, 0.6);
    }
    // On an untrained model (flat logits) the penalty changes the greedy path.
    let m = random::<f32>(CellKind::Gru, Some(5), 16, 12, 1);
    let plain = one(&m, &[1, 2, 3], 0, &SampleConfig::greedy(25));
    assert_ne!(plain, one(&m, &[1, 2, 3], 0, &SampleConfig::greedy(25).repetition_penalty(1.7)));
}

/// Greedy with a penalty picks the argmax of the penalised logits of the model's own pass.
fn check_penalty(m: &LanguageModel<f32>, r: f64) {
    let prefix = vec![1, 2, 3];
    let out = sample(m, &[&prefix], &[0], &SampleConfig::greedy(25).repetition_penalty(r)).unwrap().remove(0);
    let mut seq = prefix.clone();
    for &tok in &out.ids {
        let mut l = last_logits(m, &seq);
        let mut seen = seq.clone();
        seen.sort();
        seen.dedup();
        for &t in &seen {
            l[t] = if l[t] > 0.0 { l[t] / r } else { l[t] * r };
        }
        let best = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        assert!(l[tok] >= best - 1e-5, "picked {tok} ({}), best {best}", l[tok]);
        seq.push(tok);
    }
}

#[test]
fn beam_width_one_is_greedy_and_wider_is_never_worse() {
    for m in [trained(), random::<f32>(CellKind::Gru, Some(4), 18, 8, 2)] {
        for prefix in [vec![1usize], vec![2, 3, 4]] {
            let g = sample(&m, &[&prefix], &[0], &SampleConfig::greedy(15)).unwrap().remove(0);
            let g_total: f64 = g.logprobs.iter().sum();
            let b1 = beam_search(&m, &prefix, 1, 15).unwrap();
            assert_eq!(b1.ids, g.ids);
            assert_eq!(b1.logprobs, g.logprobs);
            assert_eq!(b1.total_logprob, g_total);
            for w in [2, 3, 5, 30] {
                let b = beam_search(&m, &prefix, w, 15).unwrap();
                assert_eq!(b.ids.len(), 15);
                assert!(b.total_logprob >= g_total, "width {w}: {} < greedy {g_total}", b.total_logprob);
                let sum: f64 = b.logprobs.iter().sum();
                assert!((sum - b.total_logprob).abs() < 1e-9);
                // The score is the model's: check against the sequence pass.
                let mut seq = prefix.clone();
                let mut total = 0.0;
                for &t in &b.ids {
                    total += log_softmax(&last_logits(&m, &seq))[t];
                    seq.push(t);
                }
                assert!((total - b.total_logprob).abs() < 1e-3, "{total} vs {}", b.total_logprob);
            }
        }
    }
    let m = trained();
    assert_eq!(beam_search(&m, &[1], 4, 0).unwrap().ids, Vec::<usize>::new());
}

#[test]
fn invalid_arguments_are_errors_with_the_bad_value() {
    let m = random::<f32>(CellKind::Lstm, Some(4), 10, 6, 1);
    let ok = SampleConfig::new(5);
    let msg = |r: Result<Vec<rnnrs::Sampled>, Error>| match r {
        Err(e @ Error::Invalid { .. }) => e.to_string(),
        other => panic!("expected Error::Invalid, got {other:?}"),
    };
    let p: &[usize] = &[1, 2];
    assert!(msg(sample(&m, &[p], &[0], &ok.clone().temperature(-1.0))).contains("temperature: expected a finite number >= 0"));
    assert!(msg(sample(&m, &[p], &[0], &ok.clone().temperature(f64::NAN))).contains("got NaN"));
    assert!(msg(sample(&m, &[p], &[0], &ok.clone().top_k(0))).contains("top_k"));
    assert!(msg(sample(&m, &[p], &[0], &ok.clone().top_p(0.0))).contains("top_p: expected a number in (0, 1]"));
    assert!(msg(sample(&m, &[p], &[0], &ok.clone().top_p(1.5))).contains("got 1.5"));
    assert!(msg(sample(&m, &[p], &[0], &ok.clone().repetition_penalty(0.0))).contains("repetition_penalty"));
    assert!(msg(sample(&m, &[p], &[0], &ok.clone().stop_tokens(vec![10]))).contains("stop token: expected an id in [0, 10), got 10"));
    assert!(msg(sample(&m, &[&[1usize, 10][..]], &[0], &ok)).contains("prefix 0 token id: expected an id in [0, 10), got 10"));
    assert!(msg(sample(&m, &[&[][..]], &[0], &ok)).contains("prefix 0: expected at least one token id"));
    assert!(msg(sample(&m, &[p, p], &[0], &ok)).contains("seeds: expected one seed per prefix (2), got 1"));
    assert!(msg(sample::<f32, Vec<usize>>(&m, &[], &[], &ok)).contains("prefixes"));
    assert!(msg(sample(&m, &[p], &[0], &SampleConfig::new(usize::MAX))).contains("length"));
    assert!(matches!(beam_search(&m, &[1], 0, 5), Err(Error::Invalid { .. })));
    assert!(matches!(beam_search(&m, &[], 2, 5), Err(Error::Invalid { .. })));
    assert!(matches!(beam_search(&m, &[11], 2, 5), Err(Error::Invalid { .. })));
    // A sampler is tied to its model's architecture.
    let other = random::<f32>(CellKind::Lstm, Some(4), 10, 7, 1);
    let mut s = Sampler::new(&m, &[p], &[0], ok).unwrap();
    assert!(matches!(s.advance(&other, 1), Err(Error::State(_))));
}

#[test]
fn overflowing_logits_are_an_error_not_a_panic() {
    // ReLU cells with huge positive weights overflow to +inf logits.
    let mut m = random::<f64>(CellKind::RnnRelu, Some(4), 10, 6, 1);
    let sd: Vec<(String, ndarray::ArrayD<f64>)> =
        rnnrs::Module::state_dict(&m).into_iter().map(|(n, a)| (n, a.mapv(|_| 1e200))).collect();
    let views: Vec<(String, ndarray::ArrayViewD<'_, f64>)> = sd.iter().map(|(n, a)| (n.clone(), a.view())).collect();
    rnnrs::Module::load_state_dict(&mut m, &views).unwrap();
    let err = sample(&m, &[[1usize]], &[0], &SampleConfig::new(5)).unwrap_err();
    assert!(matches!(err, Error::NonFinite(_)), "{err}");
    assert!(err.to_string().contains("sequence 0"), "{err}");
    assert!(matches!(beam_search(&m, &[1], 2, 5), Err(Error::NonFinite(_))));
}

#[test]
fn stepping_allocates_nothing() {
    let m = random::<f32>(CellKind::Lstm, Some(16), 300, 32, 2);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        for cfg in [
            SampleConfig::new(200).top_p(0.9).repetition_penalty(1.2),
            SampleConfig::greedy(200),
            SampleConfig::new(200).top_k(5),
            SampleConfig::new(200).weights(WeightFormat::F16),
        ] {
            let prefixes = [vec![1usize, 2, 3], vec![4], vec![5, 6], vec![7, 8, 9, 10]];
            let mut s = Sampler::new(&m, &prefixes, &[1, 2, 3, 4], cfg).unwrap();
            s.advance(&m, 2).unwrap();
            let before = allocations();
            s.advance(&m, 150).unwrap();
            assert_eq!(allocations(), before, "allocations during 150 steps with {:?}", s.config());
            // The longest prefix is furthest behind; shorter ones are ahead by the difference.
            assert_eq!(s.ids(3).len(), 150 + 2);
            assert_eq!(s.ids(0).len(), 150 + 2 + 1);
        }
    });
}

#[test]
fn banned_tokens_are_never_generated() {
    let m = random::<f32>(CellKind::Lstm, Some(6), 12, 16, 1);
    let free: Vec<usize> = (0..8).flat_map(|s| one(&m, &[1], s, &SampleConfig::new(60).temperature(2.0))).collect();
    let banned = [free[0], free[1], 0];
    assert!(free.iter().filter(|t| banned.contains(t)).count() > 10, "the check below must be able to fail");
    for cfg in [
        SampleConfig::new(60).temperature(2.0),
        SampleConfig::new(60),
        SampleConfig::new(60).top_k(3),
        SampleConfig::new(60).top_p(0.8).repetition_penalty(1.3),
        SampleConfig::greedy(30),
    ] {
        let cfg = cfg.banned_tokens(banned.to_vec());
        for s in 0..8 {
            let got = one(&m, &[1], s, &cfg);
            assert!(got.iter().all(|t| !banned.contains(t)), "{cfg:?}: {got:?}");
        }
    }
    let all: Vec<usize> = (0..12).collect();
    assert!(matches!(sample(&m, &[&[1usize][..]], &[0], &SampleConfig::new(3).banned_tokens(all)), Err(Error::Invalid { .. })));
    assert!(matches!(sample(&m, &[&[1usize][..]], &[0], &SampleConfig::new(3).banned_tokens(vec![12])), Err(Error::Invalid { .. })));
}

// ------------------------------------------------------------------------- float16 weight storage

/// `m` with every parameter rounded to the nearest float16 value (so exactly representable).
fn rounded_to_f16(m: &LanguageModel<f32>) -> LanguageModel<f32> {
    let mut r = m.clone();
    let sd: Vec<(String, ArrayD<f32>)> = m.state_dict().into_iter().map(|(n, a)| (n, a.mapv(|x| f16::from_f32(x).to_f32()))).collect();
    let views: Vec<_> = sd.iter().map(|(n, a)| (n.clone(), a.view())).collect();
    r.load_state_dict(&views).unwrap();
    r
}

fn used(m: &LanguageModel<f32>, w: WeightFormat) -> WeightFormat {
    Sampler::new(m, &[[1usize]], &[0], SampleConfig::new(1).weights(w)).unwrap().weights_used()
}

fn sample_with(m: &LanguageModel<f32>, cfg: &SampleConfig, w: WeightFormat) -> Vec<rnnrs::Sampled> {
    let prefixes = [vec![1usize, 2, 3], vec![4], vec![5, 6, 7, 8, 9]];
    sample(m, &prefixes, &[11, 12, 13], &cfg.clone().weights(w)).unwrap()
}

#[test]
fn float16_exact_weights_are_used_automatically_and_give_the_float32_bits() {
    let cfgs = [SampleConfig::new(40), SampleConfig::new(40).temperature(0.7).top_p(0.9).repetition_penalty(1.3), SampleConfig::greedy(30)];
    for m in [rounded_to_f16(&trained()), rounded_to_f16(&random(CellKind::Gru, None, 40, 20, 2))] {
        assert_eq!(used(&m, WeightFormat::Auto), WeightFormat::F16);
        assert_eq!(used(&m, WeightFormat::F32), WeightFormat::F32);
        for cfg in &cfgs {
            let want = sample_with(&m, cfg, WeightFormat::F32);
            assert_eq!(sample_with(&m, cfg, WeightFormat::Auto), want, "{cfg:?}");
            assert_eq!(sample_with(&m, cfg, WeightFormat::F16), want, "{cfg:?}");
        }
    }
    // Ordinary float32 weights: the automatic mode keeps them (the default is unchanged).
    let m = trained();
    assert_eq!(used(&m, WeightFormat::Auto), WeightFormat::F32);
    assert_eq!(used(&m, WeightFormat::F16), WeightFormat::F16);
    assert_eq!(SampleConfig::new(3).weights, WeightFormat::Auto);
    // float64 models never use float16 automatically.
    let m64 = random::<f64>(CellKind::Lstm, Some(4), 10, 6, 1);
    let s = Sampler::new(&m64, &[[1usize]], &[0], SampleConfig::new(2)).unwrap();
    assert_eq!(s.weights_used(), WeightFormat::F32);
}

/// Lossy float16 storage of ordinary float32 weights: every reported log-probability is within
/// this of the float32 model's own log-softmax (the weights change by at most 2^-11 relatively;
/// the worst seen here is 3.5e-3, on the trained model, whose weights are the largest).
const F16_LOGPROB_TOLERANCE: f64 = 1e-2;

#[test]
fn lossy_float16_weights_give_logprobs_close_to_float32() {
    for m in [trained(), random(CellKind::Lstm, Some(16), 300, 64, 2)] {
        let v = m.config().vocab_size;
        let mut worst = 0.0f64;
        for seed in 0..6u64 {
            let prefix: Vec<usize> = (0..7).map(|i| (i * 5 + seed as usize * 3 + 1) % v).collect();
            let got = sample(&m, &[&prefix], &[seed], &SampleConfig::new(25).weights(WeightFormat::F16)).unwrap().remove(0);
            let mut ids = prefix.clone();
            for (&t, &lp) in got.ids.iter().zip(&got.logprobs) {
                let want = log_softmax(&last_logits(&m, &ids))[t];
                worst = worst.max((lp - want).abs());
                ids.push(t);
            }
        }
        assert!(worst < F16_LOGPROB_TOLERANCE, "worst |logprob(f16) - logprob(f32)| = {worst}");
        assert!(worst > 0.0, "float16 storage of float32 weights should change something");
    }
}

#[test]
fn the_float16_copy_follows_every_change_of_the_weights() {
    let cfg = SampleConfig::new(20).temperature(0.8);
    let fresh = |m: &LanguageModel<f32>| {
        // A model with the same weights and no cached copy.
        let mut r = LanguageModel::<f32>::new(m.config().clone(), 99).unwrap();
        let sd = m.state_dict();
        let views: Vec<_> = sd.iter().map(|(n, a)| (n.clone(), a.view())).collect();
        r.load_state_dict(&views).unwrap();
        r
    };
    // A training step between two samplings (lossy copy).
    let mut m = trained();
    let before = sample_with(&m, &cfg, WeightFormat::F16);
    let mut opt = Optimizer::new(OptimizerConfig::sgd(0.5)).unwrap();
    let x = Array2::from_shape_fn((6, 2), |(t, b)| (t + b) % 12);
    let y = Array2::from_shape_fn((6, 2), |(t, b)| (t + 2 * b + 1) % 12);
    m.train_step(x.view(), y.view(), None, None, &mut opt).unwrap();
    let after = sample_with(&m, &cfg, WeightFormat::F16);
    assert_ne!(after, before);
    assert_eq!(after, sample_with(&fresh(&m), &cfg, WeightFormat::F16));
    // Loading other (float16-exact) weights: the automatic copy is rebuilt from them.
    let a = rounded_to_f16(&trained());
    let mut b = rounded_to_f16(&random(CellKind::Lstm, Some(8), 12, 24, 2));
    let _ = sample_with(&b, &cfg, WeightFormat::Auto);
    let sd = a.state_dict();
    let views: Vec<_> = sd.iter().map(|(n, v)| (n.clone(), v.view())).collect();
    b.load_state_dict(&views).unwrap();
    assert_eq!(sample_with(&b, &cfg, WeightFormat::Auto), sample_with(&a, &cfg, WeightFormat::F32));
    // Weights changed through visit_mut, between two chunks of one streaming sampler: the second
    // chunk uses the new weights (float32 and float16 runs agree because both sets are exact).
    let run = |w: WeightFormat| {
        let mut m = rounded_to_f16(&trained());
        let mut s = Sampler::new(&m, &[[1usize, 2]], &[5], cfg.clone().weights(w)).unwrap();
        s.advance(&m, 8).unwrap();
        assert_eq!(s.weights_used(), if w == WeightFormat::F32 { WeightFormat::F32 } else { WeightFormat::F16 });
        m.visit_mut(&mut |_, mut p, _| p.mapv_inplace(|x| f16::from_f32(x * 1.5).to_f32()));
        s.advance(&m, 20).unwrap();
        s.into_samples()
    };
    let streamed = run(WeightFormat::Auto);
    assert_eq!(streamed, run(WeightFormat::F32));
    assert_eq!(streamed, run(WeightFormat::F16));
    let unchanged = sample(&rounded_to_f16(&trained()), &[[1usize, 2]], &[5], &cfg).unwrap();
    assert_eq!(streamed[0].ids[..8], unchanged[0].ids[..8]);
    assert_ne!(streamed[0].logprobs[8..], unchanged[0].logprobs[8..]);
}

#[test]
fn bad_weight_formats_are_errors() {
    let e = "bf16".parse::<WeightFormat>().unwrap_err();
    assert_eq!(e.to_string(), "weights: expected one of \"auto\", \"f32\", \"f16\", got \"bf16\"");
    for w in [WeightFormat::Auto, WeightFormat::F32, WeightFormat::F16] {
        assert_eq!(w.name().parse::<WeightFormat>().unwrap(), w);
    }
    let m64 = random::<f64>(CellKind::Lstm, Some(4), 10, 6, 1);
    let e = sample(&m64, &[[1usize]], &[0], &SampleConfig::new(2).weights(WeightFormat::F16)).unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }) && e.to_string().contains("float32 model"), "{e}");
    // A weight beyond float16's range cannot be stored in float16.
    let mut m = random::<f32>(CellKind::Lstm, Some(4), 10, 6, 1);
    m.visit_mut(&mut |n, mut p, _| {
        if n == "linear.weight" {
            p[[0, 0]] = 1e5;
        }
    });
    let e = sample(&m, &[[1usize]], &[0], &SampleConfig::new(2).weights(WeightFormat::F16)).unwrap_err();
    assert!(e.to_string().contains("float16's range"), "{e}");
    assert!(sample(&m, &[[1usize]], &[0], &SampleConfig::new(2)).is_ok());
}

#[test]
fn an_optimizer_with_state_refuses_another_model() {
    let ids = Array2::from_shape_fn((6, 3), |(t, b)| (t + 2 * b) % 11);
    let mut a = LanguageModel::<f32>::new(config(CellKind::Lstm, Some(4), 11, 8, 1), 0).unwrap();
    let mut b = LanguageModel::<f32>::new(config(CellKind::Lstm, Some(4), 11, 6, 1), 0).unwrap();
    let mut opt = Optimizer::new(OptimizerConfig::adam(0.01)).unwrap();
    a.train_step(ids.view(), ids.view(), None, None, &mut opt).unwrap();
    let before = b.state_dict();
    let err = b.train_step(ids.view(), ids.view(), None, None, &mut opt).unwrap_err();
    assert!(matches!(err, Error::State(_)) && err.to_string().contains("optimizer: expected the module"), "{err}");
    assert!(err.to_string().contains("[32, 4]") && err.to_string().contains("[24, 4]"), "{err}");
    assert_eq!(before, b.state_dict(), "the failed step changed the weights");
    assert_eq!(opt.steps(), 1);
    a.train_step(ids.view(), ids.view(), None, None, &mut opt).unwrap(); // its own model still trains
    // Plain SGD keeps no state: any model may use it.
    let mut sgd = Optimizer::new(OptimizerConfig::sgd(0.1)).unwrap();
    a.train_step(ids.view(), ids.view(), None, None, &mut sgd).unwrap();
    b.train_step(ids.view(), ids.view(), None, None, &mut sgd).unwrap();
}

// ------------------------------------------------------------------- continuous batching (join/leave)

/// Per-sequence options of the continuous-batching tests: mixed temperatures, filters, penalties,
/// stop and ban lists, lengths (sequence `i`).
fn mixed(i: usize, vocab: usize) -> SampleConfig {
    let base = SampleConfig::new(3 + (i * 7) % 19);
    match i % 6 {
        0 => base.temperature(0.8).top_p(0.9),
        1 => base.temperature(1.3),
        2 => base.temperature(0.0),
        3 => base.top_k(4).top_p(0.7).repetition_penalty(1.3),
        4 => base.temperature(0.6).stop_tokens(vec![2 % vocab]).banned_tokens(vec![0]),
        _ => base.top_p(0.5).repetition_penalty(0.8),
    }
}

/// Run sequences `(join step, prefix, seed, config)` through one continuous sampler of `capacity`,
/// removing the ids of `cancel` at their step; returns each sequence's tokens, logprobs and whether
/// it stopped, and the largest number of sequences stepped together.
#[allow(clippy::type_complexity)]
fn run_continuous<F: Element>(
    m: &LanguageModel<F>,
    capacity: usize,
    seqs: &[(usize, Vec<usize>, u64, SampleConfig)],
    cancel: &[(usize, usize)],
    top: usize,
) -> (Vec<(Vec<usize>, Vec<f64>, bool)>, usize) {
    let mut s = ContinuousSampler::new(m, capacity, WeightFormat::Auto).unwrap();
    let mut out = vec![(Vec::new(), Vec::new(), false); seqs.len()];
    let mut ids = vec![u64::MAX; seqs.len()];
    let mut finished = vec![false; seqs.len()];
    let mut widest = 0;
    for step in 0.. {
        for (k, (at, prefix, seed, cfg)) in seqs.iter().enumerate() {
            if *at == step {
                ids[k] = s.add(m, prefix, *seed, cfg, top).unwrap();
            }
        }
        for &(at, k) in cancel {
            if at == step {
                assert!(s.remove(ids[k]));
                assert!(!s.remove(ids[k]), "removed twice");
            }
        }
        if s.is_empty() && seqs.iter().all(|q| q.0 <= step) {
            break;
        }
        widest = widest.max(s.len());
        for ev in s.step(m).unwrap() {
            let k = ids.iter().position(|&i| i == ev.id).unwrap();
            assert!(!finished[k], "an event after the end");
            if let Some((t, lp)) = ev.token {
                out[k].0.push(t);
                out[k].1.push(lp);
                if top > 0 {
                    assert_eq!(ev.top.len(), top);
                    assert!(ev.top.windows(2).all(|w| w[0].1 >= w[1].1), "{:?}", ev.top);
                    assert!(ev.top[0].1 >= lp - 1e-12 && ev.top[0].1 <= 0.0);
                    if let Some(&(_, l)) = ev.top.iter().find(|e| e.0 == t) {
                        assert_eq!(l, lp, "the token's own logprob in its top list");
                    }
                } else {
                    assert!(ev.top.is_empty());
                }
            }
            out[k].2 = ev.stopped;
            finished[k] = ev.finished;
        }
        assert!(step < 10_000);
    }
    (out, widest)
}

fn check_continuous_equals_alone<F: Element>(m: &LanguageModel<F>, vocab: usize, n: usize, capacity: usize) {
    let seqs: Vec<(usize, Vec<usize>, u64, SampleConfig)> = (0..n)
        .map(|i| {
            let prefix: Vec<usize> = (0..1 + i % 4).map(|j| (i * 3 + j * 5 + 1) % vocab).collect();
            ((i * 5) % 23, prefix, 100 + i as u64 * 17, mixed(i, vocab))
        })
        .collect();
    let (got, widest) = run_continuous(m, capacity, &seqs, &[], 3);
    assert!(widest >= 4.min(n), "sequences were stepped together: {widest}");
    for (k, (_, prefix, seed, cfg)) in seqs.iter().enumerate() {
        let alone = sample(m, &[prefix], &[*seed], cfg).unwrap().remove(0);
        assert_eq!(got[k].0, alone.ids, "sequence {k} ({cfg:?})");
        assert_eq!(got[k].1, alone.logprobs, "sequence {k}: logprobs bit for bit");
        assert_eq!(got[k].2, alone.stopped, "sequence {k}");
    }
}

#[test]
fn continuous_batching_equals_each_sequence_alone() {
    check_continuous_equals_alone(&trained(), 12, 14, 16);
    check_continuous_equals_alone(&random::<f32>(CellKind::Lstm, Some(6), 40, 48, 2), 40, 20, 32);
    check_continuous_equals_alone(&random::<f64>(CellKind::Gru, None, 25, 20, 1), 25, 9, 9);
    check_continuous_equals_alone(&random::<f32>(CellKind::RnnTanh, Some(5), 30, 16, 1), 30, 6, 64);
    // Float16-exact weights (read as float16 by Auto, like the built-in model).
    let h = rounded_to_f16(&random::<f32>(CellKind::Lstm, Some(8), 50, 64, 2));
    check_continuous_equals_alone(&h, 50, 12, 12);
}

#[test]
fn continuous_batching_does_not_depend_on_threads() {
    let m = random::<f32>(CellKind::Lstm, Some(16), 300, 256, 2);
    let seqs: Vec<(usize, Vec<usize>, u64, SampleConfig)> =
        (0..10).map(|i| (i % 3, vec![i + 1, 2 * i + 3], i as u64, mixed(i, 300))).collect();
    let runs: Vec<_> = [1, 2, 3]
        .iter()
        .map(|&t| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
            pool.install(|| run_continuous(&m, 10, &seqs, &[], 0).0)
        })
        .collect();
    assert_eq!(runs[0], runs[1]);
    assert_eq!(runs[0], runs[2]);
    for (k, (_, prefix, seed, cfg)) in seqs.iter().enumerate() {
        assert_eq!(runs[0][k].0, one(&m, prefix, *seed, cfg), "sequence {k}");
    }
}

#[test]
fn removed_sequences_leave_and_the_others_are_unchanged() {
    let m = random::<f32>(CellKind::Gru, Some(6), 30, 24, 2);
    let seqs: Vec<(usize, Vec<usize>, u64, SampleConfig)> =
        (0..8).map(|i| (i % 2, vec![i + 1], 7 + i as u64, SampleConfig::new(30).temperature(0.9))).collect();
    // Sequences 1, 4 and 6 are cancelled after 3, 10 and 0 steps.
    let (got, _) = run_continuous(&m, 8, &seqs, &[(3, 1), (10, 4), (1, 6)], 0);
    for (k, (_, prefix, seed, cfg)) in seqs.iter().enumerate() {
        let alone = one(&m, prefix, *seed, cfg);
        match k {
            1 | 4 | 6 => {
                assert!(got[k].0.len() < alone.len());
                assert_eq!(got[k].0, alone[..got[k].0.len()], "a cancelled sequence's tokens so far");
            }
            _ => assert_eq!(got[k].0, alone, "sequence {k}"),
        }
    }
    // A freed slot is reused: capacity 2, four sequences one after another.
    let mut s = ContinuousSampler::new(&m, 2, WeightFormat::Auto).unwrap();
    let cfg = SampleConfig::new(5);
    let a = s.add(&m, &[1], 1, &cfg, 0).unwrap();
    let b = s.add(&m, &[2], 2, &cfg, 0).unwrap();
    assert!(matches!(s.add(&m, &[3], 3, &cfg, 0), Err(Error::State(msg)) if msg.contains("full")));
    assert_eq!(s.len(), 2);
    s.step(&m).unwrap();
    assert!(s.remove(a));
    let c = s.add(&m, &[3], 3, &cfg, 0).unwrap();
    assert!(c != a && c != b);
    let mut toks = Vec::new();
    while !s.is_empty() {
        for ev in s.step(&m).unwrap() {
            if ev.id == c {
                toks.extend(ev.token.map(|t| t.0));
            }
        }
    }
    assert_eq!(toks, one(&m, &[3], 3, &cfg));
    assert_eq!(s.capacity(), 2);
    assert!(s.step(&m).unwrap().is_empty(), "an empty sampler steps nothing");
}

#[test]
fn continuous_sampler_reports_length_zero_and_stop_tokens() {
    let m = trained();
    let mut s = ContinuousSampler::new(&m, 4, WeightFormat::Auto).unwrap();
    let z = s.add(&m, &[1, 2], 0, &SampleConfig::new(0), 0).unwrap();
    let ev = s.step(&m).unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].id, ev[0].token, ev[0].finished), (z, None, true));
    assert!(s.is_empty());
    // Greedy on the trained pattern 1 2 3 4 5 1 2 6 ...: a stop token is included and reported.
    let cfg = SampleConfig::greedy(20).stop_tokens(vec![5]);
    let alone = sample(&m, &[vec![1, 2, 3]], &[0], &cfg).unwrap().remove(0);
    let (got, _) = run_continuous(&m, 4, &[(0, vec![1, 2, 3], 0, cfg)], &[], 1);
    assert_eq!(got[0].0, alone.ids);
    assert_eq!(got[0].2, alone.stopped);
}

#[test]
fn continuous_sampler_top_logprobs_are_the_models_log_softmax() {
    let m = trained();
    let prefix = [1usize, 2, 3];
    let mut s = ContinuousSampler::new(&m, 1, WeightFormat::Auto).unwrap();
    s.add(&m, &prefix, 3, &SampleConfig::new(1), 5).unwrap();
    let mut ev = Vec::new();
    while ev.is_empty() {
        ev = s.step(&m).unwrap();
    }
    let want = log_softmax(&last_logits(&m, &prefix));
    let mut order: Vec<usize> = (0..want.len()).collect();
    order.sort_by(|&a, &b| want[b].partial_cmp(&want[a]).unwrap().then(a.cmp(&b)));
    let top = &ev[0].top;
    assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), order[..5].to_vec());
    for &(t, lp) in top {
        assert!((lp - want[t]).abs() < 1e-4, "{t}: {lp} vs {}", want[t]);
    }
}

#[test]
fn continuous_sampler_refuses_bad_arguments() {
    let m = random::<f32>(CellKind::Lstm, Some(4), 10, 8, 1);
    let other = random::<f32>(CellKind::Lstm, Some(4), 11, 8, 1);
    for cap in [0, rnnrs::sample::MAX_SEQUENCES + 1] {
        assert!(matches!(ContinuousSampler::new(&m, cap, WeightFormat::Auto), Err(Error::Invalid { .. })));
    }
    let m64 = random::<f64>(CellKind::Lstm, Some(4), 10, 8, 1);
    assert!(ContinuousSampler::new(&m64, 2, WeightFormat::F16).is_err());
    let mut s = ContinuousSampler::new(&m, 2, WeightFormat::F32).unwrap();
    let ok = SampleConfig::new(3);
    let bad: Vec<(Vec<usize>, SampleConfig, usize, &str)> = vec![
        (vec![], ok.clone(), 0, "prefix"),
        (vec![10], ok.clone(), 0, "prefix token id"),
        (vec![1], ok.clone().temperature(-1.0), 0, "temperature"),
        (vec![1], ok.clone().top_p(0.0), 0, "top_p"),
        (vec![1], ok.clone().top_k(0), 0, "top_k"),
        (vec![1], ok.clone().repetition_penalty(0.0), 0, "repetition_penalty"),
        (vec![1], ok.clone().stop_tokens(vec![10]), 0, "stop token"),
        (vec![1], ok.clone().banned_tokens((0..10).collect::<Vec<_>>()), 0, "banned tokens"),
        (vec![1], ok.clone().weights(WeightFormat::F16), 0, "weights"),
        (vec![1], ok.clone(), rnnrs::sample::MAX_TOP_LOGPROBS + 1, "top_logprobs"),
    ];
    for (prefix, cfg, top, what) in bad {
        match s.add(&m, &prefix, 0, &cfg, top) {
            Err(Error::Invalid { what: w, .. }) => assert_eq!(w, what),
            other => panic!("{what}: expected an Invalid error, got {other:?}"),
        }
    }
    assert!(s.is_empty(), "nothing was added");
    assert!(matches!(s.add(&other, &[1], 0, &ok, 0), Err(Error::State(_))));
    assert!(matches!(s.step(&other), Err(Error::State(_))));
    assert!(!s.remove(12345));
}

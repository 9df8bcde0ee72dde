//! Language-model regularisation and tied weights: exact gradients (finite differences in float64,
//! with the same masks for every evaluation), masks that follow the dropout stream, inference
//! without dropout, and the tied parameter set.

use ndarray::{Array2, ArrayD};
use rnnrs::{CellKind, LanguageModel, LanguageModelConfig, LanguageModelOptions, Module};

fn config(embed: Option<usize>, cell: CellKind) -> LanguageModelConfig {
    LanguageModelConfig { vocab_size: 7, embed_size: embed, hidden_size: 5, num_layers: 2, cell, dropout: 0.0 }
}

fn data() -> (Array2<usize>, Array2<usize>) {
    let x = Array2::from_shape_fn((4, 3), |(t, b)| (3 * t + 2 * b + 1) % 7);
    let y = Array2::from_shape_fn((4, 3), |(t, b)| (5 * t + b + 2) % 7);
    (x, y)
}

/// The training loss with the masks of dropout call `calls + 1` (the stream reset before each pass).
fn loss_at(m: &mut LanguageModel<f64>, calls: u64) -> f64 {
    let (x, y) = data();
    let seed = m.rnn().dropout_state().0;
    m.rnn_mut().set_dropout_state(seed, calls);
    m.zero_grad();
    m.loss_and_grad(x.view(), y.view(), None).unwrap().0
}

fn set(m: &mut LanguageModel<f64>, name: &str, idx: usize, v: f64) {
    let mut done = false;
    m.visit_mut(&mut |n, mut p, _| {
        if n == name {
            *p.iter_mut().nth(idx).unwrap() = v;
            done = true;
        }
    });
    assert!(done, "no parameter {name}");
}

fn check_gradients(opts: LanguageModelOptions, embed: Option<usize>, cell: CellKind) {
    let mut m = LanguageModel::<f64>::with_options(config(embed, cell), opts.clone(), 3).unwrap();
    let calls = 5;
    loss_at(&mut m, calls);
    let grads: Vec<(String, ArrayD<f64>)> = m.grad_dict();
    let params: Vec<(String, ArrayD<f64>)> = m.state_dict();
    let eps = 1e-6;
    let mut worst: f64 = 0.0;
    for ((name, p), (_, g)) in params.iter().zip(&grads) {
        for idx in (0..p.len()).step_by(1 + p.len() / 7) {
            let v = *p.iter().nth(idx).unwrap();
            set(&mut m, name, idx, v + eps);
            let lp = loss_at(&mut m, calls);
            set(&mut m, name, idx, v - eps);
            let lm = loss_at(&mut m, calls);
            set(&mut m, name, idx, v);
            let fd = (lp - lm) / (2.0 * eps);
            let an = *g.iter().nth(idx).unwrap();
            let err = (fd - an).abs() / (1.0f64).max(fd.abs());
            worst = worst.max(err);
            assert!(err < 1e-6, "{opts:?} {name}[{idx}]: finite difference {fd}, gradient {an}");
        }
    }
    assert!(worst < 1e-6);
}

#[test]
fn every_option_has_exact_gradients() {
    let all = LanguageModelOptions { tie_weights: true, embed_dropout: 0.3, locked_dropout: 0.3, weight_drop: 0.4 };
    check_gradients(LanguageModelOptions { embed_dropout: 0.4, ..Default::default() }, Some(4), CellKind::Lstm);
    check_gradients(LanguageModelOptions { locked_dropout: 0.4, ..Default::default() }, Some(4), CellKind::Gru);
    check_gradients(LanguageModelOptions { locked_dropout: 0.4, ..Default::default() }, None, CellKind::RnnTanh);
    check_gradients(LanguageModelOptions { weight_drop: 0.5, ..Default::default() }, Some(4), CellKind::Lstm);
    check_gradients(LanguageModelOptions { tie_weights: true, ..Default::default() }, Some(5), CellKind::Gru);
    check_gradients(LanguageModelOptions { tie_weights: true, ..Default::default() }, Some(4), CellKind::Lstm);
    check_gradients(all, Some(4), CellKind::Lstm);
}

#[test]
fn tied_models_share_the_embedding_and_keep_it_shared() {
    let opts = LanguageModelOptions { tie_weights: true, ..Default::default() };
    let mut m = LanguageModel::<f64>::with_options(config(Some(5), CellKind::Lstm), opts.clone(), 0).unwrap();
    let names = m.param_names();
    assert!(!names.contains(&"linear.weight".to_string()) && names.contains(&"linear.bias".to_string()));
    assert!(!names.iter().any(|n| n.starts_with("proj")), "E == H needs no projection");
    assert_eq!(m.linear().weight, m.embedding().unwrap().weight);
    let mut opt = rnnrs::Optimizer::new(rnnrs::OptimizerConfig::adam(0.05)).unwrap();
    let (x, y) = data();
    m.train_step(x.view(), y.view(), None, Some(1.0), &mut opt).unwrap();
    assert_eq!(m.linear().weight, m.embedding().unwrap().weight, "still tied after an update");
    let p = LanguageModel::<f64>::with_options(config(Some(3), CellKind::Gru), opts, 0).unwrap();
    assert!(p.param_names().contains(&"proj.weight".to_string()));
    let err = LanguageModel::<f64>::with_options(config(None, CellKind::Gru), LanguageModelOptions { tie_weights: true, ..Default::default() }, 0).unwrap_err();
    assert!(err.to_string().contains("tie_weights"), "{err}");
    let err = LanguageModel::<f64>::with_options(config(Some(3), CellKind::Gru), LanguageModelOptions { weight_drop: 1.0, ..Default::default() }, 0).unwrap_err();
    assert!(err.to_string().contains("weight_drop"), "{err}");
}

#[test]
fn dropout_masks_follow_the_stream_and_inference_has_none() {
    let opts = LanguageModelOptions { embed_dropout: 0.3, locked_dropout: 0.3, weight_drop: 0.3, ..Default::default() };
    let mut m = LanguageModel::<f64>::with_options(config(Some(4), CellKind::Lstm), opts, 9).unwrap();
    let (x, y) = data();
    let before = m.state_dict();
    let (a, b) = (loss_at(&mut m, 1), loss_at(&mut m, 1));
    assert_eq!(a, b, "same stream position, same masks");
    assert_ne!(a, loss_at(&mut m, 2), "the next batch draws other masks");
    assert_eq!(before, m.state_dict(), "weight drop puts the weights back");
    let plain = LanguageModel::<f64>::new(config(Some(4), CellKind::Lstm), 9).unwrap();
    assert_eq!(m.evaluate(x.view(), y.view(), None).unwrap().0, plain.evaluate(x.view(), y.view(), None).unwrap().0);
    let (s, c) = m.rnn().dropout_state();
    m.loss_and_grad(x.view(), y.view(), None).unwrap();
    assert_eq!(m.rnn().dropout_state(), (s, c + 1), "one call per training pass");
}

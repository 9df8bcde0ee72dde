//! `SeqModel` with Keras' `binary_crossentropy`, per-example loss weights and RMSprop: the loss
//! value against its formula, the gradients against central finite differences (f64), and the
//! RMSprop update against its formula.

use ndarray::{Array3, ArrayD, IxDyn};
use rnnrs::{Module, Optimizer, OptimizerConfig, SeqInput, SeqModel, SeqModelConfig, SeqTarget};

fn model() -> SeqModel<f64> {
    let cfg = SeqModelConfig::from_json(
        r#"{"input_features": 3, "loss": "binary_crossentropy", "layers": [
            {"type": "recurrent", "cell": "lstm", "units": 4, "bidirectional": true},
            {"type": "dense", "units": 2, "activation": "sigmoid"}]}"#,
    )
    .unwrap();
    SeqModel::new(cfg, 5).unwrap()
}

fn data() -> (Array3<f64>, ArrayD<f64>, Vec<usize>) {
    let x = Array3::from_shape_fn((3, 5, 3), |(b, t, f)| ((b * 7 + t * 3 + f) as f64 * 0.37).sin());
    let y = ArrayD::from_shape_fn(IxDyn(&[3, 2]), |i| ((i[0] + i[1]) % 2) as f64);
    (x, y, vec![5, 2, 4])
}

#[test]
fn binary_crossentropy_value_and_weighted_gradients() {
    let mut m = model();
    let (x, y, lengths) = data();
    let w = [0.5, 2.0, 1.0];
    let p = m.predict(SeqInput::Features(x.view()), Some(&lengths)).unwrap();
    let mut want = 0.0;
    for b in 0..3 {
        for k in 0..2 {
            let (p, t) = (p[[b, k]], y[[b, k]]);
            want -= w[b] * (t * p.ln() + (1.0 - t) * (1.0 - p).ln()) / 2.0;
        }
    }
    let got = m.evaluate_weighted(SeqInput::Features(x.view()), SeqTarget::Values(y.view()), Some(&lengths), Some(&w)).unwrap();
    assert!((got.loss - want / 3.0).abs() < 1e-12, "{} vs {}", got.loss, want / 3.0);

    let mut opt = Optimizer::new(OptimizerConfig::sgd(0.0)).unwrap();
    m.train_step_weighted(SeqInput::Features(x.view()), SeqTarget::Values(y.view()), Some(&lengths), Some(&w), None, &mut opt)
        .unwrap();
    let grads = m.grad_dict();
    let params = m.state_dict();
    let loss = |m: &SeqModel<f64>| {
        m.evaluate_weighted(SeqInput::Features(x.view()), SeqTarget::Values(y.view()), Some(&lengths), Some(&w)).unwrap().loss
    };
    let eps = 1e-6;
    for (name, p) in &params {
        for i in [0, p.len() / 2, p.len() - 1] {
            let mut shifted = |d: f64| {
                let mut q = p.clone();
                q.as_slice_mut().unwrap()[i] += d;
                let mut all: Vec<(String, ArrayD<f64>)> = params.clone();
                all.iter_mut().find(|(n, _)| n == name).unwrap().1 = q;
                let views: Vec<(String, ndarray::ArrayViewD<'_, f64>)> = all.iter().map(|(n, a)| (n.clone(), a.view())).collect();
                m.load_state_dict(&views).unwrap();
                loss(&m)
            };
            let num = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
            let got = grads.iter().find(|(n, _)| n == name).unwrap().1.as_slice().unwrap()[i];
            assert!((got - num).abs() <= 1e-8 + 1e-6 * num.abs(), "{name}[{i}]: {got} vs {num}");
        }
    }
}

#[test]
fn binary_crossentropy_refuses_other_outputs_and_bad_weights() {
    let cfg = SeqModelConfig::from_json(
        r#"{"input_features": 3, "loss": "binary_crossentropy", "layers": [
            {"type": "recurrent", "cell": "gru", "units": 4}, {"type": "dense", "units": 1, "activation": "linear"}]}"#,
    )
    .unwrap();
    let e = SeqModel::<f64>::new(cfg, 0).err().unwrap().to_string();
    assert!(e.contains("sigmoid"), "{e}");
    let m = model();
    let (x, y, _) = data();
    let e = m.evaluate_weighted(SeqInput::Features(x.view()), SeqTarget::Values(y.view()), None, Some(&[1.0, -1.0, 1.0]));
    assert!(e.unwrap_err().to_string().contains("sample_weight"));
}

#[test]
fn rmsprop_follows_its_formula() {
    let mut m = model();
    let (x, y, lengths) = data();
    let (lr, rho, eps) = (0.01, 0.8, 1e-7);
    let mut opt = Optimizer::new(OptimizerConfig::RmsProp { lr, rho, eps, weight_decay: 0.0 }).unwrap();
    let mut want: Vec<(String, ArrayD<f64>)> = m.state_dict();
    let mut sq: Vec<ArrayD<f64>> = want.iter().map(|(_, a)| ArrayD::zeros(a.raw_dim())).collect();
    for _ in 0..3 {
        m.train_step(SeqInput::Features(x.view()), SeqTarget::Values(y.view()), Some(&lengths), None, &mut opt).unwrap();
        for ((name, p), v) in want.iter_mut().zip(sq.iter_mut()) {
            let g = &m.grad_dict().into_iter().find(|(n, _)| n == name).unwrap().1;
            *v = &*v * rho + &(g * g) * (1.0 - rho);
            *p = &*p - &(g / &(v.mapv(f64::sqrt) + eps) * lr);
        }
        for ((_, got), (name, w)) in m.state_dict().iter().zip(&want) {
            let err = (got - w).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
            assert!(err < 1e-12, "{name}: {err}");
        }
    }
    assert_eq!(opt.state_tensors(&m).len(), want.len());
    assert!(opt.state_tensors(&m)[0].0.ends_with(".square_avg"));
}

//! Finite-difference gradient checks (f64) of every pass, and shape/argument errors.

use ndarray::{Array1, Array2, Array3, ArrayD};
use rnnrs::rng;
use rnnrs::{cross_entropy, CellKind, Embedding, Error, Linear, Module, Recurrent, RecurrentConfig};

fn rand3(shape: (usize, usize, usize), seed: u64) -> Array3<f64> {
    let mut r = rng::stream(&[seed, 99]);
    Array3::from_shape_simple_fn(shape, || 2.0 * rng::uniform(&mut r) - 1.0)
}

/// Scalar objective `sum(y*wy) + sum(h_n*wh) + sum(c_n*wc)` of a forward pass.
fn objective(
    net: &Recurrent<f64>,
    x: &Array3<f64>,
    h0: &Array3<f64>,
    c0: Option<&Array3<f64>>,
    w: &(Array3<f64>, Array3<f64>, Array3<f64>),
) -> f64 {
    let out = net.forward(x.view(), Some(h0.view()), c0.map(|c| c.view())).unwrap();
    let mut s = (&out.y * &w.0).sum() + (&out.h_n * &w.1).sum();
    if let Some(c) = out.c_n {
        s += (&c * &w.2).sum();
    }
    s
}

fn check_close(what: &str, analytic: f64, numeric: f64) {
    let err = (analytic - numeric).abs() / (1e-7 + analytic.abs().max(numeric.abs()));
    assert!(err < 1e-5 || (analytic - numeric).abs() < 1e-8, "{what}: analytic {analytic} vs numeric {numeric}");
}

fn gradcheck(cell: CellKind, layers: usize, bidi: bool) {
    let (t, b, i, h) = (4, 2, 3, 3);
    let cfg = RecurrentConfig::new(cell, i, h).num_layers(layers).bidirectional(bidi);
    let mut net = Recurrent::<f64>::new(cfg.clone(), 7).unwrap();
    let x = rand3((t, b, i), 1);
    let st = cfg.state_shape(b);
    let h0 = rand3((st[0], st[1], st[2]), 2);
    let c0 = cell.has_cell_state().then(|| rand3((st[0], st[1], st[2]), 3));
    let y_shape = (t, b, cfg.directions() * h);
    let w = (rand3(y_shape, 4), rand3((st[0], st[1], st[2]), 5), rand3((st[0], st[1], st[2]), 6));
    let (_, tape) = net.forward_train(x.view(), Some(h0.view()), c0.as_ref().map(|c| c.view())).unwrap();
    net.zero_grad();
    let dc_n = cell.has_cell_state().then(|| w.2.view());
    let g = net.backward(&tape, w.0.view(), Some(w.1.view()), dc_n).unwrap();
    let eps = 1e-6;
    // parameters
    let grads: Vec<(String, ArrayD<f64>)> = net.grad_dict();
    let params: Vec<(String, ArrayD<f64>)> = net.state_dict();
    for ((name, p), (_, gp)) in params.iter().zip(&grads) {
        for k in (0..p.len()).step_by(5) {
            let shift = |delta: f64| {
                let mut sd: Vec<(String, ArrayD<f64>)> = params.clone();
                let entry = sd.iter_mut().find(|e| &e.0 == name).unwrap();
                entry.1.as_slice_mut().unwrap()[k] += delta;
                let views: Vec<_> = sd.iter().map(|(n, a)| (n.clone(), a.view())).collect();
                let mut m = net.clone();
                m.load_state_dict(&views).unwrap();
                objective(&m, &x, &h0, c0.as_ref(), &w)
            };
            let num = (shift(eps) - shift(-eps)) / (2.0 * eps);
            check_close(&format!("{cell} {name}[{k}]"), gp.as_slice().unwrap()[k], num);
        }
    }
    // input and initial states
    for k in 0..x.len() {
        let mut xp = x.clone();
        xp.as_slice_mut().unwrap()[k] += eps;
        let mut xm = x.clone();
        xm.as_slice_mut().unwrap()[k] -= eps;
        let num = (objective(&net, &xp, &h0, c0.as_ref(), &w) - objective(&net, &xm, &h0, c0.as_ref(), &w)) / (2.0 * eps);
        check_close(&format!("{cell} dx[{k}]"), g.dx.as_ref().unwrap().as_slice().unwrap()[k], num);
    }
    for k in 0..h0.len() {
        let mut hp = h0.clone();
        hp.as_slice_mut().unwrap()[k] += eps;
        let mut hm = h0.clone();
        hm.as_slice_mut().unwrap()[k] -= eps;
        let num = (objective(&net, &x, &hp, c0.as_ref(), &w) - objective(&net, &x, &hm, c0.as_ref(), &w)) / (2.0 * eps);
        check_close(&format!("{cell} dh0[{k}]"), g.dh0.as_slice().unwrap()[k], num);
        if let (Some(c0), Some(dc0)) = (&c0, &g.dc0) {
            let mut cp = c0.clone();
            cp.as_slice_mut().unwrap()[k] += eps;
            let mut cm = c0.clone();
            cm.as_slice_mut().unwrap()[k] -= eps;
            let num = (objective(&net, &x, &h0, Some(&cp), &w) - objective(&net, &x, &h0, Some(&cm), &w)) / (2.0 * eps);
            check_close(&format!("{cell} dc0[{k}]"), dc0.as_slice().unwrap()[k], num);
        }
    }
}

#[test]
fn gradcheck_every_cell_deep_and_bidirectional() {
    for cell in [CellKind::RnnTanh, CellKind::RnnRelu, CellKind::Gru, CellKind::Lstm] {
        gradcheck(cell, 1, false);
        gradcheck(cell, 2, true);
    }
}

#[test]
fn gradcheck_embedding_linear_cross_entropy() {
    let ids = [2usize, 0, 2, 1];
    let targets = [1usize, 3, 0, 2];
    let mut emb = Embedding::<f64>::new(3, 4, 1).unwrap();
    let mut lin = Linear::<f64>::new(4, 5, 2).unwrap();
    let loss = |emb: &Embedding<f64>, lin: &Linear<f64>| {
        let e = emb.forward(&ids).unwrap();
        cross_entropy(lin.forward(e.view()).unwrap().view(), &targets).unwrap().0
    };
    let e = emb.forward(&ids).unwrap();
    let logits = lin.forward(e.view()).unwrap();
    let (_, dlogits) = cross_entropy(logits.view(), &targets).unwrap();
    let de = lin.backward(e.view(), dlogits.view());
    emb.backward(&ids, de.view());
    let eps = 1e-6;
    for k in 0..emb.weight.len() {
        let (mut p, mut m) = (emb.clone(), emb.clone());
        p.weight.as_slice_mut().unwrap()[k] += eps;
        m.weight.as_slice_mut().unwrap()[k] -= eps;
        check_close("embedding", emb.grad.as_slice().unwrap()[k], (loss(&p, &lin) - loss(&m, &lin)) / (2.0 * eps));
    }
    for k in 0..lin.weight.len() {
        let (mut p, mut m) = (lin.clone(), lin.clone());
        p.weight.as_slice_mut().unwrap()[k] += eps;
        m.weight.as_slice_mut().unwrap()[k] -= eps;
        check_close("linear.weight", lin.grad_weight.as_slice().unwrap()[k], (loss(&emb, &p) - loss(&emb, &m)) / (2.0 * eps));
    }
    for k in 0..lin.bias.len() {
        let (mut p, mut m) = (lin.clone(), lin.clone());
        p.bias[k] += eps;
        m.bias[k] -= eps;
        check_close("linear.bias", lin.grad_bias[k], (loss(&emb, &p) - loss(&emb, &m)) / (2.0 * eps));
    }
}

#[test]
fn cross_entropy_is_stable_for_huge_logits() {
    let logits = Array2::from_shape_vec((1, 3), vec![1000.0f64, 0.0, -1000.0]).unwrap();
    let (loss, g) = cross_entropy(logits.view(), &[0]).unwrap();
    assert!(loss.abs() < 1e-12, "loss {loss}");
    assert!(g.iter().all(|v| v.is_finite()));
    let (loss, _) = cross_entropy(logits.view(), &[2]).unwrap();
    assert!((loss - 2000.0).abs() < 1e-9, "loss {loss}");
}

#[test]
fn shape_errors_name_expected_and_got() {
    let cfg = RecurrentConfig::new(CellKind::Lstm, 3, 4).num_layers(2);
    let mut net = Recurrent::<f32>::new(cfg, 0).unwrap();
    let err = net.forward(Array3::<f32>::zeros((5, 2, 7)).view(), None, None).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Shape { .. }) && msg.contains("(5, 2, 3)") && msg.contains("(5, 2, 7)"), "{msg}");
    let h0 = Array3::<f32>::zeros((1, 2, 4));
    let msg = net.forward(Array3::<f32>::zeros((5, 2, 3)).view(), Some(h0.view()), None).unwrap_err().to_string();
    assert!(msg.contains("(2, 2, 4)") && msg.contains("(1, 2, 4)"), "{msg}");
    let msg = net.forward(Array3::<f32>::zeros((0, 2, 3)).view(), None, None).unwrap_err().to_string();
    assert!(msg.contains("seq_len >= 1"), "{msg}");
    let (_, tape) = net.forward_train(Array3::<f32>::zeros((5, 2, 3)).view(), None, None).unwrap();
    let msg = net.backward(&tape, Array3::<f32>::zeros((5, 3, 4)).view(), None, None).unwrap_err().to_string();
    assert!(msg.contains("(5, 2, 4)"), "{msg}");
    let mut x = Array3::<f32>::zeros((5, 2, 3));
    x[[1, 1, 2]] = f32::NAN;
    assert!(matches!(net.forward(x.view(), None, None), Err(Error::NonFinite(_))));
}

#[test]
fn a_tape_from_another_layer_is_an_error_not_a_panic() {
    let tape_of = |cfg: RecurrentConfig, i: usize| {
        let mut net = Recurrent::<f32>::new(cfg, 0).unwrap();
        net.forward_train(Array3::<f32>::zeros((5, 2, i)).view(), None, None).unwrap().1
    };
    let lstm = RecurrentConfig::new(CellKind::Lstm, 4, 6);
    let others = [
        ("hidden", RecurrentConfig::new(CellKind::Lstm, 4, 8), 4),
        ("cell", RecurrentConfig::new(CellKind::Gru, 4, 6), 4),
        ("input", RecurrentConfig::new(CellKind::Lstm, 5, 6), 5),
        ("directions", RecurrentConfig::new(CellKind::Lstm, 4, 6).bidirectional(true), 4),
        ("layers", RecurrentConfig::new(CellKind::Lstm, 4, 6).num_layers(2), 4),
    ];
    for (what, cfg, i) in others {
        let tape = tape_of(cfg, i);
        let mut net = Recurrent::<f32>::new(lstm.clone(), 0).unwrap();
        let dy = Array3::<f32>::zeros((5, 2, 6));
        let err = net.backward(&tape, dy.view(), None, None).unwrap_err();
        assert!(matches!(err, Error::State(_)), "{what}: {err}");
        assert!(err.to_string().contains("the tape does not come from this layer"), "{what}: {err}");
    }
    // Its own tape still works.
    let mut net = Recurrent::<f32>::new(lstm, 0).unwrap();
    let (_, tape) = net.forward_train(Array3::<f32>::zeros((5, 2, 4)).view(), None, None).unwrap();
    assert!(net.backward(&tape, Array3::<f32>::zeros((5, 2, 6)).view(), None, None).is_ok());
}

#[test]
fn invalid_configs_are_rejected() {
    for cfg in [
        RecurrentConfig::new(CellKind::Gru, 0, 4),
        RecurrentConfig::new(CellKind::Gru, 3, 0),
        RecurrentConfig::new(CellKind::Gru, 3, 4).num_layers(0),
        RecurrentConfig::new(CellKind::Gru, 3, 4).dropout(1.0),
        RecurrentConfig::new(CellKind::Gru, 3, 4).dropout(f64::NAN),
    ] {
        assert!(Recurrent::<f64>::new(cfg, 0).is_err());
    }
    assert!(Embedding::<f32>::new(0, 3, 0).is_err());
    assert!(Embedding::<f32>::new(3, 2, 0).unwrap().forward(&[3]).is_err());
    assert!(cross_entropy(Array2::<f32>::zeros((2, 3)).view(), &[0, 3]).is_err());
}

#[test]
fn init_is_uniform_in_pytorch_range_and_seeded() {
    let cfg = RecurrentConfig::new(CellKind::Lstm, 5, 16).num_layers(2).bidirectional(true);
    let a = Recurrent::<f64>::new(cfg.clone(), 3).unwrap();
    let b = Recurrent::<f64>::new(cfg.clone(), 3).unwrap();
    let c = Recurrent::<f64>::new(cfg, 4).unwrap();
    let k = 0.25;
    let sa = a.state_dict();
    assert!(sa.iter().all(|(_, p)| p.iter().all(|v| v.abs() <= k)));
    assert_eq!(sa, b.state_dict());
    assert_ne!(sa, c.state_dict());
    let names: Vec<String> = sa.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(&names[..5], ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_ih_l0_reverse"]);
    assert_eq!(sa[8].1.shape(), &[64, 32]); // weight_ih_l1: (4H, 2H)
    let _ = Array1::<f64>::zeros(1);
}

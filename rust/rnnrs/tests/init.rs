//! Initialisers: the statistics each one promises, gate blocks, biases, seeding, errors.

use ndarray::{s, Array2, ArrayD, Ix2};
use rnnrs::{init_parameters, CellKind, Init, InitConfig, LanguageModel, LanguageModelConfig, Module, Recurrent, RecurrentCell, RecurrentConfig};

fn params(m: &dyn Module<f64>) -> Vec<(String, ArrayD<f64>)> {
    m.state_dict()
}

fn get(m: &dyn Module<f64>, name: &str) -> ArrayD<f64> {
    params(m).into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1
}

fn var(a: &ArrayD<f64>) -> f64 {
    let n = a.len() as f64;
    let mean = a.sum() / n;
    a.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n
}

fn lstm(i: usize, h: usize, layers: usize, bi: bool) -> Recurrent<f64> {
    Recurrent::new(RecurrentConfig::new(CellKind::Lstm, i, h).num_layers(layers).bidirectional(bi), 0).unwrap()
}

#[test]
fn orthogonal_makes_every_gate_block_orthogonal() {
    let (i, h) = (40, 24);
    let mut net = lstm(i, h, 2, true);
    let cfg = InitConfig { recurrent_init: Init::Orthogonal, init: Init::Orthogonal, ..Default::default() };
    init_parameters(&mut net, CellKind::Lstm, h, &cfg, 3).unwrap();
    for name in ["weight_hh_l0", "weight_hh_l1_reverse", "weight_ih_l0", "weight_ih_l1"] {
        let w = get(&net, name).into_dimensionality::<Ix2>().unwrap();
        for g in 0..4 {
            let b = w.slice(s![g * h..(g + 1) * h, ..]);
            // rows are orthonormal (h <= cols for every block here)
            let gram = b.dot(&b.t());
            let err = (&gram - &Array2::<f64>::eye(h)).iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(err < 1e-5, "{name} gate {g}: |W W^T - I| = {err}");
        }
    }
    // W_ih of layer 0 is 24 x 40 per gate (wide) — and a tall block gets orthonormal columns
    let mut tall = Recurrent::<f64>::new(RecurrentConfig::new(CellKind::Gru, 4, 10), 0).unwrap();
    init_parameters(&mut tall, CellKind::Gru, 10, &InitConfig::new(Init::Orthogonal), 1).unwrap();
    let w = get(&tall, "weight_ih_l0").into_dimensionality::<Ix2>().unwrap();
    let b = w.slice(s![0..10, ..]);
    let err = (&b.t().dot(&b) - &Array2::<f64>::eye(4)).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(err < 1e-5, "tall block: {err}");
}

#[test]
fn variances_follow_the_formulas() {
    let (i, h) = (128, 256);
    let g = 4.0 * h as f64;
    let cases: [(Init, f64, f64); 4] = [
        (Init::XavierUniform, 2.0 / (i as f64 + g), 2.0 / (h as f64 + g)),
        (Init::XavierNormal, 2.0 / (i as f64 + g), 2.0 / (h as f64 + g)),
        (Init::KaimingUniform, 2.0 / i as f64, 2.0 / h as f64),
        (Init::Normal, 0.05f64.powi(2), 0.05f64.powi(2)),
    ];
    for (init, v_ih, v_hh) in cases {
        let mut net = lstm(i, h, 1, false);
        let cfg = InitConfig { init, recurrent_init: init, init_std: 0.05, forget_bias: None };
        init_parameters(&mut net, CellKind::Lstm, h, &cfg, 7).unwrap();
        for (name, want) in [("weight_ih_l0", v_ih), ("weight_hh_l0", v_hh)] {
            let got = var(&get(&net, name));
            assert!((got / want - 1.0).abs() < 0.03, "{init:?} {name}: variance {got}, formula {want}");
        }
        for name in ["bias_ih_l0", "bias_hh_l0"] {
            assert!(get(&net, name).iter().all(|&v| v == 0.0), "{init:?}: {name} not zero");
        }
    }
}

#[test]
fn forget_bias_sets_the_forget_gates_total_bias() {
    let h = 6;
    for base in [Init::Pytorch, Init::XavierUniform] {
        let mut net = lstm(3, h, 2, false);
        let before = get(&net, "bias_ih_l0");
        let cfg = InitConfig { init: base, recurrent_init: base, init_std: 0.01, forget_bias: Some(1.0) };
        init_parameters(&mut net, CellKind::Lstm, h, &cfg, 0).unwrap();
        for l in 0..2 {
            let (bi, bh) = (get(&net, &format!("bias_ih_l{l}")), get(&net, &format!("bias_hh_l{l}")));
            for u in h..2 * h {
                assert_eq!(bi[[u]] + bh[[u]], 1.0);
            }
            if base == Init::Pytorch && l == 0 {
                // the other gates keep PyTorch's draw
                assert_eq!(bi.slice(s![0..h]), before.slice(s![0..h]));
            }
        }
    }
    let mut gru = Recurrent::<f64>::new(RecurrentConfig::new(CellKind::Gru, 3, 4), 0).unwrap();
    let before = gru.state_dict();
    let err = init_parameters(&mut gru, CellKind::Gru, 4, &InitConfig { forget_bias: Some(1.0), ..Default::default() }, 0).unwrap_err();
    assert!(err.to_string().contains("forget_bias") && err.to_string().contains("only LSTM"), "{err}");
    assert_eq!(before, gru.state_dict(), "a refused init changed the weights");
}

#[test]
fn seeded_and_pytorch_keeps_the_default() {
    let cfg = InitConfig::keras(CellKind::Lstm);
    let (mut a, mut b) = (lstm(5, 8, 1, false), lstm(5, 8, 1, false));
    init_parameters(&mut a, CellKind::Lstm, 8, &cfg, 11).unwrap();
    init_parameters(&mut b, CellKind::Lstm, 8, &cfg, 11).unwrap();
    assert_eq!(a.state_dict(), b.state_dict());
    init_parameters(&mut b, CellKind::Lstm, 8, &cfg, 12).unwrap();
    assert_ne!(a.state_dict(), b.state_dict());
    let mut c = lstm(5, 8, 1, false);
    let fresh = c.state_dict();
    init_parameters(&mut c, CellKind::Lstm, 8, &InitConfig::default(), 5).unwrap();
    assert_eq!(fresh, c.state_dict());
    assert!("glorot".parse::<Init>().unwrap_err().to_string().contains("xavier_uniform"));
    assert!(init_parameters(&mut c, CellKind::Lstm, 8, &InitConfig { init_std: 0.0, ..Default::default() }, 0).is_err());
}

#[test]
fn a_language_model_and_a_cell_initialise_every_weight() {
    let cfg = LanguageModelConfig { vocab_size: 30, embed_size: Some(16), hidden_size: 32, num_layers: 2, cell: CellKind::Gru, dropout: 0.0 };
    let mut lm = LanguageModel::<f64>::new(cfg, 0).unwrap();
    init_parameters(&mut lm, CellKind::Gru, 32, &InitConfig::new(Init::Normal), 2).unwrap();
    for (name, p) in lm.state_dict() {
        if name.ends_with("bias") || name.contains(".bias_") {
            assert!(p.iter().all(|&v| v == 0.0), "{name}");
        } else {
            assert!(var(&p) < 0.01f64.powi(2) * 1.5 && var(&p) > 0.01f64.powi(2) * 0.5, "{name}: {}", var(&p));
        }
    }
    let mut cell = RecurrentCell::<f64>::new(CellKind::Lstm, 8, 8, 0).unwrap();
    init_parameters(&mut cell, CellKind::Lstm, 8, &InitConfig::keras(CellKind::Lstm), 0).unwrap();
    let w = get(&cell, "weight_hh").into_dimensionality::<Ix2>().unwrap();
    let b = w.slice(s![8..16, ..]);
    assert!((&b.dot(&b.t()) - &Array2::<f64>::eye(8)).iter().all(|v| v.abs() < 1e-5));
    assert_eq!(get(&cell, "bias_ih")[[8]], 1.0);
}

//! `RecurrentCell`: stepping a cell T times and backpropagating step by step in reverse gives the
//! outputs and gradients of the one-layer stack run over the same T steps.

use ndarray::{s, Array2, Array3, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rnnrs::{CellKind, Error, Module, Recurrent, RecurrentCell, RecurrentConfig};

fn random3(rng: &mut ChaCha8Rng, shape: (usize, usize, usize)) -> Array3<f64> {
    Array3::from_shape_fn(shape, |_| 2.0 * rnnrs::rng::uniform(rng) - 1.0)
}

fn max_diff(a: &ndarray::ArrayViewD<'_, f64>, b: &ndarray::ArrayViewD<'_, f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn check_cell_matches_layer(cell: CellKind, seed: u64) {
    let (t, b, i, h) = (6, 3, 5, 7);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = random3(&mut rng, (t, b, i));
    let dy = random3(&mut rng, (t, b, h));
    let h0 = random3(&mut rng, (1, b, h));
    let dh_n = random3(&mut rng, (1, b, h));
    let lstm = cell.has_cell_state();
    let c0 = lstm.then(|| random3(&mut rng, (1, b, h)));
    let dc_n = lstm.then(|| random3(&mut rng, (1, b, h)));

    let mut layer = Recurrent::<f64>::new(RecurrentConfig::new(cell, i, h), seed).unwrap();
    let (out, tape) = layer.forward_train(x.view(), Some(h0.view()), c0.as_ref().map(|c| c.view())).unwrap();
    let g = layer.backward(&tape, dy.view(), Some(dh_n.view()), dc_n.as_ref().map(|c| c.view())).unwrap();

    let mut rc = RecurrentCell::<f64>::new(cell, i, h, seed).unwrap();
    let names: Vec<String> = rc.param_names();
    assert_eq!(names, ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]);
    let (mut hs, mut cs): (Array2<f64>, Option<Array2<f64>>) =
        (h0.index_axis(Axis(0), 0).to_owned(), c0.as_ref().map(|c| c.index_axis(Axis(0), 0).to_owned()));
    for step in 0..t {
        let st = rc.step_train(x.index_axis(Axis(0), step), Some(hs.view()), cs.as_ref().map(|c| c.view())).unwrap();
        let y = out.y.index_axis(Axis(0), step);
        assert!(max_diff(&st.h.view().into_dyn(), &y.into_dyn()) < 1e-12, "{cell:?} h at step {step}");
        (hs, cs) = (st.h, st.c);
    }
    assert_eq!(rc.pending_steps(), t);
    if let (Some(c), Some(cn)) = (&cs, &out.c_n) {
        assert!(max_diff(&c.view().into_dyn(), &cn.slice(s![0, .., ..]).into_dyn()) < 1e-12);
    }
    let (mut dh, mut dc) = (dh_n.index_axis(Axis(0), 0).to_owned(), dc_n.as_ref().map(|c| c.index_axis(Axis(0), 0).to_owned()));
    let dx = g.dx.unwrap();
    for step in (0..t).rev() {
        let gs = rc.backward(Some(dy.index_axis(Axis(0), step)), Some(dh.view()), dc.as_ref().map(|c| c.view())).unwrap();
        let d = max_diff(&gs.dx.view().into_dyn(), &dx.index_axis(Axis(0), step).into_dyn());
        assert!(d < 1e-10, "{cell:?} dx at step {step}: {d}");
        (dh, dc) = (gs.dh, gs.dc);
    }
    assert_eq!(rc.pending_steps(), 0);
    assert!(max_diff(&dh.view().into_dyn(), &g.dh0.index_axis(Axis(0), 0).into_dyn()) < 1e-10, "{cell:?} dh0");
    if let (Some(dc), Some(dc0)) = (&dc, &g.dc0) {
        assert!(max_diff(&dc.view().into_dyn(), &dc0.index_axis(Axis(0), 0).into_dyn()) < 1e-10, "{cell:?} dc0");
    }
    for ((n, a), (m, b)) in rc.grad_dict().iter().zip(layer.grad_dict().iter()) {
        assert_eq!(format!("{n}_l0"), *m);
        let d = max_diff(&a.view(), &b.view());
        assert!(d < 1e-10, "{cell:?} gradient {n}: {d}");
    }
}

#[test]
fn every_cell_matches_the_layer_over_the_same_steps() {
    for (k, cell) in [CellKind::Lstm, CellKind::Gru, CellKind::RnnTanh, CellKind::RnnRelu].into_iter().enumerate() {
        check_cell_matches_layer(cell, 10 + k as u64);
    }
}

#[test]
fn inference_steps_keep_nothing_and_match_training_steps() {
    let mut rc = RecurrentCell::<f32>::new(CellKind::Gru, 3, 4, 1).unwrap();
    let x = Array2::<f32>::ones((2, 3));
    let a = rc.step(x.view(), None, None).unwrap();
    assert_eq!(rc.pending_steps(), 0);
    let b = rc.step_train(x.view(), None, None).unwrap();
    assert_eq!(a, b);
    assert!(a.c.is_none());
    rc.clear_tape();
    assert_eq!(rc.pending_steps(), 0);
}

#[test]
fn misuse_is_an_error_naming_what_was_expected() {
    let mut rc = RecurrentCell::<f64>::new(CellKind::Lstm, 3, 4, 0).unwrap();
    let err = rc.backward(None, None, None).unwrap_err();
    assert!(err.to_string().contains("expected a training step"), "{err}");
    let err = rc.step_train(Array2::<f64>::ones((2, 5)).view(), None, None).unwrap_err();
    assert!(err.to_string().contains("x"), "{err}");
    let err = rc.step_train(Array2::<f64>::ones((2, 3)).view(), Some(Array2::ones((3, 4)).view()), None).unwrap_err();
    assert!(err.to_string().starts_with("h") || err.to_string().contains("h:"), "{err}");
    rc.step_train(Array2::<f64>::ones((2, 3)).view(), None, None).unwrap();
    let err = rc.backward(Some(Array2::ones((1, 4)).view()), None, None).unwrap_err();
    assert!(err.to_string().contains("dh"), "{err}");
    assert_eq!(rc.pending_steps(), 1, "a refused backward keeps the step");
    let gru = RecurrentCell::<f64>::new(CellKind::Gru, 3, 4, 0).unwrap();
    let err = gru.step(Array2::<f64>::ones((2, 3)).view(), None, Some(Array2::ones((2, 4)).view())).unwrap_err();
    assert!(matches!(err, Error::State(_)) && err.to_string().contains("only LSTM"), "{err}");
    assert!(RecurrentCell::<f32>::new(CellKind::Lstm, 0, 4, 0).is_err());
}

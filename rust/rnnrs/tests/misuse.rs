//! Misuse of `Result`-returning entry points is an `Err` saying what was expected and what was
//! received, never a panic, and a refused call changes nothing.

use ndarray::{Array1, Array2, Array3};
use rnnrs::module::{Visitor, VisitorMut};
use rnnrs::{CellKind, Error, Module, Optimizer, OptimizerConfig, Recurrent, RecurrentConfig};

/// The tape of one training forward of a new stack with `cfg` on `(5, 2, input)` ones.
fn tape_of(cfg: RecurrentConfig) -> rnnrs::Tape<f32> {
    let i = cfg.input_size;
    let mut net = Recurrent::<f32>::new(cfg, 0).unwrap();
    net.forward_train(Array3::<f32>::ones((5, 2, i)).view(), None, None).unwrap().1
}

#[test]
fn a_tape_of_another_cell_with_the_same_shapes_is_refused() {
    // RNN-tanh and RNN-relu tapes have identical buffers: only the cell kind tells them apart, and
    // a relu derivative applied to tanh activations would give wrong gradients without a panic.
    let tape = tape_of(RecurrentConfig::new(CellKind::RnnTanh, 4, 6));
    let mut relu = Recurrent::<f32>::new(RecurrentConfig::new(CellKind::RnnRelu, 4, 6), 0).unwrap();
    let before = relu.grad_dict();
    let err = relu.backward(&tape, Array3::<f32>::ones((5, 2, 6)).view(), None, None).unwrap_err();
    assert!(matches!(err, Error::State(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("the tape does not come from this layer"), "{msg}");
    assert!(msg.contains("cell: expected rnn_relu, got rnn_tanh"), "{msg}");
    assert_eq!(before, relu.grad_dict(), "the refused backward changed the gradients");
}

#[test]
fn a_tape_of_another_cell_names_the_cells() {
    // GRU tape into an LSTM of the same sizes (the reviewer's case): the message names both cells.
    let tape = tape_of(RecurrentConfig::new(CellKind::Gru, 4, 8));
    let mut lstm = Recurrent::<f32>::new(RecurrentConfig::new(CellKind::Lstm, 4, 8), 0).unwrap();
    let err = lstm.backward(&tape, Array3::<f32>::ones((5, 2, 8)).view(), None, None).unwrap_err();
    assert!(err.to_string().contains("cell: expected lstm, got gru"), "{err}");
}

#[test]
fn tapes_of_other_sizes_name_what_differs() {
    let dy = |h: usize| Array3::<f32>::ones((5, 2, h));
    // hidden 8 vs 6
    let mut net = Recurrent::<f32>::new(RecurrentConfig::new(CellKind::Lstm, 4, 6), 0).unwrap();
    let err = net.backward(&tape_of(RecurrentConfig::new(CellKind::Lstm, 4, 8)), dy(6).view(), None, None);
    let msg = err.unwrap_err().to_string();
    assert!(msg.contains("[1, 2, 6]") && msg.contains("[1, 2, 8]"), "{msg}");
    // input 4 vs 5
    let mut net = Recurrent::<f32>::new(RecurrentConfig::new(CellKind::Gru, 5, 8), 0).unwrap();
    let err = net.backward(&tape_of(RecurrentConfig::new(CellKind::Gru, 4, 8)), dy(8).view(), None, None);
    let msg = err.unwrap_err().to_string();
    assert!(msg.contains("layer 0 input: expected [10, 5], got [10, 4]"), "{msg}");
    // Its own tape of each cell still works.
    for cell in [CellKind::RnnTanh, CellKind::RnnRelu, CellKind::Gru, CellKind::Lstm] {
        let cfg = RecurrentConfig::new(cell, 4, 6);
        let mut net = Recurrent::<f32>::new(cfg, 0).unwrap();
        let (_, tape) = net.forward_train(Array3::<f32>::ones((5, 2, 4)).view(), None, None).unwrap();
        assert!(net.backward(&tape, dy(6).view(), None, None).is_ok(), "{cell}");
    }
}

/// A user module whose gradient of `w` has another shape than `w`.
struct Skewed {
    w: Array2<f32>,
    gw: Array2<f32>,
    b: Array1<f32>,
    gb: Array1<f32>,
}

impl Module<f32> for Skewed {
    fn visit(&self, f: &mut Visitor<'_, f32>) {
        f("b", self.b.view().into_dyn(), self.gb.view().into_dyn());
        f("w", self.w.view().into_dyn(), self.gw.view().into_dyn());
    }
    fn visit_mut(&mut self, f: &mut VisitorMut<'_, f32>) {
        f("b", self.b.view_mut().into_dyn(), self.gb.view_mut().into_dyn());
        f("w", self.w.view_mut().into_dyn(), self.gw.view_mut().into_dyn());
    }
}

#[test]
fn a_gradient_of_another_shape_than_its_parameter_is_refused() {
    for config in [OptimizerConfig::sgd(0.1), OptimizerConfig::adam(0.1)] {
        let mut m = Skewed {
            w: Array2::ones((2, 3)),
            gw: Array2::ones((3, 2)),
            b: Array1::ones(2),
            gb: Array1::ones(2),
        };
        let mut opt = Optimizer::new(config.clone()).unwrap();
        assert!(!opt.step_is_finite(&m), "{config:?}");
        let err = opt.step(&mut m).unwrap_err();
        let msg = err.to_string();
        let want = "optimizer: gradient of w (its parameter's shape): expected shape (2, 3), got (3, 2)";
        assert!(matches!(err, Error::Shape { .. }) && msg == want, "{config:?}: {msg}");
        // Nothing changed: not the parameter visited before `w`, not the step count or the state.
        assert_eq!(m.b, Array1::<f32>::ones(2), "{config:?}");
        assert_eq!(opt.steps(), 0, "{config:?}");
        assert!(opt.state_tensors(&m).is_empty(), "{config:?}");
        // Once the gradient has the parameter's shape the step runs.
        m.gw = Array2::ones((2, 3));
        opt.step(&mut m).unwrap();
        assert_eq!(opt.steps(), 1);
    }
}

#[test]
fn an_optimizer_with_state_refuses_a_module_of_other_shapes_and_changes_nothing() {
    let cfg = |h: usize| RecurrentConfig::new(CellKind::Gru, 3, h);
    let mut a = Recurrent::<f32>::new(cfg(4), 0).unwrap();
    let mut b = Recurrent::<f32>::new(cfg(5), 1).unwrap();
    let mut opt = Optimizer::new(OptimizerConfig::adam(0.01)).unwrap();
    a.visit_mut(&mut |_, _, mut g| g.fill(1.0));
    b.visit_mut(&mut |_, _, mut g| g.fill(1.0));
    opt.step(&mut a).unwrap();
    let (weights, state) = (b.state_dict(), opt.state_tensors(&a));
    let err = opt.step(&mut b).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("weight_ih_l0") && msg.contains("[12, 3]") && msg.contains("[15, 3]"), "{msg}");
    assert_eq!(weights, b.state_dict());
    assert_eq!(state, opt.state_tensors(&a));
    assert_eq!(opt.steps(), 1);
}

#[test]
fn num_params_of_an_overflowing_config_saturates_and_such_a_stack_cannot_be_built() {
    let cfg = RecurrentConfig::new(CellKind::Lstm, usize::MAX / 2, 1 << 20);
    assert_eq!(cfg.num_params(), usize::MAX);
    assert_eq!(cfg.checked_num_params(), None);
    let err = Recurrent::<f32>::new(cfg, 0).unwrap_err();
    assert!(err.to_string().contains("overflows"), "{err}");
    let ok = RecurrentConfig::new(CellKind::Gru, 3, 4).num_layers(2);
    assert_eq!(ok.checked_num_params(), Some(ok.num_params()));
    assert_eq!(ok.num_params(), 12 * (3 + 4 + 2) + 12 * (4 + 4 + 2));
}

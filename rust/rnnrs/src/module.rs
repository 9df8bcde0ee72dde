//! Named parameters: one visitor per module, from which state dicts, gradient clipping and the
//! optimizers are built. Visiting order is fixed (PyTorch's), so every reduction over parameters is
//! deterministic.

use crate::element::Element;
use crate::error::{check_shape, Error, Result};
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD};

/// Callback of [`Module::visit`]: `(name, parameter, gradient)`.
pub type Visitor<'a, F> = dyn FnMut(&str, ArrayViewD<'_, F>, ArrayViewD<'_, F>) + 'a;
/// Callback of [`Module::visit_mut`]: `(name, parameter, gradient)`, mutable.
pub type VisitorMut<'a, F> = dyn FnMut(&str, ArrayViewMutD<'_, F>, ArrayViewMutD<'_, F>) + 'a;

/// Something with named parameters and gradients of the same shapes.
pub trait Module<F: Element> {
    /// Visit every `(name, parameter, gradient)` in a fixed order.
    fn visit(&self, f: &mut Visitor<'_, F>);
    /// Visit every `(name, parameter, gradient)` mutably, in the same order as [`Module::visit`].
    fn visit_mut(&mut self, f: &mut VisitorMut<'_, F>);

    /// Parameter names in order.
    fn param_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.visit(&mut |n, _, _| out.push(n.to_string()));
        out
    }
    /// Copies of all parameters, in order.
    fn state_dict(&self) -> Vec<(String, ArrayD<F>)> {
        let mut out = Vec::new();
        self.visit(&mut |n, p, _| out.push((n.to_string(), p.to_owned())));
        out
    }
    /// Copies of all gradients, in order.
    fn grad_dict(&self) -> Vec<(String, ArrayD<F>)> {
        let mut out = Vec::new();
        self.visit(&mut |n, _, g| out.push((n.to_string(), g.to_owned())));
        out
    }
    /// Set all gradients to zero.
    fn zero_grad(&mut self) {
        self.visit_mut(&mut |_, _, mut g| g.fill(F::zero()));
    }
    /// Replace every parameter from `(name, value)` pairs. All names must be present exactly once
    /// with the right shapes and finite values; nothing is changed unless everything checks out.
    fn load_state_dict(&mut self, entries: &[(String, ArrayViewD<'_, F>)]) -> Result<()> {
        let mut expected: Vec<(String, Vec<usize>)> = Vec::new();
        self.visit(&mut |n, p, _| expected.push((n.to_string(), p.shape().to_vec())));
        let mut order = Vec::with_capacity(expected.len());
        for (name, shape) in &expected {
            let hits: Vec<usize> = (0..entries.len()).filter(|&i| &entries[i].0 == name).collect();
            match hits.as_slice() {
                [i] => {
                    check_shape(name, shape, entries[*i].1.shape())?;
                    if entries[*i].1.iter().any(|v| !v.is_finite()) {
                        return Err(Error::NonFinite(format!("{name}: contains NaN or infinity")));
                    }
                    order.push(*i);
                }
                [] => return Err(Error::State(format!("missing parameter {name:?}"))),
                _ => return Err(Error::State(format!("parameter {name:?} given more than once"))),
            }
        }
        if entries.len() != expected.len() {
            let unknown: Vec<&str> = entries
                .iter()
                .map(|e| e.0.as_str())
                .filter(|n| !expected.iter().any(|(m, _)| m == n))
                .collect();
            return Err(Error::State(format!("unexpected parameters {unknown:?}")));
        }
        let mut k = 0;
        self.visit_mut(&mut |_, mut p, _| {
            p.assign(&entries[order[k]].1);
            k += 1;
        });
        Ok(())
    }
    /// Total number of scalar parameters.
    fn num_params(&self) -> usize {
        let mut n = 0;
        self.visit(&mut |_, p, _| n += p.len());
        n
    }
}

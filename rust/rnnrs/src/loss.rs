//! Softmax cross-entropy, mean over tokens, computed with the log-sum-exp shift.

use crate::element::Element;
use crate::error::{check_shape, invalid, Result};
use ndarray::{Array2, ArrayView2, Axis};

/// Mean cross-entropy of `logits: (N, V)` against `targets: (N,)` and its gradient `(N, V)`.
///
/// `loss = mean_n( logsumexp(logits[n]) - logits[n, targets[n]] )`, accumulated in `f64`.
pub fn cross_entropy<F: Element>(logits: ArrayView2<'_, F>, targets: &[usize]) -> Result<(f64, Array2<F>)> {
    let (n, v) = logits.dim();
    check_shape("targets", &[n], &[targets.len()])?;
    if n == 0 {
        return Err(invalid("cross_entropy", "at least one token", "0 tokens"));
    }
    if let Some(&t) = targets.iter().find(|&&t| t >= v) {
        return Err(invalid("target id", format!("an id in [0, {v})"), t));
    }
    let mut grad = Array2::zeros((n, v));
    let scale = 1.0 / n as f64;
    let mut total = 0.0f64;
    for ((row, mut g), &t) in logits.axis_iter(Axis(0)).zip(grad.axis_iter_mut(Axis(0))).zip(targets) {
        let m = row.iter().fold(F::neg_infinity(), |a, &b| a.max(b));
        let gs = g.as_slice_mut().expect("contiguous row");
        for (gi, &x) in gs.iter_mut().zip(row.iter()) {
            // Below e^-80 a term cannot change the sum; clamping keeps the fast exp in range.
            *gi = (x - m).max(F::from_f64(-80.0));
        }
        F::exp_inplace(gs);
        let sum = gs.iter().fold(F::zero(), |a, &b| a + b);
        total += (m + sum.ln() - row[t]).to_f64();
        let inv = F::from_f64(scale) / sum;
        g.iter_mut().for_each(|e| *e *= inv);
        g[t] -= F::from_f64(scale);
    }
    Ok((total * scale, grad))
}

//! Mean-only batch normalization after a weight-normalized layer (Salimans & Kingma 2016,
//! Section 4): the minibatch mean of the pre-activation is subtracted while training and a
//! running mean (a non-trainable variable, so checkpointed) when acting. The tensor-op path is in
//! [`Layer::forward_with`](super::Layer::forward_with); these are the explicit pass's loops.

use crate::kernels::col_sums;

/// Mean-only BN's training forward in place on rows of `bias.len()` columns: every column's
/// mean over the rows subtracted, the bias added; returns the means.
pub(crate) fn mean_only_bn(x: &mut [f32], bias: &[f32]) -> Vec<f32> {
    let mut mean = vec![0f32; bias.len()];
    col_sums(x, &mut mean);
    let n = (x.len() / bias.len()) as f32;
    mean.iter_mut().for_each(|m| *m /= n);
    for row in x.chunks_exact_mut(bias.len()) {
        for ((e, &m), &b) in row.iter_mut().zip(&mean).zip(bias) {
            *e = *e - m + b;
        }
    }
    mean
}

/// Mean-only BN's backward in place: every column's mean subtracted (the gradient of
/// `x - mean(x)`).
pub(crate) fn sub_col_means(d: &mut [f32], cols: usize) {
    let mut mean = vec![0f32; cols];
    col_sums(d, &mut mean);
    let n = (d.len() / cols) as f32;
    for row in d.chunks_exact_mut(cols) {
        for (e, &m) in row.iter_mut().zip(&mean) {
            *e -= m / n;
        }
    }
}

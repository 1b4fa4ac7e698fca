//! Loss functions: the mean loss of a batch and the gradient for the network's output.
//!
//! # Convention
//! For a batch of `B` samples each loss is `L = (1/B) Σᵢ ℓᵢ`, the mean of per-sample losses, and
//! the gradient it writes is the **per-sample** gradient `∂ℓᵢ/∂yᵢ` (row `i`), not divided by `B`.
//! Layers then form parameter gradients as batch means (`dW = xᵀδ / B`, as in the numpy design), so the
//! parameter gradients are exactly `∂L/∂W`.
//!
//! Where a per-sample loss has several outputs (MSE, binary cross-entropy, Huber) it is their
//! mean, so `L` is the mean over every element, as in PyTorch's and Keras's defaults.

use crate::activation::sigmoid;
use crate::math::exp_shifted;
use crate::{Error, Result, Scalar, kernels};
use multiversion::multiversion;
use ndarray::{ArrayView2, ArrayViewMut2};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a loss compares the network's output with.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a, F> {
    /// A value per output: regression targets, binary labels in `[0, 1]`, or (for softmax
    /// cross-entropy) one-hot or soft class probabilities. Shape `(batch, outputs)`.
    Values(ArrayView2<'a, F>),
    /// One class index per sample, each below the number of outputs (softmax cross-entropy).
    Classes(&'a [usize]),
}

impl<'a, F> From<ArrayView2<'a, F>> for Target<'a, F> {
    fn from(v: ArrayView2<'a, F>) -> Self {
        Target::Values(v)
    }
}

impl<'a, F> From<&'a ndarray::Array2<F>> for Target<'a, F> {
    fn from(v: &'a ndarray::Array2<F>) -> Self {
        Target::Values(v.view())
    }
}

impl<'a, F> From<&'a [usize]> for Target<'a, F> {
    fn from(c: &'a [usize]) -> Self {
        Target::Classes(c)
    }
}

impl<'a, F> From<&'a Vec<usize>> for Target<'a, F> {
    fn from(c: &'a Vec<usize>) -> Self {
        Target::Classes(c)
    }
}

impl<F> Target<'_, F> {
    /// The number of samples (rows) the target describes.
    pub fn len(&self) -> usize {
        match self {
            Target::Values(v) => v.nrows(),
            Target::Classes(c) => c.len(),
        }
    }

    /// Whether the target describes no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A loss function. Serialized by name (`"MSE"`, `"SoftmaxCrossEntropy"`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Loss {
    /// Mean squared error, `ℓ = (1/k) Σⱼ (yⱼ − tⱼ)²` (PyTorch `MSELoss`).
    #[serde(rename = "MSE", alias = "mse")]
    Mse,
    /// Binary cross-entropy on logits: the network's output is `x` and the probability is
    /// `σ(x)`; `ℓ = (1/k) Σⱼ [max(xⱼ, 0) − xⱼ tⱼ + ln(1 + e^{−|xⱼ|})]` (PyTorch
    /// `BCEWithLogitsLoss`). Keep the last layer's activation `Identity`.
    #[serde(rename = "BinaryCrossEntropy", alias = "binary_crossentropy")]
    BinaryCrossEntropy,
    /// Softmax cross-entropy on logits, `ℓ = logsumexp(x) − Σⱼ tⱼ xⱼ` for one-hot or
    /// probability targets (class indices are one-hot): PyTorch `CrossEntropyLoss`, Keras
    /// `from_logits=True`. The softmax is fused into the loss: keep the last layer's activation
    /// `Identity`, and apply softmax to predictions yourself when you want probabilities.
    #[serde(rename = "SoftmaxCrossEntropy", alias = "cross_entropy")]
    SoftmaxCrossEntropy,
    /// Huber loss, quadratic within `delta` of the target and linear beyond:
    /// `ℓ = (1/k) Σⱼ h(yⱼ − tⱼ)` with `h(r) = r²/2` for `|r| ≤ δ`, `δ(|r| − δ/2)` otherwise
    /// (PyTorch `HuberLoss`).
    #[serde(alias = "huber")]
    Huber {
        /// The threshold between the quadratic and linear parts (PyTorch's default is 1).
        delta: f64,
    },
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loss::Huber { delta } => write!(f, "Huber({delta})"),
            other => f.write_str(other.name()),
        }
    }
}

impl Loss {
    /// The loss's name as written in files.
    pub fn name(&self) -> &'static str {
        match self {
            Loss::Mse => "MSE",
            Loss::BinaryCrossEntropy => "BinaryCrossEntropy",
            Loss::SoftmaxCrossEntropy => "SoftmaxCrossEntropy",
            Loss::Huber { .. } => "Huber",
        }
    }

    /// The mean loss of a batch.
    pub fn loss<F: Scalar>(&self, output: ArrayView2<'_, F>, target: Target<'_, F>) -> Result<F> {
        self.evaluate(output, target, None)
    }

    /// The mean loss of a batch, with the per-sample gradient `∂ℓᵢ/∂yᵢ` written into `grad`
    /// (same shape as `output`; see the module docs for the convention).
    pub fn loss_and_grad<F: Scalar>(
        &self,
        output: ArrayView2<'_, F>,
        target: Target<'_, F>,
        mut grad: ArrayViewMut2<'_, F>,
    ) -> Result<F> {
        if grad.dim() != output.dim() {
            return Err(Error::shape(
                format!("{self} gradient buffer"),
                format!("{:?}", output.dim()),
                format!("{:?}", grad.dim()),
            ));
        }
        self.evaluate(output, target, Some(&mut grad))
    }

    fn check_target<F: Scalar>(
        &self,
        output: &ArrayView2<'_, F>,
        target: &Target<'_, F>,
    ) -> Result<()> {
        let (b, k) = output.dim();
        let bad = |reason: String| {
            Err(Error::Target {
                loss: self.name(),
                reason,
            })
        };
        if b == 0 {
            return bad("the batch is empty".into());
        }
        match target {
            Target::Values(t) if t.dim() != (b, k) => bad(format!(
                "target shape {:?} does not match output shape {:?}",
                t.dim(),
                (b, k)
            )),
            Target::Values(t) => match t.iter().position(|x| !x.is_finite()) {
                Some(p) => bad(format!(
                    "non-finite target at row {}, column {}",
                    p / k,
                    p % k
                )),
                None => Ok(()),
            },
            Target::Classes(c) if !matches!(self, Loss::SoftmaxCrossEntropy) => {
                let _ = c;
                bad("class indices need SoftmaxCrossEntropy; give a (batch, outputs) array".into())
            }
            Target::Classes(c) if c.len() != b => {
                bad(format!("{} class indices for a batch of {b}", c.len()))
            }
            Target::Classes(c) => match c.iter().position(|&ci| ci >= k) {
                Some(i) => bad(format!(
                    "class {} at row {i} is not below the {k} outputs",
                    c[i]
                )),
                None => Ok(()),
            },
        }
    }

    fn evaluate<F: Scalar>(
        &self,
        y: ArrayView2<'_, F>,
        target: Target<'_, F>,
        grad: Option<&mut ArrayViewMut2<'_, F>>,
    ) -> Result<F> {
        self.check_target(&y, &target)?;
        let (b, k) = y.dim();
        // The per-row loops below read contiguous rows; other memory orders are copied once.
        let y = y.as_standard_layout();
        let y = y.as_slice().expect("standard layout is contiguous");
        let values;
        let target = match &target {
            Target::Values(t) => {
                values = t.as_standard_layout();
                Rows::Values(values.as_slice().expect("standard layout is contiguous"))
            }
            Target::Classes(c) => Rows::Classes(c),
        };
        let total = match grad {
            None => self.rows(y, k, target, None),
            Some(g) => match g.as_slice_mut() {
                Some(g) => self.rows(y, k, target, Some(g)),
                None => {
                    let mut tmp = vec![F::zero(); b * k];
                    let total = self.rows(y, k, target, Some(&mut tmp));
                    g.assign(&ArrayView2::from_shape((b, k), &tmp).expect("(b, k) values"));
                    total
                }
            },
        };
        Ok(total / F::of(b as f64))
    }

    /// The sum of the per-sample losses of the rows of `y` (`k` values each), writing the
    /// per-sample gradients into `grad` when given.
    fn rows<F: Scalar>(
        &self,
        y: &[F],
        k: usize,
        target: Rows<'_, F>,
        mut grad: Option<&mut [F]>,
    ) -> F {
        if let (Loss::SoftmaxCrossEntropy, Some(g)) = (self, grad.as_deref_mut()) {
            return softmax_ce_with_grad(y, k, g, target);
        }
        let inv_k = F::one() / F::of(k as f64);
        let mut total = F::zero();
        for (i, yi) in y.chunks_exact(k).enumerate() {
            let gi = grad.as_deref_mut().map(|g| &mut g[i * k..(i + 1) * k]);
            total += match (self, target) {
                (Loss::SoftmaxCrossEntropy, Rows::Classes(c)) => {
                    let t = one_hot(c);
                    softmax_ce(yi, |j| t(i, j))
                }
                (Loss::SoftmaxCrossEntropy, Rows::Values(t)) => {
                    let ti = &t[i * k..(i + 1) * k];
                    softmax_ce(yi, |j| ti[j])
                }
                (_, Rows::Values(t)) => {
                    let ti = &t[i * k..(i + 1) * k];
                    self.elementwise(yi, ti, inv_k, gi) * inv_k
                }
                (_, Rows::Classes(_)) => unreachable!("rejected by check_target"),
            };
        }
        total
    }

    /// `Σⱼ ℓ(yⱼ, tⱼ)` of an elementwise loss over one row, writing `∂ℓ/∂yⱼ · scale` into `g`.
    fn elementwise<F: Scalar>(&self, y: &[F], t: &[F], scale: F, mut g: Option<&mut [F]>) -> F {
        let mut l = F::zero();
        for (j, (&x, &tj)) in y.iter().zip(t).enumerate() {
            let (lj, gj) = match *self {
                Loss::Mse => {
                    let r = x - tj;
                    (r * r, F::of(2.0) * r)
                }
                // ln(1 + eˣ) − x·t: the logistic loss of the logit x, without overflow.
                Loss::BinaryCrossEntropy => (x.softplus_vec() - x * tj, sigmoid(x) - tj),
                Loss::Huber { delta } => {
                    let d = F::of(delta);
                    let r = x - tj;
                    if r.abs() <= d {
                        (F::of(0.5) * r * r, r)
                    } else {
                        (d * (r.abs() - F::of(0.5) * d), d * r.signum())
                    }
                }
                Loss::SoftmaxCrossEntropy => unreachable!("handled by softmax_ce"),
            };
            l += lj;
            if let Some(g) = g.as_mut() {
                g[j] = gj * scale;
            }
        }
        l
    }
}

/// A target in contiguous rows.
#[derive(Clone, Copy)]
enum Rows<'a, F> {
    Values(&'a [F]),
    Classes(&'a [usize]),
}

/// Softmax cross-entropy of one row of logits `y` against target probabilities `t(j)`:
/// `Σⱼ tⱼ (lse − yⱼ)` with `lse = log Σⱼ exp yⱼ`.
#[inline]
fn softmax_ce<F: Scalar>(y: &[F], t: impl Fn(usize) -> F) -> F {
    let max = row_max(y);
    // Through a small buffer on the stack: the same values, added in the same order, as
    // `softmax_ce_with_grad` adds.
    let mut buf = [F::zero(); 16];
    let sum_exp = y.chunks(buf.len()).fold(F::zero(), |s, y| {
        let buf = &mut buf[..y.len()];
        buf.copy_from_slice(y);
        exp_shifted(buf, max, s)
    });
    row_loss(y, max + sum_exp.ln_vec(), t).0
}

/// The sum over the rows (of `k` logits each) of [`softmax_ce`], writing each row's gradient,
/// `softmax(y) · Σⱼ tⱼ − t`, into `g`: [`softmax_ce_rows`], compiled for each row length up to
/// 10 (a classifier's usual few classes) and once for any other.
fn softmax_ce_with_grad<F: Scalar>(y: &[F], k: usize, g: &mut [F], target: Rows<'_, F>) -> F {
    macro_rules! of_length {
        ($($k:literal)*) => {
            match k {
                $($k => softmax_ce_rows::<F, $k>(y, k, g, target),)*
                _ => softmax_ce_rows::<F, 0>(y, k, g, target),
            }
        };
    }
    of_length!(1 2 3 4 5 6 7 8 9 10)
}

/// [`softmax_ce_with_grad`] for rows of `K` logits, or of `k` when `K` is 0. With `K` known
/// when it compiles, each row's loops are unrolled: a row of a few logits is a handful of
/// instructions instead of loops whose overhead is most of their work.
///
/// The rows go in blocks of 64, whose exponentials take one vectorised pass (a row of a
/// few logits is too short for vector code of its own): per row `g ← y − max`, then
/// `g ← exp g` over the block, then per row the sum, the loss and the gradient in place. Class
/// targets take a shorter path to the same values (see below).
#[multiversion(targets("x86_64+avx2+fma"))]
fn softmax_ce_rows<F: Scalar, const K: usize>(
    y: &[F],
    k: usize,
    g: &mut [F],
    target: Rows<'_, F>,
) -> F {
    let k = if K == 0 { k } else { K };
    // The logarithms of a block's sums take one pass (which vectorises). The losses are added
    // up after the rows, in row order: a running total carried through the row loop would make
    // that loop wait on each addition.
    const BLOCK: usize = 64;
    let mut maxes = [F::zero(); BLOCK];
    let (mut sums, mut logs, mut losses) = (maxes, maxes, maxes);
    let mut total = F::zero();
    let blocks = y.chunks(BLOCK * k).zip(g.chunks_mut(BLOCK * k));
    for (b, (yb, gb)) in blocks.enumerate() {
        let rows = yb.len() / k;
        let (maxes, sums) = (&mut maxes[..rows], &mut sums[..rows]);
        let (logs, losses) = (&mut logs[..rows], &mut losses[..rows]);
        for (m, (yi, gi)) in maxes
            .iter_mut()
            .zip(yb.chunks_exact(k).zip(gb.chunks_exact_mut(k)))
        {
            *m = row_max(yi);
            gi.iter_mut().zip(yi).for_each(|(g, &x)| *g = x - *m);
        }
        if kernels::parallel(gb.len()) {
            kernels::map_inplace(gb, F::exp_vec);
        } else {
            // Here, in this function's instruction set, rather than through a kernel's call.
            gb.iter_mut().for_each(|g| *g = g.exp_vec());
        }
        for (s, gi) in sums.iter_mut().zip(gb.chunks_exact(k)) {
            *s = gi.iter().fold(F::zero(), |s, &e| s + e);
        }
        for (l, &s) in logs.iter_mut().zip(&*sums) {
            *l = s.ln_vec();
        }
        for (r, (yi, gi)) in yb.chunks_exact(k).zip(gb.chunks_exact_mut(k)).enumerate() {
            let (i, sum_exp) = (b * BLOCK + r, sums[r]);
            let lse = maxes[r] + logs[r];
            losses[r] = match target {
                // One-hot: the loss is `lse − y_c` and the gradient `softmax − onehot`. These are
                // bitwise the values of the general form below, whose zero targets add exact
                // zeros and whose `Σⱼ tⱼ` is exactly 1, without a target lookup per logit.
                Rows::Classes(classes) => {
                    let c = classes[i];
                    let inv = F::one() / sum_exp;
                    gi.iter_mut().for_each(|g| *g *= inv);
                    gi[c] -= F::one();
                    lse - yi[c]
                }
                Rows::Values(t) => {
                    let ti = &t[i * k..(i + 1) * k];
                    let (l, t_sum) = row_loss(yi, lse, |j| ti[j]);
                    // softmax · Σt − t, in place over the exponentials.
                    let scale = t_sum / sum_exp;
                    gi.iter_mut()
                        .zip(ti)
                        .for_each(|(g, &tj)| *g = *g * scale - tj);
                    l
                }
            };
        }
        total = losses.iter().fold(total, |t, &l| t + l);
    }
    total
}

/// The target probabilities of class indices: `t(i, j)` is 1 at row `i`'s class, else 0.
fn one_hot<F: Scalar>(classes: &[usize]) -> impl Fn(usize, usize) -> F + '_ {
    move |i, j| if j == classes[i] { F::one() } else { F::zero() }
}

/// The largest of `y`, or `−∞`. A NaN is passed over (a plain comparison, cheaper than
/// `max`'s NaN rule); the loss comes out NaN anyway, from that logit's `y − max`.
fn row_max<F: Scalar>(y: &[F]) -> F {
    y.iter()
        .fold(F::neg_infinity(), |m, &x| if x > m { x } else { m })
}

/// `Σⱼ tⱼ (lse − yⱼ)` and `Σⱼ tⱼ`.
#[inline]
fn row_loss<F: Scalar>(y: &[F], lse: F, t: impl Fn(usize) -> F) -> (F, F) {
    let mut t_sum = F::zero();
    let mut l = F::zero();
    for (j, &x) in y.iter().enumerate() {
        let tj = t(j);
        t_sum += tj;
        l += tj * (lse - x);
    }
    (l, t_sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};

    /// The row lengths compiled on their own give bitwise what the general loop gives, for
    /// class and probability targets, in both precisions, over batches that cross a block.
    #[test]
    fn unrolled_row_lengths_equal_the_general_loop_bitwise() {
        fn check<F: Scalar>() {
            for k in 1..=12 {
                for b in [1, 3, 64, 70] {
                    let y: Vec<F> = (0..b * k)
                        .map(|i| F::of(((i * 37 + k) % 29) as f64 * 0.7 - 9.0))
                        .collect();
                    let classes: Vec<usize> = (0..b).map(|i| (i * 5 + 1) % k).collect();
                    let probs: Vec<F> = (0..b * k)
                        .map(|i| F::of(((i * 11) % 7) as f64 / (7.0 * k as f64)))
                        .collect();
                    for target in [Rows::Classes(&classes), Rows::Values(&probs)] {
                        let (mut g1, mut g2) = (vec![F::zero(); b * k], vec![F::zero(); b * k]);
                        let l1 = softmax_ce_with_grad(&y, k, &mut g1, target);
                        let l2 = softmax_ce_rows::<F, 0>(&y, k, &mut g2, target);
                        let bits =
                            |v: &[F]| v.iter().map(|x| x.as_f64().to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            l1.as_f64().to_bits(),
                            l2.as_f64().to_bits(),
                            "loss, k {k}, b {b}"
                        );
                        assert_eq!(bits(&g1), bits(&g2), "gradient, k {k}, b {b}");
                    }
                }
            }
        }
        check::<f32>();
        check::<f64>();
    }

    #[test]
    fn class_indices_equal_one_hot() {
        let y: Array2<f64> = array![[1.0, 2.0, 0.5], [-3.0, 0.0, 3.0]];
        let one_hot = array![[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]];
        let mut g1 = Array2::zeros((2, 3));
        let mut g2 = Array2::zeros((2, 3));
        let l1 = Loss::SoftmaxCrossEntropy
            .loss_and_grad(y.view(), Target::Classes(&[1, 0]), g1.view_mut())
            .unwrap();
        let l2 = Loss::SoftmaxCrossEntropy
            .loss_and_grad(y.view(), (&one_hot).into(), g2.view_mut())
            .unwrap();
        assert!((l1 - l2).abs() < 1e-15);
        assert!(g1.iter().zip(&g2).all(|(a, b)| (a - b).abs() < 1e-15));
        // ln(e + e^2 + e^0.5) - 2 for the first row
        let want0 = (1f64.exp() + 2f64.exp() + 0.5f64.exp()).ln() - 2.0;
        let want1 = ((-3f64).exp() + 1.0 + 3f64.exp()).ln() + 3.0;
        assert!((l1 - (want0 + want1) / 2.0).abs() < 1e-12);
    }

    /// Outputs, targets and gradient buffers in other memory orders (transposed views) give the
    /// same loss and gradient as standard ones, for every loss.
    #[test]
    fn any_memory_order_gives_the_same_result() {
        let y = Array2::from_shape_fn((5, 3), |(i, j)| (i as f64 - 2.0) * 0.7 + j as f64 * 0.3);
        let t = Array2::from_shape_fn((5, 3), |(i, j)| ((i + j) % 3) as f64 / 2.0);
        // Row-major transposes, so that `yt.t()` and `tt.t()` are column-major views.
        let yt = y.t().as_standard_layout().into_owned();
        let tt = t.t().as_standard_layout().into_owned();
        assert!(yt.t().strides()[0] == 1 && tt.t().strides()[0] == 1);
        for loss in [
            Loss::Mse,
            Loss::BinaryCrossEntropy,
            Loss::Huber { delta: 0.5 },
            Loss::SoftmaxCrossEntropy,
        ] {
            let mut g = Array2::zeros((5, 3));
            let l = loss
                .loss_and_grad(y.view(), (&t).into(), g.view_mut())
                .unwrap();
            let mut gt = Array2::zeros((3, 5));
            let l2 = loss
                .loss_and_grad(
                    yt.t(),
                    Target::Values(tt.t()),
                    gt.view_mut().reversed_axes(),
                )
                .unwrap();
            assert_eq!(l, l2, "{loss}");
            assert_eq!(g, gt.t(), "{loss}");
            assert_eq!(
                loss.loss(yt.t(), Target::Values(tt.t())).unwrap(),
                l,
                "{loss}"
            );
        }
    }

    /// The loss alone (exponentials in a small buffer, row by row) equals, bitwise, the loss
    /// that comes with the gradient (all exponentials in one pass over the gradient buffer),
    /// for rows shorter than, equal to and longer than the buffer, and for a batch large enough
    /// that the exponentials' pass runs on rayon's threads; and class indices give bitwise the
    /// loss and gradient of the same targets as one-hot probabilities.
    #[test]
    fn loss_alone_equals_loss_with_gradient() {
        for (cols, rows) in [
            (1, 200),
            (3, 200),
            (16, 200),
            (17, 200),
            (40, 1000),
            (100, 200),
        ] {
            // Logits of many magnitudes, so that a sum taken in another order rounds differently.
            let y = Array2::from_shape_fn((rows, cols), |(row, j)| {
                ((row * 7919 + j * 104_729) % 1009) as f32 / 1009.0 * 9.0 - 4.5
            });
            let classes: Vec<usize> = (0..rows).map(|row| row % cols).collect();
            let mut g = Array2::zeros((rows, cols));
            let loss = Loss::SoftmaxCrossEntropy;
            let alone = loss.loss(y.view(), Target::Classes(&classes)).unwrap();
            let with = loss
                .loss_and_grad(y.view(), Target::Classes(&classes), g.view_mut())
                .unwrap();
            assert_eq!(alone.to_bits(), with.to_bits(), "{cols} columns");
            // Row by row, too, against the one-row form.
            for (row, yi) in y.rows().into_iter().enumerate().take(50) {
                let yi = yi.to_vec();
                // Given as probabilities, which take the general path: the class path's values.
                let t = |j: usize| if j == row % cols { 1.0 } else { 0.0 };
                let one_hot: Vec<f32> = (0..cols).map(t).collect();
                let mut gi = vec![0.0f32; cols];
                let with = softmax_ce_with_grad(&yi, cols, &mut gi, Rows::Values(&one_hot));
                assert_eq!(
                    softmax_ce(&yi, t).to_bits(),
                    with.to_bits(),
                    "{cols} columns, row {row}"
                );
                assert_eq!(
                    gi.as_slice(),
                    g.row(row).as_slice().unwrap(),
                    "{cols} columns, row {row}"
                );
            }
        }
    }

    #[test]
    fn stable_for_huge_logits() {
        let y = array![[1e4f32, -1e4], [-1e4, 1e4]];
        let l = Loss::SoftmaxCrossEntropy
            .loss(y.view(), Target::Classes(&[1, 1]))
            .unwrap();
        assert!(l.is_finite() && (l - 1e4).abs() < 1.0);
        let t = array![[0.0f32, 1.0], [1.0, 1.0]];
        let l = Loss::BinaryCrossEntropy
            .loss(y.view(), (&t).into())
            .unwrap();
        assert!(l.is_finite());
    }

    #[test]
    fn bad_targets_are_errors() {
        let y = Array2::<f64>::zeros((2, 3));
        assert!(
            Loss::SoftmaxCrossEntropy
                .loss(y.view(), Target::Classes(&[0, 3]))
                .is_err()
        );
        assert!(
            Loss::SoftmaxCrossEntropy
                .loss(y.view(), Target::Classes(&[0]))
                .is_err()
        );
        assert!(Loss::Mse.loss(y.view(), Target::Classes(&[0, 1])).is_err());
        let t = Array2::<f64>::zeros((2, 2));
        assert!(Loss::Mse.loss(y.view(), (&t).into()).is_err());
        let mut t = Array2::<f64>::zeros((2, 3));
        t[[1, 2]] = f64::NAN;
        let e = Loss::Mse.loss(y.view(), (&t).into()).unwrap_err();
        assert!(e.to_string().contains("row 1, column 2"), "{e}");
    }
}

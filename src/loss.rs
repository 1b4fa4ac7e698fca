//! Loss functions: the mean loss of a batch and the gradient for the network's output.
//!
//! # Convention
//! For a batch of `B` samples each loss is `L = (1/B) Σᵢ ℓᵢ`, the mean of per-sample losses, and
//! the gradient it writes is the **per-sample** gradient `∂ℓᵢ/∂yᵢ` (row `i`), not divided by `B`.
//! Layers then form parameter gradients as batch means (`dW = xᵀδ / B`, as in the seed), so the
//! parameter gradients are exactly `∂L/∂W`.
//!
//! Where a per-sample loss has several outputs (MSE, binary cross-entropy, Huber) it is their
//! mean, so `L` is the mean over every element, as in PyTorch's and Keras's defaults.

use crate::{Error, Result, Scalar};
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
        mut grad: Option<&mut ArrayViewMut2<'_, F>>,
    ) -> Result<F> {
        self.check_target(&y, &target)?;
        let (b, k) = y.dim();
        let inv_k = F::one() / F::of(k as f64);
        let mut total = F::zero();
        for i in 0..b {
            let yi = y.row(i);
            let mut gi = grad.as_mut().map(|g| g.row_mut(i));
            let sample = match (self, &target) {
                (Loss::SoftmaxCrossEntropy, _) => {
                    let max = yi.fold(F::neg_infinity(), |m, &x| m.max(x));
                    // exp(y − max) once per logit, kept in the gradient row when there is one.
                    let sum_exp = match gi.as_mut() {
                        Some(g) => {
                            let mut sum = F::zero();
                            for j in 0..k {
                                let e = (yi[j] - max).exp();
                                g[j] = e;
                                sum += e;
                            }
                            sum
                        }
                        None => yi.fold(F::zero(), |s, &x| s + (x - max).exp()),
                    };
                    let lse = max + sum_exp.ln();
                    // t as a closure over column j: one-hot for class indices
                    let t = |j: usize| match &target {
                        Target::Values(t) => t[[i, j]],
                        Target::Classes(c) => {
                            if c[i] == j {
                                F::one()
                            } else {
                                F::zero()
                            }
                        }
                    };
                    let mut t_sum = F::zero();
                    let mut l = F::zero();
                    for j in 0..k {
                        let tj = t(j);
                        t_sum += tj;
                        l += tj * (lse - yi[j]);
                    }
                    if let Some(g) = gi.as_mut() {
                        // softmax · Σt − t, in place over the exponentials.
                        let scale = t_sum / sum_exp;
                        for j in 0..k {
                            g[j] = g[j] * scale - t(j);
                        }
                    }
                    l
                }
                (_, Target::Values(t)) => {
                    let ti = t.row(i);
                    let mut l = F::zero();
                    for j in 0..k {
                        let (x, tj) = (yi[j], ti[j]);
                        let (lj, gj) = match *self {
                            Loss::Mse => {
                                let r = x - tj;
                                (r * r, F::of(2.0) * r)
                            }
                            Loss::BinaryCrossEntropy => {
                                let sig = if x >= F::zero() {
                                    F::one() / (F::one() + (-x).exp())
                                } else {
                                    let e = x.exp();
                                    e / (F::one() + e)
                                };
                                (
                                    x.max(F::zero()) - x * tj + (-x.abs()).exp().ln_1p(),
                                    sig - tj,
                                )
                            }
                            Loss::Huber { delta } => {
                                let d = F::of(delta);
                                let r = x - tj;
                                if r.abs() <= d {
                                    (F::of(0.5) * r * r, r)
                                } else {
                                    (d * (r.abs() - F::of(0.5) * d), d * r.signum())
                                }
                            }
                            Loss::SoftmaxCrossEntropy => unreachable!("handled above"),
                        };
                        l += lj;
                        if let Some(g) = gi.as_mut() {
                            g[j] = gj * inv_k;
                        }
                    }
                    l * inv_k
                }
                (_, Target::Classes(_)) => unreachable!("rejected by check_target"),
            };
            total += sample;
        }
        Ok(total / F::of(b as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};

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

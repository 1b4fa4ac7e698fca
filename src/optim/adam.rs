//! Adam and AdamW.

use super::{Buffers, check, check_lengths, sgd::check_lr};
use crate::{Result, Scalar, kernels};

/// Adam as in `torch.optim.Adam`, or AdamW (`torch.optim.AdamW`, decoupled weight decay).
///
/// At step `t`: `g ← g + λp` (Adam's L2 decay) or `p ← p(1 − lr·λ)` (AdamW);
/// `m ← β₁m + (1 − β₁)g`; `v ← β₂v + (1 − β₂)g²`;
/// `p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)`.
#[derive(Debug)]
pub struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
    steps: u64,
    buffers: Buffers,
}

impl Adam {
    /// Adam with learning rate `lr` and PyTorch's defaults: `β = (0.9, 0.999)`, `ε = 1e-8`, no
    /// weight decay.
    pub fn new(lr: f64) -> Result<Self> {
        check_lr(lr)?;
        Ok(Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            steps: 0,
            buffers: Buffers::new(&["exp_avg", "exp_avg_sq"], 0.0),
        })
    }

    /// AdamW with learning rate `lr`, PyTorch's defaults (`β = (0.9, 0.999)`, `ε = 1e-8`) and
    /// decoupled weight decay `weight_decay` (PyTorch's default is 0.01).
    pub fn adamw(lr: f64, weight_decay: f64) -> Result<Self> {
        let mut adam = Adam::new(lr)?.weight_decay(weight_decay)?;
        adam.decoupled = true;
        Ok(adam)
    }

    /// With decay rates `β₁, β₂` in `[0, 1)`.
    pub fn betas(mut self, beta1: f64, beta2: f64) -> Result<Self> {
        check("beta1", beta1, (0.0..1.0).contains(&beta1))?;
        check("beta2", beta2, (0.0..1.0).contains(&beta2))?;
        self.beta1 = beta1;
        self.beta2 = beta2;
        Ok(self)
    }

    /// With `ε > 0` in the denominator.
    pub fn eps(mut self, eps: f64) -> Result<Self> {
        check("eps", eps, eps > 0.0)?;
        self.eps = eps;
        Ok(self)
    }

    /// With weight decay `λ ≥ 0`: L2 in the gradient for Adam, decoupled for AdamW.
    pub fn weight_decay(mut self, weight_decay: f64) -> Result<Self> {
        check("weight_decay", weight_decay, weight_decay >= 0.0)?;
        self.weight_decay = weight_decay;
        Ok(self)
    }

    fn name(&self) -> &'static str {
        if self.decoupled { "AdamW" } else { "Adam" }
    }

    fn step<F: Scalar>(&mut self, index: usize, param: &mut [F], grad: &[F]) -> Result<()> {
        check_lengths(self.name(), index, param.len(), grad.len())?;
        let t = self.steps.max(1) as i32;
        let (b1, b2) = (F::of(self.beta1), F::of(self.beta2));
        let step_size = F::of(self.lr / (1.0 - self.beta1.powi(t)));
        let bc2_sqrt = F::of((1.0 - self.beta2.powi(t)).sqrt());
        let eps = F::of(self.eps);
        let (l2, shrink) = if self.decoupled {
            (F::zero(), F::of(1.0 - self.lr * self.weight_decay))
        } else {
            (F::of(self.weight_decay), F::one())
        };
        let (one_b1, one_b2) = (F::one() - b1, F::one() - b2);
        let (buf, _) = self.buffers.get::<F>(index, param.len())?;
        kernels::update_with_state::<F, 2>(param, grad, buf, |p, g, [m, v]| {
            *p *= shrink;
            let g = g + l2 * *p;
            *m = b1 * *m + one_b1 * g;
            *v = b2 * *v + one_b2 * g * g;
            *p -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
        });
        Ok(())
    }
}

super::optimizer_impl!(Adam);

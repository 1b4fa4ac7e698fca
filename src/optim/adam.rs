//! Adam and AdamW.

use super::{Buffers, check, check_lengths, sgd::check_lr};
use crate::{Result, Scalar, kernels};
use serde::{Deserialize, Serialize};

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

/// [`Adam`]'s settings, with PyTorch's defaults (`torch.optim.Adam`): the one place they
/// live, for the library, model files ([`OptimizerSpec`](super::OptimizerSpec)) and the command
/// line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    /// Learning rate, finite and positive (default 1e-3).
    pub lr: f64,
    /// Decay rates `β₁, β₂` in `[0, 1)` (default 0.9, 0.999).
    pub betas: [f64; 2],
    /// `ε > 0` in the denominator (default 1e-8).
    pub eps: f64,
    /// L2 weight decay `λ ≥ 0` added to the gradient (default 0).
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamConfig {
    /// The optimizer, with every setting checked.
    pub fn build(&self) -> Result<Adam> {
        adam(self.lr, self.betas, self.eps, self.weight_decay, false)
    }
}

/// AdamW's settings, with PyTorch's defaults (`torch.optim.AdamW`): those of [`AdamConfig`],
/// but the weight decay is decoupled and defaults to 0.01.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// Learning rate, finite and positive (default 1e-3).
    pub lr: f64,
    /// Decay rates `β₁, β₂` in `[0, 1)` (default 0.9, 0.999).
    pub betas: [f64; 2],
    /// `ε > 0` in the denominator (default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay `λ ≥ 0`, `p ← p(1 − lr·λ)` (default 0.01).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl AdamWConfig {
    /// The optimizer, with every setting checked.
    pub fn build(&self) -> Result<Adam> {
        adam(self.lr, self.betas, self.eps, self.weight_decay, true)
    }
}

fn adam(lr: f64, betas: [f64; 2], eps: f64, weight_decay: f64, decoupled: bool) -> Result<Adam> {
    check_lr(lr)?;
    check("beta1", betas[0], (0.0..1.0).contains(&betas[0]))?;
    check("beta2", betas[1], (0.0..1.0).contains(&betas[1]))?;
    check("eps", eps, eps > 0.0)?;
    check("weight_decay", weight_decay, weight_decay >= 0.0)?;
    Ok(Adam {
        lr,
        beta1: betas[0],
        beta2: betas[1],
        eps,
        weight_decay,
        decoupled,
        steps: 0,
        buffers: Buffers::new(&["exp_avg", "exp_avg_sq"], 0.0),
    })
}

impl Adam {
    /// Adam with learning rate `lr` and the other settings [`AdamConfig`]'s defaults.
    pub fn new(lr: f64) -> Result<Self> {
        AdamConfig {
            lr,
            ..AdamConfig::default()
        }
        .build()
    }

    /// AdamW with learning rate `lr`, decoupled weight decay `weight_decay` and the other
    /// settings [`AdamWConfig`]'s defaults.
    pub fn adamw(lr: f64, weight_decay: f64) -> Result<Self> {
        AdamWConfig {
            lr,
            weight_decay,
            ..AdamWConfig::default()
        }
        .build()
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

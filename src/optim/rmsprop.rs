//! RMSProp.

use super::{Buffers, check, check_lengths, sgd::check_lr};
use crate::{Result, Scalar, kernels};
use serde::{Deserialize, Serialize};

/// RMSProp as in `torch.optim.RMSprop`: `g ← g + λp`; `v ← αv + (1 − α)g²`; with `centered`,
/// `ḡ ← αḡ + (1 − α)g` and `d = √(v − ḡ²) + ε`, else `d = √v + ε`; with momentum `μ`,
/// `b ← μb + g/d` and `p ← p − lr·b`, else `p ← p − lr·g/d`.
#[derive(Debug)]
pub struct RmsProp {
    lr: f64,
    alpha: f64,
    eps: f64,
    weight_decay: f64,
    momentum: f64,
    centered: bool,
    steps: u64,
    buffers: Buffers,
}

/// [`RmsProp`]'s settings, with PyTorch's defaults (`torch.optim.RMSprop`): the one place they
/// live, for the library, model files ([`OptimizerSpec`](super::OptimizerSpec)) and the command
/// line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RmsPropConfig {
    /// Learning rate, finite and positive (default 1e-2).
    pub lr: f64,
    /// Smoothing constant `α` in `[0, 1)` (default 0.99).
    pub alpha: f64,
    /// `ε > 0` in the denominator (default 1e-8).
    pub eps: f64,
    /// L2 weight decay `λ ≥ 0` (default 0).
    pub weight_decay: f64,
    /// Momentum `μ` in `[0, 1)` (default 0).
    pub momentum: f64,
    /// Centred: normalise by an estimate of the gradient's variance (default false).
    pub centered: bool,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        RmsPropConfig {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
        }
    }
}

impl RmsPropConfig {
    /// The optimizer, with every setting checked.
    pub fn build(&self) -> Result<RmsProp> {
        check_lr(self.lr)?;
        check("alpha", self.alpha, (0.0..1.0).contains(&self.alpha))?;
        check("eps", self.eps, self.eps > 0.0)?;
        check("weight_decay", self.weight_decay, self.weight_decay >= 0.0)?;
        check(
            "momentum",
            self.momentum,
            (0.0..1.0).contains(&self.momentum),
        )?;
        Ok(RmsProp {
            lr: self.lr,
            alpha: self.alpha,
            eps: self.eps,
            weight_decay: self.weight_decay,
            momentum: self.momentum,
            centered: self.centered,
            steps: 0,
            buffers: Buffers::new(&["square_avg", "momentum_buffer", "grad_avg"], 0.0),
        })
    }
}

impl RmsProp {
    fn name(&self) -> &'static str {
        "RMSprop"
    }

    /// RMSProp with learning rate `lr` and the other settings [`RmsPropConfig`]'s defaults.
    pub fn new(lr: f64) -> Result<Self> {
        RmsPropConfig {
            lr,
            ..RmsPropConfig::default()
        }
        .build()
    }

    fn step<F: Scalar>(&mut self, index: usize, param: &mut [F], grad: &[F]) -> Result<()> {
        check_lengths("RMSprop", index, param.len(), grad.len())?;
        let (lr, alpha, eps, wd, mu) = (
            F::of(self.lr),
            F::of(self.alpha),
            F::of(self.eps),
            F::of(self.weight_decay),
            F::of(self.momentum),
        );
        let one_alpha = F::one() - alpha;
        let (centered, momentum) = (self.centered, self.momentum > 0.0);
        let (buf, _) = self.buffers.get::<F>(index, param.len())?;
        kernels::update_with_state::<F, 3>(param, grad, buf, |p, g, [v, b, ga]| {
            let g = g + wd * *p;
            *v = alpha * *v + one_alpha * g * g;
            let d = if centered {
                *ga = alpha * *ga + one_alpha * g;
                (*v - *ga * *ga).sqrt() + eps
            } else {
                v.sqrt() + eps
            };
            if momentum {
                *b = mu * *b + g / d;
                *p -= lr * *b;
            } else {
                *p -= lr * g / d;
            }
        });
        Ok(())
    }
}

super::optimizer_impl!(RmsProp);

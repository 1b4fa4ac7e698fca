//! RMSProp.

use super::{Buffers, check, check_lengths, sgd::check_lr};
use crate::{Result, Scalar, kernels};

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

impl RmsProp {
    fn name(&self) -> &'static str {
        "RMSprop"
    }

    /// RMSProp with learning rate `lr` and PyTorch's defaults: `α = 0.99`, `ε = 1e-8`, no
    /// momentum, not centred.
    pub fn new(lr: f64) -> Result<Self> {
        check_lr(lr)?;
        Ok(RmsProp {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            steps: 0,
            buffers: Buffers::new(&["square_avg", "momentum_buffer", "grad_avg"], 0.0),
        })
    }

    /// With smoothing constant `α` in `[0, 1)`.
    pub fn alpha(mut self, alpha: f64) -> Result<Self> {
        check("alpha", alpha, (0.0..1.0).contains(&alpha))?;
        self.alpha = alpha;
        Ok(self)
    }

    /// With `ε > 0` in the denominator.
    pub fn eps(mut self, eps: f64) -> Result<Self> {
        check("eps", eps, eps > 0.0)?;
        self.eps = eps;
        Ok(self)
    }

    /// With momentum `μ` in `[0, 1)`.
    pub fn momentum(mut self, momentum: f64) -> Result<Self> {
        check("momentum", momentum, (0.0..1.0).contains(&momentum))?;
        self.momentum = momentum;
        Ok(self)
    }

    /// Centred: normalises by an estimate of the gradient's variance.
    pub fn centered(mut self) -> Self {
        self.centered = true;
        self
    }

    /// With L2 weight decay `λ ≥ 0`.
    pub fn weight_decay(mut self, weight_decay: f64) -> Result<Self> {
        check("weight_decay", weight_decay, weight_decay >= 0.0)?;
        self.weight_decay = weight_decay;
        Ok(self)
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

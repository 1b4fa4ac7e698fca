//! Stochastic gradient descent, with PyTorch's momentum, dampening, Nesterov and weight decay.

use super::{Buffers, check, check_lengths};
use crate::{Error, Result, Scalar, kernels};

/// SGD as in `torch.optim.SGD`: with weight decay `λ`, momentum `μ` and dampening `τ`,
/// `g ← g + λp`; `b ← g` on the first step and `b ← μb + (1 − τ)g` after; `g ← g + μb`
/// (Nesterov) or `g ← b`; `p ← p − lr·g`. Without momentum, `p ← p − lr·(g + λp)`.
#[derive(Debug)]
pub struct Sgd {
    lr: f64,
    momentum: f64,
    dampening: f64,
    weight_decay: f64,
    nesterov: bool,
    steps: u64,
    buffers: Buffers,
}

impl Sgd {
    fn name(&self) -> &'static str {
        "SGD"
    }

    /// Plain SGD with learning rate `lr` (finite and positive).
    pub fn new(lr: f64) -> Result<Self> {
        check_lr(lr)?;
        Ok(Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            steps: 0,
            buffers: Buffers::new(&["momentum"], 0.0),
        })
    }

    /// With momentum `μ` in `[0, 1)`.
    pub fn momentum(mut self, momentum: f64) -> Result<Self> {
        check("momentum", momentum, (0.0..1.0).contains(&momentum))?;
        self.momentum = momentum;
        Ok(self)
    }

    /// With dampening `τ` in `[0, 1]` of the momentum's new gradient.
    pub fn dampening(mut self, dampening: f64) -> Result<Self> {
        check("dampening", dampening, (0.0..=1.0).contains(&dampening))?;
        self.dampening = dampening;
        Ok(self)
    }

    /// With Nesterov momentum (needs momentum and no dampening, as in PyTorch).
    pub fn nesterov(mut self) -> Result<Self> {
        if self.momentum <= 0.0 || self.dampening != 0.0 {
            return Err(Error::Config(
                "Nesterov momentum needs momentum > 0 and dampening 0".into(),
            ));
        }
        self.nesterov = true;
        Ok(self)
    }

    /// With L2 weight decay `λ ≥ 0` added to the gradient.
    pub fn weight_decay(mut self, weight_decay: f64) -> Result<Self> {
        check("weight_decay", weight_decay, weight_decay >= 0.0)?;
        self.weight_decay = weight_decay;
        Ok(self)
    }

    /// The learning rate when the update is `p ← p − lr·g` alone.
    fn plain(&self) -> Option<f64> {
        (self.momentum == 0.0 && self.weight_decay == 0.0).then_some(self.lr)
    }

    fn step<F: Scalar>(&mut self, index: usize, param: &mut [F], grad: &[F]) -> Result<()> {
        check_lengths("SGD", index, param.len(), grad.len())?;
        let (lr, wd) = (F::of(self.lr), F::of(self.weight_decay));
        if self.momentum == 0.0 {
            if self.weight_decay == 0.0 {
                kernels::axpy(-lr, grad, param);
            } else {
                kernels::zip_inplace(param, grad, |p, g| p - lr * (g + wd * p));
            }
            return Ok(());
        }
        let (mu, keep) = (F::of(self.momentum), F::of(1.0 - self.dampening));
        let nesterov = self.nesterov;
        let (buf, fresh) = self.buffers.get::<F>(index, param.len())?;
        kernels::update_with_state::<F, 1>(param, grad, buf, |p, g, [b]| {
            let g = g + wd * *p;
            *b = if fresh { g } else { mu * *b + keep * g };
            let d = if nesterov { g + mu * *b } else { *b };
            *p -= lr * d;
        });
        Ok(())
    }
}

pub(crate) fn check_lr(lr: f64) -> Result<()> {
    if lr.is_finite() && lr > 0.0 {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "learning rate must be finite and positive, got {lr}"
        )))
    }
}

super::optimizer_impl!(Sgd, plain_sgd = plain);

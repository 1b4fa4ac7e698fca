//! Stochastic gradient descent, with PyTorch's momentum, dampening, Nesterov and weight decay.

use super::{Buffers, check, check_lengths};
use crate::{Error, Result, Scalar, kernels};
use serde::{Deserialize, Serialize};

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

/// [`Sgd`]'s settings, with PyTorch's defaults (`torch.optim.SGD`): the one place they live,
/// for the library, model files ([`OptimizerSpec`](super::OptimizerSpec)) and the command line.
///
/// ```
/// use crank::optim::SgdConfig;
/// let sgd = SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, ..Default::default() }.build()?;
/// # Ok::<(), crank::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgdConfig {
    /// Learning rate, finite and positive (default 1e-3).
    pub lr: f64,
    /// Momentum `μ` in `[0, 1)` (default 0).
    pub momentum: f64,
    /// Dampening `τ` in `[0, 1]` of the momentum's new gradient (default 0); needs momentum.
    pub dampening: f64,
    /// Nesterov momentum (default false); needs momentum and no dampening, as in PyTorch.
    pub nesterov: bool,
    /// L2 weight decay `λ ≥ 0` added to the gradient (default 0).
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

impl SgdConfig {
    /// The optimizer, with every setting checked (whatever order they were set in).
    pub fn build(&self) -> Result<Sgd> {
        check_lr(self.lr)?;
        check(
            "momentum",
            self.momentum,
            (0.0..1.0).contains(&self.momentum),
        )?;
        check(
            "dampening",
            self.dampening,
            (0.0..=1.0).contains(&self.dampening),
        )?;
        check("weight_decay", self.weight_decay, self.weight_decay >= 0.0)?;
        if self.dampening != 0.0 && self.momentum == 0.0 {
            return Err(Error::Config(
                "dampening acts on momentum; with momentum 0 it would do nothing".into(),
            ));
        }
        if self.nesterov && (self.momentum == 0.0 || self.dampening != 0.0) {
            return Err(Error::Config(
                "Nesterov momentum needs momentum > 0 and dampening 0".into(),
            ));
        }
        Ok(Sgd {
            lr: self.lr,
            momentum: self.momentum,
            dampening: self.dampening,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
            steps: 0,
            buffers: Buffers::new(&["momentum"], 0.0),
        })
    }
}

impl Sgd {
    fn name(&self) -> &'static str {
        "SGD"
    }

    /// Plain SGD with learning rate `lr` (finite and positive): [`SgdConfig`] with `lr` and
    /// the other defaults.
    pub fn new(lr: f64) -> Result<Self> {
        SgdConfig {
            lr,
            ..SgdConfig::default()
        }
        .build()
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

//! Adagrad.

use super::{Buffers, check, check_lengths, sgd::check_lr};
use crate::{Result, Scalar, kernels};
use serde::{Deserialize, Serialize};

/// Adagrad as in `torch.optim.Adagrad`: at step `t`, `g ← g + λp`;
/// `lrₜ = lr / (1 + (t − 1)·decay)`; `s ← s + g²`; `p ← p − lrₜ·g / (√s + ε)`.
#[derive(Debug)]
pub struct Adagrad {
    lr: f64,
    lr_decay: f64,
    weight_decay: f64,
    eps: f64,
    steps: u64,
    buffers: Buffers,
}

/// [`Adagrad`]'s settings, with PyTorch's defaults (`torch.optim.Adagrad`): the one place they
/// live, for the library, model files ([`OptimizerSpec`](super::OptimizerSpec)) and the command
/// line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdagradConfig {
    /// Learning rate, finite and positive (default 1e-2).
    pub lr: f64,
    /// Learning-rate decay `≥ 0` (default 0).
    pub lr_decay: f64,
    /// L2 weight decay `λ ≥ 0` (default 0).
    pub weight_decay: f64,
    /// The accumulator's starting value `≥ 0` (default 0).
    pub initial_accumulator_value: f64,
    /// `ε > 0` in the denominator (default 1e-10).
    pub eps: f64,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        AdagradConfig {
            lr: 1e-2,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
        }
    }
}

impl AdagradConfig {
    /// The optimizer, with every setting checked.
    pub fn build(&self) -> Result<Adagrad> {
        check_lr(self.lr)?;
        check("lr_decay", self.lr_decay, self.lr_decay >= 0.0)?;
        check("weight_decay", self.weight_decay, self.weight_decay >= 0.0)?;
        let start = self.initial_accumulator_value;
        check("initial_accumulator_value", start, start >= 0.0)?;
        check("eps", self.eps, self.eps > 0.0)?;
        Ok(Adagrad {
            lr: self.lr,
            lr_decay: self.lr_decay,
            weight_decay: self.weight_decay,
            eps: self.eps,
            steps: 0,
            buffers: Buffers::new(&["sum"], start),
        })
    }
}

impl Adagrad {
    fn name(&self) -> &'static str {
        "Adagrad"
    }

    /// Adagrad with learning rate `lr` and the other settings [`AdagradConfig`]'s defaults.
    pub fn new(lr: f64) -> Result<Self> {
        AdagradConfig {
            lr,
            ..AdagradConfig::default()
        }
        .build()
    }

    fn step<F: Scalar>(&mut self, index: usize, param: &mut [F], grad: &[F]) -> Result<()> {
        check_lengths("Adagrad", index, param.len(), grad.len())?;
        let clr = F::of(self.lr / (1.0 + (self.steps.max(1) - 1) as f64 * self.lr_decay));
        let (wd, eps) = (F::of(self.weight_decay), F::of(self.eps));
        let (buf, _) = self.buffers.get::<F>(index, param.len())?;
        kernels::update_with_state::<F, 1>(param, grad, buf, |p, g, [s]| {
            let g = g + wd * *p;
            *s += g * g;
            *p -= clr * g / (s.sqrt() + eps);
        });
        Ok(())
    }
}

super::optimizer_impl!(Adagrad);

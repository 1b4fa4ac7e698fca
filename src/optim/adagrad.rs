//! Adagrad.

use super::{Buffers, check, check_lengths, sgd::check_lr};
use crate::{Result, Scalar, kernels};

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

impl Adagrad {
    fn name(&self) -> &'static str {
        "Adagrad"
    }

    /// Adagrad with learning rate `lr` and PyTorch's defaults: no decay, initial accumulator 0,
    /// `ε = 1e-10`.
    pub fn new(lr: f64) -> Result<Self> {
        check_lr(lr)?;
        Ok(Adagrad {
            lr,
            lr_decay: 0.0,
            weight_decay: 0.0,
            eps: 1e-10,
            steps: 0,
            buffers: Buffers::new(&["sum"], 0.0),
        })
    }

    /// With learning-rate decay `≥ 0`.
    pub fn lr_decay(mut self, lr_decay: f64) -> Result<Self> {
        check("lr_decay", lr_decay, lr_decay >= 0.0)?;
        self.lr_decay = lr_decay;
        Ok(self)
    }

    /// With the accumulator starting at `value ≥ 0`.
    pub fn initial_accumulator(mut self, value: f64) -> Result<Self> {
        check("initial_accumulator_value", value, value >= 0.0)?;
        self.buffers = Buffers::new(&["sum"], value);
        Ok(self)
    }

    /// With `ε > 0` in the denominator.
    pub fn eps(mut self, eps: f64) -> Result<Self> {
        check("eps", eps, eps > 0.0)?;
        self.eps = eps;
        Ok(self)
    }

    /// With L2 weight decay `λ ≥ 0`.
    pub fn weight_decay(mut self, weight_decay: f64) -> Result<Self> {
        check("weight_decay", weight_decay, weight_decay >= 0.0)?;
        self.weight_decay = weight_decay;
        Ok(self)
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

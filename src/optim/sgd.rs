//! Plain stochastic gradient descent.

use super::{Optimizer, OptimizerState, check_lengths};
use crate::{Error, Result, Scalar, kernels};
use serde::{Deserialize, Serialize};

/// Stochastic gradient descent: `p ← p − lr · g`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sgd {
    lr: f64,
    #[serde(default)]
    steps: u64,
}

impl Sgd {
    /// SGD with learning rate `lr` (finite and positive).
    pub fn new(lr: f64) -> Result<Self> {
        check_lr(lr)?;
        Ok(Sgd { lr, steps: 0 })
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

impl Sgd {
    fn step<F: Scalar>(&self, index: usize, param: &mut [F], grad: &[F]) -> Result<()> {
        check_lengths("SGD", index, param.len(), grad.len())?;
        kernels::axpy(F::of(-self.lr), grad, param);
        Ok(())
    }
}

impl Optimizer for Sgd {
    fn begin_step(&mut self) {
        self.steps += 1;
    }

    fn update_f32(&mut self, index: usize, param: &mut [f32], grad: &[f32]) -> Result<()> {
        self.step(index, param, grad)
    }

    fn update_f64(&mut self, index: usize, param: &mut [f64], grad: &[f64]) -> Result<()> {
        self.step(index, param, grad)
    }

    fn learning_rate(&self) -> f64 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn state(&self) -> OptimizerState {
        OptimizerState {
            optimizer: "SGD".into(),
            learning_rate: self.lr,
            steps: self.steps,
            slots: Vec::new(),
        }
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        state.expect("SGD")?;
        check_lr(state.learning_rate)?;
        self.lr = state.learning_rate;
        self.steps = state.steps;
        Ok(())
    }
}

//! Plain stochastic gradient descent.

use super::Optimizer;
use crate::{Error, Result, Scalar, kernels};
use serde::{Deserialize, Serialize};

/// Stochastic gradient descent: `p ← p − lr · g`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sgd {
    lr: f64,
}

impl Sgd {
    /// SGD with learning rate `lr` (finite and positive).
    pub fn new(lr: f64) -> Result<Self> {
        check_lr(lr)?;
        Ok(Sgd { lr })
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

impl<F: Scalar> Optimizer<F> for Sgd {
    fn update(&mut self, index: usize, param: &mut [F], grad: &[F]) -> Result<()> {
        if param.len() != grad.len() {
            return Err(Error::shape(
                format!("SGD update of parameter {index}"),
                format!("gradient of length {}", param.len()),
                format!("length {}", grad.len()),
            ));
        }
        kernels::axpy(F::of(-self.lr), grad, param);
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }
}

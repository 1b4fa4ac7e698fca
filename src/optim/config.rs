//! Optimizers described as data, for training files.

use super::{Adagrad, Adam, Optimizer, RmsProp, Sgd};
use crate::Result;
use serde::{Deserialize, Serialize};

fn lr_default() -> f64 {
    1e-3
}
fn betas_default() -> [f64; 2] {
    [0.9, 0.999]
}
fn eps_default() -> f64 {
    1e-8
}
fn adamw_decay() -> f64 {
    0.01
}
fn alpha_default() -> f64 {
    0.99
}
fn adagrad_eps() -> f64 {
    1e-10
}

/// An optimizer and its settings, with PyTorch's names and defaults. Serialized with a `"type"`
/// tag: `{type: Adam, lr: 0.001}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum OptimizerSpec {
    /// [`Sgd`].
    #[serde(rename = "SGD", alias = "sgd")]
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum (default 0).
        #[serde(default)]
        momentum: f64,
        /// Dampening (default 0).
        #[serde(default)]
        dampening: f64,
        /// Nesterov momentum (default false).
        #[serde(default)]
        nesterov: bool,
        /// L2 weight decay (default 0).
        #[serde(default)]
        weight_decay: f64,
    },
    /// [`Adam`].
    #[serde(alias = "adam")]
    Adam {
        /// Learning rate (default 1e-3).
        #[serde(default = "lr_default")]
        lr: f64,
        /// `β₁, β₂` (default 0.9, 0.999).
        #[serde(default = "betas_default")]
        betas: [f64; 2],
        /// `ε` (default 1e-8).
        #[serde(default = "eps_default")]
        eps: f64,
        /// L2 weight decay (default 0).
        #[serde(default)]
        weight_decay: f64,
    },
    /// [`Adam::adamw`].
    #[serde(alias = "adamw")]
    AdamW {
        /// Learning rate (default 1e-3).
        #[serde(default = "lr_default")]
        lr: f64,
        /// `β₁, β₂` (default 0.9, 0.999).
        #[serde(default = "betas_default")]
        betas: [f64; 2],
        /// `ε` (default 1e-8).
        #[serde(default = "eps_default")]
        eps: f64,
        /// Decoupled weight decay (default 0.01).
        #[serde(default = "adamw_decay")]
        weight_decay: f64,
    },
    /// [`RmsProp`].
    #[serde(rename = "RMSprop", alias = "rmsprop")]
    RmsProp {
        /// Learning rate (default 1e-3).
        #[serde(default = "lr_default")]
        lr: f64,
        /// Smoothing constant (default 0.99).
        #[serde(default = "alpha_default")]
        alpha: f64,
        /// `ε` (default 1e-8).
        #[serde(default = "eps_default")]
        eps: f64,
        /// Momentum (default 0).
        #[serde(default)]
        momentum: f64,
        /// Centred (default false).
        #[serde(default)]
        centered: bool,
        /// L2 weight decay (default 0).
        #[serde(default)]
        weight_decay: f64,
    },
    /// [`Adagrad`].
    #[serde(alias = "adagrad")]
    Adagrad {
        /// Learning rate (default 1e-3).
        #[serde(default = "lr_default")]
        lr: f64,
        /// Learning-rate decay (default 0).
        #[serde(default)]
        lr_decay: f64,
        /// Starting accumulator (default 0).
        #[serde(default)]
        initial_accumulator_value: f64,
        /// `ε` (default 1e-10).
        #[serde(default = "adagrad_eps")]
        eps: f64,
        /// L2 weight decay (default 0).
        #[serde(default)]
        weight_decay: f64,
    },
}

impl OptimizerSpec {
    /// Sets the learning rate (a command line's `--lr`).
    pub fn set_lr(&mut self, value: f64) {
        match self {
            OptimizerSpec::Sgd { lr, .. }
            | OptimizerSpec::Adam { lr, .. }
            | OptimizerSpec::AdamW { lr, .. }
            | OptimizerSpec::RmsProp { lr, .. }
            | OptimizerSpec::Adagrad { lr, .. } => *lr = value,
        }
    }

    /// The optimizer, with every setting checked.
    pub fn build(&self) -> Result<Box<dyn Optimizer>> {
        Ok(match *self {
            OptimizerSpec::Sgd {
                lr,
                momentum,
                dampening,
                nesterov,
                weight_decay,
            } => {
                let mut sgd = Sgd::new(lr)?.weight_decay(weight_decay)?;
                if momentum > 0.0 {
                    sgd = sgd.momentum(momentum)?.dampening(dampening)?;
                }
                if nesterov {
                    sgd = sgd.nesterov()?;
                }
                Box::new(sgd)
            }
            OptimizerSpec::Adam {
                lr,
                betas,
                eps,
                weight_decay,
            } => Box::new(
                Adam::new(lr)?
                    .betas(betas[0], betas[1])?
                    .eps(eps)?
                    .weight_decay(weight_decay)?,
            ),
            OptimizerSpec::AdamW {
                lr,
                betas,
                eps,
                weight_decay,
            } => Box::new(
                Adam::adamw(lr, weight_decay)?
                    .betas(betas[0], betas[1])?
                    .eps(eps)?,
            ),
            OptimizerSpec::RmsProp {
                lr,
                alpha,
                eps,
                momentum,
                centered,
                weight_decay,
            } => {
                let mut r = RmsProp::new(lr)?
                    .alpha(alpha)?
                    .eps(eps)?
                    .momentum(momentum)?
                    .weight_decay(weight_decay)?;
                if centered {
                    r = r.centered();
                }
                Box::new(r)
            }
            OptimizerSpec::Adagrad {
                lr,
                lr_decay,
                initial_accumulator_value,
                eps,
                weight_decay,
            } => Box::new(
                Adagrad::new(lr)?
                    .lr_decay(lr_decay)?
                    .initial_accumulator(initial_accumulator_value)?
                    .eps(eps)?
                    .weight_decay(weight_decay)?,
            ),
        })
    }
}

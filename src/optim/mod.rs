//! Optimizers: they apply the gradients that layers compute.
//!
//! A model calls [`Optimizer::begin_step`] once per training step and then
//! [`Optimizer::update`] for each parameter, with an index that is stable from step to step
//! (the order of [`Layer::visit_params`](crate::layer::Layer::visit_params) over the layers).
//! A stateful optimizer (momentum, Adam) keeps its per-parameter state under that index.

mod sgd;

pub use sgd::Sgd;

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// What an optimizer has learned while training, for checkpoints: its learning rate (which a
/// schedule may have changed), its step count and its per-parameter buffers (momentum, moment
/// estimates). Hyperparameters are not part of it: make the optimizer with the same settings,
/// then [`Optimizer::load_state`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerState {
    /// The optimizer's name (`"SGD"`, `"Adam"`, ...); loading into another kind is an error.
    pub optimizer: String,
    /// The learning rate when the state was taken.
    pub learning_rate: f64,
    /// Steps taken.
    pub steps: u64,
    /// Per-parameter buffers, by name and parameter index. Values are stored as `f64`, which
    /// holds an `f32` exactly.
    pub slots: Vec<Slot>,
}

/// One buffer an optimizer keeps for one parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    /// The buffer's name (`"momentum"`, `"exp_avg"`, ...).
    pub name: String,
    /// The parameter's index (see [`Optimizer::update`]).
    pub param: usize,
    /// The buffer's values.
    pub values: Vec<f64>,
}

impl OptimizerState {
    /// Checks that the state was taken from an optimizer called `name`.
    pub fn expect(&self, name: &str) -> Result<()> {
        if self.optimizer == name {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "optimizer state is from {}, not {name}",
                self.optimizer
            )))
        }
    }
}

/// An update rule for parameters given their gradients.
///
/// The trait is not generic, so `Box<dyn Optimizer>` holds any optimizer chosen at run time;
/// implementors write their rule once as a generic function and call it from both
/// [`update_f32`](Self::update_f32) and [`update_f64`](Self::update_f64).
pub trait Optimizer: Send {
    /// Called once at the start of every training step, before any update.
    fn begin_step(&mut self) {}

    /// Updates parameter number `index` (`f32`) in place from its gradient.
    fn update_f32(&mut self, index: usize, param: &mut [f32], grad: &[f32]) -> Result<()>;

    /// Updates parameter number `index` (`f64`) in place from its gradient.
    fn update_f64(&mut self, index: usize, param: &mut [f64], grad: &[f64]) -> Result<()>;

    /// The current learning rate.
    fn learning_rate(&self) -> f64;

    /// Sets the learning rate (for schedules).
    fn set_learning_rate(&mut self, lr: f64);

    /// The optimizer's state, for a checkpoint.
    fn state(&self) -> OptimizerState;

    /// Restores a state taken by [`state`](Self::state) from an optimizer of the same kind.
    fn load_state(&mut self, state: &OptimizerState) -> Result<()>;
}

/// Checks that a parameter and its gradient have the same length.
pub(crate) fn check_lengths(
    optimizer: &str,
    index: usize,
    param: usize,
    grad: usize,
) -> Result<()> {
    if param == grad {
        Ok(())
    } else {
        Err(Error::shape(
            format!("{optimizer} update of parameter {index}"),
            format!("gradient of length {param}"),
            format!("length {grad}"),
        ))
    }
}

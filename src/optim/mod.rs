//! Optimizers: they apply the gradients that layers compute.
//!
//! A model calls [`Optimizer::begin_step`] once per training step and then
//! [`Optimizer::update`] for each parameter, with an index that is stable from step to step
//! (the order of [`Layer::visit_params`](crate::layer::Layer::visit_params) over the layers).
//! A stateful optimizer (momentum, Adam) keeps its per-parameter state under that index.

mod sgd;

pub use sgd::Sgd;

use crate::{Result, Scalar};

/// An update rule for parameters given their gradients.
pub trait Optimizer<F: Scalar>: Send {
    /// Called once at the start of every training step, before any [`update`](Self::update).
    fn begin_step(&mut self) {}

    /// Updates parameter number `index` in place from its gradient (`param.len() == grad.len()`).
    fn update(&mut self, index: usize, param: &mut [F], grad: &[F]) -> Result<()>;

    /// The current learning rate.
    fn learning_rate(&self) -> f64;

    /// Sets the learning rate (for schedules).
    fn set_learning_rate(&mut self, lr: f64);
}

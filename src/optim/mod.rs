//! Optimizers: they apply the gradients that layers compute.
//!
//! A model calls [`Optimizer::begin_step`] once per training step and then
//! [`Optimizer::update_f32`] (or `update_f64`) for each parameter, with an index that is stable
//! from step to step (the order of [`Layer::visit_params`](crate::layer::Layer::visit_params)
//! over the layers).
//! A stateful optimizer (momentum, Adam) keeps its per-parameter state under that index.

mod adagrad;
mod adam;
mod config;
mod rmsprop;
mod schedule;
mod sgd;

pub use adagrad::{Adagrad, AdagradConfig};
pub use adam::{Adam, AdamConfig, AdamWConfig};
pub use config::OptimizerSpec;
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use schedule::{Schedule, Scheduler};
pub use sgd::{Sgd, SgdConfig};

use crate::scalar::Slices;
use crate::{Error, Result, Scalar};
use serde::{Deserialize, Serialize};
use std::any::Any;

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
    /// The parameter's index (see [`Optimizer::update_f32`]).
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

    /// `Some(lr)` when this optimizer's update is `p ← p − lr·g` for every parameter and
    /// nothing else (plain SGD: no state, no weight decay). A model may then fold the update
    /// into the product that computes a weight gradient, writing the weights directly
    /// ([`Sequential::train_step`](crate::Sequential::train_step)). `None`, the default, for any
    /// other rule.
    fn plain_sgd(&self) -> Option<f64> {
        None
    }

    /// Sets the learning rate (for schedules).
    fn set_learning_rate(&mut self, lr: f64);

    /// The optimizer's state, for a checkpoint.
    fn state(&self) -> OptimizerState;

    /// Restores a state taken by [`state`](Self::state) from an optimizer of the same kind.
    fn load_state(&mut self, state: &OptimizerState) -> Result<()>;
}

/// Implements [`Optimizer`] for a type with fields `lr`, `steps` and `buffers`, an inherent
/// `fn name(&self) -> &'static str` and a generic `fn step<F: Scalar>(&mut self, index, param,
/// grad) -> Result<()>`; `plain_sgd = method` names an inherent method for
/// [`Optimizer::plain_sgd`].
macro_rules! optimizer_impl {
    ($t:ty $(, plain_sgd = $plain:ident)?) => {
        impl $crate::optim::Optimizer for $t {
            fn begin_step(&mut self) {
                self.steps += 1;
            }

            fn update_f32(
                &mut self,
                index: usize,
                param: &mut [f32],
                grad: &[f32],
            ) -> $crate::Result<()> {
                self.step(index, param, grad)
            }

            fn update_f64(
                &mut self,
                index: usize,
                param: &mut [f64],
                grad: &[f64],
            ) -> $crate::Result<()> {
                self.step(index, param, grad)
            }

            fn learning_rate(&self) -> f64 {
                self.lr
            }

            $(
                fn plain_sgd(&self) -> Option<f64> {
                    self.$plain()
                }
            )?

            fn set_learning_rate(&mut self, lr: f64) {
                self.lr = lr;
            }

            fn state(&self) -> $crate::optim::OptimizerState {
                $crate::optim::OptimizerState {
                    optimizer: self.name().into(),
                    learning_rate: self.lr,
                    steps: self.steps,
                    slots: self.buffers.slots(),
                }
            }

            fn load_state(&mut self, state: &$crate::optim::OptimizerState) -> $crate::Result<()> {
                let name = self.name();
                $crate::optim::restore(
                    state,
                    name,
                    &mut self.lr,
                    &mut self.steps,
                    &mut self.buffers,
                )
            }
        }
    };
}
pub(crate) use optimizer_impl;

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

/// An optimizer's per-parameter buffers: `names.len()` values per parameter element,
/// interleaved, kept in the model's element type (created on first use).
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    names: &'static [&'static str],
    init: f64,
    /// `Vec<Vec<F>>`, one interleaved vector per parameter index.
    store: Option<Box<dyn Any + Send>>,
    /// Buffers loaded from a checkpoint, converted on first use.
    pending: Vec<Vec<f64>>,
}

impl Buffers {
    pub fn new(names: &'static [&'static str], init: f64) -> Self {
        Buffers {
            names,
            init,
            store: None,
            pending: Vec::new(),
        }
    }

    /// The buffers of parameter `index` (of `len` elements) and whether they were just made.
    pub fn get<F: Scalar>(&mut self, index: usize, len: usize) -> Result<(&mut [F], bool)> {
        let k = self.names.len();
        let store = self
            .store
            .get_or_insert_with(|| Box::new(Vec::<Vec<F>>::new()));
        let vecs = store.downcast_mut::<Vec<Vec<F>>>().ok_or_else(|| {
            Error::Config("an optimizer's state cannot move between f32 and f64 models".into())
        })?;
        if vecs.len() <= index {
            vecs.resize_with(index + 1, Vec::new);
        }
        let mut fresh = false;
        if vecs[index].is_empty() {
            vecs[index] = match self.pending.get(index) {
                Some(p) if !p.is_empty() => p.iter().map(|&v| F::of(v)).collect(),
                _ => {
                    fresh = true;
                    vec![F::of(self.init); k * len]
                }
            };
        }
        if vecs[index].len() != k * len {
            return Err(Error::shape(
                format!("optimizer state of parameter {index}"),
                format!("{} values", k * len),
                format!("{}", vecs[index].len()),
            ));
        }
        Ok((&mut vecs[index], fresh))
    }

    fn vectors(&self) -> Vec<Vec<f64>> {
        let Some(store) = &self.store else {
            return self.pending.clone();
        };
        if let Some(v) = store.downcast_ref::<Vec<Vec<f32>>>() {
            v.iter()
                .map(|p| p.iter().map(|&x| x as f64).collect())
                .collect()
        } else if let Some(v) = store.downcast_ref::<Vec<Vec<f64>>>() {
            v.clone()
        } else {
            Vec::new()
        }
    }

    /// The buffers as named slots, one per buffer and parameter.
    pub fn slots(&self) -> Vec<Slot> {
        let k = self.names.len();
        let mut out = Vec::new();
        for (param, v) in self.vectors().iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            for (j, name) in self.names.iter().enumerate() {
                out.push(Slot {
                    name: (*name).into(),
                    param,
                    values: v.iter().skip(j).step_by(k).copied().collect(),
                });
            }
        }
        out
    }

    /// Replaces the buffers with those in `slots`.
    pub fn load(&mut self, slots: &[Slot]) -> Result<()> {
        let k = self.names.len();
        let mut pending: Vec<Vec<f64>> = Vec::new();
        for slot in slots {
            let j = self
                .names
                .iter()
                .position(|n| *n == slot.name)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "optimizer state has an unknown buffer `{}`",
                        slot.name
                    ))
                })?;
            if slot.param > 1 << 24 {
                return Err(Error::Config(format!(
                    "optimizer state names parameter {}",
                    slot.param
                )));
            }
            if pending.len() <= slot.param {
                pending.resize_with(slot.param + 1, Vec::new);
            }
            let v = &mut pending[slot.param];
            if v.is_empty() {
                *v = vec![0.0; k * slot.values.len()];
            }
            if v.len() != k * slot.values.len() {
                return Err(Error::Config(format!(
                    "optimizer state buffers of parameter {} differ in length",
                    slot.param
                )));
            }
            for (i, x) in slot.values.iter().enumerate() {
                v[i * k + j] = *x;
            }
        }
        self.pending = pending;
        self.store = None;
        Ok(())
    }
}

/// The learning rate and the step count, checked and restored from a state.
pub(crate) fn restore(
    state: &OptimizerState,
    name: &str,
    lr: &mut f64,
    steps: &mut u64,
    buffers: &mut Buffers,
) -> Result<()> {
    state.expect(name)?;
    sgd::check_lr(state.learning_rate)?;
    buffers.load(&state.slots)?;
    *lr = state.learning_rate;
    *steps = state.steps;
    Ok(())
}

/// Checks a hyperparameter's range.
/// `optimizer`'s update of parameter `index`, in the element type the model computes in.
pub(crate) fn update<F: Scalar, O: Optimizer + ?Sized>(
    optimizer: &mut O,
    index: usize,
    param: &mut [F],
    grad: &[F],
) -> Result<()> {
    match F::slices(param, grad) {
        Slices::F32(p, g) => optimizer.update_f32(index, p, g),
        Slices::F64(p, g) => optimizer.update_f64(index, p, g),
    }
}

pub(crate) fn check(name: &str, value: f64, ok: bool) -> Result<()> {
    if ok && value.is_finite() {
        Ok(())
    } else {
        Err(Error::Config(format!("{name} = {value} is out of range")))
    }
}

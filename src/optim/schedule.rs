//! Learning-rate schedules, stepped once per epoch.

use super::check;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// How the learning rate changes from epoch to epoch. `e` counts completed epochs and `lr₀` is
/// the optimizer's initial learning rate. Serialized with a `"type"` tag, for training files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum Schedule {
    /// `lr₀` throughout.
    Constant,
    /// `lr₀ · γ^⌊e / step_size⌋` (PyTorch `StepLR`).
    Step {
        /// Epochs between decays.
        step_size: usize,
        /// Factor per decay.
        gamma: f64,
    },
    /// `lr₀ · γᵉ` (PyTorch `ExponentialLR`).
    Exponential {
        /// Factor per epoch.
        gamma: f64,
    },
    /// A linear warm-up over `warmup` epochs (`lr₀ · (e + 1) / (warmup + 1)`), then cosine
    /// annealing over `t_max` epochs: `η_min + (lr₀ − η_min)(1 + cos(π·min(e′, t_max)/t_max))/2`
    /// with `e′ = e − warmup` (PyTorch `CosineAnnealingLR` when `warmup` is 0).
    Cosine {
        /// Epochs of the cosine half-period.
        t_max: usize,
        /// The floor, `η_min`.
        #[serde(default)]
        eta_min: f64,
        /// Epochs of linear warm-up first.
        #[serde(default)]
        warmup: usize,
    },
    /// `lr₀ · (f + (1 − f) · min(e, epochs) / epochs)`: linear warm-up from the factor `f`
    /// (PyTorch `LinearLR` with `end_factor = 1`).
    LinearWarmup {
        /// Epochs to reach `lr₀`.
        epochs: usize,
        /// The starting factor `f` (PyTorch's default is 1/3).
        #[serde(default = "one_third")]
        start_factor: f64,
    },
    /// Multiplies the rate by `factor` when the monitored metric (lower is better) has not
    /// improved by a relative `threshold` for more than `patience` epochs (PyTorch
    /// `ReduceLROnPlateau`, mode `min`, relative threshold).
    ReduceOnPlateau {
        /// Factor per reduction (PyTorch's default 0.1).
        #[serde(default = "tenth")]
        factor: f64,
        /// Epochs without improvement that are tolerated (default 10).
        #[serde(default = "ten")]
        patience: usize,
        /// Relative improvement that counts (default 1e-4).
        #[serde(default = "small")]
        threshold: f64,
        /// Epochs to wait after a reduction (default 0).
        #[serde(default)]
        cooldown: usize,
        /// The floor (default 0).
        #[serde(default)]
        min_lr: f64,
    },
}

fn one_third() -> f64 {
    1.0 / 3.0
}
fn tenth() -> f64 {
    0.1
}
fn ten() -> usize {
    10
}
fn small() -> f64 {
    1e-4
}

/// A [`Schedule`] in progress. It serializes (for checkpoints) with its schedule as a JSON
/// string, so that formats which are not self-describing (bincode) hold it too; what it
/// deserializes from is checked as [`Scheduler::new`] checks its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "StoredScheduler", try_from = "StoredScheduler")]
pub struct Scheduler {
    schedule: Schedule,
    base_lr: f64,
    lr: f64,
    epoch: usize,
    best: f64,
    bad_epochs: usize,
    cooldown_left: usize,
}

/// A [`Scheduler`] as stored.
#[derive(Serialize, Deserialize)]
struct StoredScheduler {
    schedule: String,
    base_lr: f64,
    lr: f64,
    epoch: usize,
    best: f64,
    bad_epochs: usize,
    cooldown_left: usize,
}

impl From<Scheduler> for StoredScheduler {
    fn from(s: Scheduler) -> Self {
        StoredScheduler {
            schedule: serde_json::to_string(&s.schedule).expect("a Schedule always serializes"),
            base_lr: s.base_lr,
            lr: s.lr,
            epoch: s.epoch,
            best: s.best,
            bad_epochs: s.bad_epochs,
            cooldown_left: s.cooldown_left,
        }
    }
}

impl TryFrom<StoredScheduler> for Scheduler {
    type Error = Error;

    fn try_from(s: StoredScheduler) -> Result<Self> {
        let schedule: Schedule = serde_json::from_str(&s.schedule)
            .map_err(|e| Error::Config(format!("stored schedule: {e}")))?;
        let fresh = Scheduler::new(schedule, s.base_lr)?;
        check("learning rate", s.lr, s.lr > 0.0)?;
        if s.best.is_nan() {
            return Err(Error::Config(
                "stored schedule: the best value is NaN".into(),
            ));
        }
        Ok(Scheduler {
            lr: s.lr,
            epoch: s.epoch,
            best: s.best,
            bad_epochs: s.bad_epochs,
            cooldown_left: s.cooldown_left,
            ..fresh
        })
    }
}

impl Scheduler {
    /// Starts `schedule` from the initial rate `base_lr`.
    pub fn new(schedule: Schedule, base_lr: f64) -> Result<Self> {
        check("learning rate", base_lr, base_lr > 0.0)?;
        let positive = |name, v: f64| check(name, v, v > 0.0);
        match &schedule {
            Schedule::Constant => {}
            Schedule::Step { step_size, gamma } => {
                positive("gamma", *gamma)?;
                if *step_size == 0 {
                    return Err(Error::Config("step_size must be at least 1".into()));
                }
            }
            Schedule::Exponential { gamma } => positive("gamma", *gamma)?,
            Schedule::Cosine { t_max, eta_min, .. } => {
                check("eta_min", *eta_min, (0.0..=base_lr).contains(eta_min))?;
                if *t_max == 0 {
                    return Err(Error::Config("t_max must be at least 1".into()));
                }
            }
            Schedule::LinearWarmup {
                epochs,
                start_factor,
            } => {
                check(
                    "start_factor",
                    *start_factor,
                    *start_factor > 0.0 && *start_factor <= 1.0,
                )?;
                if *epochs == 0 {
                    return Err(Error::Config("warm-up epochs must be at least 1".into()));
                }
            }
            Schedule::ReduceOnPlateau {
                factor,
                threshold,
                min_lr,
                ..
            } => {
                check("factor", *factor, *factor > 0.0 && *factor < 1.0)?;
                check("threshold", *threshold, *threshold >= 0.0)?;
                check("min_lr", *min_lr, *min_lr >= 0.0)?;
            }
        }
        let mut s = Scheduler {
            schedule,
            base_lr,
            lr: base_lr,
            epoch: 0,
            best: f64::INFINITY,
            bad_epochs: 0,
            cooldown_left: 0,
        };
        s.lr = s.closed_form(0).unwrap_or(base_lr);
        Ok(s)
    }

    /// The schedule being followed.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The learning rate of the current epoch.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// The rate after `e` completed epochs, for the schedules that depend on `e` alone.
    fn closed_form(&self, e: usize) -> Option<f64> {
        let lr0 = self.base_lr;
        Some(match self.schedule {
            Schedule::Constant => lr0,
            Schedule::Step { step_size, gamma } => lr0 * gamma.powi((e / step_size) as i32),
            Schedule::Exponential { gamma } => lr0 * gamma.powi(e as i32),
            Schedule::Cosine {
                t_max,
                eta_min,
                warmup,
            } => {
                if e < warmup {
                    lr0 * (e + 1) as f64 / (warmup as f64 + 1.0)
                } else {
                    let t = (e - warmup).min(t_max) as f64 / t_max as f64;
                    eta_min + (lr0 - eta_min) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
                }
            }
            Schedule::LinearWarmup {
                epochs,
                start_factor,
            } => lr0 * (start_factor + (1.0 - start_factor) * e.min(epochs) as f64 / epochs as f64),
            Schedule::ReduceOnPlateau { .. } => return None,
        })
    }

    /// Ends an epoch: `metric` is the monitored value (validation loss, say), which
    /// `ReduceOnPlateau` needs. Returns the rate for the next epoch.
    pub fn step(&mut self, metric: Option<f64>) -> Result<f64> {
        self.epoch = self.epoch.saturating_add(1);
        if let Some(lr) = self.closed_form(self.epoch) {
            self.lr = lr;
            return Ok(lr);
        }
        let Schedule::ReduceOnPlateau {
            factor,
            patience,
            threshold,
            cooldown,
            min_lr,
        } = self.schedule
        else {
            unreachable!("every other schedule has a closed form");
        };
        let metric = metric.filter(|m| m.is_finite()).ok_or_else(|| {
            Error::Config("ReduceOnPlateau needs a finite metric each epoch".into())
        })?;
        if metric < self.best * (1.0 - threshold) {
            self.best = metric;
            self.bad_epochs = 0;
        } else {
            self.bad_epochs = self.bad_epochs.saturating_add(1);
        }
        if self.cooldown_left > 0 {
            self.cooldown_left -= 1;
            self.bad_epochs = 0;
        }
        if self.bad_epochs > patience {
            self.lr = (self.lr * factor).max(min_lr);
            self.cooldown_left = cooldown;
            self.bad_epochs = 0;
        }
        Ok(self.lr)
    }
}

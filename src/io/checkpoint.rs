//! Checkpoints: a model with its optimizer's state, the step count and a random generator's
//! state, so that training resumes exactly where it stopped.
//!
//! Layout: `CRANKCKP` (8 bytes), the checkpoint version (u32, little-endian), then bincode of the
//! model in the [bincode model format](super::Format::Bincode), the optimizer state as JSON, the
//! step count, the generator's state and (version 2) the [`FitState`] of a `fit` run, its
//! tensors as f64. Version 1 files (no fit state) still load.

use super::binary::{framed, unframe};
use super::{Format, atomic_write, read_limited};
use crate::optim::{Optimizer, OptimizerState};
use crate::train::FitState;
use crate::{Error, Result, Scalar, Sequential};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::path::Path;

const MAGIC: &[u8; 8] = b"CRANKCKP";
/// The checkpoint format's version that this crank writes (it reads 1 to this).
pub const CHECKPOINT_VERSION: u32 = 2;
const VERSION: u32 = CHECKPOINT_VERSION;
const FORMAT: &str = "checkpoint";

fn err(at: &str, reason: impl Into<String>) -> Error {
    Error::File {
        format: FORMAT,
        at: at.into(),
        reason: reason.into(),
    }
}

/// Version 2.
#[derive(Serialize, Deserialize)]
struct Stored {
    model: ByteBuf,
    optimizer: String,
    steps: u64,
    rng: Option<Xoshiro256PlusPlus>,
    fit: Option<FitState<f64>>,
}

/// Version 1: no fit state.
#[derive(Deserialize)]
struct StoredV1 {
    model: ByteBuf,
    optimizer: String,
    steps: u64,
    rng: Option<Xoshiro256PlusPlus>,
}

/// A model, its optimizer's state and a generator, as saved mid-training.
#[derive(Debug)]
pub struct Checkpoint<F: Scalar> {
    /// The model, with its step count.
    pub model: Sequential<F>,
    /// The optimizer's state: load it into an optimizer made with the same settings.
    pub optimizer: OptimizerState,
    /// The training loop's generator (the batcher's shuffling), if one was saved.
    pub rng: Option<Xoshiro256PlusPlus>,
    /// Where a [`Sequential::fit_from`] run stood, if one was saved: continue it with
    /// `fit_from`.
    pub fit: Option<FitState<F>>,
}

impl<F: Scalar> Checkpoint<F> {
    /// The checkpoint's bytes.
    pub fn to_bytes<O: Optimizer + ?Sized>(
        model: &Sequential<F>,
        optimizer: &O,
        rng: Option<&Xoshiro256PlusPlus>,
    ) -> Result<Vec<u8>> {
        encode(model, optimizer, rng, None)
    }

    /// The bytes of a checkpoint of a [`Sequential::fit_from`] run.
    pub fn fit_to_bytes<O: Optimizer + ?Sized>(
        model: &Sequential<F>,
        optimizer: &O,
        fit: &FitState<F>,
    ) -> Result<Vec<u8>> {
        encode(model, optimizer, None, Some(fit))
    }

    /// Saves a checkpoint of a [`Sequential::fit_from`] run to `path`, through a temporary
    /// file renamed over the target: loading it and calling `fit_from` with its model,
    /// optimizer state and [`fit`](Self::fit) state continues the run as if it had never
    /// stopped.
    pub fn save_fit<O: Optimizer + ?Sized>(
        path: impl AsRef<Path>,
        model: &Sequential<F>,
        optimizer: &O,
        fit: &FitState<F>,
    ) -> Result<()> {
        let bytes = Self::fit_to_bytes(model, optimizer, fit)?;
        atomic_write(path.as_ref(), |w| w.write_all(&bytes))
    }

    /// Saves a checkpoint to `path`, through a temporary file renamed over the target.
    pub fn save<O: Optimizer + ?Sized>(
        path: impl AsRef<Path>,
        model: &Sequential<F>,
        optimizer: &O,
        rng: Option<&Xoshiro256PlusPlus>,
    ) -> Result<()> {
        let bytes = Self::to_bytes(model, optimizer, rng)?;
        atomic_write(path.as_ref(), |w| w.write_all(&bytes))
    }

    /// A checkpoint from its bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let stored: Stored = if bytes.get(8..12) == Some(&1u32.to_le_bytes()[..]) {
            let v1: StoredV1 = unframe(bytes, MAGIC, 1, FORMAT)?;
            Stored {
                model: v1.model,
                optimizer: v1.optimizer,
                steps: v1.steps,
                rng: v1.rng,
                fit: None,
            }
        } else {
            unframe(bytes, MAGIC, VERSION, FORMAT)?
        };
        let mut model = Sequential::from_bytes(&stored.model, Format::Bincode)?;
        model.set_steps(stored.steps);
        let optimizer = serde_json::from_str(&stored.optimizer)
            .map_err(|e| err("optimizer state", e.to_string()))?;
        let fit = stored.fit.map(FitState::cast::<F>);
        if let Some(fit) = &fit {
            fit.check(&model)
                .map_err(|e| err("fit state", e.to_string()))?;
        }
        Ok(Checkpoint {
            model,
            optimizer,
            rng: stored.rng,
            fit,
        })
    }

    /// Loads a checkpoint saved by [`save`](Self::save).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_bytes(&read_limited(path.as_ref())?)
    }
}

fn encode<F: Scalar, O: Optimizer + ?Sized>(
    model: &Sequential<F>,
    optimizer: &O,
    rng: Option<&Xoshiro256PlusPlus>,
    fit: Option<&FitState<F>>,
) -> Result<Vec<u8>> {
    let optimizer =
        serde_json::to_string(&optimizer.state()).map_err(|e| err("optimizer", e.to_string()))?;
    let stored = Stored {
        model: ByteBuf::from(model.to_bytes(Format::Bincode)?),
        optimizer,
        steps: model.steps(),
        rng: rng.cloned(),
        fit: fit.map(|f| f.clone().cast::<f64>()),
    };
    framed(MAGIC, VERSION, &stored).map_err(|e| err("output", e.to_string()))
}

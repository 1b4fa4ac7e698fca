//! Checkpoints: a model with its optimizer's state, the step count and a random generator's
//! state, so that training resumes exactly where it stopped.
//!
//! Layout: `CRANKCKP` (8 bytes), the checkpoint version (u32, little-endian), then bincode of the
//! model in the [bincode model format](super::Format::Bincode), the optimizer state as JSON, the
//! step count and the generator's state.

use super::binary::{framed, unframe};
use super::{Format, atomic_write, read_limited};
use crate::optim::{Optimizer, OptimizerState};
use crate::{Error, Result, Scalar, Sequential};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::path::Path;

const MAGIC: &[u8; 8] = b"CRANKCKP";
const VERSION: u32 = 1;
const FORMAT: &str = "checkpoint";

fn err(at: &str, reason: impl Into<String>) -> Error {
    Error::File {
        format: FORMAT,
        at: at.into(),
        reason: reason.into(),
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
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
}

impl<F: Scalar> Checkpoint<F> {
    /// The checkpoint's bytes.
    pub fn to_bytes<O: Optimizer + ?Sized>(
        model: &Sequential<F>,
        optimizer: &O,
        rng: Option<&Xoshiro256PlusPlus>,
    ) -> Result<Vec<u8>> {
        let optimizer = serde_json::to_string(&optimizer.state())
            .map_err(|e| err("optimizer", e.to_string()))?;
        let stored = Stored {
            model: ByteBuf::from(model.to_bytes(Format::Bincode)?),
            optimizer,
            steps: model.steps(),
            rng: rng.cloned(),
        };
        framed(MAGIC, VERSION, &stored).map_err(|e| err("output", e.to_string()))
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
        let stored: Stored = unframe(bytes, MAGIC, VERSION, FORMAT)?;
        let mut model = Sequential::from_bytes(&stored.model, Format::Bincode)?;
        model.set_steps(stored.steps);
        let optimizer = serde_json::from_str(&stored.optimizer)
            .map_err(|e| err("optimizer state", e.to_string()))?;
        Ok(Checkpoint {
            model,
            optimizer,
            rng: stored.rng,
        })
    }

    /// Loads a checkpoint saved by [`save`](Self::save).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_bytes(&read_limited(path.as_ref())?)
    }
}

//! The model file's `training` section and the flags that override it.

use crate::{Result, ctx};
use crank::Loss;
use crank::optim::OptimizerSpec;
use crank::spec::{ModelSpec, read_document};
use crank::train::FitOptions;
use std::path::Path;

/// Training settings that override the model file's `training` section.
#[derive(clap::Args, Default)]
pub(crate) struct Overrides {
    /// Epochs.
    #[arg(long)]
    pub(crate) epochs: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    pub(crate) lr: Option<f64>,
    /// Batch size.
    #[arg(long)]
    pub(crate) batch_size: Option<usize>,
    /// Seed for the weights and the shuffling.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Threads for training and prediction (kernels and GEMMs), this command's own thread one of
    /// them (default: `RAYON_NUM_THREADS`, else one per core).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
}

/// The `training` section of a model file.
pub(crate) struct Training {
    pub(crate) loss: Loss,
    pub(crate) optimizer: OptimizerSpec,
    pub(crate) standardize: bool,
    pub(crate) fit: FitOptions,
}

pub(crate) fn read_config(path: &Path) -> Result<(ModelSpec, Training)> {
    let mut doc = ctx(read_document(path))?;
    let at = |what: &str, e: serde_json::Error| format!("{}: training.{what}: {e}", path.display());
    let mut training = match doc.as_object_mut().and_then(|o| o.remove("training")) {
        Some(serde_json::Value::Object(t)) => t,
        Some(_) => return Err(format!("{}: `training` must be a mapping", path.display())),
        None => serde_json::Map::new(),
    };
    let loss = match training.remove("loss") {
        Some(v) => serde_json::from_value(v).map_err(|e| at("loss", e))?,
        None => Loss::SoftmaxCrossEntropy,
    };
    let optimizer = match training.remove("optimizer") {
        Some(v) => serde_json::from_value(v).map_err(|e| at("optimizer", e))?,
        None => OptimizerSpec::default(),
    };
    let standardize = match training.remove("standardize") {
        Some(v) => serde_json::from_value(v).map_err(|e| at("standardize", e))?,
        None => true,
    };
    let fit: FitOptions =
        serde_json::from_value(serde_json::Value::Object(training)).map_err(|e| at("", e))?;
    let spec = ModelSpec::from_value(doc).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((
        spec,
        Training {
            loss,
            optimizer,
            standardize,
            fit,
        },
    ))
}

pub(crate) fn apply(o: &Overrides, spec: &mut ModelSpec, t: &mut Training) -> Result<()> {
    if let Some(e) = o.epochs {
        t.fit.epochs = e;
    }
    if let Some(lr) = o.lr {
        t.optimizer.set_lr(lr);
    }
    if let Some(b) = o.batch_size {
        t.fit.batch_size = b;
    }
    if let Some(s) = o.seed {
        t.fit.seed = s;
        spec.seed = Some(s);
    }
    Ok(())
}

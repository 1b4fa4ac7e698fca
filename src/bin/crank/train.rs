//! `crank train` and `crank resume`.

use crate::config::{Overrides, Training, apply, read_config};
use crate::files::{save, to_stdout, write};
use crate::prepare::{Kind, Prepared, fit_preprocessing, prepare, preprocessing_of, read_prepared};
use crate::report::{Progress, last_metrics, plot};
use crate::{Result, ctx, job};
use crank::collective::Communicator;
use crank::data::Table;
use crank::io::Checkpoint;
use crank::metrics::Metric;
use crank::train::{Callback, Dataset, FitOptions, FitState, History};
use crank::{Loss, Sequential};
use std::path::{Path, PathBuf};

/// Train the model described in a YAML or JSON file.
#[derive(clap::Args)]
pub struct TrainArgs {
    /// The model file: layers and a `training` section.
    pub config: PathBuf,
    /// The label column (default: the last).
    #[arg(long)]
    pub label: Option<String>,
    /// Draw loss and accuracy curves as SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Continue a training run from its checkpoint, as if it had never stopped.
///
/// The weights come out bitwise those of the uninterrupted run. `--epochs N` trains N more
/// epochs; without it, the run goes on to the model file's `epochs`.
#[derive(clap::Args)]
pub struct ResumeArgs {
    /// The checkpoint `train --checkpoint` saved.
    #[arg(value_name = "CHECKPOINT")]
    pub from: PathBuf,
    /// The model file whose `training` section the run follows.
    #[arg(long)]
    pub config: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
}

/// What `train` and `resume` both take: the data, where to save and what else to write.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Training data: CSV with a header, NumPy `.npz`, or IDX images
    /// (`*-images-idx3-ubyte[.gz]`). Under `mpirun`, `{rank}` in the path gives each rank a
    /// file of its own, a shard of the data (`--data 'train-{rank}.csv'`).
    #[arg(long)]
    pub data: PathBuf,
    /// Validation data, in the same form (`{rank}` too).
    #[arg(long, conflicts_with = "val_fraction")]
    pub val: Option<PathBuf>,
    /// Hold out this fraction of the training data for validation.
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Where to save the trained model (.crank/.bin, .json or .safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Also save a checkpoint to resume the run from (it may be the one resumed from).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Write per-epoch metrics as CSV.
    #[arg(long)]
    pub history: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: Overrides,
}

/// Trains a model from its model file and saves it; on every rank of an MPI job, each reading
/// the data, with rank 0 alone writing and printing.
pub(crate) fn train(args: TrainArgs, comm: &dyn Communicator) -> Result<()> {
    let TrainArgs {
        config,
        label,
        plot: plot_path,
        run,
    } = args;
    let (mut model, training, train) = set_up(&config, label, &run, comm)?;
    let mut optimizer = ctx(training.optimizer.build())?;
    let mut state = FitState::new(&training.fit);
    let h = fit_and_save(
        &mut model,
        &training.loss,
        &training.fit,
        &train,
        optimizer.as_mut(),
        &mut state,
        &run,
        comm,
    )?;
    if comm.rank() != 0 {
        return Ok(());
    }
    if let Some(p) = plot_path {
        plot(&h, &p)?;
    }
    to_stdout(&format!(
        "trained {} epochs; {}; saved {}\n",
        h.epochs.len(),
        last_metrics(&h),
        run.out.display()
    ))
}

/// Reads the model file and the data for `train` on every rank: the model with its
/// preprocessing, the training settings and the prepared training data. With `{rank}` in the
/// data's path each rank reads its own shard, and the preprocessing is fitted on all of them.
fn set_up(
    config: &Path,
    label: Option<String>,
    run: &RunArgs,
    comm: &dyn Communicator,
) -> Result<(Sequential<f32>, Training, Prepared)> {
    let read = || {
        let (mut spec, mut training) = read_config(config)?;
        apply(&run.overrides, &mut spec, &mut training)?;
        if run.val_fraction.is_some() {
            training.fit.validation_fraction = run.val_fraction;
        }
        let (data, sharded) = job::rank_path(&run.data, comm);
        training.fit.sharded = sharded;
        let table = ctx(Table::read(&data, label.as_deref()))?;
        Ok((spec, training, data, table))
    };
    let (spec, training, data, table) = job::agree(comm, read())?;
    let shards = training.fit.sharded.then_some(comm);
    let model = fit_preprocessing(&table, training.standardize, &training.loss, &data, shards)
        .and_then(|pre| model_for(config, &spec, &training, &data, &table, pre));
    let (model, train) = job::agree(comm, model)?;
    Ok((model, training, train))
}

/// The model of `spec` with preprocessing `pre`, checked against the data it trains on, and
/// that data prepared.
fn model_for(
    config: &Path,
    spec: &crank::spec::ModelSpec,
    training: &Training,
    data: &Path,
    table: &Table,
    pre: crank::spec::Preprocessing,
) -> Result<(Sequential<f32>, Prepared)> {
    let mut model = ctx(Sequential::<f32>::from_spec(spec))?;
    if model.input_size() != table.features.ncols() {
        return Err(format!(
            "{}: the first layer takes {} inputs, but {} has {} feature columns",
            config.display(),
            model.input_size(),
            data.display(),
            table.features.ncols()
        ));
    }
    match (&pre.classes, &training.loss) {
        (Some(c), Loss::BinaryCrossEntropy) if model.output_size() != 1 => {
            return Err(format!(
                "{}: BinaryCrossEntropy trains one output, the logit of class {:?}, but \
                 the last layer has {} (for one output per class use \
                 SoftmaxCrossEntropy)",
                config.display(),
                c[1],
                model.output_size()
            ));
        }
        (Some(c), Loss::SoftmaxCrossEntropy) if c.len() != model.output_size() => {
            return Err(format!(
                "{}: the last layer has {} outputs, but {} has {} classes",
                config.display(),
                model.output_size(),
                data.display(),
                c.len()
            ));
        }
        _ => {}
    }
    ctx(model.set_preprocessing(Some(pre.clone())))?;
    let train = prepare(table, &pre, data, true)?;
    Ok((model, train))
}

/// Continues a run from its checkpoint (on any number of ranks).
pub(crate) fn resume(args: ResumeArgs, comm: &dyn Communicator) -> Result<()> {
    let ResumeArgs { from, config, run } = args;
    let set_up = job::agree(comm, set_up_resume(&from, &config, &run, comm))?;
    let (mut model, training, fit, mut state, train, ckpt_optimizer) = match set_up {
        Ok(resumed) => resumed,
        Err(_) if comm.rank() != 0 => return Ok(()),
        Err(done) => {
            return to_stdout(&format!(
                "the run stopped early after epoch {done} (early stopping); nothing to resume\n"
            ));
        }
    };
    let done = state.epoch();
    let mut optimizer = ctx(training.optimizer.build())?;
    ctx(optimizer.load_state(&ckpt_optimizer)).map_err(|e| format!("{}: {e}", from.display()))?;
    if let Some(lr) = run.overrides.lr {
        optimizer.set_learning_rate(lr);
    }
    let h = fit_and_save(
        &mut model,
        &training.loss,
        &fit,
        &train,
        optimizer.as_mut(),
        &mut state,
        &run,
        comm,
    )?;
    if comm.rank() != 0 {
        return Ok(());
    }
    to_stdout(&format!(
        "resumed after epoch {done}; trained {} more epochs (to epoch {}, step {}); {}; \
         saved {}\n",
        h.epochs.len(),
        state.epoch(),
        model.steps(),
        last_metrics(&h),
        run.out.display()
    ))
}

/// What `resume` trains from.
type Resumed = (
    Sequential<f32>,
    Training,
    FitOptions,
    FitState<f32>,
    Prepared,
    crank::OptimizerState,
);

/// Reads the checkpoint, the model file and the data for `resume`; `Err(epochs)` when early
/// stopping ended the run after that many epochs.
fn set_up_resume(
    from: &Path,
    config: &Path,
    run: &RunArgs,
    comm: &dyn Communicator,
) -> Result<std::result::Result<Resumed, usize>> {
    let (mut spec, mut training) = read_config(config)?;
    apply(&run.overrides, &mut spec, &mut training)?;
    if run.val_fraction.is_some() {
        training.fit.validation_fraction = run.val_fraction;
    }
    let ckpt = ctx(Checkpoint::<f32>::load(from))?;
    let model = ckpt.model;
    let state = ckpt.fit.ok_or_else(|| {
        format!(
            "{}: this checkpoint holds no training run to resume (it was not saved by \
             `crank train --checkpoint`)",
            from.display()
        )
    })?;
    let done = state.epoch();
    // `--epochs N` trains N more; without it, the run goes on to the model file's total.
    let mut fit = training.fit.clone();
    fit.epochs = match run.overrides.epochs {
        Some(0) => return Err("--epochs 0: no epochs to train".into()),
        Some(more) => done.saturating_add(more),
        None => fit.epochs,
    };
    if state.stopped() {
        return Ok(Err(done));
    }
    if fit.epochs <= done {
        return Err(format!(
            "{}: the run has done {done} epochs, all that {} asks for; pass --epochs N \
             to train N more",
            from.display(),
            config.display()
        ));
    }
    let pre = preprocessing_of(&model);
    let (data, sharded) = job::rank_path(&run.data, comm);
    fit.sharded = sharded;
    let train = read_prepared(&data, pre.label.as_deref(), &pre)?;
    Ok(Ok((model, training, fit, state, train, ckpt.optimizer)))
}

/// Trains `model` on from `state` to `fit.epochs` epochs in all, validating on `run.val` (read
/// as the model's preprocessing says) or a held-out fraction, one epoch at a time so that rank 0
/// saves the checkpoint `run` asks for after each; then rank 0 saves the model and the history.
#[allow(clippy::too_many_arguments)]
fn fit_and_save(
    model: &mut Sequential<f32>,
    loss: &Loss,
    fit: &FitOptions,
    train: &Prepared,
    optimizer: &mut dyn crank::Optimizer,
    state: &mut FitState<f32>,
    run: &RunArgs,
    comm: &dyn Communicator,
) -> Result<History> {
    let pre = preprocessing_of(model);
    let kind = Kind::of(&pre, model.output_size());
    let val = run
        .val
        .as_deref()
        .map(|p| read_prepared(&job::rank_path(p, comm).0, pre.label.as_deref(), &pre))
        .transpose();
    let val = job::agree(comm, val)?;
    let mut fit = fit.clone();
    if kind != Kind::Regression && fit.metrics.is_empty() {
        fit.metrics.push(Metric::Accuracy);
    }
    let train_set = ctx(Dataset::new(train.x.view(), train.target(kind)))?;
    let (train_set, val_set) = match (&val, fit.validation_fraction) {
        (Some(v), _) => (
            train_set,
            Some(ctx(Dataset::new(v.x.view(), v.target(kind)))?),
        ),
        (None, Some(f)) => ctx(train_set.holdout(f))?,
        (None, None) => (train_set, None),
    };
    fit.validation_fraction = None;
    if val_set.is_none()
        && let Some(es) = &mut fit.early_stopping
        && es.monitor.starts_with("val_")
    {
        es.monitor = es.monitor.trim_start_matches("val_").to_string();
    }
    let mut progress = Progress::new(fit.epochs, fit.batch_size);
    let callback: &mut dyn Callback = if comm.rank() == 0 {
        &mut progress
    } else {
        &mut ()
    };
    let mut history = History::default();
    // One epoch per call: `fit_distributed` continues from `state` bitwise as one call would.
    while state.epoch() < fit.epochs && !state.stopped() {
        let upto = FitOptions {
            epochs: state.epoch() + 1,
            ..fit.clone()
        };
        let h = ctx(model.fit_distributed(
            comm, train_set, val_set, loss, optimizer, &upto, callback, state,
        ))?;
        history.epochs.extend(h.epochs);
        history.best_epoch = h.best_epoch;
        if comm.rank() == 0
            && let Some(p) = &run.checkpoint
        {
            ctx(Checkpoint::save_fit(p, model, optimizer, state))?;
        }
    }
    if comm.rank() == 0 {
        save(model, &run.out)?;
        if let Some(p) = &run.history {
            write(p, &history.to_csv())?;
        }
    }
    Ok(history)
}

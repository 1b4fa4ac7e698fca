//! The training loop: [`Sequential::fit`] with validation, metrics, schedules, clipping, early
//! stopping, callbacks and a [`History`].

mod distributed;

use distributed::Layout;

use crate::collective::{Communicator, SingleProcess};
use crate::data::Batcher;
pub use crate::data::Dataset;
use crate::loss::{Loss, Target};
use crate::metrics::{Metric, Tally};
use crate::model::{LayerTensors, Workspace};
use crate::optim::{Optimizer, Schedule, Scheduler};
use crate::{Error, Result, Scalar, Sequential, threads};
use ndarray::ArrayView2;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// Settings of [`Sequential::fit`]. Serializable, so a training file can hold them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FitOptions {
    /// Passes over the training data (default 10).
    pub epochs: usize,
    /// Samples per step (default 32); the last batch of an epoch may be smaller.
    pub batch_size: usize,
    /// Shuffle the training samples every epoch (default true).
    pub shuffle: bool,
    /// Seed of the shuffling generator (default 0).
    pub seed: u64,
    /// Hold out this fraction of the training data, taken from its end before any shuffling
    /// (as Keras's `validation_split`), when no validation set is given.
    pub validation_fraction: Option<f64>,
    /// Metrics to report besides the loss, on the training batches and the validation set.
    pub metrics: Vec<Metric>,
    /// Stop when a monitored value stops improving.
    pub early_stopping: Option<EarlyStopping>,
    /// How the learning rate changes per epoch.
    pub schedule: Option<Schedule>,
    /// Clip the gradients' global L2 norm to this value before each update.
    pub clip_norm: Option<f64>,
    /// Clip every gradient element to `[-v, v]` before each update.
    pub clip_value: Option<f64>,
    /// In a data-parallel run ([`Sequential::fit_distributed`]), each rank passes its own
    /// part of the data (a shard) instead of the whole data set (default false). See there.
    /// Not part of a training file: it says how the data was passed, which the file cannot
    /// know (`crank train` sets it from `{rank}` in the data's path).
    #[serde(skip)]
    pub sharded: bool,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            epochs: 10,
            batch_size: 32,
            shuffle: true,
            seed: 0,
            validation_fraction: None,
            metrics: Vec::new(),
            early_stopping: None,
            schedule: None,
            clip_norm: None,
            clip_value: None,
            sharded: false,
        }
    }
}

/// Stops training when `monitor` has not improved by `min_delta` for `patience` epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EarlyStopping {
    /// The history column to watch (default `"val_loss"`); accuracies and R² count as better
    /// when higher, everything else when lower.
    pub monitor: String,
    /// Epochs without improvement before stopping (default 5).
    pub patience: usize,
    /// The smallest change that counts as an improvement (default 0).
    pub min_delta: f64,
    /// Put back the weights of the best epoch when stopping (default true).
    pub restore_best_weights: bool,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        EarlyStopping {
            monitor: "val_loss".into(),
            patience: 5,
            min_delta: 0.0,
            restore_best_weights: true,
        }
    }
}

impl EarlyStopping {
    /// Whether `value` of the monitored column improves on `best` by more than `min_delta`
    /// (higher is better for accuracies and R², lower for everything else); any value improves
    /// on none.
    pub fn improves(&self, value: f64, best: Option<f64>) -> bool {
        let sign = if Metric::higher_is_better(&self.monitor) {
            -1.0
        } else {
            1.0
        };
        best.is_none_or(|b| sign * value < sign * b - self.min_delta)
    }
}

/// One epoch's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Epoch {
    /// 1-based epoch number.
    pub epoch: usize,
    /// The learning rate used in the epoch.
    pub lr: f64,
    /// Wall-clock seconds the epoch took (training and validation).
    pub seconds: f64,
    /// `loss` and the metrics on the training batches; `val_loss`, `val_<metric>` on the
    /// validation set.
    pub metrics: BTreeMap<String, f64>,
}

/// What [`Sequential::fit`] did, epoch by epoch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The epochs run.
    pub epochs: Vec<Epoch>,
    /// The epoch whose weights the model ends with when early stopping restored them.
    pub best_epoch: Option<usize>,
}

impl History {
    /// The history as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a History always serializes")
    }

    /// The history as CSV: `epoch,lr,seconds` and then one column per metric, sorted.
    pub fn to_csv(&self) -> String {
        let mut columns: Vec<&String> = self.epochs.iter().flat_map(|e| e.metrics.keys()).collect();
        columns.sort();
        columns.dedup();
        let mut out = String::from("epoch,lr,seconds");
        for c in &columns {
            out.push(',');
            out.push_str(c);
        }
        out.push('\n');
        for e in &self.epochs {
            out.push_str(&format!("{},{},{}", e.epoch, e.lr, e.seconds));
            for c in &columns {
                out.push(',');
                if let Some(v) = e.metrics.get(*c) {
                    out.push_str(&v.to_string());
                }
            }
            out.push('\n');
        }
        out
    }

    /// The values of one column, epoch by epoch (`NaN` where an epoch lacks it).
    pub fn column(&self, name: &str) -> Vec<f64> {
        self.epochs
            .iter()
            .map(|e| e.metrics.get(name).copied().unwrap_or(f64::NAN))
            .collect()
    }
}

/// Where a training run stands between epochs: the epochs done, the shuffling generator, the
/// learning-rate schedule and early stopping's progress. [`Sequential::fit_from`] continues a
/// run from it as if it had never stopped; a [`Checkpoint`](crate::io::Checkpoint) saves it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct FitState<F: Scalar> {
    epoch: usize,
    rng: Xoshiro256PlusPlus,
    scheduler: Option<Scheduler>,
    best: Option<Best<F>>,
    waited: usize,
    stopped: bool,
    /// The last epoch's weights, kept when early stopping put the best epoch's in the model.
    last: Option<LayerTensors<F>>,
}

/// The best monitored value so far, its epoch and (when restoring) its weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "F: Scalar")]
struct Best<F> {
    value: f64,
    epoch: usize,
    weights: LayerTensors<F>,
}

impl<F: Scalar> FitState<F> {
    /// The state of a run that has not started: no epochs, the generator seeded with
    /// `options.seed`.
    pub fn new(options: &FitOptions) -> Self {
        FitState {
            epoch: 0,
            rng: Xoshiro256PlusPlus::seed_from_u64(options.seed),
            scheduler: None,
            best: None,
            waited: 0,
            stopped: false,
            last: None,
        }
    }

    /// The epochs completed.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// Whether early stopping ended the run.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Takes the monitored `value` of `epoch` and says whether the run stops there: when it has
    /// not improved for `patience` epochs. An improvement keeps `weights()` when early stopping
    /// restores the best weights.
    fn watch(
        &mut self,
        es: &EarlyStopping,
        value: f64,
        epoch: usize,
        weights: impl FnOnce() -> LayerTensors<F>,
    ) -> bool {
        if es.improves(value, self.best.as_ref().map(|b| b.value)) {
            let weights = if es.restore_best_weights {
                weights()
            } else {
                Vec::new()
            };
            self.best = Some(Best {
                value,
                epoch,
                weights,
            });
            self.waited = 0;
        } else {
            self.waited = self.waited.saturating_add(1);
            self.stopped = self.waited >= es.patience;
        }
        self.stopped
    }

    /// Checks that the weights the state keeps fit `model`'s layers.
    pub(crate) fn check(&self, model: &Sequential<F>) -> Result<()> {
        let spec = model.to_spec();
        let kept = self
            .best
            .iter()
            .map(|b| &b.weights)
            .filter(|w| !w.is_empty());
        for weights in kept.chain(&self.last) {
            crate::model::check_tensors(&spec, weights)?;
        }
        Ok(())
    }

    /// The same state with its weights converted to `G` (f64 to f32 rounds).
    pub(crate) fn cast<G: Scalar>(self) -> FitState<G> {
        let cast = |t: LayerTensors<F>| -> LayerTensors<G> {
            t.into_iter()
                .map(|l| {
                    l.into_iter()
                        .map(|v| v.into_iter().map(|x| G::of(x.as_f64())).collect())
                        .collect()
                })
                .collect()
        };
        FitState {
            epoch: self.epoch,
            rng: self.rng,
            scheduler: self.scheduler,
            best: self.best.map(|b| Best {
                value: b.value,
                epoch: b.epoch,
                weights: cast(b.weights),
            }),
            waited: self.waited,
            stopped: self.stopped,
            last: self.last.map(cast),
        }
    }
}

/// Hooks that [`Sequential::fit_with`] calls as training goes (a progress bar, logging).
pub trait Callback {
    /// After each training step.
    fn on_batch_end(&mut self, _epoch: usize, _batch: usize, _batches: usize, _loss: f64) {}

    /// After each epoch, with its record.
    fn on_epoch_end(&mut self, _record: &Epoch) {}
}

/// No callbacks.
impl Callback for () {}

impl<F: Scalar> Sequential<F> {
    /// Trains on `x` and `y` as `options` say, holding out `options.validation_fraction` for
    /// validation. See [`fit_with`](Self::fit_with).
    ///
    /// ```
    /// use crank::{Activation, Adam, Loss, Sequential};
    /// use crank::train::{EarlyStopping, FitOptions};
    /// use crank::metrics::Metric;
    /// use ndarray::Array2;
    ///
    /// let x = Array2::from_shape_fn((200, 2), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 5.0 - 1.0);
    /// let y: Vec<usize> = x.rows().into_iter().map(|r| (r[0] * r[1] > 0.0) as usize).collect();
    /// let mut model = Sequential::<f32>::builder(2)
    ///     .dense(16, Activation::Relu)
    ///     .dense(2, Activation::Identity)
    ///     .build()?;
    /// let history = model.fit(x.view(), &y, &Loss::SoftmaxCrossEntropy, &mut Adam::new(0.01)?, &FitOptions {
    ///     epochs: 50,
    ///     validation_fraction: Some(0.2),
    ///     metrics: vec![Metric::Accuracy],
    ///     early_stopping: Some(EarlyStopping { patience: 10, ..Default::default() }),
    ///     ..Default::default()
    /// })?;
    /// assert!(history.column("val_accuracy").last().unwrap() > &0.8);
    /// # Ok::<(), crank::Error>(())
    /// ```
    pub fn fit<'d>(
        &mut self,
        x: ArrayView2<'d, F>,
        y: impl Into<Target<'d, F>>,
        loss: &Loss,
        optimizer: &mut dyn Optimizer,
        options: &FitOptions,
    ) -> Result<History> {
        let data = Dataset::new(x, y)?;
        let (train, validation) = match options.validation_fraction {
            Some(f) => data.holdout(f)?,
            None => (data, None),
        };
        self.fit_with(train, validation, loss, optimizer, options, &mut ())
    }

    /// Trains for `options.epochs` epochs of shuffled mini-batches, evaluating `validation`
    /// after each epoch, and returns the [`History`]: [`fit_from`](Self::fit_from) from a new
    /// [`FitState`].
    ///
    /// A non-finite loss or gradient stops training with [`Error::Diverged`] naming the epoch
    /// and batch; the model keeps the last finite weights. With early stopping and
    /// `restore_best_weights`, the model ends with the weights of the best epoch.
    pub fn fit_with(
        &mut self,
        train: Dataset<'_, F>,
        validation: Option<Dataset<'_, F>>,
        loss: &Loss,
        optimizer: &mut dyn Optimizer,
        options: &FitOptions,
        callback: &mut dyn Callback,
    ) -> Result<History> {
        let mut state = FitState::new(options);
        self.fit_from(
            train, validation, loss, optimizer, options, callback, &mut state,
        )
    }

    /// Continues the run that `state` describes up to `options.epochs` epochs in all (Keras's
    /// `initial_epoch`), and leaves in `state` where it ended. Training 4 epochs, saving the
    /// model, optimizer and state in a [`Checkpoint`](crate::io::Checkpoint), loading them and
    /// training to 8 gives bitwise the weights of 8 epochs in one run (same data, options and
    /// thread count): the shuffling generator, the schedule and early stopping's progress
    /// continue where they were. The [`History`] holds the new epochs, numbered on from
    /// `state.epoch()`. A run that early stopping ended stays ended: nothing is trained.
    #[allow(clippy::too_many_arguments)]
    pub fn fit_from(
        &mut self,
        train: Dataset<'_, F>,
        validation: Option<Dataset<'_, F>>,
        loss: &Loss,
        optimizer: &mut dyn Optimizer,
        options: &FitOptions,
        callback: &mut dyn Callback,
        state: &mut FitState<F>,
    ) -> Result<History> {
        self.fit_distributed(
            &SingleProcess,
            train,
            validation,
            loss,
            optimizer,
            options,
            callback,
            state,
        )
    }

    /// [`fit_from`](Self::fit_from) as one rank of a data-parallel run over `comm` (Horovod's
    /// and PyTorch DDP's scheme): every rank calls it with the same data, model description,
    /// optimizer, options and state, and ends with the same weights and [`History`].
    ///
    /// - Rank 0's weights are broadcast to every rank first.
    /// - The epoch's shuffle comes from the shared seed, so every rank knows the global batches.
    ///   Each global batch of `options.batch_size` samples is split among the ranks in contiguous
    ///   shares ([`collective::share`](crate::collective::share)); each rank computes the
    ///   gradients of its share, and their sum, weighted by each share's size, is the gradient
    ///   of the global batch's mean loss. Every rank then applies the same update. So a global
    ///   batch holds the same samples whatever the number of ranks, and the weights agree with
    ///   one process's to rounding (the sums are taken in another order).
    /// - Dropout draws each sample's mask from its place in the global batch: the same masks as
    ///   one process. BatchNorm normalises each share with the share's own statistics (PyTorch
    ///   DDP without `SyncBatchNorm`); the running statistics are averaged over the ranks after
    ///   every step, weighted by share, so they stay identical on every rank.
    /// - The loss, metrics and validation (split among the ranks) are summed over the ranks, so
    ///   early stopping and schedules decide the same everywhere. After every epoch the ranks
    ///   check that their weights are still bitwise identical.
    /// - An error on one rank (a non-finite loss, say) ends the run on every rank: that rank
    ///   returns its error, the others [`Error::Rank`] naming it.
    ///
    /// - With [`FitOptions::sharded`], each rank passes its own shard of the data (its own
    ///   training and, if any, validation samples; shards may differ in size) instead of the
    ///   whole data set, for data too big for one machine. Each rank shuffles its shard with a
    ///   generator of its own (from the shared one: [`Xoshiro256PlusPlus::jump`]ed once per
    ///   rank), and each global batch of `options.batch_size` is every rank's next local batch
    ///   of its share of that size, in rank order; a rank whose shard is used up takes no
    ///   share until the epoch ends, when the largest shard is. Validation is each rank's whole
    ///   validation shard, reduced. [`Standardizer::fit_shared`](crate::data::Standardizer::fit_shared)
    ///   fits one standardisation over all the shards. The weights are reproducible for a seed, a number of ranks
    ///   and the same shards; a checkpoint resumes with the same shards on the same number of
    ///   ranks.
    ///
    /// With one rank this is `fit_from` (plain SGD folds its update into the products there;
    /// with several ranks the gradients are reduced first, so it cannot).
    #[allow(clippy::too_many_arguments)]
    pub fn fit_distributed(
        &mut self,
        comm: &dyn Communicator,
        train: Dataset<'_, F>,
        validation: Option<Dataset<'_, F>>,
        loss: &Loss,
        optimizer: &mut dyn Optimizer,
        options: &FitOptions,
        callback: &mut dyn Callback,
        state: &mut FitState<F>,
    ) -> Result<History> {
        let n = train.x.nrows();
        let usable = if n == 0 || options.batch_size == 0 {
            Err(Error::Config(
                "fit needs at least one sample and a batch size of at least 1".into(),
            ))
        } else {
            match &options.early_stopping {
                Some(es) if es.monitor.starts_with("val_") && validation.is_none() => {
                    Err(Error::Config(format!(
                        "early stopping monitors {} but there is no validation set",
                        es.monitor
                    )))
                }
                _ => Ok(()),
            }
        };
        // Every rank stops here if one cannot start.
        crate::collective::agree(comm, usable)?;
        if state.stopped {
            return Ok(History::default());
        }
        if let Some(last) = state.last.take() {
            // The model holds the best epoch's weights; the run goes on from the last ones.
            self.restore_tensors(last)?;
        }
        let mut layout = if comm.size() > 1 {
            self.join_ranks(comm, &train, validation.as_ref(), options.sharded)?;
            Layout::new(comm, n, options)?
        } else {
            Layout::Replicated
        };
        let same_schedule = match (&state.scheduler, &options.schedule) {
            (Some(s), Some(o)) => s.schedule() == o,
            (None, None) => true,
            _ => false,
        };
        if !same_schedule {
            state.scheduler = match &options.schedule {
                Some(s) => Some(Scheduler::new(s.clone(), optimizer.learning_rate())?),
                None => None,
            };
        }
        let first = state.epoch.saturating_add(1);
        // The run's shuffling generator goes into the batcher and back into the state.
        let mut batcher = Batcher::new(n, layout.local_batch(options, comm.rank()), 0)?;
        batcher.set_rng(state.rng.clone());
        let mut ws = Workspace::new();
        let mut history = History::default();

        for epoch in first..=options.epochs {
            let start = Instant::now();
            // A schedule sets the first epoch's rate (a warm-up starts low).
            if let Some(s) = &state.scheduler
                && epoch == first
                && (epoch == 1 || !same_schedule)
            {
                optimizer.set_learning_rate(s.lr());
            }
            let lr = optimizer.learning_rate();
            if options.shuffle {
                layout.shuffle(&mut batcher, &mut state.rng, comm.rank());
            }
            let (mean_loss, tally) = if comm.size() == 1 {
                self.train_epoch(
                    &train,
                    &mut batcher,
                    loss,
                    optimizer,
                    options,
                    epoch,
                    callback,
                )?
            } else {
                self.train_epoch_shared(
                    comm,
                    &mut layout,
                    &train,
                    &mut batcher,
                    loss,
                    optimizer,
                    options,
                    epoch,
                    callback,
                )?
            };
            if matches!(layout, Layout::Replicated) {
                state.rng = batcher.rng().clone();
            }
            let metrics = self.epoch_metrics(
                comm,
                mean_loss,
                tally,
                validation.as_ref(),
                loss,
                options,
                &mut ws,
            )?;
            if comm.size() > 1 {
                self.check_same_weights(comm, epoch)?;
            }
            let record = Epoch {
                epoch,
                lr,
                seconds: start.elapsed().as_secs_f64(),
                metrics,
            };
            log::info!(
                "epoch {epoch}/{}: {}",
                options.epochs,
                record
                    .metrics
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.5}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            callback.on_epoch_end(&record);
            let monitored = options.early_stopping.as_ref().map(|es| {
                record.metrics.get(&es.monitor).copied().ok_or_else(|| {
                    Error::Config(format!(
                        "early stopping monitors {}, which the history does not have",
                        es.monitor
                    ))
                })
            });
            let plateau_metric = record
                .metrics
                .get("val_loss")
                .or(record.metrics.get("loss"))
                .copied();
            history.epochs.push(record);
            state.epoch = epoch;
            if let Some(s) = &mut state.scheduler {
                optimizer.set_learning_rate(s.step(plateau_metric)?);
            }

            if let (Some(es), Some(value)) = (&options.early_stopping, monitored)
                && state.watch(es, value?, epoch, || self.tensors())
            {
                log::info!(
                    "early stopping after epoch {epoch}: {} has not improved for {} epochs",
                    es.monitor,
                    state.waited
                );
                break;
            }
        }
        if let (Some(es), Some(best)) = (&options.early_stopping, &state.best)
            && es.restore_best_weights
            && !best.weights.is_empty()
        {
            if best.epoch != state.epoch {
                state.last = Some(self.tensors());
                self.restore_tensors(best.weights.clone())?;
            }
            history.best_epoch = Some(best.epoch);
        }
        Ok(history)
    }

    /// One epoch of the batcher's mini-batches: the mean loss and the metric sums over
    /// the training batches. A non-finite loss or gradient is [`Error::Diverged`] naming the
    /// epoch and batch.
    #[allow(clippy::too_many_arguments)]
    fn train_epoch(
        &mut self,
        train: &Dataset<'_, F>,
        batcher: &mut Batcher<F>,
        loss: &Loss,
        optimizer: &mut dyn Optimizer,
        options: &FitOptions,
        epoch: usize,
        callback: &mut dyn Callback,
    ) -> Result<(f64, Tally)> {
        let n_batches = batcher.batches();
        let mut tally = Tally::new(&options.metrics);
        let mut loss_sum = 0.0;
        for b in 0..n_batches {
            let (x, y) = batcher.gather(train, b)?;
            let rows = x.nrows();
            // One move onto rayon's pool per batch, not one per call below.
            let parallel = self.forks(rows);
            let step = threads::on_pool(parallel, || {
                let value = if options.clip_value.is_none() && options.clip_norm.is_none() {
                    // train_step's path: plain SGD folds its update into the products.
                    self.step(x, y, loss, optimizer)?
                } else {
                    let value = self.compute_gradients(x, y, loss)?;
                    self.clip_and_update(options, optimizer)?;
                    value
                };
                // The outputs are the forward pass's: an update does not change them.
                tally.add(
                    self.layers().last().expect("a model has layers").output(),
                    &y,
                );
                Ok(value)
            });
            let value: F = step.map_err(|e| diverged(e, epoch, b + 1))?;
            loss_sum += value.as_f64() * rows as f64;
            callback.on_batch_end(epoch, b + 1, n_batches, value.as_f64());
        }
        Ok((loss_sum / train.x.nrows() as f64, tally))
    }

    /// Clips the gradients as `options` say and applies them with `optimizer`, on the calling
    /// thread.
    fn clip_and_update(
        &mut self,
        options: &FitOptions,
        optimizer: &mut dyn Optimizer,
    ) -> Result<()> {
        if let Some(c) = options.clip_value {
            self.clip_grad_value(c)?;
        }
        if let Some(c) = options.clip_norm {
            self.clip_grad_norm(c)?;
        }
        self.update(optimizer, None)
    }

    /// An epoch's history columns: `loss` and the metrics on the training batches, `val_loss`
    /// and `val_<metric>` on the validation set.
    ///
    /// In a data-parallel run, the training tally is summed over the ranks and each rank
    /// evaluates its share of the validation set.
    #[allow(clippy::too_many_arguments)]
    fn epoch_metrics(
        &self,
        comm: &dyn Communicator,
        mean_loss: f64,
        mut tally: Tally,
        validation: Option<&Dataset<'_, F>>,
        loss: &Loss,
        options: &FitOptions,
        ws: &mut Workspace<F>,
    ) -> Result<BTreeMap<String, f64>> {
        let outputs = self.output_size();
        tally.reduce(comm, outputs)?;
        let mut metrics = BTreeMap::new();
        metrics.insert("loss".to_string(), mean_loss);
        for m in &options.metrics {
            metrics.insert(m.name(), tally.value(m)?);
        }
        if let Some(val) = validation {
            let (val_loss, tally) = if comm.size() == 1 {
                self.evaluate_tally(val, loss, &options.metrics, ws)?
            } else {
                let sharded = options.sharded;
                self.evaluate_shared(comm, val, sharded, loss, &options.metrics, ws)?
            };
            metrics.insert("val_loss".to_string(), val_loss);
            for m in &options.metrics {
                metrics.insert(format!("val_{}", m.name()), tally.value(m)?);
            }
        }
        Ok(metrics)
    }

    /// The mean loss and the metric sums over a data set, predicted in chunks of 1,024.
    fn evaluate_tally(
        &self,
        data: &Dataset<'_, F>,
        loss: &Loss,
        metrics: &[Metric],
        ws: &mut Workspace<F>,
    ) -> Result<(f64, Tally)> {
        let mut tally = Tally::new(metrics);
        let mut total = 0.0;
        let n = data.x.nrows();
        for start in (0..n).step_by(1024) {
            let end = (start + 1024).min(n);
            let part = data.split_at(start).1.split_at(end - start).0;
            let out = self.predict_with(part.x, ws)?;
            total += loss.loss(out, part.y)?.as_f64() * (end - start) as f64;
            tally.add(out, &part.y);
        }
        Ok((total / n.max(1) as f64, tally))
    }

    /// Evaluates `metrics` and the loss on a data set: `{"loss": …, "<metric>": …}`.
    pub fn evaluate_metrics<'d>(
        &self,
        x: ArrayView2<'d, F>,
        y: impl Into<Target<'d, F>>,
        loss: &Loss,
        metrics: &[Metric],
    ) -> Result<BTreeMap<String, f64>> {
        let data = Dataset::new(x, y)?;
        let (value, tally) = self.evaluate_tally(&data, loss, metrics, &mut Workspace::new())?;
        let mut out = BTreeMap::from([("loss".to_string(), value)]);
        for m in metrics {
            out.insert(m.name(), tally.value(m)?);
        }
        Ok(out)
    }
}

/// A training step's error as `fit` reports it: a non-finite value becomes
/// [`Error::Diverged`] naming the epoch and the 1-based batch.
fn diverged(e: Error, epoch: usize, batch: usize) -> Error {
    match e {
        e @ Error::NonFinite { .. } => Error::Diverged {
            epoch,
            batch,
            source: Box::new(e),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fit state's kept weights must fit the model they resume: the right ones pass; another
    /// architecture's, a short tensor or a NaN are errors naming the layer.
    #[test]
    fn kept_weights_are_checked_against_the_model() {
        let model = Sequential::<f32>::builder(3)
            .dense(4, crate::Activation::Relu)
            .dense(2, crate::Activation::Identity)
            .build()
            .unwrap();
        let mut state = FitState::<f32>::new(&FitOptions::default());
        state.last = Some(model.tensors());
        state.check(&model).unwrap();
        let other = Sequential::<f32>::builder(3)
            .dense(5, crate::Activation::Relu)
            .build()
            .unwrap();
        state.last = Some(other.tensors());
        assert!(
            state
                .check(&model)
                .unwrap_err()
                .to_string()
                .contains("layers described")
        );
        let mut short = model.tensors();
        short[1][0].pop();
        state.last = Some(short);
        let e = state.check(&model).unwrap_err().to_string();
        assert!(
            e.contains("layer 1 (dense_1)") && e.contains("weights hold 7 values"),
            "{e}"
        );
        let mut nan = model.tensors();
        nan[0][1][2] = f32::NAN;
        state.last = None;
        state.best = Some(Best {
            value: 0.5,
            epoch: 1,
            weights: nan,
        });
        let e = state.check(&model).unwrap_err().to_string();
        assert!(
            e.contains("layer 0 (dense_0)") && e.contains("biases value 2 is not finite"),
            "{e}"
        );
    }

    #[test]
    fn early_stopping_waits_patience_epochs_without_improvement() {
        let es = EarlyStopping {
            monitor: "val_loss".into(),
            patience: 2,
            min_delta: 0.01,
            restore_best_weights: true,
        };
        assert!(es.improves(5.0, None));
        assert!(es.improves(0.98, Some(1.0)));
        assert!(!es.improves(0.995, Some(1.0)), "within min_delta");
        let acc = EarlyStopping {
            monitor: "val_accuracy".into(),
            ..es.clone()
        };
        assert!(acc.improves(0.9, Some(0.8)) && !acc.improves(0.7, Some(0.8)));

        let mut state = FitState::<f32>::new(&FitOptions::default());
        let mut kept = 0;
        let mut weights = |epoch: usize| {
            kept += 1;
            vec![vec![vec![epoch as f32]]]
        };
        // Losses 1.0, 0.9 (better), 0.895 (not by min_delta), 0.95 (worse): stop at epoch 4.
        let stops: Vec<bool> = [1.0, 0.9, 0.895, 0.95]
            .iter()
            .enumerate()
            .map(|(i, &v)| state.watch(&es, v, i + 1, || weights(i + 1)))
            .collect();
        assert_eq!(stops, [false, false, false, true]);
        assert!(state.stopped());
        let best = state.best.as_ref().unwrap();
        assert_eq!((best.value, best.epoch), (0.9, 2));
        assert_eq!(best.weights, vec![vec![vec![2.0]]]);
        assert_eq!(kept, 2, "weights are taken only on an improvement");

        // Without restoring, no weights are taken.
        let mut state = FitState::<f32>::new(&FitOptions::default());
        let plain = EarlyStopping {
            restore_best_weights: false,
            ..es
        };
        assert!(!state.watch(&plain, 1.0, 1, || unreachable!("no weights kept")));
    }
}

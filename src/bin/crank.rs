//! The `crank` command: train, evaluate, predict, inspect and convert from a model file.

use clap::{Parser, Subcommand};
use crank::data::{Standardizer, Table};
use crank::io::{Checkpoint, Format};
use crank::metrics::Metric;
use crank::optim::OptimizerSpec;
use crank::spec::{ModelSpec, Preprocessing, read_document};
use crank::train::{Callback, Dataset, Epoch, FitOptions, FitState, History};
use crank::{Activation, Loss, Sequential, Target};
use ndarray::{Array2, ArrayView2};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "crank",
    version,
    about = "Train, evaluate and ship dense neural networks on the CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Training settings that override the model file's `training` section.
#[derive(clap::Args, Default)]
struct Overrides {
    /// Epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Batch size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Seed for the weights and the shuffling.
    #[arg(long)]
    seed: Option<u64>,
    /// Threads for training and prediction (kernels and GEMMs).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Train the model described in a YAML or JSON file.
    Train {
        /// The model file: layers and a `training` section.
        config: PathBuf,
        /// Training data: CSV with a header, or IDX images (`*-images-idx3-ubyte[.gz]`).
        #[arg(long)]
        data: PathBuf,
        /// Validation data, in the same form.
        #[arg(long, conflicts_with = "val_fraction")]
        val: Option<PathBuf>,
        /// Hold out this fraction of the training data for validation.
        #[arg(long)]
        val_fraction: Option<f64>,
        /// The label column (default: the last).
        #[arg(long)]
        label: Option<String>,
        /// Where to save the trained model (.crank/.bin, .json or .safetensors).
        #[arg(long)]
        out: PathBuf,
        /// Also save a checkpoint (model, optimizer state) to resume from.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Write per-epoch metrics as CSV.
        #[arg(long)]
        history: Option<PathBuf>,
        /// Draw loss and accuracy curves as SVG.
        #[arg(long)]
        plot: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Continue a training run from its checkpoint as if it had never stopped (bitwise the
    /// same weights): `--epochs N` trains N more epochs; without it, the run goes on to the
    /// model file's `epochs`.
    Resume {
        /// The checkpoint `train --checkpoint` saved.
        #[arg(value_name = "CHECKPOINT")]
        from: PathBuf,
        /// The model file whose `training` section to use.
        #[arg(long)]
        config: PathBuf,
        /// Training data.
        #[arg(long)]
        data: PathBuf,
        /// Validation data.
        #[arg(long, conflicts_with = "val_fraction")]
        val: Option<PathBuf>,
        /// Hold out this fraction of the training data for validation (as when training).
        #[arg(long)]
        val_fraction: Option<f64>,
        /// Where to save the model.
        #[arg(long)]
        out: PathBuf,
        /// Save a checkpoint at the end, to resume from again (it may be the one resumed from).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Write per-epoch metrics as CSV.
        #[arg(long)]
        history: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Print a model's loss and metrics on a data set: accuracy for classifiers, MSE, MAE
    /// and R² for regressions.
    Evaluate {
        /// The model.
        model: PathBuf,
        /// The data, with labels.
        #[arg(long)]
        data: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The architecture (a model file in YAML or JSON) of a safetensors file that lacks
        /// crank's, as PyTorch's `save_file(model.state_dict(), ...)` writes.
        #[arg(long)]
        spec: Option<PathBuf>,
    },
    /// Write a model's predictions for a data set as CSV: the class and each class's
    /// probability for classifiers, the outputs for regressions.
    Predict {
        /// The model.
        model: PathBuf,
        /// The data (a label column, if present, is ignored).
        #[arg(long)]
        data: PathBuf,
        /// Where to write the predictions; `-` or left out: standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The architecture (a model file in YAML or JSON) of a safetensors file that lacks
        /// crank's, as PyTorch's `save_file(model.state_dict(), ...)` writes.
        #[arg(long)]
        spec: Option<PathBuf>,
    },
    /// Describe a model file or a checkpoint.
    Inspect {
        /// The model or checkpoint.
        model: PathBuf,
        /// The architecture (a model file in YAML or JSON) of a safetensors file that lacks
        /// crank's, as PyTorch's `save_file(model.state_dict(), ...)` writes.
        #[arg(long)]
        spec: Option<PathBuf>,
    },
    /// Convert a model between formats (by the output's extension).
    Convert {
        /// The model.
        input: PathBuf,
        /// The output: .crank/.bin, .json or .safetensors.
        output: PathBuf,
        /// The architecture (a model file in YAML or JSON) of a safetensors file that lacks
        /// crank's, as PyTorch's `save_file(model.state_dict(), ...)` writes.
        #[arg(long)]
        spec: Option<PathBuf>,
    },
}

type Result<T> = std::result::Result<T, String>;

fn ctx<T>(r: crank::Result<T>) -> Result<T> {
    r.map_err(|e| e.to_string())
}

/// The `training` section of a model file.
struct Training {
    loss: Loss,
    optimizer: OptimizerSpec,
    standardize: bool,
    fit: FitOptions,
}

fn read_config(path: &Path) -> Result<(ModelSpec, Training)> {
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
        None => OptimizerSpec::Adam {
            lr: 1e-3,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.0,
        },
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

fn apply(o: &Overrides, spec: &mut ModelSpec, t: &mut Training) -> Result<()> {
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
    if let Some(n) = o.threads {
        ctx(crank::set_threads(n))?;
    }
    Ok(())
}

/// Class names from training labels: integers keep their value as the index; any other text
/// is sorted.
fn class_names(labels: &[String]) -> Vec<String> {
    if let Some(ints) = labels
        .iter()
        .map(|l| l.parse::<usize>().ok())
        .collect::<Option<Vec<_>>>()
    {
        let max = ints.iter().copied().max().unwrap_or(0);
        (0..=max).map(|i| i.to_string()).collect()
    } else {
        let mut names: Vec<String> = labels.to_vec();
        names.sort();
        names.dedup();
        names
    }
}

/// Reads a labelled data file and prepares it for a model.
fn read_prepared(path: &Path, label: Option<&str>, pre: &Preprocessing) -> Result<Prepared> {
    prepare(&ctx(Table::read(path, label))?, pre, path, true)
}

/// A data file made ready for a model: standardised features and targets.
struct Prepared {
    x: Array2<f32>,
    classes: Vec<usize>,
    values: Array2<f32>,
}

impl Prepared {
    /// The targets a model of `kind` trains on: class indices for a multi-class classifier,
    /// a 0/1 column for a binary one, the values for a regression.
    fn target(&self, kind: Kind) -> Target<'_, f32> {
        match kind {
            Kind::Multiclass => Target::Classes(&self.classes),
            Kind::Binary | Kind::Regression => Target::Values(self.values.view()),
        }
    }
}

/// What a model is for.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Regression,
    /// One output: the logit of the second class.
    Binary,
    /// One output (a logit) per class.
    Multiclass,
}

impl Kind {
    /// The kind a model's preprocessing and output count say.
    fn of(pre: &Preprocessing, outputs: usize) -> Kind {
        match &pre.classes {
            Some(c) if outputs == 1 && c.len() == 2 => Kind::Binary,
            Some(_) => Kind::Multiclass,
            None => Kind::Regression,
        }
    }

    /// The loss reported for a model that does not name the one it was trained with.
    fn default_loss(self) -> Loss {
        match self {
            Kind::Regression => Loss::Mse,
            Kind::Binary => Loss::BinaryCrossEntropy,
            Kind::Multiclass => Loss::SoftmaxCrossEntropy,
        }
    }

    /// The metrics `evaluate` prints besides the loss: accuracy for classifiers (and top-3
    /// accuracy when there are more than three classes), MSE, MAE and R² for regressions.
    fn metrics(self, classes: usize) -> Vec<Metric> {
        match self {
            Kind::Regression => vec![Metric::Mse, Metric::Mae, Metric::R2],
            Kind::Binary => vec![Metric::Accuracy],
            Kind::Multiclass if classes > 3 => {
                vec![Metric::Accuracy, Metric::TopKAccuracy { k: 3 }]
            }
            Kind::Multiclass => vec![Metric::Accuracy],
        }
    }
}

fn prepare(table: &Table, pre: &Preprocessing, path: &Path, with_labels: bool) -> Result<Prepared> {
    if table.features.ncols() != pre.mean.len() {
        return Err(format!(
            "{}: {} feature columns, but the model takes {}",
            path.display(),
            table.features.ncols(),
            pre.mean.len()
        ));
    }
    let scaler = Standardizer {
        mean: pre.mean.iter().copied().collect(),
        std: pre.std.iter().copied().collect(),
    };
    let mut features = table.features.clone();
    ctx(scaler.transform(&mut features))?;
    let x = features.mapv(|v| v as f32);
    let (mut classes, mut values) = (Vec::new(), Array2::zeros((0, 1)));
    if with_labels {
        match &pre.classes {
            Some(names) => {
                for (i, l) in table.labels.iter().enumerate() {
                    let c = names.iter().position(|n| n == l).ok_or_else(|| {
                        format!(
                            "{}: line {}: label {l:?} is not one of the model's classes",
                            path.display(),
                            i + 2
                        )
                    })?;
                    classes.push(c);
                }
                if names.len() == 2 {
                    // A binary classifier's target: 1 for the second class.
                    values = Array2::from_shape_fn((classes.len(), 1), |(i, _)| classes[i] as f32);
                }
            }
            None => {
                let v: Vec<f32> = table
                    .labels
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        l.parse::<f32>()
                            .ok()
                            .filter(|v| v.is_finite())
                            .ok_or_else(|| {
                                format!(
                                    "{}: line {}: label {l:?} is not a number",
                                    path.display(),
                                    i + 2
                                )
                            })
                    })
                    .collect::<Result<_>>()?;
                values = Array2::from_shape_vec((v.len(), 1), v).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(Prepared { x, classes, values })
}

fn fit_preprocessing(
    table: &Table,
    standardize: bool,
    loss: &Loss,
    data: &Path,
) -> Result<Preprocessing> {
    let n = table.features.ncols();
    let (mean, std) = match Standardizer::fit(table.features.view()) {
        Ok(s) if standardize => (s.mean.to_vec(), s.std.to_vec()),
        _ => (vec![0.0; n], vec![1.0; n]),
    };
    let classes = match loss {
        Loss::SoftmaxCrossEntropy => Some(class_names(&table.labels)),
        Loss::BinaryCrossEntropy => Some(binary_class_names(&table.labels, data)?),
        _ => None,
    };
    Ok(Preprocessing {
        mean,
        std,
        classes,
        label: Some(table.label_name.clone()),
        loss: Some(*loss),
    })
}

/// The two classes of a binary classifier's labels, in order (numbers by value, other text
/// sorted): the model's output is the logit of the second.
fn binary_class_names(labels: &[String], data: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = labels.to_vec();
    names.sort();
    names.dedup();
    let numbers: Option<Vec<f64>> = names.iter().map(|n| n.parse().ok()).collect();
    if let Some(numbers) = numbers {
        let mut pairs: Vec<(f64, String)> = numbers.into_iter().zip(names).collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        names = pairs.into_iter().map(|(_, n)| n).collect();
    }
    if names.len() != 2 {
        let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
        return Err(format!(
            "{}: BinaryCrossEntropy trains a binary classifier, but the labels have {} distinct \
             values ({}{}); for more classes use SoftmaxCrossEntropy with one output per class",
            data.display(),
            names.len(),
            shown.join(", "),
            if names.len() > 5 { ", ..." } else { "" }
        ));
    }
    Ok(names)
}

/// A progress bar per epoch on a terminal; log lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    epochs: usize,
    batch: usize,
    start: std::time::Instant,
    seen: f64,
}

impl Progress {
    fn new(epochs: usize, batch: usize) -> Self {
        Progress {
            bar: None,
            epochs,
            batch,
            start: std::time::Instant::now(),
            seen: 0.0,
        }
    }
}

impl Callback for Progress {
    fn on_batch_end(&mut self, epoch: usize, batch: usize, batches: usize, loss: f64) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        if batch == 1 {
            let bar = indicatif::ProgressBar::new(batches as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {msg}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{}", self.epochs));
            self.bar = Some(bar);
            self.start = std::time::Instant::now();
            self.seen = 0.0;
        }
        self.seen += self.batch as f64;
        if let Some(bar) = &self.bar {
            bar.set_position(batch as u64);
            let speed = self.seen / self.start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {loss:.4}  {speed:.0} samples/s"));
        }
    }

    fn on_epoch_end(&mut self, record: &Epoch) {
        let metrics: Vec<String> = record
            .metrics
            .iter()
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        let line = format!(
            "epoch {}/{}: {} ({:.2} s)",
            record.epoch,
            self.epochs,
            metrics.join(", "),
            record.seconds
        );
        match self.bar.take() {
            Some(bar) => bar.finish_with_message(metrics.join(", ")),
            None => eprintln!("{line}"),
        }
    }
}

fn save(model: &Sequential<f32>, path: &Path) -> Result<()> {
    let format = Format::from_path(path).ok_or_else(|| {
        format!(
            "{}: unknown model extension (use .crank, .bin, .json or .safetensors)",
            path.display()
        )
    })?;
    ctx(model.save(path, format))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Trains `model` on from `state` to `fit.epochs` epochs in all, saves it to `out` and,
/// when asked, a checkpoint to resume from.
#[allow(clippy::too_many_arguments)]
fn train_and_save(
    model: &mut Sequential<f32>,
    training: &Training,
    fit: &FitOptions,
    train: &Prepared,
    val: Option<&Prepared>,
    optimizer: &mut dyn crank::Optimizer,
    state: &mut FitState<f32>,
    out: &Path,
    checkpoint: Option<&Path>,
) -> Result<History> {
    let kind = Kind::of(&preprocessing_of(model), model.output_size());
    let mut fit = fit.clone();
    if kind != Kind::Regression && fit.metrics.is_empty() {
        fit.metrics.push(Metric::Accuracy);
    }
    let train_set = ctx(Dataset::new(train.x.view(), train.target(kind)))?;
    let (train_set, val_set) = match (val, fit.validation_fraction) {
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
    let history = ctx(model.fit_from(
        train_set,
        val_set,
        &training.loss,
        optimizer,
        &fit,
        &mut progress,
        state,
    ))?;
    save(model, out)?;
    if let Some(p) = checkpoint {
        ctx(Checkpoint::save_fit(p, model, optimizer, state))?;
    }
    Ok(history)
}

fn plot(history: &History, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (960, 400)).into_drawing_area();
        root.fill(&WHITE)?;
        let panels = root.split_evenly((1, 2));
        let epochs = history.epochs.len().max(2) as f64;
        for (area, (title, names)) in panels.iter().zip([
            ("loss", ["loss", "val_loss"]),
            ("accuracy", ["accuracy", "val_accuracy"]),
        ]) {
            let series: Vec<(&str, Vec<(f64, f64)>)> = names
                .iter()
                .map(|n| {
                    let pts = history
                        .column(n)
                        .into_iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_finite())
                        .map(|(i, v)| (i as f64 + 1.0, v))
                        .collect();
                    (*n, pts)
                })
                .collect();
            let values: Vec<f64> = series
                .iter()
                .flat_map(|(_, p)| p.iter().map(|(_, v)| *v))
                .collect();
            if values.is_empty() {
                continue;
            }
            let (lo, hi) = values
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            let pad = ((hi - lo) * 0.05).max(1e-6);
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(1.0..epochs, (lo - pad)..(hi + pad))?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(title)
                .draw()?;
            for ((name, pts), color) in series.into_iter().zip([BLUE, RED]) {
                if !pts.is_empty() {
                    chart
                        .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                        .label(if name.starts_with("val_") {
                            "validation"
                        } else {
                            "training"
                        })
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                        });
                }
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| format!("{}: {e}", path.display()))
}

/// A model file; a safetensors file without crank's architecture takes it from `spec`, a model
/// file whose `training.loss` (SoftmaxCrossEntropy unless it says otherwise, as for `train`)
/// tells what the model is for: a classifier's classes are named 0, 1, ... unless the file
/// has a `preprocessing` section.
fn load(path: &Path, spec: Option<&Path>) -> Result<Sequential<f32>> {
    let Some(spec_path) = spec else {
        return ctx(Sequential::<f32>::load(path));
    };
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if Format::detect(&bytes) != Some(Format::Safetensors) {
        return Err(format!(
            "{}: --spec is for safetensors files without crank's architecture; this file \
             carries its own",
            path.display()
        ));
    }
    let (spec, training) = read_config(spec_path)?;
    let mut model = ctx(Sequential::<f32>::from_safetensors(&bytes, Some(&spec)))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if model.preprocessing().is_none() {
        let outputs = model.output_size();
        let classes = match training.loss {
            Loss::SoftmaxCrossEntropy => Some((0..outputs).map(|i| i.to_string()).collect()),
            Loss::BinaryCrossEntropy if outputs == 1 => Some(vec!["0".into(), "1".into()]),
            _ => None,
        };
        let pre = Preprocessing {
            classes,
            loss: Some(training.loss),
            ..preprocessing_of(&model)
        };
        ctx(model.set_preprocessing(Some(pre)))
            .map_err(|e| format!("{}: {e}", spec_path.display()))?;
    }
    Ok(model)
}

/// The model's preprocessing, or none (identity scaling, value outputs) for a bare model.
fn preprocessing_of(model: &Sequential<f32>) -> Preprocessing {
    model
        .preprocessing()
        .cloned()
        .unwrap_or_else(|| Preprocessing {
            mean: vec![0.0; model.input_size()],
            std: vec![1.0; model.input_size()],
            classes: None,
            label: None,
            loss: None,
        })
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train {
            config,
            data,
            val,
            val_fraction,
            label,
            out,
            checkpoint,
            history,
            plot: plot_path,
            overrides,
        } => {
            let (mut spec, mut training) = read_config(&config)?;
            apply(&overrides, &mut spec, &mut training)?;
            if val_fraction.is_some() {
                training.fit.validation_fraction = val_fraction;
            }
            let table = ctx(Table::read(&data, label.as_deref()))?;
            let pre = fit_preprocessing(&table, training.standardize, &training.loss, &data)?;
            let mut model = ctx(Sequential::<f32>::from_spec(&spec))?;
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
            let train = prepare(&table, &pre, &data, true)?;
            let val = val
                .as_deref()
                .map(|p| read_prepared(p, label.as_deref(), &pre))
                .transpose()?;
            let mut optimizer = ctx(training.optimizer.build())?;
            let mut state = FitState::new(&training.fit);
            let h = train_and_save(
                &mut model,
                &training,
                &training.fit,
                &train,
                val.as_ref(),
                optimizer.as_mut(),
                &mut state,
                &out,
                checkpoint.as_deref(),
            )?;
            if let Some(p) = history {
                write(&p, &h.to_csv())?;
            }
            if let Some(p) = plot_path {
                plot(&h, &p)?;
            }
            println!(
                "trained {} epochs; {}; saved {}",
                h.epochs.len(),
                last_metrics(&h),
                out.display()
            );
        }
        Command::Resume {
            from,
            config,
            data,
            val,
            val_fraction,
            out,
            checkpoint,
            history,
            overrides,
        } => {
            let (mut spec, mut training) = read_config(&config)?;
            apply(&overrides, &mut spec, &mut training)?;
            if val_fraction.is_some() {
                training.fit.validation_fraction = val_fraction;
            }
            let ckpt = ctx(Checkpoint::<f32>::load(&from))?;
            let mut model = ckpt.model;
            let mut state = ckpt.fit.ok_or_else(|| {
                format!(
                    "{}: this checkpoint holds no training run to resume (it was not saved by \
                     `crank train --checkpoint`)",
                    from.display()
                )
            })?;
            let mut optimizer = ctx(training.optimizer.build())?;
            ctx(optimizer.load_state(&ckpt.optimizer))
                .map_err(|e| format!("{}: {e}", from.display()))?;
            if let Some(lr) = overrides.lr {
                optimizer.set_learning_rate(lr);
            }
            let done = state.epoch();
            // `--epochs N` trains N more; without it, the run goes on to the model file's total.
            let mut fit = training.fit.clone();
            fit.epochs = match overrides.epochs {
                Some(0) => return Err("--epochs 0: no epochs to train".into()),
                Some(more) => done.saturating_add(more),
                None => fit.epochs,
            };
            if state.stopped() {
                println!(
                    "the run stopped early after epoch {done} (early stopping); nothing to resume"
                );
                return Ok(());
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
            let label = pre.label.clone();
            let train = read_prepared(&data, label.as_deref(), &pre)?;
            let val = val
                .as_deref()
                .map(|p| read_prepared(p, label.as_deref(), &pre))
                .transpose()?;
            let h = train_and_save(
                &mut model,
                &training,
                &fit,
                &train,
                val.as_ref(),
                optimizer.as_mut(),
                &mut state,
                &out,
                checkpoint.as_deref(),
            )?;
            if let Some(p) = history {
                write(&p, &h.to_csv())?;
            }
            println!(
                "resumed after epoch {done}; trained {} more epochs (to epoch {}, step {}); {}; \
                 saved {}",
                h.epochs.len(),
                state.epoch(),
                model.steps(),
                last_metrics(&h),
                out.display()
            );
        }
        Command::Evaluate {
            model,
            data,
            json,
            spec,
        } => {
            let m = load(&model, spec.as_deref())?;
            let pre = preprocessing_of(&m);
            let prepared = read_prepared(&data, pre.label.as_deref(), &pre)?;
            let kind = Kind::of(&pre, m.output_size());
            let loss = pre.loss.unwrap_or(kind.default_loss());
            let classes = pre.classes.as_ref().map_or(0, Vec::len);
            let values = ctx(m.evaluate_metrics(
                prepared.x.view(),
                prepared.target(kind),
                &loss,
                &kind.metrics(classes),
            ))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&values).map_err(|e| e.to_string())?
                );
            } else {
                for (k, v) in values {
                    println!("{k} {v:.6}");
                }
            }
        }
        Command::Predict {
            model,
            data,
            out,
            spec,
        } => {
            let m = load(&model, spec.as_deref())?;
            let pre = preprocessing_of(&m);
            let table = ctx(Table::read(&data, pre.label.as_deref()))?;
            let prepared = prepare(&table, &pre, &data, false)?;
            let outputs = ctx(m.predict(prepared.x.view()))?;
            let text = predictions_csv(&m, &pre, outputs.view());
            match out.as_deref().filter(|p| p.as_os_str() != "-") {
                Some(path) => {
                    write(path, &text)?;
                    println!(
                        "wrote {} predictions to {}",
                        outputs.nrows(),
                        path.display()
                    );
                }
                None => to_stdout(&text)?,
            }
        }
        Command::Inspect { model, spec } => inspect(&model, spec.as_deref())?,
        Command::Convert {
            input,
            output,
            spec,
        } => {
            let m = load(&input, spec.as_deref())?;
            save(&m, &output)?;
            println!("converted {} to {}", input.display(), output.display());
        }
    }
    Ok(())
}

/// The last epoch's metrics, `loss 0.1234, accuracy 0.9700`.
fn last_metrics(h: &History) -> String {
    h.epochs
        .last()
        .map(|e| {
            e.metrics
                .iter()
                .map(|(k, v)| format!("{k} {v:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// Predictions as CSV: `class` and `p_<class>` per class for classifiers (a binary
/// classifier's probability is the sigmoid of its logit, a multi-class one's the softmax of
/// its logits), `prediction_<j>` per output for regressions.
fn predictions_csv(m: &Sequential<f32>, pre: &Preprocessing, outputs: ArrayView2<f32>) -> String {
    let mut text = String::new();
    let kind = Kind::of(pre, m.output_size());
    let names = pre.classes.as_deref().unwrap_or_default();
    match kind {
        Kind::Binary | Kind::Multiclass => {
            text.push_str("class");
            for n in names {
                text.push_str(&format!(",p_{n}"));
            }
            text.push('\n');
            let last_is_softmax = m
                .layers()
                .last()
                .is_some_and(|l| l.describe() == Activation::Softmax.to_string());
            for row in outputs.rows() {
                let p: Vec<f32> = if kind == Kind::Binary {
                    let p1 = 1.0 / (1.0 + (-row[0]).exp());
                    vec![1.0 - p1, p1]
                } else if last_is_softmax {
                    row.to_vec()
                } else {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let e: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
                    let sum: f32 = e.iter().sum();
                    e.into_iter().map(|v| v / sum).collect()
                };
                let best = if kind == Kind::Binary {
                    usize::from(row[0] > 0.0)
                } else {
                    crank::model::argmax(p.iter().copied()).unwrap_or(0)
                };
                text.push_str(&names[best]);
                for v in p {
                    text.push_str(&format!(",{v}"));
                }
                text.push('\n');
            }
        }
        Kind::Regression => {
            let header: Vec<String> = (0..outputs.ncols())
                .map(|j| format!("prediction_{j}"))
                .collect();
            text.push_str(&header.join(","));
            text.push('\n');
            for row in outputs.rows() {
                let values: Vec<String> = row.iter().map(|v| v.to_string()).collect();
                text.push_str(&values.join(","));
                text.push('\n');
            }
        }
    }
    text
}

/// Writes to standard output; a reader that closed the pipe early (`| head`) is not an error.
fn to_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("standard output: {e}"))
        }
        _ => Ok(()),
    }
}

/// Describes a model file or a checkpoint.
fn inspect(path: &Path, spec: Option<&Path>) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = vec![format!("file: {} ({} bytes)", path.display(), bytes.len())];
    let m = if bytes.starts_with(b"CRANKCKP") {
        let ckpt = ctx(Checkpoint::<f32>::from_bytes(&bytes))?;
        let o = &ckpt.optimizer;
        lines.push(format!(
            "checkpoint, version {}",
            crank::io::CHECKPOINT_VERSION
        ));
        lines.push(format!(
            "optimizer: {}, learning rate {}, step {}",
            o.optimizer, o.learning_rate, o.steps
        ));
        let ended = |fit: &FitState<f32>| {
            if fit.stopped() {
                " (early stopping ended the run)"
            } else {
                ""
            }
        };
        lines.push(match &ckpt.fit {
            Some(fit) => format!(
                "training: epoch {}, step {}{}",
                fit.epoch(),
                ckpt.model.steps(),
                ended(fit)
            ),
            None => format!("training: step {}", ckpt.model.steps()),
        });
        ckpt.model
    } else {
        let format = Format::detect(&bytes).ok_or_else(|| {
            format!(
                "{}: not a crank model file or checkpoint (JSON, bincode or safetensors)",
                path.display()
            )
        })?;
        let m = load(path, spec)?;
        lines.push(format!(
            "format: {format:?}, version {}",
            crank::io::FORMAT_VERSION
        ));
        m
    };
    lines.push(m.to_string().trim_end().to_string());
    if let Some(p) = m.preprocessing() {
        lines.push(format!("standardised inputs: {}", p.mean.len()));
        let kind = match Kind::of(p, m.output_size()) {
            Kind::Regression => "regression",
            Kind::Binary => "binary classifier",
            Kind::Multiclass => "multi-class classifier",
        };
        lines.push(match &p.loss {
            Some(loss) => format!("task: {kind}, trained with {loss}"),
            None => format!("task: {kind}"),
        });
        if let Some(c) = &p.classes {
            lines.push(format!("classes: {}", c.join(", ")));
        }
    }
    lines.push(String::new());
    to_stdout(&lines.join("\n"))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

//! The `crank` command: train, evaluate, predict, inspect and convert from a model file.

use clap::{Parser, Subcommand};
use crank::data::{Standardizer, Table};
use crank::io::{Checkpoint, Format};
use crank::metrics::Metric;
use crank::optim::OptimizerSpec;
use crank::spec::{ModelSpec, Preprocessing, read_document};
use crank::train::{Callback, Dataset, Epoch, FitOptions, History};
use crank::{Activation, Loss, Sequential, Target};
use ndarray::Array2;
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
    /// Continue training from a checkpoint with the model file's training settings.
    Resume {
        /// The checkpoint.
        checkpoint: PathBuf,
        /// The model file whose `training` section to use.
        #[arg(long)]
        config: PathBuf,
        /// Training data.
        #[arg(long)]
        data: PathBuf,
        /// Validation data.
        #[arg(long)]
        val: Option<PathBuf>,
        /// Where to save the model.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Print a model's metrics on a data set.
    Evaluate {
        /// The model.
        model: PathBuf,
        /// The data, with labels.
        #[arg(long)]
        data: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a model's predictions for a data set as CSV.
    Predict {
        /// The model.
        model: PathBuf,
        /// The data (a label column, if present, is ignored).
        #[arg(long)]
        data: PathBuf,
        /// Where to write the predictions.
        #[arg(long)]
        out: PathBuf,
    },
    /// Describe a model file.
    Inspect {
        /// The model.
        model: PathBuf,
    },
    /// Convert a model between formats (by the output's extension).
    Convert {
        /// The model.
        input: PathBuf,
        /// The output: .crank/.bin, .json or .safetensors.
        output: PathBuf,
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
    fn target(&self, classification: bool) -> Target<'_, f32> {
        if classification {
            Target::Classes(&self.classes)
        } else {
            Target::Values(self.values.view())
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

fn fit_preprocessing(table: &Table, standardize: bool, loss: &Loss, label: &str) -> Preprocessing {
    let n = table.features.ncols();
    let (mean, std) = match Standardizer::fit(table.features.view()) {
        Ok(s) if standardize => (s.mean.to_vec(), s.std.to_vec()),
        _ => (vec![0.0; n], vec![1.0; n]),
    };
    let classes = matches!(loss, Loss::SoftmaxCrossEntropy).then(|| class_names(&table.labels));
    Preprocessing {
        mean,
        std,
        classes,
        label: Some(label.to_string()),
    }
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

fn train_and_save(
    model: &mut Sequential<f32>,
    training: &Training,
    train: &Prepared,
    val: Option<&Prepared>,
    optimizer: &mut dyn crank::Optimizer,
    out: &Path,
) -> Result<History> {
    let classification = model.preprocessing().is_some_and(|p| p.classes.is_some());
    let mut fit = training.fit.clone();
    if classification && fit.metrics.is_empty() {
        fit.metrics.push(Metric::Accuracy);
    }
    let train_set = ctx(Dataset::new(train.x.view(), train.target(classification)))?;
    let (train_set, val_set) = match (val, fit.validation_fraction) {
        (Some(v), _) => (
            train_set,
            Some(ctx(Dataset::new(v.x.view(), v.target(classification)))?),
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
    let history = ctx(model.fit_with(
        train_set,
        val_set,
        &training.loss,
        optimizer,
        &fit,
        &mut progress,
    ))?;
    save(model, out)?;
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

fn load(path: &Path) -> Result<Sequential<f32>> {
    ctx(Sequential::<f32>::load(path))
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
            let pre = fit_preprocessing(
                &table,
                training.standardize,
                &training.loss,
                &table.label_name,
            );
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
            if let Some(c) = &pre.classes
                && c.len() != model.output_size()
            {
                return Err(format!(
                    "{}: the last layer has {} outputs, but {} has {} classes",
                    config.display(),
                    model.output_size(),
                    data.display(),
                    c.len()
                ));
            }
            ctx(model.set_preprocessing(Some(pre.clone())))?;
            let train = prepare(&table, &pre, &data, true)?;
            let val = val
                .as_deref()
                .map(|p| read_prepared(p, label.as_deref(), &pre))
                .transpose()?;
            let mut optimizer = ctx(training.optimizer.build())?;
            let h = train_and_save(
                &mut model,
                &training,
                &train,
                val.as_ref(),
                optimizer.as_mut(),
                &out,
            )?;
            if let Some(p) = checkpoint {
                ctx(Checkpoint::save(&p, &model, optimizer.as_ref(), None))?;
            }
            if let Some(p) = history {
                write(&p, &h.to_csv())?;
            }
            if let Some(p) = plot_path {
                plot(&h, &p)?;
            }
            let last = h.epochs.last().map(|e| {
                e.metrics
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            println!(
                "trained {} epochs; {}; saved {}",
                h.epochs.len(),
                last.unwrap_or_default(),
                out.display()
            );
        }
        Command::Resume {
            checkpoint,
            config,
            data,
            val,
            out,
            overrides,
        } => {
            let (mut spec, mut training) = read_config(&config)?;
            apply(&overrides, &mut spec, &mut training)?;
            let ckpt = ctx(Checkpoint::<f32>::load(&checkpoint))?;
            let mut model = ckpt.model;
            let mut optimizer = ctx(training.optimizer.build())?;
            ctx(optimizer.load_state(&ckpt.optimizer))?;
            if let Some(lr) = overrides.lr {
                optimizer.set_learning_rate(lr);
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
                &train,
                val.as_ref(),
                optimizer.as_mut(),
                &out,
            )?;
            println!(
                "resumed at step {}; trained {} more epochs; saved {}",
                model.steps(),
                h.epochs.len(),
                out.display()
            );
        }
        Command::Evaluate { model, data, json } => {
            let m = load(&model)?;
            let pre = preprocessing_of(&m);
            let prepared = read_prepared(&data, pre.label.as_deref(), &pre)?;
            let classification = pre.classes.is_some();
            let (loss, metrics) = if classification {
                (
                    Loss::SoftmaxCrossEntropy,
                    vec![
                        Metric::Accuracy,
                        Metric::TopKAccuracy {
                            k: 3.min(m.output_size()),
                        },
                    ],
                )
            } else {
                (Loss::Mse, vec![Metric::Mse, Metric::Mae, Metric::R2])
            };
            let values = ctx(m.evaluate_metrics(
                prepared.x.view(),
                prepared.target(classification),
                &loss,
                &metrics,
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
        Command::Predict { model, data, out } => {
            let m = load(&model)?;
            let pre = preprocessing_of(&m);
            let table = ctx(Table::read(&data, pre.label.as_deref()))?;
            let prepared = prepare(&table, &pre, &data, false)?;
            let outputs = ctx(m.predict(prepared.x.view()))?;
            let mut text = String::new();
            match &pre.classes {
                Some(names) => {
                    let last_is_softmax = m
                        .layers()
                        .last()
                        .is_some_and(|l| l.describe() == Activation::Softmax.to_string());
                    text.push_str("class");
                    for n in names {
                        text.push_str(&format!(",p_{n}"));
                    }
                    text.push('\n');
                    for row in outputs.rows() {
                        let mut p: Vec<f32> = row.to_vec();
                        if !last_is_softmax {
                            let max = p.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                            p.iter_mut().for_each(|v| *v = (*v - max).exp());
                            let sum: f32 = p.iter().sum();
                            p.iter_mut().for_each(|v| *v /= sum);
                        }
                        let best = crank::model::argmax(p.iter().copied()).unwrap_or(0);
                        text.push_str(&names[best]);
                        for v in p {
                            text.push_str(&format!(",{v}"));
                        }
                        text.push('\n');
                    }
                }
                None => {
                    text.push_str(
                        &(0..outputs.ncols())
                            .map(|j| format!("prediction_{j}"))
                            .collect::<Vec<_>>()
                            .join(","),
                    );
                    text.push('\n');
                    for row in outputs.rows() {
                        text.push_str(
                            &row.iter()
                                .map(|v| v.to_string())
                                .collect::<Vec<_>>()
                                .join(","),
                        );
                        text.push('\n');
                    }
                }
            }
            write(&out, &text)?;
            println!("wrote {} predictions to {}", outputs.nrows(), out.display());
        }
        Command::Inspect { model } => {
            let bytes = std::fs::read(&model).map_err(|e| format!("{}: {e}", model.display()))?;
            let format = Format::detect(&bytes)
                .ok_or_else(|| format!("{}: not a crank model file", model.display()))?;
            let m = ctx(Sequential::<f32>::from_bytes(&bytes, format))?;
            println!("file: {} ({} bytes)", model.display(), bytes.len());
            println!("format: {format:?}, version {}", crank::io::FORMAT_VERSION);
            print!("{m}");
            if let Some(p) = m.preprocessing() {
                println!("standardised inputs: {}", p.mean.len());
                if let Some(c) = &p.classes {
                    println!("classes: {}", c.join(", "));
                }
            }
        }
        Command::Convert { input, output } => {
            let m = load(&input)?;
            save(&m, &output)?;
            println!("converted {} to {}", input.display(), output.display());
        }
    }
    Ok(())
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

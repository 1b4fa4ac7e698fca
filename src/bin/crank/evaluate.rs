//! `crank evaluate` and `crank predict`.

use crate::files::{ModelArgs, to_stdout, write};
use crate::prepare::{Kind, prepare, preprocessing_of, read_prepared};
use crate::{Result, ctx};
use crank::data::Table;
use crank::spec::Preprocessing;
use crank::{Activation, Sequential};
use ndarray::ArrayView2;
use std::path::PathBuf;

/// Print a model's loss and metrics on a data set.
///
/// Classifiers report their loss and accuracy (and top-3 accuracy with more than three
/// classes); regressions their loss, MAE, MSE and R².
#[derive(clap::Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The data, with labels.
    #[arg(long)]
    pub data: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Write a model's predictions for a data set as CSV.
///
/// Classifiers write the class and each class's probability; regressions their outputs.
#[derive(clap::Args)]
pub struct PredictArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The data (a label column, if present, is ignored).
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the predictions; `-` or left out: standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Prints a model's loss and metrics on a data set.
pub(crate) fn evaluate(args: EvaluateArgs) -> Result<()> {
    let EvaluateArgs { model, data, json } = args;
    let m = model.load()?;
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
    Ok(())
}

/// Writes a model's predictions as CSV.
pub(crate) fn predict(args: PredictArgs) -> Result<()> {
    let PredictArgs { model, data, out } = args;
    let m = model.load()?;
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
    Ok(())
}

/// Predictions as CSV: `class` and `p_<class>` per class for classifiers (a binary
/// classifier's probability is the sigmoid of its logit, a multi-class one's the softmax of
/// its logits), `prediction_<j>` per output for regressions.
pub(crate) fn predictions_csv(
    m: &Sequential<f32>,
    pre: &Preprocessing,
    outputs: ArrayView2<f32>,
) -> String {
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
                    crank::metrics::argmax(p.iter().copied()).unwrap_or(0)
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

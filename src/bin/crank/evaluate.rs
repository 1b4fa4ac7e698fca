//! `crank evaluate` and `crank predict`.

use crate::files::{ModelArgs, to_stdout, write};
use crate::prepare::{Kind, prepare, preprocessing_of, read_prepared};
use crate::{Result, ctx};
use crank::data::Table;
use crank::spec::Preprocessing;
use crank::{Activation, Sequential};
use ndarray::{Array2, ArrayView2};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    let values = metrics(&m, &data)?;
    let text = if json {
        serde_json::to_string(&values).map_err(|e| e.to_string())? + "\n"
    } else {
        values
            .iter()
            .map(|(k, v)| format!("{k} {v:.6}\n"))
            .collect()
    };
    to_stdout(&text)
}

/// A model's loss and metrics on the labelled data in `data`, by name.
pub(crate) fn metrics(m: &Sequential<f32>, data: &Path) -> Result<BTreeMap<String, f64>> {
    let pre = preprocessing_of(m);
    let prepared = read_prepared(data, pre.label.as_deref(), &pre)?;
    let kind = Kind::of(&pre, m.output_size());
    let loss = pre.loss.unwrap_or(kind.default_loss());
    let classes = pre.classes.as_ref().map_or(0, Vec::len);
    ctx(m.evaluate_metrics(
        prepared.x.view(),
        prepared.target(kind),
        &loss,
        &kind.metrics(classes),
    ))
}

/// Writes a model's predictions as CSV.
pub(crate) fn predict(args: PredictArgs) -> Result<()> {
    let PredictArgs { model, data, out } = args;
    let m = model.load()?;
    let pre = preprocessing_of(&m);
    let table = read_features(&data, pre.label.as_deref(), m.input_size())?;
    let prepared = prepare(&table, &pre, &data, false)?;
    let outputs = ctx(m.predict(prepared.x.view()))?;
    let text = predictions_csv(&m, &pre, outputs.view())?;
    match out.as_deref().filter(|p| p.as_os_str() != "-") {
        Some(path) => {
            write(path, &text)?;
            to_stdout(&format!(
                "wrote {} predictions to {}\n",
                outputs.nrows(),
                path.display()
            ))
        }
        None => to_stdout(&text),
    }
}

/// The data to predict on: a file with a label column (ignored), or a CSV file whose columns
/// are exactly the model's features.
pub(crate) fn read_features(data: &Path, label: Option<&str>, inputs: usize) -> Result<Table> {
    let labelled = Table::read(data, label);
    match labelled {
        Ok(t) if t.features.ncols() == inputs => Ok(t),
        _ if data
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv")) =>
        {
            match Table::from_csv_unlabelled(data) {
                Ok(t) if t.features.ncols() == inputs => Ok(t),
                _ => ctx(labelled),
            }
        }
        _ => ctx(labelled),
    }
}

/// Predictions as CSV: `class` and `p_<class>` per class for classifiers (a binary
/// classifier's probability is the sigmoid of its logit, a multi-class one's the softmax of
/// its logits), `prediction_<j>` per output for regressions.
pub(crate) fn predictions_csv(
    m: &Sequential<f32>,
    pre: &Preprocessing,
    outputs: ArrayView2<f32>,
) -> Result<String> {
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
            let p = probabilities(m, kind, outputs)?;
            for (row, p) in outputs.rows().into_iter().zip(p.rows()) {
                // A binary classifier's class is its logit's sign, as its accuracy counts it.
                let best = match kind {
                    Kind::Binary => usize::from(row[0] > 0.0),
                    _ => crank::metrics::argmax(p.iter().copied()).unwrap_or(0),
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
    Ok(text)
}

/// Each class's probability per row, with crank's own activations: a binary classifier's first
/// class `1 − σ(z)` and second `σ(z)`; a multi-class one's softmax of its logits, unless its
/// last layer applied the softmax already.
fn probabilities(m: &Sequential<f32>, kind: Kind, outputs: ArrayView2<f32>) -> Result<Array2<f32>> {
    let (rows, cols) = outputs.dim();
    let z = outputs.as_standard_layout();
    let z = z.as_slice().expect("standard layout");
    match kind {
        Kind::Binary => {
            let mut p1 = vec![0.0; rows];
            ctx(Activation::Sigmoid.forward_batch(z, &mut p1, 1))?;
            Ok(Array2::from_shape_fn((rows, 2), |(i, j)| {
                if j == 1 { p1[i] } else { 1.0 - p1[i] }
            }))
        }
        _ if m
            .layers()
            .last()
            .is_some_and(|l| l.describe() == Activation::Softmax.to_string()) =>
        {
            Ok(outputs.to_owned())
        }
        _ => {
            let mut p = Array2::zeros((rows, cols));
            let out = p.as_slice_mut().expect("a new array is contiguous");
            ctx(Activation::Softmax.forward_batch(z, out, cols))?;
            Ok(p)
        }
    }
}

//! Data files made ready for a model: labels to classes or values, standardisation, and what
//! a model is for.

use crate::{Result, ctx};
use crank::collective::Communicator;
use crank::data::{Standardizer, Table};
use crank::metrics::Metric;
use crank::spec::Preprocessing;
use crank::{Loss, Sequential, Target};
use ndarray::Array2;
use std::path::Path;

/// What a model is for.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Kind {
    Regression,
    /// One output: the logit of the second class.
    Binary,
    /// One output (a logit) per class.
    Multiclass,
}

impl Kind {
    /// The kind a model's preprocessing and output count say.
    pub(crate) fn of(pre: &Preprocessing, outputs: usize) -> Kind {
        match &pre.classes {
            Some(c) if outputs == 1 && c.len() == 2 => Kind::Binary,
            Some(_) => Kind::Multiclass,
            None => Kind::Regression,
        }
    }

    /// The loss reported for a model that does not name the one it was trained with.
    pub(crate) fn default_loss(self) -> Loss {
        match self {
            Kind::Regression => Loss::Mse,
            Kind::Binary => Loss::BinaryCrossEntropy,
            Kind::Multiclass => Loss::SoftmaxCrossEntropy,
        }
    }

    /// The metrics `evaluate` prints besides the loss: accuracy for classifiers (and top-3
    /// accuracy when there are more than three classes), MSE, MAE and R² for regressions.
    pub(crate) fn metrics(self, classes: usize) -> Vec<Metric> {
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

/// A data file made ready for a model: standardised features and targets.
pub(crate) struct Prepared {
    pub(crate) x: Array2<f32>,
    pub(crate) classes: Vec<usize>,
    pub(crate) values: Array2<f32>,
}

impl Prepared {
    /// The targets a model of `kind` trains on: class indices for a multi-class classifier,
    /// a 0/1 column for a binary one, the values for a regression.
    pub(crate) fn target(&self, kind: Kind) -> Target<'_, f32> {
        match kind {
            Kind::Multiclass => Target::Classes(&self.classes),
            Kind::Binary | Kind::Regression => Target::Values(self.values.view()),
        }
    }
}

/// Reads a labelled data file and prepares it for a model.
pub(crate) fn read_prepared(
    path: &Path,
    label: Option<&str>,
    pre: &Preprocessing,
) -> Result<Prepared> {
    prepare(&ctx(Table::read(path, label))?, pre, path, true)
}

pub(crate) fn prepare(
    table: &Table,
    pre: &Preprocessing,
    path: &Path,
    with_labels: bool,
) -> Result<Prepared> {
    if table.features.ncols() != pre.mean.len() {
        return Err(format!(
            "{}: {} feature columns, but the model takes {}",
            path.display(),
            table.features.ncols(),
            pre.mean.len()
        ));
    }
    let mut features = table.features.clone();
    ctx(pre.standardize(&mut features))?;
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

/// The preprocessing a model trained on `table` keeps: each feature's mean and standard
/// deviation (when `standardize`), the class names (for a classifier's loss), the label
/// column and the loss. With `shards`, `table` is this rank's shard of the data and every rank
/// calls this: the statistics and classes are those of all the shards together.
pub(crate) fn fit_preprocessing(
    table: &Table,
    standardize: bool,
    loss: &Loss,
    data: &Path,
    shards: Option<&dyn Communicator>,
) -> Result<Preprocessing> {
    let n = table.features.ncols();
    let identity = || (vec![0.0; n], vec![1.0; n]);
    let x = table.features.view();
    let (mean, std) = match shards {
        _ if !standardize => identity(),
        Some(comm) => {
            let s = ctx(Standardizer::fit_shared(x, comm))?;
            (s.mean.to_vec(), s.std.to_vec())
        }
        None => {
            Standardizer::fit(x).map_or_else(|_| identity(), |s| (s.mean.to_vec(), s.std.to_vec()))
        }
    };
    let labels = match shards {
        Some(comm) => shared_labels(&table.labels, comm)?,
        None => table.labels.clone(),
    };
    let classes = match loss {
        Loss::SoftmaxCrossEntropy => Some(class_names(&labels)),
        Loss::BinaryCrossEntropy => Some(binary_class_names(&labels, data)?),
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

/// The distinct labels of every rank's shard, each rank's in turn from its own broadcast.
fn shared_labels(labels: &[String], comm: &dyn Communicator) -> Result<Vec<String>> {
    let mut mine: Vec<&str> = labels.iter().map(String::as_str).collect();
    mine.sort_unstable();
    mine.dedup();
    let mine = serde_json::to_vec(&mine).map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    for root in 0..comm.size() {
        let mut len = [mine.len() as u64];
        ctx(crank::collective::broadcast(comm, &mut len, root))?;
        let mut bytes = if root == comm.rank() {
            mine.clone()
        } else {
            vec![0u8; len[0] as usize]
        };
        ctx(comm.broadcast(&mut bytes, root))?;
        let theirs: Vec<String> = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        all.extend(theirs);
    }
    Ok(all)
}

/// Class names from training labels: integers keep their value as the index; any other text
/// is sorted.
pub(crate) fn class_names(labels: &[String]) -> Vec<String> {
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

/// The two classes of a binary classifier's labels, in order (numbers by value, other text
/// sorted): the model's output is the logit of the second.
pub(crate) fn binary_class_names(labels: &[String], data: &Path) -> Result<Vec<String>> {
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

/// The model's preprocessing, or none (identity scaling, value outputs) for a bare model.
pub(crate) fn preprocessing_of(model: &Sequential<f32>) -> Preprocessing {
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

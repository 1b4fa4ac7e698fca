//! Metrics computed over a data set, batch by batch: accuracy, top-k accuracy, MSE, MAE, R².

use crate::collective::Communicator;
use crate::loss::Target;
use crate::{Error, Result, Scalar};
use ndarray::{ArrayView1, ArrayView2};
use serde::{Deserialize, Serialize};

/// A metric reported by [`fit`](crate::Sequential::fit) besides the loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Metric {
    /// Fraction of samples whose largest output is their class (class indices or one-hot).
    /// With one output, a binary classifier's logit (as [`Loss::BinaryCrossEntropy`] trains):
    /// the prediction is class 1 when the output is positive, and the target's class is 1 when
    /// it is above 0.5.
    ///
    /// [`Loss::BinaryCrossEntropy`]: crate::Loss::BinaryCrossEntropy
    Accuracy,
    /// Fraction of samples whose class is among the `k` largest outputs.
    TopKAccuracy {
        /// How many of the largest outputs count.
        k: usize,
    },
    /// Mean squared error over every output.
    Mse,
    /// Mean absolute error over every output.
    Mae,
    /// Coefficient of determination, averaged over outputs (scikit-learn's `r2_score`).
    R2,
}

impl Metric {
    /// The metric's name in a [`History`](crate::train::History) (`"accuracy"`, `"top3_accuracy"`, ...).
    pub fn name(&self) -> String {
        match self {
            Metric::Accuracy => "accuracy".into(),
            Metric::TopKAccuracy { k } => format!("top{k}_accuracy"),
            Metric::Mse => "mse".into(),
            Metric::Mae => "mae".into(),
            Metric::R2 => "r2".into(),
        }
    }

    /// Whether larger values are better.
    pub fn higher_is_better(name: &str) -> bool {
        name.ends_with("accuracy") || name.ends_with("r2")
    }
}

/// Sums that the metrics are computed from, gathered batch by batch.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    samples: usize,
    correct: usize,
    top_k: Vec<(usize, usize)>,
    sq_err: f64,
    abs_err: f64,
    elements: usize,
    /// Per output column: Σy, Σy², Σ(ŷ − y)².
    columns: Vec<(f64, f64, f64)>,
}

/// Index of the largest value (the first one on ties); `None` when empty.
pub fn argmax<F: Scalar>(values: impl IntoIterator<Item = F>) -> Option<usize> {
    let mut best: Option<(usize, F)> = None;
    for (i, v) in values.into_iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// The class of each row of a target: its index, the largest entry of a one-hot row, or for
/// a single column, whether the value is above 0.5.
fn class_of<F: Scalar>(target: &Target<'_, F>, row: usize) -> Option<usize> {
    match target {
        Target::Classes(c) => Some(c[row]),
        Target::Values(v) if v.ncols() == 1 => Some(usize::from(v[[row, 0]].as_f64() > 0.5)),
        Target::Values(v) => argmax(v.row(row).iter().copied()),
    }
}

/// The class a row of outputs predicts: the largest output, or for a single output (a binary
/// classifier's logit) class 1 when it is positive.
fn predicted<F: Scalar>(row: ArrayView1<'_, F>) -> Option<usize> {
    match row.len() {
        1 => Some(usize::from(row[0].as_f64() > 0.0)),
        _ => argmax(row.iter().copied()),
    }
}

impl Tally {
    pub fn new(metrics: &[Metric]) -> Self {
        Tally {
            top_k: metrics
                .iter()
                .filter_map(|m| match m {
                    Metric::TopKAccuracy { k } => Some((*k, 0)),
                    _ => None,
                })
                .collect(),
            ..Tally::default()
        }
    }

    /// Adds a batch of outputs and their targets.
    pub fn add<F: Scalar>(&mut self, out: ArrayView2<'_, F>, target: &Target<'_, F>) {
        let (b, k) = out.dim();
        self.samples += b;
        for i in 0..b {
            let row = out.row(i);
            if let Some(class) = class_of(target, i) {
                if predicted(row) == Some(class) {
                    self.correct += 1;
                }
                if class < k && k > 1 {
                    // How many outputs beat the class's output (ties count in its favour).
                    let rank = row.iter().filter(|&&o| o > row[class]).count();
                    for (top, hits) in &mut self.top_k {
                        if rank < *top {
                            *hits += 1;
                        }
                    }
                }
            }
        }
        if let Target::Values(t) = target {
            if self.columns.len() != k {
                self.columns = vec![(0.0, 0.0, 0.0); k];
            }
            for (o, t) in out.rows().into_iter().zip(t.rows()) {
                for (j, (&o, &t)) in o.iter().zip(t.iter()).enumerate() {
                    let (o, t) = (o.as_f64(), t.as_f64());
                    let e = o - t;
                    self.sq_err += e * e;
                    self.abs_err += e.abs();
                    let c = &mut self.columns[j];
                    c.0 += t;
                    c.1 += t * t;
                    c.2 += e * e;
                }
            }
            self.elements += b * k;
        }
    }

    /// Sums the tallies of every rank of a data-parallel run, so that each rank holds the
    /// tally of the whole data; `outputs` is the model's output width.
    pub fn reduce(&mut self, comm: &dyn Communicator, outputs: usize) -> Result<()> {
        if comm.size() == 1 {
            return Ok(());
        }
        // A rank that saw no value targets has no columns yet: every rank sends the same shape.
        self.columns.resize(outputs, (0.0, 0.0, 0.0));
        let mut sums = vec![
            self.samples as f64,
            self.correct as f64,
            self.sq_err,
            self.abs_err,
            self.elements as f64,
        ];
        sums.extend(self.top_k.iter().map(|&(_, hits)| hits as f64));
        sums.extend(self.columns.iter().flat_map(|&(a, b, c)| [a, b, c]));
        comm.all_reduce_f64(&mut sums)?;
        // Counts below 2^53 are exact in f64.
        let mut it = sums.into_iter();
        let mut next = || it.next().unwrap_or_default();
        self.samples = next() as usize;
        self.correct = next() as usize;
        self.sq_err = next();
        self.abs_err = next();
        self.elements = next() as usize;
        for (_, hits) in &mut self.top_k {
            *hits = next() as usize;
        }
        for c in &mut self.columns {
            *c = (next(), next(), next());
        }
        if self.elements == 0 {
            self.columns.clear();
        }
        Ok(())
    }

    /// The value of `metric` over what was added.
    pub fn value(&self, metric: &Metric) -> Result<f64> {
        let need_values = |name: &str| {
            Error::Config(format!(
                "metric {name} needs value targets (a (samples, outputs) array)"
            ))
        };
        let n = self.samples.max(1) as f64;
        Ok(match metric {
            Metric::Accuracy => self.correct as f64 / n,
            Metric::TopKAccuracy { k } => {
                let hits = self
                    .top_k
                    .iter()
                    .find(|(kk, _)| kk == k)
                    .map_or(0, |(_, h)| *h);
                hits as f64 / n
            }
            Metric::Mse if self.elements > 0 => self.sq_err / self.elements as f64,
            Metric::Mae if self.elements > 0 => self.abs_err / self.elements as f64,
            Metric::R2 if self.elements > 0 => {
                let r2: f64 = self
                    .columns
                    .iter()
                    .map(|&(sum, sum_sq, ss_res)| {
                        let ss_tot = sum_sq - sum * sum / n;
                        if ss_tot > 0.0 {
                            1.0 - ss_res / ss_tot
                        } else {
                            0.0
                        }
                    })
                    .sum();
                r2 / self.columns.len() as f64
            }
            other => return Err(need_values(&other.name())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn metrics_by_hand() {
        let out = array![[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]];
        let classes = [1, 1, 0];
        let metrics = [Metric::Accuracy, Metric::TopKAccuracy { k: 2 }];
        let mut t = Tally::new(&metrics);
        t.add(out.view(), &Target::Classes(&classes));
        assert!((t.value(&Metric::Accuracy).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        // Row 1: class 1 is second; row 2: class 0 is third.
        assert!((t.value(&Metric::TopKAccuracy { k: 2 }).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!(t.value(&Metric::Mse).is_err());

        let pred = array![[1.0], [2.0], [4.0]];
        let truth = array![[1.0], [3.0], [5.0]];
        let mut t = Tally::new(&[]);
        t.add(pred.view(), &Target::Values(truth.view()));
        assert!((t.value(&Metric::Mse).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((t.value(&Metric::Mae).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // ss_tot = (1-3)² + 0 + (5-3)² = 8; ss_res = 2; R² = 0.75
        assert!((t.value(&Metric::R2).unwrap() - 0.75).abs() < 1e-12);
    }

    #[test]
    fn binary_accuracy_reads_one_output_as_a_logit() {
        let logits = array![[2.0], [-0.5], [0.3], [-3.0]];
        let labels = array![[1.0], [1.0], [0.0], [0.0]];
        let mut t = Tally::new(&[Metric::Accuracy]);
        t.add(logits.view(), &Target::Values(labels.view()));
        // Rows 0 and 3 are right; 1 (negative logit, label 1) and 2 are wrong.
        assert_eq!(t.value(&Metric::Accuracy).unwrap(), 0.5);
        let mut t = Tally::new(&[Metric::Accuracy]);
        t.add(logits.view(), &Target::Classes(&[1, 0, 1, 0]));
        assert_eq!(t.value(&Metric::Accuracy).unwrap(), 1.0);
    }
}

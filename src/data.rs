//! Loading, splitting, scaling and batching data sets.

use crate::{Error, Result, Scalar};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::path::Path;

/// A classification data set: one row of features per sample and its class index.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification<F> {
    /// Features, `(samples, features)`.
    pub x: Array2<F>,
    /// Class index of each sample.
    pub labels: Vec<usize>,
}

impl<F: Scalar> Classification<F> {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes: one more than the largest label.
    pub fn num_classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |m| m + 1)
    }

    /// Reads a CSV file with a header row: numeric feature columns and an integer label column,
    /// the one named `label_column` or else the last. A bad cell, a ragged row or an empty file
    /// is an error naming the file, line and column.
    pub fn from_csv(path: impl AsRef<Path>, label_column: Option<&str>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let data_err = |line: u64, column: usize, reason: String| Error::Data {
            path: path.to_owned(),
            line,
            column,
            reason,
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(file);
        let header = reader
            .headers()
            .map_err(|e| data_err(1, 1, e.to_string()))?
            .clone();
        if header.is_empty() {
            return Err(data_err(1, 1, "no header row".into()));
        }
        let label = match label_column {
            Some(name) => header
                .iter()
                .position(|h| h.trim() == name)
                .ok_or_else(|| data_err(1, 1, format!("no column named {name:?}")))?,
            None => header.len() - 1,
        };
        let width = header.len();
        if width < 2 {
            return Err(data_err(
                1,
                1,
                "need at least one feature column and a label column".into(),
            ));
        }
        let mut values = Vec::new();
        let mut labels = Vec::new();
        for (row, record) in reader.records().enumerate() {
            let line = row as u64 + 2;
            let record = record.map_err(|e| data_err(line, 1, e.to_string()))?;
            for (col, cell) in record.iter().enumerate() {
                let cell = cell.trim();
                if col == label {
                    let l = cell.parse::<usize>().map_err(|_| {
                        data_err(
                            line,
                            col + 1,
                            format!("label {cell:?} is not a class index"),
                        )
                    })?;
                    labels.push(l);
                } else {
                    let v = cell
                        .parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| {
                            data_err(line, col + 1, format!("{cell:?} is not a finite number"))
                        })?;
                    values.push(F::of(v));
                }
            }
        }
        if labels.is_empty() {
            return Err(data_err(2, 1, "the file has a header but no rows".into()));
        }
        let x = Array2::from_shape_vec((labels.len(), width - 1), values)
            .map_err(|e| data_err(1, 1, e.to_string()))?;
        Ok(Classification { x, labels })
    }

    /// Takes the given rows.
    pub fn select(&self, rows: &[usize]) -> Self {
        Classification {
            x: self.x.select(Axis(0), rows),
            labels: rows.iter().map(|&r| self.labels[r]).collect(),
        }
    }

    /// A stratified split: from each class, a `test_fraction` share (rounded) goes to the test
    /// set, chosen by a generator seeded with `seed`. Returns `(train, test)`.
    pub fn split(&self, test_fraction: f64, seed: u64) -> Result<(Self, Self)> {
        if !(0.0..1.0).contains(&test_fraction) {
            return Err(Error::Config(format!(
                "test fraction must be in [0, 1), got {test_fraction}"
            )));
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for class in 0..self.num_classes() {
            let mut rows: Vec<usize> = (0..self.len())
                .filter(|&r| self.labels[r] == class)
                .collect();
            rows.shuffle(&mut rng);
            let n_test = (rows.len() as f64 * test_fraction).round() as usize;
            test.extend_from_slice(&rows[..n_test]);
            train.extend_from_slice(&rows[n_test..]);
        }
        train.sort_unstable();
        test.sort_unstable();
        Ok((self.select(&train), self.select(&test)))
    }
}

/// Standardisation: subtracts each feature's mean and divides by its standard deviation, both
/// fitted on training data (a constant feature is only centred).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Standardizer<F> {
    /// Mean of each feature.
    pub mean: Array1<F>,
    /// Standard deviation of each feature (1 where it was 0).
    pub std: Array1<F>,
}

impl<F: Scalar> Standardizer<F> {
    /// Fits the means and standard deviations of the columns of `x`.
    pub fn fit(x: ArrayView2<'_, F>) -> Result<Self> {
        if x.nrows() == 0 {
            return Err(Error::Config("cannot fit a standardizer on no rows".into()));
        }
        let mean = x.mean_axis(Axis(0)).expect("at least one row");
        let std = x
            .std_axis(Axis(0), F::zero())
            .mapv(|s| if s > F::zero() { s } else { F::one() });
        Ok(Standardizer { mean, std })
    }

    /// Standardises `x` in place.
    pub fn transform(&self, x: &mut Array2<F>) -> Result<()> {
        if x.ncols() != self.mean.len() {
            return Err(Error::shape(
                "standardizer input",
                format!("(samples, {})", self.mean.len()),
                format!("{:?}", x.dim()),
            ));
        }
        for mut row in x.rows_mut() {
            row -= &self.mean;
            row /= &self.std;
        }
        Ok(())
    }
}

/// Iterates over an epoch in mini-batches: shuffles the sample order from a seeded generator and
/// gathers each batch's rows into buffers it reuses, so an epoch allocates nothing once the
/// first batch has been served.
#[derive(Debug)]
pub struct Batcher<F> {
    order: Vec<usize>,
    batch_size: usize,
    x: Array2<F>,
    labels: Vec<usize>,
    rng: Xoshiro256PlusPlus,
}

impl<F: Scalar> Batcher<F> {
    /// A batcher over `samples` samples in batches of `batch_size` (the last may be shorter),
    /// shuffled by a generator seeded with `seed`.
    pub fn new(samples: usize, batch_size: usize, seed: u64) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::Config("batch size must be at least 1".into()));
        }
        Ok(Batcher {
            order: (0..samples).collect(),
            batch_size,
            x: Array2::zeros((0, 0)),
            labels: Vec::new(),
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        })
    }

    /// Number of batches in an epoch.
    pub fn batches(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }

    /// A new epoch's order: a permutation of the samples drawn from the generator. The order
    /// depends only on the generator's state, so a checkpoint of [`rng`](Self::rng) resumes the
    /// same sequence of epochs.
    pub fn shuffle(&mut self) {
        self.order.iter_mut().enumerate().for_each(|(i, o)| *o = i);
        self.order.shuffle(&mut self.rng);
    }

    /// The shuffling generator (to save in a checkpoint).
    pub fn rng(&self) -> &Xoshiro256PlusPlus {
        &self.rng
    }

    /// Replaces the shuffling generator (when resuming from a checkpoint).
    pub fn set_rng(&mut self, rng: Xoshiro256PlusPlus) {
        self.rng = rng;
    }

    /// Gathers batch number `index` of the current order from `data`.
    pub fn batch(
        &mut self,
        data: &Classification<F>,
        index: usize,
    ) -> Result<(ArrayView2<'_, F>, &[usize])> {
        if data.len() != self.order.len() {
            return Err(Error::shape(
                "batcher data",
                format!("{} samples", self.order.len()),
                format!("{}", data.len()),
            ));
        }
        let start = index * self.batch_size;
        let rows = self
            .order
            .get(start..(start + self.batch_size).min(self.order.len()));
        let rows = rows.filter(|r| !r.is_empty()).ok_or_else(|| {
            Error::Config(format!(
                "batch {index} is past the end of the epoch ({} batches)",
                self.batches()
            ))
        })?;
        let cols = data.x.ncols();
        if self.x.ncols() != cols || self.x.nrows() < self.batch_size {
            self.x = Array2::zeros((self.batch_size, cols));
        }
        self.labels.clear();
        for (i, &r) in rows.iter().enumerate() {
            self.x.row_mut(i).assign(&data.x.row(r));
            self.labels.push(data.labels[r]);
        }
        Ok((self.x.slice(ndarray::s![..rows.len(), ..]), &self.labels))
    }
}

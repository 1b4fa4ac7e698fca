//! Loading, splitting, scaling and batching data sets.

use crate::collective::{self, Communicator};
use crate::loss::Target;
use crate::{Error, Result, Scalar};
use ndarray::{Array1, Array2, ArrayView2, Axis, s};
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

    /// Reads a CSV file with a header row (see [`Table::from_csv`]) whose labels are class
    /// indices; a label that is not a whole number is an error naming its line and column.
    pub fn from_csv(path: impl AsRef<Path>, label_column: Option<&str>) -> Result<Self> {
        let path = path.as_ref();
        let table = Table::from_csv(path, label_column)?;
        let labels = table
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                l.parse::<usize>().map_err(|_| Error::Data {
                    path: path.to_owned(),
                    line: i as u64 + 2,
                    column: table.label_column,
                    reason: format!("label {l:?} is not a class index"),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Classification {
            x: table.features.mapv(F::of),
            labels,
        })
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

    /// [`fit`](Self::fit) over every rank's rows together, for data-parallel training on
    /// shards ([`FitOptions::sharded`](crate::train::FitOptions::sharded)): each rank passes
    /// its own shard and every rank gets the same means and (population) standard deviations,
    /// those of all the shards' rows. Sums are taken in `f64`: the columns' sums, then their
    /// squared deviations from the means, each reduced over the ranks. Every rank must call it;
    /// shards of different widths are an error on every rank.
    pub fn fit_shared(x: ArrayView2<'_, F>, comm: &dyn Communicator) -> Result<Self> {
        let n = x.ncols();
        let mut width = [n as u64];
        collective::broadcast(comm, &mut width, 0)?;
        let same = if width[0] == n as u64 {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "rank {} holds {n} features, rank 0 {}: every shard must have the same",
                comm.rank(),
                width[0]
            )))
        };
        collective::agree(comm, same)?;
        let mut sums = vec![0.0f64; n + 1];
        for row in x.rows() {
            sums.iter_mut().zip(row).for_each(|(s, v)| *s += v.as_f64());
        }
        sums[n] = x.nrows() as f64;
        comm.all_reduce_f64(&mut sums)?;
        let count = sums[n];
        if count == 0.0 {
            return Err(Error::Config("cannot fit a standardizer on no rows".into()));
        }
        let mean: Vec<f64> = sums[..n].iter().map(|s| s / count).collect();
        let mut squares = vec![0.0f64; n];
        for row in x.rows() {
            for ((s, v), m) in squares.iter_mut().zip(row).zip(&mean) {
                *s += (v.as_f64() - m) * (v.as_f64() - m);
            }
        }
        comm.all_reduce_f64(&mut squares)?;
        let std = squares.iter().map(|s| {
            let s = (s / count).sqrt();
            F::of(if s > 0.0 { s } else { 1.0 })
        });
        Ok(Standardizer {
            mean: mean.iter().map(|&m| F::of(m)).collect(),
            std: std.collect(),
        })
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

/// Samples and their targets, for [`Sequential::fit_with`](crate::Sequential::fit_with) and
/// [`Batcher::gather`].
#[derive(Debug, Clone, Copy)]
pub struct Dataset<'a, F> {
    /// Features, `(samples, inputs)`.
    pub x: ArrayView2<'a, F>,
    /// Targets, one per sample.
    pub y: Target<'a, F>,
}

impl<'a, F: Scalar> Dataset<'a, F> {
    /// A data set of features and targets.
    pub fn new(x: ArrayView2<'a, F>, y: impl Into<Target<'a, F>>) -> Result<Self> {
        let y = y.into();
        if y.len() != x.nrows() {
            return Err(Error::shape(
                "data set targets",
                format!("{} targets", x.nrows()),
                format!("{}", y.len()),
            ));
        }
        Ok(Dataset { x, y })
    }

    /// Splits off the last `fraction` of the samples (rounded) as a validation set, as Keras's
    /// `validation_split`: `(training, validation)`, with no validation set when it would be empty.
    pub fn holdout(self, fraction: f64) -> Result<(Self, Option<Self>)> {
        if !(0.0..1.0).contains(&fraction) {
            return Err(Error::Config(format!(
                "validation_fraction {fraction} is not in [0, 1)"
            )));
        }
        let n = self.x.nrows();
        let n_val = ((n as f64 * fraction).round() as usize).min(n.saturating_sub(1));
        if n_val == 0 {
            return Ok((self, None));
        }
        let (train, val) = self.split_at(n - n_val);
        Ok((train, Some(val)))
    }

    /// The samples in `rows` (a range within the data set).
    pub(crate) fn rows(self, rows: std::ops::Range<usize>) -> Self {
        self.split_at(rows.end).0.split_at(rows.start).1
    }

    pub(crate) fn split_at(self, at: usize) -> (Self, Self) {
        let (xa, xb) = self.x.split_at(Axis(0), at);
        let (ya, yb) = match self.y {
            Target::Classes(c) => (Target::Classes(&c[..at]), Target::Classes(&c[at..])),
            Target::Values(v) => {
                let (a, b) = v.split_at(Axis(0), at);
                (Target::Values(a), Target::Values(b))
            }
        };
        (Dataset { x: xa, y: ya }, Dataset { x: xb, y: yb })
    }
}

/// Reusable buffers that batches of a data set's rows are gathered into.
#[derive(Debug)]
struct Gather<F> {
    x: Array2<F>,
    values: Array2<F>,
    classes: Vec<usize>,
}

impl<F: Scalar> Gather<F> {
    fn new() -> Self {
        Gather {
            x: Array2::zeros((0, 0)),
            values: Array2::zeros((0, 0)),
            classes: Vec::new(),
        }
    }

    fn gather<'b>(
        &'b mut self,
        data: &Dataset<'_, F>,
        rows: &[usize],
    ) -> (ArrayView2<'b, F>, Target<'b, F>) {
        let n = rows.len();
        if self.x.nrows() < n || self.x.ncols() != data.x.ncols() {
            self.x = Array2::zeros((n, data.x.ncols()));
        }
        for (i, &r) in rows.iter().enumerate() {
            self.x.row_mut(i).assign(&data.x.row(r));
        }
        let target = match data.y {
            Target::Classes(c) => {
                self.classes.clear();
                self.classes.extend(rows.iter().map(|&r| c[r]));
                Target::Classes(&self.classes)
            }
            Target::Values(v) => {
                if self.values.nrows() < n || self.values.ncols() != v.ncols() {
                    self.values = Array2::zeros((n, v.ncols()));
                }
                for (i, &r) in rows.iter().enumerate() {
                    self.values.row_mut(i).assign(&v.row(r));
                }
                Target::Values(self.values.slice(s![..n, ..]))
            }
        };
        (self.x.slice(s![..n, ..]), target)
    }
}

/// Iterates over an epoch in mini-batches: shuffles the sample order from a seeded generator and
/// gathers each batch's rows into buffers it reuses, so an epoch allocates nothing once the
/// first batch has been served.
#[derive(Debug)]
pub struct Batcher<F> {
    order: Vec<usize>,
    batch_size: usize,
    buffers: Gather<F>,
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
            buffers: Gather::new(),
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
        let data = Dataset::new(data.x.view(), &data.labels[..])?;
        match self.gather(&data, index)? {
            (x, Target::Classes(labels)) => Ok((x, labels)),
            (_, Target::Values(_)) => unreachable!("class targets gather as classes"),
        }
    }

    /// Gathers batch number `index` of the current order from `data`, whatever its targets.
    pub fn gather<'b>(
        &'b mut self,
        data: &Dataset<'_, F>,
        index: usize,
    ) -> Result<(ArrayView2<'b, F>, Target<'b, F>)> {
        self.gather_part(data, index, None)
    }

    /// The number of samples in batch number `index` (0 past the end of the epoch).
    pub fn batch_len(&self, index: usize) -> usize {
        let start = index.saturating_mul(self.batch_size).min(self.order.len());
        (self.order.len() - start).min(self.batch_size)
    }

    /// Gathers the samples `part` of batch number `index` (a range within
    /// [`batch_len`](Self::batch_len)), or all of them: a rank's share of a global batch.
    pub(crate) fn gather_part<'b>(
        &'b mut self,
        data: &Dataset<'_, F>,
        index: usize,
        part: Option<std::ops::Range<usize>>,
    ) -> Result<(ArrayView2<'b, F>, Target<'b, F>)> {
        if data.x.nrows() != self.order.len() {
            return Err(Error::shape(
                "batcher data",
                format!("{} samples", self.order.len()),
                format!("{}", data.x.nrows()),
            ));
        }
        let start = index.saturating_mul(self.batch_size);
        let rows = self
            .order
            .get(start..start.saturating_add(self.batch_size).min(self.order.len()));
        let rows = rows.filter(|r| !r.is_empty()).ok_or_else(|| {
            Error::Config(format!(
                "batch {index} is past the end of the epoch ({} batches)",
                self.order.len().div_ceil(self.batch_size)
            ))
        })?;
        let rows = match part {
            None => rows,
            Some(p) => rows.get(p.clone()).ok_or_else(|| {
                Error::Config(format!(
                    "samples {p:?} of batch {index}, which holds {}",
                    rows.len()
                ))
            })?,
        };
        Ok(self.buffers.gather(data, rows))
    }
}

/// A data set as read from a file: numeric features and each sample's label as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Features, `(samples, features)`.
    pub features: Array2<f64>,
    /// The label of each sample, as text.
    pub labels: Vec<String>,
    /// The feature columns' names.
    pub feature_names: Vec<String>,
    /// The label column's name.
    pub label_name: String,
    /// The label column's 1-based position in the file (after the features for files without
    /// columns).
    pub label_column: usize,
}

impl Table {
    /// Reads a data file by its name: IDX (`*-idx3-ubyte`, optionally `.gz`, with the labels
    /// from the matching `*-labels-idx1-ubyte` file) or else CSV with a header.
    pub fn read(path: impl AsRef<Path>, label: Option<&str>) -> Result<Self> {
        let path = path.as_ref();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.contains("idx3-ubyte") {
            Self::from_idx(path)
        } else if name.ends_with(".npz") {
            Self::from_npz(path)
        } else if name.ends_with(".npy") {
            Self::from_npy(path)
        } else {
            Self::from_csv(path, label)
        }
    }

    /// Reads a CSV file with a header row: the column named `label` (or else the last) holds the
    /// labels, as integers or any text; every other column must be numeric. A bad cell, a ragged
    /// row or an empty file is an error naming the file, line and column.
    pub fn from_csv(path: impl AsRef<Path>, label: Option<&str>) -> Result<Self> {
        Self::csv(path.as_ref(), Some(label))
    }

    /// Reads a CSV file with a header row whose every column is a feature, as data to predict
    /// on: `labels` is empty, `label_name` empty and `label_column` 0.
    pub fn from_csv_unlabelled(path: impl AsRef<Path>) -> Result<Self> {
        Self::csv(path.as_ref(), None)
    }

    /// A CSV file; `label` is `None` for a file without a label column, else the label
    /// column's name (`Some(None)`: the last column).
    fn csv(path: &Path, label: Option<Option<&str>>) -> Result<Self> {
        let io = Error::io(path);
        let data_err = |line: u64, column: usize, reason: String| Error::Data {
            path: path.to_owned(),
            line,
            column,
            reason,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(file);
        let header = reader
            .headers()
            .map_err(|e| data_err(1, 1, e.to_string()))?
            .clone();
        if header.len() < 1 + usize::from(label.is_some()) {
            return Err(data_err(
                1,
                1,
                match label {
                    Some(_) => "need a header with at least one feature column and a label column",
                    None => "need a header with at least one feature column",
                }
                .into(),
            ));
        }
        // Past the last column when there is no label column.
        let label_col = match label {
            Some(Some(name)) => header
                .iter()
                .position(|h| h.trim() == name)
                .ok_or_else(|| data_err(1, 1, format!("no column named {name:?}")))?,
            Some(None) => header.len() - 1,
            None => header.len(),
        };
        let width = header.len() - usize::from(label.is_some());
        let mut rows = 0;
        let mut values = Vec::new();
        let mut labels = Vec::new();
        for (row, record) in reader.records().enumerate() {
            let line = row as u64 + 2;
            let record = record.map_err(|e| data_err(line, 1, e.to_string()))?;
            rows += 1;
            for (col, cell) in record.iter().enumerate() {
                let cell = cell.trim();
                if col == label_col {
                    if cell.is_empty() {
                        return Err(data_err(line, col + 1, "empty label".into()));
                    }
                    labels.push(cell.to_string());
                } else {
                    let v = cell
                        .parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| {
                            data_err(line, col + 1, format!("{cell:?} is not a finite number"))
                        })?;
                    values.push(v);
                }
            }
        }
        if rows == 0 {
            return Err(data_err(2, 1, "the file has a header but no rows".into()));
        }
        let features = Array2::from_shape_vec((rows, width), values)
            .map_err(|e| data_err(1, 1, e.to_string()))?;
        Ok(Table {
            features,
            labels,
            feature_names: header
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != label_col)
                .map(|(_, h)| h.to_string())
                .collect(),
            label_name: header.get(label_col).unwrap_or_default().to_string(),
            label_column: if label.is_some() { label_col + 1 } else { 0 },
        })
    }

    /// Reads a NumPy `.npz` archive (compressed or not) with the features in an array named
    /// `x` (2-d) and the labels in `y` (1-d, integers or numbers), of any common dtype.
    pub fn from_npz(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bad = |reason: String| Error::Data {
            path: path.to_owned(),
            line: 0,
            column: 0,
            reason,
        };
        let file = std::fs::File::open(path).map_err(Error::io(path))?;
        let mut npz = ndarray_npy::NpzReader::new(file).map_err(|e| bad(e.to_string()))?;
        let names = npz.names().map_err(|e| bad(e.to_string()))?;
        let find = |want: &str| {
            names
                .iter()
                .find(|n| n.trim_end_matches(".npy") == want)
                .cloned()
        };
        let x_name =
            find("x").ok_or_else(|| bad(format!("no array named `x` (found {names:?})")))?;
        let y_name =
            find("y").ok_or_else(|| bad(format!("no array named `y` (found {names:?})")))?;
        let features = npz_matrix(&mut npz, &x_name).map_err(|e| bad(format!("array `x`: {e}")))?;
        let labels = npz_labels(&mut npz, &y_name).map_err(|e| bad(format!("array `y`: {e}")))?;
        if labels.len() != features.nrows() {
            return Err(bad(format!(
                "{} labels for {} samples",
                labels.len(),
                features.nrows()
            )));
        }
        Ok(Table {
            feature_names: (0..features.ncols()).map(|i| format!("x{i}")).collect(),
            label_column: features.ncols() + 1,
            features,
            labels,
            label_name: "y".into(),
        })
    }

    /// Reads a NumPy `.npy` file of features (2-d) without labels, for predictions.
    pub fn from_npy(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bad = |reason: String| Error::Data {
            path: path.to_owned(),
            line: 0,
            column: 0,
            reason,
        };
        macro_rules! try_read {
            ($($t:ty),*) => {{
                let mut errors: Vec<String> = Vec::new();
                let mut out = None;
                $(
                    if out.is_none() {
                        match ndarray_npy::read_npy::<_, Array2<$t>>(path) {
                            Ok(a) => out = Some(a.mapv(|v| v as f64)),
                            Err(e) => errors.push(e.to_string()),
                        }
                    }
                )*
                out.ok_or_else(|| bad(errors.join("; ")))
            }};
        }
        let features = try_read!(f64, f32, u8, i64, i32)?;
        Ok(Table {
            feature_names: (0..features.ncols()).map(|i| format!("x{i}")).collect(),
            labels: Vec::new(),
            label_column: features.ncols() + 1,
            features,
            label_name: "y".into(),
        })
    }

    /// Reads IDX images (`*-images-idx3-ubyte[.gz]`, the MNIST family) as pixel features, with
    /// the labels from the file of the same name with `labels-idx1` in place of `images-idx3`.
    pub fn from_idx(images: impl AsRef<Path>) -> Result<Self> {
        let images = images.as_ref();
        let name = images.to_string_lossy();
        let labels_path = std::path::PathBuf::from(name.replace("images-idx3", "labels-idx1"));
        let (dims, pixels) = read_idx(images)?;
        let (ldims, labels) = read_idx(&labels_path)?;
        let bad = |path: &Path, reason: String| Error::Data {
            path: path.to_owned(),
            line: 0,
            column: 0,
            reason,
        };
        if dims.len() != 3 || ldims.len() != 1 {
            return Err(bad(
                images,
                format!(
                    "expected 3-d images and 1-d labels, found {} and {} dimensions",
                    dims.len(),
                    ldims.len()
                ),
            ));
        }
        if dims[0] != ldims[0] {
            return Err(bad(
                &labels_path,
                format!("{} labels for {} images", ldims[0], dims[0]),
            ));
        }
        let width = dims[1] * dims[2];
        let features = Array2::from_shape_vec(
            (dims[0], width),
            pixels.into_iter().map(f64::from).collect(),
        )
        .map_err(|e| bad(images, e.to_string()))?;
        Ok(Table {
            features,
            labels: labels.iter().map(|l| l.to_string()).collect(),
            feature_names: (0..width).map(|i| format!("p{i}")).collect(),
            label_name: "label".into(),
            label_column: width + 1,
        })
    }
}

/// Reads an unsigned-byte IDX file (gzip-compressed when its name ends in `.gz`): its dimensions
/// and data. The dimensions are checked against the bytes present before anything is allocated.
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    use std::io::Read;
    let io = Error::io(path);
    let bad = |reason: String| Error::Data {
        path: path.to_owned(),
        line: 0,
        column: 0,
        reason,
    };
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        // A gzip stream is bounded by the IDX sizes checked below; 1 GiB caps a bomb.
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(1 << 30)
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("gzip: {e}")))?;
        out
    } else {
        raw
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (bad magic number)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "IDX element type 0x{:02x}; crank reads unsigned bytes (0x08)",
            bytes[2]
        )));
    }
    let n_dims = bytes[3] as usize;
    let header = 4 + 4 * n_dims;
    if n_dims == 0 || bytes.len() < header {
        return Err(bad("truncated IDX header".into()));
    }
    let dims: Vec<usize> = (0..n_dims)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let total = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    match total {
        Some(t) if t == bytes.len() - header => Ok((dims, bytes[header..].to_vec())),
        _ => Err(bad(format!(
            "dimensions {dims:?} do not match the {} data bytes",
            bytes.len() - header
        ))),
    }
}

/// A 2-d array of any common dtype from an `.npz` archive, as `f64`.
fn npz_matrix<R: std::io::Read + std::io::Seek>(
    npz: &mut ndarray_npy::NpzReader<R>,
    name: &str,
) -> std::result::Result<Array2<f64>, String> {
    macro_rules! attempt {
        ($($t:ty),*) => {{
            let mut errors: Vec<String> = Vec::new();
            $(
                match npz.by_name::<ndarray::OwnedRepr<$t>, ndarray::Ix2>(name) {
                    Ok(a) => return Ok(a.mapv(|v| v as f64)),
                    Err(e) => errors.push(e.to_string()),
                }
            )*
            Err(errors.join("; "))
        }};
    }
    attempt!(f64, f32, u8, i64, i32)
}

/// A 1-d label array from an `.npz` archive, as text (integers without a decimal point).
fn npz_labels<R: std::io::Read + std::io::Seek>(
    npz: &mut ndarray_npy::NpzReader<R>,
    name: &str,
) -> std::result::Result<Vec<String>, String> {
    macro_rules! attempt {
        ($($t:ty),*) => {{
            let mut errors: Vec<String> = Vec::new();
            $(
                match npz.by_name::<ndarray::OwnedRepr<$t>, ndarray::Ix1>(name) {
                    Ok(a) => return Ok(a.iter().map(|v| v.to_string()).collect()),
                    Err(e) => errors.push(e.to_string()),
                }
            )*
            Err(errors.join("; "))
        }};
    }
    attempt!(i64, i32, u8, f64, f32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_csv_without_a_label_column_reads_as_features() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, "a,b\n1,2\n3,4.5\n").unwrap();
        let t = Table::from_csv_unlabelled(&path).unwrap();
        assert_eq!(t.features, ndarray::array![[1.0, 2.0], [3.0, 4.5]]);
        assert!(t.labels.is_empty());
        assert_eq!((t.feature_names.len(), t.label_column), (2, 0));
        // With a label column the last column is the label.
        let t = Table::from_csv(&path, None).unwrap();
        assert_eq!(
            (t.features.ncols(), t.labels.clone()),
            (1, vec!["2".to_string(), "4.5".into()])
        );
        std::fs::write(&path, "a,b\n1,x\n").unwrap();
        let e = Table::from_csv_unlabelled(&path).unwrap_err().to_string();
        assert!(
            e.contains(":2:2") && e.contains("not a finite number"),
            "{e}"
        );
        std::fs::write(&path, "a\n").unwrap();
        let e = Table::from_csv_unlabelled(&path).unwrap_err().to_string();
        assert!(e.contains("no rows"), "{e}");
    }

    use super::*;

    #[test]
    fn idx_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("t-images-idx3-ubyte");
        let labels = dir.path().join("t-labels-idx1-ubyte");
        let mut img = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        img.extend(0..12u8);
        std::fs::write(&images, &img).unwrap();
        std::fs::write(&labels, [0, 0, 8, 1, 0, 0, 0, 2, 7, 3]).unwrap();
        let t = Table::read(&images, None).unwrap();
        assert_eq!(t.features.dim(), (2, 6));
        assert_eq!(t.features[[1, 5]], 11.0);
        assert_eq!(t.labels, vec!["7", "3"]);
        // Truncated data, a hostile dimension, a wrong type.
        std::fs::write(&images, &img[..20]).unwrap();
        assert!(
            Table::read(&images, None)
                .unwrap_err()
                .to_string()
                .contains("do not match")
        );
        img[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        std::fs::write(&images, &img).unwrap();
        assert!(Table::read(&images, None).is_err());
        std::fs::write(&images, [0, 0, 0x0d, 1, 0, 0, 0, 0]).unwrap();
        assert!(
            Table::read(&images, None)
                .unwrap_err()
                .to_string()
                .contains("element type")
        );
    }
}

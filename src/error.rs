//! The crate's one error type.

use std::path::PathBuf;

/// Shorthand for `Result<T, crank::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in crank. Each message says what went wrong and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An array did not have the shape an operation needs.
    #[error("shape mismatch at {at}: expected {expected}, found {found}")]
    Shape {
        /// Where the mismatch was found, e.g. `layer 1 (dense_1) input`.
        at: String,
        /// The shape that was expected, e.g. `(batch, 64)`.
        expected: String,
        /// The shape that was given.
        found: String,
    },
    /// A NaN or an infinity where only finite numbers make sense.
    #[error("non-finite value in {what}{}", step.map(|s| format!(" at step {s}")).unwrap_or_default())]
    NonFinite {
        /// What held the value: the input (with row and column), a layer's output, the loss.
        what: String,
        /// The training step (0-based count of completed steps), when training.
        step: Option<u64>,
    },
    /// Training diverged: a loss or gradient went non-finite. The model keeps the weights from
    /// before that step.
    #[error("training diverged at epoch {epoch}, batch {batch}: {source}")]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based batch within the epoch.
        batch: usize,
        /// What went non-finite.
        #[source]
        source: Box<Error>,
    },
    /// A target that does not fit the loss or the network's output.
    #[error("invalid target for {loss}: {reason}")]
    Target {
        /// The loss that was asked for.
        loss: &'static str,
        /// What is wrong with the target.
        reason: String,
    },
    /// A model or optimizer was configured with values that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A model description (JSON or YAML architecture) that cannot be used.
    #[error("model description, {at}: {reason}")]
    Spec {
        /// Where: `layer 2 (hidden)`, `model`, `YAML`, ...
        at: String,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// A saved model or checkpoint that cannot be read: wrong magic, a newer version,
    /// truncated or trailing bytes, a tensor that does not fit the architecture.
    #[error("{format} file, {at}: {reason}")]
    File {
        /// The format: `"JSON model"`, `"bincode model"`, `"safetensors"`, `"checkpoint"`.
        format: &'static str,
        /// Where in the file: `header`, `layer 1 (out) weights`, ...
        at: String,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Another rank of a data-parallel run failed, so this one stopped too (see
    /// [`collective::agree`](crate::collective::agree)); the failing rank's own error says why.
    #[error("rank {rank} of {size} {reason}")]
    Rank {
        /// The first rank that failed.
        rank: usize,
        /// The number of ranks.
        size: usize,
        /// What happened there, as far as this rank knows.
        reason: String,
    },
    /// A data file has a value crank cannot use.
    #[error("{}:{line}:{column}: {reason}", path.display())]
    Data {
        /// The file.
        path: PathBuf,
        /// 1-based line number (the header is line 1).
        line: u64,
        /// 1-based column number.
        column: usize,
        /// What is wrong with the value.
        reason: String,
    },
}

impl Error {
    /// An I/O error on `path`, for `map_err`: `File::open(path).map_err(Error::io(path))`.
    pub(crate) fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> Error + Copy + '_ {
        move |source| Error::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// An error in a model description, at `at` (a layer, `preprocessing`, a file).
    pub(crate) fn spec(at: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Spec {
            at: at.into(),
            reason: reason.to_string(),
        }
    }

    /// A shape error; `expected` and `found` are printed as given.
    pub(crate) fn shape(
        at: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Error::Shape {
            at: at.into(),
            expected: expected.into(),
            found: found.into(),
        }
    }
}

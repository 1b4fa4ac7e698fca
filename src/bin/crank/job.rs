//! The processes a command runs on: this one alone, or the ranks of an MPI job (`mpirun -np N
//! crank train ...`, with the Cargo feature `mpi`).

use crate::Result;
use crank::collective::{Communicator, SingleProcess};
use std::path::{Path, PathBuf};

/// The placeholder in a data path that makes each rank read a file of its own (a shard).
pub(crate) const RANK: &str = "{rank}";

/// This rank's file for `path`: `{rank}` replaced by the rank's number, and whether it was
/// there (the data is sharded).
pub(crate) fn rank_path(path: &Path, comm: &dyn Communicator) -> (PathBuf, bool) {
    let text = path.to_string_lossy();
    if text.contains(RANK) {
        (
            PathBuf::from(text.replace(RANK, &comm.rank().to_string())),
            true,
        )
    } else {
        (path.to_path_buf(), false)
    }
}

/// What a rank whose command failed because another rank failed returns: the failing rank
/// prints the reason, so this one exits non-zero without a message of its own.
pub(crate) const ELSEWHERE: &str = "another rank failed";

/// Whether `mpirun` (Open MPI, or MPICH's Hydra) started this process: they set these.
fn launched_by_mpirun() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// The job this process belongs to: the MPI world when `mpirun` started it, else a single
/// process.
pub(crate) fn start() -> Result<Box<dyn Communicator>> {
    match launched_by_mpirun() {
        #[cfg(feature = "mpi")]
        Some(_) => crank::collective::Mpi::init()
            .map(|m| Box::new(m) as Box<dyn Communicator>)
            .map_err(|e| e.to_string()),
        #[cfg(not(feature = "mpi"))]
        Some(n) if n > 1 => Err(format!(
            "mpirun started {n} copies of a crank built without the `mpi` feature: each \
             would train alone and write the same files (build with `--features mpi`)"
        )),
        _ => Ok(Box::new(SingleProcess)),
    }
}

/// Makes every rank agree on a step's outcome (see `crank::collective::agree`): a rank that
/// failed keeps its message, the others return [`ELSEWHERE`].
pub(crate) fn agree<T>(comm: &dyn Communicator, outcome: Result<T>) -> Result<T> {
    let mut mine = None;
    let outcome = outcome.map_err(|e| {
        mine = Some(e);
        crank::Error::Config(String::new())
    });
    crank::collective::agree(comm, outcome).map_err(|_| mine.unwrap_or_else(|| ELSEWHERE.into()))
}

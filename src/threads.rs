//! One place to set how many threads crank uses.

use crate::{Error, Result};

/// Sets the threads crank uses: rayon's global pool, which runs the kernels and splits large
/// GEMMs (the GEMM backends, OpenBLAS included, run single-threaded inside it). Call it once,
/// before any training or inference: rayon's global pool can be set only before it is first used
/// (`RAYON_NUM_THREADS` does the same from the environment).
pub fn set_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::Config("thread count must be at least 1".into()));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| Error::Config(format!("cannot set the thread count: {e}")))?;
    Ok(())
}

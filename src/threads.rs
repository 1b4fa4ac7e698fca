//! One place to set how many threads crank uses.

use crate::{Error, Result};

#[cfg(feature = "openblas")]
unsafe extern "C" {
    fn openblas_set_num_threads(n: std::ffi::c_int);
}

/// Sets the threads for crank's kernels (rayon's global pool) and, under the `openblas` feature,
/// for OpenBLAS's GEMM. Call it once, before any training or inference: rayon's global pool can
/// be set only before it is first used (`RAYON_NUM_THREADS` does the same from the
/// environment). The pure-Rust GEMM reads `MATMUL_NUM_THREADS` from the environment at its first
/// product; set that variable for it.
pub fn set_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::Config("thread count must be at least 1".into()));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| Error::Config(format!("cannot set the thread count: {e}")))?;
    #[cfg(feature = "openblas")]
    // SAFETY: takes a thread count; OpenBLAS clamps it to what it was built for.
    unsafe {
        openblas_set_num_threads(n as std::ffi::c_int)
    };
    Ok(())
}

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

/// Runs `f` on one of rayon's threads when it will fork work there, else on the caller's.
///
/// A parallel kernel or split product started from a thread outside the pool hands its work to
/// the pool and sleeps until it is done: each such call pays for waking a worker and then the
/// caller. Started from inside the pool it is a `join`, whose second half the other workers
/// steal, and which the forking thread runs itself if nobody has taken it. A training step
/// forks several times, so it moves to the pool once (`parallel`: the step has work large
/// enough to fork) rather than at every fork. With one thread, or already inside the pool,
/// `f` runs here.
pub(crate) fn on_pool<R: Send>(parallel: bool, f: impl FnOnce() -> R + Send) -> R {
    if parallel && rayon::current_thread_index().is_none() && rayon::current_num_threads() > 1 {
        rayon::scope(|_| f())
    } else {
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::on_pool;

    #[test]
    fn work_that_forks_moves_onto_the_pool_once() {
        // From outside the pool: only parallel work moves, and only when there are threads.
        assert_eq!(on_pool(false, rayon::current_thread_index), None);
        let moved = on_pool(true, rayon::current_thread_index);
        assert_eq!(moved.is_some(), rayon::current_num_threads() > 1);
        // Already on a pool's thread: it stays on that thread.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            let here = std::thread::current().id();
            assert_eq!(on_pool(true, || std::thread::current().id()), here);
        });
    }
}

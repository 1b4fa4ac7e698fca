//! One place to set how many threads crank uses.

use crate::{Error, Result};

/// Sets the threads crank uses: rayon's global pool, which runs the kernels and splits large
/// GEMMs (the GEMM backends, OpenBLAS included, run single-threaded inside it). Call it once,
/// before any training or inference: rayon's global pool can be set only before it is first used
/// (`RAYON_NUM_THREADS` does the same from the environment).
///
/// The pool's `n` threads are its own; a call from any other thread hands its work to them and
/// waits. See [`set_threads_here`] for a pool that the calling thread is one of.
pub fn set_threads(n: usize) -> Result<()> {
    build_global(Some(n), false)
}

/// [`set_threads`] with the calling thread as one of the pool's threads (rayon's
/// `use_current_thread`): `n` in all, the caller and `n − 1` others, or rayon's default count
/// (`RAYON_NUM_THREADS`, else one per core) for `None`.
///
/// A call that uses more than one thread, made from a thread outside the pool, hands its work
/// to the pool and sleeps until it is done, which costs the wake-up of a worker and then of the
/// caller: on two threads, a tenth to a fifth of a small batch's time (docs/design.md). Called
/// from the thread that set the pool, crank runs on that thread and forks from there, as
/// PyTorch and OpenBLAS count their calling thread among their threads. Use it where one thread
/// makes the calls (a training loop, a command line tool, a benchmark). Calls from other threads
/// still work, but only the `n − 1` others serve them (with one thread, the calling thread
/// itself): with many calling threads, [`set_threads`] is the better choice. An error if the
/// pool exists already or this thread belongs to another rayon pool.
pub fn set_threads_here(n: Option<usize>) -> Result<()> {
    build_global(n, true)
}

/// Builds rayon's global pool: of `n` threads (rayon's default for `None`), the caller one of
/// them when `here`.
fn build_global(n: Option<usize>, here: bool) -> Result<()> {
    if n == Some(0) {
        return Err(Error::Config("thread count must be at least 1".into()));
    }
    // rayon refuses a thread of another pool, but only once it has taken the global pool's
    // one chance to be built, after which every use of the global pool panics: refuse first.
    if here && rayon::current_thread_index().is_some() {
        return Err(Error::Config(
            "cannot set the thread count here: this thread already belongs to a rayon pool".into(),
        ));
    }
    let builder = rayon::ThreadPoolBuilder::new().num_threads(n.unwrap_or(0));
    let builder = if here {
        builder.use_current_thread()
    } else {
        builder
    };
    builder
        .build_global()
        .map_err(|e| Error::Config(format!("cannot set the thread count: {e}")))
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

thread_local! {
    /// Set while this thread runs a share of work that was already split over the pool's
    /// threads ([`alone`]).
    static ALONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the products and kernels it calls unsplit, on this thread alone: for a share of
/// work that was split over the threads already (a block of a batch's rows through every
/// layer), where splitting again would only hand pieces of it to threads that have shares of
/// their own.
pub(crate) fn alone<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            ALONE.set(self.0);
        }
    }
    let _reset = Reset(ALONE.replace(true));
    f()
}

/// The threads a product or kernel called here may split its work over: rayon's current count,
/// or 1 inside [`alone`].
#[inline]
pub(crate) fn available() -> usize {
    if ALONE.get() {
        1
    } else {
        rayon::current_num_threads()
    }
}

#[cfg(test)]
mod tests {
    use super::{on_pool, set_threads, set_threads_here};

    /// Inside `alone` the products and kernels see one thread, also in nested calls, and the
    /// count is back once it returns.
    #[test]
    fn alone_holds_this_thread_to_itself_until_it_returns() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            assert_eq!(super::available(), 3);
            super::alone(|| {
                assert_eq!(super::available(), 1);
                assert!(!crate::kernels::parallel(1 << 20));
                super::alone(|| assert_eq!(super::available(), 1));
                assert_eq!(super::available(), 1);
                // Another thread is not held.
                std::thread::scope(|s| {
                    s.spawn(|| assert!(!super::ALONE.get())).join().unwrap();
                });
            });
            assert_eq!(super::available(), 3);
            assert!(crate::kernels::parallel(1 << 20));
        });
    }

    #[test]
    fn no_threads_is_a_configuration_error() {
        for e in [set_threads(0), set_threads_here(Some(0))] {
            let e = e.unwrap_err();
            assert!(matches!(e, crate::Error::Config(_)), "{e}");
            assert!(e.to_string().contains("at least 1"), "{e}");
        }
    }

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

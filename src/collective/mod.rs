//! Collective communication for data-parallel training: the few operations
//! [`Sequential::fit_distributed`](crate::Sequential::fit_distributed) needs (sum all-reduce,
//! broadcast, barrier, rank and size), behind one trait.
//!
//! - [`SingleProcess`]: one rank, every operation a no-op (what [`fit`](crate::Sequential::fit)
//!   uses).
//! - [`ThreadGroup`]: ranks as threads of one process, for tests and experiments; it sums in rank
//!   order, so every rank gets bitwise the same result.
//! - `Mpi` (Cargo feature `mpi`): the ranks of an MPI job (Open MPI or MPICH, through the
//!   [`mpi`](https://docs.rs/mpi) crate), started with `mpirun`.
//!
//! ```
//! use crank::collective::{Communicator, ThreadGroup};
//!
//! let sums: Vec<Vec<f64>> = std::thread::scope(|s| {
//!     let ranks: Vec<_> = ThreadGroup::new(3)?
//!         .into_iter()
//!         .map(|comm| {
//!             s.spawn(move || {
//!                 let mut v = vec![comm.rank() as f64, 1.0];
//!                 comm.all_reduce_f64(&mut v).map(|()| v)
//!             })
//!         })
//!         .collect();
//!     ranks.into_iter().map(|h| h.join().unwrap()).collect::<crank::Result<_>>()
//! })?;
//! assert!(sums.iter().all(|v| v == &[3.0, 3.0]));
//! # Ok::<(), crank::Error>(())
//! ```

#[cfg(feature = "mpi")]
mod mpi;
mod threads;

#[cfg(feature = "mpi")]
pub use self::mpi::Mpi;
pub use threads::ThreadGroup;

use crate::{Error, Result, Scalar};

/// The operations data-parallel training needs from the processes (or threads) it runs on.
///
/// Every rank must call the same operations in the same order with buffers of the same
/// length; an operation returns when every rank has made its call. Sums are taken in an order
/// that depends only on the number of ranks, so every rank gets bitwise the same result, run
/// after run (MPI promises this for its own reductions on one installation; [`ThreadGroup`]
/// sums in rank order).
pub trait Communicator {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn size(&self) -> usize;

    /// Replaces `buf` on every rank by the element-wise sum of every rank's `buf`.
    fn all_reduce_f32(&self, buf: &mut [f32]) -> Result<()>;

    /// Replaces `buf` on every rank by the element-wise sum of every rank's `buf`.
    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<()>;

    /// Copies rank `root`'s `buf` into every other rank's.
    fn broadcast(&self, buf: &mut [u8], root: usize) -> Result<()>;

    /// Returns when every rank has called it.
    fn barrier(&self) -> Result<()>;
}

/// One process on its own: rank 0 of 1, where every collective leaves its buffer as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_f32(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_f64(&self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _buf: &mut [u8], _root: usize) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// Sums `buf` over every rank, in `F`.
pub fn all_reduce<F: Scalar>(comm: &dyn Communicator, buf: &mut [F]) -> Result<()> {
    // `F` is f32 or f64 (`Scalar` is sealed): its size tells which, and bytemuck's checked cast
    // turns the slice into that type without copying.
    if size_of::<F>() == size_of::<f32>() {
        comm.all_reduce_f32(bytemuck::cast_slice_mut(buf))
    } else {
        comm.all_reduce_f64(bytemuck::cast_slice_mut(buf))
    }
}

/// Copies rank `root`'s `buf` into every rank's, whatever its element type.
pub fn broadcast<T: bytemuck::Pod>(
    comm: &dyn Communicator,
    buf: &mut [T],
    root: usize,
) -> Result<()> {
    comm.broadcast(bytemuck::cast_slice_mut(buf), root)
}

/// Makes every rank agree on whether a step succeeded everywhere: each rank passes its own
/// outcome, and gets it back if every rank succeeded. A rank that failed gets its own error; the
/// others get [`Error::Rank`] naming the first rank that failed. Without this, a rank that
/// stopped would leave the others waiting in their next collective.
pub fn agree<T>(comm: &dyn Communicator, outcome: Result<T>) -> Result<T> {
    let size = comm.size();
    if size == 1 {
        return outcome;
    }
    let mut failed = vec![0.0f64; size];
    if outcome.is_err() {
        failed[comm.rank()] = 1.0;
    }
    comm.all_reduce_f64(&mut failed)?;
    match (outcome, failed.iter().position(|&f| f != 0.0)) {
        (Err(e), _) => Err(e),
        (Ok(v), None) => Ok(v),
        (Ok(_), Some(rank)) => Err(Error::Rank {
            rank,
            size,
            reason: "failed (its own error says why)".into(),
        }),
    }
}

/// The part of `len` items that rank `rank` of `size` takes: contiguous, in rank order, sizes
/// differing by at most one (the first `len % size` ranks take one more).
pub fn share(len: usize, rank: usize, size: usize) -> std::ops::Range<usize> {
    let size = size.max(1);
    let (base, extra) = (len / size, len % size);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_batch_in_rank_order() {
        for len in 0..20 {
            for size in 1..6 {
                let parts: Vec<_> = (0..size).map(|r| share(len, r, size)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[size - 1].end, len);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                    assert!(w[0].len() >= w[1].len() && w[0].len() <= w[1].len() + 1);
                }
            }
        }
        assert_eq!(share(10, 2, 4), 6..8);
        assert_eq!(share(1, 1, 2), 1..1);
    }

    #[test]
    fn a_single_process_leaves_buffers_alone() {
        let comm = SingleProcess;
        let mut v = [1.5f32, 2.0];
        all_reduce(&comm, &mut v).unwrap();
        broadcast(&comm, &mut v, 0).unwrap();
        assert_eq!(v, [1.5, 2.0]);
        assert_eq!((comm.rank(), comm.size()), (0, 1));
        let e = agree::<()>(&comm, Err(Error::Config("x".into()))).unwrap_err();
        assert!(matches!(e, Error::Config(_)));
    }

    #[test]
    fn every_rank_learns_which_rank_failed() {
        let outcomes: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = ThreadGroup::new(3)
                .unwrap()
                .into_iter()
                .map(|comm| {
                    s.spawn(move || {
                        let mine = if comm.rank() == 1 {
                            Err(Error::Config("bad data on rank 1".into()))
                        } else {
                            Ok(())
                        };
                        match agree(&comm, mine) {
                            Ok(()) => "ok".to_string(),
                            Err(e) => e.to_string(),
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(outcomes[1], "invalid configuration: bad data on rank 1");
        for r in [0, 2] {
            assert_eq!(outcomes[r], "rank 1 of 3 failed (its own error says why)");
        }
    }
}

//! The ranks of an MPI job, through the `mpi` crate (rsmpi).

use super::Communicator;
use crate::{Error, Result};
use ::mpi::collective::SystemOperation;
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::{Communicator as _, CommunicatorCollectives, Root};
use std::cell::RefCell;

/// This process's place in an MPI job (`MPI_COMM_WORLD`), started with `mpirun -np N`.
///
/// [`Mpi::init`] initialises MPI once per process; MPI is finalised when the value is dropped.
/// A program run without `mpirun` is a job of one rank. MPI reports its own failures (a rank
/// that died, a broken link) by ending the job, as its default error handler does, so the
/// operations here never hang on a lost rank: `mpirun` exits non-zero.
pub struct Mpi {
    world: SimpleCommunicator,
    /// A copy of the piece to send: the `mpi` crate's all-reduce takes separate send and
    /// receive buffers (no `MPI_IN_PLACE`). Reused from call to call; `u64`s, so that it is
    /// aligned for `f32` and `f64`.
    send: RefCell<Vec<u64>>,
    // Dropped last: finalises MPI.
    _universe: ::mpi::environment::Universe,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi {{ rank: {}, size: {} }}", self.rank(), self.size())
    }
}

impl Mpi {
    /// Initialises MPI and joins its world. An error if MPI was initialised already.
    pub fn init() -> Result<Mpi> {
        let universe = ::mpi::initialize()
            .ok_or_else(|| Error::Config("MPI is initialised already in this process".into()))?;
        Ok(Mpi {
            world: universe.world(),
            send: RefCell::new(Vec::new()),
            _universe: universe,
        })
    }

    /// Ends every rank of the job with `code` (`MPI_Abort`): for a rank that cannot tell the
    /// others it failed, so that none waits for it.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

/// The bytes an all-reduce sums per call. A large buffer is reduced in pieces of this size:
/// each piece's copy to send stays in cache, and Open MPI's shared-memory transport reduced a
/// 12.6 MB buffer faster in 1 MiB pieces than in one call, and M's gradients no slower
/// (BENCHMARKS.md).
const PIECE_BYTES: usize = 1 << 20;

impl Mpi {
    /// Sums `buf` over the ranks in pieces of [`PIECE_BYTES`], each copied to the send buffer
    /// first. The pieces depend only on the length, so every rank cuts them alike.
    fn sum<T>(&self, buf: &mut [T]) -> Result<()>
    where
        T: bytemuck::Pod + ::mpi::datatype::Equivalence,
    {
        count(buf.len())?;
        let piece = PIECE_BYTES / size_of::<T>();
        let mut send = self.send.borrow_mut();
        send.resize(PIECE_BYTES / size_of::<u64>(), 0);
        let send: &mut [u8] = bytemuck::cast_slice_mut(&mut send[..]);
        for chunk in buf.chunks_mut(piece) {
            let bytes = bytemuck::cast_slice::<T, u8>(chunk);
            let mine = &mut send[..bytes.len()];
            mine.copy_from_slice(bytes);
            let mine: &[T] = bytemuck::cast_slice(mine);
            self.world
                .all_reduce_into(mine, chunk, SystemOperation::sum());
        }
        Ok(())
    }
}

/// MPI counts elements in a C `int`.
fn count(len: usize) -> Result<()> {
    if i32::try_from(len).is_err() {
        return Err(Error::Config(format!(
            "an MPI collective of {len} elements is more than a C int counts"
        )));
    }
    Ok(())
}

impl Communicator for Mpi {
    fn rank(&self) -> usize {
        // MPI ranks are never negative.
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.sum(buf)
    }

    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.sum(buf)
    }

    fn broadcast(&self, buf: &mut [u8], root: usize) -> Result<()> {
        count(buf.len())?;
        if root >= self.size() {
            return Err(Error::Config(format!(
                "broadcast from rank {root} in a job of {}",
                self.size()
            )));
        }
        self.world.process_at_rank(root as i32).broadcast_into(buf);
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }
}

//! Ranks as threads of one process.

use super::Communicator;
use crate::{Error, Result};
use std::sync::{Arc, Barrier, Mutex, PoisonError};

/// One rank of a group of threads that stand in for the processes of an MPI job: each thread
/// holds one `ThreadGroup` and calls the same collectives in the same order. Sums are taken in
/// rank order, so every rank gets bitwise the same result.
///
/// Meant for tests and for trying data-parallel training on one machine; it copies every
/// buffer through shared memory under a lock, so it is no faster than one process.
#[derive(Debug)]
pub struct ThreadGroup {
    rank: usize,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    size: usize,
    barrier: Barrier,
    /// Each rank's contribution to the current collective, as bytes.
    slots: Mutex<Vec<Vec<u8>>>,
}

impl ThreadGroup {
    /// The `size` ranks of a new group, rank 0 first: hand one to each thread.
    pub fn new(size: usize) -> Result<Vec<ThreadGroup>> {
        if size == 0 {
            return Err(Error::Config("a group needs at least one rank".into()));
        }
        let shared = Arc::new(Shared {
            size,
            barrier: Barrier::new(size),
            slots: Mutex::new(vec![Vec::new(); size]),
        });
        Ok((0..size)
            .map(|rank| ThreadGroup {
                rank,
                shared: Arc::clone(&shared),
            })
            .collect())
    }

    /// Puts this rank's bytes in its slot, waits for every rank, lets `read` see every slot,
    /// and waits again so that no slot is overwritten before every rank has read it.
    fn exchange(&self, mine: &[u8], read: impl FnOnce(&[Vec<u8>])) {
        {
            let mut slots = self
                .shared
                .slots
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let slot = &mut slots[self.rank];
            slot.clear();
            slot.extend_from_slice(mine);
        }
        self.shared.barrier.wait();
        {
            let slots = self
                .shared
                .slots
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            read(&slots);
        }
        self.shared.barrier.wait();
    }

    /// Sums every rank's `buf` in rank order into `buf`.
    fn sum<T: bytemuck::Pod + std::ops::Add<Output = T>>(&self, buf: &mut [T]) -> Result<()> {
        let mut result = Ok(());
        let mine: Vec<u8> = bytemuck::cast_slice(buf).to_vec();
        self.exchange(&mine, |slots| {
            if slots.iter().any(|s| s.len() != size_of_val(buf)) {
                result = Err(Error::Config(format!(
                    "all-reduce on rank {}: the ranks' buffers differ in length",
                    self.rank
                )));
                return;
            }
            for (i, v) in buf.iter_mut().enumerate() {
                let at = |s: &Vec<u8>| -> T {
                    bytemuck::pod_read_unaligned(&s[i * size_of::<T>()..(i + 1) * size_of::<T>()])
                };
                *v = slots[1..].iter().fold(at(&slots[0]), |acc, s| acc + at(s));
            }
        });
        result
    }
}

impl Communicator for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_reduce_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.sum(buf)
    }

    fn all_reduce_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.sum(buf)
    }

    fn broadcast(&self, buf: &mut [u8], root: usize) -> Result<()> {
        if root >= self.shared.size {
            return Err(Error::Config(format!(
                "broadcast from rank {root} in a group of {}",
                self.shared.size
            )));
        }
        let mut result = Ok(());
        let mine = if self.rank == root {
            buf.to_vec()
        } else {
            Vec::new()
        };
        self.exchange(&mine, |slots| {
            if slots[root].len() == buf.len() {
                buf.copy_from_slice(&slots[root]);
            } else {
                result = Err(Error::Config(format!(
                    "broadcast on rank {}: {} bytes sent, {} expected",
                    self.rank,
                    slots[root].len(),
                    buf.len()
                )));
            }
        });
        result
    }

    fn barrier(&self) -> Result<()> {
        self.shared.barrier.wait();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collective::{all_reduce, broadcast};

    /// Runs `f` on every rank of a new group of `size` threads and returns what each returned.
    fn on_ranks<T: Send>(size: usize, f: impl Fn(ThreadGroup) -> T + Sync) -> Vec<T> {
        std::thread::scope(|s| {
            let handles: Vec<_> = ThreadGroup::new(size)
                .unwrap()
                .into_iter()
                .map(|c| s.spawn(|| f(c)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn sums_in_rank_order_and_broadcasts_from_the_root() {
        let out = on_ranks(3, |c| {
            // 1e16 + 1 - 1e16 in rank order is 0 in f64 (the 1 is lost), whichever rank asks.
            let mut v = [[1e16, 1.0, -1e16][c.rank()], c.rank() as f64];
            all_reduce(&c, &mut v).unwrap();
            let mut f = [c.rank() as f32 + 0.5];
            all_reduce(&c, &mut f).unwrap();
            let mut b = [c.rank() as u64 * 10 + 1; 2];
            broadcast(&c, &mut b, 2).unwrap();
            c.barrier().unwrap();
            (v, f, b)
        });
        for (v, f, b) in out {
            assert_eq!(v, [0.0, 3.0]);
            assert_eq!(f, [4.5]);
            assert_eq!(b, [21, 21]);
        }
    }

    #[test]
    fn mismatched_buffers_are_errors_not_garbage() {
        let out = on_ranks(2, |c| {
            let mut v = vec![1.0f32; 2 + c.rank()];
            let reduce = c.all_reduce_f32(&mut v).is_err();
            let mut b = vec![0u8; 3 + c.rank()];
            let bcast = c.broadcast(&mut b, 0);
            (reduce, bcast.map_err(|e| e.to_string()))
        });
        assert!(out[0].0 && out[1].0);
        assert!(out[0].1.is_ok());
        assert_eq!(
            out[1].1.as_ref().unwrap_err(),
            "invalid configuration: broadcast on rank 1: 3 bytes sent, 4 expected"
        );
        assert!(ThreadGroup::new(0).is_err());
        let single = ThreadGroup::new(1).unwrap().pop().unwrap();
        assert!(single.broadcast(&mut [0u8], 1).is_err());
    }
}

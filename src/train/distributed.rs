//! The data-parallel parts of [`Sequential::fit_distributed`]: joining the ranks, a step over
//! shares of a global batch, validation over shares, and the check that the ranks' weights agree.

use super::{Callback, FitOptions};
use crate::collective::{self, Communicator, agree, all_reduce, share};
use crate::data::{Batcher, Dataset};
use crate::loss::Loss;
use crate::metrics::{Metric, Tally};
use crate::model::{Share, Workspace};
use crate::optim::Optimizer;
use crate::{Error, Result, Scalar, Sequential, kernels, threads};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::hash::{Hash, Hasher};

/// How the samples of a data-parallel run's global batches lie over the ranks.
pub(super) enum Layout {
    /// Every rank holds the whole data set and shuffles it alike; each global batch is split
    /// into contiguous shares ([`share`]).
    Replicated,
    /// Each rank holds a shard of its own; a global batch is every rank's next local batch.
    Sharded {
        /// Every rank's number of samples.
        shards: Vec<usize>,
        /// Every rank's share of a global batch.
        locals: Vec<usize>,
        /// Global batches per epoch: enough for the largest shard.
        steps: usize,
        /// Each rank's samples in the current global batch (reused, so a step allocates
        /// nothing).
        lens: Vec<usize>,
    },
}

impl Layout {
    /// The layout `options` ask for, with every rank's shard size learnt from the others.
    pub fn new(comm: &dyn Communicator, samples: usize, options: &FitOptions) -> Result<Layout> {
        if !options.sharded {
            return Ok(Layout::Replicated);
        }
        let (rank, size) = (comm.rank(), comm.size());
        if options.batch_size < size {
            return Err(Error::Config(format!(
                "a batch of {} samples cannot be shared by {size} ranks that each hold a shard",
                options.batch_size
            )));
        }
        // Counts are exact in f64 far beyond any data set's size.
        let mut counts = vec![0.0f64; size];
        counts[rank] = samples as f64;
        comm.all_reduce_f64(&mut counts)?;
        let shards: Vec<usize> = counts.iter().map(|&c| c as usize).collect();
        let locals: Vec<usize> = (0..size)
            .map(|r| share(options.batch_size, r, size).len())
            .collect();
        let steps = shards
            .iter()
            .zip(&locals)
            .map(|(&n, &l)| n.div_ceil(l))
            .max()
            .unwrap_or(0);
        Ok(Layout::Sharded {
            shards,
            locals,
            steps,
            lens: vec![0; size],
        })
    }

    /// The batch size of `rank`'s batcher: the global batch, or its local share of it.
    pub fn local_batch(&self, options: &FitOptions, rank: usize) -> usize {
        match self {
            Layout::Replicated => options.batch_size,
            Layout::Sharded { locals, .. } => locals[rank],
        }
    }

    /// A new epoch's order. Replicated, the shared generator shuffles every rank's data alike;
    /// sharded, each rank shuffles its shard with a stream of its own (the shared generator
    /// jumped `rank + 1` times), and the shared generator then jumps far past every rank's
    /// stream for the next epoch.
    pub fn shuffle<F: Scalar>(
        &self,
        batcher: &mut Batcher<F>,
        shared: &mut Xoshiro256PlusPlus,
        rank: usize,
    ) {
        match self {
            Layout::Replicated => batcher.shuffle(),
            Layout::Sharded { .. } => {
                let mut own = shared.clone();
                for _ in 0..=rank {
                    own.jump();
                }
                batcher.set_rng(own);
                batcher.shuffle();
                shared.long_jump();
            }
        }
    }
}

impl<F: Scalar> Sequential<F> {
    /// Starts a data-parallel run: checks that every rank holds data of the same size (sharded:
    /// of the same features, and a validation set if rank 0 has one) and a model of the same
    /// size, and gives every rank rank 0's weights, statistics and step count.
    pub(super) fn join_ranks(
        &mut self,
        comm: &dyn Communicator,
        train: &Dataset<'_, F>,
        validation: Option<&Dataset<'_, F>>,
        sharded: bool,
    ) -> Result<()> {
        let mut values = 0;
        self.visit_state_mut(&mut |t| values += t.len());
        // Shards differ in size; whether there is a validation set does not.
        let (rows, val) = match (sharded, validation) {
            (false, _) => (train.x.nrows(), validation.map_or(0, |v| v.x.nrows())),
            (true, v) => (0, usize::from(v.is_some())),
        };
        let mine = [
            rows as u64,
            train.x.ncols() as u64,
            val as u64,
            values as u64,
            self.steps(),
        ];
        let mut root = mine;
        collective::broadcast(comm, &mut root, 0)?;
        let same = if mine[..4] == root[..4] {
            Ok(())
        } else if sharded {
            let val = |v: u64| [", no validation set", " and a validation set"][usize::from(v > 0)];
            Err(Error::Config(format!(
                "rank {} holds samples of {} features{} and {} weights; rank 0 holds {}{} and \
                 {}: every rank's shard must have the same features, and the same model",
                comm.rank(),
                mine[1],
                val(mine[2]),
                mine[3],
                root[1],
                val(root[2]),
                root[3]
            )))
        } else {
            Err(Error::Config(format!(
                "rank {} holds {} training samples of {} features, {} validation samples and \
                 {} weights; rank 0 holds {}, {}, {} and {}: every rank must read the same data \
                 and model",
                comm.rank(),
                mine[0],
                mine[1],
                mine[2],
                mine[3],
                root[0],
                root[1],
                root[2],
                root[3]
            )))
        };
        agree(comm, same)?;
        // Same sizes everywhere: each tensor goes from rank 0 straight into every rank's.
        let mut result = Ok(());
        self.visit_state_mut(&mut |t| {
            if result.is_ok() {
                result = collective::broadcast(comm, t, 0);
            }
        });
        result?;
        self.set_steps(root[4]);
        Ok(())
    }

    /// One epoch of a data-parallel run: each global batch split among the ranks, the
    /// gradients summed over them, the same update on every rank. Returns the epoch's mean loss
    /// over every sample and this rank's tally.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn train_epoch_shared(
        &mut self,
        comm: &dyn Communicator,
        layout: &mut Layout,
        train: &Dataset<'_, F>,
        batcher: &mut Batcher<F>,
        loss: &Loss,
        optimizer: &mut dyn Optimizer,
        options: &FitOptions,
        epoch: usize,
        callback: &mut dyn Callback,
    ) -> Result<(f64, Tally)> {
        let (rank, size) = (comm.rank(), comm.size());
        let n_batches = match layout {
            Layout::Replicated => batcher.batches(),
            Layout::Sharded { steps, .. } => *steps,
        };
        let mut tally = Tally::new(&options.metrics);
        let (mut loss_sum, mut samples) = (0.0, 0);
        let min_share = self.min_train_batch();
        // [this rank's loss sum, then one failure flag per rank], summed over the ranks.
        let mut status = vec![0.0f64; 1 + size];
        for b in 0..n_batches {
            // This rank's samples of the global batch (within its batcher's batch `b`), the
            // global batch's size, and where this rank's samples start in it.
            let (part, rows, first_row) = match layout {
                Layout::Replicated => {
                    let rows = batcher.batch_len(b);
                    // A small last batch goes to as many ranks as can take a share the layers
                    // accept (two samples with BatchNorm); the others add nothing.
                    let active = size.min((rows / min_share).max(1));
                    let part = if rank < active {
                        share(rows, rank, active)
                    } else {
                        rows..rows
                    };
                    let first = part.start;
                    (part, rows, first)
                }
                Layout::Sharded {
                    shards,
                    locals,
                    lens,
                    ..
                } => {
                    // A used-up shard adds nothing; nor does a remainder the layers cannot
                    // take alone.
                    for ((len, &n), &l) in lens.iter_mut().zip(shards.iter()).zip(locals.iter()) {
                        let left = n.saturating_sub(b * l).min(l);
                        *len = if left < min_share { 0 } else { left };
                    }
                    let first: usize = lens[..rank].iter().sum();
                    (0..lens[rank], lens.iter().sum(), first)
                }
            };
            if rows == 0 {
                // Every rank's remainder too small for the layers: no step (all ranks agree,
                // from the same sizes).
                continue;
            }
            let outcome = if part.is_empty() {
                // A last batch smaller than the number of ranks (or a used-up shard) leaves
                // this rank with nothing to do. It adds nothing to the sums.
                self.visit_reduced_mut(&mut |t, _| t.fill(F::zero()));
                Ok(0.0)
            } else {
                // Only this rank's share is gathered.
                batcher
                    .gather_part(train, b, Some(part.clone()))
                    .and_then(|(x, y)| {
                        let parallel = self.forks(part.len());
                        threads::on_pool(parallel, || {
                            let share = Share {
                                first_row: first_row as u64,
                                weight: F::of(part.len() as f64 / rows as f64),
                            };
                            let value = self.gradients(x, y, loss, share)?;
                            tally.add(self.train_output(), &y);
                            Ok(value.as_f64())
                        })
                    })
            };
            status.fill(0.0);
            match &outcome {
                Ok(v) => status[0] = v * part.len() as f64,
                Err(_) => status[1 + rank] = 1.0,
            }
            comm.all_reduce_f64(&mut status)?;
            if let Err(e) = outcome {
                return Err(super::diverged(e, epoch, b + 1));
            }
            if let Some(failed) = status[1..].iter().position(|&f| f != 0.0) {
                return Err(Error::Rank {
                    rank: failed,
                    size,
                    reason: format!("failed at epoch {epoch}, batch {}", b + 1),
                });
            }
            self.reduce_gradients(comm, part.len() as f64 / rows as f64)?;
            let parallel = self.forks(0);
            threads::on_pool(parallel, || self.clip_and_update(options, optimizer))?;
            let value = status[0] / rows as f64;
            loss_sum += status[0];
            samples += rows;
            callback.on_batch_end(epoch, b + 1, n_batches, value);
        }
        Ok((loss_sum / samples.max(1) as f64, tally))
    }

    /// Sums this rank's gradients (already weighed by its share of the global batch) and its
    /// running statistics, weighed here, over the ranks: the gradient of the global batch's
    /// mean loss, and the share-weighted mean of the ranks' running statistics.
    fn reduce_gradients(&mut self, comm: &dyn Communicator, weight: f64) -> Result<()> {
        let w = F::of(weight);
        let mut result = Ok(());
        let mut reduce = |t: &mut [F], statistic: bool| {
            if result.is_ok() {
                if statistic {
                    kernels::map_inplace(t, |v| v * w);
                }
                result = all_reduce(comm, t);
            }
        };
        self.visit_reduced_mut(&mut reduce);
        result
    }

    /// The mean loss and the tally over a validation set that the ranks share: each evaluates
    /// its share, and the sums are reduced.
    pub(super) fn evaluate_shared(
        &self,
        comm: &dyn Communicator,
        data: &Dataset<'_, F>,
        sharded: bool,
        loss: &Loss,
        metrics: &[Metric],
        ws: &mut Workspace<F>,
    ) -> Result<(f64, Tally)> {
        let n = data.x.nrows();
        // Sharded, each rank's whole validation shard; else its share of the one set.
        let part = if sharded {
            0..n
        } else {
            share(n, comm.rank(), comm.size())
        };
        let local = data.rows(part.clone());
        let outcome = self.evaluate_tally(&local, loss, metrics, ws);
        let (mean, mut tally) = agree(comm, outcome)?;
        let mut sums = [mean * part.len() as f64, part.len() as f64];
        comm.all_reduce_f64(&mut sums)?;
        tally.reduce(comm, self.output_size())?;
        Ok((sums[0] / sums[1].max(1.0), tally))
    }

    /// Checks that every rank's weights are bitwise rank 0's, as they must be after every step
    /// of a data-parallel run (an MPI whose sums differed between ranks would break that).
    pub(super) fn check_same_weights(&self, comm: &dyn Communicator, epoch: usize) -> Result<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for layer in self.tensor_views() {
            for t in layer {
                bytemuck::cast_slice::<F, u8>(&t.data.values()).hash(&mut hasher);
            }
        }
        let mine = [hasher.finish()];
        let mut root = mine;
        collective::broadcast(comm, &mut root, 0)?;
        let outcome = if mine == root {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "after epoch {epoch}, the weights on rank {} differ from rank 0's",
                comm.rank()
            )))
        };
        agree(comm, outcome)
    }
}

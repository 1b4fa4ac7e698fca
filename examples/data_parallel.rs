//! Data-parallel training speed: samples/s of `fit_distributed` at a fixed global batch, and the
//! time each step spends in the gradients' all-reduce. Run under MPI, one thread per rank:
//!
//! ```text
//! cargo build --release --features mpi --example data_parallel
//! RAYON_NUM_THREADS=1 mpirun -np 2 target/release/examples/data_parallel M 256
//! ```
//!
//! Arguments: the workload (`M`: 784-512-512-10, `L`: 1024-1024-1024-1024-10; ReLU, softmax
//! cross-entropy), the global batch, the optimizer (`sgd`, the default, or `adam`), and the
//! epochs to time (default 3) of 32 batches each. With SGD, one rank is plain `fit` (its
//! products fold the update); more ranks reduce their gradients first. Prints one JSON line from
//! rank 0. `bench/mpi/scaling.py` runs it on 1 and 2 ranks.

#[cfg(feature = "mpi")]
fn main() -> crank::Result<()> {
    use crank::collective::{Communicator, Mpi};
    use crank::train::{Dataset, FitOptions, FitState};
    use crank::{Activation, Adam, Loss, Optimizer, Sequential, Sgd};
    use ndarray::Array2;
    use std::time::Instant;

    let args: Vec<String> = std::env::args().collect();
    let workload = args.get(1).map_or("M", String::as_str);
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(256);
    let adam = match args.get(3).map_or("sgd", String::as_str) {
        "sgd" => false,
        "adam" => true,
        other => {
            return Err(crank::Error::Config(format!(
                "optimizer {other}: sgd or adam"
            )));
        }
    };
    let epochs: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(3);
    let widths: &[usize] = match workload {
        "M" => &[784, 512, 512, 10],
        "L" => &[1024, 1024, 1024, 1024, 10],
        other => {
            return Err(crank::Error::Config(format!("workload {other}: M or L")));
        }
    };
    let mpi = Mpi::init()?;
    let comm = Timed {
        inner: &mpi,
        seconds: std::cell::Cell::new(0.0),
        calls: std::cell::Cell::new(0),
    };
    let mut b = Sequential::<f32>::builder(widths[0]);
    for (i, &w) in widths[1..].iter().enumerate() {
        let last = i + 2 == widths.len();
        b = b.dense(
            w,
            if last {
                Activation::Identity
            } else {
                Activation::Relu
            },
        );
    }
    let mut model = b.seed(1).build()?;
    let n = batch * 32;
    let x = Array2::from_shape_fn((n, widths[0]), |(i, j)| {
        ((i * 31 + j * 17) % 23) as f32 / 11.0 - 1.0
    });
    let y: Vec<usize> = (0..n).map(|i| (i * 7) % 10).collect();
    let data = Dataset::new(x.view(), &y[..])?;
    let mut optimizer: Box<dyn Optimizer> = if adam {
        Box::new(Adam::new(1e-4)?)
    } else {
        Box::new(Sgd::new(1e-3)?)
    };
    let options = |epochs| FitOptions {
        epochs,
        batch_size: batch,
        ..Default::default()
    };
    let mut state = FitState::new(&options(1));
    // One epoch to warm up (buffers, caches), then the timed ones.
    let fit = |model: &mut Sequential<f32>,
               state: &mut FitState<f32>,
               optimizer: &mut dyn Optimizer,
               e| {
        model.fit_distributed(
            &comm,
            data,
            None,
            &Loss::SoftmaxCrossEntropy,
            optimizer,
            &options(e),
            &mut (),
            state,
        )
    };
    fit(&mut model, &mut state, optimizer.as_mut(), 1)?;
    comm.seconds.set(0.0);
    comm.calls.set(0);
    let start = Instant::now();
    let history = fit(&mut model, &mut state, optimizer.as_mut(), 1 + epochs)?;
    let seconds = start.elapsed().as_secs_f64();
    let steps = (epochs * 32) as f64;
    if mpi.rank() == 0 {
        println!(
            "{{\"workload\": \"{workload}\", \"global_batch\": {batch}, \"optimizer\": \"{}\", \"ranks\": {}, \
             \"threads_per_rank\": {}, \"samples_per_s\": {:.0}, \"step_ms\": {:.3}, \
             \"allreduce_ms_per_step\": {:.3}, \"allreduce_calls_per_step\": {:.1}, \
             \"loss\": {:.5}}}",
            if adam { "adam" } else { "sgd" },
            mpi.size(),
            rayon::current_num_threads(),
            (epochs * n) as f64 / seconds,
            seconds / steps * 1e3,
            comm.seconds.get() / steps * 1e3,
            comm.calls.get() as f64 / steps,
            history
                .epochs
                .last()
                .map_or(f64::NAN, |e| e.metrics["loss"]),
        );
    }
    Ok(())
}

/// A communicator that times the sum all-reduces it passes on.
#[cfg(feature = "mpi")]
struct Timed<'a> {
    inner: &'a dyn crank::collective::Communicator,
    seconds: std::cell::Cell<f64>,
    calls: std::cell::Cell<u64>,
}

#[cfg(feature = "mpi")]
impl Timed<'_> {
    fn time<R>(&self, f: impl FnOnce() -> R) -> R {
        let start = std::time::Instant::now();
        let r = f();
        self.seconds
            .set(self.seconds.get() + start.elapsed().as_secs_f64());
        self.calls.set(self.calls.get() + 1);
        r
    }
}

#[cfg(feature = "mpi")]
impl crank::collective::Communicator for Timed<'_> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn all_reduce_f32(&self, buf: &mut [f32]) -> crank::Result<()> {
        self.time(|| self.inner.all_reduce_f32(buf))
    }
    fn all_reduce_f64(&self, buf: &mut [f64]) -> crank::Result<()> {
        self.time(|| self.inner.all_reduce_f64(buf))
    }
    fn broadcast(&self, buf: &mut [u8], root: usize) -> crank::Result<()> {
        self.inner.broadcast(buf, root)
    }
    fn barrier(&self) -> crank::Result<()> {
        self.inner.barrier()
    }
}

#[cfg(not(feature = "mpi"))]
fn main() {
    eprintln!("build with --features mpi and run under mpirun (see the file's header)");
    std::process::exit(2);
}

//! # crank
//!
//! Define, train and ship dense neural networks on the CPU.
//!
//! crank follows the design of the blog series "Another Numpy Neural Net" (the "numpy design"
//! in these docs): [`Layer`]s with a forward and a backward pass that never update their own
//! weights, activations and losses as differentiable functions, [`Optimizer`]s that apply the
//! gradients, and a [`Sequential`] model that chains layers and trains on a [`Loss`].
//!
//! Every matrix product is a GEMM into a buffer a layer owns: faer's pure-Rust GEMM by default,
//! or OpenBLAS with the Cargo feature `openblas` (see [`backend`]). Elementwise and
//! reduction kernels run on rayon above a size threshold ([`kernels`]).
//!
//! ```
//! use crank::{Activation, Loss, Sequential, Sgd};
//! use ndarray::array;
//!
//! // XOR
//! let x = array![[0.0f32, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]];
//! let y = vec![0usize, 1, 1, 0];
//! let mut model = Sequential::<f32>::builder(2)
//!     .dense(16, Activation::Relu)
//!     .dense(2, Activation::Identity)
//!     .seed(1)
//!     .build()?;
//! let mut sgd = Sgd::new(0.5)?;
//! for _ in 0..300 {
//!     model.train_step(x.view(), &y, &Loss::SoftmaxCrossEntropy, &mut sgd)?;
//! }
//! assert_eq!(model.accuracy(x.view(), &y)?, 1.0);
//! # Ok::<(), crank::Error>(())
//! ```
//!
//! Gradients follow the numpy design's convention: a loss is the **mean** over the batch, and parameter
//! gradients are batch means (see [`loss`]).
//!
//! Threads: [`set_threads`] (or `RAYON_NUM_THREADS`) sets rayon's pool, crank's only threads: it
//! runs the kernels and splits large GEMMs, whose backends (OpenBLAS included) run
//! single-threaded inside it. [`set_threads_here`] makes the calling thread one of the pool's,
//! so that its calls start on it rather than being handed to the pool. The same seed and thread count give bitwise identical weights.

#![warn(missing_docs)]

#[cfg(feature = "openblas")]
extern crate blas_src;

pub mod activation;
mod buffer;
pub mod collective;
pub mod data;
mod error;
pub mod gemm;
pub mod io;
pub mod kernels;
pub mod layer;
pub mod loss;
mod math;
pub mod metrics;
pub mod model;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod optim;
pub mod quant;
mod scalar;
pub mod spec;
mod threads;
pub mod train;

pub use activation::Activation;
pub use error::{Error, Result};
pub use gemm::backend;
pub use layer::{Dense, Layer, Mode};
pub use loss::{Loss, Target};
pub use model::{Sequential, SequentialBuilder, Workspace};
pub use optim::{Adagrad, Adam, Optimizer, OptimizerState, RmsProp, Schedule, Scheduler, Sgd};
pub use scalar::Scalar;
pub use threads::{set_threads, set_threads_here};

/// The README's code examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

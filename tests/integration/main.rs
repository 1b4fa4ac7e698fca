//! crank's integration tests, as one test binary: every file in this folder is a module here, so
//! the crate's generic code is compiled for the tests once instead of once per file.
//!
//! Two tests keep binaries of their own: `tests/allocations.rs` installs a counting global
//! allocator, and `tests/openblas.rs` interposes the BLAS entry points; both would see the other
//! tests' calls if they shared a process.

mod checkpoint;
mod cli;
mod concurrency;
mod determinism;
mod distributed;
mod fit;
mod gradcheck;
mod helpers;
mod model_files;
#[cfg(feature = "onnx")]
mod onnx_export;
#[cfg(feature = "onnx")]
mod onnx_import;
mod optim_reference;
mod python_interop;
mod quantized;
mod torch_reference;
mod training;

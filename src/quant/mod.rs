//! Reduced-precision inference: the products of the
//! [`QuantizedDense`](crate::layer::QuantizedDense) layers (`Int8Dense` and `Bf16Dense` in
//! files) that [`Sequential::quantize`](crate::Sequential::quantize) puts in place of a trained
//! model's `Dense` layers.
//!
//! - **int8**: weights quantized once per output column (symmetric, codes in `-127..=127`),
//!   activations per row at every call (asymmetric `u8`), `u8 × i8 → i32` products, dequantized
//!   with the bias in the output pass. PyTorch's `quantize_dynamic` does the same with one scale
//!   per batch; crank's per-row scales keep a sample's prediction independent of its batch.
//! - **static int8** ([`Sequential::quantize_static`](crate::Sequential::quantize_static)):
//!   each layer's inputs are quantized with one range calibrated beforehand: the float model
//!   runs on calibration data, each layer's inputs go into a histogram of 2048 bins, and the
//!   range kept is the one whose quantization error over it (rounding inside, clipping
//!   beyond) is least, as PyTorch's `HistogramObserver` chooses.
//! - **bf16**: weights rounded to bfloat16 once, activations rounded to bfloat16 as they enter a
//!   product, `f32` sums.
//!
//! The kernels are chosen at run time from the CPU: int8 products use AVX-512 VNNI where it
//! exists, otherwise AVX-512 or AVX2 with 7-bit activations (their `vpmaddubsw` sums pairs in
//! 16 bits), otherwise portable code; bf16 products use AVX-512 BF16 `vdpbf16ps` where it
//! exists and widen to `f32` otherwise.

mod bf16;
mod calibrate;
mod int8;
#[cfg(test)]
mod tests;

pub(crate) use bf16::Bf16Weights;
pub use bf16::{bf16_to_f32, f32_to_bf16};
pub(crate) use calibrate::Histogram;
pub(crate) use int8::{Int8Weights, check_input_range, quantize_weights};

use crate::Scalar;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::fmt;
use std::thread::LocalKey;

/// A reduced precision for inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 8-bit integer weights and activations, 32-bit integer sums.
    Int8,
    /// bfloat16 weights and activations, `f32` sums.
    Bf16,
}

impl Precision {
    /// `"int8"` or `"bf16"`, as in files and on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Precision::Int8 => "int8",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "int8" | "i8" => Ok(Precision::Int8),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(crate::Error::Config(format!(
                "unknown precision {s:?}; crank quantizes to \"int8\" or \"bf16\""
            ))),
        }
    }
}

/// `v`'s first `len` values, after growing it to hold them.
fn grow<T: Default + Clone>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::default());
    }
    &mut v[..len]
}

/// Runs `f` with this thread's scratch space from `key`, lent out for the call: taken, not
/// borrowed, so that a call that waits on rayon and runs another call meanwhile gets a fresh
/// one instead of a conflict. It grows to the largest batch the thread has seen.
fn lend<S: Default + 'static, R>(
    key: &'static LocalKey<Cell<Option<S>>>,
    f: impl FnOnce(&mut S) -> R,
) -> R {
    let mut scratch = key.with(Cell::take).unwrap_or_default();
    let result = f(&mut scratch);
    key.with(|c| c.set(Some(scratch)));
    result
}

/// Runs `f` on `out` as `f32` values: `out` itself for an `f32` model; for an `f64` one,
/// `spare` (grown to fit), copied into `out` afterwards.
fn as_f32<F: Scalar, R>(out: &mut [F], spare: &mut Vec<f32>, f: impl FnOnce(&mut [f32]) -> R) -> R {
    if F::NAME == "f32" {
        return f(bytemuck::cast_slice_mut(out));
    }
    let c = grow(spare, out.len());
    let result = f(c);
    for (o, &v) in out.iter_mut().zip(c.iter()) {
        *o = F::of(f64::from(v));
    }
    result
}

/// Set in the environment (to anything but `0`) before the first quantized model is made, this
/// makes crank use its fallback kernels even where AVX-512 VNNI or BF16 exist: `rten-gemm` for
/// int8, widened `f32` for bf16. For measuring the fallbacks on a machine that has both.
pub const FALLBACK_ENV: &str = "CRANK_QUANT_FALLBACK";

fn fallback_asked() -> bool {
    std::env::var_os(FALLBACK_ENV).is_some_and(|v| v != "0")
}

/// The kernels this CPU runs for each precision, for reports: `(int8, bf16)`.
pub fn kernels() -> (&'static str, &'static str) {
    (int8::kernel_name(), bf16::kernel_name())
}

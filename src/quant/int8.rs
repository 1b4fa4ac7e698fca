//! int8 products: weights quantized per output column (symmetric, `i8`), activations per row
//! (asymmetric, `u8`, with the row's own scale and zero point), `u8 × i8 → i32` sums,
//! dequantized with the bias (and a ReLU) as they are stored.
//!
//! Two kernels, chosen at run time:
//! - **AVX-512 VNNI** (crank's own): `vpdpbusd` (four `u8 × i8` products per `i32` lane and
//!   instruction) over weights packed once into panels of 32 columns, reading the quantized
//!   rows where they are; the zero points are taken out with the weights' column sums, and the
//!   output pass is fused into the tile's store.
//! - **Everything else**: `rten-gemm` (AVX-512 or AVX2 `vpmaddubsw`, NEON, or portable code),
//!   then a dequantizing pass. Kernels without VNNI sum pairs of products in 16 bits, which
//!   saturates past `2 · 127 · 127`: there activations keep 7 bits, as fbgemm's `reduce_range`
//!   does.
//!
//! Per-row activation scales make a sample's prediction independent of the other samples in its
//! batch (PyTorch's dynamic quantization scales per batch instead).

use super::{as_f32, grow, lend};
use crate::{Error, Result, Scalar};
use rayon::prelude::*;
use rten_gemm::{GemmExecutor, GemmInputA, GemmInputB, GemmOptions, PackedBMatrix};
use rten_tensor::NdTensorView;
use std::cell::Cell;
use std::sync::OnceLock;

/// The largest weight code: symmetric, so `-128` is never used.
pub(crate) const WEIGHT_MAX: f32 = 127.0;

/// The most inputs an int8 product takes: `inputs · 255 · 127` must fit an `i32` sum.
pub(crate) const MAX_INPUTS: usize = (i32::MAX / (255 * 127)) as usize;

/// How an int8 product runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// crank's AVX-512 VNNI kernel.
    #[cfg(target_arch = "x86_64")]
    Vnni,
    /// `rten-gemm`'s best kernel for this CPU.
    Rten,
}

impl Kernel {
    /// The fastest kernel this CPU has (the fallback when [`FALLBACK_ENV`](super::FALLBACK_ENV)
    /// is set).
    pub fn detect() -> Kernel {
        static KERNEL: OnceLock<Kernel> = OnceLock::new();
        *KERNEL.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if !super::fallback_asked()
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                return Kernel::Vnni;
            }
            Kernel::Rten
        })
    }

    /// The largest activation code this kernel takes without saturating.
    pub(crate) fn levels(self) -> u8 {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni => 255,
            Kernel::Rten if executor().may_saturate() => 127,
            Kernel::Rten => 255,
        }
    }
}

/// The one `rten-gemm` executor: its kernel is chosen once, from the CPU.
fn executor() -> &'static GemmExecutor<u8, i8, i32> {
    static EXECUTOR: OnceLock<&'static GemmExecutor<u8, i8, i32>> = OnceLock::new();
    EXECUTOR.get_or_init(|| Box::leak(Box::new(GemmExecutor::default())))
}

/// The name of the int8 kernel this CPU runs.
pub fn kernel_name() -> &'static str {
    match Kernel::detect() {
        #[cfg(target_arch = "x86_64")]
        Kernel::Vnni => "avx512-vnni",
        Kernel::Rten => executor().kernel_name(),
    }
}

/// Weights `[input, output]`, row-major, quantized per output column: `w ≈ code · scale[j]`,
/// codes in `-127..=127`. A column of zeros gets scale 1. The weights must be finite.
pub(crate) fn quantize_weights<F: Scalar>(weights: &[F], outputs: usize) -> (Vec<i8>, Vec<f32>) {
    let mut amax = vec![0f32; outputs];
    for row in weights.chunks_exact(outputs.max(1)) {
        for (m, &w) in amax.iter_mut().zip(row) {
            *m = m.max(w.as_f64().abs() as f32);
        }
    }
    let scales: Vec<f32> = amax
        .iter()
        .map(|&m| if m > 0.0 { m / WEIGHT_MAX } else { 1.0 })
        .collect();
    let codes = weights
        .chunks_exact(outputs.max(1))
        .flat_map(|row| {
            row.iter().zip(&scales).map(|(&w, &s)| {
                let q = (w.as_f64() as f32 / s).round_ties_even();
                q.clamp(-WEIGHT_MAX, WEIGHT_MAX) as i8
            })
        })
        .collect();
    (codes, scales)
}

/// Lanes of the running minimum, maximum and finiteness check: four vector registers of `f32`,
/// so the loop over a row vectorises and its four chains of dependent operations overlap.
const LANES: usize = 64;

/// `2²³`: adding it to a value in `[0, 2²³)` leaves that value rounded to an integer (ties to
/// even) in the low bits of the sum's mantissa.
const ROUNDER: f32 = 8_388_608.0;

/// One row quantized to `u8`: `x ≈ (code − zero) · scale`, where the range always holds 0 (so a
/// zero, a ReLU's most common output, is exact). Returns `None` if a value is not finite.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma"
))]
fn quantize_row<F: Scalar>(x: &[F], levels: u8, codes: &mut [u8]) -> Option<(f32, u8)> {
    // The largest magnitude's bits: at least those of infinity if a value is not finite.
    let (mut lo, mut hi, mut bits) = ([0f32; LANES], [0f32; LANES], [0u32; LANES]);
    let mut chunks = x.chunks_exact(LANES);
    for chunk in &mut chunks {
        for j in 0..LANES {
            let v = chunk[j].as_f64() as f32;
            lo[j] = if v < lo[j] { v } else { lo[j] };
            hi[j] = if v > hi[j] { v } else { hi[j] };
            bits[j] = bits[j].max(v.to_bits() & 0x7fff_ffff);
        }
    }
    for (j, &v) in chunks.remainder().iter().enumerate() {
        let v = v.as_f64() as f32;
        lo[j] = if v < lo[j] { v } else { lo[j] };
        hi[j] = if v > hi[j] { v } else { hi[j] };
        bits[j] = bits[j].max(v.to_bits() & 0x7fff_ffff);
    }
    // Halving folds, which vectorise, not one long chain through every lane.
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for j in 0..width {
            lo[j] = if lo[j + width] < lo[j] {
                lo[j + width]
            } else {
                lo[j]
            };
            hi[j] = if hi[j + width] > hi[j] {
                hi[j + width]
            } else {
                hi[j]
            };
            bits[j] = bits[j].max(bits[j + width]);
        }
    }
    if bits[0] >= f32::INFINITY.to_bits() {
        return None;
    }
    let (scale, zero) = affine(lo[0], hi[0], levels);
    let to_code = Affine::new(scale, zero, levels);
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = to_code.code(v.as_f64() as f32);
    }
    Some((scale, zero))
}

/// The scale and zero point that map `[lo, hi]` (with `lo ≤ 0 ≤ hi`) onto codes
/// `0..=levels`, 0 exactly on a code. An empty range gets scale 1.
pub(crate) fn affine(lo: f32, hi: f32, levels: u8) -> (f32, u8) {
    let levels_f = f32::from(levels);
    // Each end divided first: `hi − lo` itself can overflow for finite ends.
    let scale = hi / levels_f - lo / levels_f;
    let scale = if scale > 0.0 { scale } else { 1.0 };
    let zero = (-lo / scale).round_ties_even().clamp(0.0, levels_f);
    (scale, zero as u8)
}

/// Whether `range` can be a calibrated input range: finite ends that hold 0. The one check,
/// for files (`Int8Dense`'s `input_range`) and for the product alike.
pub(crate) fn check_input_range(range: Option<[f32; 2]>) -> std::result::Result<(), String> {
    match range {
        Some([lo, hi]) if !(lo.is_finite() && hi.is_finite() && lo <= 0.0 && hi >= 0.0) => Err(
            format!("field `input_range` = [{lo}, {hi}]: the ends must be finite and hold 0"),
        ),
        _ => Ok(()),
    }
}

/// `x ↦ clamp(round(x / scale) + zero, 0, levels)`.
#[derive(Debug, Clone, Copy)]
struct Affine {
    inv: f32,
    zero: f32,
    levels: f32,
}

impl Affine {
    fn new(scale: f32, zero: u8, levels: u8) -> Affine {
        Affine {
            inv: 1.0 / scale,
            zero: f32::from(zero),
            levels: f32::from(levels),
        }
    }

    #[inline(always)]
    fn code(self, v: f32) -> u8 {
        let q = v.mul_add(self.inv, self.zero);
        let q = if q > 0.0 { q } else { 0.0 };
        let q = if q < self.levels { q } else { self.levels };
        ((q + ROUNDER).to_bits() & 0xff) as u8
    }
}

/// One row quantized with a fixed scale and zero point (a calibrated input range): values
/// beyond the range take the end codes. Returns whether every value is finite.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx512dq+avx2+fma",
    "x86_64+avx2+fma"
))]
fn quantize_row_fixed<F: Scalar>(x: &[F], to_code: Affine, codes: &mut [u8]) -> bool {
    let mut bits = [0u32; LANES];
    let mut xs = x.chunks_exact(LANES);
    let mut cs = codes.chunks_exact_mut(LANES);
    for (chunk, c) in (&mut xs).zip(&mut cs) {
        for j in 0..LANES {
            let v = chunk[j].as_f64() as f32;
            bits[j] = bits[j].max(v.to_bits() & 0x7fff_ffff);
            c[j] = to_code.code(v);
        }
    }
    for (j, (&v, c)) in xs.remainder().iter().zip(cs.into_remainder()).enumerate() {
        let v = v.as_f64() as f32;
        bits[j] = bits[j].max(v.to_bits() & 0x7fff_ffff);
        *c = to_code.code(v);
    }
    bits.iter().all(|&b| b < f32::INFINITY.to_bits())
}

/// Rows of `x` (each `cols` long) quantized into rows of `codes` (each `stride ≥ cols` long,
/// the rest zeros), `scales` and `zeros`: each with its own range ([`quantize_row`]), or with
/// the `fixed` scale and zero point; an error naming the first row with a value that is not
/// finite.
#[allow(clippy::too_many_arguments)]
pub(crate) fn quantize_rows<F: Scalar>(
    x: &[F],
    cols: usize,
    stride: usize,
    levels: u8,
    fixed: Option<(f32, u8)>,
    codes: &mut [u8],
    scales: &mut [f32],
    zeros: &mut [u8],
) -> std::result::Result<(), usize> {
    let rows_per_task = (crate::kernels::PAR_THRESHOLD / 4 / cols.max(1)).max(1);
    let run = |first: usize, x: &[F], codes: &mut [u8], scales: &mut [f32], zeros: &mut [u8]| {
        for (i, ((x, c), (s, z))) in x
            .chunks_exact(cols.max(1))
            .zip(codes.chunks_exact_mut(stride.max(1)))
            .zip(scales.iter_mut().zip(zeros.iter_mut()))
            .enumerate()
        {
            let (c, pad) = c.split_at_mut(cols);
            let (scale, zero) = match fixed {
                None => quantize_row(x, levels, c),
                Some((scale, zero)) => quantize_row_fixed(x, Affine::new(scale, zero, levels), c)
                    .then_some((scale, zero)),
            }
            .ok_or(first + i)?;
            pad.fill(0);
            (*s, *z) = (scale, zero);
        }
        Ok(())
    };
    if !crate::kernels::parallel(x.len()) || cols == 0 {
        return run(0, x, codes, scales, zeros);
    }
    x.par_chunks(rows_per_task * cols)
        .zip(codes.par_chunks_mut(rows_per_task * stride))
        .zip(scales.par_chunks_mut(rows_per_task))
        .zip(zeros.par_chunks_mut(rows_per_task))
        .enumerate()
        .try_for_each(|(t, (((x, c), s), z))| run(t * rows_per_task, x, c, s, z))
}

/// Why a product failed.
enum Failed {
    /// A value that is not finite in this row of the input.
    NonFinite(usize),
    /// The kernel refused the operands (a bug: crank checks the shapes first).
    Kernel(String),
}

/// A Dense layer's weights in int8: codes `[inputs, outputs]` (what files hold), each output
/// column's scale, and the form the kernel reads.
pub(crate) struct Int8Weights {
    pub inputs: usize,
    pub outputs: usize,
    pub codes: Vec<i8>,
    pub scales: Vec<f32>,
    /// Each column's sum of codes, zero-padded to whole panels: `Σ (a − z)·w = Σ a·w − z·Σ w`
    /// takes the rows' zero points out after the product.
    column_sums: Vec<i32>,
    /// A calibrated range of the inputs, if any: every row is quantized with its scale and
    /// zero point ([`fixed`](Self::fixed)) instead of its own.
    input_range: Option<[f32; 2]>,
    kernel: Kernel,
    packed: Packed,
}

enum Packed {
    /// For [`Kernel::Vnni`]: panels of [`PANEL`] columns holding, for every group of four
    /// inputs, each column's four codes side by side (zero-padded).
    #[cfg(target_arch = "x86_64")]
    Vnni(Vec<i8>),
    /// For [`Kernel::Rten`]: `rten-gemm`'s packed form.
    Rten(PackedBMatrix<i8>),
}

impl std::fmt::Debug for Int8Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Int8Weights")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("kernel", &self.kernel)
            .finish_non_exhaustive()
    }
}

/// Columns per packed panel: two registers of 16 `i32` sums.
const PANEL: usize = 32;
/// Rows per tile: 8 rows × 2 registers = 16 independent sums.
#[cfg(target_arch = "x86_64")]
const TILE_ROWS: usize = 8;
/// Rows per block: a block's codes stay in L2 while every panel passes over them.
const BLOCK_ROWS: usize = 64;

/// Scratch space for one int8 product, each thread's own ([`lend`]): the input's codes,
/// scales and zero points, the `i32` sums where the kernel leaves them, and an `f64` model's
/// output in `f32`.
#[derive(Default)]
struct Scratch {
    codes: Vec<u8>,
    scales: Vec<f32>,
    zeros: Vec<u8>,
    sums: Vec<i32>,
    out32: Vec<f32>,
}

thread_local! {
    static SCRATCH: Cell<Option<Scratch>> = const { Cell::new(None) };
}

impl Int8Weights {
    /// Weights from their codes `[inputs, outputs]` and per-column scales, made ready for this
    /// CPU's kernel.
    pub fn new(inputs: usize, outputs: usize, codes: Vec<i8>, scales: Vec<f32>) -> Result<Self> {
        Self::with_kernel(inputs, outputs, codes, scales, Kernel::detect())
    }

    /// As [`new`](Self::new), for a given kernel (tests run both).
    pub fn with_kernel(
        inputs: usize,
        outputs: usize,
        codes: Vec<i8>,
        scales: Vec<f32>,
        kernel: Kernel,
    ) -> Result<Self> {
        if inputs > MAX_INPUTS {
            return Err(Error::Config(format!(
                "{inputs} inputs: an int8 product takes at most {MAX_INPUTS} (its i32 sums \
                 would overflow)"
            )));
        }
        if codes.len() != inputs * outputs || scales.len() != outputs {
            return Err(Error::Config(format!(
                "int8 weights: {} codes and {} scales for [{inputs}, {outputs}]",
                codes.len(),
                scales.len()
            )));
        }
        let mut column_sums = vec![0i32; outputs.next_multiple_of(PANEL)];
        for row in codes.chunks_exact(outputs.max(1)) {
            for (s, &c) in column_sums.iter_mut().zip(row) {
                *s += i32::from(c);
            }
        }
        let packed = match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni => Packed::Vnni(pack(&codes, inputs, outputs)),
            Kernel::Rten => {
                let view = NdTensorView::try_from_data([inputs, outputs], codes.as_slice())
                    .map_err(|e| Error::Config(format!("int8 weights: {e:?}")))?;
                Packed::Rten(executor().prepack_b(view))
            }
        };
        Ok(Int8Weights {
            inputs,
            outputs,
            codes,
            scales,
            column_sums,
            input_range: None,
            kernel,
            packed,
        })
    }

    /// Quantizes every input row with one scale and zero point, those of `range` (`[lo, hi]`,
    /// finite, `lo ≤ 0 ≤ hi`: a calibrated range of the inputs), instead of each row's own;
    /// `None` goes back to each row's own.
    pub fn with_input_range(mut self, range: Option<[f32; 2]>) -> Result<Self> {
        check_input_range(range).map_err(Error::Config)?;
        self.input_range = range;
        Ok(self)
    }

    /// The calibrated input range, if any.
    pub fn input_range(&self) -> Option<[f32; 2]> {
        self.input_range
    }

    /// The scale and zero point of the calibrated range on this product's kernel, if any.
    fn fixed(&self) -> Option<(f32, u8)> {
        let levels = self.kernel.levels();
        self.input_range.map(|[lo, hi]| affine(lo, hi, levels))
    }

    /// The largest activation code of this product's kernel.
    #[cfg(test)]
    pub(crate) fn levels(&self) -> u8 {
        self.kernel.levels()
    }

    /// `out = dequantize(quantize(x) · codes) + biases` for rows of `x` (row-major, `inputs`
    /// wide) into `out` (`rows · outputs` values), followed by a ReLU when `relu` and the kernel
    /// can fuse it; returns whether it did. An error names layer `name` and the first row of `x`
    /// holding a value that is not finite.
    pub fn product<F: Scalar>(
        &self,
        name: &str,
        x: &[F],
        biases: &[f32],
        out: &mut [F],
        relu: bool,
    ) -> Result<bool> {
        let result = lend(&SCRATCH, |s| {
            let Scratch {
                codes,
                scales,
                zeros,
                sums,
                out32,
            } = s;
            let rows = x.len() / self.inputs.max(1);
            let (scales, zeros) = (grow(scales, rows), grow(zeros, rows));
            as_f32(out, out32, |c| {
                self.product_in(x, (codes, scales, zeros), sums, biases, c, relu)
            })
        });
        result.map_err(|e| match e {
            Failed::NonFinite(row) => Error::NonFinite {
                what: format!("input of layer {name} at row {row}"),
                step: None,
            },
            Failed::Kernel(reason) => {
                Error::Config(format!("layer {name}: int8 product: {reason}"))
            }
        })
    }

    /// [`product`](Self::product) into `c`, with the rows' codes, scales and zero points
    /// (`scales` and `zeros` one per row) and room for the sums.
    fn product_in<F: Scalar>(
        &self,
        x: &[F],
        (codes, scales, zeros): (&mut Vec<u8>, &mut [f32], &mut [u8]),
        sums: &mut Vec<i32>,
        biases: &[f32],
        c: &mut [f32],
        relu: bool,
    ) -> std::result::Result<bool, Failed> {
        let (k, n) = (self.inputs, self.outputs);
        let rows = scales.len();
        let (levels, fixed) = (self.kernel.levels(), self.fixed());
        let fused = match &self.packed {
            #[cfg(target_arch = "x86_64")]
            Packed::Vnni(panels) => {
                let k4 = k.next_multiple_of(4);
                let a = grow(codes, rows * k4);
                quantize_rows(x, k, k4, levels, fixed, a, scales, zeros)
                    .map_err(Failed::NonFinite)?;
                let epilogue = vnni::Epilogue {
                    column_sums: &self.column_sums,
                    column_scales: &self.scales,
                    biases,
                    relu,
                };
                let run = |a: &[u8], c: &mut [f32], scales: &[f32], zeros: &[u8]| {
                    // SAFETY: `Packed::Vnni` exists only when the CPU has AVX-512 F, BW and
                    // VNNI (`Kernel::detect`, or a test that checked it); the lengths follow
                    // from the shapes.
                    unsafe { vnni::product(a, k4, panels, c, n, scales, zeros, &epilogue) }
                };
                if crate::kernels::parallel(rows * n.max(k)) && rows > BLOCK_ROWS {
                    a.par_chunks(BLOCK_ROWS * k4)
                        .zip(c.par_chunks_mut(BLOCK_ROWS * n))
                        .zip(scales.par_chunks(BLOCK_ROWS))
                        .zip(zeros.par_chunks(BLOCK_ROWS))
                        .for_each(|(((a, c), s), z)| run(a, c, s, z));
                } else {
                    run(a, c, scales, zeros);
                }
                relu
            }
            Packed::Rten(packed) => {
                let a = grow(codes, rows * k);
                quantize_rows(x, k, k, levels, fixed, a, scales, zeros)
                    .map_err(Failed::NonFinite)?;
                let sums = grow(sums, rows * n);
                let a = NdTensorView::try_from_data([rows, k], &*a)
                    .map_err(|e| Failed::Kernel(format!("{e:?}")))?;
                // Zero points are taken out here, not by the kernel: rten-gemm 0.27's packing
                // gives every full panel of rows the first panel's zero points.
                executor()
                    .gemm(
                        sums,
                        GemmInputA::Unpacked(a),
                        GemmInputB::Packed(packed),
                        GemmOptions::default(),
                    )
                    .map_err(|e| Failed::Kernel(e.to_string()))?;
                let rows_out = Dequantize {
                    row_scales: scales,
                    row_zeros: zeros,
                    column_sums: &self.column_sums,
                    column_scales: &self.scales,
                    biases,
                };
                rows_out.run(sums, c);
                false
            }
        };
        Ok(fused)
    }
}

/// The output pass after a product whose sums ignore the rows' zero points:
/// `out[i][j] = (sums[i][j] − zero[i] · column_sums[j]) · row_scale[i] · column_scale[j] +
/// bias[j]`.
struct Dequantize<'a> {
    row_scales: &'a [f32],
    row_zeros: &'a [u8],
    column_sums: &'a [i32],
    column_scales: &'a [f32],
    biases: &'a [f32],
}

impl Dequantize<'_> {
    fn run(&self, sums: &[i32], out: &mut [f32]) {
        let n = self.column_scales.len();
        let rows_per_task = (crate::kernels::PAR_THRESHOLD / n.max(1)).max(1);
        let rows = |first: usize, sums: &[i32], out: &mut [f32]| {
            for (i, (sums, out)) in sums
                .chunks_exact(n)
                .zip(out.chunks_exact_mut(n))
                .enumerate()
            {
                let (scale, zero) = (self.row_scales[first + i], self.row_zeros[first + i]);
                let columns = (self.column_sums, self.column_scales, self.biases);
                dequantize_row(sums, scale, i32::from(zero), columns, out);
            }
        };
        if !crate::kernels::parallel(out.len()) || n == 0 {
            return rows(0, sums, out);
        }
        sums.par_chunks(rows_per_task * n)
            .zip(out.par_chunks_mut(rows_per_task * n))
            .enumerate()
            .for_each(|(t, (s, o))| rows(t * rows_per_task, s, o));
    }
}

#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn dequantize_row(
    sums: &[i32],
    scale: f32,
    zero: i32,
    (column_sums, column_scales, biases): (&[i32], &[f32], &[f32]),
    out: &mut [f32],
) {
    let columns = column_sums.iter().zip(column_scales).zip(biases);
    for ((o, &s), ((&cs, &c), &b)) in out.iter_mut().zip(sums).zip(columns) {
        let exact = s.wrapping_sub(zero.wrapping_mul(cs));
        *o = (exact as f32).mul_add(scale * c, b);
    }
}

/// Codes `[k, n]` into panels of [`PANEL`] columns: for each group of four rows, each column's
/// four codes side by side. Missing rows and columns are zeros.
#[cfg(target_arch = "x86_64")]
fn pack(codes: &[i8], k: usize, n: usize) -> Vec<i8> {
    let groups = k.div_ceil(4);
    let panels = n.div_ceil(PANEL);
    let mut out = vec![0i8; panels * groups * PANEL * 4];
    for p in 0..panels {
        for g in 0..groups {
            let base = (p * groups + g) * PANEL * 4;
            for j in 0..PANEL.min(n - p * PANEL) {
                for h in 0..4 {
                    let row = 4 * g + h;
                    if row < k {
                        out[base + 4 * j + h] = codes[row * n + p * PANEL + j];
                    }
                }
            }
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{BLOCK_ROWS, PANEL, TILE_ROWS};
    use std::arch::x86_64::*;

    /// What the output pass needs besides the sums: per column, the sum of its codes (to take
    /// out the rows' zero points), scale and bias; whether to apply a ReLU.
    pub(super) struct Epilogue<'a> {
        pub column_sums: &'a [i32],
        pub column_scales: &'a [f32],
        pub biases: &'a [f32],
        pub relu: bool,
    }

    /// `c = dequantize(a · W) + biases` (then a ReLU if asked) for the rows of `a` (`u8`
    /// codes, `k4` wide, `k4` a multiple of 4), with their scales and zero points; `W` packed
    /// by [`super::pack`], `c` rows of `n`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VNNI; `panels` must be `pack` of a matrix of at most
    /// `k4` rows and `n` columns, `c.len()` a multiple of `n` with as many rows as `a`, one
    /// scale and zero point per row; the epilogue's column sums padded to a multiple of
    /// [`PANEL`], its scales and biases `n` long.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn product(
        a: &[u8],
        k4: usize,
        panels: &[i8],
        c: &mut [f32],
        n: usize,
        scales: &[f32],
        zeros: &[u8],
        e: &Epilogue<'_>,
    ) {
        let rows = scales.len();
        let groups = k4 / 4;
        debug_assert_eq!(a.len(), rows * k4);
        debug_assert_eq!(c.len(), rows * n);
        debug_assert_eq!(zeros.len(), rows);
        debug_assert_eq!(panels.len(), n.div_ceil(PANEL) * groups * PANEL * 4);
        debug_assert!(e.column_sums.len() >= n.div_ceil(PANEL) * PANEL);
        debug_assert!(e.column_scales.len() == n && e.biases.len() == n);
        for block in (0..rows).step_by(BLOCK_ROWS) {
            let block_end = (block + BLOCK_ROWS).min(rows);
            for p in 0..n.div_ceil(PANEL) {
                let panel = &panels[p * groups * PANEL * 4..(p + 1) * groups * PANEL * 4];
                let mut r = block;
                while r < block_end {
                    let h = TILE_ROWS.min(block_end - r);
                    let tile = Tile {
                        a: &a[r * k4..(r + h) * k4],
                        k4,
                        panel,
                        first_column: p * PANEL,
                        scales: &scales[r..r + h],
                        zeros: &zeros[r..r + h],
                    };
                    let c = &mut c[r * n..];
                    // SAFETY: the caller's guarantees, and the tile's bounds computed above.
                    unsafe {
                        match h {
                            8 => tile.run::<8>(c, n, e),
                            7 => tile.run::<7>(c, n, e),
                            6 => tile.run::<6>(c, n, e),
                            5 => tile.run::<5>(c, n, e),
                            4 => tile.run::<4>(c, n, e),
                            3 => tile.run::<3>(c, n, e),
                            2 => tile.run::<2>(c, n, e),
                            _ => tile.run::<1>(c, n, e),
                        }
                    }
                    r += h;
                }
            }
        }
    }

    /// `R` rows of codes against one panel.
    struct Tile<'a> {
        a: &'a [u8],
        k4: usize,
        panel: &'a [i8],
        first_column: usize,
        scales: &'a [f32],
        zeros: &'a [u8],
    }

    impl Tile<'_> {
        /// Writes the tile's outputs into rows of `c` (each `n` long), columns
        /// `first_column..first_column + 32` (fewer at the right edge).
        ///
        /// # Safety
        /// AVX-512 F, BW and VNNI; `a` holds `R` rows of `k4`, `panel` `k4 / 4` groups of
        /// [`PANEL`] columns, `c` at least `R` rows of `n`; `scales` and `zeros` `R` long.
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        #[inline]
        unsafe fn run<const R: usize>(&self, c: &mut [f32], n: usize, e: &Epilogue<'_>) {
            debug_assert!(self.a.len() >= R * self.k4 && c.len() >= (R - 1) * n + n);
            let groups = self.k4 / 4;
            let mut acc = [[_mm512_setzero_si512(); 2]; R];
            let a = self.a.as_ptr();
            let b = self.panel.as_ptr();
            for g in 0..groups {
                // SAFETY: `g < groups`: the panel's group `g` (128 codes) and each row's four
                // codes at `4g` are in bounds.
                unsafe {
                    let b0 = _mm512_loadu_si512(b.add(g * PANEL * 4).cast());
                    let b1 = _mm512_loadu_si512(b.add(g * PANEL * 4 + 64).cast());
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let four = a.add(i * self.k4 + 4 * g).cast::<i32>().read_unaligned();
                        let x = _mm512_set1_epi32(four);
                        acc[0] = _mm512_dpbusd_epi32(acc[0], x, b0);
                        acc[1] = _mm512_dpbusd_epi32(acc[1], x, b1);
                    }
                }
            }
            let j0 = self.first_column;
            let cols = PANEL.min(n - j0);
            let lo = cols.min(16);
            let hi = cols - lo;
            let mask = |m: usize| -> __mmask16 { if m == 16 { 0xffff } else { (1u16 << m) - 1 } };
            let (mask_lo, mask_hi) = (mask(lo), mask(hi));
            // SAFETY: the column sums are padded to whole panels; masked loads and stores touch
            // only the first `cols` values of each row's scales, biases and outputs.
            unsafe {
                let sums = e.column_sums.as_ptr().add(j0);
                let col_sums = [
                    _mm512_loadu_si512(sums.cast()),
                    _mm512_loadu_si512(sums.add(16).cast()),
                ];
                let (cs, bs) = (e.column_scales.as_ptr().add(j0), e.biases.as_ptr().add(j0));
                let col_scales = [
                    _mm512_maskz_loadu_ps(mask_lo, cs),
                    _mm512_maskz_loadu_ps(mask_hi, cs.add(lo)),
                ];
                let biases = [
                    _mm512_maskz_loadu_ps(mask_lo, bs),
                    _mm512_maskz_loadu_ps(mask_hi, bs.add(lo)),
                ];
                let masks = [mask_lo, mask_hi];
                let offsets = [0, lo];
                let c = c.as_mut_ptr().add(j0);
                for (i, acc) in acc.iter().enumerate() {
                    let zero = _mm512_set1_epi32(i32::from(self.zeros[i]));
                    let scale = _mm512_set1_ps(self.scales[i]);
                    for h in 0..2 {
                        // Σ (a − z)·w = Σ a·w − z·Σ w.
                        let exact = _mm512_sub_epi32(acc[h], _mm512_mullo_epi32(zero, col_sums[h]));
                        let f = _mm512_cvtepi32_ps(exact);
                        let mut y =
                            _mm512_fmadd_ps(f, _mm512_mul_ps(scale, col_scales[h]), biases[h]);
                        if e.relu {
                            y = _mm512_max_ps(y, _mm512_setzero_ps());
                        }
                        _mm512_mask_storeu_ps(c.add(i * n + offsets[h]), masks[h], y);
                    }
                }
            }
        }
    }
}

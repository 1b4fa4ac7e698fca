//! bfloat16 products: weights rounded to bf16 once, each input row rounded to bf16 as it enters
//! the product, sums in `f32`. With AVX-512 BF16 the product runs on `vdpbf16ps` (two
//! products per `f32` lane and instruction) over weights packed once into panels of 32
//! columns; elsewhere the weights are kept widened to `f32` and crank's `f32` GEMM runs.

use super::{as_f32, grow, lend};
use crate::buffer::{matrix, matrix_mut};
use crate::{Error, Result, Scalar, gemm};
use rayon::prelude::*;
use std::cell::Cell;
use std::sync::OnceLock;

/// `x` rounded to the nearest bfloat16 (ties to even), as its bits. NaN stays NaN.
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// The `f32` value of a bfloat16 (exact).
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// How a product runs on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// AVX-512 BF16 `vdpbf16ps` over packed bf16 weights.
    #[cfg(target_arch = "x86_64")]
    Avx512Bf16,
    /// The weights widened to `f32`, crank's `f32` GEMM.
    Widened,
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
                && std::arch::is_x86_feature_detected!("avx512bf16")
            {
                return Kernel::Avx512Bf16;
            }
            Kernel::Widened
        })
    }
}

/// The name of the bf16 kernel this CPU runs.
pub fn kernel_name() -> &'static str {
    match Kernel::detect() {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Bf16 => "avx512-bf16",
        Kernel::Widened => "widened-f32",
    }
}

/// Columns per packed panel: two registers of 16 `f32` sums.
const PANEL: usize = 32;
/// Rows per tile: 8 rows × 2 registers = 16 independent sums.
const TILE_ROWS: usize = 8;
/// Rows per block: a block's bf16 inputs stay in L2 while every panel passes over them.
const BLOCK_ROWS: usize = 64;

/// A Dense layer's weights `[inputs, outputs]` in bf16, with the form the kernel reads.
pub(crate) struct Bf16Weights {
    pub inputs: usize,
    pub outputs: usize,
    /// The weights' bits, row-major `[inputs, outputs]` (what files hold).
    pub bits: Vec<u16>,
    kernel: Kernel,
    /// For [`Kernel::Avx512Bf16`]: panels of [`PANEL`] columns, each holding for every pair of
    /// inputs `(2q, 2q + 1)` the two weights of each column side by side (zero-padded).
    /// For [`Kernel::Widened`]: the weights in `f32`, row-major.
    packed: Packed,
}

enum Packed {
    Bf16(Vec<u16>),
    F32(Vec<f32>),
}

impl std::fmt::Debug for Bf16Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bf16Weights")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("kernel", &self.kernel)
            .finish_non_exhaustive()
    }
}

/// Scratch space for one product, each thread's own ([`lend`]): the input in bf16 (or rounded
/// `f32`) and an `f64` model's output in `f32`.
#[derive(Default)]
struct Scratch {
    a16: Vec<u16>,
    a32: Vec<f32>,
    c32: Vec<f32>,
}

thread_local! {
    static SCRATCH: Cell<Option<Scratch>> = const { Cell::new(None) };
}

impl Bf16Weights {
    /// Weights from their bits `[inputs, outputs]`, made ready for this CPU's kernel.
    pub fn new(inputs: usize, outputs: usize, bits: Vec<u16>) -> Self {
        Self::with_kernel(inputs, outputs, bits, Kernel::detect())
    }

    /// As [`new`](Self::new), for a given kernel (tests run both).
    pub fn with_kernel(inputs: usize, outputs: usize, bits: Vec<u16>, kernel: Kernel) -> Self {
        let packed = match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bf16 => Packed::Bf16(pack(&bits, inputs, outputs)),
            Kernel::Widened => Packed::F32(bits.iter().map(|&b| bf16_to_f32(b)).collect()),
        };
        Bf16Weights {
            inputs,
            outputs,
            bits,
            kernel,
            packed,
        }
    }

    /// `out = bf16(x) · W + biases` for rows of `x` (`inputs` wide) into `out` (`rows ·
    /// outputs`), followed by a ReLU when `relu` and the kernel can fuse it; returns whether it
    /// did. An error names layer `name` and the first row of `x` holding a value that is not
    /// finite.
    pub fn product<F: Scalar>(
        &self,
        name: &str,
        x: &[F],
        biases: &[f32],
        out: &mut [F],
        relu: bool,
    ) -> Result<bool> {
        let result = lend(&SCRATCH, |s| {
            let Scratch { a16, a32, c32 } = s;
            as_f32(out, c32, |c| {
                self.product_in(x, (a16, a32), biases, c, relu)
            })
        });
        result.map_err(|row| Error::NonFinite {
            what: format!("input of layer {name} at row {row}"),
            step: None,
        })
    }

    /// [`product`](Self::product) into `c`, with room for the rounded input.
    fn product_in<F: Scalar>(
        &self,
        x: &[F],
        (a16, a32): (&mut Vec<u16>, &mut Vec<f32>),
        biases: &[f32],
        c: &mut [f32],
        relu: bool,
    ) -> std::result::Result<bool, usize> {
        let (k, n) = (self.inputs, self.outputs);
        let rows = x.len() / k.max(1);
        let fused = match &self.packed {
            #[cfg(target_arch = "x86_64")]
            Packed::Bf16(panels) => {
                let kp = k.next_multiple_of(2);
                let a = grow(a16, rows * kp);
                round_rows(x, k, kp, a, |v| v)?;
                let run = |a: &[u16], c: &mut [f32]| {
                    // SAFETY: a `Packed::Bf16` exists only when the CPU has AVX-512 BF16
                    // (`Kernel::detect`, or a test that checked it).
                    unsafe { avx512::product(a, kp, panels, c, n, biases, relu) }
                };
                if crate::kernels::parallel(rows * n.max(k)) && rows > BLOCK_ROWS {
                    a.par_chunks(BLOCK_ROWS * kp)
                        .zip(c.par_chunks_mut(BLOCK_ROWS * n))
                        .for_each(|(a, c)| run(a, c));
                } else {
                    run(a, c);
                }
                relu
            }
            Packed::F32(w) => {
                let a = grow(a32, rows * k);
                round_rows(x, k, k, a, bf16_to_f32)?;
                let (a, w) = (matrix(a, rows, k), matrix(w, k, n));
                gemm::affine(&a, &w, biases, &mut matrix_mut(c, rows, n));
                false
            }
        };
        Ok(fused)
    }
}

/// Rows of `x` (`k` wide) rounded to bf16 into rows of `a` (`kp` wide, zero-padded), each value
/// stored through `to`. The first row with a value that is not finite is the error.
fn round_rows<F: Scalar, T: Copy + Default + Send>(
    x: &[F],
    k: usize,
    kp: usize,
    a: &mut [T],
    to: impl Fn(u16) -> T + Sync,
) -> std::result::Result<(), usize> {
    let run = |first: usize, x: &[F], a: &mut [T]| {
        for (i, (x, a)) in x
            .chunks_exact(k.max(1))
            .zip(a.chunks_exact_mut(kp.max(1)))
            .enumerate()
        {
            if !round_row(x, a, &to) {
                return Err(first + i);
            }
        }
        Ok(())
    };
    let rows_per_task = (crate::kernels::PAR_THRESHOLD / 4 / k.max(1)).max(1);
    if !crate::kernels::parallel(x.len()) || k == 0 {
        return run(0, x, a);
    }
    x.par_chunks(rows_per_task * k)
        .zip(a.par_chunks_mut(rows_per_task * kp))
        .enumerate()
        .try_for_each(|(t, (x, a))| run(t * rows_per_task, x, a))
}

#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn round_row<F: Scalar, T: Copy + Default>(x: &[F], a: &mut [T], to: &impl Fn(u16) -> T) -> bool {
    let mut finite = true;
    for (a, &v) in a.iter_mut().zip(x) {
        let v = v.as_f64() as f32;
        finite &= v.is_finite();
        *a = to(f32_to_bf16(v));
    }
    for a in a.iter_mut().skip(x.len()) {
        *a = T::default();
    }
    finite
}

/// Weights `[k, n]` into panels of [`PANEL`] columns: for each pair of rows `(2q, 2q + 1)`,
/// each column's two weights side by side. Missing rows and columns are zeros.
#[cfg(target_arch = "x86_64")]
fn pack(bits: &[u16], k: usize, n: usize) -> Vec<u16> {
    let pairs = k.div_ceil(2);
    let panels = n.div_ceil(PANEL);
    let mut out = vec![0u16; panels * pairs * PANEL * 2];
    for p in 0..panels {
        for q in 0..pairs {
            let base = (p * pairs + q) * PANEL * 2;
            for j in 0..PANEL.min(n - p * PANEL) {
                let col = p * PANEL + j;
                for h in 0..2 {
                    let row = 2 * q + h;
                    if row < k {
                        out[base + 2 * j + h] = bits[row * n + col];
                    }
                }
            }
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BLOCK_ROWS, PANEL, TILE_ROWS};
    use std::arch::x86_64::*;

    /// `c = a · W + biases` for the rows of `a` (bf16, `kp` wide, `kp` even), `W` packed by
    /// [`super::pack`], `c` rows of `n`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F and BF16; `panels` must be `pack` of a `[kp or kp − 1, n]`
    /// matrix, `c.len()` a multiple of `n` with as many rows as `a`, `biases.len() == n`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn product(
        a: &[u16],
        kp: usize,
        panels: &[u16],
        c: &mut [f32],
        n: usize,
        biases: &[f32],
        relu: bool,
    ) {
        let rows = a.len().checked_div(kp).unwrap_or(0);
        let pairs = kp / 2;
        debug_assert_eq!(c.len(), rows * n);
        debug_assert_eq!(biases.len(), n);
        debug_assert_eq!(panels.len(), n.div_ceil(PANEL) * pairs * PANEL * 2);
        for block in (0..rows).step_by(BLOCK_ROWS) {
            let block_end = (block + BLOCK_ROWS).min(rows);
            for p in 0..n.div_ceil(PANEL) {
                let cols = PANEL.min(n - p * PANEL);
                let panel = &panels[p * pairs * PANEL * 2..(p + 1) * pairs * PANEL * 2];
                let bias = &biases[p * PANEL..p * PANEL + cols];
                let mut r = block;
                while r < block_end {
                    let h = TILE_ROWS.min(block_end - r);
                    let a = &a[r * kp..(r + h) * kp];
                    let c = &mut c[r * n + p * PANEL..];
                    // SAFETY: the caller's guarantees, and the tile's bounds computed above.
                    unsafe {
                        match h {
                            8 => tile::<8>(a, kp, panel, c, n, cols, bias, relu),
                            7 => tile::<7>(a, kp, panel, c, n, cols, bias, relu),
                            6 => tile::<6>(a, kp, panel, c, n, cols, bias, relu),
                            5 => tile::<5>(a, kp, panel, c, n, cols, bias, relu),
                            4 => tile::<4>(a, kp, panel, c, n, cols, bias, relu),
                            3 => tile::<3>(a, kp, panel, c, n, cols, bias, relu),
                            2 => tile::<2>(a, kp, panel, c, n, cols, bias, relu),
                            _ => tile::<1>(a, kp, panel, c, n, cols, bias, relu),
                        }
                    }
                    r += h;
                }
            }
        }
    }

    /// `R` rows × one panel: `c[i][..cols] = a[i] · panel + bias`, then a ReLU if `relu`.
    ///
    /// # Safety
    /// AVX-512 F and BF16; `a` holds `R` rows of `kp`; `panel` `kp / 2` pairs of [`PANEL`]
    /// columns; `c` holds `R − 1` rows of `n` then at least `cols` values; `bias` `cols`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn tile<const R: usize>(
        a: &[u16],
        kp: usize,
        panel: &[u16],
        c: &mut [f32],
        n: usize,
        cols: usize,
        bias: &[f32],
        relu: bool,
    ) {
        debug_assert!(a.len() >= R * kp && c.len() >= (R - 1) * n + cols);
        let pairs = kp / 2;
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let a = a.as_ptr();
        let b = panel.as_ptr();
        for q in 0..pairs {
            // SAFETY: `q < pairs`, so the panel's pair `q` (64 values) and each row's pair `q`
            // are in bounds.
            unsafe {
                let b0: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(b.add(q * PANEL * 2).cast::<__m512i>()));
                let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(
                    b.add(q * PANEL * 2 + PANEL).cast::<__m512i>(),
                ));
                for (i, acc) in acc.iter_mut().enumerate() {
                    let pair = a.add(i * kp + 2 * q).cast::<i32>().read_unaligned();
                    let x: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                    acc[0] = _mm512_dpbf16_ps(acc[0], x, b0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], x, b1);
                }
            }
        }
        let lo = cols.min(16);
        let hi = cols - lo;
        let mask_lo: __mmask16 = if lo == 16 { 0xffff } else { (1u16 << lo) - 1 };
        let mask_hi: __mmask16 = if hi == 16 { 0xffff } else { (1u16 << hi) - 1 };
        // SAFETY: masked loads and stores touch only the first `cols` values of each row.
        unsafe {
            let bias0 = _mm512_maskz_loadu_ps(mask_lo, bias.as_ptr());
            let bias1 = _mm512_maskz_loadu_ps(mask_hi, bias.as_ptr().add(lo));
            let c = c.as_mut_ptr();
            let zero = _mm512_setzero_ps();
            for (i, acc) in acc.iter().enumerate() {
                let row = c.add(i * n);
                let (mut y0, mut y1) = (_mm512_add_ps(acc[0], bias0), _mm512_add_ps(acc[1], bias1));
                if relu {
                    (y0, y1) = (_mm512_max_ps(y0, zero), _mm512_max_ps(y1, zero));
                }
                _mm512_mask_storeu_ps(row, mask_lo, y0);
                _mm512_mask_storeu_ps(row.add(lo), mask_hi, y1);
            }
        }
    }
}

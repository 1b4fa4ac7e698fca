//! The reduced-precision products against plain references, on every kernel this CPU runs.

use super::bf16::{self, Bf16Weights};
use super::int8::{self, Int8Weights, quantize_rows};
use super::{bf16_to_f32, f32_to_bf16, quantize_weights};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Shapes `(rows, inputs, outputs)` around the kernels' edges: tiles of 8 rows, panels of 32
/// columns, groups of 4 (int8) or 2 (bf16) inputs, blocks of 64 rows.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 3),
    (3, 4, 32),
    (8, 13, 33),
    (9, 64, 31),
    (17, 30, 64),
    (65, 101, 70),
    (130, 784, 10),
];

fn random(rng: &mut Xoshiro256PlusPlus, len: usize, scale: f32) -> Vec<f32> {
    (0..len)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
        .collect()
}

fn int8_kernels() -> Vec<int8::Kernel> {
    let mut kernels = vec![int8::Kernel::Rten];
    #[cfg(target_arch = "x86_64")]
    if int8::Kernel::detect() == int8::Kernel::Vnni {
        kernels.push(int8::Kernel::Vnni);
    }
    kernels
}

fn bf16_kernels() -> Vec<bf16::Kernel> {
    let mut kernels = vec![bf16::Kernel::Widened];
    #[cfg(target_arch = "x86_64")]
    if bf16::Kernel::detect() == bf16::Kernel::Avx512Bf16 {
        kernels.push(bf16::Kernel::Avx512Bf16);
    }
    kernels
}

#[test]
fn rows_quantize_to_their_own_range_with_zero_exact() {
    let x = [-1.0f32, 0.0, 0.5, 3.0, -0.25, 2.0, 0.0];
    for levels in [127u8, 255] {
        let (mut codes, mut scales, mut zeros) = (vec![9u8; 8], [0f32], [0u8]);
        quantize_rows(&x, 7, 8, levels, None, &mut codes, &mut scales, &mut zeros).unwrap();
        let (s, z) = (scales[0], f32::from(zeros[0]));
        assert!((s - 4.0 / f32::from(levels)).abs() < 1e-6, "scale {s}");
        assert_eq!(codes[7], 0, "padding is zeroed");
        for (&v, &c) in x.iter().zip(&codes) {
            let back = (f32::from(c) - z) * s;
            assert!(
                (back - v).abs() <= s / 2.0 + 1e-6,
                "{v} came back as {back}"
            );
            if v == 0.0 {
                assert_eq!(back, 0.0);
            }
        }
    }
    // A row of zeros, and rows of one sign: the range still holds 0.
    let x = [0.0f32, 0.0, 1.0, 2.0, -4.0, -2.0];
    let (mut codes, mut scales, mut zeros) = (vec![0u8; 6], [0f32; 3], [0u8; 3]);
    quantize_rows(&x, 2, 2, 255, None, &mut codes, &mut scales, &mut zeros).unwrap();
    assert_eq!((&codes[..2], scales[0], zeros[0]), (&[0u8, 0][..], 1.0, 0));
    assert_eq!((zeros[1], codes[3]), (0, 255));
    assert_eq!((zeros[2], codes[4], codes[5]), (255, 0, 128));
    // Ends whose difference overflows f32: a finite scale all the same.
    let x = [-3.0e38f32, 3.0e38, 0.0];
    let (mut codes, mut scales, mut zeros) = (vec![0u8; 3], [0f32], [0u8]);
    quantize_rows(&x, 3, 3, 255, None, &mut codes, &mut scales, &mut zeros).unwrap();
    assert!(scales[0].is_finite() && scales[0] > 0.0, "{}", scales[0]);
    assert_eq!((codes[0], codes[1]), (0, 255));
    assert_eq!(f32::from(codes[2]), f32::from(zeros[0]));
}

#[test]
fn a_value_that_is_not_finite_names_its_row() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = vec![0.5f32; 40 * 3];
        x[2 * 40 + 17] = bad;
        let (mut codes, mut scales, mut zeros) = (vec![0u8; 40 * 3], [0f32; 3], [0u8; 3]);
        let r = quantize_rows(&x, 40, 40, 255, None, &mut codes, &mut scales, &mut zeros);
        assert_eq!(r, Err(2), "{bad}");
    }
}

#[test]
fn weights_quantize_per_column_within_half_a_step() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let (k, n) = (37, 11);
    let mut w = random(&mut rng, k * n, 0.3);
    w.iter_mut().skip(4).step_by(n).for_each(|v| *v = 0.0); // column 4 all zeros
    w[5] = 2.0; // column 5's largest
    let (codes, scales) = quantize_weights(&w, n);
    assert_eq!(scales[4], 1.0);
    assert_eq!(scales[5], 2.0 / 127.0);
    assert_eq!(codes[5], 127);
    for (i, (&v, &c)) in w.iter().zip(&codes).enumerate() {
        let s = scales[i % n];
        assert!((f32::from(c) * s - v).abs() <= s / 2.0 + 1e-7);
        assert!(c > -128);
    }
}

#[test]
fn a_fixed_range_quantizes_every_row_alike_and_saturates_beyond_it() {
    let x = [-1.0f32, 0.0, 0.5, 3.0, -0.25, 2.0, -7.0, 9.0, 0.125, 0.0];
    for levels in [127u8, 255] {
        let (scale, zero) = int8::affine(-1.0, 3.0, levels);
        assert_eq!(scale, 3.0 / f32::from(levels) + 1.0 / f32::from(levels));
        let (mut codes, mut scales, mut zeros) = (vec![9u8; 12], [0f32; 2], [0u8; 2]);
        let fixed = Some((scale, zero));
        quantize_rows(&x, 5, 6, levels, fixed, &mut codes, &mut scales, &mut zeros).unwrap();
        assert_eq!((scales, zeros), ([scale; 2], [zero; 2]));
        assert_eq!((codes[5], codes[11]), (0, 0), "padding is zeroed");
        for (i, &v) in x.iter().enumerate() {
            let c = codes[i / 5 * 6 + i % 5];
            // In f64, from the definition: the nearest code, clamped (a tie may go either way:
            // the kernel multiplies by the scale's reciprocal in f32).
            let exact =
                (f64::from(v) / f64::from(scale) + f64::from(zero)).clamp(0.0, f64::from(levels));
            assert!(
                (f64::from(c) - exact).abs() <= 0.5 + 1e-4,
                "{v} at levels {levels}: {c} for {exact}"
            );
        }
        // The first row's own range is [-1, 3]: its codes are those of dynamic quantization.
        let (mut own, mut s1, mut z1) = (vec![0u8; 5], [0f32], [0u8]);
        quantize_rows(&x[..5], 5, 5, levels, None, &mut own, &mut s1, &mut z1).unwrap();
        assert_eq!((&own[..], s1[0], z1[0]), (&codes[..5], scale, zero));
    }
    let mut x = vec![0.5f32; 3 * 70];
    x[2 * 70 + 65] = f32::NAN;
    let (mut codes, mut scales, mut zeros) = (vec![0u8; 3 * 70], [0f32; 3], [0u8; 3]);
    let fixed = Some(int8::affine(-1.0, 1.0, 255));
    let r = quantize_rows(&x, 70, 70, 255, fixed, &mut codes, &mut scales, &mut zeros);
    assert_eq!(r, Err(2));
}

/// The int8 product with exact integer sums: the kernels must match it bitwise.
fn int8_reference(x: &[f32], w: &Int8Weights, biases: &[f32], levels: u8, relu: bool) -> Vec<f32> {
    let (k, n) = (w.inputs, w.outputs);
    let rows = x.len() / k;
    let (mut codes, mut scales, mut zeros) =
        (vec![0u8; rows * k], vec![0f32; rows], vec![0u8; rows]);
    let fixed = w.input_range().map(|[lo, hi]| int8::affine(lo, hi, levels));
    quantize_rows(x, k, k, levels, fixed, &mut codes, &mut scales, &mut zeros).unwrap();
    let mut out = vec![0f32; rows * n];
    for i in 0..rows {
        for j in 0..n {
            let sum: i64 = (0..k)
                .map(|p| {
                    (i64::from(codes[i * k + p]) - i64::from(zeros[i]))
                        * i64::from(w.codes[p * n + j])
                })
                .sum();
            let y = (sum as i32 as f32).mul_add(scales[i] * w.scales[j], biases[j]);
            out[i * n + j] = if relu { y.max(0.0) } else { y };
        }
    }
    out
}

#[test]
fn int8_kernels_match_exact_integer_sums_bitwise() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
    for &(rows, k, n) in SHAPES {
        let w = random(&mut rng, k * n, 0.2);
        let (codes, scales) = quantize_weights(&w, n);
        let biases = random(&mut rng, n, 0.5);
        let x = random(&mut rng, rows * k, 2.0);
        for (kernel, range) in int8_kernels()
            .into_iter()
            .flat_map(|k| [(k, None), (k, Some([-1.5, 1.0]))])
        {
            let weights = Int8Weights::with_kernel(k, n, codes.clone(), scales.clone(), kernel)
                .and_then(|w| w.with_input_range(range))
                .unwrap();
            for relu in [false, true] {
                let mut out = vec![f32::NAN; rows * n];
                let fused = weights.product("t", &x, &biases, &mut out, relu).unwrap();
                if relu && !fused {
                    out.iter_mut().for_each(|v| *v = v.max(0.0));
                }
                let want = int8_reference(&x, &weights, &biases, weights.levels(), relu);
                assert_eq!(
                    out, want,
                    "{kernel:?} {range:?} ({rows}, {k}, {n}) relu {relu}"
                );
                // An f64 model's product: the same values, widened.
                let x64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
                let mut out64 = vec![f64::NAN; rows * n];
                let fused = weights
                    .product("t", &x64, &biases, &mut out64, relu)
                    .unwrap();
                if relu && !fused {
                    out64.iter_mut().for_each(|v| *v = v.max(0.0));
                }
                assert!(out64.iter().zip(&want).all(|(&a, &b)| a == f64::from(b)));
            }
        }
    }
}

#[test]
fn a_row_predicts_the_same_alone_or_in_a_batch() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    let (rows, k, n) = (70, 50, 40);
    let w = random(&mut rng, k * n, 0.2);
    let (codes, scales) = quantize_weights(&w, n);
    let biases = random(&mut rng, n, 0.5);
    let x = random(&mut rng, rows * k, 2.0);
    for kernel in int8_kernels() {
        let weights =
            Int8Weights::with_kernel(k, n, codes.clone(), scales.clone(), kernel).unwrap();
        let mut all = vec![0f32; rows * n];
        weights.product("t", &x, &biases, &mut all, false).unwrap();
        for i in [0, 9, 69] {
            let mut one = vec![0f32; n];
            let row = &x[i * k..(i + 1) * k];
            weights.product("t", row, &biases, &mut one, false).unwrap();
            assert_eq!(one, all[i * n..(i + 1) * n], "{kernel:?} row {i}");
        }
    }
    let bits: Vec<u16> = w.iter().map(|&v| f32_to_bf16(v)).collect();
    for kernel in bf16_kernels() {
        let weights = Bf16Weights::with_kernel(k, n, bits.clone(), kernel);
        let mut all = vec![0f32; rows * n];
        weights.product("t", &x, &biases, &mut all, false).unwrap();
        let mut one = vec![0f32; n];
        weights
            .product("t", &x[9 * k..10 * k], &biases, &mut one, false)
            .unwrap();
        for (a, b) in one.iter().zip(&all[9 * n..10 * n]) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{kernel:?}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn int8_refuses_widths_whose_sums_could_overflow() {
    let k = int8::MAX_INPUTS + 1;
    let err = Int8Weights::new(k, 1, vec![0; k], vec![1.0]).unwrap_err();
    assert!(err.to_string().contains("overflow"), "{err}");
    let err = Int8Weights::new(3, 2, vec![0; 5], vec![1.0; 2]).unwrap_err();
    assert!(err.to_string().contains("5 codes"), "{err}");
}

#[test]
fn bf16_rounds_to_nearest_even() {
    assert_eq!(f32_to_bf16(1.0), 0x3f80);
    // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties go to the even mantissa (1).
    assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
    // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ (odd) and 1 + 2⁻⁶: up.
    assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
    assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0 + 1e-6), 0x3f81);
    assert_eq!(f32_to_bf16(-2.5), 0xc020);
    assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    assert_eq!(bf16_to_f32(f32_to_bf16(f32::INFINITY)), f32::INFINITY);
    for v in [0.1f32, -3.7, 1e-20, 6.5e4, 3.0e38] {
        let b = bf16_to_f32(f32_to_bf16(v));
        assert!((b - v).abs() <= v.abs() / 256.0, "{v} -> {b}");
    }
}

#[test]
fn bf16_kernels_match_a_wide_reference() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(13);
    for &(rows, k, n) in SHAPES {
        let w = random(&mut rng, k * n, 0.2);
        let bits: Vec<u16> = w.iter().map(|&v| f32_to_bf16(v)).collect();
        let biases = random(&mut rng, n, 0.5);
        let x = random(&mut rng, rows * k, 2.0);
        // Both operands rounded to bf16, products and sums in f64.
        let xr: Vec<f64> = x
            .iter()
            .map(|&v| f64::from(bf16_to_f32(f32_to_bf16(v))))
            .collect();
        for kernel in bf16_kernels() {
            let weights = Bf16Weights::with_kernel(k, n, bits.clone(), kernel);
            for relu in [false, true] {
                let mut out = vec![f32::NAN; rows * n];
                let fused = weights.product("t", &x, &biases, &mut out, relu).unwrap();
                for i in 0..rows {
                    for j in 0..n {
                        let mut want = f64::from(biases[j]);
                        let mut size = want.abs();
                        for p in 0..k {
                            let t = xr[i * k + p] * f64::from(bf16_to_f32(bits[p * n + j]));
                            want += t;
                            size += t.abs();
                        }
                        if relu {
                            want = want.max(0.0);
                        }
                        let mut got = f64::from(out[i * n + j]);
                        if relu && !fused {
                            got = got.max(0.0);
                        }
                        // f32 sums in another order: within k ulps of the sum of magnitudes.
                        let tol = size * k as f64 * f64::from(f32::EPSILON);
                        assert!(
                            (got - want).abs() <= tol,
                            "{kernel:?} ({rows}, {k}, {n}) [{i}, {j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn bf16_names_the_row_that_is_not_finite() {
    let bits = vec![f32_to_bf16(0.5); 6];
    for kernel in bf16_kernels() {
        let w = Bf16Weights::with_kernel(3, 2, bits.clone(), kernel);
        let x = [1.0f32, 2.0, 3.0, 1.0, f32::NAN, 0.0];
        let err = w
            .product("d", &x, &[0.0; 2], &mut [0.0; 4], false)
            .unwrap_err();
        assert!(
            err.to_string().contains("layer d at row 1"),
            "{kernel:?}: {err}"
        );
    }
}

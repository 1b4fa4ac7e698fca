//! int8 and bf16 models: accuracy against the f32 model they come from, files, and what they
//! refuse.

use crank::data::Classification;
use crank::io::Format;
use crank::quant::Precision;
use crank::train::FitOptions;
use crank::{Activation, Adam, Error, Loss, Scalar, Sequential};
use ndarray::{Array2, ArrayView2, s};
use std::path::Path;
use std::sync::Arc;

const PRECISIONS: [Precision; 2] = [Precision::Int8, Precision::Bf16];

fn digits() -> (Classification<f32>, Classification<f32>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv");
    let data = Classification::<f32>::from_csv(path, None).unwrap();
    data.split(0.25, 5).unwrap()
}

/// A digits classifier trained in f32: 64 → 64 → 32 → 10.
fn trained() -> (Sequential<f32>, Classification<f32>) {
    let (train, test) = digits();
    let mut model = Sequential::<f32>::builder(64)
        .dense(64, Activation::Relu)
        .dense(32, Activation::Relu)
        .dense(10, Activation::Identity)
        .seed(3)
        .build()
        .unwrap();
    let options = FitOptions {
        epochs: 25,
        batch_size: 32,
        seed: 3,
        ..Default::default()
    };
    let mut adam = Adam::new(1e-3).unwrap();
    let loss = Loss::SoftmaxCrossEntropy;
    model
        .fit(train.x.view(), &train.labels, &loss, &mut adam, &options)
        .unwrap();
    (model, test)
}

fn largest_difference(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn quantized_digits_keep_their_accuracy_within_half_a_point() {
    let (model, test) = trained();
    let f32_acc = model.accuracy(test.x.view(), &test.labels).unwrap();
    assert!(f32_acc > 0.95, "the f32 model itself: {f32_acc}");
    let logits = model.predict(test.x.view()).unwrap();
    let range = logits.iter().fold(0f32, |m, v| m.max(v.abs()));
    for precision in PRECISIONS {
        let q = model.quantize(precision).unwrap();
        let acc = q.accuracy(test.x.view(), &test.labels).unwrap();
        assert!(
            (acc - f32_acc).abs() <= 0.005,
            "{precision}: accuracy {acc} against f32's {f32_acc}"
        );
        let out = q.predict(test.x.view()).unwrap();
        let worst = largest_difference(out.view(), logits.view());
        // bf16 keeps 8 bits of mantissa, int8 about 7 of range: a few percent of the logits'
        // range at worst.
        assert!(worst < 0.05 * range, "{precision}: {worst} of {range}");
        assert!(
            worst > 0.0,
            "{precision}: the outputs are not the f32 model's"
        );
    }
}

#[test]
fn a_quantized_model_shows_its_layers_and_keeps_the_others() {
    let model = Sequential::<f32>::builder(6)
        .dense(16, Activation::Relu)
        .batch_norm()
        .dropout(0.2)
        .dense(8, Activation::Tanh)
        .layer_norm()
        .dense(3, Activation::Softmax)
        .seed(4)
        .build()
        .unwrap();
    let x = Array2::from_shape_fn((20, 6), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 5.0 - 1.0);
    let want = model.predict(x.view()).unwrap();
    for precision in PRECISIONS {
        let q = model.quantize(precision).unwrap();
        let kinds: Vec<&str> = q.layers().iter().map(|l| l.kind()).collect();
        let dense = if precision == Precision::Int8 {
            "Int8Dense"
        } else {
            "Bf16Dense"
        };
        assert_eq!(
            kinds,
            [dense, "BatchNorm", "Dropout", dense, "LayerNorm", dense],
            "{precision}"
        );
        assert_eq!(q.num_params(), model.num_params());
        let summary = q.to_string();
        assert!(summary.contains(dense), "{summary}");
        let out = q.predict(x.view()).unwrap();
        assert!(
            largest_difference(out.view(), want.view()) < 0.02,
            "{precision}"
        );
        // Quantizing again to the same precision changes nothing; to the other one is refused.
        let again = q.quantize(precision).unwrap();
        assert_eq!(again.predict(x.view()).unwrap(), out);
        let other = if precision == Precision::Int8 {
            Precision::Bf16
        } else {
            Precision::Int8
        };
        let err = q.quantize(other).unwrap_err().to_string();
        assert!(err.contains("already") && err.contains("dense_0"), "{err}");
    }
}

fn round_trips<F: Scalar>() {
    let model = Sequential::<F>::builder(9)
        .dense(33, Activation::Relu)
        .dense(5, Activation::Identity)
        .seed(8)
        .build()
        .unwrap();
    let x = Array2::from_shape_fn((13, 9), |(i, j)| F::of(((i * 5 + j) % 7) as f64 - 3.0));
    for precision in PRECISIONS {
        let q = model.quantize(precision).unwrap();
        let want = q.predict(x.view()).unwrap();
        for format in [Format::Bincode, Format::Json] {
            let bytes = q.to_bytes(format).unwrap();
            let back = Sequential::<F>::from_bytes(&bytes, format).unwrap();
            assert_eq!(back.to_spec(), q.to_spec(), "{precision} {format:?}");
            assert_eq!(
                back.predict(x.view()).unwrap(),
                want,
                "{precision} {format:?}"
            );
        }
        // Files with reduced-precision layers are version 2; float ones stay version 1, which
        // older cranks read.
        let bytes = q.to_bytes(Format::Bincode).unwrap();
        assert_eq!(bytes[8..12], 2u32.to_le_bytes());
        let float = model.to_bytes(Format::Bincode).unwrap();
        assert_eq!(float[8..12], 1u32.to_le_bytes());
        // int8 codes take one byte each (plus a scale per column), bf16 weights two.
        let size = std::mem::size_of::<F>();
        let (width, scales) = match precision {
            Precision::Int8 => (1, (33 + 5) * size),
            Precision::Bf16 => (2, 0),
        };
        let weights = 9 * 33 + 33 * 5;
        assert!(
            bytes.len() < float.len() - weights * (size - width) + scales + 64,
            "{precision}: {} bytes against {}",
            bytes.len(),
            float.len()
        );
        let json = String::from_utf8(q.to_bytes(Format::Json).unwrap()).unwrap();
        assert!(json.contains("\"version\":2"), "{}", &json[..80]);
    }
}

#[test]
fn quantized_models_round_trip_through_bincode_and_json() {
    round_trips::<f32>();
    round_trips::<f64>();
}

#[test]
fn a_quantized_model_cannot_be_trained_or_saved_where_it_does_not_fit() {
    let model = Sequential::<f32>::builder(3)
        .dense(4, Activation::Relu)
        .dense(2, Activation::Identity)
        .build()
        .unwrap();
    let x = Array2::from_elem((2, 3), 0.5f32);
    let y = Array2::from_elem((2, 2), 0.0f32);
    for precision in PRECISIONS {
        let mut q = model.quantize(precision).unwrap();
        let mut adam = Adam::new(1e-3).unwrap();
        let err = q
            .train_step(x.view(), &y, &Loss::Mse, &mut adam)
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("inference only") && msg.contains(precision.name()),
            "{msg}"
        );
        let err = q.to_bytes(Format::Safetensors).unwrap_err().to_string();
        assert!(err.contains("save this") && err.contains(".crank"), "{err}");
        #[cfg(feature = "onnx")]
        {
            let err = q.to_onnx().unwrap_err().to_string();
            assert!(err.contains("float model"), "{err}");
        }
    }
}

/// 3 → 4 (ReLU, named `hidden`) → 2.
fn small_model() -> Sequential<f32> {
    Sequential::<f32>::builder(3)
        .dense_named("hidden", 4, Activation::Relu)
        .dense(2, Activation::Identity)
        .build()
        .unwrap()
}

#[test]
fn hostile_quantized_files_get_errors_that_say_where() {
    let model = small_model();
    let int8 = model.quantize(Precision::Int8).unwrap();
    let json = String::from_utf8(int8.to_bytes(Format::Json).unwrap()).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let cases: [(&str, serde_json::Value, &str); 3] = [
        ("codes", serde_json::json!(200), "is not an int8 code"),
        ("codes", serde_json::json!(0.5), "is not an int8 code"),
        ("scales", serde_json::json!(0.0), "is not positive"),
    ];
    for (tensor, value, want) in cases {
        let mut bad = doc.clone();
        let t = &mut bad["layers"][0][tensor];
        let first = if tensor == "codes" {
            &mut t[0][0]
        } else {
            &mut t[0]
        };
        *first = value;
        let err = Sequential::<f32>::from_bytes(bad.to_string().as_bytes(), Format::Json)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hidden") && err.contains(want),
            "{tensor}: {err}"
        );
    }
    // A bf16 weight that bf16 cannot hold.
    let bf16 = model.quantize(Precision::Bf16).unwrap();
    let json = String::from_utf8(bf16.to_bytes(Format::Json).unwrap()).unwrap();
    doc = serde_json::from_str(&json).unwrap();
    doc["layers"][0]["weights"][0][0] = serde_json::json!(0.1);
    let err = Sequential::<f32>::from_bytes(doc.to_string().as_bytes(), Format::Json)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("hidden") && err.contains("not a bfloat16 value"),
        "{err}"
    );
    // A bincode file whose first layer's codes are one byte short (and say so).
    let bytes = int8.to_bytes(Format::Bincode).unwrap();
    let mut codes = Vec::new();
    int8.layers()[0].visit_tensors(&mut |t| {
        if let crank::layer::TensorData::Int8(c) = t.data {
            codes = c.iter().map(|&v| v as u8).collect();
        }
    });
    let mut field = 12u64.to_le_bytes().to_vec();
    field.extend_from_slice(&codes);
    let at = bytes.windows(field.len()).position(|w| w == field).unwrap();
    let mut cut = bytes[..at].to_vec();
    cut.extend_from_slice(&11u64.to_le_bytes());
    cut.extend_from_slice(&bytes[at + 9..]);
    let err = Sequential::<f32>::from_bytes(&cut, Format::Bincode)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("hidden") && err.contains("11 bytes") && err.contains("int8"),
        "{err}"
    );
    // A description of an int8 layer with no tensors: there is nothing to initialise it from.
    let spec = crank::spec::ModelSpec::from_json(
        r#"{"layers": [{"type": "Int8Dense", "input_size": 3, "output_size": 2}]}"#,
    )
    .unwrap();
    let err = Sequential::<f32>::from_spec(&spec).unwrap_err().to_string();
    assert!(err.contains("quantizing a trained Dense layer"), "{err}");
}

#[test]
fn threads_predict_alike_and_a_row_alone_as_in_its_batch() {
    let (model, test) = trained();
    let x = test.x.slice(s![..200, ..]).to_owned();
    for precision in PRECISIONS {
        let q = Arc::new(model.quantize(precision).unwrap());
        let want = q.predict(x.view()).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (q, x) = (Arc::clone(&q), x.clone());
                std::thread::spawn(move || {
                    // Batches of other sizes first: the workspace and the scratch space grow
                    // and shrink between calls.
                    let mut ws = q.workspace();
                    for rows in [t + 1, 150, 7] {
                        q.predict_with(x.slice(s![..rows, ..]), &mut ws).unwrap();
                    }
                    q.predict_with(x.view(), &mut ws).unwrap().to_owned()
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), want, "{precision}");
        }
        // Per-row scales (int8) and a row-by-row kernel: a row's outputs do not depend on the
        // rows beside it.
        for i in [0, 37, 199] {
            let one = q.predict(x.slice(s![i..i + 1, ..])).unwrap();
            if precision == Precision::Int8 {
                assert_eq!(one.row(0), want.row(i), "{precision} row {i}");
            } else {
                assert!(largest_difference(one.view(), want.slice(s![i..i + 1, ..])) < 1e-5);
            }
        }
    }
}

#[test]
fn weights_beyond_what_the_precision_holds_are_errors() {
    let mut model = Sequential::<f64>::builder(2)
        .dense_named("wide", 2, Activation::Identity)
        .build()
        .unwrap();
    // Finite in f64, infinite in f32 (int8 scales are f32) and in bf16.
    model.visit_params(|_, p| p.value[0] = 1e300);
    for precision in PRECISIONS {
        let err = model.quantize(precision).unwrap_err().to_string();
        assert!(
            err.contains("wide") && err.contains("not finite"),
            "{precision}: {err}"
        );
    }
}

#[test]
fn an_overflow_inside_a_quantized_model_names_the_row_in_the_batch() {
    let mut model = Sequential::<f32>::builder(4)
        .dense(8, Activation::Relu)
        .dense(3, Activation::Identity)
        .seed(2)
        .build()
        .unwrap();
    model.visit_params(|_, p| p.value.iter_mut().for_each(|v| *v *= 1e15));
    // Finite inputs; row 30's product overflows f32 in the first layer, so the second layer's
    // input is not finite. A batch of 40 runs in blocks on several threads.
    let mut x = Array2::from_elem((40, 4), 0.5f32);
    x.row_mut(30).fill(1e30);
    for precision in PRECISIONS {
        let q = model.quantize(precision).unwrap();
        let err = q.predict(x.view()).unwrap_err().to_string();
        assert!(err.contains("dense_1 at row 30"), "{precision}: {err}");
    }
}

/// Each int8 layer's calibrated range, in layer order.
fn input_ranges(model: &Sequential<f32>) -> Vec<Option<[f32; 2]>> {
    model
        .to_spec()
        .layers
        .iter()
        .filter_map(|l| match l {
            crank::spec::LayerSpec::Int8Dense(d) => Some(d.input_range),
            _ => None,
        })
        .collect()
}

#[test]
fn static_int8_keeps_digits_accuracy_and_its_calibrated_ranges_through_files() {
    let (model, test) = trained();
    let (train, _) = digits();
    let q = model.quantize_static(train.x.view()).unwrap();
    let f32_acc = model.accuracy(test.x.view(), &test.labels).unwrap();
    let acc = q.accuracy(test.x.view(), &test.labels).unwrap();
    assert!((acc - f32_acc).abs() <= 0.005, "{acc} against {f32_acc}");
    // The first layer's inputs are the data: pixels 0 to 16, spread over the whole range, so
    // its range is [0, 16] to within a bin of the calibration histogram; the others are ReLU
    // outputs, never negative.
    let ranges = input_ranges(&q);
    assert_eq!(ranges.len(), 3);
    let [lo, hi] = ranges[0].unwrap();
    assert!(
        lo == 0.0 && hi > 16.0 - 16.0 / 1024.0 && hi <= 16.0,
        "{:?}",
        ranges[0]
    );
    for r in &ranges[1..] {
        let [lo, hi] = r.unwrap();
        assert!(lo == 0.0 && hi > 0.0, "{r:?}");
    }
    let want = q.predict(test.x.view()).unwrap();
    let dynamic = model.quantize(Precision::Int8).unwrap();
    assert_ne!(dynamic.predict(test.x.view()).unwrap(), want);
    for format in [Format::Bincode, Format::Json] {
        let back = Sequential::<f32>::from_bytes(&q.to_bytes(format).unwrap(), format).unwrap();
        assert_eq!(input_ranges(&back), ranges, "{format:?}");
        assert_eq!(back.predict(test.x.view()).unwrap(), want, "{format:?}");
    }
    // A row predicts the same alone as in its batch, and from several threads.
    let one = q.predict(test.x.slice(s![7..8, ..])).unwrap();
    assert_eq!(one.row(0), want.row(7));
    // Calibrating a dynamic int8 model gives its layers ranges too.
    let calibrated = dynamic.quantize_static(train.x.view()).unwrap();
    assert!(input_ranges(&calibrated).iter().all(Option::is_some));
}

#[test]
fn a_calibrated_range_saturates_and_matches_a_row_whose_own_range_it_is() {
    let model = Sequential::<f32>::builder(40)
        .dense(24, Activation::Identity)
        .seed(6)
        .build()
        .unwrap();
    let x = Array2::from_shape_fn((5, 40), |(i, j)| ((i * 13 + j * 7) % 17) as f32 / 8.0 - 1.0);
    let q = model.quantize_static(x.view()).unwrap();
    let [lo, hi] = input_ranges(&q)[0].unwrap();
    assert!(
        (-1.0..-0.99).contains(&lo) && hi <= 1.0 && hi > 0.99,
        "[{lo}, {hi}]"
    );
    // Values beyond the range take the end codes, however far beyond.
    let wide = x.mapv(|v| 3.0 * v);
    let wider = wide.mapv(|v| if v.abs() > 1.0 { 100.0 * v } else { v });
    assert_ne!(wide, wider);
    assert_eq!(
        q.predict(wide.view()).unwrap(),
        q.predict(wider.view()).unwrap()
    );
    let dynamic = model.quantize(Precision::Int8).unwrap();
    assert_ne!(
        dynamic.predict(wide.view()).unwrap(),
        dynamic.predict(wider.view()).unwrap()
    );
    // A row spanning exactly the calibrated range quantizes as dynamic quantization does.
    let mut row = x.slice(s![0..1, ..]).mapv(|v| v.clamp(lo, hi));
    (row[[0, 0]], row[[0, 1]]) = (lo, hi);
    assert_eq!(
        q.predict(row.view()).unwrap(),
        dynamic.predict(row.view()).unwrap()
    );
}

#[test]
fn calibration_and_calibrated_files_refuse_what_they_cannot_use() {
    let model = small_model();
    let err = model
        .quantize_static(Array2::zeros((4, 5)).view())
        .unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    let err = model
        .quantize_static(Array2::zeros((0, 3)).view())
        .unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    let mut x = Array2::from_elem((4, 3), 0.5f32);
    x[[2, 1]] = f32::NAN;
    let err = model.quantize_static(x.view()).unwrap_err().to_string();
    assert!(err.contains("row 2, column 1"), "{err}");
    // An f64 model whose hidden values leave f32's range cannot be calibrated in f32.
    let big = Sequential::<f64>::builder(1)
        .dense(1, Activation::Identity)
        .dense(1, Activation::Identity)
        .build()
        .unwrap();
    let json = String::from_utf8(big.to_bytes(Format::Json).unwrap()).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    doc["layers"][0]["weights"][0][0] = serde_json::json!(1e300);
    let big = Sequential::<f64>::from_bytes(doc.to_string().as_bytes(), Format::Json).unwrap();
    let err = big
        .quantize_static(Array2::from_elem((1, 1), 1.0).view())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer 1") && err.contains("not finite"),
        "{err}"
    );

    // All inputs 1: the range is [0, 1] to within a bin of the calibration histogram.
    let q = model
        .quantize_static(Array2::from_elem((2, 3), 1.0f32).view())
        .unwrap();
    let json = String::from_utf8(q.to_bytes(Format::Json).unwrap()).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let range = &doc["layers"][0]["input_range"];
    assert_eq!(range[0], serde_json::json!(0.0));
    let hi = range[1].as_f64().unwrap();
    assert!(hi > 1.0 - 1.0 / 1024.0 && hi <= 1.0, "{range}");
    for bad in [
        serde_json::json!([0.5, 2.0]),
        serde_json::json!([-2.0, -1.0]),
    ] {
        let mut doc = doc.clone();
        doc["layers"][0]["input_range"] = bad;
        let err =
            Sequential::<f32>::from_bytes(doc.to_string().as_bytes(), Format::Json).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, Error::Spec { .. }) && msg.contains("hidden") && msg.contains("hold 0"),
            "{msg}"
        );
    }
    // A bf16 layer has no input range.
    let bf16 = model.quantize(Precision::Bf16).unwrap();
    let json = String::from_utf8(bf16.to_bytes(Format::Json).unwrap()).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    doc["layers"][0]["input_range"] = serde_json::json!([0.0, 1.0]);
    let err = Sequential::<f32>::from_bytes(doc.to_string().as_bytes(), Format::Json)
        .unwrap_err()
        .to_string();
    assert!(err.contains("input_range"), "{err}");
}

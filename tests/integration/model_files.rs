//! Model files: architecture from JSON/YAML, weights through every format, and a corpus of
//! hostile files, each with the error it must give.

use crate::helpers::params;
use crank::io::Format;
use crank::spec::ModelSpec;
use crank::{Activation, Error, Scalar, Sequential};
use ndarray::Array2;
use std::path::PathBuf;

fn model<F: Scalar>() -> Sequential<F> {
    Sequential::<F>::builder(5)
        .dense(7, Activation::Relu)
        .dense_named("mid", 6, Activation::LeakyRelu { alpha: 0.2 })
        .dense(3, Activation::Identity)
        .seed(11)
        .build()
        .unwrap()
}

fn inputs<F: Scalar>() -> Array2<F> {
    Array2::from_shape_fn((4, 5), |(i, j)| {
        F::of((i as f64 - 1.5) * 0.7 + j as f64 * 0.3)
    })
}

fn round_trip<F: Scalar>() {
    let mut original = model::<F>();
    let want = original.predict(inputs::<F>().view()).unwrap();
    for format in [Format::Json, Format::Bincode, Format::Safetensors] {
        let bytes = original.to_bytes(format).unwrap();
        assert_eq!(Format::detect(&bytes), Some(format));
        let mut back = Sequential::<F>::from_bytes(&bytes, format).unwrap();
        assert_eq!(back.to_spec(), original.to_spec(), "{format:?}");
        assert_eq!(
            params(&mut back),
            params(&mut original),
            "{format:?} {}",
            F::NAME
        );
        assert_eq!(
            back.predict(inputs::<F>().view()).unwrap(),
            want,
            "{format:?}"
        );
    }
}

#[test]
fn every_format_round_trips_exactly_in_f32_and_f64() {
    round_trip::<f32>();
    round_trip::<f64>();
}

/// The same model saves to the same bytes every time, in every format. (The safetensors crate
/// takes the metadata as a hash map and writes it in the map's order, which changes from one
/// map to the next; crank puts the entries in name order.)
#[test]
fn saving_the_same_model_twice_gives_the_same_bytes() {
    let m = model::<f32>();
    for format in [Format::Json, Format::Bincode, Format::Safetensors] {
        let first = m.to_bytes(format).unwrap();
        for _ in 0..8 {
            assert!(m.to_bytes(format).unwrap() == first, "{format:?}");
        }
    }
    let bytes = m.to_bytes(Format::Safetensors).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(len % 8, 0, "the data stays 8-byte aligned");
    let header = std::str::from_utf8(&bytes[8..8 + len]).unwrap();
    let at = |key: &str| header.find(&format!("\"{key}\"")).unwrap();
    assert!(at("crank_spec") < at("format") && at("format") < at("version"));
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("model_files");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn save_and_load_through_files_and_between_dtypes() {
    let m = model::<f64>();
    for (name, format) in [
        ("m.json", Format::Json),
        ("m.bin", Format::Bincode),
        ("m.safetensors", Format::Safetensors),
    ] {
        let path = tmp(name);
        m.save(&path, format).unwrap();
        let back = Sequential::<f64>::load(&path).unwrap();
        assert_eq!(back.to_spec(), m.to_spec());
        // An f64 file read as f32 gives the f32 model of the same weights.
        let narrow = Sequential::<f32>::load(&path).unwrap();
        let got = narrow.predict(inputs::<f32>().view()).unwrap();
        let want = m.predict(inputs::<f64>().view()).unwrap();
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| (*a as f64 - b).abs() < 1e-5)
        );
    }
}

#[test]
fn json_layout_is_the_documented_one() {
    let m = model::<f32>();
    let doc: serde_json::Value =
        serde_json::from_slice(&m.to_bytes(Format::Json).unwrap()).unwrap();
    assert_eq!(doc["format"], "crank");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["dtype"], "f32");
    let l1 = &doc["layers"][1];
    assert_eq!(l1["type"], "Dense");
    assert_eq!(l1["name"], "mid");
    assert_eq!(l1["input_size"], 7);
    assert_eq!(l1["output_size"], 6);
    assert_eq!(
        l1["activation_function"],
        serde_json::json!({"LeakyReLU": {"alpha": 0.2}})
    );
    assert_eq!(l1["weights"].as_array().unwrap().len(), 7);
    assert_eq!(l1["weights"][0].as_array().unwrap().len(), 6);
    assert_eq!(l1["biases"].as_array().unwrap().len(), 6);
    assert_eq!(doc["layers"][0]["activation_function"], "ReLU");
}

#[test]
fn non_finite_weights_cannot_be_saved_as_json() {
    let mut m = model::<f32>();
    m.visit_params(|i, p| {
        if i == 2 {
            p.value[3] = f32::NAN;
        }
    });
    let err = m.to_bytes(Format::Json).unwrap_err().to_string();
    assert!(
        err.contains("layer 1 (mid) weights") && err.contains("NaN"),
        "{err}"
    );
    // Binary formats hold them, but loading refuses them.
    let bytes = m.to_bytes(Format::Bincode).unwrap();
    let err = Sequential::<f32>::from_bytes(&bytes, Format::Bincode)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer 1 (mid)") && err.contains("not finite"),
        "{err}"
    );
}

#[test]
fn architecture_lives_in_a_yaml_file() {
    let yaml = "seed: 3\nlayers:\n  - {type: Dense, input_size: 5, output_size: 16, activation_function: GELU}\n  - {type: Dense, output_size: 2}\n";
    let spec = ModelSpec::from_yaml(yaml).unwrap();
    let a = Sequential::<f32>::from_spec(&spec).unwrap();
    assert_eq!(a.num_params(), 5 * 16 + 16 + 16 * 2 + 2);
    // Another width is an edit to the file.
    let wider = ModelSpec::from_yaml(&yaml.replace("16", "32")).unwrap();
    assert_eq!(
        Sequential::<f32>::from_spec(&wider).unwrap().num_params(),
        5 * 32 + 32 + 32 * 2 + 2
    );
    // The same seed gives the same weights; to_spec / from_spec round-trips the architecture.
    let mut b = Sequential::<f32>::from_spec(&spec).unwrap();
    let mut a = a;
    assert_eq!(params(&mut a), params(&mut b));
    assert_eq!(
        ModelSpec::from_json(&a.to_spec().to_json()).unwrap(),
        a.to_spec()
    );
}

/// Each hostile file, written to disk and loaded, gives an error containing every fragment.
fn expect_error(name: &str, bytes: &[u8], fragments: &[&str]) {
    let path = tmp(name);
    std::fs::write(&path, bytes).unwrap();
    let err = match Sequential::<f32>::load(&path) {
        Ok(_) => panic!("{name}: loaded"),
        Err(e) => e,
    };
    let msg = err.to_string();
    for f in fragments {
        assert!(msg.contains(f), "{name}: {msg:?} lacks {f:?}");
    }
    assert!(
        matches!(err, Error::File { .. } | Error::Spec { .. }),
        "{name}: {err:?}"
    );
}

fn bincode_file(version: u32, dtype: &str, spec: &str, tensors: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"CRANKBIN".to_vec();
    out.extend(version.to_le_bytes());
    let mut push_bytes = |b: &[u8]| {
        out.extend((b.len() as u64).to_le_bytes());
        out.extend_from_slice(b);
    };
    push_bytes(dtype.as_bytes());
    push_bytes(spec.as_bytes());
    let mut body = (tensors.len() as u64).to_le_bytes().to_vec();
    for t in tensors {
        body.extend((t.len() as u64).to_le_bytes());
        body.extend_from_slice(t);
    }
    out.extend(body);
    out
}

const SPEC: &str = r#"{"layers":[{"type":"Dense","name":"a","input_size":2,"output_size":1}]}"#;

#[test]
fn hostile_bincode_files() {
    let good = bincode_file(1, "f32", SPEC, &[vec![0; 8], vec![0; 4]]);
    assert!(
        Sequential::<f32>::from_bytes(&good, Format::Bincode).is_ok(),
        "the corpus's base file loads"
    );

    let mut wrong_magic = good.clone();
    wrong_magic[..8].copy_from_slice(b"CRANKBIM");
    let err = Sequential::<f32>::from_bytes(&wrong_magic, Format::Bincode)
        .unwrap_err()
        .to_string();
    assert!(err.contains("magic"), "{err}");

    expect_error(
        "newer.bin",
        &bincode_file(3, "f32", SPEC, &[vec![0; 8], vec![0; 4]]),
        &["version 3", "(1 to 2)"],
    );
    // A truncated file says so, and where: the field that runs past the end.
    expect_error(
        "truncated.bin",
        &good[..good.len() - 3],
        &[
            "bincode model",
            "ends early",
            "layer 0 (a) biases",
            "needs 4 bytes",
        ],
    );
    expect_error(
        "truncated_in_architecture.bin",
        &good[..40],
        &[
            "bincode model",
            "ends early, after 40 bytes",
            "architecture at byte 31",
        ],
    );
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"xx");
    expect_error("trailing.bin", &trailing, &["bincode model", "body"]);
    expect_error(
        "short_tensor.bin",
        &bincode_file(1, "f32", SPEC, &[vec![0; 4], vec![0; 4]]),
        &["layer 0 (a) weights", "4 bytes", "needs 8"],
    );
    expect_error(
        "missing_tensor.bin",
        &bincode_file(1, "f32", SPEC, &[vec![0; 8]]),
        &["layer 0 (a) biases", "missing"],
    );
    expect_error(
        "extra_tensor.bin",
        &bincode_file(1, "f32", SPEC, &[vec![0; 8], vec![0; 4], vec![0; 4]]),
        &["more tensors"],
    );
    expect_error(
        "dtype.bin",
        &bincode_file(1, "f16", SPEC, &[vec![0; 8], vec![0; 4]]),
        &["f16"],
    );
    let nan = [f32::NAN.to_le_bytes(), 0f32.to_le_bytes()].concat();
    expect_error(
        "nan.bin",
        &bincode_file(1, "f32", SPEC, &[nan, vec![0; 4]]),
        &["layer 0 (a)", "not finite"],
    );
    let huge =
        r#"{"layers":[{"type":"Dense","name":"big","input_size":1000000,"output_size":1000000}]}"#;
    expect_error(
        "1e12_weights.bin",
        &bincode_file(1, "f32", huge, &[]),
        &["layer 0 (big)", "limit"],
    );

    // A size field claiming 2^61 bytes: refused against the bytes that remain, nothing allocated.
    let mut hostile = good[..12].to_vec();
    hostile.extend((1u64 << 61).to_le_bytes());
    hostile.extend_from_slice(b"f32");
    expect_error(
        "hostile_size.bin",
        &hostile,
        &[
            "bincode model",
            "ends early",
            "dtype at byte 20 needs 2305843009213693952 bytes",
        ],
    );
    let mut hostile = bincode_file(1, "f32", SPEC, &[]);
    hostile.truncate(hostile.len() - 8);
    hostile.extend((u64::MAX / 2).to_le_bytes());
    expect_error("hostile_count.bin", &hostile, &["bincode model", "body"]);

    // Every truncation of a good file after its magic number is an error that says so.
    for cut in 8..good.len() {
        let err = Sequential::<f32>::from_bytes(&good[..cut], Format::Bincode)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("truncated") || err.contains("ends early"),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn hostile_json_files() {
    let good = String::from_utf8(model::<f32>().to_bytes(Format::Json).unwrap()).unwrap();
    let cases: &[(&str, String, &[&str])] = &[
        ("format.json", good.replacen("\"crank\"", "\"torch\"", 1), &["field `format`"]),
        ("newer.json", good.replacen("\"version\":1", "\"version\":3", 1), &["version 3", "(1 to 2)"]),
        ("dtype.json", good.replacen("\"f32\"", "\"f16\"", 1), &["field `dtype`"]),
        ("truncated.json", good[..good.len() / 2].to_string(), &["JSON model", "EOF"]),
        ("trailing.json", format!("{good} {{}}"), &["JSON model", "trailing"]),
        ("nan.json", good.replacen("\"biases\":[", "\"biases\":[NaN,", 1), &["JSON model"]),
        ("extra_entry.json", good.replacen("\"biases\":[", "\"biases\":[1e300,", 1), &["layer 0 (dense_0) biases", "expected 7 entries"]),
        ("unknown.json", good.replacen("\"dtype\"", "\"extra\":1,\"dtype\"", 1), &["unknown field `extra`"]),
        ("bad_type.json", good.replacen("\"Dense\"", "\"Conv2d\"", 1), &["layer 0 (dense_0)", "Conv2d"]),
        ("chain.json", good.replacen("\"input_size\":7", "\"input_size\":8", 1), &["layer 1 (mid)", "input_size"]),
        ("missing.json", good.replacen("\"biases\"", "\"bias\"", 1), &["layer 0 (dense_0)", "bias"]),
        ("string.json", good.replacen("\"biases\":[", "\"biases\":[\"x\",", 1), &["layer 0 (dense_0) biases"]),
        ("deep.json", format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)), &["JSON model", "recursion"]),
        ("huge.json", r#"{"format":"crank","version":1,"dtype":"f32","layers":[{"type":"Dense","name":"big","input_size":1000000,"output_size":1000000,"weights":[],"biases":[]}]}"#.into(), &["layer 0 (big)", "limit"]),
    ];
    for (name, text, fragments) in cases {
        expect_error(name, text.as_bytes(), fragments);
    }
    for cut in (0..good.len()).step_by(7) {
        assert!(Sequential::<f32>::from_bytes(&good.as_bytes()[..cut], Format::Json).is_err());
    }
}

#[test]
fn json_values_out_of_range_for_the_dtype() {
    let m = model::<f64>();
    let mut doc: serde_json::Value =
        serde_json::from_slice(&m.to_bytes(Format::Json).unwrap()).unwrap();
    doc["layers"][0]["biases"][0] = serde_json::json!(1e300);
    let bytes = serde_json::to_vec(&doc).unwrap();
    assert!(Sequential::<f64>::from_bytes(&bytes, Format::Json).is_ok());
    let err = Sequential::<f32>::from_bytes(&bytes, Format::Json)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer 0 (dense_0) biases[0]") && err.contains("out of range for f32"),
        "{err}"
    );
}

#[test]
fn hostile_safetensors_files() {
    let m = model::<f32>();
    let good = m.to_bytes(Format::Safetensors).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&good[8..8 + header_len])
        .unwrap()
        .to_string();
    let with_header = |h: &str| {
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&good[8 + header_len..]);
        out
    };
    let mut huge_header = good.clone();
    huge_header[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    expect_error(
        "huge_header.safetensors",
        &huge_header,
        &["safetensors", "header"],
    );
    expect_error(
        "truncated.safetensors",
        &good[..good.len() - 1],
        &["safetensors", "header"],
    );
    expect_error(
        "renamed.safetensors",
        &with_header(&header.replacen("\"2.weight\"", "\"9.weight\"", 1)),
        &["tensor `2.weight`", "missing"],
    );
    expect_error(
        "dtype.safetensors",
        &with_header(&header.replace("F32", "I32")),
        &["dtype"],
    );
    // Without crank's description, a PyTorch file needs the architecture from the caller.
    let bare = header.replacen("\"crank_spec\"", "\"other\"", 1);
    let err = Sequential::<f32>::from_bytes(&with_header(&bare), Format::Safetensors).unwrap_err();
    assert!(err.to_string().contains("crank_spec"), "{err}");
    let back =
        Sequential::<f32>::from_safetensors(&with_header(&bare), Some(&m.to_spec())).unwrap();
    assert_eq!(back.to_spec(), m.to_spec());
    // An architecture that does not fit the tensors.
    let other = ModelSpec::from_yaml("layers: [{type: Dense, input_size: 5, output_size: 8, activation_function: ReLU}, {type: Dense, output_size: 3}]").unwrap();
    let err = Sequential::<f32>::from_safetensors(&good, Some(&other))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tensor `0.weight`") && err.contains("shape [7, 5], expected [8, 5]"),
        "{err}"
    );
    for cut in 0..good.len() {
        assert!(Sequential::<f32>::from_bytes(&good[..cut], Format::Safetensors).is_err());
    }
}

#[test]
fn every_layer_kind_round_trips_with_its_statistics() {
    let mut m = Sequential::<f64>::builder(5)
        .dense(8, Activation::Relu)
        .batch_norm()
        .activation(Activation::LeakyRelu { alpha: 0.2 })
        .dropout(0.25)
        .dense(6, Activation::Gelu)
        .layer_norm()
        .dense(3, Activation::Identity)
        .seed(4)
        .build()
        .unwrap();
    let x = inputs::<f64>();
    let mut sgd = crank::Sgd::new(0.1).unwrap();
    for _ in 0..3 {
        m.train_step(
            x.view(),
            &vec![0, 1, 2, 1],
            &crank::Loss::SoftmaxCrossEntropy,
            &mut sgd,
        )
        .unwrap();
    }
    let want = m.predict(x.view()).unwrap();
    for format in [Format::Json, Format::Bincode, Format::Safetensors] {
        let back = Sequential::<f64>::from_bytes(&m.to_bytes(format).unwrap(), format).unwrap();
        assert_eq!(back.to_spec(), m.to_spec(), "{format:?}");
        assert_eq!(back.predict(x.view()).unwrap(), want, "{format:?}");
    }
    // The description counts the values the tensors hold without building the model.
    let mut values = 0;
    for layer in m.layers() {
        layer.visit_tensors(&mut |t| values += t.data.len());
    }
    assert_eq!(m.to_spec().tensor_values().unwrap(), values as u64);
    // PyTorch's names: Linear, ReLU, BatchNorm1d, LeakyReLU, Dropout, Linear, GELU, LayerNorm,
    // Linear.
    assert_eq!(
        crank::io::torch_names(&m.to_spec()),
        vec![0, 2, 3, 4, 5, 7, 8]
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&m.to_bytes(Format::Json).unwrap()).unwrap();
    let bn = &doc["layers"][1];
    assert_eq!(bn["type"], "BatchNorm");
    assert_eq!(bn["running_var"].as_array().unwrap().len(), 8);
    assert!(
        bn["running_mean"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v.as_f64() != Some(0.0))
    );
    assert_eq!(doc["layers"][2]["type"], "Activation");
    assert_eq!(doc["layers"][3]["rate"], 0.25);
}

#[test]
fn every_layer_kind_is_rebuilt_from_its_own_spec() {
    let model = Sequential::<f64>::builder(5)
        .dense(6, Activation::Tanh)
        .batch_norm()
        .activation(Activation::Softplus)
        .dropout(0.25)
        .layer_norm()
        .dense(2, Activation::Identity)
        .seed(3)
        .build()
        .unwrap();
    for original in model.layers() {
        let spec = original.to_spec();
        let rebuilt = crank::layer::from_spec::<f64>(&spec, 3).unwrap();
        assert_eq!(rebuilt.to_spec(), spec);
        assert_eq!(rebuilt.kind(), original.kind());
        assert_eq!(rebuilt.num_params(), original.num_params());
        // Fresh weights follow the seed: the same seed gives the same tensors, another does not.
        let tensors = |l: &dyn crank::Layer<f64>| {
            let mut out = Vec::new();
            l.visit_tensors(&mut |t| out.push(t.data.values().into_owned()));
            out
        };
        let again = crank::layer::from_spec::<f64>(&spec, 3).unwrap();
        assert_eq!(tensors(&*rebuilt), tensors(&*again));
        if original.kind() == "Dense" {
            let other = crank::layer::from_spec::<f64>(&spec, 4).unwrap();
            assert_ne!(tensors(&*rebuilt), tensors(&*other));
        }
    }
    // A layer on its own needs its input size.
    let mut spec = model.layers()[0].to_spec();
    if let crank::spec::LayerSpec::Dense(d) = &mut spec {
        d.input_size = None;
    }
    let err = crank::layer::from_spec::<f32>(&spec, 0).unwrap_err();
    assert!(err.to_string().contains("input_size"), "{err}");
}

/// One layer built from a description meets the same checks and limits as a model file's.
#[test]
fn a_layer_from_its_description_is_held_to_the_limits() {
    use crank::spec::{DenseSpec, DropoutSpec, LayerSpec};
    let huge = LayerSpec::Dense(DenseSpec {
        name: Some("big".into()),
        input_size: Some(1_000_000),
        output_size: 1_000_000,
        activation_function: Activation::Relu,
    });
    let err = crank::layer::from_spec::<f32>(&huge, 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer 0 (big)") && err.contains("limit"),
        "{err}"
    );
    let bad_rate = LayerSpec::Dropout(DropoutSpec {
        name: None,
        input_size: Some(4),
        rate: 1.5,
        seed: None,
    });
    let err = crank::layer::from_spec::<f32>(&bad_rate, 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer 0 (dropout_0)") && err.contains("rate"),
        "{err}"
    );
    let mut no_input = huge.clone();
    if let LayerSpec::Dense(d) = &mut no_input {
        d.input_size = None;
    }
    let err = crank::layer::from_spec::<f32>(&no_input, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("input_size"), "{err}");
}

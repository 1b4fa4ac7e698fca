//! End-to-end tests of the `crank` command, run as a built binary.

use assert_cmd::Command;
use crank::data::Classification;
use std::path::{Path, PathBuf};

fn crank() -> Command {
    Command::cargo_bin("crank").unwrap()
}

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("cli")
        .join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn root(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn write_csv(path: &Path, data: &Classification<f32>) {
    let mut text: String = (0..data.x.ncols()).map(|j| format!("p{j},")).collect();
    text.push_str("label\n");
    for (row, label) in data.x.rows().into_iter().zip(&data.labels) {
        for v in row {
            text.push_str(&format!("{v},"));
        }
        text.push_str(&format!("{label}\n"));
    }
    std::fs::write(path, text).unwrap();
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "failed: {err}");
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with one clear line on stderr containing `want`.
fn fails(cmd: &mut Command, want: &str) {
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(want),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn digits_train_evaluate_predict_inspect_convert() {
    let d = dir("digits");
    let data = Classification::<f32>::from_csv(root("data/digits.csv"), None).unwrap();
    let (train, test) = data.split(0.2, 7).unwrap();
    write_csv(&d.join("train.csv"), &train);
    write_csv(&d.join("test.csv"), &test);

    let model = d.join("digits.crank");
    let out = stdout(
        crank()
            .arg("train")
            .arg(root("examples/digits.yaml"))
            .arg("--data")
            .arg(d.join("train.csv"))
            .arg("--out")
            .arg(&model)
            .args(["--epochs", "40", "--seed", "3"])
            .arg("--history")
            .arg(d.join("history.csv"))
            .arg("--plot")
            .arg(d.join("history.svg"))
            .arg("--checkpoint")
            .arg(d.join("digits.ckpt")),
    );
    assert!(out.contains("saved"), "{out}");
    let history = std::fs::read_to_string(d.join("history.csv")).unwrap();
    assert!(
        history.starts_with("epoch,lr,seconds,accuracy,loss,val_accuracy,val_loss\n"),
        "{history}"
    );
    let svg = std::fs::read_to_string(d.join("history.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("validation") && svg.contains("accuracy"));

    let json = stdout(
        crank()
            .arg("evaluate")
            .arg(&model)
            .arg("--data")
            .arg(d.join("test.csv"))
            .arg("--json"),
    );
    let metrics: serde_json::Value = serde_json::from_str(&json).unwrap();
    let acc = metrics["accuracy"].as_f64().unwrap();
    assert!(acc >= 0.95, "held-out accuracy {acc}");

    let inspect = stdout(crank().arg("inspect").arg(&model));
    for want in ["Bincode", "4810 parameters", "hidden", "classes: 0, 1, 2"] {
        assert!(inspect.contains(want), "{inspect}");
    }

    let predict = |model: &Path, out: &Path| {
        stdout(
            crank()
                .arg("predict")
                .arg(model)
                .arg("--data")
                .arg(d.join("test.csv"))
                .arg("--out")
                .arg(out),
        );
        std::fs::read_to_string(out).unwrap()
    };
    let first = predict(&model, &d.join("pred.csv"));
    assert_eq!(first.lines().count(), test.len() + 1);
    assert!(first.starts_with("class,p_0,p_1,"), "{}", &first[..40]);
    let correct = first
        .lines()
        .skip(1)
        .zip(&test.labels)
        .filter(|(line, label)| line.split(',').next() == Some(&label.to_string()))
        .count();
    assert!((correct as f64 / test.len() as f64 - acc).abs() < 1e-9);

    // Through every format and back: identical predictions.
    let mut previous = model.clone();
    for ext in ["json", "safetensors", "bin", "crank"] {
        let next = d.join(format!("converted.{ext}"));
        stdout(crank().arg("convert").arg(&previous).arg(&next));
        assert_eq!(
            predict(&next, &d.join(format!("pred.{ext}.csv"))),
            first,
            "{ext}"
        );
        previous = next;
    }

    // Resume from the checkpoint for a few more epochs.
    let out = stdout(
        crank()
            .arg("resume")
            .arg(d.join("digits.ckpt"))
            .arg("--config")
            .arg(root("examples/digits.yaml"))
            .arg("--data")
            .arg(d.join("train.csv"))
            .arg("--out")
            .arg(d.join("resumed.crank"))
            .args(["--epochs", "2"]),
    );
    assert!(out.contains("trained 2 more epochs"), "{out}");
}

#[test]
fn string_labels_and_regression() {
    let d = dir("labels");
    let mut text = String::from("a,b,animal\n");
    for i in 0..60 {
        let (a, b) = ((i % 7) as f32, (i % 5) as f32);
        text.push_str(&format!("{a},{b},{}\n", if a > b { "cat" } else { "dog" }));
    }
    std::fs::write(d.join("pets.csv"), &text).unwrap();
    let config = d.join("pets.yaml");
    std::fs::write(
        &config,
        "layers:\n  - {type: Dense, input_size: 2, output_size: 16, activation_function: Tanh}\n  - {type: Dense, output_size: 2}\ntraining:\n  optimizer: {type: Adam, lr: 0.05}\n  epochs: 80\n  batch_size: 16\n",
    )
    .unwrap();
    stdout(
        crank()
            .arg("train")
            .arg(&config)
            .arg("--data")
            .arg(d.join("pets.csv"))
            .arg("--label")
            .arg("animal")
            .arg("--out")
            .arg(d.join("pets.json")),
    );
    stdout(
        crank()
            .arg("predict")
            .arg(d.join("pets.json"))
            .arg("--data")
            .arg(d.join("pets.csv"))
            .arg("--out")
            .arg(d.join("p.csv")),
    );
    let pred = std::fs::read_to_string(d.join("p.csv")).unwrap();
    assert!(pred.starts_with("class,p_cat,p_dog\n"), "{pred}");
    let right = pred
        .lines()
        .skip(1)
        .zip(text.lines().skip(1))
        .filter(|(p, t)| t.ends_with(p.split(',').next().unwrap()))
        .count();
    assert!(right >= 55, "{right} of 60");

    // Regression: a numeric label with MSE.
    let mut text = String::from("x,y\n");
    for i in 0..80 {
        let x = i as f32 / 40.0 - 1.0;
        text.push_str(&format!("{x},{}\n", 2.0 * x + 0.5));
    }
    std::fs::write(d.join("line.csv"), &text).unwrap();
    std::fs::write(d.join("line.yaml"), "layers: [{type: Dense, input_size: 1, output_size: 1}]\ntraining: {loss: MSE, optimizer: {type: SGD, lr: 0.1}, epochs: 60, batch_size: 8}\n").unwrap();
    stdout(
        crank()
            .arg("train")
            .arg(d.join("line.yaml"))
            .arg("--data")
            .arg(d.join("line.csv"))
            .arg("--out")
            .arg(d.join("line.crank")),
    );
    let m: serde_json::Value = serde_json::from_str(&stdout(
        crank()
            .arg("evaluate")
            .arg(d.join("line.crank"))
            .arg("--data")
            .arg(d.join("line.csv"))
            .arg("--json"),
    ))
    .unwrap();
    assert!(m["mse"].as_f64().unwrap() < 1e-4, "{m}");
}

#[test]
fn bad_inputs_give_one_line_errors() {
    let d = dir("errors");
    let good_yaml = root("examples/digits.yaml");
    std::fs::write(
        d.join("bad.yaml"),
        "layers: [{type: Dense, input_size: 64, output_size: 10, units: 3}]\n",
    )
    .unwrap();
    fails(
        crank()
            .arg("train")
            .arg(d.join("bad.yaml"))
            .arg("--data")
            .arg(root("data/digits.csv"))
            .arg("--out")
            .arg(d.join("m.crank")),
        "units",
    );
    std::fs::write(d.join("broken.yaml"), "layers: [unclosed\n").unwrap();
    fails(
        crank()
            .arg("train")
            .arg(d.join("broken.yaml"))
            .arg("--data")
            .arg(root("data/digits.csv"))
            .arg("--out")
            .arg(d.join("m.crank")),
        "broken.yaml",
    );
    std::fs::write(d.join("bad.csv"), "a,b,label\n1,2,0\n3,oops,1\n").unwrap();
    fails(
        crank()
            .arg("train")
            .arg(&good_yaml)
            .arg("--data")
            .arg(d.join("bad.csv"))
            .arg("--out")
            .arg(d.join("m.crank")),
        "bad.csv:3:2",
    );
    std::fs::write(d.join("ragged.csv"), "a,b,label\n1,2,0\n3,1\n").unwrap();
    fails(
        crank()
            .arg("train")
            .arg(&good_yaml)
            .arg("--data")
            .arg(d.join("ragged.csv"))
            .arg("--out")
            .arg(d.join("m.crank")),
        "ragged.csv:3",
    );
    std::fs::write(d.join("empty.csv"), "").unwrap();
    fails(
        crank()
            .arg("train")
            .arg(&good_yaml)
            .arg("--data")
            .arg(d.join("empty.csv"))
            .arg("--out")
            .arg(d.join("m.crank")),
        "empty.csv",
    );
    std::fs::write(d.join("narrow.csv"), "a,b,label\n1,2,0\n3,1,1\n").unwrap();
    fails(
        crank()
            .arg("train")
            .arg(&good_yaml)
            .arg("--data")
            .arg(d.join("narrow.csv"))
            .arg("--out")
            .arg(d.join("m.crank")),
        "64 inputs",
    );
    std::fs::write(d.join("junk.crank"), b"CRANKBIN\x07\0\0\0junk").unwrap();
    fails(
        crank().arg("inspect").arg(d.join("junk.crank")),
        "version 7",
    );
    std::fs::write(
        d.join("junk.json"),
        b"{\"format\": \"crank\", \"version\": 1",
    )
    .unwrap();
    fails(
        crank()
            .arg("evaluate")
            .arg(d.join("junk.json"))
            .arg("--data")
            .arg(root("data/digits.csv")),
        "JSON model",
    );
    fails(
        crank().arg("inspect").arg(d.join("missing.crank")),
        "missing.crank",
    );
    fails(
        crank()
            .arg("convert")
            .arg(d.join("junk.crank"))
            .arg(d.join("out.txt")),
        "version 7",
    );
}

#[test]
fn fashion_mnist_one_epoch() {
    let base = Path::new("/usr/share/datasets/fashion-mnist");
    let train = base.join("train-images-idx3-ubyte.gz");
    if !train.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs dataset-fashion-mnist"
        );
        eprintln!(
            "skipped: {} is absent (apt-get install dataset-fashion-mnist)",
            train.display()
        );
        return;
    }
    let d = dir("fashion");
    let model = d.join("fashion.crank");
    stdout(
        crank()
            .arg("train")
            .arg(root("examples/fashion-mnist.yaml"))
            .arg("--data")
            .arg(&train)
            .arg("--out")
            .arg(&model)
            .args(["--epochs", "1"]),
    );
    let json = stdout(
        crank()
            .arg("evaluate")
            .arg(&model)
            .arg("--data")
            .arg(base.join("t10k-images-idx3-ubyte.gz"))
            .arg("--json"),
    );
    let m: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(m["accuracy"].as_f64().unwrap() >= 0.80, "{m}");
}

#[test]
fn npz_training_and_npy_prediction() {
    let d = dir("npz");
    let x = ndarray::Array2::from_shape_fn((100, 3), |(i, j)| {
        ((i * 7 + j * 5) % 11) as f64 / 5.0 - 1.0
    });
    let y = ndarray::Array1::from_shape_fn(100, |i| (x[[i, 0]] > x[[i, 1]]) as i64);
    let mut npz =
        ndarray_npy::NpzWriter::new_compressed(std::fs::File::create(d.join("data.npz")).unwrap());
    npz.add_array("x", &x).unwrap();
    npz.add_array("y", &y).unwrap();
    npz.finish().unwrap();
    ndarray_npy::write_npy(d.join("x.npy"), &x.mapv(|v| v as f32)).unwrap();
    std::fs::write(
        d.join("m.yaml"),
        "layers: [{type: Dense, input_size: 3, output_size: 16, activation_function: ReLU}, {type: Dense, output_size: 2}]\ntraining: {optimizer: {type: Adam, lr: 0.03}, epochs: 60, batch_size: 16}\n",
    )
    .unwrap();
    stdout(
        crank()
            .arg("train")
            .arg(d.join("m.yaml"))
            .arg("--data")
            .arg(d.join("data.npz"))
            .arg("--out")
            .arg(d.join("m.crank")),
    );
    stdout(
        crank()
            .arg("predict")
            .arg(d.join("m.crank"))
            .arg("--data")
            .arg(d.join("x.npy"))
            .arg("--out")
            .arg(d.join("p.csv")),
    );
    let pred = std::fs::read_to_string(d.join("p.csv")).unwrap();
    let right = pred
        .lines()
        .skip(1)
        .zip(&y)
        .filter(|(l, y)| l.split(',').next() == Some(&y.to_string()))
        .count();
    assert!(right >= 90, "{right} of 100");
    std::fs::write(d.join("bad.npz"), b"PK not really").unwrap();
    fails(
        crank()
            .arg("train")
            .arg(d.join("m.yaml"))
            .arg("--data")
            .arg(d.join("bad.npz"))
            .arg("--out")
            .arg(d.join("x.crank")),
        "bad.npz",
    );
}

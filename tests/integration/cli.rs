//! End-to-end tests of the `crank` command, run as a built binary.

use assert_cmd::Command;
use crank::data::Classification;
use std::borrow::BorrowMut;
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

/// `crank train <config> --data <data> --out <out>`, to add flags to.
fn train_cmd(config: impl AsRef<Path>, data: impl AsRef<Path>, out: impl AsRef<Path>) -> Command {
    let mut cmd = crank();
    cmd.arg("train")
        .arg(config.as_ref())
        .arg("--data")
        .arg(data.as_ref())
        .arg("--out")
        .arg(out.as_ref());
    cmd
}

fn stdout(mut cmd: impl BorrowMut<Command>) -> String {
    let out = cmd.borrow_mut().output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "failed: {err}");
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with one clear line on stderr containing `want`.
fn fails(mut cmd: impl BorrowMut<Command>, want: &str) {
    let out = cmd.borrow_mut().output().unwrap();
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
        train_cmd(root("examples/digits.yaml"), d.join("train.csv"), &model)
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
    for ext in ["json", "safetensors", "onnx", "bin", "crank"] {
        let next = d.join(format!("converted.{ext}"));
        stdout(crank().arg("convert").arg(&previous).arg(&next));
        assert_eq!(
            predict(&next, &d.join(format!("pred.{ext}.csv"))),
            first,
            "{ext}"
        );
        previous = next;
    }

    // Resume from the checkpoint for a few more epochs, on two threads (this one among them).
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
            .args(["--epochs", "2", "--threads", "2"]),
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
    stdout(train_cmd(
        d.join("line.yaml"),
        d.join("line.csv"),
        d.join("line.crank"),
    ));
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
        train_cmd(
            d.join("bad.yaml"),
            root("data/digits.csv"),
            d.join("m.crank"),
        ),
        "units",
    );
    std::fs::write(d.join("broken.yaml"), "layers: [unclosed\n").unwrap();
    fails(
        train_cmd(
            d.join("broken.yaml"),
            root("data/digits.csv"),
            d.join("m.crank"),
        ),
        "broken.yaml",
    );
    std::fs::write(d.join("bad.csv"), "a,b,label\n1,2,0\n3,oops,1\n").unwrap();
    fails(
        train_cmd(&good_yaml, d.join("bad.csv"), d.join("m.crank")),
        "bad.csv:3:2",
    );
    std::fs::write(d.join("ragged.csv"), "a,b,label\n1,2,0\n3,1\n").unwrap();
    fails(
        train_cmd(&good_yaml, d.join("ragged.csv"), d.join("m.crank")),
        "ragged.csv:3",
    );
    std::fs::write(d.join("empty.csv"), "").unwrap();
    fails(
        train_cmd(&good_yaml, d.join("empty.csv"), d.join("m.crank")),
        "empty.csv",
    );
    std::fs::write(d.join("narrow.csv"), "a,b,label\n1,2,0\n3,1,1\n").unwrap();
    fails(
        train_cmd(&good_yaml, d.join("narrow.csv"), d.join("m.crank")),
        "64 inputs",
    );
    fails(
        train_cmd(&good_yaml, root("data/digits.csv"), d.join("m.crank")).args(["--threads", "0"]),
        "thread count must be at least 1",
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
    stdout(train_cmd(root("examples/fashion-mnist.yaml"), &train, &model).args(["--epochs", "1"]));
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
    stdout(train_cmd(
        d.join("m.yaml"),
        d.join("data.npz"),
        d.join("m.crank"),
    ));
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
        train_cmd(d.join("m.yaml"), d.join("bad.npz"), d.join("x.crank")),
        "bad.npz",
    );
}

/// The digits as a binary problem (digit ≥ 5), split 80/20: train and test CSVs.
fn binary_digits(d: &Path, names: [&str; 2]) -> usize {
    let data = Classification::<f32>::from_csv(root("data/digits.csv"), None).unwrap();
    let (train, test) = data.split(0.2, 7).unwrap();
    for (set, file) in [(&train, "train.csv"), (&test, "test.csv")] {
        let mut text: String = (0..set.x.ncols()).map(|j| format!("p{j},")).collect();
        text.push_str("digit\n");
        for (row, label) in set.x.rows().into_iter().zip(&set.labels) {
            for v in row {
                text.push_str(&format!("{v},"));
            }
            text.push_str(names[usize::from(*label >= 5)]);
            text.push('\n');
        }
        std::fs::write(d.join(file), text).unwrap();
    }
    test.len()
}

fn metrics(json: &str) -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_str(json).unwrap()
}

#[test]
fn binary_classifiers_evaluate_and_predict_as_classifiers() {
    let d = dir("binary");
    let n_test = binary_digits(&d, ["low", "high"]);
    std::fs::write(
        d.join("bin.yaml"),
        "layers:\n  - {type: Dense, input_size: 64, output_size: 32, activation_function: ReLU}\n  - {type: Dense, output_size: 1}\ntraining: {loss: BinaryCrossEntropy, optimizer: {type: Adam, lr: 0.003}, epochs: 15, seed: 1}\n",
    )
    .unwrap();
    let model = d.join("bin.crank");
    let out = stdout(train_cmd(d.join("bin.yaml"), d.join("train.csv"), &model));
    assert!(out.contains("accuracy"), "{out}");

    let m = metrics(&stdout(
        crank()
            .arg("evaluate")
            .arg(&model)
            .arg("--data")
            .arg(d.join("test.csv"))
            .arg("--json"),
    ));
    assert_eq!(
        m.keys().collect::<Vec<_>>(),
        ["accuracy", "loss"],
        "a binary classifier reports its loss and accuracy: {m:?}"
    );
    let acc = m["accuracy"].as_f64().unwrap();
    let loss = m["loss"].as_f64().unwrap();
    assert!(acc >= 0.93, "held-out accuracy {acc}");
    assert!(loss > 0.0 && loss < 0.3, "binary cross-entropy {loss}");

    // Predictions to standard output: the class and the two probabilities.
    let csv = stdout(
        crank()
            .arg("predict")
            .arg(&model)
            .arg("--data")
            .arg(d.join("test.csv")),
    );
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("class,p_high,p_low"));
    let truth: Vec<String> = std::fs::read_to_string(d.join("test.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().to_string())
        .collect();
    let (mut right, mut ce) = (0, 0.0);
    for (line, want) in lines.zip(&truth) {
        let cells: Vec<&str> = line.split(',').collect();
        let (p_high, p_low): (f64, f64) = (cells[1].parse().unwrap(), cells[2].parse().unwrap());
        assert!((p_high + p_low - 1.0).abs() < 1e-6, "{line}");
        // The second class (in sorted order, "low") is the positive one.
        assert_eq!(cells[0], if p_low > 0.5 { "low" } else { "high" }, "{line}");
        right += usize::from(cells[0] == want);
        ce -= if want == "low" { p_low } else { p_high }.max(1e-12).ln();
    }
    assert_eq!(csv.lines().count(), n_test + 1);
    assert!((right as f64 / n_test as f64 - acc).abs() < 1e-9);
    // The reported loss is the cross-entropy of the written probabilities.
    assert!(
        (ce / n_test as f64 - loss).abs() < 1e-3 * loss.max(1e-3),
        "{ce} vs {loss}"
    );
    // `--out -` is standard output too.
    let dash = stdout(
        crank()
            .arg("predict")
            .arg(&model)
            .arg("--data")
            .arg(d.join("test.csv"))
            .args(["--out", "-"]),
    );
    assert_eq!(dash, csv);
    assert!(!d.join("-").exists());

    let inspect = stdout(crank().arg("inspect").arg(&model));
    for want in [
        "task: binary classifier, trained with BinaryCrossEntropy",
        "classes: high, low",
    ] {
        assert!(inspect.contains(want), "{inspect}");
    }

    // Three classes are not a binary problem; two outputs are not a binary classifier.
    let three = "a,label\n1,x\n2,y\n3,z\n";
    std::fs::write(d.join("three.csv"), three).unwrap();
    std::fs::write(
        d.join("one.yaml"),
        "layers: [{type: Dense, input_size: 1, output_size: 1}]\ntraining: {loss: BinaryCrossEntropy}\n",
    )
    .unwrap();
    fails(
        train_cmd(d.join("one.yaml"), d.join("three.csv"), d.join("x.crank")),
        "3 distinct values (x, y, z)",
    );
    std::fs::write(d.join("two.csv"), "a,label\n1,x\n2,y\n").unwrap();
    std::fs::write(
        d.join("two.yaml"),
        "layers: [{type: Dense, input_size: 1, output_size: 2}]\ntraining: {loss: BinaryCrossEntropy}\n",
    )
    .unwrap();
    fails(
        train_cmd(d.join("two.yaml"), d.join("two.csv"), d.join("x.crank")),
        "trains one output",
    );
}

#[test]
fn evaluate_reports_what_each_kind_of_model_is_judged_by() {
    let d = dir("kinds");
    // Multi-class with three classes: no top-3 accuracy (always 1); with ten, there is one.
    let mut text = String::from("a,b,label\n");
    for i in 0..90 {
        let (a, b) = ((i % 9) as f32, (i % 4) as f32);
        text.push_str(&format!("{a},{b},{}\n", ["r", "g", "b"][(i % 9) / 3]));
    }
    std::fs::write(d.join("three.csv"), &text).unwrap();
    std::fs::write(
        d.join("three.yaml"),
        "layers: [{type: Dense, input_size: 2, output_size: 16, activation_function: Tanh}, {type: Dense, output_size: 3}]\ntraining: {optimizer: {type: Adam, lr: 0.05}, epochs: 40, batch_size: 16}\n",
    )
    .unwrap();
    let evaluate = |yaml: &str, data: &str| {
        let model = d.join(format!("{yaml}.crank"));
        stdout(train_cmd(d.join(yaml), d.join(data), &model));
        metrics(&stdout(
            crank()
                .arg("evaluate")
                .arg(&model)
                .arg("--data")
                .arg(d.join(data))
                .arg("--json"),
        ))
    };
    let m = evaluate("three.yaml", "three.csv");
    assert_eq!(m.keys().collect::<Vec<_>>(), ["accuracy", "loss"], "{m:?}");
    assert!(m["accuracy"].as_f64().unwrap() > 0.9, "{m:?}");

    let data = Classification::<f32>::from_csv(root("data/digits.csv"), None).unwrap();
    write_csv(&d.join("digits.csv"), &data);
    std::fs::copy(root("examples/digits.yaml"), d.join("digits.yaml")).unwrap();
    let m = evaluate("digits.yaml", "digits.csv");
    assert_eq!(
        m.keys().collect::<Vec<_>>(),
        ["accuracy", "loss", "top3_accuracy"],
        "{m:?}"
    );

    // A regression reports the loss it was trained with (Huber here) beside MSE, MAE and R².
    let mut text = String::from("x,y\n");
    for i in 0..80 {
        let x = i as f32 / 40.0 - 1.0;
        text.push_str(&format!("{x},{}\n", 3.0 * x + 0.5));
    }
    std::fs::write(d.join("line.csv"), &text).unwrap();
    std::fs::write(
        d.join("huber.yaml"),
        "layers: [{type: Dense, input_size: 1, output_size: 1}]\ntraining: {loss: {Huber: {delta: 0.1}}, optimizer: {type: SGD, lr: 0.1}, epochs: 3, batch_size: 8}\n",
    )
    .unwrap();
    let m = evaluate("huber.yaml", "line.csv");
    assert_eq!(
        m.keys().collect::<Vec<_>>(),
        ["loss", "mae", "mse", "r2"],
        "{m:?}"
    );
    let (loss, mae, mse) = (
        m["loss"].as_f64().unwrap(),
        m["mae"].as_f64().unwrap(),
        m["mse"].as_f64().unwrap(),
    );
    // Huber with δ = 0.1 is δ(|r| − δ/2) beyond δ: far below the MSE of an undertrained line.
    assert!(loss < mse && loss <= 0.1 * mae, "{m:?}");
    let inspect = stdout(crank().arg("inspect").arg(d.join("huber.yaml.crank")));
    assert!(
        inspect.contains("task: regression, trained with Huber(0.1)"),
        "{inspect}"
    );
}

#[test]
fn resume_continues_the_run_bitwise() {
    let d = dir("resume");
    let data = Classification::<f32>::from_csv(root("data/digits.csv"), None).unwrap();
    write_csv(&d.join("digits.csv"), &data);
    // Adam, a cosine schedule, standardised inputs, no validation: as the issue's r.yaml.
    std::fs::write(
        d.join("r.yaml"),
        "layers:\n  - {type: Dense, input_size: 64, output_size: 32, activation_function: ReLU}\n  - {type: Dense, output_size: 10}\ntraining:\n  optimizer: {type: Adam, lr: 0.003}\n  schedule: {type: Cosine, t_max: 8}\n  epochs: 8\n  batch_size: 32\n",
    )
    .unwrap();
    let train = |epochs: &str, out: &str, extra: &[&str]| {
        stdout(
            train_cmd(d.join("r.yaml"), d.join("digits.csv"), d.join(out))
                .args(["--epochs", epochs])
                .args(extra),
        )
    };
    train("8", "straight.json", &[]);
    let ckpt = d.join("half.ckpt");
    train("4", "half.json", &["--checkpoint", ckpt.to_str().unwrap()]);

    let inspect = stdout(crank().arg("inspect").arg(&ckpt));
    for want in [
        "checkpoint, version 2",
        "optimizer: Adam",
        "training: epoch 4, step 228",
        "64 -> 10",
    ] {
        assert!(inspect.contains(want), "{inspect}");
    }

    let resume = |out: &str, extra: &[&str]| {
        stdout(
            crank()
                .arg("resume")
                .arg(&ckpt)
                .arg("--config")
                .arg(d.join("r.yaml"))
                .arg("--data")
                .arg(d.join("digits.csv"))
                .arg("--out")
                .arg(d.join(out))
                .args(extra),
        )
    };
    let straight = std::fs::read(d.join("straight.json")).unwrap();
    // `--epochs 4` is four more; without it the run goes on to the file's eight.
    let out = resume("more.json", &["--epochs", "4"]);
    assert!(
        out.contains("resumed after epoch 4; trained 4 more epochs (to epoch 8, step 456)"),
        "{out}"
    );
    assert!(
        std::fs::read(d.join("more.json")).unwrap() == straight,
        "--epochs 4 differs"
    );
    resume("rest.json", &[]);
    assert!(
        std::fs::read(d.join("rest.json")).unwrap() == straight,
        "the rest differs"
    );

    // Resumed twice (4 + 2 + 2) is the same run too.
    let again = d.join("again.ckpt");
    resume(
        "six.json",
        &["--epochs", "2", "--checkpoint", again.to_str().unwrap()],
    );
    stdout(
        crank()
            .arg("resume")
            .arg(&again)
            .arg("--config")
            .arg(d.join("r.yaml"))
            .arg("--data")
            .arg(d.join("digits.csv"))
            .arg("--out")
            .arg(d.join("eight.json")),
    );
    assert!(
        std::fs::read(d.join("eight.json")).unwrap() == straight,
        "4 + 2 + 2 differs"
    );

    fails(
        crank()
            .arg("resume")
            .arg(d.join("straight.json"))
            .arg("--config")
            .arg(d.join("r.yaml"))
            .arg("--data")
            .arg(d.join("digits.csv"))
            .arg("--out")
            .arg(d.join("x.json")),
        "magic number CRANKCKP",
    );
}

#[test]
fn safetensors_without_crank_architecture_take_a_spec() {
    let d = dir("spec");
    let data = Classification::<f32>::from_csv(root("data/digits.csv"), None).unwrap();
    write_csv(&d.join("digits.csv"), &data);
    std::fs::write(
        d.join("m.yaml"),
        "layers:\n  - {type: Dense, input_size: 64, output_size: 16, activation_function: ReLU}\n  - {type: Dense, output_size: 10}\n",
    )
    .unwrap();
    // A state_dict as PyTorch's `save_file` writes it: crank's names and layouts, no metadata.
    let model = crank::Sequential::<f32>::from_spec(
        &crank::spec::ModelSpec::from_yaml(&std::fs::read_to_string(d.join("m.yaml")).unwrap())
            .unwrap(),
    )
    .unwrap();
    let bytes = model.to_bytes(crank::io::Format::Safetensors).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    assert!(header.remove("__metadata__").is_some());
    let mut header = serde_json::to_vec(&header).unwrap();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut torch = (header.len() as u64).to_le_bytes().to_vec();
    torch.extend(header);
    torch.extend(&bytes[8 + header_len..]);
    let file = d.join("torch.safetensors");
    std::fs::write(&file, torch).unwrap();

    fails(crank().arg("inspect").arg(&file), "crank_spec");
    let spec = [
        "--spec",
        d.join("m.yaml").to_str().unwrap().to_string().leak(),
    ];
    let inspect = stdout(crank().arg("inspect").arg(&file).args(spec));
    assert!(
        inspect.contains("64 -> 10") && inspect.contains("Safetensors"),
        "{inspect}"
    );
    let m = metrics(&stdout(
        crank()
            .arg("evaluate")
            .arg(&file)
            .arg("--data")
            .arg(d.join("digits.csv"))
            .arg("--json")
            .args(spec),
    ));
    assert!(m.contains_key("loss"), "{m:?}");
    let want = model.predict(data.x.view()).unwrap();
    let csv = stdout(
        crank()
            .arg("predict")
            .arg(&file)
            .arg("--data")
            .arg(d.join("digits.csv"))
            .args(spec),
    );
    // `training.loss` is SoftmaxCrossEntropy by default: a classifier with classes 0 to 9.
    assert!(csv.starts_with("class,p_0,p_1,"), "{csv}");
    for (line, logits) in csv.lines().skip(1).zip(want.rows()) {
        let cells: Vec<&str> = line.split(',').collect();
        let p: Vec<f32> = cells[1..].iter().map(|v| v.parse().unwrap()).collect();
        let max = logits.iter().copied().fold(f32::MIN, f32::max);
        let sum: f32 = logits.iter().map(|v| (v - max).exp()).sum();
        for (p, l) in p.iter().zip(logits) {
            assert!((p - (l - max).exp() / sum).abs() < 1e-6, "{line}");
        }
        let best = logits.iter().position(|&v| v == max).unwrap();
        assert_eq!(cells[0], best.to_string());
    }
    stdout(
        crank()
            .arg("convert")
            .arg(&file)
            .arg(d.join("m.crank"))
            .args(spec),
    );
    let inspect = stdout(crank().arg("inspect").arg(d.join("m.crank")));
    assert!(inspect.contains("64 -> 10"), "{inspect}");
    fails(
        crank().arg("inspect").arg(d.join("m.crank")).args(spec),
        "carries its own",
    );
}

#[test]
fn truncated_model_files_say_where_they_end() {
    let d = dir("truncated");
    let model = crank::Sequential::<f32>::builder(4)
        .dense_named("hidden", 8, crank::Activation::Relu)
        .dense_named("logits", 3, crank::Activation::Identity)
        .build()
        .unwrap();
    let bytes = model.to_bytes(crank::io::Format::Bincode).unwrap();
    std::fs::write(d.join("cut.crank"), &bytes[..bytes.len() - 5]).unwrap();
    fails(
        crank().arg("inspect").arg(d.join("cut.crank")),
        "ends early",
    );
    fails(
        crank().arg("inspect").arg(d.join("cut.crank")),
        "layer 1 (logits) biases",
    );
}

/// Inputs are standardised unless the model file says `standardize: false`; the means and
/// deviations are kept with the model.
#[test]
fn standardisation_is_on_unless_the_file_turns_it_off() {
    let d = dir("standardize");
    let mut text = String::from("a,b,y\n");
    for i in 0..40 {
        text.push_str(&format!("{},{},{}\n", 100 + i, i % 3, i % 2));
    }
    std::fs::write(d.join("data.csv"), &text).unwrap();
    let layers = "layers: [{type: Dense, input_size: 2, output_size: 2}]\n";
    let kept = |training: &str| {
        std::fs::write(
            d.join("m.yaml"),
            format!("{layers}training: {{{training}}}\n"),
        )
        .unwrap();
        stdout(train_cmd(
            d.join("m.yaml"),
            d.join("data.csv"),
            d.join("m.json"),
        ));
        let model: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("m.json")).unwrap()).unwrap();
        let p = &model["preprocessing"];
        let col = |k: &str| -> Vec<f64> {
            p[k].as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        };
        (col("mean"), col("std"))
    };
    let (mean, std) = kept("epochs: 1");
    assert_eq!(mean, [119.5, 39.0 / 40.0]);
    assert!((std[0] - (133.25f64).sqrt()).abs() < 1e-9, "{std:?}");
    let (mean, std) = kept("epochs: 1, standardize: false");
    assert_eq!((mean, std), (vec![0.0, 0.0], vec![1.0, 1.0]));
}

/// An ONNX file exported by skl2onnx predicts from the command line as ONNX Runtime did (the
/// fixture's probabilities and labels), directly and after `convert` to crank's format, and
/// `convert` says what it passed over.
#[test]
fn predicts_from_a_scikit_learn_onnx_file() {
    let d = dir("onnx_sklearn");
    let fixture = root("tests/fixtures/onnx/sklearn_multiclass.onnx");
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root("tests/fixtures/onnx/expected.json")).unwrap(),
    )
    .unwrap();
    let case = &expected["sklearn_multiclass.onnx"];
    let mut csv = String::from("a,b,c,d,label\n");
    for row in case["x"].as_array().unwrap() {
        for v in row.as_array().unwrap() {
            csv.push_str(&format!("{},", v.as_f64().unwrap()));
        }
        csv.push_str("0\n");
    }
    std::fs::write(d.join("x.csv"), &csv).unwrap();
    // The same rows without a label column: every column a feature.
    let unlabelled: String = csv
        .lines()
        .map(|l| format!("{}\n", l.rsplit_once(',').unwrap().0))
        .collect();
    std::fs::write(d.join("unlabelled.csv"), unlabelled).unwrap();
    let converted = d.join("model.crank");
    let said = stdout(crank().arg("convert").arg(&fixture).arg(&converted));
    assert!(said.contains("label post-processing"), "{said}");
    assert!(
        said.contains("ONNX opset 21, IR version 10, written by skl2onnx"),
        "{said}"
    );
    for model in [&fixture, &converted] {
        let out = stdout(
            crank()
                .arg("predict")
                .arg(model)
                .arg("--data")
                .arg(d.join("x.csv")),
        );
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("class,p_0,p_1,p_2"));
        for ((line, label), p) in lines
            .zip(case["labels"].as_array().unwrap())
            .zip(case["y"].as_array().unwrap())
        {
            let cells: Vec<&str> = line.split(',').collect();
            assert_eq!(cells[0], label.as_str().unwrap(), "{out}");
            for (got, want) in cells[1..].iter().zip(p.as_array().unwrap()) {
                let got: f64 = got.parse().unwrap();
                assert!((got - want.as_f64().unwrap()).abs() < 1e-5, "{out}");
            }
        }
    }
    fails(
        crank()
            .arg("predict")
            .arg(&fixture)
            .arg("--spec")
            .arg(root("examples/digits.yaml"))
            .arg("--data")
            .arg(d.join("x.csv")),
        "ONNX file carries its own",
    );
}

/// A reader that closed standard output early (`crank train ... | true`) does not make a
/// command panic: its status line is dropped, the model is saved, and it exits with success.
#[test]
fn status_lines_to_a_closed_pipe_are_not_a_panic() {
    use std::process::{Command as Process, Stdio};
    let d = dir("closed_pipe");
    let out = d.join("model.crank");
    let mut child = Process::new(env!("CARGO_BIN_EXE_crank"))
        .args(["train", "--epochs", "1", "--data"])
        .arg(root("data/digits.csv"))
        .arg("--out")
        .arg(&out)
        .arg(root("examples/digits.yaml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let result = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.exists());
}

/// Started by mpirun (which sets `OMPI_COMM_WORLD_SIZE`) without the `mpi` feature, every copy
/// would train alone and write the same files: the command refuses, saying how to build it.
#[cfg(not(feature = "mpi"))]
#[test]
fn mpirun_without_the_mpi_feature_is_refused() {
    let d = dir("no_mpi");
    let mut cmd = train_cmd(
        root("examples/digits.yaml"),
        root("data/digits.csv"),
        d.join("m.crank"),
    );
    cmd.env("OMPI_COMM_WORLD_SIZE", "2");
    fails(
        cmd,
        "mpirun started 2 copies of a crank built without the `mpi` feature",
    );
    assert!(!d.join("m.crank").exists());
}

/// `crank quantize` on a digits model: the int8 and bf16 files predict, evaluate and inspect
/// like the float one, with accuracy within half a point.
#[test]
fn digits_quantize_to_int8_and_bf16() {
    let d = dir("quantize");
    let data = Classification::<f32>::from_csv(root("data/digits.csv"), None).unwrap();
    let (train, test) = data.split(0.25, 9).unwrap();
    write_csv(&d.join("train.csv"), &train);
    write_csv(&d.join("test.csv"), &test);
    let model = d.join("digits.crank");
    stdout(
        train_cmd(root("examples/digits.yaml"), d.join("train.csv"), &model)
            .args(["--epochs", "20"]),
    );
    let accuracy = |m: &Path| {
        let json = stdout(
            crank()
                .arg("evaluate")
                .arg(m)
                .arg("--data")
                .arg(d.join("test.csv"))
                .arg("--json"),
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["accuracy"].as_f64().unwrap()
    };
    let float = accuracy(&model);
    for (precision, ext) in [("int8", "crank"), ("bf16", "json")] {
        let out = d.join(format!("digits.{precision}.{ext}"));
        let report = stdout(
            crank()
                .arg("quantize")
                .arg(&model)
                .args(["--precision", precision])
                .arg("--out")
                .arg(&out)
                .arg("--data")
                .arg(d.join("test.csv")),
        );
        for want in [
            format!("to {precision}: 2 Dense layers"),
            "accuracy".into(),
            "largest output difference".into(),
        ] {
            assert!(report.contains(&want), "{report}");
        }
        let acc = accuracy(&out);
        assert!(
            (acc - float).abs() <= 0.005,
            "{precision}: {acc} against {float}"
        );
        let inspect = stdout(crank().arg("inspect").arg(&out));
        for want in [
            format!("precision: {precision}"),
            "version 2".into(),
            "classes: 0, 1, 2".into(),
        ] {
            assert!(inspect.contains(&want), "{inspect}");
        }
        let predictions = stdout(
            crank()
                .arg("predict")
                .arg(&out)
                .arg("--data")
                .arg(d.join("test.csv")),
        );
        assert_eq!(predictions.lines().count(), test.len() + 1);
        fails(
            crank()
                .arg("convert")
                .arg(&out)
                .arg(d.join("q.safetensors")),
            "save this",
        );
        fails(
            crank()
                .arg("train")
                .arg(&out)
                .arg("--data")
                .arg(d.join("train.csv"))
                .arg("--out")
                .arg(d.join("again.crank")),
            "",
        );
    }
    // Static int8: input ranges calibrated on the training file (labels and all).
    let out = d.join("digits.static.crank");
    let report = stdout(
        crank()
            .arg("quantize")
            .arg(&model)
            .arg("--out")
            .arg(&out)
            .arg("--calibrate")
            .arg(d.join("train.csv")),
    );
    assert!(report.contains("inputs calibrated on"), "{report}");
    let acc = accuracy(&out);
    assert!(
        (acc - float).abs() <= 0.005,
        "static: {acc} against {float}"
    );
    let inspect = stdout(crank().arg("inspect").arg(&out));
    assert!(
        inspect.contains("int8 inputs (static): hidden [-") && inspect.contains("logits [0, "),
        "{inspect}"
    );
    let inspect = stdout(crank().arg("inspect").arg(d.join("digits.int8.crank")));
    assert!(inspect.contains("int8 inputs (dynamic)"), "{inspect}");
    fails(
        crank()
            .arg("quantize")
            .arg(&model)
            .args(["--precision", "bf16", "--out"])
            .arg(d.join("b.crank"))
            .arg("--calibrate")
            .arg(d.join("train.csv")),
        "needs no calibration",
    );
    let out = crank()
        .arg("quantize")
        .arg(&model)
        .args(["--precision", "int4", "--out"])
        .arg(d.join("x.crank"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("\"int8\" or \"bf16\""),
        "{err}"
    );
}

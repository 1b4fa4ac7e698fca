//! The training loop: real data with Adam and early stopping, regression with BatchNorm and
//! AdamW, history, callbacks, clipping, divergence.

use crank::data::{Classification, Standardizer};
use crank::metrics::Metric;
use crank::train::{Callback, Dataset, EarlyStopping, Epoch, FitOptions};
use crank::{Activation, Adam, Error, Loss, Optimizer, Schedule, Sequential, Sgd};
use ndarray::Array2;

fn digits() -> (Classification<f32>, Classification<f32>) {
    let data = Classification::<f32>::from_csv(
        concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv"),
        None,
    )
    .unwrap();
    let (mut train, mut test) = data.split(0.2, 42).unwrap();
    let scaler = Standardizer::fit(train.x.view()).unwrap();
    scaler.transform(&mut train.x).unwrap();
    scaler.transform(&mut test.x).unwrap();
    (train, test)
}

#[derive(Default)]
struct Count {
    batches: usize,
    epochs: Vec<usize>,
}

impl Callback for Count {
    fn on_batch_end(&mut self, _epoch: usize, _batch: usize, _batches: usize, loss: f64) {
        assert!(loss.is_finite());
        self.batches += 1;
    }
    fn on_epoch_end(&mut self, record: &Epoch) {
        self.epochs.push(record.epoch);
    }
}

#[test]
fn digits_with_adam_and_early_stopping_reach_97_percent() {
    let (train, test) = digits();
    // Hold out the last 15% of the (stratified, shuffled) training split for validation.
    let n_val = train.len() * 15 / 100;
    let fit_rows: Vec<usize> = (0..train.len() - n_val).collect();
    let val_rows: Vec<usize> = (train.len() - n_val..train.len()).collect();
    let (fit_part, val_part) = (train.select(&fit_rows), train.select(&val_rows));

    let mut model = Sequential::<f32>::builder(64)
        .dense(128, Activation::Relu)
        .dropout(0.1)
        .dense(10, Activation::Identity)
        .seed(42)
        .build()
        .unwrap();
    let options = FitOptions {
        epochs: 200,
        batch_size: 32,
        seed: 42,
        metrics: vec![Metric::Accuracy, Metric::TopKAccuracy { k: 3 }],
        early_stopping: Some(EarlyStopping {
            patience: 8,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut count = Count::default();
    let history = model
        .fit_with(
            Dataset::new(fit_part.x.view(), &fit_part.labels).unwrap(),
            Some(Dataset::new(val_part.x.view(), &val_part.labels).unwrap()),
            &Loss::SoftmaxCrossEntropy,
            &mut Adam::new(1e-3).unwrap(),
            &options,
            &mut count,
        )
        .unwrap();
    let ran = history.epochs.len();
    assert!(ran < 200, "early stopping never stopped");
    assert_eq!(count.epochs, (1..=ran).collect::<Vec<_>>());
    assert_eq!(count.batches, ran * fit_part.len().div_ceil(32));
    // The restored weights are those of the best epoch.
    let best = history.best_epoch.unwrap();
    let val_losses = history.column("val_loss");
    let best_loss = val_losses.iter().cloned().fold(f64::INFINITY, f64::min);
    assert_eq!(val_losses[best - 1], best_loss);
    let now = model
        .evaluate(
            val_part.x.view(),
            &val_part.labels,
            &Loss::SoftmaxCrossEntropy,
        )
        .unwrap() as f64;
    assert!((now - best_loss).abs() < 1e-5, "{now} vs {best_loss}");

    let acc = model.accuracy(test.x.view(), &test.labels).unwrap();
    assert!(acc >= 0.97, "test accuracy {acc}");
    let m = model
        .evaluate_metrics(
            test.x.view(),
            &test.labels,
            &Loss::SoftmaxCrossEntropy,
            &[Metric::Accuracy, Metric::TopKAccuracy { k: 3 }],
        )
        .unwrap();
    assert_eq!(m["accuracy"], acc);
    assert!(m["top3_accuracy"] >= acc);

    let csv = history.to_csv();
    let header = csv.lines().next().unwrap();
    assert_eq!(
        header,
        "epoch,lr,seconds,accuracy,loss,top3_accuracy,val_accuracy,val_loss,val_top3_accuracy"
    );
    assert_eq!(csv.lines().count(), ran + 1);
    let back: crank::train::History = serde_json::from_str(&history.to_json()).unwrap();
    assert_eq!(back, history);
}

#[test]
fn noisy_sine_with_batchnorm_and_adamw() {
    // y = sin(x) + noise of standard deviation 0.05 on [-3, 3].
    let n = 512;
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    // A sum of 4 uniforms has mean 2 and variance 1/3: rescaled to standard deviation 0.05.
    let mut next_noise = || ((0..4).map(|_| uniform()).sum::<f64>() - 2.0) * 3.0f64.sqrt() * 0.05;
    let x = Array2::from_shape_fn((n, 1), |(i, _)| -3.0 + 6.0 * i as f64 / (n - 1) as f64);
    let y = Array2::from_shape_fn((n, 1), |(i, _)| x[[i, 0]].sin() + next_noise());
    let mut model = Sequential::<f64>::builder(1)
        .dense(64, Activation::Tanh)
        .batch_norm()
        .dense(64, Activation::Gelu)
        .batch_norm()
        .dense(1, Activation::Identity)
        .seed(3)
        .build()
        .unwrap();
    let options = FitOptions {
        epochs: 200,
        batch_size: 32,
        metrics: vec![Metric::Mse, Metric::R2],
        schedule: Some(Schedule::Cosine {
            t_max: 190,
            eta_min: 1e-4,
            warmup: 10,
        }),
        clip_norm: Some(5.0),
        ..Default::default()
    };
    let history = model
        .fit(
            x.view(),
            &y,
            &Loss::Mse,
            &mut Adam::adamw(1e-2, 1e-4).unwrap(),
            &options,
        )
        .unwrap();
    let mse = model
        .evaluate_metrics(x.view(), &y, &Loss::Mse, &[Metric::Mse, Metric::R2])
        .unwrap();
    // The noise alone has MSE 0.0025; sin itself has variance ≈ 0.5 on this range.
    assert!(mse["mse"] < 0.004, "MSE {mse:?}");
    assert!(mse["r2"] > 0.98, "{mse:?}");
    let lrs: Vec<f64> = history.epochs.iter().map(|e| e.lr).collect();
    assert!(lrs[0] < lrs[10] && lrs[199] < 1e-3, "{:?}", &lrs[..12]);
}

#[test]
fn divergence_names_epoch_and_batch_and_keeps_finite_weights() {
    let x = Array2::from_shape_fn((64, 3), |(i, j)| (i + j) as f32);
    let y = Array2::from_shape_fn((64, 1), |(i, _)| 1e3 * i as f32);
    let mut model = Sequential::<f32>::builder(3)
        .dense(8, Activation::Relu)
        .dense(1, Activation::Identity)
        .build()
        .unwrap();
    let err = model
        .fit(
            x.view(),
            &y,
            &Loss::Mse,
            &mut Sgd::new(1e3).unwrap(),
            &FitOptions {
                epochs: 50,
                batch_size: 16,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, Error::Diverged { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("training diverged at epoch ") && msg.contains(", batch "),
        "{msg}"
    );
    model.visit_params(|_, p| assert!(p.value.iter().all(|v| v.is_finite())));
}

#[test]
fn gradient_clipping_by_norm_and_value() {
    let x = Array2::from_shape_fn((8, 4), |(i, j)| (i * j) as f64 - 3.0);
    let y = Array2::from_shape_fn((8, 2), |(i, j)| (i + j) as f64 * 10.0);
    let mut model = Sequential::<f64>::builder(4)
        .dense(5, Activation::Tanh)
        .dense(2, Activation::Identity)
        .build()
        .unwrap();
    model.compute_gradients(x.view(), &y, &Loss::Mse).unwrap();
    let norm = |m: &mut Sequential<f64>| {
        let mut s = 0.0;
        m.visit_params(|_, p| s += p.grad.iter().map(|g| g * g).sum::<f64>());
        s.sqrt()
    };
    let before = norm(&mut model);
    assert!(before > 1.0);
    assert!((model.clip_grad_norm(1.0).unwrap() - before).abs() < 1e-9);
    assert!((norm(&mut model) - 1.0 / (1.0 + 1e-6 / before)).abs() < 1e-9);
    // Already below the limit: unchanged.
    assert!((model.clip_grad_norm(10.0).unwrap() - norm(&mut model)).abs() < 1e-12);
    model.clip_grad_value(0.01).unwrap();
    model.visit_params(|_, p| assert!(p.grad.iter().all(|g| g.abs() <= 0.01)));
    assert!(model.clip_grad_norm(0.0).is_err());
}

#[test]
fn fit_is_deterministic_and_reports_the_schedule() {
    let x = Array2::from_shape_fn((90, 3), |(i, j)| ((i * 5 + j * 7) % 13) as f32 / 6.0 - 1.0);
    let y: Vec<usize> = (0..90).map(|i| i % 3).collect();
    let run = || {
        let mut m = Sequential::<f32>::builder(3)
            .dense(8, Activation::Relu)
            .dropout(0.2)
            .dense(3, Activation::Identity)
            .seed(1)
            .build()
            .unwrap();
        let mut opt = crank::optim::SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            ..Default::default()
        }
        .build()
        .unwrap();
        let h = m
            .fit(
                x.view(),
                &y,
                &Loss::SoftmaxCrossEntropy,
                &mut opt,
                &FitOptions {
                    epochs: 6,
                    batch_size: 16,
                    validation_fraction: Some(0.2),
                    schedule: Some(Schedule::Step {
                        step_size: 2,
                        gamma: 0.5,
                    }),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(opt.learning_rate(), 0.1 * 0.125);
        let w = crate::helpers::param_bits(&mut m);
        (h.epochs.iter().map(|e| e.lr).collect::<Vec<_>>(), w)
    };
    let (lrs, w1) = run();
    assert_eq!(lrs, vec![0.1, 0.1, 0.05, 0.05, 0.025, 0.025]);
    assert_eq!(run().1, w1);
}

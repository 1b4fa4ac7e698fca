//! Data-parallel training (`fit_distributed`) with ranks as threads (`ThreadGroup`): the
//! algorithm without MPI. The same code runs under `mpirun` in `tests/mpi.rs`.

use crank::collective::{Communicator, ThreadGroup};
use crank::io::Checkpoint;
use crank::metrics::Metric;
use crank::train::{Dataset, EarlyStopping, FitOptions, FitState, History};
use crank::{Activation, Adam, Error, Loss, Optimizer, Sequential, Sgd};
use ndarray::Array2;

/// Runs `f` on every rank of a group of `size` threads; what each rank returned, rank 0 first.
fn on_ranks<T: Send>(size: usize, f: impl Fn(&dyn Communicator) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = ThreadGroup::new(size)
            .unwrap()
            .into_iter()
            .map(|c| {
                let f = &f;
                s.spawn(move || f(&c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// 108 samples of 10 features in 3 classes. With a quarter held out for validation, 81 are
/// left: in batches of 16, the last holds 1 sample, so 2 or 3 ranks leave some without a share.
fn data() -> (Array2<f64>, Vec<usize>) {
    let x = Array2::from_shape_fn((108, 10), |(i, j)| {
        ((i * 31 + j * 17) % 23) as f64 / 11.0 - 1.0 + (j as f64 * 0.1)
    });
    let y = x
        .rows()
        .into_iter()
        .map(|r| ((r[0] + r[3] - r[7]).abs() * 2.0) as usize % 3)
        .collect();
    (x, y)
}

fn model(seed: u64, batchnorm: bool) -> Sequential<f64> {
    let b = Sequential::<f64>::builder(10).dense(24, Activation::Relu);
    let b = if batchnorm { b.batch_norm() } else { b };
    b.dropout(0.2)
        .dense(16, Activation::Tanh)
        .dense(3, Activation::Identity)
        .seed(seed)
        .build()
        .unwrap()
}

/// With a plateau schedule that acts on the validation loss every few epochs: the ranks must
/// see the same loss to take the same rates.
fn options(epochs: usize) -> FitOptions {
    FitOptions {
        epochs,
        batch_size: 16,
        seed: 5,
        metrics: vec![Metric::Accuracy],
        schedule: Some(crank::Schedule::ReduceOnPlateau {
            factor: 0.5,
            patience: 0,
            threshold: 0.1,
            cooldown: 0,
            min_lr: 0.0,
        }),
        ..Default::default()
    }
}

/// `fit_distributed` of `m` on `data` for `epochs`, SGD, no validation.
fn fit_sgd(
    comm: &dyn Communicator,
    m: &mut Sequential<f64>,
    data: Dataset<'_, f64>,
    epochs: usize,
) -> crank::Result<History> {
    fit_sgd_with(comm, m, data, &options(epochs))
}

/// [`fit_sgd`] with options `o`.
fn fit_sgd_with(
    comm: &dyn Communicator,
    m: &mut Sequential<f64>,
    data: Dataset<'_, f64>,
    o: &FitOptions,
) -> crank::Result<History> {
    m.fit_distributed(
        comm,
        data,
        None,
        &Loss::SoftmaxCrossEntropy,
        &mut Sgd::new(0.1).unwrap(),
        o,
        &mut (),
        &mut FitState::new(o),
    )
}

/// Every tensor a saved model holds (weights, biases, running statistics), in order.
fn weights(model: &Sequential<f64>) -> Vec<f64> {
    let mut out = Vec::new();
    for layer in model.layers() {
        layer.visit_tensors(&mut |t| out.extend_from_slice(&t.data.values()));
    }
    out
}

/// Trains `model(seed)` with Adam on `size` ranks (or one process without a group) and returns
/// every rank's weights and history.
fn train(size: usize, epochs: usize, batchnorm: bool) -> Vec<(Vec<f64>, History)> {
    let (x, y) = data();
    let run = |comm: Option<&dyn Communicator>| {
        let mut m = model(1, batchnorm);
        let mut opt = Adam::new(0.01).unwrap();
        let (train, val) = Dataset::new(x.view(), &y[..])
            .unwrap()
            .holdout(0.25)
            .unwrap();
        let o = FitOptions {
            // BatchNorm cannot train on a last batch of 1 (81 = 5·16 + 1), one process or
            // several; with 13, the last batch holds 3, which 2 or 3 ranks leave to rank 0
            // alone (a share of 1 would not do either).
            batch_size: if batchnorm { 13 } else { 16 },
            ..options(epochs)
        };
        let history = match comm {
            None => m.fit_with(
                train,
                val,
                &Loss::SoftmaxCrossEntropy,
                &mut opt,
                &o,
                &mut (),
            ),
            Some(c) => fit_adam(c, &mut m, &mut opt, (train, val), &o),
        }
        .unwrap();
        (weights(&m), history)
    };
    if size == 0 {
        vec![run(None)]
    } else {
        on_ranks(size, |c| run(Some(c)))
    }
}

fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(y.abs()).max(1e-3))
        .fold(0.0, f64::max)
}

/// 2 and 3 ranks against one process, 9 epochs of 6 batches (54 steps of Adam, with dropout and
/// a last batch of 1 sample, which leaves ranks without a share): the same weights to rounding
/// (≤ 1e-12 relative in f64), the same history and learning rates, and bitwise the same weights
/// on every rank.
#[test]
fn ranks_train_what_one_process_trains() {
    let (one, one_history) = train(0, 9, false).remove(0);
    for size in [2, 3] {
        let ranks = train(size, 9, false);
        for (rank, (w, h)) in ranks.iter().enumerate() {
            assert_eq!(
                w, &ranks[0].0,
                "{size} ranks: rank {rank} differs from rank 0"
            );
            let metrics = |h: &History| {
                h.epochs
                    .iter()
                    .map(|e| e.metrics.clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!(metrics(h), metrics(&ranks[0].1));
        }
        let (w, h) = &ranks[0];
        let d = max_rel_diff(w, &one);
        assert!(d <= 1e-12, "{size} ranks against one process: {d:e}");
        assert_eq!(h.epochs.len(), 9);
        let lrs = |h: &History| h.epochs.iter().map(|e| e.lr).collect::<Vec<_>>();
        assert_eq!(lrs(h), lrs(&one_history));
        assert!(
            lrs(h).iter().any(|&lr| lr < 0.01),
            "the schedule never acted"
        );
        for (a, b) in h.epochs.iter().zip(&one_history.epochs) {
            for (k, v) in &b.metrics {
                let got = a.metrics[k];
                assert!(
                    (got - v).abs() <= 1e-12 * v.abs().max(1.0),
                    "{k}: {got} vs {v}"
                );
            }
        }
        assert!(h.epochs[8].metrics["val_accuracy"] > 0.0);
    }
}

/// The same seed and number of ranks give bitwise the same weights, run after run.
#[test]
fn ranks_are_deterministic() {
    let a = train(2, 3, true);
    let b = train(2, 3, true);
    assert_eq!(a[0].0, b[0].0);
    assert_eq!(a[1].0, b[1].0);
}

/// BatchNorm normalises each rank's share with its own statistics; the running statistics are
/// averaged after every step, so the ranks still end bitwise equal, and the model learns.
#[test]
fn batchnorm_statistics_stay_identical_on_every_rank() {
    let ranks = train(3, 4, true);
    assert_eq!(ranks[0].0, ranks[1].0);
    assert_eq!(ranks[0].0, ranks[2].0);
    let loss = ranks[0].1.column("val_loss");
    assert!(loss[3] < loss[0], "{loss:?}");
    // Not one process's weights: its batch statistics are over 16 samples, not 5 or 6.
    let one = train(0, 4, true).remove(0).0;
    assert!(max_rel_diff(&ranks[0].0, &one) > 1e-6);
}

/// A non-finite loss on one rank ends every rank: that rank returns its own error, the others
/// say which rank failed. Nobody waits forever.
#[test]
fn an_error_on_one_rank_ends_every_rank() {
    let (x, y) = data();
    let errors = on_ranks(3, |comm| {
        let mut x = x.clone();
        if comm.rank() == 2 {
            // Whatever rows its share holds, rank 2's first step meets an infinity.
            x.column_mut(3).fill(f64::INFINITY);
        }
        let mut m = model(1, false);
        fit_sgd(comm, &mut m, Dataset::new(x.view(), &y[..]).unwrap(), 3).unwrap_err()
    });
    assert!(
        matches!(
            &errors[2],
            Error::Diverged {
                epoch: 1,
                batch: 1,
                ..
            }
        ),
        "{}",
        errors[2]
    );
    for e in &errors[..2] {
        assert!(
            matches!(
                e,
                Error::Rank {
                    rank: 2,
                    size: 3,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(e.to_string(), "rank 2 of 3 failed at epoch 1, batch 1");
    }
}

/// Ranks that hold different data (a rank read another file) are told so before training.
#[test]
fn ranks_with_different_data_refuse_to_start() {
    let (x, y) = data();
    let errors = on_ranks(2, |comm| {
        let rows = if comm.rank() == 1 { 90 } else { 108 };
        let mut m = model(1, false);
        fit_sgd(
            comm,
            &mut m,
            Dataset::new(x.slice(ndarray::s![..rows, ..]), &y[..rows]).unwrap(),
            1,
        )
        .unwrap_err()
        .to_string()
    });
    assert!(
        errors[1].contains("rank 1 holds 90 training samples")
            && errors[1].contains("rank 0 holds 108"),
        "{}",
        errors[1]
    );
    assert_eq!(errors[0], "rank 1 of 2 failed (its own error says why)");
}

/// Rank 0's weights are everybody's: ranks built with other seeds train rank 0's model.
#[test]
fn every_rank_starts_from_rank_zeros_weights() {
    let (x, y) = data();
    let ranks = on_ranks(2, |comm| {
        let mut m = model(comm.rank() as u64 + 1, false);
        fit_sgd(comm, &mut m, Dataset::new(x.view(), &y[..]).unwrap(), 1).unwrap();
        weights(&m)
    });
    assert_eq!(ranks[0], ranks[1]);
}

/// A run checkpointed on 2 ranks after 3 epochs and resumed on 3 ranks to 6 continues with the
/// batches the uninterrupted run used: its weights, history and early stopping match the
/// uninterrupted 2-rank run's to rounding.
#[test]
fn a_checkpoint_resumes_on_another_number_of_ranks() {
    let (x, y) = data();
    let o = |epochs| FitOptions {
        early_stopping: Some(EarlyStopping {
            monitor: "val_loss".into(),
            patience: 20,
            ..Default::default()
        }),
        ..options(epochs)
    };
    let sets = || {
        Dataset::new(x.view(), &y[..])
            .unwrap()
            .holdout(0.25)
            .unwrap()
    };
    let fit = |comm: &dyn Communicator,
               m: &mut Sequential<f64>,
               opt: &mut Adam,
               state: &mut FitState<f64>,
               epochs| {
        let (train, val) = sets();
        m.fit_distributed(
            comm,
            train,
            val,
            &Loss::SoftmaxCrossEntropy,
            opt,
            &o(epochs),
            &mut (),
            state,
        )
        .unwrap()
    };
    let whole = on_ranks(2, |comm| {
        let (mut m, mut opt) = (model(1, false), Adam::new(0.01).unwrap());
        let h = fit(comm, &mut m, &mut opt, &mut FitState::new(&o(6)), 6);
        (weights(&m), h)
    });
    let saved = on_ranks(2, |comm| {
        let (mut m, mut opt) = (model(1, false), Adam::new(0.01).unwrap());
        let mut state = FitState::new(&o(3));
        fit(comm, &mut m, &mut opt, &mut state, 3);
        Checkpoint::fit_to_bytes(&m, &opt, &state).unwrap()
    });
    assert_eq!(saved[0], saved[1], "the ranks' checkpoints differ");
    let resumed = on_ranks(3, |comm| {
        let ckpt = Checkpoint::<f64>::from_bytes(&saved[0]).unwrap();
        let mut m = ckpt.model;
        let mut opt = Adam::new(1.0).unwrap();
        opt.load_state(&ckpt.optimizer).unwrap();
        let mut state = ckpt.fit.unwrap();
        let h = fit(comm, &mut m, &mut opt, &mut state, 6);
        (weights(&m), h)
    });
    let (w, h) = &resumed[0];
    assert!(resumed.iter().all(|r| &r.0 == w));
    assert_eq!(
        h.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(),
        [4, 5, 6]
    );
    let d = max_rel_diff(w, &whole[0].0);
    assert!(d <= 1e-12, "{d:e}");
    for (a, b) in h.epochs.iter().zip(&whole[0].1.epochs[3..]) {
        let (a, b) = (a.metrics["val_loss"], b.metrics["val_loss"]);
        assert!((a - b).abs() <= 1e-12 * b.abs(), "{a} vs {b}");
    }
    assert_eq!(h.best_epoch, whole[0].1.best_epoch);
}

/// Regression with value targets: MSE, MAE and R² on the training batches and the validation
/// set are summed over the ranks as one process sums them (to rounding), 3 ranks and a
/// validation set of 27 samples shared 9, 9, 9.
#[test]
fn regression_metrics_are_reduced_over_the_ranks() {
    let (x, _) = data();
    let y = Array2::from_shape_fn((x.nrows(), 2), |(i, j)| {
        x[[i, 0]] * (j as f64 + 1.0) - x[[i, 5]] + 0.1 * j as f64
    });
    let o = FitOptions {
        epochs: 3,
        batch_size: 16,
        metrics: vec![Metric::Mse, Metric::Mae, Metric::R2],
        ..Default::default()
    };
    let run = |comm: &dyn Communicator| {
        let mut m = Sequential::<f64>::builder(10)
            .dense(12, Activation::Tanh)
            .dense(2, Activation::Identity)
            .seed(4)
            .build()
            .unwrap();
        let (train, val) = Dataset::new(x.view(), &y).unwrap().holdout(0.25).unwrap();
        m.fit_distributed(
            comm,
            train,
            val,
            &Loss::Mse,
            &mut Adam::new(0.01).unwrap(),
            &o,
            &mut (),
            &mut FitState::new(&o),
        )
        .unwrap()
    };
    let one = run(&crank::collective::SingleProcess);
    let ranks = on_ranks(3, run);
    for (a, b) in ranks[0].epochs.iter().zip(&one.epochs) {
        assert_eq!(a.metrics.len(), 8, "{:?}", a.metrics.keys());
        for (k, v) in &b.metrics {
            let got = a.metrics[k];
            assert!(
                (got - v).abs() <= 1e-12 * v.abs().max(1.0),
                "{k}: {got} vs {v}"
            );
        }
    }
    assert!(ranks[0].epochs[2].metrics["val_r2"] > 0.0);
}

/// Trains `model(1, batchnorm)` with Adam on `shards.len()` ranks, rank `r` holding the rows
/// `shards[r]` of [`data`] (with a quarter of them held out for validation when `validate`),
/// sharded; every rank's weights and history.
fn train_sharded(
    shards: &[std::ops::Range<usize>],
    options: FitOptions,
    batchnorm: bool,
    validate: bool,
) -> Vec<(Vec<f64>, History)> {
    let (x, y) = data();
    on_ranks(shards.len(), |comm| {
        let rows = shards[comm.rank()].clone();
        let mut m = model(1, batchnorm);
        let mut opt = Adam::new(0.01).unwrap();
        let data = Dataset::new(x.slice(ndarray::s![rows.clone(), ..]), &y[rows]).unwrap();
        let (train, val) = if validate {
            data.holdout(0.25).unwrap()
        } else {
            (data, None)
        };
        let o = FitOptions {
            sharded: true,
            ..options.clone()
        };
        let history = fit_adam(comm, &mut m, &mut opt, (train, val), &o).unwrap();
        (weights(&m), history)
    })
}

/// `fit_distributed` of `m` with `opt` on training and validation data, from a new state.
fn fit_adam(
    comm: &dyn Communicator,
    m: &mut Sequential<f64>,
    opt: &mut Adam,
    sets: (Dataset<'_, f64>, Option<Dataset<'_, f64>>),
    o: &FitOptions,
) -> crank::Result<History> {
    fit_adam_from(comm, m, opt, sets, o, &mut FitState::new(o))
}

/// [`fit_adam`] from `state`.
fn fit_adam_from(
    comm: &dyn Communicator,
    m: &mut Sequential<f64>,
    opt: &mut Adam,
    (train, val): (Dataset<'_, f64>, Option<Dataset<'_, f64>>),
    o: &FitOptions,
    state: &mut FitState<f64>,
) -> crank::Result<History> {
    let loss = Loss::SoftmaxCrossEntropy;
    m.fit_distributed(comm, train, val, &loss, opt, o, &mut (), state)
}

/// Two ranks with shards of 54 samples each, unshuffled, in global batches of 16 (8 from each):
/// one process trained on the same global batches (each rank's next 8 samples, rank 0's
/// first) ends with the same weights to rounding, dropout masks included.
#[test]
fn sharded_ranks_train_what_one_process_trains_on_their_batches() {
    let o = FitOptions {
        shuffle: false,
        ..options(4)
    };
    let ranks = train_sharded(&[0..54, 54..108], o.clone(), false, false);
    assert_eq!(ranks[0].0, ranks[1].0, "the ranks' weights differ");
    let (x, y) = data();
    let order: Vec<usize> = (0..7)
        .flat_map(|b| {
            let a = 8 * b..(8 * b + 8).min(54);
            a.clone().chain(a.map(|i| 54 + i))
        })
        .collect();
    let xs = x.select(ndarray::Axis(0), &order);
    let ys: Vec<usize> = order.iter().map(|&i| y[i]).collect();
    let mut one = model(1, false);
    let history = one
        .fit_with(
            Dataset::new(xs.view(), &ys[..]).unwrap(),
            None,
            &Loss::SoftmaxCrossEntropy,
            &mut Adam::new(0.01).unwrap(),
            &o,
            &mut (),
        )
        .unwrap();
    let d = max_rel_diff(&ranks[0].0, &weights(&one));
    assert!(d <= 1e-12, "sharded against one process: {d:e}");
    for (a, b) in ranks[0].1.epochs.iter().zip(&history.epochs) {
        let (got, want) = (a.metrics["loss"], b.metrics["loss"]);
        assert!((got - want).abs() <= 1e-12 * want.abs(), "{got} vs {want}");
    }
}

/// Shards of different sizes, shuffled, with validation shards and BatchNorm (whose remainders
/// of one sample are left out): every rank ends with the same weights and history, run after
/// run, and the model learns.
#[test]
fn uneven_shards_agree_on_every_rank_run_after_run() {
    let o = FitOptions {
        batch_size: 13,
        ..options(6)
    };
    let shards = [0..40, 40..75, 75..108];
    let a = train_sharded(&shards, o.clone(), true, true);
    let b = train_sharded(&shards, o, true, true);
    for rank in 0..3 {
        assert_eq!(a[rank].0, a[0].0, "rank {rank}");
        assert_eq!(a[rank].0, b[rank].0, "rank {rank}, second run");
        let metrics = |h: &History| {
            h.epochs
                .iter()
                .map(|e| e.metrics.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(metrics(&a[rank].1), metrics(&a[0].1));
    }
    let epochs = &a[0].1.epochs;
    assert!(epochs[5].metrics["loss"] < epochs[0].metrics["loss"]);
    assert!(epochs[5].metrics.contains_key("val_accuracy"));
    // Other shards of the same data train another model: the layout is the shards'.
    let c = train_sharded(
        &[0..54, 54..108],
        FitOptions {
            batch_size: 13,
            ..options(6)
        },
        true,
        true,
    );
    assert_ne!(c[0].0, a[0].0);
}

/// Shards whose features differ, and a batch too small to share, are refused on every rank.
#[test]
fn shards_that_cannot_train_together_are_refused() {
    let (x, y) = data();
    let o = FitOptions {
        sharded: true,
        ..options(1)
    };
    let errors = on_ranks(2, |comm| {
        let cols = if comm.rank() == 1 { 9 } else { 10 };
        let mut m = model(1, false);
        let data = Dataset::new(x.slice(ndarray::s![..50, ..cols]), &y[..50]).unwrap();
        fit_sgd_with(comm, &mut m, data, &o)
            .unwrap_err()
            .to_string()
    });
    assert!(
        errors[1].contains("9 features") && errors[1].contains("same features"),
        "{}",
        errors[1]
    );
    let o = FitOptions { batch_size: 2, ..o };
    let errors = on_ranks(3, |comm| {
        let mut m = model(1, false);
        let data = Dataset::new(x.view(), &y[..]).unwrap();
        fit_sgd_with(comm, &mut m, data, &o)
            .unwrap_err()
            .to_string()
    });
    assert!(
        errors
            .iter()
            .all(|e| e.contains("cannot be shared by 3 ranks")),
        "{errors:?}"
    );
}

/// A sharded run stopped after 2 epochs and continued from its state to 5 ends bitwise where
/// the uninterrupted run does: each epoch's shuffles follow from the state alone.
#[test]
fn a_sharded_run_continues_from_its_state_as_if_unbroken() {
    let (x, y) = data();
    let ranks = on_ranks(2, |comm| {
        let rows = if comm.rank() == 0 { 0..60 } else { 60..108 };
        let data =
            || Dataset::new(x.slice(ndarray::s![rows.clone(), ..]), &y[rows.clone()]).unwrap();
        let o = |epochs| FitOptions {
            sharded: true,
            ..options(epochs)
        };
        let run = |m: &mut Sequential<f64>, opt: &mut Adam, epochs, state: &mut FitState<f64>| {
            fit_adam_from(comm, m, opt, (data(), None), &o(epochs), state).unwrap()
        };
        let (mut whole, mut opt) = (model(1, false), Adam::new(0.01).unwrap());
        run(&mut whole, &mut opt, 5, &mut FitState::new(&o(5)));
        let (mut parts, mut opt) = (model(1, false), Adam::new(0.01).unwrap());
        let mut state = FitState::new(&o(5));
        run(&mut parts, &mut opt, 2, &mut state);
        let rest = run(&mut parts, &mut opt, 5, &mut state);
        assert_eq!(rest.epochs.len(), 3);
        (weights(&whole), weights(&parts))
    });
    for (whole, parts) in &ranks {
        assert_eq!(whole, parts);
    }
}

/// `Standardizer::fit_shared`: shards of different sizes (one of them empty) give every rank
/// the statistics of all their rows together, as `fit` gives them from one array; a shard of another width is
/// that rank's error and the others'; no rows anywhere is an error.
#[test]
fn shards_fit_the_standardizer_of_all_their_rows() {
    use crank::data::Standardizer;
    use ndarray::s;
    // Column 3 is constant: its deviation is 1, not 0.
    let all = Array2::from_shape_fn((23, 4), |(i, j)| match j {
        3 => 2.0,
        _ => ((i * 7 + j * 5) % 11) as f64 * 0.3,
    });
    let whole = Standardizer::fit(all.view()).unwrap();
    assert_eq!(whole.std[3], 1.0);
    let cuts = [0..9, 9..9, 9..23];
    let fitted = on_ranks(3, |c| {
        let part = cuts[c.rank()].clone();
        Standardizer::fit_shared(all.slice(s![part, ..]), c).unwrap()
    });
    for f in &fitted {
        assert_eq!(f, &fitted[0], "every rank the same");
        for j in 0..4 {
            assert!((f.mean[j] - whole.mean[j]).abs() <= 1e-12, "mean {j}");
            assert!((f.std[j] - whole.std[j]).abs() <= 1e-12, "std {j}");
        }
    }
    let widths = on_ranks(2, |c| {
        let x = Array2::<f32>::zeros((3, 4 + c.rank()));
        Standardizer::fit_shared(x.view(), c).unwrap_err()
    });
    assert!(
        widths[1].to_string().contains("rank 1 holds 5 features"),
        "{}",
        widths[1]
    );
    assert!(
        matches!(widths[0], Error::Rank { rank: 1, .. }),
        "{}",
        widths[0]
    );
    let empty = on_ranks(2, |c| {
        Standardizer::fit_shared(Array2::<f64>::zeros((0, 2)).view(), c).is_err()
    });
    assert_eq!(empty, [true, true]);
}

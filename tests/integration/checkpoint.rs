//! Training N steps, checkpointing, loading and training M more gives bitwise the same weights
//! as N + M steps without the break.

use crate::helpers::param_bits;
use crank::data::{Batcher, Classification};
use crank::io::Checkpoint;
use crank::{Activation, Loss, Optimizer, Sequential, Sgd};
use ndarray::Array2;

fn data() -> Classification<f32> {
    let x = Array2::from_shape_fn((100, 6), |(i, j)| {
        ((i * 7 + j * 13) % 17) as f32 / 8.0 - 1.0
    });
    let labels = (0..100).map(|i| (i * 3 + i / 7) % 4).collect();
    Classification { x, labels }
}

/// Trains `epochs` epochs of batches of 16.
fn train(
    model: &mut Sequential<f32>,
    opt: &mut Sgd,
    batcher: &mut Batcher<f32>,
    data: &Classification<f32>,
    epochs: usize,
) {
    for _ in 0..epochs {
        batcher.shuffle();
        for b in 0..batcher.batches() {
            let (x, y) = batcher.batch(data, b).unwrap();
            model
                .train_step(x, y, &Loss::SoftmaxCrossEntropy, opt)
                .unwrap();
        }
    }
}

#[test]
fn resuming_from_a_checkpoint_is_bitwise_identical() {
    let data = data();
    let fresh = || {
        Sequential::<f32>::builder(6)
            .dense(12, Activation::Tanh)
            .dense(4, Activation::Identity)
            .seed(5)
            .build()
            .unwrap()
    };

    let mut straight = fresh();
    let mut opt = Sgd::new(0.1).unwrap();
    let mut batcher = Batcher::new(data.len(), 16, 9).unwrap();
    train(&mut straight, &mut opt, &mut batcher, &data, 3);
    opt.set_learning_rate(0.05); // a schedule's change is state too
    train(&mut straight, &mut opt, &mut batcher, &data, 2);

    let mut first = fresh();
    let mut opt = Sgd::new(0.1).unwrap();
    let mut batcher = Batcher::new(data.len(), 16, 9).unwrap();
    train(&mut first, &mut opt, &mut batcher, &data, 3);
    opt.set_learning_rate(0.05);
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("resume.ckpt");
    Checkpoint::save(&path, &first, &opt, Some(batcher.rng())).unwrap();
    // The same state saves to the same bytes.
    let again = Checkpoint::to_bytes(&first, &opt, Some(batcher.rng())).unwrap();
    assert!(std::fs::read(&path).unwrap() == again);
    drop((first, opt, batcher));

    let ckpt = Checkpoint::<f32>::load(&path).unwrap();
    let mut resumed = ckpt.model;
    assert_eq!(resumed.steps(), 3 * 7);
    let mut opt = Sgd::new(1.0).unwrap();
    opt.load_state(&ckpt.optimizer).unwrap();
    assert_eq!(opt.learning_rate(), 0.05);
    let mut batcher = Batcher::new(data.len(), 16, 0).unwrap();
    batcher.set_rng(ckpt.rng.unwrap());
    train(&mut resumed, &mut opt, &mut batcher, &data, 2);

    assert_eq!(resumed.steps(), straight.steps());
    assert_eq!(param_bits(&mut resumed), param_bits(&mut straight));
}

#[test]
fn damaged_checkpoints_are_errors() {
    let model = Sequential::<f32>::builder(2)
        .dense(2, Activation::Identity)
        .build()
        .unwrap();
    let opt = Sgd::new(0.1).unwrap();
    let good = Checkpoint::to_bytes(&model, &opt, None).unwrap();
    assert!(Checkpoint::<f32>::from_bytes(&good).is_ok());
    for cut in 0..good.len() {
        assert!(
            Checkpoint::<f32>::from_bytes(&good[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut newer = good.clone();
    newer[8] = 9;
    let err = Checkpoint::<f32>::from_bytes(&newer)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("checkpoint") && err.contains("version 9"),
        "{err}"
    );
    let err = Checkpoint::<f32>::from_bytes(b"CRANKBIN\x01\0\0\0")
        .unwrap_err()
        .to_string();
    assert!(err.contains("magic number CRANKCKP"), "{err}");
    // State from one kind of optimizer does not load into another.
    let mut state = opt.state();
    state.optimizer = "Adam".into();
    assert!(Sgd::new(0.1).unwrap().load_state(&state).is_err());
}

/// `fit` for 8 epochs in one run, and for 5, a checkpoint through bytes, and `fit_from` to 8:
/// bitwise the same weights, optimizer state, step count and epochs, with a plateau schedule,
/// dropout, Adam, a validation set and early stopping that restores the best weights.
#[test]
fn fit_resumed_from_a_checkpoint_is_the_uninterrupted_run() {
    use crank::Adam;
    use crank::train::{Dataset, EarlyStopping, FitOptions, FitState};
    let data = data();
    let fresh = || {
        Sequential::<f32>::builder(6)
            .dense(24, Activation::Relu)
            .dropout(0.2)
            .dense(4, Activation::Identity)
            .seed(3)
            .build()
            .unwrap()
    };
    let options = |epochs| FitOptions {
        epochs,
        batch_size: 16,
        seed: 11,
        schedule: Some(crank::Schedule::ReduceOnPlateau {
            factor: 0.5,
            patience: 1,
            threshold: 1e-2,
            cooldown: 0,
            min_lr: 1e-5,
        }),
        early_stopping: Some(EarlyStopping {
            monitor: "val_loss".into(),
            patience: 50,
            ..Default::default()
        }),
        ..Default::default()
    };
    let sets = || {
        Dataset::new(data.x.view(), &data.labels[..])
            .unwrap()
            .holdout(0.2)
            .unwrap()
    };
    let loss = Loss::SoftmaxCrossEntropy;

    let mut straight = fresh();
    let mut opt = Adam::new(0.05).unwrap();
    let (train, val) = sets();
    let whole = straight
        .fit_with(train, val, &loss, &mut opt, &options(8), &mut ())
        .unwrap();

    let mut first = fresh();
    let mut first_opt = Adam::new(0.05).unwrap();
    let mut state = FitState::new(&options(5));
    let (train, val) = sets();
    first
        .fit_from(
            train,
            val,
            &loss,
            &mut first_opt,
            &options(5),
            &mut (),
            &mut state,
        )
        .unwrap();
    assert_eq!(state.epoch(), 5);
    let bytes = Checkpoint::fit_to_bytes(&first, &first_opt, &state).unwrap();
    drop((first, first_opt, state));

    let ckpt = Checkpoint::<f32>::from_bytes(&bytes).unwrap();
    let mut resumed = ckpt.model;
    let mut opt2 = Adam::new(1.0).unwrap();
    opt2.load_state(&ckpt.optimizer).unwrap();
    let mut state = ckpt.fit.expect("a fit state");
    let (train, val) = sets();
    let rest = resumed
        .fit_from(
            train,
            val,
            &loss,
            &mut opt2,
            &options(8),
            &mut (),
            &mut state,
        )
        .unwrap();

    assert_eq!(
        rest.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(),
        [6, 7, 8]
    );
    for (a, b) in rest.epochs.iter().zip(&whole.epochs[5..]) {
        assert_eq!(a.metrics, b.metrics, "epoch {}", a.epoch);
        assert_eq!(a.lr, b.lr);
    }
    assert!(
        whole.epochs.iter().any(|e| e.lr < 0.05),
        "the plateau schedule never acted: {whole:?}"
    );
    assert_eq!(rest.best_epoch, whole.best_epoch);
    assert_eq!(resumed.steps(), straight.steps());
    assert_eq!(param_bits(&mut resumed), param_bits(&mut straight));
    assert_eq!(
        serde_json::to_string(&opt2.state()).unwrap(),
        serde_json::to_string(&opt.state()).unwrap()
    );
}

/// A version 1 checkpoint (before fit states) still loads.
#[test]
fn version_1_checkpoints_load() {
    // CRANKCKP, version 1, then bincode of (model bytes, optimizer JSON, steps, rng: None).
    let model = Sequential::<f32>::builder(2)
        .dense(2, Activation::Identity)
        .build()
        .unwrap();
    let opt = Sgd::new(0.1).unwrap();
    let model_bytes = model.to_bytes(crank::io::Format::Bincode).unwrap();
    let optimizer = serde_json::to_string(&opt.state()).unwrap();
    let mut v1 = b"CRANKCKP\x01\0\0\0".to_vec();
    v1.extend((model_bytes.len() as u64).to_le_bytes());
    v1.extend(&model_bytes);
    v1.extend((optimizer.len() as u64).to_le_bytes());
    v1.extend(optimizer.as_bytes());
    v1.extend(7u64.to_le_bytes());
    v1.push(0);
    let ckpt = Checkpoint::<f32>::from_bytes(&v1).unwrap();
    assert_eq!(ckpt.model.steps(), 7);
    assert!(ckpt.fit.is_none() && ckpt.rng.is_none());
    assert_eq!(
        ckpt.model.to_bytes(crank::io::Format::Bincode).unwrap(),
        model_bytes
    );
}

//! Training N steps, checkpointing, loading and training M more gives bitwise the same weights
//! as N + M steps without the break.

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

fn params(model: &mut Sequential<f32>) -> Vec<Vec<u32>> {
    let mut out = Vec::new();
    model.visit_params(|_, p| out.push(p.value.iter().map(|v| v.to_bits()).collect()));
    out
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
    assert_eq!(params(&mut resumed), params(&mut straight));
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

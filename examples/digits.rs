//! The main job: train a 64-64-10 ReLU MLP on the UCI handwritten digits with SGD.
//!
//! `cargo run --release --example digits`

use crank::data::{Batcher, Classification, Standardizer};
use crank::{Activation, Loss, Sequential, Sgd};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv");
    let data = Classification::<f32>::from_csv(path, Some("label"))?;
    let (mut train, mut test) = data.split(0.2, 42)?;
    let scaler = Standardizer::fit(train.x.view())?;
    scaler.transform(&mut train.x)?;
    scaler.transform(&mut test.x)?;
    println!(
        "digits: {} training and {} test samples, {} features, {} classes",
        train.len(),
        test.len(),
        train.x.ncols(),
        data.num_classes()
    );

    let mut model = Sequential::<f32>::builder(train.x.ncols())
        .dense(64, Activation::Relu)
        .dense(10, Activation::Identity)
        .seed(42)
        .build()?;
    print!("{model}");
    println!("GEMM backend: {}", crank::backend());

    let loss = Loss::SoftmaxCrossEntropy;
    let mut sgd = Sgd::new(0.05)?;
    let mut batcher = Batcher::new(train.len(), 32, 42)?;
    let start = Instant::now();
    for epoch in 1..=30 {
        batcher.shuffle();
        let mut total = 0.0;
        for b in 0..batcher.batches() {
            let (x, y) = batcher.batch(&train, b)?;
            total += model.train_step(x, y, &loss, &mut sgd)?;
        }
        if epoch % 5 == 0 || epoch == 1 {
            println!(
                "epoch {epoch:>2}  train loss {:.4}  test accuracy {:.4}",
                total / batcher.batches() as f32,
                model.accuracy(test.x.view(), &test.labels)?
            );
        }
    }
    println!(
        "trained 30 epochs in {:.1} ms; test loss {:.4}, test accuracy {:.4}",
        start.elapsed().as_secs_f64() * 1e3,
        model.evaluate(test.x.view(), &test.labels, &loss)?,
        model.accuracy(test.x.view(), &test.labels)?
    );
    Ok(())
}

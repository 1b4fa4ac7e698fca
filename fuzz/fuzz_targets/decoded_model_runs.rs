//! A model decoded from arbitrary bytes, when it decodes at all, can be used: a prediction, an
//! evaluation, a training step with the optimizer its checkpoint describes (or SGD), one with
//! Adam, and a prediction after them each give `Ok` or `Err`, never a panic, an abort or a huge
//! allocation. The first byte picks what the rest is read as, `pick % 5` of its low seven bits:
//! a model file as JSON, bincode or safetensors, a YAML description (built with fresh weights),
//! or a checkpoint (whose optimizer state is loaded before the step, and whose fit state, if it
//! has one, runs one more epoch of `fit_from` first); its high bit picks `f64`.
#![no_main]

use crank::io::{Checkpoint, Format};
use crank::optim::{RmsPropConfig, SgdConfig};
use crank::spec::ModelSpec;
use crank::train::{Dataset, EarlyStopping, FitOptions, FitState};
use crank::{Adagrad, Adam, Loss, Optimizer, Scalar, Schedule, Sequential};
use libfuzzer_sys::fuzz_target;
use ndarray::Array2;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    if pick & 0x80 == 0 {
        run::<f32>(pick & 0x7f, bytes);
    } else {
        run::<f64>(pick & 0x7f, bytes);
    }
});

fn run<F: Scalar>(pick: u8, bytes: &[u8]) {
    let (decoded, optimizer) = match pick % 5 {
        0 => (Sequential::<F>::from_bytes(bytes, Format::Json), None),
        1 => (Sequential::<F>::from_bytes(bytes, Format::Bincode), None),
        2 => (
            Sequential::<F>::from_bytes(bytes, Format::Safetensors),
            None,
        ),
        3 => match std::str::from_utf8(bytes).map(ModelSpec::from_yaml) {
            // A description may ask for any size the library accepts; keep runs fast.
            Ok(Ok(spec)) if spec.tensor_values().is_ok_and(|n| n <= 1 << 16) => {
                (Sequential::<F>::from_spec(&spec), None)
            }
            _ => return,
        },
        _ => match Checkpoint::<F>::from_bytes(bytes) {
            Ok(ckpt) => {
                let mut optimizer = optimizer_for(&ckpt.optimizer.optimizer);
                // A state that does not fit is an error; the step then runs from a fresh one.
                let _ = optimizer.load_state(&ckpt.optimizer);
                let mut model = ckpt.model;
                if let Some(mut state) = ckpt.fit {
                    resume(&mut model, &mut *optimizer, &mut state);
                }
                (Ok(model), Some(optimizer))
            }
            Err(_) => return,
        },
    };
    let Ok(model) = decoded else {
        return;
    };
    exercise(model, optimizer.unwrap_or_else(|| optimizer_for("SGD")));
}

/// An optimizer of the kind a checkpoint names (SGD for a name it does not know), with the
/// buffers that kind can keep.
fn optimizer_for(name: &str) -> Box<dyn Optimizer> {
    let valid = "valid settings";
    match name {
        "Adam" => Box::new(Adam::new(0.01).expect(valid)),
        "AdamW" => Box::new(Adam::adamw(0.01, 0.01).expect(valid)),
        "RMSprop" => Box::new(
            RmsPropConfig {
                momentum: 0.9,
                ..Default::default()
            }
            .build()
            .expect(valid),
        ),
        "Adagrad" => Box::new(Adagrad::new(0.01).expect(valid)),
        _ => Box::new(
            SgdConfig {
                lr: 0.1,
                momentum: 0.9,
                ..Default::default()
            }
            .build()
            .expect(valid),
        ),
    }
}

/// One more epoch of the run a checkpoint's fit state describes, with a plateau schedule and
/// early stopping that restores weights.
fn resume<F: Scalar>(
    model: &mut Sequential<F>,
    optimizer: &mut dyn Optimizer,
    state: &mut FitState<F>,
) {
    let (inputs, outputs) = (model.input_size(), model.output_size());
    if inputs > 1 << 12 || outputs == 0 {
        return;
    }
    let x = Array2::from_shape_fn((4, inputs), |(i, j)| F::of(((i + 2 * j) % 5) as f64 - 2.0));
    let classes = [0, outputs - 1, outputs / 2, 0];
    let Ok(data) = Dataset::new(x.view(), &classes[..]) else {
        return;
    };
    let options = FitOptions {
        epochs: state.epoch().saturating_add(1),
        batch_size: 3,
        schedule: Some(Schedule::ReduceOnPlateau {
            factor: 0.5,
            patience: 0,
            threshold: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
        }),
        early_stopping: Some(EarlyStopping {
            monitor: "loss".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let loss = Loss::SoftmaxCrossEntropy;
    let _ = model.fit_from(data, None, &loss, optimizer, &options, &mut (), state);
}

fn exercise<F: Scalar>(mut model: Sequential<F>, mut optimizer: Box<dyn Optimizer>) {
    let (inputs, outputs) = (model.input_size(), model.output_size());
    // Layers without weights (dropout, say) can declare any width without the file holding
    // anything of that size; the batch below is sized from it.
    if inputs > 1 << 12 {
        return;
    }
    let x = Array2::from_shape_fn((3, inputs), |(i, j)| {
        F::of(((i * 7 + j * 3) % 11) as f64 * 0.4 - 2.0)
    });
    let classes = [0, outputs.saturating_sub(1), outputs / 2];
    let targets = Array2::from_shape_fn((3, outputs), |(i, j)| F::of(((i + j) % 3) as f64 * 0.5));
    let ce = Loss::SoftmaxCrossEntropy;
    let _ = model.predict(x.view());
    let _ = model.evaluate(x.view(), &classes[..], &ce);
    let _ = model.train_step(x.view(), &classes[..], &ce, &mut *optimizer);
    let mut adam = Adam::new(0.01).expect("valid settings");
    let _ = model.train_step(x.view(), &targets, &Loss::Mse, &mut adam);
    let _ = model.predict(x.view());
}

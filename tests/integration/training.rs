//! Training end to end: one SGD step by hand, XOR, the digits data, and errors for bad input.

use crate::helpers::{param_bits, params};
use crank::data::{Batcher, Classification, Standardizer};
use crank::{Activation, Dense, Error, Layer, Loss, Mode, Scalar, Sequential, Sgd};
use ndarray::{Array1, Array2, array};

fn hand_model() -> Sequential<f64> {
    let l1 = Dense::from_weights(
        "hidden",
        array![[0.5, -1.0], [0.25, 0.5]],
        array![0.1, 0.2],
        Activation::Relu,
    );
    let l2 = Dense::from_weights(
        "out",
        array![[2.0], [-1.0]],
        array![0.5],
        Activation::Identity,
    );
    let layers: Vec<Box<dyn Layer<f64>>> = vec![Box::new(l1.unwrap()), Box::new(l2.unwrap())];
    Sequential::from_layers(2, layers).unwrap()
}

#[test]
fn one_sgd_step_matches_hand_computation() {
    let mut model = hand_model();
    let x = array![[1.0, 2.0]];
    let t = array![[1.0]];
    // Forward: z1 = x·W1 + b1 = [1·0.5 + 2·0.25 + 0.1, 1·(−1) + 2·0.5 + 0.2] = [1.1, 0.2];
    // h = ReLU(z1) = [1.1, 0.2]; y = 1.1·2 + 0.2·(−1) + 0.5 = 2.5; MSE = (2.5 − 1)² = 2.25.
    let loss = model
        .train_step(x.view(), &t, &Loss::Mse, &mut Sgd::new(0.1).unwrap())
        .unwrap();
    assert!((loss - 2.25).abs() < 1e-12);
    // Backward: g = 2(y − t) = 3; dW2 = hᵀg = [3.3, 0.6]; db2 = 3;
    // dh = g·W2ᵀ = [6, −3]; δ1 = dh (both z1 > 0); dW1 = xᵀδ1 = [[6, −3], [12, −6]]; db1 = [6, −3].
    // Update with lr 0.1:
    let want = [
        vec![0.5 - 0.6, -1.0 + 0.3, 0.25 - 1.2, 0.5 + 0.6],
        vec![0.1 - 0.6, 0.2 + 0.3],
        vec![2.0 - 0.33, -1.0 - 0.06],
        vec![0.5 - 0.3],
    ];
    let got = params(&mut model);
    for (g, w) in got.iter().zip(&want) {
        for (a, b) in g.iter().zip(w) {
            assert!((a - b).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }
    assert_eq!(model.steps(), 1);
}

#[test]
fn parameter_gradients_are_batch_means() {
    // The same sample twice must give the same step as the sample once.
    let (mut once, mut twice) = (hand_model(), hand_model());
    once.train_step(
        array![[1.0, 2.0]].view(),
        &array![[1.0]],
        &Loss::Mse,
        &mut Sgd::new(0.1).unwrap(),
    )
    .unwrap();
    twice
        .train_step(
            array![[1.0, 2.0], [1.0, 2.0]].view(),
            &array![[1.0], [1.0]],
            &Loss::Mse,
            &mut Sgd::new(0.1).unwrap(),
        )
        .unwrap();
    assert_eq!(params(&mut once), params(&mut twice));
}

/// A model's parameters and their gradients, in `visit_params` order.
type ParamsAndGrads<F> = (Vec<Vec<F>>, Vec<Vec<F>>);

/// Five steps of a model with `train_step` and plain SGD (which folds the Dense updates into
/// their products) and of an identical model with `compute_gradients` + `apply_gradients`:
/// returns both models' parameters and gradients.
fn folded_and_two_call_steps<F: Scalar>() -> [ParamsAndGrads<F>; 2] {
    let build = || {
        Sequential::<F>::builder(7)
            .dense(16, Activation::Relu)
            .batch_norm()
            .dense(12, Activation::Tanh)
            .dropout(0.25)
            .dense(9, Activation::Gelu)
            .layer_norm()
            .dense(3, Activation::Identity)
            .seed(11)
            .build()
            .unwrap()
    };
    // Six rows: the first three Dense layers have weights enough to fold; the last (9 -> 3) has
    // fewer weights than its batch has activations, and takes the usual path.
    let x = Array2::from_shape_fn((6, 7), |(i, j)| {
        F::of(((i * 7 + j * 3) % 11) as f64 / 4.0 - 1.2)
    });
    let y: Vec<usize> = (0..6).map(|i| i % 3).collect();
    let loss = Loss::SoftmaxCrossEntropy;
    let (mut folded, mut two_calls) = (build(), build());
    let (mut sgd_a, mut sgd_b) = (Sgd::new(0.2).unwrap(), Sgd::new(0.2).unwrap());
    for step in 0..5 {
        let a = folded.train_step(x.view(), &y, &loss, &mut sgd_a).unwrap();
        let b = two_calls.compute_gradients(x.view(), &y, &loss).unwrap();
        two_calls.apply_gradients(&mut sgd_b).unwrap();
        if step == 0 {
            // The loss comes before any update: the first one is bitwise the same.
            assert_eq!(a, b);
        }
    }
    assert_eq!(folded.steps(), 5);
    [folded, two_calls].map(|mut m| {
        let (mut values, mut grads) = (Vec::new(), Vec::new());
        m.visit_params(|_, p| {
            values.push(p.value.to_vec());
            grads.push(p.grad.to_vec());
        });
        (values, grads)
    })
}

#[test]
fn plain_sgd_folds_its_dense_updates_and_matches_the_two_call_step() {
    fn check<F: Scalar>(tolerance: f64) {
        let [(folded, folded_grads), (two_calls, grads)] = folded_and_two_call_steps::<F>();
        for (i, (a, b)) in folded.iter().zip(&two_calls).enumerate() {
            for (&a, &b) in a.iter().zip(b) {
                let (a, b) = (a.as_f64(), b.as_f64());
                assert!(
                    (a - b).abs() <= tolerance * (1.0 + b.abs()),
                    "{} parameter {i}: {a} vs {b}",
                    F::NAME
                );
            }
        }
        // Which parameters folded: the first three Dense layers' weights (0, 4 and 6, after the
        // batch norm's two), whose gradients were never written; every other parameter went
        // through the optimizer with its gradient, the last Dense layer's weights (10) included.
        assert_eq!(folded_grads.len(), 12);
        for (i, (g, two)) in folded_grads.iter().zip(&grads).enumerate() {
            let written = g.iter().any(|v| *v != F::zero());
            assert_eq!(
                written,
                ![0, 4, 6].contains(&i),
                "{} parameter {i}",
                F::NAME
            );
            assert!(
                two.iter().any(|v| *v != F::zero()),
                "{} parameter {i}",
                F::NAME
            );
        }
    }
    check::<f64>(1e-12);
    check::<f32>(1e-5);
}

#[test]
fn a_dense_layer_folds_only_a_product_sure_to_be_finite() {
    // One row holds a huge input, the other a huge gradient: every product of the two is finite
    // (1e30 · 1 and 1 · 1e9), but the bound from their largest values (2 · 1e30 · 1e9) is not,
    // so the layer computes its gradient as plain backward does, and says it did not fold.
    let x = array![[1e30f32, 0.0], [0.0, 1.0]];
    let g = array![[1.0f32, 1.0, 1.0, 1.0], [1e9, 1e9, 1e9, 1e9]];
    let layer = || {
        let w = array![[1e-30f32, 1e-30, 1e-30, 1e-30], [1.0, 2.0, 3.0, 4.0]];
        let mut l = Dense::from_weights("d", w, Array1::zeros(4), Activation::Identity).unwrap();
        l.forward(x.view(), Mode::Train).unwrap();
        l
    };
    let (mut plain, mut folding) = (layer(), layer());
    plain.backward(x.view(), g.view(), true).unwrap();
    for input_max in [Some(1e30), None] {
        let folded = folding
            .backward_folding_sgd(x.view(), g.view(), true, 0.1, input_max)
            .unwrap();
        assert!(!folded);
        assert_eq!(folding.weight_grad(), plain.weight_grad());
        // Nothing folded: applying leaves the weights as they are and says so.
        let before = folding.weights().to_owned();
        assert!(!folding.apply_folded_sgd(x.view(), g.view(), 0.1).unwrap());
        assert_eq!(folding.weights(), before);
    }
    assert!(
        plain
            .weight_grad()
            .iter()
            .all(|v| v.is_finite() && *v != 0.0)
    );

    // With a gradient of 1 everywhere, the bound (2 · 1e30) is finite: it folds, leaves the
    // weight gradient unwritten, and the update lands where the two-step update does.
    let ones = Array2::ones((2, 4));
    let (mut plain, mut folding) = (layer(), layer());
    plain.backward(x.view(), ones.view(), true).unwrap();
    assert!(
        folding
            .backward_folding_sgd(x.view(), ones.view(), true, 0.1, None)
            .unwrap()
    );
    assert!(folding.weight_grad().iter().all(|v| *v == 0.0));
    assert_eq!(folding.input_grad(), plain.input_grad());
    assert!(
        folding
            .apply_folded_sgd(x.view(), ones.view(), 0.1)
            .unwrap()
    );
    // Once applied, the fold is spent: a second call changes nothing.
    assert!(
        !folding
            .apply_folded_sgd(x.view(), ones.view(), 0.1)
            .unwrap()
    );
    plain.visit_params(&mut |p| crank::kernels::axpy(-0.1, p.grad, p.value));
    assert_eq!(folding.weights(), plain.weights());
    assert_eq!(folding.biases(), plain.biases());

    // A layer with few weights next to its batch's activations (2 -> 1 over 2 rows) does not
    // fold even when it could.
    let w = array![[1.0f32], [1.0]];
    let mut narrow = Dense::from_weights("n", w, array![0.0], Activation::Identity).unwrap();
    narrow.forward(x.view(), Mode::Train).unwrap();
    let one = array![[1.0f32], [1.0]];
    let folded = narrow.backward_folding_sgd(x.view(), one.view(), true, 0.1, None);
    assert!(!folded.unwrap());
}

#[test]
fn a_gradient_that_overflows_stops_the_step_before_any_update() {
    // A finite loss whose gradient overflows in layer 0 (1e30 · 5e9 / 2), after layer 1 has
    // folded its update: neither layer moves, with plain SGD or with momentum.
    let model = || {
        let w0 = array![[1e-30f32, 1e-30, 1e-30, 1e-30], [1.0, 1.0, 1.0, 1.0]];
        let l0 = Dense::from_weights("in", w0, Array1::zeros(4), Activation::Identity);
        let l1 = Dense::from_weights(
            "out",
            Array2::eye(4),
            Array1::zeros(4),
            Activation::Identity,
        );
        let layers: Vec<Box<dyn Layer<f32>>> = vec![Box::new(l0.unwrap()), Box::new(l1.unwrap())];
        Sequential::from_layers(2, layers).unwrap()
    };
    let x = array![[1e30f32, 0.0], [0.0, 1.0]];
    let y = array![[2e10f32, 2e10, 2e10, 2e10], [1.0, 1.0, 1.0, 1.0]];
    for mut sgd in [
        Sgd::new(0.1).unwrap(),
        crank::optim::SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            ..Default::default()
        }
        .build()
        .unwrap(),
    ] {
        let mut m = model();
        let before = param_bits(&mut m);
        let err = m
            .train_step(x.view(), &y, &Loss::Mse, &mut sgd)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "non-finite value in gradient of layer 0 (in) weights at step 0"
        );
        assert_eq!(param_bits(&mut m), before);
        assert_eq!(m.steps(), 0);
    }
    // Both layers fold in a step whose target keeps layer 0's gradient finite: neither weight
    // gradient is written (the bias gradients are).
    let mut m = model();
    let near = array![[2.0f32, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]];
    let mut sgd = Sgd::new(0.1).unwrap();
    m.train_step(x.view(), &near, &Loss::Mse, &mut sgd).unwrap();
    let mut unwritten = Vec::new();
    m.visit_params(|_, p| unwritten.push(p.grad.iter().all(|g| *g == 0.0)));
    assert_eq!(unwritten, [true, false, true, false]);
}

#[test]
fn learns_xor_to_100_percent() {
    let x = array![[0.0f32, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]];
    let y = vec![0usize, 1, 1, 0];
    let mut model = Sequential::<f32>::builder(2)
        .dense(8, Activation::Tanh)
        .dense(2, Activation::Identity)
        .seed(3)
        .build()
        .unwrap();
    let mut sgd = Sgd::new(0.5).unwrap();
    let first = model
        .evaluate(x.view(), &y, &Loss::SoftmaxCrossEntropy)
        .unwrap();
    for _ in 0..500 {
        model
            .train_step(x.view(), &y, &Loss::SoftmaxCrossEntropy, &mut sgd)
            .unwrap();
    }
    let last = model
        .evaluate(x.view(), &y, &Loss::SoftmaxCrossEntropy)
        .unwrap();
    assert!(last < 0.05 && last < first, "loss {first} -> {last}");
    assert_eq!(model.accuracy(x.view(), &y).unwrap(), 1.0);
}

#[test]
fn digits_reach_93_percent() {
    let data = Classification::<f32>::from_csv(
        concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv"),
        None,
    )
    .unwrap();
    assert_eq!(
        (data.len(), data.x.ncols(), data.num_classes()),
        (1797, 64, 10)
    );
    let (mut train, mut test) = data.split(0.2, 42).unwrap();
    assert_eq!(train.len() + test.len(), 1797);
    let scaler = Standardizer::fit(train.x.view()).unwrap();
    scaler.transform(&mut train.x).unwrap();
    scaler.transform(&mut test.x).unwrap();
    let mut model = Sequential::<f32>::builder(64)
        .dense(64, Activation::Relu)
        .dense(10, Activation::Identity)
        .seed(42)
        .build()
        .unwrap();
    let mut sgd = Sgd::new(0.05).unwrap();
    let mut batcher = Batcher::new(train.len(), 32, 42).unwrap();
    for _ in 0..15 {
        batcher.shuffle();
        for b in 0..batcher.batches() {
            let (x, y) = batcher.batch(&train, b).unwrap();
            model
                .train_step(x, y, &Loss::SoftmaxCrossEntropy, &mut sgd)
                .unwrap();
        }
    }
    let acc = model.accuracy(test.x.view(), &test.labels).unwrap();
    assert!(acc >= 0.93, "test accuracy {acc}");
}

fn small() -> Sequential<f32> {
    Sequential::<f32>::builder(3)
        .dense(4, Activation::Relu)
        .dense(2, Activation::Identity)
        .build()
        .unwrap()
}

#[test]
fn shape_errors_are_errors_naming_layer_and_shapes() {
    let mut model = small();
    let mut sgd = Sgd::new(0.1).unwrap();
    let x = Array2::<f32>::zeros((5, 4));
    let err = model
        .train_step(x.view(), &vec![0; 5], &Loss::SoftmaxCrossEntropy, &mut sgd)
        .unwrap_err();
    assert!(matches!(err, Error::Shape { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("layer 0 (dense_0)")
            && msg.contains("(batch >= 1, 3)")
            && msg.contains("(5, 4)"),
        "{msg}"
    );
    assert!(model.predict(x.view()).is_err());
    assert!(model.predict(Array2::<f32>::zeros((0, 3)).view()).is_err());

    let x = Array2::<f32>::zeros((5, 3));
    let err = model
        .train_step(x.view(), &vec![0; 4], &Loss::SoftmaxCrossEntropy, &mut sgd)
        .unwrap_err();
    assert!(
        err.to_string().contains("4 class indices for a batch of 5"),
        "{err}"
    );
    let err = model
        .train_step(x.view(), &Array2::zeros((5, 3)), &Loss::Mse, &mut sgd)
        .unwrap_err();
    assert!(
        err.to_string().contains("(5, 3)") && err.to_string().contains("(5, 2)"),
        "{err}"
    );

    // Layers that do not chain.
    let mut rng = <rand_xoshiro::Xoshiro256PlusPlus as rand::SeedableRng>::seed_from_u64(0);
    let layers: Vec<Box<dyn Layer<f32>>> = vec![
        Box::new(Dense::new(3, 4, Activation::Relu, &mut rng).unwrap()),
        Box::new(Dense::new(5, 2, Activation::Relu, &mut rng).unwrap()),
    ];
    let err = Sequential::from_layers(3, layers).unwrap_err();
    assert!(err.to_string().contains("layer 1"), "{err}");
    assert!(
        Sequential::<f32>::builder(3)
            .dense(0, Activation::Relu)
            .build()
            .is_err()
    );
    assert!(Sequential::<f32>::builder(3).build().is_err());
}

#[test]
fn non_finite_input_and_loss_name_step_and_layer_and_keep_weights() {
    let mut model = small();
    let mut sgd = Sgd::new(0.1).unwrap();
    let x = array![[1.0f32, 2.0, 3.0], [0.5, 0.5, 0.5]];
    model
        .train_step(x.view(), &vec![0, 1], &Loss::SoftmaxCrossEntropy, &mut sgd)
        .unwrap();

    let mut bad = x.clone();
    bad[[1, 2]] = f32::NAN;
    let err = model
        .train_step(
            bad.view(),
            &vec![0, 1],
            &Loss::SoftmaxCrossEntropy,
            &mut sgd,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "non-finite value in input at row 1, column 2 at step 1"
    );

    // Weights that overflow the first layer's output: the error names that layer.
    let l1 = Dense::from_weights(
        "wide",
        Array2::from_elem((3, 4), 1e30f32),
        ndarray::Array1::zeros(4),
        Activation::Relu,
    );
    let l2 = Dense::from_weights(
        "out",
        array![[1.0f32, -1.0], [-1.0, 1.0], [1.0, 1.0], [1.0, 1.0]],
        ndarray::Array1::zeros(2),
        Activation::Identity,
    );
    let layers: Vec<Box<dyn Layer<f32>>> = vec![Box::new(l1.unwrap()), Box::new(l2.unwrap())];
    let mut model = Sequential::from_layers(3, layers).unwrap();
    let before = param_bits(&mut model);
    let err = model
        .train_step(
            array![[1e10f32, 1e10, 1e10]].view(),
            &vec![0],
            &Loss::SoftmaxCrossEntropy,
            &mut sgd,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "non-finite value in output of layer 0 (wide) at step 0"
    );
    assert_eq!(before, param_bits(&mut model));
}

/// Inference checks its input in the first layer's activation pass (a non-finite input value
/// makes its whole row of `x·W + b` non-finite, whatever the weights, zero weights included),
/// and then finds the value in the input to name it. A model whose first layer cannot do that
/// scans the input first. A finite input that overflows in the network is not an input error.
#[test]
fn inference_names_a_non_finite_input_value_whatever_the_first_layer() {
    let zero_weights = || {
        let dense = Dense::from_weights(
            "zeros",
            Array2::<f32>::zeros((3, 4)),
            Array1::zeros(4),
            Activation::Relu,
        );
        let layers: Vec<Box<dyn Layer<f32>>> = vec![Box::new(dense.unwrap())];
        Sequential::from_layers(3, layers).unwrap()
    };
    let models = [
        small(),
        zero_weights(),
        Sequential::<f32>::builder(3)
            .dense(5, Activation::Softmax)
            .build()
            .unwrap(),
        Sequential::<f32>::builder(3)
            .dense(5, Activation::Identity)
            .build()
            .unwrap(),
        Sequential::<f32>::builder(3)
            .layer_norm()
            .dense(2, Activation::Relu)
            .build()
            .unwrap(),
        Sequential::<f32>::builder(3)
            .dropout(0.5)
            .dense(2, Activation::Relu)
            .build()
            .unwrap(),
    ];
    // Batches on both sides of the kernels' 16-value blocks and of the parallel threshold.
    for (m, model) in models.iter().enumerate() {
        for rows in [1, 7, 40_000] {
            let x = Array2::from_shape_fn((rows, 3), |(i, j)| (i + j) as f32 * 0.01 - 0.5);
            assert!(model.predict(x.view()).is_ok(), "model {m}, {rows} rows");
            for (row, col) in [(0, 0), (rows / 2, 1), (rows - 1, 2)] {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut x = x.clone();
                    x[[row, col]] = bad;
                    let err = model.predict(x.view()).unwrap_err();
                    assert_eq!(
                        err.to_string(),
                        format!("non-finite value in input at row {row}, column {col}"),
                        "model {m}, {rows} rows, {bad}"
                    );
                }
            }
        }
    }
    // Overflow inside the first layer, from a finite input: inference answers (with infinities).
    let huge = Dense::from_weights(
        "huge",
        Array2::from_elem((3, 2), 1e30f32),
        Array1::zeros(2),
        Activation::Relu,
    );
    let layers: Vec<Box<dyn Layer<f32>>> = vec![Box::new(huge.unwrap())];
    let model = Sequential::from_layers(3, layers).unwrap();
    let y = model.predict(array![[1e10f32, 1e10, 1e10]].view()).unwrap();
    assert!(y.iter().all(|v| *v == f32::INFINITY));
}

/// An input in another memory order (column-major, or every other row of a larger array) gives
/// the predictions, the loss and the weights of the same values in standard layout, for small
/// products (crank's own loops) and large ones (the backend), and names a bad value by its place
/// in the view.
#[test]
fn inputs_in_any_memory_order_train_and_predict_alike() {
    let build = || {
        Sequential::<f32>::builder(40)
            .dense(96, Activation::Relu)
            .layer_norm()
            .dense(3, Activation::Identity)
            .seed(5)
            .build()
            .unwrap()
    };
    for rows in [4, 300] {
        let x = Array2::from_shape_fn((rows, 40), |(i, j)| {
            ((i * 7 + j * 3) % 17) as f32 * 0.1 - 0.8
        });
        let labels: Vec<usize> = (0..rows).map(|i| i % 3).collect();
        let col_major = x.t().as_standard_layout().into_owned();
        let mut doubled = Array2::from_elem((2 * rows, 40), f32::NAN);
        doubled.slice_mut(ndarray::s![..;2, ..]).assign(&x);
        let views = [
            ("column-major", col_major.t()),
            ("every other row", doubled.slice(ndarray::s![..;2, ..])),
        ];
        let step = |model: &mut Sequential<f32>, x| {
            let mut sgd = Sgd::new(0.1).unwrap();
            model
                .train_step(x, &labels, &Loss::SoftmaxCrossEntropy, &mut sgd)
                .unwrap()
        };
        let mut reference = build();
        let want_pred = reference.predict(x.view()).unwrap();
        let want_loss = step(&mut reference, x.view());
        let want_params = params(&mut reference);
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
        for (name, view) in views {
            assert!(!view.is_standard_layout() && view == x, "{name}");
            let mut model = build();
            let pred = model.predict(view).unwrap();
            assert!(
                pred.iter().zip(&want_pred).all(|(a, b)| close(*a, *b)),
                "{name}, {rows} rows: predictions"
            );
            let loss = step(&mut model, view);
            assert!(
                close(loss, want_loss),
                "{name}, {rows} rows: loss {loss} != {want_loss}"
            );
            for (g, w) in params(&mut model).iter().zip(&want_params) {
                assert!(
                    g.iter().zip(w).all(|(a, b)| close(*a, *b)),
                    "{name}, {rows} rows: weights"
                );
            }
        }
        // A NaN at (row 1, column 2) of the column-major view.
        let mut bad = col_major.clone();
        bad[[2, 1]] = f32::NAN;
        let err = build().predict(bad.t()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "non-finite value in input at row 1, column 2"
        );
    }
}

#[test]
fn summary_and_parameter_count() {
    let model = Sequential::<f32>::builder(64)
        .dense(64, Activation::Relu)
        .dense_named("logits", 10, Activation::Identity)
        .build()
        .unwrap();
    assert_eq!(model.num_params(), 64 * 64 + 64 + 64 * 10 + 10);
    let summary = model.to_string();
    assert_eq!(summary.lines().count(), 4, "{summary}");
    assert!(summary.contains("4810 parameters"));
    let line = summary.lines().nth(3).unwrap();
    for word in ["logits", "Dense", "64", "10", "Identity", "650"] {
        assert!(line.contains(word), "{line}");
    }
}

#[test]
fn csv_errors_name_file_line_and_column() {
    let dir = std::env::temp_dir().join(format!("crank-csv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "bad_cell.csv",
            "a,b,label\n1,2,0\n3,x,1\n",
            "bad_cell.csv:3:2",
        ),
        ("ragged.csv", "a,b,label\n1,2,0\n3,1\n", "ragged.csv:3:1"),
        ("empty.csv", "a,b,label\n", "no rows"),
        ("bad_label.csv", "a,b,label\n1,2,cat\n", "bad_label.csv:2:3"),
        ("nan.csv", "a,b,label\n1,NaN,0\n", "nan.csv:2:2"),
    ];
    for (name, text, want) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let err = Classification::<f32>::from_csv(&path, None).unwrap_err();
        assert!(err.to_string().contains(want), "{name}: {err}");
    }
    let err = Classification::<f32>::from_csv(dir.join("missing.csv"), None).unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    std::fs::remove_dir_all(dir).unwrap();
}

//! Finite-difference gradient checks (f64) for Dense under every activation, for every loss, and
//! for a whole model, over random shapes.

use crank::layer::{ActivationLayer, BatchNorm, Dropout, Layer, LayerNorm, Mode};
use crank::{Activation, Dense, Loss, Sequential, Target};
use ndarray::{Array1, Array2};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

const H: f64 = 1e-6;

const ACTIVATIONS: [Activation; 8] = [
    Activation::Identity,
    Activation::Relu,
    Activation::LeakyRelu { alpha: 0.1 },
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Gelu,
    Activation::Softplus,
    Activation::Softmax,
];

fn random(rng: &mut Xoshiro256PlusPlus, shape: (usize, usize), scale: f64) -> Array2<f64> {
    Array2::from_shape_simple_fn(shape, || (rng.random::<f64>() * 2.0 - 1.0) * scale)
}

fn close(analytic: f64, numeric: f64, what: &str) -> Result<(), TestCaseError> {
    let tol = 1e-5 * (1.0 + analytic.abs().max(numeric.abs()));
    prop_assert!(
        (analytic - numeric).abs() <= tol,
        "{what}: analytic {analytic} vs finite difference {numeric}"
    );
    Ok(())
}

/// `J = Σ c ⊙ y` for a layer with the given parameters.
fn objective(
    w: &Array2<f64>,
    b: &Array1<f64>,
    act: Activation,
    x: &Array2<f64>,
    c: &Array2<f64>,
) -> f64 {
    let mut layer = Dense::from_weights("probe", w.clone(), b.clone(), act).unwrap();
    layer.forward(x.view(), Mode::Train).unwrap();
    (&layer.output() * c).sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// With `g = c`, backward must give `dx = ∂J/∂x` and, as batch means, `B·dW = ∂J/∂W` and
    /// `B·db = ∂J/∂b`.
    #[test]
    fn dense_gradients_match_finite_differences(
        batch in 1usize..5, n_in in 1usize..6, n_out in 1usize..6, act in 0usize..8, seed: u64,
    ) {
        let act = ACTIVATIONS[act];
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut layer = Dense::<f64>::new(n_in, n_out, act, &mut rng).unwrap();
        let b = Array1::from_shape_simple_fn(n_out, || rng.random::<f64>() - 0.5);
        let w = layer.weights().to_owned();
        layer = Dense::from_weights("probe", w.clone(), b.clone(), act).unwrap();
        let x = random(&mut rng, (batch, n_in), 1.5);
        let c = random(&mut rng, (batch, n_out), 1.0);

        // Kinks of ReLU and LeakyReLU: skip draws with a pre-activation within reach of 0.
        let z = x.dot(&w) + &b;
        prop_assume!(z.iter().all(|v| v.abs() > 1e-4));

        layer.forward(x.view(), Mode::Train).unwrap();
        layer.backward(x.view(), c.view(), true).unwrap();
        let bf = batch as f64;

        for idx in ndarray::indices(w.dim()) {
            let (mut wp, mut wm) = (w.clone(), w.clone());
            wp[idx] += H;
            wm[idx] -= H;
            let fd = (objective(&wp, &b, act, &x, &c) - objective(&wm, &b, act, &x, &c)) / (2.0 * H);
            close(bf * layer.weight_grad()[idx], fd, &format!("{act} dW{idx:?}"))?;
        }
        for j in 0..n_out {
            let (mut bp, mut bm) = (b.clone(), b.clone());
            bp[j] += H;
            bm[j] -= H;
            let fd = (objective(&w, &bp, act, &x, &c) - objective(&w, &bm, act, &x, &c)) / (2.0 * H);
            close(bf * layer.bias_grad()[j], fd, &format!("{act} db[{j}]"))?;
        }
        for idx in ndarray::indices(x.dim()) {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[idx] += H;
            xm[idx] -= H;
            let fd = (objective(&w, &b, act, &xp, &c) - objective(&w, &b, act, &xm, &c)) / (2.0 * H);
            close(layer.input_grad()[idx], fd, &format!("{act} dx{idx:?}"))?;
        }
    }

    /// The per-sample gradient of each loss is `∂(B · mean loss)/∂y`.
    #[test]
    fn loss_gradients_match_finite_differences(
        batch in 1usize..5, k in 1usize..6, which in 0usize..5, seed: u64,
    ) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let y = random(&mut rng, (batch, k), 3.0);
        let classes: Vec<usize> = (0..batch).map(|_| rng.random_range(0..k)).collect();
        let values = match which {
            // BCE wants targets in [0, 1]; soft cross-entropy wants rows summing to 1.
            1 | 3 => random(&mut rng, (batch, k), 1.0).mapv(|v| (v + 1.0) / 2.0),
            _ => random(&mut rng, (batch, k), 2.0),
        };
        let soft = {
            let mut s = values.clone();
            for mut row in s.rows_mut() {
                let total = row.sum();
                row /= total;
            }
            s
        };
        let (loss, target) = match which {
            0 => (Loss::Mse, Target::Values(values.view())),
            1 => (Loss::BinaryCrossEntropy, Target::Values(values.view())),
            2 => (Loss::SoftmaxCrossEntropy, Target::Classes(&classes)),
            3 => (Loss::SoftmaxCrossEntropy, Target::Values(soft.view())),
            _ => (Loss::Huber { delta: 0.7 }, Target::Values(values.view())),
        };
        if let Loss::Huber { delta } = loss {
            prop_assume!((&y - &values).iter().all(|r| (r.abs() - delta).abs() > 1e-4));
        }
        let mut grad = Array2::zeros((batch, k));
        let value = loss.loss_and_grad(y.view(), target, grad.view_mut()).unwrap();
        prop_assert!((value - loss.loss(y.view(), target).unwrap()).abs() < 1e-14);
        for idx in ndarray::indices(y.dim()) {
            let (mut yp, mut ym) = (y.clone(), y.clone());
            yp[idx] += H;
            ym[idx] -= H;
            let fd = batch as f64
                * (loss.loss(yp.view(), target).unwrap() - loss.loss(ym.view(), target).unwrap())
                / (2.0 * H);
            close(grad[idx], fd, &format!("{loss} d/dy{idx:?}"))?;
        }
    }

    /// Through a whole model, every parameter gradient is `∂(mean loss)/∂p`.
    #[test]
    fn model_gradients_match_finite_differences(
        batch in 1usize..5, n_in in 1usize..5, hidden in 1usize..6, k in 2usize..5,
        act in 0usize..6, seed: u64,
    ) {
        // Smooth activations only: a finite difference across a ReLU kink means nothing, and the
        // ReLU family is checked layer by layer above, away from its kink.
        let act = [
            Activation::Identity,
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::Gelu,
            Activation::Softplus,
            Activation::Softmax,
        ][act];
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let x = random(&mut rng, (batch, n_in), 1.0);
        let classes: Vec<usize> = (0..batch).map(|_| rng.random_range(0..k)).collect();
        let mut model = Sequential::<f64>::builder(n_in)
            .dense(hidden, act)
            .dense(hidden, Activation::Tanh)
            .dense(k, Activation::Identity)
            .seed(seed)
            .build()
            .unwrap();
        let loss = Loss::SoftmaxCrossEntropy;
        model.compute_gradients(x.view(), &classes, &loss).unwrap();
        let mut grads = Vec::new();
        model.visit_params(|_, p| grads.push(p.grad.to_vec()));

        for (pi, grad) in grads.iter().enumerate() {
            for (e, &g) in grad.iter().enumerate() {
                let mut at = |delta: f64| {
                    model.visit_params(|i, p| if i == pi { p.value[e] += delta });
                    let l = model.evaluate(x.view(), &classes, &loss).unwrap();
                    model.visit_params(|i, p| if i == pi { p.value[e] -= delta });
                    l
                };
                let (lp, lm) = (at(H), at(-H));
                close(g, (lp - lm) / (2.0 * H), &format!("{act} param {pi}[{e}]"))?;
            }
        }
    }
}

/// `J = Σ c ⊙ layer(x)` in training mode.
fn layer_objective(layer: &mut dyn Layer<f64>, x: &Array2<f64>, c: &Array2<f64>) -> f64 {
    layer.forward(x.view(), Mode::Train).unwrap();
    (&layer.output() * c).sum()
}

/// Checks a layer's input gradient and `B ·` parameter gradients against finite differences of
/// `J = Σ c ⊙ layer(x)`.
fn check_layer(
    layer: &mut dyn Layer<f64>,
    x: &Array2<f64>,
    c: &Array2<f64>,
) -> Result<(), TestCaseError> {
    let what = layer.name().to_string();
    layer.forward(x.view(), Mode::Train).unwrap();
    layer.backward(x.view(), c.view(), true).unwrap();
    let dx = layer.input_grad().to_owned();
    let mut grads = Vec::new();
    layer.visit_params(&mut |p| grads.push(p.grad.to_vec()));
    let b = x.nrows() as f64;
    for idx in ndarray::indices(x.dim()) {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[idx] += H;
        xm[idx] -= H;
        let fd = (layer_objective(layer, &xp, c) - layer_objective(layer, &xm, c)) / (2.0 * H);
        close(dx[idx], fd, &format!("{what} dx{idx:?}"))?;
    }
    for (pi, grad) in grads.iter().enumerate() {
        for (e, &g) in grad.iter().enumerate() {
            let shift = |layer: &mut dyn Layer<f64>, d: f64| {
                let mut k = 0;
                layer.visit_params(&mut |p| {
                    if k == pi {
                        p.value[e] += d;
                    }
                    k += 1;
                });
            };
            shift(layer, H);
            let lp = layer_objective(layer, x, c);
            shift(layer, -2.0 * H);
            let lm = layer_objective(layer, x, c);
            shift(layer, H);
            close(
                b * g,
                (lp - lm) / (2.0 * H),
                &format!("{what} param {pi}[{e}]"),
            )?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// BatchNorm (batch statistics), LayerNorm, Dropout (a fixed mask for a fixed step) and an
    /// activation as a layer of its own.
    #[test]
    fn normalisation_and_dropout_gradients_match_finite_differences(
        batch in 2usize..6, n in 1usize..6, seed: u64,
    ) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let x = random(&mut rng, (batch, n), 2.0);
        let c = random(&mut rng, (batch, n), 1.0);
        let gamma = Array1::from_shape_simple_fn(n, || 0.5 + rng.random::<f64>());
        let beta = Array1::from_shape_simple_fn(n, || rng.random::<f64>() - 0.5);
        // With a batch of 2 a feature's normalised values are ±1 whatever x is, so the
        // gradient is 0 and finite differences see only rounding: use ε large enough to matter.
        let mut bn = BatchNorm::from_tensors("bn", gamma.clone(), beta.clone(), Array1::zeros(n), Array1::ones(n), 0.1, 1e-3);
        check_layer(&mut bn, &x, &c)?;
        let mut ln = LayerNorm::from_tensors("ln", gamma, beta, 1e-3);
        check_layer(&mut ln, &x, &c)?;
        let mut dropout = Dropout::new("dropout", n, 0.4, seed).unwrap();
        check_layer(&mut dropout, &x, &c)?;
        for activation in [
            Activation::Relu,
            Activation::LeakyRelu { alpha: 0.2 },
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::Gelu,
            Activation::Softplus,
            Activation::Softmax,
        ] {
            let mut layer = ActivationLayer::new(activation.to_string(), n, activation);
            check_layer(&mut layer, &x, &c)?;
        }
    }
}

#[test]
fn dropout_is_identity_in_eval_and_unbiased_in_training() {
    let x = Array2::from_elem((200, 50), 1.0f64);
    let mut d = Dropout::new("d", 50, 0.3, 7).unwrap();
    d.forward(x.view(), Mode::Eval).unwrap();
    assert_eq!(d.output(), x);
    d.forward(x.view(), Mode::Train).unwrap();
    let out = d.output();
    let zeros = out.iter().filter(|v| **v == 0.0).count() as f64 / out.len() as f64;
    assert!((zeros - 0.3).abs() < 0.02, "dropped {zeros}");
    assert!(
        (out.mean().unwrap() - 1.0).abs() < 0.03,
        "mean {}",
        out.mean().unwrap()
    );
    assert!(
        out.iter()
            .all(|v| *v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-12)
    );
    // Another step draws another mask; the same step, the same one.
    let first = out.to_owned();
    d.set_step(1, 0);
    d.forward(x.view(), Mode::Train).unwrap();
    assert_ne!(d.output(), first);
    d.set_step(0, 0);
    d.forward(x.view(), Mode::Train).unwrap();
    assert_eq!(d.output(), first);
    // A row's mask depends on its place in the step's batch, not on the rows around it: the
    // second half of the batch, told where it starts, draws the second half's masks.
    let half = x.nrows() / 2;
    d.set_step(0, half as u64);
    d.forward(x.slice(ndarray::s![half.., ..]), Mode::Train)
        .unwrap();
    assert_eq!(d.output(), first.slice(ndarray::s![half.., ..]));
}

#[test]
fn batchnorm_running_statistics_follow_pytorch() {
    // x has column means (2, -1) and biased variances (1, 4); B = 4, so the unbiased ones are
    // 4/3 and 16/3. PyTorch: running = 0.9 · running + 0.1 · batch (unbiased variance).
    let x = ndarray::array![[1.0, -3.0], [3.0, 1.0], [1.0, -3.0], [3.0, 1.0]];
    let mut bn = BatchNorm::<f64>::new("bn", 2, 0.1, 1e-5);
    bn.forward(x.view(), Mode::Train).unwrap();
    let rm = bn.running_mean().clone();
    let rv = bn.running_var().clone();
    assert!(
        (rm[0] - 0.2).abs() < 1e-12 && (rm[1] + 0.1).abs() < 1e-12,
        "{rm}"
    );
    assert!(
        (rv[0] - (0.9 + 0.1 * 4.0 / 3.0)).abs() < 1e-12
            && (rv[1] - (0.9 + 0.1 * 16.0 / 3.0)).abs() < 1e-12,
        "{rv}"
    );
    // Training output is normalised with the batch statistics.
    let y = bn.output();
    assert!((y[[0, 0]] + 1.0 / (1.0f64 + 1e-5).sqrt()).abs() < 1e-12);
    // Evaluation uses the running statistics, in forward and in infer alike.
    bn.forward(x.view(), Mode::Eval).unwrap();
    let mut out = Array2::zeros((4, 2));
    bn.infer(x.view(), out.view_mut()).unwrap();
    assert_eq!(bn.output(), out);
    assert!((out[[0, 0]] - (1.0 - 0.2) / (rv[0] + 1e-5).sqrt()).abs() < 1e-12);
    // A batch of one cannot be normalised in training.
    assert!(
        bn.forward(x.slice(ndarray::s![..1, ..]), Mode::Train)
            .is_err()
    );
}

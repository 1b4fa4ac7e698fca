//! `crank::set_threads_here`: the calling thread becomes one of the pool's threads, calls from it
//! fork from it, and calls from other threads still run (on the pool's other threads) and give
//! the same results. A binary of its own: rayon's global pool is built once per process.

use crank::{Activation, Loss, Sequential, Sgd};
use ndarray::Array2;

/// A model whose first product splits over two threads (`gemm::splits`).
fn model() -> Sequential<f32> {
    Sequential::<f32>::builder(128)
        .dense(256, Activation::Relu)
        .dense(10, Activation::Identity)
        .seed(5)
        .build()
        .unwrap()
}

/// Two training steps and a prediction: the prediction's bits.
fn run(model: &mut Sequential<f32>, x: &Array2<f32>, y: &[usize]) -> Vec<u32> {
    let mut sgd = Sgd::new(0.05).unwrap();
    for _ in 0..2 {
        model
            .train_step(x.view(), y, &Loss::SoftmaxCrossEntropy, &mut sgd)
            .unwrap();
    }
    let out = model.predict(x.view()).unwrap();
    out.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn the_calling_thread_joins_the_pool_and_other_threads_still_get_the_same_results() {
    // A thread of another pool is refused, and the refusal leaves the global pool to be built
    // (rayon, left to refuse it itself, would spend the global pool's one build on the error).
    let other = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let refused = other.install(|| crank::set_threads_here(Some(2)));
    assert!(
        matches!(&refused, Err(crank::Error::Config(_))),
        "{refused:?}"
    );
    crank::set_threads_here(Some(2)).unwrap();
    assert_eq!(rayon::current_thread_index(), Some(0));
    assert_eq!(rayon::current_num_threads(), 2);
    // The pool exists now: a second one is refused, as `set_threads` refuses it.
    for again in [crank::set_threads_here(Some(2)), crank::set_threads(2)] {
        assert!(matches!(again, Err(crank::Error::Config(_))), "{again:?}");
    }

    let batch = 128;
    assert!(crank::gemm::splits(batch * 128 * 256));
    let x = Array2::from_shape_fn((batch, 128), |(i, j)| {
        ((i * 7 + j * 3) % 11) as f32 / 5.0 - 1.0
    });
    let y: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let here = run(&mut model(), &x, &y);
    let elsewhere = std::thread::scope(|s| {
        s.spawn(|| {
            assert_eq!(rayon::current_thread_index(), None);
            run(&mut model(), &x, &y)
        })
        .join()
        .unwrap()
    });
    assert_eq!(here, elsewhere);
    // And the pool's own threads agree with both.
    let on_pool = rayon::scope(|_| run(&mut model(), &x, &y));
    assert_eq!(here, on_pool);
}

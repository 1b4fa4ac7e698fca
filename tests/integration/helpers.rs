//! Helpers the integration tests share.

use crank::{Scalar, Sequential};

/// Every parameter's values, layer by layer, in `visit_params` order.
pub fn params<F: Scalar>(model: &mut Sequential<F>) -> Vec<Vec<F>> {
    let mut out = Vec::new();
    model.visit_params(|_, p| out.push(p.value.to_vec()));
    out
}

/// Every parameter's bits (widened to `f64`, which keeps them apart), for bitwise comparisons:
/// unlike `==` on the values, `-0.0` and `0.0` differ.
pub fn param_bits<F: Scalar>(model: &mut Sequential<F>) -> Vec<Vec<u64>> {
    params(model)
        .into_iter()
        .map(|p| p.into_iter().map(|v| v.as_f64().to_bits()).collect())
        .collect()
}

/// Whether `python3` can import `modules` (e.g. `"onnx, onnxruntime"`). Without them a test
/// says so and passes, except under CI (`CI` set), where this fails the test: CI installs them.
pub fn python_has(modules: &str) -> bool {
    let ready = std::process::Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have python3 with {modules}"
        );
        eprintln!("skipped: python3 with {modules} is not installed");
    }
    ready
}

/// Runs `tests/python/<script> <dir>`, asserts that it succeeds, and returns what it printed
/// (standard output, then standard error).
pub fn run_python(script: &str, dir: &std::path::Path) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let out = std::process::Command::new("python3")
        .arg(path)
        .arg(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script}: {text}");
    text
}

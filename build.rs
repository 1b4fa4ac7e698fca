//! Generates the ONNX message types from the vendored schema (`proto/onnx.proto3`) when the
//! `onnx` feature is on: `protox` parses the schema in Rust (no `protoc` on the machine) and
//! `prost-build` writes the types to `$OUT_DIR/onnx.rs`.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "onnx")]
    onnx();
}

#[cfg(feature = "onnx")]
fn onnx() {
    println!("cargo::rerun-if-changed=proto/onnx.proto3");
    let descriptors = protox::compile(["proto/onnx.proto3"], ["proto"])
        .unwrap_or_else(|e| panic!("proto/onnx.proto3 does not compile: {e}"));
    prost_build::Config::new()
        .compile_fds(descriptors)
        .unwrap_or_else(|e| panic!("generating the ONNX types failed: {e}"));
}

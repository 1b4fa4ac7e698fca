//! ONNX's message types, generated at build time from `proto/onnx.proto3` (see `build.rs`).

#![allow(missing_docs, dead_code, clippy::all, clippy::pedantic, rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));

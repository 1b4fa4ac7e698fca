//! Arbitrary bytes decoded as a json model give `Ok` or `Err`, never a panic, an abort or a
//! huge allocation.
#![no_main]

use crank::Sequential;
use crank::io::Format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Sequential::<f32>::from_bytes(data, Format::Json);
    let _ = Sequential::<f64>::from_bytes(data, Format::Json);
});

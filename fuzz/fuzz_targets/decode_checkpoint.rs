//! Arbitrary bytes decoded as a checkpoint give `Ok` or `Err`, never a panic.
#![no_main]

use crank::io::Checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Checkpoint::<f32>::from_bytes(data);
});

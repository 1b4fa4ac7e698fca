//! Arbitrary text parsed as a YAML (and JSON) architecture gives `Ok` or `Err`, never a panic,
//! an abort or a huge allocation. A description that parses is not built: building allocates
//! the weights it asks for, which is the caller's choice.
#![no_main]

use crank::spec::ModelSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(spec) = ModelSpec::from_yaml(text) {
            // What parses must print and parse back to the same description.
            assert_eq!(ModelSpec::from_json(&spec.to_json()).unwrap(), spec);
        }
        let _ = ModelSpec::from_json(text);
    }
});

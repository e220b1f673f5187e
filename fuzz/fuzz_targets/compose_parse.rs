//! The compose parser (YAML, interpolation, every key) on arbitrary text: refuse, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tend::desired::compose;
use tend::desired::interpolate::Vars;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = compose::parse("compose.yaml", text, &Vars::new());
    }
});

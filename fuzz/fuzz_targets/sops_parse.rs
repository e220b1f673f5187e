//! The SOPS parser on arbitrary bytes, in every format: it may refuse, it must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tend::secrets::{parse, recipients, Format};

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let format = match data[0] % 5 {
        0 => Format::Yaml,
        1 => Format::Json,
        2 => Format::Dotenv,
        3 => Format::Ini,
        _ => Format::Binary,
    };
    let body = &data[1..];
    let _ = parse(body, format);
    let _ = recipients(body, format);
});

//! Arbitrary text as a configuration file: parsing and mapping onto options must never panic or
//! hang, however malformed the text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Some settings name files to read (an operator JWT); keep the fuzzer away from device and
    // kernel files, which can be endless.
    if ["/dev", "/proc", "/sys"].iter().any(|p| text.contains(p)) {
        return;
    }
    if let Ok(map) = courier::conf::parse_str(text, "fuzz.conf", None) {
        let mut opts = courier::Options::default();
        let _ = courier::config::apply(&map, &mut opts);
    }
});

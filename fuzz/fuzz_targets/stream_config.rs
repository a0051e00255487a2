//! Arbitrary bytes as the JSON of a stream create request: checking must never panic, and a
//! configuration it accepts must be a fixed point (checking it again, or updating to it, changes
//! nothing) that survives a round trip through JSON.
#![no_main]

use courier::jetstream::api::types::StreamConfig;
use courier::jetstream::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cfg) = serde_json::from_slice::<StreamConfig>(data) else { return };
    let Ok(checked) = config::check(&cfg) else { return };
    assert_eq!(config::check(&checked).as_ref(), Ok(&checked), "checking is idempotent");
    assert!(config::check_update(&checked, &checked).is_ok(), "updating to the same config is allowed");
    let json = serde_json::to_vec(&checked).expect("serialise");
    let back: StreamConfig = serde_json::from_slice(&json).expect("parse own output");
    assert_eq!(back, checked, "JSON round trip");
});

//! Arbitrary bytes as the JSON of a CONNECT: decoding must never panic, and an accepted CONNECT
//! leaves options the server can use.
#![no_main]

use courier::proto::ConnectOptions;
use libfuzzer_sys::fuzz_target;

fn check(opts: &ConnectOptions) {
    assert!((0..=1).contains(&opts.protocol), "accepted protocol {}", opts.protocol);
    assert!(!opts.no_responders || opts.headers, "accepted no_responders without headers");
}

fuzz_target!(|data: &[u8]| {
    let mut opts = ConnectOptions::default();
    if opts.apply(data).is_ok() {
        check(&opts);
        // A second CONNECT over the first, as a client may send.
        if opts.apply(data).is_ok() {
            check(&opts);
        }
    }
});

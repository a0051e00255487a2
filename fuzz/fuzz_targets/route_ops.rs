//! The route protocol parser on arbitrary peer bytes: it never panics, an operation lies within
//! the bytes and parses the same from exactly its own bytes, a message's payload is what its
//! sizes say, and a stream cut short asks for more rather than failing.
#![no_main]

use courier::route::parser::{parse, RouteOp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while !rest.is_empty() {
        match parse(rest, 1 << 20) {
            Ok(Some((op, used))) => {
                assert!(used > 0 && used <= rest.len());
                assert_eq!(parse(&rest[..used], 1 << 20), Ok(Some((op.clone(), used))));
                if let RouteOp::Msg(m) = &op {
                    assert!(m.header_len <= m.payload.len());
                    // Everything up to the payload's CRLF is needed.
                    assert_eq!(parse(&rest[..used - 1], 1 << 20), Ok(None));
                }
                rest = &rest[used..];
            }
            Ok(None) | Err(_) => break,
        }
    }
});

//! The route and leaf protocol parser on arbitrary peer bytes (the first byte picks the
//! dialect): it never panics, an operation lies within
//! the bytes and parses the same from exactly its own bytes, a message's payload is what its
//! sizes say, and a stream cut short asks for more rather than failing.
#![no_main]

use courier::route::parser::{parse, Dialect, RouteOp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut rest)) = data.split_first() else { return };
    let dialect = if pick & 1 == 0 { Dialect::Route } else { Dialect::Leaf };
    while !rest.is_empty() {
        match parse(rest, 1 << 20, dialect) {
            Ok(Some((op, used))) => {
                assert!(used > 0 && used <= rest.len());
                assert_eq!(parse(&rest[..used], 1 << 20, dialect), Ok(Some((op.clone(), used))));
                if let RouteOp::Msg(m) = &op {
                    assert!(m.header_len <= m.payload.len());
                    // Everything up to the payload's CRLF is needed.
                    assert_eq!(parse(&rest[..used - 1], 1 << 20, dialect), Ok(None));
                }
                rest = &rest[used..];
            }
            Ok(None) | Err(_) => break,
        }
    }
});

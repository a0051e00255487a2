//! The MQTT packet decoder on arbitrary client bytes: it never panics, a decoded packet lies
//! within the bytes and decodes the same from exactly its own bytes, a packet cut short asks
//! for more rather than failing, and a PUBLISH re-encoded decodes to itself.
#![no_main]

use courier::mqtt::{decode, publish, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while !rest.is_empty() {
        match decode(rest, 1 << 20) {
            Ok(Some((packet, used))) => {
                assert!(used > 0 && used <= rest.len());
                let again = decode(&rest[..used], 1 << 20).expect("its own bytes decode");
                assert_eq!(again, Some((packet.clone(), used)));
                for cut in [1, used / 2, used - 1] {
                    if cut > 0 && cut < used && cut >= 5 {
                        // Past the fixed header, a shorter buffer is incomplete, not an error.
                        assert_eq!(decode(&rest[..cut], 1 << 20), Ok(None), "cut at {cut} of {used}");
                    }
                }
                if let Packet::Publish(p) = &packet {
                    let mut out = Vec::new();
                    publish::encode(&mut out, p);
                    let back = decode(&out, 1 << 20).expect("re-encoded decodes").map(|(p, _)| p);
                    assert_eq!(back, Some(packet.clone()));
                }
                rest = &rest[used..];
            }
            Ok(None) | Err(_) => break,
        }
    }
});

//! Arbitrary bytes as a run of store records: decoding and resynchronising must never panic, and
//! what decodes must encode again to a record of the same length that decodes the same.
#![no_main]

use courier::jetstream::store::record::{self, Kind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    let mut steps = 0;
    while at < data.len() && steps < 10_000 {
        steps += 1;
        match record::decode(&data[at..]) {
            Ok((rec, len)) => {
                assert!(len > 0 && len <= data.len() - at, "a record's length lies inside the buffer");
                let mut again = Vec::new();
                if rec.kind == Kind::Message {
                    record::encode_message(&mut again, rec.seq, rec.ts, rec.subject, rec.headers, rec.data);
                } else {
                    record::encode_marker(&mut again, rec.kind, rec.seq, rec.ts);
                }
                assert_eq!(again.len(), len, "a decoded record encodes to the same length");
                assert_eq!(record::decode(&again), Ok((rec, len)), "and decodes the same");
                at += len;
            }
            Err(record::DecodeError::Incomplete) => break,
            Err(_) => match record::resync(data, at + 1) {
                Some(next) => {
                    assert!(next > at, "resynchronising moves forward");
                    assert!(record::decode(&data[next..]).is_ok(), "resync lands on a good record");
                    at = next;
                }
                None => break,
            },
        }
    }
});

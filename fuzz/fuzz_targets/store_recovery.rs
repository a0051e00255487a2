//! Arbitrary bytes as the segment files of a file store: opening must never panic or refuse, the
//! recovered state must agree with what loads, and the store must go on taking messages that
//! survive a reopen.
#![no_main]

use courier::jetstream::store::{FileStore, Limits, Store};
use libfuzzer_sys::fuzz_target;

fn scratch_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("courier-fuzz-store-{}", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    // The first byte says where the bytes split between the first segment, its delete file and
    // a second segment.
    let Some((&cut, rest)) = data.split_first() else { return };
    let a = (usize::from(cut & 0x0f) * rest.len()) / 16;
    let b = a + (usize::from(cut >> 4) * (rest.len() - a)) / 16;
    let dir = scratch_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    std::fs::write(dir.join("00000001.seg"), &rest[..a]).expect("write segment");
    std::fs::write(dir.join("00000001.del"), &rest[a..b]).expect("write delete file");
    std::fs::write(dir.join("00000002.seg"), &rest[b..]).expect("write segment");

    let opened = FileStore::open(&dir, Limits::default(), 1, false, 0, 0);
    let mut store = Store::File(opened.expect("a damaged store still opens"));
    let st = store.state();
    assert!(st.msgs == 0 || st.first_seq <= st.last_seq, "first {} after last {}", st.first_seq, st.last_seq);
    if st.msgs > 0 && st.last_seq - st.first_seq < 100_000 {
        let loadable = (st.first_seq..=st.last_seq).filter(|&s| store.load(s).is_ok()).count() as u64;
        assert_eq!(loadable, st.msgs, "every message the state counts loads");
    }

    let seq = store.store("after.damage", b"", b"still here", 1).expect("store after recovery");
    assert!(seq > st.last_seq, "a new message takes a new sequence");
    store.flush().expect("flush");
    drop(store);
    let store = FileStore::open(&dir, Limits::default(), 1, false, 0, 0).expect("reopen");
    let store = Store::File(store);
    let msg = store.load(seq).expect("the new message survives a reopen");
    assert_eq!(msg.subject, "after.damage");
    assert_eq!(&msg.data[..], b"still here");
    let _ = std::fs::remove_dir_all(&dir);
});

//! The index snapshot: a file store's index saved in `index.snap`, so that opening the store
//! reads the snapshot and then only the records written after it, instead of every segment.
//!
//! A snapshot says, for each segment, how many bytes of it (and of its delete file) it covers;
//! opening replays whatever lies past those marks. It is a cache of what the segments say, never
//! the only copy of anything: a snapshot that is missing, damaged, from another incarnation of
//! the stream, or that does not fit the files beside it is ignored, and the segments are read
//! in full.
//!
//! ```text
//! magic "CSNP" | version u8 | 0 0 0 | meta length u64 | entries u64 | CRC-32 of the rest u32
//! meta, in LEB128 varints (signed ones zigzagged):
//!   created, first_seq, last_seq, last_ts
//!   subject slots: count, then each: 0 (a free id) or 1, length, bytes, msgs, first, last
//!   segments: count, then (id, covered length, covered delete-file length, live, live bytes)
//!   message ids in the duplicate window: count, then (seq, ts, length, bytes)
//! entries, 24 bytes each, little endian, every sequence from first_seq on, holes included:
//!   ts i64 | subject id u32 (u32::MAX: a hole) | size u32 | segment u32 | offset u32
//! ```
//!
//! The entries are fixed-size, in the index's own order and ids, so that loading a snapshot of
//! a million messages is a copy, not a parse.

use std::io::Read;

use super::index::{Entry, Index, Parts, SubjectState};

const MAGIC: &[u8; 4] = b"CSNP";
const VERSION: u8 = 2;
const HEADER: usize = 4 + 4 + 8 + 8 + 4;
const ENTRY: usize = 24;
/// Entries are read this many at a time.
const CHUNK: usize = 16 * 1024;

/// The file a snapshot is kept in, inside the store's directory.
pub(crate) const FILE_NAME: &str = "index.snap";

/// Where a message is: segment and byte offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileLoc {
    pub(crate) seg: u32,
    pub(crate) off: u32,
}

/// What a snapshot knew of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentMark {
    pub(crate) id: u32,
    /// Bytes of the segment the snapshot covers.
    pub(crate) len: u64,
    /// Bytes of its delete file the snapshot covers.
    pub(crate) del_len: u64,
    pub(crate) live: u64,
    pub(crate) live_bytes: u64,
}

/// A message id within the duplicate window: sequence, time stored, id.
pub(crate) type MsgId = (u64, i64, String);

/// A decoded snapshot.
pub(crate) struct Loaded {
    pub(crate) created: i64,
    pub(crate) index: Index<FileLoc>,
    pub(crate) segments: Vec<SegmentMark>,
    pub(crate) ids: Vec<MsgId>,
}

/// Encodes a snapshot of `index` and `segments`, with the message ids `ids`.
pub(crate) fn encode(
    created: i64,
    index: &Index<FileLoc>,
    segments: &[SegmentMark],
    ids: &[(u64, i64, &str)],
) -> Vec<u8> {
    let (first_seq, entries, subjects) = index.parts();
    let mut meta = Vec::with_capacity(64 + subjects.len() * 16 + ids.len() * 24);
    put_i(&mut meta, created);
    put(&mut meta, first_seq);
    put(&mut meta, index.last_seq());
    put_i(&mut meta, index.last_ts());
    put(&mut meta, subjects.len() as u64);
    for slot in subjects {
        match slot {
            None => put(&mut meta, 0),
            Some(s) => {
                put(&mut meta, 1);
                put(&mut meta, s.name.len() as u64);
                meta.extend_from_slice(s.name.as_bytes());
                for v in [s.msgs, s.first, s.last] {
                    put(&mut meta, v);
                }
            }
        }
    }
    put(&mut meta, segments.len() as u64);
    for m in segments {
        for v in [u64::from(m.id), m.len, m.del_len, m.live, m.live_bytes] {
            put(&mut meta, v);
        }
    }
    put(&mut meta, ids.len() as u64);
    for &(seq, ts, id) in ids {
        put(&mut meta, seq);
        put_i(&mut meta, ts);
        put(&mut meta, id.len() as u64);
        meta.extend_from_slice(id.as_bytes());
    }

    let mut b = Vec::with_capacity(HEADER + meta.len() + entries.len() * ENTRY);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&[VERSION, 0, 0, 0]);
    b.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    b.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&meta);
    for e in entries {
        b.extend_from_slice(&e.ts.to_le_bytes());
        b.extend_from_slice(&e.subject.to_le_bytes());
        b.extend_from_slice(&e.size.to_le_bytes());
        b.extend_from_slice(&e.loc.seg.to_le_bytes());
        b.extend_from_slice(&e.loc.off.to_le_bytes());
    }
    let crc = crc32fast::hash(&b[HEADER..]);
    b[HEADER - 4..HEADER].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Why a snapshot was not used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SnapshotError {
    /// Not a snapshot, or one this build does not read.
    #[error("not a snapshot of this version")]
    Format,
    /// Its checksum does not match, it is cut short, or what it says does not add up.
    #[error("damaged")]
    Damaged,
    /// It could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads a snapshot of `len` bytes; any inconsistency is an error, never a panic.
pub(crate) fn decode(src: &mut impl Read, len: u64) -> Result<Loaded, SnapshotError> {
    let mut header = [0u8; HEADER];
    read_all(src, &mut header)?;
    if &header[..4] != MAGIC || header[4..8] != [VERSION, 0, 0, 0] {
        return Err(SnapshotError::Format);
    }
    let u64_at = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(a)
    };
    let meta_len = usize::try_from(u64_at(8)).map_err(|_| SnapshotError::Damaged)?;
    let n_entries = usize::try_from(u64_at(16)).map_err(|_| SnapshotError::Damaged)?;
    let want_crc = u32::from_le_bytes([header[24], header[25], header[26], header[27]]);
    // The lengths must add up to the file's before anything is allocated for them.
    let expected = (meta_len as u128) + (n_entries as u128) * ENTRY as u128 + HEADER as u128;
    if expected != u128::from(len) {
        return Err(SnapshotError::Damaged);
    }
    let mut meta = Vec::new();
    src.by_ref().take(meta_len as u64).read_to_end(&mut meta)?;
    if meta.len() != meta_len {
        return Err(SnapshotError::Damaged);
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&meta);

    let mut r = Reader { buf: &meta, at: 0 };
    let created = r.int()?;
    let first_seq = r.uint()?;
    let last_seq = r.uint()?;
    let last_ts = r.int()?;
    let n_slots = r.count()?;
    let mut subjects = Vec::with_capacity(n_slots);
    for _ in 0..n_slots {
        subjects.push(match r.uint()? {
            0 => None,
            1 => {
                let n = r.count()?;
                let name = std::str::from_utf8(r.bytes(n)?).map_err(|_| SnapshotError::Damaged)?;
                let (msgs, first, last) = (r.uint()?, r.uint()?, r.uint()?);
                Some(SubjectState { name: name.into(), msgs, first, last })
            }
            _ => return Err(SnapshotError::Damaged),
        });
    }
    let n_segments = r.count()?;
    let mut segments = Vec::with_capacity(n_segments);
    for _ in 0..n_segments {
        let id = u32::try_from(r.uint()?).map_err(|_| SnapshotError::Damaged)?;
        let (len, del_len, live, live_bytes) = (r.uint()?, r.uint()?, r.uint()?, r.uint()?);
        segments.push(SegmentMark { id, len, del_len, live, live_bytes });
    }
    let n_ids = r.count()?;
    let mut ids = Vec::with_capacity(n_ids);
    for _ in 0..n_ids {
        let (seq, ts) = (r.uint()?, r.int()?);
        let n = r.count()?;
        let id = std::str::from_utf8(r.bytes(n)?).map_err(|_| SnapshotError::Damaged)?;
        ids.push((seq, ts, id.to_string()));
    }
    if r.at != meta.len() {
        return Err(SnapshotError::Damaged);
    }

    let mut entries: Vec<Entry<FileLoc>> = Vec::with_capacity(n_entries);
    advise_huge_pages(&entries);
    let mut chunk = vec![0u8; CHUNK * ENTRY];
    let mut left = n_entries;
    while left > 0 {
        let n = left.min(CHUNK);
        let buf = &mut chunk[..n * ENTRY];
        read_all(src, buf)?;
        crc.update(buf);
        entries.extend(buf.chunks_exact(ENTRY).map(entry_at));
        left -= n;
    }
    let mut extra = [0u8; 1];
    if src.read(&mut extra)? != 0 || crc.finalize() != want_crc {
        return Err(SnapshotError::Damaged);
    }
    let index =
        Index::from_parts(Parts { first_seq, last_seq, last_ts, entries, subjects }).ok_or(SnapshotError::Damaged)?;
    Ok(Loaded { created, index, segments, ids })
}

/// Asks for huge pages under a large index being loaded: filling 24 bytes per message of fresh
/// memory otherwise costs a page fault every 170 entries, a third of a restart's time.
fn advise_huge_pages<T>(v: &Vec<T>) {
    const HUGE: usize = 2 * 1024 * 1024;
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes < 4 * HUGE {
        return;
    }
    let start = (v.as_ptr() as usize).next_multiple_of(HUGE);
    let end = (v.as_ptr() as usize + bytes) & !(HUGE - 1);
    if end > start {
        // SAFETY: the range lies inside the vector's own allocation; the advice changes how the
        // kernel backs it, never its contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

fn entry_at(b: &[u8]) -> Entry<FileLoc> {
    let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&b[..8]);
    Entry {
        ts: i64::from_le_bytes(ts),
        subject: u32_at(8),
        size: u32_at(12),
        loc: FileLoc { seg: u32_at(16), off: u32_at(20) },
    }
}

/// Fills `buf`, or fails with [`SnapshotError::Damaged`] when the file ends first.
fn read_all(src: &mut impl Read, buf: &mut [u8]) -> Result<(), SnapshotError> {
    src.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => SnapshotError::Damaged,
        _ => SnapshotError::Io(e),
    })
}

fn put(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn put_i(b: &mut Vec<u8>, v: i64) {
    put(b, ((v << 1) ^ (v >> 63)) as u64);
}

/// A cursor over a snapshot body.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn uint(&mut self) -> Result<u64, SnapshotError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.at).ok_or(SnapshotError::Damaged)?;
            self.at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(SnapshotError::Damaged)
    }

    fn int(&mut self) -> Result<i64, SnapshotError> {
        let v = self.uint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// A count of things that each take at least a byte: never more than the bytes left.
    fn count(&mut self) -> Result<usize, SnapshotError> {
        let n = usize::try_from(self.uint()?).map_err(|_| SnapshotError::Damaged)?;
        if n > self.buf.len() - self.at {
            return Err(SnapshotError::Damaged);
        }
        Ok(n)
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(SnapshotError::Damaged)?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8]) -> Result<Loaded, SnapshotError> {
        decode(&mut &bytes[..], bytes.len() as u64)
    }

    fn sample() -> Index<FileLoc> {
        let mut ix = Index::new(1);
        for (i, s) in ["a", "b", "a", "c", "a", "b"].iter().enumerate() {
            let seg = 1 + (i as u32 / 3);
            ix.append(s, 1_000 + i as i64, 40 + i as u32, FileLoc { seg, off: (i as u32 % 3) * 64 });
        }
        ix.remove(2);
        ix.remove(6);
        ix.skip();
        ix
    }

    #[test]
    fn round_trips_index_marks_and_ids() {
        let ix = sample();
        let marks = vec![
            SegmentMark { id: 1, len: 192, del_len: 13, live: 2, live_bytes: 80 },
            SegmentMark { id: 2, len: 128, del_len: 0, live: 2, live_bytes: 90 },
        ];
        let ids = [(3u64, 1_002i64, "order-1"), (5, 1_004, "order-2")];
        let bytes = encode(77, &ix, &marks, &ids);
        let got = dec(&bytes).unwrap();
        assert_eq!(got.created, 77);
        assert_eq!(got.segments, marks);
        assert_eq!(got.ids, vec![(3, 1_002, "order-1".to_string()), (5, 1_004, "order-2".to_string())]);
        let (a, b) = (&ix, &got.index);
        assert_eq!((a.first_seq(), a.last_seq(), a.last_ts()), (b.first_seq(), b.last_seq(), b.last_ts()));
        assert_eq!(
            (a.msgs(), a.bytes(), a.num_deleted(), a.num_subjects()),
            (b.msgs(), b.bytes(), b.num_deleted(), b.num_subjects())
        );
        let entries = |ix: &Index<FileLoc>| -> Vec<(u64, String, i64, u32, FileLoc)> {
            ix.iter().map(|(q, e)| (q, ix.subject_name(e.subject).unwrap().to_string(), e.ts, e.size, e.loc)).collect()
        };
        assert_eq!(entries(a), entries(b));
        for s in ["a", "b", "c"] {
            let f = |ix: &Index<FileLoc>| ix.subject(s).map(|x| (x.msgs, x.first, x.last));
            assert_eq!(f(a), f(b), "subject {s}");
        }
    }

    #[test]
    fn an_empty_index_keeps_its_next_sequence() {
        let mut ix: Index<FileLoc> = Index::new(100);
        ix.append("x", 5, 10, FileLoc::default());
        ix.remove(100);
        let got = dec(&encode(1, &ix, &[], &[])).unwrap();
        assert_eq!((got.index.first_seq(), got.index.last_seq(), got.index.msgs()), (101, 100, 0));
        assert_eq!(got.index.last_ts(), 5);
    }

    #[test]
    fn damage_anywhere_is_refused() {
        let bytes = encode(9, &sample(), &[], &[(1, 2, "id")]);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x41;
            assert!(dec(&bad).is_err(), "flipped byte {i}");
        }
        for n in 0..bytes.len() {
            assert!(dec(&bytes[..n]).is_err(), "cut at {n}");
        }
    }

    /// `bytes` with its checksum made right again, so that what follows it is decoded.
    fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
        if bytes.len() >= HEADER {
            let crc = crc32fast::hash(&bytes[HEADER..]);
            bytes[HEADER - 4..HEADER].copy_from_slice(&crc.to_le_bytes());
        }
        bytes
    }

    proptest::proptest! {
        /// A snapshot whose checksum matches but whose contents do not add up (a bug, or a
        /// file edited by hand) is refused or loaded, never a panic or a huge allocation.
        #[test]
        fn a_checksummed_lie_is_never_a_panic(
            edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..8),
            cut in proptest::option::of(proptest::num::usize::ANY),
        ) {
            let mut bytes = encode(9, &sample(), &[SegmentMark { id: 1, len: 192, del_len: 0, live: 2, live_bytes: 80 }], &[(1, 2, "id")]);
            for (at, v) in edits {
                let at = HEADER - 20 + at % (bytes.len() - HEADER + 20);
                if !(HEADER - 4..HEADER).contains(&at) {
                    bytes[at] = v;
                }
            }
            if let Some(cut) = cut {
                bytes.truncate(cut % (bytes.len() + 1));
            }
            if let Ok(got) = dec(&resealed(bytes)) {
                // What loads is an index that holds together.
                let ix = got.index;
                proptest::prop_assert!(ix.msgs() <= ix.last_seq().saturating_sub(ix.first_seq()) + 1);
                for (q, e) in ix.iter() {
                    proptest::prop_assert!(q >= ix.first_seq() && q <= ix.last_seq());
                    proptest::prop_assert!(ix.subject_name(e.subject).is_some());
                }
            }
        }
    }
}

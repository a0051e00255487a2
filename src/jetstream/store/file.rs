//! The file store: a stream's messages in segment files on `std::fs`.
//!
//! A stream's `msgs/` directory holds numbered segments, `00000001.seg`, ... . Messages are
//! appended as checksummed records ([`super::record`]) to the newest segment, which is closed
//! at about 8 MiB. Removing the oldest messages (limits, age, purge) appends one purge marker;
//! removing a message from the middle appends its sequence to the delete file of the segment
//! that holds it (`00000001.del`), so a delete never outlives the record it deletes: both go
//! when the segment goes. A segment is deleted once it is the oldest and holds nothing live; a
//! segment that is mostly removed messages is rewritten with only what is still needed.
//!
//! Writes are buffered while the publisher handles a read and written with one `write(2)` per
//! segment before any of them is acknowledged ([`FileStore::flush`]); they are synced to disk
//! every `sync_interval`, or before every acknowledgement with `sync_interval: always`.
//!
//! Opening a store reads every segment. A record cut short at the end of the newest segment (a
//! write interrupted by a crash) is cut off there; a damaged record anywhere is skipped, up to
//! the next good one, with a warning: damage costs the damaged records and nothing else, and
//! never keeps the store from opening.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tracing::warn;

use super::index::{Entry, Index};
use super::record::{self, DecodeError, Kind};
use super::{ops, Backend, Limits, StoreError, StoreState, StoredMsg};

/// A segment is closed once it passes this size.
pub const SEGMENT_MAX: u64 = 8 * 1024 * 1024;
/// Bytes read at once when loading a record whose length is not known yet.
const READ_AHEAD: usize = 4096;
/// A closed segment is rewritten when less than half of it is live and it is at least this big.
const COMPACT_MIN: u64 = 256 * 1024;
/// One entry of a delete file: kind (1), sequence (8), CRC-32 (4).
const DEL_ENTRY: usize = 13;

/// Where a message's record is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileLoc {
    seg: u32,
    off: u32,
}

/// One segment file.
struct Segment {
    file: Arc<File>,
    /// Its delete file, once opened.
    del: Option<Arc<File>>,
    /// Bytes in the file plus those waiting in the write buffer (for the newest segment).
    len: u64,
    /// Bytes written to the file.
    written: u64,
    /// Live messages in it.
    live: u64,
    /// Bytes of its live message records.
    live_bytes: u64,
    /// Written since the last sync.
    dirty: bool,
}

/// Messages recovered with a `Nats-Msg-Id` recent enough for the dedupe window.
pub type RecoveredIds = Vec<(u64, i64, String)>;

/// A stream's messages in files.
pub struct FileStore {
    dir: PathBuf,
    index: Index<FileLoc>,
    limits: Limits,
    segments: BTreeMap<u32, Segment>,
    /// The newest segment, which takes appends.
    active: u32,
    /// Records for the newest segment not written yet.
    pending: Vec<u8>,
    /// Delete entries not written yet, by segment.
    pending_dels: BTreeMap<u32, Vec<u8>>,
    /// The oldest messages were removed since the last flush: write a purge marker.
    front_moved: bool,
    /// fsync before acknowledging.
    sync_always: bool,
    /// Msg ids found while opening, for the stream's dedupe window.
    recovered_ids: RecoveredIds,
}

fn seg_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.seg"))
}

fn del_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:08}.del"))
}

fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)
}

impl FileStore {
    /// Opens (or creates) the store in `dir`, recovering what its files hold. Message ids of
    /// messages stored at or after `ids_since` are kept for the dedupe window.
    pub fn open(
        dir: &Path,
        limits: Limits,
        first_seq: u64,
        sync_always: bool,
        ids_since: i64,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let mut store = FileStore {
            dir: dir.to_path_buf(),
            index: Index::new(first_seq),
            limits,
            segments: BTreeMap::new(),
            active: 1,
            pending: Vec::new(),
            pending_dels: BTreeMap::new(),
            front_moved: false,
            sync_always,
            recovered_ids: Vec::new(),
        };
        let mut ids: Vec<u32> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                name.strip_suffix(".seg")?.parse::<u32>().ok()
            })
            .collect();
        ids.sort_unstable();
        let last = ids.last().copied();
        for id in ids {
            store.recover_segment(id, Some(id) == last, ids_since)?;
        }
        match last {
            Some(id) => store.active = id,
            None => {
                let file = open_rw(&seg_path(dir, 1))?;
                store.segments.insert(1, Segment::new(file, 0));
            }
        }
        store.drop_dead_segments()?;
        // Limits may have shrunk while the server was down.
        ops::enforce_totals(&mut store)?;
        store.flush()?;
        Ok(store)
    }

    /// Reads one segment into the index.
    fn recover_segment(&mut self, id: u32, newest: bool, ids_since: i64) -> Result<(), StoreError> {
        let path = seg_path(&self.dir, id);
        let bytes = std::fs::read(&path)?;
        let file = open_rw(&path)?;
        let mut seg = Segment::new(file, bytes.len() as u64);
        let mut at = 0usize;
        while at < bytes.len() {
            match record::decode(&bytes[at..]) {
                Ok((r, n)) => {
                    self.apply(id, at, n, &r, &mut seg, ids_since);
                    at += n;
                }
                Err(e) => match record::resync(&bytes, at + 1) {
                    Some(next) => {
                        warn!("{}: damaged record at byte {at} ({e}); skipped {} bytes", path.display(), next - at);
                        at = next;
                    }
                    None if newest => {
                        warn!("{}: {e} at byte {at}; the end of the file is cut off there", path.display());
                        seg.file.set_len(at as u64)?;
                        seg.len = at as u64;
                        seg.written = at as u64;
                        break;
                    }
                    None => {
                        warn!("{}: {e} at byte {at}; the rest of the segment is lost", path.display());
                        break;
                    }
                },
            }
        }
        self.segments.insert(id, seg);
        self.recover_deletes(id)?;
        Ok(())
    }

    fn apply(&mut self, id: u32, at: usize, n: usize, r: &record::Record<'_>, seg: &mut Segment, ids_since: i64) {
        match r.kind {
            Kind::Message => {
                let Ok(subject) = std::str::from_utf8(r.subject) else { return };
                if r.seq <= self.index.last_seq() {
                    return;
                }
                let size = Self::size_of(subject, r.headers, r.data);
                let loc = FileLoc { seg: id, off: at as u32 };
                self.index.push(r.seq, subject, r.ts, size as u32, loc);
                seg.live += 1;
                seg.live_bytes += n as u64;
                if r.ts >= ids_since && !r.headers.is_empty() {
                    if let Some(msg_id) = crate::jetstream::headers::get_str(r.headers, "Nats-Msg-Id") {
                        self.recovered_ids.push((r.seq, r.ts, msg_id.to_string()));
                    }
                }
            }
            Kind::Purge => {
                while let Some(first) = self.index.front().filter(|&f| f < r.seq) {
                    self.forget_recovered(first, id, seg);
                }
                if r.seq > self.index.last_seq() + 1 {
                    self.index.reset_to(r.seq);
                }
            }
            Kind::Skip => self.index.advance_to(r.seq),
            Kind::Delete => self.forget_recovered(r.seq, id, seg),
        }
    }

    /// Removes a recovered message from the index and from its segment's live counts.
    fn forget_recovered(&mut self, seq: u64, current: u32, current_seg: &mut Segment) {
        let Some(e) = self.index.remove(seq) else { return };
        let seg = if e.loc.seg == current { Some(current_seg) } else { self.segments.get_mut(&e.loc.seg) };
        if let Some(seg) = seg {
            seg.live = seg.live.saturating_sub(1);
        }
    }

    /// Applies a segment's delete file.
    fn recover_deletes(&mut self, id: u32) -> Result<(), StoreError> {
        let path = del_path(&self.dir, id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut damaged = 0;
        for entry in bytes.chunks(DEL_ENTRY) {
            let Some(seq) = decode_del(entry) else {
                damaged += 1;
                continue;
            };
            if let Some(e) = self.index.remove(seq) {
                if let Some(seg) = self.segments.get_mut(&e.loc.seg) {
                    seg.live = seg.live.saturating_sub(1);
                }
            }
        }
        if damaged > 0 {
            warn!("{}: {damaged} damaged delete entries ignored", path.display());
        }
        Ok(())
    }

    /// Msg ids recovered when the store was opened (taken once).
    pub fn take_recovered_ids(&mut self) -> RecoveredIds {
        std::mem::take(&mut self.recovered_ids)
    }

    pub(super) fn store(&mut self, subject: &str, headers: &[u8], data: &[u8], ts: i64) -> Result<u64, StoreError> {
        ops::store(self, subject, headers, data, ts)
    }

    pub(super) fn skip(&mut self) -> u64 {
        let seq = self.index.skip();
        record::encode_marker(&mut self.pending, Kind::Skip, seq, crate::format::now_nanos());
        self.grow_active(record::MARKER_LEN as u64);
        seq
    }

    pub(super) fn load(&self, seq: u64) -> Result<StoredMsg, StoreError> {
        ops::load(self, seq)
    }

    pub(super) fn load_last(&self, filter: &str) -> Result<StoredMsg, StoreError> {
        let (seq, e) = ops::entry_of(self, self.index.last_matching(filter))?;
        self.read(seq, e)
    }

    pub(super) fn load_next(&self, filter: &str, start: u64) -> Result<StoredMsg, StoreError> {
        let (seq, e) = ops::entry_of(self, self.index.next_matching(filter, start))?;
        self.read(seq, e)
    }

    pub(super) fn remove(&mut self, seq: u64, erase: bool) -> Result<bool, StoreError> {
        ops::remove(self, seq, erase)
    }

    pub(super) fn purge(&mut self, filter: Option<&str>, seq: u64, keep: u64) -> Result<u64, StoreError> {
        ops::purge(self, filter, seq, keep)
    }

    pub(super) fn expire(&mut self, now: i64) -> u64 {
        ops::expire(self, now)
    }

    pub(super) fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        let _ = ops::enforce_totals(self);
    }

    pub(super) fn state(&self) -> StoreState {
        ops::state(self)
    }

    fn grow_active(&mut self, n: u64) {
        if let Some(seg) = self.segments.get_mut(&self.active) {
            seg.len += n;
        }
    }

    /// Writes the buffered records and deletes, and syncs them when set to sync always.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.front_moved {
            self.front_moved = false;
            let next = self.index.front().unwrap_or(self.index.last_seq() + 1);
            record::encode_marker(&mut self.pending, Kind::Purge, next, crate::format::now_nanos());
            self.grow_active(record::MARKER_LEN as u64);
        }
        if !self.pending.is_empty() {
            let seg = self.segments.get_mut(&self.active).ok_or_else(|| StoreError::Io("no active segment".into()))?;
            seg.file.write_all_at(&self.pending, seg.written)?;
            seg.written += self.pending.len() as u64;
            seg.dirty = true;
            self.pending.clear();
            if self.pending.capacity() > 1 << 20 {
                self.pending = Vec::new();
            }
        }
        let dels = std::mem::take(&mut self.pending_dels);
        for (id, entries) in dels {
            let dir = self.dir.clone();
            let Some(seg) = self.segments.get_mut(&id) else { continue };
            let del = match &seg.del {
                Some(f) => Arc::clone(f),
                None => {
                    let f = Arc::new(OpenOptions::new().create(true).append(true).read(true).open(del_path(&dir, id))?);
                    seg.del = Some(Arc::clone(&f));
                    f
                }
            };
            use std::io::Write as _;
            (&*del).write_all(&entries)?;
            seg.dirty = true;
        }
        if self.sync_always {
            for f in self.files_to_sync() {
                f.sync_data()?;
            }
        }
        Ok(())
    }

    /// The files written since the last call, for the periodic fsync.
    pub fn files_to_sync(&mut self) -> Vec<Arc<File>> {
        let mut out = Vec::new();
        for seg in self.segments.values_mut().filter(|s| s.dirty) {
            seg.dirty = false;
            out.push(Arc::clone(&seg.file));
            if let Some(d) = &seg.del {
                out.push(Arc::clone(d));
            }
        }
        out
    }

    /// Deletes the oldest segments while they hold nothing live.
    fn drop_dead_segments(&mut self) -> Result<(), StoreError> {
        while let Some((&id, seg)) = self.segments.iter().next() {
            if id == self.active || seg.live > 0 {
                break;
            }
            self.segments.remove(&id);
            self.pending_dels.remove(&id);
            remove_if_there(&seg_path(&self.dir, id))?;
            remove_if_there(&del_path(&self.dir, id))?;
        }
        Ok(())
    }

    /// Rewrites one closed segment that is mostly removed messages, keeping its live messages
    /// and its markers.
    pub fn compact_some(&mut self) -> Result<(), StoreError> {
        let candidate = self
            .segments
            .iter()
            .find(|(&id, s)| id != self.active && s.written >= COMPACT_MIN && s.live_bytes * 2 < s.written)
            .map(|(&id, _)| id);
        let Some(id) = candidate else { return Ok(()) };
        self.flush()?;
        let path = seg_path(&self.dir, id);
        let bytes = std::fs::read(&path)?;
        let mut out = Vec::with_capacity(bytes.len() / 2);
        let mut moved: Vec<(u64, u32)> = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let Ok((r, n)) = record::decode(&bytes[at..]) else {
                match record::resync(&bytes, at + 1) {
                    Some(next) => {
                        at = next;
                        continue;
                    }
                    None => break,
                }
            };
            let keep = match r.kind {
                Kind::Message => self.index.get(r.seq).is_some_and(|e| e.loc == FileLoc { seg: id, off: at as u32 }),
                _ => true,
            };
            if keep {
                if r.kind == Kind::Message {
                    moved.push((r.seq, out.len() as u32));
                }
                out.extend_from_slice(&bytes[at..at + n]);
            }
            at += n;
        }
        let tmp = self.dir.join(format!("{id:08}.seg.tmp"));
        std::fs::write(&tmp, &out)?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        remove_if_there(&del_path(&self.dir, id))?;
        let file = open_rw(&path)?;
        let mut seg = Segment::new(file, out.len() as u64);
        seg.live = moved.len() as u64;
        seg.live_bytes = out.len() as u64;
        for (seq, off) in moved {
            self.index.set_loc(seq, FileLoc { seg: id, off });
        }
        self.segments.insert(id, seg);
        Ok(())
    }

    /// Deletes every file of the store (the stream was deleted).
    pub fn delete_files(self) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        drop(self);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts a new segment when the newest is full.
    fn roll_if_full(&mut self, need: u64) -> Result<(), StoreError> {
        let full = self.segments.get(&self.active).is_some_and(|s| s.len > 0 && s.len + need > SEGMENT_MAX);
        if !full {
            return Ok(());
        }
        self.flush()?;
        let id = self.active + 1;
        let file = open_rw(&seg_path(&self.dir, id))?;
        file.set_len(0)?;
        self.segments.insert(id, Segment::new(file, 0));
        self.active = id;
        Ok(())
    }

    /// The bytes of a record: from the write buffer, or read from its file.
    fn record_bytes(&self, loc: FileLoc) -> Result<Vec<u8>, StoreError> {
        let seg = self.segments.get(&loc.seg).ok_or(StoreError::NotFound)?;
        let off = u64::from(loc.off);
        if loc.seg == self.active && off >= seg.written {
            let start = (off - seg.written) as usize;
            let (_, n) = record::decode(self.pending.get(start..).ok_or(StoreError::NotFound)?)
                .map_err(|e| StoreError::Io(e.to_string()))?;
            return Ok(self.pending[start..start + n].to_vec());
        }
        let avail = (seg.written - off) as usize;
        let mut buf = vec![0u8; avail.min(READ_AHEAD)];
        seg.file.read_exact_at(&mut buf, off)?;
        let len = match record::decode(&buf) {
            Ok((_, n)) => n,
            Err(DecodeError::Incomplete) if buf.len() >= 8 => {
                u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize
            }
            Err(e) => return Err(StoreError::Io(format!("damaged record: {e}"))),
        };
        if len > buf.len() {
            if len > avail || len > record::MAX_RECORD {
                return Err(StoreError::Io("damaged record".into()));
            }
            buf = vec![0u8; len];
            seg.file.read_exact_at(&mut buf, off)?;
        }
        buf.truncate(len);
        Ok(buf)
    }

    /// Overwrites a removed message's payload with random bytes, keeping the record whole.
    fn erase(&mut self, loc: FileLoc) -> Result<(), StoreError> {
        let mut rec = self.record_bytes(loc)?;
        let (r, _) = record::decode(&rec).map_err(|e| StoreError::Io(e.to_string()))?;
        let start = record::data_offset(r.subject.len(), r.headers.len());
        let end = rec.len() - 4;
        for b in &mut rec[start..end] {
            *b = rand::random();
        }
        record::reseal(&mut rec);
        let seg = self.segments.get_mut(&loc.seg).ok_or(StoreError::NotFound)?;
        let off = u64::from(loc.off);
        if loc.seg == self.active && off >= seg.written {
            let at = (off - seg.written) as usize;
            self.pending[at..at + rec.len()].copy_from_slice(&rec);
        } else {
            seg.file.write_all_at(&rec, off)?;
            seg.dirty = true;
        }
        Ok(())
    }
}

fn remove_if_there(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn encode_del(out: &mut Vec<u8>, seq: u64) {
    let start = out.len();
    out.push(1);
    out.extend_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

fn decode_del(entry: &[u8]) -> Option<u64> {
    if entry.len() != DEL_ENTRY || entry[0] != 1 {
        return None;
    }
    let crc = u32::from_le_bytes([entry[9], entry[10], entry[11], entry[12]]);
    if crc32fast::hash(&entry[..9]) != crc {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&entry[1..9]);
    Some(u64::from_le_bytes(seq))
}

impl Segment {
    fn new(file: File, len: u64) -> Self {
        Segment { file: Arc::new(file), del: None, len, written: len, live: 0, live_bytes: 0, dirty: false }
    }
}

impl Backend for FileStore {
    type Loc = FileLoc;

    fn index(&self) -> &Index<FileLoc> {
        &self.index
    }

    fn index_mut(&mut self) -> &mut Index<FileLoc> {
        &mut self.index
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn size_of(subject: &str, headers: &[u8], data: &[u8]) -> u64 {
        // As nats-server's file store: its record layout, less nothing.
        if headers.is_empty() {
            (22 + subject.len() + data.len() + 8) as u64
        } else {
            (22 + subject.len() + 4 + headers.len() + data.len() + 8) as u64
        }
    }

    fn write(&mut self, seq: u64, ts: i64, subject: &str, headers: &[u8], data: &[u8]) -> Result<FileLoc, StoreError> {
        let n = record::message_len(subject.as_bytes(), headers, data) as u64;
        self.roll_if_full(n)?;
        let seg = self.segments.get_mut(&self.active).ok_or_else(|| StoreError::Io("no active segment".into()))?;
        let loc = FileLoc { seg: self.active, off: seg.len as u32 };
        record::encode_message(&mut self.pending, seq, ts, subject.as_bytes(), headers, data);
        seg.len += n;
        seg.live += 1;
        seg.live_bytes += n;
        Ok(loc)
    }

    fn read(&self, seq: u64, e: &Entry<FileLoc>) -> Result<StoredMsg, StoreError> {
        let rec = self.record_bytes(e.loc)?;
        let (r, _) = record::decode(&rec).map_err(|e| StoreError::Io(format!("damaged record: {e}")))?;
        if r.seq != seq || r.kind != Kind::Message {
            return Err(StoreError::Io("record does not match the index".into()));
        }
        Ok(StoredMsg {
            subject: String::from_utf8_lossy(r.subject).into_owned(),
            seq,
            ts: r.ts,
            headers: Bytes::copy_from_slice(r.headers),
            data: Bytes::copy_from_slice(r.data),
        })
    }

    fn removed(&mut self, seq: u64, e: &Entry<FileLoc>, erase: bool, front: bool) -> Result<(), StoreError> {
        if erase {
            self.erase(e.loc)?;
        }
        // The accounted size is within 4 bytes of the record's length.
        let n = u64::from(e.size);
        if let Some(seg) = self.segments.get_mut(&e.loc.seg) {
            seg.live = seg.live.saturating_sub(1);
            seg.live_bytes = seg.live_bytes.saturating_sub(n);
        }
        if front {
            self.front_moved = true;
        } else {
            encode_del(self.pending_dels.entry(e.loc.seg).or_default(), seq);
        }
        self.drop_dead_segments()
    }

    fn reset(&mut self, next: u64) -> Result<(), StoreError> {
        record::encode_marker(&mut self.pending, Kind::Purge, next, crate::format::now_nanos());
        self.grow_active(record::MARKER_LEN as u64);
        for seg in self.segments.values_mut() {
            seg.live = 0;
            seg.live_bytes = 0;
        }
        self.drop_dead_segments()
    }
}

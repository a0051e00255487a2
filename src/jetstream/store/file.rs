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
//! The index is saved now and then in an index snapshot ([`super::snapshot`]); opening a store
//! loads it and reads only the records and deletes written after it, or every segment when
//! there is no snapshot that fits the files. A record cut short at the end of the newest segment (a
//! write interrupted by a crash) is cut off there; a damaged record anywhere is skipped, up to
//! the next good one, with a warning: damage costs the damaged records and nothing else, and
//! never keeps the store from opening.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::warn;

use super::index::{Entry, Index, SubjectId, HOLE};
use super::record::{self, DecodeError, Kind};
use super::snapshot::{self, SegmentMark};
use super::{ops, Backend, Limits, StoreError, StoredMsg};

/// A segment is closed once it passes this size.
#[cfg(not(test))]
pub const SEGMENT_MAX: u64 = 8 * 1024 * 1024;
/// A segment is closed once it passes this size (small in unit tests, to have many).
#[cfg(test)]
pub const SEGMENT_MAX: u64 = 512;
/// Bytes read at once when loading a record whose length is not known yet.
const READ_AHEAD: usize = 4096;
/// A closed segment is rewritten when less than half of it is live and it is at least this big.
#[cfg(not(test))]
const COMPACT_MIN: u64 = 256 * 1024;
#[cfg(test)]
const COMPACT_MIN: u64 = 256;
/// One entry of a delete file: kind (1), sequence (8), CRC-32 (4).
const DEL_ENTRY: usize = 13;

pub use super::snapshot::FileLoc;

/// One segment file.
struct Segment {
    file: Arc<File>,
    /// Its delete file, once opened.
    del: Option<Arc<File>>,
    /// Bytes in the file plus those waiting in the write buffer (for the newest segment).
    len: u64,
    /// Bytes written to the file.
    written: u64,
    /// Bytes written to its delete file.
    del_len: u64,
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
    /// When the stream was created: a snapshot from an earlier stream of the same name is not
    /// this one's.
    created: i64,
    /// When to write the next index snapshot.
    snapshot: SnapshotClock,
    /// Opening loaded an index snapshot.
    from_snapshot: bool,
    /// The bytes around the last record read, so that a consumer reading in order reads each
    /// block of a segment once instead of once per message.
    read_cache: Box<parking_lot::Mutex<ReadCache>>,
}

/// A block of one segment's written (never again changed) bytes.
#[derive(Debug, Default)]
struct ReadCache {
    seg: u32,
    start: u64,
    bytes: Vec<u8>,
}

/// How much one read of a segment brings into the read cache.
const READ_BLOCK: usize = 64 * 1024;

/// What decides when an index snapshot is due: often enough that a restart reads little, never
/// so often that writing snapshots costs more than writing the messages.
#[derive(Debug)]
struct SnapshotClock {
    /// When the last one was written (the store opening counts as one).
    at: Instant,
    /// Its size.
    len: u64,
    /// Something changed since.
    changed: bool,
    /// Record bytes written since.
    appended: u64,
    /// `appended` at the previous check, to tell a quiet store from a busy one.
    appended_at_check: u64,
}

/// A snapshot is not written more often than this.
const SNAPSHOT_MIN_INTERVAL: Duration = Duration::from_millis(200);
/// Nor, while messages keep coming, before this much time or as many bytes as it holds.
const SNAPSHOT_BUSY_INTERVAL: Duration = Duration::from_secs(1);
/// A store that keeps changing gets a snapshot at least this often.
const SNAPSHOT_MAX_INTERVAL: Duration = Duration::from_secs(30);

/// What a segment holds past an index snapshot's marks: records from byte `from`, deletes from
/// byte `del_from` of its delete file.
struct Tail {
    seg: u32,
    from: u64,
    del_from: u64,
}

/// An index snapshot ready to be written, off the stream's lock.
pub struct SnapshotJob {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl SnapshotJob {
    /// Writes the snapshot: to a temporary file, renamed over the old one.
    pub fn write(self) -> std::io::Result<()> {
        let tmp = self.path.with_extension("snap.tmp");
        std::fs::write(&tmp, &self.bytes)?;
        std::fs::rename(&tmp, &self.path)
    }
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
    /// Opens (or creates) the store in `dir`, recovering what its files hold: from the index
    /// snapshot and the records written after it when the snapshot fits the files, else from
    /// every segment. Message ids of messages stored at or after `ids_since` are kept for the
    /// dedupe window. `created` is the stream's creation time.
    pub fn open(
        dir: &Path,
        limits: Limits,
        first_seq: u64,
        sync_always: bool,
        ids_since: i64,
        created: i64,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let mut ids: Vec<u32> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                name.strip_suffix(".seg")?.parse::<u32>().ok()
            })
            .collect();
        ids.sort_unstable();
        let mut store = match Self::from_snapshot(dir, limits, sync_always, ids_since, created, &ids)? {
            Some(store) => store,
            None => {
                let mut store = Self::empty(dir, limits, first_seq, sync_always, created);
                let last = ids.last().copied();
                for &id in &ids {
                    store.recover_segment(id, Some(id) == last, ids_since, 0)?;
                    store.recover_deletes(id, 0)?;
                }
                store
            }
        };
        match ids.last() {
            Some(&id) => store.active = id,
            None => {
                let file = open_rw(&seg_path(dir, 1))?;
                store.segments.insert(1, Segment::new(file, 0));
            }
        }
        // A store read in full gets a snapshot soon, so the next opening is quick.
        store.snapshot.changed |= !store.from_snapshot;
        store.drop_dead_segments()?;
        // Limits may have shrunk while the server was down.
        ops::enforce_totals(&mut store)?;
        store.flush()?;
        Ok(store)
    }

    fn empty(dir: &Path, limits: Limits, first_seq: u64, sync_always: bool, created: i64) -> Self {
        FileStore {
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
            created,
            snapshot: SnapshotClock { at: Instant::now(), len: 0, changed: false, appended: 0, appended_at_check: 0 },
            from_snapshot: false,
            read_cache: Box::default(),
        }
    }

    /// Opens from the index snapshot, replaying what was written after it; `None` when there
    /// is no snapshot that fits the files (segment ids `ids`, in order).
    fn from_snapshot(
        dir: &Path,
        limits: Limits,
        sync_always: bool,
        ids_since: i64,
        created: i64,
        ids: &[u32],
    ) -> Result<Option<Self>, StoreError> {
        let path = dir.join(snapshot::FILE_NAME);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        let loaded = match snapshot::decode(&mut file, len) {
            Ok(l) if l.created == created => l,
            Ok(_) => {
                warn!("{}: from another stream of the same name; ignored", path.display());
                return Ok(None);
            }
            Err(e) => {
                warn!("{}: {e}; reading every segment instead", path.display());
                return Ok(None);
            }
        };
        drop(file);
        let Some(tails) = Self::check_marks(dir, &loaded.segments, ids)? else {
            warn!("{}: does not fit the segment files; reading every segment instead", path.display());
            return Ok(None);
        };
        let mut store = Self::empty(dir, limits, 1, sync_always, created);
        store.index = loaded.index;
        store.recovered_ids = loaded.ids.into_iter().filter(|(_, ts, _)| *ts >= ids_since).collect();
        for m in &loaded.segments {
            if !ids.contains(&m.id) {
                continue;
            }
            let path = seg_path(dir, m.id);
            let file = open_rw(&path)?;
            let mut seg = Segment::new(file, m.len);
            seg.live = m.live;
            seg.live_bytes = m.live_bytes;
            seg.del_len = m.del_len;
            store.segments.insert(m.id, seg);
        }
        // Messages in segments removed after the snapshot (the oldest, emptied) are gone.
        while let Some(first) = store.index.front() {
            match store.index.get(first) {
                Some(e) if store.segments.contains_key(&e.loc.seg) => break,
                _ => {
                    store.index.remove(first);
                }
            }
        }
        let last = ids.last().copied();
        for Tail { seg: id, from, del_from } in tails {
            store.recover_segment(id, Some(id) == last, ids_since, from)?;
            store.recover_deletes(id, del_from)?;
        }
        // The newest message the snapshot knows must be where it says: if not, the files are
        // not what the snapshot saw (a crash of the machine can lose unsynced writes).
        if let Some((seq, e)) = store.index.last_live().map(|(q, e)| (q, e.clone())) {
            if store.read(seq, &e).is_err() {
                warn!("{}: does not match the segment files; reading every segment instead", path.display());
                return Ok(None);
            }
        }
        store.snapshot.len = bytes_len(&path);
        store.from_snapshot = true;
        Ok(Some(store))
    }

    /// Checks the snapshot's segment marks against the files; returns what to replay past
    /// them, or `None` when they do not fit.
    fn check_marks(dir: &Path, marks: &[SegmentMark], ids: &[u32]) -> Result<Option<Vec<Tail>>, StoreError> {
        let newest_marked = marks.last().map_or(0, |m| m.id);
        let oldest_present = ids.first().copied().unwrap_or(u32::MAX);
        let mut tails = Vec::new();
        for m in marks {
            if !ids.contains(&m.id) {
                // Only the oldest segments are ever removed.
                if m.id >= oldest_present {
                    return Ok(None);
                }
                continue;
            }
            let seg_len = bytes_len(&seg_path(dir, m.id));
            let del_len = bytes_len(&del_path(dir, m.id));
            if seg_len < m.len || del_len < m.del_len {
                return Ok(None);
            }
            if seg_len > m.len || del_len > m.del_len {
                tails.push(Tail { seg: m.id, from: m.len, del_from: m.del_len });
            }
        }
        for &id in ids {
            if id > newest_marked {
                tails.push(Tail { seg: id, from: 0, del_from: 0 });
            } else if !marks.iter().any(|m| m.id == id) {
                return Ok(None);
            }
        }
        Ok(Some(tails))
    }

    /// Reads one segment into the index, from byte `from` on (what a snapshot did not cover).
    fn recover_segment(&mut self, id: u32, newest: bool, ids_since: i64, from: u64) -> Result<(), StoreError> {
        let path = seg_path(&self.dir, id);
        let (file, bytes) = read_from(&path, from)?;
        let base = from as usize;
        let mut seg = match self.segments.remove(&id) {
            Some(seg) => seg,
            None => Segment::new(file, 0),
        };
        seg.len = (base + bytes.len()) as u64;
        seg.written = seg.len;
        let mut hint = HOLE;
        let mut at = 0usize;
        while at < bytes.len() {
            match record::decode(&bytes[at..]) {
                Ok((r, n)) => {
                    self.apply(id, base + at, n, &r, &mut seg, ids_since, &mut hint);
                    at += n;
                }
                Err(e) => match record::resync(&bytes, at + 1) {
                    Some(next) => {
                        let pos = base + at;
                        warn!("{}: damaged record at byte {pos} ({e}); skipped {} bytes", path.display(), next - at);
                        at = next;
                    }
                    None if newest => {
                        let pos = (base + at) as u64;
                        warn!("{}: {e} at byte {pos}; the end of the file is cut off there", path.display());
                        seg.file.set_len(pos)?;
                        seg.len = pos;
                        seg.written = pos;
                        break;
                    }
                    None => {
                        warn!("{}: {e} at byte {}; the rest of the segment is lost", path.display(), base + at);
                        break;
                    }
                },
            }
        }
        self.segments.insert(id, seg);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        id: u32,
        at: usize,
        n: usize,
        r: &record::Record<'_>,
        seg: &mut Segment,
        ids_since: i64,
        hint: &mut SubjectId,
    ) {
        match r.kind {
            Kind::Message => {
                if r.seq <= self.index.last_seq() {
                    return;
                }
                let Ok(subject) = std::str::from_utf8(r.subject) else { return };
                let size = Self::size_of(subject, r.headers, r.data);
                let loc = FileLoc { seg: id, off: at as u32 };
                self.index.push_hinted(r.seq, subject, r.ts, size as u32, loc, hint);
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

    /// Applies a segment's delete file, from byte `from` on.
    fn recover_deletes(&mut self, id: u32, from: u64) -> Result<(), StoreError> {
        let path = del_path(&self.dir, id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if let Some(seg) = self.segments.get_mut(&id) {
            seg.del_len = bytes.len() as u64;
        }
        let bytes = bytes.get(from as usize..).unwrap_or_default();
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

    pub(super) fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        let _ = ops::enforce_totals(self);
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
            self.snapshot.changed = true;
            self.snapshot.appended += self.pending.len() as u64;
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
            seg.del_len += entries.len() as u64;
            seg.dirty = true;
            self.snapshot.changed = true;
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
        self.drop_read_cache();
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
        // The snapshot knows the old offsets: it goes before they change.
        remove_if_there(&self.dir.join(snapshot::FILE_NAME))?;
        self.snapshot.changed = true;
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

    /// Whether an index snapshot is due: something changed since the last one, and either the
    /// store has gone quiet, or it keeps changing and enough time or bytes have passed.
    pub fn snapshot_due(&mut self) -> bool {
        let c = &mut self.snapshot;
        let quiet = c.appended == c.appended_at_check;
        c.appended_at_check = c.appended;
        if !c.changed {
            return false;
        }
        let age = c.at.elapsed();
        if age < SNAPSHOT_MIN_INTERVAL {
            return false;
        }
        quiet || age >= SNAPSHOT_MAX_INTERVAL || (age >= SNAPSHOT_BUSY_INTERVAL && c.appended >= c.len)
    }

    /// Whether opening the store loaded an index snapshot (rather than reading every segment).
    pub fn opened_from_snapshot(&self) -> bool {
        self.from_snapshot
    }

    /// Whether anything was written since the last index snapshot.
    pub fn changed_since_snapshot(&self) -> bool {
        self.snapshot.changed || !self.pending.is_empty() || !self.pending_dels.is_empty() || self.front_moved
    }

    /// Flushes, then encodes an index snapshot covering everything written, with the message
    /// ids `ids` (the stream's dedupe window).
    pub fn snapshot(&mut self, ids: &[(u64, i64, &str)]) -> Result<SnapshotJob, StoreError> {
        self.flush()?;
        let marks: Vec<SegmentMark> = self
            .segments
            .iter()
            .map(|(&id, s)| SegmentMark {
                id,
                len: s.written,
                del_len: s.del_len,
                live: s.live,
                live_bytes: s.live_bytes,
            })
            .collect();
        let bytes = snapshot::encode(self.created, &self.index, &marks, ids);
        self.snapshot = SnapshotClock {
            at: Instant::now(),
            len: bytes.len() as u64,
            changed: false,
            appended: 0,
            appended_at_check: 0,
        };
        Ok(SnapshotJob { path: self.dir.join(snapshot::FILE_NAME), bytes })
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
        self.drop_read_cache();
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
        if let Some(rec) = self.cached_record(loc.seg, off, avail, &seg.file)? {
            return Ok(rec);
        }
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

    /// The record at `off` of segment `seg` from the read cache, filling the cache from `file`
    /// when the record is not in it; `None` for a record too large for the cache.
    fn cached_record(&self, seg: u32, off: u64, avail: usize, file: &File) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cache = self.read_cache.lock();
        let hit = |c: &ReadCache| -> Option<Vec<u8>> {
            if c.seg != seg || off < c.start {
                return None;
            }
            let at = usize::try_from(off - c.start).ok()?;
            let rest = c.bytes.get(at..)?;
            match record::decode(rest) {
                Ok((_, n)) => Some(rest[..n].to_vec()),
                Err(_) => None,
            }
        };
        if let Some(rec) = hit(&cache) {
            return Ok(Some(rec));
        }
        let n = avail.min(READ_BLOCK);
        cache.bytes.resize(n, 0);
        file.read_exact_at(&mut cache.bytes, off)?;
        cache.seg = seg;
        cache.start = off;
        Ok(hit(&cache))
    }

    /// Forgets the read cache (the segment files are being rewritten).
    fn drop_read_cache(&mut self) {
        let c = self.read_cache.get_mut();
        c.bytes = Vec::new();
        c.seg = 0;
    }

    /// Overwrites a removed message's payload with random bytes, keeping the record whole.
    fn erase(&mut self, loc: FileLoc) -> Result<(), StoreError> {
        self.drop_read_cache();
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

/// Opens a segment for reading and writing and reads it from byte `from` to its end.
fn read_from(path: &Path, from: u64) -> Result<(File, Vec<u8>), StoreError> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = open_rw(path)?;
    let len = file.metadata()?.len();
    let mut bytes = Vec::with_capacity(len.saturating_sub(from) as usize);
    file.seek(SeekFrom::Start(from))?;
    file.read_to_end(&mut bytes)?;
    Ok((file, bytes))
}

/// A file's length; 0 when it is not there.
fn bytes_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
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
        Segment { file: Arc::new(file), del: None, len, written: len, del_len: 0, live: 0, live_bytes: 0, dirty: false }
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

//! Where a stream's messages live: in memory or in files, behind one interface.
//!
//! Both stores keep the same in-memory [`index`] (which sequences are live, their subjects,
//! times and accounted sizes) and apply the stream's limits the same way, as nats-server does:
//! discard-new limits refuse a message before it is stored, discard-old and per-subject limits
//! remove the oldest messages after. They differ only in where the bytes are: the memory store
//! keeps them in the index, the file store ([`file`]) in segment files of checksummed records
//! ([`record`]).

pub mod file;
pub(crate) mod index;
pub mod memory;
pub mod record;
pub(crate) mod snapshot;

use bytes::Bytes;

pub use file::FileStore;
pub use memory::MemoryStore;

/// A message as a store returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMsg {
    /// The subject it was published to.
    pub subject: String,
    /// Its sequence in the stream.
    pub seq: u64,
    /// When it was stored, nanoseconds since the Unix epoch.
    pub ts: i64,
    /// Its header block (empty when it has none).
    pub headers: Bytes,
    /// Its payload.
    pub data: Bytes,
}

/// The limits a store applies, from the stream's configuration (-1 or 0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most messages.
    pub max_msgs: i64,
    /// Most accounted bytes.
    pub max_bytes: i64,
    /// Oldest message age, in nanoseconds (0: none).
    pub max_age: i64,
    /// Most messages per subject.
    pub max_msgs_per_subject: i64,
    /// Refuse new messages at the limits instead of removing old ones.
    pub discard_new: bool,
    /// With discard new, also refuse a message whose subject is at its per-subject limit.
    pub discard_new_per_subject: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_msgs: -1,
            max_bytes: -1,
            max_age: 0,
            max_msgs_per_subject: -1,
            discard_new: false,
            discard_new_per_subject: false,
        }
    }
}

/// Why a store refused or failed; the texts are nats-server's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Discard new and max_msgs reached.
    #[error("maximum messages exceeded")]
    MaxMsgs,
    /// Discard new and max_bytes reached.
    #[error("maximum bytes exceeded")]
    MaxBytes,
    /// Discard new per subject and the subject's limit reached.
    #[error("maximum messages per subject exceeded")]
    MaxMsgsPerSubject,
    /// No such message.
    #[error("no message found")]
    NotFound,
    /// A sequence past the last one.
    #[error("stream store EOF")]
    Eof,
    /// The files could not be read or written.
    #[error("{0}")]
    Io(String),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// A store's counters, as the stream state reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreState {
    /// Messages held.
    pub msgs: u64,
    /// Accounted bytes held.
    pub bytes: u64,
    /// First live sequence.
    pub first_seq: u64,
    /// When the first live message was stored.
    pub first_ts: i64,
    /// Last sequence given out.
    pub last_seq: u64,
    /// When the last message was stored.
    pub last_ts: i64,
    /// Subjects with live messages.
    pub num_subjects: u64,
    /// Sequences removed between the first and the last.
    pub num_deleted: u64,
}

/// Where a stream's messages are.
pub enum Store {
    /// In memory.
    Memory(MemoryStore),
    /// In segment files.
    File(FileStore),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Memory($s) => $e,
            Store::File($s) => $e,
        }
    };
}

/// Whether `subject` matches the stream filter `filter` (`>` and `*` allowed).
pub fn index_matches(filter: &str, subject: &str) -> bool {
    index::matches_filter(filter, subject)
}

impl Store {
    /// Stores a message, applying the limits; returns its sequence.
    pub fn store(&mut self, subject: &str, headers: &[u8], data: &[u8], ts: i64) -> Result<u64, StoreError> {
        each!(self, s => s.store(subject, headers, data, ts))
    }

    /// Gives out the next sequence without storing a message.
    pub fn skip(&mut self) -> u64 {
        each!(self, s => s.skip())
    }

    /// The message with this sequence.
    pub fn load(&self, seq: u64) -> Result<StoredMsg, StoreError> {
        each!(self, s => s.load(seq))
    }

    /// The last message on a subject matching `filter`.
    pub fn load_last(&self, filter: &str) -> Result<StoredMsg, StoreError> {
        each!(self, s => ops::load_last(s, filter))
    }

    /// The first message at or after `start` on a subject matching `filter`.
    pub fn load_next(&self, filter: &str, start: u64) -> Result<StoredMsg, StoreError> {
        each!(self, s => ops::load_next(s, filter, start))
    }

    /// Removes a message (`erase` also overwrites its bytes). Returns false when there was none.
    pub fn remove(&mut self, seq: u64, erase: bool) -> Result<bool, StoreError> {
        each!(self, s => s.remove(seq, erase))
    }

    /// Purges: everything, or the messages matching `filter`; below `seq` when it is past 1;
    /// all but the newest `keep` when `keep` is set. Returns how many went.
    pub fn purge(&mut self, filter: Option<&str>, seq: u64, keep: u64) -> Result<u64, StoreError> {
        each!(self, s => s.purge(filter, seq, keep))
    }

    /// Removes messages older than max_age; returns how many went.
    pub fn expire(&mut self, now: i64) -> u64 {
        each!(self, s => ops::expire(s, now))
    }

    /// New limits (a config update): applied at once.
    pub fn set_limits(&mut self, limits: Limits) {
        each!(self, s => s.set_limits(limits))
    }

    /// Counters.
    pub fn state(&self) -> StoreState {
        each!(self, s => s.state())
    }

    /// The removed sequences between the first and the last.
    pub fn deleted(&self) -> Vec<u64> {
        each!(self, s => s.index().deleted())
    }

    /// Subjects matching `filter` with their message counts.
    pub fn subjects(&self, filter: &str) -> Vec<(String, u64)> {
        each!(self, s => s
            .index()
            .subjects()
            .filter(|st| index::matches_filter(filter, &st.name))
            .map(|st| (st.name.to_string(), st.msgs))
            .collect())
    }

    /// Live messages in `from..=to` on subjects matching one of `filters` (all when none).
    pub fn count_matching<F: AsRef<str>>(&self, filters: &[F], from: u64, to: u64) -> u64 {
        each!(self, s => s.index().count_matching(filters, from, to))
    }

    /// The subject of the live message `seq`.
    pub fn subject_of(&self, seq: u64) -> Option<std::sync::Arc<str>> {
        each!(self, s => s.index().subject_of(seq).cloned())
    }

    /// The first live sequence stored at or after `ts` (ns since the epoch).
    pub fn first_at_or_after(&self, ts: i64) -> Option<u64> {
        each!(self, s => s.index().first_at_or_after(ts))
    }

    /// The last sequence of each subject matching one of `filters`, in order.
    pub fn last_per_subject<F: AsRef<str>>(&self, filters: &[F]) -> Vec<u64> {
        each!(self, s => s.index().last_per_subject(filters))
    }

    /// The first live sequence at or after `start` on a subject matching one of `filters`.
    pub fn next_matching<F: AsRef<str>>(&self, filters: &[F], start: u64) -> Option<u64> {
        each!(self, s => {
            let ix = s.index();
            if filters.is_empty() {
                ix.next_matching(">", start)
            } else {
                filters.iter().filter_map(|f| ix.next_matching(f.as_ref(), start)).min()
            }
        })
    }

    /// The last sequence stored on exactly `subject`.
    pub fn last_seq_for(&self, subject: &str) -> Option<u64> {
        each!(self, s => s.index().subject(subject).map(|st| st.last))
    }

    /// Writes out what was stored since the last call (and syncs it when the store is set to
    /// sync always). Called before anything stored is acknowledged.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::File(f) => f.flush(),
        }
    }

    /// The open files to fsync, for the periodic sync.
    pub fn files_to_sync(&mut self) -> Vec<std::sync::Arc<std::fs::File>> {
        match self {
            Store::Memory(_) => Vec::new(),
            Store::File(f) => f.files_to_sync(),
        }
    }

    /// Housekeeping: rewrites a segment that is mostly removed messages, if there is one.
    pub fn compact_some(&mut self) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::File(f) => f.compact_some(),
        }
    }

    /// An index snapshot to write, when one is due (`force`: whenever anything changed) for a
    /// file store; `ids` are the message ids of the duplicate window, as (seq, ts, id).
    pub fn snapshot(&mut self, force: bool, ids: &[(u64, i64, &str)]) -> Result<Option<file::SnapshotJob>, StoreError> {
        match self {
            Store::Memory(_) => Ok(None),
            Store::File(f) => {
                if !(f.snapshot_due() || (force && f.changed_since_snapshot())) {
                    return Ok(None);
                }
                f.snapshot(ids).map(Some)
            }
        }
    }

    /// Message ids of recent messages found when the store was opened, for rebuilding the
    /// dedupe window after a restart (taken once).
    pub fn take_recovered_ids(&mut self) -> file::RecoveredIds {
        match self {
            Store::Memory(_) => Vec::new(),
            Store::File(f) => f.take_recovered_ids(),
        }
    }

    /// Deletes the store's files, if it has any.
    pub fn delete(self) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::File(f) => f.delete_files(),
        }
    }
}

/// The operations both stores share, on top of their own index and bytes.
pub(crate) trait Backend {
    type Loc: Clone + Default;
    fn index(&self) -> &index::Index<Self::Loc>;
    fn index_mut(&mut self) -> &mut index::Index<Self::Loc>;
    fn limits(&self) -> &Limits;
    /// The accounted size of a message, as nats-server's store of this kind counts it.
    fn size_of(subject: &str, headers: &[u8], data: &[u8]) -> u64;
    /// Keeps a new message's bytes; `seq` is the one it will get.
    fn write(&mut self, seq: u64, ts: i64, subject: &str, headers: &[u8], data: &[u8])
        -> Result<Self::Loc, StoreError>;
    /// Reads a live message's bytes.
    fn read(&self, seq: u64, entry: &index::Entry<Self::Loc>) -> Result<StoredMsg, StoreError>;
    /// Records that `seq` was removed (its entry is given); `front` when it was the oldest.
    fn removed(
        &mut self,
        seq: u64,
        entry: &index::Entry<Self::Loc>,
        erase: bool,
        front: bool,
    ) -> Result<(), StoreError>;
    /// Records that the store was emptied and its next message gets `next`.
    fn reset(&mut self, next: u64) -> Result<(), StoreError>;

    /// The message with this sequence.
    fn load(&self, seq: u64) -> Result<StoredMsg, StoreError>
    where
        Self: Sized,
    {
        ops::load(self, seq)
    }

    /// Removes a message (`erase` also overwrites its bytes).
    fn remove(&mut self, seq: u64, erase: bool) -> Result<bool, StoreError>
    where
        Self: Sized,
    {
        ops::remove(self, seq, erase)
    }

    /// Purges, as [`Store::purge`].
    fn purge(&mut self, filter: Option<&str>, seq: u64, keep: u64) -> Result<u64, StoreError>
    where
        Self: Sized,
    {
        ops::purge(self, filter, seq, keep)
    }

    /// Counters.
    fn state(&self) -> StoreState
    where
        Self: Sized,
    {
        ops::state(self)
    }
}

/// The limits checks and removals both stores apply, in nats-server's order.
pub(crate) mod ops {
    use super::index::Entry;
    use super::*;

    /// Stores a message under the limits.
    pub(crate) fn store<B: Backend>(
        b: &mut B,
        subject: &str,
        headers: &[u8],
        data: &[u8],
        ts: i64,
    ) -> Result<u64, StoreError> {
        let lim = *b.limits();
        let raw = (headers.len() + data.len()) as u64;
        let at_subject_limit = lim.max_msgs_per_subject > 0
            && b.index().subject(subject).is_some_and(|s| s.msgs >= lim.max_msgs_per_subject as u64);
        if lim.discard_new {
            if at_subject_limit && lim.discard_new_per_subject {
                return Err(StoreError::MaxMsgsPerSubject);
            }
            if lim.max_msgs > 0 && b.index().msgs() >= lim.max_msgs as u64 && !at_subject_limit {
                return Err(StoreError::MaxMsgs);
            }
            if lim.max_bytes > 0 && b.index().bytes() + raw >= lim.max_bytes as u64 {
                // At the subject's limit the subject's oldest message is replaced, which is
                // fine when it frees enough.
                let frees_enough = at_subject_limit
                    && b.index()
                        .subject(subject)
                        .and_then(|s| b.index().get(s.first))
                        .is_some_and(|e| u64::from(e.size) >= raw);
                if !frees_enough {
                    return Err(StoreError::MaxBytes);
                }
            }
        }
        let size = B::size_of(subject, headers, data);
        let seq = b.index().last_seq() + 1;
        let loc = b.write(seq, ts, subject, headers, data)?;
        b.index_mut().append(subject, ts, size.min(u64::from(u32::MAX)) as u32, loc);
        if lim.max_msgs_per_subject > 0 {
            while let Some(first) =
                b.index().subject(subject).filter(|s| s.msgs > lim.max_msgs_per_subject as u64).map(|s| s.first)
            {
                remove(b, first, false)?;
            }
        }
        enforce_totals(b)?;
        Ok(seq)
    }

    /// Removes the oldest messages while over max_msgs or max_bytes.
    pub(crate) fn enforce_totals<B: Backend>(b: &mut B) -> Result<(), StoreError> {
        let lim = *b.limits();
        while lim.max_msgs > 0 && b.index().msgs() > lim.max_msgs as u64 {
            let Some(first) = b.index().front() else { break };
            remove(b, first, false)?;
        }
        while lim.max_bytes > 0 && b.index().bytes() > lim.max_bytes as u64 {
            let Some(first) = b.index().front() else { break };
            remove(b, first, false)?;
        }
        Ok(())
    }

    /// Removes one message.
    pub(crate) fn remove<B: Backend>(b: &mut B, seq: u64, erase: bool) -> Result<bool, StoreError> {
        let front = b.index().front() == Some(seq);
        let Some(entry) = b.index_mut().remove(seq) else { return Ok(false) };
        b.removed(seq, &entry, erase, front)?;
        Ok(true)
    }

    /// Removes messages older than max_age.
    pub(crate) fn expire<B: Backend>(b: &mut B, now: i64) -> u64 {
        let max_age = b.limits().max_age;
        if max_age <= 0 {
            return 0;
        }
        let mut n = 0;
        while let Some(first) = b.index().front() {
            let Some(e) = b.index().get(first) else { break };
            if e.ts > now - max_age {
                break;
            }
            if remove(b, first, false).is_err() {
                break;
            }
            n += 1;
        }
        n
    }

    /// nats-server's purge semantics (see [`Store::purge`]).
    pub(crate) fn purge<B: Backend>(b: &mut B, filter: Option<&str>, seq: u64, keep: u64) -> Result<u64, StoreError> {
        let filter = filter.filter(|f| !f.is_empty() && *f != ">");
        let victims: Vec<u64> = match filter {
            None => {
                let last = b.index().last_seq();
                let below = if keep > 0 {
                    if keep >= b.index().msgs() {
                        return Ok(0);
                    }
                    (last + 1).saturating_sub(keep)
                } else if seq > 1 {
                    seq
                } else {
                    last + 1
                };
                let victims: Vec<u64> = b.index().iter().map(|(q, _)| q).take_while(|&q| q < below).collect();
                if below > last + 1 {
                    // Compacting past the end: everything goes and the next message gets `below`.
                    let n = b.index().msgs();
                    b.index_mut().reset_to(below);
                    b.reset(below)?;
                    return Ok(n);
                }
                victims
            }
            Some(f) => {
                let matching = b.index().matching(Some(f));
                if seq > 1 {
                    matching.into_iter().filter(|&q| q < seq).collect()
                } else if keep > 0 {
                    let n = matching.len().saturating_sub(keep as usize);
                    matching.into_iter().take(n).collect()
                } else {
                    matching
                }
            }
        };
        let mut n = 0;
        for q in victims {
            if remove(b, q, false)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Loads a message by sequence.
    /// The last message on a subject matching `filter`.
    pub(crate) fn load_last<B: Backend>(b: &B, filter: &str) -> Result<StoredMsg, StoreError> {
        let (seq, e) = entry_of(b, b.index().last_matching(filter))?;
        b.read(seq, e)
    }

    /// The first message at or after `start` on a subject matching `filter`.
    pub(crate) fn load_next<B: Backend>(b: &B, filter: &str, start: u64) -> Result<StoredMsg, StoreError> {
        let (seq, e) = entry_of(b, b.index().next_matching(filter, start))?;
        b.read(seq, e)
    }

    pub(crate) fn load<B: Backend>(b: &B, seq: u64) -> Result<StoredMsg, StoreError> {
        match b.index().get(seq) {
            Some(e) => b.read(seq, e),
            None if seq > b.index().last_seq() => Err(StoreError::Eof),
            None => Err(StoreError::NotFound),
        }
    }

    pub(crate) fn entry_of<B: Backend>(b: &B, seq: Option<u64>) -> Result<(u64, &Entry<B::Loc>), StoreError> {
        let seq = seq.ok_or(StoreError::NotFound)?;
        b.index().get(seq).map(|e| (seq, e)).ok_or(StoreError::NotFound)
    }

    /// Current counters.
    pub(crate) fn state<B: Backend>(b: &B) -> StoreState {
        let ix = b.index();
        StoreState {
            msgs: ix.msgs(),
            bytes: ix.bytes(),
            first_seq: ix.first_seq(),
            first_ts: ix.first_ts(),
            last_seq: ix.last_seq(),
            last_ts: ix.last_ts(),
            num_subjects: ix.num_subjects() as u64,
            num_deleted: ix.num_deleted(),
        }
    }
}

#[cfg(test)]
mod tests;

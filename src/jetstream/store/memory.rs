//! The memory store: messages kept in the index itself.

use bytes::Bytes;

use super::index::{Entry, Index};
use super::{ops, Backend, Limits, StoreError, StoreState, StoredMsg};

/// A message's bytes, in memory.
#[derive(Debug, Clone, Default)]
pub struct MemMsg {
    headers: Bytes,
    data: Bytes,
}

/// A stream's messages in memory; lost when the server stops.
pub struct MemoryStore {
    index: Index<MemMsg>,
    limits: Limits,
}

impl MemoryStore {
    /// An empty store whose first message gets `first_seq`.
    pub fn new(limits: Limits, first_seq: u64) -> Self {
        MemoryStore { index: Index::new(first_seq), limits }
    }

    pub(super) fn store(&mut self, subject: &str, headers: &[u8], data: &[u8], ts: i64) -> Result<u64, StoreError> {
        ops::store(self, subject, headers, data, ts)
    }

    pub(super) fn skip(&mut self) -> u64 {
        self.index.skip()
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
}

impl Backend for MemoryStore {
    type Loc = MemMsg;

    fn index(&self) -> &Index<MemMsg> {
        &self.index
    }

    fn index_mut(&mut self) -> &mut Index<MemMsg> {
        &mut self.index
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn size_of(subject: &str, headers: &[u8], data: &[u8]) -> u64 {
        (subject.len() + headers.len() + data.len() + 16) as u64
    }

    fn write(
        &mut self,
        _seq: u64,
        _ts: i64,
        _subject: &str,
        headers: &[u8],
        data: &[u8],
    ) -> Result<MemMsg, StoreError> {
        Ok(MemMsg { headers: Bytes::copy_from_slice(headers), data: Bytes::copy_from_slice(data) })
    }

    fn read(&self, seq: u64, e: &Entry<MemMsg>) -> Result<StoredMsg, StoreError> {
        let subject = self.index.subject_name(e.subject).ok_or(StoreError::NotFound)?;
        Ok(StoredMsg {
            subject: subject.to_string(),
            seq,
            ts: e.ts,
            headers: e.loc.headers.clone(),
            data: e.loc.data.clone(),
        })
    }

    fn removed(&mut self, _seq: u64, _e: &Entry<MemMsg>, _erase: bool, _front: bool) -> Result<(), StoreError> {
        Ok(())
    }

    fn reset(&mut self, _next: u64) -> Result<(), StoreError> {
        Ok(())
    }
}

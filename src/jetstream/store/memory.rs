//! The memory store: messages kept in the index itself.

use bytes::Bytes;

use super::index::{Entry, Index};
use super::{ops, Backend, Limits, StoreError, StoredMsg};

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

    pub(super) fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        let _ = ops::enforce_totals(self);
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

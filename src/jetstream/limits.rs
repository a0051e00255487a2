//! One account's JetStream limits (the `jetstream {}` block inside an account) and what its
//! streams use of them, checked as nats-server checks them: a stream's `max_bytes` must fit
//! in what the account has left, the account's stream count and its per-stream consumer count
//! are capped, and a message that would take the account past its storage is refused.

use std::sync::atomic::{AtomicI64, Ordering};

use super::api::errors::ApiError;
use super::api::types::Storage;
pub use crate::options::JetStreamAccountLimits;

/// Bytes streams hold and bytes their `max_bytes` reserve, by storage: the server's in all,
/// or one account's.
#[derive(Debug, Default)]
pub struct Usage {
    memory_used: AtomicI64,
    store_used: AtomicI64,
    memory_reserved: AtomicI64,
    store_reserved: AtomicI64,
}

impl Usage {
    /// Bytes held in this storage.
    pub(crate) fn used(&self, storage: Storage) -> &AtomicI64 {
        if storage == Storage::Memory {
            &self.memory_used
        } else {
            &self.store_used
        }
    }

    /// Bytes reserved in this storage.
    pub(crate) fn reserved(&self, storage: Storage) -> &AtomicI64 {
        if storage == Storage::Memory {
            &self.memory_reserved
        } else {
            &self.store_reserved
        }
    }
}

/// An account's limits and its usage.
#[derive(Debug, Default)]
pub struct AccountTally {
    /// The limits; -1 means none.
    pub limits: JetStreamAccountLimits,
    usage: Usage,
}

impl AccountTally {
    /// A tally under `limits`, with nothing used.
    pub fn new(limits: JetStreamAccountLimits) -> Self {
        AccountTally { limits, usage: Usage::default() }
    }

    fn used(&self, storage: Storage) -> &AtomicI64 {
        self.usage.used(storage)
    }

    fn reserved(&self, storage: Storage) -> &AtomicI64 {
        self.usage.reserved(storage)
    }

    fn max(&self, storage: Storage) -> i64 {
        if storage == Storage::Memory {
            self.limits.max_memory
        } else {
            self.limits.max_store
        }
    }

    pub(crate) fn add_usage(&self, storage: Storage, delta: i64) {
        self.used(storage).fetch_add(delta, Ordering::Relaxed);
    }

    pub(crate) fn add_reserved(&self, storage: Storage, delta: i64) {
        self.reserved(storage).fetch_add(delta, Ordering::Relaxed);
    }

    /// Whether `bytes` more of this storage would take the account past its limit.
    pub(crate) fn would_exceed(&self, storage: Storage, bytes: usize) -> bool {
        let max = self.max(storage);
        max >= 0 && self.used(storage).load(Ordering::Relaxed) + bytes as i64 > max
    }

    /// Whether a stream reserving `bytes` (its `max_bytes`) fits in what the account has left.
    pub(crate) fn fits(&self, storage: Storage, bytes: i64) -> Result<(), ApiError> {
        let max = self.max(storage);
        if max >= 0 && self.reserved(storage).load(Ordering::Relaxed) + bytes > max {
            return Err(if storage == Storage::Memory {
                ApiError::memory_resources_exceeded()
            } else {
                ApiError::storage_resources_exceeded()
            });
        }
        Ok(())
    }

    /// Whether the account may have another stream, having `streams` now.
    pub(crate) fn allows_stream(&self, streams: usize) -> Result<(), ApiError> {
        // As nats-server: 0 means no limit on streams (and on consumers), unlike storage.
        let max = self.limits.max_streams;
        if max > 0 && streams as i64 >= max {
            return Err(ApiError::maximum_streams());
        }
        Ok(())
    }

    /// Whether a stream with `consumers` consumers may have another: the account's
    /// `max_consumers` caps each stream, as in nats-server.
    pub(crate) fn allows_consumer(&self, consumers: usize) -> Result<(), ApiError> {
        let max = self.limits.max_consumers;
        if max > 0 && consumers as i64 >= max {
            return Err(ApiError::new(400, 10026, "maximum consumers limit reached"));
        }
        Ok(())
    }
}

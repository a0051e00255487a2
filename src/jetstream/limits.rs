//! JetStream storage budgets: the server's (`jetstream { max_mem, max_file }`) and each
//! account's (the `jetstream {}` block inside an account, or an account JWT's limits), checked
//! as nats-server checks them. A stream's `max_bytes` must fit in what the server and the
//! account have left, the account's stream count and its per-stream consumer count are capped,
//! and a message that would take the account past its storage is refused. Streams report what
//! they use to their account's [`AccountTally`], which passes it on to the server's budget.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use super::api::errors::ApiError;
use super::api::types::Storage;
pub use crate::options::JetStreamAccountLimits;

/// Bytes streams may hold, hold now, and reserve by their `max_bytes`, by storage; a limit
/// of -1 means none.
#[derive(Debug)]
pub struct Budget {
    max_memory: i64,
    max_store: i64,
    memory_used: AtomicI64,
    store_used: AtomicI64,
    memory_reserved: AtomicI64,
    store_reserved: AtomicI64,
}

impl Budget {
    /// A budget with these limits and nothing used.
    pub fn new(max_memory: i64, max_store: i64) -> Self {
        Budget {
            max_memory,
            max_store,
            memory_used: AtomicI64::new(0),
            store_used: AtomicI64::new(0),
            memory_reserved: AtomicI64::new(0),
            store_reserved: AtomicI64::new(0),
        }
    }

    /// The limit for this storage.
    pub fn max(&self, storage: Storage) -> i64 {
        if storage == Storage::Memory {
            self.max_memory
        } else {
            self.max_store
        }
    }

    /// Bytes held in this storage now.
    pub fn used(&self, storage: Storage) -> i64 {
        self.used_counter(storage).load(Ordering::Relaxed)
    }

    fn used_counter(&self, storage: Storage) -> &AtomicI64 {
        if storage == Storage::Memory {
            &self.memory_used
        } else {
            &self.store_used
        }
    }

    fn reserved_counter(&self, storage: Storage) -> &AtomicI64 {
        if storage == Storage::Memory {
            &self.memory_reserved
        } else {
            &self.store_reserved
        }
    }

    fn add_usage(&self, storage: Storage, delta: i64) {
        self.used_counter(storage).fetch_add(delta, Ordering::Relaxed);
    }

    fn add_reserved(&self, storage: Storage, delta: i64) {
        self.reserved_counter(storage).fetch_add(delta, Ordering::Relaxed);
    }

    /// Whether `extra` more bytes of this storage would go past the limit.
    fn exceeded_by(&self, storage: Storage, extra: i64) -> bool {
        let max = self.max(storage);
        max >= 0 && self.used(storage) + extra > max
    }

    /// Whether a stream reserving `bytes` more fits.
    fn fits(&self, storage: Storage, bytes: i64) -> Result<(), ApiError> {
        let max = self.max(storage);
        if max >= 0 && self.reserved_counter(storage).load(Ordering::Relaxed) + bytes > max {
            return Err(if storage == Storage::Memory {
                ApiError::memory_resources_exceeded()
            } else {
                ApiError::storage_resources_exceeded()
            });
        }
        Ok(())
    }
}

/// An account's limits and usage, tied to the server's budget.
#[derive(Debug)]
pub struct AccountTally {
    /// The limits; -1 means none.
    pub limits: JetStreamAccountLimits,
    own: Budget,
    server: Arc<Budget>,
}

impl AccountTally {
    /// A tally under `limits`, with nothing used, within the `server`'s budget.
    pub fn new(limits: JetStreamAccountLimits, server: Arc<Budget>) -> Self {
        AccountTally { limits, own: Budget::new(limits.max_memory, limits.max_store), server }
    }

    /// Counts `delta` more bytes held, for the account and the server.
    pub(crate) fn add_usage(&self, storage: Storage, delta: i64) {
        self.own.add_usage(storage, delta);
        self.server.add_usage(storage, delta);
    }

    /// Counts `delta` more bytes reserved, for the account and the server.
    pub(crate) fn add_reserved(&self, storage: Storage, delta: i64) {
        self.own.add_reserved(storage, delta);
        self.server.add_reserved(storage, delta);
    }

    /// Why a message of `bytes` may not be stored: the server's storage is used up
    /// (10023), or it would take the account past its limit (10002).
    pub(crate) fn refuses_message(&self, storage: Storage, bytes: usize) -> Option<ApiError> {
        if self.server.exceeded_by(storage, 0) {
            return Some(ApiError::insufficient_resources());
        }
        if self.own.exceeded_by(storage, bytes as i64) {
            return Some(ApiError::new(400, 10002, "resource limits exceeded for account"));
        }
        None
    }

    /// Whether a stream reserving `bytes` (its `max_bytes`) more fits in what the server and
    /// the account have left.
    pub(crate) fn fits(&self, storage: Storage, bytes: i64) -> Result<(), ApiError> {
        self.server.fits(storage, bytes)?;
        self.own.fits(storage, bytes)
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

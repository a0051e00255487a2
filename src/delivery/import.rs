//! Subscriptions that carry messages from one account into another: stream imports, service
//! imports, and the way back for the responses to imported services.
//!
//! A stream import is a subscription in the exporting account on the exported subject; what it
//! matches is delivered again in the importing account, on the import's local subject. A
//! service import is a subscription in the importing account on the local subject; a request
//! it matches is delivered in the exporting account with a reply subject of the server's own
//! (`_R_.<account prefix>.<id>`), remembered in the exporter's [`ResponseRouter`]; the
//! exporter's responder answers to that subject, and the router (itself a subscription on
//! `_R_.<prefix>.>` in the exporter) delivers the answer in the importing account on the
//! requester's own reply subject. Nothing else can travel back: a subject of the importing
//! account is reachable from the exporter only through a reply the router handed out.
//!
//! Accounts are named here rather than held, so that delivery does not depend on accounts;
//! the publisher looks each one up by name.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rustc_hash::FxBuildHasher;

use crate::nuid::DIGITS;
use crate::options::accounts::ResponseType;
use crate::subject::SubjectTransform;

/// How often (in requests registered) expired ways back are swept.
const SWEEP_EVERY: u64 = 1024;

/// What a subscription of an import does with a message it matched.
pub enum Import {
    /// Deliver it in `into`, on the transformed subject, with its reply unchanged.
    Stream {
        /// The importing account.
        into: Box<str>,
        /// Exported subject → local subject.
        transform: SubjectTransform,
    },
    /// Deliver a request in the exporting account, with a reply the router maps back.
    Service {
        /// The exporting account.
        into: Box<str>,
        /// The importing account, where responses go back to.
        from: Box<str>,
        /// Local subject → exported subject; `None` when they are the same.
        transform: Option<SubjectTransform>,
        /// How many responses a request may get.
        response: ResponseType,
        /// How long the way back stays open.
        threshold: Duration,
        /// The exporter's router for the way back.
        responses: std::sync::Arc<ResponseRouter>,
    },
    /// The way back: deliver a response in the requester's account, on its reply subject.
    Responses(std::sync::Arc<ResponseRouter>),
}

/// Where one response goes back to.
#[derive(Debug, Clone)]
pub struct WayBack {
    /// The requester's account.
    pub account: Box<str>,
    /// The requester's reply subject.
    pub reply: Box<[u8]>,
    response: ResponseType,
    expires: Instant,
}

/// The exporting account's open ways back for the requests it was sent through service
/// imports, by the reply subject it handed out.
pub struct ResponseRouter {
    /// `_R_.<prefix>.`, unique per exporting account.
    prefix: Box<[u8]>,
    pending: DashMap<Box<[u8]>, WayBack, FxBuildHasher>,
    next: AtomicU64,
}

fn base62(mut n: u64, len: usize, out: &mut Vec<u8>) {
    for _ in 0..len {
        out.push(DIGITS[(n % 62) as usize]);
        n /= 62;
    }
}

impl ResponseRouter {
    /// A router with a fresh random prefix.
    pub fn new() -> Self {
        let mut prefix = b"_R_.".to_vec();
        base62(rand::random::<u64>(), 6, &mut prefix);
        prefix.push(b'.');
        ResponseRouter {
            prefix: prefix.into(),
            pending: DashMap::with_hasher(FxBuildHasher),
            next: AtomicU64::new(rand::random::<u32>() as u64),
        }
    }

    /// The subject its subscription in the exporting account takes: `_R_.<prefix>.>`.
    pub fn subscription_subject(&self) -> Vec<u8> {
        let mut s = self.prefix.to_vec();
        s.push(b'>');
        s
    }

    /// Opens a way back to `reply` in `account` and returns the reply subject to send the
    /// request with.
    pub fn open(&self, account: &str, reply: &[u8], response: ResponseType, threshold: Duration) -> Box<[u8]> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if n.is_multiple_of(SWEEP_EVERY) {
            self.pending.retain(|_, w| w.expires > now);
        }
        let mut subject = Vec::with_capacity(self.prefix.len() + 11);
        subject.extend_from_slice(&self.prefix);
        // A bijection of the counter: unique, and not guessable from the previous reply.
        base62(n.wrapping_mul(0x9E37_79B9_7F4A_7C15), 11, &mut subject);
        let subject: Box<[u8]> = subject.into();
        let way = WayBack { account: account.into(), reply: reply.into(), response, expires: now + threshold };
        self.pending.insert(subject.clone(), way);
        subject
    }

    /// Closes the way back opened as `subject` (a request nobody received).
    pub fn close(&self, subject: &[u8]) {
        self.pending.remove(subject);
    }

    /// Where a response sent to `subject` goes, if that way back is open; a singleton's closes
    /// with its response.
    pub fn route(&self, subject: &[u8]) -> Option<WayBack> {
        let now = Instant::now();
        // A singleton's way back, or one past its time, closes now.
        if let Some((_, way)) =
            self.pending.remove_if(subject, |_, w| w.expires <= now || w.response == ResponseType::Singleton)
        {
            return (way.expires > now).then_some(way);
        }
        self.pending.get(subject).map(|w| w.clone())
    }

    /// Ways back open now.
    pub fn open_count(&self) -> usize {
        self.pending.len()
    }
}

impl Default for ResponseRouter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn singleton_ways_close_after_one_response() {
        let r = ResponseRouter::new();
        let s = r.open("B", b"_INBOX.1", ResponseType::Singleton, Duration::from_secs(5));
        assert!(s.starts_with(b"_R_."));
        assert!(crate::subject::matches(&r.subscription_subject(), &s));
        let way = r.route(&s).expect("open");
        assert_eq!(&*way.account, "B");
        assert_eq!(&*way.reply, b"_INBOX.1");
        assert!(r.route(&s).is_none());
    }

    #[test]
    fn streamed_ways_stay_open_until_they_expire() {
        let r = ResponseRouter::new();
        let s = r.open("B", b"_INBOX.2", ResponseType::Stream, Duration::from_secs(5));
        assert!(r.route(&s).is_some());
        assert!(r.route(&s).is_some());
        let e = r.open("B", b"_INBOX.3", ResponseType::Stream, Duration::ZERO);
        assert!(r.route(&e).is_none());
        assert_eq!(r.open_count(), 1);
    }
}

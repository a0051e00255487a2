//! What a connection does with each client operation.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::Conn;
use crate::account::Removal;
use crate::connection::CloseReason;
use crate::delivery::{Message, Subscription, Target};
use crate::proto::encode;
use crate::proto::errors;
use crate::proto::{ClientOp, Publish};
use crate::publish::Origin;
use crate::subject;

/// A subject as Go's `%q` prints it, as nats-server's permission errors do.
pub(super) fn quoted(subject: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(subject))
}

pub(super) fn sub_violation(subject: &[u8], queue: Option<&[u8]>) -> String {
    match queue {
        Some(q) => format!("Permissions Violation for Subscription to {} using queue {}", quoted(subject), quoted(q)),
        None => format!("Permissions Violation for Subscription to {}", quoted(subject)),
    }
}

/// What handling an operation left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handled {
    /// Nothing: go on with the next operation.
    Done,
    /// The CONNECT's credentials must be checked off the runtime first.
    Authenticate,
}

impl Conn {
    pub(super) fn handle(&mut self, op: ClientOp<'_>) -> Result<Handled, CloseReason> {
        match op {
            ClientOp::Pub(p) => self.on_pub(&p)?,
            ClientOp::Sub { subject, queue, sid } => self.on_sub(subject, queue, sid),
            ClientOp::Unsub { sid, max } => self.on_unsub(sid, max),
            ClientOp::Ping => self.reply(encode::PONG),
            ClientOp::Pong => {
                self.pings_out = 0;
                if let Some(sent) = self.rtt_ping.take() {
                    self.shared.stats.rtt_nanos.store(sent.elapsed().as_nanos().max(1) as u64, Ordering::Relaxed);
                }
            }
            ClientOp::Connect(json) => return self.on_connect(json),
            ClientOp::Ok | ClientOp::Info => {}
            ClientOp::Err => return Err(CloseReason::ProtocolViolation),
        }
        Ok(Handled::Done)
    }

    /// Queues protocol bytes for this client.
    pub(super) fn reply(&mut self, bytes: &[u8]) {
        let _ = self.shared.outbound.push_bytes(bytes);
        self.publisher.touch(&self.shared);
    }

    pub(super) fn send_err(&mut self, text: &str) {
        let _ = self.shared.outbound.push_with(text.len() + 9, |b| encode::err(b, text));
        self.publisher.touch(&self.shared);
    }

    pub(super) fn ok(&mut self) {
        if self.opts.verbose {
            self.reply(encode::OK);
        }
    }

    fn on_pub(&mut self, p: &Publish<'_>) -> Result<(), CloseReason> {
        if p.has_headers && !self.opts.headers {
            return Err(CloseReason::ProtocolViolation);
        }
        self.in_msgs += 1;
        self.in_bytes += p.payload.len() as u64;
        if self.opts.pedantic && !subject::is_valid_literal(p.subject) {
            // nats-server reports it and still delivers the message.
            self.send_err(errors::INVALID_PUBLISH_SUBJECT);
        }
        if !self.may_publish(p.subject) {
            let text = super::auth::pub_violation(p.subject);
            self.send_err(&text);
            return Ok(());
        }
        self.ok();
        let msg = Message { subject: p.subject, reply: p.reply, header_len: p.header_len, payload: p.payload };
        let origin = Origin::Client { conn: &self.shared, echo: self.opts.echo };
        let delivered = self.publisher.publish(&self.state, &self.account, origin, &msg);
        if !delivered && self.opts.no_responders {
            if let Some(reply) = p.reply {
                self.no_responders(reply);
            }
        }
        Ok(())
    }

    /// Answers a request that reached no one with a 503 status, on the requester's own
    /// subscription for the reply subject.
    fn no_responders(&mut self, reply: &[u8]) {
        let Some(sub) = self.subs.values().find(|s| !s.is_removed() && subject::matches(&s.subject, reply)) else {
            return;
        };
        let status = Message {
            subject: reply,
            reply: None,
            header_len: encode::NO_RESPONDERS_HEADER.len(),
            payload: encode::NO_RESPONDERS_HEADER,
        };
        let _ = self.shared.outbound.push_msg(&status, &sub.sid, true);
        self.publisher.touch(&self.shared);
    }

    fn on_sub(&mut self, subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) {
        // nats-server checks permissions first, then the limit, then the rest.
        if let Some(perms) = &self.perms {
            if !perms.can_subscribe(subject, queue) {
                let text = sub_violation(subject, queue);
                self.send_err(&text);
                return;
            }
        }
        let max_subs = self.limits.max_subscriptions;
        if max_subs > 0 && self.subs.len() >= max_subs {
            self.forget_ended();
            if self.subs.len() >= max_subs {
                self.send_err(errors::MAX_SUBSCRIPTIONS_EXCEEDED);
                return;
            }
        }
        if !subject::is_valid_subscription(subject) || queue.is_some_and(|q| !subject::is_valid_queue(q)) {
            self.send_err(errors::INVALID_SUBJECT);
            return;
        }
        if let Some(existing) = self.subs.get(sid) {
            if !existing.is_removed() {
                // nats-server ignores a SUB that reuses a live sid.
                self.ok();
                return;
            }
            self.subs.remove(sid);
        }
        let deny = self.perms.as_ref().and_then(|p| p.delivery_filter(subject));
        let target = Target::Client(Arc::clone(&self.shared));
        let sub = Arc::new(Subscription::new(target, subject, queue, sid).with_deny_filter(deny));
        self.account.add_subscription(Arc::clone(&sub));
        self.subs.insert(sid.into(), sub);
        self.ok();
    }

    fn on_unsub(&mut self, sid: &[u8], max: Option<u64>) {
        if let Some(sub) = self.subs.get(sid) {
            let remove_now = match max {
                Some(max) => sub.set_max(max),
                None => true,
            };
            if remove_now {
                if let Some(sub) = self.subs.remove(sid) {
                    self.account.remove_subscription(&sub, Removal::Owner);
                }
            }
        }
        self.ok();
    }
}

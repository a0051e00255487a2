//! Subject permissions: what a user may publish and subscribe to, as nats-server configures
//! them (`permissions { publish, subscribe, allow_responses }`, `default_permissions`).
//!
//! Allow and deny lists hold subject filters (wildcards allowed); deny wins. A subscribe entry
//! may name a queue group after the subject (`"orders.* workers"`). As in nats-server, a
//! subscription subject is checked as if it were literal, so `*` and `>` in it are matched by
//! wildcards in the rules; and a wildcard subscription that overlaps a deny rule is allowed
//! but has the denied messages filtered out at delivery.

use std::time::Duration;

use crate::subject::{self, FWC, PWC, SEP};

/// One rule: a subject filter, and for subscribe rules an optional queue group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The subject filter.
    pub subject: String,
    /// The queue group it applies to (subscribe rules only).
    pub queue: Option<String>,
}

impl Rule {
    /// Parses `subject` or `subject queue`.
    pub fn parse(text: &str) -> Rule {
        let mut parts = text.split_whitespace();
        let subject = parts.next().unwrap_or_default().to_string();
        let queue = parts.next().map(str::to_string);
        Rule { subject, queue }
    }
}

/// Allow and deny lists for one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectRules {
    /// When set, only these are allowed.
    pub allow: Option<Vec<Rule>>,
    /// Never allowed, whatever `allow` says.
    pub deny: Vec<Rule>,
}

/// Replies a responder may publish without publish permission: to the reply subject of each
/// request it received, up to `max` times within `expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePermission {
    /// Responses allowed per request.
    pub max: u32,
    /// How long after the request they are allowed; zero means no limit.
    pub expires: Duration,
}

impl Default for ResponsePermission {
    fn default() -> Self {
        ResponsePermission { max: 1, expires: Duration::ZERO }
    }
}

/// A user's permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Publish rules; none means anything.
    pub publish: Option<SubjectRules>,
    /// Subscribe rules; none means anything.
    pub subscribe: Option<SubjectRules>,
    /// Replies allowed to requests received.
    pub allow_responses: Option<ResponsePermission>,
}

/// Whether a subscription subject, taken literally, is matched by a rule's filter.
fn literal_match(filter: &str, subject: &[u8]) -> bool {
    subject::matches(filter.as_bytes(), subject)
}

/// Whether some subject could match both filters (nats-server's subset test for deny rules
/// against a wildcard subscription).
fn overlaps(a: &[u8], b: &[u8]) -> bool {
    let mut x = a.split(|&c| c == SEP);
    let mut y = b.split(|&c| c == SEP);
    loop {
        match (x.next(), y.next()) {
            (Some(t), _) | (_, Some(t)) if t == FWC => return true,
            (Some(s), Some(t)) if s == PWC || t == PWC || s == t => continue,
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl Permissions {
    /// Whether publishing to `subject` is allowed (not counting allowed responses). As in
    /// nats-server, a user with allow_responses and no publish rules may publish nothing else.
    pub fn can_publish(&self, subject: &[u8]) -> bool {
        let Some(rules) = &self.publish else { return self.allow_responses.is_none() };
        let allowed = rules.allow.as_ref().is_none_or(|allow| allow.iter().any(|r| literal_match(&r.subject, subject)));
        allowed && !rules.deny.iter().any(|r| literal_match(&r.subject, subject))
    }

    /// Whether subscribing to `subject` (in `queue`) is allowed, with nats-server's rules.
    pub fn can_subscribe(&self, subject: &[u8], queue: Option<&[u8]>) -> bool {
        let Some(rules) = &self.subscribe else { return true };
        let queue_matches =
            |r: &Rule, q: &[u8]| r.queue.as_deref().is_some_and(|rq| subject::matches(rq.as_bytes(), q));
        let mut allowed = true;
        if let Some(allow) = &rules.allow {
            let hits: Vec<&Rule> = allow.iter().filter(|r| literal_match(&r.subject, subject)).collect();
            allowed = hits.iter().any(|r| r.queue.is_none());
            let queue_hits: Vec<&&Rule> = hits.iter().filter(|r| r.queue.is_some()).collect();
            if let (Some(q), false) = (queue, queue_hits.is_empty()) {
                allowed = queue_hits.iter().any(|r| queue_matches(r, q));
            }
        }
        if allowed {
            let hits: Vec<&Rule> = rules.deny.iter().filter(|r| literal_match(&r.subject, subject)).collect();
            allowed = !hits.iter().any(|r| r.queue.is_none());
            let queue_hits: Vec<&&Rule> = hits.iter().filter(|r| r.queue.is_some()).collect();
            if let (Some(q), false) = (queue, queue_hits.is_empty()) {
                allowed = !queue_hits.iter().any(|r| queue_matches(r, q));
            }
        }
        allowed
    }

    /// For an allowed wildcard subscription: the deny rules whose messages it must not get.
    pub fn delivery_filter(&self, subject: &[u8]) -> Option<Vec<Box<[u8]>>> {
        let rules = self.subscribe.as_ref()?;
        if !subject.split(|&c| c == SEP).any(|t| t == PWC || t == FWC) {
            return None;
        }
        let denied: Vec<Box<[u8]>> = rules
            .deny
            .iter()
            .filter(|r| r.queue.is_none() && overlaps(r.subject.as_bytes(), subject))
            .map(|r| r.subject.as_bytes().into())
            .collect();
        (!denied.is_empty()).then_some(denied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: Option<&[&str]>, deny: &[&str]) -> Option<SubjectRules> {
        Some(SubjectRules {
            allow: allow.map(|a| a.iter().map(|s| Rule::parse(s)).collect()),
            deny: deny.iter().map(|s| Rule::parse(s)).collect(),
        })
    }

    #[test]
    fn publish_allow_and_deny() {
        let p = Permissions { publish: rules(Some(&["orders.>", "status"]), &["orders.secret"]), ..Default::default() };
        assert!(p.can_publish(b"orders.new"));
        assert!(p.can_publish(b"status"));
        assert!(!p.can_publish(b"orders.secret"), "deny wins");
        assert!(!p.can_publish(b"other"));
        let open = Permissions::default();
        assert!(open.can_publish(b"anything"));
        let responder = Permissions { allow_responses: Some(ResponsePermission::default()), ..Default::default() };
        assert!(!responder.can_publish(b"anything"), "responses only");
    }

    #[test]
    fn subscribe_with_queues_and_wildcards() {
        let p = Permissions {
            subscribe: rules(Some(&["telemetry.>", "jobs.* workers"]), &["telemetry.private"]),
            ..Default::default()
        };
        assert!(p.can_subscribe(b"telemetry.a.b", None));
        assert!(p.can_subscribe(b"telemetry.*", None));
        assert!(!p.can_subscribe(b"telemetry.private", None));
        assert!(p.can_subscribe(b"jobs.x", Some(b"workers")));
        assert!(!p.can_subscribe(b"jobs.x", Some(b"others")));
        assert!(!p.can_subscribe(b"jobs.x", None), "only as the named queue");
        assert!(!p.can_subscribe(b">", None));
        assert_eq!(p.delivery_filter(b"telemetry.*"), Some(vec![b"telemetry.private"[..].into()]));
        assert_eq!(p.delivery_filter(b"telemetry.a"), None);
    }

    #[test]
    fn overlap() {
        assert!(overlaps(b"a.b", b"a.*"));
        assert!(overlaps(b"a.>", b"a.b.c"));
        assert!(!overlaps(b"a.b", b"c.*"));
        assert!(!overlaps(b"a.b.c", b"a.*"));
    }
}

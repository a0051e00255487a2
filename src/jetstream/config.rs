//! Stream configurations: nats-server's defaults, its validation on create, and what an update
//! may change, with its error texts.

use super::api::errors::ApiError;
use super::api::types::{Discard, Retention, Storage, StreamConfig};
use super::store::Limits;

/// The default duplicate window: 2 minutes.
pub const DEFAULT_DUPLICATE_WINDOW: i64 = 120_000_000_000;
/// Longest stream name.
const MAX_NAME_LEN: usize = 255;
/// Longest description.
const MAX_DESCRIPTION_LEN: usize = 4 * 1024;
/// The shortest max_age and duplicate window: 100 ms.
const MIN_WINDOW: i64 = 100_000_000;

/// Whether a stream or consumer name is usable: not empty, no white space, `.`, `*` or `>`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains([' ', '\t', '\r', '\n', '\x0c', '.', '*', '>'])
}

fn invalid(text: impl std::fmt::Display) -> ApiError {
    ApiError::invalid_config(text)
}

/// Whether some literal subject matches both filters.
pub fn subjects_collide(a: &str, b: &str) -> bool {
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(p), Some(q)) if p == "*" || q == "*" || p == q => continue,
            _ => return false,
        }
    }
}

/// Whether every subject `filter` matches is also matched by `of`.
fn is_subset(filter: &str, of: &str) -> bool {
    let mut x = filter.split('.');
    let mut y = of.split('.');
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (_, Some(">")) => return true,
            (Some(">"), _) => return false,
            (Some(p), Some("*")) if p != ">" => continue,
            (Some(p), Some(q)) if p == q && p != "*" => continue,
            _ => return false,
        }
    }
}

/// Applies nats-server's defaults and checks a configuration (checkStreamCfg), in its order.
pub fn check(config: &StreamConfig) -> Result<StreamConfig, ApiError> {
    let mut cfg = config.clone();
    if !is_valid_name(&cfg.name) {
        return Err(invalid("stream name is required and can not contain '.', '*', '>'"));
    }
    if cfg.name.len() > MAX_NAME_LEN {
        return Err(invalid(format!("stream name is too long, maximum allowed is {MAX_NAME_LEN}")));
    }
    if cfg.description.len() > MAX_DESCRIPTION_LEN {
        return Err(invalid(format!("stream description is too long, maximum allowed is {MAX_DESCRIPTION_LEN}")));
    }
    if cfg.storage == Storage::Unset {
        cfg.storage = Storage::File;
    }
    if cfg.num_replicas == 0 {
        cfg.num_replicas = 1;
    }
    if cfg.num_replicas > 5 {
        return Err(invalid("maximum replicas is 5"));
    }
    if cfg.num_replicas < 0 {
        return Err(ApiError::replicas_negative());
    }
    for v in [&mut cfg.max_msgs, &mut cfg.max_msgs_per_subject, &mut cfg.max_bytes, &mut cfg.max_consumers] {
        if *v == 0 {
            *v = -1;
        }
    }
    if cfg.max_msg_size == 0 {
        cfg.max_msg_size = -1;
    }
    if cfg.duplicate_window == 0 && cfg.mirror.is_none() {
        cfg.duplicate_window = if cfg.max_age != 0 && cfg.max_age < DEFAULT_DUPLICATE_WINDOW {
            cfg.max_age
        } else {
            DEFAULT_DUPLICATE_WINDOW
        };
    }
    if cfg.max_age > 0 && cfg.max_age < MIN_WINDOW {
        return Err(invalid("max age needs to be >= 100ms"));
    }
    if cfg.duplicate_window < 0 {
        return Err(invalid("duplicates window can not be negative"));
    }
    if cfg.max_age != 0 && cfg.duplicate_window > cfg.max_age {
        return Err(invalid("duplicates window can not be larger then max age"));
    }
    if cfg.duplicate_window > 0 && cfg.duplicate_window < MIN_WINDOW {
        return Err(invalid("duplicates window needs to be >= 100ms"));
    }
    if cfg.deny_purge && cfg.allow_rollup_hdrs {
        return Err(invalid("roll-ups require the purge permission"));
    }
    if cfg.discard_new_per_subject {
        if cfg.discard != Discard::New {
            return Err(invalid("discard new per subject requires discard new policy to be set"));
        }
        if cfg.max_msgs_per_subject <= 0 {
            return Err(invalid("discard new per subject requires max msgs per subject > 0"));
        }
    }
    if cfg.mirror.is_some() || cfg.sources.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(invalid("stream mirrors and sources are not supported by this server"));
    }
    if cfg.republish.is_some() {
        return Err(invalid("stream republish is not supported by this server"));
    }
    if !cfg.template_owner.is_empty() {
        return Err(invalid("stream templates are not supported by this server"));
    }
    if cfg.subjects.is_empty() {
        cfg.subjects.push(cfg.name.clone());
    } else {
        let mut seen = std::collections::HashSet::new();
        for s in &cfg.subjects {
            if !seen.insert(s.as_str()) {
                return Err(invalid("duplicate subjects detected"));
            }
            if is_subset(s, "$JS.API.>") {
                return Err(invalid("subjects overlap with jetstream api"));
            }
            if !crate::subject::is_valid_subscription(s.as_bytes()) {
                return Err(invalid("invalid subject"));
            }
        }
    }
    for (i, a) in cfg.subjects.iter().enumerate() {
        for b in &cfg.subjects[i + 1..] {
            if subjects_collide(a, b) {
                return Err(invalid(format!("subject {a:?} overlaps with {b:?}")));
            }
        }
    }
    Ok(cfg)
}

/// Checks an update against the configuration in force (configUpdateCheck); returns the new
/// configuration with its defaults.
pub fn check_update(old: &StreamConfig, new: &StreamConfig) -> Result<StreamConfig, ApiError> {
    let mut cfg = check(new)?;
    if cfg.name != old.name {
        return Err(invalid("stream configuration name must match original"));
    }
    if cfg.max_consumers != old.max_consumers {
        return Err(invalid("stream configuration update can not change MaxConsumers"));
    }
    if cfg.storage != old.storage {
        return Err(invalid("stream configuration update can not change storage type"));
    }
    if cfg.retention != old.retention {
        return Err(invalid("stream configuration update can not change retention policy"));
    }
    if old.sealed && !cfg.sealed {
        return Err(invalid("stream configuration update can not unseal a sealed stream"));
    }
    if old.deny_delete && !cfg.deny_delete {
        return Err(invalid("stream configuration update can not cancel deny message deletes"));
    }
    if old.deny_purge && !cfg.deny_purge {
        return Err(invalid("stream configuration update can not cancel deny purge"));
    }
    if cfg.sealed {
        cfg.max_age = 0;
        cfg.discard = Discard::New;
        cfg.deny_delete = true;
        cfg.deny_purge = true;
        cfg.allow_rollup_hdrs = false;
    }
    Ok(cfg)
}

/// The limits a store applies under `cfg`.
pub fn limits(cfg: &StreamConfig) -> Limits {
    Limits {
        max_msgs: cfg.max_msgs,
        max_bytes: cfg.max_bytes,
        max_age: cfg.max_age,
        max_msgs_per_subject: cfg.max_msgs_per_subject,
        discard_new: cfg.discard == Discard::New,
        discard_new_per_subject: cfg.discard_new_per_subject,
    }
}

/// Whether messages no consumer wants are dropped rather than stored (interest retention).
pub fn drops_without_interest(cfg: &StreamConfig) -> bool {
    cfg.retention == Retention::Interest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_as_nats_server() {
        let cfg = check(&StreamConfig { name: "S".into(), ..Default::default() }).unwrap();
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(
            json,
            r#"{"name":"S","subjects":["S"],"retention":"limits","max_consumers":-1,"max_msgs":-1,"max_bytes":-1,"max_age":0,"max_msgs_per_subject":-1,"max_msg_size":-1,"discard":"old","storage":"file","num_replicas":1,"duplicate_window":120000000000,"allow_direct":false,"mirror_direct":false,"sealed":false,"deny_delete":false,"deny_purge":false,"allow_rollup_hdrs":false}"#
        );
    }

    #[test]
    fn subject_overlaps() {
        assert!(subjects_collide("a.*", "a.b"));
        assert!(subjects_collide(">", "x.y"));
        assert!(subjects_collide("a.>", "a.b.c"));
        assert!(!subjects_collide("a.b", "a.c"));
        assert!(!subjects_collide("a.*", "a.b.c"));
        assert!(is_subset("$JS.API.foo", "$JS.API.>"));
        assert!(!is_subset(">", "$JS.API.>"), "as nats-server 2.9.10, > is not refused");
        assert!(check(&StreamConfig {
            name: "S".into(),
            subjects: vec!["a.*".into(), "a.b".into()],
            ..Default::default()
        })
        .is_err());
        assert!(check(&StreamConfig { name: "a.b".into(), ..Default::default() }).is_err());
    }
}

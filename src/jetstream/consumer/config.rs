//! A consumer's configuration as nats-server 2.9.10 reads and writes it: the JSON fields, the
//! defaults it fills in, and the checks it makes when a consumer is created or updated.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::jetstream::api::errors::ApiError;
use crate::jetstream::api::types::{Retention, StreamConfig};

/// `deliver_policy`: where a new consumer starts in its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliverPolicy {
    /// From the first message.
    #[default]
    All,
    /// From the last message.
    Last,
    /// Only messages stored after the consumer was created.
    New,
    /// From `opt_start_seq`.
    ByStartSequence,
    /// From the first message at or after `opt_start_time`.
    ByStartTime,
    /// The last message of each subject, then everything new.
    LastPerSubject,
}

/// `ack_policy`: what the consumer expects back for each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckPolicy {
    /// Nothing: a message counts as done once sent.
    #[default]
    None,
    /// An ack of one message acks every message delivered before it.
    All,
    /// Each message is acked on its own.
    Explicit,
}

/// `replay_policy`: how fast stored messages are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplayPolicy {
    /// As fast as the client takes them.
    #[default]
    Instant,
    /// With the gaps they were stored with.
    Original,
}

macro_rules! string_enum {
    ($t:ty, $($v:path => $s:literal),+) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(match self { $($v => $s,)+ })
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                match raw.as_str() {
                    $($s => Ok($v),)+
                    other => Err(serde::de::Error::custom(format!("can not unmarshal {other:?}"))),
                }
            }
        }
    };
}

string_enum!(DeliverPolicy, DeliverPolicy::All => "all", DeliverPolicy::Last => "last", DeliverPolicy::New => "new",
    DeliverPolicy::ByStartSequence => "by_start_sequence", DeliverPolicy::ByStartTime => "by_start_time",
    DeliverPolicy::LastPerSubject => "last_per_subject");
string_enum!(AckPolicy, AckPolicy::None => "none", AckPolicy::All => "all", AckPolicy::Explicit => "explicit");
string_enum!(ReplayPolicy, ReplayPolicy::Instant => "instant", ReplayPolicy::Original => "original");

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}
fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// `ConsumerConfig`, in nats-server 2.9.10's field order (`filter_subjects` and `metadata`,
/// from later versions, are written only when set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ConsumerConfig {
    /// The name of a durable consumer.
    #[serde(rename = "durable_name", skip_serializing_if = "String::is_empty")]
    pub durable: String,
    /// The consumer's name (durable or not).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Free text.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Where it starts.
    pub deliver_policy: DeliverPolicy,
    /// The first sequence, for by_start_sequence.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub opt_start_seq: u64,
    /// The first time, for by_start_time (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opt_start_time: Option<String>,
    /// What it expects back.
    pub ack_policy: AckPolicy,
    /// How long a message may stay unacknowledged before it is sent again, in nanoseconds.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub ack_wait: i64,
    /// Most deliveries of one message (-1: no limit).
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub max_deliver: i64,
    /// Waits before each redelivery, in nanoseconds, instead of ack_wait.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backoff: Vec<i64>,
    /// Only messages on subjects matching this.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub filter_subject: String,
    /// How fast stored messages are sent.
    pub replay_policy: ReplayPolicy,
    /// Most bits per second sent to a push consumer (0: no limit).
    #[serde(rename = "rate_limit_bps", skip_serializing_if = "is_zero_u64")]
    pub rate_limit: u64,
    /// The share of acks sampled into metrics, as "30%" or "30".
    #[serde(rename = "sample_freq", skip_serializing_if = "String::is_empty")]
    pub sample_frequency: String,
    /// Most pull requests waiting at once.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub max_waiting: i64,
    /// Most messages delivered and not yet acknowledged (-1: no limit).
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub max_ack_pending: i64,
    /// Idle heartbeat for push consumers, in nanoseconds.
    #[serde(rename = "idle_heartbeat", skip_serializing_if = "is_zero_i64")]
    pub heartbeat: i64,
    /// Flow control for push consumers.
    #[serde(skip_serializing_if = "is_false")]
    pub flow_control: bool,
    /// Send headers only, with the payload's size in `Nats-Msg-Size`.
    #[serde(skip_serializing_if = "is_false")]
    pub headers_only: bool,
    /// Largest batch of one pull request.
    #[serde(rename = "max_batch", skip_serializing_if = "is_zero_i64")]
    pub max_request_batch: i64,
    /// Longest expiry of one pull request, in nanoseconds.
    #[serde(rename = "max_expires", skip_serializing_if = "is_zero_i64")]
    pub max_request_expires: i64,
    /// Largest max_bytes of one pull request.
    #[serde(rename = "max_bytes", skip_serializing_if = "is_zero_i64")]
    pub max_request_max_bytes: i64,
    /// Where a push consumer sends messages.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub deliver_subject: String,
    /// The queue group a push consumer's subscribers share.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub deliver_group: String,
    /// How long an unused consumer lives, in nanoseconds.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub inactive_threshold: i64,
    /// Copies in a cluster.
    pub num_replicas: i64,
    /// Keep its state in memory even on a file stream.
    #[serde(rename = "mem_storage", skip_serializing_if = "is_false")]
    pub memory_storage: bool,
    /// Only messages on subjects matching one of these (nats-server 2.10).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filter_subjects: Vec<String>,
    /// Free key-value pairs (nats-server 2.10); `dead_letter_subject` names where messages
    /// that exhausted max_deliver or were terminated are published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
}

/// The metadata key naming a consumer's dead-letter subject.
pub const DEAD_LETTER_KEY: &str = "dead_letter_subject";

/// nats-server's defaults.
const DEFAULT_ACK_WAIT: i64 = 30_000_000_000;
const DEFAULT_MAX_ACK_PENDING: i64 = 1000;
const DEFAULT_MAX_WAITING: i64 = 512;
/// An ephemeral consumer nobody uses is deleted after this long, unless it says otherwise.
pub const DEFAULT_INACTIVE_THRESHOLD: i64 = 5_000_000_000;
/// Longest description.
const MAX_DESCRIPTION: usize = 4 * 1024;
/// Longest durable name.
const MAX_NAME: usize = 255;

impl ConsumerConfig {
    /// Whether messages are pulled (no deliver subject).
    pub fn is_pull(&self) -> bool {
        self.deliver_subject.is_empty()
    }

    /// The subjects it takes messages from; empty: all of the stream's.
    pub fn filters(&self) -> Vec<&str> {
        if !self.filter_subject.is_empty() {
            vec![self.filter_subject.as_str()]
        } else {
            self.filter_subjects.iter().map(String::as_str).collect()
        }
    }

    /// Its dead-letter subject, from its metadata.
    pub fn dead_letter_subject(&self) -> Option<&str> {
        self.metadata.as_ref()?.get(DEAD_LETTER_KEY).map(String::as_str).filter(|s| !s.is_empty())
    }
}

/// Fills in nats-server's defaults (`setConsumerConfigDefaults`).
pub fn with_defaults(mut c: ConsumerConfig) -> ConsumerConfig {
    let acks = matches!(c.ack_policy, AckPolicy::Explicit | AckPolicy::All);
    if c.deliver_subject.is_empty() && c.max_waiting == 0 {
        c.max_waiting = DEFAULT_MAX_WAITING;
    }
    if c.ack_wait == 0 && acks {
        c.ack_wait = DEFAULT_ACK_WAIT;
    }
    if c.max_deliver == 0 {
        c.max_deliver = -1;
    }
    if let Some(&first) = c.backoff.first() {
        c.ack_wait = first;
    }
    if acks && c.max_ack_pending == 0 {
        c.max_ack_pending = DEFAULT_MAX_ACK_PENDING;
    }
    if c.durable.is_empty() && c.inactive_threshold <= 0 {
        c.inactive_threshold = DEFAULT_INACTIVE_THRESHOLD;
    }
    c
}

/// nats-server's checks on a consumer configuration (with defaults) for `stream`, in its
/// order (`checkConsumerCfg`).
pub fn check(c: &ConsumerConfig, stream: &StreamConfig) -> Result<(), ApiError> {
    if c.num_replicas > 0 && c.num_replicas > stream.num_replicas {
        return Err(ApiError::new(400, 10126, "consumer config replica count exceeds parent stream"));
    }
    if c.num_replicas < 0 {
        return Err(ApiError::replicas_negative());
    }
    if !c.backoff.is_empty() && c.max_deliver <= c.backoff.len() as i64 {
        return Err(ApiError::new(400, 10116, "max deliver is required to be > length of backoff values"));
    }
    if c.description.len() > MAX_DESCRIPTION {
        return Err(ApiError::new(
            400,
            10107,
            format!("consumer description is too long, maximum allowed is {MAX_DESCRIPTION}"),
        ));
    }
    if !c.deliver_subject.is_empty() {
        if !crate::subject::is_literal(c.deliver_subject.as_bytes()) {
            return Err(ApiError::new(400, 10079, "consumer deliver subject has wildcards"));
        }
        if !crate::subject::is_valid_literal(c.deliver_subject.as_bytes()) {
            return Err(ApiError::new(400, 10112, "invalid push consumer deliver subject"));
        }
        if stream_subjects(stream).iter().any(|s| crate::subject::matches(s.as_bytes(), c.deliver_subject.as_bytes())) {
            return Err(ApiError::new(400, 10081, "consumer deliver subject forms a cycle"));
        }
        if c.max_waiting != 0 {
            return Err(ApiError::new(400, 10080, "consumer in push mode can not set max waiting"));
        }
        if c.max_ack_pending > 0 && c.ack_policy == AckPolicy::None {
            return Err(ApiError::new(400, 10082, "consumer requires ack policy for max ack pending"));
        }
        if c.heartbeat > 0 && c.heartbeat < 100_000_000 {
            return Err(ApiError::new(400, 10083, "consumer idle heartbeat needs to be >= 100ms"));
        }
    } else {
        if c.ack_policy == AckPolicy::None && stream.retention == Retention::WorkQueue {
            return Err(ApiError::new(400, 10084, "consumer in pull mode requires ack policy"));
        }
        if c.rate_limit > 0 {
            return Err(ApiError::new(400, 10086, "consumer in pull mode can not have rate limit set"));
        }
        if c.max_waiting < 0 {
            return Err(ApiError::new(400, 10087, "consumer max waiting needs to be positive"));
        }
        if c.heartbeat > 0 {
            return Err(ApiError::new(400, 10088, "consumer idle heartbeat requires a push based consumer"));
        }
        if c.flow_control {
            return Err(ApiError::new(400, 10089, "consumer flow control requires a push based consumer"));
        }
        if c.max_request_batch < 0 {
            return Err(ApiError::new(400, 10114, "consumer max request batch needs to be > 0"));
        }
        if c.max_request_expires != 0 && c.max_request_expires < 1_000_000 {
            return Err(ApiError::new(400, 10115, "consumer max request expires needs to be >= 1ms"));
        }
    }
    // As nats-server 2.10, only filter_subject is held to the stream's subjects.
    let not_subset =
        || ApiError::new(400, 10093, "consumer filter subject is not a valid subset of the interest subjects");
    if !c.filter_subject.is_empty() && !valid_filter(&c.filter_subject, &stream_subjects(stream)) {
        return Err(not_subset());
    }
    if c.filter_subjects.iter().any(|f| !crate::subject::is_valid_subscription(f.as_bytes())) {
        return Err(not_subset());
    }
    let bad_start = |dp: &str, start: &str| {
        Err(ApiError::consumer_invalid_policy(format!(
            "consumer delivery policy is deliver {dp}, but optional start {start} is also set"
        )))
    };
    let not_set = |dp: &str, what: &str| {
        Err(ApiError::consumer_invalid_policy(format!(
            "consumer delivery policy is deliver {dp}, but optional {what} is not set"
        )))
    };
    let (seq, time) = (c.opt_start_seq > 0, c.opt_start_time.is_some());
    match c.deliver_policy {
        DeliverPolicy::All | DeliverPolicy::Last | DeliverPolicy::New | DeliverPolicy::LastPerSubject => {
            let dp = match c.deliver_policy {
                DeliverPolicy::All => "all",
                DeliverPolicy::Last => "last",
                DeliverPolicy::New => "new",
                _ => "last per subject",
            };
            if seq {
                return bad_start(dp, "sequence");
            }
            if time {
                return bad_start(dp, "time");
            }
            if c.deliver_policy == DeliverPolicy::LastPerSubject && c.filters().is_empty() {
                return not_set(dp, "filter subject");
            }
        }
        DeliverPolicy::ByStartSequence => {
            if !seq {
                return not_set("by start sequence", "start sequence");
            }
            if time {
                return bad_start("by start sequence", "time");
            }
        }
        DeliverPolicy::ByStartTime => {
            if !time {
                return not_set("by start time", "start time");
            }
            if seq {
                return bad_start("by start time", "start sequence");
            }
        }
    }
    if let Some(t) = &c.opt_start_time {
        if crate::format::parse_rfc3339_nanos(t).is_none() {
            return Err(ApiError::invalid_json());
        }
    }
    if !c.sample_frequency.is_empty() {
        let s = c.sample_frequency.trim_end_matches('%');
        if let Err(e) = s.parse::<i64>().and_then(|v| if v < 0 { "-".parse::<i64>() } else { Ok(v) }) {
            return Err(ApiError::new(
                400,
                10095,
                format!("failed to parse consumer sampling configuration: {}", go_atoi_error(s, &e)),
            ));
        }
    }
    if c.flow_control && c.heartbeat == 0 {
        return Err(ApiError::new(400, 10108, "consumer with flow control also needs heartbeats"));
    }
    if !c.durable.is_empty() && !c.name.is_empty() && c.name != c.durable {
        return Err(ApiError::new(400, 10132, "Consumer Durable and Name have to be equal if both are provided"));
    }
    if !c.filter_subject.is_empty() && !c.filter_subjects.is_empty() {
        return Err(ApiError::consumer_create("consumer cannot have both FilterSubject and FilterSubjects specified"));
    }
    let name = if c.durable.is_empty() { &c.name } else { &c.durable };
    if name.len() > MAX_NAME {
        return Err(ApiError::new(400, 10102, format!("consumer name is too long, maximum allowed is {MAX_NAME}")));
    }
    if !name.is_empty() && !crate::jetstream::config::is_valid_name(name) {
        return Err(ApiError::new(400, 10103, "durable name can not contain '.', '*', '>'"));
    }
    Ok(())
}

/// Go's `strconv.Atoi` error text, as nats-server puts it in the sampling error.
fn go_atoi_error(s: &str, _e: &std::num::ParseIntError) -> String {
    format!("strconv.Atoi: parsing {s:?}: invalid syntax")
}

/// Whether `filter` is a valid subject that some subject of the stream can match.
fn valid_filter(filter: &str, subjects: &[&str]) -> bool {
    crate::subject::is_valid_subscription(filter.as_bytes())
        && subjects.iter().any(|s| crate::jetstream::config::subjects_collide(filter, s))
}

/// The subjects a stream captures (its name when it names none).
pub fn stream_subjects(stream: &StreamConfig) -> Vec<&str> {
    if stream.subjects.is_empty() {
        vec![stream.name.as_str()]
    } else {
        stream.subjects.iter().map(String::as_str).collect()
    }
}

/// What an update may change, as nats-server allows it (`checkNewConsumerConfig`); `deliver_bound`
/// says whether the old deliver subject has subscribers.
pub fn check_update(old: &ConsumerConfig, new: &ConsumerConfig, deliver_bound: bool) -> Result<(), ApiError> {
    if old == new {
        return Ok(());
    }
    let fixed = |what: &str| Err(ApiError::consumer_create(format!("{what} can not be updated")));
    if old.deliver_policy != new.deliver_policy {
        return fixed("deliver policy");
    }
    if old.opt_start_seq != new.opt_start_seq {
        return fixed("start sequence");
    }
    if old.opt_start_time != new.opt_start_time {
        return fixed("start time");
    }
    if old.ack_policy != new.ack_policy {
        return fixed("ack policy");
    }
    if old.replay_policy != new.replay_policy {
        return fixed("replay policy");
    }
    if old.heartbeat != new.heartbeat {
        return fixed("heart beats");
    }
    if old.flow_control != new.flow_control {
        return fixed("flow control");
    }
    if old.max_waiting != new.max_waiting {
        return fixed("max waiting");
    }
    if old.deliver_subject != new.deliver_subject {
        if old.deliver_subject.is_empty() {
            return Err(ApiError::consumer_create("can not update pull consumer to push based"));
        }
        if new.deliver_subject.is_empty() {
            return Err(ApiError::consumer_create("can not update push consumer to pull based"));
        }
        if deliver_bound {
            return Err(ApiError::new(400, 10013, "consumer name already in use"));
        }
    }
    if !new.backoff.is_empty() && new.max_deliver <= new.backoff.len() as i64 {
        return Err(ApiError::new(400, 10116, "max deliver is required to be > length of backoff values"));
    }
    Ok(())
}

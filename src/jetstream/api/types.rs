//! The JSON of the JetStream API, field for field and in nats-server 2.9.10's order: stream
//! configuration, stream info and state, and the request and response bodies.
//!
//! Durations are integers of nanoseconds and times RFC 3339 strings with nanoseconds, as Go
//! writes them; enumerations are the same strings nats-server reads and writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::errors::ApiError;

/// `retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retention {
    /// Keep messages until a limit removes them.
    #[default]
    Limits,
    /// Keep messages while a consumer is interested in them.
    Interest,
    /// Keep each message until one consumer acknowledges it.
    WorkQueue,
}

/// `discard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Discard {
    /// At a limit, remove the oldest messages.
    #[default]
    Old,
    /// At a limit, refuse new messages.
    New,
}

/// `storage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Storage {
    /// Not given; defaults to file.
    #[default]
    Unset,
    /// Segment files.
    File,
    /// Memory.
    Memory,
}

macro_rules! string_enum {
    ($t:ty, $($v:path => $s:literal),+ ; $lower:expr, $unset:expr) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(match self { $($v => $s,)+ #[allow(unreachable_patterns)] _ => $unset })
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                let text = if $lower { raw.to_ascii_lowercase() } else { raw };
                match text.as_str() {
                    $($s => Ok($v),)+
                    other => Err(serde::de::Error::custom(format!("can not unmarshal {other:?}"))),
                }
            }
        }
    };
}

string_enum!(Retention, Retention::Limits => "limits", Retention::Interest => "interest", Retention::WorkQueue => "workqueue"; false, "limits");
string_enum!(Discard, Discard::Old => "old", Discard::New => "new"; true, "old");
string_enum!(Storage, Storage::File => "file", Storage::Memory => "memory"; false, "file");

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

/// `StreamConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct StreamConfig {
    /// The stream's name.
    pub name: String,
    /// Free text.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Subjects it captures; the name when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
    /// When messages are removed.
    pub retention: Retention,
    /// Most consumers (-1: no limit).
    pub max_consumers: i64,
    /// Most messages (-1: no limit).
    pub max_msgs: i64,
    /// Most bytes (-1: no limit).
    pub max_bytes: i64,
    /// Oldest message, in nanoseconds (0: no limit).
    pub max_age: i64,
    /// Most messages per subject (-1: no limit).
    pub max_msgs_per_subject: i64,
    /// Largest message (-1: no limit).
    #[serde(skip_serializing_if = "is_zero_i32")]
    pub max_msg_size: i32,
    /// What happens at a limit.
    pub discard: Discard,
    /// Where messages are kept.
    pub storage: Storage,
    /// Copies in a cluster; 1 on a single server.
    pub num_replicas: i64,
    /// No acknowledgement of publishes.
    #[serde(skip_serializing_if = "is_false")]
    pub no_ack: bool,
    /// Stream templates (not supported; accepted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub template_owner: String,
    /// How long a `Nats-Msg-Id` is remembered, in nanoseconds.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub duplicate_window: i64,
    /// Cluster placement (accepted, meaningless on one server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<serde_json::Value>,
    /// A stream this one mirrors (not supported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<serde_json::Value>,
    /// Streams this one sources from (not supported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<serde_json::Value>>,
    /// Republishing of stored messages (not supported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub republish: Option<serde_json::Value>,
    /// Direct get allowed (`$JS.API.DIRECT.GET`).
    pub allow_direct: bool,
    /// Direct get of a mirror.
    pub mirror_direct: bool,
    /// Discard new applies per subject too.
    #[serde(skip_serializing_if = "is_false")]
    pub discard_new_per_subject: bool,
    /// No messages in or out, no deletes, no purges.
    pub sealed: bool,
    /// Messages may not be deleted.
    pub deny_delete: bool,
    /// The stream may not be purged.
    pub deny_purge: bool,
    /// `Nats-Rollup` headers allowed.
    pub allow_rollup_hdrs: bool,
    /// The first sequence (nats-server 2.10).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub first_seq: u64,
    /// Free key-value pairs (nats-server 2.10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `StreamState`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamState {
    /// Messages held.
    pub messages: u64,
    /// Accounted bytes held.
    pub bytes: u64,
    /// First live sequence.
    pub first_seq: u64,
    /// Its time.
    pub first_ts: String,
    /// Last sequence.
    pub last_seq: u64,
    /// Its time.
    pub last_ts: String,
    /// Subjects with messages.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub num_subjects: u64,
    /// Message counts by subject, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subjects: Option<BTreeMap<String, u64>>,
    /// Removed sequences between first and last.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub num_deleted: u64,
    /// Those sequences, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Vec<u64>>,
    /// Consumers.
    pub consumer_count: u64,
}

/// `StreamInfo`.
#[derive(Debug, Clone, Serialize)]
pub struct StreamInfo {
    /// The configuration in force.
    pub config: StreamConfig,
    /// When the stream was created.
    pub created: String,
    /// Its state.
    pub state: StreamState,
}

/// The paging fields of list responses.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Paged {
    /// Items there are.
    pub total: usize,
    /// Where this page starts.
    pub offset: usize,
    /// The most on a page.
    pub limit: usize,
}

/// A response: its type, its error if any, then its body.
#[derive(Debug, Serialize)]
pub struct Response<T: Serialize> {
    /// `io.nats.jetstream.api.v1.*_response`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The error, when the request failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
    /// The rest.
    #[serde(flatten)]
    pub body: T,
}

/// No body.
#[derive(Debug, Serialize)]
pub struct Nothing {}

/// STREAM.CREATE / UPDATE success body.
#[derive(Debug, Serialize)]
pub struct StreamInfoBody {
    /// The stream.
    #[serde(flatten)]
    pub info: StreamInfo,
    /// Set on create.
    #[serde(skip_serializing_if = "is_false")]
    pub did_create: bool,
}

/// STREAM.INFO body: paging, then the info.
#[derive(Debug, Serialize)]
pub struct StreamInfoPaged {
    /// Paging of the subjects.
    #[serde(flatten)]
    pub paged: Paged,
    /// The stream, when found.
    #[serde(flatten)]
    pub info: Option<StreamInfo>,
}

/// `{"success":true}` bodies.
#[derive(Debug, Serialize)]
pub struct Success {
    /// Whether it worked.
    #[serde(skip_serializing_if = "is_false")]
    pub success: bool,
}

/// STREAM.PURGE body.
#[derive(Debug, Serialize)]
pub struct PurgeBody {
    /// Whether it worked.
    #[serde(skip_serializing_if = "is_false")]
    pub success: bool,
    /// Messages removed.
    pub purged: u64,
}

/// STREAM.NAMES body.
#[derive(Debug, Serialize)]
pub struct NamesBody {
    /// Paging.
    #[serde(flatten)]
    pub paged: Paged,
    /// The names (`null` when there are none, as nats-server).
    pub streams: Option<Vec<String>>,
}

/// STREAM.LIST body.
#[derive(Debug, Serialize)]
pub struct ListBody {
    /// Paging.
    #[serde(flatten)]
    pub paged: Paged,
    /// The streams.
    pub streams: Vec<StreamInfo>,
}

/// A stored message in a MSG.GET response.
#[derive(Debug, Serialize)]
pub struct StoredMsgJson {
    /// Its subject.
    pub subject: String,
    /// Its sequence.
    pub seq: u64,
    /// Its headers, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hdrs: Option<String>,
    /// Its payload, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// When it was stored.
    pub time: String,
}

/// STREAM.MSG.GET body.
#[derive(Debug, Serialize)]
pub struct MsgGetBody {
    /// The message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<StoredMsgJson>,
}

/// Account limits in `$JS.API.INFO`.
#[derive(Debug, Clone, Serialize)]
pub struct AccountLimits {
    /// Memory bytes.
    pub max_memory: i64,
    /// File bytes.
    pub max_storage: i64,
    /// Streams.
    pub max_streams: i64,
    /// Consumers.
    pub max_consumers: i64,
    /// Unacknowledged messages per consumer.
    pub max_ack_pending: i64,
    /// Bytes of one memory stream.
    pub memory_max_stream_bytes: i64,
    /// Bytes of one file stream.
    pub storage_max_stream_bytes: i64,
    /// Streams must set max_bytes.
    pub max_bytes_required: bool,
}

/// API call counters.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ApiStats {
    /// Calls.
    pub total: u64,
    /// Calls that failed.
    pub errors: u64,
}

/// `$JS.API.INFO` body.
#[derive(Debug, Serialize)]
pub struct AccountInfoBody {
    /// Memory bytes used.
    pub memory: u64,
    /// File bytes used.
    pub storage: u64,
    /// Memory bytes reserved (nats-server 2.10; clients of that version expect it).
    pub reserved_memory: u64,
    /// File bytes reserved (likewise).
    pub reserved_storage: u64,
    /// Streams.
    pub streams: usize,
    /// Consumers.
    pub consumers: usize,
    /// Limits.
    pub limits: AccountLimits,
    /// API counters.
    pub api: ApiStats,
}

/// STREAM.INFO request.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StreamInfoRequest {
    /// Page of subjects.
    pub offset: usize,
    /// List deleted sequences.
    pub deleted_details: bool,
    /// List subjects matching this.
    pub subjects_filter: String,
}

/// NAMES / LIST request.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListRequest {
    /// Where the page starts.
    pub offset: usize,
    /// Only streams whose subjects collide with this.
    pub subject: String,
}

/// STREAM.PURGE request.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PurgeRequest {
    /// Purge below this sequence.
    pub seq: u64,
    /// Only messages matching this.
    pub filter: String,
    /// Keep this many newest.
    pub keep: u64,
}

/// MSG.GET and DIRECT.GET request.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MsgGetRequest {
    /// By sequence (or the start for next_by_subj).
    pub seq: u64,
    /// The last on a subject.
    pub last_by_subj: String,
    /// The next on a subject.
    pub next_by_subj: String,
}

/// MSG.DELETE request.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MsgDeleteRequest {
    /// Which message.
    pub seq: u64,
    /// Remove without overwriting.
    pub no_erase: bool,
}

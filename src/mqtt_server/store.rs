//! An account's MQTT state, kept in its streams where nats-server keeps it, so that JetStream
//! tooling sees it and it survives restarts:
//! - `$MQTT_sess`: one message per persistent session (`$MQTT.sess.<client id hash>`), its
//!   subscriptions and the durable consumers behind the QoS 1 ones;
//! - `$MQTT_msgs`: QoS 1 publishes on `$MQTT.msgs.<subject>`, with interest retention, so a
//!   message stays exactly as long as some session's consumer still has to deliver it;
//! - `$MQTT_rmsgs`: retained messages, one per subject (`$MQTT.rmsgs.<subject>`, one message per
//!   subject kept), so a retained message replaces the last one by construction and the
//!   stream never holds more than one per topic (nats-server 2.9.10 keeps them all on one
//!   subject and deletes the old ones itself, which can leave duplicates behind).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::jetstream::api::errors::ApiError;
use crate::jetstream::consumer::config::{AckPolicy, ConsumerConfig, DeliverPolicy};
use crate::jetstream::consumer::{Action, Consumer};
use crate::jetstream::stream::Stream;
use crate::jetstream::JsAccount;

/// The sessions stream.
pub(crate) const SESSIONS: &str = "$MQTT_sess";
/// The QoS 1 messages stream.
pub(crate) const MESSAGES: &str = "$MQTT_msgs";
/// The retained messages stream.
pub(crate) const RETAINED: &str = "$MQTT_rmsgs";
const SESSION_PREFIX: &str = "$MQTT.sess.";
const RETAINED_PREFIX: &str = "$MQTT.rmsgs.";

/// What a persistent session keeps across connections: its subscriptions (topic filter →
/// granted QoS) and the durable consumer of each QoS 1 subscription's subjects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PersistedSession {
    /// The server that wrote it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) origin: String,
    /// The client id.
    #[serde(default)]
    pub(crate) id: String,
    /// Topic filter → granted QoS.
    #[serde(default)]
    pub(crate) subs: BTreeMap<String, u8>,
    /// NATS subject of a QoS 1 subscription → its durable consumer on `$MQTT_msgs`.
    #[serde(default)]
    pub(crate) cons: BTreeMap<String, String>,
}

/// A retained message, as a new subscription receives it.
pub(crate) struct Retained {
    /// Its NATS subject.
    pub(crate) subject: String,
    /// The QoS it was published with.
    pub(crate) qos: u8,
    /// Its payload.
    pub(crate) body: bytes::Bytes,
}

/// One account's MQTT streams.
pub(crate) struct AccountStore {
    js: Arc<JsAccount>,
    sessions: Arc<Stream>,
    messages: Arc<Stream>,
    retained: Arc<Stream>,
    /// Subjects with a retained message, so that a new subscription finds its retained
    /// messages without reading the stream.
    retained_subjects: Mutex<BTreeMap<String, u8>>,
}

impl AccountStore {
    /// Opens the account's MQTT streams, creating the missing ones (as nats-server does on
    /// the first connection in an account).
    pub(crate) fn open(js: Arc<JsAccount>) -> Result<AccountStore, ApiError> {
        if [SESSIONS, MESSAGES, RETAINED].iter().any(|n| js.stream(n).is_none()) {
            tracing::info!("Creating MQTT streams/consumers with replicas 1 for account {:?}", js.name());
        }
        let sessions = stream(&js, SESSIONS, "$MQTT.sess.>", "limits", 1)?;
        let messages = stream(&js, MESSAGES, "$MQTT.msgs.>", "interest", -1)?;
        let retained = stream(&js, RETAINED, "$MQTT.rmsgs.>", "limits", 1)?;
        let mut subjects = BTreeMap::new();
        let found = retained
            .read_store(|s| {
                s.last_per_subject(&[">"])
                    .into_iter()
                    .filter_map(|seq| s.load(seq).ok())
                    .map(|m| (m.subject, crate::mqtt::deliver::published_qos(&m.headers)))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for (subject, qos) in found {
            if let Some(s) = subject.strip_prefix(RETAINED_PREFIX) {
                subjects.insert(s.to_string(), qos);
            }
        }
        Ok(AccountStore { js, sessions, messages, retained, retained_subjects: Mutex::new(subjects) })
    }

    /// The persistent session of `client_id`, if one was saved.
    pub(crate) fn load_session(&self, client_id: &str) -> Option<PersistedSession> {
        let subject = session_subject(client_id);
        let msg = self.sessions.read_store(|s| s.load_last(&subject).ok()).flatten()?;
        match serde_json::from_slice::<PersistedSession>(&msg.data) {
            Ok(s) if s.id == client_id => Some(s),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!("MQTT session record of {client_id:?} is unreadable ({e}); starting a new session");
                None
            }
        }
    }

    /// Saves a persistent session, replacing the last record.
    pub(crate) fn save_session(&self, session: &PersistedSession) -> Result<(), ApiError> {
        let body = serde_json::to_vec(session).unwrap_or_default();
        self.sessions.append(&session_subject(&session.id), &[], &body).map(|_| ())
    }

    /// Deletes a session's record and its consumers.
    pub(crate) fn delete_session(&self, client_id: &str) {
        if let Some(old) = self.load_session(client_id) {
            for name in old.cons.values() {
                self.delete_consumer(name);
            }
        }
        self.sessions.purge_subject(&session_subject(client_id));
    }

    /// Keeps a device's QoS 1 publish for the sessions subscribed to it; `stored` is the
    /// caller's buffer for the stream subject, reused between messages.
    pub(crate) fn store_message(
        &self,
        subject: &str,
        headers: &[u8],
        body: &[u8],
        stored: &mut String,
    ) -> Result<u64, ApiError> {
        stored.clear();
        stored.push_str("$MQTT.msgs.");
        stored.push_str(subject);
        self.messages.append(stored, headers, body)
    }

    /// The durable consumer `name`, if it still exists.
    pub(crate) fn consumer(&self, name: &str) -> Option<Arc<Consumer>> {
        self.messages.consumer(name)
    }

    /// Creates the durable consumer of a QoS 1 subscription to `subject`, delivering new
    /// messages to `deliver`; a clean session's is kept in memory only, since it ends with its
    /// connection.
    pub(crate) fn create_consumer(
        &self,
        name: &str,
        subject: &str,
        deliver: &str,
        ack_wait: Duration,
        max_ack_pending: u16,
        in_memory: bool,
    ) -> Result<Arc<Consumer>, ApiError> {
        let cfg = ConsumerConfig {
            durable: name.to_string(),
            deliver_subject: deliver.to_string(),
            deliver_policy: DeliverPolicy::New,
            ack_policy: AckPolicy::Explicit,
            ack_wait: i64::try_from(ack_wait.as_nanos()).unwrap_or(i64::MAX),
            max_ack_pending: i64::from(max_ack_pending),
            filter_subject: format!("$MQTT.msgs.{subject}"),
            memory_storage: in_memory,
            ..ConsumerConfig::default()
        };
        self.js.add_consumer(&self.messages, cfg, Action::CreateOrUpdate)
    }

    /// Deletes a durable consumer (a subscription ended, or its session did).
    pub(crate) fn delete_consumer(&self, name: &str) {
        self.js.delete_consumer(&self.messages, name);
    }

    /// Keeps `body` as the retained message of `subject`, replacing the last one.
    pub(crate) fn set_retained(&self, subject: &str, qos: u8, body: &[u8]) -> Result<(), ApiError> {
        let subject = subject.to_string();
        let headers = format!("NATS/1.0\r\nNmqtt-Pub:{qos}\r\n\r\n");
        self.retained.append(&format!("{RETAINED_PREFIX}{subject}"), headers.as_bytes(), body)?;
        self.retained_subjects.lock().insert(subject, qos);
        Ok(())
    }

    /// Clears the retained message of `subject`.
    pub(crate) fn clear_retained(&self, subject: &str) {
        if self.retained_subjects.lock().remove(subject).is_some() {
            self.retained.purge_subject(&format!("{RETAINED_PREFIX}{subject}"));
        }
    }

    /// The retained messages a subscription to `filter` (a NATS subject) receives.
    pub(crate) fn retained_matching(&self, filter: &str) -> Vec<Retained> {
        let subjects: Vec<String> = self
            .retained_subjects
            .lock()
            .keys()
            .filter(|s| crate::subject::matches(filter.as_bytes(), s.as_bytes()))
            .cloned()
            .collect();
        if subjects.is_empty() {
            return Vec::new();
        }
        self.retained
            .read_store(|store| {
                subjects
                    .iter()
                    .filter_map(|s| store.load_last(&format!("{RETAINED_PREFIX}{s}")).ok())
                    .map(|m| Retained {
                        qos: crate::mqtt::deliver::published_qos(&m.headers),
                        subject: m.subject[RETAINED_PREFIX.len()..].to_string(),
                        body: m.data,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The subject of a session's record: nats-server's hash of the client id.
fn session_subject(client_id: &str) -> String {
    format!("{SESSION_PREFIX}{}", client_id_hash(client_id))
}

/// nats-server's short hash of a name: the first 8 bytes of its SHA-256, each as one of 62
/// digits.
pub(crate) fn client_id_hash(client_id: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(client_id.as_bytes());
    let digits = crate::nuid::DIGITS;
    digest[..8].iter().map(|b| char::from(digits[usize::from(*b) % digits.len()])).collect()
}

/// The stream `name`, created with nats-server's configuration of it when missing.
fn stream(
    js: &JsAccount,
    name: &str,
    subjects: &str,
    retention: &str,
    max_msgs_per_subject: i64,
) -> Result<Arc<Stream>, ApiError> {
    if let Some(s) = js.stream(name) {
        return Ok(s);
    }
    let cfg = serde_json::json!({
        "name": name,
        "subjects": [subjects],
        "retention": retention,
        "storage": "file",
        "max_msgs_per_subject": max_msgs_per_subject,
        "num_replicas": 1,
    });
    let cfg = serde_json::from_value(cfg).map_err(|e| ApiError::new(500, 10025, e.to_string()))?;
    js.create_stream(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_subject_is_nats_servers_hash_of_the_client_id() {
        // As nats-server's getHash("dev1") computes it.
        assert_eq!(client_id_hash("dev1"), "LDWVWtTn");
        assert_eq!(session_subject("dev1"), "$MQTT.sess.LDWVWtTn");
    }

    #[test]
    fn a_session_round_trips_through_json() {
        let mut s = PersistedSession { origin: "n1".into(), id: "dev1".into(), ..Default::default() };
        s.subs.insert("a/+".into(), 1);
        s.cons.insert("a.*".into(), "abc_123".into());
        let json = serde_json::to_vec(&s).unwrap();
        assert_eq!(serde_json::from_slice::<PersistedSession>(&json).unwrap(), s);
    }
}

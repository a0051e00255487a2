//! JetStream's monitoring: `/jsz` and the JetStream section of `/varz`, as nats-server 2.9.10
//! writes them, and the per-stream figures for `/metrics` and the live page.

use std::collections::HashMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::format::rfc3339;
use crate::jetstream::api::types::{StreamConfig, StreamState};
use crate::jetstream::JetStream;
use crate::state::StateView;

#[derive(Serialize)]
pub(crate) struct JsConfig {
    max_memory: i64,
    max_storage: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    store_dir: String,
}

#[derive(Serialize, Clone, Copy)]
pub(crate) struct ApiCounts {
    total: u64,
    errors: u64,
}

#[derive(Serialize)]
pub(crate) struct JsStats {
    memory: u64,
    storage: u64,
    reserved_memory: u64,
    reserved_storage: u64,
    accounts: usize,
    ha_assets: usize,
    api: ApiCounts,
}

/// The JetStream section of `/varz`.
#[derive(Serialize)]
pub(crate) struct JsVarz {
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<JsConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<JsStats>,
}

#[derive(Serialize)]
struct Leader {
    leader: String,
}

#[derive(Serialize)]
struct StreamDetail {
    name: String,
    created: String,
    cluster: Leader,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<StreamConfig>,
    state: StreamState,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    consumer_detail: Vec<ConsumerDetail>,
}

/// A consumer in `/jsz?consumers=true`: its info, and (beyond nats-server) how many messages
/// it gave up on and dead-lettered.
#[derive(Serialize)]
struct ConsumerDetail {
    #[serde(flatten)]
    info: crate::jetstream::consumer::ConsumerInfo,
    dead_letters: u64,
}

#[derive(Serialize)]
struct AccountDetail {
    name: String,
    id: String,
    #[serde(flatten)]
    stats: JsStats,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stream_detail: Vec<StreamDetail>,
}

/// `/jsz`.
#[derive(Serialize)]
pub(crate) struct Jsz {
    server_id: String,
    now: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<JsConfig>,
    #[serde(flatten)]
    stats: Option<JsStats>,
    streams: usize,
    consumers: usize,
    messages: u64,
    bytes: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    account_details: Vec<AccountDetail>,
}

fn config(js: &JetStream) -> JsConfig {
    let (max_memory, max_storage, _, _) = js.totals();
    JsConfig { max_memory, max_storage, store_dir: js.store_dir().display().to_string() }
}

fn stats(js: &JetStream) -> JsStats {
    let (_, _, memory, storage) = js.totals();
    let (mut total, mut errors) = (0, 0);
    for acc in js.accounts() {
        let (t, e) = acc.api_counts();
        total += t;
        errors += e;
    }
    JsStats {
        memory: memory.max(0) as u64,
        storage: storage.max(0) as u64,
        reserved_memory: 0,
        reserved_storage: 0,
        accounts: js.accounts().len(),
        ha_assets: 0,
        api: ApiCounts { total, errors },
    }
}

/// The `/varz` section.
pub(crate) fn varz(js: Option<&JetStream>) -> JsVarz {
    match js {
        Some(js) => JsVarz { config: Some(config(js)), stats: Some(stats(js)) },
        None => JsVarz { config: None, stats: None },
    }
}

/// `/jsz` options.
#[derive(Debug, Default)]
pub(crate) struct JszQuery {
    accounts: bool,
    streams: bool,
    consumers: bool,
    config: bool,
    account: Option<String>,
}

impl JszQuery {
    pub(crate) fn parse(params: &HashMap<String, String>) -> JszQuery {
        let flag = |k: &str| params.get(k).is_some_and(|v| matches!(v.as_str(), "1" | "true"));
        JszQuery {
            accounts: flag("accounts"),
            streams: flag("streams") || flag("consumers"),
            consumers: flag("consumers"),
            config: flag("config"),
            account: params.get("acc").or_else(|| params.get("account")).cloned(),
        }
    }
}

/// `/jsz`.
pub(crate) fn jsz(state: &StateView, js: Option<&JetStream>, q: &JszQuery) -> Jsz {
    let info = state.info();
    let now = rfc3339(SystemTime::now());
    let Some(js) = js else {
        let zero = JsStats {
            memory: 0,
            storage: 0,
            reserved_memory: 0,
            reserved_storage: 0,
            accounts: 0,
            ha_assets: 0,
            api: ApiCounts { total: 0, errors: 0 },
        };
        return Jsz {
            server_id: info.server_id,
            now,
            disabled: true,
            config: Some(JsConfig { max_memory: 0, max_storage: 0, store_dir: String::new() }),
            stats: Some(zero),
            streams: 0,
            consumers: 0,
            messages: 0,
            bytes: 0,
            account_details: Vec::new(),
        };
    };
    let (mut streams, mut consumers) = (0, 0);
    let (mut messages, mut bytes) = (0, 0);
    let mut details = Vec::new();
    for acc in js.accounts() {
        let mut stream_detail = Vec::new();
        for s in acc.streams() {
            let Some((i, _)) = s.info(false, None) else { continue };
            streams += 1;
            consumers += s.consumer_count();
            messages += i.state.messages;
            bytes += i.state.bytes;
            if q.streams {
                stream_detail.push(StreamDetail {
                    name: s.name().to_string(),
                    created: i.created,
                    cluster: Leader { leader: info.server_id.clone() },
                    config: q.config.then_some(i.config),
                    state: i.state,
                    consumer_detail: if q.consumers {
                        s.consumers()
                            .iter()
                            .map(|c| ConsumerDetail { info: c.info(), dead_letters: c.dead_letters() })
                            .collect()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
        let wanted = q.accounts || q.account.as_deref() == Some(acc.name());
        if wanted {
            let (memory, storage) = acc.usage();
            let (total, errors) = acc.api_counts();
            details.push(AccountDetail {
                name: acc.name().to_string(),
                id: acc.name().to_string(),
                // nats-server 2.9.10 reports -1 (no limit) here as an unsigned number.
                stats: JsStats {
                    memory,
                    storage,
                    reserved_memory: u64::MAX,
                    reserved_storage: u64::MAX,
                    accounts: 0,
                    ha_assets: 0,
                    api: ApiCounts { total, errors },
                },
                stream_detail,
            });
        }
    }
    Jsz {
        server_id: info.server_id,
        now,
        disabled: false,
        config: Some(config(js)),
        stats: Some(stats(js)),
        streams,
        consumers,
        messages,
        bytes,
        account_details: details,
    }
}

/// One stream's figures for `/metrics`.
pub(crate) struct StreamFigures {
    pub(crate) account: String,
    pub(crate) stream: String,
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
    pub(crate) first_seq: u64,
    pub(crate) last_seq: u64,
}

/// Every stream's figures.
pub(crate) fn stream_figures(js: Option<&JetStream>) -> Vec<StreamFigures> {
    let Some(js) = js else { return Vec::new() };
    let mut out = Vec::new();
    for acc in js.accounts() {
        for s in acc.streams() {
            if let Some((i, _)) = s.info(false, None) {
                let st = i.state;
                out.push(StreamFigures {
                    account: acc.name().to_string(),
                    stream: s.name().to_string(),
                    messages: st.messages,
                    bytes: st.bytes,
                    first_seq: st.first_seq,
                    last_seq: st.last_seq,
                });
            }
        }
    }
    out
}

/// One consumer's figures for `/metrics`.
pub(crate) struct ConsumerFigures {
    pub(crate) account: String,
    pub(crate) stream: String,
    pub(crate) consumer: String,
    pub(crate) pending: u64,
    pub(crate) ack_pending: u64,
    pub(crate) redelivered: u64,
    pub(crate) waiting: u64,
    pub(crate) dead_letters: u64,
}

/// Every consumer's figures.
pub(crate) fn consumer_figures(js: Option<&JetStream>) -> Vec<ConsumerFigures> {
    let Some(js) = js else { return Vec::new() };
    let mut out = Vec::new();
    for acc in js.accounts() {
        for s in acc.streams() {
            for c in s.consumers() {
                let i = c.info();
                out.push(ConsumerFigures {
                    account: acc.name().to_string(),
                    stream: s.name().to_string(),
                    consumer: c.name().to_string(),
                    pending: i.num_pending,
                    ack_pending: i.num_ack_pending as u64,
                    redelivered: i.num_redelivered as u64,
                    waiting: i.num_waiting as u64,
                    dead_letters: c.dead_letters(),
                });
            }
        }
    }
    out
}

//! The `$JS.API` request handlers for an account: account info and the stream API, answered as
//! nats-server 2.9.10 answers them (response types, field order, error codes, which requests
//! get no answer at all).

mod consumer;
pub mod errors;
pub mod types;

use std::sync::Arc;

use base64::Engine as _;
use serde::Serialize;

use self::errors::ApiError;
use self::types::*;
use super::stream::Stream;
use super::JsAccount;
use crate::delivery::Message;
use crate::format::rfc3339_nanos;

/// Most names in a STREAM.NAMES page.
pub(crate) const NAMES_LIMIT: usize = 1024;
/// Most streams in a STREAM.LIST page.
pub(crate) const LIST_LIMIT: usize = 256;
/// Most subjects in STREAM.INFO's subject details.
const MAX_SUBJECT_DETAILS: usize = 100_000;

const T_ACCOUNT_INFO: &str = "io.nats.jetstream.api.v1.account_info_response";
const T_CREATE: &str = "io.nats.jetstream.api.v1.stream_create_response";
const T_UPDATE: &str = "io.nats.jetstream.api.v1.stream_update_response";
const T_INFO: &str = "io.nats.jetstream.api.v1.stream_info_response";
const T_DELETE: &str = "io.nats.jetstream.api.v1.stream_delete_response";
const T_PURGE: &str = "io.nats.jetstream.api.v1.stream_purge_response";
const T_NAMES: &str = "io.nats.jetstream.api.v1.stream_names_response";
const T_LIST: &str = "io.nats.jetstream.api.v1.stream_list_response";
const T_MSG_GET: &str = "io.nats.jetstream.api.v1.stream_msg_get_response";
const T_MSG_DELETE: &str = "io.nats.jetstream.api.v1.stream_msg_delete_response";

/// An answer to send: its bytes, and whether it counts as an API error.
pub(crate) struct Answer {
    pub(crate) body: Vec<u8>,
    pub(crate) error: bool,
    /// Counted in the account's API statistics (nats-server leaves some out).
    pub(crate) counted: bool,
}

fn answer<T: Serialize>(kind: &'static str, error: Option<ApiError>, body: T) -> Answer {
    let is_error = error.is_some();
    let body = go_json(&Response { kind, error, body });
    Answer { body, error: is_error, counted: true }
}

/// JSON as Go's encoder writes it: `<`, `>` and `&` escaped (they can only be inside strings).
pub(crate) fn go_json<T: Serialize>(value: &T) -> Vec<u8> {
    let raw = serde_json::to_vec(value).unwrap_or_default();
    if !raw.iter().any(|b| matches!(b, b'<' | b'>' | b'&')) {
        return raw;
    }
    let mut out = Vec::with_capacity(raw.len() + 16);
    for b in raw {
        match b {
            b'<' => out.extend_from_slice(b"\\u003c"),
            b'>' => out.extend_from_slice(b"\\u003e"),
            b'&' => out.extend_from_slice(b"\\u0026"),
            _ => out.push(b),
        }
    }
    out
}

fn fail<T: Serialize>(kind: &'static str, err: ApiError, body: T) -> Answer {
    answer(kind, Some(err), body)
}

/// nats-server's test for an empty request: no bytes, or a JSON object with no keys.
fn is_empty_request(body: &[u8]) -> bool {
    let text = std::str::from_utf8(body).unwrap_or("x").trim();
    if text.is_empty() {
        return true;
    }
    matches!(serde_json::from_str::<serde_json::Value>(text), Ok(serde_json::Value::Object(m)) if m.is_empty())
}

/// Drops `null` members of objects: Go's decoder leaves a field alone for `null`.
fn strip_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Decodes a request as nats-server's Go decoder would (nulls ignored, unknown fields too).
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut v: serde_json::Value = serde_json::from_slice(body).map_err(|_| ApiError::invalid_json())?;
    if v.is_null() {
        // `null` decodes into Go's zero value.
        v = serde_json::Value::Object(serde_json::Map::new());
    }
    strip_nulls(&mut v);
    serde_json::from_value(v).map_err(|_| ApiError::invalid_json())
}

/// Decodes an optional request body: empty means the defaults.
fn parse<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    from_json(body)
}

/// Handles one request on `$JS.API.>`; `None` means no answer (as nats-server for subjects it
/// does not know).
pub(crate) fn handle(acc: &JsAccount, subject: &str, body: &[u8]) -> Option<Answer> {
    let tokens: Vec<&str> = subject.split('.').collect();
    let name = |i: usize| tokens.get(i).copied().unwrap_or("");
    Some(match &tokens[2..] {
        ["INFO"] => account_info(acc),
        ["STREAM", "CREATE", _] => create(acc, name(4), body),
        ["STREAM", "UPDATE", _] => update(acc, name(4), body),
        ["STREAM", "INFO", _] => info(acc, name(4), body),
        ["STREAM", "DELETE", _] => delete(acc, name(4), body),
        ["STREAM", "PURGE", _] => purge(acc, name(4), body),
        ["STREAM", "NAMES"] => names(acc, body),
        ["STREAM", "LIST"] => list(acc, body),
        ["STREAM", "MSG", "GET", _] => msg_get(acc, name(5), body),
        ["STREAM", "MSG", "DELETE", _] => msg_delete(acc, name(5), body),
        ["CONSUMER", "CREATE", _, ..] | ["CONSUMER", "DURABLE", "CREATE", _, ..] => {
            return consumer::create(acc, &tokens, body)
        }
        ["CONSUMER", "INFO", s, c] => consumer::info(acc, s, c, body),
        ["CONSUMER", "DELETE", s, c] => consumer::delete(acc, s, c, body),
        ["CONSUMER", "NAMES", s] => consumer::names(acc, s, body),
        ["CONSUMER", "LIST", s] => consumer::list(acc, s, body),
        _ => return None,
    })
}

fn account_info(acc: &JsAccount) -> Answer {
    let (memory, storage) = acc.usage();
    let (total, errors) = acc.api_counts();
    let body = AccountInfoBody {
        memory,
        storage,
        reserved_memory: 0,
        reserved_storage: 0,
        streams: acc.stream_count(),
        consumers: acc.consumer_count(),
        limits: AccountLimits {
            max_memory: acc.limits().max_memory,
            max_storage: acc.limits().max_store,
            max_streams: acc.limits().max_streams,
            max_consumers: acc.limits().max_consumers,
            max_ack_pending: -1,
            memory_max_stream_bytes: -1,
            storage_max_stream_bytes: -1,
            max_bytes_required: false,
        },
        api: ApiStats { total, errors },
    };
    answer(T_ACCOUNT_INFO, None, body)
}

fn create(acc: &JsAccount, subject_name: &str, body: &[u8]) -> Answer {
    let cfg: StreamConfig = match from_json(body) {
        Ok(c) => c,
        Err(e) => return fail(T_CREATE, e, Nothing {}),
    };
    if subject_name != cfg.name {
        return fail(T_CREATE, ApiError::stream_mismatch(), Nothing {});
    }
    if cfg.name.contains(['\\', '/']) {
        return fail(T_CREATE, ApiError::name_contains_path_separators(), Nothing {});
    }
    if cfg.sealed {
        return fail(
            T_CREATE,
            ApiError::invalid_config("stream configuration for create can not be sealed"),
            Nothing {},
        );
    }
    if cfg.mirror_direct && cfg.mirror.is_none() {
        return fail(
            T_CREATE,
            ApiError::invalid_config("stream has no mirror but does have mirror direct"),
            Nothing {},
        );
    }
    match acc.create_stream(cfg) {
        Ok(stream) => match stream.info(false, None) {
            Some((info, _)) => answer(T_CREATE, None, StreamInfoBody { info, did_create: true }),
            None => fail(T_CREATE, ApiError::stream_not_found(), Nothing {}),
        },
        Err(e) => fail(T_CREATE, e, Nothing {}),
    }
}

fn update(acc: &JsAccount, subject_name: &str, body: &[u8]) -> Answer {
    let cfg: StreamConfig = match from_json(body) {
        Ok(c) => c,
        Err(e) => return fail(T_UPDATE, e, Nothing {}),
    };
    let cfg = match super::config::check(&cfg) {
        Ok(c) => c,
        Err(e) => return fail(T_UPDATE, e, Nothing {}),
    };
    if subject_name != cfg.name {
        return fail(T_UPDATE, ApiError::stream_mismatch(), Nothing {});
    }
    match acc.update_stream(cfg) {
        Ok(stream) => match stream.info(false, None) {
            Some((info, _)) => answer(T_UPDATE, None, StreamInfoBody { info, did_create: false }),
            None => fail(T_UPDATE, ApiError::stream_not_found(), Nothing {}),
        },
        Err(e) => fail(T_UPDATE, e, Nothing {}),
    }
}

fn info(acc: &JsAccount, name: &str, body: &[u8]) -> Answer {
    let req: StreamInfoRequest = match parse(body) {
        Ok(r) => r,
        Err(e) => return fail(T_INFO, e, StreamInfoPaged { paged: Paged::default(), info: None }),
    };
    let Some(stream) = acc.stream(name) else {
        return fail(T_INFO, ApiError::stream_not_found(), StreamInfoPaged { paged: Paged::default(), info: None });
    };
    let filter = Some(req.subjects_filter.as_str()).filter(|f| !f.is_empty());
    let Some((mut info, total)) = stream.info(req.deleted_details, filter) else {
        return fail(T_INFO, ApiError::stream_not_found(), StreamInfoPaged { paged: Paged::default(), info: None });
    };
    let mut paged = Paged::default();
    if let Some(subjects) = info.state.subjects.take() {
        let offset = req.offset.min(subjects.len());
        let page = subjects.into_iter().skip(offset).take(MAX_SUBJECT_DETAILS).collect();
        info.state.subjects = Some(page);
        paged = Paged { total, offset, limit: MAX_SUBJECT_DETAILS };
    }
    answer(T_INFO, None, StreamInfoPaged { paged, info: Some(info) })
}

fn delete(acc: &JsAccount, name: &str, body: &[u8]) -> Answer {
    if !is_empty_request(body) {
        return fail(T_DELETE, ApiError::not_empty_request(), Success { success: false });
    }
    match acc.delete_stream(name) {
        Ok(()) => answer(T_DELETE, None, Success { success: true }),
        Err(e) => fail(T_DELETE, e, Success { success: false }),
    }
}

fn purge(acc: &JsAccount, name: &str, body: &[u8]) -> Answer {
    let req: PurgeRequest = match parse(body) {
        Ok(r) => r,
        Err(e) => return fail(T_PURGE, e, PurgeBody { success: false, purged: 0 }),
    };
    if req.seq > 0 && req.keep > 0 {
        return fail(T_PURGE, ApiError::bad_request(), PurgeBody { success: false, purged: 0 });
    }
    let Some(stream) = acc.stream(name) else {
        return fail(T_PURGE, ApiError::stream_not_found(), PurgeBody { success: false, purged: 0 });
    };
    let filter = Some(req.filter.as_str()).filter(|f| !f.is_empty());
    let result = stream.with_store(|store, cfg| {
        if cfg.sealed {
            return Err(ApiError::stream_sealed());
        }
        if cfg.deny_purge {
            return Err(ApiError::purge_failed("stream purge not permitted"));
        }
        // Written before it is answered, as a stored message is.
        let purged = store.purge(filter, req.seq, req.keep).map_err(ApiError::stream_general)?;
        store.flush().map_err(ApiError::stream_general)?;
        Ok(purged)
    });
    match result {
        Some(Ok(purged)) => {
            stream.removed_messages();
            answer(T_PURGE, None, PurgeBody { success: true, purged })
        }
        // nats-server counts a store's refusal as an answer, not as an API error.
        Some(Err(e)) => Answer { error: false, ..fail(T_PURGE, e, PurgeBody { success: false, purged: 0 }) },
        None => fail(T_PURGE, ApiError::stream_not_found(), PurgeBody { success: false, purged: 0 }),
    }
}

/// The streams whose subjects collide with `filter` (all without one), sorted by name.
fn filtered(acc: &JsAccount, filter: &str) -> Vec<Arc<Stream>> {
    let mut streams = acc.streams();
    if !filter.is_empty() {
        streams.retain(|s| s.config().subjects.iter().any(|subj| super::config::subjects_collide(filter, subj)));
    }
    streams.sort_by(|a, b| a.name().cmp(b.name()));
    streams
}

fn names(acc: &JsAccount, body: &[u8]) -> Answer {
    let req: ListRequest = match parse(body) {
        Ok(r) => r,
        Err(e) => return fail(T_NAMES, e, NamesBody { paged: Paged::default(), streams: None }),
    };
    let streams = filtered(acc, &req.subject);
    let total = streams.len();
    let offset = req.offset.min(total);
    let page: Vec<String> = streams.iter().skip(offset).take(NAMES_LIMIT).map(|s| s.name().to_string()).collect();
    let body =
        NamesBody { paged: Paged { total, offset, limit: NAMES_LIMIT }, streams: (!page.is_empty()).then_some(page) };
    answer(T_NAMES, None, body)
}

fn list(acc: &JsAccount, body: &[u8]) -> Answer {
    let req: ListRequest = match parse(body) {
        Ok(r) => r,
        Err(e) => return fail(T_LIST, e, ListBody { paged: Paged::default(), streams: Vec::new() }),
    };
    let streams = filtered(acc, &req.subject);
    let total = streams.len();
    let offset = req.offset.min(total);
    let page =
        streams.iter().skip(offset).take(LIST_LIMIT).filter_map(|s| s.info(false, None).map(|(i, _)| i)).collect();
    answer(T_LIST, None, ListBody { paged: Paged { total, offset, limit: LIST_LIMIT }, streams: page })
}

fn stored_json(m: &super::store::StoredMsg) -> StoredMsgJson {
    let b64 = |b: &[u8]| (!b.is_empty()).then(|| base64::engine::general_purpose::STANDARD.encode(b));
    StoredMsgJson {
        subject: m.subject.clone(),
        seq: m.seq,
        hdrs: b64(&m.headers),
        data: b64(&m.data),
        time: rfc3339_nanos(m.ts),
    }
}

/// Loads what a MSG.GET / DIRECT.GET request asks for.
fn load(store: &super::store::Store, req: &MsgGetRequest) -> Result<super::store::StoredMsg, super::store::StoreError> {
    if !req.next_by_subj.is_empty() {
        store.load_next(&req.next_by_subj, req.seq)
    } else if !req.last_by_subj.is_empty() {
        store.load_last(&req.last_by_subj)
    } else {
        store.load(req.seq)
    }
}

/// Whether a get request is one of the allowed combinations.
fn valid_get(req: &MsgGetRequest) -> bool {
    !(req.seq > 0 && !req.last_by_subj.is_empty()
        || req.seq == 0 && req.last_by_subj.is_empty() && req.next_by_subj.is_empty()
        || !req.last_by_subj.is_empty() && !req.next_by_subj.is_empty())
}

fn msg_get(acc: &JsAccount, name: &str, body: &[u8]) -> Answer {
    if body.is_empty() {
        return fail(T_MSG_GET, ApiError::bad_request(), MsgGetBody { message: None });
    }
    let req: MsgGetRequest = match from_json(body) {
        Ok(r) => r,
        Err(e) => return fail(T_MSG_GET, e, MsgGetBody { message: None }),
    };
    if !valid_get(&req) {
        return fail(T_MSG_GET, ApiError::bad_request(), MsgGetBody { message: None });
    }
    let Some(stream) = acc.stream(name) else {
        return fail(T_MSG_GET, ApiError::stream_not_found(), MsgGetBody { message: None });
    };
    match stream.with_store(|store, _| load(store, &req)) {
        // nats-server does not count a successful get in the account's API statistics.
        Some(Ok(m)) => {
            Answer { counted: false, ..answer(T_MSG_GET, None, MsgGetBody { message: Some(stored_json(&m)) }) }
        }
        _ => fail(T_MSG_GET, ApiError::no_message_found(), MsgGetBody { message: None }),
    }
}

fn msg_delete(acc: &JsAccount, name: &str, body: &[u8]) -> Answer {
    if body.is_empty() {
        return fail(T_MSG_DELETE, ApiError::bad_request(), Success { success: false });
    }
    let req: MsgDeleteRequest = match from_json(body) {
        Ok(r) => r,
        Err(e) => return fail(T_MSG_DELETE, e, Success { success: false }),
    };
    let Some(stream) = acc.stream(name) else {
        return fail(T_MSG_DELETE, ApiError::stream_not_found(), Success { success: false });
    };
    let result = stream.with_store(|store, cfg| {
        if cfg.sealed {
            return Err(ApiError::stream_sealed());
        }
        if cfg.deny_delete {
            return Err(ApiError::msg_delete_failed("message delete not permitted"));
        }
        let st = store.state();
        let last = st.last_seq;
        if cfg.storage == Storage::File {
            // What nats-server's file store says for these.
            if req.seq == 0 || req.seq < st.first_seq {
                return Err(ApiError::msg_delete_failed("no message found"));
            }
            if req.seq > last {
                return Err(ApiError::msg_delete_failed("stream store EOF"));
            }
        }
        match store.remove(req.seq, !req.no_erase) {
            // Written before it is answered, as a stored message is.
            Ok(true) => store.flush().map_err(ApiError::msg_delete_failed),
            Ok(false) => Err(ApiError::sequence_not_found(req.seq)),
            Err(e) => Err(ApiError::msg_delete_failed(e)),
        }
    });
    match result {
        Some(Ok(())) => {
            stream.removed_messages();
            answer(T_MSG_DELETE, None, Success { success: true })
        }
        Some(Err(e)) => Answer { error: false, ..fail(T_MSG_DELETE, e, Success { success: false }) },
        None => fail(T_MSG_DELETE, ApiError::stream_not_found(), Success { success: false }),
    }
}

/// The header block and body of a direct get answer.
pub(crate) fn direct_get(stream: &Stream, msg: &Message<'_>) -> (Vec<u8>, Vec<u8>) {
    use super::headers::{append, build};
    let status = |s: &str| (build(s, &[]), Vec::new());
    let subject = String::from_utf8_lossy(msg.subject);
    let prefix_len = "$JS.API.DIRECT.GET.".len() + stream.name().len();
    let key = subject.get(prefix_len..).and_then(|k| k.strip_prefix('.'));
    let body = &msg.payload[msg.header_len.min(msg.payload.len())..];
    let req = match key {
        Some(key) => {
            if !body.is_empty() || key.is_empty() {
                return status("408 Bad Request");
            }
            MsgGetRequest { last_by_subj: key.to_string(), ..Default::default() }
        }
        None => {
            if body.is_empty() {
                return status("408 Empty Request");
            }
            let Ok(req) = from_json::<MsgGetRequest>(body) else {
                return status("408 Malformed Request");
            };
            if req.seq == 0 && req.last_by_subj.is_empty() && req.next_by_subj.is_empty() {
                return status("408 Empty Request");
            }
            if !valid_get(&req) {
                return status("408 Bad Request");
            }
            req
        }
    };
    let Some(Ok(m)) = stream.with_store(|store, _| load(store, &req)) else {
        return status("404 Message Not Found");
    };
    let seq = m.seq.to_string();
    let ts = rfc3339_nanos(m.ts);
    let extra = [
        ("Nats-Stream", stream.name()),
        ("Nats-Subject", m.subject.as_str()),
        ("Nats-Sequence", seq.as_str()),
        ("Nats-Time-Stamp", ts.as_str()),
    ];
    let hdr = append(&m.headers, &extra);
    (hdr, m.data.to_vec())
}

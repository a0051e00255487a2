//! The consumer half of the `$JS.API`: CONSUMER.CREATE in its three subject forms, INFO,
//! DELETE, NAMES and LIST, answered as nats-server 2.9.10 answers them (MSG.NEXT goes to the
//! consumer itself).

use serde::{Deserialize, Serialize};

use super::errors::ApiError;
use super::types::{Nothing, Paged, Success};
use super::{answer, fail, from_json, is_empty_request, parse, Answer, LIST_LIMIT, NAMES_LIMIT};
use crate::jetstream::consumer::config::ConsumerConfig;
use crate::jetstream::consumer::{Action, Consumer};
use crate::jetstream::JsAccount;

pub(super) const T_CREATE: &str = "io.nats.jetstream.api.v1.consumer_create_response";
pub(super) const T_INFO: &str = "io.nats.jetstream.api.v1.consumer_info_response";
pub(super) const T_DELETE: &str = "io.nats.jetstream.api.v1.consumer_delete_response";
pub(super) const T_NAMES: &str = "io.nats.jetstream.api.v1.consumer_names_response";
pub(super) const T_LIST: &str = "io.nats.jetstream.api.v1.consumer_list_response";

/// `CreateConsumerRequest`. Without an `action` (as from nats-server 2.9 clients) a create of
/// an existing name updates it; `create` refuses an existing one with another configuration
/// and `update` a missing one, as nats-server 2.10 does.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CreateRequest {
    stream_name: String,
    config: ConsumerConfig,
    action: String,
}

/// Which subject form a create came on.
enum Form {
    /// `CONSUMER.CREATE.<stream>`.
    LegacyEphemeral,
    /// `CONSUMER.DURABLE.CREATE.<stream>.<durable>`.
    LegacyDurable,
    /// `CONSUMER.CREATE.<stream>.<name>[.<filter>]`.
    Named,
}

/// Handles a create on `tokens` (the whole subject, split); `None`: no answer.
pub(super) fn create(acc: &JsAccount, tokens: &[&str], body: &[u8]) -> Option<Answer> {
    let n = tokens.len();
    let (form, stream_name, consumer_name, filter) = if n == 5 {
        (Form::LegacyEphemeral, tokens[4], "", String::new())
    } else if tokens[3] == "DURABLE" {
        if n != 7 {
            // Not a subject nats-server listens on.
            return None;
        }
        (Form::LegacyDurable, tokens[5], tokens[6], String::new())
    } else {
        let filter = if n > 6 { tokens[6..].join(".") } else { String::new() };
        (Form::Named, tokens[4], tokens[5], filter)
    };
    let mut req: CreateRequest = match from_json(body) {
        Ok(r) => r,
        Err(e) => return Some(fail(T_CREATE, e, Nothing {})),
    };
    if stream_name != req.stream_name {
        return Some(fail(T_CREATE, ApiError::stream_mismatch(), Nothing {}));
    }
    if consumer_name.contains(['\\', '/']) {
        return Some(fail(
            T_CREATE,
            ApiError::new(400, 10127, "Consumer name can not contain path separators"),
            Nothing {},
        ));
    }
    let mismatch = || ApiError::new(400, 10017, "consumer name in subject does not match durable name in request");
    match form {
        Form::LegacyDurable => {
            if req.config.durable.is_empty() {
                return Some(fail(
                    T_CREATE,
                    ApiError::new(400, 10018, "consumer expected to be durable but a durable name was not set"),
                    Nothing {},
                ));
            }
            if req.config.durable != consumer_name {
                return Some(fail(T_CREATE, mismatch(), Nothing {}));
            }
        }
        Form::Named => {
            if !req.config.durable.is_empty() && req.config.durable != consumer_name {
                return Some(fail(T_CREATE, mismatch(), Nothing {}));
            }
            req.config.name = consumer_name.to_string();
        }
        Form::LegacyEphemeral => {
            if !req.config.durable.is_empty() {
                return Some(fail(
                    T_CREATE,
                    ApiError::new(
                        400,
                        10020,
                        "consumer expected to be ephemeral but a durable name was set in request",
                    ),
                    Nothing {},
                ));
            }
        }
    }
    if !filter.is_empty() && req.config.filter_subject != filter {
        return Some(fail(
            T_CREATE,
            ApiError::new(400, 10131, "Consumer create request did not match filtered subject from create subject"),
            Nothing {},
        ));
    }
    if req.config.num_replicas > 1 {
        return Some(fail(T_CREATE, ApiError::replicas_not_supported(), Nothing {}));
    }
    let Some(stream) = acc.stream(stream_name) else {
        return Some(fail(T_CREATE, ApiError::stream_not_found(), Nothing {}));
    };
    let action = match req.action.as_str() {
        "create" => Action::Create,
        "update" => Action::Update,
        _ => Action::CreateOrUpdate,
    };
    Some(match acc.add_consumer(&stream, req.config, action) {
        Ok(c) => answer(T_CREATE, None, c.info()),
        Err(e) => fail(T_CREATE, e, Nothing {}),
    })
}

pub(super) fn info(acc: &JsAccount, stream: &str, name: &str, body: &[u8]) -> Answer {
    if !is_empty_request(body) {
        return fail(T_INFO, ApiError::not_empty_request(), Nothing {});
    }
    let Some(s) = acc.stream(stream) else { return fail(T_INFO, ApiError::stream_not_found(), Nothing {}) };
    match s.consumer(name) {
        Some(c) => answer(T_INFO, None, c.info()),
        None => fail(T_INFO, ApiError::consumer_not_found(), Nothing {}),
    }
}

pub(super) fn delete(acc: &JsAccount, stream: &str, name: &str, body: &[u8]) -> Answer {
    if !is_empty_request(body) {
        return fail(T_DELETE, ApiError::not_empty_request(), Success { success: false });
    }
    let Some(s) = acc.stream(stream) else {
        return fail(T_DELETE, ApiError::stream_not_found(), Success { success: false });
    };
    if acc.delete_consumer(&s, name) {
        answer(T_DELETE, None, Success { success: true })
    } else {
        fail(T_DELETE, ApiError::consumer_not_found(), Success { success: false })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PageRequest {
    offset: usize,
}

/// A page of NAMES or LIST.
#[derive(Serialize)]
struct Page<T: Serialize> {
    #[serde(flatten)]
    paged: Paged,
    consumers: Vec<T>,
}

/// One page of a stream's consumers, each as `item` makes it, `limit` at most.
fn page<T: Serialize>(
    acc: &JsAccount,
    stream: &str,
    body: &[u8],
    kind: &'static str,
    limit: usize,
    item: impl Fn(&Consumer) -> T,
) -> Answer {
    let empty = || Page::<T> { paged: Paged::default(), consumers: Vec::new() };
    let req: PageRequest = match parse(body) {
        Ok(r) => r,
        Err(e) => return fail(kind, e, empty()),
    };
    let Some(s) = acc.stream(stream) else { return fail(kind, ApiError::stream_not_found(), empty()) };
    let all = s.consumers();
    let total = all.len();
    let offset = req.offset.min(total);
    let consumers = all.iter().skip(offset).take(limit).map(|c| item(c)).collect();
    answer(kind, None, Page { paged: Paged { total, offset, limit }, consumers })
}

pub(super) fn names(acc: &JsAccount, stream: &str, body: &[u8]) -> Answer {
    page(acc, stream, body, T_NAMES, NAMES_LIMIT, |c| c.name().to_string())
}

pub(super) fn list(acc: &JsAccount, stream: &str, body: &[u8]) -> Answer {
    page(acc, stream, body, T_LIST, LIST_LIMIT, Consumer::info)
}

//! The `accounts {}` block: each account's users, default permissions, JetStream switch,
//! exports and imports, read as nats-server reads them.

use std::time::Duration;

use super::ConfigError;
use super::{invalid, permissions, user, Login};
use crate::conf::{self, Item, Map, Value};
use crate::options::accounts::{AccountLinks, Export, Import, Local, ResponseType, ServiceExport};
use crate::options::JetStreamAccountLimits;

/// `accounts { NAME { users [...], default_permissions {...}, jetstream: enabled, exports [...],
/// imports [...] } }`: each account's users (with the account's name), the accounts with
/// JetStream, and every account's exports and imports.
pub(super) fn accounts(
    item: &Item,
    users: &mut Vec<(String, Login)>,
    jetstream: &mut Vec<String>,
    limits: &mut Vec<(String, JetStreamAccountLimits)>,
    links: &mut Vec<AccountLinks>,
) -> Result<(), ConfigError> {
    for (name, account) in item.expect_map()?.iter() {
        if name == crate::account::GLOBAL_ACCOUNT {
            return Err(invalid(account, format!("{name}: the global account can not be configured here")));
        }
        let mut link = AccountLinks { name: name.to_string(), ..AccountLinks::default() };
        let map = match &account.value {
            // An account with nothing in it: `accounts { A: {} }` or `accounts { A }`.
            Value::Map(m) => m,
            _ => {
                links.push(link);
                continue;
            }
        };
        let mut own_users = Vec::new();
        let mut defaults = None;
        for (key, v) in map.iter() {
            match key.to_ascii_lowercase().as_str() {
                "users" => {
                    for entry in v.expect_array()? {
                        own_users.push(user(entry)?);
                    }
                }
                "default_permissions" => defaults = Some(permissions(v.expect_map()?)?),
                "jetstream" => {
                    let on = match &v.value {
                        Value::Bool(b) => *b,
                        Value::String(s) => s.eq_ignore_ascii_case("enabled") || s.eq_ignore_ascii_case("true"),
                        Value::Map(m) => {
                            limits.push((name.to_string(), jetstream_limits(m)?));
                            true
                        }
                        _ => false,
                    };
                    if on {
                        jetstream.push(name.to_string());
                    }
                }
                "exports" => {
                    for entry in v.expect_array()? {
                        link.exports.push(export(entry)?);
                    }
                }
                "imports" => {
                    for entry in v.expect_array()? {
                        link.imports.push(import(entry)?);
                    }
                }
                "mappings" | "maps" => {
                    return Err(invalid(v, format!("{key} in accounts: not supported yet")));
                }
                _ => return Err(invalid(v, format!("unknown field \"{key}\" in account {name}"))),
            }
        }
        for mut login in own_users {
            if let Some(defaults) = &defaults {
                let perms = match &mut login {
                    Login::Password(u) => &mut u.permissions,
                    Login::Nkey(u) => &mut u.permissions,
                };
                if perms.is_none() {
                    *perms = Some(defaults.clone());
                }
            }
            users.push((name.to_string(), login));
        }
        links.push(link);
    }
    Ok(())
}

/// `jetstream { max_mem, max_file, max_streams, max_consumers }` inside an account; sizes take
/// the config file's units, -1 means no limit.
fn jetstream_limits(map: &Map) -> Result<JetStreamAccountLimits, ConfigError> {
    let mut limits = JetStreamAccountLimits::default();
    let size = |v: &Item| -> Result<i64, ConfigError> {
        match &v.value {
            Value::Integer(n) if *n < 0 => Ok(-1),
            _ => i64::try_from(conf::size_of(v)?).map_err(|_| invalid(v, "out of range")),
        }
    };
    for (key, v) in map.iter() {
        match key.to_ascii_lowercase().as_str() {
            "max_mem" | "max_memory" | "max_memory_store" => limits.max_memory = size(v)?,
            "max_file" | "max_store" | "max_file_store" | "max_storage" => limits.max_store = size(v)?,
            "max_streams" => limits.max_streams = v.expect_integer()?.max(-1),
            "max_consumers" => limits.max_consumers = v.expect_integer()?.max(-1),
            "max_ack_pending"
            | "max_bytes_required"
            | "memory_max_stream_bytes"
            | "store_max_stream_bytes"
            | "max_stream_bytes" => return Err(invalid(v, format!("jetstream {key} in accounts: not supported yet"))),
            _ => return Err(invalid(v, format!("unknown field \"{key}\""))),
        }
    }
    Ok(limits)
}

/// `{stream: "subj"}` or `{service: "subj", response_type: ..., response_threshold: ...}`, with
/// an optional `accounts` allow list.
fn export(entry: &Item) -> Result<Export, ConfigError> {
    let map = entry.value.as_map().ok_or_else(|| {
        invalid(entry, format!("Export Items should be a map with type entry, got {}", entry.value.type_name()))
    })?;
    let mut subject: Option<(bool, String)> = None;
    let mut response = None;
    let mut threshold = None;
    let mut accounts = None;
    for (key, v) in map.iter() {
        match key.to_ascii_lowercase().as_str() {
            "stream" | "service" => {
                let service = key.eq_ignore_ascii_case("service");
                if subject.is_some() {
                    let (now, before) = if service { ("service", "stream") } else { ("stream", "service") };
                    return Err(invalid(
                        v,
                        format!("Detected {now} {:?} but already saw a {before}", v.value.as_str().unwrap_or("")),
                    ));
                }
                let text = v.value.as_str().ok_or_else(|| {
                    invalid(
                        v,
                        format!("Expected {} name to be string, got {}", key.to_ascii_lowercase(), v.value.type_name()),
                    )
                })?;
                subject = Some((service, text.to_string()));
            }
            "response" | "response_type" => {
                if response.is_some() {
                    return Err(invalid(v, "Duplicate response type definition"));
                }
                let text = v.expect_str()?;
                response = Some(match text.to_ascii_lowercase().as_str() {
                    "single" | "singleton" => ResponseType::Singleton,
                    "stream" => ResponseType::Stream,
                    "chunk" | "chunked" => ResponseType::Chunked,
                    _ => return Err(invalid(v, format!("Unknown response type: {text:?}"))),
                });
            }
            "threshold" | "response_threshold" | "response_max_time" | "response_time" => {
                let text = v.expect_str()?;
                let parsed = crate::conf::duration_of(v).map_err(|_| {
                    invalid(v, format!("Expected response threshold to be a parseable time duration, got {text:?}"))
                })?;
                threshold = Some(parsed);
            }
            "accounts" => {
                let mut list = Vec::new();
                for a in v.expect_array()? {
                    list.push(a.expect_str()?.to_string());
                }
                accounts = Some(list);
            }
            "latency" | "account_token_position" => {
                return Err(invalid(v, format!("{key} in exports: not supported yet")));
            }
            _ => return Err(invalid(v, format!("unknown field \"{key}\""))),
        }
    }
    let Some((service, subject)) = subject else {
        return Err(invalid(entry, "Export Items should have a stream or a service"));
    };
    if !service && (response.is_some() || threshold.is_some()) {
        return Err(invalid(entry, "Detected response directive on non-service"));
    }
    let service = service.then(|| ServiceExport {
        response: response.unwrap_or_default(),
        threshold: threshold.filter(|t: &Duration| !t.is_zero()).unwrap_or(ServiceExport::default().threshold),
    });
    Ok(Export { subject, service, accounts, token_required: false })
}

/// `{stream: {account: A, subject: "s"}, prefix: "p"}` or `to: "t"`, or
/// `{service: {account: A, subject: "s"}, to: "local"}`.
fn import(entry: &Item) -> Result<Import, ConfigError> {
    let map = entry.value.as_map().ok_or_else(|| {
        invalid(entry, format!("Import Items should be a map with type entry, got {}", entry.value.type_name()))
    })?;
    let mut source: Option<(bool, String, String)> = None;
    let mut prefix = None;
    let mut to = None;
    for (key, v) in map.iter() {
        match key.to_ascii_lowercase().as_str() {
            "stream" | "service" => {
                let service = key.eq_ignore_ascii_case("service");
                if source.is_some() {
                    let (now, before) = if service { ("service", "stream") } else { ("stream", "service") };
                    return Err(invalid(v, format!("Detected {now} but already saw a {before}")));
                }
                let what = if service { "Service" } else { "Stream" };
                let inner = v.value.as_map().ok_or_else(|| {
                    invalid(v, format!("{what} entry should be an account map, got {}", v.value.type_name()))
                })?;
                let mut account = String::new();
                let mut subject = String::new();
                for (k, iv) in inner.iter() {
                    match k.to_ascii_lowercase().as_str() {
                        "account" => account = iv.expect_str()?.to_string(),
                        "subject" => subject = iv.expect_str()?.to_string(),
                        _ => return Err(invalid(iv, format!("unknown field \"{k}\""))),
                    }
                }
                if account.is_empty() || subject.is_empty() {
                    return Err(invalid(v, "Expect an account name and a subject"));
                }
                source = Some((service, account, subject));
            }
            "prefix" => prefix = Some((v, v.expect_str()?.to_string())),
            "to" => to = Some((v, v.expect_str()?.to_string())),
            "share" => {
                v.expect_bool()?;
            }
            _ => return Err(invalid(v, format!("unknown field \"{key}\""))),
        }
    }
    let Some((service, account, subject)) = source else {
        return Err(invalid(entry, "Import Items should have a stream or a service"));
    };
    let local = match (prefix, to) {
        (Some(_), Some((v, _))) if !service => {
            return Err(invalid(v, "Stream import can not have a 'prefix' and a 'to' property"));
        }
        (_, Some((_, to))) => Local::To(to),
        (Some((_, p)), None) if !service => Local::Prefix(p),
        _ => Local::Same,
    };
    Ok(Import { account, subject, service, local })
}

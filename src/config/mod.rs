//! Mapping a parsed NATS config file onto [`Options`].
//!
//! Keys are matched case-insensitively, as nats-server does. An unknown key is an error (a
//! key used only as a `$variable` is not a setting and is skipped). Blocks for features
//! Courier does not serve yet are refused when ignoring them would weaken security (TLS,
//! accounts, operator/JWT) and reported as warnings otherwise.

use std::path::Path;

use crate::auth::permissions::{ResponsePermission, Rule, SubjectRules};
use crate::auth::{Authorization, NkeyUser, Permissions, User};
use crate::conf::{self, ConfError, Item, Map, Pos, Value};
use crate::options::{self, ClusterOptions, JetStreamOptions, MqttOptions, Options, SyncInterval, WebsocketOptions};
use crate::tls::{HandshakeFirst, TlsOptions};

mod accounts;
mod leaf;

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error(transparent)]
    Parse(#[from] ConfError),
    /// A setting has a value Courier cannot use.
    #[error("{pos}: {message}")]
    Invalid {
        /// Where the setting is.
        pos: Pos,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(item: &Item, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { pos: item.pos.clone(), message: message.into() }
}

/// Reads `path` and applies it over `opts`. Returns warnings about settings that were ignored.
pub fn load_file(path: &Path, opts: &mut Options) -> Result<Vec<String>, ConfigError> {
    let map = conf::parse_file(path)?;
    apply(&map, opts)
}

/// Applies a parsed config over `opts`. Returns warnings about settings that were ignored.
pub fn apply(map: &Map, opts: &mut Options) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    let mut operators: Vec<(String, &Item)> = Vec::new();
    let mut preload: Option<&Item> = None;
    let mut store_dir: Option<(&Item, std::path::PathBuf)> = None;
    let mut account_users: Vec<(String, Login)> = Vec::new();
    let mut no_auth_user: Option<(&Item, String)> = None;
    let mut websocket_item: Option<&Item> = None;
    let mut mqtt_item: Option<&Item> = None;
    for (key, item) in map.iter() {
        if map.is_referenced(key) {
            continue;
        }
        match key.to_ascii_lowercase().as_str() {
            "listen" => {
                let (host, port) = host_port(item)?;
                if let Some(host) = host {
                    opts.host = host;
                }
                opts.port = port;
            }
            "port" => opts.port = port_of(item)?,
            "host" | "net" => opts.host = item.expect_str()?.to_string(),
            "server_name" => opts.server_name = item.expect_str()?.to_string(),
            "http_port" | "monitor_port" => opts.http_port = Some(port_of(item)?),
            "http" => {
                let (host, port) = host_port(item)?;
                opts.http_host = host;
                opts.http_port = Some(port);
            }
            "max_payload" => opts.max_payload = usize_of(item, conf::size_of(item)?)?,
            "max_pending" => opts.max_pending = usize_of(item, conf::size_of(item)?)?,
            "max_control_line" => opts.max_control_line = usize_of(item, conf::size_of(item)?)?,
            "max_connections" | "max_conn" => {
                // A negative limit means none, as in nats-server.
                opts.max_connections = if item.expect_integer()? < 0 { usize::MAX } else { count_of(item)? }
            }
            "max_subscriptions" | "max_subs" => opts.max_subscriptions = count_of(item)?,
            "ping_interval" => opts.ping_interval = conf::duration_of(item)?,
            "ping_max" => {
                opts.ping_max =
                    u32::try_from(item.expect_integer()?).map_err(|_| invalid(item, "ping_max out of range"))?
            }
            "write_deadline" => opts.write_deadline = conf::duration_of(item)?,
            "lame_duck_duration" => opts.lame_duck_duration = conf::duration_of(item)?,
            "lame_duck_grace_period" => opts.lame_duck_grace_period = conf::duration_of(item)?,
            "debug" => opts.debug = item.expect_bool()?,
            "trace" => opts.trace = item.expect_bool()?,
            "logtime" => opts.logtime = item.expect_bool()?,
            "logfile" | "log_file" => opts.log_file = Some(item.expect_str()?.into()),
            "pidfile" | "pid_file" => opts.pid_file = Some(item.expect_str()?.into()),
            "authorization" => opts.authorization = authorization(item.expect_map()?)?,
            "tls" => opts.tls = Some(tls(item.expect_map()?, &mut warnings)?),
            "operator" | "operators" | "trusted" => {
                let items = match &item.value {
                    Value::Array(items) => items.iter().collect(),
                    _ => vec![item],
                };
                for op in items {
                    operators.push((jwt_text(op)?, op));
                }
            }
            "resolver" => {
                let kind = item.expect_str()?;
                if !kind.eq_ignore_ascii_case("MEMORY") {
                    return Err(invalid(item, format!("resolver {kind:?} is not supported; use MEMORY")));
                }
            }
            "resolver_preload" => preload = Some(item),
            "system_account" => opts.system_account = item.expect_str()?.to_string(),
            "accounts" => {
                accounts::accounts(
                    item,
                    &mut account_users,
                    &mut opts.jetstream_accounts,
                    &mut opts.jetstream_limits,
                    &mut opts.account_links,
                )?;
                let names: Vec<&str> = item.expect_map()?.iter().map(|(k, _)| k).collect();
                options::accounts::check(&opts.account_links, |n| names.contains(&n)).map_err(|e| invalid(item, e))?;
            }
            "no_auth_user" => no_auth_user = Some((item, item.expect_str()?.to_string())),
            "trusted_keys" => return Err(invalid(item, format!("{key}: not supported yet"))),
            "jetstream" => opts.jetstream = jetstream(item, opts.jetstream.take(), &mut warnings)?,
            "store_dir" | "storedir" => store_dir = Some((item, item.expect_str()?.into())),
            "websocket" | "ws" => {
                opts.websocket = Some(websocket(item, &mut warnings)?);
                websocket_item = Some(item);
            }
            "mqtt" => {
                opts.mqtt = Some(mqtt(item, &mut warnings)?);
                mqtt_item = Some(item);
            }
            "cluster" => opts.cluster = Some(cluster(item, &mut warnings)?),
            "leafnodes" | "leaf" => opts.leafnodes = Some(leaf::leafnodes(item, &mut warnings)?),
            "gateway" => warnings.push(format!("{}: {key} is not served by this server; ignored", item.pos)),
            _ => return Err(invalid(item, format!("unknown field \"{key}\""))),
        }
    }
    if !operators.is_empty() {
        let mut accounts = Vec::new();
        if let Some(preload) = preload {
            for (key, jwt) in preload.expect_map()?.iter() {
                accounts.push((key.to_string(), jwt.expect_str()?.to_string()));
            }
        }
        let trust = crate::auth::Trust::new(
            operators.iter().map(|(jwt, _)| jwt.as_str()),
            accounts.iter().map(|(k, j)| (k.as_str(), j.as_str())),
        )
        .map_err(|e| invalid(operators[0].1, format!("operator/accounts: {e}")))?;
        opts.authorization.trust = Some(trust);
    } else if let Some(preload) = preload {
        return Err(invalid(preload, "resolver_preload needs an operator"));
    }
    for (account, login) in account_users {
        let auth = &mut opts.authorization;
        match login {
            Login::Password(u) => {
                auth.accounts.insert(u.name.clone(), account);
                auth.users.push(u);
            }
            Login::Nkey(u) => {
                auth.accounts.insert(u.nkey.clone(), account);
                auth.nkeys.push(u);
            }
        }
    }
    if let Some((item, name)) = no_auth_user {
        let auth = &opts.authorization;
        if !auth.users.iter().any(|u| u.name == name) && !auth.nkeys.iter().any(|u| u.nkey == name) {
            return Err(invalid(
                item,
                format!("no_auth_user: \"{name}\" not present as user or nkey in authorization block or account configuration"),
            ));
        }
        opts.authorization.no_auth_user = Some(name);
    }
    if let (Some(m), Some(m_item)) = (&opts.mqtt, mqtt_item) {
        check_mqtt(opts, m, m_item)?;
    }
    if let (Some(ws), Some(ws_item)) = (&opts.websocket, websocket_item) {
        if let Some(name) = &ws.no_auth_user {
            let auth = &opts.authorization;
            if ws.authorization.as_ref().is_some_and(|a| !a.users.is_empty()) {
                return Err(invalid(ws_item, "websocket no_auth_user not compatible with provided username"));
            }
            if !auth.users.iter().any(|u| &u.name == name) && !auth.nkeys.iter().any(|u| &u.nkey == name) {
                return Err(invalid(
                    ws_item,
                    format!(
                        "websocket no_auth_user: \"{name}\" not present as user or nkey in authorization block or account configuration"
                    ),
                ));
            }
        }
    }
    if let (Some((item, dir)), Some(js)) = (store_dir, opts.jetstream.as_mut()) {
        if js.store_dir.is_some() {
            return Err(invalid(item, "Duplicate 'store_dir' configuration"));
        }
        js.store_dir = Some(dir);
    }
    opts.apply_baseline();
    if opts.max_payload > opts.max_pending {
        return Err(ConfigError::Invalid {
            pos: map.get("max_payload").map_or_else(|| Pos::file_only("config".into()), |i| i.pos.clone()),
            message: format!(
                "max_payload ({}) can not be larger than max_pending ({})",
                opts.max_payload, opts.max_pending
            ),
        });
    }
    Ok(warnings)
}

/// `jetstream: true|false|enabled|disabled` or a `jetstream {}` block, as nats-server reads it.
fn jetstream(
    item: &Item,
    current: Option<JetStreamOptions>,
    warnings: &mut Vec<String>,
) -> Result<Option<JetStreamOptions>, ConfigError> {
    let mut js = current.unwrap_or_default();
    match &item.value {
        Value::Bool(on) => Ok(on.then_some(js)),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "enabled" | "enable" => Ok(Some(js)),
            "disabled" | "disable" => Ok(None),
            _ => Err(invalid(item, format!("Expected 'enabled' or 'disabled' for string value, got '{s}'"))),
        },
        Value::Map(map) => {
            let mut enable = true;
            for (key, v) in map.iter() {
                if map.is_referenced(key) {
                    continue;
                }
                match key.to_ascii_lowercase().as_str() {
                    "store" | "store_dir" | "storedir" => js.store_dir = Some(v.expect_str()?.into()),
                    "max_memory_store" | "max_mem_store" | "max_mem" => js.max_memory = Some(conf::size_of(v)?),
                    "max_file_store" | "max_file" => js.max_store = Some(conf::size_of(v)?),
                    "sync_interval" | "sync" => {
                        js.sync_interval = match &v.value {
                            Value::String(s) if s.eq_ignore_ascii_case("always") => SyncInterval::Always,
                            _ => SyncInterval::Every(conf::duration_of(v)?),
                        }
                    }
                    "strict" => js.strict = v.expect_bool()?,
                    "enable" | "enabled" => enable = v.expect_bool()?,
                    "key" | "ek" | "encryption_key" | "cipher" => {
                        return Err(invalid(v, format!("jetstream {key}: encryption at rest is not supported yet")))
                    }
                    "domain" | "limits" => return Err(invalid(v, format!("jetstream {key}: not supported yet"))),
                    "unique_tag"
                    | "extension_hint"
                    | "max_outstanding_catchup"
                    | "max_buffered_msgs"
                    | "max_buffered_size"
                    | "request_queue_limit" => {
                        warnings.push(format!("{}: jetstream {key} has no effect on a single server; ignored", v.pos))
                    }
                    _ => return Err(invalid(v, format!("unknown field \"{key}\" in jetstream"))),
                }
            }
            Ok(enable.then_some(js))
        }
        other => {
            Err(invalid(item, format!("Expected map, bool or string to define JetStream, got {}", other.type_name())))
        }
    }
}

fn port_of(item: &Item) -> Result<u16, ConfigError> {
    match item.expect_integer()? {
        -1 => Ok(0),
        n => u16::try_from(n).map_err(|_| invalid(item, format!("invalid port {n}"))),
    }
}

fn count_of(item: &Item) -> Result<usize, ConfigError> {
    let n = item.expect_integer()?;
    usize::try_from(n.max(0)).map_err(|_| invalid(item, "out of range"))
}

fn usize_of(item: &Item, n: u64) -> Result<usize, ConfigError> {
    usize::try_from(n).map_err(|_| invalid(item, "out of range"))
}

/// `listen`-style values: `host:port`, `:port`, or a bare port number.
fn host_port(item: &Item) -> Result<(Option<String>, u16), ConfigError> {
    match &item.value {
        Value::Integer(_) => Ok((None, port_of(item)?)),
        Value::String(s) => {
            let Some((host, port)) = s.rsplit_once(':') else {
                return Err(invalid(item, format!("expected host:port, found {s:?}")));
            };
            let port: i64 = port.parse().map_err(|_| invalid(item, format!("invalid port in {s:?}")))?;
            let port = match port {
                -1 => 0,
                p => u16::try_from(p).map_err(|_| invalid(item, format!("invalid port in {s:?}")))?,
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Ok(((!host.is_empty()).then(|| host.to_string()), port))
        }
        other => Err(invalid(item, format!("expected host:port, found {}", other.type_name()))),
    }
}

fn authorization(map: &Map) -> Result<Authorization, ConfigError> {
    let mut auth = Authorization::default();
    let mut single_user: Option<String> = None;
    let mut single_pass: Option<String> = None;
    let mut single_perms: Option<Permissions> = None;
    for (key, item) in map.iter() {
        if map.is_referenced(key) {
            continue;
        }
        match key.to_ascii_lowercase().as_str() {
            "user" | "username" => single_user = Some(item.expect_str()?.to_string()),
            "password" | "pass" => single_pass = Some(item.expect_str()?.to_string()),
            "token" => auth.token = Some(item.expect_str()?.to_string()),
            "timeout" => auth.timeout = Some(conf::duration_of(item)?),
            "users" => {
                for entry in item.expect_array()? {
                    match user(entry)? {
                        Login::Password(user) => auth.users.push(user),
                        Login::Nkey(user) => auth.nkeys.push(user),
                    }
                }
            }
            "permissions" => single_perms = Some(permissions(item.expect_map()?)?),
            "default_permissions" => auth.default_permissions = Some(permissions(item.expect_map()?)?),
            _ => return Err(invalid(item, format!("unknown field \"{key}\" in authorization"))),
        }
    }
    if let Some(name) = single_user {
        auth.users.push(User { name, password: single_pass.unwrap_or_default(), permissions: single_perms });
    }
    Ok(auth)
}

/// `websocket { listen | host + port, advertise, tls {...}, no_tls, same_origin,
/// allowed_origins, compression, handshake_timeout }`, with nats-server's refusal of a listener
/// without TLS unless `no_tls` says so.
fn websocket(block: &Item, warnings: &mut Vec<String>) -> Result<WebsocketOptions, ConfigError> {
    let mut ws = WebsocketOptions::default();
    for (key, item) in block.expect_map()?.iter() {
        match key.to_ascii_lowercase().as_str() {
            "listen" => {
                let (host, port) = host_port(item)?;
                ws.host = host.or(ws.host);
                ws.port = port;
            }
            "port" => ws.port = port_of(item)?,
            "host" | "net" => ws.host = Some(item.expect_str()?.to_string()),
            "advertise" => ws.advertise = Some(item.expect_str()?.to_string()),
            "tls" => ws.tls = Some(tls(item.expect_map()?, warnings)?),
            "no_tls" => ws.no_tls = item.expect_bool()?,
            "same_origin" => ws.same_origin = item.expect_bool()?,
            "allowed_origins" | "allowed_origin" | "allow_origins" | "allow_origin" | "origins" | "origin" => {
                ws.allowed_origins = match &item.value {
                    Value::String(s) => vec![s.clone()],
                    _ => item
                        .expect_array()?
                        .iter()
                        .map(|o| Ok(o.expect_str()?.to_string()))
                        .collect::<Result<_, ConfigError>>()?,
                };
                for origin in &ws.allowed_origins {
                    if crate::websocket::Origin::parse(origin).is_none() {
                        return Err(invalid(item, format!("unable to parse allowed origin: {origin:?}")));
                    }
                }
            }
            "compression" => ws.compression = item.expect_bool()?,
            "handshake_timeout" => ws.handshake_timeout = conf::duration_of(item)?,
            "authorization" | "authentication" => {
                let auth = authorization(item.expect_map()?)?;
                if !auth.nkeys.is_empty() || auth.users.len() > 1 || auth.default_permissions.is_some() {
                    return Err(invalid(
                        item,
                        "websocket authorization takes a user and password, or a token, and a timeout",
                    ));
                }
                ws.authorization = Some(auth);
            }
            "no_auth_user" => ws.no_auth_user = Some(item.expect_str()?.to_string()),
            "jwt_cookie" => ws.jwt_cookie = Some(item.expect_str()?.to_string()),
            _ => return Err(invalid(item, format!("unknown field \"{key}\" in websocket"))),
        }
    }
    if ws.tls.is_none() && !ws.no_tls {
        return Err(invalid(block, "websocket requires TLS configuration"));
    }
    Ok(ws)
}

/// `cluster { name, listen | host + port, routes [...], advertise, no_advertise,
/// connect_retries, authorization { user, password, timeout } }`.
fn cluster(block: &Item, warnings: &mut Vec<String>) -> Result<ClusterOptions, ConfigError> {
    let mut c = ClusterOptions::default();
    for (key, item) in block.expect_map()?.iter() {
        match key.to_ascii_lowercase().as_str() {
            "name" => c.name = Some(item.expect_str()?.to_string()),
            "listen" => {
                let (host, port) = host_port(item)?;
                c.host = host.or(c.host);
                c.port = port;
            }
            "port" => c.port = port_of(item)?,
            "host" | "net" => c.host = Some(item.expect_str()?.to_string()),
            "advertise" | "cluster_advertise" => c.advertise = Some(item.expect_str()?.to_string()),
            "no_advertise" => c.no_advertise = item.expect_bool()?,
            "connect_retries" => c.connect_retries = u32::try_from(item.expect_integer()?.max(0)).unwrap_or(u32::MAX),
            "routes" => {
                c.routes = match &item.value {
                    Value::String(s) => vec![s.clone()],
                    _ => item
                        .expect_array()?
                        .iter()
                        .map(|r| Ok(r.expect_str()?.to_string()))
                        .collect::<Result<_, ConfigError>>()?,
                };
                for r in &c.routes {
                    if crate::options::route_url::RouteUrl::parse(r).is_none() {
                        return Err(invalid(item, format!("error parsing route url [{r:?}]")));
                    }
                }
            }
            "authorization" | "authentication" => {
                let auth = authorization(item.expect_map()?)?;
                if auth.users.len() > 1 || !auth.nkeys.is_empty() || auth.token.is_some() {
                    return Err(invalid(item, "cluster authorization takes a user, a password and a timeout"));
                }
                c.user = auth.users.first().map(|u| (u.name.clone(), u.password.clone()));
                c.auth_timeout = auth.timeout;
            }
            "permissions" => {
                let mut p = crate::auth::Permissions::default();
                for (k, v) in item.expect_map()?.iter() {
                    match k.to_ascii_lowercase().as_str() {
                        "import" => p.publish = Some(subject_rules(v)?),
                        "export" => p.subscribe = Some(subject_rules(v)?),
                        _ => return Err(invalid(v, format!("unknown field \"{k}\" in cluster permissions"))),
                    }
                }
                c.permissions = Some(p);
            }
            "tls" => {
                let t = tls(item.expect_map()?, warnings)?;
                if t.ca_file.is_none() {
                    return Err(invalid(item, "cluster tls needs a ca_file to verify the other servers"));
                }
                c.tls = Some(t);
            }
            "pool_size" | "compression" | "accounts" => {
                return Err(invalid(item, format!("cluster {key} is not supported yet")))
            }
            _ => return Err(invalid(item, format!("unknown field \"{key}\" in cluster"))),
        }
    }
    Ok(c)
}

/// nats-server's checks of an `mqtt {}` block against the rest of the file.
fn check_mqtt(opts: &Options, m: &MqttOptions, item: &Item) -> Result<(), ConfigError> {
    let auth = &opts.authorization;
    if let Some(name) = &m.no_auth_user {
        if !auth.users.iter().any(|u| &u.name == name) && !auth.nkeys.iter().any(|u| &u.nkey == name) {
            return Err(invalid(
                item,
                format!("no_auth_user: \"{name}\" not present as user or nkey in authorization block or account configuration"),
            ));
        }
    }
    if !auth.users.is_empty() || !auth.nkeys.is_empty() {
        if let Some(own) = &m.authorization {
            if !own.users.is_empty() {
                return Err(invalid(item, "mqtt authentication username not compatible with presence of users/nkeys"));
            }
            if own.token.is_some() {
                return Err(invalid(item, "mqtt authentication token not compatible with presence of users/nkeys"));
            }
        }
    }
    Ok(())
}

/// `mqtt { listen | host + port, tls {...}, authorization {...}, no_auth_user, ack_wait,
/// max_ack_pending }`; the replica and domain settings of a cluster are accepted and have no
/// effect on one server.
fn mqtt(block: &Item, warnings: &mut Vec<String>) -> Result<MqttOptions, ConfigError> {
    let mut m = MqttOptions::default();
    for (key, item) in block.expect_map()?.iter() {
        match key.to_ascii_lowercase().as_str() {
            "listen" => {
                let (host, port) = host_port(item)?;
                m.host = host.or(m.host);
                m.port = port;
            }
            "port" => m.port = port_of(item)?,
            "host" | "net" => m.host = Some(item.expect_str()?.to_string()),
            "tls" => m.tls = Some(tls(item.expect_map()?, warnings)?),
            "authorization" | "authentication" => {
                let auth = authorization(item.expect_map()?)?;
                if !auth.nkeys.is_empty() || auth.users.len() > 1 || auth.default_permissions.is_some() {
                    return Err(invalid(
                        item,
                        "mqtt authorization takes a user and password, or a token, and a timeout",
                    ));
                }
                m.authorization = Some(auth);
            }
            "no_auth_user" => m.no_auth_user = Some(item.expect_str()?.to_string()),
            "ack_wait" | "ackwait" => {
                m.ack_wait = conf::duration_of(item)?;
                if m.ack_wait.is_zero() {
                    m.ack_wait = MqttOptions::default().ack_wait;
                }
            }
            "max_ack_pending" | "max_pending" | "max_inflight" => {
                let n = item.expect_integer()?;
                m.max_ack_pending = match u16::try_from(n) {
                    Ok(0) => MqttOptions::default().max_ack_pending,
                    Ok(n) => n,
                    Err(_) => {
                        return Err(invalid(item, format!("invalid value {n}, should be in [0..{}] range", u16::MAX)))
                    }
                };
            }
            "js_domain"
            | "stream_replicas"
            | "consumer_replicas"
            | "consumer_memory_storage"
            | "consumer_inactive_threshold"
            | "consumer_auto_cleanup" => {
                warnings.push(format!("{}: mqtt {key} has no effect on a server outside a cluster", item.pos))
            }
            _ => return Err(invalid(item, format!("unknown field \"{key}\" in mqtt"))),
        }
    }
    Ok(m)
}

fn tls(map: &Map, warnings: &mut Vec<String>) -> Result<TlsOptions, ConfigError> {
    tls_with(map, warnings, true)
}

/// A `tls {}` block; a dialing side (a leaf node remote) may go without a certificate.
fn tls_with(map: &Map, warnings: &mut Vec<String>, need_cert: bool) -> Result<TlsOptions, ConfigError> {
    let mut tls = TlsOptions::default();
    let mut cert = None;
    let mut key = None;
    for (name, item) in map.iter() {
        match name.to_ascii_lowercase().as_str() {
            "cert_file" => cert = Some(item.expect_str()?.into()),
            "key_file" => key = Some(item.expect_str()?.into()),
            "ca_file" => tls.ca_file = Some(item.expect_str()?.into()),
            "verify" => tls.verify = item.expect_bool()?,
            "timeout" => tls.timeout = conf::duration_of(item)?,
            "handshake_first" | "first" | "immediate" => {
                tls.handshake_first = match &item.value {
                    Value::Bool(true) => HandshakeFirst::On,
                    Value::Bool(false) => HandshakeFirst::Off,
                    Value::String(s) if s.eq_ignore_ascii_case("auto") => {
                        HandshakeFirst::Auto(std::time::Duration::from_millis(50))
                    }
                    _ => HandshakeFirst::Auto(conf::duration_of(item)?),
                }
            }
            "cipher_suites" | "curve_preferences" | "min_version" => {
                warnings.push(format!("{}: tls {name} is not configurable here; rustls defaults apply", item.pos))
            }
            "verify_and_map"
            | "verify_cert_and_check_known_urls"
            | "pinned_certs"
            | "insecure"
            | "cert_store"
            | "cert_match"
            | "cert_match_by"
            | "ocsp_peer" => return Err(invalid(item, format!("tls {name} is not supported yet"))),
            _ => return Err(invalid(item, format!("unknown field \"{name}\" in tls"))),
        }
    }
    let missing =
        |what| ConfigError::Invalid { pos: Pos::file_only("tls".into()), message: format!("tls needs {what}") };
    if need_cert || cert.is_some() || key.is_some() {
        tls.cert_file = cert.ok_or_else(|| missing("cert_file"))?;
        tls.key_file = key.ok_or_else(|| missing("key_file"))?;
    }
    Ok(tls)
}

/// One entry of `users`: a name with a password, or an nkey.
enum Login {
    Password(User),
    Nkey(NkeyUser),
}

/// A `permissions {}` block.
fn permissions(map: &Map) -> Result<Permissions, ConfigError> {
    let mut p = Permissions::default();
    for (key, item) in map.iter() {
        match key.to_ascii_lowercase().as_str() {
            "publish" | "pub" => p.publish = Some(subject_rules(item)?),
            "subscribe" | "sub" => p.subscribe = Some(subject_rules(item)?),
            "allow_responses" | "allow_resp" => {
                p.allow_responses = match &item.value {
                    Value::Bool(true) => Some(ResponsePermission::default()),
                    Value::Bool(false) => None,
                    Value::Map(m) => {
                        let mut r = ResponsePermission::default();
                        for (k, v) in m.iter() {
                            match k.to_ascii_lowercase().as_str() {
                                "max" => {
                                    r.max = u32::try_from(v.expect_integer()?)
                                        .map_err(|_| invalid(v, "max out of range"))?
                                }
                                "expires" | "ttl" => r.expires = conf::duration_of(v)?,
                                _ => return Err(invalid(v, format!("unknown field \"{k}\" in allow_responses"))),
                            }
                        }
                        Some(r)
                    }
                    other => return Err(invalid(item, format!("expected a bool or map, found {}", other.type_name()))),
                }
            }
            _ => return Err(invalid(item, format!("unknown field \"{key}\" in permissions"))),
        }
    }
    Ok(p)
}

/// `"subj"`, `["a", "b"]` (allow lists) or `{ allow: ..., deny: ... }`.
fn subject_rules(item: &Item) -> Result<SubjectRules, ConfigError> {
    fn list(item: &Item) -> Result<Vec<Rule>, ConfigError> {
        match &item.value {
            Value::String(s) => Ok(vec![Rule::parse(s)]),
            Value::Array(items) => items.iter().map(|i| Ok(Rule::parse(i.expect_str()?))).collect(),
            other => Err(invalid(item, format!("expected a subject or a list, found {}", other.type_name()))),
        }
    }
    match &item.value {
        Value::Map(m) => {
            let mut rules = SubjectRules::default();
            for (k, v) in m.iter() {
                match k.to_ascii_lowercase().as_str() {
                    "allow" => rules.allow = Some(list(v)?),
                    "deny" => rules.deny = list(v)?,
                    _ => return Err(invalid(v, format!("unknown field \"{k}\" in permissions"))),
                }
            }
            Ok(rules)
        }
        _ => Ok(SubjectRules { allow: Some(list(item)?), deny: Vec::new() }),
    }
}

fn user(entry: &Item) -> Result<Login, ConfigError> {
    let map = entry.expect_map()?;
    let mut name = None;
    let mut password = String::new();
    let mut nkey = None;
    let mut perms = None;
    for (key, item) in map.iter() {
        match key.to_ascii_lowercase().as_str() {
            "user" | "username" => name = Some(item.expect_str()?.to_string()),
            "password" | "pass" => password = item.expect_str()?.to_string(),
            "nkey" => {
                let key = item.expect_str()?;
                if !key.starts_with('U') || nkeys::KeyPair::from_public_key(key).is_err() {
                    return Err(invalid(item, format!("not a user nkey: {key}")));
                }
                nkey = Some(key.to_string());
            }
            "permissions" => perms = Some(permissions(item.expect_map()?)?),
            "allowed_connection_types" => return Err(invalid(item, format!("{key}: not supported yet"))),
            _ => return Err(invalid(item, format!("unknown field \"{key}\" in user"))),
        }
    }
    match (nkey, name) {
        (Some(nkey), _) => Ok(Login::Nkey(NkeyUser { nkey, permissions: perms })),
        (None, Some(name)) => Ok(Login::Password(User { name, password, permissions: perms })),
        (None, None) => Err(invalid(entry, "a user needs a name or an nkey")),
    }
}

/// An operator JWT given inline, or as the path of a file holding it (plain or armored).
fn jwt_text(item: &Item) -> Result<String, ConfigError> {
    let text = item.expect_str()?;
    if text.starts_with("eyJ") {
        return Ok(text.to_string());
    }
    let contents =
        std::fs::read_to_string(text).map_err(|e| invalid(item, format!("reading operator JWT {text}: {e}")))?;
    contents
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("eyJ"))
        .map(str::to_string)
        .ok_or_else(|| invalid(item, format!("no JWT in {text}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn load(text: &str) -> Result<(Options, Vec<String>), ConfigError> {
        let map = conf::parse_str(text, "test.conf", None)?;
        let mut opts = Options::default();
        let warnings = apply(&map, &mut opts)?;
        Ok((opts, warnings))
    }

    #[test]
    fn maps_main_settings() {
        let (o, w) = load(
            "listen: 127.0.0.1:4333\nserver_name: edge-1\nmax_payload: 128KB\nmax_pending: 1MB\n\
             max_connections: 10\nmax_subscriptions: 5\nping_interval: \"30s\"\nping_max: 3\n\
             write_deadline: \"2s\"\nmax_control_line: 1024\ndebug: true\n",
        )
        .unwrap();
        assert!(w.is_empty());
        assert_eq!((o.host.as_str(), o.port), ("127.0.0.1", 4333));
        assert_eq!(o.server_name, "edge-1");
        assert_eq!(o.max_payload, 128 * 1024);
        assert_eq!(o.max_pending, 1024 * 1024);
        assert_eq!((o.max_connections, o.max_subscriptions), (10, 5));
        assert_eq!(o.ping_interval, Duration::from_secs(30));
        assert_eq!(o.ping_max, 3);
        assert_eq!(o.write_deadline, Duration::from_secs(2));
        assert_eq!(o.max_control_line, 1024);
        assert!(o.debug);
    }

    #[test]
    fn maps_authorization() {
        let (o, _) = load("authorization { user: derek, password: s3cr3t, timeout: 1 }").unwrap();
        assert_eq!(
            o.authorization.users,
            vec![User { name: "derek".into(), password: "s3cr3t".into(), permissions: None }]
        );
        assert_eq!(o.authorization.timeout, Some(Duration::from_secs(1)));
        let (o, _) = load("authorization { token: \"t\", timeout: \"2s\" }").unwrap();
        assert_eq!(o.authorization.token.as_deref(), Some("t"));
        let (o, _) = load("authorization { users = [ {user: a, password: b}, {user: c, pass: d} ] }").unwrap();
        assert_eq!(o.authorization.users.len(), 2);
    }

    #[test]
    fn maps_permissions() {
        let (o, _) = load(
            "authorization {\n default_permissions { publish: \"public.>\" }\n users = [\n\
             {user: a, password: b, permissions: {publish: {allow: [\"orders.>\"], deny: \"orders.secret\"},\n\
              subscribe: [\"replies.*\", \"jobs.* workers\"], allow_responses: {max: 3, expires: \"1m\"}}}\n\
             {user: c, password: d}\n ]\n}",
        )
        .unwrap();
        let a = o.authorization.users[0].permissions.clone().unwrap();
        assert!(a.can_publish(b"orders.new") && !a.can_publish(b"orders.secret") && !a.can_publish(b"x"));
        assert!(a.can_subscribe(b"jobs.1", Some(b"workers")) && !a.can_subscribe(b"jobs.1", None));
        assert_eq!(a.allow_responses, Some(ResponsePermission { max: 3, expires: Duration::from_secs(60) }));
        assert!(o.authorization.users[1].permissions.is_none());
        let d = o.authorization.default_permissions.unwrap();
        assert!(d.can_publish(b"public.x") && !d.can_publish(b"private"));
    }

    #[test]
    fn refuses_and_warns() {
        let err = load("port: 4222\nbogus: 1\n").unwrap_err().to_string();
        assert_eq!(err, "test.conf:2:8: unknown field \"bogus\"");
        assert!(load("tls { cert_file: x }").is_err(), "a key is needed too");
        let (o, _) =
            load("tls { cert_file: a.pem, key_file: b.pem, verify: true, handshake_first: 300ms, timeout: 2 }")
                .unwrap();
        let tls = o.tls.unwrap();
        assert!(tls.verify);
        assert_eq!(tls.handshake_first, HandshakeFirst::Auto(Duration::from_millis(300)));
        assert!(load("operator: eyJnotajwt").is_err());
        assert!(load("resolver_preload { A: x }").is_err());
        assert!(load("authorization { users = [ {nkey: UNOTAKEY} ] }").is_err());
        let (o, w) =
            load("jetstream { max_mem_store: 1MB, store_dir: \"/var/lib/courier\", sync_interval: always }").unwrap();
        assert!(w.is_empty());
        let js = o.jetstream.unwrap();
        assert_eq!(
            (js.max_memory, js.store_dir.as_deref()),
            (Some(1024 * 1024), Some(std::path::Path::new("/var/lib/courier")))
        );
        assert_eq!(js.sync_interval, SyncInterval::Always);
        let (o, _) = load("jetstream: enabled\nstore_dir: /tmp/s").unwrap();
        assert_eq!(o.jetstream.unwrap().store_dir.as_deref(), Some(std::path::Path::new("/tmp/s")));
        assert!(load("jetstream: false").unwrap().0.jetstream.is_none());
        assert!(load("jetstream { key: secret }").is_err(), "encryption is refused, not ignored");
        assert!(load("jetstream { bogus: 1 }").is_err());
        assert!(load("max_payload: 2MB\nmax_pending: 1MB").is_err());
        let (o, _) = load("PORT = 4999\nport: $PORT").unwrap();
        assert_eq!(o.port, 4999);
    }

    #[test]
    fn maps_mqtt_with_nats_servers_checks() {
        let (o, w) = load(
            "mqtt { listen: 127.0.0.1:1883, ack_wait: \"5s\", max_ack_pending: 100, stream_replicas: 1,\n\
             authorization { user: dev, password: pw, timeout: 3 } }",
        )
        .unwrap();
        let m = o.mqtt.unwrap();
        assert_eq!((m.host.as_deref(), m.port), (Some("127.0.0.1"), 1883));
        assert_eq!((m.ack_wait, m.max_ack_pending), (std::time::Duration::from_secs(5), 100));
        assert_eq!(m.authorization.unwrap().users[0].name, "dev");
        assert_eq!(w.len(), 1, "stream_replicas has no effect on one server: {w:?}");
        let (o, _) = load("mqtt { port: 1883, ack_wait: 0, max_ack_pending: 0 }").unwrap();
        assert_eq!(o.mqtt.unwrap(), MqttOptions { port: 1883, ..Default::default() }, "zero means the default");

        let err = |text: &str| load(text).unwrap_err().to_string();
        assert!(err("mqtt { port: 1883, max_ack_pending: 70000 }")
            .contains("invalid value 70000, should be in [0..65535] range"));
        assert!(err("mqtt { port: 1883, nope: 1 }").contains("unknown field \"nope\" in mqtt"));
        assert!(err("authorization { users: [{user: a, password: b}] }\nmqtt { port: 1, authorization { user: x, password: y } }")
            .contains("mqtt authentication username not compatible with presence of users/nkeys"));
        assert!(err("authorization { users: [{user: a, password: b}] }\nmqtt { port: 1, authorization { token: t } }")
            .contains("mqtt authentication token not compatible with presence of users/nkeys"));
        assert!(err("mqtt { port: 1, no_auth_user: ghost }").contains("no_auth_user: \"ghost\" not present as user"));
    }

    #[test]
    fn maps_cluster_as_nats_server_reads_it() {
        let (o, w) = load(
            "cluster { name: prod, listen: 127.0.0.1:6222, advertise: \"b.internal:6222\", no_advertise: true,\n\
             connect_retries: 3, routes: [\"nats-route://u:p@a:6222\", \"nats://c:6222\"],\n\
             authorization { user: route, password: s3cret, timeout: 2 } }",
        )
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        let c = o.cluster.unwrap();
        assert_eq!((c.name.as_deref(), c.host.as_deref(), c.port), (Some("prod"), Some("127.0.0.1"), 6222));
        assert_eq!((c.advertise.as_deref(), c.no_advertise, c.connect_retries), (Some("b.internal:6222"), true, 3));
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.user, Some(("route".into(), "s3cret".into())));
        let err = |text: &str| load(text).unwrap_err().to_string();
        assert!(err("cluster { routes: [\"http://x:1\"] }").contains("error parsing route url"));
        assert!(err("cluster { tls { cert_file: a, key_file: b } }").contains("cluster tls needs a ca_file"));
        assert!(err("cluster { pool_size: 3 }").contains("cluster pool_size is not supported yet"));
        assert!(err("cluster { nope: 1 }").contains("unknown field \"nope\" in cluster"));
    }
}

//! The JSON documents of nats-server's monitoring endpoints, field for field.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::connection::{ConnMeta, Connection, Kind};
use crate::format::{go_duration, rfc3339, uptime};
use crate::state::{ClosedConn, StateView};
use crate::sublist::Subscribable;

/// Resident memory and CPU time of this process, from /proc.
pub(crate) struct ProcessStats {
    /// Resident set size in bytes.
    pub(crate) rss: u64,
    /// User plus system CPU time.
    pub(crate) cpu: Duration,
}

pub(crate) fn process_stats() -> ProcessStats {
    // SAFETY: sysconf has no preconditions.
    let (page, ticks) = unsafe { (libc::sysconf(libc::_SC_PAGESIZE), libc::sysconf(libc::_SC_CLK_TCK)) };
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * page.max(1) as u64);
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .map_or(Duration::ZERO, |t| Duration::from_secs_f64(t as f64 / ticks.max(1) as f64));
    ProcessStats { rss, cpu }
}

/// CPU use between two /varz requests, as a percentage of one core.
#[derive(Default)]
pub(crate) struct CpuSampler {
    last: Mutex<Option<(Instant, Duration)>>,
}

impl CpuSampler {
    pub(crate) fn percent(&self, cpu: Duration) -> f64 {
        let now = Instant::now();
        let mut last = self.last.lock();
        let pct = match *last {
            Some((at, before)) if now > at => {
                let wall = (now - at).as_secs_f64();
                ((cpu.saturating_sub(before)).as_secs_f64() / wall * 100.0 * 10.0).round() / 10.0
            }
            _ => 0.0,
        };
        *last = Some((now, cpu));
        pct
    }
}

#[derive(Serialize)]
pub(crate) struct Varz {
    server_id: String,
    server_name: String,
    version: String,
    proto: u32,
    go: String,
    host: String,
    port: u16,
    max_connections: usize,
    ping_interval: u128,
    ping_max: u32,
    http_host: String,
    http_port: u16,
    http_base_path: String,
    https_port: u16,
    auth_timeout: f64,
    max_control_line: usize,
    max_payload: usize,
    max_pending: usize,
    cluster: ClusterVarz,
    gateway: Empty,
    leaf: LeafVarz,
    mqtt: Empty,
    websocket: Empty,
    jetstream: super::jsz::JsVarz,
    tls_timeout: f64,
    write_deadline: u128,
    start: String,
    now: String,
    uptime: String,
    mem: u64,
    cores: usize,
    gomaxprocs: usize,
    cpu: f64,
    connections: usize,
    total_connections: u64,
    routes: u64,
    remotes: u64,
    leafnodes: u64,
    in_msgs: u64,
    out_msgs: u64,
    in_bytes: u64,
    out_bytes: u64,
    slow_consumers: u64,
    stale_connections: u64,
    subscriptions: usize,
    config_load_time: String,
    system_account: String,
}

/// An empty JSON object, for features Courier does not serve.
#[derive(Serialize)]
struct Empty {}

pub(crate) fn varz(state: &StateView, sampler: &CpuSampler, js: Option<&crate::jetstream::JetStream>) -> Varz {
    let opts = state.opts();
    let info = state.info();
    let stats = state.stats();
    let process = process_stats();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let now = SystemTime::now();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    Varz {
        server_id: info.server_id,
        server_name: info.server_name,
        version: info.version,
        proto: info.proto,
        go: info.go,
        host: info.host,
        port: info.port,
        max_connections: opts.max_connections,
        ping_interval: opts.ping_interval.as_nanos(),
        ping_max: opts.ping_max,
        http_host: opts.host.clone(),
        http_port: state.monitor_port(),
        http_base_path: String::new(),
        https_port: 0,
        auth_timeout: opts.authorization.timeout.unwrap_or(opts.auth_timeout).as_secs_f64(),
        max_control_line: opts.max_control_line,
        max_payload: opts.max_payload,
        max_pending: opts.max_pending,
        cluster: cluster_varz(state),
        gateway: Empty {},
        leaf: leaf_varz(state),
        mqtt: Empty {},
        websocket: Empty {},
        jetstream: super::jsz::varz(js),
        tls_timeout: opts.tls.as_ref().map_or(2.0, |t| t.timeout.as_secs_f64()),
        write_deadline: opts.write_deadline.as_nanos(),
        start: rfc3339(state.start()),
        now: rfc3339(now),
        uptime: uptime(now.duration_since(state.start()).unwrap_or_default()),
        mem: process.rss,
        cores,
        gomaxprocs: if opts.worker_threads > 0 { opts.worker_threads } else { cores },
        cpu: sampler.percent(process.cpu),
        connections: stats.connections.load(Ordering::Relaxed),
        total_connections: load(&stats.total_connections),
        routes: state.count(Kind::Router) as u64,
        remotes: state.count(Kind::Router) as u64,
        leafnodes: state.count(Kind::Leaf) as u64,
        in_msgs: load(&stats.in_msgs),
        out_msgs: load(&stats.out_msgs),
        in_bytes: load(&stats.in_bytes),
        out_bytes: load(&stats.out_bytes),
        slow_consumers: load(&stats.slow_consumers),
        stale_connections: load(&stats.stale_connections),
        subscriptions: state.subscriptions(),
        config_load_time: rfc3339(state.start()),
        system_account: opts.system_account.clone(),
    }
}

/// How /connz sorts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SortBy {
    Cid,
    Start,
    Subs,
    Pending,
    MsgsTo,
    MsgsFrom,
    BytesTo,
    BytesFrom,
    Last,
    Idle,
    Uptime,
    Stop,
    Reason,
}

/// Which connections /connz lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    Open,
    Closed,
    Any,
}

/// /connz query parameters.
#[derive(Debug, Clone)]
pub(crate) struct ConnzQuery {
    sort: SortBy,
    subs: bool,
    detail: bool,
    offset: usize,
    limit: usize,
    cid: Option<u64>,
    state: ConnState,
    auth: bool,
    /// Only connections of this account (`acc=`).
    account: Option<String>,
}

fn flag(v: &str) -> bool {
    matches!(v, "1" | "true" | "detail")
}

fn number(params: &HashMap<String, String>, key: &str) -> Result<Option<usize>, String> {
    params.get(key).map(|v| v.parse::<usize>().map_err(|_| format!("invalid {key}: {v:?}"))).transpose()
}

impl ConnzQuery {
    pub(crate) fn parse(params: &HashMap<String, String>) -> Result<ConnzQuery, String> {
        let sort = match params.get("sort").map(String::as_str) {
            None | Some("") | Some("cid") => SortBy::Cid,
            Some("start") => SortBy::Start,
            Some("subs") => SortBy::Subs,
            Some("pending") => SortBy::Pending,
            Some("msgs_to") => SortBy::MsgsTo,
            Some("msgs_from") => SortBy::MsgsFrom,
            Some("bytes_to") => SortBy::BytesTo,
            Some("bytes_from") => SortBy::BytesFrom,
            Some("last") => SortBy::Last,
            Some("idle") => SortBy::Idle,
            Some("uptime") => SortBy::Uptime,
            Some("stop") => SortBy::Stop,
            Some("reason") => SortBy::Reason,
            Some(other) => return Err(format!("Invalid sorting option: {other}")),
        };
        let state = match params.get("state").map(String::as_str) {
            None | Some("") | Some("open") => ConnState::Open,
            Some("closed") => ConnState::Closed,
            Some("any" | "all") => ConnState::Any,
            Some(other) => return Err(format!("Invalid connection state: {other}")),
        };
        if matches!(sort, SortBy::Stop | SortBy::Reason) && state == ConnState::Open {
            return Err("Sort by stop or reason is only valid for closed connections".into());
        }
        let subs = params.get("subs").map(String::as_str);
        Ok(ConnzQuery {
            sort,
            subs: subs.is_some_and(flag),
            detail: subs == Some("detail"),
            offset: number(params, "offset")?.unwrap_or(0),
            limit: number(params, "limit")?.filter(|&l| l > 0).unwrap_or(1024),
            cid: number(params, "cid")?.map(|c| c as u64),
            state,
            auth: params.get("auth").is_some_and(|v| flag(v)),
            account: params.get("acc").filter(|a| !a.is_empty()).cloned(),
        })
    }
}

#[derive(Serialize)]
pub(crate) struct Connz {
    server_id: String,
    now: String,
    num_connections: usize,
    total: usize,
    offset: usize,
    limit: usize,
    connections: Vec<ConnInfo>,
}

#[derive(Serialize, Clone)]
struct SubDetail {
    account: String,
    subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    qgroup: Option<String>,
    sid: String,
    msgs: u64,
    cid: u64,
}

#[derive(Serialize)]
struct ConnInfo {
    cid: u64,
    kind: &'static str,
    r#type: &'static str,
    ip: String,
    port: u16,
    start: String,
    last_activity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    rtt: String,
    uptime: String,
    idle: String,
    pending_bytes: usize,
    in_msgs: u64,
    out_msgs: u64,
    in_bytes: u64,
    out_bytes: u64,
    subscriptions: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    lang: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authorized_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mqtt_client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions_list: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions_list_detail: Option<Vec<SubDetail>>,
    /// Sort keys, not serialised.
    #[serde(skip)]
    keys: SortKeys,
}

#[derive(Default, Clone, Copy)]
struct SortKeys {
    start: u128,
    last: u64,
    stop: u128,
    reason: u8,
}

/// Everything about one connection, open or closed, before it is turned into JSON.
struct Snapshot {
    cid: u64,
    kind: Kind,
    meta: ConnMeta,
    pending: usize,
    in_msgs: u64,
    in_bytes: u64,
    out: (u64, u64),
    subscriptions: u64,
    last_activity: u64,
    rtt_nanos: u64,
    stop: Option<(SystemTime, String)>,
}

fn open_snapshot(c: &Connection) -> Snapshot {
    Snapshot {
        cid: c.cid,
        kind: c.kind,
        meta: c.meta.lock().clone(),
        pending: c.outbound.pending(),
        in_msgs: c.stats.in_msgs.load(Ordering::Relaxed),
        in_bytes: c.stats.in_bytes.load(Ordering::Relaxed),
        out: c.outbound.counters(),
        subscriptions: c.stats.subscriptions.load(Ordering::Relaxed),
        last_activity: c.stats.last_activity.load(Ordering::Relaxed),
        rtt_nanos: c.stats.rtt_nanos.load(Ordering::Relaxed),
        stop: None,
    }
}

fn closed_snapshot(c: &ClosedConn) -> Snapshot {
    Snapshot {
        cid: c.cid,
        kind: c.kind,
        meta: c.meta.clone(),
        pending: 0,
        in_msgs: c.in_msgs,
        in_bytes: c.in_bytes,
        out: c.out,
        subscriptions: c.subscriptions,
        last_activity: c.last_activity,
        rtt_nanos: c.rtt_nanos,
        stop: Some((c.stop, c.reason.to_string())),
    }
}

/// Subscriptions by connection id, from every account's trie.
fn subscriptions_by_client(state: &StateView) -> FxHashMap<u64, Vec<SubDetail>> {
    let mut by_cid: FxHashMap<u64, Vec<SubDetail>> = FxHashMap::default();
    for account in state.accounts() {
        for sub in account.sublist.all() {
            if matches!(sub.target, crate::delivery::Target::Client(_) | crate::delivery::Target::Mqtt(_)) {
                by_cid.entry(sub.target.cid()).or_default().push(detail(&account.name, &sub));
            }
        }
    }
    by_cid
}

fn detail(account: &str, sub: &crate::delivery::Subscription) -> SubDetail {
    SubDetail {
        account: account.to_string(),
        subject: String::from_utf8_lossy(sub.subject()).into_owned(),
        qgroup: sub.queue().map(|q| String::from_utf8_lossy(q).into_owned()),
        sid: String::from_utf8_lossy(&sub.sid).into_owned(),
        msgs: sub.delivered(),
        cid: sub.target.cid(),
    }
}

pub(crate) fn connz(state: &StateView, q: &ConnzQuery) -> Connz {
    let now = SystemTime::now();
    let mut snaps: Vec<Snapshot> = Vec::new();
    if q.state != ConnState::Closed {
        snaps.extend(state.connections(Kind::Client).iter().map(|c| open_snapshot(c)));
    }
    if q.state != ConnState::Open {
        snaps.extend(state.closed().iter().filter(|c| c.kind == Kind::Client).map(closed_snapshot));
    }
    if let Some(cid) = q.cid {
        snaps.retain(|s| s.cid == cid);
    }
    if let Some(account) = &q.account {
        snaps.retain(|s| &s.meta.account == account);
    }
    let subs = if q.subs { Some(subscriptions_by_client(state)) } else { None };
    let mut conns: Vec<ConnInfo> = snaps.into_iter().map(|s| conn_info(s, now, q, subs.as_ref())).collect();
    let key = |c: &ConnInfo| match q.sort {
        SortBy::Cid => u128::from(c.cid),
        SortBy::Start | SortBy::Uptime => c.keys.start,
        SortBy::Subs => u128::from(c.subscriptions),
        SortBy::Pending => c.pending_bytes as u128,
        SortBy::MsgsTo => u128::from(c.out_msgs),
        SortBy::MsgsFrom => u128::from(c.in_msgs),
        SortBy::BytesTo => u128::from(c.out_bytes),
        SortBy::BytesFrom => u128::from(c.in_bytes),
        SortBy::Last | SortBy::Idle => u128::from(c.keys.last),
        SortBy::Stop => c.keys.stop,
        SortBy::Reason => u128::from(c.keys.reason),
    };
    match q.sort {
        // Ascending: by id, oldest first (longest uptime), least recently active (most idle).
        SortBy::Cid | SortBy::Start | SortBy::Uptime | SortBy::Idle => conns.sort_by_key(|c| (key(c), c.cid)),
        _ => conns.sort_by_key(|c| (std::cmp::Reverse(key(c)), c.cid)),
    }
    let total = conns.len();
    let page: Vec<ConnInfo> = conns.into_iter().skip(q.offset).take(q.limit).collect();
    Connz {
        server_id: state.info().server_id,
        now: rfc3339(now),
        num_connections: page.len(),
        total,
        offset: q.offset,
        limit: q.limit,
        connections: page,
    }
}

fn conn_info(s: Snapshot, now: SystemTime, q: &ConnzQuery, subs: Option<&FxHashMap<u64, Vec<SubDetail>>>) -> ConnInfo {
    let start = s.meta.start.unwrap_or(now);
    let last = UNIX_EPOCH + Duration::from_nanos(s.last_activity);
    let end = s.stop.as_ref().map_or(now, |(t, _)| *t);
    let list = subs.map(|m| m.get(&s.cid).cloned().unwrap_or_default());
    let reason_rank = s.stop.as_ref().map_or(0, |(_, r)| r.bytes().next().unwrap_or(0));
    ConnInfo {
        cid: s.cid,
        kind: s.kind.as_str(),
        r#type: s.meta.client_type(),
        ip: s.meta.peer.map(|p| p.ip().to_string()).unwrap_or_default(),
        port: s.meta.peer.map_or(0, |p| p.port()),
        start: rfc3339(start),
        last_activity: rfc3339(last),
        stop: s.stop.as_ref().map(|(t, _)| rfc3339(*t)),
        reason: s.stop.as_ref().map(|(_, r)| r.clone()),
        rtt: if s.rtt_nanos > 0 { go_duration(Duration::from_nanos(s.rtt_nanos)) } else { String::new() },
        uptime: uptime(end.duration_since(start).unwrap_or_default()),
        idle: uptime(end.duration_since(last).unwrap_or_default()),
        pending_bytes: s.pending,
        in_msgs: s.in_msgs,
        out_msgs: s.out.0,
        in_bytes: s.in_bytes,
        out_bytes: s.out.1,
        subscriptions: s.subscriptions,
        name: s.meta.name,
        lang: s.meta.lang,
        version: s.meta.version,
        tls_version: s.meta.tls_version,
        authorized_user: if q.auth { s.meta.user } else { None },
        account: if q.auth { Some(s.meta.account) } else { None },
        mqtt_client: s.meta.mqtt_client.filter(|id| !id.is_empty()),
        subscriptions_list: if q.detail {
            None
        } else {
            list.as_ref().map(|l| l.iter().map(|d| d.subject.clone()).collect())
        },
        subscriptions_list_detail: if q.detail { list } else { None },
        keys: SortKeys {
            start: start.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
            last: s.last_activity,
            stop: end.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
            reason: reason_rank,
        },
    }
}

/// /subsz query parameters.
#[derive(Debug, Clone)]
pub(crate) struct SubszQuery {
    subs: bool,
    offset: usize,
    limit: usize,
    test: Option<String>,
    /// Only subscriptions of this account (`acc=`).
    account: Option<String>,
}

impl SubszQuery {
    pub(crate) fn parse(params: &HashMap<String, String>) -> Result<SubszQuery, String> {
        let test = params.get("test").filter(|t| !t.is_empty()).cloned();
        if let Some(t) = &test {
            if !crate::subject::is_valid_literal(t.as_bytes()) {
                return Err(format!("Bad test subject: {t}"));
            }
        }
        Ok(SubszQuery {
            subs: params.get("subs").is_some_and(|v| flag(v)),
            offset: number(params, "offset")?.unwrap_or(0),
            limit: number(params, "limit")?.filter(|&l| l > 0).unwrap_or(1024),
            test,
            account: params.get("acc").filter(|a| !a.is_empty()).cloned(),
        })
    }
}

#[derive(Serialize)]
pub(crate) struct Subsz {
    server_id: String,
    now: String,
    num_subscriptions: usize,
    num_cache: u64,
    num_inserts: u64,
    num_removes: u64,
    num_matches: u64,
    cache_hit_rate: f64,
    max_fanout: u64,
    avg_fanout: f64,
    total: usize,
    offset: usize,
    limit: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions_list: Option<Vec<SubDetail>>,
}

pub(crate) fn subsz(state: &StateView, q: &SubszQuery) -> Subsz {
    let (mut inserts, mut removes, mut matches, mut count) = (0, 0, 0, 0);
    let mut accounts = state.accounts();
    if let Some(name) = &q.account {
        accounts.retain(|a| &a.name == name);
    }
    for account in &accounts {
        let s = account.sublist.stats();
        inserts += s.inserts;
        removes += s.removes;
        matches += s.matches;
        count += s.count;
    }
    let stats = state.stats();
    let lookups = stats.lookups.load(Ordering::Relaxed);
    let hits = stats.cache_hits.load(Ordering::Relaxed);
    let in_msgs = stats.in_msgs.load(Ordering::Relaxed);
    let out_msgs = stats.out_msgs.load(Ordering::Relaxed);
    let mut list: Vec<SubDetail> = Vec::new();
    let mut total = count;
    if q.subs || q.test.is_some() {
        for account in &accounts {
            let subs = match &q.test {
                Some(t) => {
                    let m = account.sublist.matches(t.as_bytes());
                    let mut all = m.psubs;
                    all.extend(m.qsubs.into_iter().flat_map(|g| g.members));
                    all
                }
                None => account.sublist.all(),
            };
            list.extend(subs.iter().map(|s| detail(&account.name, s)));
        }
        list.sort_by(|a, b| (a.cid, &a.sid).cmp(&(b.cid, &b.sid)));
        total = list.len();
    }
    let page: Option<Vec<SubDetail>> =
        (q.subs || q.test.is_some()).then(|| list.into_iter().skip(q.offset).take(q.limit).collect());
    Subsz {
        server_id: state.info().server_id,
        now: rfc3339(SystemTime::now()),
        num_subscriptions: count,
        num_cache: 0,
        num_inserts: inserts,
        num_removes: removes,
        num_matches: matches,
        cache_hit_rate: if lookups > 0 { hits as f64 / lookups as f64 } else { 0.0 },
        max_fanout: stats.max_fanout.load(Ordering::Relaxed),
        avg_fanout: if in_msgs > 0 { out_msgs as f64 / in_msgs as f64 } else { 0.0 },
        total,
        offset: q.offset,
        limit: q.limit,
        subscriptions_list: page,
    }
}

#[derive(Serialize)]
pub(crate) struct Routez {
    server_id: String,
    now: String,
    num_routes: usize,
    routes: Vec<RouteJson>,
}

/// One route, as nats-server's `RouteInfo`.
#[derive(Serialize)]
struct RouteJson {
    rid: u64,
    remote_id: String,
    did_solicit: bool,
    is_configured: bool,
    ip: String,
    port: u16,
    start: String,
    last_activity: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    rtt: String,
    uptime: String,
    idle: String,
    pending_size: usize,
    in_msgs: u64,
    out_msgs: u64,
    in_bytes: u64,
    out_bytes: u64,
    subscriptions: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions_list: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions_list_detail: Option<Vec<SubDetail>>,
}

/// `/routez`; `subs` is `?subs=1` (subjects) or `?subs=detail`.
pub(crate) fn routez(state: &StateView, subs: Option<&str>) -> Routez {
    let now = SystemTime::now();
    let detail_wanted = subs.is_some_and(|s| s.eq_ignore_ascii_case("detail"));
    let list_wanted = subs.is_some_and(|s| s == "1" || s.eq_ignore_ascii_case("true"));
    let mut by_cid: FxHashMap<u64, Vec<SubDetail>> = FxHashMap::default();
    if detail_wanted || list_wanted {
        for account in state.accounts() {
            for sub in account.sublist.all() {
                if matches!(sub.target, crate::delivery::Target::Route(_)) {
                    let list = by_cid.entry(sub.target.cid()).or_default();
                    let d = detail(&account.name, &sub);
                    // A queue group's weight is several subscriptions here: one entry each.
                    if !list.iter().any(|x| x.subject == d.subject && x.qgroup == d.qgroup && x.account == d.account) {
                        list.push(d);
                    }
                }
            }
        }
    }
    let mut routes: Vec<RouteJson> = state
        .connections(crate::connection::Kind::Router)
        .iter()
        .filter_map(|c| {
            let meta = c.meta.lock().clone();
            let route = meta.route?;
            let start = meta.start.unwrap_or(now);
            let last = UNIX_EPOCH + Duration::from_nanos(c.stats.last_activity.load(Ordering::Relaxed));
            let rtt = c.stats.rtt_nanos.load(Ordering::Relaxed);
            let (out_msgs, out_bytes) = c.outbound.counters();
            let list = by_cid.remove(&c.cid);
            Some(RouteJson {
                rid: c.cid,
                remote_id: route.remote_id,
                did_solicit: route.solicited,
                is_configured: route.configured,
                ip: meta.peer.map(|p| p.ip().to_string()).unwrap_or_default(),
                port: meta.peer.map_or(0, |p| p.port()),
                start: rfc3339(start),
                last_activity: rfc3339(last),
                rtt: if rtt > 0 { go_duration(Duration::from_nanos(rtt)) } else { String::new() },
                uptime: uptime(now.duration_since(start).unwrap_or_default()),
                idle: uptime(now.duration_since(last).unwrap_or_default()),
                pending_size: c.outbound.pending(),
                in_msgs: c.stats.in_msgs.load(Ordering::Relaxed),
                out_msgs,
                in_bytes: c.stats.in_bytes.load(Ordering::Relaxed),
                out_bytes,
                subscriptions: route.subscriptions,
                subscriptions_list: if list_wanted {
                    Some(list.as_ref().map(|l| l.iter().map(|d| d.subject.clone()).collect()).unwrap_or_default())
                } else {
                    None
                },
                subscriptions_list_detail: if detail_wanted { Some(list.unwrap_or_default()) } else { None },
            })
        })
        .collect();
    routes.sort_by_key(|r| r.rid);
    Routez { server_id: state.info().server_id, now: rfc3339(now), num_routes: routes.len(), routes }
}

/// The `cluster` section of `/varz`.
#[derive(Serialize, Default)]
struct ClusterVarz {
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    addr: String,
    #[serde(skip_serializing_if = "is_zero_u16")]
    cluster_port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_timeout: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_timeout: Option<f64>,
}

fn is_zero_u16(n: &u16) -> bool {
    *n == 0
}

fn cluster_varz(state: &StateView) -> ClusterVarz {
    let opts = state.opts();
    let Some(c) = &opts.cluster else { return ClusterVarz::default() };
    ClusterVarz {
        name: state.cluster_name(),
        addr: c.host.clone().unwrap_or_else(|| opts.host.clone()),
        cluster_port: state.cluster_port(),
        auth_timeout: Some(c.auth_timeout.unwrap_or(opts.auth_timeout).as_secs_f64()),
        urls: c.routes.iter().filter_map(|r| crate::options::route_url::RouteUrl::parse(r)).map(|u| u.addr()).collect(),
        tls_timeout: Some(2.0),
    }
}

/// The `leaf` section of `/varz`, as nats-server's `LeafNodeOptsVarz`.
#[derive(Serialize, Default)]
pub(crate) struct LeafVarz {
    #[serde(skip_serializing_if = "String::is_empty")]
    host: String,
    #[serde(skip_serializing_if = "is_zero_u16")]
    port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_timeout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_timeout: Option<f64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tls_required: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tls_verify: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    remotes: Vec<RemoteLeafVarz>,
}

#[derive(Serialize)]
struct RemoteLeafVarz {
    #[serde(skip_serializing_if = "String::is_empty")]
    local_account: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_timeout: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deny: Option<DenyRules>,
}

#[derive(Serialize)]
struct DenyRules {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    exports: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    imports: Vec<String>,
}

fn leaf_varz(state: &StateView) -> LeafVarz {
    let opts = state.opts();
    let Some(l) = &opts.leafnodes else { return LeafVarz::default() };
    LeafVarz {
        host: if l.port.is_some() { l.host.clone().unwrap_or_else(|| opts.host.clone()) } else { String::new() },
        port: state.leaf_port(),
        auth_timeout: l.port.map(|_| l.auth_timeout.unwrap_or(opts.auth_timeout).as_secs_f64()),
        tls_timeout: l.port.map(|_| l.tls.as_ref().map_or(2.0, |t| t.timeout.as_secs_f64())),
        tls_required: l.tls.is_some(),
        tls_verify: l.tls.as_ref().is_some_and(|t| t.verify),
        remotes: l
            .remotes
            .iter()
            .map(|r| RemoteLeafVarz {
                local_account: r.local_account().to_string(),
                tls_timeout: r.tls.as_ref().map(|t| t.timeout.as_secs_f64()),
                urls: r.urls.iter().map(|u| u.addr()).collect(),
                deny: (!r.deny_exports.is_empty() || !r.deny_imports.is_empty())
                    .then(|| DenyRules { exports: r.deny_exports.clone(), imports: r.deny_imports.clone() }),
            })
            .collect(),
    }
}

/// `/leafz`, as nats-server's `Leafz`.
#[derive(Serialize)]
pub(crate) struct Leafz {
    server_id: String,
    now: String,
    leafnodes: usize,
    leafs: Option<Vec<LeafJson>>,
}

/// One leaf link in `/leafz`, as nats-server's `LeafInfo`.
#[derive(Serialize)]
struct LeafJson {
    account: String,
    ip: String,
    port: u16,
    #[serde(skip_serializing_if = "String::is_empty")]
    rtt: String,
    in_msgs: u64,
    out_msgs: u64,
    in_bytes: u64,
    out_bytes: u64,
    subscriptions: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions_list: Option<Vec<String>>,
}

pub(crate) fn leafz(state: &StateView, subs: bool, account: Option<&str>) -> Leafz {
    let mut by_cid: FxHashMap<u64, Vec<String>> = FxHashMap::default();
    if subs {
        for acc in state.accounts() {
            for sub in acc.sublist.all() {
                if let crate::delivery::Target::Leaf(_) | crate::delivery::Target::Hub(_) = sub.target {
                    let list = by_cid.entry(sub.target.cid()).or_default();
                    let subject = String::from_utf8_lossy(&sub.subject).into_owned();
                    // A queue group's weight is several subscriptions here: one entry.
                    if !list.contains(&subject) {
                        list.push(subject);
                    }
                }
            }
        }
    }
    let mut links: Vec<(u64, LeafJson)> = state
        .connections(crate::connection::Kind::Leaf)
        .iter()
        .filter_map(|c| {
            let meta = c.meta.lock().clone();
            let leaf = meta.leaf?;
            if account.is_some_and(|a| a != meta.account) {
                return None;
            }
            let rtt = c.stats.rtt_nanos.load(Ordering::Relaxed);
            let (out_msgs, out_bytes) = c.outbound.counters();
            Some((
                c.cid,
                LeafJson {
                    account: meta.account,
                    ip: meta.peer.map(|p| p.ip().to_string()).unwrap_or_default(),
                    port: meta.peer.map_or(0, |p| p.port()),
                    rtt: go_duration(Duration::from_nanos(rtt)),
                    in_msgs: c.stats.in_msgs.load(Ordering::Relaxed),
                    out_msgs,
                    in_bytes: c.stats.in_bytes.load(Ordering::Relaxed),
                    out_bytes,
                    subscriptions: leaf.subscriptions,
                    subscriptions_list: subs.then(|| by_cid.remove(&c.cid).unwrap_or_default()),
                },
            ))
        })
        .collect();
    links.sort_by_key(|(cid, _)| *cid);
    let leafs: Vec<LeafJson> = links.into_iter().map(|(_, l)| l).collect();
    Leafz {
        server_id: state.info().server_id,
        now: rfc3339(SystemTime::now()),
        leafnodes: leafs.len(),
        leafs: (!leafs.is_empty()).then_some(leafs),
    }
}

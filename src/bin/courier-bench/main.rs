//! `courier-bench`: a load generator for any server that speaks the NATS client protocol
//! (Courier or nats-server), over loopback only.
//!
//! It speaks the raw text protocol itself over tokio instead of using a full client library, so
//! that the client side stays leaner than the server and is not the bottleneck: publishers batch
//! many PUB frames into one buffer per write, and readers parse MSG/HMSG/PING/PONG/INFO/+OK/-ERR
//! incrementally from one read buffer without allocating per message. By default everything runs
//! on a single-threaded runtime, so the bench fits on one core.
//!
//! Scenarios (subcommands): `pub`, `pubsub` (alias `sub`), `fanout`, `fanin`, `queue`,
//! `request`, `wildcard`, `churn`, `jspub`, `jsconsume`, `conns`, and `compare`, which runs a scenario against two server commands in turn
//! and reports medians, the ratio B/A and the run-to-run noise.
//!
//! Every run is bounded by a message count and a duration, and only loopback servers
//! (127.0.0.0/8, ::1, localhost) are accepted. Correctness is checked as load runs: lost,
//! duplicated, out-of-order and misrouted messages are counted and reported loudly, with exit
//! status 2.
//!
//! With `--rate`, publishers (and requesters) send on a fixed schedule: each busy-waits on the
//! bench's thread and hands every message to the socket as it comes due, stamped with its
//! scheduled time, so latency counts any delay from the schedule on (no coordinated omission) and
//! the bench's own lateness is measured and reported beside it. Reports carry HDR percentiles to
//! p99.99 and the maximum, latency over time, steal time per CPU, and for request-reply the
//! PING/PONG floor; `--json` is one line led by a `schema` name.
//!
//! Payload layout: bytes 0..8 carry the send timestamp (nanoseconds since a process-wide epoch)
//! and bytes 8..16 the publisher id and sequence number, when the payload is large enough.

mod compare;
mod consume;
mod jetstream;
mod load;
mod mqtt;
mod over_time;
mod plot;
mod progress;
mod proto;
mod report;
mod scenarios;
mod stats;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::scenarios::{Kind, Spec};

/// Load-test a NATS-protocol server (Courier or nats-server) over loopback.
#[derive(Debug, Parser)]
#[command(name = "courier-bench", version)]
struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    command: Command,
}

/// Payload contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadPattern {
    /// All zero bytes (besides the timestamp and sequence number).
    Zeros,
    /// Seeded random bytes (besides the timestamp and sequence number).
    Random,
}

/// Flags shared by every scenario.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Server URL, `nats://` (TCP) or `ws://` (WebSocket, frames masked as a browser sends
    /// them); only loopback hosts are accepted (127.0.0.0/8, ::1, localhost).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub server: String,
    /// Where subscribers and responders connect, for routed scenarios: another server of the
    /// same cluster as --server (publishers and requesters stay on --server).
    #[arg(long)]
    pub sub_server: Option<String>,
    /// The server's process id: report its CPU time (and memory for `conns`) from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Messages per publisher (requests per requester) [default: 1000000; 100000 for request].
    #[arg(long, short = 'n')]
    pub msgs: Option<u64>,
    /// Payload size in bytes (8+ for latency, 16+ for sequence checks).
    #[arg(long, short = 's', default_value_t = 16)]
    pub size: usize,
    /// Stop sending after this long even if --msgs is not reached (e.g. 500ms, 10s, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Open loop: send at this many messages (requests) per second in total, and measure
    /// latency from each message's scheduled send time (no coordinated omission).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Leave messages sent in the first this long out of the latency figures (connections,
    /// caches and the CPU's clock settle first; the plot over time still shows them).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Payload bytes.
    #[arg(long, value_enum, default_value_t = PayloadPattern::Zeros)]
    pub payload: PayloadPattern,
    /// Seed for random payloads and the wildcard subject sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Subject for pub, pubsub, fanout, queue and request.
    #[arg(long, default_value = "bench.subject")]
    pub subject: String,
    /// Runtime threads; 1 runs every connection on one thread.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print the report as one line of JSON (its `schema` field names the format).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print the report as CSV (a header line and one row).
    #[arg(long)]
    pub csv: bool,
    /// Write an SVG with the latency percentile curve, latency over time and throughput over
    /// time.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Write the latency percentile spectrum as CSV (percentile, µs) to FILE.
    #[arg(long, value_name = "FILE")]
    pub percentiles_csv: Option<PathBuf>,
    /// Write latency over time as CSV (interval end, count, p50, p99, max) to FILE.
    #[arg(long, value_name = "FILE")]
    pub over_time_csv: Option<PathBuf>,
    /// No progress bar or notes; results only.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// The scenarios.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// P publishers publish N messages each as fast as possible (until the server answers a
    /// final PING on every connection).
    Pub {
        /// Shared flags.
        #[command(flatten)]
        common: Common,
        /// Publishers.
        #[arg(long, default_value_t = 1)]
        pubs: usize,
    },
    /// P publishers and M subscribers on one subject: every subscriber must get P*N messages.
    #[command(visible_alias = "sub")]
    Pubsub {
        /// Shared flags.
        #[command(flatten)]
        common: Common,
        /// Publishers.
        #[arg(long, default_value_t = 1)]
        pubs: usize,
        /// Subscribers.
        #[arg(long, default_value_t = 1)]
        subs: usize,
    },
    /// One publisher, M subscribers.
    Fanout {
        /// Shared flags.
        #[command(flatten)]
        common: Common,
        /// Subscribers.
        #[arg(long, default_value_t = 4)]
        subs: usize,
    },
    /// One publisher, M members of one queue group: together they must get exactly N.
    Queue {
        /// Shared flags.
        #[command(flatten)]
        common: Common,
        /// Queue group members.
        #[arg(long, visible_alias = "members", default_value_t = 4)]
        subs: usize,
        /// Queue group name.
        #[arg(long, default_value = "bench-group")]
        group: String,
    },
    /// K requesters (one muxed wildcard inbox each) and R responders in a queue group;
    /// round-trip latency per request.
    Request {
        /// Shared flags.
        #[command(flatten)]
        common: Common,
        /// Concurrent requesters.
        #[arg(long, default_value_t = 1)]
        requesters: usize,
        /// Responders (one queue group).
        #[arg(long, default_value_t = 1)]
        responders: usize,
        /// Outstanding requests per requester (closed loop; not used with --rate).
        #[arg(long, default_value_t = 1)]
        inflight: u64,
        /// Responders' queue group name.
        #[arg(long, default_value = "bench-responders")]
        group: String,
    },
    /// Messages to many subjects `bench.<a>.<b>` chosen at random (seeded); subscribers on
    /// `bench.*.<b>`, `bench.<a>.*` and `bench.>` must get exactly what their filter matches.
    Wildcard {
        /// Shared flags.
        #[command(flatten)]
        common: Common,
        /// The subjects and who publishes and subscribes to them.
        #[command(flatten)]
        space: SpaceArgs,
    },
    /// P publishers (8 by default) on one subject and one subscriber, which must get P*N.
    Fanin {
        /// Shared flags.
        #[command(flatten)]
        common: Common,
        /// Publishers.
        #[arg(long, default_value_t = 8)]
        pubs: usize,
    },
    /// The wildcard scenario while other clients subscribe and unsubscribe continuously (SUB
    /// and UNSUB of the published subjects, in batches of 64 pairs, each confirmed by PING):
    /// reports message throughput and SUB/UNSUB pairs per second.
    Churn {
        /// Shared flags.
        #[command(flatten)]
        common: Common,
        /// The subjects and who publishes and subscribes to them.
        #[command(flatten)]
        space: SpaceArgs,
        /// Clients that subscribe and unsubscribe.
        #[arg(long, default_value_t = 1)]
        churners: usize,
        /// Every Nth churned subscription is a wildcard `bench.<a>.*` (0: literal only).
        #[arg(long, default_value_t = 0)]
        wildcard_every: u64,
        /// SUB/UNSUB pairs per second in total, so that every server does the same subscription
        /// work (0: as fast as the server confirms them, which trades churn for throughput).
        #[arg(long, default_value_t = 1000.0)]
        churn_rate: f64,
    },
    /// Publish N messages into a fresh JetStream stream (subject --subject), K acknowledgements
    /// in flight: 1 is a synchronous publish, more an asynchronous one. Needs a server with
    /// JetStream on (-js).
    Jspub {
        /// Shared flags.
        #[command(flatten)]
        common: Common,
        /// Publishes awaiting their acknowledgement at once.
        #[arg(long, default_value_t = 1)]
        inflight: u64,
        /// Where the stream keeps messages.
        #[arg(long, default_value = "file", value_parser = ["file", "memory"])]
        storage: String,
    },
    /// Fill a fresh JetStream stream with N messages (untimed), then read them all back through
    /// one consumer: pull (explicit acks, --batch per request), push (explicit acks), ordered,
    /// or workqueue (--subs workers on a workqueue stream). Reports the consumer's lag as it
    /// goes. Needs a server with JetStream on (-js).
    Jsconsume {
        /// Shared flags.
        #[command(flatten)]
        common: Common,
        /// How the stream is read.
        #[arg(long, default_value = "pull", value_parser = ["pull", "push", "ordered", "workqueue"])]
        mode: String,
        /// Messages per pull request.
        #[arg(long, default_value_t = 100)]
        batch: u64,
        /// Workers, for workqueue.
        #[arg(long, default_value_t = 4)]
        subs: usize,
        /// Where the stream keeps messages.
        #[arg(long, default_value = "file", value_parser = ["file", "memory"])]
        storage: String,
    },
    /// Open N idle connections (CONNECT + PING/PONG each) and report the server's memory
    /// before and after (needs --server-pid).
    Conns {
        /// Shared flags.
        #[command(flatten)]
        common: Common,
        /// Connections to open.
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// Keep the connections open this long after measuring (bounded by --duration).
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        hold: Duration,
    },
    /// MQTT: D devices publish N messages in all on `bench/<device>/t` (QoS 0 or 1, a window
    /// at a time), one subscriber on `bench/+/t` must get every one. Use an `mqtt://` server.
    MqttTelemetry {
        /// Shared flags.
        #[command(flatten)]
        common: Common,
        /// Devices publishing.
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        /// QoS of the publishes and the subscription.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
        qos: u8,
        /// Publishes a device sends before it waits for their PUBACKs (QoS 1) or a PINGRESP
        /// (QoS 0).
        #[arg(long, default_value_t = 10)]
        window: usize,
    },
    /// MQTT: open N idle device connections (CONNECT + CONNACK each) and report the server's
    /// memory before and after (needs --server-pid). Use an `mqtt://` server.
    MqttConns {
        /// Shared flags.
        #[command(flatten)]
        common: Common,
        /// Connections to open.
        #[arg(long, default_value_t = 1000)]
        conns: usize,
        /// Keep the connections open this long after measuring (bounded by --duration).
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        hold: Duration,
    },
    /// Run a scenario against two server commands in turn (A B A B ...) and compare.
    ///
    /// Example: courier-bench compare --a "nats-server -a 127.0.0.1 -p {port}"
    /// --b "target/release/courier -a 127.0.0.1 -p {port}" --runs 5 -- pubsub --size 16
    Compare(CompareArgs),
}

/// The subject space of `wildcard` and `churn`.
#[derive(Debug, Clone, Args)]
pub struct SpaceArgs {
    /// Distinct subjects.
    #[arg(long, default_value_t = 10_000)]
    pub subjects: usize,
    /// Filtered subscribers (alternating `bench.*.<b>` and `bench.<a>.*`), plus one `bench.>`.
    #[arg(long, default_value_t = 4)]
    pub subs: usize,
    /// Publishers.
    #[arg(long, default_value_t = 1)]
    pub pubs: usize,
}

/// Flags of `compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Command line of server A; `{port}` is replaced by a free loopback port.
    #[arg(long)]
    pub a: String,
    /// Command line of server B; `{port}` is replaced by a free loopback port.
    #[arg(long)]
    pub b: String,
    /// Runs per server.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Print the comparison as JSON.
    #[arg(long)]
    pub json: bool,
    /// How long a server may take to accept connections.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub startup_timeout: Duration,
    /// Do not pin the servers to CPU 0 and the bench to CPU 1.
    #[arg(long)]
    pub no_pin: bool,
    /// Load the servers over WebSocket on this loopback port (their configurations listen
    /// there). With commands holding `{ws_port}`, a free port is chosen each run instead.
    #[arg(long)]
    pub ws_port: Option<u16>,
    /// A second server for A, in the same cluster, where the scenario's subscribers and
    /// responders connect (routed scenarios). `{port}` is its client port, `{cluster_port}` its
    /// route port and `{peer_cluster_port}` the first server's, which gets the same
    /// placeholders the other way round.
    #[arg(long, requires = "b2")]
    pub a2: Option<String>,
    /// A second server for B, as --a2.
    #[arg(long, requires = "a2")]
    pub b2: Option<String>,
    /// Load the servers' MQTT listeners on this loopback port (their configurations listen
    /// there); with commands holding `{mqtt_port}`, a free port is chosen each run instead. For
    /// a broker with only an MQTT port (mosquitto), `{port}` is that port.
    #[arg(long)]
    pub mqtt_port: Option<u16>,
    /// The scenario and its flags, after `--` (its --server and --server-pid are replaced).
    #[arg(last = true, required = true, value_name = "SCENARIO")]
    pub scenario: Vec<String>,
}

/// Parses `500ms`, `10s`, `2m`, `1.5s` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("invalid duration {s:?} (try 500ms, 10s, 2m)"))?;
    if !v.is_finite() || v < 0.0 || v * scale > 86_400.0 {
        return Err(format!("duration {s:?} out of range (0 to 24h)"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// Resolves a server URL (`nats://` for TCP, `ws://` for WebSocket) to a loopback endpoint,
/// refusing anything else.
pub fn endpoint(url: &str) -> Result<proto::Endpoint> {
    let websocket = url.split_once("://").is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("ws"));
    let mut addr = loopback_addr(url)?;
    if websocket && !url.rsplit_once('@').map_or(url, |(_, h)| h).trim_start_matches("ws://").contains(':') {
        addr.set_port(80);
    }
    Ok(proto::Endpoint { addr, websocket })
}

/// Resolves a server URL to a loopback socket address, refusing anything else.
pub fn loopback_addr(url: &str) -> Result<SocketAddr> {
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if ["nats", "ws", "mqtt"].iter().any(|s| scheme.eq_ignore_ascii_case(s)) => rest,
        Some((scheme, _)) => {
            bail!(
                "unsupported scheme {scheme}:// in --server {url}: only nats:// (plain TCP), ws:// (WebSocket) and mqtt://"
            )
        }
        None => url,
    };
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h).trim_end_matches('/');
    let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
        let (h, p) = r.split_once(']').ok_or_else(|| anyhow!("bad --server {url}: unclosed '['"))?;
        (h, p.strip_prefix(':'))
    } else if hostport.matches(':').count() > 1 {
        (hostport, None)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse().map_err(|_| {
            anyhow!(
                "refusing --server {url}: host {host:?} is not a loopback address; courier-bench only \
                 targets 127.0.0.0/8, ::1 or localhost"
            )
        })?
    };
    if !ip.is_loopback() {
        bail!(
            "refusing --server {url}: {ip} is not a loopback address; courier-bench only targets 127.0.0.0/8, \
             ::1 or localhost"
        );
    }
    let mqtt = url.split_once("://").is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("mqtt"));
    let port = match port {
        Some(p) => p.parse::<u16>().with_context(|| format!("bad port {p:?} in --server {url}"))?,
        None if mqtt => 1883,
        None => 4222,
    };
    Ok(SocketAddr::new(ip, port))
}

/// Turns a parsed scenario command into a [`Spec`] and its shared flags.
fn build_spec(cmd: &Command) -> Result<(Spec, Common)> {
    let (kind, common) = match cmd {
        Command::Pub { common, .. } => (Kind::Pub, common),
        Command::Pubsub { common, .. } => (Kind::Pubsub, common),
        Command::Fanout { common, .. } => (Kind::Fanout, common),
        Command::Queue { common, .. } => (Kind::Queue, common),
        Command::Request { common, .. } => (Kind::Request, common),
        Command::Wildcard { common, .. } => (Kind::Wildcard, common),
        Command::Conns { common, .. } => (Kind::Conns, common),
        Command::Fanin { common, .. } => (Kind::Fanin, common),
        Command::Churn { common, .. } => (Kind::Churn, common),
        Command::Jspub { common, .. } => (Kind::Jspub, common),
        Command::Jsconsume { common, .. } => (Kind::Jsconsume, common),
        Command::MqttTelemetry { common, .. } => (Kind::MqttTelemetry, common),
        Command::MqttConns { common, .. } => (Kind::MqttConns, common),
        Command::Compare(_) => bail!("compare cannot be nested"),
    };
    let addr = endpoint(&common.server)?;
    let sub_addr = match &common.sub_server {
        Some(url) => endpoint(url)?,
        None => addr,
    };
    if common.size > 64 * 1024 * 1024 {
        bail!("--size is limited to 64 MiB");
    }
    if let Some(r) = common.rate {
        if !(r.is_finite() && r > 0.0) {
            bail!("--rate must be a positive number of messages per second");
        }
    }
    if common.warmup >= common.duration {
        bail!("--warmup must be shorter than --duration");
    }
    if common.threads == 0 || common.threads > 64 {
        bail!("--threads must be between 1 and 64");
    }
    if common.subject.is_empty() || common.subject.contains(char::is_whitespace) {
        bail!("--subject must be a non-empty subject without spaces");
    }
    let default_msgs = if matches!(kind, Kind::Request | Kind::Jspub | Kind::Jsconsume) { 100_000 } else { 1_000_000 };
    let msgs = common.msgs.unwrap_or(default_msgs);
    if msgs == 0 || msgs >= 1 << 40 {
        bail!("--msgs must be between 1 and 2^40");
    }
    let mut spec = Spec {
        kind,
        server: common.server.clone(),
        addr,
        sub_addr,
        server_pid: common.server_pid,
        msgs,
        size: common.size,
        duration: common.duration,
        warmup: common.warmup,
        rate: common.rate,
        random_payload: common.payload == PayloadPattern::Random,
        seed: common.seed,
        subject: common.subject.clone(),
        pubs: 1,
        subs: 1,
        group: String::new(),
        requesters: 1,
        responders: 1,
        inflight: 1,
        subjects: 0,
        conns: 0,
        hold: Duration::ZERO,
        progress: !common.quiet && !common.json && !common.csv,
        churners: 0,
        wildcard_every: 0,
        churn_rate: None,
        storage: String::new(),
        consume_mode: String::new(),
        batch: 100,
        devices: 0,
        qos: 0,
        window: 1,
    };
    match cmd {
        Command::Pub { pubs, .. } => spec.pubs = *pubs,
        Command::Pubsub { pubs, subs, .. } => (spec.pubs, spec.subs) = (*pubs, *subs),
        Command::Fanout { subs, .. } => spec.subs = *subs,
        Command::Queue { subs, group, .. } => (spec.subs, spec.group) = (*subs, group.clone()),
        Command::Request { requesters, responders, inflight, group, .. } => {
            (spec.requesters, spec.responders, spec.inflight, spec.group) =
                (*requesters, *responders, *inflight, group.clone())
        }
        Command::Wildcard { space, .. } => {
            (spec.subjects, spec.subs, spec.pubs) = (space.subjects, space.subs, space.pubs)
        }
        Command::Conns { conns, hold, .. } => (spec.conns, spec.hold) = (*conns, *hold),
        Command::Fanin { pubs, .. } => spec.pubs = *pubs,
        Command::Churn { space, churners, wildcard_every, churn_rate, .. } => {
            if !(churn_rate.is_finite() && *churn_rate >= 0.0) || *churners == 0 {
                bail!("--churn-rate must be 0 or more and --churners at least 1");
            }
            (spec.subjects, spec.subs, spec.pubs, spec.churners, spec.wildcard_every) =
                (space.subjects, space.subs, space.pubs, *churners, *wildcard_every);
            spec.churn_rate = (*churn_rate > 0.0).then_some(*churn_rate);
        }
        Command::Jspub { inflight, storage, .. } => (spec.inflight, spec.storage) = (*inflight, storage.clone()),
        Command::Jsconsume { mode, batch, subs, storage, .. } => {
            if *batch == 0 || *batch > 10_000 {
                bail!("--batch must be between 1 and 10000");
            }
            (spec.consume_mode, spec.batch, spec.subs, spec.storage) = (mode.clone(), *batch, *subs, storage.clone())
        }
        Command::MqttTelemetry { devices, qos, window, .. } => {
            (spec.devices, spec.qos, spec.window) = (*devices, *qos, *window)
        }
        Command::MqttConns { conns, hold, .. } => (spec.conns, spec.hold) = (*conns, *hold),
        Command::Compare(_) => unreachable!(),
    }
    if spec.subs > 10_000 || spec.pubs > 10_000 || spec.requesters > 10_000 || spec.responders > 10_000 {
        bail!("at most 10000 publishers, subscribers, requesters or responders");
    }
    if spec.inflight > 1_000_000 {
        bail!("--inflight is limited to 1000000");
    }
    Ok((spec, common.clone()))
}

/// Parses a scenario given as words (for `compare`).
pub fn parse_scenario(words: &[String]) -> Result<(Spec, Common)> {
    let cli = Cli::try_parse_from(std::iter::once("courier-bench".to_string()).chain(words.iter().cloned()))
        .map_err(|e| anyhow!("in the scenario after --: {e}"))?;
    build_spec(&cli.command)
}

/// The tokio runtime: current-thread for 1 thread, otherwise a small multi-thread one.
pub fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
    };
    Ok(rt)
}

/// Runs one scenario and prints its report; exit status 2 on a correctness failure.
fn run_scenario(cmd: &Command) -> Result<ExitCode> {
    let (spec, common) = build_spec(cmd)?;
    let rt = runtime(common.threads)?;
    let report = rt.block_on(scenarios::run(&spec))?;
    if common.json {
        println!("{}", report::json_line(&report)?);
    } else if common.csv {
        println!("{}", report::CSV_HEADER);
        println!("{}", report::csv_row(&report));
    } else {
        let mut text = report::human(&report);
        if common.quiet {
            text = text.lines().filter(|l| !l.starts_with("note: ")).map(|l| format!("{l}\n")).collect();
        }
        print!("{text}");
    }
    if let Some(path) = &common.percentiles_csv {
        std::fs::write(path, report::percentiles_csv(&report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &common.over_time_csv {
        std::fs::write(path, report::over_time_csv(&report)).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &common.plot {
        plot::write_svg(path, &report)?;
        if !common.quiet && !common.json && !common.csv {
            println!("plot written to {}", path.display());
        }
    }
    if let Some(banner) = report::failure_banner(&report.checks) {
        eprint!("{banner}");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    stats::init_epoch();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Compare(args) => compare::run(args),
        cmd => run_scenario(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("courier-bench: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_only() {
        assert_eq!(loopback_addr("nats://127.0.0.1:4222").unwrap().port(), 4222);
        assert!(loopback_addr("127.1.2.3:5").unwrap().ip().is_loopback());
        assert!(loopback_addr("nats://localhost").unwrap().ip().is_loopback());
        assert!(loopback_addr("nats://[::1]:4222").unwrap().ip().is_loopback());
        assert!(loopback_addr("::1").unwrap().ip().is_loopback());
        assert!(loopback_addr("nats://user:pw@127.0.0.1:1").is_ok());
        let ws = endpoint("ws://127.0.0.1:8080").unwrap();
        assert!(ws.websocket && ws.addr.port() == 8080);
        assert!(!endpoint("nats://127.0.0.1:4222").unwrap().websocket);
        for bad in ["nats://10.0.0.1:4222", "192.168.1.1", "nats://example.com:4222", "tls://127.0.0.1", "[::2]:1"] {
            let err = loopback_addr(bad).unwrap_err().to_string();
            assert!(err.contains("loopback") || err.contains("scheme"), "{bad}: {err}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn scenario_words_parse() {
        let words: Vec<String> = ["pubsub", "--size", "32", "--subs", "2"].iter().map(|s| s.to_string()).collect();
        let (spec, _) = parse_scenario(&words).unwrap();
        assert_eq!((spec.kind, spec.size, spec.subs), (Kind::Pubsub, 32, 2));
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

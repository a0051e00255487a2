//! The scenarios: each sets up its connections, runs the load tasks, and turns what they saw into
//! a [`Report`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::load::{
    run_churner, run_publisher, run_requester, run_responder, run_subscriber, ChurnTask, Expect, Filter, PubTask,
    ReqTask, SubTask, SubjectSpace,
};
use crate::over_time::LatencyOverTime;
use crate::progress::Sampler;
use crate::proto::{pub_prefix, Conn};
use crate::report::{Floor, Memory, Report, Spread};
use crate::stats::{
    nanos_since_epoch, new_histogram, proc_cpu_seconds, proc_rss_kb, self_cpu_seconds, steal_ms_by_cpu, Checks,
    Latency, Recorder, SeqSeen,
};

/// Extra time past --duration for the server to catch up before a run is abandoned.
const HARD_GRACE: Duration = Duration::from_secs(30);

/// Which scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Publishers only.
    Pub,
    /// Publishers and subscribers on one subject.
    Pubsub,
    /// One publisher, many subscribers.
    Fanout,
    /// One publisher, one queue group.
    Queue,
    /// Request-reply through a queue group of responders.
    Request,
    /// Many subjects, wildcard subscribers.
    Wildcard,
    /// Idle connections and server memory.
    Conns,
    /// Many publishers, one subscriber.
    Fanin,
    /// Publishers on many subjects while other clients subscribe and unsubscribe continuously.
    Churn,
    /// Publishing into a JetStream stream with acknowledgements.
    Jspub,
    /// Reading a JetStream stream through a consumer.
    Jsconsume,
    /// MQTT devices publishing telemetry to one wildcard subscriber.
    MqttTelemetry,
    /// Idle MQTT connections and server memory.
    MqttConns,
}

impl Kind {
    /// The scenario's name as shown in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pub => "pub",
            Kind::Pubsub => "pubsub",
            Kind::Fanout => "fanout",
            Kind::Queue => "queue",
            Kind::Request => "request",
            Kind::Wildcard => "wildcard",
            Kind::Conns => "conns",
            Kind::Fanin => "fanin",
            Kind::Churn => "churn",
            Kind::Jspub => "jspub",
            Kind::Jsconsume => "jsconsume",
            Kind::MqttTelemetry => "mqtt-telemetry",
            Kind::MqttConns => "mqtt-conns",
        }
    }
}

/// A fully resolved scenario: what to run and against which server.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The scenario.
    pub kind: Kind,
    /// The server URL as given.
    pub server: String,
    /// The server's loopback socket address.
    pub addr: crate::proto::Endpoint,
    /// Where subscribers and responders connect: another server of the same cluster for
    /// routed scenarios, else `addr`.
    pub sub_addr: crate::proto::Endpoint,
    /// The server's process id, for CPU and memory readings.
    pub server_pid: Option<u32>,
    /// Messages per publisher (requests per requester).
    pub msgs: u64,
    /// Payload bytes.
    pub size: usize,
    /// Stop sending new messages after this long.
    pub duration: Duration,
    /// Messages sent in the first this long are not counted in the latency figures.
    pub warmup: Duration,
    /// Total messages (or requests) per second, open loop; `None` for as fast as possible.
    pub rate: Option<f64>,
    /// Random payload bytes instead of zeros.
    pub random_payload: bool,
    /// Seed for payloads and wildcard subject choice.
    pub seed: u64,
    /// The subject for pub, pubsub, fanout, queue and request.
    pub subject: String,
    /// Publishers.
    pub pubs: usize,
    /// Subscribers, queue members or wildcard filter subscribers.
    pub subs: usize,
    /// Queue group name.
    pub group: String,
    /// Requesters.
    pub requesters: usize,
    /// Responders.
    pub responders: usize,
    /// Outstanding requests per requester.
    pub inflight: u64,
    /// Distinct subjects in the wildcard scenario.
    pub subjects: usize,
    /// Idle connections to open.
    pub conns: usize,
    /// How long to hold idle connections open.
    pub hold: Duration,
    /// Show a progress bar (when stderr is a terminal).
    pub progress: bool,
    /// Clients that subscribe and unsubscribe continuously (churn).
    pub churners: usize,
    /// Every this many churned subscriptions, a wildcard one (0: literal only).
    pub wildcard_every: u64,
    /// SUB/UNSUB pairs per second in total; `None` for as fast as the server confirms them.
    pub churn_rate: Option<f64>,
    /// JetStream storage for jspub and jsconsume: "file" or "memory".
    pub storage: String,
    /// jsconsume: "pull", "push", "ordered" or "workqueue".
    pub consume_mode: String,
    /// jsconsume: messages per pull request.
    pub batch: u64,
    /// mqtt-telemetry: devices publishing.
    pub devices: usize,
    /// mqtt-telemetry: the QoS of publishes and of the subscription.
    pub qos: u8,
    /// mqtt-telemetry: publishes a device sends before it waits for the broker.
    pub window: usize,
}

/// How long routed scenarios wait for the route between their two servers.
const ROUTE_WAIT: Duration = Duration::from_secs(15);

/// CPU readings at the start of the measurement.
pub(crate) struct Meter {
    client0: f64,
    server0: Option<f64>,
    pid: Option<u32>,
    steal0: Vec<u64>,
    started: Instant,
}

impl Meter {
    /// Reads both CPU counters now.
    pub(crate) fn start(pid: Option<u32>) -> Result<Meter> {
        let server0 = pid.map(proc_cpu_seconds).transpose().context("reading the server's CPU time (--server-pid)")?;
        Ok(Meter { client0: self_cpu_seconds(), server0, pid, steal0: steal_ms_by_cpu(), started: Instant::now() })
    }

    /// Milliseconds of steal per CPU since [`Meter::start`], with a note when the hypervisor
    /// took more than 1% of the run from any CPU.
    pub(crate) fn steal(&self, notes: &mut Vec<String>) -> Vec<u64> {
        let now = steal_ms_by_cpu();
        let steal: Vec<u64> = now.iter().zip(&self.steal0).map(|(b, a)| b.saturating_sub(*a)).collect();
        let run_ms = self.started.elapsed().as_millis() as u64;
        if steal.iter().any(|&ms| ms * 100 > run_ms) {
            let per_cpu: Vec<String> = steal.iter().enumerate().map(|(i, ms)| format!("CPU {i} {ms} ms")).collect();
            notes.push(format!(
                "steal: the hypervisor took {} of this {run_ms} ms run; tails include those pauses",
                per_cpu.join(", ")
            ));
        }
        steal
    }

    /// CPU seconds used since [`Meter::start`] by this process and by the server.
    pub(crate) fn stop(&self, notes: &mut Vec<String>) -> (f64, Option<f64>) {
        let client = self_cpu_seconds() - self.client0;
        let server = match (self.pid, self.server0) {
            (Some(pid), Some(s0)) => match proc_cpu_seconds(pid) {
                Ok(s1) => Some(s1 - s0),
                Err(e) => {
                    notes.push(format!("server CPU not measured: {e:#}"));
                    None
                }
            },
            _ => None,
        };
        (client, server)
    }
}

/// Runs a scenario.
pub async fn run(spec: &Spec) -> Result<Report> {
    match spec.kind {
        Kind::Pub | Kind::Pubsub | Kind::Fanout | Kind::Queue | Kind::Wildcard | Kind::Fanin | Kind::Churn => {
            run_pubsub(spec).await
        }
        Kind::Request => run_request(spec).await,
        Kind::Jspub => crate::jetstream::run_jspub(spec).await,
        Kind::Jsconsume => crate::consume::run_jsconsume(spec).await,
        Kind::Conns => run_conns(spec).await,
        Kind::MqttTelemetry => crate::mqtt::run_telemetry(spec).await,
        Kind::MqttConns => crate::mqtt::run_conns(spec).await,
    }
}

/// The payload every message starts from (stamps are written over its first 16 bytes).
fn template(spec: &Spec) -> Arc<Vec<u8>> {
    let mut v = vec![0u8; spec.size];
    if spec.random_payload {
        StdRng::seed_from_u64(spec.seed).fill_bytes(&mut v);
    }
    Arc::new(v)
}

/// Builds the wildcard scenario's subjects and each publisher's seeded choice among them.
fn subject_space(spec: &Spec, pubs: usize) -> Result<SubjectSpace> {
    let n = spec.subjects;
    if n == 0 || n > 10_000_000 {
        bail!("--subjects must be between 1 and 10000000");
    }
    let width = ((n as f64).sqrt().ceil() as u32).max(1);
    let names = (0..n as u32).map(|i| format!("bench.{}.{}", i / width, i % width).into_bytes()).collect();
    let choice = (0..pubs)
        .map(|p| {
            let mut rng = StdRng::seed_from_u64(spec.seed.wrapping_add(p as u64));
            Arc::new((0..spec.msgs).map(|_| rng.gen_range(0..n as u32)).collect::<Vec<u32>>())
        })
        .collect();
    Ok(SubjectSpace { width, names, choice })
}

/// Adds notes about what the payload size allows to be checked.
fn size_notes(size: usize, notes: &mut Vec<String>) {
    if size < 8 {
        notes.push("latency not measured: payloads under 8 bytes carry no timestamp".into());
    }
    if size < 16 {
        notes.push(
            "loss/duplicate/order checked by count only: payloads under 16 bytes carry no sequence number".into(),
        );
    }
}

/// Receivers that keep their latency over time (the rest only add to the percentiles).
const OVER_TIME_RECEIVERS: usize = 8;

/// The recorder for receiver number `i` of a run that starts at `start`.
fn recorder(spec: &Spec, start: Instant, i: usize) -> Recorder {
    let over_time = (i < OVER_TIME_RECEIVERS).then(|| LatencyOverTime::new(nanos_since_epoch(start), spec.duration));
    Recorder::new(warm_until_ns(spec, start), over_time)
}

/// When the warm-up of a run that starts at `start` ends, in shared epoch nanoseconds.
fn warm_until_ns(spec: &Spec, start: Instant) -> u64 {
    nanos_since_epoch(start + spec.warmup)
}

/// How late the publisher handed paced messages to the socket (nothing in closed-loop runs), and
/// a warning when that is large enough to matter next to the latencies measured.
fn pacing(lag: &hdrhistogram::Histogram<u64>, latency: Option<&Latency>, notes: &mut Vec<String>) -> Option<Latency> {
    let l = Latency::from_histogram(lag)?;
    notes.push(format!(
        "pacing: messages handed to the socket p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs after their scheduled time (counted in the latency)",
        l.p50_us, l.p99_us, l.p999_us, l.max_us
    ));
    if let Some(lat) = latency {
        if l.p99_us > 0.5 * lat.p99_us.max(lat.p50_us * 2.0) {
            notes.push(
                "pacing: the publisher itself ran late for a good part of the tail; the bench or the machine, not only the server, is in these figures (pin the bench to its own CPU, lower --rate)"
                    .into(),
            );
        }
    }
    Some(l)
}

/// pub, pubsub, fanout, queue and wildcard.
async fn run_pubsub(spec: &Spec) -> Result<Report> {
    let kind = spec.kind;
    let (pubs, subs) = match kind {
        Kind::Pub => (spec.pubs, 0),
        Kind::Pubsub => (spec.pubs, spec.subs),
        Kind::Fanout | Kind::Queue => (1, spec.subs),
        Kind::Wildcard | Kind::Churn => (spec.pubs, spec.subs + 1),
        Kind::Fanin => (spec.pubs, 1),
        Kind::Request | Kind::Conns | Kind::Jspub | Kind::Jsconsume | Kind::MqttTelemetry | Kind::MqttConns => {
            unreachable!()
        }
    };
    if pubs == 0 || pubs > usize::from(u16::MAX) {
        bail!("--pubs must be between 1 and 65535");
    }
    if kind != Kind::Pub && subs == 0 {
        bail!("--subs must be at least 1");
    }
    let many_subjects = matches!(kind, Kind::Wildcard | Kind::Churn);
    if many_subjects && spec.size < 16 {
        bail!("wildcard and churn need --size 16 or more (payloads carry the sequence number used for routing checks)");
    }
    let mut notes = Vec::new();
    size_notes(spec.size, &mut notes);
    if let Some(r) = spec.rate {
        notes.push(format!("open loop at {r} msgs/s in total; latency counted from scheduled send times"));
    } else if kind != Kind::Pub && spec.size >= 8 {
        notes.push("closed loop: latency includes queueing behind the publishers' backlog (use --rate for latency at a given load)".into());
    }

    let space = if many_subjects { Some(Arc::new(subject_space(spec, pubs)?)) } else { None };
    let prefixes: Arc<Vec<Vec<u8>>> = Arc::new(match &space {
        Some(s) => s.names.iter().map(|n| pub_prefix(std::str::from_utf8(n).expect("ascii"), spec.size)).collect(),
        None => vec![pub_prefix(&spec.subject, spec.size)],
    });

    // Subscribers first, each confirmed by the server before any publisher starts.
    let group_count = Arc::new(AtomicU64::new(0));
    let group_notify = Arc::new(Notify::new());
    let mut sub_conns = Vec::with_capacity(subs);
    let mut filters = Vec::with_capacity(subs);
    for j in 0..subs {
        let mut conn = Conn::connect(spec.sub_addr, spec.size).await?;
        let filter = space.as_ref().map(|s| {
            if j == subs - 1 {
                Filter::All
            } else if j % 2 == 0 {
                Filter::LastIs(j as u32 % s.width)
            } else {
                Filter::MiddleIs(j as u32 % (s.names.len() as u32).div_ceil(s.width))
            }
        });
        let subject = filter.map_or_else(|| spec.subject.clone(), |f| f.subject());
        let queue = (kind == Kind::Queue).then_some(spec.group.as_str());
        conn.subscribe(&subject, queue, 1).await?;
        sub_conns.push(conn);
        filters.push(filter);
    }
    let mut pub_conns = Vec::with_capacity(pubs);
    for _ in 0..pubs {
        pub_conns.push(Conn::connect(spec.addr, spec.size).await?);
    }
    if let (Some(first), Some(sub)) = (pub_conns.first_mut(), sub_conns.first_mut()) {
        if spec.sub_addr != spec.addr {
            first.await_route(sub, ROUTE_WAIT).await?;
        }
    }
    let mut churn_conns = Vec::new();
    if kind == Kind::Churn {
        for _ in 0..spec.churners {
            churn_conns.push(Conn::connect(spec.addr, spec.size).await?);
        }
    }

    let sent: Arc<Vec<Arc<AtomicU64>>> = Arc::new((0..pubs).map(|_| Arc::new(AtomicU64::new(0))).collect());
    let progress = Arc::new(AtomicU64::new(0));
    let total_units = match (&space, kind) {
        (_, Kind::Pub) | (_, Kind::Queue) => pubs as u64 * spec.msgs,
        (Some(s), _) => {
            let full = vec![spec.msgs; pubs];
            filters.iter().flatten().map(|f| f.expected(s, &full)).sum()
        }
        (None, _) => pubs as u64 * spec.msgs * subs as u64,
    };
    let (done_tx, done_rx) = watch::channel(false);
    let template = template(spec);
    let meter = Meter::start(spec.server_pid)?;
    let start = Instant::now();
    let deadline = start + spec.duration;
    let hard = deadline + HARD_GRACE;
    let sampler = Sampler::start(progress.clone(), total_units, start, spec.progress, "msgs");

    let mut sub_tasks = Vec::with_capacity(subs);
    for (conn, filter) in sub_conns.into_iter().zip(&filters) {
        let expect = match (kind, filter, &space) {
            (Kind::Queue, _, _) => Expect::Group(group_count.clone(), group_notify.clone()),
            (_, Some(f), Some(s)) => Expect::Filtered(s.clone(), *f),
            _ => Expect::All,
        };
        let t = SubTask {
            pubs,
            size: spec.size,
            expect,
            sent: sent.clone(),
            done: done_rx.clone(),
            hard,
            progress: progress.clone(),
            recorder: recorder(spec, start, sub_tasks.len()),
        };
        sub_tasks.push(tokio::spawn(run_subscriber(conn, t)));
    }
    let mut churn_tasks = Vec::new();
    for (i, conn) in churn_conns.into_iter().enumerate() {
        let Some(space) = &space else { break };
        let t = ChurnTask {
            space: space.clone(),
            seed: spec.seed.wrapping_add(1000 + i as u64),
            wildcard_every: spec.wildcard_every,
            rate: spec.churn_rate.map(|r| r / spec.churners as f64),
            done: done_rx.clone(),
            hard,
        };
        churn_tasks.push(tokio::spawn(run_churner(conn, t)));
    }
    let per_pub_rate = spec.rate.map(|r| r / pubs as f64);
    let mut pub_tasks = Vec::with_capacity(pubs);
    for (id, conn) in pub_conns.into_iter().enumerate() {
        let t = PubTask {
            id: id as u16,
            count: spec.msgs,
            prefixes: prefixes.clone(),
            choice: space.as_ref().map(|s| s.choice[id].clone()),
            template: template.clone(),
            rate: per_pub_rate,
            start,
            warm_until_ns: warm_until_ns(spec, start),
            deadline,
            hard,
            sent: sent[id].clone(),
            progress: (kind == Kind::Pub).then(|| progress.clone()),
        };
        pub_tasks.push(tokio::spawn(run_publisher(conn, t)));
    }

    let mut checks = Checks::default();
    let mut end = start;
    let mut lag = new_histogram();
    for task in pub_tasks {
        match task.await {
            Ok(Ok(o)) => {
                checks.add(&o.checks);
                let _ = lag.add(&o.lag);
                if kind == Kind::Pub {
                    end = end.max(o.flushed);
                }
            }
            Ok(Err(e)) => checks.error(format!("publisher: {e:#}")),
            Err(e) => checks.error(format!("publisher task: {e}")),
        }
    }
    let _ = done_tx.send(true);
    let mut churned = 0u64;
    let mut churn_end = start;
    for task in churn_tasks {
        match task.await {
            Ok(Ok(o)) => {
                churned += o.pairs;
                churn_end = churn_end.max(o.stopped);
                checks.add(&o.checks);
            }
            Ok(Err(e)) => checks.error(format!("churner: {e:#}")),
            Err(e) => checks.error(format!("churner task: {e}")),
        }
    }
    let churn_per_sec = (kind == Kind::Churn).then(|| {
        let secs = churn_end.saturating_duration_since(start).as_secs_f64();
        if secs > 0.0 {
            churned as f64 / secs
        } else {
            0.0
        }
    });
    if kind == Kind::Churn {
        notes.push(format!(
            "churn: {churned} SUB/UNSUB pairs by {} client(s), {:.0} pairs/s",
            spec.churners,
            churn_per_sec.unwrap_or(0.0)
        ));
    }
    let mut outcomes = Vec::with_capacity(subs);
    for task in sub_tasks {
        match task.await {
            Ok(Ok(o)) => outcomes.push(Some(o)),
            Ok(Err(e)) => {
                checks.error(format!("subscriber: {e:#}"));
                outcomes.push(None);
            }
            Err(e) => {
                checks.error(format!("subscriber task: {e}"));
                outcomes.push(None);
            }
        }
    }
    let timeline = sampler.finish().await;
    let (client_cpu_s, server_cpu_s) = meter.stop(&mut notes);
    let steal_ms = meter.steal(&mut notes);

    let sent_by_pub: Vec<u64> = sent.iter().map(|s| s.load(Ordering::Relaxed)).collect();
    let published: u64 = sent_by_pub.iter().sum();
    let tagged = spec.size >= 16;
    let mut latency = Recorder::new(0, None);
    let mut received = 0u64;
    let mut members = Vec::new();
    let mut merged = vec![SeqSeen::default(); pubs];
    for (o, filter) in outcomes.iter().zip(&filters) {
        let expected = match (filter, &space) {
            (Some(f), Some(s)) => f.expected(s, &sent_by_pub),
            _ => published,
        };
        let Some(o) = o else {
            if kind != Kind::Queue {
                checks.lost += expected;
            }
            members.push(0);
            continue;
        };
        received += o.received;
        members.push(o.received);
        if let Some(t) = o.last_recv {
            end = end.max(t);
        }
        checks.add(&o.checks);
        checks.misrouted += o.misrouted;
        latency.merge(&o.latency);
        if kind == Kind::Queue {
            for (m, s) in merged.iter_mut().zip(&o.seen) {
                m.merge(s);
            }
        } else if tagged {
            let distinct: u64 = o.seen.iter().map(|s| s.distinct).sum();
            checks.lost += expected.saturating_sub(distinct);
            checks.duplicated += o.seen.iter().map(|s| s.duplicated).sum::<u64>();
            checks.out_of_order += o.seen.iter().map(|s| s.out_of_order).sum::<u64>();
        } else {
            checks.lost += expected.saturating_sub(o.received);
            checks.duplicated += o.received.saturating_sub(expected);
        }
    }
    if kind == Kind::Queue {
        if tagged {
            let distinct: u64 = merged.iter().map(|s| s.distinct).sum();
            checks.lost += published.saturating_sub(distinct);
            checks.duplicated += merged.iter().map(|s| s.duplicated).sum::<u64>();
            checks.out_of_order += merged.iter().map(|s| s.out_of_order).sum::<u64>();
        } else {
            checks.lost += published.saturating_sub(received);
            checks.duplicated += received.saturating_sub(published);
        }
    }
    let msgs = if kind == Kind::Pub { published } else { received };
    let elapsed_s = end.saturating_duration_since(start).as_secs_f64();
    let per_sec = |n: u64| if elapsed_s > 0.0 { n as f64 / elapsed_s } else { 0.0 };
    let lat = Latency::from_histogram(&latency.hist);
    let pacing = pacing(&lag, lat.as_ref(), &mut notes);
    warmup_note(spec, lat.as_ref(), &mut notes);
    let hist = latency.hist;
    Ok(Report {
        scenario: kind.name().to_string(),
        server: spec.server.clone(),
        msgs,
        published,
        received,
        size: spec.size,
        elapsed_s,
        msgs_per_sec: per_sec(msgs),
        mb_per_sec: per_sec(msgs) * spec.size as f64 / 1e6,
        latency: lat,
        client_cpu_s,
        server_cpu_s,
        checks,
        stopped_by_duration: published < pubs as u64 * spec.msgs,
        spread: (kind == Kind::Queue).then(|| Spread::new(members)),
        memory: None,
        churn_per_sec,
        timeline,
        notes,
        pacing,
        steal_ms,
        warmup_s: spec.warmup.as_secs_f64(),
        latency_over_time: latency.over_time.map(|o| o.samples()).unwrap_or_default(),
        histogram: (!hist.is_empty()).then_some(hist),
        ..Report::default()
    })
}

/// A random token for inbox subjects.
fn inbox_token(rng: &mut StdRng) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..22).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

/// Request-reply: requesters with muxed inboxes, responders in a queue group.
async fn run_request(spec: &Spec) -> Result<Report> {
    let (k, r) = (spec.requesters, spec.responders);
    if k == 0 || k > usize::from(u16::MAX) || r == 0 {
        bail!("--requesters must be 1..65535 and --responders at least 1");
    }
    if spec.size < 16 {
        bail!("request needs --size 16 or more (payloads carry the timestamp and sequence number)");
    }
    if spec.inflight == 0 {
        bail!("--inflight must be at least 1");
    }
    let mut notes = Vec::new();
    match spec.rate {
        Some(rate) => {
            notes.push(format!("open loop at {rate} req/s in total; latency counted from scheduled send times"))
        }
        None => notes.push(format!("closed loop with {} request(s) in flight per requester", spec.inflight)),
    }
    if r > 1 {
        notes.push("reply order not checked: several responders may answer out of order".into());
    }
    let mut resp_conns = Vec::with_capacity(r);
    for _ in 0..r {
        let mut c = Conn::connect(spec.sub_addr, spec.size).await?;
        c.subscribe(&spec.subject, Some(&spec.group), 1).await?;
        resp_conns.push(c);
    }
    let mut rng = StdRng::from_entropy();
    let mut req_conns = Vec::with_capacity(k);
    for _ in 0..k {
        let mut c = Conn::connect(spec.addr, spec.size).await?;
        let inbox = format!("_INBOX.{}.", inbox_token(&mut rng));
        c.subscribe(&format!("{inbox}*"), None, 1).await?;
        req_conns.push((c, inbox));
    }
    if let (Some((first, _)), Some(resp)) = (req_conns.first_mut(), resp_conns.first_mut()) {
        if spec.sub_addr != spec.addr {
            first.await_route(resp, ROUTE_WAIT).await?;
        }
    }
    // The floor: PING/PONG round trips on the first requester's connection, before the load.
    let floor = match req_conns.first_mut() {
        Some((c, _)) => Some(ping_round_trips(c, FLOOR_PINGS).await?),
        None => None,
    };
    let progress = Arc::new(AtomicU64::new(0));
    let template = template(spec);
    let (done_tx, done_rx) = watch::channel(false);
    let meter = Meter::start(spec.server_pid)?;
    let start = Instant::now();
    let deadline = start + spec.duration;
    let hard = deadline + HARD_GRACE;
    let sampler = Sampler::start(progress.clone(), k as u64 * spec.msgs, start, spec.progress, "replies");
    let responders: Vec<_> =
        resp_conns.into_iter().map(|c| tokio::spawn(run_responder(c, done_rx.clone(), hard))).collect();
    let per_rate = spec.rate.map(|x| x / k as f64);
    let requesters: Vec<_> = req_conns
        .into_iter()
        .enumerate()
        .map(|(id, (c, inbox))| {
            let t = ReqTask {
                id: id as u16,
                count: spec.msgs,
                inflight: spec.inflight,
                rate: per_rate,
                subject: spec.subject.clone(),
                inbox,
                template: template.clone(),
                start,
                deadline,
                hard,
                progress: progress.clone(),
                warm_until_ns: warm_until_ns(spec, start),
                over_time: id < OVER_TIME_RECEIVERS,
            };
            tokio::spawn(run_requester(c, t))
        })
        .collect();
    let mut checks = Checks::default();
    let mut latency = Recorder::new(0, None);
    let mut lag = new_histogram();
    let (mut published, mut received) = (0u64, 0u64);
    let mut end = start;
    for t in requesters {
        match t.await {
            Ok(Ok(o)) => {
                published += o.sent;
                received += o.received;
                checks.add(&o.checks);
                checks.misrouted += o.misrouted;
                checks.lost += o.sent.saturating_sub(o.seen.distinct);
                checks.duplicated += o.seen.duplicated;
                if r == 1 {
                    checks.out_of_order += o.seen.out_of_order;
                }
                latency.merge(&o.latency);
                let _ = lag.add(&o.lag);
                if let Some(t) = o.last_recv {
                    end = end.max(t);
                }
            }
            Ok(Err(e)) => checks.error(format!("requester: {e:#}")),
            Err(e) => checks.error(format!("requester task: {e}")),
        }
    }
    let _ = done_tx.send(true);
    let mut members = Vec::with_capacity(r);
    for t in responders {
        match t.await {
            Ok(Ok((handled, c))) => {
                members.push(handled);
                checks.add(&c);
            }
            Ok(Err(e)) => checks.error(format!("responder: {e:#}")),
            Err(e) => checks.error(format!("responder task: {e}")),
        }
    }
    let timeline = sampler.finish().await;
    let (client_cpu_s, server_cpu_s) = meter.stop(&mut notes);
    let steal_ms = meter.steal(&mut notes);
    let elapsed_s = end.saturating_duration_since(start).as_secs_f64();
    let per_sec = if elapsed_s > 0.0 { received as f64 / elapsed_s } else { 0.0 };
    let lat = Latency::from_histogram(&latency.hist);
    let pacing = pacing(&lag, lat.as_ref(), &mut notes);
    let floor = floor.and_then(|rtt| Floor::new(rtt, lat.as_ref(), &mut notes));
    warmup_note(spec, lat.as_ref(), &mut notes);
    let hist = latency.hist;
    Ok(Report {
        scenario: Kind::Request.name().into(),
        server: spec.server.clone(),
        msgs: received,
        published,
        received,
        size: spec.size,
        elapsed_s,
        msgs_per_sec: per_sec,
        mb_per_sec: per_sec * spec.size as f64 / 1e6,
        latency: lat,
        client_cpu_s,
        server_cpu_s,
        checks,
        stopped_by_duration: published < k as u64 * spec.msgs,
        spread: (r > 1).then(|| Spread::new(members)),
        memory: None,
        churn_per_sec: None,
        timeline,
        notes,
        pacing,
        steal_ms,
        warmup_s: spec.warmup.as_secs_f64(),
        latency_over_time: latency.over_time.map(|o| o.samples()).unwrap_or_default(),
        floor,
        histogram: (!hist.is_empty()).then_some(hist),
    })
}

/// PING/PONG round trips measured for the request scenario's floor.
const FLOOR_PINGS: u64 = 2000;

/// Times `n` PING/PONG round trips one after the other on `conn` (nanoseconds).
async fn ping_round_trips(conn: &mut Conn, n: u64) -> Result<hdrhistogram::Histogram<u64>> {
    let mut h = new_histogram();
    for _ in 0..n {
        let t0 = Instant::now();
        conn.wr.write_all(b"PING\r\n").await?;
        tokio::time::timeout(Duration::from_secs(10), conn.wait_pong())
            .await
            .context("no PONG within 10 s while measuring the round trip")??;
        h.saturating_record((t0.elapsed().as_nanos() as u64).max(1));
    }
    Ok(h)
}

/// Notes the warm-up, if there was one, and says so when it left no latency to report.
fn warmup_note(spec: &Spec, latency: Option<&Latency>, notes: &mut Vec<String>) {
    if spec.warmup.is_zero() {
        return;
    }
    notes.push(format!(
        "warm-up: messages sent in the first {:?} are not in the latency figures (they are in the plot over time)",
        spec.warmup
    ));
    if latency.is_none() && spec.size >= 8 {
        notes.push(
            "warm-up: every message was sent during the warm-up, so no latency is reported (raise -n or --duration)"
                .into(),
        );
    }
}

/// Raises this process's open-file limit to its hard limit; returns the new soft limit.
pub(crate) fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        if rl.rlim_cur < rl.rlim_max {
            let wanted = libc::rlimit { rlim_cur: rl.rlim_max, rlim_max: rl.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                return wanted.rlim_cur as u64;
            }
        }
        rl.rlim_cur as u64
    }
}

/// Idle connections: opens them (CONNECT + PING/PONG each) and reads the server's memory.
async fn run_conns(spec: &Spec) -> Result<Report> {
    let n = spec.conns;
    if n == 0 || n > 1_000_000 {
        bail!("--conns must be between 1 and 1000000");
    }
    let limit = raise_nofile_limit();
    if limit > 0 && (n as u64) + 64 > limit {
        bail!("--conns {n} exceeds this process's open-file limit ({limit})");
    }
    let mut notes = Vec::new();
    let rss_before = spec.server_pid.map(proc_rss_kb).transpose().context("reading the server's memory")?;
    if spec.server_pid.is_none() {
        notes.push("server memory not measured: pass --server-pid".into());
    }
    let progress = Arc::new(AtomicU64::new(0));
    let meter = Meter::start(spec.server_pid)?;
    let start = Instant::now();
    let deadline = start + spec.duration;
    let sampler = Sampler::start(progress.clone(), n as u64, start, spec.progress, "conns");
    let mut held = Vec::with_capacity(n);
    let mut checks = Checks::default();
    let mut pending = JoinSet::new();
    let parallel = 64;
    let mut launched = 0;
    let mut stopped = false;
    while launched < n || !pending.is_empty() {
        while launched < n && pending.len() < parallel && !stopped {
            if Instant::now() >= deadline {
                stopped = true;
                break;
            }
            let addr = spec.addr;
            pending.spawn(async move { Conn::connect(addr, 0).await });
            launched += 1;
        }
        let Some(done) = pending.join_next().await else { break };
        match done {
            Ok(Ok(c)) => {
                held.push(c);
                progress.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => checks.error(format!("connection: {e:#}")),
            Err(e) => checks.error(format!("connection task: {e}")),
        }
    }
    let end = Instant::now();
    let timeline = sampler.finish().await;
    let (client_cpu_s, server_cpu_s) = meter.stop(&mut notes);
    let memory = idle_memory(spec, rss_before, held.len()).await?;
    if !spec.hold.is_zero() {
        tokio::time::sleep(spec.hold.min(spec.duration)).await;
    }
    let opened = held.len() as u64;
    drop(held);
    let elapsed_s = end.saturating_duration_since(start).as_secs_f64();
    let idle = IdleRun { opened, elapsed_s, client_cpu_s, server_cpu_s, checks, stopped, memory, timeline, notes };
    Ok(idle_report(Kind::Conns, spec, idle))
}

/// What an idle-connections run measured.
pub(crate) struct IdleRun {
    pub(crate) opened: u64,
    pub(crate) elapsed_s: f64,
    pub(crate) client_cpu_s: f64,
    pub(crate) server_cpu_s: Option<f64>,
    pub(crate) checks: Checks,
    pub(crate) stopped: bool,
    pub(crate) memory: Option<Memory>,
    pub(crate) timeline: Vec<crate::progress::Sample>,
    pub(crate) notes: Vec<String>,
}

/// The server's memory with `open` idle connections, read once it has settled; `None`
/// without a server pid.
pub(crate) async fn idle_memory(spec: &Spec, rss_before: Option<u64>, open: usize) -> Result<Option<Memory>> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (Some(pid), Some(before)) = (spec.server_pid, rss_before) else { return Ok(None) };
    let after = proc_rss_kb(pid).context("reading the server's memory")?;
    let open = open as u64;
    Ok(Some(Memory {
        conns: open,
        rss_before_kb: before,
        rss_after_kb: after,
        per_conn_bytes: if open > 0 { (after as f64 - before as f64) * 1024.0 / open as f64 } else { 0.0 },
    }))
}

/// The report of an idle-connections run.
pub(crate) fn idle_report(kind: Kind, spec: &Spec, r: IdleRun) -> Report {
    let IdleRun { opened, elapsed_s, client_cpu_s, server_cpu_s, checks, stopped, memory, timeline, notes } = r;
    Report {
        scenario: kind.name().into(),
        server: spec.server.clone(),
        msgs: opened,
        published: 0,
        received: 0,
        size: 0,
        elapsed_s,
        msgs_per_sec: if elapsed_s > 0.0 { opened as f64 / elapsed_s } else { 0.0 },
        mb_per_sec: 0.0,
        latency: None,
        client_cpu_s,
        server_cpu_s,
        checks,
        stopped_by_duration: stopped,
        spread: None,
        memory,
        churn_per_sec: None,
        timeline,
        notes,
        histogram: None,
        ..Report::default()
    }
}

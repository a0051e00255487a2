//! `/metrics` in the Prometheus text exposition format.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::connection::Kind;
use crate::state::StateView;

/// Upper bounds of the pending-bytes histogram buckets.
const PENDING_BUCKETS: [u64; 8] = [0, 1024, 16 * 1024, 64 * 1024, 256 * 1024, 1 << 20, 16 << 20, 64 << 20];

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

/// Renders every metric.
pub(crate) fn render(state: &StateView, js: Option<&crate::jetstream::JetStream>) -> String {
    let s = state.stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::with_capacity(4096);
    metric(
        &mut out,
        "courier_connections",
        "gauge",
        "Client connections open now.",
        s.connections.load(Ordering::Relaxed),
    );
    if state.opts().websocket.is_some() {
        let ws = state.connections(crate::connection::Kind::Client).iter().filter(|c| c.meta.lock().websocket).count();
        metric(&mut out, "courier_websocket_connections", "gauge", "Client connections over WebSocket open now.", ws);
    }
    if state.opts().cluster.is_some() {
        let routes = state.connections(Kind::Router);
        metric(&mut out, "courier_routes", "gauge", "Routes to other servers of the cluster open now.", routes.len());
        let pending: usize = routes.iter().map(|r| r.outbound.pending()).sum();
        metric(&mut out, "courier_route_pending_bytes", "gauge", "Bytes queued for routes, in all.", pending);
        let (sent, received) = routes
            .iter()
            .fold((0u64, 0u64), |(s, r), c| (s + c.outbound.counters().0, r + c.stats.in_msgs.load(Ordering::Relaxed)));
        metric(&mut out, "courier_route_out_msgs", "gauge", "Messages sent over the open routes.", sent);
        metric(&mut out, "courier_route_in_msgs", "gauge", "Messages received over the open routes.", received);
    }
    if state.opts().leafnodes.is_some() {
        let leafs = state.connections(Kind::Leaf);
        metric(&mut out, "courier_leafnodes", "gauge", "Leaf node links open now (both sides).", leafs.len());
        let pending: usize = leafs.iter().map(|l| l.outbound.pending()).sum();
        metric(&mut out, "courier_leaf_pending_bytes", "gauge", "Bytes queued for leaf node links, in all.", pending);
        let (sent, received) = leafs
            .iter()
            .fold((0u64, 0u64), |(s, r), c| (s + c.outbound.counters().0, r + c.stats.in_msgs.load(Ordering::Relaxed)));
        metric(&mut out, "courier_leaf_out_msgs", "gauge", "Messages sent over the open leaf node links.", sent);
        metric(&mut out, "courier_leaf_in_msgs", "gauge", "Messages received over the open leaf node links.", received);
    }
    if state.opts().mqtt.is_some() {
        let mqtt = state.connections(Kind::Client).iter().filter(|c| c.meta.lock().mqtt_client.is_some()).count();
        metric(&mut out, "courier_mqtt_connections", "gauge", "MQTT device connections open now.", mqtt);
    }
    metric(
        &mut out,
        "courier_connections_total",
        "counter",
        "Client connections accepted since start.",
        load(&s.total_connections),
    );
    metric(
        &mut out,
        "courier_subscriptions",
        "gauge",
        "Subscriptions held now, over all accounts.",
        state.subscriptions(),
    );
    metric(&mut out, "courier_in_msgs_total", "counter", "Messages received from clients.", load(&s.in_msgs));
    metric(&mut out, "courier_out_msgs_total", "counter", "Messages delivered to clients.", load(&s.out_msgs));
    metric(&mut out, "courier_in_bytes_total", "counter", "Payload bytes received from clients.", load(&s.in_bytes));
    metric(&mut out, "courier_out_bytes_total", "counter", "Payload bytes delivered to clients.", load(&s.out_bytes));
    metric(
        &mut out,
        "courier_slow_consumers_total",
        "counter",
        "Clients closed as slow consumers.",
        load(&s.slow_consumers),
    );
    metric(
        &mut out,
        "courier_stale_connections_total",
        "counter",
        "Clients closed for not answering pings.",
        load(&s.stale_connections),
    );
    metric(
        &mut out,
        "courier_stalls_total",
        "counter",
        "Times a publisher was stalled for a backed-up consumer.",
        load(&s.stalls),
    );
    metric(
        &mut out,
        "courier_auth_failures_total",
        "counter",
        "Clients refused for bad or missing credentials.",
        load(&s.auth_failures),
    );

    // Pending bytes per connection, as a histogram over connections, and the largest few.
    let clients = state.connections(Kind::Client);
    let mut pending: Vec<(u64, usize)> = clients.iter().map(|c| (c.cid, c.outbound.pending())).collect();
    let _ = writeln!(
        out,
        "# HELP courier_pending_bytes Outbound bytes queued per connection.\n# TYPE courier_pending_bytes histogram"
    );
    for bound in PENDING_BUCKETS {
        let n = pending.iter().filter(|(_, p)| *p as u64 <= bound).count();
        let _ = writeln!(out, "courier_pending_bytes_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "courier_pending_bytes_bucket{{le=\"+Inf\"}} {}", pending.len());
    let _ = writeln!(out, "courier_pending_bytes_sum {}", pending.iter().map(|(_, p)| *p as u64).sum::<u64>());
    let _ = writeln!(out, "courier_pending_bytes_count {}", pending.len());
    pending.sort_by_key(|(cid, p)| (std::cmp::Reverse(*p), *cid));
    let _ = writeln!(
        out,
        "# HELP courier_connection_pending_bytes Outbound bytes queued, for the ten connections with the most.\n\
         # TYPE courier_connection_pending_bytes gauge"
    );
    for (cid, p) in pending.iter().take(10) {
        let _ = writeln!(out, "courier_connection_pending_bytes{{cid=\"{cid}\"}} {p}");
    }

    let process = super::json::process_stats();
    metric(
        &mut out,
        "courier_process_cpu_seconds_total",
        "counter",
        "CPU time used by the process.",
        process.cpu.as_secs_f64(),
    );
    metric(&mut out, "courier_process_resident_memory_bytes", "gauge", "Resident memory of the process.", process.rss);
    let uptime = std::time::SystemTime::now().duration_since(state.start()).unwrap_or_default();
    metric(&mut out, "courier_uptime_seconds", "gauge", "Seconds since the server started.", uptime.as_secs_f64());
    stream_metrics(&mut out, js);
    consumer_metrics(&mut out, js);
    out
}

/// Per-consumer gauges (the lag, acks outstanding, redeliveries, dead letters), labelled by
/// account, stream and consumer.
fn consumer_metrics(out: &mut String, js: Option<&crate::jetstream::JetStream>) {
    let consumers = super::jsz::consumer_figures(js);
    if consumers.is_empty() {
        return;
    }
    type Figure = fn(&super::jsz::ConsumerFigures) -> u64;
    let gauges: [(&str, &str, &str, Figure); 5] = [
        ("courier_consumer_pending", "gauge", "Messages a consumer has not delivered yet: its lag.", |c| c.pending),
        ("courier_consumer_ack_pending", "gauge", "Messages delivered and not yet acknowledged.", |c| c.ack_pending),
        ("courier_consumer_redelivered", "gauge", "Pending messages delivered more than once.", |c| c.redelivered),
        ("courier_consumer_waiting", "gauge", "Pull requests waiting.", |c| c.waiting),
        ("courier_consumer_dead_letters_total", "counter", "Messages given up on and dead-lettered.", |c| {
            c.dead_letters
        }),
    ];
    for (name, kind, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for c in &consumers {
            let _ = writeln!(
                out,
                "{name}{{account=\"{}\",stream=\"{}\",consumer=\"{}\"}} {}",
                c.account,
                c.stream,
                c.consumer,
                value(c)
            );
        }
    }
}

/// Per-stream gauges, labelled by account and stream.
fn stream_metrics(out: &mut String, js: Option<&crate::jetstream::JetStream>) {
    let streams = super::jsz::stream_figures(js);
    if streams.is_empty() {
        return;
    }
    type Figure = fn(&super::jsz::StreamFigures) -> u64;
    let gauges: [(&str, &str, Figure); 4] = [
        ("courier_stream_messages", "Messages a stream holds.", |s| s.messages),
        ("courier_stream_bytes", "Bytes a stream holds, as nats-server accounts them.", |s| s.bytes),
        ("courier_stream_first_seq", "A stream's first sequence.", |s| s.first_seq),
        ("courier_stream_last_seq", "A stream's last sequence.", |s| s.last_seq),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for s in &streams {
            let _ = writeln!(out, "{name}{{account=\"{}\",stream=\"{}\"}} {}", s.account, s.stream, value(s));
        }
    }
}

//! courier-bench as its users run it, against a Courier server on loopback: the open-loop mode
//! keeps its schedule (every message sent, stamped with its scheduled time, the bench's own
//! lateness reported), warm-up samples stay out of the figures, the request scenario measures
//! its PING/PONG floor, and the `--json` line and the CSV exports keep their fields.
//!
//! Nothing here asserts on how fast anything is: the figures belong in BENCHMARKS.md.

mod common;

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::TestServer;

/// The longest a bench run in these tests may take.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Runs courier-bench with `args`, killing it past [`RUN_LIMIT`]; returns its status and stdout.
fn bench(args: &[&str]) -> (std::process::ExitStatus, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_courier-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start courier-bench");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_LIMIT) {
        Ok(out) => {
            let out = out.expect("courier-bench output");
            (out.status, String::from_utf8(out.stdout).expect("utf-8 output"))
        }
        Err(_) => {
            // SAFETY: kill has no memory effects; the pid is our own child's.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("courier-bench {args:?} ran past {RUN_LIMIT:?}");
        }
    }
}

/// The one JSON line of a `--json` run.
fn json_run(args: &[&str]) -> serde_json::Value {
    let (status, out) = bench(args);
    assert!(status.success(), "courier-bench {args:?} failed: {out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "--json prints exactly one line: {out}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("the line is JSON");
    assert_eq!(v["schema"], "courier-bench/1");
    v
}

fn f(v: &serde_json::Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64().unwrap_or_else(|| panic!("{path:?} is a number in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_keeps_its_schedule_and_reports_its_own_lateness() {
    let server = TestServer::start_default().await;
    let url = format!("nats://{}", server.addr);
    let dir = tempfile::tempdir().unwrap();
    let over_time = dir.path().join("over-time.csv");
    let percentiles = dir.path().join("percentiles.csv");
    let (ot, pc) = (over_time.to_str().unwrap().to_string(), percentiles.to_str().unwrap().to_string());
    let v = tokio::task::spawn_blocking(move || {
        json_run(&[
            "pubsub",
            "--server",
            &url,
            "--rate",
            "20000",
            "-n",
            "20000",
            "--size",
            "32",
            "--duration",
            "20s",
            "--warmup",
            "250ms",
            "--json",
            "--over-time-csv",
            &ot,
            "--percentiles-csv",
            &pc,
        ])
    })
    .await
    .unwrap();
    assert_eq!(v["checks"]["lost"], 0, "{v}");
    assert_eq!(v["checks"]["errors"], 0, "{v}");
    assert_eq!(v["published"], 20000);
    assert_eq!(v["received"], 20000);
    // 20,000 messages at 20,000/s take a second of schedule, not less: the bench does not run
    // ahead of its schedule.
    assert!(f(&v, &["elapsed_s"]) >= 0.99, "{v}");
    // The first 250 ms (5,000 messages) are warm-up: left out of the latency and pacing figures.
    assert_eq!(f(&v, &["latency", "samples"]), 15000.0, "{v}");
    assert_eq!(f(&v, &["pacing", "samples"]), 15000.0, "{v}");
    assert_eq!(f(&v, &["warmup_s"]), 0.25);
    for q in ["p50_us", "p90_us", "p99_us", "p999_us", "p9999_us", "max_us"] {
        assert!(f(&v, &["latency", q]) > 0.0, "{q} in {v}");
    }
    let l = &v["latency"];
    assert!(f(l, &["p50_us"]) <= f(l, &["p99_us"]) && f(l, &["p99_us"]) <= f(l, &["p9999_us"]));
    assert!(f(l, &["p9999_us"]) <= f(l, &["max_us"]));
    // Every interval of the run is in the record over time, warm-up included.
    let intervals = v["latency_over_time"].as_array().expect("latency_over_time");
    let counted: f64 = intervals.iter().map(|i| f(i, &["count"])).sum();
    assert_eq!(counted, 20000.0);
    let csv = std::fs::read_to_string(&over_time).unwrap();
    assert_eq!(csv.lines().next(), Some("t_s,count,p50_us,p99_us,max_us"));
    assert_eq!(csv.lines().count(), intervals.len() + 1);
    let csv = std::fs::read_to_string(&percentiles).unwrap();
    assert_eq!(csv.lines().next(), Some("percentile,latency_us"));
    assert!(csv.lines().last().unwrap().starts_with("100.000000,"), "{csv}");
    assert!(v["steal_ms"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_reports_its_floor_and_csv_keeps_its_columns() {
    let server = TestServer::start_default().await;
    let url = format!("nats://{}", server.addr);
    let u = url.clone();
    let v = tokio::task::spawn_blocking(move || json_run(&["request", "--server", &u, "-n", "2000", "--json"]))
        .await
        .unwrap();
    assert_eq!(v["received"], 2000, "{v}");
    let floor = &v["floor"];
    assert_eq!(f(floor, &["ping_rtt", "samples"]), 2000.0, "{v}");
    let two = f(floor, &["two_rtt_p50_us"]);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs();
    assert!(close(two, 2.0 * f(floor, &["ping_rtt", "p50_us"])), "{v}");
    assert!(close(f(floor, &["p50_over_floor"]), f(&v, &["latency", "p50_us"]) / two), "{v}");
    assert!(v["pacing"].is_null(), "closed loop has no schedule: {v}");

    let (status, out) =
        tokio::task::spawn_blocking(move || bench(&["request", "--server", &url, "-n", "500", "--csv"])).await.unwrap();
    assert!(status.success());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let header: Vec<&str> = lines[0].split(',').collect();
    let row: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(header.len(), row.len());
    assert_eq!(&header[..3], ["scenario", "server", "msgs"]);
    let col = |name: &str| row[header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("{name} column"))];
    assert_eq!(col("scenario"), "request");
    assert_eq!(col("received"), "500");
    assert!(col("p9999_us").parse::<f64>().unwrap() > 0.0);
    assert!(col("floor_two_rtt_us").parse::<f64>().unwrap() > 0.0);
    assert_eq!(col("pacing_p99_us"), "");
}

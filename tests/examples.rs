//! The examples under `examples/`, each run as its own process with small sizes against an
//! in-process server, and the config snippets of the guide, checked with the real config
//! parser and option mapping.
//!
//! The example binaries live next to this test's executable (`target/<profile>/examples/`).
//! `cargo test` builds them, but `cargo test --test examples` does not, so the first test to
//! need them runs `cargo build --examples` once (a quick no-op when they are up to date).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use common::TestServer;

/// How long one example may run before it is killed and the test fails.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The directory holding the example binaries, built and up to date.
fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // This executable is target/<profile>/deps/examples-<hash>.
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
        let profile = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_string();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        // Cargo describes this package to the test through the environment. Build scripts that
        // watch one of those variables (ring watches CARGO_MANIFEST_DIR) would see them
        // change and rebuild, so the nested build runs without them.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_BIN_EXE_")
                || key.starts_with("CARGO_MANIFEST_")
                || ["CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*key)
            {
                build.env_remove(&*key);
            }
        }
        build.args(["build", "--quiet", "--examples", "--manifest-path"]);
        build.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
        match profile.as_str() {
            "debug" => {}
            "release" => {
                build.arg("--release");
            }
            other => {
                build.args(["--profile", other]);
            }
        }
        let started = Instant::now();
        let status = build.status().expect("running cargo build --examples");
        assert!(status.success(), "cargo build --examples failed: {status}");
        eprintln!("cargo build --examples: {:.1} s", started.elapsed().as_secs_f64());
        profile_dir.join("examples")
    })
}

/// A running example: its stdout arrives line by line, its stderr is collected.
struct Example {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    started: Instant,
}

impl Drop for Example {
    /// A test that fails halfway leaves no example running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What an example printed, and how it ended.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    /// Panics unless the example exited 0.
    fn assert_success(&self, name: &str) {
        assert!(
            self.status.success(),
            "{name} failed ({})\n--- stdout\n{}--- stderr\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }

    /// The first stdout line containing `needle`, or a failure showing the whole output.
    fn line_with(&self, needle: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{}", self.stdout))
    }
}

impl Example {
    fn start(name: &str, server: &TestServer, args: &[&str]) -> Example {
        Example::start_at(name, &server.url(), args)
    }

    /// Starts example `name` against the server at `url`.
    fn start_at(name: &str, url: &str, args: &[&str]) -> Example {
        let bin = examples_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        let mut child = Command::new(&bin)
            .arg("--server")
            .arg(url)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Example {
            name: name.to_string(),
            child,
            lines,
            stdout: Vec::new(),
            stderr: Some(stderr),
            started: Instant::now(),
        }
    }

    /// Takes the lines printed so far.
    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.stdout.push(line);
        }
    }

    /// Waits until a stdout line contains `needle`; fails if the example ends first or takes
    /// too long.
    async fn wait_for_line(&mut self, needle: &str) {
        loop {
            self.drain();
            if self.stdout.iter().any(|l| l.contains(needle)) {
                return;
            }
            if self.started.elapsed() > EXAMPLE_TIMEOUT || self.child.try_wait().expect("try_wait").is_some() {
                let _ = self.child.kill();
                panic!("{} never printed {needle:?}; stdout so far:\n{}", self.name, self.stdout.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the example to exit (killing it after [`EXAMPLE_TIMEOUT`]) and returns its
    /// output.
    async fn finish(mut self) -> Finished {
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if self.started.elapsed() > EXAMPLE_TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.drain();
                panic!("{} did not finish within {EXAMPLE_TIMEOUT:?}; stdout:\n{}", self.name, self.stdout.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The reader thread ends at EOF, once the process is gone.
        for line in self.lines.iter() {
            self.stdout.push(line);
        }
        let stderr = self.stderr.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        let mut stdout = self.stdout.join("\n");
        stdout.push('\n');
        let finished = Finished { status, stdout, stderr };
        eprintln!("{} ran {:.2} s", self.name, self.started.elapsed().as_secs_f64());
        finished
    }
}

/// Runs an example to completion.
async fn run(name: &str, server: &TestServer, args: &[&str]) -> Finished {
    Example::start(name, server, args).finish().await
}

/// The numbers in `line`, in order (`p50 160 µs` gives 50 and 160).
fn numbers(line: &str) -> Vec<f64> {
    line.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|s| !s.is_empty() && *s != ".")
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iot_fleet_and_fleet_monitor() {
    examples_dir();
    let server = TestServer::start(common::options()).await;
    let mut fleet = Example::start("iot_fleet", &server, &["--devices", "20", "--rate", "10", "--duration", "3"]);
    fleet.wait_for_line("connected 20 devices").await;

    let monitor = run("fleet_monitor", &server, &["--duration", "1", "--device", "dev-0007", "--top", "5"]).await;
    monitor.assert_success("fleet_monitor");
    let seen = monitor.line_with("devices seen");
    assert!(seen.starts_with("20 devices seen"), "every device publishes: {seen}");
    assert!(monitor.stdout.contains("dev-0000"), "the table lists devices:\n{}", monitor.stdout);
    let ack = monitor.line_with("acknowledged by dev-0007");
    assert!(ack.contains(r#""ack":true"#) && ack.contains(r#""command":"blink""#), "{ack}");

    let fleet = fleet.finish().await;
    fleet.assert_success("iot_fleet");
    assert!(fleet.line_with("commands answered:").ends_with(" 1"), "{}", fleet.stdout);
    let published = numbers(fleet.line_with("telemetry messages:"))[0];
    // 20 devices at 10 msg/s for 3 s is 600; a busy machine may skip some ticks.
    assert!((300.0..=660.0).contains(&published), "published {published}:\n{}", fleet.stdout);
    assert!(fleet.line_with("errors:").ends_with(" 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_devices_and_a_nats_service_share_the_broker() {
    examples_dir();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(courier::Options {
        server_name: "site-gateway".into(),
        jetstream: Some(courier::options::JetStreamOptions {
            store_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        }),
        mqtt: Some(courier::options::MqttOptions { host: Some("127.0.0.1".into()), ..Default::default() }),
        ..common::options()
    })
    .await;
    let mqtt = server.handle.mqtt_addr().unwrap().to_string();
    let out = run("mqtt_devices", &server, &["--mqtt", &mqtt, "--devices", "20", "--messages", "5"]).await;
    out.assert_success("mqtt_devices");
    out.line_with("20 MQTT devices connected");
    out.line_with("readings received by the NATS service: 100 (100 at QoS 1)");
    out.line_with("commands received by devices: 100 (every device: true)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_gateway_serves_the_site_through_an_uplink_outage() {
    use common::process::{self, COURIER};
    examples_dir();
    let dir = tempfile::tempdir().unwrap();
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // The hub comes back on the same ports.
    let (client_port, leaf_port) = (free(), free());
    let hub_conf =
        format!("server_name: hub\nlisten: 127.0.0.1:{client_port}\nleafnodes {{ listen: 127.0.0.1:{leaf_port} }}\n");
    let site_conf = format!(
        "server_name: site1\nlisten: 127.0.0.1:-1\nhttp: 127.0.0.1:-1\n\
         leafnodes {{ remotes [ {{ url: \"nats-leaf://127.0.0.1:{leaf_port}\" }} ] }}\n"
    );
    let hub = process::start(COURIER, dir.path(), "hub", &hub_conf);
    let site = process::start(COURIER, dir.path(), "site1", &site_conf);
    site.wait_monitor("/leafz", "the uplink", |v| v["leafnodes"] == 1).await;
    let hub_url = hub.client.clone();
    let mut gateway = Example::start_at(
        "site_gateway",
        &site.client,
        &["--hub", &hub_url, "--devices", "4", "--readings", "60", "--interval-ms", "25", "--timeout", "25"],
    );
    gateway.wait_for_line("publishing 240 readings").await;
    // The uplink goes down while the devices publish, and comes back.
    drop(hub);
    site.wait_monitor("/leafz", "the uplink down", |v| v["leafnodes"] == 0).await;
    let _hub = process::start(COURIER, dir.path(), "hub", &hub_conf);
    let out = gateway.finish().await;
    out.assert_success("site_gateway");
    out.line_with("site controller: 240/240 readings");
    out.line_with("uplink: forwarding resumed both ways");
    let at_hub = numbers(out.line_with("hub collector:"))[0];
    assert!(at_hub < 240.0, "readings published while the uplink was down did not cross:\n{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_monitor_fails_without_a_fleet() {
    examples_dir();
    let server = TestServer::start(common::options()).await;
    let monitor = run("fleet_monitor", &server, &["--duration", "0.3", "--device", "dev-0001"]).await;
    assert!(!monitor.status.success(), "nothing to watch is a failure:\n{}", monitor.stdout);
    monitor.line_with("no telemetry arrived");
    monitor.line_with("no responders: dev-0001 is not connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_service_spreads_load_and_reports_no_responders() {
    examples_dir();
    let server = TestServer::start(common::options()).await;
    let out = run("rpc_service", &server, &["--instances", "3", "--requests", "150", "--concurrency", "8"]).await;
    out.assert_success("rpc_service");
    out.line_with("150 ok, 0 timed out, 0 failed");
    let mut total = 0.0;
    for instance in ["orders-1", "orders-2", "orders-3"] {
        let served = numbers(out.line_with(&format!("{instance} ")))[1];
        assert!(served > 0.0, "{instance} served nothing:\n{}", out.stdout);
        total += served;
    }
    assert_eq!(total, 150.0);
    let missing = out.line_with("svc.orders.missing: no responders");
    // Reported by the server at once, not after the client's 2 s timeout.
    assert!(numbers(missing)[0] < 1000.0, "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_probe_prints_percentiles() {
    examples_dir();
    let server = TestServer::start(common::options()).await;
    let out = run("latency_probe", &server, &["--count", "200", "--size", "64", "--warmup", "20"]).await;
    out.assert_success("latency_probe");
    out.line_with("200 requests of 64 bytes");
    let line = out.line_with("p50");
    for label in ["min", "p50", "p90", "p99", "max", "mean"] {
        assert!(line.contains(label), "{label} missing: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_tracing_round_trips_the_trace_id() {
    examples_dir();
    let server = TestServer::start(common::options()).await;
    let out = run("headers_and_tracing", &server, &["--count", "3"]).await;
    out.assert_success("headers_and_tracing");
    let first = out.line_with("request 1: trace id");
    let id = first.split_whitespace().nth(4).expect("trace id");
    assert_eq!(id.len(), 32, "{first}");
    assert!(first.contains("matches in the reply"), "{first}");
    // The responder saw the same id the client sent.
    out.line_with(&format!("responder: svc.inventory.check request, trace id {id}"));
    out.line_with("all 3 replies carried their request's trace id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_fail_without_a_server() {
    examples_dir();
    // A port nothing listens on: bind one, note it, and close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("nats://127.0.0.1:{port}");
    let bin = examples_dir().join(format!("rpc_service{}", std::env::consts::EXE_SUFFIX));
    let out = Command::new(bin).args(["--server", &url]).output().expect("run rpc_service");
    assert!(!out.status.success(), "no server is a failure");
    assert!(String::from_utf8_lossy(&out.stderr).contains("connecting to"), "{out:?}");
}

/// Every fenced block tagged `tag` in `markdown`, with the line its text starts on.
fn fenced_blocks(markdown: &str, tag: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut current, fence) {
            (None, Some(info)) if info.trim() == tag => current = Some((i + 2, String::new())),
            (Some(_), Some("")) => blocks.extend(current.take()),
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            _ => {}
        }
    }
    assert!(current.is_none(), "unclosed ```{tag} block");
    blocks
}

/// Parses and applies one config text as the server would; returns the warnings.
fn check_config(text: &str, name: &str, dir: &Path) -> Vec<String> {
    let map = courier::conf::parse_str(text, name, Some(dir)).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut opts = courier::Options::default();
    courier::config::apply(&map, &mut opts).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Every ```conf block of the guide is a config Courier accepts, without warnings. Text that is
/// not Courier config (nats-server-only settings shown for contrast) would use another tag, such
/// as ```text. The mapping does not open the certificate files a `tls` block names (the server
/// reads them when it starts), so none has to exist; an `include` would be resolved in an empty
/// temporary directory and fail, so ```conf blocks do not use one.
#[test]
fn guide_config_snippets_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("docs/guide.md")).expect("docs/guide.md");
    let blocks = fenced_blocks(&guide, "conf");
    assert!(blocks.len() >= 8, "expected the guide's config examples, found {} ```conf blocks", blocks.len());
    let dir = tempfile::tempdir().unwrap();
    for (line, text) in &blocks {
        let warnings = check_config(text, &format!("docs/guide.md (block at line {line})"), dir.path());
        assert!(warnings.is_empty(), "docs/guide.md line {line}: {warnings:?}");
    }
}

/// The sample config next to the systemd unit is valid too.
#[test]
fn deploy_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/courier.conf");
    let mut opts = courier::Options::default();
    let warnings = courier::config::load_file(&path, &mut opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn fenced_blocks_are_found() {
    let md = "text\n```conf\nport: 1\n```\n```sh\nls\n```\n  ```conf\na: 1\nb: 2\n  ```\n";
    assert_eq!(fenced_blocks(md, "conf"), vec![(3, "port: 1\n".to_string()), (9, "a: 1\nb: 2\n".to_string())]);
}

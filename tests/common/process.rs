//! Server processes for tests that need real processes (clusters, leaf nodes, restarts): a
//! Courier or nats-server started with a configuration file on 127.0.0.1, its addresses read
//! from its log, killed (SIGKILL) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::time::timeout;

use super::TIMEOUT;

/// How long a process may take to start.
pub const START_WAIT: Duration = Duration::from_secs(20);

/// The courier binary under test.
pub const COURIER: &str = env!("CARGO_BIN_EXE_courier");

/// nats-server, when installed.
pub fn nats_server_bin() -> Option<&'static str> {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// A running server process.
pub struct Proc {
    child: Child,
    /// Its name (also its config and log file names).
    pub name: String,
    /// `nats://host:port` for clients.
    pub client: String,
    /// The route port, when it has a cluster.
    pub cluster_port: Option<u16>,
    /// The leaf node port, when it accepts leaf nodes.
    pub leaf_port: Option<u16>,
    /// `host:port` of HTTP monitoring, when on.
    pub http: Option<String>,
    /// Where MQTT devices connect, when it has an MQTT listener.
    pub mqtt: Option<std::net::SocketAddr>,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bin` (Courier or nats-server) named `name` with the configuration `text`, and waits
/// until it says it is ready and has logged every listener `text` configures.
pub fn start(bin: &str, dir: &Path, name: &str, text: &str) -> Proc {
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(&conf, text).unwrap();
    let log = dir.join(format!("{name}.log"));
    let _ = std::fs::remove_file(&log);
    let child = Command::new(bin)
        .args(["-c", conf.to_str().unwrap(), "-l", log.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let wants_leaf = text.find("leafnodes").is_some_and(|at| text[at..].contains("listen"));
    let wants_cluster = text.contains("cluster");
    let wants_http = text.contains("http:");
    let wants_mqtt = text.contains("mqtt");
    let mut proc = Proc {
        child,
        name: name.to_string(),
        client: String::new(),
        cluster_port: None,
        leaf_port: None,
        http: None,
        mqtt: None,
        log,
    };
    let deadline = Instant::now() + START_WAIT;
    loop {
        let text = proc.log();
        let after = |needle: &str| {
            text.lines().find(|l| l.contains(needle)).map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
        };
        let port = |hostport: String| hostport.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
        if let Some(client) = after("client connections on") {
            proc.client = format!("nats://{client}");
            proc.cluster_port = after("route connections on").and_then(port);
            proc.leaf_port = after("leafnode connections on").and_then(port);
            proc.http = after("http monitor on").map(|h| h.trim_start_matches("http://").to_string());
            proc.mqtt = after("MQTT clients on").and_then(|m| m.trim_start_matches("tcp://").parse().ok());
            let complete = (!wants_leaf || proc.leaf_port.is_some())
                && (!wants_cluster || proc.cluster_port.is_some())
                && (!wants_http || proc.http.is_some())
                && (!wants_mqtt || proc.mqtt.is_some());
            if text.contains("ready") && complete {
                return proc;
            }
        }
        assert!(Instant::now() < deadline, "{name} did not start:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Proc {
    /// Kills it with SIGKILL and waits for it to be gone.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An async-nats client of it.
    pub async fn client(&self) -> async_nats::Client {
        let opts = async_nats::ConnectOptions::new().connection_timeout(TIMEOUT).name(&self.name);
        timeout(TIMEOUT, opts.connect(&self.client)).await.expect("connect in time").expect("connect")
    }

    /// A monitoring endpoint's JSON.
    pub async fn monitor(&self, path: &str) -> serde_json::Value {
        let http = self.http.as_ref().expect("monitoring is on");
        let (status, _, body) = super::http_get(http.parse().expect("monitoring address"), path).await;
        assert!(status.contains("200"), "{path}: {status}");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits (bounded) until `cond` holds for `path`'s JSON.
    pub async fn wait_monitor(&self, path: &str, what: &str, cond: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + START_WAIT;
        loop {
            let v = self.monitor(path).await;
            if cond(&v) {
                return;
            }
            assert!(Instant::now() < deadline, "{}: {what}: {v}\n--- log\n{}", self.name, self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until one of the links `path` lists under `links` (`/routez?subs=1` and
    /// `routes`, `/leafz?subs=1` and `leafs`) has interest in `subject` from the other side,
    /// or, with `present` false, until none has.
    pub async fn wait_link_interest(&self, path: &str, links: &str, subject: &str, present: bool) {
        self.wait_monitor(path, &format!("interest in {subject} should be {present}"), |v| {
            let found = v[links]
                .as_array()
                .into_iter()
                .flatten()
                .any(|l| l["subscriptions_list"].as_array().into_iter().flatten().any(|s| s == subject));
            found == present
        })
        .await;
    }

    /// Waits (bounded) until its log contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + START_WAIT;
        while !self.log().contains(needle) {
            assert!(Instant::now() < deadline, "{} never logged {needle:?}:\n{}", self.name, self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

//! The `courier` binary started as a process, the way scripts, service units and the official
//! clients' test harnesses start nats-server: flags, config files, log and pid files, signals.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_courier");
const WAIT: Duration = Duration::from_secs(10);

/// A server process, killed when dropped.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Proc {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start courier");
    Proc { child }
}

/// Waits until `log` has a line saying where clients connect, and returns that address.
fn client_addr_from_log(log: &Path) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(log) {
            if let Some(line) = text.lines().find(|l| l.contains("client connections on")) {
                return line.rsplit(' ').next().unwrap_or_default().to_string();
            }
        }
        assert!(Instant::now() < deadline, "no listening line in {}", log.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connects and returns the INFO JSON and the stream.
fn connect(addr: &str) -> (serde_json::Value, BufReader<TcpStream>) {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("INFO");
    let json = line.strip_prefix("INFO ").expect("INFO first").trim();
    (serde_json::from_str(json).expect("INFO json"), reader)
}

fn send(reader: &mut BufReader<TcpStream>, bytes: &[u8]) {
    reader.get_mut().write_all(bytes).unwrap();
}

fn read_line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read line");
    line
}

fn wait_exit(proc: &mut Proc) -> std::process::ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = proc.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).stdin(Stdio::null()).output().expect("run courier")
}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn random_port_log_file_and_pid_file() {
    let d = dir();
    let (log, pid) = (path(&d, "s.log"), path(&d, "s.pid"));
    let mut p = start(&[
        "-a",
        "127.0.0.1",
        "-p",
        "-1",
        "-n",
        "edge-7",
        "-l",
        log.to_str().unwrap(),
        "-P",
        pid.to_str().unwrap(),
    ]);
    let addr = client_addr_from_log(&log);
    assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{addr}");
    let written: u32 = std::fs::read_to_string(&pid).unwrap().trim().parse().unwrap();
    assert_eq!(written, p.child.id());

    let (info, mut c) = connect(&addr);
    assert_eq!(info["server_name"], "edge-7");
    assert_eq!(info["port"].as_u64().unwrap().to_string(), addr.rsplit(':').next().unwrap());
    send(&mut c, b"CONNECT {\"verbose\":false}\r\nPING\r\n");
    assert_eq!(read_line(&mut c), "PONG\r\n");

    // SIGTERM: graceful stop, exit 0, pid file removed.
    let out = run(&["--signal", &format!("term={}", p.child.id())]);
    assert!(out.status.success(), "{out:?}");
    assert!(wait_exit(&mut p).success());
    assert!(!pid.exists());
}

#[test]
fn config_file_with_include_and_variables_and_flag_overrides() {
    let d = dir();
    std::fs::create_dir(d.path().join("inc")).unwrap();
    std::fs::write(path(&d, "inc/limits.conf"), "max_payload: 2KB\n").unwrap();
    let log = path(&d, "s.log");
    std::fs::write(
        path(&d, "main.conf"),
        format!(
            "# a config as operators write them\nMAXSUBS = 1\nlisten: 127.0.0.1:-1\nserver_name: from-config\n\
             include 'inc/limits.conf'\nmax_subscriptions: $MAXSUBS\nlogfile: \"{}\"\nauthorization {{ user: derek, password: s3cr3t }}\n",
            log.display()
        ),
    )
    .unwrap();
    let _p = start(&["-c", path(&d, "main.conf").to_str().unwrap(), "-n", "from-flag"]);
    let addr = client_addr_from_log(&log);
    let (info, mut c) = connect(&addr);
    assert_eq!(info["server_name"], "from-flag", "flags override the config");
    assert_eq!(info["max_payload"], 2048);
    assert_eq!(info["auth_required"], true);
    send(
        &mut c,
        b"CONNECT {\"verbose\":false,\"user\":\"derek\",\"pass\":\"s3cr3t\"}\r\nSUB a 1\r\nSUB b 2\r\nPING\r\n",
    );
    assert_eq!(read_line(&mut c), "-ERR 'maximum subscriptions exceeded'\r\n");
    assert_eq!(read_line(&mut c), "PONG\r\n");

    let (_, mut bad) = connect(&addr);
    send(&mut bad, b"CONNECT {\"verbose\":false,\"user\":\"derek\",\"pass\":\"nope\"}\r\n");
    assert_eq!(read_line(&mut bad), "-ERR 'Authorization Violation'\r\n");
    let mut rest = Vec::new();
    assert_eq!(bad.read_to_end(&mut rest).unwrap_or(0), 0, "closed after the violation");
}

#[test]
fn check_config_and_errors() {
    let d = dir();
    std::fs::write(path(&d, "ok.conf"), "port: 4222\n").unwrap();
    let out = run(&["-t", "-c", path(&d, "ok.conf").to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");

    std::fs::write(path(&d, "bad.conf"), "port: 4222\nbogus_key: 1\n").unwrap();
    let out = run(&["-t", "-c", path(&d, "bad.conf").to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.conf:2:") && err.contains("unknown field"), "{err}");

    std::fs::write(path(&d, "syntax.conf"), "authorization {\n  user: x\n").unwrap();
    let out = run(&["-t", "-c", path(&d, "syntax.conf").to_str().unwrap()]);
    assert!(!out.status.success());

    let out = run(&["-v"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("courier"));

    let out = run(&["-t", "--routes", "http://127.0.0.1:6222"]);
    assert!(!out.status.success(), "a route that is not a route URL is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("error parsing route url"), "{out:?}");
    let out = run(&["-t", "--cluster", "nats://127.0.0.1:6222", "--routes", "nats-route://127.0.0.1:6223"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn lame_duck_signal_sends_ldm_info_then_closes() {
    let d = dir();
    let log = path(&d, "s.log");
    std::fs::write(path(&d, "ldm.conf"), "lame_duck_grace_period: \"100ms\"\nlame_duck_duration: \"300ms\"\n").unwrap();
    let mut p = start(&[
        "-a",
        "127.0.0.1",
        "-p",
        "-1",
        "-l",
        log.to_str().unwrap(),
        "-c",
        path(&d, "ldm.conf").to_str().unwrap(),
    ]);
    let addr = client_addr_from_log(&log);
    let (_, mut c) = connect(&addr);
    send(&mut c, b"CONNECT {\"verbose\":false,\"protocol\":1}\r\nPING\r\n");
    assert_eq!(read_line(&mut c), "PONG\r\n");

    let out = run(&["-sl", &format!("ldm={}", p.child.id())]);
    assert!(out.status.success(), "{out:?}");
    let line = read_line(&mut c);
    let json: serde_json::Value = serde_json::from_str(line.strip_prefix("INFO ").expect("INFO").trim()).unwrap();
    assert_eq!(json["ldm"], true);
    // Then the client is closed and the server exits by itself.
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(wait_exit(&mut p).success());
    assert!(TcpStream::connect(&addr).is_err(), "no longer accepting");
}

#[test]
fn reload_applies_limits_and_users_and_keeps_old_config_on_error() {
    let d = dir();
    let (log, conf) = (path(&d, "s.log"), path(&d, "reload.conf"));
    let write_conf = |body: &str| std::fs::write(&conf, body).unwrap();
    write_conf(
        "max_payload: 1KB\nauthorization { users = [ {user: derek, password: a}, {user: alice, password: b} ] }\n",
    );
    let p = start(&["-a", "127.0.0.1", "-p", "-1", "-l", log.to_str().unwrap(), "-c", conf.to_str().unwrap()]);
    let addr = client_addr_from_log(&log);
    let login = |user: &str, pass: &str| {
        let (info, mut c) = connect(&addr);
        send(
            &mut c,
            format!("CONNECT {{\"verbose\":false,\"user\":\"{user}\",\"pass\":\"{pass}\"}}\r\nPING\r\n").as_bytes(),
        );
        (info, c)
    };
    let (info, mut derek) = login("derek", "a");
    assert_eq!(info["max_payload"], 1024);
    assert_eq!(read_line(&mut derek), "PONG\r\n");
    let (_, mut alice) = login("alice", "b");
    assert_eq!(read_line(&mut alice), "PONG\r\n");
    let reload = || {
        let out = run(&["--signal", &format!("reload={}", p.child.id())]);
        assert!(out.status.success(), "{out:?}");
    };

    // A broken config is refused and the old one stays in force.
    write_conf("max_payload: 1KB\nauthorization { users = [ {user: derek, password: a} ]\n");
    reload();
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&log).unwrap().contains("Failed to reload") {
        assert!(Instant::now() < deadline, "no reload error logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    send(&mut derek, b"PING\r\n");
    assert_eq!(read_line(&mut derek), "PONG\r\n");

    // Derek is removed and the payload limit raised: derek is closed, alice stays.
    write_conf("max_payload: 2KB\nauthorization { users = [ {user: alice, password: b} ] }\n");
    reload();
    assert_eq!(read_line(&mut derek), "-ERR 'Authorization Violation'\r\n");
    send(&mut alice, b"PING\r\n");
    assert_eq!(read_line(&mut alice), "PONG\r\n");
    let (info, mut again) = login("alice", "b");
    assert_eq!(info["max_payload"], 2048);
    assert_eq!(read_line(&mut again), "PONG\r\n");
    let (_, mut gone) = login("derek", "a");
    assert_eq!(read_line(&mut gone), "-ERR 'Authorization Violation'\r\n");
}

#[test]
fn reopen_signal_starts_a_new_log_file_after_rotation() {
    let d = dir();
    let log = path(&d, "s.log");
    let p = start(&["-a", "127.0.0.1", "-p", "-1", "-l", log.to_str().unwrap()]);
    let addr = client_addr_from_log(&log);
    std::fs::rename(&log, path(&d, "s.log.1")).unwrap();
    let out = run(&["--signal", &format!("reopen={}", p.child.id())]);
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("Reopened log file") {
        assert!(Instant::now() < deadline, "no new log file");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, mut c) = connect(&addr);
    send(&mut c, b"CONNECT {\"verbose\":false}\r\nPING\r\n");
    assert_eq!(read_line(&mut c), "PONG\r\n", "still serving");
}

/// Runtime threads named as tokio names its workers.
fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("tokio-r"))
        .count()
}

#[test]
fn worker_threads_follow_threads_flag_and_gomaxprocs() {
    for (args, env, want) in [(&["--threads", "3"][..], None, 3), (&[][..], Some("1"), 0), (&[][..], Some("2"), 2)] {
        let d = dir();
        let log = path(&d, "s.log");
        let mut cmd = Command::new(BIN);
        cmd.args(["-a", "127.0.0.1", "-p", "-1", "-l", log.to_str().unwrap()]).args(args);
        if let Some(v) = env {
            cmd.env("GOMAXPROCS", v);
        }
        let p = Proc { child: cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap() };
        let addr = client_addr_from_log(&log);
        let (_, mut c) = connect(&addr);
        send(&mut c, b"CONNECT {\"verbose\":false}\r\nPING\r\n");
        assert_eq!(read_line(&mut c), "PONG\r\n");
        assert_eq!(worker_threads(p.child.id()), want, "{args:?} GOMAXPROCS={env:?}");
    }
}

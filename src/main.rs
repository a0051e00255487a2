//! The `courier` server binary: nats-server's command line, logging and signals.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use courier::logging::{self, LogHandle, LogOptions};
use courier::{Options, Server};
use tracing::{error, info, warn};

/// Courier: a NATS-protocol message broker.
///
/// Flags follow nats-server's (leaf nodes are configured in the file's `leafnodes {}`, as for
/// nats-server).
#[derive(Debug, Parser)]
#[command(name = "courier", version, disable_version_flag = true)]
struct Cli {
    /// Port to listen on for clients (-1 picks a free port).
    #[arg(short = 'p', long = "port", allow_negative_numbers = true)]
    port: Option<i32>,
    /// Address to bind the client listener to (also --net).
    #[arg(short = 'a', long = "addr", visible_alias = "net")]
    addr: Option<String>,
    /// Server name (also --server_name).
    #[arg(short = 'n', long = "name", visible_alias = "server_name")]
    name: Option<String>,
    /// Configuration file.
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Check the configuration file and exit.
    #[arg(short = 't')]
    check_config: bool,
    /// Log file.
    #[arg(short = 'l', long = "log")]
    log: Option<PathBuf>,
    /// File to write the process id to.
    #[arg(short = 'P', long = "pid")]
    pid: Option<PathBuf>,
    /// Log debug messages.
    #[arg(short = 'D', long = "debug")]
    debug: bool,
    /// Log protocol traces.
    #[arg(short = 'V', long = "trace")]
    trace: bool,
    /// Print timestamps in the log (on by default).
    #[arg(short = 'T', long = "logtime", num_args = 0..=1, default_missing_value = "true")]
    logtime: Option<bool>,
    /// HTTP monitoring port (0 picks a free port).
    #[arg(short = 'm', long = "http_port")]
    http_port: Option<u16>,
    /// Send a signal to a running server: stop, quit, term, reload, reopen or ldm, optionally
    /// as SIGNAL=PID (also -sl).
    #[arg(long = "signal")]
    signal: Option<String>,
    /// Storage directory for JetStream (also -sd).
    #[arg(long = "store_dir", visible_alias = "sd")]
    store_dir: Option<PathBuf>,
    /// Enable JetStream (also -js).
    #[arg(long = "jetstream")]
    jetstream: bool,
    /// Where routes from other servers connect (`nats://host:port`; also --cluster_listen).
    #[arg(long = "cluster", visible_alias = "cluster_listen")]
    cluster: Option<String>,
    /// The cluster's name.
    #[arg(long = "cluster_name")]
    cluster_name: Option<String>,
    /// Routes to other servers, comma-separated (`nats-route://host:port,...`).
    #[arg(long = "routes")]
    routes: Option<String>,
    /// The route address other servers are told to dial.
    #[arg(long = "cluster_advertise")]
    cluster_advertise: Option<String>,
    /// Do not tell clients about the other servers of the cluster.
    #[arg(long = "no_advertise")]
    no_advertise: bool,
    /// Attempts at a route learned from another server before it is given up.
    #[arg(long = "connect_retries")]
    connect_retries: Option<u32>,
    /// User required for connections.
    #[arg(long = "user")]
    user: Option<String>,
    /// Password required for connections.
    #[arg(long = "pass")]
    pass: Option<String>,
    /// Authorization token required for connections.
    #[arg(long = "auth")]
    auth: Option<String>,
    /// Require TLS for client connections.
    #[arg(long = "tls")]
    tls: bool,
    /// Server certificate (PEM).
    #[arg(long = "tlscert")]
    tlscert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long = "tlskey")]
    tlskey: Option<PathBuf>,
    /// Require and verify client certificates.
    #[arg(long = "tlsverify")]
    tlsverify: bool,
    /// CA certificates for verifying client certificates (PEM).
    #[arg(long = "tlscacert")]
    tlscacert: Option<PathBuf>,
    /// Threads that run connections (default: GOMAXPROCS if set, else one per CPU).
    #[arg(long = "threads")]
    threads: Option<usize>,
    /// Print the version and exit.
    #[arg(short = 'v', long = "version")]
    version: bool,
}

/// Rewrites nats-server's multi-letter single-dash flags (`-sl`, `-js`, `-DV`, `-port`) into
/// forms clap parses.
fn normalize_args(args: impl Iterator<Item = String>) -> Vec<String> {
    let longs = [
        "port",
        "addr",
        "net",
        "name",
        "server_name",
        "config",
        "log",
        "pid",
        "debug",
        "trace",
        "logtime",
        "http_port",
        "signal",
        "store_dir",
        "sd",
        "jetstream",
        "cluster",
        "cluster_listen",
        "cluster_name",
        "routes",
        "cluster_advertise",
        "no_advertise",
        "connect_retries",
        "threads",
        "version",
        "help",
    ];
    let mut out = Vec::new();
    for arg in args {
        let (flag, value) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let rewritten = match flag.as_str() {
            "-sl" => Some("--signal".to_string()),
            "-js" => Some("--jetstream".to_string()),
            "-DV" | "-VD" => {
                out.push("-D".to_string());
                out.push("-V".to_string());
                continue;
            }
            f if f.len() > 2 && f.starts_with('-') && !f.starts_with("--") && longs.contains(&&f[1..]) => {
                Some(format!("-{f}"))
            }
            _ => None,
        };
        match (rewritten, value) {
            (Some(f), Some(v)) => out.push(format!("{f}={v}")),
            (Some(f), None) => out.push(f),
            (None, _) => out.push(arg),
        }
    }
    out
}

/// Sends `--signal` to a running server.
fn send_signal(spec: &str) -> Result<()> {
    let (name, target) = match spec.split_once('=') {
        Some((n, t)) => (n, Some(t)),
        None => (spec, None),
    };
    let sig = match name {
        "stop" => libc::SIGKILL,
        "quit" => libc::SIGINT,
        "term" => libc::SIGTERM,
        "reload" => libc::SIGHUP,
        "reopen" => libc::SIGUSR1,
        "ldm" => libc::SIGUSR2,
        other => bail!("unknown signal {other:?}"),
    };
    let Some(target) = target else {
        bail!("no pid given: use --signal {name}=<pid or pid file>");
    };
    let pid: i32 = match target.parse() {
        Ok(pid) => pid,
        Err(_) => std::fs::read_to_string(target)
            .with_context(|| format!("reading pid file {target}"))?
            .trim()
            .parse()
            .with_context(|| format!("pid file {target} does not hold a pid"))?,
    };
    // SAFETY: kill(2) with a pid and a signal number has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } != 0 {
        bail!("signal to {pid} failed: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Builds the options: defaults, then the config file, then the flags. Returns warnings about
/// ignored settings, to log once logging is up.
fn options_from(cli: &Cli) -> Result<(Options, Vec<String>)> {
    let mut opts = Options::default();
    let warnings = match &cli.config {
        Some(path) => courier::config::load_file(path, &mut opts)?,
        None => Vec::new(),
    };
    cluster_flags(cli, &mut opts)?;
    if let Some(port) = cli.port {
        opts.port = match port {
            -1 => 0,
            p => u16::try_from(p).with_context(|| format!("invalid port {p}"))?,
        };
    }
    if let Some(addr) = &cli.addr {
        opts.host = addr.clone();
    }
    if let Some(name) = &cli.name {
        opts.server_name = name.clone();
    }
    if let Some(user) = &cli.user {
        opts.authorization.users = vec![courier::auth::User {
            name: user.clone(),
            password: cli.pass.clone().unwrap_or_default(),
            permissions: None,
        }];
    }
    if let Some(token) = &cli.auth {
        opts.authorization.token = Some(token.clone());
    }
    if cli.tls || cli.tlscert.is_some() || cli.tlskey.is_some() || cli.tlsverify || cli.tlscacert.is_some() {
        let mut tls = opts.tls.take().unwrap_or_default();
        if let Some(cert) = &cli.tlscert {
            tls.cert_file = cert.clone();
        }
        if let Some(key) = &cli.tlskey {
            tls.key_file = key.clone();
        }
        if let Some(ca) = &cli.tlscacert {
            tls.ca_file = Some(ca.clone());
        }
        tls.verify |= cli.tlsverify;
        if tls.cert_file.as_os_str().is_empty() || tls.key_file.as_os_str().is_empty() {
            bail!("TLS needs --tlscert and --tlskey");
        }
        opts.tls = Some(tls);
    }
    opts.debug |= cli.debug;
    opts.trace |= cli.trace;
    if let Some(logtime) = cli.logtime {
        opts.logtime = logtime;
    }
    if let Some(log) = &cli.log {
        opts.log_file = Some(log.clone());
    }
    if let Some(pid) = &cli.pid {
        opts.pid_file = Some(pid.clone());
    }
    if let Some(port) = cli.http_port {
        opts.http_port = Some(port);
    }
    if cli.jetstream && opts.jetstream.is_none() {
        opts.jetstream = Some(courier::options::JetStreamOptions::default());
    }
    if let (Some(dir), Some(js)) = (&cli.store_dir, opts.jetstream.as_mut()) {
        js.store_dir = Some(dir.clone());
    }
    opts.worker_threads = match cli.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => n,
        // nats-server users size the Go runtime with GOMAXPROCS; it means the same here.
        None => std::env::var("GOMAXPROCS").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0),
    };
    if opts.worker_threads == 0 {
        opts.worker_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    }
    Ok((opts, warnings))
}

/// The cluster flags, over the config file's `cluster {}`.
fn cluster_flags(cli: &Cli, opts: &mut Options) -> Result<()> {
    let any = cli.cluster.is_some()
        || cli.routes.is_some()
        || cli.cluster_name.is_some()
        || cli.cluster_advertise.is_some()
        || cli.no_advertise
        || cli.connect_retries.is_some();
    if !any {
        return Ok(());
    }
    let mut c = opts.cluster.take().unwrap_or_default();
    if let Some(url) = &cli.cluster {
        let u = courier::options::route_url::RouteUrl::parse(url).with_context(|| format!("bad --cluster {url}"))?;
        c.host = Some(u.host);
        c.port = u.port;
        if u.user.is_some() {
            c.user = u.user;
        }
    }
    if let Some(routes) = &cli.routes {
        c.routes = routes.split(',').map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect();
        for r in &c.routes {
            if courier::options::route_url::RouteUrl::parse(r).is_none() {
                bail!("error parsing route url [{r:?}]");
            }
        }
    }
    if let Some(name) = &cli.cluster_name {
        c.name = Some(name.clone());
    }
    if let Some(a) = &cli.cluster_advertise {
        c.advertise = Some(a.clone());
    }
    c.no_advertise |= cli.no_advertise;
    if let Some(n) = cli.connect_retries {
        c.connect_retries = n;
    }
    opts.cluster = Some(c);
    Ok(())
}

/// Turns signals into server actions: SIGINT/SIGTERM stop, SIGUSR1 reopens the log file (for
/// log rotation), SIGUSR2 enters lame duck mode, SIGHUP reloads the config file (with the
/// command line's flags still on top).
async fn handle_signals(handle: courier::ServerHandle, cli: Cli, log: LogHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term), Ok(mut usr1), Ok(mut usr2), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::user_defined2()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = usr1.recv() => {
                match log.reopen() {
                    Ok(()) => info!("Reopened log file"),
                    Err(e) => error!("Failed to reopen the log file: {e}"),
                }
            }
            _ = usr2.recv() => {
                info!("Trapped \"user defined signal 2\" signal");
                handle.enter_lame_duck();
            }
            _ = hup.recv() => {
                info!("Trapped \"hangup\" signal");
                let result = options_from(&cli).and_then(|(opts, warnings)| {
                    let (debug, trace) = (opts.debug, opts.trace);
                    handle.reload(opts)?;
                    log.set_level(debug, trace);
                    for warning in warnings {
                        warn!("{warning}");
                    }
                    Ok(())
                });
                if let Err(e) = result {
                    error!("Failed to reload server configuration: {e:#}");
                }
            }
        }
    }
    info!("Trapped signal; shutting down");
    handle.shutdown();
}

/// Raises the soft limit on open files to the hard limit, as nats-server does at start (Go's
/// runtime does it for it): every connection is a file, and the usual soft limit of 1024 would
/// cap a fleet of devices long before memory does.
fn raise_open_file_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            let raised = libc::rlimit { rlim_cur: rl.rlim_max, rlim_max: rl.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                warn!("could not raise the open file limit from {}", rl.rlim_cur);
            }
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if cli.version {
        println!(
            "courier: v{} (nats-server {} compatible)",
            env!("CARGO_PKG_VERSION"),
            courier::server::COMPAT_VERSION
        );
        return Ok(());
    }
    if let Some(spec) = &cli.signal {
        return send_signal(spec);
    }
    let (opts, warnings) = options_from(&cli)?;
    if cli.check_config {
        if let Some(tls) = &opts.tls {
            courier::tls::acceptor(tls).context("TLS")?;
        }
        println!("configuration is ok");
        return Ok(());
    }
    let log = logging::init(&LogOptions {
        debug: opts.debug,
        trace: opts.trace,
        logtime: opts.logtime,
        file: opts.log_file.clone(),
    })
    .context("opening the log file")?;
    for warning in &warnings {
        warn!("{warning}");
    }
    raise_open_file_limit();
    let pid_file = opts.pid_file.clone();
    if let Some(pid_file) = &pid_file {
        std::fs::write(pid_file, std::process::id().to_string())
            .with_context(|| format!("writing pid file {}", pid_file.display()))?;
    }
    // With one thread a work-stealing scheduler only adds handoffs between threads that cannot
    // run at once; request-reply round trips measured about 10% faster on a current-thread
    // runtime.
    let runtime = if opts.worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(opts.worker_threads).enable_all().build()?
    };
    runtime.block_on(async move {
        info!("Starting courier {}", env!("CARGO_PKG_VERSION"));
        let server = Server::bind(opts).await.context("starting the server")?;
        let handle = server.handle();
        tokio::spawn(handle_signals(handle, cli, log));
        server.run().await;
        Ok::<(), anyhow::Error>(())
    })?;
    if let Some(pid_file) = &pid_file {
        let _ = std::fs::remove_file(pid_file);
    }
    Ok(())
}

/// Keeps glibc's allocator from handing the top of the heap back to the kernel after every
/// burst: buffers that grow and shrink with traffic (outbound queues, read buffers) otherwise
/// cost a page fault per page each time they grow again. Memory above this much free at the
/// top of the heap is still returned.
fn keep_heap_top() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

fn main() -> ExitCode {
    keep_heap_top();
    let cli = Cli::parse_from(normalize_args(std::env::args()));
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("courier: {e:#}");
            ExitCode::FAILURE
        }
    }
}

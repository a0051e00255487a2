//! Log output in nats-server's format: `[pid] 2006/01/02 15:04:05.000000 [INF] message`.
//!
//! Tools that drive nats-server read its log (the official clients' test harnesses look for
//! `Listening for client connections on host:port`), so Courier writes the same shape, to
//! standard error or to a log file.

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt as tfmt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Registry};

/// How much to log and where.
#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Debug messages too (`-D`).
    pub debug: bool,
    /// Protocol trace messages too (`-V`).
    pub trace: bool,
    /// Print the date and time on each line (`-T`, on by default).
    pub logtime: bool,
    /// Write to this file instead of standard error (`-l`).
    pub file: Option<PathBuf>,
}

/// Formats events as nats-server does.
struct NatsFormat {
    pid: u32,
    logtime: bool,
}

/// Collects an event's message and its other fields.
#[derive(Default)]
struct Fields {
    message: String,
    prefix: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.prefix, "{}:{:?} - ", field.name(), value);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.prefix.push_str(&format!("{}:{} - ", field.name(), value));
        }
    }
}

/// `2006/01/02 15:04:05.000000` in UTC.
fn timestamp(now: SystemTime) -> String {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (year, month, day, hour, minute, second) = crate::monitor::civil(d.as_secs());
    format!("{year:04}/{month:02}/{day:02} {hour:02}:{minute:02}:{second:02}.{:06}", d.subsec_micros())
}

impl<S, N> FormatEvent<S, N> for NatsFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::ERROR => "ERR",
            Level::WARN => "WRN",
            Level::INFO => "INF",
            Level::DEBUG => "DBG",
            Level::TRACE => "TRC",
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        write!(w, "[{}] ", self.pid)?;
        if self.logtime {
            write!(w, "{} ", timestamp(SystemTime::now()))?;
        }
        writeln!(w, "[{level}] {}{}", fields.prefix, fields.message)
    }
}

/// Changes the installed logger: its level (on reload) and its file (on SIGUSR1).
#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<LevelFilter, Registry>,
    file: Option<LogFile>,
}

impl LogHandle {
    /// Sets the level from the debug and trace switches.
    pub fn set_level(&self, debug: bool, trace: bool) {
        let _ = self.filter.modify(|f| *f = level_of(debug, trace));
    }

    /// Opens the log file again by name, so that a rotated file is let go of.
    pub fn reopen(&self) -> io::Result<()> {
        match &self.file {
            Some(file) => file.reopen(),
            None => Ok(()),
        }
    }
}

/// A log file that can be reopened by name while the logger keeps writing to it.
#[derive(Clone)]
struct LogFile(Arc<(PathBuf, Mutex<std::fs::File>)>);

impl LogFile {
    fn open(path: &Path) -> io::Result<LogFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(LogFile(Arc::new((path.to_path_buf(), Mutex::new(file)))))
    }

    fn reopen(&self) -> io::Result<()> {
        let file = OpenOptions::new().create(true).append(true).open(&self.0 .0)?;
        *self.0 .1.lock().unwrap_or_else(|e| e.into_inner()) = file;
        Ok(())
    }
}

/// Writes one log line to the current file.
struct LogFileWriter<'a>(std::sync::MutexGuard<'a, std::fs::File>);

impl io::Write for LogFileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<'a> tfmt::MakeWriter<'a> for LogFile {
    type Writer = LogFileWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        LogFileWriter(self.0 .1.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn level_of(debug: bool, trace: bool) -> LevelFilter {
    if trace {
        LevelFilter::TRACE
    } else if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    }
}

/// Installs the global logger. Fails when the log file cannot be opened.
pub fn init(opts: &LogOptions) -> io::Result<LogHandle> {
    let (filter, handle) = reload::Layer::new(level_of(opts.debug, opts.trace));
    let format = NatsFormat { pid: std::process::id(), logtime: opts.logtime };
    let registry = tracing_subscriber::registry().with(filter);
    let file = opts.file.as_deref().map(LogFile::open).transpose()?;
    let result = match &file {
        Some(file) => registry.with(tfmt::layer().event_format(format).with_writer(file.clone())).try_init(),
        None => registry.with(tfmt::layer().event_format(format).with_writer(io::stderr)).try_init(),
    };
    // A logger installed already (in tests) is fine.
    let _ = result;
    Ok(LogHandle { filter: handle, file })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_time_like_nats_server() {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(timestamp(t), "2023/11/14 22:13:20.123456");
        assert_eq!(timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000/02/29 00:00:00.000000");
    }
}

//! Samples a scenario's progress counter at a fixed interval: the samples become the throughput
//! timeline, and drive a progress bar when stderr is a terminal.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the counter is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Throughput during one sampling interval.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds since the measurement started (end of the interval).
    pub t_s: f64,
    /// Units (messages, replies, connections) per second during the interval.
    pub per_sec: f64,
}

/// A running sampler; [`Sampler::finish`] stops it and returns the timeline.
pub struct Sampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    /// Starts sampling `counter` from `start`; shows a bar of `total` units when `show_bar` and
    /// stderr is a terminal.
    pub fn start(counter: Arc<AtomicU64>, total: u64, start: Instant, show_bar: bool, unit: &'static str) -> Sampler {
        let (stop, mut stop_rx) = watch::channel(false);
        let bar = (show_bar && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(10));
            let template = format!("{{elapsed_precise}} {{bar:40}} {{human_pos}}/{{human_len}} {unit} ({{rate}})");
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style.with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0}/s", s.per_sec());
                }));
            }
            bar
        });
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut last_t = start;
            let mut last_n = counter.load(Ordering::Relaxed);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::from_std(start) + SAMPLE_EVERY, SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let stopping = tokio::select! {
                    _ = tick.tick() => false,
                    _ = stop_rx.changed() => true,
                };
                let now = Instant::now();
                let n = counter.load(Ordering::Relaxed);
                let dt = now.saturating_duration_since(last_t).as_secs_f64();
                if dt > 0.0 && (!stopping || n > last_n) {
                    samples.push(Sample {
                        t_s: now.saturating_duration_since(start).as_secs_f64(),
                        per_sec: (n - last_n) as f64 / dt,
                    });
                }
                last_t = now;
                last_n = n;
                if let Some(bar) = &bar {
                    bar.set_position(n);
                }
                if stopping {
                    break;
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            samples
        });
        Sampler { stop, task }
    }

    /// Stops sampling and returns the timeline.
    pub async fn finish(self) -> Vec<Sample> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

//! The PINGs a link to another server (a route, a leaf link) sends: the first measures the
//! round trip shown in monitoring, and a peer that lets `ping_max` of them go unanswered is
//! stale.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::Connection;

/// A link's PINGs in flight.
#[derive(Debug, Default)]
pub struct Heartbeat {
    unanswered: u32,
    sent: Option<Instant>,
}

impl Heartbeat {
    /// The ping timer fired: queues a PING, or returns false when `max` PINGs went unanswered
    /// (the peer is stale).
    pub fn ping(&mut self, conn: &Connection, max: u32) -> bool {
        if self.unanswered >= max {
            return false;
        }
        self.unanswered += 1;
        self.sent = Some(Instant::now());
        let _ = conn.outbound.push_bytes(b"PING\r\n");
        conn.outbound.wake();
        true
    }

    /// A PONG arrived: the peer is alive, and the round trip of the PING it answers is kept.
    pub fn pong(&mut self, conn: &Connection) {
        self.unanswered = 0;
        if let Some(sent) = self.sent.take() {
            let rtt = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
            conn.stats.rtt_nanos.store(rtt, Ordering::Relaxed);
        }
    }

    /// Answers the peer's PING.
    pub fn answer(conn: &Connection) {
        let _ = conn.outbound.push_bytes(b"PONG\r\n");
        conn.outbound.wake();
    }
}

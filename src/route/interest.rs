//! What a route tells its peer about this server's interest in one account: `RS+` when a
//! subject gains its first subscriber here, `RS-` when it loses its last, and for a queue group
//! its weight (members here) on every change.
//!
//! Interest learned from routes is never passed on (a full mesh needs no second hop), nor is
//! what this server's hub told it (each server of a leaf cluster has its own hub link); interest
//! of every other kind here (clients, devices, leaf nodes, the server's own subscribers,
//! imports) counts as one ([`Tally`]): a subject two kinds subscribe to is one `RS+`, and its
//! `RS-` comes only when both are gone.

use std::sync::Arc;

use bytes::BufMut;
use parking_lot::Mutex;

use crate::account::interest::{Announce, Tally};
use crate::account::{Account, InterestChange, InterestListener};
use crate::auth::Permissions;
use crate::connection::Connection;
use crate::delivery::TargetKind;

/// One route's view of one account's interest.
pub(crate) struct RouteInterest {
    conn: Arc<Connection>,
    account: Box<[u8]>,
    /// The cluster's permissions: interest is told only where `import` (publish) allows.
    permissions: Option<Arc<Permissions>>,
    counts: Mutex<Tally>,
}

impl RouteInterest {
    /// Starts following `account` for the route `conn`: sends the interest there is now,
    /// then every change.
    pub(crate) fn start(
        conn: &Arc<Connection>,
        account: &Account,
        permissions: Option<Arc<Permissions>>,
    ) -> Arc<RouteInterest> {
        let me = Arc::new(RouteInterest {
            conn: Arc::clone(conn),
            account: account.name.as_bytes().into(),
            permissions,
            counts: Mutex::new(Tally::default()),
        });
        // Held while registering, so that no change is applied before the snapshot.
        let mut counts = me.counts.lock();
        let now = account.listen(Arc::clone(&me) as Arc<dyn InterestListener>);
        for interest in &now {
            me.apply(&mut counts, &interest.as_change());
        }
        drop(counts);
        me.conn.outbound.wake();
        me
    }

    fn apply(&self, counts: &mut Tally, change: &InterestChange<'_>) {
        // Interest learned from a route or from this server's hub is not passed on.
        if matches!(change.kind, TargetKind::Route | TargetKind::Hub) {
            return;
        }
        if self.permissions.as_ref().is_some_and(|p| !p.can_publish(change.subject)) {
            return;
        }
        match (counts.apply(change), change.queue) {
            (Announce::Interest(_), None) => self.send(b"RS+ ", change.subject, None),
            (Announce::Interest(weight), Some(q)) => self.send(b"RS+ ", change.subject, Some((q, weight))),
            (Announce::Gone, queue) => self.send(b"RS- ", change.subject, queue.map(|q| (q, None))),
            (Announce::Nothing, _) => {}
        }
    }

    fn send(&self, op: &[u8], subject: &[u8], queue: Option<(&[u8], Option<u32>)>) {
        let need = op.len() + self.account.len() + subject.len() + queue.map_or(0, |(q, _)| q.len() + 12) + 4;
        let _ = self.conn.outbound.push_with(need, |out| {
            out.put_slice(op);
            out.put_slice(&self.account);
            out.put_u8(b' ');
            out.put_slice(subject);
            if let Some((q, weight)) = queue {
                out.put_u8(b' ');
                out.put_slice(q);
                if let Some(w) = weight {
                    out.put_u8(b' ');
                    out.put_slice(itoa::Buffer::new().format(w).as_bytes());
                }
            }
            out.put_slice(b"\r\n");
        });
    }
}

impl InterestListener for RouteInterest {
    fn interest_changed(&self, change: &InterestChange<'_>) {
        let mut counts = self.counts.lock();
        self.apply(&mut counts, change);
        drop(counts);
        self.conn.outbound.wake();
    }
}

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

use parking_lot::Mutex;

use crate::account::interest::Tally;
use crate::account::{Account, InterestChange, InterestListener};
use crate::auth::Permissions;
use crate::connection::Connection;
use crate::delivery::TargetKind;
use crate::proto::encode::Hop;

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
        counts.apply(change).send(&self.conn.outbound, Hop::Route { account: &self.account }, change);
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

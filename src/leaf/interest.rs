//! What a leaf link tells the other side about interest in its bound account: `LS+` when a
//! subject gains its first subscriber, `LS-` when it loses its last, and for a queue group its
//! weight on every change, as nats-server.
//!
//! The hub of a link tells all the account's interest (clients, devices, services, routes,
//! other leaf nodes, its own hub), the spoke only its own (not what its routes or its hubs
//! told it), and neither tells a link its own interest back. Interest goes over only where the
//! other side may publish, and the account's loop detection subject always goes first.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::account::interest::Tally;
use crate::account::{Account, InterestChange, InterestListener};
use crate::auth::Permissions;
use crate::connection::Connection;
use crate::delivery::TargetKind;
use crate::proto::encode::Hop;

/// The prefix of loop detection subjects, which go over whatever the permissions say.
pub(super) const LOOP_PREFIX: &[u8] = b"$LDS.";

/// One leaf link's view of its account's interest.
pub(crate) struct LeafInterest {
    conn: Arc<Connection>,
    /// This server is the spoke of the link: only its own interest goes over.
    spoke: bool,
    /// The other side's permissions, as if it were a client here: interest is told only where
    /// it may publish.
    permissions: Option<Arc<Permissions>>,
    tally: Mutex<Tally>,
}

impl LeafInterest {
    /// Starts following `account` for the link `conn`: announces the loop detection subject
    /// and the interest there is now, then every change.
    pub(crate) fn start(
        conn: &Arc<Connection>,
        account: &Account,
        spoke: bool,
        permissions: Option<Arc<Permissions>>,
        loop_subject: &str,
    ) -> Arc<LeafInterest> {
        let me =
            Arc::new(LeafInterest { conn: Arc::clone(conn), spoke, permissions, tally: Mutex::new(Tally::default()) });
        me.conn.outbound.push_interest(Hop::Leaf, true, loop_subject.as_bytes(), None);
        // Held while registering, so that no change is applied before the snapshot.
        let mut tally = me.tally.lock();
        let now = account.listen(Arc::clone(&me) as Arc<dyn InterestListener>);
        for interest in &now {
            me.apply(&mut tally, &interest.as_change());
        }
        drop(tally);
        me.conn.outbound.wake();
        me
    }

    /// Whether a change of this kind and source is told over this link.
    fn counts(&self, change: &InterestChange<'_>) -> bool {
        if change.source == self.conn.cid {
            return false;
        }
        match change.kind {
            TargetKind::Route | TargetKind::Hub => !self.spoke,
            TargetKind::Client | TargetKind::Mqtt | TargetKind::Leaf | TargetKind::Internal | TargetKind::Import => {
                true
            }
        }
    }

    fn apply(&self, tally: &mut Tally, change: &InterestChange<'_>) {
        if !self.counts(change) {
            return;
        }
        let permitted = change.subject.starts_with(LOOP_PREFIX)
            || self.permissions.as_ref().is_none_or(|p| p.can_publish(change.subject));
        if !permitted {
            return;
        }
        tally.apply(change).send(&self.conn.outbound, Hop::Leaf, change);
    }
}

impl InterestListener for LeafInterest {
    fn interest_changed(&self, change: &InterestChange<'_>) {
        let mut tally = self.tally.lock();
        self.apply(&mut tally, change);
        drop(tally);
        self.conn.outbound.wake();
    }
}

//! Accounts: separate subject namespaces, and the one path by which subscriptions change.
//!
//! Every connection belongs to one account and sees only the messages published in it. Without
//! JWT authentication every client is in the global account; with it, a user is bound to the
//! account that signed its JWT.
//!
//! Subscriptions are added and removed only through [`Account::add_subscription`] and
//! [`Account::remove_subscription`]. That path keeps the trie (and its shared match cache), the
//! owners' subscription counts and the interest bookkeeping ([`interest`]) in step, tells an
//! owner about removals it did not make itself, and emits first-interest and last-interest
//! events, which routes and leaf nodes turn into `RS+`/`RS-` and `LS+`/`LS-`.
//!
//! Accounts share parts of their namespaces through exports and imports ([`Accounts::link`]).

pub mod interest;
mod links;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use rustc_hash::FxBuildHasher;

use crate::delivery::Subscription;
use crate::sublist::Sublist;

pub use interest::{InterestChange, InterestListener};

/// The name of the account clients belong to when nothing says otherwise, as in nats-server.
pub const GLOBAL_ACCOUNT: &str = "$G";

/// Who removed a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Its owner, on its own task (UNSUB, a permission reload, the connection closing).
    Owner,
    /// Another task: a publisher's delivery that reached the subscription's limit.
    Elsewhere,
}

/// One subject namespace.
pub struct Account {
    /// The account's name (its public key, for JWT accounts).
    pub name: String,
    /// Its subscriptions. Read it freely; change it only through this account.
    pub sublist: Sublist<Subscription>,
    /// Serialises changes, so that interest events come out in the order the trie changed.
    mutation: Mutex<interest::Interest>,
    /// The way back for responses to the services other accounts import from this one, with
    /// its subscription.
    responses: Mutex<Option<(Arc<crate::delivery::ResponseRouter>, Arc<Subscription>)>>,
}

impl Account {
    /// An empty account.
    pub fn new(name: impl Into<String>) -> Self {
        Account {
            name: name.into(),
            sublist: Sublist::new(),
            mutation: Mutex::new(interest::Interest::default()),
            responses: Mutex::new(None),
        }
    }

    /// Adds a subscription to the trie.
    pub fn add_subscription(&self, sub: Arc<Subscription>) {
        if let Some(conn) = sub.target.connection() {
            conn.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        let mut interest = self.mutation.lock();
        self.sublist.insert(Arc::clone(&sub));
        interest.added(&sub);
    }

    /// Removes a subscription from the trie once, whoever asks first (UNSUB, the delivery that
    /// reached its limit, or the connection closing). Returns whether this call removed it.
    pub fn remove_subscription(&self, sub: &Arc<Subscription>, by: Removal) -> bool {
        if !sub.mark_removed() {
            return false;
        }
        {
            let mut interest = self.mutation.lock();
            self.sublist.remove(sub);
            interest.removed(sub);
        }
        if let Some(conn) = sub.target.connection() {
            conn.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
            if by == Removal::Elsewhere {
                conn.subscription_ended(&sub.sid);
            }
        }
        true
    }

    /// Registers `listener` for interest changes from now on, and returns the interest there
    /// is now (one change per subject and queue group, with its count), so that the listener
    /// starts from a complete picture with nothing missed or doubled in between.
    pub fn listen(&self, listener: Arc<dyn InterestListener>) -> Vec<interest::OwnedInterest> {
        let mut interest = self.mutation.lock();
        interest.listen(listener, || self.sublist.all())
    }

    /// Stops sending interest changes to `listener`.
    pub fn unlisten(&self, listener: &Arc<dyn InterestListener>) {
        self.mutation.lock().unlisten(listener);
    }
}

/// Every account the server has, created on first use.
pub struct Accounts {
    global: Arc<Account>,
    named: DashMap<String, Arc<Account>, FxBuildHasher>,
    /// What the exports and imports subscribed.
    links: links::Links,
    /// Subscriptions of the server's own plumbing (imports, system services), which the
    /// subscription count leaves out.
    plumbing: std::sync::atomic::AtomicUsize,
}

impl Default for Accounts {
    fn default() -> Self {
        Accounts {
            global: Arc::new(Account::new(GLOBAL_ACCOUNT)),
            named: DashMap::with_hasher(FxBuildHasher),
            links: links::Links::default(),
            plumbing: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

impl Accounts {
    /// The global account.
    pub fn global(&self) -> &Arc<Account> {
        &self.global
    }

    /// The account with this name, created if it is new.
    pub fn get_or_create(&self, name: &str) -> Arc<Account> {
        if name == GLOBAL_ACCOUNT {
            return Arc::clone(&self.global);
        }
        if let Some(account) = self.named.get(name) {
            return Arc::clone(&account);
        }
        Arc::clone(&self.named.entry(name.to_string()).or_insert_with(|| Arc::new(Account::new(name))))
    }

    /// The account with this name, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Account>> {
        if name == GLOBAL_ACCOUNT {
            return Some(Arc::clone(&self.global));
        }
        self.named.get(name).map(|a| Arc::clone(&a))
    }

    /// Every account, the global one first.
    pub fn all(&self) -> Vec<Arc<Account>> {
        let mut all = vec![Arc::clone(&self.global)];
        all.extend(self.named.iter().map(|a| Arc::clone(a.value())));
        all
    }

    /// Subscriptions across every account, leaving out the server's own plumbing.
    pub fn subscriptions(&self) -> usize {
        let all = self.global.sublist.count() + self.named.iter().map(|a| a.sublist.count()).sum::<usize>();
        all.saturating_sub(self.plumbing.load(Ordering::Relaxed))
    }

    /// Adds a subscription of the server's own plumbing (an import, a system service) to
    /// `account`: one the subscription count leaves out.
    pub fn add_plumbing(&self, account: &Account, sub: Arc<Subscription>) {
        self.plumbing.fetch_add(1, Ordering::Relaxed);
        account.add_subscription(sub);
    }

    /// Removes a subscription added by [`Accounts::add_plumbing`].
    pub fn remove_plumbing(&self, account: &Account, sub: &Arc<Subscription>) {
        if account.remove_subscription(sub, Removal::Owner) {
            self.plumbing.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

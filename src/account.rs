//! Accounts: separate subject namespaces.
//!
//! Every client belongs to one account and sees only the messages published in it. Without
//! JWT authentication every client is in the global account; with it, a user is bound to the
//! account that signed its JWT.

use std::sync::Arc;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::client::Subscription;
use crate::sublist::Sublist;

/// The name of the account clients belong to when nothing says otherwise, as in nats-server.
pub const GLOBAL_ACCOUNT: &str = "$G";

/// One subject namespace.
pub struct Account {
    /// The account's name (its public key, for JWT accounts).
    pub name: String,
    /// Its subscriptions.
    pub sublist: Sublist<Subscription>,
}

impl Account {
    /// An empty account.
    pub fn new(name: impl Into<String>) -> Self {
        Account { name: name.into(), sublist: Sublist::new() }
    }

    /// Removes a subscription from the account's trie once, whoever asks first (UNSUB, the
    /// delivery that reached its limit, or the connection closing).
    pub fn remove_subscription(&self, sub: &Arc<Subscription>) {
        if sub.mark_removed() {
            self.sublist.remove(sub);
            // Counted here, where every removal passes (UNSUB, a reached limit, a close).
            sub.client.stats.subscriptions.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Every account the server has, created on first use.
pub struct Accounts {
    global: Arc<Account>,
    named: Mutex<FxHashMap<String, Arc<Account>>>,
}

impl Default for Accounts {
    fn default() -> Self {
        Accounts { global: Arc::new(Account::new(GLOBAL_ACCOUNT)), named: Mutex::new(FxHashMap::default()) }
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
        let mut named = self.named.lock();
        Arc::clone(named.entry(name.to_string()).or_insert_with(|| Arc::new(Account::new(name))))
    }

    /// Every account, the global one first.
    pub fn all(&self) -> Vec<Arc<Account>> {
        let mut all = vec![Arc::clone(&self.global)];
        all.extend(self.named.lock().values().cloned());
        all
    }

    /// Subscriptions across every account.
    pub fn subscriptions(&self) -> usize {
        self.global.sublist.count() + self.named.lock().values().map(|a| a.sublist.count()).sum::<usize>()
    }
}

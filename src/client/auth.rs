//! Who a client is and what it may do: CONNECT, authentication (bcrypt off the runtime's
//! threads), permissions, and picking up reloaded options.

use std::sync::Arc;

use tracing::debug;

use super::handlers::{quoted, sub_violation, Handled};
use super::Conn;
use crate::account::Removal;
use crate::auth::{AuthError, Authenticated, Permissions};
use crate::connection::CloseReason;
use crate::options::{Listener, Options};
use crate::proto::errors;
use crate::proto::ConnectOptions;
use crate::state::events::ConnectionEvent;

/// Most publish permission answers one connection caches.
const MAX_CACHED_PERMISSIONS: usize = 1024;

/// Checks credentials on the blocking pool, so that a bcrypt hash (tens of milliseconds) does
/// not hold up every other connection on the runtime's thread.
pub(crate) async fn check_off_runtime(
    limits: &Arc<Options>,
    listener: Listener,
    connect: &ConnectOptions,
    nonce: &str,
) -> Result<Authenticated, AuthError> {
    let (limits, connect, nonce) = (Arc::clone(limits), connect.clone(), nonce.to_string());
    tokio::task::spawn_blocking(move || limits.authorization_for(listener).check(&connect, nonce.as_bytes()))
        .await
        .unwrap_or(Err(AuthError::BadCredentials))
}

impl Conn {
    pub(super) fn on_connect(&mut self, json: &[u8]) -> Result<Handled, CloseReason> {
        if let Err(e) = self.opts.apply(json) {
            debug!(cid = self.shared.cid, "CONNECT refused: {e}");
            if let Some(text) = e.client_text() {
                self.send_err(text);
            }
            return Err(CloseReason::ProtocolViolation);
        }
        #[cfg(test)]
        if &*self.opts.name == super::tests::PANIC_NAME {
            panic!("connection task panics on purpose");
        }
        if self.opts.jwt.is_none() {
            if let Some(jwt) = self.websocket.as_ref().and_then(|w| w.jwt_cookie.clone()) {
                self.opts.jwt = Some(jwt.into());
            }
        }
        if self.authorization().is_expensive(&self.opts) {
            return Ok(Handled::Authenticate);
        }
        let result = self.authorization().check(&self.opts, self.nonce.as_bytes());
        self.finish_connect(result)?;
        Ok(Handled::Done)
    }

    /// Checks the CONNECT's credentials off the runtime, then finishes it.
    pub(super) async fn authenticate(&mut self) -> Result<(), CloseReason> {
        let result = check_off_runtime(&self.limits, self.listener(), &self.opts, &self.nonce).await;
        self.finish_connect(result)
    }

    fn finish_connect(&mut self, result: Result<Authenticated, AuthError>) -> Result<(), CloseReason> {
        let who = match result {
            Ok(who) => who,
            Err(e) => {
                let peer = self.shared.meta.lock().peer.map(|p| p.to_string()).unwrap_or_default();
                // The user name and the remote address, never the secret.
                tracing::warn!(
                    cid = self.shared.cid,
                    remote = peer.as_str(),
                    user = self.opts.user.as_deref().unwrap_or(""),
                    "Authorization failed: {e}"
                );
                return Err(self.auth_violation());
            }
        };
        self.set_permissions(who.permissions);
        {
            let mut meta = self.shared.meta.lock();
            meta.name = self.opts.name.to_string();
            meta.lang = self.opts.lang.to_string();
            meta.version = self.opts.version.to_string();
            meta.user = who.user.clone();
            if let Some(account) = &who.account {
                meta.account = account.clone();
            }
        }
        if let Some(account) = who.account {
            if account != self.account.name {
                if !self.subs.is_empty() {
                    // Subscriptions belong to the account they were made in; a client that moves drops them.
                    self.remove_all_subscriptions();
                }
                self.account = self.state.accounts.get_or_create(&account);
            }
        }
        self.connected = true;
        if self.state.events.is_listened() {
            self.state.events.report(ConnectionEvent::Connect(Arc::clone(&self.shared)));
        }
        self.shared.set_headers(self.opts.headers);
        self.shared.set_info_updates(self.opts.protocol >= 1);
        self.ok();
        Ok(())
    }

    pub(super) fn auth_violation(&mut self) -> CloseReason {
        self.state.stats.auth_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.state.events.is_listened() {
            let mut closed = crate::state::Registry::closed_of(&self.shared);
            closed.reason = CloseReason::AuthenticationViolation;
            if let Some(user) = &self.opts.user {
                closed.meta.user = Some(user.to_string());
            }
            closed.meta.name = self.opts.name.to_string();
            closed.meta.lang = self.opts.lang.to_string();
            closed.meta.version = self.opts.version.to_string();
            self.state.events.report(ConnectionEvent::AuthError(closed));
        }
        self.send_err(errors::AUTHORIZATION_VIOLATION);
        CloseReason::AuthenticationViolation
    }

    /// Picks up reloaded options. When the authorization changed, the client's credentials are
    /// checked again (a client that no longer passes is closed) and subscriptions its new
    /// permissions forbid are removed, as nats-server does; otherwise nothing is re-checked.
    pub(super) async fn refresh(&mut self) -> Result<(), CloseReason> {
        self.seen_reloads = self.state.reloads();
        let live = self.state.config.get();
        self.limits = Arc::clone(&live.opts);
        self.parser.set_limits(self.limits.max_control_line, self.limits.max_payload);
        self.shared.outbound.set_max_pending(self.limits.max_pending);
        if live.auth_epoch == self.auth_epoch {
            return Ok(());
        }
        self.auth_epoch = live.auth_epoch;
        if !self.connected {
            return Ok(());
        }
        let result = if self.authorization().is_expensive(&self.opts) {
            check_off_runtime(&self.limits, self.listener(), &self.opts, &self.nonce).await
        } else {
            self.authorization().check(&self.opts, self.nonce.as_bytes())
        };
        match result {
            Ok(who) => self.set_permissions(who.permissions),
            Err(e) => {
                debug!(cid = self.shared.cid, "Authorization no longer valid after reload: {e}");
                return Err(self.auth_violation());
            }
        }
        if let Some(perms) = self.perms.clone() {
            let denied: Vec<Box<[u8]>> = self
                .subs
                .iter()
                .filter(|(_, s)| !s.is_removed() && !perms.can_subscribe(&s.subject, s.queue.as_deref()))
                .map(|(sid, _)| sid.clone())
                .collect();
            for sid in denied {
                if let Some(sub) = self.subs.remove(&sid) {
                    self.account.remove_subscription(&sub, Removal::Owner);
                    let text = sub_violation(&sub.subject, sub.queue.as_deref());
                    self.send_err(&text);
                }
            }
        }
        Ok(())
    }

    /// Applies a user's permissions to this connection.
    fn set_permissions(&mut self, perms: Option<Permissions>) {
        self.shared.set_response_permission(perms.as_ref().and_then(|p| p.allow_responses));
        self.perms = perms.map(Arc::new);
        self.pub_allowed.clear();
    }

    /// Whether this client may publish to `subject`: by its permissions (cached per subject), or
    /// as an allowed response to a request it received.
    pub(super) fn may_publish(&mut self, subject: &[u8]) -> bool {
        let Some(perms) = &self.perms else { return true };
        let allowed = match self.pub_allowed.get(subject) {
            Some(&allowed) => allowed,
            None => {
                let allowed = perms.can_publish(subject);
                if self.pub_allowed.len() >= MAX_CACHED_PERMISSIONS {
                    self.pub_allowed.clear();
                }
                self.pub_allowed.insert(subject.into(), allowed);
                allowed
            }
        };
        allowed || self.shared.take_response(subject)
    }
}

/// The text of a publish permission violation.
pub(super) fn pub_violation(subject: &[u8]) -> String {
    format!("Permissions Violation for Publish to {}", quoted(subject))
}

//! Exports and imports put into effect: the subscriptions that carry messages between
//! accounts (see [`crate::delivery::Import`]).

use std::sync::Arc;

use parking_lot::Mutex;

use super::Accounts;
use crate::delivery::{Import, ResponseRouter, Subscription, Target};
use crate::options::accounts::{export_for, AccountLinks, Local, ServiceExport};
use crate::subject::SubjectTransform;

/// The subscriptions that the current exports and imports made, so that a reload can replace
/// them all.
#[derive(Default)]
pub(super) struct Links {
    subscriptions: Mutex<Vec<(Arc<super::Account>, Arc<Subscription>)>>,
}

impl Accounts {
    /// Puts `links` into effect in place of the ones before: a subscription in the exporter
    /// for each stream import, one in the importer for each service import, and the way back
    /// for the responses of each exporter of a service. Imports the exporter does not allow
    /// are skipped (the configuration was checked before).
    pub fn link(&self, links: &[AccountLinks]) {
        let mut made = Vec::new();
        for importer in links {
            for import in &importer.imports {
                let Some(exporter) = links.iter().find(|l| l.name == import.account) else { continue };
                let Some(export) = export_for(exporter, &importer.name, import) else { continue };
                let local = import.local_subject();
                let (account, subject, target) = if import.service {
                    let service = export.service.unwrap_or_default();
                    let ServiceExport { response, threshold } = service;
                    let exporter_account = self.get_or_create(&exporter.name);
                    let responses = exporter_account.response_router(self, &mut made);
                    let transform = match &import.local {
                        Local::Same => None,
                        _ => match SubjectTransform::new(local.as_bytes(), import.subject.as_bytes()) {
                            Ok(t) => Some(t),
                            Err(_) => continue,
                        },
                    };
                    let target = Import::Service {
                        into: exporter.name.as_str().into(),
                        from: importer.name.as_str().into(),
                        transform,
                        response,
                        threshold,
                        responses,
                    };
                    (self.get_or_create(&importer.name), local, target)
                } else {
                    let transform = match &import.local {
                        Local::Prefix(p) => SubjectTransform::prefix(p.as_bytes()),
                        _ => match SubjectTransform::new(import.subject.as_bytes(), local.as_bytes()) {
                            Ok(t) => t,
                            Err(_) => continue,
                        },
                    };
                    let target = Import::Stream { into: importer.name.as_str().into(), transform };
                    (self.get_or_create(&exporter.name), import.subject.clone(), target)
                };
                let sub = Arc::new(Subscription::new(Target::Import(Arc::new(target)), subject.as_bytes(), None, b""));
                self.add_plumbing(&account, Arc::clone(&sub));
                made.push((account, sub));
            }
        }
        let old = {
            let mut current = self.links.subscriptions.lock();
            let mut old = std::mem::replace(&mut *current, made);
            old.retain(|(_, sub)| !current.iter().any(|(_, kept)| Arc::ptr_eq(kept, sub)));
            old
        };
        for (account, sub) in old {
            self.remove_plumbing(&account, &sub);
            account.forget_router(&sub);
        }
    }

    /// Gives each of `accounts` the services every account imports from the system account
    /// in nats-server: `$SYS.REQ.SERVER.PING.CONNZ` and `$SYS.REQ.ACCOUNT.PING.CONNZ` answered
    /// with the account's own connections (`$SYS.REQ.ACCOUNT.<account>.CONNZ` in the system
    /// account), and `$SYS.REQ.ACCOUNT.PING.STATZ` with its statistics.
    pub fn link_system<'a>(&self, system: &str, accounts: impl IntoIterator<Item = &'a str>) {
        let system_account = self.get_or_create(system);
        let responses = Arc::new(ResponseRouter::new());
        let back = Target::Import(Arc::new(Import::Responses(Arc::clone(&responses))));
        self.add_plumbing(
            &system_account,
            Arc::new(Subscription::new(back, &responses.subscription_subject(), None, b"")),
        );
        for name in accounts {
            if name == system {
                continue;
            }
            let account = self.get_or_create(name);
            for (local, endpoint) in [
                ("$SYS.REQ.SERVER.PING.CONNZ", "CONNZ"),
                ("$SYS.REQ.ACCOUNT.PING.CONNZ", "CONNZ"),
                ("$SYS.REQ.ACCOUNT.PING.STATZ", "STATZ"),
            ] {
                let to = format!("$SYS.REQ.ACCOUNT.{name}.{endpoint}");
                let Ok(transform) = SubjectTransform::new(local.as_bytes(), to.as_bytes()) else { continue };
                let ServiceExport { response, threshold } = ServiceExport::default();
                let target = Import::Service {
                    into: system.into(),
                    from: name.into(),
                    transform: Some(transform),
                    response,
                    threshold,
                    responses: Arc::clone(&responses),
                };
                let sub = Subscription::new(Target::Import(Arc::new(target)), local.as_bytes(), None, b"");
                self.add_plumbing(&account, Arc::new(sub));
            }
        }
    }
}

impl super::Account {
    /// The router for responses to this account's imported services, and its subscription,
    /// made on first use.
    fn response_router(
        self: &Arc<Self>,
        accounts: &Accounts,
        made: &mut Vec<(Arc<super::Account>, Arc<Subscription>)>,
    ) -> Arc<ResponseRouter> {
        let mut router = self.responses.lock();
        if let Some((r, sub)) = &*router {
            if !made.iter().any(|(_, s)| Arc::ptr_eq(s, sub)) {
                made.push((Arc::clone(self), Arc::clone(sub)));
            }
            return Arc::clone(r);
        }
        let r = Arc::new(ResponseRouter::new());
        let target = Target::Import(Arc::new(Import::Responses(Arc::clone(&r))));
        let sub = Arc::new(Subscription::new(target, &r.subscription_subject(), None, b""));
        accounts.add_plumbing(self, Arc::clone(&sub));
        made.push((Arc::clone(self), Arc::clone(&sub)));
        *router = Some((Arc::clone(&r), sub));
        r
    }

    /// Drops the response router if `sub` was its subscription.
    fn forget_router(&self, sub: &Arc<Subscription>) {
        let mut router = self.responses.lock();
        if router.as_ref().is_some_and(|(_, s)| Arc::ptr_eq(s, sub)) {
            *router = None;
        }
    }
}

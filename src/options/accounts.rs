//! What the configuration says about accounts beyond their users: what each exports to other
//! accounts and what it imports from them.
//!
//! An export makes part of an account's namespace available: a stream (messages published in
//! the exporting account on the subject reach importers) or a service (importers send requests
//! into the exporting account and get the responses back). An import names the exporter, the
//! subject there, and where it appears locally (a prefix or a `to` subject). The checks nats-server
//! makes before it starts are [`check`]'s, with its texts.

use std::time::Duration;

use crate::subject;

/// How long a service export keeps the way back open for responses, as nats-server.
pub const DEFAULT_RESPONSE_THRESHOLD: Duration = Duration::from_secs(120);

/// One account's exports and imports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountLinks {
    /// The account's name.
    pub name: String,
    /// What it offers.
    pub exports: Vec<Export>,
    /// What it takes from others.
    pub imports: Vec<Import>,
}

/// How many responses a service request may get back through an import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseType {
    /// One; the way back closes with it.
    #[default]
    Singleton,
    /// Any number, until the threshold passes.
    Stream,
    /// Any number, until the threshold passes (the response is sent in parts).
    Chunked,
}

impl ResponseType {
    /// The name nats-server gives it in JSON (`/accountz`, JWT claims).
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseType::Singleton => "Singleton",
            ResponseType::Stream => "Streamed",
            ResponseType::Chunked => "Chunked",
        }
    }
}

/// A subject an account offers to others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The subject (wildcards allowed).
    pub subject: String,
    /// For a service: how it answers; `None` for a stream.
    pub service: Option<ServiceExport>,
    /// The accounts allowed to import it; `None` means any account.
    pub accounts: Option<Vec<String>>,
    /// An export that needs an activation token (JWT accounts); importing it without one is
    /// refused.
    pub token_required: bool,
}

/// The service side of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceExport {
    /// How many responses a request may get.
    pub response: ResponseType,
    /// How long the way back stays open.
    pub threshold: Duration,
}

impl Default for ServiceExport {
    fn default() -> Self {
        ServiceExport { response: ResponseType::Singleton, threshold: DEFAULT_RESPONSE_THRESHOLD }
    }
}

/// Something an account takes from another account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The exporting account.
    pub account: String,
    /// The subject in the exporting account.
    pub subject: String,
    /// A service import (requests go out, responses come back), or a stream import.
    pub service: bool,
    /// Where it appears in the importing account.
    pub local: Local,
}

/// Where an import appears in the importing account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// On the same subject.
    Same,
    /// Under this prefix (streams): `p` makes `a.b` appear as `p.a.b`.
    Prefix(String),
    /// On this subject (a `to`), with the exporter's wildcards carried over.
    To(String),
}

impl Import {
    /// The local subject pattern: what importers subscribe to (streams) or publish to
    /// (services).
    pub fn local_subject(&self) -> String {
        match &self.local {
            Local::Same => self.subject.clone(),
            Local::Prefix(p) => format!("{}.{}", p.trim_end_matches('.'), self.subject),
            Local::To(to) => to.clone(),
        }
    }
}

/// Checks every account's exports and imports against each other as nats-server does before
/// it starts: accounts named must exist, imports must be exported to the importer, prefixes
/// must be literal, and no service subject may be imported twice. `known` says whether an
/// account exists. Returns nats-server's text for the first problem.
pub fn check(links: &[AccountLinks], known: impl Fn(&str) -> bool) -> Result<(), String> {
    for account in links {
        for export in &account.exports {
            let what = if export.service.is_some() { "service" } else { "stream" };
            if !subject::is_valid_subscription(export.subject.as_bytes()) {
                return Err(format!("Error adding {what} export {:?}: invalid subject", export.subject));
            }
            for name in export.accounts.iter().flatten() {
                if !known(name) {
                    return Err(format!("{name:?} account not defined for {what} export"));
                }
            }
        }
        let mut service_subjects: Vec<(&str, &Import)> = Vec::new();
        for import in &account.imports {
            let what = if import.service { "service" } else { "stream" };
            if import.service {
                let to = match &import.local {
                    Local::To(to) => to.as_str(),
                    _ => import.subject.as_str(),
                };
                if let Some((_, dup)) = service_subjects.iter().find(|(s, _)| *s == to) {
                    return Err(format!(
                        "Duplicate service import subject {to:?}, previously used in import for account {:?}, subject {:?}",
                        dup.account, dup.subject
                    ));
                }
                service_subjects.push((to, import));
            }
            if !known(&import.account) {
                return Err(format!("{:?} account not defined for {what} import", import.account));
            }
            let fail = |reason: &str| Err(format!("Error adding {what} import {:?}: {reason}", import.subject));
            if !subject::is_valid_subscription(import.subject.as_bytes()) {
                return fail("invalid subject");
            }
            if let Local::Prefix(p) = &import.local {
                if !subject::is_literal(p.as_bytes()) {
                    return fail("stream import prefix can not contain wildcard tokens");
                }
            }
            let exporter = links.iter().find(|l| l.name == import.account);
            let authorized = exporter.is_some_and(|e| authorizes(e, &account.name, import));
            if !authorized {
                return fail(if import.service {
                    "service import not authorized"
                } else {
                    "stream import not authorized"
                });
            }
            let local = import.local_subject();
            if !subject::is_valid_subscription(local.as_bytes()) {
                return fail("invalid subject");
            }
            let mut visited = vec![account.name.as_str()];
            if forms_cycle(
                links,
                &import.account,
                if import.service { &import.subject } else { &local },
                import.service,
                &mut visited,
            ) {
                return fail("import forms a cycle");
            }
            if let Err(e) = subject::SubjectTransform::new(
                if import.service { local.as_bytes() } else { import.subject.as_bytes() },
                if import.service { import.subject.as_bytes() } else { local.as_bytes() },
            ) {
                return fail(&e.to_string());
            }
        }
    }
    Ok(())
}

/// Whether following `account`'s imports of the same kind from `subject` leads back to an
/// account already visited, as nats-server checks before adding an import: a message would
/// otherwise travel the loop until the delivery depth stops it, reaching subscribers more than
/// once.
fn forms_cycle<'a>(
    links: &'a [AccountLinks],
    account: &str,
    subject: &str,
    service: bool,
    visited: &mut Vec<&'a str>,
) -> bool {
    if visited.len() > 64 {
        return true;
    }
    let Some(links_of) = links.iter().find(|l| l.name == account) else { return false };
    if !service
        && !links_of
            .exports
            .iter()
            .any(|e| e.service.is_none() && subject::is_subset(subject.as_bytes(), e.subject.as_bytes()))
    {
        return false;
    }
    for import in links_of.imports.iter().filter(|i| i.service == service) {
        let local = import.local_subject();
        if !subject::collide(subject.as_bytes(), local.as_bytes()) {
            continue;
        }
        if visited.contains(&import.account.as_str()) {
            return true;
        }
        visited.push(links_of.name.as_str());
        let next = if service {
            import.subject.clone()
        } else if subject::is_subset(local.as_bytes(), subject.as_bytes()) {
            local
        } else {
            subject.to_string()
        };
        if forms_cycle(links, &import.account, &next, service, visited) {
            return true;
        }
    }
    false
}

/// The export of `exporter` that lets `importer` take `import`, if any.
pub fn export_for<'a>(exporter: &'a AccountLinks, importer: &str, import: &Import) -> Option<&'a Export> {
    exporter.exports.iter().find(|e| {
        e.service.is_some() == import.service
            && !e.token_required
            && subject::is_subset(import.subject.as_bytes(), e.subject.as_bytes())
            && e.accounts.as_ref().is_none_or(|list| list.iter().any(|a| a == importer))
    })
}

fn authorizes(exporter: &AccountLinks, importer: &str, import: &Import) -> bool {
    export_for(exporter, importer, import).is_some()
}

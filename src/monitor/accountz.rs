//! `/accountz`: the accounts, and with `acc=NAME` one account's detail (its connections,
//! subscriptions, exports and imports), as nats-server shows them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde::Serialize;

use crate::connection::Kind;
use crate::format::rfc3339;
use crate::jetstream::JetStream;
use crate::options::accounts::{AccountLinks, Local};
use crate::state::StateView;

#[derive(Serialize)]
pub(crate) struct Accountz {
    server_id: String,
    now: String,
    system_account: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    accounts: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_detail: Option<AccountDetail>,
}

#[derive(Serialize)]
pub(crate) struct AccountDetail {
    account_name: String,
    update_time: String,
    expired: bool,
    complete: bool,
    jetstream_enabled: bool,
    leafnode_connections: usize,
    client_connections: usize,
    subscriptions: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    exports: Vec<ExportView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    imports: Vec<ImportView>,
    sublist_stats: SublistView,
}

#[derive(Serialize)]
struct ExportView {
    subject: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approved_accounts: Option<Vec<String>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    token_req: bool,
}

#[derive(Serialize)]
struct ImportView {
    subject: String,
    account: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local_subject: Option<String>,
    #[serde(rename = "type")]
    kind: &'static str,
    invalid: bool,
    share: bool,
    tracking: bool,
}

#[derive(Serialize)]
struct SublistView {
    num_subscriptions: usize,
    num_cache: usize,
    num_inserts: u64,
    num_removes: u64,
    num_matches: u64,
    cache_hit_rate: f64,
    max_fanout: u64,
    avg_fanout: f64,
}

/// `/accountz`, or the detail of the account `acc` names. `Err` carries nats-server's text
/// for an account that does not exist.
pub(crate) fn accountz(
    state: &StateView,
    js: Option<&JetStream>,
    params: &HashMap<String, String>,
) -> Result<Accountz, String> {
    let opts = state.opts();
    let mut answer = Accountz {
        server_id: state.info().server_id,
        now: rfc3339(SystemTime::now()),
        system_account: opts.system_account.clone(),
        accounts: None,
        account_detail: None,
    };
    match params.get("acc").filter(|a| !a.is_empty()) {
        None => answer.accounts = Some(state.accounts().iter().map(|a| a.name.clone()).collect()),
        Some(name) => answer.account_detail = Some(detail(state, js, name)?),
    }
    Ok(answer)
}

/// One account's detail, as `/accountz?acc=` and `$SYS.REQ.ACCOUNT.<account>.INFO` show it.
pub(crate) fn detail(state: &StateView, js: Option<&JetStream>, name: &str) -> Result<AccountDetail, String> {
    let Some(account) = state.accounts().into_iter().find(|a| a.name == name) else {
        return Err(format!("Account {name} does not exist"));
    };
    let opts = state.opts();
    let links = opts.all_account_links();
    let own = links.iter().find(|l| l.name == name);
    let stats = account.sublist.stats();
    let clients = state.connections(Kind::Client).iter().filter(|c| c.meta.lock().account == name).count();
    let leafs = state.connections(Kind::Leaf).iter().filter(|c| c.meta.lock().account == name).count();
    let server = state.stats();
    let (lookups, hits) = (server.lookups.load(Ordering::Relaxed), server.cache_hits.load(Ordering::Relaxed));
    Ok(AccountDetail {
        account_name: name.to_string(),
        update_time: rfc3339(state.start()),
        expired: false,
        complete: true,
        jetstream_enabled: js.is_some_and(|js| js.account(name).is_some()),
        leafnode_connections: leafs,
        client_connections: clients,
        subscriptions: stats.count,
        exports: own.map(exports).unwrap_or_default(),
        imports: own
            .map(|l| imports(l, &opts.system_account))
            .unwrap_or_else(|| system_imports(name, &opts.system_account)),
        sublist_stats: SublistView {
            num_subscriptions: stats.count,
            num_cache: stats.cached,
            num_inserts: stats.inserts,
            num_removes: stats.removes,
            num_matches: stats.matches,
            cache_hit_rate: if lookups > 0 { hits as f64 / lookups as f64 } else { 0.0 },
            max_fanout: 0,
            avg_fanout: 0.0,
        },
    })
}

fn exports(links: &AccountLinks) -> Vec<ExportView> {
    let mut out: Vec<ExportView> = links
        .exports
        .iter()
        .map(|e| ExportView {
            subject: e.subject.clone(),
            kind: if e.service.is_some() { "service" } else { "stream" },
            response_type: e.service.map(|s| s.response.as_str()),
            approved_accounts: e.accounts.clone(),
            token_req: e.token_required,
        })
        .collect();
    out.sort_by(|a, b| a.subject.cmp(&b.subject));
    out
}

fn imports(links: &AccountLinks, system: &str) -> Vec<ImportView> {
    let mut out: Vec<ImportView> = links
        .imports
        .iter()
        .map(|i| {
            let local = i.local_subject();
            if i.service {
                ImportView {
                    subject: local,
                    account: i.account.clone(),
                    to: Some(i.subject.clone()),
                    local_subject: None,
                    kind: "service",
                    invalid: false,
                    share: false,
                    tracking: false,
                }
            } else {
                ImportView {
                    subject: i.subject.clone(),
                    account: i.account.clone(),
                    to: None,
                    local_subject: Some(match &i.local {
                        Local::Same => i.subject.clone(),
                        _ => local,
                    }),
                    kind: "stream",
                    invalid: false,
                    share: false,
                    tracking: false,
                }
            }
        })
        .collect();
    out.extend(system_imports(&links.name, system));
    out
}

/// The imports from the system account every other account has.
fn system_imports(name: &str, system: &str) -> Vec<ImportView> {
    if name == system {
        return Vec::new();
    }
    [
        ("$SYS.REQ.ACCOUNT.PING.CONNZ", "CONNZ"),
        ("$SYS.REQ.SERVER.PING.CONNZ", "CONNZ"),
        ("$SYS.REQ.ACCOUNT.PING.STATZ", "STATZ"),
    ]
    .into_iter()
    .map(|(subject, endpoint)| ImportView {
        subject: subject.to_string(),
        account: system.to_string(),
        to: Some(format!("$SYS.REQ.ACCOUNT.{name}.{endpoint}")),
        local_subject: None,
        kind: "service",
        invalid: false,
        share: false,
        tracking: false,
    })
    .collect()
}

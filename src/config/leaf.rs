//! `leafnodes { listen | host + port, advertise, no_advertise, authorization {...}, tls {...},
//! reconnect, remotes [ {...} ] }`, as nats-server reads it.

use super::{host_port, invalid, port_of, tls, tls_with, ConfigError};
use crate::conf::{self, Item, Value};
use crate::options::leaf::{LeafNodeOptions, LeafUser, RemoteLeafOptions};
use crate::options::route_url::RouteUrl;

/// The `leafnodes {}` block.
pub(super) fn leafnodes(block: &Item, warnings: &mut Vec<String>) -> Result<LeafNodeOptions, ConfigError> {
    let mut l = LeafNodeOptions::default();
    for (key, item) in block.expect_map()?.iter() {
        match key.to_ascii_lowercase().as_str() {
            "listen" => {
                let (host, port) = host_port(item)?;
                l.host = host.or(l.host);
                l.port = Some(port);
            }
            "port" => l.port = Some(port_of(item)?),
            "host" | "net" => l.host = Some(item.expect_str()?.to_string()),
            "advertise" | "leafnode_advertise" => l.advertise = Some(item.expect_str()?.to_string()),
            "no_advertise" => l.no_advertise = item.expect_bool()?,
            "reconnect" | "reconnect_delay" | "reconnect_interval" => {
                let secs = item.expect_integer()?;
                l.reconnect = std::time::Duration::from_secs(u64::try_from(secs.max(0)).unwrap_or(0));
            }
            "authorization" | "authentication" => authorization(item, &mut l)?,
            "tls" => l.tls = Some(tls(item.expect_map()?, warnings)?),
            "remotes" => {
                for entry in item.expect_array()? {
                    l.remotes.push(remote(entry, warnings)?);
                }
            }
            "min_version" | "minimum_version" | "compression" => {
                return Err(invalid(item, format!("leafnodes {key} is not supported yet")))
            }
            _ => return Err(invalid(item, format!("unknown field \"{key}\" in leafnodes"))),
        }
    }
    Ok(l)
}

/// `authorization { user, password, account, timeout, users [ {user, password, account} ] }`.
fn authorization(item: &Item, l: &mut LeafNodeOptions) -> Result<(), ConfigError> {
    let mut single = LeafUser { name: String::new(), password: String::new(), account: None };
    for (key, v) in item.expect_map()?.iter() {
        match key.to_ascii_lowercase().as_str() {
            "user" | "username" => single.name = v.expect_str()?.to_string(),
            "pass" | "password" => single.password = v.expect_str()?.to_string(),
            "account" => single.account = Some(v.expect_str()?.to_string()),
            "timeout" => l.auth_timeout = Some(conf::duration_of(v)?),
            "users" => {
                for entry in v.expect_array()? {
                    let mut u = LeafUser { name: String::new(), password: String::new(), account: None };
                    for (k, f) in entry.expect_map()?.iter() {
                        match k.to_ascii_lowercase().as_str() {
                            "user" | "username" => u.name = f.expect_str()?.to_string(),
                            "pass" | "password" => u.password = f.expect_str()?.to_string(),
                            "account" => u.account = Some(f.expect_str()?.to_string()),
                            _ => return Err(invalid(f, format!("unknown field \"{k}\" in leafnodes users"))),
                        }
                    }
                    if u.name.is_empty() {
                        return Err(invalid(entry, "leafnodes users need a user"));
                    }
                    l.users.push(u);
                }
            }
            _ => return Err(invalid(v, format!("unknown field \"{key}\" in leafnodes authorization"))),
        }
    }
    if !single.name.is_empty() {
        if !l.users.is_empty() {
            // nats-server: "can not have a single user/pass and a users array".
            return Err(invalid(item, "can not have a single user/pass and a users array"));
        }
        l.users.push(single);
    }
    Ok(())
}

/// One entry of `remotes`.
fn remote(entry: &Item, warnings: &mut Vec<String>) -> Result<RemoteLeafOptions, ConfigError> {
    let mut r = RemoteLeafOptions::default();
    for (key, item) in entry.expect_map()?.iter() {
        match key.to_ascii_lowercase().as_str() {
            "url" | "urls" => {
                let urls: Vec<&Item> = match &item.value {
                    Value::Array(items) => items.iter().collect(),
                    _ => vec![item],
                };
                for u in urls {
                    let text = u.expect_str()?;
                    let Some((url, tls)) = RouteUrl::parse_leaf(text) else {
                        if text.starts_with("ws://") || text.starts_with("wss://") {
                            return Err(invalid(u, "leafnode remotes over websocket are not supported yet"));
                        }
                        return Err(invalid(u, format!("error parsing leafnode remote url [{text:?}]")));
                    };
                    r.tls_required |= tls;
                    r.urls.push(url);
                }
            }
            "account" | "local" => r.account = Some(item.expect_str()?.to_string()),
            "credentials" | "creds" => r.credentials = Some(item.expect_str()?.into()),
            "tls" => r.tls = Some(tls_with(item.expect_map()?, warnings, false)?),
            "hub" => r.hub = item.expect_bool()?,
            "deny_imports" | "deny_import" => r.deny_imports = subjects(item)?,
            "deny_exports" | "deny_export" => r.deny_exports = subjects(item)?,
            "no_randomize" | "dont_randomize" => {}
            "ws_compress"
            | "ws_compression"
            | "websocket_compress"
            | "websocket_compression"
            | "ws_no_masking"
            | "websocket_no_masking" => {
                warnings.push(format!("{}: {key} applies to websocket remotes, which are not supported yet", item.pos))
            }
            _ => return Err(invalid(item, format!("unknown field \"{key}\" in leafnodes remotes"))),
        }
    }
    if r.urls.is_empty() {
        return Err(invalid(entry, "leafnode remote needs a url"));
    }
    Ok(r)
}

fn subjects(item: &Item) -> Result<Vec<String>, ConfigError> {
    match &item.value {
        Value::String(s) => Ok(vec![s.clone()]),
        _ => item.expect_array()?.iter().map(|s| Ok(s.expect_str()?.to_string())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use crate::options::Options;

    fn load(text: &str) -> Result<Options, String> {
        let map = crate::conf::parse_str(text, "test.conf", None).map_err(|e| e.to_string())?;
        let mut o = Options::default();
        crate::config::apply(&map, &mut o).map_err(|e| e.to_string())?;
        Ok(o)
    }

    #[test]
    fn maps_leafnodes_as_nats_server_reads_it() {
        let o = load(
            "leafnodes { listen: 127.0.0.1:7422, advertise: \"hub.example:7422\", reconnect: 3,\n\
             authorization { users [ {user: a, password: pa, account: A}, {user: b, password: pb} ], timeout: 2 }\n\
             remotes [ { url: \"nats-leaf://u:p@hub:7422\", account: A, hub: true, deny_imports: [\"x.>\"], deny_exports: \"y\" },\n\
             { urls: [\"tls://h1:1\", \"h2:2\"], credentials: \"/c.creds\" } ] }\n\
             accounts { A {} }",
        )
        .unwrap();
        let l = o.leafnodes.unwrap();
        assert_eq!((l.host.as_deref(), l.port, l.reconnect.as_secs()), (Some("127.0.0.1"), Some(7422), 3));
        assert_eq!(l.users.len(), 2);
        assert_eq!(l.users[0].account.as_deref(), Some("A"));
        assert_eq!(l.remotes.len(), 2);
        let r = &l.remotes[0];
        assert_eq!(r.urls[0].user, Some(("u".into(), "p".into())));
        assert!(r.hub && r.deny_imports == ["x.>"] && r.deny_exports == ["y"]);
        assert_eq!(r.local_account(), "A");
        assert!(l.remotes[1].tls_required && l.remotes[1].urls.len() == 2);
        assert_eq!(l.remotes[1].local_account(), "$G");
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        let err = |t: &str| load(t).unwrap_err();
        assert!(err("leafnodes { remotes [ { url: \"http://h:1\" } ] }").contains("error parsing leafnode remote url"));
        assert!(err("leafnodes { remotes [ { url: \"ws://h:1\" } ] }").contains("websocket"));
        assert!(err("leafnodes { remotes [ { account: A } ] }").contains("needs a url"));
        assert!(err("leafnodes { nope: 1 }").contains("unknown field \"nope\" in leafnodes"));
        assert!(err("leafnodes { authorization { user: a, users [ {user: b} ] } }").contains("users array"));
    }
}

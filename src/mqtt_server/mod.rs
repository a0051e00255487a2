//! MQTT devices served: each device's connection ([`conn`]), and the account state behind it
//! in the stream store ([`store`]): persistent sessions, QoS 1 messages held for sessions
//! while their devices are away, retained messages.
//!
//! A device is a client like any other to the rest of the server: it is in the connection
//! registry, in one account, under the same permissions, and its subscriptions sit in the
//! account's trie with an MQTT target ([`crate::mqtt::MqttTarget`]), so NATS clients and
//! devices reach each other on the same subjects. A QoS 1 subscription also has a durable
//! consumer on `$MQTT_msgs`, so what is published at QoS 1 while its device is away waits in
//! the stream, and what the device has not acknowledged is sent again after `ack_wait`.

mod conn;
mod store;

pub use conn::serve;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::connection::Connection;
use crate::jetstream::{JetStream, JsAccount};
use crate::state::ServerState;
use store::AccountStore;

/// What every MQTT connection of a server shares.
pub struct MqttServer {
    state: Arc<ServerState>,
    jetstream: Arc<JetStream>,
    /// Each account's MQTT streams, opened on the first device connecting in it.
    stores: DashMap<String, Arc<AccountStore>>,
    /// Client ids in use, by account and id: who holds each, and the turn a device taking the
    /// id over waits for.
    client_ids: DashMap<String, Arc<ClientIdSlot>>,
    /// Numbers the QoS 1 consumers of connected sessions, so that packet ids are kept per
    /// consumer.
    next_consumer: AtomicU32,
}

/// One client id's holder, and the lock a new connection with the same id takes once the old
/// one has finished.
#[derive(Default)]
struct ClientIdSlot {
    holder: parking_lot::Mutex<Option<Arc<Connection>>>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl MqttServer {
    /// The MQTT side of a server with JetStream.
    pub fn new(state: Arc<ServerState>, jetstream: Arc<JetStream>) -> Arc<MqttServer> {
        Arc::new(MqttServer {
            state,
            jetstream,
            stores: DashMap::new(),
            client_ids: DashMap::new(),
            next_consumer: AtomicU32::new(1),
        })
    }

    /// The MQTT streams of `js`'s account, opened (and created) the first time.
    fn store_for(&self, js: Arc<JsAccount>) -> Result<Arc<AccountStore>, crate::jetstream::api::errors::ApiError> {
        if let Some(s) = self.stores.get(js.name()) {
            return Ok(Arc::clone(&s));
        }
        let name = js.name().to_string();
        let entry = self.stores.entry(name).or_try_insert_with(|| AccountStore::open(js).map(Arc::new))?;
        Ok(Arc::clone(&entry))
    }

    /// The server's shared state.
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    fn next_consumer_number(&self) -> u32 {
        self.next_consumer.fetch_add(1, Ordering::Relaxed)
    }
}

//! A durable consumer's files, in `<stream>/obs/<consumer>/`: `meta.json` (configuration and
//! creation time) and `state.json` (its delivery state), each written to a temporary file and
//! renamed over the old one, so that a crash leaves the old copy or the new one, never half.
//!
//! The state is saved a moment after it changes, not before each ack is answered: after a
//! crash a consumer can redeliver what was acked in its last moments, never lose a message.

use std::collections::VecDeque;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::ConsumerConfig;
use super::state::DeliveryState;

const META: &str = "meta.json";
const STATE: &str = "state.json";

#[derive(Serialize, Deserialize)]
struct Meta {
    config: ConsumerConfig,
    created: i64,
}

/// The state as saved.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StateFile {
    /// Deliveries, pending messages, ack floor.
    pub state: DeliveryState,
    /// Last-per-subject sequences still to send.
    pub skip_list: VecDeque<u64>,
}

impl StateFile {
    /// A copy of the state to save.
    pub fn of(state: &DeliveryState, skip_list: &VecDeque<u64>) -> Self {
        StateFile { state: state.clone(), skip_list: skip_list.clone() }
    }
}

fn write_atomic(dir: &Path, name: &str, body: &[u8], sync: bool) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, body)?;
    if sync {
        std::fs::File::open(&tmp)?.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))
}

/// Writes the configuration (synced: it is written once, at create or update).
pub fn save_meta(dir: &Path, config: &ConsumerConfig, created: i64) -> std::io::Result<()> {
    let body = serde_json::to_vec_pretty(&Meta { config: config.clone(), created }).map_err(std::io::Error::other)?;
    write_atomic(dir, META, &body, true)
}

/// Writes the delivery state.
pub fn save_state(dir: &Path, state: &StateFile) -> std::io::Result<()> {
    let body = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    write_atomic(dir, STATE, &body, false)
}

/// What a consumer's directory holds.
pub struct Loaded {
    /// Its configuration.
    pub config: ConsumerConfig,
    /// When it was created.
    pub created: i64,
    /// Its state; `None` when missing or damaged (it then starts over from its deliver
    /// policy's start, which redelivers rather than loses).
    pub state: Option<StateFile>,
}

/// Reads a consumer's directory; `Err` says why its configuration could not be read.
pub fn load(dir: &Path) -> Result<Loaded, String> {
    let bytes = std::fs::read(dir.join(META)).map_err(|e| format!("{META}: {e}"))?;
    let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| format!("{META}: {e}"))?;
    let state = std::fs::read(dir.join(STATE)).ok().and_then(|b| serde_json::from_slice::<StateFile>(&b).ok());
    Ok(Loaded { config: meta.config, created: meta.created, state })
}

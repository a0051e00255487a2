//! A file stream's `meta.json`: its configuration and creation time, written so that a crash
//! at any moment leaves a whole copy, and read back at start.
//!
//! Each write goes to a temporary file that is synced and then renamed over `meta.json`, and
//! the same again for its copy `meta.json.bak`, so that at any moment at least one of them is
//! whole and current. A `meta.json` that does not parse (damaged on disk) is read from the copy.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::api::types::StreamConfig;

const META: &str = "meta.json";
const BACKUP: &str = "meta.json.bak";

#[derive(Serialize, Deserialize)]
struct Meta {
    config: StreamConfig,
    /// Nanoseconds since the Unix epoch.
    created: i64,
}

/// Writes the configuration and creation time of the stream in `dir`.
pub fn save(dir: &Path, config: &StreamConfig, created: i64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let body = serde_json::to_vec_pretty(&Meta { config: config.clone(), created }).map_err(std::io::Error::other)?;
    for name in [META, BACKUP] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, &body)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads the configuration and creation time of the stream in `dir`: from `meta.json`, or from
/// its backup when it is damaged. `Err` says why neither could be used.
pub fn load(dir: &Path) -> Result<(StreamConfig, i64), String> {
    let mut why = Vec::new();
    for name in [META, BACKUP] {
        match std::fs::read(dir.join(name)) {
            Ok(bytes) => match serde_json::from_slice::<Meta>(&bytes) {
                Ok(m) => return Ok((m.config, m.created)),
                Err(e) => why.push(format!("{name}: {e}")),
            },
            Err(e) => why.push(format!("{name}: {e}")),
        }
    }
    Err(why.join("; "))
}

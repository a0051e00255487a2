//! Parser for nats-server's configuration file format.
//!
//! Courier reads the same configuration files as nats-server, so this module
//! implements that format: a relaxed mix of JSON, YAML and shell-style
//! configuration. In short:
//!
//! ```text
//! # comments start with '#' or '//'
//! port: 4222                     # separators: ':', '=' or just whitespace
//! listen = 0.0.0.0:4222          # unquoted strings run to the end of the value
//! max_payload 1MB                # size suffixes: k/m/g/t/p/e = 1000^n,
//!                                #   kb/ki/kib (and so on) = 1024^n
//! debug: on                      # true/yes/on, false/no/off
//! TOKEN = "s3cr3t\n"             # any key is also a variable...
//! authorization {                # maps, arrays, nested freely
//!   token: $TOKEN                # ...referenced as $NAME (enclosing maps,
//!   users = [                    #   then the environment)
//!     {user: alice, password: 'raw string'}
//!   ]
//! }
//! include "./accounts.conf"      # merged in place, relative path
//! banner (
//! a block string, ending at a ')' alone on a line
//! )
//! ```
//!
//! Parsing produces a [`Map`] of [`Item`]s, each a [`Value`] plus the [`Pos`]
//! it was written at, so the option mapping can report problems precisely.
//! Every failure is a [`ConfError`] that displays as `file:line:col: message`.
//! Configuration files are treated as untrusted input: nesting depth,
//! include depth, environment-variable chains and variable expansion are all
//! bounded, and malformed input is an error, never a panic.
//!
//! Differences from nats-server worth knowing:
//! * date-times such as `2016-05-04T18:53:41Z` are kept as strings;
//! * a token that starts like a number but continues with other characters
//!   (`10s`, `1.5s`, `1.2.3.4:80`) is a string rather than an error;
//! * `\uXXXX` escapes are accepted in addition to nats' `\xXX`;
//! * a single quote inside an unquoted value is an ordinary character;
//! * include digests (`include file "sha256:..."`) are rejected.

mod error;
mod parser;
mod units;
mod value;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

pub use error::{ConfError, ErrorKind, Found};
pub use parser::{MAX_DEPTH, MAX_ENV_DEPTH, MAX_EXPANDED, MAX_INCLUDE_DEPTH};
pub use units::{duration_of, size_of};
pub use value::{Item, Map, Pos, Value};

use parser::{Parser, Session};

/// Parses configuration text.
///
/// Exists for configuration that does not come straight from a file (tests,
/// embedded defaults, reloads from memory). `file_name` is only used in
/// positions and messages. `base_dir` is the directory `include` paths are
/// resolved against; with `None`, any `include` is an error.
pub fn parse_str(text: &str, file_name: &str, base_dir: Option<&Path>) -> Result<Map, ConfError> {
    let mut session = Session::default();
    Parser::new(text, Arc::from(file_name), base_dir.map(Path::to_path_buf), &mut session, 0).parse_document()
}

/// Reads and parses a configuration file.
///
/// Exists as the normal entry point for the server's `-c` option: includes
/// are resolved relative to the file's directory, and failing to read the
/// file is reported as a [`ConfError`] like any other problem.
pub fn parse_file(path: &Path) -> Result<Map, ConfError> {
    let file: Arc<str> = Arc::from(path.display().to_string());
    let io_error = |e: std::io::Error| {
        ConfError::new(Pos::file_only(file.clone()), ErrorKind::Io { path: path.to_path_buf(), source: Arc::new(e) })
    };
    let text = std::fs::read_to_string(path).map_err(io_error)?;
    let canonical = std::fs::canonicalize(path).map_err(io_error)?;
    let mut session = Session::for_file(canonical);
    let base_dir = path.parent().map(Path::to_path_buf);
    Parser::new(&text, file.clone(), base_dir, &mut session, 0).parse_document()
}

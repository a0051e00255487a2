//! Error types for configuration parsing.
//!
//! Every failure is a [`ConfError`]: a [`Pos`] saying where the problem is and
//! an [`ErrorKind`] saying what it is, so callers can both print a
//! `file:line:col: message` diagnostic and match on the cause.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use super::value::Pos;

/// A configuration error together with the place it was found.
///
/// Exists so that every problem in an (untrusted, hand-written) configuration
/// file can be reported to the operator with its exact location. Displays as
/// `file:line:col: message`.
#[derive(Debug, Clone, Error)]
#[error("{pos}: {kind}")]
pub struct ConfError {
    /// Where the problem was found (for whole-file problems the line is 0).
    pub pos: Pos,
    /// What went wrong.
    pub kind: ErrorKind,
}

impl ConfError {
    /// Builds an error at `pos`; a shorthand used throughout the parser and
    /// by the option-mapping code that reports its own problems.
    pub fn new(pos: Pos, kind: ErrorKind) -> Self {
        ConfError { pos, kind }
    }
}

/// What the parser found instead of what it expected.
///
/// Exists so syntax errors can name the offending input precisely, including
/// the two "invisible" cases (a line break and the end of the input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// An ordinary character.
    Char(char),
    /// A line break.
    Newline,
    /// The end of the input.
    Eof,
}

impl Found {
    /// Classifies an optional next character, treating line breaks specially.
    pub(crate) fn from_peek(c: Option<char>) -> Self {
        match c {
            None => Found::Eof,
            Some('\n') | Some('\r') => Found::Newline,
            Some(c) => Found::Char(c),
        }
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Char(c) => write!(f, "'{}'", c.escape_debug()),
            Found::Newline => f.write_str("a line break"),
            Found::Eof => f.write_str("the end of the input"),
        }
    }
}

/// The cause of a [`ConfError`].
///
/// Exists so callers (and tests) can react to specific failures, e.g. tell a
/// missing include file apart from a syntax error, without parsing messages.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input did not match the grammar at this point.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// A description of what would have been accepted.
        expected: &'static str,
        /// What was there instead.
        found: Found,
    },
    /// A string, block, map or array was opened here but never closed.
    #[error("{0} is never closed")]
    Unterminated(&'static str),
    /// A backslash escape that the format does not define.
    #[error(
        "invalid escape '\\{}': only \\t, \\n, \\r, \\\", \\\\, \\xXX and \\uXXXX are allowed",
        .0.escape_debug()
    )]
    InvalidEscape(char),
    /// A `\x` or `\u` escape without the right number of hexadecimal digits,
    /// or naming something that is not a character.
    #[error("invalid escape '{0}'")]
    InvalidHexEscape(String),
    /// `\x` escapes produced bytes that are not valid UTF-8.
    #[error("escape sequences in this string do not form valid UTF-8")]
    InvalidUtf8,
    /// An integer (after applying any size suffix) does not fit in 64 bits.
    #[error("integer '{0}' is out of range")]
    IntegerOverflow(String),
    /// A float literal is too large to represent.
    #[error("float '{0}' is out of range")]
    FloatOutOfRange(String),
    /// A float written as `.5`; the format requires a leading digit.
    #[error("floats must start with a digit: '{0}'")]
    FloatLeadingDot(String),
    /// Maps and arrays are nested deeper than the parser allows.
    #[error("maps and arrays are nested more than {limit} levels deep")]
    TooDeep {
        /// The maximum nesting depth.
        limit: usize,
    },
    /// Variable references expand to an unreasonably large configuration.
    #[error("variable references expand to more than {limit} values")]
    ExpansionTooLarge {
        /// The maximum number of values variable expansion may produce.
        limit: usize,
    },
    /// `$name` matches no key in the enclosing maps and no environment
    /// variable.
    #[error("unknown variable '${0}': it is neither defined in an enclosing map nor set in the environment")]
    UnknownVariable(String),
    /// An environment variable refers, directly or indirectly, to itself.
    #[error("variable '${0}' refers to itself through the environment")]
    VariableCycle(String),
    /// Environment variables refer to each other in too long a chain.
    #[error("environment variables refer to each other more than {limit} levels deep")]
    EnvTooDeep {
        /// The maximum chain length.
        limit: usize,
    },
    /// The value of an environment variable could not be parsed.
    #[error("environment variable '{name}' does not hold a valid value: {cause}")]
    EnvVariable {
        /// The environment variable's name.
        name: String,
        /// The problem found in its value.
        cause: Box<ConfError>,
    },
    /// The value of an environment variable is not valid Unicode.
    #[error("environment variable '{0}' is not valid Unicode")]
    EnvNotUnicode(String),
    /// An `include` appeared in text parsed without a base directory.
    #[error("cannot include '{0}': includes are not allowed here")]
    IncludeNotAllowed(String),
    /// A file includes itself, directly or through other files.
    #[error("include cycle: '{}' is already being included", .0.display())]
    IncludeCycle(PathBuf),
    /// Includes are nested deeper than the parser allows.
    #[error("includes are nested more than {limit} files deep")]
    IncludeTooDeep {
        /// The maximum include depth.
        limit: usize,
    },
    /// An `include` followed by a digest; integrity-checked includes are not
    /// supported.
    #[error("include digests are not supported")]
    IncludeDigestUnsupported,
    /// A file could not be read.
    #[error("cannot read '{}': {source}", path.display())]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A value has a different type than the option requires.
    #[error("expected {expected}, found {found}")]
    TypeMismatch {
        /// What the option requires, with an article (e.g. "a string").
        expected: &'static str,
        /// The type actually found (see `Value::type_name`).
        found: &'static str,
    },
    /// A string that is not a duration such as `"1h30m"` or `"500ms"`.
    #[error("invalid duration '{text}': {reason}")]
    InvalidDuration {
        /// The offending text.
        text: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A duration below zero.
    #[error("duration must not be negative")]
    NegativeDuration,
    /// A duration too large to represent.
    #[error("duration is out of range")]
    DurationOverflow,
    /// A string that is not a size such as `"64MB"` or `"1k"`.
    #[error("invalid size '{0}': expected a number with an optional unit such as K, KB, KiB, M, MB, G, GB")]
    InvalidSize(String),
    /// A size below zero.
    #[error("size must not be negative")]
    NegativeSize,
    /// A size too large to represent in 64 bits.
    #[error("size '{0}' is out of range")]
    SizeOverflow(String),
}

//! The parsed configuration tree: positions, values and maps.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::error::{ConfError, ErrorKind};

/// A location in a configuration file.
///
/// Exists so every value (and every error) can point the operator at the
/// exact place it was written, even across included files. Lines and columns
/// are 1-based; columns count characters. A line of 0 means "the file as a
/// whole" (for example when it cannot be read) and displays as just the file
/// name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pos {
    /// The file name as given to the parser (or the include path as written
    /// relative to the including file's directory).
    pub file: Arc<str>,
    /// 1-based line number, or 0 for the whole file.
    pub line: u32,
    /// 1-based column number in characters, or 0 for the whole file.
    pub column: u32,
}

impl Pos {
    /// A position that refers to a whole file rather than a place in it.
    pub fn file_only(file: Arc<str>) -> Self {
        Pos { file, line: 0, column: 0 }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        }
    }
}

/// A value together with where it was written.
///
/// Exists so option mapping can report problems ("expected a string, found
/// map") at the value's own location rather than at some parent.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The value itself.
    pub value: Value,
    /// Where the value starts (for a `$variable` reference: where the
    /// reference is).
    pub pos: Pos,
}

/// A configuration value.
///
/// Exists as the typed result of parsing; date-times are kept as strings and
/// size suffixes (`1k`, `64MB`) have already been applied to integers.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `true`/`yes`/`on` or `false`/`no`/`off` (unquoted, any case).
    Bool(bool),
    /// A signed 64-bit integer, size suffix already applied.
    Integer(i64),
    /// A decimal number with a fractional part.
    Float(f64),
    /// Any string: quoted, unquoted, or a `( ... )` block.
    String(String),
    /// A `[ ... ]` list.
    Array(Vec<Item>),
    /// A `{ ... }` map.
    Map(Map),
}

impl Value {
    /// A short lowercase name of the value's type, for error messages such
    /// as "expected a string, found map".
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "boolean",
            Value::Integer(_) => "integer",
            Value::Float(_) => "float",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
        }
    }

    /// The boolean, if this is one; for optional lookups without errors.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The integer, if this is one; for optional lookups without errors.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The number as a float (integers convert); for optional lookups.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The string, if this is one; for optional lookups without errors.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, if this is an array; for optional lookups.
    pub fn as_array(&self) -> Option<&[Item]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The map, if this is one; for optional lookups without errors.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }
}

impl Item {
    /// Pairs a value with its position.
    pub fn new(value: Value, pos: Pos) -> Self {
        Item { value, pos }
    }

    fn mismatch(&self, expected: &'static str) -> ConfError {
        ConfError::new(self.pos.clone(), ErrorKind::TypeMismatch { expected, found: self.value.type_name() })
    }

    /// The boolean, or a positioned type error; for mandatory options.
    pub fn expect_bool(&self) -> Result<bool, ConfError> {
        self.value.as_bool().ok_or_else(|| self.mismatch("a boolean"))
    }

    /// The integer, or a positioned type error; for mandatory options.
    pub fn expect_integer(&self) -> Result<i64, ConfError> {
        self.value.as_integer().ok_or_else(|| self.mismatch("an integer"))
    }

    /// The number as a float (integers convert), or a positioned type error.
    pub fn expect_float(&self) -> Result<f64, ConfError> {
        self.value.as_float().ok_or_else(|| self.mismatch("a number"))
    }

    /// The string, or a positioned type error; for mandatory options.
    pub fn expect_str(&self) -> Result<&str, ConfError> {
        self.value.as_str().ok_or_else(|| self.mismatch("a string"))
    }

    /// The array elements, or a positioned type error.
    pub fn expect_array(&self) -> Result<&[Item], ConfError> {
        self.value.as_array().ok_or_else(|| self.mismatch("an array"))
    }

    /// The map, or a positioned type error; for option blocks such as `tls`.
    pub fn expect_map(&self) -> Result<&Map, ConfError> {
        self.value.as_map().ok_or_else(|| self.mismatch("a map"))
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    key: String,
    key_pos: Option<Pos>,
    item: Item,
    referenced: bool,
}

/// An ordered map of configuration keys to items.
///
/// Exists because configuration keys are case-insensitive (nats-server
/// lowercases them) while operators expect diagnostics and iteration to show
/// keys as written and in file order. A later entry whose key differs from an
/// earlier one only by case (or not at all) replaces it, keeping the earlier
/// entry's place in the order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Map {
    entries: Vec<Entry>,
    /// Lowercased key -> index into `entries`.
    index: HashMap<String, usize>,
}

impl Map {
    /// An empty map; for building configuration trees in code and tests.
    pub fn new() -> Self {
        Map::default()
    }

    /// Looks a key up, ignoring case, as nats-server does.
    pub fn get(&self, key: &str) -> Option<&Item> {
        let i = *self.index.get(&key.to_lowercase())?;
        self.entries.get(i).map(|e| &e.item)
    }

    /// Whether a key is present (ignoring case).
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Iterates entries in file order with keys spelled as written.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Item)> {
        self.entries.iter().map(|e| (e.key.as_str(), &e.item))
    }

    /// Number of distinct (case-insensitive) keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where a key was written, if the entry came from a file; lets option
    /// mapping report "unknown option" at the key rather than its value.
    pub fn key_pos(&self, key: &str) -> Option<&Pos> {
        let i = *self.index.get(&key.to_lowercase())?;
        self.entries.get(i).and_then(|e| e.key_pos.as_ref())
    }

    /// Whether the entry was used as a `$variable` somewhere. Lets option
    /// mapping skip helper entries (like nats-server does) instead of
    /// rejecting them as unknown options.
    pub fn is_referenced(&self, key: &str) -> bool {
        self.index.get(&key.to_lowercase()).and_then(|&i| self.entries.get(i)).is_some_and(|e| e.referenced)
    }

    /// Inserts or replaces (ignoring case) an entry, returning the replaced
    /// item; for building configuration trees in code and tests.
    pub fn insert(&mut self, key: impl Into<String>, item: Item) -> Option<Item> {
        let (_, old) = self.insert_entry(key.into(), None, item, false);
        old
    }

    /// Inserts or replaces an entry and reports its index (stable for the
    /// life of the map, since entries are never removed).
    pub(crate) fn insert_entry(
        &mut self,
        key: String,
        key_pos: Option<Pos>,
        item: Item,
        referenced: bool,
    ) -> (usize, Option<Item>) {
        let lower = key.to_lowercase();
        if let Some(&i) = self.index.get(&lower) {
            if let Some(e) = self.entries.get_mut(i) {
                let old = std::mem::replace(e, Entry { key, key_pos, item, referenced });
                return (i, Some(old.item));
            }
        }
        let i = self.entries.len();
        self.entries.push(Entry { key, key_pos, item, referenced });
        self.index.insert(lower, i);
        (i, None)
    }

    /// The item at `index`, marking it as referenced by a variable.
    pub(crate) fn reference(&mut self, index: usize) -> Option<&Item> {
        let e = self.entries.get_mut(index)?;
        e.referenced = true;
        Some(&e.item)
    }

    /// Consumes the map into its entries, for merging an included file.
    pub(crate) fn into_entries(self) -> impl Iterator<Item = (String, Option<Pos>, Item, bool)> {
        self.entries.into_iter().map(|e| (e.key, e.key_pos, e.item, e.referenced))
    }
}

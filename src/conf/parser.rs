//! A recursive-descent parser for the nats-server configuration format.
//!
//! Lexing and parsing happen in one pass over the characters so every value
//! and error can carry an exact position. All recursion is bounded
//! ([`MAX_DEPTH`], [`MAX_INCLUDE_DEPTH`], [`MAX_ENV_DEPTH`]) and variable
//! expansion is budgeted ([`MAX_EXPANDED`]), because configuration files are
//! untrusted input.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{ConfError, ErrorKind, Found};
use super::units::{parse_integer, IntParse};
use super::value::{Item, Map, Pos, Value};

/// Deepest allowed nesting of maps and arrays (the top-level map is level 0).
pub const MAX_DEPTH: usize = 128;
/// Deepest allowed chain of included files.
pub const MAX_INCLUDE_DEPTH: usize = 32;
/// Longest allowed chain of environment variables referring to each other.
pub const MAX_ENV_DEPTH: usize = 32;
/// Most values that `$variable` references may copy in one parse.
pub const MAX_EXPANDED: usize = 1_000_000;

/// State shared by the parsers of one top-level file, its includes and the
/// environment variables it references.
#[derive(Debug, Default)]
pub(crate) struct Session {
    /// Canonical paths of the files currently being parsed.
    include_stack: Vec<PathBuf>,
    /// Environment variables currently being expanded.
    env_stack: Vec<String>,
    /// Values copied so far by variable references.
    expanded: usize,
}

impl Session {
    /// A session whose outermost file is `canonical` (so a file including
    /// itself is detected as a cycle).
    pub(crate) fn for_file(canonical: PathBuf) -> Self {
        Session { include_stack: vec![canonical], ..Session::default() }
    }
}

/// A position in the input text.
#[derive(Debug, Clone, Copy)]
struct Cursor<'a> {
    src: &'a str,
    off: usize,
    line: u32,
    col: u32,
}

impl<'a> Cursor<'a> {
    fn new(src: &'a str) -> Self {
        Cursor { src, off: 0, line: 1, col: 1 }
    }

    fn rest(&self) -> &'a str {
        self.src.get(self.off..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.off += c.len_utf8();
        if c == '\n' {
            self.line = self.line.saturating_add(1);
            self.col = 1;
        } else {
            self.col = self.col.saturating_add(1);
        }
        Some(c)
    }
}

/// Spaces and tabs: the only whitespace allowed inside a line between
/// tokens (and the whitespace that ends an unquoted value).
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_newline(c: char) -> bool {
    c == '\n' || c == '\r'
}

/// Characters that end an unquoted value.
fn ends_unquoted(c: char) -> bool {
    is_blank(c) || is_newline(c) || matches!(c, ',' | ';' | ']' | '}')
}

/// Characters that end an unquoted key.
fn ends_key(c: char) -> bool {
    c.is_whitespace() || matches!(c, '=' | ':' | '{' | '[' | ']' | '}' | ',' | ';')
}

fn is_bool_word(lower: &str) -> Option<bool> {
    match lower {
        "true" | "yes" | "on" => Some(true),
        "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `-?[0-9]+\.[0-9]+`
fn is_float_syntax(text: &str) -> bool {
    let body = text.strip_prefix('-').unwrap_or(text);
    match body.split_once('.') {
        Some((int, frac)) => {
            !int.is_empty()
                && !frac.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Nesting depth (0 for scalars) and number of values in `value`.
fn measure(value: &Value) -> (usize, usize) {
    let children: Box<dyn Iterator<Item = &Item>> = match value {
        Value::Array(a) => Box::new(a.iter()),
        Value::Map(m) => Box::new(m.iter().map(|(_, i)| i)),
        _ => return (0, 1),
    };
    let mut depth = 0;
    let mut nodes: usize = 1;
    for child in children {
        let (d, n) = measure(&child.value);
        depth = depth.max(d);
        nodes = nodes.saturating_add(n);
    }
    (depth + 1, nodes)
}

/// One map being built, which is also a variable scope.
#[derive(Default)]
struct Scope {
    map: Map,
    /// Keys exactly as written -> entry index, for `$variable` lookups
    /// (which, as in nats-server, are case-sensitive).
    exact: HashMap<String, usize>,
}

/// Parses one source text (a file, or an environment variable's value).
pub(crate) struct Parser<'a, 's> {
    cur: Cursor<'a>,
    file: Arc<str>,
    base_dir: Option<PathBuf>,
    session: &'s mut Session,
    /// Enclosing maps, innermost last.
    scopes: Vec<Scope>,
    /// Nesting level of this text's top-level map within the whole tree.
    base_level: usize,
}

type Result<T> = std::result::Result<T, ConfError>;

impl<'a, 's> Parser<'a, 's> {
    pub(crate) fn new(
        src: &'a str,
        file: Arc<str>,
        base_dir: Option<PathBuf>,
        session: &'s mut Session,
        base_level: usize,
    ) -> Self {
        let mut cur = Cursor::new(src);
        if cur.peek() == Some('\u{feff}') {
            // A byte-order mark is not content.
            cur.off += '\u{feff}'.len_utf8();
        }
        Parser { cur, file, base_dir, session, scopes: Vec::new(), base_level }
    }

    fn pos(&self) -> Pos {
        Pos { file: self.file.clone(), line: self.cur.line, column: self.cur.col }
    }

    fn err(&self, pos: Pos, kind: ErrorKind) -> ConfError {
        ConfError::new(pos, kind)
    }

    fn unexpected(&self, expected: &'static str) -> ConfError {
        ConfError::new(self.pos(), ErrorKind::Unexpected { expected, found: Found::from_peek(self.cur.peek()) })
    }

    fn skip_blank(&mut self) {
        while self.cur.peek().is_some_and(is_blank) {
            self.cur.bump();
        }
    }

    /// Skips a `#` or `//` comment up to (not including) the line break.
    fn skip_comment(&mut self) -> bool {
        let starts = match self.cur.peek() {
            Some('#') => true,
            Some('/') => self.cur.peek_second() == Some('/'),
            _ => false,
        };
        if starts {
            while self.cur.peek().is_some_and(|c| !is_newline(c)) {
                self.cur.bump();
            }
        }
        starts
    }

    /// Skips whitespace of any kind, line breaks and comments.
    fn skip_trivia(&mut self) {
        loop {
            while self.cur.peek().is_some_and(char::is_whitespace) {
                self.cur.bump();
            }
            if !self.skip_comment() {
                break;
            }
        }
    }

    /// Parses a whole document into its top-level map.
    pub(crate) fn parse_document(mut self) -> Result<Map> {
        self.skip_trivia();
        if self.cur.peek() != Some('{') {
            return self.map_body(self.base_level, None);
        }
        // The whole document may be wrapped in braces, JSON style.
        let open = self.pos();
        self.cur.bump();
        let map = self.map_body(self.base_level, Some(&open))?;
        loop {
            self.skip_trivia();
            match self.cur.peek() {
                Some(',' | ';') => {
                    self.cur.bump();
                }
                None => return Ok(map),
                Some(_) => return Err(self.unexpected("the end of the input")),
            }
        }
    }

    /// Parses a lone value (an environment variable's contents).
    pub(crate) fn parse_single_value(mut self) -> Result<Item> {
        self.skip_trivia();
        let item = self.value(self.base_level)?;
        self.skip_trivia();
        match self.cur.peek() {
            None => Ok(item),
            Some(_) => Err(self.unexpected("the end of the value")),
        }
    }

    /// Parses map entries up to the end of input (`open` is `None`) or up
    /// to and including the `}` matching the `{` at `open`.
    fn map_body(&mut self, level: usize, open: Option<&Pos>) -> Result<Map> {
        self.scopes.push(Scope::default());
        let result = self.map_entries(level, open);
        let scope = self.scopes.pop().unwrap_or_default();
        result.map(|()| scope.map)
    }

    fn map_entries(&mut self, level: usize, open: Option<&Pos>) -> Result<()> {
        loop {
            self.skip_trivia();
            match self.cur.peek() {
                None => {
                    return match open {
                        None => Ok(()),
                        Some(p) => Err(self.err(p.clone(), ErrorKind::Unterminated("map '{'"))),
                    }
                }
                Some('}') if open.is_some() => {
                    self.cur.bump();
                    return Ok(());
                }
                Some(',' | ';') => {
                    self.cur.bump();
                }
                Some(_) => self.entry(level, open.is_some())?,
            }
        }
    }

    /// Records a parsed entry in the innermost map and scope.
    fn define(&mut self, key: String, key_pos: Option<Pos>, item: Item, referenced: bool) {
        if let Some(scope) = self.scopes.last_mut() {
            let (index, _) = scope.map.insert_entry(key.clone(), key_pos, item, referenced);
            scope.exact.insert(key, index);
        }
    }

    /// Parses one `key [=|:] value` entry or `include` directive.
    fn entry(&mut self, level: usize, in_braces: bool) -> Result<()> {
        let key_pos = self.pos();
        let (key, quoted) = self.key()?;

        if !quoted && key.eq_ignore_ascii_case("include") && self.cur.peek().is_some_and(is_blank) {
            let save = self.cur;
            self.skip_blank();
            if matches!(self.cur.peek(), Some('=' | ':')) {
                // A plain key that happens to be called "include".
                self.cur = save;
            } else {
                self.include(level, key_pos)?;
                return self.value_end(in_braces);
            }
        }

        self.skip_blank();
        if matches!(self.cur.peek(), Some('=' | ':')) {
            self.cur.bump();
            self.skip_blank();
        }
        if self.cur.peek().is_some_and(is_newline) {
            // Only a map or array may start on the following line
            // (`authorization` on one line, `{` on the next).
            let at_break = self.cur;
            self.skip_trivia();
            if !matches!(self.cur.peek(), Some('{' | '[')) {
                self.cur = at_break;
                return Err(self.unexpected("a value"));
            }
        }
        let item = self.value(level)?;
        self.define(key, Some(key_pos), item, false);
        self.value_end(in_braces)
    }

    /// After a map entry: a line break, `,`, `;`, a comment, the end of the
    /// input, or (inside braces) the closing `}`.
    fn value_end(&mut self, in_braces: bool) -> Result<()> {
        self.skip_blank();
        match self.cur.peek() {
            None => Ok(()),
            Some('}') if in_braces => Ok(()),
            Some(c) if is_newline(c) || c == ',' || c == ';' => {
                self.cur.bump();
                Ok(())
            }
            Some(_) if self.skip_comment() => Ok(()),
            Some(_) => Err(self.unexpected("a line break, ',' or ';' after the value")),
        }
    }

    /// Parses a key; returns it and whether it was quoted.
    fn key(&mut self) -> Result<(String, bool)> {
        match self.cur.peek() {
            Some(q @ ('"' | '\'')) => {
                let open = self.pos();
                self.cur.bump();
                let start = self.cur.off;
                loop {
                    match self.cur.peek() {
                        None => {
                            return Err(self.err(open, ErrorKind::Unterminated("quoted key")));
                        }
                        Some(c) if c == q => {
                            let key = self.cur.src.get(start..self.cur.off).unwrap_or("");
                            self.cur.bump();
                            return Ok((key.to_string(), true));
                        }
                        Some(_) => {
                            self.cur.bump();
                        }
                    }
                }
            }
            _ => {
                let start = self.cur.off;
                while self.cur.peek().is_some_and(|c| !ends_key(c)) {
                    self.cur.bump();
                }
                let key = self.cur.src.get(start..self.cur.off).unwrap_or("");
                if key.is_empty() {
                    return Err(self.unexpected("a key"));
                }
                Ok((key.to_string(), false))
            }
        }
    }

    fn check_depth(&self, level: usize, pos: &Pos) -> Result<()> {
        if level > MAX_DEPTH {
            Err(self.err(pos.clone(), ErrorKind::TooDeep { limit: MAX_DEPTH }))
        } else {
            Ok(())
        }
    }

    /// Parses a value held by a container at nesting `level`.
    fn value(&mut self, level: usize) -> Result<Item> {
        self.skip_blank();
        let pos = self.pos();
        match self.cur.peek() {
            None => Err(self.unexpected("a value")),
            Some(c) if is_newline(c) || matches!(c, ',' | ';' | '}' | ']') => Err(self.unexpected("a value")),
            Some('[') => self.array(level + 1, pos),
            Some('{') => {
                self.check_depth(level + 1, &pos)?;
                self.cur.bump();
                let map = self.map_body(level + 1, Some(&pos))?;
                Ok(Item::new(Value::Map(map), pos))
            }
            Some('"') => self.double_quoted(pos),
            Some('\'') => self.single_quoted(pos),
            Some('(') => self.block(pos),
            Some(_) => self.unquoted(level, pos),
        }
    }

    /// Parses `[ ... ]`; `level` is the array's own nesting level.
    fn array(&mut self, level: usize, pos: Pos) -> Result<Item> {
        self.check_depth(level, &pos)?;
        self.cur.bump();
        let mut items = Vec::new();
        loop {
            self.skip_trivia();
            match self.cur.peek() {
                None => return Err(self.err(pos, ErrorKind::Unterminated("array '['"))),
                Some(']') => {
                    self.cur.bump();
                    return Ok(Item::new(Value::Array(items), pos));
                }
                Some(',') => return Err(self.unexpected("an array element or ']'")),
                Some(_) => {
                    items.push(self.value(level)?);
                    self.skip_blank();
                    match self.cur.peek() {
                        None | Some(']') => {}
                        Some(c) if c == ',' || is_newline(c) => {
                            self.cur.bump();
                        }
                        Some(_) if self.skip_comment() => {}
                        Some(_) => return Err(self.unexpected("',' or ']' after the array element")),
                    }
                }
            }
        }
    }

    fn finish_string(&self, buf: Vec<u8>, pos: &Pos) -> Result<String> {
        String::from_utf8(buf).map_err(|_| self.err(pos.clone(), ErrorKind::InvalidUtf8))
    }

    fn double_quoted(&mut self, pos: Pos) -> Result<Item> {
        self.cur.bump();
        let mut buf = Vec::new();
        loop {
            let at = self.pos();
            match self.cur.bump() {
                None => return Err(self.err(pos, ErrorKind::Unterminated("double-quoted string"))),
                Some('"') => break,
                Some('\\') => self.escape(&mut buf, at)?,
                Some(c) => buf.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        let s = self.finish_string(buf, &pos)?;
        Ok(Item::new(Value::String(s), pos))
    }

    fn single_quoted(&mut self, pos: Pos) -> Result<Item> {
        self.cur.bump();
        let start = self.cur.off;
        loop {
            match self.cur.peek() {
                None => return Err(self.err(pos, ErrorKind::Unterminated("single-quoted string"))),
                Some('\'') => {
                    let s = self.cur.src.get(start..self.cur.off).unwrap_or("");
                    self.cur.bump();
                    return Ok(Item::new(Value::String(s.to_string()), pos));
                }
                Some(_) => {
                    self.cur.bump();
                }
            }
        }
    }

    /// Parses a `(` block string, which ends at a `)` alone at the start of
    /// a line. As in nats-server, the value is everything between the
    /// parentheses, including the line break after `(` and before `)`.
    fn block(&mut self, pos: Pos) -> Result<Item> {
        self.cur.bump();
        let start = self.cur.off;
        let mut prev = None;
        loop {
            let end = self.cur.off;
            let Some(c) = self.cur.bump() else {
                return Err(self.err(pos, ErrorKind::Unterminated("block string '('")));
            };
            let closes = matches!(self.cur.peek(), None | Some('\n' | '\r'));
            if c == ')' && prev == Some('\n') && closes {
                let s = self.cur.src.get(start..end).unwrap_or("");
                return Ok(Item::new(Value::String(s.to_string()), pos));
            }
            prev = Some(c);
        }
    }

    /// Reads `n` hexadecimal digits of an escape.
    fn hex_digits(&mut self, n: usize, at: &Pos, prefix: &str) -> Result<u32> {
        let mut v: u32 = 0;
        let mut text = String::from(prefix);
        for _ in 0..n {
            match self.cur.peek() {
                Some(c) if c.is_ascii_hexdigit() => {
                    self.cur.bump();
                    text.push(c);
                    v = v * 16 + c.to_digit(16).unwrap_or(0);
                }
                _ => {
                    if let Some(c) = self.cur.peek().filter(|c| !is_newline(*c)) {
                        text.push(c);
                    }
                    return Err(self.err(at.clone(), ErrorKind::InvalidHexEscape(text)));
                }
            }
        }
        Ok(v)
    }

    /// Decodes the escape after a backslash (at `at`) into `buf`.
    fn escape(&mut self, buf: &mut Vec<u8>, at: Pos) -> Result<()> {
        let c = match self.cur.peek() {
            None => return Err(self.unexpected("an escape character after '\\'")),
            Some(c) => c,
        };
        self.cur.bump();
        let simple = match c {
            't' => Some(b'\t'),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            '"' => Some(b'"'),
            '\\' => Some(b'\\'),
            _ => None,
        };
        if let Some(b) = simple {
            buf.push(b);
            return Ok(());
        }
        match c {
            'x' => {
                let v = self.hex_digits(2, &at, "\\x")?;
                // Two hex digits always fit in a byte.
                buf.push(u8::try_from(v).unwrap_or(0));
                Ok(())
            }
            'u' => {
                let hi = self.hex_digits(4, &at, "\\u")?;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    // A surrogate pair written as two escapes.
                    let bad = || ErrorKind::InvalidHexEscape(format!("\\u{hi:04X}"));
                    if self.cur.rest().starts_with("\\u") {
                        self.cur.bump();
                        self.cur.bump();
                    } else {
                        return Err(self.err(at, bad()));
                    }
                    let lo = self.hex_digits(4, &at, "\\u")?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err(self.err(at, bad()));
                    }
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else {
                    hi
                };
                let ch = char::from_u32(code)
                    .ok_or_else(|| self.err(at.clone(), ErrorKind::InvalidHexEscape(format!("\\u{code:04X}"))))?;
                buf.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                Ok(())
            }
            other => Err(self.err(at, ErrorKind::InvalidEscape(other))),
        }
    }

    /// Parses an unquoted value: a boolean, number, variable reference or
    /// bare string.
    fn unquoted(&mut self, level: usize, pos: Pos) -> Result<Item> {
        let mut buf = Vec::new();
        let mut escaped = false;
        while let Some(c) = self.cur.peek().filter(|c| !ends_unquoted(*c)) {
            let at = self.pos();
            self.cur.bump();
            if c == '\\' {
                self.escape(&mut buf, at)?;
                escaped = true;
            } else {
                buf.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            }
        }
        let text = self.finish_string(buf, &pos)?;
        if escaped {
            // As in nats-server, escapes make it a plain string.
            return Ok(Item::new(Value::String(text), pos));
        }
        if let Some(b) = is_bool_word(&text.to_ascii_lowercase()) {
            return Ok(Item::new(Value::Bool(b), pos));
        }
        if let Some(name) = text.strip_prefix('$') {
            return self.variable(name, level, pos);
        }
        let numeric = {
            let body = text.strip_prefix('-').unwrap_or(&text);
            body.starts_with(|c: char| c.is_ascii_digit())
        };
        if numeric {
            match parse_integer(&text) {
                IntParse::Value(v) => return Ok(Item::new(Value::Integer(v), pos)),
                IntParse::Overflow => return Err(self.err(pos, ErrorKind::IntegerOverflow(text))),
                IntParse::NotInteger => {}
            }
            if is_float_syntax(&text) {
                return match text.parse::<f64>() {
                    Ok(f) if f.is_finite() => Ok(Item::new(Value::Float(f), pos)),
                    _ => Err(self.err(pos, ErrorKind::FloatOutOfRange(text))),
                };
            }
        } else if text.strip_prefix('.').is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit())) {
            return Err(self.err(pos, ErrorKind::FloatLeadingDot(text)));
        }
        // Anything else (host:port, IP addresses, date-times, "10s", ...) is
        // a bare string.
        Ok(Item::new(Value::String(text), pos))
    }

    /// Resolves `$name` at `pos`, to be stored in a container at `level`.
    fn variable(&mut self, name: &str, level: usize, pos: Pos) -> Result<Item> {
        // bcrypt hashes ("$2a$...") are written unquoted and are not
        // variable references.
        if ["2a$", "2b$", "2y$"].iter().any(|p| name.starts_with(p)) {
            return Ok(Item::new(Value::String(format!("${name}")), pos));
        }
        let found = self.scopes.iter().enumerate().rev().find_map(|(si, s)| s.exact.get(name).map(|&ei| (si, ei)));
        if let Some((si, ei)) = found {
            if let Some(item) = self.scopes.get_mut(si).and_then(|scope| scope.map.reference(ei)) {
                let (depth, nodes) = measure(&item.value);
                if level + depth > MAX_DEPTH {
                    return Err(ConfError::new(pos, ErrorKind::TooDeep { limit: MAX_DEPTH }));
                }
                self.session.expanded = self.session.expanded.saturating_add(nodes);
                if self.session.expanded > MAX_EXPANDED {
                    return Err(ConfError::new(pos, ErrorKind::ExpansionTooLarge { limit: MAX_EXPANDED }));
                }
                return Ok(Item::new(item.value.clone(), pos));
            }
        }
        self.env_variable(name, level, pos)
    }

    /// Resolves `$name` from the process environment, parsing its value as
    /// a configuration value.
    fn env_variable(&mut self, name: &str, level: usize, pos: Pos) -> Result<Item> {
        let unknown = |pos| ConfError::new(pos, ErrorKind::UnknownVariable(name.to_string()));
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(unknown(pos));
        }
        let Some(raw) = std::env::var_os(name) else {
            return Err(unknown(pos));
        };
        let Ok(text) = raw.into_string() else {
            return Err(self.err(pos, ErrorKind::EnvNotUnicode(name.to_string())));
        };
        if self.session.env_stack.iter().any(|n| n == name) {
            return Err(self.err(pos, ErrorKind::VariableCycle(name.to_string())));
        }
        if self.session.env_stack.len() >= MAX_ENV_DEPTH {
            return Err(self.err(pos, ErrorKind::EnvTooDeep { limit: MAX_ENV_DEPTH }));
        }
        self.session.env_stack.push(name.to_string());
        let file: Arc<str> = format!("${name}").into();
        let result = Parser::new(&text, file, None, self.session, level).parse_single_value();
        self.session.env_stack.pop();
        match result {
            Ok(item) => Ok(Item::new(item.value, pos)),
            Err(cause) => Err(self.err(pos, ErrorKind::EnvVariable { name: name.to_string(), cause: Box::new(cause) })),
        }
    }

    /// Reads the path after `include`.
    fn include_path(&mut self) -> Result<String> {
        match self.cur.peek() {
            Some(q @ ('"' | '\'')) => {
                let open = self.pos();
                self.cur.bump();
                let start = self.cur.off;
                loop {
                    match self.cur.peek() {
                        None => return Err(self.err(open, ErrorKind::Unterminated("quoted include path"))),
                        Some(c) if c == q => {
                            let path = self.cur.src.get(start..self.cur.off).unwrap_or("");
                            self.cur.bump();
                            return Ok(path.to_string());
                        }
                        Some(_) => {
                            self.cur.bump();
                        }
                    }
                }
            }
            Some(c) if !ends_unquoted(c) && !matches!(c, '[' | '{' | '(') => {
                let start = self.cur.off;
                while self.cur.peek().is_some_and(|c| !ends_unquoted(c)) {
                    self.cur.bump();
                }
                Ok(self.cur.src.get(start..self.cur.off).unwrap_or("").to_string())
            }
            _ => Err(self.unexpected("an include path")),
        }
    }

    /// Handles `include path` at `directive`: parses the file (relative to
    /// this file's directory) and merges its entries into the current map.
    fn include(&mut self, level: usize, directive: Pos) -> Result<()> {
        self.skip_blank();
        let path = self.include_path()?;
        let save = self.cur;
        self.skip_blank();
        if matches!(self.cur.peek(), Some('"' | '\'')) {
            return Err(self.err(self.pos(), ErrorKind::IncludeDigestUnsupported));
        }
        self.cur = save;

        let Some(base) = &self.base_dir else {
            return Err(self.err(directive, ErrorKind::IncludeNotAllowed(path)));
        };
        if self.session.include_stack.len() > MAX_INCLUDE_DEPTH {
            return Err(self.err(directive, ErrorKind::IncludeTooDeep { limit: MAX_INCLUDE_DEPTH }));
        }
        let full = base.join(&path);
        let io_err = |e: std::io::Error| ErrorKind::Io { path: full.clone(), source: Arc::new(e) };
        let canonical = fs::canonicalize(&full).map_err(|e| self.err(directive.clone(), io_err(e)))?;
        if self.session.include_stack.contains(&canonical) {
            return Err(self.err(directive, ErrorKind::IncludeCycle(full)));
        }
        let text = fs::read_to_string(&full).map_err(|e| self.err(directive.clone(), io_err(e)))?;

        self.session.include_stack.push(canonical);
        let file: Arc<str> = full.display().to_string().into();
        let sub_base = full.parent().map(Path::to_path_buf);
        let result = Parser::new(&text, file, sub_base, self.session, level).parse_document();
        self.session.include_stack.pop();

        for (key, key_pos, item, referenced) in result?.into_entries() {
            self.define(key, key_pos, item, referenced);
        }
        Ok(())
    }
}

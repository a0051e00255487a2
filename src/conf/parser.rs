//! The grammar of the nats-server configuration format, written with `nom`
//! combinators, and the evaluation that runs alongside it.
//!
//! The grammar works on `&str`. Rules that only recognise text (trivia,
//! keys, separators, strings, block strings, escapes) are free functions;
//! rules that build the tree (documents, maps, entries, arrays, values) are
//! methods of [`Parser`], because building needs state: the enclosing maps,
//! which are also the scopes `$variables` are looked up in, the nesting
//! level, and the [`Session`] shared with included files and environment
//! variables. Variables and includes are resolved as soon as the grammar
//! reaches them, so errors are reported in the order they appear in the
//! text.
//!
//! Rules fail in one of two ways, following `nom`: a recoverable
//! `Err::Error` means "this rule does not apply here" and lets an `alt` try
//! the next alternative; once a rule has committed (for instance after an
//! opening quote) every problem is an `Err::Failure` carrying the exact
//! diagnosis. Positions are kept as the remaining input at the place of the
//! problem and turned into line and column only when needed.
//!
//! All recursion is bounded ([`MAX_DEPTH`], [`MAX_INCLUDE_DEPTH`],
//! [`MAX_ENV_DEPTH`]) and variable expansion is budgeted ([`MAX_EXPANDED`]),
//! because configuration files are untrusted input.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nom::branch::alt;
use nom::bytes::complete::{tag, take, take_till, take_till1, take_while, take_while1, take_while_m_n};
use nom::character::complete::{anychar, char, none_of, one_of, satisfy};
use nom::combinator::{all_consuming, eof, map, not, opt, peek, recognize, value, verify};
use nom::error::ParseError;
use nom::multi::{fold_many0, fold_many1, many0_count, many_till};
use nom::sequence::{delimited, preceded, terminated};
use nom::{IResult, Parser as _};

use super::error::{ConfError, ErrorKind, Found};
use super::units::{number, Number};
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

// ---------------------------------------------------------------- failures

/// Why a grammar rule did not match.
///
/// Kept small (payloads are boxed), like the outputs of the recursive
/// rules, because several results are on the stack at every nesting level.
#[derive(Debug)]
enum Fail<'a> {
    /// The rule does not apply here; an enclosing rule may try another
    /// alternative or report what it expected.
    Mismatch,
    /// A problem at a place in the text being parsed, given as the input
    /// remaining from that place.
    At(Box<(&'a str, ErrorKind)>),
    /// A problem already located, possibly in another text (an included
    /// file or an environment variable).
    Located(Box<ConfError>),
}

impl<'a> ParseError<&'a str> for Fail<'a> {
    fn from_error_kind(_: &'a str, _: nom::error::ErrorKind) -> Self {
        Fail::Mismatch
    }

    fn append(_: &'a str, _: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}

/// The result of a grammar rule.
type PResult<'a, T> = IResult<&'a str, T, Fail<'a>>;

/// A definite (non-backtracking) error `kind` at `at`.
fn fatal(at: &str, kind: ErrorKind) -> nom::Err<Fail<'_>> {
    nom::Err::Failure(Fail::At(Box::new((at, kind))))
}

/// A definite error that already has its position.
fn located<'a>(e: ConfError) -> nom::Err<Fail<'a>> {
    nom::Err::Failure(Fail::Located(Box::new(e)))
}

/// "expected `what`, found <whatever is at `at`>".
fn unexpected(at: &str, what: &'static str) -> ErrorKind {
    ErrorKind::Unexpected { expected: what, found: Found::from_peek(at.chars().next()) }
}

/// Always fails definitely with "expected `what`, found ...": the last
/// alternative of an `alt` whose other alternatives are everything allowed.
fn expected<'a, T>(what: &'static str) -> impl Fn(&'a str) -> PResult<'a, T> {
    move |i| Err(fatal(i, unexpected(i, what)))
}

/// At the end of the input, fails definitely: `what`, opened at `open`, is
/// never closed. Elsewhere it does not apply.
fn unclosed<'a, T>(open: &'a str, what: &'static str) -> impl Fn(&'a str) -> PResult<'a, T> {
    move |i| {
        end(i)?;
        Err(fatal(open, ErrorKind::Unterminated(what)))
    }
}

/// Runs `parser`, turning "does not apply" into the definite error `kind`
/// at `at`.
fn or_fatal<'a, O>(
    mut parser: impl nom::Parser<&'a str, Output = O, Error = Fail<'a>>,
    at: &'a str,
    kind: impl Fn() -> ErrorKind,
) -> impl FnMut(&'a str) -> PResult<'a, O> {
    move |i| match parser.parse(i) {
        Err(nom::Err::Error(_)) => Err(fatal(at, kind())),
        other => other,
    }
}

// ---------------------------------------------------------------- lexical rules

/// Spaces and tabs: the only whitespace allowed inside a line between
/// tokens (and the whitespace that ends an unquoted value).
fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Line-break characters (a `\r` alone also ends a value or comment).
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

/// The end of the input.
fn end(i: &str) -> PResult<'_, ()> {
    value((), eof).parse(i)
}

/// One line-break character (`\n` or `\r`).
fn line_break(i: &str) -> PResult<'_, char> {
    satisfy(is_newline).parse(i)
}

/// Spaces and tabs, possibly none.
fn blanks(i: &str) -> PResult<'_, &str> {
    take_while(is_blank).parse(i)
}

/// A `#` or `//` comment, up to (not including) the line break.
fn comment(i: &str) -> PResult<'_, &str> {
    recognize((alt((tag("#"), tag("//"))), take_till(is_newline))).parse(i)
}

/// Whitespace of any kind, line breaks and comments, possibly none.
fn trivia(i: &str) -> PResult<'_, ()> {
    value((), many0_count(alt((take_while1(char::is_whitespace), comment)))).parse(i)
}

/// What may follow a map entry: a line break, `,` or `;` (consumed), a
/// comment, the end of the input or, inside braces, the closing `}` (left
/// for the map).
fn entry_end(in_braces: bool, i: &str) -> PResult<'_, ()> {
    let closer = if in_braces { "}" } else { "" };
    preceded(
        blanks,
        alt((
            end,
            value((), peek(one_of(closer))),
            value((), one_of(",;\n\r")),
            value((), comment),
            expected("a line break, ',' or ';' after the value"),
        )),
    )
    .parse(i)
}

/// Where an array element may start, after any trivia: anything but `,`,
/// `]` or the end of the input.
fn element_start(i: &str) -> PResult<'_, ()> {
    value((), (trivia, peek(none_of(",]")))).parse(i)
}

/// What may follow an array element: `,` or a line break (consumed), a
/// comment, the end of the input (reported by the array) or the closing
/// `]` (left for the array).
fn element_end(i: &str) -> PResult<'_, ()> {
    preceded(
        blanks,
        alt((
            end,
            value((), peek(char(']'))),
            value((), one_of(",\n\r")),
            value((), comment),
            expected("',' or ']' after the array element"),
        )),
    )
    .parse(i)
}

/// Text between a pair of quotes (any of `quotes`, closed by the same one),
/// taken verbatim; `what` names it if it is never closed.
fn quoted_raw<'a>(quotes: &'static str, what: &'static str) -> impl FnMut(&'a str) -> PResult<'a, &'a str> {
    move |i| {
        let (body, quote) = one_of(quotes).parse(i)?;
        terminated(take_till(move |c| c == quote), alt((value((), char(quote)), unclosed(i, what)))).parse(body)
    }
}

/// A map key: quoted (verbatim, any characters) or bare.
fn key(i: &str) -> PResult<'_, &str> {
    alt((quoted_raw("\"'", "quoted key"), take_till1(ends_key))).parse(i)
}

/// A word, ignoring ASCII case.
fn keyword<'a>(word: &'static str) -> impl nom::Parser<&'a str, Output = &'a str, Error = Fail<'a>> {
    verify(take(word.chars().count()), move |s: &str| s.eq_ignore_ascii_case(word))
}

/// The boolean an unquoted token spells, if any (any ASCII case).
fn boolean(text: &str) -> Option<bool> {
    let truthy = alt((keyword("true"), keyword("yes"), keyword("on")));
    let falsy = alt((keyword("false"), keyword("no"), keyword("off")));
    let result: PResult<'_, bool> = all_consuming(alt((value(true, truthy), value(false, falsy)))).parse(text);
    result.ok().map(|(_, b)| b)
}

/// What one backslash escape stands for.
#[derive(Debug, Clone, Copy)]
enum Unescaped {
    /// A single byte (`\xXX` escapes may spell out UTF-8 byte by byte).
    Byte(u8),
    /// A whole character.
    Char(char),
}

/// A piece of string text: verbatim, or an escape.
enum Piece<'a> {
    Text(&'a str),
    Escape(Unescaped),
}

/// Appends a piece to the bytes of a string being decoded.
fn push_piece(mut buf: Vec<u8>, piece: Piece<'_>) -> Vec<u8> {
    match piece {
        Piece::Text(t) => buf.extend_from_slice(t.as_bytes()),
        Piece::Escape(Unescaped::Byte(b)) => buf.push(b),
        Piece::Escape(Unescaped::Char(c)) => buf.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
    }
    buf
}

/// Exactly `n` hexadecimal digits of the escape at `at` (which starts with
/// `prefix`), as a number.
fn hex_digits<'a>(n: usize, at: &'a str, prefix: &'static str) -> impl FnMut(&'a str) -> PResult<'a, u32> {
    move |i| {
        let (rest, digits) = take_while_m_n(0, n, |c: char| c.is_ascii_hexdigit()).parse(i)?;
        if digits.len() < n {
            // Show the escape as far as it got, with the offending character.
            let mut text = format!("{prefix}{digits}");
            if let Some(c) = rest.chars().next().filter(|c| !is_newline(*c)) {
                text.push(c);
            }
            return Err(fatal(at, ErrorKind::InvalidHexEscape(text)));
        }
        Ok((rest, digits.chars().fold(0, |v, c| v * 16 + c.to_digit(16).unwrap_or(0))))
    }
}

/// The rest of a `\u` escape starting at `at`: four hex digits, or a
/// surrogate pair written as two such escapes.
fn unicode_escape<'a>(at: &'a str) -> impl FnMut(&'a str) -> PResult<'a, char> {
    move |i| {
        let (rest, hi) = hex_digits(4, at, "\\u").parse(i)?;
        let (rest, code) = if (0xD800..0xDC00).contains(&hi) {
            let bad = || ErrorKind::InvalidHexEscape(format!("\\u{hi:04X}"));
            let (rest, lo) = or_fatal(preceded(tag("\\u"), hex_digits(4, at, "\\u")), at, bad).parse(rest)?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(fatal(at, bad()));
            }
            (rest, 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
        } else {
            (rest, hi)
        };
        match char::from_u32(code) {
            Some(c) => Ok((rest, c)),
            None => Err(fatal(at, ErrorKind::InvalidHexEscape(format!("\\u{code:04X}")))),
        }
    }
}

/// A backslash escape: `\t`, `\n`, `\r`, `\"`, `\\`, `\xXX` or `\uXXXX`.
/// Errors point at the backslash.
fn escape(i: &str) -> PResult<'_, Unescaped> {
    let (rest, _) = char('\\').parse(i)?;
    let simple = alt((
        value(b'\t', char('t')),
        value(b'\n', char('n')),
        value(b'\r', char('r')),
        value(b'"', char('"')),
        value(b'\\', char('\\')),
    ));
    // Two hex digits always fit in a byte.
    let byte = preceded(char('x'), map(hex_digits(2, i, "\\x"), |v| u8::try_from(v).unwrap_or(0)));
    let invalid = |r| {
        let (_, c) = anychar(r)?;
        Err(fatal(i, ErrorKind::InvalidEscape(c)))
    };
    alt((
        map(alt((simple, byte)), Unescaped::Byte),
        map(preceded(char('u'), unicode_escape(i)), Unescaped::Char),
        invalid,
        expected("an escape character after '\\'"),
    ))
    .parse(rest)
}

/// Decoded bytes as a string; `\x` escapes may have produced invalid UTF-8,
/// reported at `at` (the start of the string).
fn utf8(bytes: Vec<u8>, at: &str) -> std::result::Result<String, nom::Err<Fail<'_>>> {
    String::from_utf8(bytes).map_err(|_| fatal(at, ErrorKind::InvalidUtf8))
}

/// A `"` string, with escapes decoded.
fn double_quoted(i: &str) -> PResult<'_, String> {
    let (body, _) = char('"').parse(i)?;
    let piece = alt((map(take_till1(|c| c == '"' || c == '\\'), Piece::Text), map(escape, Piece::Escape)));
    let closing = alt((value((), char('"')), unclosed(i, "double-quoted string")));
    let (rest, bytes) = terminated(fold_many0(piece, Vec::new, push_piece), closing).parse(body)?;
    Ok((rest, utf8(bytes, i)?))
}

/// A `'` string, taken verbatim.
fn single_quoted(i: &str) -> PResult<'_, &str> {
    quoted_raw("'", "single-quoted string").parse(i)
}

/// A `(` block string, which ends at a `)` alone at the start of a line. As
/// in nats-server, the value is everything between the parentheses,
/// including the line break after `(` and before `)`.
fn block_string(i: &str) -> PResult<'_, &str> {
    let (body, _) = char('(').parse(i)?;
    let close = (char('\n'), char(')'), peek(alt((end, value((), line_break)))));
    let line = alt((take_till1(|c| c == '\n'), tag("\n")));
    let content = recognize((many_till(value((), line), peek(close)), char('\n')));
    or_fatal(terminated(content, char(')')), i, || ErrorKind::Unterminated("block string '('")).parse(body)
}

/// The text of an unquoted value, up to a blank, line break, `,`, `;`,
/// `]` or `}`, with escapes decoded; also whether it had escapes.
fn unquoted_text(i: &str) -> PResult<'_, (String, bool)> {
    let piece = alt((map(take_till1(|c| ends_unquoted(c) || c == '\\'), Piece::Text), map(escape, Piece::Escape)));
    let (rest, (bytes, escaped)) = fold_many1(
        piece,
        || (Vec::new(), false),
        |(buf, escaped), piece| {
            let escaped = escaped || matches!(piece, Piece::Escape(_));
            (push_piece(buf, piece), escaped)
        },
    )
    .parse(i)?;
    Ok((rest, (utf8(bytes, i)?, escaped)))
}

/// The path after `include`: quoted, or bare up to the end of the value.
fn include_path(i: &str) -> PResult<'_, &str> {
    let bare =
        preceded(peek(satisfy(|c| !ends_unquoted(c) && !matches!(c, '[' | '{' | '('))), take_till(ends_unquoted));
    alt((quoted_raw("\"'", "quoted include path"), bare, expected("an include path"))).parse(i)
}

/// Rejects an include digest (a quoted string after the path); consumes
/// nothing.
fn no_digest(i: &str) -> PResult<'_, ()> {
    let (at, _) = blanks(i)?;
    let quote: PResult<'_, char> = one_of("\"'").parse(at);
    match quote {
        Ok(_) => Err(fatal(at, ErrorKind::IncludeDigestUnsupported)),
        Err(_) => Ok((i, ())),
    }
}

/// After a key (and separator): the value must start on the same line,
/// except that a map or array may start on a later one (`authorization` on
/// one line, `{` on the next).
fn value_start(i: &str) -> PResult<'_, ()> {
    alt((not(line_break), preceded(trivia, value((), peek(one_of("{[")))), expected("a value"))).parse(i)
}

/// The end of an array opened at `open`, after any trivia.
fn array_close<'a>(open: &'a str, i: &'a str) -> PResult<'a, ()> {
    let closing = alt((value((), char(']')), unclosed(open, "array '['"), expected("an array element or ']'")));
    preceded(trivia, closing).parse(i)
}

/// The end of a map, after any gap (see [`entry_gap`]): the `}` matching
/// the `{` at `open`, or the end of the input for a map without braces.
fn map_close<'a>(open: Option<&'a str>, i: &'a str) -> PResult<'a, ()> {
    match open {
        Some(open) => {
            preceded(entry_gap, alt((value((), char('}')), unclosed(open, "map '{'"), expected("a key")))).parse(i)
        }
        None => preceded(entry_gap, alt((end, expected("a key")))).parse(i),
    }
}

/// What may come between map entries: trivia and any number of `,` and
/// `;`.
fn entry_gap(i: &str) -> PResult<'_, ()> {
    value(
        (),
        many0_count(alt((value((), take_while1(char::is_whitespace)), value((), comment), value((), one_of(",;"))))),
    )
    .parse(i)
}

/// Between a key and its value: an optional `=` or `:` with blanks
/// around it, and the value on the same line (see [`value_start`]).
fn key_separator(i: &str) -> PResult<'_, ()> {
    value((), (blanks, opt(one_of("=:")), blanks, value_start)).parse(i)
}

/// How a map entry starts.
enum Head<'a> {
    /// `include` and the path to include.
    Include(&'a str),
    /// The key of a `key [=|:] value` entry.
    Key(&'a str),
}

/// The start of a map entry: an `include` directive with its path, or a
/// key. `include` is a directive when it is a bare key followed by a blank
/// and not by `=` or `:`; otherwise it is an ordinary key.
fn entry_head(i: &str) -> PResult<'_, Head<'_>> {
    let word = verify(take_till1(ends_key), |k: &str| k.eq_ignore_ascii_case("include"));
    let directive = (word, satisfy(is_blank), blanks, not(one_of("=:")));
    alt((map(preceded(directive, include_path), Head::Include), map(key, Head::Key))).parse(i)
}

// ---------------------------------------------------------------- the tree

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

/// How a value starts: a container is opened, or a scalar is complete.
#[derive(Clone)]
enum Opening {
    /// After a `[`.
    Array,
    /// After a `{`.
    Map,
    /// A whole scalar value.
    Scalar(Box<Item>),
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
///
/// The grammar rules that build the tree take `&self`, so that they can be
/// combined freely with `nom` combinators; the little state they change
/// lives in cells.
pub(crate) struct Parser<'a, 's> {
    /// The text, without any byte-order mark.
    text: &'a str,
    file: Arc<str>,
    base_dir: Option<PathBuf>,
    session: RefCell<&'s mut Session>,
    /// Enclosing maps, innermost last.
    scopes: RefCell<Vec<Scope>>,
    /// Nesting level of this text's top-level map within the whole tree.
    base_level: usize,
    /// The last position computed (byte offset, line, column), from which
    /// the next one is found by scanning forward.
    last_pos: Cell<(usize, u32, u32)>,
}

type Result<T> = std::result::Result<T, ConfError>;

impl<'a, 's> Parser<'a, 's> {
    /// A parser for `src`, named `file` in positions, resolving includes
    /// against `base_dir` (none: includes are errors), whose top-level map
    /// sits at nesting `base_level` of the whole tree.
    pub(crate) fn new(
        src: &'a str,
        file: Arc<str>,
        base_dir: Option<PathBuf>,
        session: &'s mut Session,
        base_level: usize,
    ) -> Self {
        // A byte-order mark is not content (and takes no column).
        let text = src.strip_prefix('\u{feff}').unwrap_or(src);
        Parser {
            text,
            file,
            base_dir,
            session: RefCell::new(session),
            scopes: RefCell::new(Vec::new()),
            base_level,
            last_pos: Cell::new((0, 1, 1)),
        }
    }

    /// The position of `rest`, a suffix of the text. Lines and columns are
    /// 1-based and columns count characters; only `\n` starts a line.
    fn pos(&self, rest: &str) -> Pos {
        let off = self.text.len().saturating_sub(rest.len());
        let (mut from, mut line, mut column) = self.last_pos.get();
        if off < from {
            (from, line, column) = (0, 1, 1);
        }
        for c in self.text.get(from..off).unwrap_or("").chars() {
            if c == '\n' {
                line = line.saturating_add(1);
                column = 1;
            } else {
                column = column.saturating_add(1);
            }
        }
        self.last_pos.set((off, line, column));
        Pos { file: self.file.clone(), line, column }
    }

    /// Turns the outcome of a top-level rule into the public result.
    fn finish<T>(&self, result: PResult<'a, T>, expected: &'static str) -> Result<T> {
        let fail = match result {
            Ok((_, v)) => return Ok(v),
            Err(nom::Err::Error(f) | nom::Err::Failure(f)) => f,
            // Only complete-input parsers are used, which never ask for more.
            Err(nom::Err::Incomplete(_)) => Fail::Mismatch,
        };
        Err(match fail {
            // Top-level rules end with an alternative that reports what they
            // expected, so this is not reached.
            Fail::Mismatch => ConfError::new(self.pos(""), unexpected("", expected)),
            Fail::At(at) => {
                let (at, kind) = *at;
                ConfError::new(self.pos(at), kind)
            }
            Fail::Located(e) => *e,
        })
    }

    /// Parses a whole document into its top-level map.
    pub(crate) fn parse_document(self) -> Result<Map> {
        // The whole document may be wrapped in braces, JSON style.
        let braced = |i: &'a str| {
            let (body, _) = char('{').parse(i)?;
            let trailer =
                (many0_count(preceded(trivia, one_of(",;"))), trivia, alt((end, expected("the end of the input"))));
            terminated(|b| self.map_body(self.base_level, Some(i), b), trailer).parse(body)
        };
        let bare = |i| self.map_body(self.base_level, None, i);
        let result = preceded(trivia, alt((braced, bare))).parse(self.text);
        self.finish(result, "the end of the input").map(|map| *map)
    }

    /// Parses a lone value (an environment variable's contents).
    pub(crate) fn parse_single_value(self) -> Result<Item> {
        let trailer = (trivia, alt((end, expected("the end of the value"))));
        let result = delimited(trivia, |i| self.value(self.base_level, i), trailer).parse(self.text);
        self.finish(result, "the end of the value").map(|item| *item)
    }

    /// Map entries up to the end of input (`open` is `None`) or up to and
    /// including the `}` matching the `{` at `open`.
    fn map_body(&self, level: usize, open: Option<&'a str>, i: &'a str) -> PResult<'a, Box<Map>> {
        self.open_scope();
        let result = self.map_entries(level, open, i);
        let map = self.close_scope();
        result.map(|(rest, ())| (rest, map))
    }

    /// Starts a map (and variable scope) inside the current one.
    fn open_scope(&self) {
        self.scopes.borrow_mut().push(Scope::default());
    }

    /// Ends the innermost map, returning it.
    fn close_scope(&self) -> Box<Map> {
        Box::new(self.scopes.borrow_mut().pop().unwrap_or_default().map)
    }

    /// The entries of a map at `level`, and its end (see [`map_close`]).
    fn map_entries(&self, level: usize, open: Option<&'a str>, i: &'a str) -> PResult<'a, ()> {
        let in_braces = open.is_some();
        let (i, _) = many0_count(|i| self.map_item(level, in_braces, i)).parse(i)?;
        // No more entries: the map must end here.
        map_close(open, i)
    }

    /// One entry of a map, after the gap before it. Does not apply (and
    /// consumes nothing) where no entry starts.
    fn map_item(&self, level: usize, in_braces: bool, i: &'a str) -> PResult<'a, ()> {
        let (i, ()) = entry_gap(i)?;
        self.entry(level, in_braces, i)
    }

    /// Records a parsed entry in the innermost map and scope.
    fn define(&self, key: String, key_pos: Option<Pos>, item: Item, referenced: bool) {
        if let Some(scope) = self.scopes.borrow_mut().last_mut() {
            let (index, _) = scope.map.insert_entry(key.clone(), key_pos, item, referenced);
            scope.exact.insert(key, index);
        }
    }

    /// One `key [=|:] value` entry or `include` directive, with what ends
    /// it. Does not apply (and consumes nothing) where no key starts.
    fn entry(&self, level: usize, in_braces: bool, i: &'a str) -> PResult<'a, ()> {
        let (rest, head) = entry_head(i)?;
        let pos = self.pos(i);
        let rest = match head {
            Head::Include(path) => {
                no_digest(rest)?;
                self.include(level, pos, path).map_err(located)?;
                rest
            }
            Head::Key(key) => {
                let (rest, ()) = key_separator(rest)?;
                let (rest, item) = self.value(level, rest)?;
                self.define(key.to_string(), Some(pos), *item, false);
                rest
            }
        };
        entry_end(in_braces, rest)
    }

    /// Fails definitely if a container at `level` would be too deep.
    fn check_depth(&self, level: usize, at: &'a str) -> std::result::Result<(), nom::Err<Fail<'a>>> {
        if level > MAX_DEPTH {
            Err(fatal(at, ErrorKind::TooDeep { limit: MAX_DEPTH }))
        } else {
            Ok(())
        }
    }

    /// A value held by a container at nesting `level`.
    fn value(&self, level: usize, i: &'a str) -> PResult<'a, Box<Item>> {
        let (i, _) = blanks(i)?;
        let pos = self.pos(i);
        // Containers are only opened here and parsed below, outside the
        // `alt`, which keeps the stack used per nesting level small.
        let (body, opening) = alt((
            value(Opening::Array, char('[')),
            value(Opening::Map, char('{')),
            map(|i| self.scalar(level, &pos, i), Opening::Scalar),
        ))
        .parse(i)?;
        match opening {
            Opening::Array => self.array(level + 1, pos, i, body),
            Opening::Map => self.map(level + 1, pos, i, body),
            Opening::Scalar(item) => Ok((body, item)),
        }
    }

    /// A value that is not a map or an array, at `pos`.
    fn scalar(&self, level: usize, pos: &Pos, i: &'a str) -> PResult<'a, Box<Item>> {
        let string = |s: String| Box::new(Item::new(Value::String(s), pos.clone()));
        let result = alt((
            map(double_quoted, string),
            map(single_quoted, |s| string(s.to_string())),
            map(block_string, |s| string(s.to_string())),
            |i| self.unquoted(level, pos, i),
            expected("a value"),
        ))
        .parse(i);
        result
    }

    /// The elements and closing `]` of an array opened at `open` (at `pos`);
    /// `level` is the array's own nesting level.
    fn array(&self, level: usize, pos: Pos, open: &'a str, body: &'a str) -> PResult<'a, Box<Item>> {
        self.check_depth(level, open)?;
        let push = |mut items: Vec<Item>, item: Box<Item>| {
            items.push(*item);
            items
        };
        let (rest, items) = fold_many0(|e| self.element(level, e), Vec::new, push).parse(body)?;
        let (rest, ()) = array_close(open, rest)?;
        Ok((rest, Box::new(Item::new(Value::Array(items), pos))))
    }

    /// One array element at `level`, with what ends it. Does not apply (and
    /// consumes nothing) where no element starts.
    fn element(&self, level: usize, i: &'a str) -> PResult<'a, Box<Item>> {
        let (i, ()) = element_start(i)?;
        let (i, item) = self.value(level, i)?;
        let (i, ()) = element_end(i)?;
        Ok((i, item))
    }

    /// The entries and closing `}` of a map opened at `open` (at `pos`);
    /// `level` is the map's own nesting level.
    fn map(&self, level: usize, pos: Pos, open: &'a str, body: &'a str) -> PResult<'a, Box<Item>> {
        self.check_depth(level, open)?;
        let (rest, map) = self.map_body(level, Some(open), body)?;
        Ok((rest, Box::new(Item::new(Value::Map(*map), pos))))
    }

    /// An unquoted value at `pos`: a boolean, number, variable reference or
    /// bare string.
    fn unquoted(&self, level: usize, pos: &Pos, i: &'a str) -> PResult<'a, Box<Item>> {
        let (rest, (text, escaped)) = unquoted_text(i)?;
        let value = if escaped {
            // As in nats-server, escapes make it a plain string.
            Value::String(text)
        } else if let Some(b) = boolean(&text) {
            Value::Bool(b)
        } else if let Some(name) = text.strip_prefix('$') {
            let item = self.variable(name, level, pos.clone()).map_err(located)?;
            return Ok((rest, Box::new(item)));
        } else {
            match number(&text) {
                Number::Integer(n) => Value::Integer(n),
                Number::Float(f) => Value::Float(f),
                Number::IntegerOverflow => return Err(fatal(i, ErrorKind::IntegerOverflow(text))),
                Number::FloatOutOfRange => return Err(fatal(i, ErrorKind::FloatOutOfRange(text))),
                Number::LeadingDot => return Err(fatal(i, ErrorKind::FloatLeadingDot(text))),
                // Anything else (host:port, IP addresses, date-times, "10s",
                // ...) is a bare string.
                Number::Other => Value::String(text),
            }
        };
        Ok((rest, Box::new(Item::new(value, pos.clone()))))
    }

    // ------------------------------------------------------------ evaluation

    /// Resolves `$name` at `pos`, to be stored in a container at `level`.
    fn variable(&self, name: &str, level: usize, pos: Pos) -> Result<Item> {
        // bcrypt hashes ("$2a$...") are written unquoted and are not
        // variable references.
        if ["2a$", "2b$", "2y$"].iter().any(|p| name.starts_with(p)) {
            return Ok(Item::new(Value::String(format!("${name}")), pos));
        }
        let mut scopes = self.scopes.borrow_mut();
        let found = scopes.iter().enumerate().rev().find_map(|(si, s)| s.exact.get(name).map(|&ei| (si, ei)));
        let Some(item) = found.and_then(|(si, ei)| scopes.get_mut(si).and_then(|scope| scope.map.reference(ei))) else {
            drop(scopes);
            return self.env_variable(name, level, pos);
        };
        let (depth, nodes) = measure(&item.value);
        if level + depth > MAX_DEPTH {
            return Err(ConfError::new(pos, ErrorKind::TooDeep { limit: MAX_DEPTH }));
        }
        let mut session = self.session.borrow_mut();
        session.expanded = session.expanded.saturating_add(nodes);
        if session.expanded > MAX_EXPANDED {
            return Err(ConfError::new(pos, ErrorKind::ExpansionTooLarge { limit: MAX_EXPANDED }));
        }
        Ok(Item::new(item.value.clone(), pos))
    }

    /// Resolves `$name` from the process environment, parsing its value as
    /// a configuration value.
    fn env_variable(&self, name: &str, level: usize, pos: Pos) -> Result<Item> {
        let err = |kind| ConfError::new(pos.clone(), kind);
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(err(ErrorKind::UnknownVariable(name.to_string())));
        }
        let Some(raw) = std::env::var_os(name) else {
            return Err(err(ErrorKind::UnknownVariable(name.to_string())));
        };
        let Ok(text) = raw.into_string() else {
            return Err(err(ErrorKind::EnvNotUnicode(name.to_string())));
        };
        let mut session = self.session.borrow_mut();
        if session.env_stack.iter().any(|n| n == name) {
            return Err(err(ErrorKind::VariableCycle(name.to_string())));
        }
        if session.env_stack.len() >= MAX_ENV_DEPTH {
            return Err(err(ErrorKind::EnvTooDeep { limit: MAX_ENV_DEPTH }));
        }
        session.env_stack.push(name.to_string());
        let file: Arc<str> = format!("${name}").into();
        let result = Parser::new(&text, file, None, &mut session, level).parse_single_value();
        session.env_stack.pop();
        match result {
            Ok(item) => Ok(Item::new(item.value, pos)),
            Err(cause) => Err(err(ErrorKind::EnvVariable { name: name.to_string(), cause: Box::new(cause) })),
        }
    }

    /// Reads the file `path` (relative to this file's directory) for the
    /// `include` at `directive` and merges its entries into the current map.
    fn include(&self, level: usize, directive: Pos, path: &str) -> Result<()> {
        let err = |kind| ConfError::new(directive.clone(), kind);
        let Some(base) = &self.base_dir else {
            return Err(err(ErrorKind::IncludeNotAllowed(path.to_string())));
        };
        let mut session = self.session.borrow_mut();
        if session.include_stack.len() > MAX_INCLUDE_DEPTH {
            return Err(err(ErrorKind::IncludeTooDeep { limit: MAX_INCLUDE_DEPTH }));
        }
        let full = base.join(path);
        let io_err = |e: std::io::Error| err(ErrorKind::Io { path: full.clone(), source: Arc::new(e) });
        let canonical = fs::canonicalize(&full).map_err(io_err)?;
        if session.include_stack.contains(&canonical) {
            return Err(err(ErrorKind::IncludeCycle(full)));
        }
        let text = fs::read_to_string(&full).map_err(io_err)?;

        session.include_stack.push(canonical);
        let file: Arc<str> = full.display().to_string().into();
        let sub_base = full.parent().map(Path::to_path_buf);
        let result = Parser::new(&text, file, sub_base, &mut session, level).parse_document();
        session.include_stack.pop();
        drop(session);

        for (key, key_pos, item, referenced) in result?.into_entries() {
            self.define(key, key_pos, item, referenced);
        }
        Ok(())
    }
}

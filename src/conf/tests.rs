//! Tests for the configuration parser.

use std::fs;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn parse(text: &str) -> Map {
    match parse_str(text, "test.conf", None) {
        Ok(m) => m,
        Err(e) => panic!("unexpected error: {e}\n--- input ---\n{text}"),
    }
}

fn parse_err(text: &str) -> ConfError {
    match parse_str(text, "test.conf", None) {
        Ok(m) => panic!("expected an error, got {m:?}\n--- input ---\n{text}"),
        Err(e) => e,
    }
}

fn val<'a>(m: &'a Map, key: &str) -> &'a Value {
    match m.get(key) {
        Some(item) => &item.value,
        None => panic!("missing key {key} in {m:?}"),
    }
}

fn map<'a>(m: &'a Map, key: &str) -> &'a Map {
    val(m, key).as_map().expect("a map")
}

fn arr<'a>(m: &'a Map, key: &str) -> &'a [Item] {
    val(m, key).as_array().expect("an array")
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn at(e: &ConfError) -> (u32, u32) {
    (e.pos.line, e.pos.column)
}

// ---------------------------------------------------------------- syntax

#[test]
fn key_value_separators() {
    let m = parse("a = 1\nb: 2\nc 3\nd=4\ne:5\nf\t6\n\"g h\" = 7\n'i': 8\n");
    for (k, n) in [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5), ("f", 6)] {
        assert_eq!(val(&m, k), &Value::Integer(n), "key {k}");
    }
    assert_eq!(val(&m, "g h"), &Value::Integer(7));
    assert_eq!(val(&m, "i"), &Value::Integer(8));
    assert_eq!(m.len(), 8);
}

#[test]
fn entry_terminators() {
    let m = parse("a=1, b=2; c=3\nd=4;\n");
    assert_eq!(m.len(), 4);
    assert_eq!(val(&m, "c"), &Value::Integer(3));
    let m = parse("x { a: 1, b: 2; c: 3\n d: 4, }");
    assert_eq!(map(&m, "x").len(), 4);
    // Two entries on one line need a separator.
    let e = parse_err("a = 1 b = 2");
    assert!(matches!(e.kind, ErrorKind::Unexpected { .. }), "{e}");
    assert_eq!(at(&e), (1, 7));
}

#[test]
fn nested_maps_and_arrays() {
    let m = parse("outer {\n  inner = {\n    list: [1, [2, 3], {k: v}]\n  }\n  empty {}\n  none: []\n}\n");
    let inner = map(map(&m, "outer"), "inner");
    let list = arr(inner, "list");
    assert_eq!(list.len(), 3);
    assert_eq!(list[0].value, Value::Integer(1));
    let sub = list[1].value.as_array().unwrap();
    assert_eq!(sub[1].value, Value::Integer(3));
    assert_eq!(list[2].value.as_map().unwrap().get("k").unwrap().value, s("v"));
    assert!(map(map(&m, "outer"), "empty").is_empty());
    assert!(arr(map(&m, "outer"), "none").is_empty());
}

#[test]
fn arrays_with_newlines_and_trailing_commas() {
    let m = parse("a = [\n  1\n  2,\n  3,\n]\nb = [x, y z]\n".replace(" z", ", z").as_str());
    assert_eq!(arr(&m, "a").len(), 3);
    assert_eq!(arr(&m, "b")[2].value, s("z"));
    let e = parse_err("a = [1,,2]");
    assert_eq!(at(&e), (1, 8));
    let e = parse_err("a = [1 2]");
    assert_eq!(at(&e), (1, 8));
}

#[test]
fn map_brace_on_next_line_and_without_separator() {
    let m = parse("authorization\n{\n  user: a\n}\ntls{cert_file: x}\n");
    assert_eq!(val(map(&m, "authorization"), "user"), &s("a"));
    assert_eq!(val(map(&m, "tls"), "cert_file"), &s("x"));
    // But a scalar must be on the key's line.
    let e = parse_err("port\n4222\n");
    assert_eq!(at(&e), (1, 5));
    let e = parse_err("port =\n4222\n");
    assert_eq!(at(&e), (1, 7));
}

#[test]
fn json_style_document() {
    let m = parse(r#"{"port": 4222, "cluster": {"routes": ["nats://a:1", "nats://b:2"]}, "debug": true}"#);
    assert_eq!(val(&m, "port"), &Value::Integer(4222));
    assert_eq!(arr(map(&m, "cluster"), "routes").len(), 2);
    assert_eq!(val(&m, "debug"), &Value::Bool(true));
    let e = parse_err("{ a: 1 } b: 2");
    assert!(matches!(e.kind, ErrorKind::Unexpected { .. }));
    let e = parse_err("a: 1\n}\n");
    assert_eq!(at(&e), (2, 1));
}

#[test]
fn comments_everywhere() {
    let text = "# hash comment\n// slash comment\n   # indented\na = 1 # trailing hash\nb = 2 // trailing slash\nc = [ # after open\n  1, # after element\n  // own line\n  2 // after last\n] # after close\nd { # after brace\n  e = 3 // in map\n  # own line\n}\n// at end without newline";
    let m = parse(text);
    assert_eq!(val(&m, "a"), &Value::Integer(1));
    assert_eq!(val(&m, "b"), &Value::Integer(2));
    assert_eq!(arr(&m, "c").len(), 2);
    assert_eq!(val(map(&m, "d"), "e"), &Value::Integer(3));
    assert_eq!(m.len(), 4);
    // '#' and '//' inside a value are part of it, as in nats-server.
    let m = parse("url: nats://host:4222\npass: a#b\n");
    assert_eq!(val(&m, "url"), &s("nats://host:4222"));
    assert_eq!(val(&m, "pass"), &s("a#b"));
}

#[test]
fn double_quoted_strings() {
    let m = parse(r#"a = "tab\tnl\ncr\rq\"bs\\ hex\x41\x42 uni\u00e9\ud83d\ude00 raw é""#);
    assert_eq!(val(&m, "a"), &s("tab\tnl\ncr\rq\"bs\\ hexAB uni\u{e9}\u{1F600} raw é"));
    let m = parse("a = \"\"\nb = \"true\"\nc = \"42\"\nd = \"$x\"\ne = \"a # b // c\"");
    assert_eq!(val(&m, "a"), &s(""));
    assert_eq!(val(&m, "b"), &s("true"));
    assert_eq!(val(&m, "c"), &s("42"));
    assert_eq!(val(&m, "d"), &s("$x"));
    assert_eq!(val(&m, "e"), &s("a # b // c"));
    // \x escapes may spell out multi-byte UTF-8.
    assert_eq!(val(&parse(r#"a = "\xc3\xa9""#), "a"), &s("é"));
}

#[test]
fn string_errors_have_positions() {
    let e = parse_err("a = 1\nb = \"abc\\q\"");
    assert!(matches!(e.kind, ErrorKind::InvalidEscape('q')), "{e}");
    assert_eq!(at(&e), (2, 9));
    let e = parse_err("a = 1\nb = \"never closed\n");
    assert!(matches!(e.kind, ErrorKind::Unterminated(_)));
    assert_eq!(at(&e), (2, 5));
    let e = parse_err("b = 'never closed");
    assert!(matches!(e.kind, ErrorKind::Unterminated(_)));
    let e = parse_err(r#"b = "\xZZ""#);
    assert!(matches!(e.kind, ErrorKind::InvalidHexEscape(_)));
    let e = parse_err(r#"b = "\xff""#);
    assert!(matches!(e.kind, ErrorKind::InvalidUtf8));
    let e = parse_err(r#"b = "\ud800x""#);
    assert!(matches!(e.kind, ErrorKind::InvalidHexEscape(_)));
    let e = parse_err("b = \"abc\\");
    assert!(matches!(e.kind, ErrorKind::Unexpected { found: Found::Eof, .. }));
}

#[test]
fn single_quoted_strings_are_raw() {
    let m = parse(r"a = 'C:\temp\new'");
    assert_eq!(val(&m, "a"), &s(r"C:\temp\new"));
    let m = parse("a = 'yes'\nb = '10k'\nc = 'has \"double\" quotes'");
    assert_eq!(val(&m, "a"), &s("yes"));
    assert_eq!(val(&m, "b"), &s("10k"));
    assert_eq!(val(&m, "c"), &s("has \"double\" quotes"));
}

#[test]
fn unquoted_strings() {
    let m = parse(
        "host: localhost\nlisten: 0.0.0.0:4222\nurl = nats-route://ruser:pw@127.0.0.1:6222\n\
         when: 2016-05-04T18:53:41Z\nwait: 10s\nfrac: 1.5s\nip: 10.0.0.1\nsubj: foo.*.>\n\
         in_map {v: abc}\nlist: [a, b]\nesc: a\\tb\n",
    );
    assert_eq!(val(&m, "host"), &s("localhost"));
    assert_eq!(val(&m, "listen"), &s("0.0.0.0:4222"));
    assert_eq!(val(&m, "url"), &s("nats-route://ruser:pw@127.0.0.1:6222"));
    assert_eq!(val(&m, "when"), &s("2016-05-04T18:53:41Z"));
    assert_eq!(val(&m, "wait"), &s("10s"));
    assert_eq!(val(&m, "frac"), &s("1.5s"));
    assert_eq!(val(&m, "ip"), &s("10.0.0.1"));
    assert_eq!(val(&m, "subj"), &s("foo.*.>"));
    assert_eq!(val(map(&m, "in_map"), "v"), &s("abc"));
    assert_eq!(arr(&m, "list")[1].value, s("b"));
    // As in nats-server, escapes work in unquoted strings too.
    assert_eq!(val(&m, "esc"), &s("a\tb"));
}

#[test]
fn block_strings() {
    let m = parse("motd (\nline one\n  line (two)\n)\nnext = 1\n");
    assert_eq!(val(&m, "motd"), &s("\nline one\n  line (two)\n"));
    assert_eq!(val(&m, "next"), &Value::Integer(1));
    // Parentheses inside, even a ')' that is indented, do not close it.
    let m = parse("numbers (\n  12(34)56\n  (\n    7890\n  )\n)\n");
    assert_eq!(val(&m, "numbers"), &s("\n  12(34)56\n  (\n    7890\n  )\n"));
    // Closing at the end of input, and with CRLF line endings.
    assert_eq!(val(&parse("b (\nx\n)"), "b"), &s("\nx\n"));
    assert_eq!(val(&parse("b (\r\nx\r\n)\r\nc = 2\r\n"), "b"), &s("\r\nx\r\n"));
    // A ')' that is not alone on its line does not end the block.
    let e = parse_err("a = 1\nb (\nx )\n  )\n");
    assert!(matches!(e.kind, ErrorKind::Unterminated(_)), "{e}");
    assert_eq!(at(&e), (2, 3));
}

#[test]
fn booleans() {
    let m = parse("a: true\nb: TRUE\nc: Yes\nd: on\ne: false\nf: No\ng: OFF\nh: \"on\"\ni: truthy\n");
    for k in ["a", "b", "c", "d"] {
        assert_eq!(val(&m, k), &Value::Bool(true), "{k}");
    }
    for k in ["e", "f", "g"] {
        assert_eq!(val(&m, k), &Value::Bool(false), "{k}");
    }
    assert_eq!(val(&m, "h"), &s("on"));
    assert_eq!(val(&m, "i"), &s("truthy"));
}

#[test]
fn numbers() {
    let m = parse("a: 0\nb: -42\nc: 3.25\nd: -0.5\ne: 9223372036854775807\nf: -9223372036854775808\n");
    assert_eq!(val(&m, "a"), &Value::Integer(0));
    assert_eq!(val(&m, "b"), &Value::Integer(-42));
    assert_eq!(val(&m, "c"), &Value::Float(3.25));
    assert_eq!(val(&m, "d"), &Value::Float(-0.5));
    assert_eq!(val(&m, "e"), &Value::Integer(i64::MAX));
    assert_eq!(val(&m, "f"), &Value::Integer(i64::MIN));
    let e = parse_err("a: 1\nbig: 9223372036854775808");
    assert!(matches!(e.kind, ErrorKind::IntegerOverflow(_)));
    assert_eq!(at(&e), (2, 6));
    let e = parse_err("big: 10000000000G");
    assert!(matches!(e.kind, ErrorKind::IntegerOverflow(_)));
    let e = parse_err("f: .5");
    assert!(matches!(e.kind, ErrorKind::FloatLeadingDot(_)));
}

#[test]
fn size_suffixes() {
    let k = 1000i64;
    let ki = 1024i64;
    let cases = [
        ("1k", k),
        ("2K", 2 * k),
        ("1m", k.pow(2)),
        ("1M", k.pow(2)),
        ("1g", k.pow(3)),
        ("1G", k.pow(3)),
        ("1t", k.pow(4)),
        ("1p", k.pow(5)),
        ("1e", k.pow(6)),
        ("1kb", ki),
        ("1KB", ki),
        ("1ki", ki),
        ("1KiB", ki),
        ("1kib", ki),
        ("3mb", 3 * ki.pow(2)),
        ("1MiB", ki.pow(2)),
        ("1Mi", ki.pow(2)),
        ("1gb", ki.pow(3)),
        ("1GiB", ki.pow(3)),
        ("1TB", ki.pow(4)),
        ("1tib", ki.pow(4)),
        ("1PB", ki.pow(5)),
        ("1EiB", ki.pow(6)),
        ("-2k", -2 * k),
    ];
    for (text, expected) in cases {
        let m = parse(&format!("v: {text}"));
        assert_eq!(val(&m, "v"), &Value::Integer(expected), "{text}");
    }
    // Not a suffix: a plain string.
    assert_eq!(val(&parse("v: 1kx"), "v"), &s("1kx"));
    assert_eq!(val(&parse("v: 500ms"), "v"), &s("500ms"));
    let e = parse_err("v: 8EiB");
    assert!(matches!(e.kind, ErrorKind::IntegerOverflow(_)));
}

// ---------------------------------------------------------------- variables

#[test]
fn variables_in_nested_scopes() {
    let text = "\
NAME = outer
SERVER_PORT = 4222
port: $SERVER_PORT
a {
  NAME = inner
  b {
    who = $NAME
    list = [$SERVER_PORT, $NAME]
  }
  again = $NAME
}
top_name = $NAME
";
    let m = parse(text);
    assert_eq!(val(&m, "port"), &Value::Integer(4222));
    let a = map(&m, "a");
    let b = map(a, "b");
    assert_eq!(val(b, "who"), &s("inner"));
    assert_eq!(arr(b, "list")[0].value, Value::Integer(4222));
    assert_eq!(arr(b, "list")[1].value, s("inner"));
    assert_eq!(val(a, "again"), &s("inner"));
    assert_eq!(val(&m, "top_name"), &s("outer"));
    // The reference carries the position of the reference.
    let port = &m.get("port").unwrap().pos;
    assert_eq!((port.line, port.column), (3, 7));
    // Definitions that were used are marked so option mapping can skip them.
    assert!(m.is_referenced("SERVER_PORT"));
    assert!(m.is_referenced("name"));
    assert!(!m.is_referenced("port"));
}

#[test]
fn variables_hold_maps_and_are_case_sensitive() {
    let m = parse("PERMS = {publish: [\"a.>\"]}\nu { permissions: $PERMS }\n");
    let perms = map(map(&m, "u"), "permissions");
    assert_eq!(arr(perms, "publish")[0].value, s("a.>"));
    let e = parse_err("Foo = 1\nbar = $foo_conf_test_var_unset\n");
    assert!(matches!(e.kind, ErrorKind::UnknownVariable(ref n) if n == "foo_conf_test_var_unset"));
}

#[test]
fn unknown_variable_is_reported_with_position() {
    let e = parse_err("a = 1\nb {\n  c = [1,\n    $COURIER_CONF_TEST_NO_SUCH_VAR]\n}\n");
    match &e.kind {
        ErrorKind::UnknownVariable(name) => assert_eq!(name, "COURIER_CONF_TEST_NO_SUCH_VAR"),
        other => panic!("wrong error {other:?}"),
    }
    assert_eq!(at(&e), (4, 5));
    let text = e.to_string();
    assert!(text.starts_with("test.conf:4:5: "), "{text}");
    assert!(text.contains("$COURIER_CONF_TEST_NO_SUCH_VAR"), "{text}");
    // A variable defined later is not visible yet.
    let e = parse_err("a = $LATER_COURIER_TEST\nLATER_COURIER_TEST = 1\n");
    assert_eq!(at(&e), (1, 5));
}

#[test]
fn bcrypt_hashes_are_not_variables() {
    let hash = "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG";
    let m = parse(&format!("password: {hash}\n"));
    assert_eq!(val(&m, "password"), &s(hash));
}

#[test]
fn environment_variables() {
    std::env::set_var("COURIER_CONF_TEST_ENV_NUM", "8222");
    std::env::set_var("COURIER_CONF_TEST_ENV_STR", "hello");
    std::env::set_var("COURIER_CONF_TEST_ENV_SIZE", "2MB");
    std::env::set_var("COURIER_CONF_TEST_ENV_LIST", "[1, 2, $COURIER_CONF_TEST_ENV_NUM]");
    std::env::set_var("COURIER_CONF_TEST_ENV_BAD", "\"unterminated");
    let m = parse(
        "a: $COURIER_CONF_TEST_ENV_NUM\nb: $COURIER_CONF_TEST_ENV_STR\n\
         c: $COURIER_CONF_TEST_ENV_SIZE\nd: $COURIER_CONF_TEST_ENV_LIST\n",
    );
    assert_eq!(val(&m, "a"), &Value::Integer(8222));
    assert_eq!(val(&m, "b"), &s("hello"));
    assert_eq!(val(&m, "c"), &Value::Integer(2 * 1024 * 1024));
    assert_eq!(arr(&m, "d")[2].value, Value::Integer(8222));
    // A key in the file shadows the environment.
    let m = parse("COURIER_CONF_TEST_ENV_STR = local\nb: $COURIER_CONF_TEST_ENV_STR\n");
    assert_eq!(val(&m, "b"), &s("local"));
    let e = parse_err("x = 1\nbad: $COURIER_CONF_TEST_ENV_BAD\n");
    assert!(matches!(e.kind, ErrorKind::EnvVariable { ref name, .. } if name == "COURIER_CONF_TEST_ENV_BAD"));
    assert_eq!(at(&e), (2, 6));
}

#[test]
fn environment_variable_cycles_are_detected() {
    std::env::set_var("COURIER_CONF_TEST_SELF", "$COURIER_CONF_TEST_SELF");
    std::env::set_var("COURIER_CONF_TEST_PING", "[$COURIER_CONF_TEST_PONG]");
    std::env::set_var("COURIER_CONF_TEST_PONG", "{x: $COURIER_CONF_TEST_PING}");
    for var in ["COURIER_CONF_TEST_SELF", "COURIER_CONF_TEST_PING"] {
        let e = parse_err(&format!("a: ${var}\n"));
        assert_eq!(at(&e), (1, 4));
        let text = e.to_string();
        assert!(text.contains("refers to itself"), "{text}");
    }
}

#[test]
fn variable_expansion_is_bounded() {
    // Each level references the previous one ten times: 10^7 values.
    let mut text = String::from("L0 = [1,2,3,4,5,6,7,8,9,10]\n");
    for i in 1..8 {
        let refs = vec![format!("$L{}", i - 1); 10].join(", ");
        text.push_str(&format!("L{i} = [{refs}]\n"));
    }
    let e = parse_err(&text);
    assert!(matches!(e.kind, ErrorKind::ExpansionTooLarge { .. }), "{e}");
}

#[test]
fn variables_cannot_exceed_depth_limit() {
    let deep = format!("{}1{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    parse(&format!("v = {deep}\n"));
    let e = parse_err(&format!("v = {deep}\nw {{ x = $v }}\n"));
    assert!(matches!(e.kind, ErrorKind::TooDeep { .. }), "{e}");
    assert_eq!(at(&e), (2, 9));
}

// ---------------------------------------------------------------- limits

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let e = parse_err(&format!("a = {}", "[".repeat(10_000)));
    assert!(matches!(e.kind, ErrorKind::TooDeep { limit } if limit == MAX_DEPTH), "{e}");
    let e = parse_err(&format!("a = {}", "{b ".repeat(10_000)));
    assert!(matches!(e.kind, ErrorKind::TooDeep { .. }), "{e}");
    let e = parse_err(&"a {".repeat(10_000));
    assert!(matches!(e.kind, ErrorKind::TooDeep { .. }), "{e}");
}

// ---------------------------------------------------------------- includes

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, text).unwrap();
}

#[test]
fn includes_are_relative_to_the_including_file() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "main.conf",
        "port: 4222\ninclude 'conf/auth.conf'\nafter = $SECRET\nnested {\n  include \"conf/extra.conf\"\n  own: 1\n}\n",
    );
    write(dir.path(), "conf/auth.conf", "SECRET = s3cret\ninclude users.conf\n");
    write(dir.path(), "conf/users.conf", "users = [{user: a}]\nport: 5222\n");
    write(dir.path(), "conf/extra.conf", "{ x: 1, y: [2] }\n");
    let m = parse_file(&dir.path().join("main.conf")).unwrap();
    // Merged at the point of the include: the included port wins.
    assert_eq!(val(&m, "port"), &Value::Integer(5222));
    assert_eq!(val(&m, "SECRET"), &s("s3cret"));
    assert_eq!(val(&m, "after"), &s("s3cret"));
    assert_eq!(arr(&m, "users").len(), 1);
    let nested = map(&m, "nested");
    assert_eq!(val(nested, "x"), &Value::Integer(1));
    assert_eq!(val(nested, "own"), &Value::Integer(1));
    // Items remember which file they came from.
    let users_pos = &m.get("users").unwrap().pos;
    assert!(users_pos.file.ends_with("users.conf"), "{users_pos}");
    assert_eq!((users_pos.line, users_pos.column), (1, 9));
    // parse_str with a base directory resolves includes the same way.
    let m = parse_str("include conf/extra.conf\n", "inline", Some(dir.path())).unwrap();
    assert_eq!(val(&m, "x"), &Value::Integer(1));
}

#[test]
fn include_needs_a_base_dir() {
    let e = parse_err("a = 1\ninclude other.conf\n");
    assert!(matches!(e.kind, ErrorKind::IncludeNotAllowed(ref p) if p == "other.conf"));
    assert_eq!(at(&e), (2, 1));
    // A key named include with a separator is just a key.
    let m = parse("include = 5\n");
    assert_eq!(val(&m, "include"), &Value::Integer(5));
}

#[test]
fn include_cycles_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.conf", "x = 1\ninclude b.conf\n");
    write(dir.path(), "b.conf", "y = 2\n\ninclude \"./a.conf\"\n");
    write(dir.path(), "self.conf", "include self.conf\n");
    write(dir.path(), "missing.conf", "z = 1\ninclude nowhere.conf\n");
    let e = parse_file(&dir.path().join("a.conf")).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::IncludeCycle(_)), "{e}");
    assert!(e.pos.file.ends_with("b.conf"));
    assert_eq!(at(&e), (3, 1));
    let e = parse_file(&dir.path().join("self.conf")).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::IncludeCycle(_)), "{e}");
    let e = parse_file(&dir.path().join("missing.conf")).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Io { .. }), "{e}");
    assert_eq!(at(&e), (2, 1));
    let e = parse_file(&dir.path().join("does-not-exist.conf")).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Io { .. }), "{e}");
    assert_eq!(e.pos.line, 0);
}

#[test]
fn include_errors_point_into_the_included_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "main.conf", "include inc.conf\n");
    write(dir.path(), "inc.conf", "a = 1\nb = [1,,2]\n");
    let e = parse_file(&dir.path().join("main.conf")).unwrap_err();
    assert!(e.pos.file.ends_with("inc.conf"));
    assert_eq!(at(&e), (2, 8));
}

// ---------------------------------------------------------------- api

#[test]
fn map_lookup_is_case_insensitive_and_ordered() {
    let m = parse("Port: 1\nhost: h\nPORT: 2\nzeta: z\n");
    assert_eq!(m.len(), 3);
    assert_eq!(val(&m, "port"), &Value::Integer(2));
    let keys: Vec<&str> = m.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["PORT", "host", "zeta"]);
    assert_eq!(m.key_pos("port").map(|p| (p.line, p.column)), Some((3, 1)));
    assert!(m.get("missing").is_none());
    // A variable spelled like an option is the same entry; the later wins.
    let m = parse("PORT = 4222\nport: $PORT\n");
    assert_eq!(m.len(), 1);
    assert_eq!(val(&m, "port"), &Value::Integer(4222));
    let mut built = Map::new();
    assert!(built.is_empty());
    let pos = Pos::file_only("x".into());
    built.insert("A", Item::new(Value::Bool(true), pos.clone()));
    assert!(built.insert("a", Item::new(Value::Bool(false), pos)).is_some());
    assert_eq!(built.len(), 1);
}

#[test]
fn typed_accessors_report_type_errors() {
    let m = parse("tls { cert: x }\n");
    let e = m.get("tls").unwrap().expect_str().unwrap_err();
    assert_eq!(e.to_string(), "test.conf:1:5: expected a string, found map");
    assert_eq!(Value::Float(1.0).type_name(), "float");
    assert!(m.get("tls").unwrap().expect_map().is_ok());
}

#[test]
fn errors_display_file_line_column() {
    let e = parse_str("a = 1\n\n  b = [1 2]\n", "my.conf", None).unwrap_err();
    assert_eq!(e.to_string(), "my.conf:3:10: expected ',' or ']' after the array element, found '2'");
}

fn item(value: Value) -> Item {
    Item::new(value, Pos { file: "t".into(), line: 1, column: 1 })
}

#[test]
fn durations() {
    let ok = [
        (Value::Integer(10), Duration::from_secs(10)),
        (Value::Float(1.5), Duration::from_millis(1500)),
        (s("2m"), Duration::from_secs(120)),
        (s("500ms"), Duration::from_millis(500)),
        (s("1h30m"), Duration::from_secs(5400)),
        (s("10s"), Duration::from_secs(10)),
        (s("1.5s"), Duration::from_millis(1500)),
        (s(".5s"), Duration::from_millis(500)),
        (s("250us"), Duration::from_micros(250)),
        (s("7ns"), Duration::from_nanos(7)),
        (s("0"), Duration::ZERO),
        (s("-0s"), Duration::ZERO),
    ];
    for (v, d) in ok {
        assert_eq!(duration_of(&item(v.clone())).unwrap(), d, "{v:?}");
    }
    for v in [Value::Integer(-1), Value::Float(-0.5), s("-1s")] {
        let e = duration_of(&item(v)).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::NegativeDuration), "{e}");
    }
    for v in ["", "10", "1x", "s", "1..5s", "--1s", "1h30"] {
        let e = duration_of(&item(s(v))).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::InvalidDuration { .. }), "{v}: {e}");
    }
    let e = duration_of(&item(s("99999999999999999999999999999h"))).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::DurationOverflow), "{e}");
    let e = duration_of(&item(Value::Bool(true))).unwrap_err();
    assert_eq!(e.to_string(), "t:1:1: expected a duration, found boolean");
    // Unquoted "2m" in a file is 2 million (an integer with a suffix), as in
    // nats-server; quoted it is two minutes.
    let m = parse("a: 2m\nb: \"2m\"\n");
    assert_eq!(duration_of(m.get("a").unwrap()).unwrap(), Duration::from_secs(2_000_000));
    assert_eq!(duration_of(m.get("b").unwrap()).unwrap(), Duration::from_secs(120));
}

#[test]
fn sizes() {
    let ok = [
        (Value::Integer(1024), 1024u64),
        (s("1MB"), 1 << 20),
        (s("64mb"), 64 << 20),
        (s("1k"), 1000),
        (s("1 KiB"), 1024),
        (s("512"), 512),
        (s("2G"), 2_000_000_000),
    ];
    for (v, n) in ok {
        assert_eq!(size_of(&item(v.clone())).unwrap(), n, "{v:?}");
    }
    let m = parse("a: 1MB\n");
    assert_eq!(size_of(m.get("a").unwrap()).unwrap(), 1 << 20);
    assert!(matches!(size_of(&item(Value::Integer(-1))).unwrap_err().kind, ErrorKind::NegativeSize));
    assert!(matches!(size_of(&item(s("-1k"))).unwrap_err().kind, ErrorKind::NegativeSize));
    assert!(matches!(size_of(&item(s("1q"))).unwrap_err().kind, ErrorKind::InvalidSize(_)));
    assert!(matches!(size_of(&item(s(""))).unwrap_err().kind, ErrorKind::InvalidSize(_)));
    assert!(matches!(size_of(&item(s("20EB"))).unwrap_err().kind, ErrorKind::SizeOverflow(_)));
    assert!(matches!(size_of(&item(Value::Float(1.5))).unwrap_err().kind, ErrorKind::TypeMismatch { .. }));
}

// ---------------------------------------------------------------- realistic

const FULL_CONFIG: &str = r#"
# Courier / nats-server style configuration
server_name: "courier-1"
listen: 0.0.0.0:4222
http_port: 8222
max_payload: 1MB
max_connections = 64K
ping_interval: "2m"
write_deadline: "10s"
debug: false
trace = off
logtime: true

PUBLISH_ALL = ">"

authorization {
  timeout: 0.5
  users = [
    {
      user: alice
      password: "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG"
      permissions: {
        publish: {
          allow: ["orders.>", "events.*"]
          deny: ["orders.secret.>"]
        }
        subscribe: { allow: [$PUBLISH_ALL] }
      }
    },
    { user: bob, password: 'b0b pass', permissions: { publish: { deny: [">"] } } }
  ]
}

tls {
  cert_file: "./certs/server-cert.pem"
  key_file:  './certs/server-key.pem'
  ca_file = ./certs/ca.pem
  verify: true
  timeout: 2
  cipher_suites: [
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
  ]
}

cluster {
  name: c1
  port: 6222
  routes = [
    nats-route://ruser:T0pS3cr3t@otherdockerhost:6222
    nats-route://ruser:T0pS3cr3t@127.0.0.1:6223
  ]
}
"#;

#[test]
fn realistic_full_config() {
    let m = parse(FULL_CONFIG);
    assert_eq!(val(&m, "server_name"), &s("courier-1"));
    assert_eq!(val(&m, "listen"), &s("0.0.0.0:4222"));
    assert_eq!(val(&m, "http_port"), &Value::Integer(8222));
    assert_eq!(size_of(m.get("max_payload").unwrap()).unwrap(), 1 << 20);
    assert_eq!(val(&m, "max_connections"), &Value::Integer(64_000));
    assert_eq!(duration_of(m.get("ping_interval").unwrap()).unwrap(), Duration::from_secs(120));
    assert_eq!(val(&m, "trace"), &Value::Bool(false));

    let auth = map(&m, "authorization");
    assert_eq!(val(auth, "timeout"), &Value::Float(0.5));
    let users = arr(auth, "users");
    assert_eq!(users.len(), 2);
    let alice = users[0].value.as_map().unwrap();
    assert_eq!(val(alice, "user"), &s("alice"));
    assert!(val(alice, "password").as_str().unwrap().starts_with("$2a$11$"));
    let publish = map(map(alice, "permissions"), "publish");
    assert_eq!(arr(publish, "allow")[1].value, s("events.*"));
    assert_eq!(arr(publish, "deny")[0].value, s("orders.secret.>"));
    let subscribe = map(map(alice, "permissions"), "subscribe");
    assert_eq!(arr(subscribe, "allow")[0].value, s(">"));
    let bob = users[1].value.as_map().unwrap();
    assert_eq!(val(bob, "password"), &s("b0b pass"));

    let tls = map(&m, "tls");
    assert_eq!(val(tls, "ca_file"), &s("./certs/ca.pem"));
    assert_eq!(val(tls, "verify"), &Value::Bool(true));
    assert_eq!(arr(tls, "cipher_suites").len(), 2);
    let routes = arr(map(&m, "cluster"), "routes");
    assert_eq!(routes[1].value, s("nats-route://ruser:T0pS3cr3t@127.0.0.1:6223"));
    assert!(m.is_referenced("PUBLISH_ALL"));

    let pos = &users[0].pos;
    assert_eq!((pos.line, pos.column), (19, 5));
}

// ---------------------------------------------------------------- fuzzing

/// Replaces, inserts or deletes characters at pseudo-random places.
fn mutate(base: &str, edits: &[(usize, u8, char)]) -> String {
    let mut chars: Vec<char> = base.chars().collect();
    for &(at, op, c) in edits {
        if chars.is_empty() {
            chars.push(c);
            continue;
        }
        let i = at % chars.len();
        match op % 3 {
            0 => chars[i] = c,
            1 => chars.insert(i, c),
            _ => {
                chars.remove(i);
            }
        }
    }
    chars.into_iter().collect()
}

fn interesting_char() -> impl Strategy<Value = char> {
    prop_oneof![
        prop::sample::select(vec![
            '{', '}', '[', ']', '(', ')', '"', '\'', '\\', '$', '#', '/', '\n', '\r', ' ', ',', ';', ':', '=', '-',
            '.', '0', '9', 'k', 'b', 'x', 'u', 'e',
        ]),
        any::<char>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse_str(&text, "fuzz.conf", None);
    }

    #[test]
    fn random_syntax_soup_never_panics(chars in prop::collection::vec(interesting_char(), 0..200)) {
        let text: String = chars.into_iter().collect();
        let _ = parse_str(&text, "fuzz.conf", None);
    }

    #[test]
    fn mutated_config_never_panics(
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), interesting_char()), 1..12)
    ) {
        let text = mutate(FULL_CONFIG, &edits);
        if let Err(e) = parse_str(&text, "fuzz.conf", None) {
            // Errors always point inside the input.
            prop_assert!(e.pos.line >= 1);
            let _ = e.to_string();
        }
    }

    #[test]
    fn helpers_never_panic(text in "\\PC{0,40}", n in any::<i64>(), f in any::<f64>()) {
        let _ = duration_of(&item(Value::String(text.clone())));
        let _ = size_of(&item(Value::String(text)));
        let _ = duration_of(&item(Value::Integer(n)));
        let _ = duration_of(&item(Value::Float(f)));
        let _ = size_of(&item(Value::Integer(n)));
    }
}

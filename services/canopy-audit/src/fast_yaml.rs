//! A fast reader for the plain block-style YAML that Kubernetes manifests are written in
//! (`kubectl get -o yaml`, Helm and Kustomize output, hand-written manifests).
//!
//! [`parse`] builds the same [`Value`] that `serde_yaml::from_str::<Value>` builds, several times
//! faster, or returns `None` for anything outside the subset it reads exactly: anchors, aliases,
//! tags, flow mappings other than `{}`, nested flow collections, folded and indicator-carrying
//! block scalars, escapes other than `\\ \" \/ \n \t`, multi-line flow scalars, numbers other
//! than plain decimal integers, nulls and booleans other than `null`, `true` and `false`, tabs,
//! CR line ends, and anything malformed. The caller then
//! parses the document with `serde_yaml`, which also produces the error messages. Being wrong
//! here would change audit results, so every construct it is unsure of falls back; the tests
//! compare both readers on the repository's manifests, generated objects and edge cases.

use std::borrow::Cow;

use serde_json::{Map, Number, Value};

/// Parses one YAML document (the text between document markers; a leading `---` line is
/// allowed), or returns `None` when the document needs the full YAML parser.
pub fn parse(text: &str) -> Option<Value> {
    if !printable(text.as_bytes()) {
        return None;
    }
    let bytes = text.as_bytes();
    let mut lines: Vec<Line<'_>> = Vec::with_capacity(bytes.len() / 16);
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', bytes).chain([bytes.len()]) {
        let raw = &text[start..end];
        let b = raw.as_bytes();
        let indent = b.iter().take_while(|&&c| c == b' ').count();
        let trailing = b[indent..].iter().rev().take_while(|&&c| c == b' ').count();
        lines.push(Line {
            indent,
            text: &raw[indent..raw.len() - trailing],
            raw,
        });
        start = end + 1;
    }
    // A leading document start marker (possibly followed by a comment) belongs to no node.
    if let Some(first) = lines.iter_mut().find(|l| !l.is_blank())
        && first.indent == 0
        && first.text.starts_with("---")
    {
        let after = &first.text[3..];
        if !(after.is_empty() || after.trim_start().starts_with('#') && after.starts_with(' ')) {
            return None;
        }
        first.text = "";
    }
    let mut p = Parser { lines, pos: 0 };
    p.skip_blank();
    let root = match p.lines.get(p.pos) {
        Some(l) => {
            let indent = l.indent;
            p.node_at(indent)?
        }
        None => return None,
    };
    p.skip_blank();
    (p.pos == p.lines.len()).then_some(root)
}

/// No tab, CR, control character, byte order mark, non-character or Unicode line break (which
/// the full parser treats specially or refuses).
fn printable(b: &[u8]) -> bool {
    // Fast path (vectorised): only printable ASCII and line feeds.
    let unusual = b.iter().fold(false, |acc, &c| {
        acc | ((c < 0x20 && c != b'\n') || c >= 0x7f)
    });
    if !unusual {
        return true;
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let bad = match c {
            b'\n' => false,
            0..=0x1f | 0x7f => true,
            0xc2 => b.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)),
            0xe2 => b.get(i + 1) == Some(&0x80) && matches!(b.get(i + 2), Some(0xa8 | 0xa9)),
            0xef => matches!(
                (b.get(i + 1), b.get(i + 2)),
                (Some(0xbb), Some(0xbf)) | (Some(0xbf), Some(0xbe | 0xbf))
            ),
            _ => false,
        };
        if bad {
            return false;
        }
        i += 1;
    }
    true
}

#[derive(Clone, Copy)]
struct Line<'a> {
    /// Leading spaces.
    indent: usize,
    /// The line after its indentation, without trailing spaces.
    text: &'a str,
    /// The whole line (for block scalars).
    raw: &'a str,
}

impl Line<'_> {
    /// Blank or a comment: no node starts here (outside block scalars).
    fn is_blank(&self) -> bool {
        self.text.is_empty() || self.text.starts_with('#')
    }
}

struct Parser<'a> {
    lines: Vec<Line<'a>>,
    pos: usize,
}

fn is_seq_entry(t: &str) -> bool {
    t == "-" || t.starts_with("- ")
}

impl<'a> Parser<'a> {
    fn skip_blank(&mut self) {
        while self.lines.get(self.pos).is_some_and(Line::is_blank) {
            self.pos += 1;
        }
    }

    /// The block node whose first line is the current one, at `indent`.
    fn node_at(&mut self, indent: usize) -> Option<Value> {
        if is_seq_entry(self.lines[self.pos].text) {
            self.sequence(indent)
        } else {
            self.mapping(indent)
        }
    }

    /// The value of a key or entry whose line ended after the indicator: a block node indented
    /// deeper than `parent`, a sequence at the key's own indentation (`same_indent_seq`), or null.
    fn nested(&mut self, parent: usize, same_indent_seq: bool) -> Option<Value> {
        self.skip_blank();
        match self.lines.get(self.pos) {
            Some(l) if l.indent > parent => {
                let indent = l.indent;
                self.node_at(indent)
            }
            Some(l) if same_indent_seq && l.indent == parent && is_seq_entry(l.text) => {
                self.sequence(parent)
            }
            _ => Some(Value::Null),
        }
    }

    /// After a value that ended on its line: the next node line must not be indented deeper than
    /// `indent` (that would continue a multi-line plain scalar, or be malformed).
    fn no_continuation(&mut self, indent: usize) -> Option<()> {
        self.skip_blank();
        match self.lines.get(self.pos) {
            Some(l) if l.indent > indent => None,
            _ => Some(()),
        }
    }

    fn sequence(&mut self, indent: usize) -> Option<Value> {
        let mut items = Vec::new();
        loop {
            self.skip_blank();
            let Some(line) = self.lines.get(self.pos).copied() else {
                break;
            };
            if line.indent < indent || (line.indent == indent && !is_seq_entry(line.text)) {
                break;
            }
            if line.indent > indent {
                return None;
            }
            let rest = line.text[1..].trim_start_matches(' ');
            if rest.is_empty() || rest.starts_with('#') {
                self.pos += 1;
                items.push(self.nested(indent, false)?);
                continue;
            }
            if is_seq_entry(rest) {
                return None;
            }
            let col = indent + (line.text.len() - rest.len());
            match split_key(rest)? {
                Some(_) => {
                    // `- key: value`: a mapping whose first key sits at `col`.
                    self.lines[self.pos] = Line {
                        indent: col,
                        text: rest,
                        raw: line.raw,
                    };
                    items.push(self.mapping(col)?);
                }
                None => {
                    self.pos += 1;
                    items.push(self.inline_value(rest, indent)?);
                }
            }
        }
        Some(Value::Array(items))
    }

    fn mapping(&mut self, indent: usize) -> Option<Value> {
        let mut map = Map::new();
        loop {
            self.skip_blank();
            let Some(line) = self.lines.get(self.pos).copied() else {
                break;
            };
            if line.indent < indent || (line.indent == indent && is_seq_entry(line.text)) {
                break;
            }
            if line.indent > indent {
                return None;
            }
            let (key, rest) = split_key(line.text)??;
            self.pos += 1;
            let value = if rest.is_empty() || rest.starts_with('#') {
                self.nested(indent, true)?
            } else {
                self.inline_value(rest, indent)?
            };
            if key == "<<" {
                return None;
            }
            match map.entry(key.into_owned()) {
                serde_json::map::Entry::Vacant(e) => {
                    e.insert(value);
                }
                // A duplicate key: the full parser reports it.
                serde_json::map::Entry::Occupied(_) => return None,
            }
        }
        Some(Value::Object(map))
    }

    /// A value that starts on the line of its key or entry (already consumed): a scalar, an
    /// empty flow collection, or a literal block scalar on the following lines.
    fn inline_value(&mut self, rest: &str, indent: usize) -> Option<Value> {
        if let Some(header) = rest.strip_prefix('|') {
            return self.literal(header, indent).map(Value::String);
        }
        let v = scalar(rest)?;
        self.no_continuation(indent)?;
        Some(v)
    }

    /// A literal block scalar (`|` or `|-`) whose key or entry is at `parent`.
    fn literal(&mut self, header: &str, parent: usize) -> Option<String> {
        let strip = match header.as_bytes().first() {
            Some(b'-') => true,
            Some(b' ') | None => false,
            _ => return None,
        };
        let after = header[usize::from(strip)..].trim_start_matches(' ');
        if !(after.is_empty() || after.starts_with('#') && header.len() > after.len()) {
            return None;
        }
        // The content indentation is that of the first non-empty line.
        let start = self.pos;
        let first = self.lines[start..].iter().find(|l| !l.text.is_empty());
        let content_indent = match first {
            Some(l) if l.indent > parent => l.indent,
            // No content: every following blank line belongs to nothing.
            _ => {
                return Some(String::new());
            }
        };
        let mut out = String::new();
        let mut pending_newlines = 0usize;
        let mut any = false;
        while let Some(l) = self.lines.get(self.pos) {
            if l.text.is_empty() {
                // Spaces beyond the content indentation on an empty line are content.
                if l.raw.len() > content_indent {
                    return None;
                }
                if any {
                    pending_newlines += 1;
                }
                self.pos += 1;
                continue;
            }
            if l.indent < content_indent {
                break;
            }
            if any {
                out.push('\n');
            }
            for _ in 0..pending_newlines {
                out.push('\n');
            }
            pending_newlines = 0;
            out.push_str(&l.raw[content_indent..]);
            any = true;
            self.pos += 1;
        }
        if any && !strip {
            out.push('\n');
        }
        Some(out)
    }
}

/// Splits `key: rest` (`rest` may be empty or a comment). `Some(None)`: the text is not a key
/// (a scalar); `None`: a construct this reader leaves to the full parser.
fn split_key(t: &str) -> Option<Option<(Cow<'_, str>, &str)>> {
    let first = t.as_bytes()[0];
    if first == b'"' || first == b'\'' {
        let (key, after) = quoted(t)?;
        let key = Cow::Owned(key);
        return match after.strip_prefix(':') {
            Some("") => Some(Some((key, ""))),
            Some(rest) if rest.starts_with(' ') => Some(Some((key, rest.trim_start_matches(' ')))),
            Some(_) => None,
            None => Some(None),
        };
    }
    if first == b'[' || first == b'{' {
        // A flow collection is a scalar-like value here, never a key.
        return Some(None);
    }
    if !starts_plain(t) {
        return None;
    }
    let Some(i) = key_separator(t) else {
        return Some(None);
    };
    let key = t[..i].trim_end_matches(' ');
    if key.is_empty() || !plain_is_string(key) {
        return None;
    }
    Some(Some((
        Cow::Borrowed(key),
        t[i + 1..].trim_start_matches(' '),
    )))
}

/// The `:` that ends a plain key (followed by a space or the end of the line), unless a comment
/// (` #`) starts first.
fn key_separator(t: &str) -> Option<usize> {
    let b = t.as_bytes();
    // Lines are short: a plain loop beats a vectorised search here.
    for (i, &c) in b.iter().enumerate() {
        if c == b'#' {
            if i > 0 && b[i - 1] == b' ' {
                return None;
            }
        } else if c == b':' && (i + 1 == b.len() || b[i + 1] == b' ') {
            return Some(i);
        }
    }
    None
}

/// Characters that cannot start a plain scalar here (or start constructs left to the full
/// parser).
fn is_indicator(c: u8) -> bool {
    matches!(
        c,
        b'-' | b'?'
            | b':'
            | b','
            | b'['
            | b']'
            | b'{'
            | b'}'
            | b'#'
            | b'&'
            | b'*'
            | b'!'
            | b'|'
            | b'>'
            | b'%'
            | b'@'
            | b'`'
            | b'"'
            | b'\''
    )
}

/// Whether a plain scalar may start here: not on an indicator, except `-` followed by a
/// non-space (`-2`, `-v`).
fn starts_plain(t: &str) -> bool {
    match t.as_bytes() {
        [b'-', next, ..] => *next != b' ',
        [first, ..] => !is_indicator(*first),
        [] => false,
    }
}

/// A quoted scalar that ends on its line: the string and the text after its closing quote.
fn quoted(t: &str) -> Option<(String, &str)> {
    let quote = t.as_bytes()[0];
    let body = &t[1..];
    if quote == b'"' {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let end = rest.find(['"', '\\'])?;
            out.push_str(&rest[..end]);
            if rest.as_bytes()[end] == b'"' {
                return Some((out, &rest[end + 1..]));
            }
            // The common escapes; any other is left to the full parser.
            let c = match rest.as_bytes().get(end + 1)? {
                b'\\' => '\\',
                b'"' => '"',
                b'/' => '/',
                b'n' => '\n',
                b't' => '\t',
                _ => return None,
            };
            out.push(c);
            rest = &rest[end + 2..];
        }
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let end = rest.find('\'')?;
        out.push_str(&rest[..end]);
        rest = &rest[end + 1..];
        match rest.strip_prefix('\'') {
            Some(r) => {
                out.push('\'');
                rest = r;
            }
            None => return Some((out, rest)),
        }
    }
}

/// A flow sequence of scalars that closes on its line (`[]`, `[a, "b", 3]`), after its `[`: the
/// items and the text after the closing `]`. Nested collections, empty entries, a trailing
/// comma and single-pair mappings are left to the full parser.
fn flow_sequence(t: &str) -> Option<(Vec<Value>, &str)> {
    let mut items = Vec::new();
    let mut rest = t.trim_start_matches(' ');
    if let Some(after) = rest.strip_prefix(']') {
        return Some((items, after));
    }
    loop {
        let (item, after) = match rest.as_bytes().first()? {
            b'"' | b'\'' => {
                let (s, after) = quoted(rest)?;
                (Value::String(s), after)
            }
            _ => {
                let end = rest.find([',', ']', '[', '{', '}', '#', ':', '"', '\''])?;
                let s = rest[..end].trim_end_matches(' ');
                if s.is_empty() || !starts_plain(s) {
                    return None;
                }
                (resolve_plain(s)?, &rest[end..])
            }
        };
        items.push(item);
        rest = after.trim_start_matches(' ');
        match rest.as_bytes().first()? {
            b',' => rest = rest[1..].trim_start_matches(' '),
            b']' => return Some((items, &rest[1..])),
            _ => return None,
        }
        if rest.starts_with(']') {
            return None;
        }
    }
}

/// The only text allowed after a value on its line: nothing, or a comment after a space.
fn tail_is_empty(after: &str) -> bool {
    after.is_empty() || (after.starts_with(' ') && after.trim_start_matches(' ').starts_with('#'))
}

/// A scalar value that ends on its line (with an optional trailing comment).
fn scalar(t: &str) -> Option<Value> {
    let first = t.as_bytes()[0];
    if first == b'"' || first == b'\'' {
        let (s, after) = quoted(t)?;
        return tail_is_empty(after).then_some(Value::String(s));
    }
    if let Some(after) = t.strip_prefix("{}") {
        return tail_is_empty(after).then_some(Value::Object(Map::new()));
    }
    if first == b'[' {
        let (items, after) = flow_sequence(&t[1..])?;
        return tail_is_empty(after).then_some(Value::Array(items));
    }
    if !starts_plain(t) {
        return None;
    }
    // A plain scalar ends at a comment; `: ` inside it would make it a key.
    let b = t.as_bytes();
    let mut end = b.len();
    for (i, &c) in b.iter().enumerate() {
        if c == b'#' {
            if b[i - 1] == b' ' {
                end = i;
                break;
            }
        } else if c == b':' && (i + 1 == b.len() || b[i + 1] == b' ') {
            return None;
        }
    }
    resolve_plain(t[..end].trim_end_matches(' '))
}

/// How `serde_yaml` resolves an untagged plain scalar, for the cases read here.
fn resolve_plain(s: &str) -> Option<Value> {
    match s {
        "null" => return Some(Value::Null),
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        _ => {}
    }
    if plain_is_string(s) {
        return Some(Value::String(s.to_owned()));
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    let canonical = !digits.is_empty()
        && digits.len() <= 18
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && s != "-0";
    if !canonical {
        return None;
    }
    let n: i64 = s.parse().ok()?;
    Some(Value::Number(Number::from(n)))
}

/// Whether a plain scalar is certainly a string: not a null or boolean in any spelling, and
/// nothing any number syntax (integers with a radix prefix, Rust's float grammar, `.inf`,
/// `.nan`) could read.
fn plain_is_string(s: &str) -> bool {
    let Some(&first) = s.as_bytes().first() else {
        return false;
    };
    if first.is_ascii_alphabetic() {
        // Only the null and boolean spellings and Rust's `inf`, `infinity` and `nan` read as
        // anything but a string (all 1 to 5 or 8 letters long).
        const WORDS: [&str; 12] = [
            "null", "true", "false", "yes", "no", "on", "off", "y", "n", "inf", "infinity", "nan",
        ];
        return !matches!(s.len(), 1..=5 | 8) || !WORDS.iter().any(|w| s.eq_ignore_ascii_case(w));
    }
    if s == "~" {
        return false;
    }
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let radix = matches!(
        unsigned.as_bytes(),
        [b'0', b'x' | b'X' | b'o' | b'O' | b'b' | b'B', ..]
    );
    // Rust's float grammar uses only these bytes (digits, `.`, signs, exponents, and the
    // letters of `inf`, `infinity` and `nan` in any case): anything else cannot parse.
    let may_be_float = unsigned.bytes().all(|c| {
        c.is_ascii_digit()
            || matches!(
                c.to_ascii_lowercase(),
                b'.' | b'+' | b'-' | b'e' | b'i' | b'n' | b'f' | b't' | b'y' | b'a'
            )
    });
    let number_like = radix
        || (may_be_float && unsigned.parse::<f64>().is_ok())
        || unsigned.eq_ignore_ascii_case(".inf")
        || unsigned.eq_ignore_ascii_case(".nan");
    !number_like
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn agree(text: &str) -> Option<Value> {
        let fast = parse(text);
        if let Some(v) = &fast {
            let full: Value = serde_yaml::from_str(text).unwrap_or_else(|e| {
                panic!("fast reader accepted what serde_yaml refuses ({e}):\n{text}")
            });
            assert_eq!(v, &full, "readers disagree on:\n{text}");
        }
        fast
    }

    #[test]
    fn reads_manifest_constructs_exactly() {
        let docs = [
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  labels:\n    app: x # c\n",
            "kind: A\nspec:\n  containers:\n  - name: a\n    image: nginx:1.25\n    ports:\n    - containerPort: 80\n      protocol: TCP\n  - name: b\n",
            "a:\n  - 1\n  - -2\n  - 0\n  - ''\n  - 'it''s'\n  - \"q: x\"\n  - []\n  - {}\n",
            "cpu: 100m\nmem: 128Mi\nrev: '3'\nflag: false\nnothing: null\nempty:\nlast: x\n",
            "data:\n  f: |\n    line 1\n\n    line 3\n  g: |-\n    one\n      two\n  h: x\n",
            "key with spaces: value with  spaces\nurl: http://x:80/y\nk8s.io/name: v\n",
            "seq:\n-\n  a: 1\n- b\n",
            "  indented: root\n  b: 2\n",
            "a: [x, \"y\", 'z', 3, true, null]\nb: [ ]\nc: [\"\"]\n",
            "a: \"l1\\nl2\\t\\\"q\\\" \\\\ \\/\"\n",
            "a: b#c\nd: 'e' # f\n",
        ];
        for d in docs {
            assert!(agree(d).is_some(), "fast reader declined:\n{d}");
        }
    }

    #[test]
    fn leaves_everything_else_to_the_full_parser() {
        let docs = [
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "a: [1, [2]]\n",
            "a: [1, 2,]\n",
            "a: [a: 1]\n",
            "a: [1.5]\n",
            "a: \"\\u00e9\"\n",
            "a: {b: 1}\n",
            "a: >\n  folded\n",
            "a: |2\n    x\n",
            "a: |+\n  x\n\n",
            "a: \"esc\\x41\"\n",
            "a: 1.5\n",
            "a: 0x1f\n",
            "a: 010\n",
            "a: yes\n",
            "a: True\n",
            "a: ~\n",
            "a: .inf\n",
            "a: 1e3\n",
            "a: plain\n  continued\n",
            "a: 'multi\n  line'\n",
            "a: 1\na: 2\n",
            "a:\tb\n",
            "a: b\r\n",
            "? a\n: b\n",
            "a: b: c\n",
            "- a\nb: c\n",
            "a: 1\n b: 2\n",
            "<<: {}\n",
            "--- a\n",
            "1: a\n",
            "a: 99999999999999999999\n",
            "a: -0\n",
            "a: -\n",
            "a: b\u{2028}c\n",
            "a: b\u{85}c\n",
            "\u{feff}a: b\n",
            "- |\n  x\n",
        ];
        for d in docs {
            assert!(agree(d).is_none(), "fast reader took:\n{d}");
        }
    }

    /// The previous, slower spelling of [`plain_is_string`]: the reference it must agree with.
    fn plain_is_string_reference(s: &str) -> bool {
        const SPECIAL: [&str; 10] = [
            "null", "true", "false", "~", "yes", "no", "on", "off", "y", "n",
        ];
        let Some(&first) = s.as_bytes().first() else {
            return false;
        };
        if s.len() <= 8 && SPECIAL.iter().any(|w| s.eq_ignore_ascii_case(w)) {
            return false;
        }
        if first.is_ascii_alphabetic() {
            return !["inf", "infinity", "nan"]
                .iter()
                .any(|w| s.eq_ignore_ascii_case(w));
        }
        let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
        let lower = unsigned.get(..2).map(str::to_ascii_lowercase);
        let number_like = matches!(lower.as_deref(), Some("0x" | "0o" | "0b"))
            || unsigned.parse::<f64>().is_ok()
            || unsigned.eq_ignore_ascii_case(".inf")
            || unsigned.eq_ignore_ascii_case(".nan");
        !number_like
    }

    #[test]
    fn plain_is_string_agrees_with_its_reference() {
        let words = [
            "",
            "~",
            "null",
            "Null",
            "NULL",
            "nUll",
            "true",
            "TRUE",
            "False",
            "yes",
            "Yes",
            "NO",
            "on",
            "Off",
            "y",
            "N",
            "inf",
            "Inf",
            "-inf",
            "+inf",
            "+-inf",
            "-+1",
            "infinity",
            "-Infinity",
            "INFINITY",
            "infinit",
            "nan",
            "NaN",
            "-nan",
            "+NaN",
            ".inf",
            "-.inf",
            ".NaN",
            "+.nan",
            ".",
            "-",
            "+",
            "0",
            "-0",
            "00",
            "1",
            "-1",
            "+1",
            "1.5",
            "-1.5",
            "1.",
            ".5",
            "1e3",
            "1E3",
            "1e+3",
            "1e-3",
            "-1e3",
            "1e",
            "e3",
            "E",
            "0x1f",
            "0X1F",
            "-0x1",
            "0o17",
            "0O7",
            "0b101",
            "0B1",
            "0xg",
            "0",
            "8080",
            "100m",
            "128Mi",
            "/etc",
            "/tmp",
            "1.2.3",
            "1-2",
            "12:30",
            "-v",
            "--flag",
            "+x",
            "é",
            "-é",
            "0é",
            "1_000",
            "∞",
            "a",
            "abc",
            "fa",
            "ya",
            "nana",
            "tEa",
            "1fa",
            "1ny",
            "1inf",
            "nan1",
            "i",
            "f",
        ];
        for w in words {
            assert_eq!(plain_is_string(w), plain_is_string_reference(w), "{w:?}");
        }
        // Every short string over the bytes that matter.
        let alphabet = b"0123456789.+-eEiInNfFtTyYaAxXoObBlLsSuU~_/m";
        let mut buf = Vec::new();
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    buf.clear();
                    buf.extend([*a, *b, *c]);
                    for len in 1..=3 {
                        let s = std::str::from_utf8(&buf[..len]).unwrap();
                        assert_eq!(plain_is_string(s), plain_is_string_reference(s), "{s:?}");
                    }
                }
            }
        }
    }
}

//! Reading Kubernetes manifests (the I/O half of `canopyctl audit`): YAML and JSON files,
//! multi-document YAML, `List` expansion, directories, stdin — streamed document by document.
//!
//! [`load_paths`] returns an iterator that reads one file (or stdin) at a time, in blocks of whole
//! lines checked as UTF-8 once, and parses each document straight from that buffer (a JSON value
//! in place; a YAML document once split at its `---`). The buffer holds the document being read
//! and about one block beyond it: peak memory is bounded by the largest document, not by the
//! number or the total size of the inputs. A malformed document yields a
//! [`ManifestError`] naming the file and line, and the iterator goes on with the next document
//! (the next `---` in YAML, the next top-level value in JSON) and the next file.
//!
//! Only Kubernetes objects are yielded: documents that are not mappings with a string `kind`
//! (Helm values, `package.json`, CI workflows found while walking a directory) are skipped.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use memchr::memmem::Finder;
use serde_json::Value;

/// A manifest that could not be read or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: {message}")]
    Io { file: String, message: String },
    #[error("{file}:{line}:{column}: invalid YAML: {message}")]
    Yaml {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}:{line}:{column}: invalid JSON: {message}")]
    Json {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
}

impl ManifestError {
    /// The file (or `-` for stdin).
    pub fn file(&self) -> &str {
        match self {
            ManifestError::Io { file, .. }
            | ManifestError::Yaml { file, .. }
            | ManifestError::Json { file, .. } => file,
        }
    }

    /// The 1-based line of the error, when it has one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ManifestError::Io { .. } => None,
            ManifestError::Yaml { line, .. } | ManifestError::Json { line, .. } => Some(*line),
        }
    }

    /// The message without the file and line.
    pub fn message(&self) -> String {
        match self {
            ManifestError::Io { message, .. } => message.clone(),
            ManifestError::Yaml {
                column, message, ..
            } => format!("invalid YAML (column {column}): {message}"),
            ManifestError::Json {
                column, message, ..
            } => format!("invalid JSON (column {column}): {message}"),
        }
    }
}

/// One document of the input.
#[derive(Debug)]
pub struct Document {
    /// The file it came from (`-` for stdin).
    pub source: Arc<str>,
    /// The 1-based line where the document starts (0 when the whole file is unreadable).
    pub line: usize,
    pub value: Result<Value, ManifestError>,
}

/// Streams the Kubernetes objects of `paths`: files (YAML, or JSON when named `*.json`),
/// directories (recursively, `*.yaml`, `*.yml`, `*.json`, in name order, skipping hidden
/// entries and not following symlinked directories) and `-` for stdin.
pub fn load_paths(paths: &[PathBuf]) -> Documents {
    Documents {
        stack: paths
            .iter()
            .rev()
            .map(|p| Input::Explicit(p.clone()))
            .collect(),
        current: None,
    }
}

enum Input {
    /// Named by the user: read whatever its extension.
    Explicit(PathBuf),
    /// Found while walking a directory.
    Found(PathBuf),
}

/// The iterator of [`load_paths`].
pub struct Documents {
    stack: Vec<Input>,
    current: Option<OpenFile>,
}

impl Documents {
    /// Documents of an in-memory text (YAML, or JSON when `json`), named `source`.
    pub fn from_text(source: &str, text: String, json: bool) -> Documents {
        Documents {
            stack: Vec::new(),
            current: Some(OpenFile::new(
                Arc::from(source),
                Box::new(std::io::Cursor::new(text.into_bytes())),
                Some(json),
            )),
        }
    }
}

impl Iterator for Documents {
    type Item = Document;

    fn next(&mut self) -> Option<Document> {
        loop {
            if let Some(file) = &mut self.current {
                if let Some(doc) = file.next_document() {
                    return Some(doc);
                }
                self.current = None;
            }
            match self.stack.pop()? {
                Input::Explicit(p) if p.as_os_str() == "-" => {
                    // JSON or YAML, decided by the first byte of the stream.
                    let stdin = Box::new(std::io::stdin().lock());
                    self.current = Some(OpenFile::new(Arc::from("-"), stdin, None));
                }
                Input::Explicit(p) | Input::Found(p) => {
                    let opened = if p.is_dir() {
                        self.push_dir(&p)
                    } else {
                        self.open(&p)
                    };
                    if let Err(doc) = opened {
                        return Some(doc);
                    }
                }
            }
        }
    }
}

fn io_error(file: &str, e: &std::io::Error) -> Document {
    Document {
        source: Arc::from(file),
        line: 0,
        value: Err(ManifestError::Io {
            file: file.to_owned(),
            message: format!("cannot read: {e}"),
        }),
    }
}

fn manifest_extension(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

impl Documents {
    /// Pushes a directory's manifest files and subdirectories, in name order.
    fn push_dir(&mut self, dir: &Path) -> Result<(), Document> {
        let name = dir.display().to_string();
        let entries = std::fs::read_dir(dir).map_err(|e| io_error(&name, &e))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&name, &e))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            // Symlinked directories are not followed (no cycles); symlinked files are.
            let is_dir = file_type.is_dir();
            let is_file = file_type.is_file() || (file_type.is_symlink() && path.is_file());
            if is_dir || (is_file && manifest_extension(&path)) {
                found.push(path);
            }
        }
        found.sort();
        self.stack.extend(found.into_iter().rev().map(Input::Found));
        Ok(())
    }

    fn open(&mut self, path: &Path) -> Result<(), Document> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| io_error(&name, &e))?;
        let json = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Some(true),
            Some("yaml" | "yml") => Some(false),
            _ => None,
        };
        let reader = Box::new(std::io::BufReader::with_capacity(1 << 16, file));
        self.current = Some(OpenFile::new(Arc::from(name.as_str()), reader, json));
        Ok(())
    }
}

// === impl OpenFile ===

/// How much is read from the input at a time (at least; more while a document is longer).
/// Small enough that the buffer stays an ordinary allocation: with 64 KiB blocks, mimalloc's
/// handling of the larger buffer raised peak memory by 4-10 MiB on inputs of a few large files.
const BLOCK: usize = 1 << 14;

/// The input being read.
///
/// Whole lines are read in blocks into one buffer and checked as UTF-8 once; documents are then
/// split and parsed straight from that buffer, without copying them line by line. The buffer
/// holds the document being read and at most one block (or one document's length) beyond it,
/// so memory stays bounded by the largest document, whatever the size of the input.
struct OpenFile {
    source: Arc<str>,
    reader: Box<dyn BufRead>,
    /// JSON or YAML; `None` until the first non-blank line decides (`{` or `[` is JSON).
    json: Option<bool>,
    /// Whole lines read and checked; only the last line of the input may lack its line feed.
    /// `text[pos..]` is still to be read.
    text: String,
    pos: usize,
    /// 1-based number of the line `pos` is on.
    line: usize,
    /// An incomplete line read from `reader`, waiting for its line feed.
    partial: Vec<u8>,
    /// No more text will come: the input ended, or reading it failed (`failure`).
    eof: bool,
    /// Why reading stopped before the end of the input: reported, instead of the document in
    /// progress, once the text before it is used up.
    failure: Option<Failure>,
    done: bool,
    queue: VecDeque<Document>,
}

/// Why reading an input stopped early.
enum Failure {
    Utf8,
    Io(std::io::Error),
}

impl OpenFile {
    fn new(source: Arc<str>, reader: Box<dyn BufRead>, json: Option<bool>) -> OpenFile {
        OpenFile {
            source,
            reader,
            json,
            text: String::new(),
            pos: 0,
            line: 1,
            partial: Vec::new(),
            eof: false,
            failure: None,
            done: false,
            queue: VecDeque::new(),
        }
    }

    fn next_document(&mut self) -> Option<Document> {
        loop {
            if let Some(doc) = self.queue.pop_front() {
                return Some(doc);
            }
            if self.done {
                return None;
            }
            self.step();
        }
    }

    fn error(&self, line: usize, e: ManifestError) -> Document {
        Document {
            source: self.source.clone(),
            line,
            value: Err(e),
        }
    }

    /// Reads the next document (or more text when the one in progress is incomplete).
    fn step(&mut self) {
        let json = match self.json {
            Some(json) => json,
            None => {
                // The first non-blank byte decides; a blank input reads as (empty) YAML.
                match self.text[self.pos..].trim_start().as_bytes().first() {
                    Some(b'{' | b'[') => self.json = Some(true),
                    Some(_) => self.json = Some(false),
                    None if self.eof => self.json = Some(false),
                    None => {
                        self.refill();
                        return;
                    }
                }
                self.json == Some(true)
            }
        };
        if json {
            self.json_step();
        } else {
            self.yaml_step();
        }
    }

    /// Moves past `len` bytes of text that hold `newlines` line feeds.
    fn advance(&mut self, len: usize, newlines: usize) {
        self.pos += len;
        self.line += newlines;
    }

    /// At the end of the text: stops, reporting why reading failed, if it did.
    fn end(&mut self) {
        self.done = true;
        let Some(failure) = self.failure.take() else {
            return;
        };
        // The line after the text read is the one that could not be read.
        let line = self.line + count_newlines(&self.text.as_bytes()[self.pos..]);
        let message = match failure {
            Failure::Utf8 => format!("line {line}: not valid UTF-8"),
            Failure::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                format!("line {line}: not valid UTF-8")
            }
            Failure::Io(e) => format!("cannot read line {line}: {e}"),
        };
        let err = ManifestError::Io {
            file: self.source.to_string(),
            message,
        };
        let doc = self.error(line, err);
        self.queue.push_back(doc);
    }

    /// Reads at least one more block of whole lines (or as much again as the text still to be
    /// read, so that a long document is scanned a bounded number of times), after dropping the
    /// text already read except the current line's start (error columns count from it).
    fn refill(&mut self) {
        let keep_from =
            memchr::memrchr(b'\n', &self.text.as_bytes()[..self.pos]).map_or(0, |i| i + 1);
        if keep_from > 0 {
            self.text.drain(..keep_from);
            self.pos -= keep_from;
        }
        let want = (self.text.len() - self.pos).max(BLOCK);
        let mut got = 0;
        while got < want && !self.eof {
            let buf = match self.reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.failure = Some(Failure::Io(e));
                    self.eof = true;
                    break;
                }
            };
            // A reader holding everything in memory (a `Cursor`) is still read a block at a time.
            let buf = buf.get(..BLOCK).unwrap_or(buf);
            let n = buf.len();
            if n == 0 {
                // The last line, without a line feed.
                self.eof = true;
                if !append_lines(&mut self.text, &self.partial) {
                    self.failure = Some(Failure::Utf8);
                }
                self.partial.clear();
                break;
            }
            if let Some(i) = memchr::memrchr(b'\n', buf) {
                let (lines, rest) = buf.split_at(i + 1);
                let valid = if self.partial.is_empty() {
                    append_lines(&mut self.text, lines)
                } else {
                    self.partial.extend_from_slice(lines);
                    let valid = append_lines(&mut self.text, &self.partial);
                    self.partial.clear();
                    valid
                };
                if !valid {
                    self.failure = Some(Failure::Utf8);
                    self.eof = true;
                    break;
                }
                self.partial.extend_from_slice(rest);
            } else {
                self.partial.extend_from_slice(buf);
            }
            self.reader.consume(n);
            got += n;
        }
    }

    // --- YAML ---

    /// Reads the next YAML document: its first line, then every line up to the next `---` or
    /// `...` line (documents are split before parsing, so that a syntax error in one does not
    /// hide the others). A `...` line ends a document and belongs to none.
    fn yaml_step(&mut self) {
        let rest = &self.text[self.pos..];
        let bytes = rest.as_bytes();
        if bytes.is_empty() {
            if self.eof {
                self.end();
            } else {
                self.refill();
            }
            return;
        }
        let first_len = memchr::memchr(b'\n', bytes).map_or(bytes.len(), |i| i + 1);
        let first_marker = marker(&rest[..first_len]);
        if first_marker == Some(b'.') {
            self.advance(first_len, 1);
            return;
        }
        let end = match next_marker(rest) {
            Some(end) => end,
            // The last document of the input (unless reading failed inside it).
            None if self.eof && self.failure.is_none() => bytes.len(),
            None if self.eof => {
                self.end();
                return;
            }
            None => {
                self.refill();
                return;
            }
        };
        let start_line = self.line;
        let newlines = count_newlines(&bytes[..end]);
        let parsed = yaml_document(&rest[..end], start_line, first_marker.is_some());
        self.advance(end, newlines);
        match parsed {
            None => {}
            Some(Ok((value, line))) => self.push_object(value, line),
            Some(Err((line, column, message))) => {
                let err = ManifestError::Yaml {
                    file: self.source.to_string(),
                    line,
                    column,
                    message,
                };
                let doc = self.error(line, err);
                self.queue.push_back(doc);
            }
        }
    }

    // --- JSON ---

    /// Reads the next top-level JSON value.
    fn json_step(&mut self) {
        let rest = &self.text[self.pos..];
        let trimmed = rest.trim_start();
        let skipped = rest.len() - trimmed.len();
        let skipped_lines = count_newlines(&rest.as_bytes()[..skipped]);
        let Some(first) = trimmed.chars().next() else {
            self.advance(skipped, skipped_lines);
            if self.eof {
                self.end();
            } else {
                self.refill();
            }
            return;
        };
        if first != '{' && first != '[' {
            // Anything but `{` or `[` cannot start an object; the stream cannot be
            // resynchronised after a stray token.
            self.advance(skipped, skipped_lines);
            let line_start =
                memchr::memrchr(b'\n', &self.text.as_bytes()[..self.pos]).map_or(0, |i| i + 1);
            let err = ManifestError::Json {
                file: self.source.to_string(),
                line: self.line,
                column: self.pos - line_start + 1,
                message: format!("expected a JSON object or array, found {first:?}"),
            };
            let doc = self.error(self.line, err);
            self.queue.push_back(doc);
            self.done = true;
            return;
        }
        // The common case: a well-formed value, parsed in place up to its end.
        let mut stream = serde_json::Deserializer::from_str(trimmed).into_iter::<Value>();
        if let Some(Ok(value)) = stream.next() {
            let len = stream.byte_offset();
            let newlines = count_newlines(&trimmed.as_bytes()[..len]);
            let start_line = self.line + skipped_lines;
            self.advance(skipped + len, skipped_lines + newlines);
            self.push_object(value, start_line);
            return;
        }
        self.advance(skipped, skipped_lines);
        self.json_slow_step();
    }

    /// A value that is malformed or not all read yet: its end is found by scanning braces and
    /// brackets outside strings (so that the next value can still be read after an error), and
    /// the text up to there is parsed for its value or its error.
    fn json_slow_step(&mut self) {
        let rest = &self.text[self.pos..];
        let end = match JsonScan::default().end(rest) {
            Some(end) => end,
            None if !self.eof => {
                self.refill();
                return;
            }
            // Reading failed inside the value: the failure is reported instead.
            None if self.failure.is_some() => {
                self.end();
                return;
            }
            // Still open at the end of the input: parsed for its error message.
            None => {
                self.done = true;
                rest.len()
            }
        };
        let text = &rest[..end];
        let newlines = count_newlines(text.as_bytes());
        let start_line = self.line;
        let parsed = serde_json::from_str::<Value>(text);
        self.advance(end, newlines);
        match parsed {
            Ok(value) => self.push_object(value, start_line),
            Err(e) => {
                let line = start_line + e.line().saturating_sub(1);
                let err = ManifestError::Json {
                    file: self.source.to_string(),
                    line,
                    column: e.column(),
                    message: strip_position(&e.to_string()),
                };
                let doc = self.error(line, err);
                self.queue.push_back(doc);
            }
        }
    }

    /// Queues a parsed document if it is a Kubernetes object, expanding `List` kinds.
    fn push_object(&mut self, mut value: Value, line: usize) {
        let Some(o) = value.as_object_mut() else {
            return;
        };
        let Some(kind) = o.get("kind").and_then(Value::as_str).map(str::to_owned) else {
            return;
        };
        let is_list = kind.ends_with("List") && o.get("items").is_some_and(Value::is_array);
        if !is_list {
            self.queue.push_back(Document {
                source: self.source.clone(),
                line,
                value: Ok(value),
            });
            return;
        }
        // `kind: List` items carry their own kind; typed lists from the API (`PodList`) may not.
        let item_kind = kind
            .strip_suffix("List")
            .filter(|k| !k.is_empty())
            .map(str::to_owned);
        let api_version = o.get("apiVersion").cloned();
        let items = match o.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        for mut item in items {
            if let (Some(item_obj), Some(k)) = (item.as_object_mut(), &item_kind)
                && !item_obj.contains_key("kind")
            {
                item_obj.insert("kind".to_owned(), Value::String(k.clone()));
                if let Some(av) = &api_version {
                    item_obj
                        .entry("apiVersion".to_owned())
                        .or_insert_with(|| av.clone());
                }
            }
            self.push_object(item, line);
        }
    }
}

/// Appends the UTF-8 `bytes` (whole lines) to `text`; if they are not valid UTF-8, appends the
/// lines before the first invalid one and returns `false`.
fn append_lines(text: &mut String, bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            text.push_str(s);
            true
        }
        Err(e) => {
            let valid = bytes.get(..e.valid_up_to()).unwrap_or_default();
            let lines = memchr::memrchr(b'\n', valid).map_or(0, |i| i + 1);
            if let Ok(s) = std::str::from_utf8(valid.get(..lines).unwrap_or_default()) {
                text.push_str(s);
            }
            false
        }
    }
}

fn count_newlines(bytes: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', bytes).count()
}

/// A line feed and the start of a `---` or `...` marker, searched for as such: that skips over
/// the lines of a document much faster than stopping at each of them.
static DASHES: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n---"));
static DOTS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\n..."));

/// Where the first document marker line after the first line of `text` starts.
fn next_marker(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let first = |finder: &Finder<'_>, hay: &[u8]| {
        finder
            .find_iter(hay)
            .map(|i| i + 1)
            .find(|&next| marker(&text[next..]).is_some())
    };
    let dashes = first(&DASHES, bytes);
    // `...` lines are rare: they are looked for only up to the next `---` line.
    let limit = dashes.map_or(bytes.len(), |d| (d + 3).min(bytes.len()));
    let dots = first(&DOTS, &bytes[..limit]);
    match (dashes, dots) {
        (Some(d), Some(e)) => Some(d.min(e)),
        (d, e) => d.or(e),
    }
}

/// Whether the line at the start of `text` is a document marker: `---` or `...`, alone or
/// followed by a space or a tab. Returns the marker's first byte.
fn marker(text: &str) -> Option<u8> {
    let line = match memchr::memchr(b'\n', text.as_bytes()) {
        Some(i) => &text[..i],
        None => text,
    };
    let l = line.trim_end_matches('\r');
    let m = l.get(..3).filter(|m| *m == "---" || *m == "...")?;
    let after = &l[3..];
    (after.is_empty() || after.starts_with([' ', '\t'])).then_some(m.as_bytes()[0])
}

/// Whether a line of a YAML document holds content (not blank, a comment or a directive); a
/// `---` marker line (`marker_line`) holds content when something other than a comment
/// follows the marker on it.
fn content(line: &str, marker_line: bool) -> bool {
    let l = line.trim_end_matches(['\n', '\r']);
    if marker_line {
        let inline = l[3..].trim_start();
        return !inline.is_empty() && !inline.starts_with('#');
    }
    let t = l.trim_start();
    !t.is_empty() && !t.starts_with('#') && !t.starts_with('%')
}

/// A YAML parse error: line, column, message.
type YamlError = (usize, usize, String);

/// Parses one YAML document (`doc`, starting at line `start_line`, with a leading `---` line
/// when `marked`): `None` when it has no content, else its value and the line of its first
/// content line, or the error with its absolute position.
fn yaml_document(
    doc: &str,
    start_line: usize,
    marked: bool,
) -> Option<Result<(Value, usize), YamlError>> {
    let mut lines = doc.split_inclusive('\n').enumerate();
    let content_line = lines
        .find(|&(k, l)| content(l, marked && k == 0))
        .map(|(k, _)| start_line + k)?;
    // Plain block-style manifests take the fast reader; anything else, and every error, goes
    // through the full YAML parser.
    let parsed = match crate::fast_yaml::parse(doc) {
        Some(value) => Ok(value),
        None => serde_yaml::from_str::<Value>(doc),
    };
    let e = match parsed {
        Ok(value) => return Some(Ok((value, content_line))),
        Err(e) => e,
    };
    // An error found at the end of the document (an unclosed bracket or quote) is reported at
    // its last content line rather than at the next document's `---`.
    let last_line = doc
        .split_inclusive('\n')
        .enumerate()
        .filter(|&(k, l)| (marked && k == 0) || content(l, false))
        .last()
        .map_or(content_line, |(k, _)| start_line + k);
    let (line, column) = match e.location() {
        Some(loc) => {
            let line = start_line + loc.line().saturating_sub(1);
            if line > last_line {
                (last_line, 0)
            } else {
                (line, loc.column())
            }
        }
        None => (content_line, 0),
    };
    Some(Err((line, column, strip_position(&e.to_string()))))
}

/// Finds where a top-level JSON value ends: braces and brackets outside strings.
#[derive(Default)]
struct JsonScan {
    depth: usize,
    in_string: bool,
}

impl JsonScan {
    /// The length of `text` up to and including the byte that closes the value it starts
    /// with, or `None` if the value is still open at its end.
    fn end(&mut self, text: &str) -> Option<usize> {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if self.in_string {
                // Most of a manifest is string contents: jump to the next quote or backslash.
                let rest = bytes.get(i..).unwrap_or_default();
                let j = memchr::memchr2(b'"', b'\\', rest)?;
                i += j + 1;
                if rest.get(j) == Some(&b'\\') {
                    // The escaped byte (never the end of a string).
                    i += 1;
                } else {
                    self.in_string = false;
                }
                continue;
            }
            match bytes.get(i) {
                Some(b'"') => self.in_string = true,
                Some(b'{' | b'[') => self.depth += 1,
                Some(b'}' | b']') => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        None
    }
}

/// Removes serde's ` at line L column C` suffix (we report our own, absolute position).
fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
#[path = "manifest_reference.rs"]
mod reference;

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(text: &str, json: bool) -> Vec<Document> {
        Documents::from_text("mem", text.to_owned(), json).collect()
    }

    #[test]
    fn multi_document_lines() {
        let text = "# leading comment\napiVersion: v1\nkind: A\n---\n\n---\n# c\napiVersion: v1\nkind: B\n...\n--- \nkind: C\n";
        let d = docs(text, false);
        let got: Vec<(usize, String)> = d
            .iter()
            .map(|d| {
                let v = d.value.as_ref().unwrap();
                (d.line, v["kind"].as_str().unwrap().to_owned())
            })
            .collect();
        assert_eq!(
            got,
            vec![(2, "A".into()), (8, "B".into()), (12, "C".into())]
        );
    }

    #[test]
    fn yaml_error_has_absolute_line_and_does_not_stop() {
        let text = "kind: A\n---\nkind: B\nmetadata:\n  name: [unclosed\n---\nkind: C\n";
        let d = docs(text, false);
        assert_eq!(d.len(), 3);
        assert!(d[0].value.is_ok());
        let e = d[1].value.as_ref().unwrap_err();
        assert_eq!(e.file(), "mem");
        let line = e.line().unwrap();
        assert!((5..=6).contains(&line), "line {line}: {e}");
        assert_eq!(d[2].value.as_ref().unwrap()["kind"], "C");
    }

    #[test]
    fn yaml_error_line_points_at_the_bad_line() {
        let text = "kind: A\n---\nkind: B\nmetadata:\n\tname: tab\n";
        let d = docs(text, false);
        let e = d[1].value.as_ref().unwrap_err();
        assert_eq!(e.line(), Some(5), "{e}");
    }

    #[test]
    fn lists_are_expanded() {
        let text = r#"{"apiVersion":"v1","kind":"PodList","items":[{"metadata":{"name":"a"}},{"kind":"Pod","apiVersion":"v1","metadata":{"name":"b"}}]}"#;
        let d = docs(text, true);
        assert_eq!(d.len(), 2);
        for doc in &d {
            let v = doc.value.as_ref().unwrap();
            assert_eq!(v["kind"], "Pod");
            assert_eq!(v["apiVersion"], "v1");
            assert_eq!(doc.line, 1);
        }
        let text = "apiVersion: v1\nkind: List\nitems:\n- kind: ConfigMap\n  apiVersion: v1\n- kind: Secret\n  apiVersion: v1\n";
        let kinds: Vec<String> = docs(text, false)
            .into_iter()
            .map(|d| d.value.unwrap()["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kinds, ["ConfigMap", "Secret"]);
    }

    #[test]
    fn json_stream_and_error() {
        let text = "{\"kind\":\"A\"}\n\n{\"kind\":\"B\"}\n{\"kind\": oops}\n{\"kind\":\"D\"}";
        let d = docs(text, true);
        assert_eq!(d.len(), 4);
        assert_eq!(d[0].line, 1);
        assert_eq!(d[1].line, 3);
        let e = d[2].value.as_ref().unwrap_err();
        assert_eq!(e.line(), Some(4), "{e}");
        // The scanner found where the bad value ends: the next one is still read.
        assert_eq!(d[3].value.as_ref().unwrap()["kind"], "D");
        assert_eq!(d[3].line, 5);
    }

    #[test]
    fn json_values_split_anywhere() {
        // Several values on one line, one value over several lines, braces inside strings.
        let text =
            "{\"kind\":\"A\",\"s\":\"}{\\\"\"}{\"kind\":\n\"B\"\n}\n\n  [1]\n{\"kind\":\"C\"}";
        let d = docs(text, true);
        let got: Vec<(usize, String)> = d
            .iter()
            .map(|d| {
                let v = d.value.as_ref().unwrap();
                (d.line, v["kind"].as_str().unwrap().to_owned())
            })
            .collect();
        assert_eq!(got, vec![(1, "A".into()), (1, "B".into()), (6, "C".into())]);
        assert_eq!(d[0].value.as_ref().unwrap()["s"], "}{\"");
    }

    #[test]
    fn json_stray_token_stops_the_stream() {
        let d = docs("{\"kind\":\"A\"}\n  oops\n{\"kind\":\"B\"}\n", true);
        assert_eq!(d.len(), 2);
        let e = d[1].value.as_ref().unwrap_err();
        assert_eq!(e.line(), Some(2), "{e}");
        assert!(e.to_string().contains(":2:3:"), "{e}");
    }

    #[test]
    fn unclosed_json_reports_its_error() {
        let d = docs("{\"kind\":\"A\"}\n{\"kind\":\n\"B\",\n", true);
        assert_eq!(d.len(), 2);
        let e = d[1].value.as_ref().unwrap_err();
        assert!(matches!(e.line(), Some(2..=4)), "{e}");
    }

    #[test]
    fn format_is_sniffed_when_unknown() {
        let mut json = Documents {
            stack: Vec::new(),
            current: Some(OpenFile::new(
                Arc::from("-"),
                Box::new(std::io::Cursor::new(b"\n  {\"kind\": \"A\"}".to_vec())),
                None,
            )),
        };
        let d = json.next().unwrap();
        assert_eq!(d.value.unwrap()["kind"], "A");
        assert_eq!(d.line, 2);
        let mut yaml = Documents {
            stack: Vec::new(),
            current: Some(OpenFile::new(
                Arc::from("-"),
                Box::new(std::io::Cursor::new(
                    b"# c\nkind: A\n---\nkind: B\n".to_vec(),
                )),
                None,
            )),
        };
        assert_eq!(yaml.next().unwrap().line, 2);
        assert_eq!(yaml.next().unwrap().value.unwrap()["kind"], "B");
    }

    #[test]
    fn invalid_utf8_is_an_error_naming_the_line() {
        let mut d = Documents {
            stack: Vec::new(),
            current: Some(OpenFile::new(
                Arc::from("f.yaml"),
                Box::new(std::io::Cursor::new(b"kind: A\n---\nkind: \xff\n".to_vec())),
                Some(false),
            )),
        };
        assert_eq!(d.next().unwrap().value.unwrap()["kind"], "A");
        let e = d.next().unwrap().value.unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        assert!(d.next().is_none());
    }

    #[test]
    fn non_objects_are_skipped() {
        let text = "replicaCount: 3\n---\n- a\n- b\n---\nplain\n---\nkind: Pod\n";
        let d = docs(text, false);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].line, 8);
    }

    // --- the buffered reader against the line-by-line one it replaced ---

    /// Every document (file, line, value or error), read by the buffered reader with reads of
    /// at most `chunk` bytes.
    fn buffered(text: &[u8], json: Option<bool>, chunk: usize) -> Vec<Document> {
        let reader = std::io::BufReader::with_capacity(chunk, std::io::Cursor::new(text.to_vec()));
        let mut file = OpenFile::new(Arc::from("f"), Box::new(reader), json);
        std::iter::from_fn(|| file.next_document()).collect()
    }

    fn line_by_line(text: &[u8], json: Option<bool>, chunk: usize) -> Vec<Document> {
        let reader = std::io::BufReader::with_capacity(chunk, std::io::Cursor::new(text.to_vec()));
        reference::documents("f", Box::new(reader), json)
    }

    type Key = (String, usize, Result<Value, ManifestError>);

    fn key(docs: Vec<Document>) -> Vec<Key> {
        docs.into_iter()
            .map(|d| (d.source.to_string(), d.line, d.value))
            .collect()
    }

    /// Both readers agree on `text` as YAML, as JSON and sniffed, whatever the read sizes.
    fn agree(text: &[u8]) {
        for json in [Some(false), Some(true), None] {
            let want = key(line_by_line(text, json, 1 << 16));
            for chunk in [1, 2, 3, 5, 8, 13, 64, 1000, 1 << 16] {
                let got = key(buffered(text, json, chunk));
                assert_eq!(
                    got,
                    want,
                    "json {json:?}, reads of {chunk} bytes, input:\n{}",
                    String::from_utf8_lossy(text)
                );
            }
        }
    }

    #[test]
    fn buffered_reader_agrees_on_edge_cases() {
        let cases: &[&[u8]] = &[
            b"",
            b"\n\n  \n",
            b"kind: A",
            b"kind: A\n",
            b"# c\nkind: A\n---\nkind: B\n...\n# after\n...\nkind: C\n--- \nkind: D\n---\t# t\nkind: E\n",
            b"---\n---\n---\nkind: A\n---\n",
            b"--- kind: A\n--- # c\nkind: B\n--- %x\n",
            b"kind: A\n----\nkind: B\n ---\nkind: C\n---x\nkind: D\n...x\n",
            b"kind: A\r\n---\r\nkind: B\r\n...\r\nkind: C\r\n",
            b"kind: A\n---\r\rkind: B\n---\r\nkind: C\n",
            b"%YAML 1.2\n---\nkind: A\n",
            b"\xef\xbb\xbfkind: A\n---\nkind: B\n",
            b"kind: A\nmetadata:\n  name: [unclosed\n---\nkind: C\n",
            b"kind: A\n---\nkind: B\nmetadata:\n\tname: tab\n\n# trailing\n",
            b"kind: A\nmetadata: {name: \"open\n\n---\nkind: B\n",
            b"kind: A\n---\nkind: \xff\n---\nkind: C\n",
            b"kind: A\n--- \xff\nkind: B\n",
            b"kind: A\n---\nkind: B\n\xfe",
            b"kind: \xc3\xa9t\xc3\xa9\n---\nkind: caf\xc3\xa9\n",
            b"kind: A\n---\nkind: B\nnote: \xe2\x80\xa8x\n",
            b"replicaCount: 3\n---\n- a\n- b\n---\nplain\n---\nkind: Pod\n",
            b"apiVersion: v1\nkind: List\nitems:\n- kind: ConfigMap\n  apiVersion: v1\n- kind: Secret\n  apiVersion: v1\n",
            b"{\"kind\":\"A\"}\n\n{\"kind\":\"B\"}\n{\"kind\": oops}\n{\"kind\":\"D\"}",
            b"{\"kind\":\"A\",\"s\":\"}{\\\"\"}{\"kind\":\n\"B\"\n}\n\n  [1]\n{\"kind\":\"C\"}",
            b"{\"kind\":\"A\"}\n  oops\n{\"kind\":\"B\"}\n",
            b"{\"kind\":\"A\"}  {\"kind\":\"B\"} x\n",
            b"{\"kind\":\"A\"}\n{\"kind\":\n\"B\",\n",
            b"{\"kind\":\"A\"}\n{\"kind\":\"B\"\n",
            b"{\"kind\": \"A\", \"s\": \"a\\\\\"}\n{\"kind\": \"B\", \"s\": \"\\\\\\\"\"}\n",
            b"{\"kind\":\"A\"}\xc2\xa0{\"kind\":\"B\"}\xe2\x80\xa8\n\xe2\x80\x83{\"kind\":\"C\"}\n",
            b"{\"kind\":\"A\"}\n\xc2\xa0\xc3\xa9\n",
            b"{\"kind\":\"A\"}\n{\"kind\":\"\xff\"}\n{\"kind\":\"C\"}\n",
            b"{\"kind\":\"A\"}{\"kind\":\"B\"\xff}\n",
            b"[{\"kind\":\"A\"}]\n{\"kind\":\"B\",\"x\":[1,{\"y\":}]}\n{\"kind\":\"C\"}\n",
            b"{\"kind\":\"A\",\"x\":[1}\n{\"kind\":\"B\"}\n]\n{\"kind\":\"C\"}\n",
            b"{\"apiVersion\":\"v1\",\"kind\":\"PodList\",\"items\":[{\"metadata\":{\"name\":\"a\"}},{\"kind\":\"Pod\",\"apiVersion\":\"v1\"}]}",
            b"{\"kind\":\"A\",\"n\":1.5e3,\"u\":\"\\u00e9\\ud83d\\ude00\"}\n",
            b"\n\n   {\"kind\": \"A\"}\n",
            b"  \n# c\nkind: A\n",
            b"\n\n\xff",
            b"}",
        ];
        for case in cases {
            agree(case);
        }
        // Deep nesting (past serde_json's recursion limit) and long lines.
        let deep = format!(
            "{{\"kind\":\"A\",\"x\":{}1{}}}\n{{\"kind\":\"B\"}}\n",
            "[".repeat(200),
            "]".repeat(200)
        );
        agree(deep.as_bytes());
        let long = format!("kind: A\nnote: {}\n---\nkind: B\n", "x".repeat(70_000));
        agree(long.as_bytes());
        let long_json = format!(
            "{{\"kind\":\"A\",\"note\":\"{}\"}}{{\"kind\":\"B\"}}\n",
            "y".repeat(70_000)
        );
        agree(long_json.as_bytes());
    }

    /// Generated objects in the layouts `loadtest audit` writes (NDJSON, `---`-separated YAML)
    /// and pretty-printed, read with reads of many sizes, with an error or a List mixed in.
    #[test]
    fn buffered_reader_agrees_on_generated_objects() {
        let objects: Vec<Value> = (0..120).map(crate::generate::object).collect();
        let mut ndjson = String::new();
        let mut pretty = String::new();
        let mut yaml = String::new();
        for (i, o) in objects.iter().enumerate() {
            ndjson += &(serde_json::to_string(o).unwrap() + "\n");
            pretty += &serde_json::to_string_pretty(o).unwrap();
            yaml += &format!("---\n{}", serde_yaml::to_string(o).unwrap());
            if i == 60 {
                ndjson += "{\"kind\": \"Broken\", \"x\": 1 2}\n";
                pretty += "\n{\"kind\":\"List\",\"items\":[{\"kind\":\"A\"},{\"kind\":\"B\"}]}\n";
                yaml += "---\nkind: Broken\nx: [\n";
            }
        }
        for text in [ndjson, pretty, yaml] {
            let want = key(line_by_line(text.as_bytes(), None, 1 << 16));
            assert!(want.len() > 100);
            for chunk in [7, 100, 4096, 1 << 16] {
                assert_eq!(
                    key(buffered(text.as_bytes(), None, chunk)),
                    want,
                    "reads of {chunk}"
                );
            }
        }
    }

    /// Every YAML and JSON file of the repository reads the same through both readers.
    #[test]
    fn buffered_reader_agrees_on_the_repository_files() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut stack = vec![root];
        let mut files = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if path.is_dir() {
                    if !name.starts_with('.') && name != "target" && name != "node_modules" {
                        stack.push(path);
                    }
                    continue;
                }
                let json = match path.extension().and_then(|e| e.to_str()) {
                    Some("json") => Some(true),
                    Some("yaml" | "yml") => Some(false),
                    _ => continue,
                };
                let text = std::fs::read(&path).unwrap();
                if text.len() > 4 << 20 {
                    continue;
                }
                files += 1;
                let want = key(line_by_line(&text, json, 1 << 16));
                for chunk in [97, 1 << 16] {
                    assert_eq!(
                        key(buffered(&text, json, chunk)),
                        want,
                        "{} (reads of {chunk})",
                        path.display()
                    );
                }
            }
        }
        assert!(files > 20, "found only {files} manifest files");
    }

    /// The buffer holds the document being read and about one read block, however long the
    /// input: memory does not grow with the input.
    #[test]
    fn buffer_stays_bounded() {
        let doc = serde_yaml::to_string(&crate::generate::object(0)).unwrap();
        let mut text = String::new();
        while text.len() < 8 * BLOCK {
            text += "---\n";
            text += &doc;
        }
        let reader = std::io::Cursor::new(text.clone().into_bytes());
        let mut file = OpenFile::new(Arc::from("f"), Box::new(reader), Some(false));
        let mut n = 0;
        while let Some(d) = file.next_document() {
            assert!(d.value.is_ok());
            assert!(
                file.text.capacity() <= 2 * BLOCK + 4 * doc.len(),
                "{}",
                file.text.capacity()
            );
            n += 1;
        }
        assert_eq!(n, text.matches("---\n").count());
    }
}

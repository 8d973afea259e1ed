//! The line-by-line manifest reader that [`super`]'s buffered reader replaced, kept as the
//! reference of the differential tests: both must yield exactly the same documents, values,
//! lines and errors for every input, however the input is split into reads.

use std::collections::VecDeque;
use std::io::BufRead;
use std::sync::Arc;

use serde_json::Value;

use super::{Document, ManifestError, strip_position};

/// Every document of `reader`, read line by line (`json`: as in [`super::Documents`]).
pub(super) fn documents(
    source: &str,
    reader: Box<dyn BufRead>,
    json: Option<bool>,
) -> Vec<Document> {
    let mut file = OpenFile::new(Arc::from(source), reader, json);
    std::iter::from_fn(|| file.next_document()).collect()
}

/// The input being read: its reader, the document being gathered, and the documents (items of
/// a `List`, errors) waiting to be yielded.
struct OpenFile {
    source: Arc<str>,
    reader: Box<dyn BufRead>,
    /// JSON or YAML; `None` until the first non-blank byte decides (`{` or `[` is JSON).
    json: Option<bool>,
    /// The line just read (reused).
    line_buf: String,
    /// 1-based number of the next line to read.
    next_line: usize,
    done: bool,
    queue: VecDeque<Document>,
    yaml: YamlDoc,
    json_doc: JsonDoc,
}

/// The YAML document being gathered, line by line, up to the next `---` or `...` line.
#[derive(Default)]
struct YamlDoc {
    text: String,
    /// Line of the first line of `text`.
    start_line: usize,
    /// Line of the first content line (what findings point at).
    content_line: Option<usize>,
    /// Line of the last content line.
    last_line: usize,
}

/// The JSON value being gathered: the text from its first byte, with a scanner that finds where
/// the top-level value ends (braces and brackets outside strings).
#[derive(Default)]
struct JsonDoc {
    text: String,
    /// Line of the value's first byte.
    start_line: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl OpenFile {
    fn new(source: Arc<str>, reader: Box<dyn BufRead>, json: Option<bool>) -> OpenFile {
        OpenFile {
            source,
            reader,
            json,
            line_buf: String::new(),
            next_line: 1,
            done: false,
            queue: VecDeque::new(),
            yaml: YamlDoc::default(),
            json_doc: JsonDoc::default(),
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

    /// Reads one line and feeds it to the YAML or JSON gatherer; at the end of the input,
    /// flushes the last document.
    fn step(&mut self) {
        self.line_buf.clear();
        let read = self.reader.read_line(&mut self.line_buf);
        let line = self.next_line;
        match read {
            Ok(0) => {
                self.done = true;
                match self.json {
                    Some(true) => self.json_end(),
                    _ => self.yaml_flush(),
                }
            }
            Ok(_) => {
                self.next_line += 1;
                if self.json.is_none() {
                    match self.line_buf.trim_start().as_bytes().first() {
                        Some(b'{' | b'[') => self.json = Some(true),
                        Some(_) => self.json = Some(false),
                        None => {}
                    }
                }
                if self.json == Some(true) {
                    self.json_line(line);
                } else {
                    self.yaml_line(line);
                }
            }
            Err(e) => {
                self.done = true;
                let message = if e.kind() == std::io::ErrorKind::InvalidData {
                    format!("line {line}: not valid UTF-8")
                } else {
                    format!("cannot read line {line}: {e}")
                };
                let err = ManifestError::Io {
                    file: self.source.to_string(),
                    message,
                };
                let doc = self.error(line, err);
                self.queue.push_back(doc);
            }
        }
    }

    // --- YAML ---

    /// Adds a line to the YAML document; a `---` or `...` line ends a document that has
    /// content (documents are split before parsing, so that a syntax error in one does not
    /// hide the others).
    fn yaml_line(&mut self, n: usize) {
        let l = self.line_buf.trim_end_matches(['\n', '\r']);
        let marker = |m: &str| {
            l.strip_prefix(m)
                .is_some_and(|after| after.is_empty() || after.starts_with([' ', '\t']))
        };
        if marker("---") {
            let inline = l[3..].trim_start();
            let inline = !inline.is_empty() && !inline.starts_with('#');
            self.yaml_flush();
            // The marker line starts the next document (an empty document is dropped).
            let doc = &mut self.yaml;
            doc.text.clear();
            doc.text.push_str(&self.line_buf);
            doc.start_line = n;
            doc.content_line = inline.then_some(n);
            doc.last_line = n;
        } else if marker("...") {
            self.yaml_flush();
            self.yaml.text.clear();
            self.yaml.start_line = n + 1;
        } else {
            let t = l.trim_start();
            let content = !t.is_empty() && !t.starts_with('#') && !t.starts_with('%');
            let doc = &mut self.yaml;
            if doc.text.is_empty() {
                doc.start_line = n;
            }
            doc.text.push_str(&self.line_buf);
            if content {
                doc.content_line.get_or_insert(n);
                doc.last_line = n;
            }
        }
    }

    /// Parses the gathered YAML document, if it has content, and starts an empty one.
    fn yaml_flush(&mut self) {
        let doc = std::mem::take(&mut self.yaml);
        let Some(content_line) = doc.content_line else {
            // Keep the buffer's allocation for the next document.
            self.yaml.text = doc.text;
            self.yaml.text.clear();
            return;
        };
        // Plain block-style manifests take the fast reader; anything else, and every error,
        // goes through the full YAML parser.
        let parsed = match crate::fast_yaml::parse(&doc.text) {
            Some(value) => Ok(value),
            None => serde_yaml::from_str::<Value>(&doc.text),
        };
        match parsed {
            Ok(value) => self.push_object(value, content_line),
            Err(e) => {
                // An error found at the end of the document (an unclosed bracket or quote)
                // is reported at its last line rather than at the next document's `---`.
                let (line, column) = match e.location() {
                    Some(loc) => {
                        let line = doc.start_line + loc.line().saturating_sub(1);
                        if line > doc.last_line {
                            (doc.last_line, 0)
                        } else {
                            (line, loc.column())
                        }
                    }
                    None => (content_line, 0),
                };
                let err = ManifestError::Yaml {
                    file: self.source.to_string(),
                    line,
                    column,
                    message: strip_position(&e.to_string()),
                };
                let doc = self.error(line, err);
                self.queue.push_back(doc);
            }
        }
        self.yaml.text = doc.text;
        self.yaml.text.clear();
    }

    // --- JSON ---

    /// Adds a line to the JSON value being gathered; parses every value the line completes.
    fn json_line(&mut self, n: usize) {
        let line = std::mem::take(&mut self.line_buf);
        let mut rest: &str = &line;
        while !rest.is_empty() && !self.done {
            if self.json_doc.text.is_empty() {
                // Between values: skip blanks; anything but `{` or `[` cannot start an object.
                let trimmed = rest.trim_start();
                let Some(first) = trimmed.chars().next() else {
                    break;
                };
                if first != '{' && first != '[' {
                    let err = ManifestError::Json {
                        file: self.source.to_string(),
                        line: n,
                        column: line.len() - trimmed.len() + 1,
                        message: format!("expected a JSON object or array, found {first:?}"),
                    };
                    let doc = self.error(n, err);
                    self.queue.push_back(doc);
                    // The stream cannot be resynchronised after a stray token.
                    self.done = true;
                    break;
                }
                self.json_doc.start_line = n;
                rest = trimmed;
            }
            match self.json_doc.scan(rest) {
                // A value within one line (NDJSON, `kubectl -o json` lines): parsed in place.
                Some(end) if self.json_doc.text.is_empty() => {
                    let start_line = self.json_doc.start_line;
                    self.json_parse(&rest[..end], start_line);
                    rest = &rest[end..];
                    self.json_doc.reset();
                }
                Some(end) => {
                    self.json_doc.text.push_str(&rest[..end]);
                    rest = &rest[end..];
                    let text = std::mem::take(&mut self.json_doc.text);
                    self.json_parse(&text, self.json_doc.start_line);
                    self.json_doc.text = text;
                    self.json_doc.reset();
                }
                None => {
                    self.json_doc.text.push_str(rest);
                    rest = "";
                }
            }
        }
        self.line_buf = line;
    }

    /// At the end of the input: a value still open is parsed for its error message.
    fn json_end(&mut self) {
        if !self.json_doc.text.trim().is_empty() {
            let text = std::mem::take(&mut self.json_doc.text);
            self.json_parse(&text, self.json_doc.start_line);
        }
    }

    /// Parses one JSON value that starts at `start_line`.
    fn json_parse(&mut self, text: &str, start_line: usize) {
        match serde_json::from_str::<Value>(text) {
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

impl JsonDoc {
    /// Ready for the next value (keeping the text's allocation).
    fn reset(&mut self) {
        self.text.clear();
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
    }

    /// Scans `more` (the continuation of the value): returns the length of `more` up to and
    /// including the byte that closes the top-level value, or `None` if it is still open.
    fn scan(&mut self, more: &str) -> Option<usize> {
        let bytes = more.as_bytes();
        let mut i = 0;
        if self.escaped {
            self.escaped = false;
            i += 1;
        }
        while i < bytes.len() {
            if self.in_string {
                // Most of a manifest is string contents: jump to the next quote or backslash.
                let rest = bytes.get(i..).unwrap_or_default();
                let j = memchr::memchr2(b'"', b'\\', rest)?;
                i += j + 1;
                if rest.get(j) == Some(&b'\\') {
                    if i < bytes.len() {
                        i += 1;
                    } else {
                        self.escaped = true;
                    }
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

//! Reading Kubernetes manifests (the I/O half of `canopyctl audit`): YAML and JSON files,
//! multi-document YAML, `List` expansion, directories, stdin — streamed document by document.
//!
//! [`load_paths`] returns an iterator that reads one file (or stdin) at a time, line by line, and
//! holds at most one document's text at a time: peak memory is bounded by the largest document,
//! not by the number or the total size of the inputs. A malformed document yields a
//! [`ManifestError`] naming the file and line, and the iterator goes on with the next document
//! (the next `---` in YAML, the next top-level value in JSON) and the next file.
//!
//! Only Kubernetes objects are yielded: documents that are not mappings with a string `kind`
//! (Helm values, `package.json`, CI workflows found while walking a directory) are skipped.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Removes serde's ` at line L column C` suffix (we report our own, absolute position).
fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

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
}

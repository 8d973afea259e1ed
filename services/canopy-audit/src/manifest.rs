//! Reading Kubernetes manifests (the I/O half of `canopyctl audit`): YAML and JSON files,
//! multi-document YAML, `List` expansion, directories, stdin — streamed file by file.
//!
//! [`load_paths`] returns an iterator that holds at most one file's text at a time and parses
//! one document at a time, so peak memory does not grow with the number of input files. A
//! malformed document yields a [`ManifestError`] naming the file and line and the iterator goes
//! on with the next document (YAML) or the next file (JSON, whose stream cannot resynchronise).
//!
//! Only Kubernetes objects are yielded: documents that are not mappings with a string `kind`
//! (Helm values, `package.json`, CI workflows found while walking a directory) are skipped.

use std::collections::VecDeque;
use std::io::Read;
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
            current: Some(OpenFile::new(Arc::from(source), text, json)),
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
                    let mut text = String::new();
                    match std::io::stdin().read_to_string(&mut text) {
                        Ok(_) => {
                            let json = looks_like_json(&text);
                            self.current = Some(OpenFile::new(Arc::from("-"), text, json));
                        }
                        Err(e) => return Some(io_error("-", &e)),
                    }
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

fn looks_like_json(text: &str) -> bool {
    matches!(text.trim_start().as_bytes().first(), Some(b'{' | b'['))
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
        let bytes = std::fs::read(path).map_err(|e| io_error(&name, &e))?;
        let text = String::from_utf8(bytes).map_err(|_| Document {
            source: Arc::from(name.as_str()),
            line: 0,
            value: Err(ManifestError::Io {
                file: name.clone(),
                message: "not valid UTF-8".to_owned(),
            }),
        })?;
        let json = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => true,
            Some("yaml" | "yml") => false,
            _ => looks_like_json(&text),
        };
        self.current = Some(OpenFile::new(Arc::from(name.as_str()), text, json));
        Ok(())
    }
}

// === impl OpenFile ===

/// The file being read: its text, how far the parser got, and the items of a `List` document
/// waiting to be yielded.
struct OpenFile {
    source: Arc<str>,
    text: String,
    json: bool,
    /// Byte offset of the next document.
    pos: usize,
    /// 1-based line number at `pos`.
    line: usize,
    done: bool,
    queue: VecDeque<Document>,
}

impl OpenFile {
    fn new(source: Arc<str>, text: String, json: bool) -> OpenFile {
        OpenFile {
            source,
            text,
            json,
            pos: 0,
            line: 1,
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
            if self.json {
                self.next_json();
            } else {
                self.next_yaml();
            }
        }
    }

    fn error(&self, line: usize, e: ManifestError) -> Document {
        Document {
            source: self.source.clone(),
            line,
            value: Err(e),
        }
    }

    /// Parses the next YAML document (documents are split on `---` lines first, so that a
    /// syntax error in one does not hide the others).
    fn next_yaml(&mut self) {
        let Some(chunk) = next_yaml_chunk(&self.text, self.pos, self.line) else {
            self.done = true;
            return;
        };
        self.pos = chunk.next_pos;
        self.line = chunk.next_line;
        let text = &self.text[chunk.start..chunk.end];
        match serde_yaml::from_str::<Value>(text) {
            Ok(value) => self.push_object(value, chunk.content_line),
            Err(e) => {
                // An error found at the end of the document (an unclosed bracket or quote)
                // is reported at its last line rather than at the next document's `---`.
                let (line, column) = match e.location() {
                    Some(loc) => {
                        let line = chunk.start_line + loc.line().saturating_sub(1);
                        if line > chunk.last_line {
                            (chunk.last_line, 0)
                        } else {
                            (line, loc.column())
                        }
                    }
                    None => (chunk.content_line, 0),
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
    }

    /// Parses the next value of a JSON stream (one object, or several concatenated).
    fn next_json(&mut self) {
        let rest = &self.text[self.pos..];
        let skipped = rest.len() - rest.trim_start().len();
        let start_line = self.line + count_lines(&rest[..skipped]);
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        match stream.next() {
            None => self.done = true,
            Some(Ok(value)) => {
                let end = stream.byte_offset();
                self.line += count_lines(&rest[..end]);
                self.pos += end;
                self.push_object(value, start_line);
            }
            Some(Err(e)) => {
                self.done = true;
                let line = self.line + e.line().saturating_sub(1);
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

/// Removes serde's ` at line L column C` suffix (we report our own, absolute position).
fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn count_lines(s: &str) -> usize {
    s.bytes().filter(|&b| b == b'\n').count()
}

/// One YAML document's span in the file.
struct Chunk {
    start: usize,
    end: usize,
    /// Line of `start`.
    start_line: usize,
    /// Line of the first content line (what findings point at).
    content_line: usize,
    /// Line of the last content line.
    last_line: usize,
    next_pos: usize,
    next_line: usize,
}

/// Finds the next document from `pos`: up to the next `---` line (or `...` end marker) once
/// the document has content. Returns `None` when only blank lines, comments and directives
/// remain.
fn next_yaml_chunk(text: &str, pos: usize, line: usize) -> Option<Chunk> {
    let mut start = pos;
    let mut start_line = line;
    let mut content_line = None;
    let mut last_line = line;
    let mut offset = pos;
    let mut n = line;
    while offset < text.len() {
        let rest = &text[offset..];
        let len = rest.find('\n').map_or(rest.len(), |i| i + 1);
        let raw = &rest[..len];
        let l = raw.trim_end_matches(['\n', '\r']);
        let marker = |m: &str| {
            l.strip_prefix(m)
                .is_some_and(|after| after.is_empty() || after.starts_with([' ', '\t']))
        };
        if marker("---") {
            if let Some(content_line) = content_line {
                return Some(Chunk {
                    start,
                    end: offset,
                    start_line,
                    content_line,
                    last_line,
                    next_pos: offset,
                    next_line: n,
                });
            }
            // An empty document before this one is dropped: restart here.
            start = offset;
            start_line = n;
            let inline = l[3..].trim_start();
            if !inline.is_empty() && !inline.starts_with('#') {
                content_line = Some(n);
                last_line = n;
            }
        } else if marker("...") {
            if let Some(content_line) = content_line {
                return Some(Chunk {
                    start,
                    end: offset,
                    start_line,
                    content_line,
                    last_line,
                    next_pos: offset + len,
                    next_line: n + 1,
                });
            }
            start = offset + len;
            start_line = n + 1;
        } else {
            let t = l.trim_start();
            if !t.is_empty() && !t.starts_with('#') && !t.starts_with('%') {
                content_line.get_or_insert(n);
                last_line = n;
            }
        }
        offset += len;
        n += 1;
    }
    content_line.map(|content_line| Chunk {
        start,
        end: text.len(),
        start_line,
        content_line,
        last_line,
        next_pos: text.len(),
        next_line: n,
    })
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
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].line, 1);
        assert_eq!(d[1].line, 3);
        let e = d[2].value.as_ref().unwrap_err();
        assert_eq!(e.line(), Some(4), "{e}");
    }

    #[test]
    fn non_objects_are_skipped() {
        let text = "replicaCount: 3\n---\n- a\n- b\n---\nplain\n---\nkind: Pod\n";
        let d = docs(text, false);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].line, 8);
    }
}

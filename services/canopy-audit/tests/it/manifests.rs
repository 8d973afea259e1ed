//! Manifest loading from the file system: directories, extensions, malformed documents.

use std::path::PathBuf;

use canopy_audit::manifest::load_paths;

fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn directories_recursively_in_order() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "b.yaml", "kind: B\napiVersion: v1\n");
    write(
        dir.path(),
        "a.yml",
        "kind: A\napiVersion: v1\n---\nkind: A2\napiVersion: v1\n",
    );
    write(
        dir.path(),
        "sub/c.json",
        r#"{"kind":"C","apiVersion":"v1"}"#,
    );
    write(dir.path(), "sub/deeper/d.yaml", "kind: D\n");
    write(dir.path(), "notes.txt", "kind: TXT\n");
    write(dir.path(), ".hidden/e.yaml", "kind: HIDDEN\n");
    write(dir.path(), "values.yaml", "replicaCount: 2\n");
    let docs: Vec<_> = load_paths(&[dir.path().to_path_buf()]).collect();
    let kinds: Vec<String> = docs
        .iter()
        .map(|d| {
            d.value.as_ref().unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["A", "A2", "B", "C", "D"]);
    assert!(docs[0].source.ends_with("a.yml"));
    assert_eq!(docs[1].line, 4);
}

#[test]
fn explicit_files_keep_argument_order_and_any_extension() {
    let dir = tempfile::tempdir().unwrap();
    let x = write(dir.path(), "x.txt", "kind: X\n");
    let y = write(dir.path(), "y.yaml", "kind: Y\n");
    let kinds: Vec<String> = load_paths(&[y, x])
        .map(|d| d.value.unwrap()["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["Y", "X"]);
}

#[test]
fn malformed_documents_do_not_stop_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let good1 = write(dir.path(), "1-good.yaml", "kind: One\n");
    let bad = write(
        dir.path(),
        "2-bad.yaml",
        "kind: Before\n---\n# comment\nkind: Broken\nmetadata: {name: [oops\n---\nkind: After\n",
    );
    let bad_json = write(dir.path(), "3-bad.json", "{\"kind\": \"J\",\n \"x\": }\n");
    let missing = dir.path().join("4-missing.yaml");
    let good2 = write(dir.path(), "5-good.yaml", "kind: Five\n");
    let docs: Vec<_> = load_paths(&[good1, bad, bad_json, missing, good2]).collect();
    let summary: Vec<String> = docs
        .iter()
        .map(|d| match &d.value {
            Ok(v) => format!("ok {}", v["kind"].as_str().unwrap()),
            Err(e) => format!(
                "err {}:{:?}",
                e.file().rsplit('/').next().unwrap(),
                e.line()
            ),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "ok One",
            "ok Before",
            "err 2-bad.yaml:Some(5)",
            "ok After",
            "err 3-bad.json:Some(2)",
            "err 4-missing.yaml:None",
            "ok Five",
        ]
    );
    let err = docs[2].value.as_ref().unwrap_err().to_string();
    assert!(err.contains("2-bad.yaml:5:"), "{err}");
    assert!(err.contains("invalid YAML"), "{err}");
}

#[test]
fn invalid_utf8_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bin.yaml");
    std::fs::write(&p, [0xff, 0xfe, b'k']).unwrap();
    let docs: Vec<_> = load_paths(&[p]).collect();
    assert_eq!(docs.len(), 1);
    assert!(
        docs[0]
            .value
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("UTF-8")
    );
}

/// The fast reader of plain block-style YAML takes every generated object and reads it exactly
/// as `serde_yaml` does (the benchmark's YAML input is this shape).
#[test]
fn fast_yaml_reads_generated_objects_as_serde_yaml_does() {
    for i in 0..400 {
        let obj = crate::generate::object(i);
        let text = format!("---\n{}", serde_yaml::to_string(&obj).unwrap());
        let full: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(full, obj);
        let fast = canopy_audit::fast_yaml::parse(&text);
        assert_eq!(fast.as_ref(), Some(&obj), "object {i}:\n{text}");
    }
}

/// Every YAML document in the repository (fixtures, k8s manifests, nats configs excluded) reads
/// the same through the fast reader as through `serde_yaml`, whenever the fast reader takes it.
#[test]
fn fast_yaml_agrees_with_serde_yaml_on_the_repository_manifests() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut stack = vec![root.clone()];
    let (mut taken, mut docs) = (0, 0);
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    stack.push(path);
                }
                continue;
            }
            if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in text.split("\n---") {
                let Ok(full) = serde_yaml::from_str::<serde_json::Value>(doc) else {
                    assert!(
                        canopy_audit::fast_yaml::parse(doc).is_none(),
                        "fast reader accepted a document serde_yaml refuses in {}",
                        path.display()
                    );
                    continue;
                };
                docs += 1;
                if let Some(fast) = canopy_audit::fast_yaml::parse(doc) {
                    taken += 1;
                    assert_eq!(fast, full, "readers disagree in {}:\n{doc}", path.display());
                }
            }
        }
    }
    assert!(
        docs > 20,
        "found only {docs} YAML documents under {}",
        root.display()
    );
    assert!(
        taken * 2 > docs,
        "the fast reader took only {taken} of {docs} documents"
    );
}

//! The repository's documentation stands on its own: every file it names is in a clone of the
//! repository, and nothing points a reader at notes that are not.

use std::fs;
use std::path::{Path, PathBuf};

/// The top-level folders whose files documentation may name.
const ROOTS: [&str; 8] = [
    "src/",
    "tests/",
    "docs/",
    "examples/",
    "benches/",
    "migrations/",
    ".ci/",
    "fuzz/",
];

/// Files outside the repository that earlier notes cited; a reader of a clone has neither.
const OUTSIDE: [&str; 2] = [concat!("domain", ".md"), concat!("design", ".md")];

/// The section sign: the repository has no numbered sections, so one before a number
/// ("2.1") points a reader at those notes.
const SECTION_SIGN: char = '\u{a7}';

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files and Rust sources a reader meets.
fn documents() -> Vec<PathBuf> {
    let root = repository();
    let mut found = vec![root.join("README.md")];
    for dir in ["docs", "src", "tests", "examples", "benches"] {
        collect(&root.join(dir), &mut found);
    }
    found
}

fn collect(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, found);
        } else if path
            .extension()
            .is_some_and(|e| e == "md" || e == "rs" || e == "json")
        {
            found.push(path);
        }
    }
}

/// Every path-like token in `text` that starts with one of [`ROOTS`] where no path character
/// precedes it: the run of path characters from there, less a sentence's full stop, when it
/// is longer than the root and does not climb with `..`.
fn named_paths(text: &str) -> Vec<String> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "/._-".contains(c);
    let mut paths = Vec::new();
    for (start, _) in text.char_indices() {
        if text[..start].chars().next_back().is_some_and(is_path_char) {
            continue;
        }
        let Some(root) = ROOTS.iter().find(|r| text[start..].starts_with(*r)) else {
            continue;
        };
        let rest = &text[start..];
        let end = rest.find(|c: char| !is_path_char(c)).unwrap_or(rest.len());
        let candidate = rest[..end].trim_end_matches('.');
        if candidate.len() > root.len() && !candidate.contains("..") {
            paths.push(candidate.to_owned());
        }
    }
    paths
}

/// The targets of the Markdown links `[text](target)` in `text` that point into the
/// repository (not at a web address, a mail address or an anchor of the same page), without
/// their `#anchor`.
fn link_targets(text: &str) -> Vec<&str> {
    text.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &text[at + 2..];
            let target = &rest[..rest.find(')')?];
            let file = target.split('#').next().unwrap_or_default();
            let external = file.is_empty() || file.contains("://") || file.starts_with("mailto:");
            (!external).then_some(file)
        })
        .collect()
}

#[test]
fn every_file_the_documentation_names_is_in_the_repository() {
    let root = repository();
    let mut missing = Vec::new();
    let documents = documents();
    for document in &documents {
        let text = fs::read_to_string(document).unwrap();
        for path in named_paths(&text) {
            // Globs and placeholders (`tests/*.rs`, `src/<module>.rs`) name no one file.
            if path.contains('*') || path.contains('<') {
                continue;
            }
            if !root.join(&path).exists() {
                missing.push(format!(
                    "{} names {path}",
                    document.strip_prefix(&root).unwrap().display()
                ));
            }
        }
        if document.extension().is_some_and(|e| e == "md") {
            let folder = document.parent().unwrap();
            for target in link_targets(&text) {
                if !folder.join(target).exists() {
                    missing.push(format!(
                        "{} links to {target}",
                        document.strip_prefix(&root).unwrap().display()
                    ));
                }
            }
        }
    }
    println!("checked the file names in {} documents", documents.len());
    assert!(missing.is_empty(), "missing files:\n{}", missing.join("\n"));
}

#[test]
fn no_document_sends_a_reader_outside_the_repository() {
    let root = repository();
    let mut cited = Vec::new();
    for document in documents() {
        let text = fs::read_to_string(&document).unwrap();
        for (n, line) in text.lines().enumerate() {
            let cites = OUTSIDE.iter().any(|outside| line.contains(outside));
            if cites || line.contains(SECTION_SIGN) {
                cited.push(format!(
                    "{}:{}: {}",
                    document.strip_prefix(&root).unwrap().display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        cited.is_empty(),
        "citations of files outside the repository:\n{}",
        cited.join("\n")
    );
}

#[test]
fn the_path_finder_sees_paths_and_only_paths() {
    assert_eq!(
        named_paths("see `docs/http.md`, and tests/http.rs."),
        vec!["docs/http.md", "tests/http.rs"]
    );
    assert!(named_paths("the tests/ folder; cartflow serve").is_empty());
    assert!(named_paths("subtests/x.rs").is_empty());
}

#[test]
fn the_link_finder_sees_links_into_the_repository_and_only_those() {
    let text = "[a](../src/api.rs), [b](http.md#limits), [c](https://example.com/x.md), \
                [d](#top), [e](mailto:x@example.com)";
    assert_eq!(link_targets(text), vec!["../src/api.rs", "http.md"]);
}

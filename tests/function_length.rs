//! No function in the pure core (`src/machine/`) is over 80 lines: each reads on its own.

use std::fs;
use std::path::Path;

const MAX_LINES: usize = 80;

/// Each function of `source` (rustfmt's layout: a body closes with `}` at the indentation
/// of its `fn` line) as its name and its length in lines, signature included.
fn function_lengths(source: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(at) = trimmed.find("fn ") else {
            continue;
        };
        let head = &trimmed[..at];
        let is_fn = head
            .split_whitespace()
            .all(|word| matches!(word, "pub" | "pub(crate)" | "const" | "async" | "unsafe"));
        // A declaration without a body (in a trait) has no length.
        if !is_fn || trimmed.starts_with("//") || trimmed.trim_end().ends_with(';') {
            continue;
        }
        let indent = &line[..line.len() - trimmed.len()];
        let close = format!("{indent}}}");
        let end = lines[start..].iter().position(|l| *l == close);
        let name: String = trimmed[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if let Some(end) = end {
            found.push((name, end + 1));
        }
    }
    found
}

#[test]
fn no_function_in_the_machine_is_over_80_lines() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/machine");
    let mut checked = 0;
    let mut long = Vec::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let source = fs::read_to_string(&path).unwrap();
        for (name, lines) in function_lengths(&source) {
            checked += 1;
            if lines > MAX_LINES {
                long.push(format!("{}: {name} ({lines} lines)", path.display()));
            }
        }
    }
    assert!(checked > 100, "only {checked} functions found");
    assert!(long.is_empty(), "{long:#?}");
}

#[test]
fn the_length_of_a_function_is_counted_to_its_closing_brace() {
    let source = "fn short() {\n    one();\n}\n\nimpl X {\n    pub fn long(&self) {\n        if a {\n        }\n    }\n}\n";
    assert_eq!(
        function_lengths(source),
        [("short".to_owned(), 3), ("long".to_owned(), 4)]
    );
}

//! docs/OPERATIONS.md documents every environment variable the code reads, and nothing else.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on anything unexpected"
)]

use std::collections::BTreeSet;
use std::path::Path;

const READERS: [&str; 8] = [
    "string", "parse", "seconds", "millis", "optional", "secret", "list", "bound",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.ends_with("tests") && !path.ends_with("target") {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Names passed as string literals to the `Env` readers, outside test modules.
fn read_by_code(root: &Path) -> BTreeSet<String> {
    let mut files = Vec::new();
    for dir in ["common/src", "services", "crates/dbctl/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap();
        let compact: String = text.split_whitespace().collect::<Vec<_>>().join("");
        for reader in READERS {
            for piece in compact.split(&format!("env.{reader}(\"")).skip(1) {
                let name: String = piece
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        }
    }
    // dbctl builds these names from the service list.
    names.extend(
        [
            "USERS_DB_PASSWORD",
            "POSTS_DB_PASSWORD",
            "MESSAGING_DB_PASSWORD",
        ]
        .map(String::from),
    );
    names
}

/// Names in the first column of the reference tables.
fn documented(root: &Path) -> BTreeSet<String> {
    let doc = std::fs::read_to_string(root.join("docs/OPERATIONS.md")).unwrap();
    let reference = doc.split("## Deploying").next().unwrap();
    let mut names = BTreeSet::new();
    for line in reference.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap();
        for name in first.split('`').skip(1).step_by(2) {
            names.insert(name.to_owned());
        }
    }
    names
}

#[test]
fn every_variable_the_code_reads_is_documented_and_every_documented_one_is_read() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let code = read_by_code(root);
    let docs = documented(root);
    assert!(code.len() > 40, "the scan found the readers: {code:?}");
    let undocumented: Vec<_> = code.difference(&docs).collect();
    let unread: Vec<_> = docs.difference(&code).collect();
    assert!(
        undocumented.is_empty(),
        "read but not in docs/OPERATIONS.md: {undocumented:?}"
    );
    assert!(
        unread.is_empty(),
        "documented but read by nothing: {unread:?}"
    );
}

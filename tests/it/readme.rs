//! The README's curl examples, run as written against a development daemon: every
//! answer must match the `# ` line under its command (JSON compared as values, with
//! "…" matching anything; other text compared exactly).

use crate::common::*;
use serde_json::Value;

fn readme_block() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("<!-- curl-examples -->")
        .expect("curl examples marker");
    let end = readme
        .find("<!-- /curl-examples -->")
        .expect("curl examples end marker");
    readme[start..end]
        .lines()
        .filter(|l| !l.starts_with("```") && !l.starts_with("<!--"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `expected` with "…" as a wildcard; objects must have the same keys.
fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::String(s), _) if s == "…" => true,
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len()
                && e.iter()
                    .all(|(k, v)| a.get(k).is_some_and(|av| matches(v, av)))
        }
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(e, a)| matches(e, a))
        }
        _ => expected == actual,
    }
}

/// A line of output or of the README's answers: JSON if it parses, else text.
fn answer(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|_| Value::String(line.to_owned()))
}

// SQLite-only: the README shows the default install's answers (no `instances`).
#[test]
fn the_readme_curl_examples_give_the_answers_shown() {
    let block = readme_block();
    let expected: Vec<Value> = block
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .map(answer)
        .collect();
    assert!(expected.len() >= 10, "the README lost its examples");

    let otpd = Setup::new().sqlite_only().dev().start();
    let output = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block])
        .current_dir(otpd.dir.path())
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let actual: Vec<Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(answer)
        .collect();
    assert_eq!(actual.len(), expected.len(), "{stdout}");
    for (want, got) in expected.iter().zip(&actual) {
        assert!(
            matches(want, got),
            "README shows\n  {want}\nbut otpd answered\n  {got}"
        );
    }
}

/// Every file under src/ appears in docs/design.md's source map, and the map names no
/// file that is gone: the map a newcomer reads is the tree.
#[test]
fn the_source_map_names_every_file_in_src_and_no_other() {
    let root = env!("CARGO_MANIFEST_DIR");
    let design = std::fs::read_to_string(format!("{root}/docs/design.md")).unwrap();
    let start = design.find("## Source map").expect("a Source map section");
    let block = &design[start..];
    let block = &block[block.find("```text\n").expect("its fenced block") + 8..];
    let block = &block[..block.find("```").expect("the block's end")];
    let mut mapped: Vec<String> = block
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    mapped.sort();
    let mut tree = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(format!("{root}/src"))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root).unwrap();
                tree.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    tree.sort();
    assert_eq!(mapped, tree, "docs/design.md's source map and src/ differ");
}

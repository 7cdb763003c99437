//! Every metric the hub emits is exported from its first scrape, with HELP
//! and TYPE, every series of a closed label set at zero, and the scrape
//! passes `promtool check metrics` (Debian's `prometheus` package) when it
//! is installed.
//!
//! The list is `tagent_hub::metrics::FAMILIES`, the table the hub registers
//! from; this test also holds that table to the source: every `counter!`,
//! `gauge!` and `histogram!` call in `src/` names a family of the table, of
//! its kind, and every family of the table is emitted somewhere.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::Server;
use tagent_hub::metrics::{FAMILIES, Kind, combinations};

/// `(name, kind)` of every metric macro called with a literal name in `src/`.
fn emitted_in_source() -> BTreeSet<(String, &'static str)> {
    let mut found = BTreeSet::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("a dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read a source file");
            for kind in ["counter", "gauge", "histogram"] {
                let call = format!("{kind}!(");
                let mut rest = text.as_str();
                while let Some(at) = rest.find(&call) {
                    rest = &rest[at + call.len()..];
                    let arg = rest.trim_start();
                    let Some(literal) = arg.strip_prefix('"') else {
                        continue; // e.g. the table's own `counter!(f.name, ..)`
                    };
                    let name = &literal[..literal.find('"').expect("a closed literal")];
                    found.insert((name.to_owned(), kind));
                }
            }
            let file = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap();
            if file != Path::new("src/metrics.rs") {
                assert!(
                    !text.contains("describe_counter!")
                        && !text.contains("describe_gauge!")
                        && !text.contains("describe_histogram!"),
                    "{}: HELP texts belong in src/metrics.rs FAMILIES",
                    file.display()
                );
            }
        }
    }
    found
}

#[test]
fn the_table_is_what_the_source_emits() {
    let source = emitted_in_source();
    assert!(source.len() >= 20, "the scan finds the macros: {source:?}");
    for (name, kind) in &source {
        let family = FAMILIES.iter().find(|f| f.name == name);
        let family = family.unwrap_or_else(|| {
            panic!("{name} is emitted but not in src/metrics.rs FAMILIES (with its HELP)")
        });
        assert_eq!(
            family.kind.as_str(),
            *kind,
            "{name}: table and call disagree"
        );
    }
    for f in FAMILIES {
        assert!(
            source.iter().any(|(name, _)| name == f.name),
            "{} is in FAMILIES but nothing emits it",
            f.name
        );
    }
}

/// The text form of one series: `name{a="x",b="y"}`.
fn series(name: &str, labels: &[metrics::Label]) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|l| format!("{}=\"{}\"", l.key(), l.value()))
        .collect();
    format!("{name}{{{}}}", inner.join(","))
}

#[tokio::test]
async fn every_family_is_there_from_start_with_help_and_type() {
    let hub = Server::start();
    let scrape = hub.metrics().await.text;
    let lines: Vec<&str> = scrape.lines().collect();
    let mut missing = Vec::new();
    for f in FAMILIES {
        let help = format!("# HELP {} ", f.name);
        if !lines.iter().any(|l| l.starts_with(&help)) {
            missing.push(format!("{}: no HELP", f.name));
        }
        let ty = format!("# TYPE {} {}", f.name, f.kind.as_str());
        if !lines.contains(&ty.as_str()) {
            missing.push(format!("{}: no `{ty}`", f.name));
        }
        for labels in combinations(f.labels) {
            let sample = match f.kind {
                Kind::Histogram => series(&format!("{}_count", f.name), &labels),
                _ => series(f.name, &labels),
            };
            let there = lines
                .iter()
                .any(|l| l.rsplit_once(' ').is_some_and(|(s, _)| s == sample));
            if !there {
                missing.push(format!("no sample {sample}"));
            }
        }
    }
    // Nothing is exported that the table does not know.
    for l in &lines {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if !FAMILIES.iter().any(|f| f.name == name) {
                missing.push(format!("{name} is exported but not in FAMILIES"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} problems:\n{}\n\nthe scrape:\n{scrape}",
        missing.len(),
        missing.join("\n")
    );
    promtool_check_metrics(&scrape);
}

/// `promtool check metrics` over `scrape`, or a one-line skip without it.
fn promtool_check_metrics(scrape: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let _ = writeln!(
                std::io::stderr(),
                "skipped promtool check metrics: promtool is not installed (apt-get install prometheus)"
            );
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(scrape.as_bytes())
        .expect("write the scrape to promtool");
    let out = child.wait_with_output().expect("wait for promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "promtool check metrics ({}): {text}",
        out.status
    );
}
